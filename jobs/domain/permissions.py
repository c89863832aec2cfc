"""Who may do what, and where: the one permission table, and the one check of it.

Every command and button that changes something asks `authorize` before anything is
read or written; so do the CLI and the worker (as the operator, see `OPERATOR`).
Pure: the caller gathers the facts (the actor's Slack user groups, the channel) and
does what the answer says. The table comes from the config's `[permissions]` (roles)
and `[approval]` (approve, reject, confirm an overwrite) sections.

Defaults are safe: a role with no list is granted to the approvers and nobody else,
and with no `channels` listed no channel takes commands that change something. Read-only
commands (`status`, `inspect` of configured images) are open to members of the
accepted channels; `help` is open everywhere.

The table is the whole rule: requesting a release grants nothing more on it (a requester
who is not in `cancel` or `retry` may not cancel or retry their own run; list them there
to allow it). The one exception is Reject, also open to the run's own requester: it can
only stop a promotion, never write a tag, so withdrawing one's own release is safe.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from jobs.domain import messages


class Action(StrEnum):
    """Everything the bot can be asked to do. The value is the role's key in the config
    (`[permissions] release = [...]`) and the word the audit stream records."""

    RELEASE = "release"
    RETRY = "retry"
    CANCEL = "cancel"
    SYNC = "sync"
    APPROVE = "approve"
    REJECT = "reject"
    CONFIRM_OVERWRITE = "confirm_overwrite"
    SUPERSEDE = "supersede"
    NIGHTLY = "nightly"  # unlisted: whoever may release
    # read-only: open to members of the accepted channels
    STATUS = "status"
    INSPECT = "inspect"
    PLAN = "plan"


# The roles the config may list; the others are open (read-only) or tied to approval.
ROLES: tuple[Action, ...] = (
    Action.RELEASE,
    Action.RETRY,
    Action.CANCEL,
    Action.SYNC,
    Action.SUPERSEDE,
    Action.NIGHTLY,
)
APPROVER_ACTIONS: tuple[Action, ...] = (
    Action.APPROVE,
    Action.REJECT,
    Action.CONFIRM_OVERWRITE,
)
READ_ONLY: frozenset[Action] = frozenset({Action.STATUS, Action.INSPECT, Action.PLAN})


@dataclass(frozen=True)
class Grant:
    """Slack user ids and user-group ids a role is granted to."""

    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()

    def admits(self, user: str, groups: Iterable[str]) -> bool:
        return user in self.users or any(g in self.groups for g in groups)

    def describe(self) -> str:
        names = [f"<@{u}>" for u in self.users] + [f"<!subteam^{g}>" for g in self.groups]
        return ", ".join(names) if names else "nobody"


@dataclass(frozen=True)
class Permissions:
    channels: tuple[str, ...] = ()
    grants: Mapping[Action, Grant] = field(default_factory=lambda: MappingProxyType({}), hash=False)

    def grant(self, action: Action) -> Grant:
        return self.grants.get(action, Grant())

    @property
    def groups(self) -> tuple[str, ...]:
        """Every user group named anywhere in the table (to look the actor up once)."""
        seen: dict[str, None] = {}
        for grant in self.grants.values():
            seen.update(dict.fromkeys(grant.groups))
        return tuple(seen)


def build_permissions(
    channels: Iterable[str],
    roles: Mapping[Action, Grant],
    approvers: Grant,
) -> Permissions:
    """The table: listed roles as given, an unlisted `nightly` as `release`, other unlisted
    roles and the approval actions granted to the approvers (so an empty config grants
    nothing to anyone)."""
    grants = {action: roles.get(action, approvers) for action in ROLES}
    # A nightly builds what a release builds: by default, whoever may release may ask.
    grants[Action.NIGHTLY] = roles.get(Action.NIGHTLY, grants[Action.RELEASE])
    grants.update({action: approvers for action in APPROVER_ACTIONS})
    return Permissions(tuple(channels), MappingProxyType(grants))


@dataclass(frozen=True)
class Actor:
    """Who asks, from where. `channel` is None for the operator's own tools (the CLI,
    a worker), which run with the operator's credentials and Redis access."""

    user: str
    groups: frozenset[str] = frozenset()
    channel: str | None = None

    @property
    def is_operator(self) -> bool:
        return self.channel is None


OPERATOR_PREFIX = "cli:"


def operator(name: str) -> Actor:
    """The operator running the CLI (or a worker) on a machine with the config, the
    Redis URL and the docker credentials: trusted as the owner of all three."""
    return Actor(user=f"{OPERATOR_PREFIX}{name}")


def _requester_may(action: Action, actor: Actor, requested_by: str | None) -> bool:
    """Reject is also open to the run's requester (see the module docstring)."""
    return action is Action.REJECT and bool(requested_by) and actor.user == requested_by


def authorize(
    permissions: Permissions, action: Action, actor: Actor, requested_by: str | None = None
) -> str | None:
    """None when `actor` may do `action`; else the sentence that says why not and who may.

    The operator is admitted: whoever can run the CLI against this Redis can already
    write anything there, so a check would only be theatre. Slack actors must be in an
    accepted channel, and for anything that changes something, in the role's list (or,
    for Reject, be the run's requester: `requested_by`)."""
    if actor.is_operator:
        return None
    if actor.channel not in permissions.channels:
        return messages.permission_wrong_channel(actor.channel or "", permissions.channels)
    if action in READ_ONLY or _requester_may(action, actor, requested_by):
        return None
    grant = permissions.grant(action)
    if grant.admits(actor.user, actor.groups):
        return None
    return messages.permission_refused(actor.user, action.value, grant.describe())


def needs_groups(
    permissions: Permissions, action: Action, actor: Actor, requested_by: str | None = None
) -> bool:
    """Whether the actor's user groups must be looked up to decide `action`."""
    if actor.is_operator or action in READ_ONLY or _requester_may(action, actor, requested_by):
        return False
    if actor.channel not in permissions.channels:
        return False  # refused whatever the groups
    grant = permissions.grant(action)
    return actor.user not in grant.users and bool(grant.groups)
