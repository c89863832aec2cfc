"""Promotion copies the approved release to the promotion mirrors with the sync engine,
and never overwrites a mirror tag that holds another digest until an approver confirms
it, as a decision of its own: real workers, registries, Redis, the Bolt app over HTTP."""

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
from jobs.domain.manifests import MANIFEST_ACCEPT
from jobs.domain.release import Release, State, pending_overwrites
from jobs.registry.client import RegistrySettings
from tests.conftest import Lab
from tests.support.oci_push import OciPusher
from tests.support.pipeline import Setup, toml_config
from tests.support.records import Records
from tests.support.slack_client import SignedSlackClient
from tests.support.slack_standin import SlackStandIn
from tests.support.sync import craft_component

TOKEN = "xoxb-promote-mirror-0000"
SECRET = "promote-mirror-signing-secret-0123456789"
CHANNEL = "C0RELEASES"
# The requester is an approver too, so that the self-approval rule is what refuses them.
REQUESTER, APPROVER, STRANGER = "U0APPROVER2", "U0APPROVER1", "U0STRANGER"
VERSION = "v0.6.0"
COMPONENTS = {
    "controller-manager": "build/container/Dockerfile",
    "gateway-plugins": "build/container/Dockerfile.gateway",
}
TAKEN = "controller-manager"  # its mirror tag holds something else before the release


@pytest.fixture
async def setup(
    lab: Lab, redis_url: str, docker_available: None, tmp_path: Path, key_prefix: str
) -> AsyncIterator[tuple[Setup, str]]:
    namespace = f"promirror-{uuid.uuid4().hex[:8]}"
    config = tmp_path / "aibrix.toml"
    text = toml_config(lab, namespace=namespace, key_prefix=key_prefix, components=COMPONENTS)
    config.write_text(text + '[promotion]\ntags = ["latest"]\nmirrors = ["lab-mirror"]\n')
    logs = tmp_path / "logs"
    logs.mkdir()
    found = Setup(lab, config, redis_url, logs)
    yield found, namespace
    found.stop_all()


async def mirror_digest(lab: Lab, namespace: str, component: str, tag: str = VERSION) -> str | None:
    url = f"http://{lab.mirror_registry}/v2/{namespace}/{component}/manifests/{tag}"
    async with (
        aiohttp.ClientSession() as session,
        session.head(url, headers={"Accept": MANIFEST_ACCEPT}) as head,
    ):
        return head.headers.get("Docker-Content-Digest") if head.status == 200 else None


async def test_promotion_copies_to_the_mirror_and_an_overwrite_needs_an_approver(
    setup: tuple[Setup, str],
) -> None:
    setup_, namespace = setup
    lab = setup_.lab
    async with aiohttp.ClientSession() as session:
        held = await craft_component(
            OciPusher(lab.mirror_registry), session, f"{namespace}/{TAKEN}", tag=VERSION
        )
    users = {u: u.lower() for u in (REQUESTER, APPROVER, STRANGER)}
    async with SlackStandIn(TOKEN, channels={CHANNEL: "releases"}, users=users) as standin:
        client = AsyncWebClient(token=TOKEN, base_url=standin.api_url)
        server = make_server(
            BotSettings(bot_token=TOKEN, signing_secret=SECRET, redis_url=setup_.redis_url),
            setup_.config,
            registry=RegistrySettings(insecure_registries=frozenset({lab.registry})),
            client=client,
        )
        runner = web.AppRunner(server.web_app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"
        records = Records.on(server.redis, setup_.config.queue.key_prefix)
        store = records.store
        try:
            setup_.start_worker("linux/amd64")
            setup_.start_worker("linux/arm64")
            async with SignedSlackClient(url, SECRET, standin=standin) as slack:
                resp = await slack.slash_command(f"release {VERSION}", user_id=REQUESTER)
                assert resp.status == 200
                (posted,) = await standin.wait_for_calls("chat.postMessage", 1, timeout=30)
                ts = posted.response["ts"]
                ready = await setup_.wait_for(VERSION, [State.READY, State.BLOCKED, State.FAILED])
                assert ready.state is State.READY, ready.state_reason + setup_.tail_logs()

                async def shown(needle: str) -> str:
                    async with asyncio.timeout(30):
                        while True:
                            message = standin.message(CHANNEL, ts)
                            text = json.dumps(message.blocks) if message else ""
                            if needle in text:
                                return text
                            await asyncio.sleep(0.1)

                await shown("approve_release")  # the click carries what the message shows
                await slack.block_action("approve_release", user_id=APPROVER, message_ts=ts)

                mirrored = {
                    f"{lab.mirror_registry}/{namespace}/{c}:{VERSION}" for c in ready.components
                }

                async def waiting() -> Release:
                    """Until the promotion's pass over the mirror is recorded: one record per
                    component, written one after another (an overwrite held back may be the
                    first of them), or the run settled."""
                    async with asyncio.timeout(120):
                        while True:
                            found = await store.load(VERSION)
                            settled = (State.PROMOTED, State.FAILED, State.BLOCKED)
                            if found is not None and (
                                (pending_overwrites(found) and mirrored <= set(found.promotions))
                                or found.state in settled
                            ):
                                return found
                            await asyncio.sleep(0.2)

                held_back = await waiting()
                assert held_back.state is State.PROMOTING, held_back.state_reason
                target = f"{lab.mirror_registry}/{namespace}/{TAKEN}:{VERSION}"
                assert pending_overwrites(held_back) == {target: held.digest}
                # The other component went to the mirror, digest preserved, verified.
                clean = f"{lab.mirror_registry}/{namespace}/gateway-plugins:{VERSION}"
                assert held_back.promotions[clean].ok
                assert held_back.promotions[clean].digest == ready.indexes["gateway-plugins"].digest
                assert await mirror_digest(lab, namespace, "gateway-plugins") == (
                    ready.indexes["gateway-plugins"].digest
                )
                assert await mirror_digest(lab, namespace, TAKEN) == held.digest  # untouched

                text = await shown("confirm_overwrite")
                assert "already holds" in text and "approve_release" not in text

                async def audited() -> list[str]:
                    entries = await records.audit_stream()
                    return [f["action"] for _, f in entries if f.get("version") == VERSION]

                # Neither the requester nor a stranger can confirm; nothing changes.
                for user, why in (
                    (REQUESTER, "may not approve"),
                    (STRANGER, "may not confirm overwrite here"),
                ):
                    before = len(standin.ephemerals_for(user))
                    await slack.block_action("confirm_overwrite", user_id=user, message_ts=ts)
                    async with asyncio.timeout(20):
                        while len(standin.ephemerals_for(user)) <= before:
                            await asyncio.sleep(0.05)
                    assert why in standin.ephemerals_for(user)[-1].text
                assert "overwrite-confirmed" not in await audited()
                assert await store.overwrite_confirmations(VERSION, ready.run_id) == {}
                assert await mirror_digest(lab, namespace, TAKEN) == held.digest

                # An approver confirms: recorded, audited, and the overwrite happens.
                await slack.block_action("confirm_overwrite", user_id=APPROVER, message_ts=ts)
                promoted = await setup_.wait_for(
                    VERSION, [State.PROMOTED, State.FAILED], timeout=120
                )
                assert promoted.state is State.PROMOTED, promoted.state_reason
                assert await mirror_digest(lab, namespace, TAKEN) == ready.indexes[TAKEN].digest
                assert promoted.promotions[target].ok
                # The promotion tags go on the mirror too, the same manifest under each.
                for component, index in promoted.indexes.items():
                    latest = f"{lab.mirror_registry}/{namespace}/{component}:latest"
                    assert promoted.promotions[latest].ok
                    assert await mirror_digest(lab, namespace, component, "latest") == index.digest
                entries = await records.audit_stream()
                (confirmed,) = [f for _, f in entries if f.get("action") == "overwrite-confirmed"]
                assert confirmed["actor"] == APPROVER and held.digest in confirmed["detail"]
                await shown("promoted")
        finally:
            await runner.cleanup()
