"""What the Slack side keeps in Redis about its messages: named operations, no key names.

The notifier's lease (one of several bot replicas sends updates), its cursor in the
events stream, the outbox of runs whose live message is not posted yet, the claim on
posting one, the claims on failure replies, and the claims on Slack deliveries. They
lived in `bot.notifier` and `handlers` as raw Redis calls and Lua; here the store owns
every key and script, so nothing above the store touches `.redis` or key names.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from jobs.domain.versions import Version
from jobs.store.keys import Keys

# Take the lease when free, or renew it when it is this holder's; 1 when leading.
_LEAD = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""
# Delete the key only if it still holds this holder's token (a lease or a claim).
_DROP_IF_MINE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def outbox_member(version: Version | str, run_id: str) -> str:
    return f"{version} {run_id}"


class NoticeStore:
    """The Slack messages' bookkeeping in Redis (see the module docstring)."""

    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    # -- the notifier's lease and cursor

    async def lead(self, instance: str, lease_ms: int) -> bool:
        """Take or renew the notifier lease for `instance`; True while it holds it."""
        won = await self._redis.eval(_LEAD, 1, self._keys.notifier_leader, instance, lease_ms)
        return bool(won)

    async def resign(self, instance: str) -> None:
        """Hand the lease back, only if `instance` still holds it."""
        await self._redis.eval(_DROP_IF_MINE, 1, self._keys.notifier_leader, instance)

    async def saved_cursor(self) -> object:
        """The saved events-stream cursor as stored (the caller validates it)."""
        return await self._redis.get(self._keys.notifier_cursor)

    async def newest_event_id(self) -> str | None:
        newest: Any = await self._redis.xrevrange(self._keys.events, count=1)
        return str(newest[0][0]) if newest else None

    async def save_cursor(self, cursor: str) -> None:
        await self._redis.set(self._keys.notifier_cursor, cursor)

    async def unshown_age(self) -> float:
        """Seconds since the oldest event after the saved cursor was written (0 when every
        event is shown, or no cursor is saved yet): the notifier's lag, for metrics."""
        cursor: Any = await self._redis.get(self._keys.notifier_cursor)
        if not cursor:
            return 0.0
        first: Any = await self._redis.xrange(self._keys.events, min=f"({cursor}", count=1)
        if not first:
            return 0.0
        seconds, micros = await self._redis.time()
        written_ms = int(str(first[0][0]).partition("-")[0])
        return max(0.0, int(seconds) + int(micros) / 1_000_000 - written_ms / 1000)

    # -- the live-message outbox and post claim

    async def outbox(self) -> list[str]:
        """The `version run_id` of each run whose live message is not posted yet, sorted."""
        return sorted(str(m) for m in await self._redis.smembers(self._keys.status_outbox))

    async def leave_outbox(self, member: str) -> None:
        """Take a `version run_id` member (see `outbox_member`) out of the outbox."""
        await self._redis.srem(self._keys.status_outbox, member)

    async def claim_post(
        self, version: Version | str, run_id: str, token: str, ttl_seconds: int
    ) -> bool:
        """Claim posting the run's live message (a short lease); False if another holds it."""
        claim = self._keys.status_post(version, run_id)
        return bool(await self._redis.set(claim, token, nx=True, ex=ttl_seconds))

    async def drop_post_claim(self, version: Version | str, run_id: str, token: str) -> None:
        """Drop the claim only if it is still this poster's."""
        claim = self._keys.status_post(version, run_id)
        await self._redis.eval(_DROP_IF_MINE, 1, claim, token)

    async def first_post_try(self, version: Version | str, run_id: str, ttl_seconds: int) -> bool:
        """Mark that a post of the run's live message is tried; False if one was before."""
        tried = self._keys.status_post_tried(version, run_id)
        return bool(await self._redis.set(tried, "1", nx=True, ex=ttl_seconds))

    # -- failure replies

    async def claim_failure_reply(self, version: Version | str, run_id: str, member: str) -> bool:
        """Claim the thread reply for `component@platform`; False if it was claimed before."""
        key = self._keys.failure_replies(version, run_id)
        return bool(await self._redis.sadd(key, member))

    async def release_failure_reply(self, version: Version | str, run_id: str, member: str) -> None:
        """Give a claimed reply back (it was not sent), so a later flush sends it."""
        key = self._keys.failure_replies(version, run_id)
        await self._redis.srem(key, member)

    # -- Slack delivery claims (the decisions are `jobs.domain.deliveries`'s)

    async def claim_delivery(self, identity: str, value: str, ttl_seconds: int) -> bool:
        """Set the delivery's claim to `value` if there is none; True when this call did."""
        key = self._keys.slack_delivery(identity)
        return bool(await self._redis.set(key, value, nx=True, ex=ttl_seconds))

    async def delivery_claim(self, identity: str) -> str | None:
        """The delivery's claim as stored, or None."""
        stored = await self._redis.get(self._keys.slack_delivery(identity))
        return None if stored is None else str(stored)

    async def set_delivery_claim(self, identity: str, value: str, ttl_seconds: int) -> None:
        await self._redis.set(self._keys.slack_delivery(identity), value, ex=ttl_seconds)

    async def drop_delivery_claim(self, identity: str) -> None:
        await self._redis.delete(self._keys.slack_delivery(identity))
