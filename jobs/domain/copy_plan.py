"""What a copy must do, decided from what the source holds and what the destination has.

Pure: the sync engine reads the source tree and HEADs the destination, these functions
decide, the engine writes. Nothing here touches the network.

- `decide_tag`: is the destination tag already the source digest (nothing to do), absent
  or allowed to be overwritten (copy), or holding another digest that must not be
  overwritten (refused)?
- `plan_mirror`: for every component going to one registry, each distinct blob is
  left out when it names its own download `urls` (`is_external`: reported, never
  copied), skipped when the destination repository has it, mounted when a repository of that
  registry is known to have it (the source repository when source and destination share
  a registry), mounted after another component of the same run uploads it, or uploaded;
  child manifests the repository lacks are put, children before parents, and the root
  (the index) is put last, by tag, so a tag never points at missing content.
- `tally`: copied, mounted, skipped and external blobs and bytes, for the reports.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import TypedDict

from jobs.domain.manifests import Descriptor


class TagDecision(StrEnum):
    UP_TO_DATE = "up-to-date"  # the destination tag already holds the source digest
    COPY = "copy"  # absent, or another digest that may be overwritten
    REFUSED = "refused"  # another digest, and overwriting was not allowed


def decide_tag(
    source_digest: str, destination_digest: str | None, *, overwrite_allowed: bool
) -> TagDecision:
    if destination_digest == source_digest:
        return TagDecision.UP_TO_DATE
    if destination_digest is None or overwrite_allowed:
        return TagDecision.COPY
    return TagDecision.REFUSED


@dataclass(frozen=True)
class ManifestNode:
    """A manifest as read from the source: its exact bytes (copied as they are, so the
    digest is preserved), its children (for an index) and its blobs (config then
    layers, for an image)."""

    digest: str
    media_type: str
    raw: bytes = field(repr=False)
    children: tuple[ManifestNode, ...] = ()
    blobs: tuple[Descriptor, ...] = ()


def manifests_in_order(root: ManifestNode) -> tuple[ManifestNode, ...]:
    """Every manifest of the tree once, children before their parents, the root last."""
    seen: dict[str, ManifestNode] = {}

    def visit(node: ManifestNode) -> Iterator[ManifestNode]:
        for child in node.children:
            yield from visit(child)
        yield node

    for node in visit(root):
        seen.setdefault(node.digest, node)
    ordered = [n for d, n in seen.items() if d != root.digest]
    return (*ordered, root)


def unique_blobs(root: ManifestNode) -> tuple[Descriptor, ...]:
    """Every blob of the tree once, in the order the manifests list them."""
    seen: dict[str, Descriptor] = {}
    for node in manifests_in_order(root):
        for blob in node.blobs:
            seen.setdefault(blob.digest, blob)
    return tuple(seen.values())


def is_external(blob: Descriptor) -> bool:
    """Whether a mirror leaves the blob where it is: it names its own download `urls`
    (a Windows base layer, say). Decided by the `urls`, not the media type, as skopeo
    (containers/image: a layer with URLs is not copied) and regclient (`ImageCopy` skips
    layers with URLs unless asked to include them) decide: a "foreign" or
    "non-distributable" layer without `urls` can be fetched from nowhere but the registry,
    so it is copied; an ordinary layer that carries `urls` is fetched from them by every
    client that pulls it, so it is not."""
    return bool(blob.urls)


class BlobAction(StrEnum):
    SKIP = "skip"  # the destination repository has it
    MOUNT = "mount"  # another repository of the destination registry has it (or will)
    UPLOAD = "upload"  # stream it from the source
    EXTERNAL = "external"  # it names its own download URLs: left where it is


@dataclass(frozen=True)
class BlobStep:
    blob: Descriptor
    action: BlobAction
    mount_from: str | None = None  # for MOUNT: a repository of the destination registry
    wait: bool = False  # for MOUNT: another component of this run uploads it first


@dataclass(frozen=True)
class ManifestStep:
    node: ManifestNode
    put: bool  # False: the destination repository has it already


@dataclass(frozen=True)
class PlanInput:
    """One component going to one registry, with what its repository was found to hold.
    `mountable` maps digests to a repository of the same registry known to hold them."""

    repository: str
    root: ManifestNode
    present_blobs: frozenset[str] = frozenset()
    present_manifests: frozenset[str] = frozenset()
    mountable: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class CopyPlan:
    repository: str
    blobs: tuple[BlobStep, ...]
    manifests: tuple[ManifestStep, ...]  # children first; the root last, put by tag

    @property
    def root(self) -> ManifestStep:
        return self.manifests[-1]

    def steps(self, action: BlobAction) -> tuple[BlobStep, ...]:
        return tuple(s for s in self.blobs if s.action is action)

    @property
    def upload_bytes(self) -> int:
        """Bytes to stream, if every mount is accepted."""
        return sum(s.blob.size for s in self.steps(BlobAction.UPLOAD))

    @property
    def transfer_bytes(self) -> int:
        """Bytes that may have to be streamed (uploads, and mounts should they be declined)."""
        return self.upload_bytes + sum(s.blob.size for s in self.steps(BlobAction.MOUNT))


def _blob_step(blob: Descriptor, item: PlanInput, uploading: dict[str, str]) -> BlobStep:
    if is_external(blob):
        return BlobStep(blob, BlobAction.EXTERNAL)
    if blob.digest in item.present_blobs:
        return BlobStep(blob, BlobAction.SKIP)
    source = item.mountable.get(blob.digest)
    if source is not None and source != item.repository:
        return BlobStep(blob, BlobAction.MOUNT, mount_from=source)
    owner = uploading.get(blob.digest)
    if owner is not None and owner != item.repository:
        return BlobStep(blob, BlobAction.MOUNT, mount_from=owner, wait=True)
    uploading[blob.digest] = item.repository
    return BlobStep(blob, BlobAction.UPLOAD)


def plan_mirror(items: Sequence[PlanInput]) -> tuple[CopyPlan, ...]:
    """Plans for the components going to one registry, in the order given. A blob that
    several of them need and none has is uploaded once, by the first; the others mount
    it from that one's repository once it is there."""
    uploading: dict[str, str] = {}
    plans = []
    for item in items:
        blobs = tuple(_blob_step(b, item, uploading) for b in unique_blobs(item.root))
        ordered = manifests_in_order(item.root)
        children = [
            ManifestStep(node, put=node.digest not in item.present_manifests)
            for node in ordered[:-1]
        ]
        manifests = (*children, ManifestStep(item.root, put=True))
        plans.append(CopyPlan(item.repository, blobs, manifests))
    return tuple(plans)


def plan_copy(item: PlanInput) -> CopyPlan:
    """The plan for one component alone."""
    return plan_mirror([item])[0]


# ---- tallies ------------------------------------------------------------------------


class BlobOutcome(StrEnum):
    COPIED = "copied"  # streamed from the source
    MOUNTED = "mounted"  # the registry linked it from another repository
    SKIPPED = "skipped"  # already there
    EXTERNAL = "external"  # not copied: it names its own download URLs


@dataclass(frozen=True)
class BlobTally:
    copied: int = 0
    copied_bytes: int = 0
    mounted: int = 0
    mounted_bytes: int = 0
    skipped: int = 0
    skipped_bytes: int = 0
    external: int = 0  # layers left where their URLs say (the mirror does not hold them)
    external_bytes: int = 0

    def __add__(self, other: BlobTally) -> BlobTally:
        return BlobTally(
            self.copied + other.copied,
            self.copied_bytes + other.copied_bytes,
            self.mounted + other.mounted,
            self.mounted_bytes + other.mounted_bytes,
            self.skipped + other.skipped,
            self.skipped_bytes + other.skipped_bytes,
            self.external + other.external,
            self.external_bytes + other.external_bytes,
        )

    @property
    def blobs(self) -> int:
        return self.copied + self.mounted + self.skipped + self.external

    @property
    def bytes(self) -> int:
        return self.copied_bytes + self.mounted_bytes + self.skipped_bytes + self.external_bytes


def tally(outcomes: Iterable[tuple[BlobOutcome, int]]) -> BlobTally:
    """Count (outcome, size) pairs."""
    counts = {o: [0, 0] for o in BlobOutcome}
    for outcome, size in outcomes:
        counts[outcome][0] += 1
        counts[outcome][1] += size
    return BlobTally(
        copied=counts[BlobOutcome.COPIED][0],
        copied_bytes=counts[BlobOutcome.COPIED][1],
        mounted=counts[BlobOutcome.MOUNTED][0],
        mounted_bytes=counts[BlobOutcome.MOUNTED][1],
        skipped=counts[BlobOutcome.SKIPPED][0],
        skipped_bytes=counts[BlobOutcome.SKIPPED][1],
        external=counts[BlobOutcome.EXTERNAL][0],
        external_bytes=counts[BlobOutcome.EXTERNAL][1],
    )


def total(tallies: Iterable[BlobTally]) -> BlobTally:
    result = BlobTally()
    for item in tallies:
        result = result + item
    return result


# ---- report data ----------------------------------------------------------------------
# The shape `jobs.domain.sync_report.sync_report_data` and `.drift_data`
# return: plain JSON values, what the Slack renderer and the plain-text renderer read.


class TallyData(TypedDict):
    copied: int
    copied_bytes: int
    mounted: int
    mounted_bytes: int
    skipped: int
    skipped_bytes: int
    external: int  # layers not copied because they name their own download URLs
    external_bytes: int


def tally_data(value: BlobTally) -> TallyData:
    return TallyData(
        copied=value.copied,
        copied_bytes=value.copied_bytes,
        mounted=value.mounted,
        mounted_bytes=value.mounted_bytes,
        skipped=value.skipped,
        skipped_bytes=value.skipped_bytes,
        external=value.external,
        external_bytes=value.external_bytes,
    )


class ComponentData(TypedDict):
    component: str
    status: str  # copied | up-to-date | refused | failed | unverified
    source: str
    destination: str
    source_digest: str | None
    final_digest: str | None  # what the mirror tag holds after the run (None: unknown)
    blobs: TallyData
    manifests_put: int
    manifests_skipped: int
    seconds: float
    reason: str | None  # one sentence, for refused, failed and unverified


class MirrorData(TypedDict):
    mirror: str  # the configured name, or the location as given
    location: str
    ok: bool
    seconds: float
    blobs: TallyData
    components: list[ComponentData]


class GateProblemData(TypedDict):
    component: str
    reference: str
    sentences: list[str]
    missing: list[str]
    unreadable: bool


class SyncData(TypedDict):
    version: str
    status: str  # synced | refused (the gate) | incomplete
    ok: bool
    gate_passed: bool
    gate: list[GateProblemData]
    mirrors: list[MirrorData]
    blobs: TallyData
    seconds: float


class DriftCellData(TypedDict):
    mirror: str
    digest: str | None
    status: str  # same | different | missing | unreadable
    error: str | None


class DriftRowData(TypedDict):
    component: str
    reference: str
    source_digest: str | None
    source_error: str | None
    drifted: bool
    mirrors: list[DriftCellData]


class DriftData(TypedDict):
    version: str
    drifted: bool
    mirrors: list[str]
    rows: list[DriftRowData]
