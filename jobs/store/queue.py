"""The job queue: Redis Streams with one consumer group, leases, retries, dead letters.

One stream per platform (build jobs) plus a control stream (merge, verify, promote,
sync). Every worker of a stream joins the group `workers` under a stable consumer
name it chooses (`hostname:platform:N`).

Leases. A claimed job's lease *is* its entry in the stream's pending entries list (PEL):
owner = consumer, age = idle time. `claim` reclaims with XAUTOCLAIM anything idle longer
than `lease_ms`, so a job held by a dead worker runs again; `renew` resets the idle time
with `XCLAIM ... JUSTID` (which does not count as a delivery). Every lease operation
(renew, ack, fail) first checks, in the same Lua script, that the caller still owns the
entry with the same delivery count, so a worker that stalled past its lease and lost the
job can neither steal it back nor ack or retry it under the new owner. (consumer,
delivery count) is thus the lease's fencing token (`Lease.fence`): a reclaim makes a new
one, and the release store's record of a build's digest checks it in its own Lua step, so
a worker that outlived its lease cannot record either. Chosen over a
lease key with a TTL because the PEL already holds owner and age durably, survives a
restart (AOF), and needs no second structure to keep consistent with the stream.

A job travels as one stream field, `job`, holding its JSON document (validated when
read back); the client's RESP parser, not Redis, is the cost of every extra field.

Consumers of dead workers are removed from their groups (`remove_idle_consumers`: idle
past `consumer_idle_ms` with nothing pending), on a worker's janitor pass.

Nothing the queue relies on lives in process memory: jobs, delayed retries, dedup
markers, done results and cancel flags are all in Redis. The only in-memory state is
counters (`QueueStats`), a reclaim scan cursor and when maintenance last ran, all safe
to lose.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from jobs.domain.config import QueueSettings
from jobs.domain.errors import InvalidInput
from jobs.domain.platforms import Platform, PlatformError, canonical_platform, parse_platform
from jobs.domain.release import Fence
from jobs.domain.versions import Version, VersionError, parse_version
from jobs.store.connections import Arg, Batch, Script
from jobs.store.keys import CONSUMER_GROUP, Keys

FORMAT_VERSION = "1"
MAX_REASON_CHARS = 4000


class JobKind(StrEnum):
    BUILD = "build"
    MERGE = "merge"
    VERIFY = "verify"
    PROMOTE = "promote"
    SYNC = "sync"


class JobFormatError(InvalidInput, ValueError):
    """Stream fields that are not a job this code can run."""


_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_CONSUMER = re.compile(r"^[^\s]{1,200}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# The stream entry is one field holding the job as JSON: Redis replies parse far faster
# than a dozen fields each (the client's RESP parser is the bottleneck), and Lua (cancel)
# can still read it with cjson.
JOB_FIELD = "job"
_DOC_KEYS = frozenset(
    {
        "v",
        "id",
        "kind",
        "release",
        "run_id",
        "component",
        "platform",
        "source_revision",
        "attempt",
        "payload",
        "idempotency_key",
    }
)


# Pure logic ---------------------------------------------------------------------------


def idempotency_key(
    kind: str,
    release: str,
    run_id: str,
    component: str,
    platform: str | None,
    source_revision: str,
) -> str:
    """The identity of a job's effect: same inputs, same key; any difference, a new key.

    The run id is part of it so a new run of a version re-verifies and re-promotes rather
    than reusing the verdict of a cancelled or blocked earlier run.
    """
    text = json.dumps([kind, release, run_id, component, platform, source_revision])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def backoff_seconds(attempt: int, base: float, cap: float) -> float:
    """Delay before retrying after failed `attempt` (1-based): base * 2**(attempt-1) <= cap."""
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, got {attempt}")
    if base < 0 or cap < 0 or math.isnan(base) or math.isnan(cap):
        raise ValueError("backoff base and cap must be non-negative numbers")
    try:
        return min(cap, math.ldexp(base, attempt - 1))
    except OverflowError:
        return cap


def jittered(delay: float, fraction: float, unit: float) -> float:
    """`delay` shortened by up to `fraction` of itself; `unit` is a random number in [0, 1).

    Shortening only (never lengthening) keeps the cap a real upper bound while spreading
    retries of jobs that failed together.
    """
    if not 0 <= fraction <= 1 or not 0 <= unit <= 1:
        raise ValueError("jitter fraction and unit must be within [0, 1]")
    return delay * (1 - fraction * unit)


def _check_text(name: str, value: object, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise JobFormatError(f"job {name} must be a string, got {type(value).__name__}")
    if not value and not allow_empty:
        raise JobFormatError(f"job {name} is empty")
    if len(value) > 256 or _CONTROL.search(value):
        raise JobFormatError(f"job {name} {value[:40]!r} is too long or has control characters")
    return value


@dataclass(frozen=True)
class Job:
    """A job as the core handles it: typed values. It becomes text only on the wire
    (`to_document` / `from_document`), which is where text is checked and parsed."""

    kind: JobKind
    # The release version; written "release" on the wire (format 1), as jobs in flight are.
    version: Version
    component: str
    source_revision: str
    platform: Platform | None = None
    run_id: str = ""
    attempt: int = 1
    payload: dict[str, str] = field(default_factory=dict, hash=False)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "kind", JobKind(self.kind))
        except ValueError:
            kinds = ", ".join(k.value for k in JobKind)
            raise JobFormatError(f"job kind {self.kind!r} is not one of {kinds}") from None
        if not isinstance(self.version, Version):
            raise JobFormatError(
                f"job release must be a Version, got {type(self.version).__name__}"
            )
        _check_text("component", self.component)
        _check_text("source_revision", self.source_revision)
        _check_text("run_id", self.run_id, allow_empty=True)
        if not isinstance(self.id, str) or not _ID.match(self.id):
            raise JobFormatError(f"job id {self.id!r} must be 1-64 of [A-Za-z0-9_-]")
        if self.platform is not None:
            if not isinstance(self.platform, Platform):
                raise JobFormatError("job platform must be a Platform")
            try:
                # One spelling, so one stream and one key per platform.
                canonical_platform(str(self.platform))
            except PlatformError as error:
                raise JobFormatError(str(error)) from None
        if self.kind is JobKind.BUILD and self.platform is None:
            raise JobFormatError("a build job needs a platform")
        if isinstance(self.attempt, bool) or not isinstance(self.attempt, int) or self.attempt < 1:
            raise JobFormatError(f"job attempt must be an integer >= 1, got {self.attempt!r}")
        if not isinstance(self.payload, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.payload.items()
        ):
            raise JobFormatError("job payload must map strings to strings")
        object.__setattr__(self, "payload", dict(self.payload))
        key = idempotency_key(
            self.kind,
            str(self.version),
            self.run_id,
            self.component,
            None if self.platform is None else str(self.platform),
            self.source_revision,
        )
        object.__setattr__(self, "_idempotency_key", key)

    @property
    def idempotency_key(self) -> str:
        key: str = self.__dict__["_idempotency_key"]
        return key

    def next_attempt(self) -> Job:
        return Job(
            kind=self.kind,
            version=self.version,
            component=self.component,
            source_revision=self.source_revision,
            platform=self.platform,
            run_id=self.run_id,
            attempt=self.attempt + 1,
            payload=self.payload,
            id=self.id,
        )

    def to_document(self) -> dict[str, Any]:
        return {
            "v": FORMAT_VERSION,
            "id": self.id,
            "kind": self.kind.value,
            "release": str(self.version),
            "run_id": self.run_id,
            "component": self.component,
            "platform": None if self.platform is None else str(self.platform),
            "source_revision": self.source_revision,
            "attempt": self.attempt,
            "payload": self.payload,
            "idempotency_key": self.idempotency_key,
        }

    def to_fields(self) -> dict[str, str]:
        """The stream entry's fields."""
        return {JOB_FIELD: json.dumps(self.to_document(), separators=(",", ":"))}

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> Job:
        """Parse and validate a stream entry; JobFormatError says what is wrong."""
        if JOB_FIELD not in fields:
            raise JobFormatError(f"the entry has no {JOB_FIELD!r} field")
        try:
            doc = json.loads(fields[JOB_FIELD])
        except json.JSONDecodeError:
            raise JobFormatError("the job is not JSON") from None
        if not isinstance(doc, dict):
            raise JobFormatError("the job is not a JSON object")
        return cls.from_document(doc)

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> Job:
        missing = sorted(_DOC_KEYS - doc.keys())
        if missing:
            raise JobFormatError(f"job fields missing: {', '.join(missing)}")
        if doc["v"] != FORMAT_VERSION:
            raise JobFormatError(f"job format {doc['v']!r} is not {FORMAT_VERSION!r}")
        try:
            kind = JobKind(doc["kind"])
        except ValueError:
            raise JobFormatError(f"job kind {doc['kind']!r} is not known") from None
        if not isinstance(doc["payload"], dict):
            raise JobFormatError("job payload is not an object")
        job = cls(
            kind=kind,
            version=_wire_version(doc["release"]),
            component=doc["component"],
            source_revision=doc["source_revision"],
            platform=_wire_platform(doc["platform"]),
            run_id=doc["run_id"],
            attempt=doc["attempt"],
            payload=doc["payload"],
            id=doc["id"],
        )
        if job.idempotency_key != doc["idempotency_key"]:
            raise JobFormatError("job idempotency key does not match its fields")
        return job


def _wire_version(text: object) -> Version:
    _check_text("release", text)
    assert isinstance(text, str)
    try:
        return parse_version(text)
    except VersionError as error:
        raise JobFormatError(f"job release: {error}") from None


def _wire_platform(text: object) -> Platform | None:
    """A job's platform as the wire holds it: null, or a platform in its one spelling."""
    if text is None:
        return None
    if not isinstance(text, str):
        raise JobFormatError("job platform must be a string")
    try:
        return parse_platform(canonical_platform(text))
    except PlatformError as error:
        raise JobFormatError(str(error)) from None


# Redis side ---------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueTuning:
    """How the Redis queue runs: the user's `QueueSettings` (`[queue]`, in seconds) in
    the queue's own units (a lease in milliseconds, as Redis stream idle times are), plus
    the limits no user sets. Its own name, so that one `QueueSettings` exists; the
    defaults serve a queue built without a config (the queue's own tests)."""

    lease_ms: int = 60_000
    max_attempts: int = 5
    backoff_base_s: float = 5.0
    backoff_cap_s: float = 300.0
    jitter: float = 0.2
    # A job whose lease expired this many times is dead-lettered: it probably kills
    # its worker, and would otherwise be reclaimed forever.
    max_deliveries: int = 5
    done_ttl_s: int = 7 * 24 * 3600
    # Guards against a leaked dedup marker blocking a job forever; longer than any queue wait.
    pending_ttl_s: int = 24 * 3600
    cancel_ttl_s: int = 30 * 24 * 3600
    dead_letter_maxlen: int = 10_000
    promote_batch: int = 100
    # How often a busy worker looks for stalled jobs and due retries; None: a quarter of
    # the lease, at most a second.
    maintenance_interval_ms: int | None = None
    # How often a held lease is renewed; None: a third of the lease.
    renew_ms: int | None = None
    # A consumer idle this long with nothing pending is removed from its group.
    consumer_idle_ms: int = 3_600_000

    def __post_init__(self) -> None:
        if self.lease_ms < 1 or self.max_attempts < 1 or self.max_deliveries < 1:
            raise ValueError("lease_ms, max_attempts and max_deliveries must be positive")
        if min(self.done_ttl_s, self.pending_ttl_s, self.cancel_ttl_s) < 1:
            raise ValueError("TTLs must be positive")
        backoff_seconds(1, self.backoff_base_s, self.backoff_cap_s)
        jittered(0.0, self.jitter, 0.0)

    @classmethod
    def from_settings(cls, settings: QueueSettings) -> QueueTuning:
        """The tuning the configured `[queue]` asks for."""
        return cls(
            lease_ms=settings.lease_seconds * 1000,
            max_attempts=settings.max_attempts,
            backoff_base_s=settings.backoff_base_seconds,
            backoff_cap_s=settings.backoff_cap_seconds,
            renew_ms=round(settings.renew_seconds * 1000) or None,
            consumer_idle_ms=settings.consumer_idle_seconds * 1000,
        )

    @property
    def renew_interval_s(self) -> float:
        if self.renew_ms is not None:
            return self.renew_ms / 1000
        return max(0.1, self.lease_ms / 3000)

    @property
    def maintenance_interval_s(self) -> float:
        if self.maintenance_interval_ms is not None:
            return self.maintenance_interval_ms / 1000
        return min(self.lease_ms / 4, 1000) / 1000


@dataclass(frozen=True)
class Lease:
    job: Job
    stream: str
    entry_id: str
    consumer: str
    # With consumer, identifies this one delivery: a reclaim increments it.
    deliveries: int
    reclaimed: bool = False

    @property
    def fence(self) -> Fence:
        """This lease's token for fenced writes: a reclaim makes a new one."""
        return Fence(self.stream, self.entry_id, self.consumer, self.deliveries)


@dataclass(frozen=True)
class EnqueueResult:
    added: bool
    # "added"; "pending": same idempotency key already queued or running (job_id is that
    # job's id); "done": its result is recorded; "cancelled": the run is cancelled.
    status: Literal["added", "pending", "done", "cancelled"]
    job_id: str
    entry_id: str | None = None


@dataclass(frozen=True)
class DeadLetter:
    entry_id: str
    job: Job | None  # None when the entry was not a readable job
    reason: str
    stream: str
    fields: Mapping[str, str]


@dataclass(frozen=True)
class FailOutcome:
    # "retry": scheduled again; "dead": out of attempts, in the dead-letter stream;
    # "lost": the lease had already passed to another worker, nothing done.
    status: Literal["retry", "dead", "lost"]
    attempt: int
    retry_in_s: float | None = None
    dead_letter: DeadLetter | None = None


@dataclass(frozen=True)
class Depth:
    pending: int  # delivered, not yet acked (running or held by a dead worker)
    lag: int  # in the stream, not yet delivered
    delayed: int  # waiting for a retry

    @property
    def total(self) -> int:
        return self.pending + self.lag + self.delayed


@dataclass
class QueueStats:
    """Counters for metrics; losing them loses nothing but numbers."""

    enqueued: int = 0
    deduplicated: int = 0
    claimed: int = 0
    reclaimed: int = 0
    skipped_done: int = 0
    skipped_cancelled: int = 0
    retried: int = 0
    dead_lettered: int = 0
    promoted: int = 0
    lost_leases: int = 0


DeadLetterCallback = Callable[[DeadLetter], Awaitable[None]]

_OWNS = """
local function owns(stream, group, id, consumer, deliveries)
  local p = redis.call('XPENDING', stream, group, id, id, 1)
  if #p == 0 then return false end
  return p[1][2] == consumer and tonumber(p[1][4]) == tonumber(deliveries)
end
"""

_NOW_MS = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# One enqueue, as a Lua function, so that other scripts (creating a run) can enqueue in
# the same atomic step. k: stream, pending marker, done key, streams set, cancel flag;
# fields: the stream entry's field/value pairs.
ENQUEUE_LUA = """
local function enqueue_job(k, job_id, pending_ttl_ms, fields)
  if redis.call('EXISTS', k[5]) == 1 then return {'cancelled', job_id} end
  if redis.call('EXISTS', k[3]) == 1 then return {'done', job_id} end
  local holder = redis.call('GET', k[2])
  if holder then return {'pending', holder} end
  redis.call('SET', k[2], job_id, 'PX', pending_ttl_ms)
  local id = redis.call('XADD', k[1], '*', unpack(fields))
  redis.call('SADD', k[4], k[1])
  return {'added', job_id, id}
end
"""

# KEYS: stream, pending marker, done key, streams set, cancel flag
# ARGV: job id, pending ttl ms, fields...
_ENQUEUE = Script(
    ENQUEUE_LUA
    + """
return enqueue_job(KEYS, ARGV[1], ARGV[2], {unpack(ARGV, 3)})
"""
)

# KEYS: retry schedule, retry data, stream.  ARGV: limit
_PROMOTE = Script(
    _NOW_MS
    + """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms(), 'LIMIT', 0, tonumber(ARGV[1]))
for _, id in ipairs(due) do
  local raw = redis.call('HGET', KEYS[2], id)
  if raw then redis.call('XADD', KEYS[3], '*', unpack(cjson.decode(raw))) end
  redis.call('HDEL', KEYS[2], id)
  redis.call('ZREM', KEYS[1], id)
end
return #due
"""
)

# KEYS: stream.  ARGV: group, entry id, consumer, deliveries
_RENEW = Script(
    _OWNS
    + """
if not owns(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]) then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')
return 1
"""
)

# KEYS: stream, pending marker, done key
# ARGV: group, entry id, consumer, deliveries, job id, has result, result, done ttl ms
_ACK = Script(
    _OWNS
    + """
if not owns(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]) then return 0 end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if ARGV[6] == '1' then redis.call('SET', KEYS[3], ARGV[7], 'PX', ARGV[8]) end
if redis.call('GET', KEYS[2]) == ARGV[5] then redis.call('DEL', KEYS[2]) end
return 1
"""
)

# KEYS: stream, retry schedule, retry data, dead letters, pending marker
# ARGV: group, entry id, consumer, deliveries, job id, mode, delay ms, retry fields JSON,
#       dead maxlen, dead fields...
# mode 'retry' keeps the pending marker (the job is still pending); 'dead' drops it.
_FAIL = Script(
    _OWNS
    + _NOW_MS
    + """
if not owns(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]) then return {0} end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if ARGV[6] == 'retry' then
  redis.call('HSET', KEYS[3], ARGV[5], ARGV[8])
  redis.call('ZADD', KEYS[2], now_ms() + tonumber(ARGV[7]), ARGV[5])
  return {1}
end
local id = redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[9], '*', unpack(ARGV, 10))
if ARGV[5] ~= '' and redis.call('GET', KEYS[5]) == ARGV[5] then redis.call('DEL', KEYS[5]) end
return {2, id}
"""
)

# KEYS: stream, retry schedule, retry data.  ARGV: group, release, run id
# Removes the run's not-yet-delivered entries and delayed retries; returns
# {idempotency key, job id, ...} of what it removed so the caller can drop dedup markers.
_CANCEL_STREAM = Script(
    """
local function job_of(flat)
  for i = 1, #flat, 2 do
    if flat[i] == 'job' then
      local ok, doc = pcall(cjson.decode, flat[i + 1])
      if ok and type(doc) == 'table' then return doc end
    end
  end
  return nil
end
local function ours(doc)
  return doc ~= nil and doc.release == ARGV[2] and doc.run_id == ARGV[3]
end
local function note(removed, doc)
  table.insert(removed, tostring(doc.idempotency_key or ''))
  table.insert(removed, tostring(doc.id or ''))
end
local removed = {}
local last = nil
local groups = redis.pcall('XINFO', 'GROUPS', KEYS[1])
if type(groups) == 'table' and not groups.err then
  last = '0-0'
  for _, g in ipairs(groups) do
    for i = 1, #g, 2 do
      if g[i] == 'name' and g[i + 1] == ARGV[1] then
        for j = 1, #g, 2 do if g[j] == 'last-delivered-id' then last = g[j + 1] end end
      end
    end
  end
end
if last then
  for _, entry in ipairs(redis.call('XRANGE', KEYS[1], '(' .. last, '+')) do
    local doc = job_of(entry[2])
    if ours(doc) then
      redis.call('XDEL', KEYS[1], entry[1])
      note(removed, doc)
    end
  end
end
local data = redis.call('HGETALL', KEYS[3])
for i = 1, #data, 2 do
  local doc = job_of(cjson.decode(data[i + 1]))
  if ours(doc) then
    redis.call('HDEL', KEYS[3], data[i])
    redis.call('ZREM', KEYS[2], data[i])
    note(removed, doc)
  end
end
return removed
"""
)

# KEYS: any keys.  Returns one '0' or '1' per key: whether it exists.
_EXISTS_EACH = Script(
    """
local out = {}
for i = 1, #KEYS do out[i] = tostring(redis.call('EXISTS', KEYS[i])) end
return table.concat(out)
"""
)

# KEYS: stream.  ARGV: group, consumer.  Rechecked here: it may have claimed a job since.
_DEL_IDLE_CONSUMER = Script(
    """
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
"""
)

# KEYS: marker.  ARGV: expected value
_DEL_IF = Script(
    """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
)


def _flat(fields: Mapping[str, str]) -> list[str]:
    return [item for pair in fields.items() for item in pair]


def _entries(response: Any) -> list[tuple[str, dict[str, str] | None]]:
    """(id, fields) pairs from an XREADGROUP reply (list per stream, or a RESP3 map)."""
    if not response:
        return []
    per_stream = response.values() if isinstance(response, dict) else (e for _, e in response)
    return [(entry_id, fields) for entries in per_stream for entry_id, fields in entries]


class Queue:
    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        settings: QueueTuning | None = None,
        *,
        on_dead_letter: DeadLetterCallback | None = None,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.settings = settings or QueueTuning()
        self.on_dead_letter = on_dead_letter
        self.stats = QueueStats()
        self._rng = rng
        self._reclaim_cursor: dict[str, str] = {}
        self._maintained: dict[str, float] = {}
        self._short: dict[str, bool] = {}

    def stream_for(self, job: Job) -> str:
        return self.keys.job_stream(None if job.platform is None else str(job.platform))

    def platform_stream(self, platform: Platform | None) -> str:
        """The stream a worker claims jobs of `platform` from (None: the control stream)."""
        return self.keys.job_stream(None if platform is None else str(platform))

    async def ensure_group(self, stream: str) -> None:
        """Create the stream and its consumer group if missing; safe to call any time."""
        try:
            # From id 0, not $: jobs enqueued before any worker started must still run.
            await self.redis.xgroup_create(stream, CONSUMER_GROUP, id="0", mkstream=True)
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    # Enqueue --------------------------------------------------------------------------

    def enqueue_call(self, job: Job) -> tuple[list[str], list[Arg]]:
        """The keys and arguments of enqueueing `job` (ENQUEUE_LUA's, after the job id:
        pending ttl, then the fields)."""
        idem = job.idempotency_key
        keys = [
            self.stream_for(job),
            self.keys.pending(idem),
            self.keys.done(idem),
            self.keys.job_streams,
            self.keys.cancelled(str(job.version), job.run_id),
        ]
        return keys, [job.id, self.settings.pending_ttl_s * 1000, *_flat(job.to_fields())]

    def _enqueued(self, reply: Sequence[str]) -> EnqueueResult:
        status = reply[0]
        if status == "added":
            self.stats.enqueued += 1
            return EnqueueResult(True, "added", reply[1], reply[2])
        self.stats.deduplicated += 1
        if status == "pending":
            return EnqueueResult(False, "pending", reply[1])
        if status == "done":
            return EnqueueResult(False, "done", reply[1])
        if status == "cancelled":
            return EnqueueResult(False, "cancelled", reply[1])
        raise RuntimeError(f"unexpected enqueue reply {reply!r}")

    async def enqueue(self, job: Job) -> EnqueueResult:
        """Queue `job` unless a job with its idempotency key is pending or done, or its run
        is cancelled. Atomic: concurrent enqueues of one key put it in the stream once."""
        keys, args = self.enqueue_call(job)
        return self._enqueued(await _ENQUEUE(self.redis, keys, args))

    async def enqueue_many(self, jobs: Iterable[Job]) -> list[EnqueueResult]:
        """`enqueue` for several jobs in one round trip (each still atomic on its own)."""
        batch = Batch(self.redis)
        for job in jobs:
            batch.script(_ENQUEUE, *self.enqueue_call(job))
        return [self._enqueued(reply) for reply in await batch.execute()]

    # Claim ----------------------------------------------------------------------------

    def _promote_call(self, stream: str) -> tuple[list[str], list[Arg]]:
        keys = [self.keys.retry_schedule(stream), self.keys.retry_data(stream), stream]
        return keys, [self.settings.promote_batch]

    async def promote_due_retries(self, stream: str) -> int:
        """Move delayed retries whose time has come back into `stream`."""
        moved = int(await _PROMOTE(self.redis, *self._promote_call(stream)))
        self.stats.promoted += moved
        return moved

    async def claim(
        self, stream: str, consumer: str, count: int = 1, block_ms: int | None = None
    ) -> list[Lease]:
        """Up to `count` jobs leased to `consumer`: stalled ones first, then new ones.

        Blocks up to `block_ms` for new jobs when none is ready (None: do not block);
        keep it below the client's socket timeout. Delayed retries that are due are moved
        into the stream first, so a retry waits at most about `block_ms` past its time.
        Jobs already done or belonging to a cancelled run are acked and skipped here.
        """
        if not _CONSUMER.match(consumer):
            raise ValueError(f"consumer name {consumer!r} must be non-empty without spaces")
        if count < 1:
            raise ValueError("count must be at least 1")
        if block_ms is not None and block_ms < 1:
            raise ValueError("block_ms must be positive (0 would block forever) or None")
        self.keys.retry_schedule(stream)  # validates the stream name
        try:
            return await self._claim(stream, consumer, count, block_ms)
        except ResponseError as error:
            if "NOGROUP" not in str(error):
                raise
        await self.ensure_group(stream)
        return await self._claim(stream, consumer, count, block_ms)

    async def _claim(
        self, stream: str, consumer: str, count: int, block_ms: int | None
    ) -> list[Lease]:
        stale: list[tuple[str, dict[str, str] | None]] = []
        now = time.monotonic()
        # Reclaim and retry promotion cost a scan of the pending list; a busy worker
        # (full batches) does them every interval, an idle or draining one every call.
        if self._short.get(stream, True) or now - self._maintained.get(stream, 0.0) >= (
            self.settings.maintenance_interval_s
        ):
            self._maintained[stream] = now
            cursor = self._reclaim_cursor.get(stream, "0-0")
            batch = Batch(self.redis)
            batch.script(_PROMOTE, *self._promote_call(stream))
            batch.pipe.xautoclaim(
                stream, CONSUMER_GROUP, consumer, self.settings.lease_ms, cursor, count=count
            )
            moved, autoclaim = await batch.execute()
            self.stats.promoted += int(moved)
            # The cursor only saves rescanning a long pending list; 0-0 is always correct.
            self._reclaim_cursor[stream] = autoclaim[0]
            stale = list(autoclaim[1])
        fresh: list[tuple[str, dict[str, str] | None]] = []
        if len(stale) < count:
            reply = await self.redis.xreadgroup(
                CONSUMER_GROUP,
                consumer,
                {stream: ">"},
                count=count - len(stale),
                block=None if stale else block_ms,
            )
            fresh = _entries(reply)
        self._short[stream] = len(stale) + len(fresh) < count
        entries = [(i, f, True) for i, f in stale] + [(i, f, False) for i, f in fresh]
        if not entries:
            return []

        parsed: list[tuple[str, Job | None, str, dict[str, str], bool]] = []
        for entry_id, fields, was_stale in entries:
            raw = fields or {}
            try:
                parsed.append((entry_id, Job.from_fields(raw), "", raw, was_stale))
            except JobFormatError as problem:
                parsed.append((entry_id, None, str(problem), raw, was_stale))

        # One round trip for every check: cancel flags and done records, and for
        # reclaimed entries the delivery count (to spot a job that kills its worker).
        flag_keys: list[str] = []
        for _, job, _, _, _ in parsed:
            if job is not None:
                flag_keys.append(self.keys.cancelled(str(job.version), job.run_id))
                flag_keys.append(self.keys.done(job.idempotency_key))
        checks_batch = Batch(self.redis)
        if flag_keys:
            checks_batch.script(_EXISTS_EACH, flag_keys)
        for entry_id, _, _, _, was_stale in parsed:
            if was_stale:
                checks_batch.pipe.xpending_range(stream, CONSUMER_GROUP, entry_id, entry_id, 1)
        checks = iter(await checks_batch.execute() if len(checks_batch.pipe) else [])
        flags = iter(next(checks) if flag_keys else "")

        leases: list[Lease] = []
        for entry_id, job, error, raw, was_stale in parsed:
            cancelled = done = False
            if job is not None:
                cancelled, done = next(flags) == "1", next(flags) == "1"
            deliveries = 1  # what XREADGROUP ">" gives a new entry
            if was_stale:
                pending = next(checks)
                if not pending or pending[0]["consumer"] != consumer:
                    continue  # acked or taken again in the meantime
                deliveries = int(pending[0]["times_delivered"])
                self.stats.reclaimed += 1
            lease = Lease(job or _placeholder(), stream, entry_id, consumer, deliveries, was_stale)
            if job is None:
                await self._dead_letter(lease, f"unreadable job entry: {error}", raw, "")
            elif cancelled or done:
                if await self.ack(lease):
                    if cancelled:
                        self.stats.skipped_cancelled += 1
                    else:
                        self.stats.skipped_done += 1
            elif deliveries > self.settings.max_deliveries:
                await self._dead_letter(
                    lease,
                    f"lease expired {deliveries - 1} times without an ack or failure "
                    "(the job may be killing its worker)",
                    job.to_fields(),
                    job.id,
                )
            else:
                leases.append(lease)
        self.stats.claimed += len(leases)
        return leases

    # Lease operations -----------------------------------------------------------------

    def _lease_args(self, lease: Lease) -> list[Arg]:
        return [CONSUMER_GROUP, lease.entry_id, lease.consumer, lease.deliveries]

    async def renew(self, lease: Lease) -> bool:
        """Reset the lease's age; False when it was lost (another worker has the job)."""
        ok = bool(await _RENEW(self.redis, [lease.stream], self._lease_args(lease)))
        if not ok:
            self.stats.lost_leases += 1
        return ok

    def _ack_call(self, lease: Lease, result: str | None) -> tuple[list[str], list[Arg]]:
        idem = lease.job.idempotency_key
        keys = [lease.stream, self.keys.pending(idem), self.keys.done(idem)]
        args: list[Arg] = [
            *self._lease_args(lease),
            lease.job.id,
            "0" if result is None else "1",
            result or "",
            self.settings.done_ttl_s * 1000,
        ]
        return keys, args

    async def ack(self, lease: Lease, result: str | None = None) -> bool:
        """Finish the job: remove it from the stream and, given `result`, record it as done
        in the same atomic step, so no redelivery can miss the record.
        False (and nothing done) if the lease was lost to another worker."""
        ok = bool(await _ACK(self.redis, *self._ack_call(lease, result)))
        if not ok:
            self.stats.lost_leases += 1
        return ok

    async def ack_many(self, leases: Sequence[Lease], results: Sequence[str | None]) -> list[bool]:
        """`ack` for several leases in one round trip."""
        if len(leases) != len(results):
            raise ValueError("one result (or None) per lease")
        batch = Batch(self.redis)
        for lease, result in zip(leases, results, strict=True):
            batch.script(_ACK, *self._ack_call(lease, result))
        oks = [bool(reply) for reply in await batch.execute()]
        self.stats.lost_leases += oks.count(False)
        return oks

    async def fail(self, lease: Lease, reason: str) -> FailOutcome:
        """Record a failed attempt: retry later with backoff, or dead-letter at the limit.

        On "dead" the dead-letter callback runs as well; either tells the caller to mark
        the build failed. "lost": another worker holds the job now, nothing was changed.
        """
        job = lease.job
        if job.attempt >= self.settings.max_attempts:
            dead = await self._dead_letter(
                lease,
                f"attempt {job.attempt} of {self.settings.max_attempts} failed: {reason}",
                job.to_fields(),
                job.id,
            )
            if dead is None:
                return FailOutcome("lost", job.attempt)
            return FailOutcome("dead", job.attempt, dead_letter=dead)
        delay = jittered(
            backoff_seconds(job.attempt, self.settings.backoff_base_s, self.settings.backoff_cap_s),
            self.settings.jitter,
            self._rng(),
        )
        retry_fields = json.dumps(_flat(job.next_attempt().to_fields()))
        reply = await self._fail_call(lease, job.id, "retry", round(delay * 1000), retry_fields)
        if not reply[0]:
            self.stats.lost_leases += 1
            return FailOutcome("lost", job.attempt)
        self.stats.retried += 1
        return FailOutcome("retry", job.attempt, retry_in_s=delay)

    async def _fail_call(
        self,
        lease: Lease,
        job_id: str,
        mode: Literal["retry", "dead"],
        delay_ms: int,
        retry_fields: str,
        dead: Sequence[str] = (),
    ) -> list[Any]:
        stream = lease.stream
        keys = [
            stream,
            self.keys.retry_schedule(stream),
            self.keys.retry_data(stream),
            self.keys.dead_letters,
            self.keys.pending(lease.job.idempotency_key),
        ]
        args: list[Arg] = [
            *self._lease_args(lease),
            job_id,
            mode,
            delay_ms,
            retry_fields,
            self.settings.dead_letter_maxlen,
            *dead,
        ]
        reply: list[Any] = await _FAIL(self.redis, keys, args)
        return reply

    async def _dead_letter(
        self, lease: Lease, reason: str, fields: Mapping[str, str], job_id: str
    ) -> DeadLetter | None:
        record = {
            **fields,
            "reason": reason[:MAX_REASON_CHARS],
            "stream": lease.stream,
            "entry_id": lease.entry_id,
            "consumer": lease.consumer,
        }
        reply = await self._fail_call(lease, job_id, "dead", 0, "", _flat(record))
        if not reply[0]:
            self.stats.lost_leases += 1
            return None
        self.stats.dead_lettered += 1
        dead = _dead_letter_from(reply[1], record)
        if self.on_dead_letter is not None:
            await self.on_dead_letter(dead)
        return dead

    async def dead_letters(self, count: int = 100) -> list[DeadLetter]:
        """The most recent dead letters, newest first."""
        entries: list[tuple[str, dict[str, str]]] = await self.redis.xrevrange(  # type: ignore[assignment]
            self.keys.dead_letters, count=count
        )
        return [_dead_letter_from(entry_id, fields) for entry_id, fields in entries]

    # Idempotency, cancel, metrics -----------------------------------------------------

    async def mark_done(self, idempotency_key: str, result: str) -> None:
        """Record a job's effect; `ack(lease, result)` does this atomically with the ack."""
        await self.redis.set(self.keys.done(idempotency_key), result, ex=self.settings.done_ttl_s)

    async def done_result(self, idempotency_key: str) -> str | None:
        result = await self.redis.get(self.keys.done(idempotency_key))
        return None if result is None else str(result)

    async def cancel(self, version: Version | str, run_id: str) -> int:
        """Cancel a run's jobs: set the flag running workers poll, then remove its queued
        (undelivered) jobs and delayed retries. Returns how many were removed.

        The flag comes first, so a job delivered while we clean up is dropped by `claim`
        (or stopped by its worker polling `is_cancelled`), and enqueue refuses new ones.
        """
        release = str(version)
        await self.redis.set(
            self.keys.cancelled(release, run_id), "1", ex=self.settings.cancel_ttl_s
        )
        streams = sorted(str(s) for s in await self.redis.smembers(self.keys.job_streams))
        removed: list[str] = []
        for stream in streams:
            keys = [stream, self.keys.retry_schedule(stream), self.keys.retry_data(stream)]
            removed += await _CANCEL_STREAM(self.redis, keys, [CONSUMER_GROUP, release, run_id])
        pairs = list(zip(removed[::2], removed[1::2], strict=True))
        batch = Batch(self.redis)
        for idem, job_id in pairs:
            if idem:
                batch.script(_DEL_IF, [self.keys.pending(idem)], [job_id])
        await batch.execute()
        return len(pairs)

    async def remove_idle_consumers(self, stream: str) -> list[str]:
        """Remove from the group every consumer idle past `consumer_idle_ms` that holds
        nothing pending (a dead worker's); the names removed. A live worker's consumer
        is never idle that long (it reads every block_ms), and if it were, reading again
        recreates it: removing one loses nothing."""
        try:
            consumers = await self.redis.xinfo_consumers(stream, CONSUMER_GROUP)
        except ResponseError as error:
            if "NOGROUP" in str(error) or "no such key" in str(error):
                return []
            raise
        removed: list[str] = []
        for info in consumers:
            name = str(info["name"])
            if int(info["pending"]) or int(info["idle"]) < self.settings.consumer_idle_ms:
                continue
            if await _DEL_IDLE_CONSUMER(self.redis, [stream], [CONSUMER_GROUP, name]):
                removed.append(name)
        return removed

    async def is_cancelled(self, version: Version | str, run_id: str) -> bool:
        return bool(await self.redis.exists(self.keys.cancelled(str(version), run_id)))

    async def depth(self, stream: str) -> Depth:
        """Queue depth for metrics. Finished entries are deleted, so lag = length - pending."""
        batch = Batch(self.redis)
        batch.pipe.xlen(stream)
        batch.pipe.zcard(self.keys.retry_schedule(stream))
        batch.pipe.xpending(stream, CONSUMER_GROUP)
        try:
            length, delayed, summary = await batch.execute()
        except ResponseError as error:
            if "NOGROUP" not in str(error):
                raise
            return Depth(pending=0, lag=int(await self.redis.xlen(stream)), delayed=0)
        pending = int(summary["pending"])
        return Depth(pending=pending, lag=max(0, int(length) - pending), delayed=int(delayed))


def _placeholder() -> Job:
    """A stand-in job for an unreadable entry, only so it can be dead-lettered."""
    return Job(
        kind=JobKind.SYNC, version=Version(0, 0, 0), component="unreadable", source_revision="-"
    )


def _dead_letter_from(entry_id: str, fields: Mapping[str, str]) -> DeadLetter:
    job: Job | None
    try:
        job = Job.from_fields(fields)
    except JobFormatError:
        job = None
    return DeadLetter(
        entry_id=entry_id,
        job=job,
        reason=fields.get("reason", ""),
        stream=fields.get("stream", ""),
        fields=dict(fields),
    )
