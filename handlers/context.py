"""What every handler needs, built once by `bot.app.build_app`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.live_message import post_live_message
from bot.notifier import Notifier
from jobs.approvals import needs_groups
from jobs.config import Config
from jobs.deliveries import CONFIRMED_TTL_SECONDS, Claim, claim_ttl, on_delivery
from jobs.inspection import inspect_reference
from jobs.permissions import Action, Actor, authorize
from jobs.permissions import needs_groups as needs_permission_groups
from jobs.pipeline import Pipeline
from jobs.references import parse_reference
from jobs.registry import RegistryClient, RegistrySettings
from jobs.state import Release
from jobs.verdict import Outcome
from jobs.versions import parse_version

log = logging.getLogger("aibrix.bot")

# Kept for callers that name it: how long a confirmed delivery is remembered.
DELIVERY_TTL_SECONDS = CONFIRMED_TTL_SECONDS


@dataclass
class Deps:
    pipeline: Pipeline
    registry: RegistrySettings
    notifier: Notifier | None = None
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
            self.notifier.touch(release.version, release.run_id)


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
    key = deps.pipeline.keys.slack_delivery(identity)
    lease = claim_ttl(Claim.HANDLING, deps.config.queue.claim_seconds)
    redis = deps.pipeline.redis
    if await redis.set(key, Claim.HANDLING.value, nx=True, ex=lease):
        return True
    stored = await redis.get(key)
    seen = on_delivery(None if stored is None else str(stored))
    if seen == "handle":  # the claim expired between the two calls: take it now
        return bool(await redis.set(key, Claim.HANDLING.value, nx=True, ex=lease))
    if seen == "in-progress":
        log.info("delivery is being handled; this one is acked and dropped")
    else:
        log.info("delivery already handled; this one is acked and dropped")
    return False


async def confirm_delivery(deps: Deps, identity: str | None) -> None:
    """The delivery's work is durable (written, or answered): remember it for an hour, so
    that a redelivery does nothing."""
    if identity is not None:
        key = deps.pipeline.keys.slack_delivery(identity)
        ttl = claim_ttl(Claim.CONFIRMED, deps.config.queue.claim_seconds)
        await deps.pipeline.redis.set(key, Claim.CONFIRMED.value, ex=ttl)


async def forget_delivery(deps: Deps, identity: str | None) -> None:
    """Drop the claim of a delivery that changed nothing (its answer was an error), so
    that the delivery leaves nothing behind, and a redelivery answers the same again."""
    if identity is not None:
        await deps.pipeline.redis.delete(deps.pipeline.keys.slack_delivery(identity))


async def user_groups(
    deps: Deps, client: AsyncWebClient, user: str, groups: tuple[str, ...] | None = None
) -> frozenset[str]:
    """Which of `groups` (default: the configured approver groups) `user` is a member of
    (usergroups.users.list)."""
    policy = deps.config.approval
    if groups is None:
        if not needs_groups(policy, user):
            return frozenset()
        groups = policy.approver_groups
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
    deps: Deps, client: AsyncWebClient, action: Action, user: str, channel: str
) -> str | None:
    """The one permission check for Slack: None when `user` in `channel` may do `action`,
    else the sentence to answer with. Every command and button calls this before it
    reads or writes anything."""
    permissions = deps.config.permissions
    actor = Actor(user=user, channel=channel)
    if needs_permission_groups(permissions, action, actor):
        grant = permissions.grant(action)
        actor = Actor(user, await user_groups(deps, client, user, grant.groups), channel)
    return authorize(permissions, action, actor)


async def published_digests(
    deps: Deps, release: Release
) -> tuple[Mapping[str, str | None], list[str]]:
    """What each component's release tag holds now (None: unreadable), and which fail the
    platform check when read back."""
    config = deps.config
    version = parse_version(release.version)
    refs = [parse_reference(config.release_reference(c, version)) for c in release.components]
    async with RegistryClient(deps.registry) as client:
        inspections = await asyncio.gather(
            *(inspect_reference(client, ref, config.platforms) for ref in refs)
        )
    digests = {c: i.digest for c, i in zip(release.components, inspections, strict=True)}
    not_ok = [
        c
        for c, i in zip(release.components, inspections, strict=True)
        if i.digest is not None and i.verdict.outcome is not Outcome.OK
    ]
    return digests, not_ok


async def post_status_message(deps: Deps, client: AsyncWebClient, release: Release) -> str | None:
    """Post the run's live message in its channel, once (see `bot.live_message`), and
    remember where it is. None when another poster holds the claim."""
    ts = await post_live_message(deps.pipeline, client, release)
    if ts is not None:
        deps.touch(release)
    return ts
