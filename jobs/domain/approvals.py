"""The promotion gate's policy: who may approve or reject a run, and when it is approved.

Pure: the caller gathers the facts (the clicker's user groups, the run, the active run,
the clock) and does what the decision says. Registry drift is checked by the caller
after the policy allows the click, since it needs the network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from jobs.domain import messages
from jobs.domain.config import ApprovalPolicy
from jobs.domain.release import ApprovalRecord, State


class Verdict(StrEnum):
    REFUSE = "refuse"  # say why, record nothing
    RECORD = "record"  # record the approval or rejection
    ALREADY = "already"  # a repeat click: answer, record nothing new


@dataclass(frozen=True)
class Click:
    """The facts about one click on an Approve or Reject button."""

    user: str
    user_groups: frozenset[str]
    version: str
    run_id: str  # the run the button belongs to
    active_run_id: str | None  # the version's active run now
    state: State  # the clicked run's state
    requested_by: str
    approvals: Mapping[str, ApprovalRecord]
    verified: Mapping[str, str]  # component -> verified index digest
    now: float  # seconds since the epoch


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str = ""
    note: str = ""  # said alongside an accepted click (a renewed, expired approval)


@dataclass(frozen=True)
class Tally:
    counted: tuple[str, ...]  # users whose approval counts, in approval order
    expired: tuple[str, ...]  # users whose approval is too old
    required: int

    @property
    def complete(self) -> bool:
        return len(self.counted) >= self.required

    def text(self) -> str:
        return messages.approval_tally(len(self.counted), self.required, self.counted)


def is_current(approval: ApprovalRecord, verified: Mapping[str, str], now: float, ttl: int) -> bool:
    """An approval counts while it is younger than the TTL and covers the verified digests."""
    return now - approval.at <= ttl and dict(approval.digests) == dict(verified)


def tally(
    policy: ApprovalPolicy,
    click_approvals: Mapping[str, ApprovalRecord],
    verified: Mapping[str, str],
    now: float,
    requested_by: str = "",
) -> Tally:
    ordered = sorted(click_approvals.values(), key=lambda a: a.at)
    counted: list[str] = []
    expired: list[str] = []
    for approval in ordered:
        if approval.user == requested_by and not policy.allow_self_approval:
            continue
        if is_current(approval, verified, now, policy.approval_ttl_seconds):
            counted.append(approval.user)
        else:
            expired.append(approval.user)
    return Tally(tuple(counted), tuple(expired), policy.approvals_required)


def may_act(policy: ApprovalPolicy, user: str, groups: frozenset[str]) -> bool:
    return policy.is_approver(user, groups)


def needs_groups(policy: ApprovalPolicy, user: str) -> bool:
    """Whether the clicker's user groups must be looked up to decide."""
    return user not in policy.approvers and bool(policy.approver_groups)


def _run_refusal(click: Click) -> str | None:
    if click.active_run_id != click.run_id:
        return messages.approval_superseded(click.version)
    return None


def decide_approval(policy: ApprovalPolicy, click: Click) -> Decision:
    superseded = _run_refusal(click)
    if superseded:
        return Decision(Verdict.REFUSE, superseded)
    if click.state is not State.READY:
        return Decision(Verdict.REFUSE, messages.approval_not_ready(click.version, click.state))
    if not may_act(policy, click.user, click.user_groups):
        return Decision(Verdict.REFUSE, messages.approval_not_approver(click.user))
    if click.user == click.requested_by and not policy.allow_self_approval:
        return Decision(Verdict.REFUSE, messages.approval_self(click.user, click.version))
    earlier = click.approvals.get(click.user)
    if earlier is not None:
        if is_current(earlier, click.verified, click.now, policy.approval_ttl_seconds):
            return Decision(Verdict.ALREADY, messages.approval_already(click.user))
        return Decision(Verdict.RECORD, note=messages.approval_renewed(click.user))
    return Decision(Verdict.RECORD)


def decide_rejection(policy: ApprovalPolicy, click: Click) -> Decision:
    superseded = _run_refusal(click)
    if superseded:
        return Decision(Verdict.REFUSE, superseded)
    if click.state not in (State.READY, State.APPROVED):
        return Decision(Verdict.REFUSE, messages.rejection_not_open(click.version, click.state))
    if not may_act(policy, click.user, click.user_groups) and click.user != click.requested_by:
        return Decision(Verdict.REFUSE, messages.approval_not_approver(click.user))
    return Decision(Verdict.RECORD)


def decide_overwrite(policy: ApprovalPolicy, click: Click, pending: Mapping[str, str]) -> Decision:
    """Confirming that promotion may overwrite mirror tags that hold other digests: an
    approver's decision, with the same self-approval rule as an approval."""
    superseded = _run_refusal(click)
    if superseded:
        return Decision(Verdict.REFUSE, superseded)
    if click.state is not State.PROMOTING or not pending:
        return Decision(Verdict.REFUSE, messages.overwrite_nothing_pending(click.version))
    if not may_act(policy, click.user, click.user_groups):
        return Decision(Verdict.REFUSE, messages.approval_not_approver(click.user))
    if click.user == click.requested_by and not policy.allow_self_approval:
        return Decision(Verdict.REFUSE, messages.approval_self(click.user, click.version))
    return Decision(Verdict.RECORD)


def publish_key(location: str, component: str) -> str:
    """How a component's copy on a secondary publish registry is named in a re-check."""
    return f"{location.rstrip('/')}/{component}"


def publish_expected(verified: Mapping[str, str], secondary: Sequence[str]) -> dict[str, str]:
    """The digests every publish registry must hold: the verified ones on the primary
    (by component) and the same on each other publish registry (by `publish_key`)."""
    expected = dict(verified)
    for location in secondary:
        for component, digest in verified.items():
            expected[publish_key(location, component)] = digest
    return expected


@dataclass(frozen=True)
class TagReading:
    """A release tag read again at click time."""

    digest: str | None  # what it holds; None: the registry said there is no such tag
    unreadable: bool = False  # no answer (unreachable, 5xx, refused): nothing is known
    check_failed: bool = False  # read back, a platform is missing or is not what it says


def drift_problems(
    version: str,
    verified: Mapping[str, str],
    readings: Mapping[str, TagReading],
) -> list[str]:
    """One sentence per component whose release tag proves a change: it holds another
    digest, is gone, or fails the platform check. An unreadable tag proves nothing."""
    problems = []
    for component, digest in sorted(verified.items()):
        reading = readings.get(component, TagReading(None, unreadable=True))
        subject = f"{component} {version}"
        if reading.unreadable:
            continue
        if reading.digest != digest:
            problems.append(messages.approval_drift(subject, digest, reading.digest))
        elif reading.check_failed:
            problems.append(messages.approval_check_failed(subject))
    return problems


@dataclass(frozen=True)
class Recheck:
    drift: list[str]  # proven changes: the click blocks the release
    unreadable: list[str]  # components that could not be read: refuse, try again


def decide_recheck(
    version: str, verified: Mapping[str, str], readings: Mapping[str, TagReading]
) -> Recheck:
    """The click-time re-check: a proven change blocks; otherwise an unreadable tag only
    refuses this click (the release stays ready); else the approval may be recorded."""
    unreadable = sorted(
        c for c in verified if readings.get(c, TagReading(None, unreadable=True)).unreadable
    )
    return Recheck(drift_problems(version, verified, readings), unreadable)
