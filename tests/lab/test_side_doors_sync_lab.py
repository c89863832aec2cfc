"""Issue 10, item 1: `/aibrix sync` is no side door. From Slack a release goes only to a
configured mirror, only when promoted (or an approver's explicit `--ready` sync), as a
deduplicated job a worker runs (and another worker finishes after a kill), with its own
live message; every sync, refused or done, is audited. Item 12: `sync VERSION <release
repository>` is refused with a clear sentence.

The real Bolt app over signed HTTP, the lab Redis and registries, real `aibrix-bot
worker` processes; releases reach `ready` by images pushed with OciPusher (as
`tests.support.bot.make_ready` does), then the real Approve click and a real worker's
promotion take them to `promoted`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from jobs.domain.manifests import MANIFEST_ACCEPT
from jobs.domain.release import State
from jobs.usecases.sync_job import SyncRecord, SyncState
from tests.conftest import Lab
from tests.support.bot import (
    APPROVER,
    CHANNEL,
    REQUESTER,
    STRANGER,
    Bot,
    click,
    make_ready,
    running_bot,
)
from tests.support.oci_push import OciPusher, entry
from tests.support.pipeline import SAMPLE, Setup
from tests.support.streams import stream_entries

SYNCER = "U0SYNCER"  # holds the sync role, is no approver
MIRROR = "lab-mirror"


def config_text(lab: Lab, namespace: str, key_prefix: str, mirror: str) -> str:
    lines = [
        f'repository = "{lab.registry}/{namespace}"',
        'platforms = ["linux/amd64", "linux/arm64"]',
        "[source]",
        f'path = "{SAMPLE}"',
        "[approval]",
        f'approvers = ["{APPROVER}", "{REQUESTER}"]',
        "approvals_required = 1",
        "[permissions]",
        f'channels = ["{CHANNEL}"]',
        f'sync = ["{SYNCER}", "{APPROVER}", "{REQUESTER}"]',
        "[queue]",
        f'key_prefix = "{key_prefix}"',
        "lease_seconds = 2",
        "max_attempts = 2",
        "backoff_base_seconds = 0.2",
        "backoff_cap_seconds = 1.0",
        "[mirrors]",
        f'{MIRROR} = "{mirror}/{namespace}"',
        # The sample's Dockerfiles name Docker Hub's images; the lab has its own.
        "[base_images]",
        f'"busybox:1.36" = "{lab.base_image}"',
        f'"python:3.11" = "{lab.python_image}"',
        "[[components]]",
        'name = "controller-manager"',
        'dockerfile = "build/container/Dockerfile"',
        "[[components]]",
        'name = "runtime"',
        'dockerfile = "build/container/Dockerfile.python"',
    ]
    return "\n".join(lines) + "\n"


@contextlib.asynccontextmanager
async def sync_bot(
    lab: Lab, redis_url: str, tmp_path: Path, key_prefix: str, mirror: str
) -> AsyncIterator[tuple[Bot, Setup]]:
    namespace = f"syncdoor-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "aibrix.toml"
    path.write_text(config_text(lab, namespace, key_prefix, mirror))
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    setup = Setup(lab, path, redis_url, logs)
    try:
        async with running_bot(lab, redis_url, path, key_prefix, namespace) as bot:
            try:
                yield bot, setup
            finally:
                setup.stop_all()
                keys = await bot.server.redis.keys(f"{key_prefix}*")
                if keys:
                    await bot.server.redis.delete(*keys)
    finally:
        setup.stop_all()


async def command(bot: Bot, user: str, text: str) -> tuple[str, str]:
    """Send `/aibrix text`; (the ack's text, the ephemeral answer after it or "")."""
    before = len(bot.standin.ephemerals_for(user))
    resp = await bot.slack.slash_command(text, user_id=user)
    assert resp.status == 200
    acked = json.loads(resp.body).get("text", "") if resp.body else ""
    if not acked.startswith("working on"):
        return acked, ""
    async with asyncio.timeout(20):
        while len(bot.standin.ephemerals_for(user)) <= before:
            await asyncio.sleep(0.05)
    return acked, bot.standin.ephemerals_for(user)[-1].text


async def sync_jobs(bot: Bot) -> list[dict[str, Any]]:
    entries = await stream_entries(bot.server.redis, bot.key_names.control_stream)
    jobs = [json.loads(fields["job"]) for _, fields in entries]
    return [job for job in jobs if job["kind"] == "sync"]


async def sync_audit(bot: Bot) -> list[dict[str, str]]:
    entries = await bot.records.audit(1000)
    return [e for e in entries if str(e.get("action", "")).startswith("sync")]


async def mirror_digest(lab: Lab, namespace: str, component: str, tag: str) -> str | None:
    url = f"http://{lab.mirror_registry}/v2/{namespace}/{component}/manifests/{tag}"
    async with (
        aiohttp.ClientSession() as session,
        session.head(url, headers={"Accept": MANIFEST_ACCEPT}) as head,
    ):
        return head.headers.get("Docker-Content-Digest") if head.status == 200 else None


class Listener:
    """A TCP port that only counts who connects: the literal host a user names."""

    def __init__(self) -> None:
        self.connections = 0
        self.port = 0
        self._server: asyncio.base_events.Server | None = None

    async def __aenter__(self) -> Listener:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            writer.close()

        self._server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


class HoldingProxy:
    """The mirror registry behind an HTTP forwarder that holds the PUT of one tag until
    told: a worker copying through it is stuck, deterministically, after every blob and
    child of that component is in, just before the tag would be written."""

    def __init__(self, target: str) -> None:
        self.target = f"http://{target}"
        self.hold_path = ""
        self.held = asyncio.Event()
        self.released = asyncio.Event()
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def __aenter__(self) -> HoldingProxy:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._session = aiohttp.ClientSession(auto_decompress=False)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.released.set()
        assert self._runner is not None and self._session is not None
        await self._session.close()
        await self._runner.cleanup()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if request.method == "PUT" and request.path == self.hold_path and self.hold_path:
            self.held.set()
            await self.released.wait()
            # The worker that sent it is dead by now: it is never written.
            return web.Response(status=503, text="held and dropped")
        assert self._session is not None
        # Host stays the proxy's, so the registry's upload locations point back here.
        headers = {k: v for k, v in request.headers.items()}
        async with self._session.request(
            request.method,
            self.target + request.path_qs,
            headers=headers,
            data=body,
            allow_redirects=False,
        ) as upstream:
            data = await upstream.read()
            out = {
                k: v
                for k, v in upstream.headers.items()
                if k.lower() not in ("content-length", "transfer-encoding", "connection")
            }
            return web.Response(status=upstream.status, body=data, headers=out)


async def promote(bot: Bot, setup: Setup, version: str) -> dict[str, str]:
    """A ready release, approved by a real click and promoted by a real worker; returns
    the approved digests."""
    ready = await make_ready(bot, version)
    setup.start_worker("linux/amd64")
    said = await click(bot, "approve_release", APPROVER, ready.status_ts)
    assert "promotion is queued" in said, said
    promoted = await setup.wait_for(version, [State.PROMOTED, State.FAILED], timeout=120)
    assert promoted.state is State.PROMOTED, promoted.state_reason + setup.tail_logs()
    setup.stop_all()
    (approval,) = promoted.approvals.values()
    return dict(approval.digests)


async def wait_record(bot: Bot, sync_id: str, done: Any, timeout: float = 90) -> SyncRecord:
    async with asyncio.timeout(timeout):
        while True:
            record = await bot.pipeline.find_sync(sync_id)
            if record is not None and done(record):
                return record
            await asyncio.sleep(0.1)


# ---- refusals: nothing queued, nothing contacted, audited --------------------------------


async def test_item1_item12_literal_host_and_release_repository_refused_nothing_contacted(
    lab: Lab, redis_url: str, tmp_path: Path, key_prefix: str
) -> None:
    async with (
        Listener() as elsewhere,
        sync_bot(lab, redis_url, tmp_path, key_prefix, lab.mirror_registry) as (bot, _),
    ):
        literal = f"127.0.0.1:{elsewhere.port}/stolen"
        acked, _ = await command(bot, APPROVER, f"sync v1.0.0 {literal}")
        assert "is not a configured mirror" in acked and MIRROR in acked, acked
        assert elsewhere.connections == 0
        repository = f"{lab.registry}/{bot.namespace}"
        acked, _ = await command(bot, APPROVER, f"sync v1.0.0 {repository}")
        assert "is the release repository itself" in acked and MIRROR in acked, acked
        assert "failed on the bot's side" not in acked
        # Refused input writes nothing: no job, no record, no delivery key, no audit.
        assert await bot.keys() == []


async def test_item1_unapproved_rejected_unknown_and_stranger_syncs_refused_and_audited(
    lab: Lab, redis_url: str, tmp_path: Path, key_prefix: str
) -> None:
    async with sync_bot(lab, redis_url, tmp_path, key_prefix, lab.mirror_registry) as (bot, _):
        ready = await make_ready(bot, "v1.0.0")

        _, said = await command(bot, SYNCER, f"sync v1.0.0 {MIRROR}")
        assert "ready but not approved" in said and f"<@{APPROVER}>" in said, said
        _, said = await command(bot, SYNCER, f"sync v1.0.0 {MIRROR} --ready")
        assert "may not sync v1.0.0 before it is approved; only an approver" in said, said
        for _ in range(2):  # the same refusal twice is recorded once
            acked, _ = await command(bot, STRANGER, f"sync v1.0.0 {MIRROR}")
            assert "may not sync here" in acked and SYNCER in acked, acked
        _, said = await command(bot, SYNCER, f"sync v9.9.9 {MIRROR}")
        assert "v9.9.9 has no release to sync" in said, said

        rejected = await make_ready(bot, "v1.1.0")
        await click(bot, "reject_release", APPROVER, rejected.status_ts)
        _, said = await command(bot, APPROVER, f"sync v1.1.0 {MIRROR} --ready")
        assert "v1.1.0 is blocked (rejected by" in said and "nobody may sync it" in said, said

        # A tag that moved after verification: refused with the drift sentence.
        moved = await make_ready(bot, "v1.2.0")
        async with aiohttp.ClientSession() as session:
            pusher = OciPusher(lab.registry)
            repo = f"{bot.namespace}/runtime"
            amd = await pusher.image(session, repo, os="linux", arch="amd64", payload=b"other")
            arm = await pusher.image(session, repo, os="linux", arch="arm64", payload=b"other")
            await pusher.index(
                session,
                repo,
                "v1.2.0",
                [entry(amd, "linux", "amd64"), entry(arm, "linux", "arm64")],
            )
        _, said = await command(bot, APPROVER, f"sync v1.2.0 {MIRROR} --ready")
        assert "runtime v1.2.0 has moved since it was approved" in said, said

        assert await sync_jobs(bot) == []
        assert await bot.server.redis.keys(f"{key_prefix}:sync:*") == []
        for component in ("controller-manager", "runtime"):
            for version in ("v1.0.0", "v1.1.0", "v1.2.0"):
                assert await mirror_digest(lab, bot.namespace, component, version) is None
        refused = [e for e in await sync_audit(bot) if e["action"] == "sync-refused"]
        assert all(e["mirror"] == MIRROR and e["outcome"] == "refused" for e in refused)
        by_actor = sorted((e["actor"], e["version"]) for e in refused)
        assert by_actor == sorted(
            [
                (SYNCER, "v1.0.0"),
                (SYNCER, "v1.0.0"),
                (STRANGER, "v1.0.0"),
                (SYNCER, "v9.9.9"),
                (APPROVER, "v1.1.0"),
                (APPROVER, "v1.2.0"),
            ]
        )
        assert ready.state is State.READY and moved.state is State.READY


async def test_item1_approver_ready_sync_is_one_job_for_two_concurrent_requests(
    lab: Lab, redis_url: str, tmp_path: Path, key_prefix: str
) -> None:
    async with sync_bot(lab, redis_url, tmp_path, key_prefix, lab.mirror_registry) as (bot, _):
        await make_ready(bot, "v1.3.0")
        text = f"sync v1.3.0 {MIRROR} --ready"
        (_, first), (_, second) = await asyncio.gather(
            command(bot, APPROVER, text), command(bot, REQUESTER, text)
        )
        answers = sorted([first, second])
        assert "already syncing to lab-mirror" in answers[0], answers
        assert "sync queued" in answers[1], answers
        (job,) = await sync_jobs(bot)  # no worker runs: it waits in the control stream
        assert job["payload"]["mode"] == "ready"
        record = await bot.pipeline.find_sync(job["id"])
        assert record is not None and record.state is SyncState.QUEUED
        (requested,) = [e for e in await sync_audit(bot) if e["action"] == "sync-requested"]
        assert requested["mode"] == "ready" and requested["mirror"] == MIRROR
        assert requested["actor"] == record.requested_by
        # Its own message is in the channel.
        posted = await wait_record(bot, job["id"], lambda r: bool(r.status_ts), timeout=15)
        await bot.wait_message(posted.status_ts, "Sync v1.3.0")


# ---- a promoted release, synced by a worker; a kill mid-copy; the live message ----------


async def test_item1_promoted_release_synced_by_a_worker_which_survives_a_kill(
    lab: Lab, redis_url: str, tmp_path: Path, key_prefix: str, docker_available: None
) -> None:
    version = "v2.0.0"
    async with (
        HoldingProxy(lab.mirror_registry) as proxy,
        sync_bot(lab, redis_url, tmp_path, key_prefix, proxy.address) as (bot, setup),
    ):
        approved = await promote(bot, setup, version)

        # Two requests at once: one job; the other is told where the running one is.
        (_, first), (_, second) = await asyncio.gather(
            command(bot, SYNCER, f"sync {version} {MIRROR}"),
            command(bot, APPROVER, f"sync {version} {MIRROR}"),
        )
        answers = sorted([first, second])
        assert "already syncing" in answers[0] and "sync queued" in answers[1], answers
        (job,) = await sync_jobs(bot)
        sync_id = job["id"]
        queued = await wait_record(bot, sync_id, lambda r: bool(r.status_ts))
        ts = queued.status_ts

        # The worker copies controller-manager, and runtime up to its tag, held there.
        proxy.hold_path = f"/v2/{bot.namespace}/runtime/manifests/{version}"
        doomed = setup.start_worker("linux/amd64")
        async with asyncio.timeout(90):
            await proxy.held.wait()
        await wait_record(bot, sync_id, lambda r: r.components_done >= 1)
        shown = await bot.wait_message(ts, "1/2 components done", timeout=30)
        assert "copying" in shown
        doomed.kill()  # SIGKILL: no ack, no cleanup; the lease runs out
        proxy.released.set()
        proxy.hold_path = ""

        setup.start_worker("linux/amd64")
        record = await wait_record(bot, sync_id, lambda r: r.finished, timeout=120)
        assert record.state is SyncState.SYNCED, record.detail + setup.tail_logs()
        assert record.resumed and record.deliveries >= 2
        # What the killed worker had put on the mirror was skipped, not sent again.
        assert record.bytes_sent == 0
        results = {r.component: r for r in record.results}
        assert results["controller-manager"].status == "up-to-date"
        assert results["runtime"].blobs_copied == 0 and results["runtime"].blobs_skipped > 0
        # The approved digests, exactly, on the mirror.
        for component, digest in approved.items():
            assert await mirror_digest(lab, bot.namespace, component, version) == digest

        rendered = await bot.wait_message(ts, "synced")
        assert "2/2 components done" in rendered
        message = bot.standin.message(CHANNEL, ts)
        assert message is not None and message.edited

        entries = await sync_audit(bot)
        (requested,) = [e for e in entries if e["action"] == "sync-requested"]
        (synced,) = [e for e in entries if e["action"] == "sync-synced"]
        assert requested["actor"] == synced["actor"] == record.requested_by
        assert synced["mirror"] == MIRROR and synced["outcome"] == "synced"
        assert synced["mode"] == "promoted"


async def test_item1_worker_copies_only_the_approved_digests_a_moved_tag_is_refused(
    lab: Lab, redis_url: str, tmp_path: Path, key_prefix: str, docker_available: None
) -> None:
    version = "v2.1.0"
    async with sync_bot(lab, redis_url, tmp_path, key_prefix, lab.mirror_registry) as (bot, setup):
        await promote(bot, setup, version)
        _, said = await command(bot, SYNCER, f"sync {version} {MIRROR}")
        assert "sync queued" in said, said
        (job,) = await sync_jobs(bot)
        # After the request was accepted, before a worker copies: the tag moves.
        async with aiohttp.ClientSession() as session:
            pusher = OciPusher(lab.registry)
            repo = f"{bot.namespace}/runtime"
            amd = await pusher.image(session, repo, os="linux", arch="amd64", payload=b"moved")
            arm = await pusher.image(session, repo, os="linux", arch="arm64", payload=b"moved")
            await pusher.index(
                session, repo, version, [entry(amd, "linux", "amd64"), entry(arm, "linux", "arm64")]
            )
        setup.start_worker("linux/amd64")
        record = await wait_record(bot, job["id"], lambda r: r.finished)
        assert record.state is SyncState.REFUSED, record.detail
        assert f"runtime {version} has moved since it was approved" in record.detail
        for component in ("controller-manager", "runtime"):
            assert await mirror_digest(lab, bot.namespace, component, version) is None
        await bot.wait_message(record.status_ts, "has moved since it was approved")
        (refused,) = [e for e in await sync_audit(bot) if e["action"] == "sync-refused"]
        assert refused["actor"] == SYNCER and refused["outcome"] == "refused"
        assert refused["mirror"] == MIRROR


async def test_item1_cli_sync_keeps_literal_hosts_and_is_audited(
    lab: Lab, redis_url: str, tmp_path: Path, key_prefix: str
) -> None:
    async with sync_bot(lab, redis_url, tmp_path, key_prefix, lab.mirror_registry) as (bot, setup):
        await make_ready(bot, "v3.0.0")
        literal = f"{lab.mirror_registry}/{bot.namespace}-cli"
        code, out, err = await setup.cli("sync", "v3.0.0", "--to", literal)
        assert code == 0, out + err
        entries = await sync_audit(bot)
        actions = sorted((e["action"], e["outcome"], e["mirror"]) for e in entries)
        assert actions == [
            ("sync-started", "started", literal),
            ("sync-synced", "synced", literal),
        ]
        assert all(e["actor"].startswith("cli:") and e["mode"] == "cli" for e in entries)


# ---- the sync message's rendering (pure) ------------------------------------------------


def test_item1_sync_message_stays_within_block_kit_limits_and_escapes() -> None:
    from types import MappingProxyType

    from handlers import blocks
    from jobs.usecases.sync_job import SyncComponent
    from tests.support.blocks import assert_within_limits

    digests = {f"component-{i:02d}": "sha256:" + f"{i:02d}" * 32 for i in range(60)}
    record = SyncRecord(
        id="a" * 32,
        version="v9.9.9-rc.1",
        run_id="b" * 32,
        mirror=MIRROR,
        location="registry.example.com/" + "n" * 200,
        requested_by="U0SYNCER",
        channel=CHANNEL,
        mode="ready",
        digests=MappingProxyType(digests),
        state=SyncState.FAILED,
        components_total=60,
        components_done=30,
        bytes_planned=10**12,
        bytes_sent=5 * 10**11,
        deliveries=3,
        resumed=True,
        detail="<!channel> " + "x" * 5000,
        results=tuple(
            SyncComponent(name, "failed", digest, "<@U0EVIL> " + "y" * 300, 1, 2)
            for name, digest in list(digests.items())[:30]
        ),
    )
    message = blocks.sync_message(record)
    assert_within_limits(message)
    rendered = json.dumps(message.blocks)
    assert "<!channel>" not in rendered and "<@U0EVIL>" not in rendered
    assert "<@U0SYNCER>" in rendered and "30/60 components done" in rendered
    assert "resumed by another worker" in rendered
