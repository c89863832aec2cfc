"""The promotion gate's policy as a matrix: who clicks, on which run, in which state."""

from __future__ import annotations

import pytest

from jobs.domain.approvals import (
    Click,
    TagReading,
    Verdict,
    decide_approval,
    decide_overwrite,
    decide_recheck,
    decide_rejection,
    drift_problems,
    needs_groups,
    tally,
)
from jobs.domain.config import ApprovalPolicy
from jobs.domain.release import ApprovalRecord, State

DIGESTS = {"runtime": "sha256:" + "a" * 64, "gateway-plugins": "sha256:" + "b" * 64}
NOW = 1_000_000.0
POLICY = ApprovalPolicy(
    approvers=("U0APPROVER1", "U0APPROVER2", "U0REQUESTER"),
    approver_groups=("S0RELEASE",),
    approvals_required=2,
    allow_self_approval=False,
    approval_ttl_seconds=3600,
)


def click(
    user: str,
    *,
    groups: frozenset[str] = frozenset(),
    state: State = State.READY,
    run_id: str = "run-b",
    active: str | None = "run-b",
    approvals: dict[str, ApprovalRecord] | None = None,
    verified: dict[str, str] | None = None,
) -> Click:
    return Click(
        user=user,
        user_groups=groups,
        version="v1.0.0",
        run_id=run_id,
        active_run_id=active,
        state=state,
        requested_by="U0REQUESTER",
        approvals=approvals or {},
        verified=DIGESTS if verified is None else verified,
        now=NOW,
    )


def approval(user: str, age: float = 10, digests: dict[str, str] | None = None) -> ApprovalRecord:
    return ApprovalRecord(user, NOW - age, DIGESTS if digests is None else digests)


@pytest.mark.parametrize(
    ("name", "policy", "the_click", "verdict", "reason"),
    [
        ("non-approver", POLICY, click("U0STRANGER"), Verdict.REFUSE, "is not an approver"),
        ("requester", POLICY, click("U0REQUESTER"), Verdict.REFUSE, "self-approval is off"),
        (
            "requester, self-approval on",
            ApprovalPolicy(approvers=("U0REQUESTER",), allow_self_approval=True),
            click("U0REQUESTER"),
            Verdict.RECORD,
            "",
        ),
        ("approver", POLICY, click("U0APPROVER1"), Verdict.RECORD, ""),
        (
            "approver by group",
            POLICY,
            click("U0GROUPIE", groups=frozenset({"S0RELEASE"})),
            Verdict.RECORD,
            "",
        ),
        (
            "member of another group",
            POLICY,
            click("U0GROUPIE", groups=frozenset({"S0OTHER"})),
            Verdict.REFUSE,
            "is not an approver",
        ),
        (
            "second approver",
            POLICY,
            click("U0APPROVER2", approvals={"U0APPROVER1": approval("U0APPROVER1")}),
            Verdict.RECORD,
            "",
        ),
        (
            "double click",
            POLICY,
            click("U0APPROVER1", approvals={"U0APPROVER1": approval("U0APPROVER1")}),
            Verdict.ALREADY,
            "has already approved",
        ),
        (
            "expired, clicked again",
            POLICY,
            click("U0APPROVER1", approvals={"U0APPROVER1": approval("U0APPROVER1", 3601)}),
            Verdict.RECORD,
            "",
        ),
        (
            "superseded run",
            POLICY,
            click("U0APPROVER1", run_id="run-a", active="run-b"),
            Verdict.REFUSE,
            "earlier run",
        ),
        ("no active run", POLICY, click("U0APPROVER1", active=None), Verdict.REFUSE, "earlier run"),
        ("blocked", POLICY, click("U0APPROVER1", state=State.BLOCKED), Verdict.REFUSE, "blocked"),
        ("building", POLICY, click("U0APPROVER1", state=State.BUILDING), Verdict.REFUSE, "ready"),
        ("approved", POLICY, click("U0APPROVER1", state=State.APPROVED), Verdict.REFUSE, "ready"),
        (
            "nobody listed",
            ApprovalPolicy(),
            click("U0APPROVER1"),
            Verdict.REFUSE,
            "is not an approver",
        ),
    ],
)
def test_approval_matrix(
    name: str, policy: ApprovalPolicy, the_click: Click, verdict: Verdict, reason: str
) -> None:
    decision = decide_approval(policy, the_click)
    assert decision.verdict is verdict, name
    assert reason in decision.reason, name


def test_renewing_an_expired_approval_says_so() -> None:
    old = {"U0APPROVER1": approval("U0APPROVER1", 4000)}
    decision = decide_approval(POLICY, click("U0APPROVER1", approvals=old))
    assert "had expired" in decision.note


@pytest.mark.parametrize(
    ("approvals", "counted", "expired", "complete"),
    [
        ({}, (), (), False),
        ({"U0APPROVER1": approval("U0APPROVER1")}, ("U0APPROVER1",), (), False),
        (
            {"U0APPROVER1": approval("U0APPROVER1", 20), "U0APPROVER2": approval("U0APPROVER2")},
            ("U0APPROVER1", "U0APPROVER2"),
            (),
            True,
        ),
        (
            {
                "U0APPROVER1": approval("U0APPROVER1", 3601),
                "U0APPROVER2": approval("U0APPROVER2"),
            },
            ("U0APPROVER2",),
            ("U0APPROVER1",),
            False,
        ),
        (  # approved other digests: does not count
            {
                "U0APPROVER1": approval("U0APPROVER1", digests={"runtime": "sha256:" + "c" * 64}),
                "U0APPROVER2": approval("U0APPROVER2"),
            },
            ("U0APPROVER2",),
            ("U0APPROVER1",),
            False,
        ),
        (  # the requester's own approval never counts when self-approval is off
            {"U0REQUESTER": approval("U0REQUESTER"), "U0APPROVER2": approval("U0APPROVER2")},
            ("U0APPROVER2",),
            (),
            False,
        ),
    ],
)
def test_tally(
    approvals: dict[str, ApprovalRecord],
    counted: tuple[str, ...],
    expired: tuple[str, ...],
    complete: bool,
) -> None:
    result = tally(POLICY, approvals, DIGESTS, NOW, "U0REQUESTER")
    assert (result.counted, result.expired, result.complete) == (counted, expired, complete)
    assert result.text().startswith(f"{len(counted)} of 2 approvals")


@pytest.mark.parametrize(
    ("user", "state", "run_id", "verdict"),
    [
        ("U0APPROVER1", State.READY, "run-b", Verdict.RECORD),
        ("U0APPROVER1", State.APPROVED, "run-b", Verdict.RECORD),
        ("U0REQUESTER", State.READY, "run-b", Verdict.RECORD),
        ("U0STRANGER", State.READY, "run-b", Verdict.REFUSE),
        ("U0APPROVER1", State.PROMOTING, "run-b", Verdict.REFUSE),
        ("U0APPROVER1", State.READY, "run-a", Verdict.REFUSE),
    ],
)
def test_rejection_matrix(user: str, state: State, run_id: str, verdict: Verdict) -> None:
    assert decide_rejection(POLICY, click(user, state=state, run_id=run_id)).verdict is verdict


PENDING = {"mirror.example.com/aibrix/runtime:v1.0.0": "sha256:" + "c" * 64}


@pytest.mark.parametrize(
    ("user", "groups", "state", "run_id", "pending", "verdict", "reason"),
    [
        ("U0APPROVER1", frozenset(), State.PROMOTING, "run-b", PENDING, Verdict.RECORD, ""),
        ("U0GROUPIE", frozenset({"S0RELEASE"}), State.PROMOTING, "run-b", PENDING,
         Verdict.RECORD, ""),
        ("U0REQUESTER", frozenset(), State.PROMOTING, "run-b", PENDING, Verdict.REFUSE,
         "may not approve"),
        ("U0STRANGER", frozenset(), State.PROMOTING, "run-b", PENDING, Verdict.REFUSE,
         "not an approver"),
        ("U0APPROVER1", frozenset(), State.PROMOTING, "run-a", PENDING, Verdict.REFUSE,
         "earlier run"),
        ("U0APPROVER1", frozenset(), State.PROMOTED, "run-b", PENDING, Verdict.REFUSE,
         "no mirror tag waiting"),
        ("U0APPROVER1", frozenset(), State.PROMOTING, "run-b", {}, Verdict.REFUSE,
         "no mirror tag waiting"),
    ],
)  # fmt: skip
def test_overwrite_confirmation_matrix(
    user: str,
    groups: frozenset[str],
    state: State,
    run_id: str,
    pending: dict[str, str],
    verdict: Verdict,
    reason: str,
) -> None:
    decision = decide_overwrite(
        POLICY, click(user, groups=groups, state=state, run_id=run_id), pending
    )
    assert decision.verdict is verdict
    assert reason in decision.reason


def test_groups_are_looked_up_only_when_they_can_decide() -> None:
    assert not needs_groups(POLICY, "U0APPROVER1")
    assert needs_groups(POLICY, "U0GROUPIE")
    assert not needs_groups(ApprovalPolicy(approvers=("U0A",)), "U0GROUPIE")


def test_drift_problems_name_each_moved_or_removed_component_not_an_unreadable_one() -> None:
    moved = "sha256:" + "d" * 64
    readings = {"runtime": TagReading(moved), "gateway-plugins": TagReading(None)}
    problems = drift_problems("v1.0.0", DIGESTS, readings)
    assert problems == [
        "gateway-plugins v1.0.0 no longer exists in the registry, so it cannot be approved",
        "runtime v1.0.0 has moved since it was verified: the tag now holds sha256:dddddddddddd, "
        "but sha256:aaaaaaaaaaaa was verified",
    ]
    same = {c: TagReading(d) for c, d in DIGESTS.items()}
    assert drift_problems("v1.0.0", DIGESTS, same) == []
    failing = {**same, "runtime": TagReading(DIGESTS["runtime"], check_failed=True)}
    assert drift_problems("v1.0.0", DIGESTS, failing) == [
        "runtime v1.0.0 no longer passes the platform check"
    ]


def test_item8_an_unreadable_tag_is_not_drift() -> None:
    """Issue 10 item 8 (pure part): unreadable refuses the click, only proof blocks."""
    same = {c: TagReading(d) for c, d in DIGESTS.items()}
    down = {**same, "runtime": TagReading(None, unreadable=True)}
    recheck = decide_recheck("v1.0.0", DIGESTS, down)
    assert recheck.drift == [] and recheck.unreadable == ["runtime"]
    moved = {**down, "gateway-plugins": TagReading("sha256:" + "e" * 64)}
    recheck = decide_recheck("v1.0.0", DIGESTS, moved)
    assert len(recheck.drift) == 1 and recheck.unreadable == ["runtime"]
    assert decide_recheck("v1.0.0", DIGESTS, {}).unreadable == sorted(DIGESTS)
