"""The mirror sync's pure parts: the copy plan, the gate, tallies, reports, the drift view,
target resolution, and the CLI's refusal of invalid input before any contact."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.domain import messages
from jobs.domain.config import MirrorError
from jobs.domain.config_reader import parse_config
from jobs.domain.copy_plan import (
    BlobAction,
    BlobOutcome,
    BlobTally,
    ManifestNode,
    PlanInput,
    TagDecision,
    decide_tag,
    manifests_in_order,
    plan_copy,
    plan_mirror,
    tally,
    total,
    unique_blobs,
)
from jobs.domain.manifests import Descriptor
from jobs.domain.platforms import Platform
from jobs.domain.references import parse_reference
from jobs.domain.sync_report import (
    ComponentReport,
    ComponentStatus,
    DigestRead,
    DriftStatus,
    GateProblem,
    MirrorReport,
    SyncReport,
    drift_data,
    drift_status,
    drift_table,
    sync_report_data,
)
from jobs.domain.sync_request import CopyJob, Mirror, release_jobs
from jobs.domain.verdict import EntryFacts, judge, unreadable
from jobs.domain.versions import ComponentError, parse_version
from jobs.registry.auth import Challenge, TokenResponse, authorization_flow, mount_scope
from jobs.registry.client import (
    DigestMismatchError,
    RegistryClient,
    registry_error_code,
    same_origin,
    upload_url,
)
from jobs.registry.inspection import Inspection
from jobs.usecases.sync import (
    MAX_WARM_CONNECTIONS,
    SyncInputError,
    gate_problems,
    parse_sync_request,
    resolve_mirrors,
    source_connections,
)
from tests.conftest import REPO

AMD = Platform("linux", "amd64")
ARM = Platform("linux", "arm64")
REQUIRED = (AMD, ARM)


def d(n: int) -> str:
    return "sha256:" + hashlib.sha256(str(n).encode()).hexdigest()


def blob(
    n: int, size: int = 10, media_type: str = "application/vnd.oci.image.layer.v1.tar"
) -> Descriptor:
    return Descriptor(media_type, d(n), size)


def image(n: int, *blobs: Descriptor) -> ManifestNode:
    return ManifestNode(d(n), "application/vnd.oci.image.manifest.v1+json", b"m%d" % n, blobs=blobs)


def index(n: int, *children: ManifestNode) -> ManifestNode:
    return ManifestNode(d(n), "application/vnd.oci.image.index.v1+json", b"i%d" % n, children)


# A release as buildx makes it: two images and their attestations, the attestation
# config shared.
CFG_AMD, L_AMD, CFG_ARM, L_ARM, ATT_CFG, ATT_A, ATT_B, BASE = (
    blob(101, 5),
    blob(102, 1000),
    blob(103, 6),
    blob(104, 2000),
    blob(105, 7),
    blob(106, 30),
    blob(107, 31),
    blob(108, 500),
)
IMG_AMD = image(11, CFG_AMD, BASE, L_AMD)
IMG_ARM = image(12, CFG_ARM, BASE, L_ARM)
ATT_AMD = image(13, ATT_CFG, ATT_A)
ATT_ARM = image(14, ATT_CFG, ATT_B)
ROOT = index(1, IMG_AMD, IMG_ARM, ATT_AMD, ATT_ARM)


# ---- decide_tag ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("destination", "overwrite", "expected"),
    [
        (d(1), False, TagDecision.UP_TO_DATE),
        (d(1), True, TagDecision.UP_TO_DATE),
        (None, False, TagDecision.COPY),
        (None, True, TagDecision.COPY),
        (d(2), False, TagDecision.REFUSED),
        (d(2), True, TagDecision.COPY),
    ],
)
def test_decide_tag(destination: str | None, overwrite: bool, expected: TagDecision) -> None:
    assert decide_tag(d(1), destination, overwrite_allowed=overwrite) is expected


# ---- the tree ----------------------------------------------------------------------------


def test_manifests_children_first_root_last_once() -> None:
    nested = index(2, IMG_AMD, index(3, IMG_ARM, IMG_AMD), ATT_AMD)
    order = [n.digest for n in manifests_in_order(nested)]
    assert order[-1] == d(2)
    assert sorted(order) == sorted(set(order))
    assert order.index(d(12)) < order.index(d(3))
    assert order.index(d(11)) < order.index(d(3))
    assert set(order) == {d(2), d(3), d(11), d(12), d(13)}


def test_unique_blobs_keeps_first_seen_order() -> None:
    assert [b.digest for b in unique_blobs(ROOT)] == [
        CFG_AMD.digest,
        BASE.digest,
        L_AMD.digest,
        CFG_ARM.digest,
        L_ARM.digest,
        ATT_CFG.digest,
        ATT_A.digest,
        ATT_B.digest,
    ]
    assert unique_blobs(image(9)) == ()


# ---- plan_copy ---------------------------------------------------------------------------


def actions(plan_blobs: object) -> dict[str, BlobAction]:
    return {s.blob.digest: s.action for s in plan_blobs}  # type: ignore[attr-defined]


def test_cold_plan_uploads_every_blob_once_and_puts_every_manifest() -> None:
    plan = plan_copy(PlanInput("m/runtime", ROOT))
    assert set(actions(plan.blobs).values()) == {BlobAction.UPLOAD}
    assert len(plan.blobs) == 8
    assert [s.node.digest for s in plan.manifests] == [d(11), d(12), d(13), d(14), d(1)]
    assert all(s.put for s in plan.manifests)
    assert plan.root.node is ROOT
    assert plan.upload_bytes == sum(b.size for b in unique_blobs(ROOT))
    assert plan.transfer_bytes == plan.upload_bytes


def test_present_blobs_are_skipped_and_present_children_not_put() -> None:
    present = frozenset(b.digest for b in (CFG_AMD, BASE, L_AMD, ATT_CFG, ATT_A))
    plan = plan_copy(PlanInput("m/runtime", ROOT, present, frozenset({d(11), d(13), d(1)})))
    got = actions(plan.blobs)
    assert [k for k, v in got.items() if v is BlobAction.UPLOAD] == [
        CFG_ARM.digest,
        L_ARM.digest,
        ATT_B.digest,
    ]
    assert all(got[k] is BlobAction.SKIP for k in present)
    assert {s.node.digest: s.put for s in plan.manifests} == {
        d(11): False,
        d(12): True,
        d(13): False,
        d(14): True,
        d(1): True,
    }
    assert plan.upload_bytes == CFG_ARM.size + L_ARM.size + ATT_B.size


def test_only_the_missing_layer_is_copied() -> None:
    everything = frozenset(b.digest for b in unique_blobs(ROOT))
    children = frozenset({d(11), d(12), d(13), d(14)})
    plan = plan_copy(PlanInput("m/runtime", ROOT, everything - {L_ARM.digest}, children))
    assert plan.steps(BlobAction.UPLOAD) == tuple(s for s in plan.blobs if s.blob == L_ARM)
    assert [s.node.digest for s in plan.manifests if s.put] == [d(1)]


def test_same_registry_source_is_mounted() -> None:
    mountable = {b.digest: "src/runtime" for b in unique_blobs(ROOT)}
    plan = plan_copy(PlanInput("m/runtime", ROOT, frozenset({BASE.digest}), mountable=mountable))
    got = actions(plan.blobs)
    assert got[BASE.digest] is BlobAction.SKIP
    mounts = plan.steps(BlobAction.MOUNT)
    assert len(mounts) == 7 and all(s.mount_from == "src/runtime" and not s.wait for s in mounts)
    assert plan.upload_bytes == 0
    assert plan.transfer_bytes == sum(b.size for b in unique_blobs(ROOT)) - BASE.size


def test_mount_from_the_repository_itself_is_an_upload() -> None:
    plan = plan_copy(PlanInput("m/runtime", ROOT, mountable={BASE.digest: "m/runtime"}))
    assert actions(plan.blobs)[BASE.digest] is BlobAction.UPLOAD


FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
NONDISTRIBUTABLE = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
URLS = ("https://mcr.microsoft.com/v2/windows/servercore/blobs/sha256:00",)


def test_issue12_item9_a_foreign_or_nondistributable_layer_without_urls_is_copied() -> None:
    # The registry is the only place such a layer can be fetched from: the mirror must
    # hold it (skopeo and regclient copy it; deciding by media type left it out).
    foreign = blob(200, 9999, FOREIGN)
    nondist = blob(201, 9999, NONDISTRIBUTABLE)
    plan = plan_copy(PlanInput("m/w", image(20, CFG_AMD, foreign, nondist)))
    assert actions(plan.blobs) == {
        CFG_AMD.digest: BlobAction.UPLOAD,
        foreign.digest: BlobAction.UPLOAD,
        nondist.digest: BlobAction.UPLOAD,
    }
    assert plan.upload_bytes == CFG_AMD.size + 2 * 9999


def test_issue12_item9_a_layer_that_names_urls_is_left_out_whatever_its_type() -> None:
    ordinary = replace(blob(202, 777), urls=URLS)
    foreign = replace(blob(203, 888, FOREIGN), urls=URLS)
    plan = plan_copy(
        PlanInput("m/w", image(21, CFG_AMD, ordinary, foreign), present_blobs=frozenset())
    )
    assert actions(plan.blobs) == {
        CFG_AMD.digest: BlobAction.UPLOAD,
        ordinary.digest: BlobAction.EXTERNAL,
        foreign.digest: BlobAction.EXTERNAL,
    }
    assert plan.transfer_bytes == CFG_AMD.size  # nothing of them is streamed


def test_issue12_item9_left_out_layers_are_counted_and_named_in_both_reports() -> None:
    counted = tally([(BlobOutcome.COPIED, 5), (BlobOutcome.EXTERNAL, 1500)])
    assert (counted.copied, counted.external, counted.external_bytes) == (1, 1, 1500)
    assert counted.skipped == 0 and counted.blobs == 2
    report = component("windows", ComponentStatus.COPIED, blobs=counted)
    data = sync_report_data(
        SyncReport("v1.0.0", (), (MirrorReport(MIRROR, (report,), 1.0),), seconds=1.0)
    )
    sentence = (
        "1 layer (1.5 kB) not copied: it names its own download URLs (a foreign layer), "
        "so the mirror does not hold it and pulls fetch it from there"
    )
    assert messages.sync_layers_left_out(1, 1500) == sentence
    assert f"  - windows: {sentence}" in messages.sync_report_text(data)
    assert data["blobs"]["external"] == 1 and data["blobs"]["external_bytes"] == 1500
    # The Slack sync message: the component's line carries the same sentence.
    from handlers.blocks import sync_message
    from jobs.usecases.sync_job import SyncRecord, SyncState, _record, _Tracker

    tracker = _Tracker()
    tracker.done["windows"] = replace(report, final_digest=d(9))
    fields = {
        "id": "s1",
        "version": "v1.0.0",
        "run_id": "r1",
        "mirror": "lab-mirror",
        "requested_by": "U1",
        "channel": "C1",
        "mode": "approved",
        "digests": json.dumps({"windows": d(9)}),
        "state": SyncState.SYNCED.value,
        **tracker.fields(),
    }
    record: SyncRecord = _record(fields)
    shown = json.dumps(sync_message(record).blocks)
    assert sentence in shown
    many = messages.sync_layers_left_out(2, 3000)
    assert many.startswith("2 layers (3.0 kB) not copied: they name their own download URLs")


def test_a_shared_blob_is_uploaded_once_per_registry() -> None:
    other = index(2, image(21, blob(301), BASE), image(22, blob(302), BASE))
    third = index(3, image(31, blob(303), BASE))
    plans = plan_mirror(
        [
            PlanInput("m/runtime", ROOT),
            PlanInput("m/gateway", other),
            PlanInput("m/kv", third, present_blobs=frozenset({BASE.digest})),
        ]
    )
    first, second, last = (actions(p.blobs) for p in plans)
    assert first[BASE.digest] is BlobAction.UPLOAD
    assert second[BASE.digest] is BlobAction.MOUNT
    [step] = [s for s in plans[1].blobs if s.blob == BASE]
    assert step.wait and step.mount_from == "m/runtime"
    assert last[BASE.digest] is BlobAction.SKIP


def test_known_holder_beats_waiting_for_an_upload() -> None:
    plans = plan_mirror(
        [
            PlanInput("m/a", image(1, BASE)),
            PlanInput("m/b", image(2, BASE), mountable={BASE.digest: "src/b"}),
        ]
    )
    [step] = plans[1].blobs
    assert step.action is BlobAction.MOUNT and step.mount_from == "src/b" and not step.wait


# Property: for any trees and holdings, each plan lists each blob of its tree once, the
# actions follow the holdings, and no digest is uploaded twice to one registry.

digests = st.integers(min_value=1000, max_value=1030)


@st.composite
def trees(draw: st.DrawFn) -> ManifestNode:
    children = []
    for i in range(draw(st.integers(1, 4))):
        layer_ids = draw(st.lists(digests, min_size=1, max_size=4))
        children.append(
            image(500 + i + 10 * draw(st.integers(0, 50)), *(blob(x, x) for x in layer_ids))
        )
    return index(draw(st.integers(2000, 3000)), *children)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(trees(), st.sets(digests), st.sets(digests), st.booleans()),
        min_size=1,
        max_size=4,
    )
)
def test_plan_properties(items: list[tuple[ManifestNode, set[int], set[int], bool]]) -> None:
    inputs = [
        PlanInput(
            f"m/c{i}",
            root,
            frozenset(d(x) for x in present),
            frozenset(),
            {d(x): f"src/c{i}" for x in mountable} if same_registry else {},
        )
        for i, (root, present, mountable, same_registry) in enumerate(items)
    ]
    plans = plan_mirror(inputs)
    uploaded: list[str] = []
    for item, plan in zip(inputs, plans, strict=True):
        listed = [s.blob.digest for s in plan.blobs]
        assert listed == [b.digest for b in unique_blobs(item.root)]
        for step in plan.blobs:
            digest = step.blob.digest
            if digest in item.present_blobs:
                assert step.action is BlobAction.SKIP
            elif digest in item.mountable:
                assert step.action is BlobAction.MOUNT and step.mount_from == item.mountable[digest]
            elif digest in uploaded:
                assert step.action is BlobAction.MOUNT and step.wait
                assert step.mount_from in {p.repository for p in plans}
            else:
                assert step.action is BlobAction.UPLOAD
                uploaded.append(digest)
        order = [s.node.digest for s in plan.manifests]
        assert order[-1] == item.root.digest and plan.root.put
        assert len(order) == len(set(order))
    assert len(uploaded) == len(set(uploaded))


# ---- tallies ------------------------------------------------------------------------------


def test_tally_and_total() -> None:
    counted = tally(
        [
            (BlobOutcome.COPIED, 10),
            (BlobOutcome.COPIED, 5),
            (BlobOutcome.MOUNTED, 7),
            (BlobOutcome.SKIPPED, 1),
            (BlobOutcome.SKIPPED, 2),
            (BlobOutcome.SKIPPED, 3),
        ]
    )
    assert counted == BlobTally(2, 15, 1, 7, 3, 6)
    assert counted.blobs == 6 and counted.bytes == 28
    assert tally([]) == BlobTally()
    assert total([counted, counted, BlobTally()]) == BlobTally(4, 30, 2, 14, 6, 12)
    assert total([]) == BlobTally()


# ---- the gate -----------------------------------------------------------------------------


def inspection(ref: str, digest: str | None, platforms: tuple[Platform, ...]) -> Inspection:
    if digest is None:
        return Inspection(
            parse_reference(ref), None, None, unreadable(REQUIRED, "not found in the registry")
        )
    facts = [EntryFacts(d(50 + i), p, p) for i, p in enumerate(platforms)]
    return Inspection(parse_reference(ref), digest, "index", judge(REQUIRED, facts))


def test_gate_passes_when_every_source_is_complete() -> None:
    inspections = {
        "runtime": inspection("r.io/a/runtime:v1.0.0", d(1), (AMD, ARM)),
        "gateway": inspection("r.io/a/gateway:v1.0.0", d(2), (ARM, AMD)),
    }
    assert gate_problems("v1.0.0", inspections) == ()
    assert gate_problems("v1.0.0", inspections, {"runtime": d(1), "gateway": d(2)}) == ()


def test_gate_names_each_component_and_missing_platform() -> None:
    inspections = {
        "runtime": inspection("r.io/a/runtime:v1.0.0", d(1), (ARM,)),
        "gateway": inspection("r.io/a/gateway:v1.0.0", d(2), (AMD, ARM)),
        "kv": inspection("r.io/a/kv:v1.0.0", d(3), (AMD,)),
        "meta": inspection("r.io/a/meta:v1.0.0", None, ()),
    }
    problems = gate_problems("v1.0.0", inspections)
    assert [p.component for p in problems] == ["runtime", "kv", "meta"]
    runtime, kv, meta = problems
    assert runtime.sentences == (
        "runtime v1.0.0 is missing linux/amd64; the index has linux/arm64 only",
    )
    assert runtime.missing == (AMD,) and not runtime.unreadable
    assert kv.missing == (ARM,)
    assert meta.unreadable and meta.sentences == (
        "meta v1.0.0 cannot be read: not found in the registry",
    )


def test_gate_refuses_a_source_that_moved_since_approval() -> None:
    inspections = {"runtime": inspection("r.io/a/runtime:v1.0.0", d(9), (AMD, ARM))}
    [problem] = gate_problems("v1.0.0", inspections, {"runtime": d(1)})
    assert problem.component == "runtime" and not problem.unreadable
    assert "moved since it was approved" in problem.sentences[0]
    assert messages.short_digest(d(9)) in problem.sentences[0]
    assert messages.short_digest(d(1)) in problem.sentences[0]


# ---- reports -------------------------------------------------------------------------------

MIRROR = Mirror("lab-mirror", "127.0.0.1:5002/ns")


def component(name: str, status: ComponentStatus, **kwargs: object) -> ComponentReport:
    values: dict[str, object] = dict(
        mirror="lab-mirror",
        component=name,
        source=f"r.io/a/{name}:v1.0.0",
        destination=f"127.0.0.1:5002/ns/{name}:v1.0.0",
        source_digest=d(1),
        final_digest=d(1),
        status=status,
    )
    values.update(kwargs)
    return ComponentReport(**values)  # type: ignore[arg-type]


def test_report_data_and_text_of_a_complete_sync() -> None:
    copied = component(
        "runtime",
        ComponentStatus.COPIED,
        blobs=BlobTally(3, 3_000_000, 1, 20, 2, 500),
        manifests_put=3,
        manifests_skipped=1,
        seconds=1.25,
    )
    current = component("gateway", ComponentStatus.UP_TO_DATE)
    report = SyncReport("v1.0.0", (), (MirrorReport(MIRROR, (copied, current), 1.3),), seconds=1.5)
    data = sync_report_data(report)
    assert data["status"] == "synced" and data["ok"] and data["gate_passed"]
    assert data["blobs"] == {
        "copied": 3,
        "copied_bytes": 3_000_000,
        "mounted": 1,
        "mounted_bytes": 20,
        "skipped": 2,
        "skipped_bytes": 500,
        "external": 0,
        "external_bytes": 0,
    }
    [mirror] = data["mirrors"]
    assert mirror["mirror"] == "lab-mirror" and mirror["location"] == "127.0.0.1:5002/ns"
    assert [c["status"] for c in mirror["components"]] == ["copied", "up-to-date"]
    assert mirror["components"][0]["manifests_put"] == 3
    assert json.loads(json.dumps(data)) == data
    text = messages.sync_report_text(data)
    assert "2 of 2 components in sync and verified" in text
    assert "3 (3.0 MB)" in text and "up to date" in text


def test_report_of_a_refused_gate() -> None:
    problem = GateProblem(
        "runtime",
        "r.io/a/runtime:v1.0.0",
        ("runtime v1.0.0 is missing linux/amd64; the index has linux/arm64 only",),
        (AMD,),
    )
    report = SyncReport("v1.0.0", (problem,), ())
    data = sync_report_data(report)
    assert data["status"] == "refused" and not data["ok"] and not data["gate_passed"]
    assert data["gate"][0]["missing"] == ["linux/amd64"]
    assert not report.registry_failure
    text = messages.sync_report_text(data)
    assert text.splitlines() == [
        "nothing was copied for v1.0.0: the release does not pass the platform check at the source",
        "  - runtime v1.0.0 is missing linux/amd64; the index has linux/arm64 only",
    ]
    unreadable_source = SyncReport("v1.0.0", (GateProblem("x", "r", ("s",), (), True),), ())
    assert unreadable_source.registry_failure


@pytest.mark.parametrize(
    ("status", "registry_error", "ok", "failure"),
    [
        (ComponentStatus.REFUSED, False, False, False),
        (ComponentStatus.UNVERIFIED, False, False, False),
        (ComponentStatus.FAILED, True, False, True),
        (ComponentStatus.COPIED, False, True, False),
    ],
)
def test_report_status(
    status: ComponentStatus, registry_error: bool, ok: bool, failure: bool
) -> None:
    bad = component("runtime", status, reason="why", registry_error=registry_error)
    report = SyncReport("v1.0.0", (), (MirrorReport(MIRROR, (bad,)),))
    assert report.ok is ok and report.registry_failure is failure
    data = sync_report_data(report)
    assert data["status"] == ("synced" if ok else "incomplete")
    if not ok:
        assert "  - runtime: why" in messages.sync_report_text(data)


def test_progress_line() -> None:
    line = messages.sync_progress_line(100_000_000, 300_000_000, 2, 10, width=30)
    assert line.startswith("[##########....................]  33%")
    assert "100.0 MB of 300.0 MB" in line and "2/10 copies done" in line
    assert "100%" in messages.sync_progress_line(0, 0, 1, 1)
    assert "  0%" in messages.sync_progress_line(-5, 10, 0, 1)


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1.0 kB"),
        (209_715_200, "209.7 MB"),
        (5 * 10**12, "5000.0 GB"),
    ],
)
def test_human_bytes(count: int, text: str) -> None:
    assert messages.human_bytes(count) == text


# ---- drift ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "mirror", "expected"),
    [
        (DigestRead(d(1)), DigestRead(d(1)), DriftStatus.SAME),
        (DigestRead(d(1)), DigestRead(d(2)), DriftStatus.DIFFERENT),
        (DigestRead(d(1)), DigestRead(None), DriftStatus.MISSING),
        (DigestRead(None), DigestRead(None), DriftStatus.MISSING),
        (DigestRead(None), DigestRead(d(2)), DriftStatus.DIFFERENT),
        (DigestRead(d(1)), DigestRead(None, "refused"), DriftStatus.UNREADABLE),
        (DigestRead(None, "down"), DigestRead(d(1)), DriftStatus.UNREADABLE),
    ],
)
def test_drift_status(source: DigestRead, mirror: DigestRead, expected: DriftStatus) -> None:
    assert drift_status(source, mirror) is expected


def test_drift_table_and_its_data() -> None:
    rows = drift_table(
        ["runtime", "gateway", "kv"],
        {"runtime": "r.io/a/runtime:v1", "gateway": "r.io/a/gateway:v1", "kv": "r.io/a/kv:v1"},
        ["beijing", "shanghai"],
        {"runtime": DigestRead(d(1)), "gateway": DigestRead(d(2)), "kv": DigestRead(None, "x")},
        {
            "beijing": {"runtime": DigestRead(d(1)), "gateway": DigestRead(d(2))},
            "shanghai": {"runtime": DigestRead(d(7)), "gateway": DigestRead(d(2))},
        },
    )
    runtime, gateway, kv = rows
    assert [c.status for c in runtime.cells] == [DriftStatus.SAME, DriftStatus.DIFFERENT]
    assert runtime.drifted and not runtime.unreadable
    assert not gateway.drifted
    assert [c.status for c in kv.cells] == [DriftStatus.UNREADABLE, DriftStatus.UNREADABLE]
    assert kv.unreadable
    data = drift_data("v1", ["beijing", "shanghai"], rows)
    assert data["drifted"] and [r["drifted"] for r in data["rows"]] == [True, False, True]
    assert data["rows"][0]["mirrors"][1] == {
        "mirror": "shanghai",
        "digest": d(7),
        "status": "different",
        "error": None,
    }
    text = messages.drift_text(data)
    assert "mirrors differ from the source" in text
    assert f"DIFFERENT {messages.short_digest(d(7))}" in text
    assert "kv at the source: x" in text
    same = drift_data(
        "v1",
        ["beijing"],
        drift_table(
            ["runtime"],
            {},
            ["beijing"],
            {"runtime": DigestRead(d(1))},
            {"beijing": {"runtime": DigestRead(d(1))}},
        ),
    )
    assert not same["drifted"] and "every mirror equals the source" in messages.drift_text(same)


# ---- targets --------------------------------------------------------------------------------

CONFIG_TEXT = """
repository = "127.0.0.1:5000/aibrix-sample"
[source]
path = "."
[mirrors]
lab-mirror = "127.0.0.1:5002/aibrix-sample"
beijing = "registry.bj.example.com/aibrix"
[[components]]
name = "runtime"
[[components]]
name = "gateway-plugins"
"""


@pytest.fixture
def config(tmp_path: Path):  # type: ignore[no-untyped-def]
    path = tmp_path / "aibrix.toml"
    path.write_text(CONFIG_TEXT)
    return parse_config(CONFIG_TEXT, path)


def test_resolve_mirrors(config) -> None:  # type: ignore[no-untyped-def]
    mirrors = resolve_mirrors(
        config, ["lab-mirror", "registry.sh.example.com:5443/a/b", "127.0.0.1:5002/aibrix-sample"]
    )
    assert mirrors == (
        Mirror("lab-mirror", "127.0.0.1:5002/aibrix-sample"),
        Mirror("registry.sh.example.com:5443/a/b", "registry.sh.example.com:5443/a/b"),
    )
    assert mirrors[1].registry == "registry.sh.example.com:5443"
    assert str(mirrors[0].reference("runtime", "v1.0.0")) == (
        "127.0.0.1:5002/aibrix-sample/runtime:v1.0.0"
    )


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("nowhere", "is neither a configured mirror (beijing, lab-mirror)"),
        ("Beijing", "is neither a configured mirror"),
        ("https://registry.example.com/x", "is neither a configured mirror"),
        ("registry.example.com/UPPER", "is neither a configured mirror"),
        ("registry.example.com:99999/x", "is neither a configured mirror"),
        ("127.0.0.1:5000/aibrix-sample", "is the release repository itself"),
        ("lab mirror", "is neither"),
        ("-x", "is neither"),
    ],
)
def test_resolve_mirrors_refuses(config, text: str, says: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(MirrorError) as error:
        resolve_mirrors(config, [text])
    assert says in str(error.value)


def test_resolve_no_mirror(config) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(MirrorError):
        resolve_mirrors(config, [])


def _jobs(sources: dict[str, str], mirrors: list[str]) -> list[CopyJob]:
    return [
        CopyJob(
            component,
            parse_reference(f"{source}/{component}:v1"),
            Mirror(mirror, f"{mirror}/ns"),
            parse_reference(f"{mirror}/ns/{component}:v1"),
        )
        for mirror in mirrors
        for component, source in sources.items()
    ]


def test_warm_connections_one_per_child_the_gate_reads_per_source_registry() -> None:
    # Connections begun ahead of the gate: one per required platform of each component,
    # counted once whatever the number of mirrors, per source registry; never to a mirror.
    jobs = _jobs(
        {"a": "src:5000/p", "b": "src:5000/p", "c": "src:5000/q", "d": "other:443/p"},
        ["m1:5000", "m2:5000"],
    )
    wanted = source_connections(jobs, REQUIRED)
    assert [(ref.api_host, count) for ref, count in wanted] == [("src:5000", 6), ("other:443", 2)]
    assert source_connections(jobs, ()) == [(wanted[0][0], 3), (wanted[1][0], 1)]
    many = _jobs({f"c{i}": "src:5000/p" for i in range(40)}, ["m1:5000"])
    assert source_connections(many, REQUIRED)[0][1] == MAX_WARM_CONNECTIONS


def test_release_jobs(config) -> None:  # type: ignore[no-untyped-def]
    mirrors = resolve_mirrors(config, ["lab-mirror", "beijing"])
    jobs = release_jobs(config, parse_version("v0.3.0-rc.2"), mirrors)
    assert [(j.mirror.label, j.component) for j in jobs] == [
        ("lab-mirror", "runtime"),
        ("lab-mirror", "gateway-plugins"),
        ("beijing", "runtime"),
        ("beijing", "gateway-plugins"),
    ]
    assert str(jobs[0].source) == "127.0.0.1:5000/aibrix-sample/runtime:v0.3.0-rc.2"
    assert str(jobs[3].destination) == "registry.bj.example.com/aibrix/gateway-plugins:v0.3.0-rc.2"
    only = release_jobs(config, parse_version("v1.0.0"), mirrors[:1], ["runtime", "runtime"])
    assert [j.component for j in only] == ["runtime"]
    with pytest.raises(ComponentError):
        release_jobs(config, parse_version("v1.0.0"), mirrors, ["nope"])


# ---- registry helpers -----------------------------------------------------------------------


def test_registry_error_code_is_the_code_only_never_the_free_text() -> None:
    body = b'{"errors":[{"code":"DIGEST_INVALID","message":"provided digest did not match"}]}'
    assert registry_error_code(body) == "DIGEST_INVALID"
    assert registry_error_code(b"<html>") is None
    assert registry_error_code(b'{"errors":[]}') is None
    assert registry_error_code(b'{"errors":[{"code":"X\\n\\u0007"}]}') is None
    assert registry_error_code(b'{"errors":[{"code":"Basic dXNlcjpwYXNz"}]}') is None
    assert registry_error_code(b'{"errors":[{"message":"' + b"m" * 500 + b'"}]}') is None


def test_upload_url() -> None:
    post = "http://r:5000/v2/a/b/blobs/uploads/"
    assert upload_url(post, "/v2/a/b/blobs/uploads/u1?_state=x%3D", d(1)) == (
        f"http://r:5000/v2/a/b/blobs/uploads/u1?_state=x%3D&digest={d(1)}"
    )
    assert (
        upload_url(post, "https://s3.example/up/u1", d(1))
        == f"https://s3.example/up/u1?digest={d(1)}"
    )


def test_same_origin() -> None:
    assert same_origin("http://127.0.0.1:5000/v2/x", "127.0.0.1:5000")
    assert not same_origin("http://127.0.0.1:5001/v2/x", "127.0.0.1:5000")
    assert not same_origin("https://evil.example/v2/x", "registry.example.com")
    assert same_origin("https://registry.example.com/v2/x", "registry.example.com")
    assert same_origin("http://[::1]:5000/v2/", "[::1]:5000")


# ---- a blob that does not match its digest is never completed --------------------------------


@dataclass
class FakeRegistry:
    """A source that serves the wrong bytes for its blob (right length), and a destination
    that records whether an upload received every byte."""

    host: str
    payload: bytes
    puts_started: int = 0
    puts_complete: int = 0
    uploads_deleted: int = 0


@pytest.fixture
async def fake_registry() -> AsyncIterator[FakeRegistry]:
    payload = os.urandom(3 * 1024 * 1024)
    tampered = bytearray(payload)
    tampered[-1] ^= 1
    fake = FakeRegistry("", payload)

    async def get_blob(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(len(tampered))})
        await response.prepare(request)
        for i in range(0, len(tampered), 65536):
            await response.write(bytes(tampered[i : i + 65536]))
        return response

    async def post_upload(request: web.Request) -> web.Response:
        return web.Response(status=202, headers={"Location": "/v2/dst/blobs/uploads/u1?_state=s"})

    async def put_upload(request: web.Request) -> web.Response:
        fake.puts_started += 1
        received = 0
        async for chunk in request.content.iter_any():
            received += len(chunk)
        if received == int(request.headers["Content-Length"]):
            fake.puts_complete += 1
        return web.Response(status=201)

    async def delete_upload(request: web.Request) -> web.Response:
        fake.uploads_deleted += 1
        return web.Response(status=204)

    app = web.Application()
    app.router.add_get("/v2/src/blobs/{digest}", get_blob)
    app.router.add_post("/v2/dst/blobs/uploads/", post_upload)
    app.router.add_put("/v2/dst/blobs/uploads/u1", put_upload)
    app.router.add_delete("/v2/dst/blobs/uploads/u1", delete_upload)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.host = f"127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    yield fake
    await runner.cleanup()


async def test_a_tampered_blob_is_abandoned_before_its_last_byte(
    fake_registry: FakeRegistry,
) -> None:
    fake = fake_registry
    digest = "sha256:" + hashlib.sha256(fake.payload).hexdigest()
    good = Descriptor("application/octet-stream", digest, len(fake.payload))
    async with RegistryClient() as client:
        with pytest.raises(DigestMismatchError) as error:
            await client.copy_blob(
                parse_reference(f"{fake.host}/src:x"), parse_reference(f"{fake.host}/dst:x"), good
            )
    assert "does not match its digest" in str(error.value)
    assert fake.puts_started == 1
    assert fake.puts_complete == 0, "the upload must never receive every byte"
    assert 0 < client.bytes_uploaded < len(fake.payload)
    assert fake.uploads_deleted == 1, "the abandoned upload session is cancelled"


# ---- the CLI refuses invalid input before any contact ---------------------------------------

BOT = str(REPO / ".venv" / "bin" / "aibrix-bot")


async def run_bot(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        BOT,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.fixture
async def listener(tmp_path: Path) -> AsyncIterator[tuple[Path, list[int]]]:
    """A config whose registry and mirror are a port that records any connection."""
    accepted: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    path = tmp_path / "aibrix.toml"
    path.write_text(
        f'repository = "127.0.0.1:{port}/ns"\n[source]\npath = "."\n'
        f'[mirrors]\nm = "127.0.0.1:{port}/mirror"\n[[components]]\nname = "runtime"\n'
    )
    yield path, accepted
    server.close()
    await server.wait_closed()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["sync", "0.3.0", "--to", "m"], "must start with a lowercase 'v'"),
        (["sync", "v0.3.0+build", "--to", "m"], "build metadata"),
        (["sync", "v0.3.0-arm64", "--to", "m"], "staging tag"),
        (["sync", "v0.3.0", "--to", "nowhere"], "is neither a configured mirror (m)"),
        (["sync", "v0.3.0", "--to", "127.0.0.1:99999/x"], "is neither a configured mirror"),
        (["sync", "v0.3.0", "--to", "{repository}"], "is the release repository itself"),
        (["sync", "v0.3.0", "--to", "m", "--component", "nope"], "is not a component"),
        (["sync", "v0.3.0", "--to", "m", "--insecure-registry", "bad host"], "not a registry host"),
        (["sync", "v0.3.0"], "--to"),
        (["sync", "--to", "m"], "VERSION"),
        (["inspect", "--across", "v0.3"], "is not a release version"),
        (["inspect", "--across", "v0.3.0", "--to", "nowhere"], "is neither a configured mirror"),
        (["inspect", "--across", "v0.3.0", "127.0.0.1:5000/a/b:v1"], "not both"),
        (["inspect", "--to", "m", "127.0.0.1:5000/a/b:v1"], "--to goes with --across"),
    ],
)
async def test_invalid_sync_input_exits_2_without_contact(
    listener: tuple[Path, list[int]], args: list[str], says: str
) -> None:
    path, accepted = listener
    repository = path.read_text().split('"')[1]
    argv = [a.replace("{repository}", repository) for a in args]
    code, out, err = await run_bot(*argv, "--config", str(path))
    assert code == 2, out + err
    assert says in err
    assert out == ""
    assert accepted == []


async def test_bad_config_file_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('repository = "nope"\n[source]\npath = "."\n[[components]]\nname = "a"\n')
    code, out, err = await run_bot("sync", "v0.3.0", "--to", "m", "--config", str(path))
    assert code == 2 and out == ""
    assert "bad.toml: repository: 'nope' is not a registry location" in err


def test_parse_sync_request(config) -> None:  # type: ignore[no-untyped-def]
    request = parse_sync_request(config, "v0.3.0-rc.2", ["lab-mirror"], ["runtime", "runtime"])
    assert str(request.version) == "v0.3.0-rc.2"
    assert request.mirrors == (Mirror("lab-mirror", "127.0.0.1:5002/aibrix-sample"),)
    assert request.components == ("runtime",)
    assert parse_sync_request(config, "v1.0.0", ["beijing"]).components is None


@pytest.mark.parametrize(
    ("version", "mirrors", "components", "says"),
    [
        ("v1", ["lab-mirror"], None, "is not a release version"),
        ("v1.0.0", [], None, "no mirror given"),
        ("v1.0.0", ["nowhere"], None, "is neither a configured mirror"),
        ("v1.0.0", ["lab-mirror"], ["nope"], "is not a component of this project"),
        ("v1.0.0-amd64", ["lab-mirror"], None, "staging tag"),
    ],
)
def test_parse_sync_request_refuses(  # type: ignore[no-untyped-def]
    config, version: str, mirrors: list[str], components: list[str] | None, says: str
) -> None:
    with pytest.raises(SyncInputError) as error:
        parse_sync_request(config, version, mirrors, components)
    assert says in str(error.value)


# ---- token scopes of a cross-repository mount ------------------------------------------------


def test_a_mount_asks_the_token_service_for_push_here_and_pull_there() -> None:
    challenge = Challenge("bearer", {"realm": "https://auth.example/token", "service": "reg"})
    flow = authorization_flow(challenge, mount_scope("ns/runtime", "ns/gateway-plugins"), None)
    request = next(flow)
    assert request.url == (
        "https://auth.example/token?scope=repository%3Ans%2Fruntime%3Apull%2Cpush"
        "&scope=repository%3Ans%2Fgateway-plugins%3Apull&service=reg"
    )
    with pytest.raises(StopIteration) as done:
        flow.send(TokenResponse(200, b'{"token": "T"}'))
    assert done.value.value.header == "Bearer T"
