"""Identical builds run once (issue 13, item 2), the pure part: components grouped into
builds by their build inputs, the build jobs a run starts (one per build and platform,
fewer on a retry that reuses digests), what a build job names, where a merge pins a
shared build's digests from, and the line the live message shows."""

from __future__ import annotations

from collections import Counter
from types import MappingProxyType

from hypothesis import given
from hypothesis import strategies as st

from bot.follow import release_lines
from handlers.blocks import release_message
from jobs.domain.builds import (
    SHARED_WITH,
    BuildGroup,
    PlannedBuild,
    builds_to_run,
    built_with,
    digest_holders,
    followers,
    group_builds,
    job_components,
    progress_key,
    shared_payload,
    sharing_lines,
)
from jobs.domain.config import Component, components_for
from jobs.domain.config_reader import default_config
from jobs.domain.platforms import DEFAULT_PLATFORMS, Platform, parse_platform
from jobs.domain.progress import StepProgress
from jobs.domain.release import BuildRecord, BuildState, Release, State
from jobs.domain.versions import parse_version

REV = "1a2b3c4d5e6f" + "0" * 28
AMD64, ARM64 = parse_platform("linux/amd64"), parse_platform("linux/arm64")
PLATFORMS = (AMD64, ARM64)
DIGEST = "sha256:" + "cd" * 32


def inputs(component: Component) -> tuple[object, ...]:
    """Everything a build depends on but the component's name."""
    return (
        component.dockerfile_path,
        component.context,
        tuple(sorted(component.build_args.items())),
        component.target,
    )


named_component = st.builds(
    Component,
    name=st.just("x"),
    dockerfile=st.sampled_from(["Dockerfile", "Dockerfile.python"]),
    context=st.sampled_from([".", "app"]),
    build_args=st.dictionaries(st.sampled_from(["X", "Y"]), st.sampled_from(["1", "2"])).map(
        MappingProxyType
    ),
    target=st.sampled_from([None, "prod"]),
)
# Up to six components with distinct names and inputs drawn from a small set, so that
# equal inputs are common.
components_strategy = st.lists(named_component, min_size=1, max_size=6).map(
    lambda found: [
        Component(
            name=f"c{i}",
            dockerfile=c.dockerfile,
            context=c.context,
            build_args=c.build_args,
            target=c.target,
        )
        for i, c in enumerate(found)
    ]
)


@given(components_strategy)
def test_each_component_is_in_exactly_one_group_and_groups_are_equal_inputs(
    components: list[Component],
) -> None:
    groups = group_builds(components, REV, PLATFORMS)
    names = [name for group in groups for name in group.components]
    assert Counter(names) == Counter(c.name for c in components)
    group_of = {name: group.build for group in groups for name in group.components}
    by_name = {c.name: c for c in components}
    for a in components:
        for b in components:
            same_group = group_of[a.name] == group_of[b.name]
            assert same_group == (inputs(a) == inputs(b)), (a, b)
    # In the order given: the first component of a group comes first in the input.
    order = [c.name for c in components]
    for group in groups:
        assert list(group.components) == sorted(group.components, key=order.index)
        assert len({inputs(by_name[n]) for n in group.components}) == 1


def test_another_revision_or_platform_set_is_another_build() -> None:
    a = Component("a", dockerfile="Dockerfile.python")
    b = Component("b", dockerfile="Dockerfile.python")
    one = group_builds([a, b], REV, PLATFORMS)
    assert [g.components for g in one] == [("a", "b")]
    assert group_builds([a, b], "f" * 40, PLATFORMS)[0].build != one[0].build
    assert group_builds([a, b], REV, (AMD64,))[0].build != one[0].build


def test_aibrix_v070_is_five_builds_per_platform_and_v030_six_components_apart() -> None:
    defaults = default_config()
    new = group_builds(components_for(defaults, parse_version("v0.7.0")), REV, DEFAULT_PLATFORMS)
    assert len(new) == 5
    assert ("metadata-service", "runtime") in [g.components for g in new]
    assert len(builds_to_run(new, DEFAULT_PLATFORMS)) == 10  # not 12
    old = group_builds(
        components_for(defaults, parse_version("v0.3.0-rc.2")), REV, DEFAULT_PLATFORMS
    )
    assert all(len(g.components) == 1 for g in old)


def test_builds_to_run_is_one_per_group_and_platform_minus_what_is_reused() -> None:
    groups = (BuildGroup("b1", ("metadata-service", "runtime")), BuildGroup("b2", ("gateway",)))
    assert builds_to_run(groups, PLATFORMS) == (
        PlannedBuild(("metadata-service", "runtime"), AMD64, "b1"),
        PlannedBuild(("metadata-service", "runtime"), ARM64, "b1"),
        PlannedBuild(("gateway",), AMD64, "b2"),
        PlannedBuild(("gateway",), ARM64, "b2"),
    )
    # A retry: the shared build pushed on amd64, gateway failed on arm64 only; a build
    # pushed for metadata-service alone (an older run) leaves runtime to build.
    reused = {
        ("metadata-service", AMD64),
        ("runtime", AMD64),
        ("gateway", AMD64),
        ("metadata-service", ARM64),
    }
    assert builds_to_run(groups, PLATFORMS, reused) == (
        PlannedBuild(("runtime",), ARM64, "b1"),
        PlannedBuild(("gateway",), ARM64, "b2"),
    )


def test_a_build_job_names_its_components_and_an_older_job_only_its_own() -> None:
    assert shared_payload(["runtime"]) == {}
    payload = shared_payload(["metadata-service", "runtime", "other"])
    assert payload == {SHARED_WITH: "runtime,other"}
    assert job_components("metadata-service", payload) == ("metadata-service", "runtime", "other")
    assert job_components("runtime", {}) == ("runtime",)  # a job in flight from before
    # Repeats and the job's own component are not built twice.
    assert job_components("a", {SHARED_WITH: "b,a,,b"}) == ("a", "b")


def record(component: str, platform: Platform, lead: str = "") -> BuildRecord:
    return BuildRecord(component, platform, BuildState.PUSHED, DIGEST, 1, built_with=lead)


def release_of(builds: dict[tuple[str, Platform], BuildRecord]) -> Release:
    components = tuple(dict.fromkeys(c for c, _ in builds))
    return Release(
        version=parse_version("v0.7.0"),
        run_id="r" * 16,
        state=State.BUILDING,
        state_reason="",
        requested_by="U0ASKER",
        channel="C0RELEASES",
        platforms=PLATFORMS,
        components=components,
        source_ref=REV,
        created_at=0.0,
        updated_at=0.0,
        status_channel="",
        status_ts="",
        previous_run_id="",
        active=True,
        builds=builds,
        indexes={},
    )


SHARED = release_of(
    {
        **{
            (c, p): record(c, p)
            for c in ("controller-manager", "metadata-service")
            for p in PLATFORMS
        },
        **{("runtime", p): record("runtime", p, "metadata-service") for p in PLATFORMS},
    }
)


def test_the_merge_pins_a_shared_build_from_the_repository_it_was_pushed_to() -> None:
    assert digest_holders(SHARED, "runtime") == {
        AMD64: "metadata-service",
        ARM64: "metadata-service",
    }
    assert digest_holders(SHARED, "metadata-service") == {
        AMD64: "metadata-service",
        ARM64: "metadata-service",
    }
    assert followers(SHARED, "metadata-service") == ("runtime",)
    assert followers(SHARED, "controller-manager") == ()
    assert built_with(SHARED) == {"runtime": "metadata-service"}


def test_the_live_message_and_the_terminal_say_which_build_a_component_shares() -> None:
    line = "runtime: built with metadata-service"
    assert sharing_lines(SHARED) == [line]
    assert any(line in str(block) for block in release_message(SHARED).blocks)
    assert f"  {line}" in release_lines(SHARED, {})
    alone = release_of({(c, p): record(c, p) for c in ("a", "b") for p in PLATFORMS})
    assert sharing_lines(alone) == []
    assert not any("built with" in str(block) for block in release_message(alone).blocks)


def test_a_component_built_with_another_shows_that_builds_steps() -> None:
    building = release_of(
        {
            ("metadata-service", AMD64): BuildRecord(
                "metadata-service", AMD64, BuildState.BUILDING
            ),
            ("runtime", AMD64): BuildRecord(
                "runtime", AMD64, BuildState.BUILDING, built_with="metadata-service"
            ),
        }
    )
    assert progress_key(building, "runtime", AMD64) == ("metadata-service", "linux/amd64")
    assert progress_key(building, "metadata-service", AMD64) == ("metadata-service", "linux/amd64")
    steps = {("metadata-service", "linux/amd64"): StepProgress("building", 3, 7)}
    assert [line for line in release_lines(building, steps) if "step 3/7" in line] == [
        line for line in release_lines(building, steps) if "linux/amd64" in line
    ]
