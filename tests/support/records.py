"""A test's own view of one key prefix in Redis, so no test reaches into a `Pipeline` for
its store, queue, client or key names.

`Records` is built from a Redis client the test (or its bot server) holds and the test's
key prefix. It offers the reads tests assert on (runs, events, the audit trail, dead
letters, queue depth, the live-message outbox, the notifier's cursor), the store itself
for staging a run without workers (`store`, the same public `ReleaseStore` the bot uses),
and the key functions (`keys`) for the tests that look at raw Redis on purpose: a
"nothing changed" snapshot, or a hostile write (see `tests.support.corrupt`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import redis.asyncio as aioredis

from jobs.domain.platforms import Platform
from jobs.domain.release import Release, ReleaseEvent, VersionRecord
from jobs.store.keys import Keys
from jobs.store.notices import NoticeStore
from jobs.store.queue import DeadLetter, Depth, Queue
from jobs.store.releases import ReleaseStore
from tests.support.streams import Entry, newest_entries, stream_entries


@dataclass
class Records:
    redis: aioredis.Redis
    keys: Keys
    store: ReleaseStore = field(init=False)
    queue: Queue = field(init=False)
    notices: NoticeStore = field(init=False)

    def __post_init__(self) -> None:
        self.store = ReleaseStore(self.redis, self.keys)
        self.queue = Queue(self.redis, self.keys)
        # The Slack side's bookkeeping, to hand to a notifier or a live-message poster.
        self.notices = NoticeStore(self.redis, self.keys)

    @classmethod
    def on(cls, redis: aioredis.Redis, key_prefix: str) -> Records:
        return cls(redis, Keys(key_prefix))

    async def close(self) -> None:
        """Close the client: only for a `Records` that owns it (`Setup.records`)."""
        await self.redis.aclose()

    # -- the release record

    async def load(self, version: str, run_id: str | None = None) -> Release | None:
        return await self.store.load(version, run_id)

    async def run(self, version: str, run_id: str | None = None) -> Release:
        """The version's active run (or the given run), which the test expects to exist."""
        found = await self.store.load(version, run_id)
        assert found is not None, f"no run of {version} {run_id or '(active)'}"
        return found

    async def run_ids(self, version: str) -> list[str]:
        return await self.store.run_ids(version)

    async def version_record(self, version: str) -> VersionRecord | None:
        return await self.store.version_record(version)

    async def events(self, after: str = "0-0", count: int = 10_000) -> list[ReleaseEvent]:
        return await self.store.events(after, count=count)

    async def audit(self, count: int = 100) -> list[dict[str, str]]:
        """The newest audit entries first."""
        return await self.store.audit_entries(count)

    async def audit_stream(self) -> list[Entry]:
        """The audit stream as stored, oldest first."""
        return await stream_entries(self.redis, self.keys.audit)

    # -- the queue

    async def dead_letters(self) -> list[DeadLetter]:
        return await self.queue.dead_letters()

    async def depth(self, platform: str | None) -> Depth:
        """The depth of `platform`'s job stream (None: the control stream)."""
        return await self.queue.depth(self.keys.job_stream(platform))

    async def jobs(self, platform: Platform | str | None) -> list[Entry]:
        """The entries of `platform`'s job stream (None: the control stream), oldest first."""
        stream = self.keys.job_stream(None if platform is None else str(platform))
        return await stream_entries(self.redis, stream)

    # -- the Slack side's bookkeeping

    async def status_outbox(self) -> set[str]:
        return {str(m) for m in await self.redis.smembers(self.keys.status_outbox)}

    async def notifier_cursor(self) -> str | None:
        return cast(str | None, await self.redis.get(self.keys.notifier_cursor))

    async def forget_notifier_cursor(self) -> None:
        """As if no notifier had ever run."""
        await self.redis.delete(self.keys.notifier_cursor)

    async def newest_event(self) -> list[Entry]:
        return await newest_entries(self.redis, self.keys.events)

    async def post_claim_held(self, version: str, run_id: str) -> bool:
        """Whether someone holds the claim on posting the run's live message."""
        return bool(await self.redis.exists(self.keys.status_post(version, run_id)))

    async def delivery_claim(self, identity: str) -> tuple[str | None, int]:
        """A Slack delivery's claim as stored and its time to live in seconds (-2: none)."""
        key = self.keys.slack_delivery(identity)
        value = cast(str | None, await self.redis.get(key))
        return value, int(await self.redis.ttl(key))

    # -- what a process killed mid-step leaves behind (fault tests)

    async def leave_post_claim(self, version: str, run_id: str, holder: str, ttl_s: int) -> None:
        """A poster's claim on the run's live message, as a poster that died holds it."""
        await self.redis.set(self.keys.status_post(version, run_id), holder, ex=ttl_s)

    async def mark_post_tried(self, version: str, run_id: str) -> None:
        """The mark a poster sets before its first chat.postMessage of the run's message."""
        await self.redis.set(self.keys.status_post_tried(version, run_id), "1")

    # -- raw keys, for "nothing changed" snapshots

    async def all_keys(self) -> list[str]:
        found: Any = await self.redis.keys(f"{self.keys.prefix}:*")
        return sorted(str(k) for k in found)
