"""What a sync is asked to do, validated before anything is contacted: pure, and light to
import (the command line checks its input before it loads the copy engine in
`jobs.usecases.sync`, which re-exports these names).

    request = parse_sync_request(config, "v0.3.0", ["lab-mirror", "registry.example.com/ns"])
    jobs = release_jobs(config, request.version, request.mirrors, request.components)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from jobs.domain import messages
from jobs.domain.config import Config, MirrorError
from jobs.domain.errors import InvalidInput
from jobs.domain.nightly import release_tag
from jobs.domain.references import (
    DOCKER_HUB,
    InvalidReferenceError,
    Reference,
    parse_reference,
)
from jobs.domain.versions import ComponentError, Version, VersionError, parse_version


@dataclass(frozen=True)
class Mirror:
    """Where a release is copied to: `{location}/{component}:{version}`."""

    label: str  # the configured mirror name, or the location as given
    location: str  # HOST[:PORT][/NAMESPACE]

    @property
    def registry(self) -> str:
        return self.location.split("/", 1)[0]

    def reference(self, component: str, tag: str) -> Reference:
        return parse_reference(f"{self.location}/{component}:{tag}")


def resolve_mirrors(config: Config, texts: Sequence[str]) -> tuple[Mirror, ...]:
    """Mirrors from what a user typed: configured names or `HOST[:PORT][/NAMESPACE]`.
    Raises `MirrorError` (a sentence) for anything else, for the release repository
    itself, and for an empty list; the same location given twice counts once."""
    if not texts:
        raise MirrorError(messages.sync_nothing_to_sync())
    mirrors: dict[str, Mirror] = {}
    for text in texts:
        location = config.mirror(text).rstrip("/")
        if location in {p.rstrip("/") for p in config.publish_locations}:
            raise MirrorError(messages.config_mirror_is_repository(text))
        try:
            parse_reference(f"{location}/x:v")
        except InvalidReferenceError:
            raise MirrorError(messages.mirror_unknown(text, sorted(config.mirrors))) from None
        mirrors.setdefault(location, Mirror(text, location))
    return tuple(mirrors.values())


class SyncInputError(InvalidInput, ValueError):
    """A sync request that cannot be run: `str()` is the sentence to show (exit 2)."""


@dataclass(frozen=True)
class SyncRequest:
    version: Version
    mirrors: tuple[Mirror, ...]
    components: tuple[str, ...] | None = None  # None: every configured component


def parse_sync_request(
    config: Config,
    version_text: str,
    mirror_texts: Sequence[str],
    component_texts: Sequence[str] | None = None,
) -> SyncRequest:
    """Validate what a user typed (`aibrix-bot sync VERSION --to MIRROR...`, `/aibrix sync
    VERSION MIRROR`) before anything is contacted; `SyncInputError` says what is wrong."""
    try:
        version = parse_version(version_text)
        config.check_version(version)
        mirrors = resolve_mirrors(config, mirror_texts)
        components = (
            None
            if component_texts is None
            else tuple(dict.fromkeys(config.component(c).name for c in component_texts))
        )
    except (VersionError, ComponentError, MirrorError) as error:
        raise SyncInputError(str(error)) from None
    return SyncRequest(version, mirrors, components)


@dataclass(frozen=True)
class CopyJob:
    """One image going to one mirror; both references by tag."""

    component: str
    source: Reference
    mirror: Mirror
    destination: Reference


def release_jobs(
    config: Config,
    version: Version,
    mirrors: Sequence[Mirror],
    components: Sequence[str] | None = None,
) -> tuple[CopyJob, ...]:
    """The copies a release means: each component's release tag to each mirror.
    Unknown component names raise `ComponentError`."""
    names = config.component_names if components is None else tuple(components)
    for name in names:
        config.component(name)
    return tuple(
        CopyJob(
            name,
            parse_reference(config.release_reference(name, version)),
            mirror,
            mirror.reference(name, release_tag(version)),
        )
        for mirror in mirrors
        for name in dict.fromkeys(names)
    )


def dependency_destination(source: Reference, mirror: Mirror) -> Reference:
    """Where a dependency image goes on a mirror: its repository path under the mirror's
    location (Docker Hub's `library/` dropped: `redis:7.4` -> `MIRROR/redis:7.4`,
    `envoyproxy/envoy:v1.33.2` -> `MIRROR/envoyproxy/envoy:v1.33.2`), same tag, or the
    same digest when the reference names no tag."""
    path = source.repository
    if source.registry == DOCKER_HUB:
        path = path.removeprefix("library/")
    suffix = f":{source.tag}" if source.tag else f"@{source.digest}"
    return parse_reference(f"{mirror.location}/{path}{suffix}")


def dependency_jobs(references: Sequence[str], mirrors: Sequence[Mirror]) -> tuple[CopyJob, ...]:
    """The copies of a release's dependency images to each mirror (`component` is the
    reference as the plan names it). References that do not parse are left out: the plan
    showed them as errors already."""
    jobs: list[CopyJob] = []
    for text in dict.fromkeys(references):
        try:
            source = parse_reference(text)
        except InvalidReferenceError:
            continue
        jobs += [
            CopyJob(text, source, mirror, dependency_destination(source, mirror))
            for mirror in mirrors
        ]
    return tuple(jobs)
