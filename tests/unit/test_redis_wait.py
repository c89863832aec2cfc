"""The CLI's wait for Redis (issue 16, item 3): its backoff and how it names Redis."""

from __future__ import annotations

from bot.redis_wait import BACKOFF_CAP_S, backoff, host_port
from jobs.store.connections import RedisSettings


def test_backoff_grows_then_caps() -> None:
    waits = [backoff(n) for n in range(40)]
    assert waits[0] < waits[1] < waits[2]
    assert max(waits) == BACKOFF_CAP_S


def test_host_port_never_shows_credentials() -> None:
    settings = RedisSettings.from_dsn("redis://alice:s3cret-pw@redis.example:6380/2")
    assert host_port(settings) == "redis.example:6380"
