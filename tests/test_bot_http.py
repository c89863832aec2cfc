"""The real Bolt app over HTTP, in-process on an ephemeral port, against the Slack
stand-in, the lab Redis and the lab registry: signatures, bad input, retries, inspect,
and the approval gate."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bot.server import Server, make_server
from bot.settings import BotSettings
from bot.slack_client import SignedResponse, SignedSlackClient
from bot.slack_standin import Ephemeral, SlackStandIn
from jobs.domain.config_reader import load_config
from jobs.domain.release import BuildState, Release, State
from jobs.registry.client import RegistrySettings
from tests.conftest import Lab
from tests.oci_push import OciPusher, entry
from tests.pipeline_support import SAMPLE

TOKEN = "xoxb-bot-test-0000-abcdef"
SECRET = "bot-test-signing-secret-0123456789"
CHANNEL = "C0RELEASES"
REQUESTER = "U0REQUESTER"
APPROVER = "U0APPROVER1"
GROUPIE = "U0GROUPIE"
STRANGER = "U0STRANGER"
USERS = {REQUESTER: "alice", APPROVER: "bob", GROUPIE: "carol", STRANGER: "mallory"}
COMPONENTS = ("controller-manager", "runtime")
TTL = 600


def config_text(lab: Lab, namespace: str, key_prefix: str, required: int = 2) -> str:
    lines = [
        f'repository = "{lab.registry}/{namespace}"',
        'platforms = ["linux/amd64", "linux/arm64"]',
        "[source]",
        f'path = "{SAMPLE}"',
        "[approval]",
        f'approvers = ["{APPROVER}", "{REQUESTER}"]',
        'approver_groups = ["S0APPROVERS"]',
        f"approvals_required = {required}",
        f"approval_ttl_seconds = {TTL}",
        "[permissions]",
        f'channels = ["{CHANNEL}"]',
        "[queue]",
        f'key_prefix = "{key_prefix}"',
        "[mirrors]",
        f'lab-mirror = "{lab.mirror_registry}/{namespace}"',
        "[[components]]",
        'name = "controller-manager"',
        'dockerfile = "build/container/Dockerfile"',
        "[[components]]",
        'name = "runtime"',
        'dockerfile = "build/container/Dockerfile.runtime"',
    ]
    return "\n".join(lines) + "\n"


@dataclass
class Bot:
    url: str
    server: Server
    standin: SlackStandIn
    slack: SignedSlackClient
    namespace: str
    key_prefix: str
    lab: Lab
    now: list[float]
    last_click: SignedResponse | None = None

    @property
    def pipeline(self) -> Any:
        return self.server.deps.pipeline

    async def keys(self) -> list[str]:
        """The keys under the test's prefix but the notifier's lease, which a running bot
        holds whatever it is asked."""
        lease = self.server.deps.pipeline.keys.notifier_leader
        found = await self.server.redis.keys(f"{self.key_prefix}*")
        return [str(k) for k in found if str(k) != lease]

    async def ephemeral(
        self, user: str, predicate: Callable[[Ephemeral], bool], timeout: float = 15
    ) -> Ephemeral:
        async with asyncio.timeout(timeout):
            while True:
                for found in reversed(self.standin.ephemerals_for(user)):
                    if predicate(found):
                        return found
                await asyncio.sleep(0.05)

    async def wait_message(self, ts: str, needle: str, timeout: float = 15) -> str:
        async with asyncio.timeout(timeout):
            while True:
                message = self.standin.message(CHANNEL, ts)
                rendered = json.dumps(message.blocks) if message else ""
                if needle in rendered:
                    return rendered
                await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running_bot(
    lab: Lab,
    redis_url: str,
    config_path: Path,
    key_prefix: str,
    namespace: str,
    *,
    standin: SlackStandIn | None = None,
    now: list[float] | None = None,
) -> AsyncIterator[Bot]:
    """The real app on an ephemeral port against a stand-in (a new one, or `standin` to
    keep the channel across a restart of the bot). Leaves the Redis keys behind."""
    config = load_config(config_path)
    settings = BotSettings(bot_token=TOKEN, signing_secret=SECRET, redis_url=redis_url)
    clock = now if now is not None else [time.time()]
    async with contextlib.AsyncExitStack() as stack:
        if standin is None:
            standin = await stack.enter_async_context(
                SlackStandIn(
                    TOKEN,
                    channels={CHANNEL: "releases"},
                    users=USERS,
                    usergroups={"S0APPROVERS": [GROUPIE]},
                )
            )
        from slack_sdk.web.async_client import AsyncWebClient

        client = AsyncWebClient(token=TOKEN, base_url=standin.api_url)
        server = make_server(
            settings,
            config,
            registry=RegistrySettings(insecure_registries=frozenset({lab.registry})),
            client=client,
            notifier_interval=0.2,
            clock=lambda: clock[0],
        )
        runner = web.AppRunner(server.web_app, access_log=None)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        slack = await stack.enter_async_context(
            SignedSlackClient(url + "/slack/events", SECRET, standin=standin)
        )
        yield Bot(url, server, standin, slack, namespace, key_prefix, lab, clock)


@pytest.fixture
async def bot(lab: Lab, redis_url: str, tmp_path: Path, key_prefix: str) -> AsyncIterator[Bot]:
    namespace = f"bot-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "aibrix.toml"
    path.write_text(config_text(lab, namespace, key_prefix))
    # approvals carry Redis time; tests move this clock forward
    async with running_bot(lab, redis_url, path, key_prefix, namespace) as found:
        yield found
        keys = await found.server.redis.keys(f"{key_prefix}*")
        if keys:
            await found.server.redis.delete(*keys)


def answer(body: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(body)
    return data


# ---- serving ------------------------------------------------------------------------


async def test_healthz_answers_when_redis_does(bot: Bot) -> None:
    async with aiohttp.ClientSession() as session, session.get(bot.url + "/healthz") as resp:
        assert resp.status == 200
        assert (await resp.json())["redis"] == "ok"


async def test_healthz_is_503_when_redis_does_not_answer(lab: Lab, tmp_path: Path) -> None:
    path = tmp_path / "aibrix.toml"
    path.write_text(config_text(lab, "unused", "aibrix-test:health"))
    settings = BotSettings(
        bot_token=TOKEN, signing_secret=SECRET, redis_url="redis://127.0.0.1:1/0"
    )
    server = make_server(settings, load_config(path))
    runner = web.AppRunner(server.web_app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/healthz"
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            assert resp.status == 503
    finally:
        await runner.cleanup()


async def test_signed_help_gets_200_and_its_answer(bot: Bot) -> None:
    resp = await bot.slack.slash_command("help", user_id=REQUESTER)
    assert resp.status == 200
    body = answer(resp.body)
    assert body["response_type"] == "ephemeral"
    assert "/aibrix release VERSION [COMPONENT...]" in body["text"]
    assert await bot.keys() == []


@pytest.mark.parametrize(
    "broken", [{"tamper": True}, {"age": 301}, {"secret": "not-the-signing-secret"}]
)
async def test_broken_signatures_are_401_and_change_nothing(
    bot: Bot, broken: dict[str, Any]
) -> None:
    resp = await bot.slack.slash_command("release v0.3.0", user_id=REQUESTER, **broken)
    assert resp.status == 401
    await asyncio.sleep(0.3)
    assert await bot.keys() == []
    assert bot.standin.calls_to("chat.postMessage") == []


BAD_INPUT = [
    ("frobnicate v0.3.0", "is not an /aibrix command"),
    ("release", "no release version given"),
    ("release 0.3.0", "must start with a lowercase 'v'"),
    ("release v0.3", "is not a release version"),
    ("release v0.3.0 nosuch", "is not a component of this project"),
    ("release v0.3.0; rm -rf /", "';' (U+003B)"),
    ("release v0.3.0 `id`", "'`' (U+0060)"),
    ("release $(id)", "'$' (U+0024)"),
    ("release v0.3.0 | cat", "'|' (U+007C)"),
    ("release v0.3.0\nstatus", "'\\n' (U+000A)"),
    ("release v0.3.0-rc.1" + " runtime" * 700, "at most 500 are accepted"),
    ("x" * 5000, "at most 500 are accepted"),
    ("inspect", "does not take 0 arguments"),
    ("inspect runtime", "give the tag to inspect"),
    ("inspect nosuch", "is not a component of this project"),
    ("inspect Bad/Image:tag", "inspect"),
    ("status v01.2.3", "leading zero"),
    ("status v1.2.3 v1.2.4", "does not take 2 arguments"),
    ("sync v0.3.0", "does not take 1 arguments"),
    ("sync v0.3.0 nowhere", "is not a configured mirror"),
    ("cancel", "no release version given"),
    ("retry vX", "is not a release version"),
    ("help me", "usage: /aibrix help"),
    ("release v0.3.0 <!channel>", "'&lt;' (U+003C)"),
]


@pytest.mark.parametrize(("text", "expected"), BAD_INPUT)
async def test_bad_input_gets_an_error_and_writes_nothing(
    bot: Bot, text: str, expected: str
) -> None:
    resp = await bot.slack.slash_command(text, user_id=REQUESTER)
    assert resp.status == 200
    body = answer(resp.body)
    assert body["response_type"] == "ephemeral"
    assert expected in body["text"], body["text"]
    assert "<" not in body["text"] and ">" not in body["text"]  # escaped
    await asyncio.sleep(0.2)
    assert await bot.keys() == []
    assert bot.standin.calls_to("chat.postMessage") == []


async def test_release_starts_one_run_and_a_retried_delivery_is_no_second(bot: Bot) -> None:
    first = await bot.slack.slash_command("release v0.3.0", user_id=REQUESTER)
    assert first.status == 200
    assert "working on release v0.3.0" in answer(first.body)["text"]
    (posted,) = await bot.standin.wait_for_calls("chat.postMessage", 1, timeout=15)
    await bot.ephemeral(REQUESTER, lambda e: "started run" in e.text)
    retried = await bot.slack.resend(first, retry_num=1)  # the same delivery, again
    assert retried.status == 200 and retried.body == ""
    again = await bot.slack.slash_command("release v0.3.0", user_id=REQUESTER)
    assert again.status == 200
    await bot.ephemeral(REQUESTER, lambda e: "already running" in e.text)
    assert len(await bot.pipeline.store.run_ids("v0.3.0")) == 1
    assert len(bot.standin.calls_to("chat.postMessage")) == 1
    release = await bot.pipeline.store.load("v0.3.0")
    assert release.requested_by == REQUESTER and release.status_channel == CHANNEL
    assert release.status_ts == posted.response["ts"]
    message = bot.standin.message(CHANNEL, release.status_ts)
    assert message is not None and "Release v0.3.0" in message.text


async def test_inspect_of_an_arm64_only_image_names_amd64_missing(bot: Bot) -> None:
    repo = f"{bot.namespace}/runtime"
    pusher = OciPusher(bot.lab.registry)
    async with aiohttp.ClientSession() as session:
        arm = await pusher.image(session, repo, os="linux", arch="arm64")
        await pusher.index(session, repo, "v0.3.0-rc.2", [entry(arm, "linux", "arm64")])
    resp = await bot.slack.slash_command("inspect runtime v0.3.0-rc.2", user_id=REQUESTER)
    assert resp.status == 200
    found = await bot.ephemeral(REQUESTER, lambda e: "MISSING" in json.dumps(e.blocks))
    shown = json.dumps(found.blocks)
    assert "runtime v0.3.0-rc.2 is missing linux/amd64; the index has linux/arm64 only" in shown
    assert await bot.keys() == []


# ---- the approval gate ----------------------------------------------------------------


async def make_ready(bot: Bot, version: str) -> Release:
    """A run that reached ready for real: its indexes are in the lab registry and their
    digests are the verified ones (built by OciPusher instead of workers, for speed)."""
    store = bot.pipeline.store
    pusher = OciPusher(bot.lab.registry)
    release, created = await store.create_or_get(
        version, REQUESTER, CHANNEL, ["linux/amd64", "linux/arm64"], list(COMPONENTS), "test"
    )
    assert created
    await store.transition(version, release.run_id, [State.QUEUED], State.BUILDING)
    async with aiohttp.ClientSession() as session:
        for component in COMPONENTS:
            repo = f"{bot.namespace}/{component}"
            amd = await pusher.image(
                session, repo, os="linux", arch="amd64", payload=version.encode()
            )
            arm = await pusher.image(
                session, repo, os="linux", arch="arm64", payload=version.encode()
            )
            for platform, pushed in (("linux/amd64", amd), ("linux/arm64", arm)):
                await store.update_build(
                    version, release.run_id, component, platform, BuildState.BUILDING, attempt=1
                )
                await store.record_build_digest(
                    version, release.run_id, component, platform, pushed.digest, 1
                )
            index = await pusher.index(
                session, repo, version, [entry(amd, "linux", "amd64"), entry(arm, "linux", "arm64")]
            )
            await store.transition(version, release.run_id, [State.BUILDING], State.MERGING)
            await store.transition(version, release.run_id, [State.MERGING], State.VERIFYING)
            await store.record_index(version, release.run_id, component, index.digest, "ok")
    assert await store.transition(version, release.run_id, [State.VERIFYING], State.READY)
    ready = await store.load(version, release.run_id)
    assert ready is not None and ready.state is State.READY
    from handlers.context import post_status_message

    await post_status_message(bot.server.deps, _client(bot), ready)
    loaded = await store.load(version, release.run_id)
    assert loaded is not None
    await bot.wait_message(loaded.status_ts, "approve_release")
    return loaded


def _client(bot: Bot) -> Any:
    from slack_sdk.web.async_client import AsyncWebClient

    return AsyncWebClient(token=TOKEN, base_url=bot.standin.api_url)


async def click(bot: Bot, action: str, user: str, ts: str, **options: Any) -> str:
    before = len(bot.standin.ephemerals_for(user))
    resp = await bot.slack.block_action(action, user_id=user, message_ts=ts, **options)
    assert resp.status == 200
    bot.last_click = resp
    async with asyncio.timeout(15):
        while len(bot.standin.ephemerals_for(user)) <= before:
            await asyncio.sleep(0.05)
    return bot.standin.ephemerals_for(user)[-1].text


async def test_approval_matrix(bot: Bot) -> None:
    release = await make_ready(bot, "v1.0.0")
    ts = release.status_ts
    store = bot.pipeline.store

    assert "may not approve here" in await click(bot, "approve_release", STRANGER, ts)
    assert "may not approve it (self-approval is off)" in await click(
        bot, "approve_release", REQUESTER, ts
    )
    assert (await store.load("v1.0.0")).approvals == {}

    said = await click(bot, "approve_release", APPROVER, ts)
    assert f"1 of 2 approvals: <@{APPROVER}>" in said
    assert "already approved" in await click(bot, "approve_release", APPROVER, ts)
    assert bot.last_click is not None
    redelivered = await bot.slack.resend(bot.last_click, retry_num=1)  # that click, again
    assert redelivered.status == 200 and redelivered.body == ""
    assert list((await store.load("v1.0.0")).approvals) == [APPROVER]
    await bot.wait_message(ts, f"1 of 2 approvals: <@{APPROVER}>")

    # The first approval expires: make it as old as an approval given TTL + 1 s ago.
    key = bot.pipeline.keys.approvals("v1.0.0", release.run_id)
    recorded = json.loads(await bot.server.redis.hget(key, APPROVER))
    recorded["at"] = int((bot.now[0] - TTL - 1) * 1000)  # by the bot's clock
    await bot.server.redis.hset(key, APPROVER, json.dumps(recorded))
    said = await click(bot, "approve_release", GROUPIE, ts)  # an approver through the group
    assert f"1 of 2 approvals: <@{GROUPIE}>" in said
    assert "expired" in said
    assert (await store.load("v1.0.0")).state is State.READY

    said = await click(bot, "approve_release", APPROVER, ts)  # renewed: now two count
    assert "2 of 2 approvals" in said and "promotion is queued" in said
    final = await store.load("v1.0.0")
    assert final.state is State.APPROVED
    jobs = await bot.server.redis.xrange(bot.pipeline.keys.job_stream(None))
    assert [json.loads(f["job"])["kind"] for _, f in jobs].count("promote") == 1
    audit = [e for e in await store.audit_entries(100) if e["version"] == "v1.0.0"]
    assert {"approved", "approval-refused"} <= {e["action"] for e in audit}
    rendered = await bot.wait_message(ts, "approved, promotion queued")
    assert "approve_release" not in rendered


async def test_reject_blocks_and_buttons_of_a_superseded_run_are_refused(bot: Bot) -> None:
    first = await make_ready(bot, "v1.1.0")
    said = await click(bot, "reject_release", APPROVER, first.status_ts)
    assert f"rejected by <@{APPROVER}>" in said
    blocked = await bot.pipeline.store.load("v1.1.0")
    assert blocked.state is State.BLOCKED and blocked.state_reason == f"rejected by <@{APPROVER}>"
    rendered = await bot.wait_message(first.status_ts, "BLOCKED")
    assert "approve_release" not in rendered
    second = await make_ready(bot, "v1.1.0")
    assert second.run_id != first.run_id
    # The old message still has its buttons in our stand-in history: click the old value.
    old_value = json.dumps({"version": "v1.1.0", "run_id": first.run_id}, separators=(",", ":"))
    said = await click(bot, "approve_release", APPROVER, second.status_ts, value=old_value)
    assert "belong to an earlier run" in said
    assert (await bot.pipeline.store.load("v1.1.0")).approvals == {}


async def test_forged_button_values_are_refused(bot: Bot) -> None:
    release = await make_ready(bot, "v1.2.0")
    for value in ("not json", '{"version":"v1.2.0"}', '{"version":"1.2.0","run_id":"abcdef12"}'):
        said = await click(bot, "approve_release", APPROVER, release.status_ts, value=value)
        assert "does not carry a release" in said
    assert (await bot.pipeline.store.load("v1.2.0")).approvals == {}


async def test_a_tag_changed_after_verification_is_refused_and_blocks(bot: Bot) -> None:
    release = await make_ready(bot, "v2.0.0")
    repo = f"{bot.namespace}/runtime"
    pusher = OciPusher(bot.lab.registry)
    async with aiohttp.ClientSession() as session:
        arm = await pusher.image(session, repo, os="linux", arch="arm64", payload=b"other")
        await pusher.index(session, repo, "v2.0.0", [entry(arm, "linux", "arm64")])
    said = await click(bot, "approve_release", APPROVER, release.status_ts)
    assert "refused" in said and "runtime v2.0.0 has moved since it was verified" in said
    after = await bot.pipeline.store.load("v2.0.0")
    assert after.state is State.BLOCKED
    assert "has moved since it was verified" in after.state_reason
    assert after.approvals == {}
    rendered = await bot.wait_message(release.status_ts, "BLOCKED")
    assert "approve_release" not in rendered
