"""Socket Mode: the stand-in's apps.connections.open and WebSocket behave as Slack's, and
the real `aibrix-bot serve --socket-mode` (a subprocess) answers commands delivered over
it, refuses bad input without writing anything, and handles redeliveries once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from jobs.store.keys import Keys
from tests.conftest import Lab
from tests.support.bot import CHANNEL, REQUESTER, SECRET, TOKEN, USERS, config_text
from tests.support.pipeline import BOT
from tests.support.slack_client import SocketModeSlack
from tests.support.slack_standin import SlackStandIn, SocketDelivery

APP_TOKEN = "xapp-1-A0AIBRIXAPP-0000-socketmodetesttoken"
SECRETS = (TOKEN, SECRET, APP_TOKEN)


# ---- the stand-in, on its own ------------------------------------------------------


async def _open(standin: SlackStandIn, token: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            standin.api_url + "apps.connections.open",
            headers={"Authorization": f"Bearer {token}"},
        ) as resp,
    ):
        data: dict[str, Any] = await resp.json()
        return data


async def test_apps_connections_open_takes_the_app_token_only() -> None:
    async with SlackStandIn(TOKEN, app_token=APP_TOKEN) as standin:
        assert (await _open(standin, TOKEN))["error"] == "not_allowed_token_type"
        assert (await _open(standin, "xapp-1-wrong"))["error"] == "invalid_auth"
        opened = await _open(standin, APP_TOKEN)
        assert opened["ok"] is True
        assert opened["url"].startswith(standin.url.replace("http://", "ws://") + "/link/?ticket=")
        # and the app token is no bot token
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                standin.api_url + "chat.postMessage",
                headers={"Authorization": f"Bearer {APP_TOKEN}"},
                json={"channel": CHANNEL, "text": "hi"},
            ) as resp,
        ):
            assert (await resp.json())["error"] == "not_allowed_token_type"
        assert standin.messages(CHANNEL) == []
        assert all(APP_TOKEN not in json.dumps(c.params) for c in standin.calls)


async def test_unknown_ticket_is_refused_and_a_ticket_is_good_once() -> None:
    async with (
        SlackStandIn(TOKEN, app_token=APP_TOKEN) as standin,
        aiohttp.ClientSession() as session,
    ):
        url = (await _open(standin, APP_TOKEN))["url"]
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(url.replace("ticket=", "ticket=0"))
        assert refused.value.status == 401
        async with session.ws_connect(url) as ws:
            hello = await ws.receive_json()
            assert hello["type"] == "hello"
            assert hello["connection_info"] == {"app_id": standin.app_id}
            with pytest.raises(aiohttp.WSServerHandshakeError):
                await session.ws_connect(url)  # used


async def test_an_unacked_envelope_comes_again_with_the_next_retry_attempt() -> None:
    async with (
        SlackStandIn(TOKEN, app_token=APP_TOKEN, ack_timeout=0.2) as standin,
        aiohttp.ClientSession() as session,
    ):
        url = (await _open(standin, APP_TOKEN))["url"]
        async with session.ws_connect(url) as ws:
            assert (await ws.receive_json())["type"] == "hello"
            sent = await standin.deliver("slash_commands", {"text": "status", "user_id": "U1"})
            first = await ws.receive_json()
            assert first == {
                "envelope_id": sent.envelope_id,
                "type": "slash_commands",
                "payload": {"text": "status", "user_id": "U1"},
                "accepts_response_payload": True,
                "retry_attempt": 0,
                "retry_reason": "",
            }
            # Not acked: Slack sends it again.
            again = await ws.receive_json()
            assert again["envelope_id"] == sent.envelope_id
            assert (again["retry_attempt"], again["retry_reason"]) == (1, "timeout")
            await ws.send_json({"envelope_id": sent.envelope_id, "payload": {"text": "ok"}})
            ack = await standin.wait_for_ack(sent.envelope_id)
            assert ack.known and ack.payload == {"text": "ok"} and ack.error is None
            # The ack's payload is what Slack shows the user who ran the command.
            assert [e.text for e in standin.ephemerals_for("U1")] == ["ok"]
            await ws.send_json({"envelope_id": "nosuch"})
            async with asyncio.timeout(5):
                while len(standin.socket_acks) < 2:
                    await asyncio.sleep(0.02)
            assert not standin.socket_acks[1].known
        # Acked: no more attempts, however long one waits for them.
        assert [s.retry_attempt for s in sent.sends] == [0, 1]


async def test_an_ack_payload_over_slack_limits_is_refused_as_slack_refuses_it() -> None:
    async with (
        SlackStandIn(TOKEN, app_token=APP_TOKEN, ack_timeout=None) as standin,
        aiohttp.ClientSession() as session,
    ):
        url = (await _open(standin, APP_TOKEN))["url"]
        async with session.ws_connect(url) as ws:
            await ws.receive_json()
            sent = await standin.deliver("slash_commands", {"text": "x", "user_id": "U1"})
            await ws.receive_json()
            too_many = [{"type": "divider"}] * 51
            await ws.send_json(
                {"envelope_id": sent.envelope_id, "payload": {"text": "t", "blocks": too_many}}
            )
            ack = await standin.wait_for_ack(sent.envelope_id)
        assert ack.error == "invalid_blocks"
        assert standin.ephemerals == []


# ---- the real bot, as a process ------------------------------------------------------


@dataclass
class SocketBot:
    standin: SlackStandIn
    slack: SocketModeSlack
    redis: aioredis.Redis
    key_prefix: str
    process: subprocess.Popen[bytes]
    log: Path
    port: int

    async def keys(self) -> list[str]:
        """The keys under the test's prefix but the notifier's lease, which a running bot
        holds whatever it is asked."""
        lease = Keys(self.key_prefix).notifier_leader
        found = await self.redis.keys(f"{self.key_prefix}*")
        return sorted(str(k) for k in found if str(k) != lease)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _env(config: Path, standin: SlackStandIn, redis_url: str, app_token: str) -> dict[str, str]:
    return {
        **os.environ,
        "SLACK_BOT_TOKEN": TOKEN,
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_APP_TOKEN": app_token,
        "SLACK_API_URL": standin.api_url,
        "REDIS_URL": redis_url,
        "AIBRIX_CONFIG": str(config),
    }


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def config_path(lab: Lab, tmp_path: Path, key_prefix: str) -> Iterator[Path]:
    path = tmp_path / "aibrix.toml"
    path.write_text(config_text(lab, f"sock-{uuid.uuid4().hex[:8]}", key_prefix))
    yield path


@pytest.fixture
async def socket_bot(
    lab: Lab, redis_url: str, config_path: Path, tmp_path: Path, key_prefix: str
) -> AsyncIterator[SocketBot]:
    async with SlackStandIn(
        TOKEN, channels={CHANNEL: "releases"}, users=USERS, app_token=APP_TOKEN
    ) as standin:
        log = tmp_path / "serve.log"
        with socket.socket() as probe:  # a free port, to reach /healthz
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        with log.open("wb") as out:
            process = subprocess.Popen(
                [BOT, "serve", "--socket-mode", "--host", "127.0.0.1", "--port", str(port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=_env(config_path, standin, redis_url, APP_TOKEN),
            )
        redis = aioredis.from_url(redis_url, decode_responses=True)
        try:
            try:
                await standin.wait_for_socket(timeout=30)
            except TimeoutError:
                raise AssertionError("the bot never connected: " + log.read_text()) from None
            yield SocketBot(
                standin, SocketModeSlack(standin), redis, key_prefix, process, log, port
            )
        finally:
            _stop(process)
            keys = await redis.keys(f"{key_prefix}*")
            if keys:
                await redis.delete(*keys)
            await redis.aclose()
        output = log.read_text(errors="replace")
        for secret in SECRETS:
            assert secret not in output


async def _acked(bot: SocketBot, delivery: SocketDelivery) -> dict[str, Any] | None:
    ack = await bot.standin.wait_for_ack(delivery.envelope_id, timeout=20)
    return ack.payload


async def test_a_command_over_socket_mode_is_acked_and_answered(socket_bot: SocketBot) -> None:
    bot = socket_bot
    connection = bot.standin.socket_connections[0]
    assert connection.open
    helped = await bot.slack.slash_command("help", user_id=REQUESTER)
    payload = await _acked(bot, helped)
    assert payload is not None and "/aibrix release VERSION [COMPONENT...]" in payload["text"]
    # Slack shows the ack payload to the user who ran the command.
    assert any("/aibrix release" in e.text for e in bot.standin.ephemerals_for(REQUESTER))

    started = await bot.slack.slash_command("release v0.3.0", user_id=REQUESTER)
    payload = await _acked(bot, started)
    assert payload is not None and "working on release v0.3.0" in payload["text"]
    (posted,) = await bot.standin.wait_for_calls("chat.postMessage", 1, timeout=20)
    assert posted.params["channel"] == CHANNEL and "Release v0.3.0" in posted.params["text"]
    hook = started.payload["response_url"]
    answers = await bot.standin.wait_for_responses(hook, 1, timeout=20)
    assert "started run" in answers[0].payload["text"]
    assert any(k.endswith(":release:v0.3.0:active") for k in await bot.keys())
    assert all(c.token_via == "header" for c in bot.standin.calls)


async def test_socket_mode_serves_healthz_and_no_slack_endpoint(socket_bot: SocketBot) -> None:
    # Events come over the WebSocket: nothing on the network accepts Slack requests.
    base = f"http://127.0.0.1:{socket_bot.port}"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/healthz") as health:
            assert health.status == 200
        async with session.post(f"{base}/slack/events", data=b"command=%2Faibrix") as events:
            assert events.status in (404, 405)


BAD = [
    ("release 0.3.0", "must start with a lowercase 'v'"),
    ("release v0.3.0; rm -rf /", "';' (U+003B)"),
    ("frobnicate", "is not an /aibrix command"),
    ("x" * 5000, "at most 500 are accepted"),
]


async def test_bad_input_over_socket_mode_is_answered_and_writes_nothing(
    socket_bot: SocketBot,
) -> None:
    bot = socket_bot
    for text, expected in BAD:
        delivery = await bot.slack.slash_command(text, user_id=REQUESTER)
        payload = await _acked(bot, delivery)
        assert payload is not None and expected in payload["text"], payload
        assert payload["response_type"] == "ephemeral"
    # Each answer is the ack itself, sent once the handler decided; it returns after it.
    assert await bot.keys() == []
    assert bot.standin.calls_to("chat.postMessage") == []


async def test_a_redelivered_envelope_starts_no_second_run(socket_bot: SocketBot) -> None:
    bot = socket_bot
    first = await bot.slack.slash_command("release v0.4.0", user_id=REQUESTER)
    await _acked(bot, first)
    await bot.standin.wait_for_calls("chat.postMessage", 1, timeout=20)
    await bot.standin.redeliver(first.envelope_id)  # retry_attempt 1
    async with asyncio.timeout(20):
        while len(first.acks) < 2:
            await asyncio.sleep(0.02)
    assert first.acks[1].payload is None  # acked, and nothing run
    assert [s.retry_attempt for s in first.sends] == [0, 1]
    active = await bot.redis.get(f"{bot.key_prefix}:release:v0.4.0:active")
    runs = await bot.redis.zrange(f"{bot.key_prefix}:release:v0.4.0:runs", 0, -1)
    assert runs == [active]
    assert len(bot.standin.calls_to("chat.postMessage")) == 1


async def test_a_redelivery_whose_first_delivery_was_lost_runs_once(
    socket_bot: SocketBot,
) -> None:
    bot = socket_bot
    lost = await bot.slack.slash_command("release v0.5.0", user_id=REQUESTER, lose=True)
    assert lost.sends[0].connection is None and not lost.acks
    await bot.standin.redeliver(lost.envelope_id)  # Slack's retry: retry_attempt 1
    payload = await _acked(bot, lost)
    assert payload is not None and "working on release v0.5.0" in payload["text"]
    await bot.standin.wait_for_calls("chat.postMessage", 1, timeout=20)
    await bot.standin.redeliver(lost.envelope_id)  # and once more: already handled
    async with asyncio.timeout(20):
        while len(lost.acks) < 2:
            await asyncio.sleep(0.02)
    assert lost.acks[1].payload is None
    runs = await bot.redis.zrange(f"{bot.key_prefix}:release:v0.5.0:runs", 0, -1)
    assert len(runs) == 1
    assert len(bot.standin.calls_to("chat.postMessage")) == 1


async def test_a_refused_app_token_stops_the_bot_and_says_which(
    lab: Lab, redis_url: str, config_path: Path, tmp_path: Path
) -> None:
    wrong = "xapp-1-A0AIBRIXAPP-9999-notthetoken"
    async with SlackStandIn(TOKEN, app_token=APP_TOKEN) as standin:
        process = await asyncio.create_subprocess_exec(
            BOT,
            "serve",
            "--socket-mode",
            "--port",
            "0",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=_env(config_path, standin, redis_url, wrong),
        )
        out, _ = await asyncio.wait_for(process.communicate(), 60)
    text = out.decode(errors="replace")
    assert process.returncode == 2, text
    assert "Slack refused SLACK_APP_TOKEN for Socket Mode (invalid_auth)" in text
    for secret in (*SECRETS, wrong):
        assert secret not in text
    assert standin.socket_connections == []
