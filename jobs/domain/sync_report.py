"""What a sync found and did, as values: the gate's findings per component, the reports
per mirror and component (`SyncReport`, and `sync_report_data`, the plain data the Slack
and terminal renderers read), the engine's progress events, and the drift table between
a release's source tags and its mirrors. Pure: the copy engine that fills these is
`jobs.usecases.sync`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from jobs.domain.copy_plan import (
    BlobTally,
    ComponentData,
    DriftCellData,
    DriftData,
    DriftRowData,
    GateProblemData,
    MirrorData,
    SyncData,
    tally_data,
    total,
)
from jobs.domain.platforms import Platform
from jobs.domain.sync_request import Mirror

# ---- the gate's findings -------------------------------------------------------------


@dataclass(frozen=True)
class GateProblem:
    component: str
    reference: str
    sentences: tuple[str, ...]
    missing: tuple[Platform, ...] = ()
    unreadable: bool = False


# ---- reports -------------------------------------------------------------------------


class ComponentStatus(StrEnum):
    COPIED = "copied"  # copied, read back and verified
    UP_TO_DATE = "up-to-date"  # the mirror tag already held the source digest
    REFUSED = "refused"  # the mirror tag holds another digest: not overwritten
    FAILED = "failed"  # a registry could not be read or written
    UNVERIFIED = "unverified"  # copied, but the read-back differs or fails the check


@dataclass(frozen=True)
class ComponentReport:
    mirror: str
    component: str
    source: str
    destination: str
    source_digest: str | None
    final_digest: str | None
    status: ComponentStatus
    blobs: BlobTally = field(default_factory=BlobTally)
    manifests_put: int = 0
    manifests_skipped: int = 0
    seconds: float = 0.0
    reason: str | None = None
    registry_error: bool = False  # FAILED because a registry could not be read/written

    @property
    def ok(self) -> bool:
        return self.status in (ComponentStatus.COPIED, ComponentStatus.UP_TO_DATE)


@dataclass(frozen=True)
class MirrorReport:
    mirror: Mirror
    components: tuple[ComponentReport, ...]
    seconds: float = 0.0

    @property
    def blobs(self) -> BlobTally:
        return total(c.blobs for c in self.components)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.components)


@dataclass(frozen=True)
class SyncReport:
    version: str
    gate: tuple[GateProblem, ...]
    mirrors: tuple[MirrorReport, ...]
    source_digests: Mapping[str, str | None] = field(default_factory=lambda: MappingProxyType({}))
    seconds: float = 0.0

    @property
    def gate_passed(self) -> bool:
        return not self.gate

    @property
    def ok(self) -> bool:
        """Every component is on every mirror, verified."""
        return self.gate_passed and all(m.ok for m in self.mirrors)

    @property
    def registry_failure(self) -> bool:
        """A registry could not be read or written (exit status 3 in the CLI)."""
        return any(p.unreadable for p in self.gate) or any(
            c.registry_error for m in self.mirrors for c in m.components
        )

    @property
    def blobs(self) -> BlobTally:
        return total(m.blobs for m in self.mirrors)


def component_data(report: ComponentReport) -> ComponentData:
    return ComponentData(
        component=report.component,
        status=report.status.value,
        source=report.source,
        destination=report.destination,
        source_digest=report.source_digest,
        final_digest=report.final_digest,
        blobs=tally_data(report.blobs),
        manifests_put=report.manifests_put,
        manifests_skipped=report.manifests_skipped,
        seconds=round(report.seconds, 3),
        reason=report.reason,
    )


def sync_report_data(report: SyncReport) -> SyncData:
    """The report as plain JSON values (what the Slack renderer and
    `jobs.domain.messages.sync_report_text` take)."""
    if not report.gate_passed:
        status = "refused"
    elif report.ok:
        status = "synced"
    else:
        status = "incomplete"
    return SyncData(
        version=report.version,
        status=status,
        ok=report.ok,
        gate_passed=report.gate_passed,
        gate=[
            GateProblemData(
                component=p.component,
                reference=p.reference,
                sentences=list(p.sentences),
                missing=[str(m) for m in p.missing],
                unreadable=p.unreadable,
            )
            for p in report.gate
        ],
        mirrors=[
            MirrorData(
                mirror=m.mirror.label,
                location=m.mirror.location,
                ok=m.ok,
                seconds=round(m.seconds, 3),
                blobs=tally_data(m.blobs),
                components=[component_data(c) for c in m.components],
            )
            for m in report.mirrors
        ],
        blobs=tally_data(report.blobs),
        seconds=round(report.seconds, 3),
    )


# ---- progress ------------------------------------------------------------------------


class ProgressKind(StrEnum):
    PLANNED = "planned"  # `total`: bytes this copy may have to stream
    BYTES = "bytes"  # `delta`: bytes sent (negative when an attempt is started over)
    DONE = "done"  # `report`: the component's report


@dataclass(frozen=True)
class ProgressEvent:
    kind: ProgressKind
    mirror: str
    component: str
    total: int = 0
    delta: int = 0
    report: ComponentReport | None = None


# ---- drift ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DigestRead:
    """What a tag resolved to: a digest, nothing (no such tag), or an error sentence."""

    digest: str | None
    error: str | None = None


class DriftStatus(StrEnum):
    SAME = "same"
    DIFFERENT = "different"
    MISSING = "missing"  # the mirror has no such tag
    UNREADABLE = "unreadable"  # the mirror (or the source) could not be read


@dataclass(frozen=True)
class DriftCell:
    mirror: str
    read: DigestRead
    status: DriftStatus


@dataclass(frozen=True)
class DriftRow:
    component: str
    reference: str
    source: DigestRead
    cells: tuple[DriftCell, ...]

    @property
    def drifted(self) -> bool:
        return self.source.digest is None or any(
            c.status is not DriftStatus.SAME for c in self.cells
        )

    @property
    def unreadable(self) -> bool:
        return self.source.error is not None or any(
            c.status is DriftStatus.UNREADABLE for c in self.cells
        )


def drift_status(source: DigestRead, mirror: DigestRead) -> DriftStatus:
    if mirror.error is not None or source.error is not None:
        return DriftStatus.UNREADABLE
    if mirror.digest is None:
        return DriftStatus.MISSING
    if mirror.digest == source.digest:
        return DriftStatus.SAME
    return DriftStatus.DIFFERENT


def drift_table(
    components: Sequence[str],
    references: Mapping[str, str],
    mirrors: Sequence[str],
    source: Mapping[str, DigestRead],
    at_mirrors: Mapping[str, Mapping[str, DigestRead]],
) -> tuple[DriftRow, ...]:
    """Compare what each component's release tag holds at the source and at each mirror
    (`at_mirrors[mirror][component]`; absent entries count as missing)."""
    rows = []
    for component in components:
        here = source.get(component, DigestRead(None))
        cells = []
        for mirror in mirrors:
            read = at_mirrors.get(mirror, {}).get(component, DigestRead(None))
            cells.append(DriftCell(mirror, read, drift_status(here, read)))
        rows.append(DriftRow(component, references.get(component, ""), here, tuple(cells)))
    return tuple(rows)


def drift_data(version: str, mirrors: Sequence[str], rows: Sequence[DriftRow]) -> DriftData:
    return DriftData(
        version=version,
        drifted=any(r.drifted for r in rows),
        mirrors=list(mirrors),
        rows=[
            DriftRowData(
                component=r.component,
                reference=r.reference,
                source_digest=r.source.digest,
                source_error=r.source.error,
                drifted=r.drifted,
                mirrors=[
                    DriftCellData(
                        mirror=c.mirror,
                        digest=c.read.digest,
                        status=c.status.value,
                        error=c.read.error,
                    )
                    for c in r.cells
                ],
            )
            for r in rows
        ],
    )
