"""Promotion: write the configured promotion tags of an approved run from its verified
index digests, read each back, copy the release to the promotion mirrors with the sync
engine (gated on those same digests), record every outcome, and settle promoting ->
promoted.

A promotion mirror whose tag already holds a different digest is not overwritten: the
run stays promoting, the target is recorded with `OVERWRITE_PENDING` and its held
digest, and the release message offers approvers a "Confirm overwrite" button. Their
click (a separate decision, audited) records the held digest it confirms and queues the
promotion again; only a tag still holding that digest is then overwritten.

Run by a worker for a `JobKind.PROMOTE` job on the control stream. Safe to run again
for the same run (a redelivery): written targets are skipped, the transitions are
compare-and-set.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Mapping

from jobs.domain import messages
from jobs.domain.config import Config
from jobs.domain.nightly import is_nightly
from jobs.domain.references import parse_reference
from jobs.domain.release import OVERWRITE_PENDING, Release, State
from jobs.domain.sync_report import ComponentStatus
from jobs.domain.sync_request import resolve_mirrors
from jobs.registry.client import RegistryClient, RegistryError
from jobs.store.queue import Job, JobKind
from jobs.store.releases import ReleaseStore
from jobs.tools.merge import MergeError, write_index
from jobs.usecases.dependencies import sync_dependencies
from jobs.usecases.publish import audit_tag_write, promote_on_publish, write_promotion_tags
from jobs.usecases.sync import sync_release

log = logging.getLogger("aibrix.promote")

PROMOTE_COMPONENT = "all"


def overwrite_decision(confirmed: Mapping[str, str]) -> str:
    """The identity of one overwrite confirmation: the mirror targets and the digests they
    held. Two clicks confirming the same thing are one decision, hence one promotion job."""
    text = "\n".join(f"{target}={digest}" for target, digest in sorted(confirmed.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def promote_job(release: Release, confirmed: Mapping[str, str] | None = None) -> Job:
    """The promotion job of a run; after an overwrite confirmation, a job whose identity is
    that decision (`overwrite_decision`), so the queue, which runs each job's effect once,
    takes a new decision as a new job and the same decision, clicked again, as the same."""
    component = PROMOTE_COMPONENT
    if confirmed:
        component = f"{PROMOTE_COMPONENT}-overwrite-{overwrite_decision(confirmed)}"
    return Job(
        JobKind.PROMOTE, release.version, component, release.source_ref, run_id=release.run_id
    )


async def _promote_to_mirrors(
    store: ReleaseStore, config: Config, release: Release, client: RegistryClient
) -> tuple[list[str], bool]:
    """Copy the run to the promotion mirrors; (failures, waiting for a confirmation)."""
    if not config.promotion.mirrors:
        return [], False
    mirrors = resolve_mirrors(config, config.promotion.mirrors)
    verified = {c: release.indexes[c].digest for c in release.components}
    confirmed = await store.overwrite_confirmations(release.version, release.run_id)
    version = release.version
    report = await sync_release(
        client, config, version, mirrors, components=release.components, expected_digests=verified
    )
    if not report.gate_passed:
        sentences = [sentence for problem in report.gate for sentence in problem.sentences]
        return [messages.promotion_gate_failed(str(release.version), sentences)], False
    results = {(m.mirror.label, c.component): c for m in report.mirrors for c in m.components}
    # Refused targets whose held digest an approver confirmed: copy those again, allowed.
    confirmed_again = [
        (mirror, c)
        for mirror in mirrors
        for c in release.components
        if (found := results.get((mirror.label, c))) is not None
        and found.status is ComponentStatus.REFUSED
        and confirmed.get(found.destination) == found.final_digest
    ]
    for mirror, component in confirmed_again:
        again = await sync_release(
            client,
            config,
            version,
            [mirror],
            components=[component],
            overwrite_allowed=True,
            expected_digests=verified,
        )
        for item in again.mirrors[0].components if again.mirrors else ():
            results[(mirror.label, component)] = item
    failures: list[str] = []
    waiting = False
    for item in results.values():
        refused = item.status is ComponentStatus.REFUSED
        if refused:
            detail = OVERWRITE_PENDING  # ok is False: the message offers Confirm overwrite
        else:
            detail = "" if item.ok else (item.reason or item.status.value)
        await store.record_promotion(
            release.version,
            release.run_id,
            item.destination,
            ok=item.ok,
            digest=item.final_digest or "",
            detail=detail,
        )
        if refused:
            waiting = True
        elif not item.ok:
            failures.append(messages.promotion_failed(item.destination, item.reason or ""))
        elif item.final_digest:
            if item.status is ComponentStatus.COPIED:  # written now, not already there
                await audit_tag_write(store, release, item.destination, item.final_digest)
            failures += await _tag_on_mirror(
                store, config, release, client, item.destination, item.final_digest
            )
    return failures, waiting


async def _tag_on_mirror(
    store: ReleaseStore,
    config: Config,
    release: Release,
    client: RegistryClient,
    copied: str,
    digest: str,
) -> list[str]:
    """The promotion tags on a mirror, beside the release tag just verified there: the same
    manifest bytes under each tag, so each reads back as the approved digest."""
    tags = config.promotion_tags_for(release.version)
    if not tags:
        return []
    repository = copied.rsplit(":", 1)[0]
    return await write_promotion_tags(store, release, client, repository, digest, tags)


async def _read_digest(client: RegistryClient, target: str) -> str | None:
    try:
        manifest = await client.get_manifest(parse_reference(target))
    except RegistryError:
        return None
    return manifest.digest


async def promote(
    store: ReleaseStore, config: Config, job: Job, client: RegistryClient
) -> State | None:
    """Promote the run `job` names; returns where it ended (None: nothing to do)."""
    release = await store.load(job.version, job.run_id)
    if release is None:
        return None
    if release.state is State.APPROVED:
        await store.transition(job.version, job.run_id, [State.APPROVED], State.PROMOTING)
        release = await store.load(job.version, job.run_id)
        if release is None:
            return None
    if release.state is not State.PROMOTING:
        log.info("%s is %s; not promoting", job.version, release.state)
        return None
    tags = config.promotion_tags_for(release.version)
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
                job.version, job.run_id, target, ok=ok, digest=got or "", detail=detail
            )
            if not ok:
                failures.append(messages.promotion_failed(target, detail))
            else:
                await audit_tag_write(store, release, target, index.digest)
    # Every other publish registry: its copy of the index checked, then the same tags.
    failures += await promote_on_publish(store, config, release, client)
    # A nightly goes to the publish registries only: mirrors get releases.
    nightly = is_nightly(release.version)
    mirror_failures, waiting = (
        ([], False) if nightly else await _promote_to_mirrors(store, config, release, client)
    )
    failures += mirror_failures
    if not failures and not waiting and not nightly:
        # The third-party images it deploys go with it, through the same gate.
        failures += await sync_dependencies(store, config, release, client)
    if failures:
        await store.transition(
            job.version, job.run_id, [State.PROMOTING], State.FAILED, reason="; ".join(failures)
        )
        return State.FAILED
    if waiting:
        log.info("%s waits for an approver to confirm overwriting a mirror tag", job.version)
        return State.PROMOTING
    reason = "" if tags else messages.promotion_none(str(release.version))
    await store.transition(
        job.version, job.run_id, [State.PROMOTING], State.PROMOTED, reason=reason
    )
    return State.PROMOTED
