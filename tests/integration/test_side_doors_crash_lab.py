"""Issue 10, items 6, 7 and 12 (delivery claims): a bot killed at the worst moment leaves
nothing half-done, and refused input leaves nothing behind.

The bot is the real `aibrix-bot serve` (a subprocess) on real Redis, fed signed HTTP
requests, and SIGKILLed at an exact point made deterministic from outside: a TCP proxy
in front of Redis that holds every reply once the run-creating call has passed (item 6),
or the Slack stand-in holding the answer to chat.postMessage after posting (item 7).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import pytest
import redis.asyncio as aioredis

from handlers.blocks import APPROVE_ACTION
from handlers.parse import button_value, command_delivery
from jobs.store import releases as state
from jobs.store.keys import Keys
from tests.conftest import Lab
from tests.support.bot import (
    CHANNEL,
    COMPONENTS,
    GROUPIE,
    REQUESTER,
    SECRET,
    STRANGER,
    TOKEN,
    USERS,
    config_text,
)
from tests.support.netproxy import FreezeProxy
from tests.support.pipeline import BOT
from tests.support.slack_client import SignedResponse, SignedSlackClient
from tests.support.slack_standin import SlackStandIn
from tests.support.streams import stream_entries

PLATFORMS = ("linux/amd64", "linux/arm64")
# Short, so that the test waits little for a dead handler's claim to run out.
CLAIM_SECONDS = 2
# How long a dead handler's claim may take to run out, with room for a loaded machine.
CLAIM_EXPIRY_WAIT = CLAIM_SECONDS + 10


@dataclass
class Lab6:
    standin: SlackStandIn
    slack: SignedSlackClient
    redis: aioredis.Redis
    keys: Keys
    config: Path
    log: Path
    port: int

    @property
    def events_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/slack/events"

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def config_path(lab: Lab, tmp_path: Path, key_prefix: str) -> Iterator[Path]:
    text = config_text(lab, f"crash-{uuid.uuid4().hex[:8]}", key_prefix)
    prefix_line = f'key_prefix = "{key_prefix}"\n'
    assert prefix_line in text
    text = text.replace(prefix_line, prefix_line + f"claim_seconds = {CLAIM_SECONDS}\n")
    path = tmp_path / "aibrix.toml"
    path.write_text(text)
    yield path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
async def crash_lab(
    lab: Lab, redis_url: str, config_path: Path, tmp_path: Path, key_prefix: str
) -> AsyncIterator[Lab6]:
    async with SlackStandIn(
        TOKEN, channels={CHANNEL: "releases"}, users=USERS, usergroups={"S0APPROVERS": [GROUPIE]}
    ) as standin:
        port = _free_port()
        redis = aioredis.from_url(redis_url, decode_responses=True)
        slack = SignedSlackClient(f"http://127.0.0.1:{port}/slack/events", SECRET, standin=standin)
        try:
            yield Lab6(
                standin, slack, redis, Keys(key_prefix), config_path, tmp_path / "serve.log", port
            )
        finally:
            await slack.close()
            keys = await redis.keys(f"{key_prefix}*")
            if keys:
                await redis.delete(*keys)
            await redis.aclose()


@asynccontextmanager
async def serving(
    crash: Lab6, redis_url: str, *, kill: bool = False
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """`aibrix-bot serve` on `redis_url`, up once /healthz answers. Stopped with SIGTERM
    at the end, unless the test killed it already."""
    env = {
        **os.environ,
        "SLACK_BOT_TOKEN": TOKEN,
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_URL": crash.standin.api_url,
        "REDIS_URL": redis_url,
        "AIBRIX_CONFIG": str(crash.config),
    }
    env.pop("SLACK_APP_TOKEN", None)
    with crash.log.open("ab") as out:
        process = subprocess.Popen(
            [BOT, "serve", "--host", "127.0.0.1", "--port", str(crash.port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        async with asyncio.timeout(30), aiohttp.ClientSession() as session:
            while True:
                if process.poll() is not None:
                    raise AssertionError("the bot did not start: " + crash.output())
                try:
                    async with session.get(f"http://127.0.0.1:{crash.port}/healthz") as health:
                        if health.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    for secret in (TOKEN, SECRET):
        assert secret not in crash.output()


def _sigkill(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=15)


def _form(response: SignedResponse) -> dict[str, str]:
    return dict(parse_qsl(response.sent_body, keep_blank_values=True))


def _delivery_key(crash: Lab6, response: SignedResponse) -> str:
    identity = command_delivery(_form(response))
    assert identity is not None
    return crash.keys.slack_delivery(identity)


async def _claim_expired(crash: Lab6, key: str) -> None:
    """Wait for the claim a killed handler left to run out (the positive signal that a
    redelivery will be handled)."""
    try:
        async with asyncio.timeout(CLAIM_EXPIRY_WAIT):
            while await crash.redis.exists(key):
                await asyncio.sleep(0.1)
    except TimeoutError:
        ttl = await crash.redis.ttl(key)
        raise AssertionError(
            f"the killed handler's delivery claim is still there ({ttl} s to live): "
            "Slack's redelivery would be dropped"
        ) from None


async def _jobs_of(crash: Lab6, version: str, run_id: str) -> list[tuple[str, str, str]]:
    """(kind, component, platform) of every job of the run in the streams (no worker
    runs in these tests, so nothing is consumed)."""
    found = []
    for stream in (
        *(crash.keys.job_stream(p) for p in PLATFORMS),
        crash.keys.control_stream,
    ):
        for _, fields in await stream_entries(crash.redis, stream):
            job = json.loads(fields["job"])
            if job["release"] == version and job["run_id"] == run_id:
                found.append((job["kind"], job["component"], job["platform"] or ""))
    return sorted(found)


async def _runs(crash: Lab6, version: str) -> list[str]:
    return [str(r) for r in await crash.redis.zrange(crash.keys.runs(version), 0, -1)]


async def _run(crash: Lab6, version: str, run_id: str) -> dict[str, Any]:
    return dict(cast(dict[str, str], await crash.redis.hgetall(crash.keys.run(version, run_id))))


def _live_messages(crash: Lab6, version: str) -> list[Any]:
    return [
        m
        for m in crash.standin.messages(CHANNEL)
        if m.thread_ts is None and m.text.startswith(f"Release {version}")
    ]


async def _recorded_ts(crash: Lab6, version: str, run_id: str, timeout: float = 30) -> str:
    async with asyncio.timeout(timeout):
        while not (ts := (await _run(crash, version, run_id)).get("status_ts")):
            await asyncio.sleep(0.1)
    return str(ts)


def _redis_host_port(redis_url: str) -> tuple[str, int, str]:
    parts = urlsplit(redis_url)
    return parts.hostname or "127.0.0.1", parts.port or 6379, parts.path or "/0"


EXPECTED_BUILDS = sorted(("build", c, p) for c in COMPONENTS for p in PLATFORMS)


async def test_item6_killed_between_create_and_enqueue_redelivery_completes(
    crash_lab: Lab6, redis_url: str
) -> None:
    crash, version = crash_lab, "v6.0.0"
    # The run-creating call names the version's runs key; nothing before it does. Its
    # script is loaded first, so that the call that passes is the one that runs.
    await crash.redis.script_load(state._CREATE.text)
    host, port, database = _redis_host_port(redis_url)
    trigger = crash.keys.runs(version).encode()
    async with FreezeProxy(host, port, trigger) as proxy:
        proxied = f"redis://127.0.0.1:{proxy.port}{database}"
        async with serving(crash, proxied) as process:
            first = await crash.slack.slash_command(f"release {version}", user_id=REQUESTER)
            assert first.status == 200 and "working on release" in first.body
            async with asyncio.timeout(30):
                await proxy.frozen.wait()
            # Redis ran the call that creates the run; the bot never hears back.
            _sigkill(process)
    (run_id,) = await _runs(crash, version)
    # Nothing half-done: the run and its jobs were written together.
    assert await _jobs_of(crash, version, run_id) == EXPECTED_BUILDS
    assert (await _run(crash, version, run_id))["state"] == "building"

    # Slack redelivers (it got an ack, but say the bot's answer never came: the
    # redelivery of a crash mid-handling), once the dead handler's claim has run out.
    await _claim_expired(crash, _delivery_key(crash, first))
    hook = _form(first)["response_url"]
    async with serving(crash, redis_url):
        again = await crash.slack.resend(first, retry_num=1)
        assert again.status == 200 and "working on release" in again.body
        answers = await crash.standin.wait_for_responses(hook, 1, timeout=30)
        text = answers[-1].payload["text"]
        assert "started run" in text and run_id[:8] in text, text
        ts = await _recorded_ts(crash, version, run_id)
        # And once more: the delivery is confirmed now, so this one does nothing.
        third = await crash.slack.resend(first, retry_num=2)
        assert third.status == 200 and third.body == ""
    assert await _runs(crash, version) == [run_id]
    assert await _jobs_of(crash, version, run_id) == EXPECTED_BUILDS  # enqueued once
    (message,) = _live_messages(crash, version)
    assert message.ts == ts
    assert len(crash.standin.responses(hook)) == 1
    assert await crash.redis.get(_delivery_key(crash, first)) == "confirmed"


async def test_item7_killed_during_post_message_notifier_posts_it_once(
    crash_lab: Lab6, redis_url: str
) -> None:
    crash, version = crash_lab, "v7.0.0"
    held = crash.standin.hold("chat.postMessage")
    async with serving(crash, redis_url) as process:
        first = await crash.slack.slash_command(f"release {version}", user_id=REQUESTER)
        assert first.status == 200
        call = await held.wait_arrived(timeout=30)
        # Slack has posted the message; the bot dies before it hears the ts.
        _sigkill(process)
    held.release()
    (run_id,) = await _runs(crash, version)
    assert call.params["channel"] == CHANNEL
    (posted,) = _live_messages(crash, version)
    assert (await _run(crash, version, run_id))["status_ts"] == ""
    assert await _jobs_of(crash, version, run_id) == EXPECTED_BUILDS

    # Back up, and no redelivery at all: the notifier finds the run without its message
    # and, seeing a post was tried, adopts the one in the channel instead of posting.
    async with serving(crash, redis_url):
        ts = await _recorded_ts(crash, version, run_id, timeout=CLAIM_EXPIRY_WAIT + 30)
        assert ts == posted.ts
        # The message is the live one now: the notifier keeps it up to date.
        async with asyncio.timeout(30):
            while not crash.standin.calls_to("chat.update"):
                await asyncio.sleep(0.1)
        # Slack's redelivery of the command, once the dead handler's claim ran out, gets
        # its own run back and answers; it posts nothing.
        await _claim_expired(crash, _delivery_key(crash, first))
        again = await crash.slack.resend(first, retry_num=1)
        assert again.status == 200
        hook = _form(first)["response_url"]
        answers = await crash.standin.wait_for_responses(hook, 1, timeout=30)
        assert run_id[:8] in answers[-1].payload["text"], answers[-1].payload
    assert await _runs(crash, version) == [run_id]
    assert _live_messages(crash, version) == [posted]
    assert len(crash.standin.calls_to("chat.postMessage")) == 1
    assert await _jobs_of(crash, version, run_id) == EXPECTED_BUILDS
    update = crash.standin.calls_to("chat.update")[0]
    assert update.params["ts"] == posted.ts


async def test_item12_refused_command_leaves_no_delivery_key(
    crash_lab: Lab6, redis_url: str, lab: Lab
) -> None:
    crash, version = crash_lab, "v12.0.0"
    namespace = crash.config.read_text().split(f'"{lab.registry}/', 1)[1].split('"', 1)[0]
    async with serving(crash, redis_url):
        started = await crash.slack.slash_command(f"release {version}", user_id=REQUESTER)
        (run_id,) = await _wait_runs(crash, version)
        ts = await _recorded_ts(crash, version, run_id)
        done = _delivery_key(crash, started)
        # A stranger's Approve click on the run's own message, and a sync to the release
        # repository itself: each is refused with an answer, and leaves no delivery key.
        click = await crash.slack.block_action(
            APPROVE_ACTION,
            button_value(version, run_id),
            user_id=STRANGER,
            message_ts=ts,
            block_id=f"gate:{run_id}",
        )
        assert click.status == 200
        click_hook = json.loads(_form(click)["payload"])["response_url"]
        await crash.standin.wait_for_responses(click_hook, 1, timeout=30)
        sync = await crash.slack.slash_command(
            f"sync {version} {lab.registry}/{namespace}", user_id=REQUESTER
        )
        assert sync.status == 200
        if "working on" in sync.body:  # refused after the ack: the answer comes later
            await crash.standin.wait_for_responses(_form(sync)["response_url"], 1, timeout=30)
        # The release's own answer comes last, once its delivery is confirmed.
        await crash.standin.wait_for_responses(_form(started)["response_url"], 1, timeout=30)
        delivery_keys = await crash.redis.keys(f"{crash.keys.prefix}:slack:delivery:*")
        assert delivery_keys == [done]
        assert await crash.redis.get(done) == "confirmed"


async def _wait_runs(crash: Lab6, version: str, count: int = 1) -> list[str]:
    async with asyncio.timeout(30):
        while len(runs := await _runs(crash, version)) < count:
            await asyncio.sleep(0.1)
    return runs
