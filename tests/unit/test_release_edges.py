"""Edge cases of the release's values (`jobs.domain.release`): where each event leads,
written out from DESIGN.md rather than read from the module's own table, the validators
at their limits, and the snapshot helpers (issue 15)."""

from __future__ import annotations

import pytest

from jobs.domain.platforms import Platform, parse_platform
from jobs.domain.release import (
    OVERWRITE_PENDING,
    BuildRecord,
    BuildState,
    Event,
    InvalidTransition,
    Promoted,
    PromotionResult,
    Release,
    State,
    VersionImmutable,
    build_field,
    check_component,
    check_digest,
    check_platform,
    check_version,
    next_state,
    pending_overwrites,
)
from jobs.domain.versions import parse_version

S = State
# DESIGN.md: "verifying -> ready | blocked": a failed platform check blocks the release
# (it is settled, never FAILED, which is for errors while work runs).
WHERE_EACH_EVENT_LEADS = [
    (S.QUEUED, Event.START, S.BUILDING),
    (S.BUILDING, Event.BUILT, S.MERGING),
    (S.MERGING, Event.MERGED, S.VERIFYING),
    (S.VERIFYING, Event.VERIFIED, S.READY),
    (S.VERIFYING, Event.CHECK_FAILED, S.BLOCKED),
    (S.READY, Event.CHECK_FAILED, S.BLOCKED),  # the click-time re-check
    (S.APPROVED, Event.CHECK_FAILED, S.BLOCKED),
    (S.READY, Event.APPROVE, S.APPROVED),
    (S.APPROVED, Event.PROMOTE, S.PROMOTING),
    (S.PROMOTING, Event.PROMOTED, S.PROMOTED),
    (S.BUILDING, Event.FAIL, S.FAILED),
    (S.PROMOTING, Event.FAIL, S.FAILED),
    (S.BLOCKED, Event.CANCEL, S.CANCELLED),
    (S.READY, Event.CANCEL, S.CANCELLED),
]


@pytest.mark.parametrize(("current", "event", "expected"), WHERE_EACH_EVENT_LEADS)
def test_each_event_leads_where_the_design_says(
    current: State, event: Event, expected: State
) -> None:
    assert next_state(current, event) is expected


def test_a_refused_event_says_where_it_would_have_led() -> None:
    with pytest.raises(InvalidTransition) as refused:
        next_state(S.PROMOTING, Event.CANCEL)
    assert str(refused.value) == "a release that is promoting cannot go to cancel (cancelled)"
    with pytest.raises(InvalidTransition) as failed_check:
        next_state(S.QUEUED, Event.CHECK_FAILED)
    assert str(failed_check.value) == "a release that is queued cannot go to check_failed (blocked)"
    assert (
        str(InvalidTransition(S.READY, S.QUEUED)) == "a release that is ready cannot go to queued"
    )


def test_validators_at_their_limits() -> None:
    assert check_component("a") == "a"
    assert check_component("0" + "a" * 63) == "0" + "a" * 63
    for bad in ("", "a" * 65, "-a", "A", "a/b", "a b", "a\n"):
        with pytest.raises(ValueError) as refused:
            check_component(bad)
        assert str(refused.value) == (
            f"{bad!r} is not a component name (lowercase letters, digits, '.', '_', '-')"
        )
    assert check_digest("sha256:" + "0" * 64) == "sha256:" + "0" * 64
    assert check_digest("sha512:" + "f" * 128) == "sha512:" + "f" * 128
    for bad in (
        "sha256:" + "0" * 63,
        "sha256:" + "A" * 64,
        "sha512:" + "0" * 64,
        "sha256:" + "0" * 64 + "\n",
    ):
        with pytest.raises(ValueError) as refused:
            check_digest(bad)
        assert str(refused.value) == f"{bad!r} is not a digest such as sha256:<64 hex digits>"
    assert check_version("v1.0.0") == "v1.0.0"
    with pytest.raises(ValueError):
        check_version("1.0.0")
    assert check_platform("linux/arm64") == "linux/arm64"
    with pytest.raises(ValueError) as refused_platform:
        check_platform("linux/aarch64")
    assert str(refused_platform.value) == "platform 'linux/aarch64' must be written linux/arm64"
    assert refused_platform.value.__cause__ is None
    assert build_field("runtime", "linux/arm64") == "runtime@linux/arm64"


def run(
    builds: dict[tuple[str, Platform], BuildRecord],
    promotions: dict[str, PromotionResult] | None = None,
) -> Release:
    return Release(
        version=parse_version("v1.0.0"),
        run_id="r1",
        state=S.BUILDING,
        state_reason="",
        requested_by="U0R",
        channel="C0",
        platforms=(AMD, ARM),
        components=("runtime",),
        source_ref="v1.0.0",
        created_at=0.0,
        updated_at=0.0,
        status_channel="C0",
        status_ts="1.0",
        previous_run_id="",
        active=True,
        builds=builds,
        indexes={},
        promotions=promotions or {},
    )


AMD = parse_platform("linux/amd64")
ARM = parse_platform("linux/arm64")
A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64


def test_built_digests_only_when_every_platform_is_pushed_with_a_digest() -> None:
    amd = BuildRecord("runtime", AMD, BuildState.PUSHED, A)
    arm = BuildRecord("runtime", ARM, BuildState.PUSHED, B)
    assert run({("runtime", AMD): amd, ("runtime", ARM): arm}).built_digests("runtime") == {
        AMD: A,
        ARM: B,
    }
    assert run({("runtime", AMD): amd}).built_digests("runtime") is None
    building = BuildRecord("runtime", ARM, BuildState.BUILDING, B)
    assert run({("runtime", AMD): amd, ("runtime", ARM): building}).built_digests("runtime") is None
    no_digest = BuildRecord("runtime", ARM, BuildState.PUSHED, "")
    assert (
        run({("runtime", AMD): amd, ("runtime", ARM): no_digest}).built_digests("runtime") is None
    )
    release = run({("runtime", AMD): amd})
    assert release.build("runtime", AMD) is amd
    assert not release.settled


def test_pending_overwrites_are_the_failed_promotions_waiting_for_confirmation() -> None:
    promotions = {
        "m1": PromotionResult("m1", False, A, OVERWRITE_PENDING, 1.0),
        "m2": PromotionResult("m2", False, B, "HTTP 500", 1.0),
        "m3": PromotionResult("m3", True, B, OVERWRITE_PENDING, 1.0),
    }
    assert OVERWRITE_PENDING == "overwrite-pending"
    assert pending_overwrites(run({}, promotions)) == {"m1": A}


def test_the_immutable_refusal_keeps_what_it_refused() -> None:
    promoted = Promoted(run_id="r1", at=1.0, by=("U0A",), digests={"runtime": A})
    refused = VersionImmutable("v1.0.0", promoted)
    assert (refused.version, refused.promoted) == ("v1.0.0", promoted)
    assert str(refused) == "v1.0.0 is promoted and immutable"
