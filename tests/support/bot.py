"""The real Bolt app in-process against the Slack stand-in: the `running_bot` context,
the `bot` fixture, the `Bot` handle and the ids and config the HTTP tests share.

Moved here from tests/test_bot_http.py so tests import helpers, never another test module."""

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
from jobs.domain.config_reader import load_config
from jobs.domain.release import BuildState, Release, State
from jobs.registry.client import RegistrySettings
from jobs.store.keys import Keys
from jobs.usecases.pipeline import Pipeline
from tests.conftest import Lab
from tests.support.oci_push import OciPusher, entry
from tests.support.pipeline import SAMPLE
from tests.support.records import Records
from tests.support.slack_client import SignedResponse, SignedSlackClient
from tests.support.slack_standin import Ephemeral, SlackStandIn

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
    def pipeline(self) -> Pipeline:
        """The bot's own pipeline: for its public operations only."""
        return self.server.deps.pipeline

    @property
    def records(self) -> Records:
        """The test's view of the bot's Redis (see `tests.support.records`)."""
        return Records.on(self.server.redis, self.key_prefix)

    @property
    def key_names(self) -> Keys:
        """The store's key functions under the test's prefix, for raw-Redis checks."""
        return Keys(self.key_prefix)

    async def keys(self) -> list[str]:
        """The keys under the test's prefix but the notifier's lease, which a running bot
        holds whatever it is asked."""
        lease = self.key_names.notifier_leader
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


async def make_ready(bot: Bot, version: str, revision: str = "test") -> Release:
    """A run that reached ready for real: its indexes are in the lab registry and their
    digests are the verified ones (built by OciPusher instead of workers, for speed)."""
    store = bot.records.store
    pusher = OciPusher(bot.lab.registry)
    release, created = await store.create_or_get(
        version, REQUESTER, CHANNEL, ["linux/amd64", "linux/arm64"], list(COMPONENTS), revision
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
    loaded: Release | None = await store.load(version, release.run_id)
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
