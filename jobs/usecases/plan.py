"""The plan of a release, made before anything is queued: the same for
`aibrix-bot release VERSION --dry-run`, `/aibrix plan VERSION` and, at request time, a
real release (which it refuses when a path is missing, or a manifest disagrees and the
policy says so).

Reads the source tree at the revision the version's ref resolves to (`jobs.tools.tree`:
a cached shallow fetch, never a clone per request), checks every component's context
and Dockerfile, runs the manifest preflight, and, when asked, inspects the dependency
images with the same platform gate as `aibrix-bot inspect`. Changes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from jobs.domain import messages
from jobs.domain.config import Config
from jobs.domain.errors import InvalidInput
from jobs.domain.plan import Dependency, Plan, build_plan, missing_paths, paths_to_check, refusing
from jobs.domain.platforms import Platform
from jobs.domain.preflight import Manifests, Problem, check_chart, check_kustomization
from jobs.domain.references import InvalidReferenceError, Reference, parse_reference
from jobs.domain.verdict import Outcome
from jobs.domain.versions import Version
from jobs.registry.client import RegistryClient, RegistrySettings
from jobs.registry.inspection import inspect_many
from jobs.tools.source import SourceError, resolve_revision
from jobs.tools.tree import SourceTree, default_cache_dir, open_tree


class PlanRefused(InvalidInput, ValueError):
    """A release the plan refuses: a missing path, or manifests the policy refuses.
    Nothing was queued; the message names every problem and the revision."""


def _read_manifests(
    config: Config, tree: SourceTree, version: Version, components: Sequence[str]
) -> Manifests:
    problems: list[Problem] = []
    dependencies: list[str] = []
    for file in config.preflight.kustomizations:
        text = tree.read(file)
        if text is not None:
            found = check_kustomization(file, text, version, components)
            problems += found.problems
            dependencies += found.dependencies
    for file in config.preflight.charts:
        text = tree.read(file)
        if text is not None:
            problems += check_chart(file, text, version).problems
    return Manifests(tuple(problems), tuple(dependencies))


def _facts(
    config: Config,
    version: Version,
    revision: str,
    components: Sequence[str],
    cache_dir: Path,
) -> tuple[tuple[Problem, ...], tuple[str, ...]]:
    """What the source says, read off the event loop: problems and dependency images."""
    tree = open_tree(config.source, version, revision, cache_dir)
    builds = [config.at(version).component(name) for name in components]
    kinds = tree.kinds(paths_to_check(builds))
    missing = missing_paths(builds, version, revision, lambda path: kinds.get(path, ""))
    manifests = _read_manifests(config, tree, version, components)
    return missing + manifests.problems, manifests.dependencies


async def _dependencies(
    references: Sequence[str], platforms: Sequence[Platform], registry: RegistrySettings
) -> tuple[Dependency, ...]:
    judged: dict[str, Dependency] = {}
    parsed: list[Reference] = []
    for text in dict.fromkeys(references):
        try:
            parsed.append(parse_reference(text))
        except InvalidReferenceError as error:
            judged[text] = Dependency(text, Outcome.ERROR.value, error=str(error))
    async with RegistryClient(registry) as client:
        inspections = await inspect_many(client, parsed, platforms)
    for inspection in inspections:
        verdict = inspection.verdict
        judged[str(inspection.reference)] = Dependency(
            str(inspection.reference),
            verdict.outcome.value,
            tuple(str(p) for p in verdict.missing),
            verdict.error,
        )
    return tuple(judged[key] for key in sorted(judged))


async def make_plan(
    config: Config,
    version: Version,
    components: Sequence[str],
    platforms: Sequence[Platform],
    *,
    revision: str | None = None,
    registry: RegistrySettings | None = None,
    cache_dir: Path | None = None,
) -> Plan:
    """The plan of releasing `components` of `version` on `platforms` (from
    `plan_release`). `revision`: already resolved (a request), else resolved here.
    `registry`: inspect the dependency images with these settings (None: not inspected,
    as at request time, which must not wait on third-party registries)."""
    if revision is None:
        revision = await asyncio.to_thread(resolve_revision, config.source, version)
    problems, found = await asyncio.to_thread(
        _facts, config, version, revision, components, cache_dir or default_cache_dir()
    )
    dependencies: tuple[Dependency, ...] = ()
    if registry is not None:
        references = (*found, *config.preflight.dependencies)
        dependencies = await _dependencies(references, platforms, registry)
    builds = [config.at(version).component(name) for name in components]
    return build_plan(config, version, revision, builds, platforms, problems, dependencies)


async def check_request(
    config: Config,
    version: Version,
    components: Sequence[str],
    platforms: Sequence[Platform],
    revision: str,
    cache_dir: Path | None = None,
) -> Plan:
    """At request time: the plan, or `PlanRefused` when it refuses the release."""
    plan = await make_plan(
        config, version, components, platforms, revision=revision, cache_dir=cache_dir
    )
    refused = refusing(plan, config.preflight)
    if refused:
        raise PlanRefused(
            messages.release_refused_by_plan(
                str(version), revision, [p.sentence() for p in refused]
            )
        )
    return plan


async def shown_findings(
    config: Config, version: Version, components: Sequence[str], revision: str
) -> str | None:
    """What a started release's answer adds: the manifest findings the policy lets
    through (a prerelease's, by default), as one sentence; None when there are none.
    Reads the tree the request just read (cached: no fetch)."""
    try:
        problems, _ = await asyncio.to_thread(
            _facts, config, version, revision, components, default_cache_dir()
        )
    except SourceError:  # the run is started; a lost note must not fail the answer
        return None
    if not problems:
        return None
    return messages.release_shown_problems(str(version), [p.sentence() for p in problems])


@dataclass(frozen=True)
class DependencyGate:
    """The dependency images at the moment of promotion: `blocking`, one sentence per
    image without a required platform (or of the wrong one); `unreadable`, what could not
    be read (an image, or the source's manifests), which proves nothing either way."""

    blocking: tuple[str, ...] = ()
    unreadable: tuple[str, ...] = ()


async def dependency_references(
    config: Config, version: Version, components: Sequence[str], revision: str
) -> tuple[str, ...]:
    """The release's dependency images: the third-party images its overlays name at the
    revision, then the configured ones, each once. Raises `SourceError` when the source
    cannot be read."""
    preflight = config.preflight
    found: tuple[str, ...] = ()
    if preflight.kustomizations:
        _, found = await asyncio.to_thread(
            _facts, config, version, revision, components, default_cache_dir()
        )
    return tuple(dict.fromkeys((*found, *preflight.dependencies)))


async def dependency_gate(
    config: Config,
    version: Version,
    components: Sequence[str],
    platforms: Sequence[Platform],
    revision: str,
    registry: RegistrySettings,
) -> DependencyGate:
    """Inspect the release's dependency images (its overlays' third-party images at the
    run's revision, and the configured ones) for every required platform. A dependency
    without arm64 (AIBrix #1094) blocks the promotion, with the reason."""
    preflight = config.preflight
    if not preflight.kustomizations and not preflight.dependencies:
        return DependencyGate()
    found: tuple[str, ...] = ()
    if preflight.kustomizations:
        try:
            _, found = await asyncio.to_thread(
                _facts, config, version, revision, components, default_cache_dir()
            )
        except SourceError as error:
            return DependencyGate(unreadable=(str(error),))
    judged = await _dependencies((*found, *preflight.dependencies), platforms, registry)
    blocking = tuple(
        messages.dependency_blocks(d.reference, d.verdict, d.missing)
        for d in judged
        if not d.ok and d.verdict != Outcome.ERROR.value
    )
    unreadable = tuple(
        messages.dependency_line(d.reference, d.verdict, d.missing, d.error)
        for d in judged
        if d.verdict == Outcome.ERROR.value
    )
    return DependencyGate(blocking, unreadable)
