"""The mirror sync and the promotion copy: gated, digest-preserving, skipping what is there.

One engine for `aibrix-bot sync VERSION --to MIRROR`, `/aibrix sync VERSION MIRROR` and
the promotion step after approval:

    request = parse_sync_request(config, "v0.3.0", ["lab-mirror", "registry.example.com/ns"])
    report = await sync_release(client, config, request.version, request.mirrors,
                                components=request.components, overwrite_allowed=False)
    data = sync_report_data(report)        # for Slack; jobs.domain.messages.sync_report_text(data)

1. Gate: every component's source tag is read and judged by the inspection engine
   (`inspect_reference`) against the required platforms, and its digest pinned. If one
   fails (or moved since it was approved, with `expected_digests`), nothing is copied
   for the release and the report names each component and missing platform. Its reads
   come in three bursts (tags, children, configs); with the tags' reads, one connection
   per child to read is begun to each source registry (`source_connections`,
   `RegistryClient.open_connections`), so the later bursts find them open rather than
   each paying a connection set-up (a round trip, more over TLS). Not to the mirrors:
   a warm sync sends them one HEAD per component, on connections of its own.
2. Copy, per mirror and component: one HEAD of the mirror tag; equal to the source
   digest means up to date (one request). Otherwise the source tree (index, children,
   attestations: read while the gate runs, the same requests as the gate's within
   `RegistryClient.shared_reads`, and used only if it is the digest the gate judged) is
   read, every blob and child manifest HEADed at the mirror (reads only: nothing is
   written before the gate passes), and `jobs.domain.copy_plan.plan_mirror` decides: leave
   out (a layer that names its own download URLs, as skopeo and regclient do), skip,
   mount (from the source repository when it is on the same registry, or from another
   component of this run that uploads the blob first: no blob byte is sent twice to a
   registry), or upload (streamed and digest-checked by `RegistryClient.copy_blob`).
   Children are put before their index and the index is put by tag last, so an
   interrupted copy never leaves a tag pointing at missing content. A mirror tag that
   holds another digest is not overwritten unless `overwrite_allowed`; the tag is HEADed
   again once the blobs are in, as the children are put, before it is written. At most
   `parallel_blobs` blob copies per destination registry are in flight, across all
   components.
3. Verify: the mirror tag is read back through the inspection engine (its children and
   configs read at the same time as the tag); its digest must be the source's and its
   verdict ok.
4. Report: per mirror and component, copied/mounted/skipped blobs and bytes, the layers
   left out for their URLs (named in the report: the mirror does not hold them), time and
   final digest (`SyncReport`, `sync_report_data`: values in `jobs.domain.sync_report`).

Drift: `gather_drift` HEADs the release tag at the source and at every mirror and
`drift_table` (pure, in `jobs.domain.sync_report`) compares them; `drift_data` is its
report data.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from jobs.domain import messages
from jobs.domain.config import Config
from jobs.domain.copy_plan import (
    BlobAction,
    BlobOutcome,
    BlobStep,
    CopyPlan,
    ManifestNode,
    PlanInput,
    TagDecision,
    decide_tag,
    is_external,
    plan_mirror,
    tally,
    unique_blobs,
)
from jobs.domain.platforms import Platform
from jobs.domain.references import Reference, parse_reference
from jobs.domain.sync_report import (
    ComponentReport,
    ComponentStatus,
    DigestRead,
    DriftRow,
    GateProblem,
    MirrorReport,
    ProgressEvent,
    ProgressKind,
    SyncReport,
    drift_table,
)
from jobs.domain.sync_request import CopyJob, Mirror, release_jobs
from jobs.domain.sync_request import SyncInputError as SyncInputError
from jobs.domain.sync_request import SyncRequest as SyncRequest
from jobs.domain.sync_request import parse_sync_request as parse_sync_request
from jobs.domain.sync_request import resolve_mirrors as resolve_mirrors
from jobs.domain.versions import Version
from jobs.registry.client import ProtocolError, RegistryClient, RegistryError
from jobs.registry.inspection import Inspection, inspect_reference

MAX_INDEX_DEPTH = 2  # an index of indexes of images at most
_CONFIG_TYPES = frozenset(
    {
        "application/vnd.oci.image.config.v1+json",
        "application/vnd.docker.container.image.v1+json",
    }
)
DEFAULT_PARALLEL_BLOBS = 32  # blob copies in flight per destination registry
MAX_WARM_CONNECTIONS = 32  # begun ahead of the gate's reads, per source registry

# ---- the gate ----------------------------------------------------------------


def gate_problems(
    version: str,
    inspections: Mapping[str, Inspection],
    expected_digests: Mapping[str, str] | None = None,
) -> tuple[GateProblem, ...]:
    """Why the release must not be copied, one entry per component at fault (in the
    order given); empty when every source passes."""
    problems = []
    for component, inspection in inspections.items():
        subject = messages.sync_subject(component, version)
        verdict = inspection.verdict
        reference = str(inspection.reference)
        if inspection.unreadable or not verdict.ok:
            problems.append(
                GateProblem(
                    component,
                    reference,
                    tuple(messages.verdict_problems(subject, verdict)),
                    verdict.missing,
                    inspection.unreadable,
                )
            )
            continue
        approved = (expected_digests or {}).get(component)
        if approved is not None and inspection.digest != approved:
            assert inspection.digest is not None
            problems.append(
                GateProblem(
                    component,
                    reference,
                    (messages.sync_source_moved(subject, approved, inspection.digest),),
                )
            )
    return tuple(problems)


# ---- progress (the events are `jobs.domain.sync_report.ProgressEvent`) ---------------


Progress = Callable[[ProgressEvent], None]


def _no_progress(event: ProgressEvent) -> None:
    pass


# ---- reading ------------------------------------------------------------------------


async def fetch_tree(client: RegistryClient, ref: Reference, depth: int = 0) -> ManifestNode:
    """The manifest `ref` names and, for an index, every child (images and attestation
    manifests alike), each with its exact bytes."""
    manifest = await client.get_manifest(ref)
    if manifest.is_index:
        if depth >= MAX_INDEX_DEPTH:
            raise ProtocolError(str(ref), "indexes are nested deeper than this tool copies")
        children = await asyncio.gather(
            *(fetch_tree(client, ref.with_digest(e.digest), depth + 1) for e in manifest.manifests)
        )
        return ManifestNode(manifest.digest, manifest.media_type, manifest.raw, tuple(children))
    blobs = ((manifest.config,) if manifest.config else ()) + manifest.layers
    return ManifestNode(manifest.digest, manifest.media_type, manifest.raw, blobs=blobs)


async def read_digest(client: RegistryClient, ref: Reference) -> DigestRead:
    try:
        return DigestRead(await client.head_manifest(ref))
    except RegistryError as error:
        return DigestRead(None, str(error))


# ---- the engine ---------------------------------------------------------------------


@dataclass
class _MirrorRun:
    """State shared by the components going to one destination registry."""

    blob_slots: asyncio.Semaphore
    uploads: dict[str, asyncio.Future[str]] = field(default_factory=dict)


class _Refused(Exception):
    def __init__(self, reason: str, held: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.held = held


class _Engine:
    def __init__(
        self,
        client: RegistryClient,
        required: Sequence[Platform],
        *,
        overwrite_allowed: bool,
        deep: bool,
        progress: Progress,
        parallel_blobs: int,
    ) -> None:
        self.client = client
        self.required = tuple(required)
        self.overwrite_allowed = overwrite_allowed
        self.deep = deep
        self.progress = progress
        self.parallel_blobs = parallel_blobs
        self.runs: dict[str, _MirrorRun] = {}

    def _run_for(self, registry: str) -> _MirrorRun:
        if registry not in self.runs:
            self.runs[registry] = _MirrorRun(asyncio.Semaphore(self.parallel_blobs))
        return self.runs[registry]

    def _finish(self, report: ComponentReport) -> ComponentReport:
        self.progress(
            ProgressEvent(ProgressKind.DONE, report.mirror, report.component, report=report)
        )
        return report

    async def sync_mirror(
        self,
        mirror: Mirror,
        jobs: Sequence[CopyJob],
        sources: Mapping[str, str],
        heads: Mapping[CopyJob, asyncio.Task[DigestRead]],
        early: Mapping[CopyJob, asyncio.Task[PlanInput | None]],
    ) -> MirrorReport:
        started = time.monotonic()
        reports: dict[CopyJob, ComponentReport] = {}
        to_copy: list[tuple[CopyJob, str | None]] = []
        for job in jobs:
            head = await heads[job]
            source_digest = sources[job.component]
            if head.error is not None:
                reports[job] = self._finish(
                    _plain_report(
                        job,
                        source_digest,
                        None,
                        ComponentStatus.FAILED,
                        started,
                        head.error,
                        registry_error=True,
                    )
                )
                continue
            decision = decide_tag(
                source_digest, head.digest, overwrite_allowed=self.overwrite_allowed
            )
            if decision is TagDecision.REFUSED:
                assert head.digest is not None
                reason = messages.sync_overwrite_refused(
                    str(job.destination), head.digest, source_digest
                )
                reports[job] = self._finish(
                    _plain_report(
                        job, source_digest, head.digest, ComponentStatus.REFUSED, started, reason
                    )
                )
            elif decision is TagDecision.UP_TO_DATE and not self.deep:
                reports[job] = self._finish(
                    _plain_report(
                        job, source_digest, head.digest, ComponentStatus.UP_TO_DATE, started
                    )
                )
            else:
                to_copy.append((job, head.digest))

        async def prepared_for(job: CopyJob) -> PlanInput:
            item = await early[job]
            digest = sources[job.component]
            if item is None or item.root.digest != digest:  # not read ahead, or the tag moved
                item = await self._prepare(job, digest)
            return item

        prepared = await asyncio.gather(
            *(prepared_for(job) for job, _ in to_copy), return_exceptions=True
        )
        await asyncio.gather(*early.values(), return_exceptions=True)
        ready: list[tuple[CopyJob, str | None, PlanInput]] = []
        for (job, held), item in zip(to_copy, prepared, strict=True):
            if isinstance(item, PlanInput):
                ready.append((job, held, item))
            elif isinstance(item, RegistryError):
                reports[job] = self._failed(job, sources[job.component], item, started)
            else:
                raise item
        plans = plan_mirror([item for _, _, item in ready])
        run = self._run_for(mirror.registry)
        for plan in plans:
            for step in plan.steps(BlobAction.UPLOAD):
                run.uploads.setdefault(step.blob.digest, asyncio.get_running_loop().create_future())
        results = await asyncio.gather(
            *(
                self._copy(job, sources[job.component], held, plan, run, started)
                for (job, held, _), plan in zip(ready, plans, strict=True)
            )
        )
        for (job, _, _), result in zip(ready, results, strict=True):
            reports[job] = result
        return MirrorReport(mirror, tuple(reports[job] for job in jobs), time.monotonic() - started)

    def _failed(
        self, job: CopyJob, source_digest: str, error: RegistryError, started: float
    ) -> ComponentReport:
        return self._finish(
            _plain_report(
                job,
                source_digest,
                None,
                ComponentStatus.FAILED,
                started,
                str(error),
                registry_error=True,
            )
        )

    async def read_ahead(self, job: CopyJob, head: asyncio.Task[DigestRead]) -> PlanInput | None:
        """While the gate runs: read the source tree (by tag; the gate's reads of the same
        manifests are the same requests) and, when the mirror lacks the tag, HEAD the
        mirror for it. Reads only; nothing is written before the gate passes, and the
        tree is used only if it is the digest the gate judged."""
        tree = asyncio.ensure_future(fetch_tree(self.client, job.source))
        try:
            found = await head
        except BaseException:
            tree.cancel()
            raise
        if found.error is not None or found.digest is not None:
            tree.cancel()
            await asyncio.gather(tree, return_exceptions=True)
            return None
        return await self._plan_input(job, await tree)

    async def _prepare(self, job: CopyJob, source_digest: str | None) -> PlanInput:
        """Read the source tree (by the digest the gate passed, or by tag when reading
        ahead) and HEAD what the mirror repository holds of it."""
        source = job.source.with_digest(source_digest) if source_digest else job.source
        return await self._plan_input(job, await fetch_tree(self.client, source))

    async def _plan_input(self, job: CopyJob, root: ManifestNode) -> PlanInput:
        """HEAD what the mirror repository holds of the tree (not the layers that name
        their own download URLs: those are never copied)."""
        blobs = [b for b in unique_blobs(root) if not is_external(b)]
        children = [n for n in _nodes(root) if n.digest != root.digest]
        destination = job.destination
        blob_checks = asyncio.gather(
            *(self.client.blob_exists(destination, b.digest) for b in blobs)
        )
        manifest_checks = asyncio.gather(
            *(self.client.head_manifest(destination.with_digest(n.digest)) for n in children)
        )
        have_blobs, have_manifests = await asyncio.gather(blob_checks, manifest_checks)
        mountable: dict[str, str] = {}
        if job.source.api_host == destination.api_host:
            mountable = {b.digest: job.source.repository for b in blobs}
        return PlanInput(
            destination.repository,
            root,
            frozenset(b.digest for b, have in zip(blobs, have_blobs, strict=True) if have),
            frozenset(n.digest for n, have in zip(children, have_manifests, strict=True) if have),
            MappingProxyType(mountable),
        )

    async def _copy(
        self,
        job: CopyJob,
        source_digest: str,
        held: str | None,
        plan: CopyPlan,
        run: _MirrorRun,
        started: float,
    ) -> ComponentReport:
        self.progress(
            ProgressEvent(
                ProgressKind.PLANNED, job.mirror.label, job.component, total=plan.transfer_bytes
            )
        )
        outcomes: dict[str, tuple[BlobOutcome, int]] = {}
        puts = 0
        try:
            puts = await self._write(job, source_digest, held, plan, run, outcomes)
        except _Refused as refused:
            return self._finish(
                self._report(
                    job,
                    source_digest,
                    refused.held,
                    ComponentStatus.REFUSED,
                    outcomes,
                    puts,
                    plan,
                    started,
                    refused.reason,
                )
            )
        except RegistryError as error:
            return self._finish(
                self._report(
                    job,
                    source_digest,
                    None,
                    ComponentStatus.FAILED,
                    outcomes,
                    puts,
                    plan,
                    started,
                    str(error),
                    registry_error=True,
                )
            )
        return self._finish(await self._verify(job, source_digest, outcomes, puts, plan, started))

    async def _write(
        self,
        job: CopyJob,
        source_digest: str,
        held: str | None,
        plan: CopyPlan,
        run: _MirrorRun,
        outcomes: dict[str, tuple[BlobOutcome, int]],
    ) -> int:
        """Blobs, then each child once its blobs are in, then the index by tag (unless the
        tag holds it already). Returns how many manifests were put."""
        writes_tag = held != source_digest
        tag_check: asyncio.Task[str | None] | None = None
        try:
            async with asyncio.TaskGroup() as group:
                blob_tasks = {
                    step.blob.digest: group.create_task(self._blob(job, step, run, outcomes))
                    for step in plan.blobs
                }
                node_tasks: dict[str, asyncio.Task[bool]] = {}
                for step in plan.manifests[:-1]:
                    node_tasks[step.node.digest] = group.create_task(
                        self._put_node(job, step.node, step.put, blob_tasks, node_tasks)
                    )
                if writes_tag and not self.overwrite_allowed:
                    # Once every blob is in, while the children are put: the tag again.
                    tag_check = group.create_task(self._head_after(job, blob_tasks.values()))
                root = plan.root.node
                await _wait_for(root, blob_tasks, node_tasks)
        except* RegistryError as group_error:
            raise _first_registry_error(group_error) from None
        puts = sum(1 for task in node_tasks.values() if task.result())
        if not writes_tag:
            return puts
        if tag_check is not None:
            current = tag_check.result()
            if current is not None and current not in (held, source_digest):
                raise _Refused(messages.sync_tag_appeared(str(job.destination), current), current)
        await self.client.put_manifest(job.destination, root.raw, root.media_type)
        return puts + 1

    async def _head_after(
        self, job: CopyJob, blob_tasks: Iterable[asyncio.Task[None]]
    ) -> str | None:
        """What the destination tag holds, read once the blobs are in."""
        await asyncio.gather(*blob_tasks)
        return await self.client.head_manifest(job.destination)

    async def _verify(
        self,
        job: CopyJob,
        source_digest: str,
        outcomes: Mapping[str, tuple[BlobOutcome, int]],
        puts: int,
        plan: CopyPlan,
        started: float,
    ) -> ComponentReport:
        # The read-back: the tag, and at the same time the children and configs it must
        # hold (the source's digests; with the tag's digest equal to the source's they are
        # what the verdict reads), so the inspection's reads are one round trip, not three.
        destination_ref = job.destination
        nodes = [n for n in _nodes(plan.root.node) if n.digest != plan.root.node.digest]
        ahead: list[asyncio.Future[object]] = [
            asyncio.ensure_future(self.client.get_manifest(destination_ref.with_digest(n.digest)))
            for n in nodes
        ]
        ahead.extend(
            asyncio.ensure_future(self.client.get_blob(destination_ref, n.blobs[0].digest))
            for n in nodes
            if n.blobs and n.blobs[0].media_type in _CONFIG_TYPES
        )
        try:
            inspection = await inspect_reference(self.client, job.destination, self.required)
        finally:
            for task in ahead:
                task.cancel()
            await asyncio.gather(*ahead, return_exceptions=True)
        destination = str(job.destination)
        if inspection.unreadable:
            reason = inspection.verdict.error or "the mirror tag cannot be read back"
            return self._report(
                job,
                source_digest,
                None,
                ComponentStatus.FAILED,
                outcomes,
                puts,
                plan,
                started,
                f"{destination}: {reason}",
                registry_error=True,
            )
        assert inspection.digest is not None
        if inspection.digest != source_digest:
            reason = messages.sync_verify_digest(destination, inspection.digest, source_digest)
        elif not inspection.verdict.ok:
            subject = messages.sync_subject(job.component, job.destination.tag or "")
            reason = messages.sync_verify_verdict(
                destination, messages.verdict_problems(subject, inspection.verdict)
            )
        else:
            return self._report(
                job,
                source_digest,
                inspection.digest,
                ComponentStatus.COPIED,
                outcomes,
                puts,
                plan,
                started,
                None,
            )
        return self._report(
            job,
            source_digest,
            inspection.digest,
            ComponentStatus.UNVERIFIED,
            outcomes,
            puts,
            plan,
            started,
            reason,
        )

    def _report(
        self,
        job: CopyJob,
        source_digest: str,
        final_digest: str | None,
        status: ComponentStatus,
        outcomes: Mapping[str, tuple[BlobOutcome, int]],
        puts: int,
        plan: CopyPlan,
        started: float,
        reason: str | None,
        *,
        registry_error: bool = False,
    ) -> ComponentReport:
        return ComponentReport(
            mirror=job.mirror.label,
            component=job.component,
            source=str(job.source),
            destination=str(job.destination),
            source_digest=source_digest,
            final_digest=final_digest,
            status=status,
            blobs=tally(outcomes.values()),
            manifests_put=puts,
            manifests_skipped=sum(1 for s in plan.manifests[:-1] if not s.put),
            seconds=time.monotonic() - started,
            reason=reason,
            registry_error=registry_error,
        )

    async def _put_node(
        self,
        job: CopyJob,
        node: ManifestNode,
        put: bool,
        blob_tasks: Mapping[str, asyncio.Task[None]],
        node_tasks: Mapping[str, asyncio.Task[bool]],
    ) -> bool:
        await _wait_for(node, blob_tasks, node_tasks)
        if not put:
            return False
        await self.client.put_manifest(
            job.destination.with_digest(node.digest), node.raw, node.media_type
        )
        return True

    async def _blob(
        self,
        job: CopyJob,
        step: BlobStep,
        run: _MirrorRun,
        outcomes: dict[str, tuple[BlobOutcome, int]],
    ) -> None:
        blob = step.blob
        if step.action is BlobAction.SKIP:
            outcomes[blob.digest] = (BlobOutcome.SKIPPED, blob.size)
            return
        if step.action is BlobAction.EXTERNAL:
            outcomes[blob.digest] = (BlobOutcome.EXTERNAL, blob.size)
            return
        mount_from = step.mount_from
        if step.wait:
            try:
                mount_from = await asyncio.shield(run.uploads[blob.digest])
            except RegistryError:
                mount_from = None  # its uploader failed: upload it from here
        uploading = step.action is BlobAction.UPLOAD
        future = run.uploads.get(blob.digest) if uploading else None

        def sent(count: int) -> None:
            self.progress(
                ProgressEvent(ProgressKind.BYTES, job.mirror.label, job.component, delta=count)
            )

        try:
            async with run.blob_slots:
                transfer = await self.client.copy_blob(
                    job.source, job.destination, blob, mount_from=mount_from, on_bytes=sent
                )
        except BaseException as error:
            if future is not None and not future.done():
                abandoned = (
                    error
                    if isinstance(error, RegistryError)
                    else RegistryError(str(job.destination), "the upload was abandoned")
                )
                future.set_exception(abandoned)
                future.exception()  # retrieved: waiters fall back to uploading
            raise
        if future is not None and not future.done():
            future.set_result(job.destination.repository)
        if transfer.mounted:
            outcomes[blob.digest] = (BlobOutcome.MOUNTED, blob.size)
        else:
            outcomes[blob.digest] = (BlobOutcome.COPIED, blob.size)


def _plain_report(
    job: CopyJob,
    source_digest: str,
    final_digest: str | None,
    status: ComponentStatus,
    started: float,
    reason: str | None = None,
    *,
    registry_error: bool = False,
) -> ComponentReport:
    return ComponentReport(
        mirror=job.mirror.label,
        component=job.component,
        source=str(job.source),
        destination=str(job.destination),
        source_digest=source_digest,
        final_digest=final_digest,
        status=status,
        seconds=time.monotonic() - started,
        reason=reason,
        registry_error=registry_error,
    )


def _nodes(root: ManifestNode) -> list[ManifestNode]:
    found: dict[str, ManifestNode] = {}
    stack = [root]
    while stack:
        node = stack.pop()
        found.setdefault(node.digest, node)
        stack.extend(node.children)
    return list(found.values())


async def _wait_for(
    node: ManifestNode,
    blob_tasks: Mapping[str, asyncio.Task[None]],
    node_tasks: Mapping[str, asyncio.Task[bool]],
) -> None:
    """Until the node's blobs and children are in the destination."""
    waits: list[asyncio.Task[None] | asyncio.Task[bool]] = [
        blob_tasks[b.digest] for b in node.blobs
    ]
    waits.extend(node_tasks[c.digest] for c in node.children)
    if waits:
        await asyncio.gather(*waits)


def _first_registry_error(group: BaseExceptionGroup[RegistryError]) -> RegistryError:
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            return _first_registry_error(error)
        return error
    raise AssertionError("an empty exception group")  # pragma: no cover


async def sync_jobs(
    client: RegistryClient,
    jobs: Sequence[CopyJob],
    required: Sequence[Platform],
    *,
    version: str,
    overwrite_allowed: bool = False,
    deep: bool = False,
    expected_digests: Mapping[str, str] | None = None,
    progress: Progress | None = None,
    parallel_blobs: int = DEFAULT_PARALLEL_BLOBS,
) -> SyncReport:
    """Gate, copy and verify `jobs` (see the module docstring). `version` labels the
    report and the sentences. Registry failures of single components are in the report,
    never raised; the gate refusing is in `report.gate`."""
    with client.shared_reads():
        # The gate's reads come in bursts (every tag, then every child, then every config):
        # connections begun now, alongside the tags' reads, are ready for the children.
        warming = [
            client.open_connections(ref, count) for ref, count in source_connections(jobs, required)
        ]
        try:
            return await _sync_jobs(
                client,
                jobs,
                required,
                version=version,
                overwrite_allowed=overwrite_allowed,
                deep=deep,
                expected_digests=expected_digests,
                progress=progress,
                parallel_blobs=parallel_blobs,
            )
        finally:
            for task in warming:
                task.cancel()
            await asyncio.gather(*warming, return_exceptions=True)


def source_connections(
    jobs: Sequence[CopyJob], required: Sequence[Platform]
) -> list[tuple[Reference, int]]:
    """The source registries to open connections to ahead of the gate's reads, and how
    many: one per child the gate will read (a required platform of each component), at
    most `MAX_WARM_CONNECTIONS` per registry. The tags' own reads open theirs."""
    components: dict[str, dict[str, Reference]] = {}
    for job in jobs:
        components.setdefault(job.source.api_host, {}).setdefault(job.component, job.source)
    per_component = max(1, len(required))
    return [
        (next(iter(refs.values())), min(MAX_WARM_CONNECTIONS, len(refs) * per_component))
        for refs in components.values()
    ]


async def _sync_jobs(
    client: RegistryClient,
    jobs: Sequence[CopyJob],
    required: Sequence[Platform],
    *,
    version: str,
    overwrite_allowed: bool,
    deep: bool,
    expected_digests: Mapping[str, str] | None,
    progress: Progress | None,
    parallel_blobs: int,
) -> SyncReport:
    started = time.monotonic()
    sources: dict[str, Reference] = {}
    for job in jobs:
        sources.setdefault(job.component, job.source)
    engine = _Engine(
        client,
        required,
        overwrite_allowed=overwrite_allowed,
        deep=deep,
        progress=progress or _no_progress,
        parallel_blobs=parallel_blobs,
    )
    heads = {job: asyncio.create_task(read_digest(client, job.destination)) for job in jobs}
    early = {job: asyncio.create_task(engine.read_ahead(job, heads[job])) for job in jobs}
    reads = [*heads.values(), *early.values()]
    try:
        inspections = dict(
            zip(
                sources,
                await asyncio.gather(
                    *(inspect_reference(client, ref, required) for ref in sources.values())
                ),
                strict=True,
            )
        )
    except BaseException:
        for task in reads:
            task.cancel()
        raise
    problems = gate_problems(version, inspections, expected_digests)
    digests = {c: i.digest for c, i in inspections.items()}
    if problems:
        for task in reads:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*reads, return_exceptions=True)
        return SyncReport(
            version, problems, (), MappingProxyType(digests), time.monotonic() - started
        )
    pinned = {c: d for c, d in digests.items() if d is not None}
    by_mirror: dict[Mirror, list[CopyJob]] = {}
    for job in jobs:
        by_mirror.setdefault(job.mirror, []).append(job)
    reports = await asyncio.gather(
        *(engine.sync_mirror(m, js, pinned, heads, early) for m, js in by_mirror.items())
    )
    return SyncReport(
        version, (), tuple(reports), MappingProxyType(digests), time.monotonic() - started
    )


async def sync_release(
    client: RegistryClient,
    config: Config,
    version: Version,
    mirrors: Sequence[Mirror],
    *,
    components: Sequence[str] | None = None,
    overwrite_allowed: bool = False,
    deep: bool = False,
    expected_digests: Mapping[str, str] | None = None,
    progress: Progress | None = None,
    parallel_blobs: int = DEFAULT_PARALLEL_BLOBS,
) -> SyncReport:
    """Copy release `version` (every configured component, or `components`) to each
    mirror, gated on `config.platforms`. `overwrite_allowed=False` refuses a component
    whose mirror tag holds another digest (nothing is written for it);
    `expected_digests` (component -> digest approved) refuses the release if a source
    tag moved since. `deep` HEADs every blob even of components whose mirror tag is up
    to date, and repairs what is missing."""
    jobs = release_jobs(config, version, mirrors, components)
    return await sync_jobs(
        client,
        jobs,
        config.platforms,
        version=str(version),
        overwrite_allowed=overwrite_allowed,
        deep=deep,
        expected_digests=expected_digests,
        progress=progress,
        parallel_blobs=parallel_blobs,
    )


# ---- drift --------------------------------------------------------------------------


async def gather_drift(
    client: RegistryClient,
    config: Config,
    version: Version,
    mirrors: Sequence[Mirror],
    components: Sequence[str] | None = None,
) -> tuple[DriftRow, ...]:
    """HEAD the release tag of each component at the source and at every mirror, all at
    once, and compare (for `aibrix-bot inspect --across` and `/aibrix inspect`)."""
    jobs = release_jobs(config, version, mirrors, components)
    names = list(dict.fromkeys(j.component for j in jobs)) or list(
        components if components is not None else config.component_names
    )
    sources = {name: parse_reference(config.release_reference(name, version)) for name in names}
    source_reads, mirror_reads = await asyncio.gather(
        asyncio.gather(*(read_digest(client, ref) for ref in sources.values())),
        asyncio.gather(*(read_digest(client, j.destination) for j in jobs)),
    )
    at_mirrors: dict[str, dict[str, DigestRead]] = {}
    for job, read in zip(jobs, mirror_reads, strict=True):
        at_mirrors.setdefault(job.mirror.label, {})[job.component] = read
    return drift_table(
        names,
        {name: str(ref) for name, ref in sources.items()},
        [m.label for m in mirrors],
        dict(zip(sources, source_reads, strict=True)),
        at_mirrors,
    )
