"""The release's atomic Redis record: the Lua scripts and `ReleaseStore`.

The states, their transition table and the values a read returns are pure and live in
`jobs.domain.release`; this module only stores them.

A promoted version is immutable: the creating script refuses a new run of it unless an
approver supersedes it, and the transition to promoted writes the version's small record
(who, when, which digests) in the same script. Settling (promoted, failed, cancelled,
blocked) puts the retention TTL on every key of the run's detail; the record stays.

Every write is one Lua script that checks the run is still the version's active run
(stale buttons of a superseded run are refused), makes the change and appends an event
(what the notifier shows) and, when someone acted, an audit entry, all atomically.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from jobs.domain.errors import InvalidInput
from jobs.domain.platforms import Platform, PlatformError, canonical_platform, parse_platform
from jobs.domain.release import (
    EVENT_TARGETS,
    SETTLED,
    TERMINAL,
    ApprovalRecord,
    ApprovalResult,
    BuildRecord,
    BuildState,
    ComponentIndex,
    DigestRecorded,
    Event,
    Fence,
    InvalidTransition,
    Promoted,
    PromotionResult,
    Release,
    ReleaseEvent,
    State,
    TagWrite,
    VersionImmutable,
    VersionRecord,
    build_field,
    build_sources,
    can_transition,
    check_component,
    check_digest,
    check_platform,
    check_version,
)
from jobs.domain.versions import Version, VersionError, parse_version
from jobs.store.connections import Arg, Script
from jobs.store.keys import CONSUMER_GROUP, Keys
from jobs.store.queue import ENQUEUE_LUA


@dataclass(frozen=True)
class RunStart:
    """What a new run starts with, written in the same atomic step as the run itself."""

    state: State  # building, or merging when a merge is claimed at once
    # (component, platform) -> the digest a previous run of the same revision pushed.
    reused: Mapping[tuple[str, Platform], str] = field(default_factory=dict, hash=False)
    # Components every platform of which is reused: their merge is claimed at once.
    merges: tuple[str, ...] = ()
    # The jobs to enqueue, as `Queue.enqueue_call` gives them.
    jobs: Sequence[tuple[Sequence[str], Sequence[Arg]]] = ()
    # (component, platform) -> the component whose build it shares (`jobs.domain.builds`),
    # for the builds that are not the component's own.
    built_with: Mapping[tuple[str, Platform], str] = field(default_factory=dict, hash=False)


# Given the new run's id and the id of the run it replaces ("" for none).
StartPlanner = Callable[[str, str], Awaitable[RunStart]]


# Lua ----------------------------------------------------------------------------------

_COMMON = """
local function now_ms()
  local t = redis.call('TIME')
  return string.format('%.0f', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
end
local function set_of(csv)
  local s = {}
  for item in string.gmatch(csv, '[^,]+') do s[item] = true end
  return s
end
-- The run's state if `run_id` is the version's active run, else nil.
local function active_state(pointer, run, run_id)
  if redis.call('GET', pointer) ~= run_id then return nil end
  return redis.call('HGET', run, 'state')
end
local function event(stream, maxlen, version, run_id, kind, ...)
  redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*',
    'version', version, 'run_id', run_id, 'type', kind, ...)
end
"""

# Creating a run and starting it are one atomic step: the run, its build records (those
# a previous run already pushed recorded as pushed), the merges claimed at once and every
# job it starts are written together or not at all, so no crash can leave a run that
# waits for jobs nobody enqueued. A promoted version is immutable: only an explicit
# supersede starts a run of it (checked here too, so no request can race a promotion).
# KEYS: pointer, new run, new builds, releases, runs, events, audit, current run (or
#       pointer), new merges, status outbox, the version's record, then 5 per job
#       (see ENQUEUE_LUA)
# ARGV: version, new run id, expected current run id, settled csv, events maxlen,
#       audit maxlen, requested_by, channel, platforms json, components json, source ref,
#       request id, initial state, announce ('1' or ''), number of build args, merges csv,
#       supersede ('1' or '0'), build field/record pairs..., then per job: job id,
#       pending ttl ms, n, n fields...
_CREATE = Script(
    _COMMON
    + ENQUEUE_LUA
    + """
local current = redis.call('GET', KEYS[1]) or ''
if current ~= ARGV[3] then return {'retry'} end
if current ~= '' then
  local state = redis.call('HGET', KEYS[8], 'state')
  if state and not set_of(ARGV[4])[state] then
    -- A redelivery of the request that made this run gets it back as its own.
    if ARGV[12] ~= '' and redis.call('HGET', KEYS[8], 'request_id') == ARGV[12] then
      return {'same', current}
    end
    return {'existing', current}
  end
end
-- A promoted version is immutable: only an explicit supersede starts a run of it.
local promoted = redis.call('HGET', KEYS[11], 'digests')
if promoted and ARGV[17] ~= '1' then return {'released', current} end
local now = now_ms()
local version, run_id, actor = ARGV[1], ARGV[2], ARGV[7]
redis.call('HSET', KEYS[2], 'version', version, 'run_id', run_id, 'state', ARGV[13],
  'state_reason', '', 'requested_by', actor, 'channel', ARGV[8], 'platforms', ARGV[9],
  'components', ARGV[10], 'source_ref', ARGV[11], 'created_at', now, 'updated_at', now,
  'status_channel', '', 'status_ts', '', 'previous_run_id', current, 'request_id', ARGV[12],
  'supersede', ARGV[17])
local nbuilds = tonumber(ARGV[15])
if nbuilds > 0 then redis.call('HSET', KEYS[3], unpack(ARGV, 18, 17 + nbuilds)) end
redis.call('SET', KEYS[1], run_id)
redis.call('ZADD', KEYS[4], now, version)
redis.call('ZADD', KEYS[5], now, run_id)
event(KEYS[6], ARGV[5], version, run_id, 'created', 'state', 'queued', 'actor', actor)
redis.call('XADD', KEYS[7], 'MAXLEN', '~', ARGV[6], '*', 'version', version,
  'run_id', run_id, 'actor', actor, 'action', 'requested', 'detail', ARGV[11],
  'where', ARGV[8])
if ARGV[17] == '1' then
  redis.call('XADD', KEYS[7], 'MAXLEN', '~', ARGV[6], '*', 'version', version,
    'run_id', run_id, 'actor', actor, 'action', 'supersede', 'detail', promoted or '',
    'where', ARGV[8])
end
if ARGV[13] ~= 'queued' then
  event(KEYS[6], ARGV[5], version, run_id, 'state', 'from', 'queued', 'state', 'building',
    'actor', '', 'reason', '')
  for i = 18, 17 + nbuilds, 2 do
    local record = cjson.decode(ARGV[i + 1])
    if record.state == 'pushed' then
      local component, platform = string.match(ARGV[i], '^(.-)@(.*)$')
      event(KEYS[6], ARGV[5], version, run_id, 'build', 'component', component,
        'platform', platform, 'build_state', 'pushed', 'digest', record.digest, 'attempt', '0')
    end
  end
  for component in string.gmatch(ARGV[16], '[^,]+') do
    redis.call('HSET', KEYS[9], component, 'request')
    event(KEYS[6], ARGV[5], version, run_id, 'merge_claimed', 'component', component,
      'claimer', 'request')
  end
  if ARGV[13] == 'merging' then
    event(KEYS[6], ARGV[5], version, run_id, 'state', 'from', 'building', 'state', 'merging',
      'actor', '', 'reason', '')
  end
end
if ARGV[14] == '1' then redis.call('SADD', KEYS[10], version .. ' ' .. run_id) end
local i, k = 18 + nbuilds, 12
while i <= #ARGV do
  local n = tonumber(ARGV[i + 2])
  enqueue_job({KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4]}, ARGV[i],
    ARGV[i + 1], {unpack(ARGV, i + 3, i + 2 + n)})
  i, k = i + 3 + n, k + 5
end
return {'created', run_id}
"""
)

# KEYS: pointer, run, events, audit, the version's record, the run's detail keys (run,
#       builds, indexes, merges, approvals, ... in `Keys.run_detail` order)
# ARGV: version, run id, from csv, to, actor, reason, events maxlen, audit maxlen,
#       settled csv, retention seconds, where
_TRANSITION = Script(
    _COMMON
    + """
local state = active_state(KEYS[1], KEYS[2], ARGV[2])
if not state or not set_of(ARGV[3])[state] then return 0 end
local now = now_ms()
redis.call('HSET', KEYS[2], 'state', ARGV[4], 'state_reason', ARGV[6], 'updated_at', now)
if ARGV[4] == 'promoted' then
  -- What immutability and the audit need, kept after the run's detail expires.
  local digests = {}
  local indexes = redis.call('HGETALL', KEYS[8])
  for i = 1, #indexes, 2 do digests[indexes[i]] = cjson.decode(indexes[i + 1]).digest end
  local by = redis.call('HKEYS', KEYS[10])
  redis.call('HSET', KEYS[5], 'promoted_run', ARGV[2], 'promoted_at', now,
    'promoted_by', cjson.encode(by), 'digests', cjson.encode(digests))
end
if set_of(ARGV[9])[ARGV[4]] then
  for i = 6, #KEYS do redis.call('EXPIRE', KEYS[i], ARGV[10]) end
end
event(KEYS[3], ARGV[7], ARGV[1], ARGV[2], 'state', 'from', state, 'state', ARGV[4],
  'actor', ARGV[5], 'reason', ARGV[6])
if ARGV[5] ~= '' then
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[8], '*', 'version', ARGV[1],
    'run_id', ARGV[2], 'actor', ARGV[5], 'action', ARGV[4], 'detail', ARGV[6],
    'where', ARGV[11])
end
return 1
"""
)

# The build records of one build: the component's (its field is ARGV[3]) and, from
# ARGV[first] on, the components sharing its build (`jobs.domain.builds`), each
# `component@platform`. nil when any of them is missing.
_SHARED_RECORDS = """
local function shared_records(builds, field, platform, first)
  local names, records = {field}, {}
  for i = first, #ARGV do table.insert(names, ARGV[i] .. '@' .. platform) end
  for n, name in ipairs(names) do
    local raw = redis.call('HGET', builds, name)
    if not raw then return nil end
    records[n] = cjson.decode(raw)
  end
  return names, records
end
"""

# Every record of the build moves, or none (a shared build is one build).
# KEYS: pointer, run, builds, events
# ARGV: version, run id, field, new state, allowed from csv, terminal csv, attempt ('' keeps),
#       error, log lines json, max log lines, events maxlen, component, platform, then the
#       components sharing the build...
_UPDATE_BUILD = Script(
    _COMMON
    + _SHARED_RECORDS
    + """
local state = active_state(KEYS[1], KEYS[2], ARGV[2])
if not state or set_of(ARGV[6])[state] then return 0 end
local names, records = shared_records(KEYS[3], ARGV[3], ARGV[13], 14)
if not names then return 0 end
for _, record in ipairs(records) do
  if not set_of(ARGV[5])[record.state] then return 0 end
end
local now = tonumber(now_ms())
for n, record in ipairs(records) do
  record.state = ARGV[4]
  if ARGV[7] ~= '' then record.attempt = tonumber(ARGV[7]) end
  record.error = ARGV[8]
  local log = {}
  if type(record.log) == 'table' then log = record.log end
  for _, line in ipairs(cjson.decode(ARGV[9])) do table.insert(log, line) end
  local keep = tonumber(ARGV[10])
  while #log > keep do table.remove(log, 1) end
  record.log = log
  record.updated_at = now
  redis.call('HSET', KEYS[3], names[n], cjson.encode(record))
  local component = string.match(names[n], '^(.-)@')
  event(KEYS[4], ARGV[11], ARGV[1], ARGV[2], 'build', 'component', component,
    'platform', ARGV[13], 'build_state', ARGV[4], 'attempt', tostring(record.attempt or 0),
    'error', ARGV[8])
end
return 1
"""
)

# Every record of the build gets the digest, or none: a digest another is pushed with is
# a conflict (nothing written), one already pushed with it is kept as it is.
# KEYS: pointer, run, builds, events
# ARGV: version, run id, field, digest, attempt, allowed from csv, terminal csv, events maxlen,
#       component, platform,
#       group, entry id, consumer, deliveries: the fence, with KEYS[5] the job stream ('' x4: none),
#       then the components sharing the build...
_RECORD_DIGEST = Script(
    _COMMON
    + _SHARED_RECORDS
    + """
if ARGV[11] and ARGV[11] ~= '' then
  local p = redis.call('XPENDING', KEYS[5], ARGV[11], ARGV[12], ARGV[12], 1)
  if #p == 0 or p[1][2] ~= ARGV[13] or tonumber(p[1][4]) ~= tonumber(ARGV[14]) then
    return {'stale', ''}
  end
end
local state = active_state(KEYS[1], KEYS[2], ARGV[2])
if not state or set_of(ARGV[7])[state] then return {'refused', ''} end
local names, records = shared_records(KEYS[3], ARGV[3], ARGV[10], 15)
if not names then return {'refused', ''} end
for _, record in ipairs(records) do
  if record.state == 'pushed' then
    if record.digest ~= ARGV[4] then return {'conflict', record.digest} end
  elseif not set_of(ARGV[6])[record.state] then
    return {'refused', ''}
  end
end
local now, wrote = tonumber(now_ms()), false
for n, record in ipairs(records) do
  if record.state ~= 'pushed' then
    record.state = 'pushed'
    record.digest = ARGV[4]
    record.attempt = tonumber(ARGV[5])
    record.error = ''
    record.updated_at = now
    redis.call('HSET', KEYS[3], names[n], cjson.encode(record))
    local component = string.match(names[n], '^(.-)@')
    event(KEYS[4], ARGV[8], ARGV[1], ARGV[2], 'build', 'component', component,
      'platform', ARGV[10], 'build_state', 'pushed', 'digest', ARGV[4], 'attempt', ARGV[5])
    wrote = true
  end
end
if wrote then return {'recorded', ARGV[4]} end
return {'already', ARGV[4]}
"""
)

# KEYS: pointer, run, builds, merges, events
# ARGV: version, run id, component, claimer, terminal csv, events maxlen, build fields...
_CLAIM_MERGE = Script(
    _COMMON
    + """
local state = active_state(KEYS[1], KEYS[2], ARGV[2])
if not state or set_of(ARGV[5])[state] then return 0 end
for i = 7, #ARGV do
  local raw = redis.call('HGET', KEYS[3], ARGV[i])
  if not raw or cjson.decode(raw).state ~= 'pushed' then return 0 end
end
if redis.call('HSETNX', KEYS[4], ARGV[3], ARGV[4]) == 1 then
  event(KEYS[5], ARGV[6], ARGV[1], ARGV[2], 'merge_claimed', 'component', ARGV[3],
    'claimer', ARGV[4])
  return 1
end
-- The same claimer asking again (its job was redelivered) still holds the claim.
if ARGV[4] ~= '' and redis.call('HGET', KEYS[4], ARGV[3]) == ARGV[4] then return 1 end
return 0
"""
)

# KEYS: pointer, run, target hash, events
# ARGV: version, run id, allowed states csv ('' = any), hash field, json value,
#       events maxlen, event type, event field/value pairs...
_PUT = Script(
    _COMMON
    + """
local state = active_state(KEYS[1], KEYS[2], ARGV[2])
if not state or (ARGV[3] ~= '' and not set_of(ARGV[3])[state]) then return 0 end
local value = cjson.decode(ARGV[5])
value.at = tonumber(now_ms())
redis.call('HSET', KEYS[3], ARGV[4], cjson.encode(value))
redis.call('HSET', KEYS[2], 'updated_at', now_ms())
event(KEYS[4], ARGV[6], ARGV[1], ARGV[2], ARGV[7], unpack(ARGV, 8))
return 1
"""
)

# KEYS: pointer, run, events, status outbox.  ARGV: version, run id, channel, ts,
#       events maxlen
_STATUS_MESSAGE = Script(
    _COMMON
    + """
if not active_state(KEYS[1], KEYS[2], ARGV[2]) then return 0 end
redis.call('SREM', KEYS[4], ARGV[1] .. ' ' .. ARGV[2])
redis.call('HSET', KEYS[2], 'status_channel', ARGV[3], 'status_ts', ARGV[4])
event(KEYS[3], ARGV[5], ARGV[1], ARGV[2], 'status_message', 'channel', ARGV[3], 'ts', ARGV[4])
return 1
"""
)

# KEYS: pointer, run, indexes, approvals, events, audit
# ARGV: version, run id, user, digests json, events maxlen, audit maxlen, where
_APPROVE = Script(
    _COMMON
    + """
local state = active_state(KEYS[1], KEYS[2], ARGV[2])
if not state then return {0, 'not the active run'} end
if state ~= 'ready' then return {0, 'the release is ' .. state .. ', not ready'} end
local approved = cjson.decode(ARGV[4])
local components = cjson.decode(redis.call('HGET', KEYS[2], 'components'))
local count = 0
for _ in pairs(approved) do count = count + 1 end
if count ~= #components then return {0, 'the approval does not cover every component'} end
for _, component in ipairs(components) do
  local raw = redis.call('HGET', KEYS[3], component)
  if not raw or cjson.decode(raw).digest ~= approved[component] then
    return {0, 'the approved digest of ' .. component .. ' is not the verified one'}
  end
end
local now = now_ms()
redis.call('HSET', KEYS[4], ARGV[3],
  cjson.encode({user = ARGV[3], at = tonumber(now), digests = approved}))
redis.call('HSET', KEYS[2], 'updated_at', now)
local total = redis.call('HLEN', KEYS[4])
event(KEYS[5], ARGV[5], ARGV[1], ARGV[2], 'approval', 'actor', ARGV[3],
  'approvals', tostring(total))
redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[6], '*', 'version', ARGV[1],
  'run_id', ARGV[2], 'actor', ARGV[3], 'action', 'approved', 'detail', ARGV[4],
  'where', ARGV[7])
return {1, total}
"""
)


# KEYS: refusals (hash of who was refused what on this run), audit
# ARGV: field (user and action), version, run id, user, action, detail, where, audit maxlen
def _audit_fields(
    version: Version | str,
    run_id: str,
    actor: str,
    action: str,
    detail: str,
    where: str,
    extra: Mapping[str, str] | None,
) -> list[tuple[str, str]]:
    """An audit entry's fields: `extra` first, then the six every entry has (which `extra`
    never replaces)."""
    six = {
        "version": str(version),
        "run_id": run_id,
        "actor": actor,
        "action": action,
        "detail": detail,
        "where": where,
    }
    return [(k, v) for k, v in (extra or {}).items() if k not in six] + list(six.items())


# KEYS: the identity's marker, the audit stream.  ARGV: ttl s, maxlen, field/value pairs...
# One script, so a marker is never set without its entry (a crash between the two would
# otherwise lose the refusal from the audit for good).
_AUDIT_ONCE = Script(
    """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
return 1
"""
)


# KEYS: pointer, run, overwrites.  ARGV: run id, target/digest pairs...
_CONFIRM_OVERWRITES = Script(
    _COMMON
    + """
if not active_state(KEYS[1], KEYS[2], ARGV[1]) then return 0 end
local same = true
for i = 2, #ARGV, 2 do
  if redis.call('HGET', KEYS[3], ARGV[i]) ~= ARGV[i + 1] then same = false end
end
if same then return 0 end
redis.call('HSET', KEYS[3], unpack(ARGV, 2))
return 1
"""
)

# KEYS: the version's record.  ARGV: field, json value (its `at` is set here)
_RECORD_TAG = Script(
    _COMMON
    + """
local value = cjson.decode(ARGV[2])
value.at = tonumber(now_ms())
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(value))
return 1
"""
)


# Store --------------------------------------------------------------------------------


def _csv(states: Iterable[str]) -> str:
    return ",".join(sorted(states))


def _ms(value: Any) -> float:
    return int(value) / 1000 if value not in (None, "") else 0.0


class ReleaseStore:
    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        *,
        events_maxlen: int = 10_000,
        audit_maxlen: int = 100_000,
        log_lines: int = 20,
        retention_seconds: int = 90 * 86400,
    ) -> None:
        if retention_seconds < 1:
            raise ValueError("retention_seconds must be at least 1")
        self.redis = redis
        self.keys = keys
        self.retention_seconds = retention_seconds
        self.events_maxlen = events_maxlen
        self.audit_maxlen = audit_maxlen
        self.log_lines = log_lines

    def _guard_keys(self, version: str, run_id: str) -> list[str]:
        return [self.keys.active_run(version), self.keys.run(version, run_id)]

    async def create_or_get(
        self,
        version: Version | str,
        requested_by: str,
        channel: str,
        platforms: Sequence[Platform | str],
        components: Sequence[str],
        source_ref: str,
        *,
        supersede: bool = False,
        request_id: str = "",
        announce: bool = False,
        start: StartPlanner | None = None,
    ) -> tuple[Release, bool]:
        """The version's active run and whether it is this request's.

        A duplicate request (the run is not settled) returns the existing run unchanged,
        whatever platforms or components it asked for; a redelivery of the request that
        made it (same non-empty `request_id`) gets it with True, as its own. `start`
        plans what the new run starts with (given its id and the run it replaces), and
        it is written in the same atomic step as the run; without it the run stays
        queued. `announce`: the run wants a Slack live message (see Keys.status_outbox).
        A promoted version raises `VersionImmutable` unless `supersede` (checked in the
        same script as the creation).
        """
        version = check_version(version)
        for name, value in (("requested_by", requested_by), ("channel", channel)):
            if not value or any(c.isspace() for c in value):
                raise ValueError(f"{name} {value!r} must be a non-empty id")
        if not source_ref.strip():
            raise ValueError("source_ref is empty")
        spelled = tuple(check_platform(p) for p in platforms)
        components = tuple(check_component(c) for c in components)
        for name, items in (("platforms", spelled), ("components", components)):
            if not items or len(set(items)) != len(items):
                raise ValueError(f"{name} must be non-empty without repeats")
        run_id = uuid.uuid4().hex[:16]
        for _ in range(20):
            current = str(await self.redis.get(self.keys.active_run(version)) or "")
            current_key = (
                self.keys.run(version, current) if current else self.keys.active_run(version)
            )
            plan = await start(run_id, current) if start is not None else None
            builds: list[Arg] = []
            reused = {(c, str(p)): d for (c, p), d in plan.reused.items()} if plan else {}
            shares = {(c, str(p)): w for (c, p), w in plan.built_with.items()} if plan else {}
            for component in components:
                for platform in spelled:
                    digest = reused.get((component, platform))
                    record: dict[str, Any] = {"state": BuildState.QUEUED.value, "attempt": 0}
                    if digest:
                        record = {"state": BuildState.PUSHED.value, "attempt": 0, "digest": digest}
                    record["error"] = ""
                    if lead := shares.get((component, platform)):
                        record["with"] = check_component(lead)
                    builds += [build_field(component, platform), json.dumps(record)]
            keys = [
                self.keys.active_run(version),
                self.keys.run(version, run_id),
                self.keys.builds(version, run_id),
                self.keys.releases,
                self.keys.runs(version),
                self.keys.events,
                self.keys.audit,
                current_key,
                self.keys.merges(version, run_id),
                self.keys.status_outbox,
                self.keys.record(version),
            ]
            jobs: list[Arg] = []
            for job_keys, job_args in plan.jobs if plan else ():
                keys += job_keys
                jobs += [job_args[0], job_args[1], len(job_args) - 2, *job_args[2:]]
            args: list[Arg] = [
                version,
                run_id,
                current,
                _csv(SETTLED),
                self.events_maxlen,
                self.audit_maxlen,
                requested_by,
                channel,
                json.dumps(list(spelled)),
                json.dumps(list(components)),
                source_ref,
                request_id,
                (plan.state if plan else State.QUEUED).value,
                "1" if announce else "",
                len(builds),
                ",".join(plan.merges) if plan else "",
                "1" if supersede else "0",
                *builds,
                *jobs,
            ]
            reply = await _CREATE(self.redis, keys, args)
            if reply[0] == "retry":
                continue  # another request switched runs between our read and the script
            if reply[0] == "released":
                found = await self.version_record(version)
                assert found is not None and found.promoted is not None
                raise VersionImmutable(version, found.promoted)
            if reply[0] == "created":
                await self._forget_expired_runs(version)
            release = await self.load(version, reply[1])
            if release is None:
                continue  # superseded again in between
            if reply[0] == "existing":
                await self.audit(
                    version, release.run_id, requested_by, "requested-again", "", channel
                )
            return release, reply[0] in ("created", "same")
        raise RuntimeError(f"could not create or find a run of {version}: too much contention")

    async def transition(
        self,
        version: Version | str,
        run_id: str,
        from_states: Iterable[State],
        to_state: State,
        *,
        actor: str = "",
        reason: str = "",
        where: str = "",
    ) -> bool:
        """Compare-and-set the run's state: True if it was one of `from_states` and the run
        is still the active one. `actor` (a Slack user id) also writes an audit entry,
        with `where` it acted from (a Slack channel id, or `cli`)."""
        version = str(version)
        sources = frozenset(State(s) for s in from_states)
        to_state = State(to_state)
        if not sources:
            raise ValueError("transition needs at least one state to move from")
        for source in sorted(sources):
            if not can_transition(source, to_state):
                raise InvalidTransition(source, to_state)
        ok = await _TRANSITION(
            self.redis,
            [
                *self._guard_keys(version, run_id),
                self.keys.events,
                self.keys.audit,
                self.keys.record(version),
                *self.keys.run_detail(version, run_id),
            ],
            [
                version,
                run_id,
                _csv(sources),
                to_state.value,
                actor,
                reason,
                self.events_maxlen,
                self.audit_maxlen,
                _csv(SETTLED),
                self.retention_seconds,
                where,
            ],
        )
        return bool(ok)

    async def apply(
        self,
        version: Version | str,
        run_id: str,
        event: Event,
        *,
        actor: str = "",
        reason: str = "",
        where: str = "",
    ) -> bool:
        """`transition` driven by an event: from every state the event may leave."""
        version = str(version)
        target = EVENT_TARGETS[event]
        sources = [s for s in State if can_transition(s, target)]
        return await self.transition(
            version, run_id, sources, target, actor=actor, reason=reason, where=where
        )

    # Builds ---------------------------------------------------------------------------

    async def update_build(
        self,
        version: Version | str,
        run_id: str,
        component: str,
        platform: Platform | str,
        state: BuildState,
        *,
        attempt: int | None = None,
        error: str = "",
        log_lines: Sequence[str] = (),
        shared: Sequence[str] = (),
    ) -> bool:
        """Move a build to queued/building/failed/cancelled (pushed: `record_build_digest`).
        `shared`: the other components whose build this is (`jobs.domain.builds`); their
        records move with it in the same step, or none moves.

        False when the move is not allowed (already pushed, run settled or superseded).
        """
        version = str(version)
        platform = str(platform)
        shared = [check_component(c) for c in shared]
        state = BuildState(state)
        if state is BuildState.PUSHED:
            raise ValueError("record a pushed build with record_build_digest")
        ok = await _UPDATE_BUILD(
            self.redis,
            [
                *self._guard_keys(version, run_id),
                self.keys.builds(version, run_id),
                self.keys.events,
            ],
            [
                version,
                run_id,
                build_field(component, platform),
                state.value,
                _csv(build_sources(state)),
                _csv(TERMINAL),
                "" if attempt is None else attempt,
                error[:2000],
                json.dumps([line[:500] for line in log_lines]),
                self.log_lines,
                self.events_maxlen,
                component,
                platform,
                *shared,
            ],
        )
        return bool(ok)

    async def record_build_digest(
        self,
        version: Version | str,
        run_id: str,
        component: str,
        platform: Platform | str,
        digest: str,
        attempt: int,
        fence: Fence | None = None,
        *,
        shared: Sequence[str] = (),
    ) -> DigestRecorded:
        """Store the digest a build pushed, once: repeating it is harmless, replacing it is
        refused (the first recorded digest is the one the merge will pin). Given `fence`,
        only while that lease is still the job's current one, checked in the same step.
        `shared`: the other components whose build this is; each gets the same digest in
        the same step."""
        version = str(version)
        platform = str(platform)
        shared = [check_component(c) for c in shared]
        check_digest(digest)
        # Always four slots, so the sharing components start at ARGV[15].
        fenced: list[Any] = ["", "", "", ""]
        if fence is not None:
            fenced = [CONSUMER_GROUP, fence.entry_id, fence.consumer, fence.deliveries]
        reply = await _RECORD_DIGEST(
            self.redis,
            [
                *self._guard_keys(version, run_id),
                self.keys.builds(version, run_id),
                self.keys.events,
                *([fence.stream] if fence is not None else []),
            ],
            [
                version,
                run_id,
                build_field(component, platform),
                digest,
                attempt,
                _csv(build_sources(BuildState.PUSHED)),
                _csv(TERMINAL),
                self.events_maxlen,
                component,
                platform,
                *fenced,
                *shared,
            ],
        )
        status = reply[0]
        stored = reply[1] or None
        if status == "stale":
            return DigestRecorded("stale", None)
        if status == "recorded":
            return DigestRecorded("recorded", stored)
        if status == "already":
            return DigestRecorded("already", stored)
        if status == "conflict":
            return DigestRecorded("conflict", stored)
        return DigestRecorded("refused", stored)

    async def all_platforms_built(
        self, version: Version | str, run_id: str, component: str
    ) -> bool:
        version = str(version)
        release = await self.load(version, run_id)
        return release is not None and release.built_digests(component) is not None

    async def try_claim_merge(
        self, version: Version | str, run_id: str, component: str, *, claimer: str = ""
    ) -> bool:
        """True for exactly one caller once every platform of `component` is pushed.

        Give the build job's id as `claimer`: if that job is redelivered after claiming
        but before enqueueing the merge, it gets True again (and the queue's dedup keeps
        the merge single); any other claimer gets False.
        """
        version = str(version)
        release = await self.load(version, run_id)
        if release is None or component not in release.components:
            return False
        fields = [build_field(component, p) for p in release.platforms]
        ok = await _CLAIM_MERGE(
            self.redis,
            [
                *self._guard_keys(version, run_id),
                self.keys.builds(version, run_id),
                self.keys.merges(version, run_id),
                self.keys.events,
            ],
            [version, run_id, component, claimer, _csv(TERMINAL), self.events_maxlen, *fields],
        )
        return bool(ok)

    # Verdicts, status message, approvals, promotion -----------------------------------

    async def _put(
        self,
        version: Version | str,
        run_id: str,
        key: str,
        hash_field: str,
        value: Mapping[str, Any],
        *,
        allowed: Iterable[State] | None,
        event_type: str,
        event_fields: Mapping[str, str],
    ) -> bool:
        version = str(version)
        ok = await _PUT(
            self.redis,
            [*self._guard_keys(version, run_id), key, self.keys.events],
            [
                version,
                run_id,
                "" if allowed is None else _csv(allowed),
                hash_field,
                json.dumps(value),
                self.events_maxlen,
                event_type,
                *[item for pair in event_fields.items() for item in pair],
            ],
        )
        return bool(ok)

    async def record_index(
        self,
        version: Version | str,
        run_id: str,
        component: str,
        digest: str,
        verdict: str,
        detail: str = "",
    ) -> bool:
        """The merged index digest of `component` and its platform verdict."""
        version = str(version)
        check_digest(digest)
        return await self._put(
            version,
            run_id,
            self.keys.indexes(version, run_id),
            component,
            {"digest": digest, "verdict": verdict, "detail": detail},
            allowed=[s for s in State if s not in TERMINAL],
            event_type="index",
            event_fields={
                "component": component,
                "digest": digest,
                "verdict": verdict,
                "detail": detail,
            },
        )

    async def record_merge_failed(
        self, version: Version | str, run_id: str, component: str, verdict: str, detail: str
    ) -> bool:
        """`component` was not merged (the registry kept failing): kept where its index
        would be, with no digest, so the run can settle and say why."""
        version = str(version)
        return await self._put(
            version,
            run_id,
            self.keys.indexes(version, run_id),
            component,
            {"digest": "", "verdict": verdict, "detail": detail},
            allowed=[s for s in State if s not in TERMINAL],
            event_type="index",
            event_fields={
                "component": component,
                "digest": "",
                "verdict": verdict,
                "detail": detail,
            },
        )

    async def set_status_message(
        self, version: Version | str, run_id: str, channel: str, ts: str
    ) -> bool:
        """Where the release's Slack status message lives (for chat.update)."""
        version = str(version)
        ok = await _STATUS_MESSAGE(
            self.redis,
            [*self._guard_keys(version, run_id), self.keys.events, self.keys.status_outbox],
            [version, run_id, channel, ts, self.events_maxlen],
        )
        return bool(ok)

    async def add_approval(
        self,
        version: Version | str,
        run_id: str,
        user: str,
        digests: Mapping[str, str],
        where: str = "",
    ) -> ApprovalResult:
        """Record `user`'s approval of exactly these component digests.

        Refused unless the run is active and ready and the digests are the verified index
        digests of every component; one approval per user however often they click.
        """
        version = str(version)
        for digest in digests.values():
            check_digest(digest)
        reply = await _APPROVE(
            self.redis,
            [
                *self._guard_keys(version, run_id),
                self.keys.indexes(version, run_id),
                self.keys.approvals(version, run_id),
                self.keys.events,
                self.keys.audit,
            ],
            [
                version,
                run_id,
                user,
                json.dumps(dict(digests)),
                self.events_maxlen,
                self.audit_maxlen,
                where,
            ],
        )
        if reply[0]:
            return ApprovalResult(True, int(reply[1]))
        release = await self.load(version, run_id)
        count = len(release.approvals) if release else 0
        return ApprovalResult(False, count, str(reply[1]))

    async def record_promotion(
        self,
        version: Version | str,
        run_id: str,
        target: str,
        *,
        ok: bool,
        digest: str,
        detail: str = "",
    ) -> bool:
        """The outcome of promoting to one target tag (while the run is promoting)."""
        version = str(version)
        return await self._put(
            version,
            run_id,
            self.keys.promotions(version, run_id),
            target,
            {"ok": ok, "digest": digest, "detail": detail},
            allowed=[State.PROMOTING],
            event_type="promotion",
            event_fields={"target": target, "ok": "1" if ok else "0", "digest": digest},
        )

    async def confirm_overwrites(
        self, version: Version | str, run_id: str, held: Mapping[str, str]
    ) -> bool:
        """Record that these mirror targets may be overwritten while they hold these
        digests (the decision itself goes to the audit stream). False, writing nothing,
        when exactly this was confirmed already: one confirmation per decision, however
        often, or however concurrently, it is clicked."""
        version = str(version)
        if not held:
            return False
        pairs = [item for pair in sorted(held.items()) for item in pair]
        reply = await _CONFIRM_OVERWRITES(
            self.redis,
            [*self._guard_keys(version, run_id), self.keys.overwrites(version, run_id)],
            [run_id, *pairs],
        )
        return bool(reply)

    async def record_tag(
        self, version: Version | str, run_id: str, component: str, digest: str, *, verified: bool
    ) -> None:
        """What this version's merge wrote to `component`'s release tag (the record the
        next merge compares the tag with). One field per component: bounded."""
        version = str(version)
        check_digest(digest)
        value = {"digest": digest, "verified": verified, "run_id": run_id}
        await _RECORD_TAG(
            self.redis, [self.keys.record(version)], [f"tag:{component}", json.dumps(value)]
        )

    async def version_record(self, version: Version | str) -> VersionRecord | None:
        """The version's immutable record, or None when no merge or promotion wrote one."""
        version = str(version)
        raw: Any = await self.redis.hgetall(self.keys.record(version))
        if not raw:
            return None
        tags = {}
        for name, value in raw.items():
            if name.startswith("tag:"):
                data = json.loads(value)
                tags[name[4:]] = TagWrite(
                    data["digest"], bool(data["verified"]), data["run_id"], _ms(data.get("at"))
                )
        promoted = None
        if "digests" in raw:
            by = json.loads(raw.get("promoted_by") or "[]")
            promoted = Promoted(
                run_id=raw.get("promoted_run", ""),
                at=_ms(raw.get("promoted_at")),
                by=tuple(sorted(by)) if isinstance(by, list) else (),  # cjson: [] is {}
                digests=dict(json.loads(raw["digests"])),
            )
        return VersionRecord(tags, promoted)

    async def _forget_expired_runs(self, version: Version | str) -> None:
        """Drop run ids whose detail has expired from the version's list of runs, so the
        list stays as small as the retention."""
        version = str(version)
        runs = await self.run_ids(version)
        if not runs:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for run_id in runs:
                pipe.exists(self.keys.run(version, run_id))
            alive = await pipe.execute()
        gone = [run_id for run_id, found in zip(runs, alive, strict=True) if not found]
        if gone:
            await self.redis.zrem(self.keys.runs(version), *gone)

    async def overwrite_confirmations(self, version: Version | str, run_id: str) -> dict[str, str]:
        version = str(version)
        found = await self.redis.hgetall(self.keys.overwrites(version, run_id))
        return {str(k): str(v) for k, v in found.items()}

    async def audit(
        self,
        version: Version | str,
        run_id: str,
        actor: str,
        action: str,
        detail: str,
        where: str = "",
        *,
        extra: Mapping[str, str] | None = None,
    ) -> str:
        """Append an audit entry (rejected, cancelled, ...) with `where` the actor acted
        from (a Slack channel id, or `cli`); returns its stream id. `extra`: more fields
        (a sync's mirror and outcome); they never replace the six."""
        fields = _audit_fields(version, run_id, actor, action, detail, where, extra)
        entry_id = await self.redis.xadd(
            self.keys.audit,
            dict(fields),
            maxlen=self.audit_maxlen,
            approximate=True,
        )
        return str(entry_id)

    async def audit_once(
        self,
        identity: str,
        ttl_s: int,
        version: Version | str,
        run_id: str,
        actor: str,
        action: str,
        detail: str,
        where: str = "",
        *,
        extra: Mapping[str, str] | None = None,
    ) -> bool:
        """`audit`, unless the same `identity` (who, what, why) was audited in the last
        `ttl_s` seconds: a refusal repeated is recorded once, so that it cannot push real
        records out of the capped stream. True when written."""
        fields = _audit_fields(version, run_id, actor, action, detail, where, extra)
        written = await _AUDIT_ONCE(
            self.redis,
            [self.keys.audit_once(identity), self.keys.audit],
            [ttl_s, self.audit_maxlen, *(item for pair in fields for item in pair)],
        )
        return bool(written)

    async def audit_refusal(
        self, version: Version | str, run_id: str, actor: str, action: str, detail: str, where: str
    ) -> bool:
        """Audit a refused attempt (`action`, such as `approval-refused`) once per run,
        user and action (for as long as the run's detail is kept): 200 refused clicks by
        one user are one entry, so they cannot push real records out of the capped audit
        stream. True when this call wrote it."""
        identity = "\n".join(("refusal", str(version), run_id, actor, action))
        return await self.audit_once(
            identity, self.retention_seconds, version, run_id, actor, action, detail, where
        )

    # Reading --------------------------------------------------------------------------

    async def load(self, version: Version | str, run_id: str | None = None) -> Release | None:
        """The version's active run (or the given run, active or not) as one snapshot."""
        version = check_version(version)
        active = await self.redis.get(self.keys.active_run(version))
        run_id = run_id or (str(active) if active else None)
        if not run_id:
            return None
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(self.keys.run(version, run_id))
            pipe.hgetall(self.keys.builds(version, run_id))
            pipe.hgetall(self.keys.indexes(version, run_id))
            pipe.hgetall(self.keys.merges(version, run_id))
            pipe.hgetall(self.keys.approvals(version, run_id))
            pipe.hgetall(self.keys.promotions(version, run_id))
            pipe.get(self.keys.active_run(version))
            run, builds, indexes, merges, approvals, promotions, pointer = await pipe.execute()
        if not run:
            return None
        return _release(run, builds, indexes, merges, approvals, promotions, pointer == run_id)

    async def list_releases(self, limit: int = 50) -> list[Release]:
        """Active runs, most recently requested version first."""
        versions = await self.redis.zrevrange(self.keys.releases, 0, limit - 1)
        releases = []
        for version in versions:
            release = await self.load(str(version))
            if release is not None:
                releases.append(release)
        return releases

    async def run_ids(self, version: Version | str) -> list[str]:
        """Every run of `version`, oldest first."""
        version = str(version)
        return [str(r) for r in await self.redis.zrange(self.keys.runs(version), 0, -1)]

    async def record_progress(
        self,
        version: Version | str,
        run_id: str,
        component: str,
        platform: Platform | str | None,
        phase: str,
        step: int = 0,
        total: int = 0,
    ) -> None:
        """A progress event (what the live message shows between state changes); a
        control job's has no platform ("")."""
        version = str(version)
        await self.redis.xadd(
            self.keys.events,
            {
                "version": version,
                "run_id": run_id,
                "type": "progress",
                "component": component,
                "platform": str(platform) if platform else "",
                "phase": phase,
                "step": str(step),
                "total": str(total),
            },
            maxlen=self.events_maxlen,
            approximate=True,
        )

    async def events(
        self, after: str = "0-0", count: int = 100, block_ms: int | None = None
    ) -> list[ReleaseEvent]:
        """Events after stream id `after`, oldest first (for the notifier)."""
        reply: Any = await self.redis.xread({self.keys.events: after}, count=count, block=block_ms)
        out = []
        for _, entries in reply or []:
            for entry_id, fields in entries:
                out.append(
                    ReleaseEvent(
                        entry_id,
                        fields.get("version", ""),
                        fields.get("run_id", ""),
                        fields.get("type", ""),
                        dict(fields),
                    )
                )
        return out

    async def audit_entries(self, count: int = 100) -> list[dict[str, str]]:
        """The newest audit entries first, with their stream id as `id`."""
        entries: Any = await self.redis.xrevrange(self.keys.audit, count=count)
        return [{"id": entry_id, **fields} for entry_id, fields in entries]


class RecordFormatError(InvalidInput, ValueError):
    """A release record read back from Redis holding a value this code does not write
    (a version or platform outside the one grammar): refused, never passed on as text."""


def _stored_version(text: str) -> Version:
    try:
        return parse_version(text)
    except VersionError as error:
        raise RecordFormatError(f"the record's version is not one: {error}") from None


def _stored_platform(text: object) -> Platform:
    """A platform as the store writes it: in its one spelling, nothing else."""
    if not isinstance(text, str):
        raise RecordFormatError(f"the record's platform {text!r} is not text")
    try:
        return parse_platform(canonical_platform(text))
    except PlatformError as error:
        raise RecordFormatError(f"the record's platform is not one: {error}") from None


def _release(
    run: Mapping[str, str],
    builds: Mapping[str, str],
    indexes: Mapping[str, str],
    merges: Mapping[str, str],
    approvals: Mapping[str, str],
    promotions: Mapping[str, str],
    active: bool,
) -> Release:
    build_records: dict[tuple[str, Platform], BuildRecord] = {}
    for name, raw in builds.items():
        component, _, platform_text = name.partition("@")
        platform = _stored_platform(platform_text)
        data = json.loads(raw)
        log = data.get("log")
        build_records[(component, platform)] = BuildRecord(
            component=component,
            platform=platform,
            state=BuildState(data["state"]),
            digest=data.get("digest") or None,
            attempt=int(data.get("attempt") or 0),
            error=data.get("error") or "",
            # cjson writes an empty list as {}.
            log_tail=tuple(log) if isinstance(log, list) else (),
            updated_at=_ms(data.get("updated_at")),
            built_with=str(data.get("with") or ""),
        )
    index_records = {}
    for component, raw in indexes.items():
        data = json.loads(raw)
        index_records[component] = ComponentIndex(
            component, data["digest"], data["verdict"], data.get("detail", ""), _ms(data.get("at"))
        )
    approval_records = {}
    for user, raw in approvals.items():
        data = json.loads(raw)
        approval_records[user] = ApprovalRecord(user, _ms(data.get("at")), dict(data["digests"]))
    promotion_records = {}
    for target, raw in promotions.items():
        data = json.loads(raw)
        promotion_records[target] = PromotionResult(
            target, bool(data["ok"]), data["digest"], data.get("detail", ""), _ms(data.get("at"))
        )
    platforms = json.loads(run["platforms"])
    if not isinstance(platforms, list):
        raise RecordFormatError(f"the run's platforms {run['platforms'][:80]!r} are not a list")
    return Release(
        version=_stored_version(run["version"]),
        run_id=run["run_id"],
        state=State(run["state"]),
        state_reason=run.get("state_reason", ""),
        requested_by=run["requested_by"],
        channel=run["channel"],
        platforms=tuple(_stored_platform(p) for p in platforms),
        components=tuple(json.loads(run["components"])),
        source_ref=run["source_ref"],
        created_at=_ms(run.get("created_at")),
        updated_at=_ms(run.get("updated_at")),
        status_channel=run.get("status_channel", ""),
        status_ts=run.get("status_ts", ""),
        previous_run_id=run.get("previous_run_id", ""),
        supersede=run.get("supersede") == "1",
        active=active,
        builds=build_records,
        indexes=index_records,
        merges_claimed=frozenset(merges),
        approvals=approval_records,
        promotions=promotion_records,
        request_id=run.get("request_id", ""),
    )
