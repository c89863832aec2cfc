"""What every handler needs, built once by `bot.app.build_app`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from redis.exceptions import RedisError
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from handlers.blocks import Message
from handlers.live_message import post_live_message
from jobs.domain.config import Config
from jobs.domain.deliveries import CONFIRMED_TTL_SECONDS, Claim, claim_ttl, on_delivery
from jobs.domain.permissions import Action, Actor, authorize
from jobs.domain.permissions import needs_groups as needs_permission_groups
from jobs.domain.release import Release
from jobs.store.fleet import Fleet
from jobs.store.notices import NoticeStore
from jobs.usecases.approval import Approvals
from jobs.usecases.inspector import Inspector
from jobs.usecases.pipeline import Pipeline
from jobs.usecases.sync_job import SyncJobs

log = logging.getLogger("aibrix.bot")

# Kept for callers that name it: how long a confirmed delivery is remembered.
DELIVERY_TTL_SECONDS = CONFIRMED_TTL_SECONDS


@dataclass(frozen=True)
class Answered:
    """How a command ended: the answer for its user, and whether it changed something.
    The handler settles the delivery's claim first and answers last, so that whoever
    sees the answer sees everything the command wrote."""

    message: Message
    changed: bool = False


class LiveUpdates(Protocol):
    """Who redraws live messages soon after a handler changed something: the bot's
    notifier (`bot.notifier.Notifier`), injected by the bot so handlers never import it."""

    def touch(self, version: str, run_id: str) -> None: ...

    def touch_sync(self, sync_id: str) -> None: ...


class CommandCounter(Protocol):
    """Counts each slash command by outcome (`jobs.runtime.metrics.BotMetrics`)."""

    def command(self, name: str, outcome: str) -> None: ...


@dataclass
class Deps:
    pipeline: Pipeline
    # The registry reads a handler asks for (inspect, the click-time re-read of tags).
    inspector: Inspector
    # What an approver's click writes (approve, reject, block on drift, confirm).
    approvals: Approvals
    # Sync jobs: request one, place its live message, audit a refusal.
    syncs: SyncJobs
    # The Slack side's bookkeeping: delivery claims, the live-message claim and outbox.
    notices: NoticeStore
    notifier: LiveUpdates | None = None
    # The workers' heartbeats (`/aibrix workers`); None: not wired (some tests).
    fleet: Fleet | None = None
    metrics: CommandCounter | None = None
    background: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def config(self) -> Config:
        return self.pipeline.config

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run `coro` off the request path, keeping a reference until it ends."""
        task = asyncio.create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def touch(self, release: Release) -> None:
        if self.notifier is not None:
            self.notifier.touch(str(release.version), release.run_id)

    def touch_sync(self, sync_id: str) -> None:
        if self.notifier is not None:
            self.notifier.touch_sync(sync_id)


async def first_delivery(deps: Deps, identity: str | None) -> bool:
    """Claim this Slack delivery while it is handled: True when it is to be handled now,
    False for a redelivery of one already handled or being handled.

    The claim is a short lease (`[queue] claim_seconds`): if the bot dies while handling,
    the lease runs out and Slack's next redelivery handles it and finishes the work.
    `confirm_delivery` keeps it for an hour once the work is durable; `forget_delivery`
    drops it when the input is refused. A redelivery whose first delivery never arrived
    finds no claim, so it is handled, once."""
    if identity is None:
        return True
    lease = claim_ttl(Claim.HANDLING, deps.config.queue.claim_seconds)
    notices = deps.notices
    if await notices.claim_delivery(identity, Claim.HANDLING.value, lease):
        return True
    seen = on_delivery(await notices.delivery_claim(identity))
    if seen == "handle":  # the claim expired between the two calls: take it now
        return await notices.claim_delivery(identity, Claim.HANDLING.value, lease)
    if seen == "in-progress":
        log.info("delivery is being handled; this one is acked and dropped")
    else:
        log.info("delivery already handled; this one is acked and dropped")
    return False


async def confirm_delivery(deps: Deps, identity: str | None) -> None:
    """The delivery's work is durable (written, or answered): remember it for an hour, so
    that a redelivery does nothing.

    Never raises: the work is done and its answer still due. Unconfirmed, the claim runs
    out with its lease, and a later redelivery finds the work done (a release or retry
    gets its run back)."""
    if identity is not None:
        ttl = claim_ttl(Claim.CONFIRMED, deps.config.queue.claim_seconds)
        try:
            await deps.notices.set_delivery_claim(identity, Claim.CONFIRMED.value, ttl)
        except RedisError as error:
            log.warning("delivery not confirmed, Redis failed (%s)", type(error).__name__)


async def forget_delivery(deps: Deps, identity: str | None) -> None:
    """Drop the claim of a delivery that changed nothing (its answer was an error), so
    that the delivery leaves nothing behind, and a redelivery answers the same again.

    Never raises: the answer is still due, and the claim runs out with its lease."""
    if identity is not None:
        try:
            await deps.notices.drop_delivery_claim(identity)
        except RedisError as error:
            log.warning("delivery claim not dropped, Redis failed (%s)", type(error).__name__)


def table_groups(deps: Deps) -> tuple[str, ...]:
    """Every user group the permission table and the approval policy name."""
    named = dict.fromkeys(deps.config.permissions.groups)
    named.update(dict.fromkeys(deps.config.approval.approver_groups))
    return tuple(named)


async def user_groups(
    deps: Deps, client: AsyncWebClient, user: str, groups: tuple[str, ...] | None = None
) -> frozenset[str]:
    """Which of `groups` (default: every group the permission table names, approvers
    included) `user` is a member of (usergroups.users.list)."""
    if groups is None:
        groups = table_groups(deps)
    found = set()
    for group in groups:
        try:
            reply = await client.usergroups_users_list(usergroup=group)
        except SlackApiError as error:
            log.warning("usergroups.users.list %s failed: %s", group, error.response.get("error"))
            continue
        if user in (reply.get("users") or []):
            found.add(group)
    return frozenset(found)


async def permission_refusal(
    deps: Deps,
    client: AsyncWebClient,
    action: Action,
    user: str,
    channel: str,
    *,
    requested_by: str | None = None,
    groups: frozenset[str] | None = None,
) -> str | None:
    """The one permission check for Slack: None when `user` in `channel` may do `action`,
    else the sentence to answer with. Every command and button calls this before it
    writes anything. `requested_by`: the run's requester (Reject is open to them);
    `groups`: the user's groups when already looked up (else looked up when needed)."""
    permissions = deps.config.permissions
    actor = Actor(user=user, groups=groups or frozenset(), channel=channel)
    if groups is None and needs_permission_groups(permissions, action, actor, requested_by):
        grant = permissions.grant(action)
        actor = Actor(user, await user_groups(deps, client, user, grant.groups), channel)
    return authorize(permissions, action, actor, requested_by)


async def post_status_message(deps: Deps, client: AsyncWebClient, release: Release) -> str | None:
    """Post the run's live message in its channel, once (see `handlers.live_message`), and
    remember where it is. None when another poster holds the claim."""
    ts = await post_live_message(deps.pipeline, deps.notices, client, release)
    if ts is not None:
        deps.touch(release)
    return ts
