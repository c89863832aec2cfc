"""Pure parts of crash safety (issue 10, items 6, 7, 12): a Slack delivery's claim states,
which runs need their live message, and the stand-in's conversations.history and held
answers that the crash tests rely on."""

from __future__ import annotations

import asyncio
import dataclasses

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from handlers.live_message import carries_run, metadata, needs_live_message
from jobs.domain.deliveries import CONFIRMED_TTL_SECONDS, Claim, claim_ttl, on_delivery
from jobs.domain.platforms import parse_platform
from jobs.domain.release import Release, State
from jobs.domain.versions import parse_version
from tests.support.slack_standin import SlackStandIn

TOKEN = "xoxb-deliveries-test-0000"
CHANNEL = "C0RELEASES"


def test_a_delivery_is_handled_unless_a_live_claim_or_a_confirmation_is_there() -> None:
    assert on_delivery(None) == "handle"  # first delivery, or its claim ran out
    assert on_delivery(Claim.HANDLING.value) == "in-progress"
    assert on_delivery(Claim.CONFIRMED.value) == "done"
    # What an older bot wrote ("1", kept an hour), or anything unknown: never run twice.
    assert on_delivery("1") == "done"
    assert on_delivery("") == "done"


def test_a_claim_is_short_while_handling_and_an_hour_once_confirmed() -> None:
    assert claim_ttl(Claim.HANDLING, 30) == 30
    assert claim_ttl(Claim.CONFIRMED, 30) == CONFIRMED_TTL_SECONDS == 3600
    with pytest.raises(ValueError):
        claim_ttl(Claim.HANDLING, 0)


def _release(**changes: object) -> Release:
    base = Release(
        version=parse_version("v1.0.0"),
        run_id="0123456789abcdef",
        state=State.BUILDING,
        state_reason="",
        requested_by="U0REQUESTER",
        channel=CHANNEL,
        platforms=(parse_platform("linux/amd64"),),
        components=("runtime",),
        source_ref="abc",
        created_at=1.0,
        updated_at=1.0,
        status_channel="",
        status_ts="",
        previous_run_id="",
        active=True,
        builds={},
        indexes={},
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_a_live_run_from_slack_without_a_message_needs_one() -> None:
    assert needs_live_message(_release())
    # Ready and blocked runs still await a click: they need their message too.
    assert needs_live_message(_release(state=State.READY))
    assert needs_live_message(_release(state=State.BLOCKED))
    assert not needs_live_message(_release(status_ts="1.000001"))
    assert not needs_live_message(_release(channel="cli"))
    assert not needs_live_message(_release(active=False))
    for finished in (State.PROMOTED, State.FAILED, State.CANCELLED):
        assert not needs_live_message(_release(state=finished))


def test_the_live_message_is_recognised_by_its_metadata_only() -> None:
    release = _release()
    mine = {"ts": "1.1", "metadata": metadata(release)}
    assert carries_run(mine, release.run_id)
    assert not carries_run(mine, "another-run-id")
    assert not carries_run({"ts": "1.1", "text": f"Release v1.0.0 {release.run_id}"}, "x")
    other = {"ts": "1.1", "metadata": {"event_type": "other", "event_payload": {}}}
    assert not carries_run(other, release.run_id)
    assert not carries_run("not a message", release.run_id)


async def test_conversations_history_returns_metadata_only_when_asked() -> None:
    async with SlackStandIn(TOKEN, channels={CHANNEL: "releases"}) as standin:
        client = AsyncWebClient(token=TOKEN, base_url=standin.api_url)
        release = _release()
        first = await client.chat_postMessage(
            channel=CHANNEL, text="Release v1.0.0", metadata=metadata(release)
        )
        await client.chat_postMessage(channel=CHANNEL, text="reply", thread_ts=first["ts"])
        later = await client.chat_postMessage(channel=CHANNEL, text="later")
        plain = await client.conversations_history(channel=CHANNEL)
        # Newest first, thread replies left out, no metadata unless asked for.
        assert [m["ts"] for m in plain["messages"]] == [later["ts"], first["ts"]]
        assert all("metadata" not in m for m in plain["messages"])
        full = await client.conversations_history(channel=CHANNEL, include_all_metadata=True)
        assert full["messages"][1]["metadata"] == metadata(release)
        newer = await client.conversations_history(channel=CHANNEL, oldest=first["ts"])
        assert [m["ts"] for m in newer["messages"]] == [later["ts"]]  # oldest is exclusive
        one = await client.conversations_history(channel=CHANNEL, limit=1)
        assert len(one["messages"]) == 1 and one["has_more"] is True
        with pytest.raises(SlackApiError) as missing:
            await client.conversations_history(channel="C0NOPE")
        assert missing.value.response["error"] == "channel_not_found"


async def test_bad_metadata_is_refused_as_slack_refuses_it() -> None:
    async with SlackStandIn(TOKEN, channels={CHANNEL: "releases"}) as standin:
        async with aiohttp.ClientSession() as session:
            for bad in ({"event_type": "x"}, {"event_type": "a b", "event_payload": {}}, [1]):
                async with session.post(
                    standin.api_url + "chat.postMessage",
                    headers={"Authorization": f"Bearer {TOKEN}"},
                    json={"channel": CHANNEL, "text": "hi", "metadata": bad},
                ) as resp:
                    assert (await resp.json())["error"] == "invalid_metadata_schema"
        assert standin.messages(CHANNEL) == []


async def test_a_held_call_takes_effect_and_its_answer_waits_for_release() -> None:
    async with SlackStandIn(TOKEN, channels={CHANNEL: "releases"}) as standin:
        client = AsyncWebClient(token=TOKEN, base_url=standin.api_url)
        held = standin.hold("chat.postMessage")
        posting = asyncio.create_task(client.chat_postMessage(channel=CHANNEL, text="hello"))
        call = await held.wait_arrived()
        # Slack has posted it; the caller has no answer yet.
        (message,) = standin.messages(CHANNEL)
        assert message.text == "hello" and call.response["ts"] == message.ts
        assert not posting.done()
        held.release()
        answer = await posting
        assert answer["ts"] == message.ts
        # Only the next call was held.
        await client.chat_postMessage(channel=CHANNEL, text="again")
        with pytest.raises(RuntimeError):
            standin.hold("chat.update")
            standin.hold("chat.update")
