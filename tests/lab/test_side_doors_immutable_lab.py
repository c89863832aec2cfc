"""Issue 10 items 2, 8, 9 and 13, black-box: the real Bolt app over signed HTTP (and the
real CLI), the lab Redis, the lab registry and, for the merge, the real Docker Buildx.

- item 2: a promoted version is immutable (Slack and CLI refuse a new release of it,
  saying who promoted it, when, and the digests); a re-release never replaces a tag
  holding a verified digest, nor one someone else wrote; `--supersede` is approver-only.
- item 8: a registry that cannot be read at click time refuses the click and keeps the
  release ready; once it answers again, the click counts.
- item 9: a double-clicked Confirm overwrite queues one promotion.
- item 13: settled runs' detail expires after the configured retention; the version's
  small record (who promoted, when, which digests) stays, and so does immutability.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from jobs.domain.config import ConfigError
from jobs.domain.config_reader import load_config
from jobs.domain.references import parse_reference
from jobs.domain.release import OVERWRITE_PENDING, BuildState, Release, State
from jobs.registry.client import RegistryClient, RegistrySettings
from jobs.usecases.promote import promote_job
from tests.conftest import REPO, Lab
from tests.support.bot import (
    APPROVER,
    CHANNEL,
    COMPONENTS,
    GROUPIE,
    REQUESTER,
    STRANGER,
    Bot,
    click,
    config_text,
    make_ready,
    running_bot,
)
from tests.support.netproxy import LatencyProxy
from tests.support.oci_push import OciPusher, entry
from tests.support.streams import stream_entries

BOT = str(REPO / ".venv" / "bin" / "aibrix-bot")
PLATFORMS = ["linux/amd64", "linux/arm64"]
# Registries of this helper's own live on 5020-5029 (the lab's are 5000-5002).
PROXY_PORT = 5023


def lab_config(
    lab: Lab,
    namespace: str,
    key_prefix: str,
    *,
    registry: str | None = None,
    retention_days: float | None = None,
) -> str:
    """The bot tests' config, with STRANGER allowed to release (but not to supersede),
    optionally another registry address for the repository, and a retention."""
    text = config_text(lab, namespace, key_prefix)
    text = text.replace(
        f'channels = ["{CHANNEL}"]\n',
        f'channels = ["{CHANNEL}"]\nrelease = ["{REQUESTER}", "{APPROVER}", "{STRANGER}"]\n',
    )
    if registry is not None:
        text = text.replace(f'repository = "{lab.registry}/', f'repository = "{registry}/')
    if retention_days is not None:
        text = text.replace(
            f'key_prefix = "{key_prefix}"\n',
            f'key_prefix = "{key_prefix}"\nretention_days = {retention_days}\n',
        )
    return text


@contextlib.asynccontextmanager
async def lab_bot(
    lab: Lab,
    redis_url: str,
    tmp_path: Path,
    key_prefix: str,
    *,
    registry: str | None = None,
    retention_days: float | None = None,
) -> AsyncIterator[Bot]:
    namespace = f"immut-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "aibrix.toml"
    path.write_text(
        lab_config(lab, namespace, key_prefix, registry=registry, retention_days=retention_days)
    )
    async with running_bot(lab, redis_url, path, key_prefix, namespace) as bot:
        if registry is not None:
            # Few attempts: an unreachable registry is answered within a second or two.
            bot.server.deps.inspector.settings = RegistrySettings(
                insecure_registries=frozenset({registry, lab.registry}),
                max_attempts=2,
                backoff_base=0.05,
            )
        try:
            yield bot
        finally:
            keys = await bot.server.redis.keys(f"{key_prefix}*")
            if keys:
                await bot.server.redis.delete(*keys)


@pytest.fixture
async def bot(lab: Lab, redis_url: str, tmp_path: Path, key_prefix: str) -> AsyncIterator[Bot]:
    async with lab_bot(lab, redis_url, tmp_path, key_prefix) as found:
        yield found


def config_path(bot: Bot) -> Path:
    path = bot.pipeline.config.path
    assert path is not None
    return Path(path)


async def last_ephemeral(bot: Bot, user: str, before: int) -> str:
    async with asyncio.timeout(15):
        while len(bot.standin.ephemerals_for(user)) <= before:
            await asyncio.sleep(0.05)
    return bot.standin.ephemerals_for(user)[-1].text


async def command(bot: Bot, text: str, user: str) -> str:
    """Run `/aibrix text` as `user`; the first answer after the ack (or the ack's text)."""
    before = len(bot.standin.ephemerals_for(user))
    resp = await bot.slack.slash_command(text, user_id=user)
    assert resp.status == 200
    acked = json.loads(resp.body)["text"] if resp.body else ""
    if not acked.startswith("working on"):
        return str(acked)  # answered in the ack itself (refused before any work)
    return await last_ephemeral(bot, user, before)


async def promoted(bot: Bot, version: str) -> Release:
    """A run promoted for real: ready, approved by two approvers' clicks, and its
    promotion job run as a worker runs it."""
    ready = await make_ready(bot, version)
    assert "1 of 2" in await click(bot, "approve_release", APPROVER, ready.status_ts)
    assert "promotion is queued" in await click(bot, "approve_release", GROUPIE, ready.status_ts)
    approved = await bot.records.run(version)
    async with RegistryClient(bot.server.deps.inspector.settings) as client:
        assert await bot.pipeline.promote(promote_job(approved), client) is State.PROMOTED
    done: Release | None = await bot.records.run(version)
    assert done is not None and done.state is State.PROMOTED
    return done


async def stream_lengths(bot: Bot) -> dict[str, int]:
    keys = bot.key_names
    streams = [keys.control_stream, keys.job_stream("linux/amd64"), keys.job_stream("linux/arm64")]
    return {s: int(await bot.server.redis.xlen(s)) for s in streams}


async def deliveries(bot: Bot) -> set[str]:
    return {k for k in await bot.keys() if ":slack:delivery:" in k}


# ---- item 2: released versions are immutable ------------------------------------------


async def test_item2_promoted_version_cannot_be_released_again(bot: Bot) -> None:
    version = "v61.0.0"
    done = await promoted(bot, version)
    digests = {c: i.digest for c, i in done.indexes.items()}
    streams = await stream_lengths(bot)
    claimed = await deliveries(bot)  # the approval clicks'

    for user in (STRANGER, REQUESTER):  # a releaser who is not an approver, and one who is
        said = await command(bot, f"release {version}", user)
        assert f"{version} was promoted by" in said and APPROVER in said and GROUPIE in said
        assert "immutable" in said and "Cut a new version instead" in said
        for component, digest in digests.items():
            assert f"{component} {digest}" in said
    assert await bot.records.run_ids(version) == [done.run_id]
    assert await stream_lengths(bot) == streams  # no build or merge job was queued
    assert await deliveries(bot) == claimed  # the refused commands left no claim
    assert (await bot.records.run(version)).state is State.PROMOTED

    # The CLI, run by an operator, is refused the same way (exit 2, nothing started).
    env = {**os.environ, "PYTHONPATH": str(REPO), "REDIS_URL": bot.lab.redis_url}
    ran = subprocess.run(
        [BOT, "release", version, "--config", str(config_path(bot)), "--no-follow"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 2, ran.stderr
    assert f"{version} was promoted by" in ran.stderr and "immutable" in ran.stderr
    assert all(digest in ran.stderr for digest in digests.values())
    assert await bot.records.run_ids(version) == [done.run_id]
    assert await stream_lengths(bot) == streams


async def test_item2_supersede_is_approver_only_strictly_parsed_and_audited(bot: Bot) -> None:
    version = "v62.0.0"
    done = await promoted(bot, version)
    streams = await stream_lengths(bot)
    for text in (
        f"release {version} --supersede --supersede",
        f"release {version} --force",
        f"release --supersede {version}",
        f"release {version} -supersede",
    ):
        said = await command(bot, text, APPROVER)
        assert "supersede" in said or "option" in said, said
        assert "usage: /aibrix release" in said
    said = await command(bot, f"release {version} --supersede", STRANGER)
    assert STRANGER in said and "supersede" in said
    assert await bot.records.run_ids(version) == [done.run_id]
    assert await stream_lengths(bot) == streams

    said = await command(bot, f"release {version} --supersede", APPROVER)
    assert "started run" in said
    runs = await bot.records.run_ids(version)
    assert len(runs) == 2
    new = await bot.records.run(version)
    assert new is not None and new.supersede and new.requested_by == APPROVER
    audit = [e for e in await bot.records.audit(50) if e["version"] == version]
    superseded = [e for e in audit if e["action"] == "supersede"]
    assert len(superseded) == 1 and superseded[0]["actor"] == APPROVER
    assert all(d.digest in superseded[0]["detail"] for d in done.indexes.values())


async def _pushed_run(
    bot: Bot, session: aiohttp.ClientSession, run: Release, payload: bytes
) -> None:
    """Builds of `run` pushed for real (synthetic images), recorded as a worker records
    them, and the fan-in that queues the merges."""
    store = bot.records.store
    pusher = OciPusher(bot.lab.registry)
    for component in run.components:
        repo = f"{bot.namespace}/{component}"
        for platform in run.platforms:
            arch = platform.architecture
            image = await pusher.image(session, repo, os="linux", arch=arch, payload=payload)
            await store.update_build(
                run.version, run.run_id, component, platform, BuildState.BUILDING, attempt=1
            )
            await store.record_build_digest(
                run.version, run.run_id, component, platform, image.digest, 1
            )
        await bot.pipeline.after_build(run.version, run.run_id, component, claimer="test")


async def _merge_all(bot: Bot, run: Release) -> None:
    """Each component's merge job, as a worker runs it (docker buildx imagetools)."""
    async with RegistryClient(bot.server.deps.inspector.settings) as client:
        for component in run.components:
            await bot.pipeline.merge(bot.pipeline.merge_job(run, component), client)


async def _tag(bot: Bot, component: str, version: str) -> str:
    reference = parse_reference(f"{bot.lab.registry}/{bot.namespace}/{component}:{version}")
    async with RegistryClient(bot.server.deps.inspector.settings) as client:
        return (await client.get_manifest(reference)).digest


async def test_item2_rerelease_keeps_a_verified_tag_and_never_overwrites_a_foreign_one(
    bot: Bot, docker_available: None
) -> None:
    version = "v63.0.0"
    store = bot.records.store
    first, created = await store.create_or_get(
        version, REQUESTER, CHANNEL, PLATFORMS, list(COMPONENTS), "first-revision"
    )
    assert created
    await store.transition(version, first.run_id, [State.QUEUED], State.BUILDING)
    async with aiohttp.ClientSession() as session:
        await _pushed_run(bot, session, first, b"first run")
        await _merge_all(bot, first)
        ready = await bot.records.run(version)
        assert ready.state is State.READY, ready.state_reason
        written = {c: i.digest for c, i in ready.indexes.items()}
        assert written == {c: await _tag(bot, c, version) for c in COMPONENTS}

        from handlers.context import post_status_message
        from tests.support.bot import _client

        await post_status_message(bot.server.deps, _client(bot), ready)
        shown = await bot.records.run(version)
        said = await click(bot, "reject_release", APPROVER, shown.status_ts)
        assert "rejected" in said
        assert (await bot.records.run(version)).state is State.BLOCKED

        # Someone else writes runtime's release tag behind the bot's back.
        pusher = OciPusher(bot.lab.registry)
        repo = f"{bot.namespace}/runtime"
        amd = await pusher.image(session, repo, os="linux", arch="amd64", payload=b"intruder")
        arm = await pusher.image(session, repo, os="linux", arch="arm64", payload=b"intruder")
        foreign = await pusher.index(
            session, repo, version, [entry(amd, "linux", "amd64"), entry(arm, "linux", "arm64")]
        )

        # The re-release: a new run (another revision, other build digests) merges.
        said = await command(bot, f"release {version}", REQUESTER)
        assert "started run" in said
        second = await store.load(version)
        assert second is not None and second.run_id != first.run_id
        await _pushed_run(bot, session, second, b"second run, other digests")
        await _merge_all(bot, second)

    # controller-manager's tag holds the verified digest the first run wrote: kept.
    assert await _tag(bot, "controller-manager", version) == written["controller-manager"]
    # runtime's tag holds what no run of this version wrote: left alone.
    assert await _tag(bot, "runtime", version) == foreign.digest
    final = await store.load(version)
    assert final is not None and final.state is State.BLOCKED
    assert final.indexes["controller-manager"].digest == written["controller-manager"]
    assert final.indexes["controller-manager"].verdict == "ok"
    assert f"runtime {version} holds {foreign.digest}" in final.state_reason
    assert written["runtime"] in final.state_reason  # both digests are named


# ---- item 8: unreadable is not drift -----------------------------------------------------


class FixedPortProxy(LatencyProxy):
    """The TCP forwarder of tests/support/netproxy.py on a fixed port, so that a registry address
    in the config can go away and come back."""

    def __init__(self, target: str, port: int) -> None:
        host, _, target_port = target.rpartition(":")
        super().__init__(host, int(target_port), 0.0)
        self.port = port

    async def __aenter__(self) -> FixedPortProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        return self


async def test_item8_unreadable_registry_at_click_keeps_ready(
    lab: Lab, redis_url: str, tmp_path: Path, key_prefix: str
) -> None:
    address = f"127.0.0.1:{PROXY_PORT}"
    async with lab_bot(lab, redis_url, tmp_path, key_prefix, registry=address) as bot:
        async with FixedPortProxy(lab.registry, PROXY_PORT):
            release = await make_ready(bot, "v8.0.0")  # pushed straight to the lab registry
        # The registry address in the config no longer answers.
        said = await click(bot, "approve_release", APPROVER, release.status_ts)
        assert "could not re-check the registry; try again" in said
        after = await bot.records.run("v8.0.0")
        assert after.state is State.READY and after.approvals == {}
        audit = [e for e in await bot.records.audit(50) if e["version"] == "v8.0.0"]
        assert "blocked" not in {e["action"] for e in audit}
        message = bot.standin.message(CHANNEL, release.status_ts)
        assert message is not None and "approve_release" in json.dumps(message.blocks)

        # It answers again: the same approver's next click counts.
        async with FixedPortProxy(lab.registry, PROXY_PORT):
            said = await click(bot, "approve_release", APPROVER, release.status_ts)
        assert f"1 of 2 approvals: <@{APPROVER}>" in said
        assert (await bot.records.run("v8.0.0")).state is State.READY


# ---- item 9: one promotion per confirmed overwrite ----------------------------------------


async def test_item9_double_confirm_overwrite_enqueues_one_promotion(bot: Bot) -> None:
    version = "v9.0.0"
    store = bot.records.store
    release = await make_ready(bot, version)
    run_id = release.run_id
    assert await store.transition(version, run_id, [State.READY], State.APPROVED, actor=APPROVER)
    assert await store.transition(version, run_id, [State.APPROVED], State.PROMOTING)
    held = "sha256:" + "e" * 64
    target = f"{bot.lab.mirror_registry}/{bot.namespace}/runtime:{version}"
    assert await store.record_promotion(
        version, run_id, target, ok=False, digest=held, detail=OVERWRITE_PENDING
    )
    bot.server.deps.touch(release)
    await bot.wait_message(release.status_ts, "confirm_overwrite")

    said = await click(bot, "confirm_overwrite", APPROVER, release.status_ts)
    assert f"<@{APPROVER}> confirmed overwriting {target}" in said
    bot.now[0] += 1.5  # the second click of a double click, a moment later
    said = await click(bot, "confirm_overwrite", APPROVER, release.status_ts)
    assert "already confirmed" in said
    bot.now[0] += 1.5
    said = await click(bot, "confirm_overwrite", GROUPIE, release.status_ts)  # another approver
    assert "already confirmed" in said

    jobs = await stream_entries(bot.server.redis, bot.key_names.control_stream)
    promotions = [
        json.loads(f["job"]) for _, f in jobs if json.loads(f["job"])["kind"] == "promote"
    ]
    assert len(promotions) == 1, promotions
    audit = [e for e in await store.audit_entries(50) if e["version"] == version]
    assert [e["action"] for e in audit].count("overwrite-confirmed") == 1


# ---- item 13: retention --------------------------------------------------------------------


def _detail_keys(bot: Bot, version: str, run_id: str) -> list[str]:
    keys = bot.key_names
    return [
        keys.run(version, run_id),
        keys.builds(version, run_id),
        keys.indexes(version, run_id),
        keys.merges(version, run_id),
        keys.approvals(version, run_id),
        keys.promotions(version, run_id),
    ]


async def test_item13_settled_run_detail_expires_record_stays(
    lab: Lab, redis_url: str, tmp_path: Path, key_prefix: str
) -> None:
    retention_days = 0.00005  # 4.32 s: long enough to look, short enough to wait for
    async with lab_bot(lab, redis_url, tmp_path, key_prefix, retention_days=retention_days) as bot:
        redis = bot.server.redis
        version = "v13.0.0"
        done = await promoted(bot, version)
        digests = {c: i.digest for c, i in done.indexes.items()}
        detail = [k for k in _detail_keys(bot, version, done.run_id) if await redis.exists(k)]
        assert len(detail) >= 4  # run, builds, indexes, approvals (promotions: none)
        for key in detail:
            assert 0 < await redis.pttl(key) <= 4320, key
        record_key = bot.key_names.record(version)
        assert await redis.ttl(record_key) == -1  # the record never expires

        async with asyncio.timeout(30):  # the positive signal: the detail is gone
            while await redis.exists(*detail):
                await asyncio.sleep(0.2)
        record = await bot.records.version_record(version)
        assert record is not None and record.promoted is not None
        assert record.promoted.run_id == done.run_id
        assert record.promoted.by == tuple(sorted((APPROVER, GROUPIE)))
        assert dict(record.promoted.digests) == digests
        assert record.promoted.at > 0
        assert len(await redis.hgetall(record_key)) <= 2 * len(COMPONENTS) + 4  # bounded

        # Immutability holds with the detail gone.
        said = await command(bot, f"release {version}", REQUESTER)
        assert f"{version} was promoted by" in said and APPROVER in said and GROUPIE in said
        assert all(d in said for d in digests.values())
        assert not await redis.exists(*detail)  # the refusal wrote no detail back


async def test_item13_default_retention_is_90_days_and_live_runs_never_expire(bot: Bot) -> None:
    redis = bot.server.redis
    live = await make_ready(bot, "v13.1.0")
    for key in _detail_keys(bot, "v13.1.0", live.run_id)[:3]:
        assert await redis.ttl(key) == -1, key  # ready: not settled, kept
    said = await click(bot, "reject_release", APPROVER, live.status_ts)
    assert "rejected" in said
    assert (await bot.records.run("v13.1.0")).state is State.BLOCKED
    for key in _detail_keys(bot, "v13.1.0", live.run_id)[:3]:
        assert 89 * 86400 < await redis.ttl(key) <= 90 * 86400, key
    said = await command(bot, "cancel v13.1.0", APPROVER)
    assert "cancelled" in said
    for key in _detail_keys(bot, "v13.1.0", live.run_id)[:3]:
        assert 89 * 86400 < await redis.ttl(key) <= 90 * 86400, key


def test_item13_retention_days_is_configured_and_validated(tmp_path: Path) -> None:
    path = tmp_path / "aibrix.toml"
    path.write_text(lab_config_plain("aibrix-test:cfg") + "retention_days = 0.5\n")
    assert load_config(path).queue.retention_seconds == 43200
    path.write_text(lab_config_plain("aibrix-test:cfg"))
    assert load_config(path).queue.retention_seconds == 90 * 86400
    for value in ("0", "-1", "true", '"90"', "3651", "nan"):
        path.write_text(lab_config_plain("aibrix-test:cfg") + f"retention_days = {value}\n")
        with pytest.raises(ConfigError) as error:
            load_config(path)
        assert "retention_days" in str(error.value)


def lab_config_plain(key_prefix: str) -> str:
    """A minimal config ending inside its [queue] table."""
    from tests.support.pipeline import SAMPLE

    return "\n".join(
        [
            'repository = "127.0.0.1:5000/x"',
            "[source]",
            f'path = "{SAMPLE}"',
            "[[components]]",
            'name = "runtime"',
            'dockerfile = "build/container/Dockerfile.python"',
            "[queue]",
            f'key_prefix = "{key_prefix}"',
            "",
        ]
    )


# ---- the pure decision behind item 2's compare-and-set --------------------------------


def test_item2_tag_decision_matrix() -> None:
    from jobs.domain.immutability import TagAction, decide_tag_write
    from jobs.domain.release import TagWrite

    mine, other = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    verified = TagWrite(mine, True, "r1", 0.0)
    unverified = TagWrite(mine, False, "r1", 0.0)
    cases = [
        # held, wrote, holds this run's builds, supersede -> action
        (None, None, False, False, TagAction.WRITE),
        (None, unverified, False, False, TagAction.WRITE),
        (None, verified, False, False, TagAction.REFUSE),  # someone removed it
        (mine, verified, False, False, TagAction.KEEP),
        (mine, verified, True, False, TagAction.KEEP),
        (mine, unverified, False, False, TagAction.WRITE),
        (other, None, False, False, TagAction.REFUSE),  # someone else wrote it
        (other, None, True, False, TagAction.ADOPT),  # a crash after writing
        (other, unverified, True, False, TagAction.ADOPT),
        (other, verified, True, False, TagAction.REFUSE),  # a verified tag was changed
        (other, verified, False, False, TagAction.REFUSE),
        (other, verified, False, True, TagAction.WRITE),  # supersede
        (mine, verified, False, True, TagAction.WRITE),
    ]
    for held, wrote, this_run, supersede, expected in cases:
        decision = decide_tag_write(
            "runtime v1.0.0", held, wrote, holds_this_run=this_run, supersede=supersede
        )
        assert decision.action is expected, (held, wrote, this_run, supersede)
        if expected is TagAction.REFUSE and held is not None:
            assert held in decision.reason
            if wrote is not None:
                assert wrote.digest in decision.reason
