"""The merge: the only step that writes a release tag, and only from pinned digests.

`merge_sources` refuses to name a tag's content unless every required platform has a
verified digest; `write_index` runs `docker buildx imagetools create` with exactly
those `repo@sha256:...` sources; `verify_published` reads the tag back through the
inspection engine and checks the published children are the digests that were built.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from python_on_whales import DockerException, docker

from jobs.inspection import Inspection, inspect_reference
from jobs.platforms import Platform
from jobs.references import parse_reference, validate_digest, validate_tag
from jobs.registry import RegistryClient


class MergeError(RuntimeError):
    pass


def merge_sources(
    image: str, builds: Mapping[Platform, str], required: Sequence[Platform]
) -> list[str]:
    """The pinned sources of a release index, one per required platform, in order."""
    missing = [str(p) for p in required if p not in builds]
    if missing:
        raise MergeError(
            f"{image} has no verified build for {', '.join(missing)}; the tag is not written"
        )
    return [f"{image}@{validate_digest(builds[p])}" for p in required]


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
        raise MergeError(f"imagetools create for {image}:{tag} failed: {stderr}") from None


@dataclass(frozen=True)
class Published:
    inspection: Inspection
    problems: tuple[str, ...]  # published differs from built, beyond the verdict

    @property
    def ok(self) -> bool:
        return self.inspection.verdict.ok and not self.problems


def compare_with_builds(inspection: Inspection, builds: Mapping[Platform, str]) -> tuple[str, ...]:
    """Children of the published index that are not the digests built for them."""
    problems = []
    published = {e.platform: e.digest for e in inspection.verdict.entries if e.platform is not None}
    for platform, digest in builds.items():
        got = published.get(platform)
        if got is not None and got != digest:
            problems.append(f"{platform} is {got} in the registry but {digest} was built")
    return tuple(problems)


async def verify_published(
    client: RegistryClient,
    image: str,
    tag: str,
    builds: Mapping[Platform, str],
    required: Sequence[Platform],
) -> Published:
    inspection = await inspect_reference(client, parse_reference(f"{image}:{tag}"), required)
    return Published(inspection, compare_with_builds(inspection, builds))
