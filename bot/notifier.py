"""Keeps each release's one Slack message current from the events stream.

A reader task follows `store.events(after, block_ms=...)` and marks releases dirty; a
flusher sends at most one chat.update per release per `interval` seconds (coalescing
every event in between), waits out `ratelimited` for its Retry-After, and posts one
thread reply per failed build with the tail of its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from redis.exceptions import RedisError
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot import blocks
from bot.follow import StepProgress, apply_event
from jobs.approvals import tally
from jobs.pipeline import Pipeline
from jobs.state import Release, ReleaseEvent, State

log = logging.getLogger("aibrix.notifier")

RunKey = tuple[str, str]  # (version, run_id)


@dataclass
class _Run:
    progress: dict[tuple[str, str], StepProgress] = field(default_factory=dict)
    dirty: bool = False
    last_sent: float = float("-inf")
    not_before: float = 0.0  # a Retry-After in force
    failures: list[tuple[str, str]] = field(default_factory=list)  # to reply in the thread
    replied: set[tuple[str, str]] = field(default_factory=set)


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


def render(pipeline: Pipeline, release: Release, run: _Run | None, now: float) -> blocks.Message:
    return blocks.release_message(
        release,
        run.progress if run else {},
        tally_text=tally_text(pipeline, release, now),
    )


class Notifier:
    def __init__(
        self,
        pipeline: Pipeline,
        client: AsyncWebClient,
        *,
        interval: float = 1.0,
        block_ms: int = 1000,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.pipeline = pipeline
        self.client = client
        self.interval = interval
        self.block_ms = block_ms
        self.clock = clock
        self.wall = wall
        self.runs: dict[RunKey, _Run] = {}
        self.after = "$"
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self.updates = 0  # chat.update calls that succeeded

    # -- lifecycle

    async def start(self) -> None:
        if self._tasks:
            return
        self.after = await self._last_event_id()
        self._tasks = [
            asyncio.create_task(self._read_loop(), name="notifier-read"),
            asyncio.create_task(self._flush_loop(), name="notifier-flush"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _last_event_id(self) -> str:
        try:
            newest = await self.pipeline.redis.xrevrange(self.pipeline.keys.events, count=1)
        except RedisError:
            return "0-0"
        return str(newest[0][0]) if newest else "0-0"

    # -- marking

    def touch(self, version: str, run_id: str) -> None:
        """Ask for the message of this run to be brought up to date."""
        self.runs.setdefault((version, run_id), _Run()).dirty = True
        self._wake.set()

    def observe(self, event: ReleaseEvent) -> None:
        if not event.version or not event.run_id:
            return
        run = self.runs.setdefault((event.version, event.run_id), _Run())
        apply_event(run.progress, event)
        if event.type == "build" and event.fields.get("build_state") == "failed":
            key = (event.fields.get("component", ""), event.fields.get("platform", ""))
            if key not in run.replied and key not in run.failures:
                run.failures.append(key)
        run.dirty = True
        self._wake.set()

    # -- loops

    async def _read_loop(self) -> None:
        while True:
            try:
                events = await self.pipeline.store.events(
                    self.after, count=500, block_ms=self.block_ms
                )
            except RedisError as error:
                log.warning("events stream unreadable (%s); retrying", type(error).__name__)
                await asyncio.sleep(1.0)
                continue
            for event in events:
                self.after = event.id
                self.observe(event)

    async def _flush_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.2):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except RedisError as error:
                log.warning("release unreadable (%s); retrying", type(error).__name__)
                await asyncio.sleep(0.5)

    async def flush(self) -> None:
        """Send what is due now: one update per dirty run whose interval has passed."""
        now = self.clock()
        for key, run in list(self.runs.items()):
            if not run.dirty or now < run.not_before or now - run.last_sent < self.interval:
                continue
            await self._flush_run(key, run)

    async def _flush_run(self, key: RunKey, run: _Run) -> None:
        version, run_id = key
        release = await self.pipeline.store.load(version, run_id)
        if release is None or not release.status_ts:
            return  # the message is not posted yet; its status_message event comes later
        run.dirty = False
        message = render(self.pipeline, release, run, self.wall())
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
                return
        run.last_sent = self.clock()
        await self._reply_failures(release, run)
        if release.state in (State.PROMOTED, State.FAILED, State.CANCELLED) and not run.dirty:
            self.runs.pop(key, None)

    async def _reply_failures(self, release: Release, run: _Run) -> None:
        while run.failures:
            component, platform = run.failures[0]
            record = release.builds.get((component, platform))
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
                    run.not_before = self.clock() + wait
                    run.dirty = True
                    return
                log.warning("thread reply failed: %s", error_.response.get("error"))
            run.failures.pop(0)
            run.replied.add((component, platform))
