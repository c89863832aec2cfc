"""Edge cases of the promotion gate's policy (`jobs.domain.approvals`): the TTL boundary to
the second, a requester who is not an approver (may reject, may not approve), the tally's
order and the sentences. Expected values are written out here (issue 15)."""

from __future__ import annotations

import pytest

from jobs.domain.approvals import (
    Click,
    Decision,
    Recheck,
    TagReading,
    Tally,
    Verdict,
    decide_approval,
    decide_overwrite,
    decide_recheck,
    decide_rejection,
    drift_problems,
    is_current,
    may_act,
    needs_groups,
    tally,
)
from jobs.domain.config import ApprovalPolicy
from jobs.domain.release import ApprovalRecord, State

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
DIGESTS = {"runtime": A}
NOW = 1_000_000.0
TTL = 3600
REQUESTER = "U0REQUESTER"
# The requester is NOT an approver here: what they may do is their own rule, not the list's.
POLICY = ApprovalPolicy(
    approvers=("U0APPROVER1", "U0APPROVER2"),
    approver_groups=("S0RELEASE",),
    approvals_required=2,
    allow_self_approval=False,
    approval_ttl_seconds=TTL,
)


def click(
    user: str,
    *,
    state: State = State.READY,
    groups: frozenset[str] = frozenset(),
    approvals: dict[str, ApprovalRecord] | None = None,
    active: str | None = "run-b",
    requested_by: str = REQUESTER,
) -> Click:
    return Click(
        user=user,
        user_groups=groups,
        version="v1.0.0",
        run_id="run-b",
        active_run_id=active,
        state=state,
        requested_by=requested_by,
        approvals=approvals or {},
        verified=DIGESTS,
        now=NOW,
    )


def approval(user: str, age: float, digests: dict[str, str] | None = None) -> ApprovalRecord:
    return ApprovalRecord(user, NOW - age, DIGESTS if digests is None else digests)


def test_an_approval_exactly_ttl_old_still_counts_and_one_second_more_does_not() -> None:
    assert is_current(approval("U0A", TTL), DIGESTS, NOW, TTL)
    assert not is_current(approval("U0A", TTL + 1), DIGESTS, NOW, TTL)
    assert not is_current(approval("U0A", 0, {"runtime": B}), DIGESTS, NOW, TTL)


def test_the_tally_at_the_ttl_boundary() -> None:
    approvals = {
        "U0APPROVER1": approval("U0APPROVER1", TTL),
        "U0APPROVER2": approval("U0APPROVER2", TTL + 1),
    }
    assert tally(POLICY, approvals, DIGESTS, NOW) == Tally(("U0APPROVER1",), ("U0APPROVER2",), 2)


def test_a_repeat_click_at_the_ttl_boundary_is_already_counted_and_after_it_renews() -> None:
    at_ttl = click("U0APPROVER1", approvals={"U0APPROVER1": approval("U0APPROVER1", TTL)})
    assert decide_approval(POLICY, at_ttl) == Decision(
        Verdict.ALREADY, "<@U0APPROVER1> has already approved this run; it counts once"
    )
    late = click("U0APPROVER1", approvals={"U0APPROVER1": approval("U0APPROVER1", TTL + 1)})
    assert decide_approval(POLICY, late) == Decision(
        Verdict.RECORD, "", "the earlier approval of <@U0APPROVER1> had expired; this one counts"
    )


@pytest.mark.parametrize("state", [State.READY, State.APPROVED])
def test_the_requester_may_reject_their_own_release_without_being_an_approver(state: State) -> None:
    assert not POLICY.is_approver(REQUESTER)
    assert decide_rejection(POLICY, click(REQUESTER, state=state)) == Decision(Verdict.RECORD)


def test_someone_neither_approver_nor_requester_may_not_reject() -> None:
    assert decide_rejection(POLICY, click("U0OTHER")) == Decision(
        Verdict.REFUSE, "<@U0OTHER> is not an approver of this project (by user id or user group)"
    )
    in_group = click("U0OTHER", groups=frozenset({"S0RELEASE"}))
    assert decide_rejection(POLICY, in_group) == Decision(Verdict.RECORD)


@pytest.mark.parametrize("state", [s for s in State if s not in (State.READY, State.APPROVED)])
def test_a_rejection_is_open_only_while_ready_or_approved(state: State) -> None:
    assert decide_rejection(POLICY, click(REQUESTER, state=state)) == Decision(
        Verdict.REFUSE,
        f"v1.0.0 is {state}; only a ready or approved release can be rejected",
    )


def test_a_requester_who_is_not_an_approver_may_not_approve() -> None:
    assert decide_approval(POLICY, click(REQUESTER)) == Decision(
        Verdict.REFUSE,
        "<@U0REQUESTER> is not an approver of this project (by user id or user group)",
    )


def test_self_approval_refused_and_allowed_by_the_policy() -> None:
    listed = ApprovalPolicy(approvers=(REQUESTER,), approvals_required=1, allow_self_approval=False)
    assert decide_approval(listed, click(REQUESTER)) == Decision(
        Verdict.REFUSE,
        "<@U0REQUESTER> requested v1.0.0 and may not approve it (self-approval is off)",
    )
    allowed = ApprovalPolicy(approvers=(REQUESTER,), approvals_required=1, allow_self_approval=True)
    assert decide_approval(allowed, click(REQUESTER)) == Decision(Verdict.RECORD)


def test_a_click_on_an_earlier_run_is_refused_first() -> None:
    superseded = Decision(
        Verdict.REFUSE,
        "these buttons belong to an earlier run of v1.0.0; use the buttons of its latest message",
    )
    assert (
        decide_approval(POLICY, click("U0APPROVER1", active="run-c", state=State.FAILED))
        == superseded
    )
    assert decide_rejection(POLICY, click(REQUESTER, active=None)) == superseded
    assert decide_overwrite(POLICY, click("U0APPROVER1", active="run-c"), {"m": A}) == superseded


def test_only_a_ready_release_is_approved() -> None:
    assert decide_approval(POLICY, click("U0APPROVER1", state=State.APPROVED)) == Decision(
        Verdict.REFUSE, "v1.0.0 is approved; only a ready release can be approved"
    )


def test_the_tally_skips_the_requester_only_without_self_approval_and_keeps_click_order() -> None:
    approvals = {
        "U0APPROVER2": approval("U0APPROVER2", 5),
        REQUESTER: approval(REQUESTER, 20),
        "U0APPROVER1": approval("U0APPROVER1", 10),
    }
    assert tally(POLICY, approvals, DIGESTS, NOW, requested_by=REQUESTER) == Tally(
        ("U0APPROVER1", "U0APPROVER2"), (), 2
    )
    selfish = ApprovalPolicy(
        approvers=("U0APPROVER1",), allow_self_approval=True, approvals_required=3
    )
    counted = tally(selfish, approvals, DIGESTS, NOW, requested_by=REQUESTER)
    assert counted == Tally((REQUESTER, "U0APPROVER1", "U0APPROVER2"), (), 3)
    assert counted.complete
    assert Tally(("a", "b"), (), 2).complete and not Tally(("a",), (), 2).complete
    assert counted.text() == "3 of 3 approvals: <@U0REQUESTER>, <@U0APPROVER1>, <@U0APPROVER2>"
    assert Tally((), (), 2).text() == "0 of 2 approvals"


def test_who_may_act_and_when_groups_are_looked_up() -> None:
    assert may_act(POLICY, "U0APPROVER1", frozenset())
    assert may_act(POLICY, "U0X", frozenset({"S0RELEASE"}))
    assert not may_act(POLICY, "U0X", frozenset({"S0OTHER"}))
    assert needs_groups(POLICY, "U0X")
    assert not needs_groups(POLICY, "U0APPROVER1")
    assert not needs_groups(ApprovalPolicy(approvers=("U0A",)), "U0X")


def test_overwrite_confirmation_rules() -> None:
    pending = {"mirror/runtime:v1.0.0": A}
    nothing = Decision(
        Verdict.REFUSE, "v1.0.0 has no mirror tag waiting for an overwrite confirmation"
    )
    assert decide_overwrite(POLICY, click("U0APPROVER1", state=State.PROMOTING), {}) == nothing
    assert decide_overwrite(POLICY, click("U0APPROVER1", state=State.READY), pending) == nothing
    assert decide_overwrite(
        POLICY, click("U0APPROVER1", state=State.PROMOTING), pending
    ) == Decision(Verdict.RECORD)
    assert decide_overwrite(POLICY, click(REQUESTER, state=State.PROMOTING), pending) == Decision(
        Verdict.REFUSE,
        "<@U0REQUESTER> is not an approver of this project (by user id or user group)",
    )
    listed = ApprovalPolicy(approvers=(REQUESTER,), allow_self_approval=False)
    assert decide_overwrite(listed, click(REQUESTER, state=State.PROMOTING), pending) == Decision(
        Verdict.REFUSE,
        "<@U0REQUESTER> requested v1.0.0 and may not approve it (self-approval is off)",
    )
    allowed = ApprovalPolicy(approvers=(REQUESTER,), allow_self_approval=True)
    assert decide_overwrite(allowed, click(REQUESTER, state=State.PROMOTING), pending) == Decision(
        Verdict.RECORD
    )


def test_the_recheck_names_moved_removed_and_failing_tags_and_lists_unreadable_ones() -> None:
    verified = {"runtime": A, "gateway": A, "kv": A, "meta": A, "ok": A}
    readings = {
        "runtime": TagReading(B),
        "gateway": TagReading(None),
        "kv": TagReading(A, check_failed=True),
        "meta": TagReading(B, unreadable=True),
        "ok": TagReading(A),
    }
    assert drift_problems("v1", verified, readings) == [
        "gateway v1 no longer exists in the registry, so it cannot be approved",
        "kv v1 no longer passes the platform check",
        "runtime v1 has moved since it was verified: the tag now holds "
        "sha256:bbbbbbbbbbbb, but sha256:aaaaaaaaaaaa was verified",
    ]
    recheck = decide_recheck("v1", {**verified, "absent": A}, readings)
    assert recheck == Recheck(drift_problems("v1", verified, readings), ["absent", "meta"])


def test_without_a_requester_given_nobody_is_left_out_of_the_tally() -> None:
    # Whatever the user id, even one that looks like a placeholder.
    approvals = {"XXXX": approval("XXXX", 1)}
    assert tally(POLICY, approvals, DIGESTS, NOW).counted == ("XXXX",)
