"""A sync of a release to a mirror asked from Slack: a job on the control stream, run by
a worker with the one copy engine (`jobs.usecases.sync.sync_release`), never in the bot process.

    job = sync_job(release, "lab-mirror", decision.digests, user, channel, decision.mode)
    outcome = await request_sync(syncs, job, location)  # added, or the one running
    ... a worker: await run_sync(syncs, lease_job, client, deliveries=..., ...)

`syncs` is a `SyncJobs`: the release store (for the audit), the sync records, the job
queue and the config, handed to the Slack handlers in `Deps`; the worker and the
notifier reach the same operations through the pipeline (`Pipeline.run_sync`, ...).

One sync of a version to a mirror at a time: the job's idempotency key is the version,
run and mirror (the queue holds one pending job per key, atomically), and it is acked
without a done record, so a later request may sync again (what is there is skipped).

Its record (`Keys.sync(job id)`, a hash with a TTL) holds who asked, what may be copied
(the approved, or for an approver's `--ready` sync the verified, digests), the live
message's place, and the progress the worker writes while it copies; each write appends
a `sync` event to the events stream, which the notifier follows to keep the message
current. The copy is gated on those digests: a source tag that moved is refused with
the drift sentence, and only the digests judged are copied.

A worker killed mid-copy leaves the job in its stream's pending list; once the lease
expires another worker reclaims it and runs it again: components whose mirror tag holds
the digest are up to date, and blobs and child manifests already on the mirror are
skipped (the engine HEADs each before copying), so the resumed run sends only what is
missing. The mirror tag is written last, after its content.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any

import redis.asyncio as aioredis

from jobs.domain import messages
from jobs.domain.config import Config
from jobs.domain.release import Release
from jobs.domain.sync_gate import SyncMode
from jobs.domain.sync_report import ComponentReport, ComponentStatus, ProgressEvent, ProgressKind
from jobs.domain.sync_request import Mirror
from jobs.registry.client import RegistryClient
from jobs.store.keys import Keys
from jobs.store.queue import EnqueueResult, Job, JobKind, Queue
from jobs.store.releases import ReleaseStore
from jobs.store.syncs import SyncRecords
from jobs.usecases.sync import sync_release

log = logging.getLogger("aibrix.sync")

PROGRESS_INTERVAL_S = 0.5  # at most this often a running sync writes its progress
COMPONENT_PREFIX = "sync-to-"


@dataclass(frozen=True)
class SyncJobs:
    """What the sync jobs' operations work on (see the module docstring)."""

    store: ReleaseStore
    records: SyncRecords
    queue: Queue
    config: Config


def sync_jobs(redis: aioredis.Redis, config: Config, store: ReleaseStore, queue: Queue) -> SyncJobs:
    """The sync jobs on `redis` (beside `store` and `queue`), as `config` names the
    mirrors."""
    records = SyncRecords(redis, Keys(config.queue.key_prefix), events_maxlen=store.events_maxlen)
    return SyncJobs(store, records, queue, config)


class SyncState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SYNCED = "synced"
    FAILED = "failed"
    REFUSED = "refused"  # the gate: a source tag moved, or a mirror tag holds another digest


FINISHED = frozenset({SyncState.SYNCED, SyncState.FAILED, SyncState.REFUSED})


@dataclass(frozen=True)
class SyncComponent:
    component: str
    status: str
    digest: str
    detail: str = ""
    blobs_copied: int = 0
    blobs_skipped: int = 0


@dataclass(frozen=True)
class SyncRecord:
    id: str
    version: str
    run_id: str
    mirror: str
    location: str
    requested_by: str
    channel: str
    mode: str
    digests: Mapping[str, str]
    state: SyncState
    status_channel: str = ""
    status_ts: str = ""
    components_total: int = 0
    components_done: int = 0
    bytes_planned: int = 0
    bytes_sent: int = 0
    deliveries: int = 0
    resumed: bool = False
    detail: str = ""
    results: tuple[SyncComponent, ...] = ()

    @property
    def finished(self) -> bool:
        return self.state in FINISHED


def sync_job(
    release: Release,
    mirror: str,
    digests: Mapping[str, str],
    requested_by: str,
    channel: str,
    mode: SyncMode,
) -> Job:
    """The job of syncing `release` (its digests `digests`) to the configured `mirror`."""
    return Job(
        JobKind.SYNC,
        release.version,
        f"{COMPONENT_PREFIX}{mirror}",
        release.source_ref,
        run_id=release.run_id,
        payload={
            "mirror": mirror,
            "mode": mode.value,
            "requested_by": requested_by,
            "channel": channel,
            "digests": json.dumps(dict(digests), sort_keys=True),
        },
    )


def _record_fields(job: Job, location: str) -> dict[str, str]:
    digests = json.loads(job.payload["digests"])
    return {
        "id": job.id,
        "version": str(job.version),
        "run_id": job.run_id,
        "mirror": job.payload["mirror"],
        "location": location,
        "requested_by": job.payload["requested_by"],
        "channel": job.payload["channel"],
        "mode": job.payload["mode"],
        "digests": job.payload["digests"],
        "state": SyncState.QUEUED.value,
        "components_total": str(len(digests)),
        "components_done": "0",
        "bytes_planned": "0",
        "bytes_sent": "0",
        "deliveries": "0",
        "resumed": "0",
        "results": "[]",
    }


def _record(fields: Mapping[str, str]) -> SyncRecord:
    results = tuple(
        SyncComponent(
            str(r.get("component", "")),
            str(r.get("status", "")),
            str(r.get("digest", "")),
            str(r.get("detail", "")),
            int(r.get("blobs_copied", 0)),
            int(r.get("blobs_skipped", 0)),
        )
        for r in json.loads(fields.get("results") or "[]")
    )
    return SyncRecord(
        id=fields["id"],
        version=fields["version"],
        run_id=fields["run_id"],
        mirror=fields["mirror"],
        location=fields.get("location", ""),
        requested_by=fields["requested_by"],
        channel=fields["channel"],
        mode=fields["mode"],
        digests=MappingProxyType(json.loads(fields["digests"])),
        state=SyncState(fields["state"]),
        status_channel=fields.get("status_channel", ""),
        status_ts=fields.get("status_ts", ""),
        components_total=int(fields.get("components_total") or 0),
        components_done=int(fields.get("components_done") or 0),
        bytes_planned=int(fields.get("bytes_planned") or 0),
        bytes_sent=int(fields.get("bytes_sent") or 0),
        deliveries=int(fields.get("deliveries") or 0),
        resumed=fields.get("resumed") == "1",
        detail=fields.get("detail", ""),
        results=results,
    )


async def load_sync(syncs: SyncJobs, sync_id: str) -> SyncRecord | None:
    fields = await syncs.records.fields(sync_id)
    if not fields or "id" not in fields:
        return None
    return _record(fields)


async def _write(
    syncs: SyncJobs, sync_id: str, version: str, run_id: str, fields: Mapping[str, str]
) -> None:
    """Update the record and tell the notifier, in one round trip."""
    await syncs.records.update(sync_id, version, run_id, fields)


@dataclass(frozen=True)
class SyncRequested:
    """`added`: this request's job is queued; else `existing` is the sync already queued
    or running for the version and mirror (None if its record is gone)."""

    added: bool
    record: SyncRecord | None
    enqueued: EnqueueResult


async def request_sync(syncs: SyncJobs, job: Job, location: str) -> SyncRequested:
    """Record and queue `job`, unless a sync of the same version to the same mirror is
    queued or running: then nothing of this request is left behind."""
    # The record first, so a worker that claims the job at once finds it.
    await syncs.records.create(job.id, _record_fields(job, location))
    enqueued = await syncs.queue.enqueue(job)
    if enqueued.added:
        return SyncRequested(True, await load_sync(syncs, job.id), enqueued)
    await syncs.records.delete(job.id)
    return SyncRequested(False, await load_sync(syncs, enqueued.job_id), enqueued)


async def set_sync_message(syncs: SyncJobs, record: SyncRecord, channel: str, ts: str) -> None:
    await _write(
        syncs,
        record.id,
        record.version,
        record.run_id,
        {"status_channel": channel, "status_ts": ts},
    )


# ---- the worker's side --------------------------------------------------------------


class _Tracker:
    """Collects the engine's progress events (called in the event loop, synchronously)."""

    def __init__(self) -> None:
        self.planned: dict[str, int] = {}
        self.sent = 0
        self.done: dict[str, ComponentReport] = {}
        self.changed = asyncio.Event()

    def __call__(self, event: ProgressEvent) -> None:
        if event.kind is ProgressKind.PLANNED:
            self.planned[event.component] = event.total
        elif event.kind is ProgressKind.BYTES:
            self.sent += event.delta
        elif event.kind is ProgressKind.DONE and event.report is not None:
            self.done[event.component] = event.report
        self.changed.set()

    def fields(self) -> dict[str, str]:
        return {
            "components_done": str(len(self.done)),
            "bytes_planned": str(sum(self.planned.values())),
            "bytes_sent": str(max(0, self.sent)),
            "results": json.dumps([_result(r) for r in self.done.values()]),
        }


def _result(report: ComponentReport) -> dict[str, Any]:
    notes = [report.reason] if report.reason else []
    if report.blobs.external:
        notes.append(
            messages.sync_layers_left_out(report.blobs.external, report.blobs.external_bytes)
        )
    return {
        "component": report.component,
        "status": report.status.value,
        "digest": report.final_digest or "",
        "detail": "; ".join(notes),
        "blobs_copied": report.blobs.copied + report.blobs.mounted,
        "blobs_skipped": report.blobs.skipped,
    }


async def _report_progress(
    syncs: SyncJobs, record: SyncRecord, tracker: _Tracker, stop: asyncio.Event
) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(PROGRESS_INTERVAL_S):
                await tracker.changed.wait()
        if tracker.changed.is_set():
            tracker.changed.clear()
            await _write(syncs, record.id, record.version, record.run_id, tracker.fields())
            await asyncio.sleep(PROGRESS_INTERVAL_S)  # coalesce: one write per interval


def _outcome(statuses: list[ComponentStatus], gate_passed: bool) -> SyncState:
    if not gate_passed or ComponentStatus.REFUSED in statuses:
        return SyncState.REFUSED
    if all(s in (ComponentStatus.COPIED, ComponentStatus.UP_TO_DATE) for s in statuses):
        return SyncState.SYNCED
    return SyncState.FAILED


async def run_sync(
    syncs: SyncJobs,
    job: Job,
    client: RegistryClient,
    *,
    deliveries: int,
    reclaimed: bool,
    worker: str,
) -> SyncState | None:
    """Run a sync job to its end: copy the recorded digests with the engine, keep the
    record (and so the live message) current, record and audit the outcome. None: the
    record is gone or already finished (a redelivery after the end), nothing done."""
    record = await load_sync(syncs, job.id)
    if record is None or record.finished:
        log.info("sync %s has no open record; nothing to do", job.id)
        return None
    config = syncs.config
    location = config.mirrors.get(record.mirror)
    if location is None:
        detail = messages.sync_mirror_names_only(record.mirror, sorted(config.mirrors))
        return await _finish(syncs, record, SyncState.REFUSED, detail)
    await _write(
        syncs,
        record.id,
        record.version,
        record.run_id,
        {
            "state": SyncState.RUNNING.value,
            "deliveries": str(deliveries),
            "resumed": "1" if reclaimed or deliveries > 1 else "0",
            "worker": worker,
            "bytes_sent": "0",
        },
    )
    tracker = _Tracker()
    stop = asyncio.Event()
    reporter = asyncio.create_task(_report_progress(syncs, record, tracker, stop))
    try:
        report = await sync_release(
            client,
            config,
            job.version,  # the record's own version: the record is this job's
            [Mirror(record.mirror, location)],
            components=list(record.digests),
            expected_digests=record.digests,
            progress=tracker,
        )
    finally:
        stop.set()
        tracker.changed.set()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
    components = [c for m in report.mirrors for c in m.components]
    state = _outcome([c.status for c in components], report.gate_passed)
    if not report.gate_passed:
        sentences = [s for problem in report.gate for s in problem.sentences]
        detail = messages.sync_refused_moved(record.version, sentences)
    else:
        detail = "; ".join(c.reason for c in components if c.reason)
    tracker.done.update({c.component: c for c in components})
    await _write(syncs, record.id, record.version, record.run_id, tracker.fields())
    return await _finish(syncs, record, state, detail)


async def _finish(syncs: SyncJobs, record: SyncRecord, state: SyncState, detail: str) -> SyncState:
    # Audited first: a crash between the two writes leaves the job to be delivered again
    # and audited twice, never a finished sync without its entry; and whoever sees the
    # record finished finds the entry already there.
    await syncs.store.audit(
        record.version,
        record.run_id,
        record.requested_by,
        f"sync-{state.value}",
        detail[:1000],
        "worker",
        extra={"mirror": record.mirror, "outcome": state.value, "mode": record.mode},
    )
    await _write(
        syncs,
        record.id,
        record.version,
        record.run_id,
        {"state": state.value, "detail": detail[:4000]},
    )
    log.info("sync %s of %s to %s: %s", record.id, record.version, record.mirror, state)
    return state


async def fail_sync(syncs: SyncJobs, job: Job, error: str) -> None:
    """Record a sync that stopped on an unexpected error (the job is retried, or
    dead-lettered, by the queue; a new request resumes it)."""
    record = await load_sync(syncs, job.id)
    if record is not None and not record.finished:
        await _finish(syncs, record, SyncState.FAILED, messages.sync_failed_unexpectedly(error))


REFUSAL_AUDIT_TTL_S = 3600  # one audit entry per user, version, mirror and reason an hour


async def record_sync_refusal(
    syncs: SyncJobs,
    version: str,
    run_id: str,
    mirror: str,
    mode: str,
    user: str,
    where: str,
    reason: str,
) -> None:
    """A refused sync, in the audit stream: who, the mirror, why (once per hour each)."""
    await syncs.store.audit_once(
        f"sync-refused|{user}|{version}|{mirror}|{reason}",
        REFUSAL_AUDIT_TTL_S,
        version,
        run_id,
        user,
        "sync-refused",
        reason[:1000],
        where,
        extra={"mirror": mirror, "outcome": "refused", "mode": mode},
    )


async def record_sync_request(
    syncs: SyncJobs, release: Release, job: Job, mirror: str, mode: str, user: str, where: str
) -> None:
    """A queued sync, in the audit stream."""
    await syncs.store.audit(
        release.version,
        release.run_id,
        user,
        "sync-requested",
        f"job {job.id}",
        where,
        extra={"mirror": mirror, "outcome": "queued", "mode": mode},
    )
