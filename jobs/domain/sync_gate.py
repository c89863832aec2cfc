"""Whether a release may be synced to a mirror from Slack, and with which digests: pure.

The copy engine (`jobs.usecases.sync`) is the same for the command line, promotion and Slack;
what differs is who decides. From Slack the bot's own registry credentials do the copy,
so only a release whose digests an approver vouched for may go to a mirror:

- a promoted release (the digests its approvals were bound to), by anyone holding the
  `sync` role;
- a ready release (its verified, not yet approved digests), only when an approver asks
  for it explicitly (`/aibrix sync VERSION MIRROR --ready`); audited as such.

Anything else is refused with the reason and who may do it. The caller checks the
`sync` role (`handlers.context.permission_refusal`) before asking this.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from jobs.domain import messages
from jobs.domain.release import Release, State


class SyncMode(StrEnum):
    """Which digests a sync copies, and so what the audit stream calls it."""

    PROMOTED = "promoted"  # the approved digests of a promoted release
    READY = "ready"  # an approver's sync of a verified, not yet approved release


@dataclass(frozen=True)
class SyncDecision:
    """`refusal` is None when the sync may run: then `digests` (component -> digest) are
    exactly what it may copy, and `mode` says why."""

    refusal: str | None
    mode: SyncMode = SyncMode.PROMOTED
    digests: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


def approved_digests(release: Release) -> dict[str, str] | None:
    """The digests the run's approvals were bound to (all approvals name the same ones:
    the store accepts an approval only of the verified index digests); None if the run
    has no approval of every component."""
    for approval in release.approvals.values():
        if set(approval.digests) >= set(release.components):
            return {c: approval.digests[c] for c in release.components}
    return None


def verified_digests(release: Release) -> dict[str, str] | None:
    """The verified index digest of every component; None while any is missing or not ok."""
    found = {}
    for component in release.components:
        index = release.indexes.get(component)
        if index is None or index.verdict != "ok":
            return None
        found[component] = index.digest
    return found


def sync_decision(
    release: Release | None,
    version: str,
    *,
    ready_asked: bool,
    approver: bool,
    user: str,
    approvers: str,
) -> SyncDecision:
    """May `user` sync `version` (its active run `release`, None when there is none) from
    Slack? `ready_asked`: they asked for a ready release (`--ready`); `approver`: they are
    an approver; `approvers`: who the approvers are, for the refusal sentence."""
    if release is None:
        return SyncDecision(messages.sync_refused_unknown(version))
    state = release.state
    if state is State.PROMOTED:
        digests = approved_digests(release) or verified_digests(release)
        if digests is None:
            return SyncDecision(messages.sync_refused_no_digests(version))
        return SyncDecision(None, SyncMode.PROMOTED, MappingProxyType(digests))
    if state is State.READY:
        if not ready_asked:
            return SyncDecision(messages.sync_refused_not_approved(version, approvers))
        if not approver:
            return SyncDecision(
                messages.sync_refused_ready_needs_approver(user, version, approvers)
            )
        digests = verified_digests(release)
        if digests is None:
            return SyncDecision(messages.sync_refused_no_digests(version))
        return SyncDecision(None, SyncMode.READY, MappingProxyType(digests))
    if state in (State.BLOCKED, State.FAILED, State.CANCELLED):
        return SyncDecision(
            messages.sync_refused_settled(version, state.value, release.state_reason)
        )
    # queued, building, merging, verifying, approved, promoting: not yet.
    return SyncDecision(messages.sync_refused_not_yet(version, state.value))
