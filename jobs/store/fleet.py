"""The fleet of workers in Redis: each worker's heartbeat record, and when each platform
last had a worker.

A heartbeat is one Lua step: the worker's record (JSON, with a TTL the worker renews every
third of it, so a killed worker's record expires by itself), its entry in an index of
records (so listing needs no SCAN), and its platform's last-seen time. Times are Redis's
own clock (`TIME`), so workers on hosts whose clocks disagree still compare. A worker that
stops cleanly removes its record at once (`leave`); the platform's last-seen time stays,
so "no linux/arm64 worker has been seen for 10 min" can be said.

Records are parsed here, once (`WorkerBeat` with a `Platform`); a record this code did not
write is skipped and logged, never shown.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import redis.asyncio as aioredis

from jobs.domain.fleet import FleetView, WorkerBeat
from jobs.domain.platforms import Platform, PlatformError, canonical_platform, parse_platform
from jobs.store.keys import Keys

log = logging.getLogger("aibrix.fleet")

# Index entries (and records) of workers unseen this long are dropped from the index.
FORGET_SECONDS = 7 * 86400
_FIELD_LIMIT = 200  # longest id, version or builder name a record may carry
_JOBS_LIMIT = 16

# KEYS: record, index, platforms.  ARGV: member, platform, ttl ms, record JSON, forget s.
# Returns Redis's time (unix seconds, as text). The record is stored as given (cjson
# would turn an empty list into an object); its last-seen time is its index score.
_BEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('SET', KEYS[1], ARGV[4], 'PX', tonumber(ARGV[3]))
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('HSET', KEYS[3], ARGV[2], tostring(now))
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[5]))
return tostring(now)
"""


@dataclass(frozen=True)
class Announcement:
    """What a worker says about itself in each heartbeat."""

    worker_id: str
    platform: Platform
    version: str
    builder: str
    control: bool
    started: float

    @property
    def member(self) -> str:
        return f"{self.worker_id}@{self.platform}"


def _text(value: object) -> str:
    if not isinstance(value, str) or len(value) > _FIELD_LIMIT:
        raise ValueError("not a short text")
    return value


def parse_beat(raw: str | bytes, last_seen: float) -> WorkerBeat:
    """A heartbeat record as stored, last seen at `last_seen` (its index score);
    ValueError for anything this code does not write."""
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("not an object")
    jobs = data.get("jobs", [])
    if not isinstance(jobs, list) or len(jobs) > _JOBS_LIMIT:
        raise ValueError("jobs is not a short list")
    started = data.get("started")
    if not isinstance(started, int | float) or isinstance(started, bool):
        raise ValueError("the start time is not a number")
    try:
        platform = parse_platform(canonical_platform(_text(data.get("platform"))))
    except PlatformError as error:
        raise ValueError(str(error)) from None
    return WorkerBeat(
        worker_id=_text(data.get("worker")),
        platform=platform,
        version=_text(data.get("version")),
        builder=_text(data.get("builder")),
        control=bool(data.get("control")),
        jobs=tuple(_text(job) for job in jobs),
        started=float(started),
        last_seen=float(last_seen),
    )


class Fleet:
    """Heartbeats in, the fleet's view out (see the module docstring)."""

    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    async def beat(self, me: Announcement, jobs: tuple[str, ...], ttl_seconds: float) -> float:
        """Record one heartbeat; Redis's time of it (unix seconds)."""
        record = {
            "worker": me.worker_id,
            "platform": str(me.platform),
            "version": me.version,
            "builder": me.builder,
            "control": me.control,
            "jobs": list(jobs[:_JOBS_LIMIT]),
            "started": me.started,
        }
        now = await self._redis.eval(
            _BEAT,
            3,
            self._keys.fleet_worker(me.member),
            self._keys.fleet_workers,
            self._keys.fleet_platforms,
            me.member,
            str(me.platform),
            max(1, int(ttl_seconds * 1000)),
            json.dumps(record),
            FORGET_SECONDS,
        )
        return float(now)

    async def leave(self, me: Announcement) -> None:
        """A clean stop: the worker is gone at once, its platform's last-seen time stays."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._keys.fleet_worker(me.member))
            pipe.zrem(self._keys.fleet_workers, me.member)
            await pipe.execute()

    async def view(self) -> FleetView:
        """The live workers (records not expired), each platform's last-seen time, and
        Redis's time now."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.time()
            pipe.zrange(self._keys.fleet_workers, 0, -1, withscores=True)
            pipe.hgetall(self._keys.fleet_platforms)
            (seconds, micros), members, seen_raw = await pipe.execute()
        now = int(seconds) + int(micros) / 1_000_000
        records = (
            await self._redis.mget([self._keys.fleet_worker(_str(m)) for m, _ in members])
            if members
            else []
        )
        workers: list[WorkerBeat] = []
        for (member, score), raw in zip(members, records, strict=True):
            if raw is None:
                continue  # expired: the worker stopped beating
            try:
                workers.append(parse_beat(raw, float(score)))
            except ValueError as error:
                log.warning("fleet record %s skipped: %s", _str(member)[:80], error)
        last_seen: dict[Platform, float] = {}
        for key, value in seen_raw.items():
            try:
                last_seen[parse_platform(canonical_platform(_str(key)))] = float(value)
            except (PlatformError, ValueError):
                log.warning("fleet platform entry skipped")
        workers.sort(key=lambda b: (str(b.platform), b.worker_id))
        return FleetView(tuple(workers), last_seen, now)


def _str(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
