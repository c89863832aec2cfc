"""The pipeline's pure parts: request validation, component outcomes, block reasons."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobs.domain.config_reader import default_config
from jobs.domain.platforms import Platform, parse_platform
from jobs.domain.release import BuildRecord, BuildState, ComponentIndex, Release, State
from jobs.domain.versions import parse_version
from jobs.usecases.pipeline import ReleaseInputError, block_reasons, component_outcome, plan_release

CONFIG = default_config()
D = "sha256:" + "a" * 64


def test_plan_defaults_to_every_component_and_platform() -> None:
    plan = plan_release(CONFIG, "v0.3.0-rc.2")
    assert str(plan.version) == "v0.3.0-rc.2"
    assert plan.components == CONFIG.at(plan.version).component_names
    assert "vllm-mock" not in plan.components  # released from v0.7.0
    assert plan.platforms == CONFIG.platforms


def test_plan_narrows_and_dedupes() -> None:
    plan = plan_release(CONFIG, "v1.2.3", ["runtime", "runtime"], ["linux/arm64/v8"])
    assert plan.components == ("runtime",)
    assert plan.platforms == (parse_platform("linux/arm64"),)


@pytest.mark.parametrize(
    ("version", "components", "platforms", "fragment"),
    [
        ("v1;rm -rf /", [], [], "not a release version"),
        ("--output=type=local,dest=/", [], [], "not a release version"),
        ("$(id)", [], [], "not a release version"),
        ("v1.0.0\nv2", [], [], "not a release version"),
        ("v1.0.0", ["nope"], [], "configured components"),
        ("v1.0.0", ["--help"], [], "not"),
        ("v1.0.0", [], ["linux/s390x"], "not a configured platform"),
        ("v1.0.0", [], ["linux"], "os/arch"),
        ("v0.3.0-arm64", [], [], "staging tag"),
    ],
)
def test_plan_rejects(
    version: str, components: list[str], platforms: list[str], fragment: str
) -> None:
    with pytest.raises(ReleaseInputError) as error:
        plan_release(CONFIG, version, components, platforms)
    assert fragment in str(error.value)


@given(st.text(max_size=40))
def test_any_version_text_plans_or_is_refused_cleanly(text: str) -> None:
    try:
        plan = plan_release(CONFIG, text)
    except ReleaseInputError as error:
        assert "\n" not in str(error)
        return
    assert str(plan.version) == text


def release(
    builds: dict[tuple[str, Platform], BuildRecord], indexes: dict[str, ComponentIndex]
) -> Release:
    return Release(
        version=parse_version("v1.0.0"),
        run_id="r1",
        state=State.BUILDING,
        state_reason="",
        requested_by="U1",
        channel="C1",
        platforms=(parse_platform("linux/amd64"), parse_platform("linux/arm64")),
        components=("runtime", "gateway-plugins"),
        source_ref="tree-1",
        created_at=0,
        updated_at=0,
        status_channel="",
        status_ts="",
        previous_run_id="",
        active=True,
        builds=builds,
        indexes=indexes,
    )


def rec(component: str, platform: str, state: BuildState, error: str = "") -> BuildRecord:
    return BuildRecord(
        component,
        parse_platform(platform),
        state,
        D if state is BuildState.PUSHED else None,
        1,
        error,
    )


def test_component_outcomes_and_reasons() -> None:
    builds = {
        ("runtime", parse_platform("linux/amd64")): rec(
            "runtime", "linux/amd64", BuildState.PUSHED
        ),
        ("runtime", parse_platform("linux/arm64")): rec(
            "runtime", "linux/arm64", BuildState.FAILED, "step 7/9 failed: boom"
        ),
        ("gateway-plugins", parse_platform("linux/amd64")): rec(
            "gateway-plugins", "linux/amd64", BuildState.PUSHED
        ),
        ("gateway-plugins", parse_platform("linux/arm64")): rec(
            "gateway-plugins", "linux/arm64", BuildState.BUILDING
        ),
    }
    r = release(builds, {})
    assert component_outcome(r, "runtime") == "failed"
    assert component_outcome(r, "gateway-plugins") == "pending"
    # A failed platform while another still builds: pending until that one ends (item 6).
    in_flight = dict(builds)
    in_flight[("runtime", parse_platform("linux/amd64"))] = rec(
        "runtime", "linux/amd64", BuildState.BUILDING
    )
    assert component_outcome(release(in_flight, {}), "runtime") == "pending"
    merged = release(
        builds,
        {
            "gateway-plugins": ComponentIndex(
                "gateway-plugins",
                D,
                "missing",
                "gateway-plugins v1.0.0 is missing linux/amd64; the index has linux/arm64 only",
            )
        },
    )
    assert component_outcome(merged, "gateway-plugins") == "merged"
    assert block_reasons(merged) == [
        "runtime v1.0.0 failed to build for linux/arm64: step 7/9 failed: boom",
        "gateway-plugins v1.0.0 is missing linux/amd64; the index has linux/arm64 only",
    ]
    ok = release(builds, {"gateway-plugins": ComponentIndex("gateway-plugins", D, "ok")})
    assert block_reasons(ok) == [
        "runtime v1.0.0 failed to build for linux/arm64: step 7/9 failed: boom"
    ]


def test_retry_accepts_every_state_its_refusal_names() -> None:
    """Issue 16, item 4: "retry restarts failed builds and merges of a blocked or failed
    release only" must accept a failed or blocked release whose merge did not complete."""
    from dataclasses import replace

    from jobs.domain.release import State
    from jobs.usecases.pipeline import UNMERGED, retry_refusal

    pushed = {
        ("runtime", parse_platform(p)): rec("runtime", p, BuildState.PUSHED)
        for p in ("linux/amd64", "linux/arm64")
    }
    pushed |= {
        ("gateway-plugins", parse_platform(p)): rec("gateway-plugins", p, BuildState.PUSHED)
        for p in ("linux/amd64", "linux/arm64")
    }
    ok = {"gateway-plugins": ComponentIndex("gateway-plugins", D, "ok")}
    dead_merge = release(pushed, ok)  # runtime: every platform pushed, never merged
    assert retry_refusal(replace(dead_merge, state=State.FAILED)) is None
    blocked = release(pushed, ok | {"runtime": ComponentIndex("runtime", "", UNMERGED, "x")})
    assert retry_refusal(replace(blocked, state=State.BLOCKED)) is None
    merged = release(pushed, ok | {"runtime": ComponentIndex("runtime", D, "ok")})
    refusal = retry_refusal(replace(merged, state=State.BLOCKED))
    assert refusal == "v1.0.0 is blocked, but none of its builds or merges failed: nothing to retry"
    running = retry_refusal(replace(merged, state=State.BUILDING))
    assert running is not None and "of a blocked or failed release only" in running


def test_a_failed_build_two_components_share_counts_once_in_a_retry() -> None:
    from dataclasses import replace

    from jobs.usecases.pipeline import failed_builds

    amd, arm = "linux/amd64", "linux/arm64"
    builds = {
        ("runtime", parse_platform(amd)): rec("runtime", amd, BuildState.PUSHED),
        ("runtime", parse_platform(arm)): rec("runtime", arm, BuildState.FAILED, "boom"),
        ("gateway-plugins", parse_platform(amd)): rec("gateway-plugins", amd, BuildState.PUSHED),
        ("gateway-plugins", parse_platform(arm)): replace(
            rec("gateway-plugins", arm, BuildState.FAILED, "boom"), built_with="runtime"
        ),
    }
    assert failed_builds(release(builds, {})) == 1
    own = builds | {
        ("gateway-plugins", parse_platform(arm)): rec("gateway-plugins", arm, BuildState.FAILED)
    }
    assert failed_builds(release(own, {})) == 2
    pushed = {key: replace(record, state=BuildState.PUSHED) for key, record in builds.items()}
    assert failed_builds(release(pushed, {})) == 0


@pytest.mark.parametrize(
    ("rebuilds", "expected"),
    [
        (0, "v1.0.0: merging again from the same builds in run 0123abcd"),
        (1, "v1.0.0: rebuilding 1 failed build in run 0123abcd"),
        (3, "v1.0.0: rebuilding 3 failed builds in run 0123abcd"),
    ],
)
def test_a_retry_says_what_it_runs_again(rebuilds: int, expected: str) -> None:
    from jobs.domain.messages import retry_started

    assert retry_started("v1.0.0", rebuilds, "0123abcd-ffff") == expected
