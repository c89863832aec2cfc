"""The record of each sync to a mirror asked from Slack, as a Redis hash.

What a record holds and how it reads are `jobs.usecases.sync_job`'s; this module owns
the key, its TTL and the event that tells the notifier, so the use case touches no Redis.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis.asyncio as aioredis

from jobs.store.keys import Keys

SYNC_RECORD_TTL_S = 30 * 24 * 3600  # long enough to see what happened; bounded


class SyncRecords:
    def __init__(self, redis: aioredis.Redis, keys: Keys, *, events_maxlen: int) -> None:
        self._redis = redis
        self._keys = keys
        self._events_maxlen = events_maxlen

    async def fields(self, sync_id: str) -> dict[str, str]:
        """The record's fields as stored (empty when there is none)."""
        stored: Any = await self._redis.hgetall(self._keys.sync(sync_id))
        return {str(k): str(v) for k, v in stored.items()}

    async def create(self, sync_id: str, fields: Mapping[str, str]) -> None:
        key = self._keys.sync(sync_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=dict[Any, Any](fields))
            pipe.expire(key, SYNC_RECORD_TTL_S)
            await pipe.execute()

    async def update(
        self, sync_id: str, version: str, run_id: str, fields: Mapping[str, str]
    ) -> None:
        """Update the record and tell the notifier, in one round trip."""
        key = self._keys.sync(sync_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=dict[Any, Any](fields))
            pipe.expire(key, SYNC_RECORD_TTL_S)
            pipe.xadd(
                self._keys.events,
                {"version": version, "run_id": run_id, "type": "sync", "sync": sync_id},
                maxlen=self._events_maxlen,
                approximate=True,
            )
            await pipe.execute()

    async def delete(self, sync_id: str) -> None:
        await self._redis.delete(self._keys.sync(sync_id))
