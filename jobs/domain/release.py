"""The release's values and its state machine: the pure transition table, the build
states, the validators and the snapshot dataclasses a store read returns (`Release`,
`BuildRecord`, ...). No I/O: the Redis record with its Lua lives in `jobs.store.releases`.

    queued -> building -> merging -> verifying -> ready | blocked
    ready -> approved -> promoting -> promoted
    any unfinished state -> failed | cancelled   (not promoting -> cancelled: half-moved
                                                   tags are finished, then reported)
    ready | approved -> blocked                  (the click-time re-check failed)

One active run per version. A new run may start only when the current one is settled:
promoted, failed, cancelled, or blocked. Blocked counts as settled because a blocked
run can never go on (its published digests failed the platform check, and only a new
build can fix that); its record stays for the audit trail. A ready or approved run is
still live: asking again returns it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from jobs.domain.errors import Refused
from jobs.domain.platforms import Platform, PlatformError, canonical_platform
from jobs.domain.versions import Version, parse_version

# Pure logic ---------------------------------------------------------------------------


class State(StrEnum):
    QUEUED = "queued"
    BUILDING = "building"
    MERGING = "merging"
    VERIFYING = "verifying"
    READY = "ready"
    BLOCKED = "blocked"
    APPROVED = "approved"
    PROMOTING = "promoting"
    PROMOTED = "promoted"
    FAILED = "failed"
    CANCELLED = "cancelled"


_S = State
TRANSITIONS: Mapping[State, frozenset[State]] = {
    _S.QUEUED: frozenset({_S.BUILDING, _S.FAILED, _S.CANCELLED}),
    _S.BUILDING: frozenset({_S.MERGING, _S.FAILED, _S.CANCELLED}),
    _S.MERGING: frozenset({_S.VERIFYING, _S.FAILED, _S.CANCELLED}),
    _S.VERIFYING: frozenset({_S.READY, _S.BLOCKED, _S.FAILED, _S.CANCELLED}),
    _S.READY: frozenset({_S.APPROVED, _S.BLOCKED, _S.CANCELLED}),
    _S.APPROVED: frozenset({_S.PROMOTING, _S.BLOCKED, _S.CANCELLED}),
    _S.PROMOTING: frozenset({_S.PROMOTED, _S.FAILED}),
    _S.BLOCKED: frozenset({_S.CANCELLED}),
    _S.PROMOTED: frozenset(),
    _S.FAILED: frozenset(),
    _S.CANCELLED: frozenset(),
}

TERMINAL: frozenset[State] = frozenset({_S.PROMOTED, _S.FAILED, _S.CANCELLED})
# States after which a new request for the version starts a new run.
SETTLED: frozenset[State] = TERMINAL | {_S.BLOCKED}


class Event(StrEnum):
    """What happened to a release; `next_state` says where it leads."""

    START = "start"
    BUILT = "built"
    MERGED = "merged"
    VERIFIED = "verified"
    CHECK_FAILED = "check_failed"
    APPROVE = "approve"
    PROMOTE = "promote"
    PROMOTED = "promoted"
    FAIL = "fail"
    CANCEL = "cancel"


EVENT_TARGETS: Mapping[Event, State] = {
    Event.START: _S.BUILDING,
    Event.BUILT: _S.MERGING,
    Event.MERGED: _S.VERIFYING,
    Event.VERIFIED: _S.READY,
    Event.CHECK_FAILED: _S.BLOCKED,
    Event.APPROVE: _S.APPROVED,
    Event.PROMOTE: _S.PROMOTING,
    Event.PROMOTED: _S.PROMOTED,
    Event.FAIL: _S.FAILED,
    Event.CANCEL: _S.CANCELLED,
}


class InvalidTransition(Refused, ValueError):
    def __init__(self, current: State, target: State, event: Event | None = None) -> None:
        self.current, self.target, self.event = current, target, event
        what = f"{event.value} ({target.value})" if event else target.value
        super().__init__(f"a release that is {current.value} cannot go to {what}")


def can_transition(current: State, target: State) -> bool:
    return target in TRANSITIONS[current]


def next_state(current: State, event: Event) -> State:
    """Where `event` takes a release that is `current`; InvalidTransition if nowhere."""
    target = EVENT_TARGETS[event]
    if not can_transition(current, target):
        raise InvalidTransition(current, target, event)
    return target


def allows_new_run(current: State) -> bool:
    return current in SETTLED


class BuildState(StrEnum):
    QUEUED = "queued"
    BUILDING = "building"
    PUSHED = "pushed"
    FAILED = "failed"
    CANCELLED = "cancelled"


_B = BuildState
BUILD_TRANSITIONS: Mapping[BuildState, frozenset[BuildState]] = {
    _B.QUEUED: frozenset({_B.BUILDING, _B.PUSHED, _B.FAILED, _B.CANCELLED}),
    # building -> building: a new attempt (retry or reclaim) started.
    _B.BUILDING: frozenset({_B.BUILDING, _B.PUSHED, _B.FAILED, _B.CANCELLED}),
    _B.FAILED: frozenset({_B.BUILDING, _B.PUSHED, _B.CANCELLED}),
    # A pushed digest is final: one writer per build, a redelivery cannot replace it.
    _B.PUSHED: frozenset(),
    _B.CANCELLED: frozenset(),
}


def build_sources(target: BuildState) -> frozenset[BuildState]:
    """The build states from which `target` can be reached."""
    return frozenset(s for s, targets in BUILD_TRANSITIONS.items() if target in targets)


def build_field(component: str, platform: Platform | str) -> str:
    """The name of a build's field in the run's builds hash: `component@os/arch`."""
    return f"{component}@{platform}"


_COMPONENT = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}\Z")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}\Z|^sha512:[0-9a-f]{128}\Z")


def check_version(version: Version | str) -> str:
    """The text of `version`: a `Version` as it is, text only if the one version grammar
    (`jobs.domain.versions`) accepts it; raises VersionError (a ValueError) otherwise.
    The store's check of what it is asked to write or read under."""
    if isinstance(version, Version):
        return str(version)
    return str(parse_version(version))


def check_component(component: str) -> str:
    if not _COMPONENT.match(component):
        raise ValueError(
            f"{component!r} is not a component name (lowercase letters, digits, '.', '_', '-')"
        )
    return component


def check_digest(digest: str) -> str:
    if not _DIGEST.match(digest):
        raise ValueError(f"{digest!r} is not a digest such as sha256:<64 hex digits>")
    return digest


def check_platform(platform: Platform | str) -> str:
    """The one spelling of `platform` (ValueError for text that is not it): the store's
    check of what it is asked to write."""
    try:
        return canonical_platform(str(platform))
    except PlatformError as error:
        raise ValueError(str(error)) from None


# Snapshot -----------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildRecord:
    component: str
    platform: Platform
    state: BuildState
    digest: str | None = None
    attempt: int = 0
    error: str = ""
    log_tail: tuple[str, ...] = ()
    updated_at: float = 0.0
    # The component whose build this is, when its build inputs are identical to that
    # one's (`jobs.domain.builds`): that component's repository holds the digest. "" for
    # a build of its own.
    built_with: str = ""


@dataclass(frozen=True)
class ComponentIndex:
    component: str
    digest: str
    verdict: str
    detail: str = ""
    updated_at: float = 0.0


@dataclass(frozen=True)
class ApprovalRecord:
    """One approver's click as the run records it (state; the rule is `ApprovalPolicy`)."""

    user: str
    at: float
    digests: Mapping[str, str] = field(hash=False)


# The detail of a promotion record whose mirror tag holds another digest, until an
# approver confirms the overwrite.
OVERWRITE_PENDING = "overwrite-pending"


@dataclass(frozen=True)
class PromotionResult:
    target: str
    ok: bool
    digest: str
    detail: str
    at: float


@dataclass(frozen=True)
class Release:
    version: Version
    run_id: str
    state: State
    state_reason: str
    requested_by: str
    channel: str
    platforms: tuple[Platform, ...]
    components: tuple[str, ...]
    source_ref: str
    created_at: float
    updated_at: float
    status_channel: str
    status_ts: str
    previous_run_id: str
    active: bool
    builds: Mapping[tuple[str, Platform], BuildRecord] = field(hash=False)
    indexes: Mapping[str, ComponentIndex] = field(hash=False)
    merges_claimed: frozenset[str] = frozenset()
    approvals: Mapping[str, ApprovalRecord] = field(default_factory=dict, hash=False)
    promotions: Mapping[str, PromotionResult] = field(default_factory=dict, hash=False)
    supersede: bool = False  # an approver's supersede of a promoted version
    # What asked for this run (a Slack delivery's identity; "" from the command line):
    # a redelivery of that request gets this run back as its own.
    request_id: str = ""

    @property
    def settled(self) -> bool:
        return self.state in SETTLED

    def build(self, component: str, platform: Platform) -> BuildRecord:
        return self.builds[(component, platform)]

    def built_digests(self, component: str) -> dict[Platform, str] | None:
        """Platform -> pushed digest for `component`, or None while any is missing."""
        digests = {}
        for platform in self.platforms:
            record = self.builds.get((component, platform))
            if record is None or record.state is not BuildState.PUSHED or not record.digest:
                return None
            digests[platform] = record.digest
        return digests


@dataclass(frozen=True)
class TagWrite:
    """What a merge of this version last wrote to a component's release tag."""

    digest: str
    verified: bool  # read back and passed the platform check
    run_id: str
    at: float


@dataclass(frozen=True)
class Promoted:
    """Who promoted a version, when, and the digests: kept after the run's detail expires."""

    run_id: str
    at: float
    by: tuple[str, ...]
    digests: Mapping[str, str] = field(hash=False)


@dataclass(frozen=True)
class VersionRecord:
    """The version's small, never-expiring record (see `Keys.record`)."""

    tags: Mapping[str, TagWrite] = field(hash=False)
    promoted: Promoted | None


class VersionImmutable(Refused):
    """A new run of a promoted version was asked for without supersede."""

    def __init__(self, version: Version | str, promoted: Promoted) -> None:
        self.version, self.promoted = str(version), promoted
        super().__init__(f"{version} is promoted and immutable")


@dataclass(frozen=True)
class DigestRecorded:
    # "recorded": stored now; "already": the same digest was stored before (a redelivery);
    # "conflict": a different digest is stored and stays; "refused": run not active or the
    # build was cancelled; "stale": the caller's lease was taken over by a reclaim, so
    # its result is not recorded (the holder of the new lease records). `digest` is the
    # one the release holds.
    status: Literal["recorded", "already", "conflict", "refused", "stale"]
    digest: str | None


@dataclass(frozen=True)
class Fence:
    """The lease a write is made under: the job's stream entry, the consumer holding it
    and the delivery count, which a reclaim increments (so it is the lease's token). A
    write fenced by a token that is no longer the entry's current one is refused."""

    stream: str
    entry_id: str
    consumer: str
    deliveries: int


@dataclass(frozen=True)
class ApprovalResult:
    accepted: bool
    approvals: int
    reason: str = ""  # why it was refused


@dataclass(frozen=True)
class ReleaseEvent:
    id: str
    version: str
    run_id: str
    type: str
    fields: Mapping[str, str] = field(hash=False)


def pending_overwrites(release: Release) -> dict[str, str]:
    """Mirror targets waiting for an approver's overwrite confirmation -> the digest held."""
    return {
        target: result.digest
        for target, result in release.promotions.items()
        if not result.ok and result.detail == OVERWRITE_PENDING
    }
