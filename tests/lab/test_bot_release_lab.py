"""The live message follows a whole release with two real workers, and the approval
runs the promotion for real: /aibrix release -> building -> ready -> Approve -> promoted."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from slack_sdk.web.async_client import AsyncWebClient

from bot.server import make_server
from bot.settings import BotSettings
from jobs.domain.release import State
from jobs.registry.client import RegistrySettings
from tests.conftest import Lab
from tests.support.pipeline import Setup, toml_config
from tests.support.slack_client import SignedSlackClient
from tests.support.slack_standin import SlackStandIn

TOKEN = "xoxb-release-lab-0000"
SECRET = "release-lab-signing-secret-0123456789"
CHANNEL = "C0RELEASES"
APPROVER = "U0APPROVER1"
COMPONENTS = {
    "controller-manager": "build/container/Dockerfile",
    "gateway-plugins": "build/container/Dockerfile.gateway",
}


@pytest.fixture
async def setup(
    lab: Lab, redis_url: str, docker_available: None, tmp_path: Path, key_prefix: str
) -> AsyncIterator[Setup]:
    namespace = f"botrel-{uuid.uuid4().hex[:8]}"
    config = tmp_path / "aibrix.toml"
    text = toml_config(lab, namespace=namespace, key_prefix=key_prefix, components=COMPONENTS)
    # The requester is no approver: the permission table grants them release.
    text = text.replace(
        'channels = ["C0RELEASES"]', 'channels = ["C0RELEASES"]\nrelease = ["U0REQUESTER"]'
    )
    config.write_text(text + '[promotion]\ntags = ["latest"]\n')
    logs = tmp_path / "logs"
    logs.mkdir()
    found = Setup(lab, config, redis_url, logs)
    yield found
    found.stop_all()


async def test_live_message_follows_a_release_and_approval_promotes(setup: Setup) -> None:
    lab = setup.lab
    config = setup.config
    async with SlackStandIn(TOKEN, channels={CHANNEL: "releases"}) as standin:
        client = AsyncWebClient(token=TOKEN, base_url=standin.api_url)
        server = make_server(
            BotSettings(bot_token=TOKEN, signing_secret=SECRET, redis_url=setup.redis_url),
            config,
            registry=RegistrySettings(insecure_registries=frozenset({lab.registry})),
            client=client,
        )
        standin.per_channel_rate_limit("chat.update", interval=1.0)  # Slack's own pace
        runner = web.AppRunner(server.web_app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"
        try:
            setup.start_worker("linux/amd64")
            setup.start_worker("linux/arm64")
            async with SignedSlackClient(url, SECRET, standin=standin) as slack:
                resp = await slack.slash_command("release v0.6.0", user_id="U0REQUESTER")
                assert resp.status == 200
                (posted,) = await standin.wait_for_calls("chat.postMessage", 1, timeout=30)
                ts = posted.response["ts"]
                ready = await setup.wait_for("v0.6.0", [State.READY, State.BLOCKED, State.FAILED])
                assert ready.state is State.READY, ready.state_reason + setup.tail_logs()

                async def shown(needle: str, timeout: float = 30) -> str:
                    async with asyncio.timeout(timeout):
                        while True:
                            message = standin.message(CHANNEL, ts)
                            text = json.dumps(message.blocks) if message else ""
                            if needle in text:
                                return text
                            await asyncio.sleep(0.1)

                final = await shown("ready for approval")
                for component, index in ready.indexes.items():
                    assert component in final
                    assert index.digest.split(":")[1][:8] in final  # short digests shown
                assert "approve_release" in final
                message = standin.message(CHANNEL, ts)
                assert message is not None
                history = [json.dumps(v.blocks) for v in message.history]
                assert any("building" in h or "queued" in h for h in history)
                assert not [
                    c
                    for c in standin.calls_to("chat.update")
                    if not c.ok and c.error != "ratelimited"
                ]

                await slack.block_action("approve_release", user_id=APPROVER, message_ts=ts)
                promoted = await setup.wait_for(
                    "v0.6.0", [State.PROMOTED, State.FAILED], timeout=120
                )
                assert promoted.state is State.PROMOTED, promoted.state_reason + setup.tail_logs()
                assert {p.target for p in promoted.promotions.values()} == {
                    f"{config.image(c)}:latest" for c in COMPONENTS
                }
                assert all(p.ok for p in promoted.promotions.values())
                for component, index in promoted.indexes.items():
                    async with (
                        aiohttp.ClientSession() as session,
                        session.head(
                            f"http://{lab.registry}/v2/{config.image(component).split('/', 1)[1]}/manifests/latest",
                            headers={
                                "Accept": "application/vnd.oci.image.index.v1+json,application/vnd.docker.distribution.manifest.list.v2+json"
                            },
                        ) as head,
                    ):
                        assert head.headers["Docker-Content-Digest"] == index.digest
                await shown("promoted", timeout=30)
        finally:
            await runner.cleanup()
