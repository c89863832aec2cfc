"""Edge cases of who may sync a release to a mirror from Slack (`jobs.domain.sync_gate`):
each state's answer, the digests a sync may copy, and the sentences. Expected values are
written out here, not taken from the module (issue 15)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import pytest

from jobs.domain.platforms import parse_platform
from jobs.domain.release import ApprovalRecord, ComponentIndex, Release, State
from jobs.domain.sync_gate import (
    SyncDecision,
    SyncMode,
    approved_digests,
    sync_decision,
    verified_digests,
)
from jobs.domain.versions import parse_version

VERSION = "v1.0.0"
APPROVERS = "<@U0APPROVER>"
USER = "U0SYNCER"
A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
C = "sha256:" + "c" * 64


def release(
    state: State,
    *,
    indexes: Mapping[str, ComponentIndex] | None = None,
    approvals: Mapping[str, ApprovalRecord] | None = None,
    reason: str = "",
) -> Release:
    return Release(
        version=parse_version(VERSION),
        run_id="0123456789abcdef",
        state=state,
        state_reason=reason,
        requested_by="U0REQUESTER",
        channel="C0RELEASES",
        platforms=(parse_platform("linux/amd64"),),
        components=("runtime", "gateway"),
        source_ref=VERSION,
        created_at=0.0,
        updated_at=0.0,
        status_channel="C0RELEASES",
        status_ts="1.0",
        previous_run_id="",
        active=True,
        builds={},
        indexes=dict(
            indexes
            if indexes is not None
            else {
                "runtime": ComponentIndex("runtime", A, "ok"),
                "gateway": ComponentIndex("gateway", B, "ok"),
            }
        ),
        approvals=dict(approvals or {}),
    )


def decide(r: Release | None, *, ready_asked: bool = False, approver: bool = False) -> SyncDecision:
    return sync_decision(
        r, VERSION, ready_asked=ready_asked, approver=approver, user=USER, approvers=APPROVERS
    )


def test_verified_digests_need_every_component_ok() -> None:
    assert verified_digests(release(State.READY)) == {"runtime": A, "gateway": B}
    missing = release(State.READY, indexes={"runtime": ComponentIndex("runtime", A, "ok")})
    assert verified_digests(missing) is None
    failing = release(
        State.READY,
        indexes={
            "runtime": ComponentIndex("runtime", A, "ok"),
            "gateway": ComponentIndex("gateway", B, "missing linux/amd64"),
        },
    )
    assert verified_digests(failing) is None


def test_approved_digests_are_those_of_an_approval_of_every_component() -> None:
    partial = ApprovalRecord("U0P", 1.0, {"runtime": C})
    full = ApprovalRecord("U0F", 2.0, {"runtime": A, "gateway": B, "extra": C})
    assert approved_digests(release(State.PROMOTED, approvals={"U0P": partial})) is None
    assert approved_digests(release(State.PROMOTED)) is None
    both = release(State.PROMOTED, approvals={"U0P": partial, "U0F": full})
    assert approved_digests(both) == {"runtime": A, "gateway": B}


def test_an_unknown_version_is_refused() -> None:
    assert decide(None) == SyncDecision(
        f"{VERSION} has no release to sync; release it, have it approved, and sync it once "
        "it is promoted"
    )


def test_a_promoted_release_syncs_its_approved_digests_not_later_verdicts() -> None:
    approval = ApprovalRecord("U0F", 2.0, {"runtime": C, "gateway": B})
    decision = decide(release(State.PROMOTED, approvals={"U0F": approval}))
    assert decision.refusal is None
    assert decision.mode is SyncMode.PROMOTED
    assert dict(decision.digests) == {"runtime": C, "gateway": B}


def test_a_promoted_release_without_approvals_syncs_its_verified_digests() -> None:
    decision = decide(release(State.PROMOTED))
    assert (decision.refusal, decision.mode, dict(decision.digests)) == (
        None,
        SyncMode.PROMOTED,
        {"runtime": A, "gateway": B},
    )


NO_DIGESTS = f"{VERSION} has no verified digest of every component; nothing can be synced"


def test_a_promoted_release_with_nothing_verified_is_refused() -> None:
    assert decide(release(State.PROMOTED, indexes={})) == SyncDecision(NO_DIGESTS)


def test_a_ready_release_needs_the_ready_flag() -> None:
    assert decide(release(State.READY), approver=True) == SyncDecision(
        f"{VERSION} is ready but not approved; from Slack only a promoted release is synced "
        f"to a mirror. An approver ({APPROVERS}) may approve it, or sync it before approval "
        f"with `/aibrix sync {VERSION} MIRROR --ready`"
    )


def test_a_ready_release_needs_an_approver() -> None:
    assert decide(release(State.READY), ready_asked=True) == SyncDecision(
        f"<@{USER}> may not sync {VERSION} before it is approved; only an approver "
        f"({APPROVERS}) may, or anyone with the sync role once it is promoted"
    )


def test_an_approver_syncs_a_ready_release_with_its_verified_digests() -> None:
    decision = decide(release(State.READY), ready_asked=True, approver=True)
    assert (decision.refusal, decision.mode, dict(decision.digests)) == (
        None,
        SyncMode.READY,
        {"runtime": A, "gateway": B},
    )
    unverified = release(State.READY, indexes={"runtime": ComponentIndex("runtime", A, "ok")})
    assert decide(unverified, ready_asked=True, approver=True) == SyncDecision(NO_DIGESTS)


@pytest.mark.parametrize("state", [State.BLOCKED, State.FAILED, State.CANCELLED])
def test_a_settled_unpromoted_release_is_refused_with_its_reason(state: State) -> None:
    assert decide(
        release(state, reason="runtime lacks linux/arm64"), approver=True
    ) == SyncDecision(
        f"{VERSION} is {state.value} (runtime lacks linux/arm64): it was never promoted, so "
        "nobody may sync it to a mirror; cut a new release"
    )
    assert decide(release(state), ready_asked=True, approver=True).refusal == (
        f"{VERSION} is {state.value}: it was never promoted, so nobody may sync it to a "
        "mirror; cut a new release"
    )


@pytest.mark.parametrize(
    "state",
    [State.QUEUED, State.BUILDING, State.MERGING, State.VERIFYING, State.APPROVED, State.PROMOTING],
)
def test_a_live_release_is_refused_until_promoted_or_ready(state: State) -> None:
    assert decide(release(state), ready_asked=True, approver=True) == SyncDecision(
        f"{VERSION} is {state.value}; it can be synced once it is promoted (anyone with the sync "
        f"role), or once it is ready by an approver with `/aibrix sync {VERSION} MIRROR --ready`"
    )


def test_a_refusal_carries_no_digests() -> None:
    decision = decide(release(State.READY))
    assert decision.mode is SyncMode.PROMOTED and dict(decision.digests) == {}
    assert dataclasses.is_dataclass(decision)
