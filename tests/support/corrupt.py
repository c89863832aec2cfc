"""Hostile writes for fault tests: what a bug, an older build or a hand edit could leave in
Redis, written with the store's own key functions so the tests name no key and never
reach into a store or pipeline for its client."""

from __future__ import annotations

import redis.asyncio as aioredis

from jobs.store.keys import Keys


async def overwrite_run_field(
    redis: aioredis.Redis, keys: Keys, version: str, run_id: str, name: str, value: str
) -> None:
    """Replace one field of a run's record (`version`, `platforms`, ...) with `value`."""
    await redis.hset(keys.run(version, run_id), name, value)


async def add_build_field(
    redis: aioredis.Redis, keys: Keys, version: str, run_id: str, name: str, value: str
) -> None:
    """Add a build record under the raw field `name` (normally `component@os/arch`)."""
    await redis.hset(keys.builds(version, run_id), name, value)
