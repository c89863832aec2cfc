"""The plan of a release: what it would build, where it would publish, and what is wrong
with it, before anything is queued. Pure: the use case (`jobs.usecases.plan`) reads the
source and the registries and hands the facts in.

A component's `build` id is a hash of its build inputs (Dockerfile, context, build
arguments, target, platforms, revision): components with the same id are the same build
(AIBrix's metadata-service and runtime from v0.5.0), which the plan shows.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from jobs.domain import messages
from jobs.domain.config import ComponentBuild, Config, Preflight
from jobs.domain.nightly import release_tag
from jobs.domain.platforms import Platform
from jobs.domain.preflight import MISSING, Problem
from jobs.domain.versions import Version

PathKind = str  # "file", "dir", or "" when the path does not exist (or is something else)


@dataclass(frozen=True)
class PlannedComponent:
    name: str
    dockerfile: str  # relative to the source root
    context: str
    build: str  # the same for components whose build inputs are identical


@dataclass(frozen=True)
class Dependency:
    """A third-party image the release deploys, as the platform gate judged it."""

    reference: str
    verdict: str  # an `Outcome` value ("ok", "missing", ...), or "error"
    missing: tuple[str, ...] = ()
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"


@dataclass(frozen=True)
class Plan:
    version: Version
    revision: str
    components: tuple[PlannedComponent, ...]
    publish: tuple[tuple[str, tuple[str, ...]], ...]  # (registry location, references)
    problems: tuple[Problem, ...] = ()
    dependencies: tuple[Dependency, ...] = ()

    @property
    def clean(self) -> bool:
        return not self.problems and all(d.ok for d in self.dependencies)

    def shared_builds(self) -> dict[str, tuple[str, ...]]:
        """Build id -> the components built by it, for builds shared by two or more."""
        by_build: dict[str, list[str]] = {}
        for component in self.components:
            by_build.setdefault(component.build, []).append(component.name)
        return {b: tuple(names) for b, names in by_build.items() if len(names) > 1}


def build_id(component: ComponentBuild, revision: str, platforms: Sequence[Platform]) -> str:
    """A short hash of everything a build depends on; the component's name is not one."""
    inputs = {
        "dockerfile": component.dockerfile_path,
        "context": component.context,
        "build_args": sorted(component.build_args.items()),
        "target": component.target,
        "platforms": sorted(str(p) for p in platforms),
        "revision": revision,
    }
    text = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    return "build-" + hashlib.sha256(text.encode()).hexdigest()[:12]


def publish_targets(
    config: Config, version: Version, components: Sequence[str]
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Every tag the release would write, per registry: the release tag and the promotion
    tags on every publish registry (the primary first), and the same on each promotion
    mirror."""
    tags = (release_tag(version), *config.promotion_tags_for(version))
    locations = [*config.publish_locations] + [config.mirrors[m] for m in config.promotion.mirrors]
    return tuple(
        (location, tuple(f"{location}/{name}:{tag}" for name in components for tag in tags))
        for location in locations
    )


def missing_paths(
    components: Sequence[ComponentBuild],
    version: Version,
    revision: str,
    kind_of: Callable[[str], PathKind],
) -> tuple[Problem, ...]:
    """The components whose context directory or Dockerfile is not in the source."""
    problems: list[Problem] = []
    for component in components:
        if kind_of(component.context) != "dir":
            problems.append(
                Problem(
                    MISSING,
                    component.context,
                    0,
                    messages.plan_path_missing(
                        component.name, "context", component.context, str(version), revision
                    ),
                )
            )
            continue
        if kind_of(component.dockerfile_path) != "file":
            problems.append(
                Problem(
                    MISSING,
                    component.dockerfile_path,
                    0,
                    messages.plan_path_missing(
                        component.name,
                        "Dockerfile",
                        component.dockerfile_path,
                        str(version),
                        revision,
                    ),
                )
            )
    return tuple(problems)


def paths_to_check(components: Sequence[ComponentBuild]) -> tuple[str, ...]:
    """Every path `missing_paths` asks about, once each."""
    paths: dict[str, None] = {}
    for component in components:
        paths.setdefault(component.context, None)
        paths.setdefault(component.dockerfile_path, None)
    return tuple(paths)


def build_plan(
    config: Config,
    version: Version,
    revision: str,
    components: Sequence[ComponentBuild],
    platforms: Sequence[Platform],
    problems: Sequence[Problem] = (),
    dependencies: Sequence[Dependency] = (),
) -> Plan:
    planned = tuple(
        PlannedComponent(
            name=c.name,
            dockerfile=c.dockerfile_path,
            context=c.context,
            build=build_id(c, revision, platforms),
        )
        for c in components
    )
    return Plan(
        version=version,
        revision=revision,
        components=planned,
        publish=publish_targets(config, version, [c.name for c in components]),
        problems=tuple(problems),
        dependencies=tuple(dependencies),
    )


def refusing(plan: Plan, preflight: Preflight) -> tuple[Problem, ...]:
    """The problems that refuse the release: a missing path always (the build could not
    run), a manifest finding when the policy says so for this kind of version."""
    if preflight.refuses(plan.version):
        return plan.problems
    return tuple(p for p in plan.problems if p.kind == MISSING)


def plan_json(plan: Plan) -> dict[str, object]:
    """The `--json` object of `release VERSION --dry-run` (an interface CI relies on)."""
    publish: Mapping[str, list[str]] = {location: list(refs) for location, refs in plan.publish}
    return {
        "version": str(plan.version),
        "revision": plan.revision,
        "components": [
            {"name": c.name, "dockerfile": c.dockerfile, "context": c.context, "build": c.build}
            for c in plan.components
        ],
        "publish": publish,
        "problems": [
            {"kind": p.kind, "file": p.file, "line": p.line, "message": p.message}
            for p in plan.problems
        ],
        "dependencies": [
            {
                "reference": d.reference,
                "verdict": d.verdict,
                "missing": list(d.missing),
                "error": d.error,
            }
            for d in plan.dependencies
        ],
    }
