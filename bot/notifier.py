"""Keeps each release's one Slack message current from the events stream.

A reader task follows `store.events(after, block_ms=...)` and marks releases dirty; a
flusher sends at most one chat.update per release per `interval` seconds (coalescing
every event in between), waits out `ratelimited` for its Retry-After, and posts one
thread reply per failed build with the tail of its log.

A sync asked from Slack has its own message (`sync` events name it, see
`jobs.usecases.sync_job`); the same loops keep it current, with the same coalescing, rate-limit
handling, cursor and lease.

Where it got to survives a restart: the flusher keeps, in one Redis key
(`Keys.notifier_cursor`), the events-stream id up to which every event has been shown,
and a new notifier reads on from there, so what happened while the bot was down still
reaches the messages. A clean stop first flushes what is pending. After a crash, the
events after that id are read again (thread replies are claimed in Redis, so none is
repeated); without a cursor (a first start), the notifier starts at the newest event.

The leader also posts the live message of any run left without one (an outbox in Redis,
driven by state: a bot killed while posting it, see `handlers.live_message`), so every live
release can be approved from Slack.

With several bot replicas (the chart runs two), every notifier reads the events but only
the one holding the lease (`Keys.notifier_leader`, renewed each turn, LEASE_MS) sends
updates and saves the cursor: one chat.update per change, not one per replica. When the
leader stops, it hands the lease back; when it dies, another takes over once it expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import ClientError
from redis.exceptions import RedisError
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from handlers import blocks
from handlers.live_message import needs_live_message, post_live_message
from jobs.domain.approvals import tally
from jobs.domain.fleet import WAITING_STATES, release_gaps
from jobs.domain.progress import StepProgress, apply_event
from jobs.domain.release import Release, ReleaseEvent, State
from jobs.store.fleet import Fleet
from jobs.store.notices import NoticeStore
from jobs.usecases.pipeline import Pipeline

# States after which a run's message never changes again.
_FINISHED = frozenset({State.PROMOTED, State.FAILED, State.CANCELLED})
log = logging.getLogger("aibrix.notifier")

RunKey = tuple[str, str]  # (version, run_id)

_STREAM_ID = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}\Z")
STOP_FLUSH_SECONDS = 5.0  # how long a clean stop may spend showing what is pending
LEASE_MS = 10_000  # how long a silent leader keeps the lease (the failover delay)
OUTBOX_INTERVAL = 1.0  # how often the leader looks for runs whose message is missing
OUTBOX_BACKOFF = 60.0  # after Slack refused a live message, before trying it again
# How often the leader re-reads the fleet for messages of runs waiting on builds: a worker
# that dies while a release waits changes no event, yet the message must say so.
FLEET_RECHECK = 10.0


def stream_id_key(stream_id: str) -> tuple[int, int]:
    """A Redis stream id as a sortable pair ("1700000000000-3" -> (1700000000000, 3))."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def valid_stream_id(text: object) -> str | None:
    return text if isinstance(text, str) and _STREAM_ID.match(text) else None


def safe_cursor(read_up_to: str, unshown_after: list[str]) -> str:
    """The stream id up to which every event has been shown: where reading got to, unless
    a run still waits to show an event, then just before that run's first unshown event."""
    if not unshown_after:
        return read_up_to
    return min(unshown_after, key=stream_id_key)


@dataclass
class _Run:
    progress: dict[tuple[str, str], StepProgress] = field(default_factory=dict)
    dirty: bool = False
    last_sent: float = float("-inf")
    not_before: float = 0.0  # a Retry-After in force
    failures: list[tuple[str, str]] = field(default_factory=list)  # to reply in the thread
    replied: set[tuple[str, str]] = field(default_factory=set)
    # The stream id just before this run's first event not yet shown (None: all shown).
    unshown_after: str | None = None
    # The fleet sentences the message shows ("no linux/arm64 worker ..."); waiting: the
    # message is of a run whose builds may wait for a worker (re-read every FLEET_RECHECK).
    notes: tuple[str, ...] = ()
    waiting: bool = False


@dataclass
class _SyncView:
    """A sync message waiting for its next update."""

    dirty: bool = False
    last_sent: float = float("-inf")
    not_before: float = 0.0
    unshown_after: str | None = None


def retry_after(error: SlackApiError, default: float = 1.0) -> float | None:
    """Seconds to wait if `error` is Slack's rate limit, else None."""
    if error.response.get("error") != "ratelimited" and error.response.status_code != 429:
        return None
    raw = error.response.headers.get("Retry-After") or error.response.headers.get("retry-after")
    try:
        return max(0.0, float(raw)) if raw is not None else default
    except (TypeError, ValueError):
        return default


def tally_text(pipeline: Pipeline, release: Release, now: float) -> str:
    if release.state not in (State.READY, State.APPROVED, State.PROMOTING, State.PROMOTED):
        return ""
    verified = {c: i.digest for c, i in release.indexes.items()}
    counted = tally(
        pipeline.config.approval, release.approvals, verified, now, release.requested_by
    )
    return counted.text()


def render(
    pipeline: Pipeline,
    release: Release,
    run: _Run | None,
    now: float,
    notes: tuple[str, ...] = (),
) -> blocks.Message:
    return blocks.release_message(
        release,
        run.progress if run else {},
        tally_text=tally_text(pipeline, release, now),
        notes=notes,
    )


class Notifier:
    def __init__(
        self,
        pipeline: Pipeline,
        notices: NoticeStore,
        client: AsyncWebClient,
        *,
        interval: float = 1.0,
        block_ms: int = 1000,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        fleet: Fleet | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.fleet = fleet
        self._fleet_due = float("-inf")
        self.notices = notices
        self.client = client
        self.interval = interval
        self.block_ms = block_ms
        self.clock = clock
        self.wall = wall
        self.runs: dict[RunKey, _Run] = {}
        self.syncs: dict[str, _SyncView] = {}  # by sync (job) id
        self.after: str | None = None  # None until the resume point is read from Redis
        self.saved: str | None = None  # the cursor as last written to Redis
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._stopping = False
        self.updates = 0  # chat.update calls that succeeded
        self.instance = uuid.uuid4().hex  # this notifier's name on the lease
        self.leading = False
        self._outbox_due = float("-inf")
        self._outbox_backoff: dict[str, float] = {}  # outbox member -> not before

    # -- lifecycle

    async def start(self) -> None:
        if self._tasks:
            return
        self._stopping = False
        with contextlib.suppress(RedisError):
            self.after = await self._resume_point()  # else the read loop tries again
        self._tasks = [
            asyncio.create_task(self._read_loop(), name="notifier-read"),
            asyncio.create_task(self._flush_loop(), name="notifier-flush"),
        ]

    async def stop(self) -> None:
        """Stop reading, show what is pending (briefly), and remember where it got to."""
        # A cancel that lands while an asyncio.timeout inside a loop expires can be
        # swallowed (Python 3.11); the flag ends each loop at its next turn regardless.
        self._stopping = True
        self._wake.set()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=STOP_FLUSH_SECONDS)
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.warning("notifier task ended with %r", task.exception())
        if self._tasks:
            self._tasks = []
            try:
                async with asyncio.timeout(STOP_FLUSH_SECONDS):
                    if await self.lead():
                        await self.flush(force=True)
                        await self.save_cursor()
                        await self.resign()
            except (RedisError, SlackApiError, ClientError, OSError, TimeoutError) as error:
                log.warning("pending updates not all shown at stop (%s)", type(error).__name__)

    async def lead(self) -> bool:
        """Take or renew the lease; True while this notifier is the one that sends."""
        won = await self.notices.lead(self.instance, LEASE_MS)
        if bool(won) and not self.leading:
            log.info("this bot now sends the release messages' updates")
            for run in self.runs.values():  # what the previous leader may not have shown
                run.dirty = True
            for view in self.syncs.values():
                view.dirty = True
        self.leading = bool(won)
        return self.leading

    async def resign(self) -> None:
        await self.notices.resign(self.instance)
        self.leading = False

    async def _resume_point(self) -> str:
        """The saved cursor, else the newest event (a first start shows nothing old)."""
        saved = valid_stream_id(await self.notices.saved_cursor())
        if saved is None:
            saved = await self.notices.newest_event_id() or "0-0"
        # Nothing to write until an event is shown: a restart would start here anyway.
        self.saved = saved
        return saved

    def cursor(self) -> str | None:
        """Where every event has been shown up to, from what is in memory now."""
        if self.after is None:
            return None
        pending = [r.unshown_after for r in self.runs.values() if r.unshown_after is not None]
        pending += [v.unshown_after for v in self.syncs.values() if v.unshown_after is not None]
        return safe_cursor(self.after, pending)

    async def save_cursor(self) -> None:
        cursor = self.cursor()
        if cursor is None or cursor == self.saved:
            return
        await self.notices.save_cursor(cursor)
        self.saved = cursor

    # -- marking

    def touch(self, version: str, run_id: str) -> None:
        """Ask for the message of this run to be brought up to date."""
        self.runs.setdefault((version, run_id), _Run()).dirty = True
        self._wake.set()

    def up_to_date(self, version: str, run_id: str) -> bool:
        """Whether the run's message shows all this notifier has seen of it (nothing marked
        to send, no Retry-After holding an update back)."""
        run = self.runs.get((version, run_id))
        return run is None or not run.dirty

    def touch_sync(self, sync_id: str) -> None:
        """Ask for a sync's message to be brought up to date."""
        self.syncs.setdefault(sync_id, _SyncView()).dirty = True
        self._wake.set()

    def observe(self, event: ReleaseEvent, before: str | None = None) -> None:
        """Take in one event; `before` is the stream id read up to just before it."""
        if event.type == "sync":
            sync_id = event.fields.get("sync", "")
            if sync_id:
                view = self.syncs.setdefault(sync_id, _SyncView())
                if view.unshown_after is None and before is not None:
                    view.unshown_after = before
                view.dirty = True
                self._wake.set()
            return
        if not event.version or not event.run_id:
            return
        run = self.runs.setdefault((event.version, event.run_id), _Run())
        if run.unshown_after is None and before is not None:
            run.unshown_after = before
        apply_event(run.progress, event)
        if event.type == "build" and event.fields.get("build_state") == "failed":
            key = (event.fields.get("component", ""), event.fields.get("platform", ""))
            if key not in run.replied and key not in run.failures:
                run.failures.append(key)
        run.dirty = True
        self._wake.set()

    # -- loops

    async def _read_loop(self) -> None:
        while not self._stopping:
            try:
                if self.after is None:
                    self.after = await self._resume_point()
                events = await self.pipeline.events(self.after, count=500, block_ms=self.block_ms)
            except RedisError as error:
                log.warning("events stream unreadable (%s); retrying", type(error).__name__)
                await asyncio.sleep(1.0)
                continue
            if self._stopping:
                return  # what was read after the stop began is read again next start
            for event in events:
                before, self.after = self.after, event.id
                self.observe(event, before)

    async def _flush_loop(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.2):
                    await self._wake.wait()
            self._wake.clear()
            try:
                if await self.lead():
                    await self.drain_outbox()
                    await self.recheck_fleet()
                    await self.flush()
                    await self.save_cursor()
            except (RedisError, ClientError) as error:
                log.warning("update not sent (%s); retrying", type(error).__name__)
                await asyncio.sleep(0.5)

    async def drain_outbox(self, *, force: bool = False) -> int:
        """Post the live message of every run still in the outbox (its poster died, or
        Slack refused it), at most every OUTBOX_INTERVAL seconds (`force`: now); how
        many were posted. Each post is claimed (see `handlers.live_message`)."""
        now = self.clock()
        if not force and now < self._outbox_due:
            return 0
        self._outbox_due = now + OUTBOX_INTERVAL
        posted = 0
        for member in await self.notices.outbox():
            if now < self._outbox_backoff.get(member, 0.0):
                continue
            version, _, run_id = member.partition(" ")
            try:
                release = await self.pipeline.find_run(version, run_id)
            except ValueError:
                release = None  # not a run id this code wrote
            if release is None or not needs_live_message(release):
                await self.notices.leave_outbox(member)
                continue
            try:
                ts = await post_live_message(self.pipeline, self.notices, self.client, release)
            except SlackApiError as error:
                wait = retry_after(error)
                if wait is None:
                    log.warning(
                        "live message of %s not posted: %s", version, error.response.get("error")
                    )
                    wait = OUTBOX_BACKOFF
                self._outbox_backoff[member] = self.clock() + wait
                continue
            if ts is not None:
                self._outbox_backoff.pop(member, None)
                posted += 1
                self.touch(version, run_id)
        return posted

    async def _fleet_notes(self, release: Release) -> tuple[str, ...]:
        """What the message says of platforms it waits for with no live worker."""
        if self.fleet is None or release.state not in WAITING_STATES:
            return ()
        try:
            view = await self.fleet.view()
        except RedisError as error:
            log.warning("fleet not read (%s)", type(error).__name__)
            return ()
        return tuple(release_gaps(release, view))

    async def recheck_fleet(self, *, force: bool = False) -> int:
        """Every FLEET_RECHECK seconds (`force`: now), mark dirty each waiting run whose
        fleet sentences changed (a worker died or came back); how many were marked."""
        now = self.clock()
        if self.fleet is None or (not force and now < self._fleet_due):
            return 0
        self._fleet_due = now + FLEET_RECHECK
        marked = 0
        for (version, run_id), run in list(self.runs.items()):
            if run.dirty or not run.waiting:
                continue
            release = await self.pipeline.find_run(version, run_id)
            if release is None or not release.status_ts:
                continue
            if await self._fleet_notes(release) != run.notes:
                run.dirty = True
                marked += 1
        return marked

    async def flush(self, *, force: bool = False) -> None:
        """Send what is due now: one update per dirty run whose interval has passed (with
        `force`, every dirty run not held back by a Retry-After)."""
        now = self.clock()
        for key, run in list(self.runs.items()):
            if not run.dirty or now < run.not_before:
                continue
            if not force and now - run.last_sent < self.interval:
                continue
            await self._flush_run(key, run)
        for sync_id, view in list(self.syncs.items()):
            if not view.dirty or now < view.not_before:
                continue
            if not force and now - view.last_sent < self.interval:
                continue
            await self._flush_sync(sync_id, view)

    async def _flush_sync(self, sync_id: str, view: _SyncView) -> None:
        unshown, view.unshown_after = view.unshown_after, None
        view.dirty = False
        try:
            record = await self.pipeline.find_sync(sync_id)
            if record is None or not record.status_ts:
                # Not posted yet (set_sync_message touches it), or expired.
                if record is None:
                    self.syncs.pop(sync_id, None)
                return
            message = blocks.sync_message(record)
            await self.client.chat_update(
                channel=record.status_channel,
                ts=record.status_ts,
                text=message.text,
                blocks=message.blocks,
            )
            self.updates += 1
        except SlackApiError as error:
            wait = retry_after(error)
            if wait is None:
                log.warning("chat.update of a sync failed: %s", error.response.get("error"))
                return
            view.dirty = True
            view.not_before = self.clock() + wait
            view.unshown_after = _earlier(unshown, view.unshown_after)
            return
        except BaseException:
            view.dirty = True
            view.unshown_after = _earlier(unshown, view.unshown_after)
            raise
        view.last_sent = self.clock()
        if record.finished and not view.dirty:
            self.syncs.pop(sync_id, None)

    async def _flush_run(self, key: RunKey, run: _Run) -> None:
        version, run_id = key
        unshown, run.unshown_after = run.unshown_after, None
        try:
            release = await self.pipeline.find_run(version, run_id)
        except BaseException:
            run.unshown_after = _earlier(unshown, run.unshown_after)
            raise
        if release is None or not release.status_ts:
            # Nothing to show (no message posted yet, or a release from the command line):
            # its events need no replay; posting the message shows the whole run. Not
            # dirty any more, or it would be reloaded on every flush: its next event, or
            # touch() when the message is posted, wakes it again.
            run.dirty = False
            if release is None or release.state in _FINISHED:
                self.runs.pop(key, None)
            return
        run.dirty = False
        run.notes = await self._fleet_notes(release)
        run.waiting = release.state in WAITING_STATES
        message = render(self.pipeline, release, run, self.wall(), run.notes)
        try:
            await self.client.chat_update(
                channel=release.status_channel,
                ts=release.status_ts,
                text=message.text,
                blocks=message.blocks,
            )
            self.updates += 1
        except SlackApiError as error:
            wait = retry_after(error)
            if wait is None:
                log.warning("chat.update of %s failed: %s", version, error.response.get("error"))
            else:
                run.dirty = True
                run.not_before = self.clock() + wait
                run.unshown_after = _earlier(unshown, run.unshown_after)
                return
        except BaseException:
            run.dirty = True
            run.unshown_after = _earlier(unshown, run.unshown_after)
            raise
        run.last_sent = self.clock()
        if not await self._reply_failures(release, run):
            run.unshown_after = _earlier(unshown, run.unshown_after)
        if release.state in _FINISHED and not run.dirty:
            self.runs.pop(key, None)

    async def _reply_failures(self, release: Release, run: _Run) -> bool:
        """Reply in the thread for each new failure, once across every notifier (the chart
        runs two bot replicas; a restart replays events); False when Slack said to wait.

        Each reply is claimed in Redis before it is posted: after a crash between the
        two, that reply is missing rather than doubled (the message still shows the
        failure)."""
        version, run_id = release.version, release.run_id
        while run.failures:
            component, platform = run.failures[0]
            member = f"{component}@{platform}"
            if not await self.notices.claim_failure_reply(version, run_id, member):
                run.failures.pop(0)  # another notifier replied, or this one before a restart
                run.replied.add((component, platform))
                continue
            # The event names the platform as text; the run's records hold Platform values.
            record = next(
                (
                    r
                    for r in release.builds.values()
                    if r.component == component and str(r.platform) == platform
                ),
                None,
            )
            error = record.error if record else ""
            tail = record.log_tail if record else ()
            reply = blocks.failure_reply(component, platform, error or "no reason recorded", tail)
            try:
                await self.client.chat_postMessage(
                    channel=release.status_channel,
                    thread_ts=release.status_ts,
                    text=reply.text,
                    blocks=reply.blocks,
                )
            except SlackApiError as error_:
                wait = retry_after(error_)
                if wait is not None:
                    await self.notices.release_failure_reply(
                        version, run_id, member
                    )  # to be sent later
                    run.not_before = self.clock() + wait
                    run.dirty = True
                    return False
                log.warning("thread reply failed: %s", error_.response.get("error"))
            except Exception:
                await self.notices.release_failure_reply(
                    version, run_id, member
                )  # not sent: the flush retries
                raise
            run.failures.pop(0)
            run.replied.add((component, platform))
        return True


def _earlier(a: str | None, b: str | None) -> str | None:
    if a is None or b is None:
        return a if b is None else b
    return min(a, b, key=stream_id_key)
