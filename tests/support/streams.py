"""Redis stream reads with the types the project's clients return.

Every client the tests open decodes responses, so ids, fields and values are `str`;
redis-py's annotations cannot know that and say bytes, str or None. These helpers say
it once instead of at every read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import redis.asyncio as aioredis

Entry = tuple[str, dict[str, str]]


def _decoded(
    found: Iterable[tuple[bytes | str | None, Mapping[bytes | str, bytes | str] | None]] | None,
) -> list[Entry]:
    return [
        (str(entry_id), {str(k): str(v) for k, v in (fields or {}).items()})
        for entry_id, fields in found or []
    ]


async def stream_entries(redis: aioredis.Redis, key: str) -> list[Entry]:
    """XRANGE of the whole stream, oldest first."""
    return _decoded(await redis.xrange(key))


async def newest_entries(redis: aioredis.Redis, key: str, count: int = 1) -> list[Entry]:
    """XREVRANGE: the newest `count` entries, newest first."""
    return _decoded(await redis.xrevrange(key, count=count))
