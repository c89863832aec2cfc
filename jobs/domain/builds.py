"""Identical builds run once: which components of a run share a build, and the build jobs a
run starts. Pure.

Components whose build inputs are identical (`jobs.domain.plan.build_id`: Dockerfile,
context, build arguments, target, platforms, revision; AIBrix's metadata-service and
runtime from v0.5.0) are one build per platform. The build runs under the first
component's name: it pushes to that component's repository (and its staging tag, when the
builder cannot push by digest), and every component of the group records the same digest
in one atomic step. Each component's merge then writes its own release tag from those
pinned digests (`imagetools create` copies them into the component's repository), so
every component's index holds the same per-platform digests.

A build job names the components it builds for: the first as the job's `component`, the
others in its payload under `SHARED_WITH` (comma-separated). A job without it (every job
written before this existed) builds for its component alone.

A build job also carries the plan's build id (`BUILD`): a worker whose own config gives
any component the job builds for another build id (another Dockerfile, context, build
argument or target) refuses it (`build_drift`) rather than build, and publish under every
sharing name, something the bot did not plan. A job without the id (written before)
builds as before.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from jobs.domain import messages
from jobs.domain.config import ComponentBuild
from jobs.domain.plan import build_id
from jobs.domain.platforms import Platform
from jobs.domain.release import Release

# The payload key of a build job: the other components it builds for.
SHARED_WITH = "with"
# The payload key of a build job: the build id the bot planned it as.
BUILD = "build"


@dataclass(frozen=True)
class BuildGroup:
    """Components with identical build inputs: one build per platform, pushed under the
    first one's name."""

    build: str  # the plan's build id
    components: tuple[str, ...]


@dataclass(frozen=True)
class PlannedBuild:
    """One build job of a run: `components[0]` is the job's component."""

    components: tuple[str, ...]
    platform: Platform
    build: str = ""  # the plan's build id ("" where the config could not say)


def group_builds(
    components: Sequence[ComponentBuild], revision: str, platforms: Sequence[Platform]
) -> tuple[BuildGroup, ...]:
    """The components grouped by build id: groups in order of their first component,
    components in the order given."""
    groups: dict[str, list[str]] = {}
    for component in components:
        groups.setdefault(build_id(component, revision, platforms), []).append(component.name)
    return tuple(BuildGroup(build, tuple(names)) for build, names in groups.items())


def builds_to_run(
    groups: Sequence[BuildGroup],
    platforms: Sequence[Platform],
    reused: Collection[tuple[str, Platform]] = (),
) -> tuple[PlannedBuild, ...]:
    """One build per group and platform, for the components that have no reused digest
    there (a retry rebuilds only what failed); none where every one of them has."""
    planned = []
    for group in groups:
        for platform in platforms:
            members = tuple(c for c in group.components if (c, platform) not in reused)
            if members:
                planned.append(PlannedBuild(members, platform, group.build))
    return tuple(planned)


def shared_payload(components: Sequence[str], build: str = "") -> dict[str, str]:
    """The payload of the build job for `components`, planned as `build` (no key for a
    build of its own, nor for an unknown id)."""
    payload = {SHARED_WITH: ",".join(components[1:])} if len(components) > 1 else {}
    if build:
        payload[BUILD] = build
    return payload


def job_build_id(payload: Mapping[str, str]) -> str:
    """The build id the bot planned a build job as ("" for a job written without it)."""
    return payload.get(BUILD, "")


def build_drift(
    components: Sequence[ComponentBuild],
    revision: str,
    platforms: Sequence[Platform],
    payload: Mapping[str, str],
) -> str | None:
    """Why this worker must not run the build job: its config (`components`, the ones the
    job builds for, as it builds the job's version) gives one of them another build id than
    the bot planned; None when all agree or the job names no id."""
    planned = job_build_id(payload)
    if not planned:
        return None
    for component in components:
        here = build_id(component, revision, platforms)
        if here != planned:
            return messages.build_drift(
                component.name,
                planned,
                here,
                dockerfile=component.dockerfile_path,
                context=component.context,
                build_args=sorted(component.build_args),
                target=component.target,
            )
    return None


def job_components(component: str, payload: Mapping[str, str]) -> tuple[str, ...]:
    """The components a build job builds for: its own, then those its payload names."""
    others = [c for c in payload.get(SHARED_WITH, "").split(",") if c and c != component]
    return (component, *dict.fromkeys(others))


def built_with(release: Release) -> dict[str, str]:
    """Component -> the component whose build it shares (the one that pushed its digests),
    for the components of `release` that have no build of their own."""
    found: dict[str, str] = {}
    for component in release.components:
        for platform in release.platforms:
            record = release.builds.get((component, platform))
            if record is not None and record.built_with:
                found[component] = record.built_with
                break
    return found


def followers(release: Release, lead: str) -> tuple[str, ...]:
    """The components of `release` whose build, on some platform, is `lead`'s."""
    return tuple(
        c
        for c in release.components
        if any(
            (r := release.builds.get((c, p))) is not None and r.built_with == lead
            for p in release.platforms
        )
    )


def digest_holders(release: Release, component: str) -> dict[Platform, str]:
    """Platform -> the component whose repository holds `component`'s pushed digest there
    (itself, or the component whose build it shares): where its merge pins it from."""
    holders = {}
    for platform in release.platforms:
        record = release.builds.get((component, platform))
        holders[platform] = (record.built_with if record else "") or component
    return holders


def sharing_lines(release: Release) -> list[str]:
    """What the live message and the terminal show of the sharing, one line a component."""
    return [messages.built_with(c, lead) for c, lead in built_with(release).items()]


def progress_key(release: Release, component: str, platform: Platform) -> tuple[str, str]:
    """Whose build-step progress `component`'s cell shows on `platform`: a shared build
    reports its steps under the component that runs it."""
    record = release.builds.get((component, platform))
    return ((record.built_with if record else "") or component, str(platform))
