"""The real Bolt app over HTTP, in-process on an ephemeral port, against the Slack
stand-in, the lab Redis and the lab registry: signatures, bad input, retries, inspect,
and the approval gate."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web

from bot.server import make_server
from bot.settings import BotSettings
from jobs.domain.config_reader import load_config
from jobs.domain.release import State
from tests.conftest import Lab
from tests.support.bot import (
    APPROVER,
    CHANNEL,
    GROUPIE,
    REQUESTER,
    SECRET,
    STRANGER,
    TOKEN,
    TTL,
    Bot,
    answer,
    bot,
    click,
    config_text,
    make_ready,
)
from tests.support.oci_push import OciPusher, entry

__all__ = ["bot"]  # the fixture


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
    ("status nosuch", "is not a component of this project"),
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
    assert len(await bot.records.run_ids("v0.3.0")) == 1
    assert len(bot.standin.calls_to("chat.postMessage")) == 1
    release = await bot.records.run("v0.3.0")
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


async def test_approval_matrix(bot: Bot) -> None:
    release = await make_ready(bot, "v1.0.0")
    ts = release.status_ts
    store = bot.records.store

    assert "may not approve here" in await click(bot, "approve_release", STRANGER, ts)
    assert "may not approve it (self-approval is off)" in await click(
        bot, "approve_release", REQUESTER, ts
    )
    assert (await bot.records.run("v1.0.0")).approvals == {}

    said = await click(bot, "approve_release", APPROVER, ts)
    assert f"1 of 2 approvals: <@{APPROVER}>" in said
    assert "already approved" in await click(bot, "approve_release", APPROVER, ts)
    assert bot.last_click is not None
    redelivered = await bot.slack.resend(bot.last_click, retry_num=1)  # that click, again
    assert redelivered.status == 200 and redelivered.body == ""
    assert list((await bot.records.run("v1.0.0")).approvals) == [APPROVER]
    await bot.wait_message(ts, f"1 of 2 approvals: <@{APPROVER}>")

    # The first approval expires: make it as old as an approval given TTL + 1 s ago.
    key = bot.key_names.approvals("v1.0.0", release.run_id)
    recorded = json.loads(cast(str, await bot.server.redis.hget(key, APPROVER)))
    recorded["at"] = int((bot.now[0] - TTL - 1) * 1000)  # by the bot's clock
    await bot.server.redis.hset(key, APPROVER, json.dumps(recorded))
    said = await click(bot, "approve_release", GROUPIE, ts)  # an approver through the group
    assert f"1 of 2 approvals: <@{GROUPIE}>" in said
    assert "expired" in said
    assert (await bot.records.run("v1.0.0")).state is State.READY

    said = await click(bot, "approve_release", APPROVER, ts)  # renewed: now two count
    assert "2 of 2 approvals" in said and "promotion is queued" in said
    final = await bot.records.run("v1.0.0")
    assert final.state is State.APPROVED
    jobs = await bot.records.jobs(None)
    assert [json.loads(f["job"])["kind"] for _, f in jobs].count("promote") == 1
    audit = [e for e in await store.audit_entries(100) if e["version"] == "v1.0.0"]
    assert {"approved", "approval-refused"} <= {e["action"] for e in audit}
    rendered = await bot.wait_message(ts, "approved, promotion queued")
    assert "approve_release" not in rendered


async def test_reject_blocks_and_buttons_of_a_superseded_run_are_refused(bot: Bot) -> None:
    first = await make_ready(bot, "v1.1.0")
    said = await click(bot, "reject_release", APPROVER, first.status_ts)
    assert f"rejected by <@{APPROVER}>" in said
    blocked = await bot.records.run("v1.1.0")
    assert blocked.state is State.BLOCKED and blocked.state_reason == f"rejected by <@{APPROVER}>"
    rendered = await bot.wait_message(first.status_ts, "BLOCKED")
    assert "approve_release" not in rendered
    second = await make_ready(bot, "v1.1.0")
    assert second.run_id != first.run_id
    # The old message still has its buttons in our stand-in history: click the old value.
    old_value = json.dumps({"version": "v1.1.0", "run_id": first.run_id}, separators=(",", ":"))
    said = await click(bot, "approve_release", APPROVER, second.status_ts, value=old_value)
    assert "belong to an earlier run" in said
    assert (await bot.records.run("v1.1.0")).approvals == {}


async def test_forged_button_values_are_refused(bot: Bot) -> None:
    release = await make_ready(bot, "v1.2.0")
    for value in ("not json", '{"version":"v1.2.0"}', '{"version":"1.2.0","run_id":"abcdef12"}'):
        said = await click(bot, "approve_release", APPROVER, release.status_ts, value=value)
        assert "does not carry a release" in said
    assert (await bot.records.run("v1.2.0")).approvals == {}


async def test_a_tag_changed_after_verification_is_refused_and_blocks(bot: Bot) -> None:
    release = await make_ready(bot, "v2.0.0")
    repo = f"{bot.namespace}/runtime"
    pusher = OciPusher(bot.lab.registry)
    async with aiohttp.ClientSession() as session:
        arm = await pusher.image(session, repo, os="linux", arch="arm64", payload=b"other")
        await pusher.index(session, repo, "v2.0.0", [entry(arm, "linux", "arm64")])
    said = await click(bot, "approve_release", APPROVER, release.status_ts)
    assert "refused" in said and "runtime v2.0.0 has moved since it was verified" in said
    after = await bot.records.run("v2.0.0")
    assert after.state is State.BLOCKED
    assert "has moved since it was verified" in after.state_reason
    assert after.approvals == {}
    rendered = await bot.wait_message(release.status_ts, "BLOCKED")
    assert "approve_release" not in rendered
