"""A worker's heartbeat: it announces itself in Redis (`jobs.store.fleet`) every third of
its TTL, and at once when it starts or ends a job, so `aibrix-bot workers`, `/aibrix
workers` and a waiting release see who is alive and what each one runs.

Beating never stops the worker: a Redis that is down is logged and tried again at the
next beat (the record then expires, which is the truth: nobody can reach the worker).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from importlib import metadata
from typing import Protocol

from redis.exceptions import RedisError

from jobs.domain.platforms import Platform
from jobs.store.fleet import Announcement, Fleet
from jobs.store.queue import Job, Queue
from jobs.tools.build import BuilderInfo

log = logging.getLogger("aibrix.heartbeat")

DEFAULT_TTL_SECONDS = 30.0


def package_version() -> str:
    try:
        return metadata.version("aibrix-release-bot")
    except metadata.PackageNotFoundError:
        return "unknown"


class Heartbeat:
    def __init__(self, fleet: Fleet, me: Announcement, ttl_seconds: float) -> None:
        if ttl_seconds <= 0:
            raise ValueError("the heartbeat TTL must be positive")
        self.fleet = fleet
        self.me = me
        self.ttl_seconds = ttl_seconds
        self._jobs: dict[int, str] = {}
        self._next = 0
        self._wake = asyncio.Event()

    @property
    def interval(self) -> float:
        return self.ttl_seconds / 3

    @property
    def jobs(self) -> tuple[str, ...]:
        return tuple(self._jobs.values())

    @contextlib.contextmanager
    def running(self, label: str) -> Iterator[None]:
        """While the block runs, the heartbeat names `label` as a current job."""
        slot, self._next = self._next, self._next + 1
        self._jobs[slot] = label
        self._wake.set()
        try:
            yield
        finally:
            del self._jobs[slot]
            self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Beat until `stop`, then leave the fleet."""
        while not stop.is_set():
            self._wake.clear()
            try:
                await self.fleet.beat(self.me, self.jobs, self.ttl_seconds)
            except (RedisError, OSError) as error:
                log.warning("heartbeat not recorded (%s)", type(error).__name__)
            waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
            try:
                await asyncio.wait(waits, timeout=self.interval, return_when="FIRST_COMPLETED")
            finally:
                for waiter in waits:
                    waiter.cancel()
        with contextlib.suppress(RedisError, OSError):
            await self.fleet.leave(self.me)


class WorkerIdentity(Protocol):
    """What a heartbeat needs of a worker's settings (`jobs.runtime.worker.WorkerSettings`)."""

    @property
    def worker_id(self) -> str: ...
    @property
    def platform(self) -> Platform: ...
    @property
    def builder(self) -> str | None: ...
    @property
    def control(self) -> bool: ...
    @property
    def heartbeat_ttl_s(self) -> float: ...


def worker_heartbeat(
    queue: Queue, settings: WorkerIdentity, builder: BuilderInfo | None
) -> Heartbeat:
    """The heartbeat of a worker that starts now, on its queue's Redis and key prefix;
    `builder`: the Buildx builder its start-up check found."""
    name = builder.name if builder is not None else (settings.builder or "")
    me = Announcement(
        settings.worker_id,
        settings.platform,
        package_version(),
        name,
        settings.control,
        time.time(),
    )
    return Heartbeat(Fleet(queue.redis, queue.keys), me, settings.heartbeat_ttl_s)


def job_label(kind: str, version: str, component: str) -> str:
    """How a heartbeat names a job: `build v0.3.0 runtime`."""
    return " ".join(part for part in (kind, version, component) if part)


def running(heartbeat: Heartbeat | None, job: Job) -> contextlib.AbstractContextManager[None]:
    """While a job runs, the heartbeat names it (nothing before the heartbeat exists)."""
    if heartbeat is None:
        return contextlib.nullcontext()
    return heartbeat.running(job_label(job.kind.value, str(job.version), job.component))
