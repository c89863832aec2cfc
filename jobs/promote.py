"""Promotion: write the configured promotion tags of an approved run from its verified
index digests, read each back, record the outcome, and settle promoting -> promoted.

Run by a worker for a `JobKind.PROMOTE` job on the control stream. Safe to run again
for the same run (a redelivery): written targets are skipped, the transitions are
compare-and-set.
"""

from __future__ import annotations

import asyncio
import logging

from bot import messages
from jobs.merge import MergeError, write_index
from jobs.pipeline import Pipeline
from jobs.queue import Job, JobKind
from jobs.references import parse_reference
from jobs.registry import RegistryClient, RegistryError
from jobs.state import Release, State
from jobs.versions import parse_version

log = logging.getLogger("aibrix.promote")

PROMOTE_COMPONENT = "all"


def promote_job(release: Release) -> Job:
    return Job(
        JobKind.PROMOTE,
        release.version,
        PROMOTE_COMPONENT,
        release.source_ref,
        run_id=release.run_id,
    )


async def _read_digest(client: RegistryClient, target: str) -> str | None:
    try:
        manifest = await client.get_manifest(parse_reference(target))
    except RegistryError:
        return None
    return manifest.digest


async def promote(pipeline: Pipeline, job: Job, client: RegistryClient) -> State | None:
    """Promote the run `job` names; returns where it ended (None: nothing to do)."""
    store = pipeline.store
    config = pipeline.config
    release = await store.load(job.release, job.run_id)
    if release is None:
        return None
    if release.state is State.APPROVED:
        await store.transition(job.release, job.run_id, [State.APPROVED], State.PROMOTING)
        release = await store.load(job.release, job.run_id)
        if release is None:
            return None
    if release.state is not State.PROMOTING:
        log.info("%s is %s; not promoting", job.release, release.state)
        return None
    tags = config.promotion_tags_for(parse_version(release.version))
    failures: list[str] = []
    for component in release.components:
        index = release.indexes[component]
        image = config.image(component)
        for tag in tags:
            target = f"{image}:{tag}"
            done = release.promotions.get(target)
            if done is not None and done.ok:
                continue
            try:
                await asyncio.to_thread(write_index, image, tag, [f"{image}@{index.digest}"])
                got = await _read_digest(client, target)
            except MergeError as error:
                got, detail = None, str(error)
            else:
                detail = "" if got == index.digest else f"it reads back as {got or 'nothing'}"
            ok = got == index.digest
            await store.record_promotion(
                job.release, job.run_id, target, ok=ok, digest=got or "", detail=detail
            )
            if not ok:
                failures.append(messages.promotion_failed(target, detail))
    if failures:
        await store.transition(
            job.release, job.run_id, [State.PROMOTING], State.FAILED, reason="; ".join(failures)
        )
        return State.FAILED
    reason = "" if tags else messages.promotion_none(release.version)
    await store.transition(
        job.release, job.run_id, [State.PROMOTING], State.PROMOTED, reason=reason
    )
    return State.PROMOTED
