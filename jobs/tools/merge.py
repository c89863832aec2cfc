"""The merge: the only step that writes a release tag, and only from pinned digests.

`merge_sources` refuses to name a tag's content unless every required platform has a
verified digest; `write_index` runs `docker buildx imagetools create` with exactly
those `repo@sha256:...` sources. Reading the tag back is the registry's job
(`jobs.registry.inspection.verify_published`), so this tool needs no registry client.
`imagetools create` does not retry a registry's 5xx, 429 or a dropped connection: such a
failure is a `TransientMergeError` (`transient_registry_fault` reads its stderr), which
the merge retries within its budget (`jobs.usecases.merge_retry`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from python_on_whales import DockerException, docker

from jobs.domain.errors import Failed
from jobs.domain.platforms import Platform
from jobs.domain.references import parse_reference, validate_digest, validate_tag


class MergeError(Failed):
    pass


class TransientMergeError(MergeError):
    """The registry failed in a way that may pass (5xx, 429, a dropped connection): worth
    another attempt after a backoff."""


# What containerd's resolver and Go's net/http print for a fault that may pass: a 5xx or
# 429 status, or a connection that was refused, reset or cut short. A 503 on a source
# manifest's GET comes out as "httpReadSeeker: failed open: content at ... not found"
# (containerd falls back to the blobs endpoint and reports that); the sources were pushed
# and verified before the merge, so that too is taken as a fault that may pass.
_TRANSIENT = re.compile(
    r"\b(?:429|500|502|503|504)\b|too many requests|service unavailable|bad gateway"
    r"|httpReadSeeker: failed open"
    r"|gateway time-?out|internal server error|connection reset|connection refused"
    r"|broken pipe|unexpected EOF|\bEOF\b|i/o timeout|TLS handshake timeout"
    r"|server closed idle connection|timeout awaiting response headers",
    re.IGNORECASE,
)


def transient_registry_fault(stderr: str) -> bool:
    """Whether `imagetools create`'s stderr names a registry fault that may pass (pure)."""
    return bool(_TRANSIENT.search(stderr))


def merge_sources(
    image: str,
    builds: Mapping[Platform, str],
    required: Sequence[Platform],
    repositories: Mapping[Platform, str] | None = None,
) -> list[str]:
    """The pinned sources of a release index, one per required platform, in order.
    `repositories`: where a platform's digest was pushed when not to `image` (a build
    shared with another component pushed to that one's); `imagetools create` copies it."""
    missing = [str(p) for p in required if p not in builds]
    if missing:
        raise MergeError(
            f"{image} has no verified build for {', '.join(missing)}; the tag is not written"
        )
    where = repositories or {}
    return [f"{where.get(p, image)}@{validate_digest(builds[p])}" for p in required]


def write_index(image: str, tag: str, sources: Sequence[str]) -> None:
    """Write `image:tag` as a manifest list of `sources` (blocking; run in a thread)."""
    validate_tag(tag)
    for source in sources:
        if parse_reference(source).digest is None:
            raise MergeError(f"{source} is not pinned by digest; refusing to merge it")
    try:
        docker.buildx.imagetools.create(list(sources), tags=[f"{image}:{tag}"])
    except DockerException as error:
        stderr = (error.stderr or "").strip()[-500:]
        kind = TransientMergeError if transient_registry_fault(stderr) else MergeError
        raise kind(f"imagetools create for {image}:{tag} failed: {stderr}") from None
