"""The Slack stand-in answers as Slack does, and signed requests pass Bolt's own checks.

Everything is driven over HTTP with slack_sdk's real AsyncWebClient / AsyncWebhookClient
and a real slack_bolt AsyncApp, so a disagreement with Slack's client libraries shows here.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.signature import Clock, SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from tests.support.slack_client import (
    SignedSlackClient,
    slack_signature,
    verify_slack_signature,
)
from tests.support.slack_standin import (
    SlackStandIn,
    render_channel_html,
    render_channel_text,
    validate_blocks,
)

TOKEN = "xoxb-standin-test-0000-abcdef"
SECRET = "standin-signing-secret-0123456789"
CHANNEL = "C0RELEASES"
OTHER = "C0OTHER"
USERS = {"U0REQUESTER": "alice", "U0APPROVER": "bob"}


@pytest.fixture
async def standin() -> AsyncIterator[SlackStandIn]:
    async with SlackStandIn(
        TOKEN,
        channels={CHANNEL: "releases", OTHER: "other"},
        users=USERS,
        usergroups={"S0APPROVERS": ["U0APPROVER", "U0REQUESTER"]},
    ) as s:
        yield s


@pytest.fixture
def client(standin: SlackStandIn) -> AsyncWebClient:
    return AsyncWebClient(token=TOKEN, base_url=standin.api_url)


def section(text: str, **extra: Any) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}, **extra}


def button(label: str, action_id: str, value: str = "v", **extra: Any) -> dict[str, Any]:
    return {
        "type": "button",
        "text": {"type": "plain_text", "text": label},
        "action_id": action_id,
        "value": value,
        **extra,
    }


async def raw_post(url: str, **kwargs: Any) -> dict[str, Any]:
    """POST without slack_sdk, to send what it never would (form tokens, bad bodies)."""
    async with aiohttp.ClientSession() as session, session.post(url, **kwargs) as resp:
        body: dict[str, Any] = await resp.json()
        return body


async def slack_error(call: Any) -> SlackApiError:
    with pytest.raises(SlackApiError) as info:
        await call
    return info.value


# ------------------------------------------------------------------ auth


async def test_auth_test_answers_for_the_bot_token(
    client: AsyncWebClient, standin: SlackStandIn
) -> None:
    resp = await client.auth_test()
    assert resp["ok"] is True
    assert resp["team_id"] == standin.team_id
    assert resp["user_id"] == standin.bot_user_id
    assert standin.calls_to("auth.test")[0].token_via == "header"


async def test_wrong_token_is_invalid_auth(standin: SlackStandIn) -> None:
    wrong = AsyncWebClient(token="xoxb-not-the-token", base_url=standin.api_url)
    err = await slack_error(wrong.chat_postMessage(channel=CHANNEL, text="hi"))
    assert err.response.status_code == 200
    assert err.response["error"] == "invalid_auth"
    assert standin.messages(CHANNEL) == []


async def test_missing_token_is_not_authed(standin: SlackStandIn) -> None:
    anonymous = AsyncWebClient(base_url=standin.api_url)
    err = await slack_error(anonymous.chat_postMessage(channel=CHANNEL, text="hi"))
    assert err.response["error"] == "not_authed"


async def test_form_body_with_token_field_is_accepted(standin: SlackStandIn) -> None:
    blocks = json.dumps([section("from a form")])
    form = {"token": TOKEN, "channel": CHANNEL, "text": "fallback", "blocks": blocks}
    body = await raw_post(standin.api_url + "chat.postMessage", data=form)
    assert body["ok"] is True, body
    call = standin.calls_to("chat.postMessage")[0]
    assert call.token_via == "param"
    assert "token" not in call.params
    assert standin.messages(CHANNEL)[0].blocks == [section("from a form")]


async def test_token_inside_a_json_body_does_not_authenticate(standin: SlackStandIn) -> None:
    # Slack reads a JSON body's token from the Authorization header only.
    payload = {"token": TOKEN, "channel": CHANNEL, "text": "hi"}
    body = await raw_post(standin.api_url + "chat.postMessage", json=payload)
    assert body == {"ok": False, "error": "not_authed"}


async def test_json_body_without_charset_gets_slacks_warning(standin: SlackStandIn) -> None:
    body = await raw_post(
        standin.api_url + "chat.postMessage",
        json={"channel": CHANNEL, "text": "hi"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert (body["ok"], body["warning"]) == (True, "missing_charset")


async def test_form_blocks_that_are_not_json_are_invalid_blocks_format(
    standin: SlackStandIn,
) -> None:
    form = {"token": TOKEN, "channel": CHANNEL, "blocks": "[{not json"}
    body = await raw_post(standin.api_url + "chat.postMessage", data=form)
    assert body["error"] == "invalid_blocks_format"


async def test_unknown_method(client: AsyncWebClient) -> None:
    err = await slack_error(client.api_call("chat.doesNotExist", json={}))
    assert err.response["error"] == "unknown_method"


async def test_token_never_recorded_or_shown(client: AsyncWebClient, standin: SlackStandIn) -> None:
    await client.chat_postMessage(channel=CHANNEL, text="hi")
    wrong = AsyncWebClient(token=TOKEN + "x", base_url=standin.api_url)
    err = await slack_error(wrong.auth_test())
    recorded = repr(standin.calls) + repr(standin) + str(err)
    assert TOKEN not in recorded
    assert SECRET not in repr(SignedSlackClient("http://x", SECRET))


# ------------------------------------------------------------------ messages


async def test_post_message_returns_slack_shaped_increasing_ts(
    client: AsyncWebClient, standin: SlackStandIn
) -> None:
    posted = [await client.chat_postMessage(channel=CHANNEL, text=f"m{i}") for i in range(5)]
    stamps = [p["ts"] for p in posted]
    assert all(re.fullmatch(r"\d{10}\.\d{6}", ts) for ts in stamps)
    assert stamps == sorted(stamps, key=float) and len(set(stamps)) == 5
    first = posted[0]
    assert first["channel"] == CHANNEL
    assert first["message"]["text"] == "m0"
    assert [m.text for m in standin.messages(CHANNEL)] == [f"m{i}" for i in range(5)]


async def test_post_message_with_blocks_keeps_them(
    client: AsyncWebClient, standin: SlackStandIn
) -> None:
    blocks = [section("*runtime* ok"), {"type": "actions", "elements": [button("Go", "go")]}]
    resp = await client.chat_postMessage(channel=CHANNEL, text="fallback", blocks=blocks)
    assert resp["message"]["blocks"] == blocks
    assert standin.message(CHANNEL, resp["ts"]).blocks == blocks  # type: ignore[union-attr]
    assert standin.calls_to("chat.postMessage")[0].content_type == "application/json"


async def test_channel_by_name_resolves_to_its_id(client: AsyncWebClient) -> None:
    resp = await client.chat_postMessage(channel="#releases", text="hi")
    assert resp["channel"] == CHANNEL


async def test_unknown_channel(client: AsyncWebClient, standin: SlackStandIn) -> None:
    err = await slack_error(client.chat_postMessage(channel="C0NOPE", text="hi"))
    assert err.response["error"] == "channel_not_found"
    err = await slack_error(client.conversations_info(channel="C0NOPE"))
    assert err.response["error"] == "channel_not_found"


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")
async def test_no_text_and_no_blocks(client: AsyncWebClient) -> None:
    err = await slack_error(client.chat_postMessage(channel=CHANNEL))
    assert err.response["error"] == "no_text"
    err = await slack_error(client.chat_postMessage(channel=CHANNEL, blocks=[]))
    assert err.response["error"] == "no_text"


async def test_text_over_40000_characters_is_msg_too_long(client: AsyncWebClient) -> None:
    assert (await client.chat_postMessage(channel=CHANNEL, text="x" * 40_000))["ok"]
    err = await slack_error(client.chat_postMessage(channel=CHANNEL, text="x" * 40_001))
    assert err.response["error"] == "msg_too_long"


def _actions(n: int) -> dict[str, Any]:
    return {"type": "actions", "elements": [button(f"b{i}", f"a{i}") for i in range(n)]}


def _context(n: int) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": "c"}] * n}


def _header(n: int) -> dict[str, Any]:
    return {"type": "header", "text": {"type": "plain_text", "text": "h" * n}}


# Each limit as (blocks exactly at the limit, blocks one past it).
LIMITS: dict[str, tuple[list[Any], list[Any]]] = {
    "50 blocks": ([section("s")] * 50, [section("s")] * 51),
    "section text 3000": ([section("x" * 3000)], [section("x" * 3001)]),
    "header text 150": ([_header(150)], [_header(151)]),
    "button value 2000": (
        [{"type": "actions", "elements": [button("b", "a", "v" * 2000)]}],
        [{"type": "actions", "elements": [button("b", "a", "v" * 2001)]}],
    ),
    "action_id 255": (
        [{"type": "actions", "elements": [button("b", "a" * 255)]}],
        [{"type": "actions", "elements": [button("b", "a" * 256)]}],
    ),
    "block_id 255": ([section("s", block_id="b" * 255)], [section("s", block_id="b" * 256)]),
    "actions 25 elements": ([_actions(25)], [_actions(26)]),
    "context 10 elements": ([_context(10)], [_context(11)]),
    "button text 75": (
        [{"type": "actions", "elements": [button("t" * 75, "a")]}],
        [{"type": "actions", "elements": [button("t" * 76, "a")]}],
    ),
    "section fields 10": (
        [{"type": "section", "fields": [{"type": "mrkdwn", "text": "f"}] * 10}],
        [{"type": "section", "fields": [{"type": "mrkdwn", "text": "f"}] * 11}],
    ),
}

MALFORMED: dict[str, list[Any]] = {
    "missing type": [{"text": {"type": "mrkdwn", "text": "no type"}}],
    "unknown type": [{"type": "banner", "text": {"type": "mrkdwn", "text": "?"}}],
    "section without text or fields": [{"type": "section"}],
    "empty section text": [section("")],
    "header in mrkdwn": [{"type": "header", "text": {"type": "mrkdwn", "text": "h"}}],
    "button style": [{"type": "actions", "elements": [button("b", "a", style="warning")]}],
    "unknown element": [{"type": "actions", "elements": [{"type": "slider", "action_id": "x"}]}],
    "block not an object": ["section"],
    "duplicate block_id": [section("a", block_id="same"), section("b", block_id="same")],
    "duplicate action_id in a block": [
        {"type": "actions", "elements": [button("a", "dup"), button("b", "dup")]}
    ],
}


@pytest.mark.parametrize("limit", list(LIMITS))
async def test_block_kit_limits(limit: str, client: AsyncWebClient, standin: SlackStandIn) -> None:
    at_limit, past_limit = LIMITS[limit]
    assert (await client.chat_postMessage(channel=CHANNEL, text="t", blocks=at_limit))["ok"]
    err = await slack_error(client.chat_postMessage(channel=CHANNEL, text="t", blocks=past_limit))
    assert err.response["error"] == "invalid_blocks"
    assert err.response["errors"], "Slack says which block is wrong"
    assert len(standin.messages(CHANNEL)) == 1


@pytest.mark.parametrize("case", list(MALFORMED))
async def test_malformed_blocks(case: str, client: AsyncWebClient) -> None:
    err = await slack_error(
        client.chat_postMessage(channel=CHANNEL, text="t", blocks=MALFORMED[case])
    )
    assert err.response["error"] == "invalid_blocks"


def test_validate_blocks_points_at_the_offending_field() -> None:
    errors = validate_blocks([section("ok"), section("x" * 3001)])
    assert errors == ["must be less than 3001 characters [json-pointer:/blocks/1/text/text]"]
    assert validate_blocks([section("ok"), {"type": "divider"}, _header(10)]) == []


async def test_update_replaces_and_keeps_history(
    client: AsyncWebClient, standin: SlackStandIn
) -> None:
    posted = await client.chat_postMessage(channel=CHANNEL, text="building", blocks=[section("1")])
    updated = await client.chat_update(
        channel=CHANNEL, ts=posted["ts"], text="ready", blocks=[section("2")]
    )
    assert updated["ts"] == posted["ts"]
    assert updated["message"]["blocks"] == [section("2")]
    msg = standin.message(CHANNEL, posted["ts"])
    assert msg is not None
    assert (msg.text, msg.blocks) == ("ready", [section("2")])
    assert [(v.text, v.blocks) for v in msg.history] == [("building", [section("1")])]
    assert len(standin.messages(CHANNEL)) == 1


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")
async def test_update_with_invalid_blocks_leaves_message_unchanged(
    client: AsyncWebClient, standin: SlackStandIn
) -> None:
    posted = await client.chat_postMessage(channel=CHANNEL, text="t", blocks=[section("1")])
    err = await slack_error(
        client.chat_update(channel=CHANNEL, ts=posted["ts"], blocks=[section("x" * 3001)])
    )
    assert err.response["error"] == "invalid_blocks"
    msg = standin.message(CHANNEL, posted["ts"])
    assert msg is not None and msg.blocks == [section("1")] and not msg.edited


async def test_update_of_unknown_ts_is_message_not_found(client: AsyncWebClient) -> None:
    await client.chat_postMessage(channel=CHANNEL, text="t")
    err = await slack_error(client.chat_update(channel=CHANNEL, ts="1700000000.000001", text="x"))
    assert err.response["error"] == "message_not_found"


async def test_update_in_another_channel_is_message_not_found(client: AsyncWebClient) -> None:
    posted = await client.chat_postMessage(channel=CHANNEL, text="t")
    err = await slack_error(client.chat_update(channel=OTHER, ts=posted["ts"], text="x"))
    assert err.response["error"] == "message_not_found"


async def test_thread_replies(client: AsyncWebClient, standin: SlackStandIn) -> None:
    parent = await client.chat_postMessage(channel=CHANNEL, text="parent")
    reply = await client.chat_postMessage(channel=CHANNEL, text="r1", thread_ts=parent["ts"])
    # A reply to a reply lands in the parent's thread, as in Slack.
    await client.chat_postMessage(channel=CHANNEL, text="r2", thread_ts=reply["ts"])
    assert [m.text for m in standin.thread(CHANNEL, parent["ts"])] == ["r1", "r2"]
    link = await client.chat_getPermalink(channel=CHANNEL, message_ts=reply["ts"])
    assert link["permalink"].endswith(f"thread_ts={parent['ts']}&cid={CHANNEL}")


async def test_ephemeral(client: AsyncWebClient, standin: SlackStandIn) -> None:
    resp = await client.chat_postEphemeral(channel=CHANNEL, user="U0REQUESTER", text="only you")
    assert re.fullmatch(r"\d{10}\.\d{6}", resp["message_ts"])
    assert [e.text for e in standin.ephemerals_for("U0REQUESTER")] == ["only you"]
    assert standin.messages(CHANNEL) == []
    err = await slack_error(client.chat_postEphemeral(channel=CHANNEL, user="U0WHO", text="x"))
    assert err.response["error"] == "user_not_found"


async def test_usergroups_and_users(client: AsyncWebClient) -> None:
    members = await client.usergroups_users_list(usergroup="S0APPROVERS")
    assert members["users"] == ["U0APPROVER", "U0REQUESTER"]
    err = await slack_error(client.usergroups_users_list(usergroup="S0NOPE"))
    assert err.response["error"] == "no_such_subteam"
    info = await client.users_info(user="U0APPROVER")
    assert info["user"]["name"] == "bob"
    err = await slack_error(client.users_info(user="U0WHO"))
    assert err.response["error"] == "user_not_found"
    channel = await client.conversations_info(channel=CHANNEL)
    assert channel["channel"]["name"] == "releases"


# ------------------------------------------------------------------ rate limits


async def test_ratelimited_then_success(client: AsyncWebClient, standin: SlackStandIn) -> None:
    standin.rate_limit("chat.postMessage", calls=2, retry_after=7)
    for _ in range(2):
        err = await slack_error(client.chat_postMessage(channel=CHANNEL, text="hi"))
        assert err.response.status_code == 429
        assert err.response["error"] == "ratelimited"
        assert err.response.headers["Retry-After"] == "7"
    assert (await client.chat_postMessage(channel=CHANNEL, text="hi"))["ok"]
    assert [c.status for c in standin.calls_to("chat.postMessage")] == [429, 429, 200]
    assert len(standin.messages(CHANNEL)) == 1


async def test_slack_sdk_retry_handler_honours_the_429(standin: SlackStandIn) -> None:
    # Retry-After 0 keeps the sdk's sleep short; the point is that it retries.
    standin.rate_limit("chat.update", calls=1, retry_after=0)
    retrying = AsyncWebClient(
        token=TOKEN,
        base_url=standin.api_url,
        retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=1)],
    )
    posted = await retrying.chat_postMessage(channel=CHANNEL, text="a")
    assert (await retrying.chat_update(channel=CHANNEL, ts=posted["ts"], text="b"))["ok"]
    assert [c.status for c in standin.calls_to("chat.update")] == [429, 200]
    assert standin.calls_to("chat.update")[0].response_headers == {"Retry-After": "0"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_per_channel_update_limit() -> None:
    clock = FakeClock()
    async with SlackStandIn(TOKEN, clock=clock) as s:
        s.per_channel_rate_limit("chat.update", interval=1.0, retry_after=1)
        web_client = AsyncWebClient(token=TOKEN, base_url=s.api_url)
        a = await web_client.chat_postMessage(channel="CA", text="a")
        b = await web_client.chat_postMessage(channel="CB", text="b")
        assert (await web_client.chat_update(channel="CA", ts=a["ts"], text="1"))["ok"]
        clock.now += 0.5
        err = await slack_error(web_client.chat_update(channel="CA", ts=a["ts"], text="2"))
        assert err.response.status_code == 429
        assert err.response.headers["Retry-After"] == "1"
        assert (await web_client.chat_update(channel="CB", ts=b["ts"], text="1"))["ok"]
        clock.now += 0.6
        assert (await web_client.chat_update(channel="CA", ts=a["ts"], text="3"))["ok"]
        s.per_channel_rate_limit("chat.update", interval=None)
        assert (await web_client.chat_update(channel="CA", ts=a["ts"], text="4"))["ok"]
        msg = s.message("CA", a["ts"])
        assert msg is not None and msg.text == "4"


# ------------------------------------------------------------------ response_url


async def test_response_url_ephemeral_in_channel_replace_delete(
    client: AsyncWebClient, standin: SlackStandIn
) -> None:
    original = await client.chat_postMessage(
        channel=CHANNEL, text="approve?", blocks=[section("a")]
    )
    url = standin.new_response_url(channel=CHANNEL, user="U0APPROVER", message_ts=original["ts"])
    hook = AsyncWebhookClient(url)

    assert (await hook.send(text="just you")).body == "ok"
    assert [e.text for e in standin.ephemerals_for("U0APPROVER")] == ["just you"]

    await hook.send(text="everyone", response_type="in_channel")
    assert [m.text for m in standin.messages(CHANNEL)] == ["approve?", "everyone"]

    await hook.send(text="approved", blocks=[section("done")], replace_original=True)
    msg = standin.message(CHANNEL, original["ts"])
    assert msg is not None and (msg.text, msg.blocks) == ("approved", [section("done")])
    assert msg.history[0].text == "approve?"

    await hook.send_dict({"delete_original": True})
    assert [m.text for m in standin.messages(CHANNEL)] == ["everyone"]
    assert [p.status for p in standin.responses(url)] == [200, 200, 200, 200]
    assert standin.responses(url)[1].payload["response_type"] == "in_channel"


async def test_response_url_enforces_block_rules_and_use_limit(standin: SlackStandIn) -> None:
    url = standin.new_response_url(channel=CHANNEL, user="U0REQUESTER", max_uses=2)
    hook = AsyncWebhookClient(url)
    bad = await hook.send(text="t", blocks=[section("x" * 3001)])
    assert (bad.status_code, bad.body) == (400, "invalid_blocks")
    empty = await hook.send_dict({"response_type": "ephemeral"})
    assert (empty.status_code, empty.body) == (400, "no_text")
    null = await hook.send_dict({})  # the sdk sends `null` for an empty dict
    assert (null.status_code, null.body) == (400, "invalid_payload")
    assert (await hook.send(text="1")).status_code == 200
    assert (await hook.send(text="2")).status_code == 200
    used = await hook.send(text="3")
    assert (used.status_code, used.body) == (404, "used_url")
    assert [e.text for e in standin.ephemerals_for("U0REQUESTER")] == ["1", "2"]
    unknown = await AsyncWebhookClient(standin.url + "/response/nope").send(text="x")
    assert unknown.status_code == 404


# ------------------------------------------------------------------ signatures

# The worked example in Slack's "Verifying requests from Slack" documentation.
DOC_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
DOC_TIMESTAMP = "1531420618"
DOC_BODY = (
    "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow"
    "&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner"
    "&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands"
    "%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
    "&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)
DOC_SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"


class FixedClock(Clock):
    def __init__(self, now: float) -> None:
        self.fixed = now

    def now(self) -> float:
        return self.fixed


def test_signature_matches_slack_documentation() -> None:
    assert slack_signature(DOC_SECRET, DOC_TIMESTAMP, DOC_BODY) == DOC_SIGNATURE
    now = float(DOC_TIMESTAMP)
    assert verify_slack_signature(DOC_SECRET, DOC_TIMESTAMP, DOC_BODY, DOC_SIGNATURE, now=now)


@given(
    secret=st.text(min_size=1).filter(str.strip),
    body=st.text(),
    timestamp=st.integers(min_value=1_000_000_000, max_value=4_000_000_000),
)
def test_signature_agrees_with_slack_sdk_verifier(secret: str, body: str, timestamp: int) -> None:
    signature = slack_signature(secret, timestamp, body)
    verifier = SignatureVerifier(secret, clock=FixedClock(timestamp))
    assert verifier.generate_signature(timestamp=str(timestamp), body=body) == signature
    assert verifier.is_valid(body, str(timestamp), signature)
    assert verify_slack_signature(secret, str(timestamp), body, signature, now=timestamp)
    tampered = body + "x"
    assert not verifier.is_valid(tampered, str(timestamp), signature)
    assert not verify_slack_signature(secret, str(timestamp), tampered, signature, now=timestamp)


@pytest.mark.parametrize("age", [0, 299, 300, 301, -301, 3600])
def test_age_check_matches_slack_sdk(age: int) -> None:
    ts = 1_700_000_000
    signature = slack_signature(SECRET, ts, "a=b")
    ours = verify_slack_signature(SECRET, str(ts), "a=b", signature, now=ts + age)
    theirs = SignatureVerifier(SECRET, clock=FixedClock(ts + age)).is_valid(
        "a=b", str(ts), signature
    )
    assert ours == theirs == (abs(age) <= 300)


def test_wrong_secret_and_missing_headers_fail() -> None:
    sig = slack_signature(SECRET, 1_700_000_000, "a=b")
    assert not verify_slack_signature("other", "1700000000", "a=b", sig, now=1_700_000_000)
    assert not verify_slack_signature(SECRET, None, "a=b", sig, now=1_700_000_000)
    assert not verify_slack_signature(SECRET, "1700000000", "a=b", None, now=1_700_000_000)
    assert not verify_slack_signature(SECRET, "soon", "a=b", sig, now=1_700_000_000)


# ------------------------------------------------------------------ the signed client


@pytest.fixture
async def capture() -> AsyncIterator[tuple[str, list[tuple[dict[str, str], str]]]]:
    """A bare HTTP endpoint that records exactly what the client sent."""
    seen: list[tuple[dict[str, str], str]] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append((dict(request.headers), await request.text()))
        return web.Response(text="")

    app = web.Application()
    app.router.add_post("/slack/events", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events", seen
    await runner.cleanup()


def _valid(headers: dict[str, str], body: str, secret: str = SECRET) -> bool:
    return SignatureVerifier(secret).is_valid_request(body, headers)


async def test_slash_command_is_signed_and_shaped_like_slack(
    capture: tuple[str, list[tuple[dict[str, str], str]]], standin: SlackStandIn
) -> None:
    url, seen = capture
    async with SignedSlackClient(url, SECRET, standin=standin) as slack:
        resp = await slack.slash_command("release v0.3.0-rc.2", user_id="U0REQUESTER")
    assert resp.status == 200
    headers, body = seen[0]
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert _valid(headers, body)
    form = {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}
    assert set(form) == {
        "token",
        "team_id",
        "team_domain",
        "channel_id",
        "channel_name",
        "user_id",
        "user_name",
        "command",
        "text",
        "api_app_id",
        "is_enterprise_install",
        "response_url",
        "trigger_id",
    }
    assert (form["command"], form["text"], form["user_name"]) == (
        "/aibrix",
        "release v0.3.0-rc.2",
        "alice",
    )
    assert (form["channel_id"], form["channel_name"]) == (CHANNEL, "releases")
    assert form["response_url"].startswith(standin.url + "/response/")
    assert "X-Slack-Retry-Num" not in headers


@pytest.mark.parametrize(
    ("option", "still_valid"),
    [
        ({}, True),
        ({"tamper": True}, False),
        ({"age": 301}, False),
        ({"secret": "not-the-secret"}, False),
        ({"retry_num": 1}, True),
    ],
)
async def test_broken_requests_fail_slack_sdk_verification(
    option: dict[str, Any],
    still_valid: bool,
    capture: tuple[str, list[tuple[dict[str, str], str]]],
) -> None:
    url, seen = capture
    async with SignedSlackClient(url, SECRET) as slack:
        await slack.slash_command("status", **option)
    headers, body = seen[0]
    assert _valid(headers, body) is still_valid
    if option.get("retry_num"):
        assert headers["X-Slack-Retry-Num"] == "1"
        assert headers["X-Slack-Retry-Reason"] == "http_timeout"


async def test_block_action_payload_carries_the_posted_button(
    capture: tuple[str, list[tuple[dict[str, str], str]]],
    client: AsyncWebClient,
    standin: SlackStandIn,
) -> None:
    url, seen = capture
    blocks = [
        section("Promote?"),
        {
            "type": "actions",
            "block_id": "promote",
            "elements": [button("Approve", "approve", "v0.3.0", style="primary")],
        },
    ]
    posted = await client.chat_postMessage(channel=CHANNEL, text="promote?", blocks=blocks)
    async with SignedSlackClient(url, SECRET, standin=standin) as slack:
        await slack.block_action("approve", user_id="U0APPROVER", message_ts=posted["ts"])
    headers, body = seen[0]
    assert _valid(headers, body)
    payload = json.loads(parse_qs(body)["payload"][0])
    assert payload["type"] == "block_actions"
    assert payload["user"]["id"] == "U0APPROVER"
    assert payload["container"] == {
        "type": "message",
        "message_ts": posted["ts"],
        "channel_id": CHANNEL,
        "is_ephemeral": False,
    }
    assert payload["message"]["blocks"] == blocks
    (action,) = payload["actions"]
    assert (action["action_id"], action["block_id"], action["value"]) == (
        "approve",
        "promote",
        "v0.3.0",
    )
    assert action["style"] == "primary"
    hook = standin.response_url(payload["response_url"])
    assert (hook.channel, hook.message_ts) == (CHANNEL, posted["ts"])


# ------------------------------------------------------------------ a real Bolt app


@pytest.fixture
async def bolt(standin: SlackStandIn) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A minimal real AsyncApp wired to the stand-in, served by Bolt's aiohttp adapter."""
    app = AsyncApp(
        signing_secret=SECRET,
        client=AsyncWebClient(token=TOKEN, base_url=standin.api_url),
        process_before_response=True,  # handlers finish before the HTTP answer
    )
    handled: list[dict[str, Any]] = []

    @app.command("/aibrix")
    async def command(
        ack: Callable[..., Any], command: dict[str, Any], client: Any, respond: Any
    ) -> None:
        await ack("on it")
        handled.append(command)
        await client.chat_postMessage(
            channel=command["channel_id"],
            text=f"release {command['text']}",
            blocks=[
                section(f"release *{command['text']}*"),
                {"type": "actions", "elements": [button("Approve", "approve", command["text"])]},
            ],
        )
        await respond("queued")

    @app.action("approve")
    async def approve(ack: Any, body: dict[str, Any], respond: Any) -> None:
        await ack()
        handled.append(body)
        value = body["actions"][0]["value"]
        await respond(replace_original=True, text=f"{value} approved by <@{body['user']['id']}>")

    runner = web.AppRunner(app.web_app(path="/slack/events"))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events", handled
    await runner.cleanup()


async def test_bolt_app_accepts_signed_and_rejects_broken_requests(
    bolt: tuple[str, list[dict[str, Any]]], standin: SlackStandIn
) -> None:
    url, handled = bolt
    async with SignedSlackClient(url, SECRET, standin=standin) as slack:
        for broken in ({"tamper": True}, {"age": 301}, {"secret": "wrong"}):
            resp = await slack.slash_command("release v1", **broken)
            assert resp.status == 401, broken
        assert handled == []
        assert standin.messages(CHANNEL) == []

        resp = await slack.slash_command("v0.3.0-rc.2", user_id="U0REQUESTER")
        assert resp.status == 200
        assert resp.body == "on it", resp
    assert handled[0]["text"] == "v0.3.0-rc.2"
    assert len(standin.calls_to("auth.test")) == 1  # Bolt's own token check
    (msg,) = standin.messages(CHANNEL)
    assert msg.text == "release v0.3.0-rc.2"
    assert [e.text for e in standin.ephemerals_for("U0REQUESTER")] == ["queued"]


async def test_bolt_app_button_click_replaces_the_message(
    bolt: tuple[str, list[dict[str, Any]]], standin: SlackStandIn
) -> None:
    url, handled = bolt
    async with SignedSlackClient(url, SECRET, standin=standin) as slack:
        await slack.slash_command("v0.3.0", user_id="U0REQUESTER")
        (msg,) = standin.messages(CHANNEL)
        tampered = await slack.block_action(
            "approve", user_id="U0APPROVER", message_ts=msg.ts, tamper=True
        )
        assert tampered.status == 401
        assert msg.text == "release v0.3.0"
        resp = await slack.block_action("approve", user_id="U0APPROVER", message_ts=msg.ts)
    assert resp.status == 200
    assert handled[-1]["actions"][0]["value"] == "v0.3.0"
    assert msg.text == "v0.3.0 approved by <@U0APPROVER>"
    assert msg.history[0].text == "release v0.3.0"


# ------------------------------------------------------------------ rendering


async def _demo_channel(standin: SlackStandIn, client: AsyncWebClient) -> None:
    posted = await client.chat_postMessage(
        channel=CHANNEL,
        text="release v0.3.0-rc.2",
        blocks=[
            {"type": "header", "text": {"type": "plain_text", "text": "Release v0.3.0-rc.2"}},
            section("Requested by <@U0REQUESTER>. <https://example.com/run/1|Build log>"),
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": "*Component*"},
                    {"type": "mrkdwn", "text": "*Platforms*"},
                    {"type": "mrkdwn", "text": "runtime"},
                    {"type": "mrkdwn", "text": "linux/arm64 only &lt;script&gt;x&lt;/script&gt;"},
                ],
            },
            {"type": "divider"},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": "index `sha256:abc`"}]},
            {
                "type": "actions",
                "elements": [
                    button("Approve", "approve", style="primary"),
                    button("Reject", "reject", style="danger"),
                ],
            },
        ],
    )
    await client.chat_postMessage(
        channel=CHANNEL, text="missing linux/amd64", thread_ts=posted["ts"]
    )
    await client.chat_update(channel=CHANNEL, ts=posted["ts"], text="blocked", blocks=None)


async def test_render_channel_text(standin: SlackStandIn, client: AsyncWebClient) -> None:
    await _demo_channel(standin, client)
    text = standin.render_text(CHANNEL)
    assert text.startswith("#releases\n")
    assert "== Release v0.3.0-rc.2 ==" in text
    assert "Requested by @alice. Build log (https://example.com/run/1)" in text
    assert re.search(r"\*Component\* \| \*Platforms\*\n\s+runtime\s+\| linux/arm64 only", text)
    assert "[Approve] [Reject]" in text
    assert "(edited)" in text
    assert "> 1 reply" in text and "|   missing linux/amd64" in text
    same = render_channel_text(standin.messages(CHANNEL), channel_name="releases", users=USERS)
    assert same == text


async def test_render_channel_html(
    standin: SlackStandIn, client: AsyncWebClient, tmp_path: Path
) -> None:
    await _demo_channel(standin, client)
    page = standin.write_html(CHANNEL, tmp_path / "channel.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert '<button class="btn primary">Approve</button>' in page
    assert '<button class="btn danger">Reject</button>' in page
    assert '<a href="https://example.com/run/1">Build log</a>' in page
    assert '<span class="mention">@alice</span>' in page
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "<code>sha256:abc</code>" in page
    assert '<div class="replies">1 reply</div>' in page
    assert page == render_channel_html(
        standin.messages(CHANNEL), channel_name="releases", users=USERS
    )


async def test_wait_for_calls(client: AsyncWebClient, standin: SlackStandIn) -> None:
    waiter = asyncio.create_task(standin.wait_for_calls("chat.postMessage", count=2))
    await client.chat_postMessage(channel=CHANNEL, text="1")
    assert not waiter.done()
    await client.chat_postMessage(channel=CHANNEL, text="2")
    assert [c.params["text"] for c in await waiter] == ["1", "2"]
    with pytest.raises(TimeoutError):
        await standin.wait_for_calls("chat.update", timeout=0.05)
