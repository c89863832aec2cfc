"""Slack redeliveries over HTTP are idempotent, not ignored: a redelivery of a handled
delivery does nothing, and one whose first delivery never arrived is handled, once."""

from __future__ import annotations

import json
from typing import Any

from handlers.parse import action_delivery, command_delivery
from tests.support.bot import APPROVER, REQUESTER, Bot, answer, bot, make_ready
from tests.support.log_signal import DROPPED, log_signal
from tests.support.slack_client import encode_form

__all__ = ["bot"]  # the fixture


def test_a_delivery_is_known_by_its_trigger_or_its_click() -> None:
    command = {"team_id": "T1", "user_id": "U1", "trigger_id": "1.2.abc", "text": "release v1.0.0"}
    assert command_delivery(command) == command_delivery(dict(command))
    assert command_delivery(command) != command_delivery({**command, "trigger_id": "1.3.abc"})
    assert command_delivery({**command, "trigger_id": ""}) is None
    click: dict[str, Any] = {
        "team": {"id": "T1"},
        "user": {"id": "U1"},
        "container": {"channel_id": "C1", "message_ts": "1.000100"},
        "actions": [{"action_id": "approve_release", "action_ts": "1700000000.000001"}],
    }
    assert action_delivery(click) == action_delivery(json.loads(json.dumps(click)))
    other_click = {**click, "actions": [{**click["actions"][0], "action_ts": "1700000000.5"}]}
    assert action_delivery(click) != action_delivery(other_click)
    assert action_delivery(click) != action_delivery({**click, "user": {"id": "U2"}})
    assert action_delivery({**click, "actions": []}) is None
    assert action_delivery({**click, "actions": ["x"]}) is None


async def test_a_redelivery_whose_first_never_arrived_is_handled_once(bot: Bot) -> None:
    fields = bot.slack.command_fields("release v0.3.1", user_id=REQUESTER)
    body = encode_form(fields)
    # Slack sent it, the bot never got it, Slack sends it again: X-Slack-Retry-Num 1.
    retried = await bot.slack.send(body, retry_num=1)
    assert retried.status == 200
    assert "working on release v0.3.1" in answer(retried.body)["text"]
    await bot.standin.wait_for_calls("chat.postMessage", 1, timeout=15)
    await bot.ephemeral(REQUESTER, lambda e: "started run" in e.text)
    with log_signal(DROPPED) as dropped:
        again = await bot.slack.send(body, retry_num=2)
        assert again.status == 200 and again.body == ""
        await dropped.wait_for(1)  # the bot decided to drop it, and returned
    assert len(await bot.records.run_ids("v0.3.1")) == 1
    assert len(bot.standin.calls_to("chat.postMessage")) == 1
    hook = bot.standin.responses(fields["response_url"])
    assert [p.status for p in hook] == [200]  # one answer, from the delivery that ran


async def test_a_new_command_is_not_taken_for_a_redelivery(bot: Bot) -> None:
    first = await bot.slack.slash_command("release v0.3.2", user_id=REQUESTER)
    assert "working on release" in answer(first.body)["text"]
    await bot.ephemeral(REQUESTER, lambda e: "started run" in e.text)
    # Another invocation (its own trigger_id), even sent with retry headers, is answered.
    other = await bot.slack.slash_command("release v0.3.2", user_id=REQUESTER, retry_num=1)
    assert "working on release" in answer(other.body)["text"]
    await bot.ephemeral(REQUESTER, lambda e: "already running" in e.text)
    assert len(await bot.records.run_ids("v0.3.2")) == 1


async def test_bad_input_redelivered_is_answered_again_and_writes_nothing(bot: Bot) -> None:
    body = encode_form(bot.slack.command_fields("release v0.3", user_id=REQUESTER))
    for retry in (None, 1, 2):
        resp = await bot.slack.send(body, retry_num=retry)
        assert "is not a release version" in answer(resp.body)["text"]
    # Each answer is sent once the handler decided, and the handler returns after it.
    assert await bot.keys() == []


async def test_a_click_whose_first_delivery_was_lost_records_one_approval(bot: Bot) -> None:
    release = await make_ready(bot, "v3.0.0")
    payload = bot.slack.action_payload(
        "approve_release", user_id=APPROVER, message_ts=release.status_ts
    )
    body = encode_form({"payload": json.dumps(payload, separators=(",", ":"))})
    before = len(bot.standin.ephemerals_for(APPROVER))
    resp = await bot.slack.send(body, retry_num=1)  # the first never reached the bot
    assert resp.status == 200
    said = await bot.ephemeral(APPROVER, lambda e: "approvals" in e.text)
    assert f"1 of 2 approvals: <@{APPROVER}>" in said.text
    with log_signal(DROPPED) as dropped:
        for retry in (2, 3):
            assert (await bot.slack.send(body, retry_num=retry)).status == 200
        await dropped.wait_for(2)  # both redeliveries dropped, after the decision
    after = await bot.records.run("v3.0.0")
    assert list(after.approvals) == [APPROVER]
    audit = [e for e in await bot.records.audit(100) if e["version"] == "v3.0.0"]
    assert [e["action"] for e in audit].count("approved") == 1
    assert len(bot.standin.ephemerals_for(APPROVER)) == before + 1  # answered once
