"""Issue 10, items 10 and 11, black-box over real HTTP against the real Bolt app (the
in-process server of tests/test_bot_http.py, the Slack stand-in, the lab Redis).

Item 10: what is refused before the app sees it (bad or missing signature, stale
timestamp, malformed, too large) is counted on GET /metrics and logged as at most one
short line per reason per minute; no request body, header value or response_url is
ever in the log, at any level.

Item 11: a broken timestamp, a body that is not UTF-8, and a signed body whose
`payload=` is not a Slack payload get 400 or 401, never a 500 or a traceback.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from urllib.parse import urlencode

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.bot import REQUESTER, SECRET, Bot, bot
from tests.support.slack_client import FORM, encode_form, slack_signature

__all__ = ["bot"]  # the fixture

REFUSED = "aibrix_slack_requests_refused"


def marker() -> str:
    """Something a log must never show: looks like a credential, unique per test."""
    return f"xoxp-SECRET-LOOKING-{uuid.uuid4().hex}"


async def post(
    bot: Bot,
    body: bytes,
    *,
    timestamp: str | None = None,
    signature: str | None = None,
    sign: bool = False,
    content_type: str = FORM,
) -> tuple[int, str]:
    """POST raw bytes to /slack/events with exactly these headers; `sign` signs the
    body with the app's secret at `timestamp` (now when not given)."""
    headers = {"Content-Type": content_type}
    if sign:
        timestamp = timestamp if timestamp is not None else str(int(time.time()))
        signature = slack_signature(SECRET, timestamp, body)
    if timestamp is not None:
        headers["X-Slack-Request-Timestamp"] = timestamp
    if signature is not None:
        headers["X-Slack-Signature"] = signature
    async with (
        aiohttp.ClientSession() as session,
        session.post(bot.url + "/slack/events", data=body, headers=headers) as resp,
    ):
        return resp.status, await resp.text()


async def refused_counts(bot: Bot) -> dict[str, float]:
    async with aiohttp.ClientSession() as session, session.get(bot.url + "/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == REFUSED:
            for sample in family.samples:
                if sample.name == REFUSED + "_total":
                    counts[sample.labels["reason"]] = sample.value
    return counts


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """The log at DEBUG from before the app is built: Bolt's loggers take the root
    level when they are created, as they do in `aibrix-bot serve`."""
    caplog.set_level(logging.DEBUG)
    return caplog


def logged(caplog: pytest.LogCaptureFixture) -> str:
    """Everything the log holds: messages, arguments and tracebacks, at every level."""
    parts = []
    for record in caplog.records:
        parts.append(record.getMessage())
        parts.append(repr(record.args))
        if record.exc_info:
            parts.append(repr(record.exc_info[1]))
    return "\n".join(parts) + caplog.text


def no_errors(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert bad == [], [f"{r.name}: {r.getMessage()[:200]}" for r in bad]


def command_form(bot: Bot, text: str, **fields: str) -> bytes:
    form = bot.slack.command_fields(text, user_id=REQUESTER)
    form.update(fields)
    return encode_form(form).encode()


# ---- item 10: logs --------------------------------------------------------------------


async def test_item10_bad_signature_body_never_logged(
    logs: pytest.LogCaptureFixture, bot: Bot
) -> None:
    caplog = logs
    secret_text = marker()
    big = command_form(bot, "release v0.3.0 " + secret_text) + b"&pad=" + b"A" * 100_000
    wrong = slack_signature("not-the-signing-secret", int(time.time()), big)
    status, _ = await post(bot, big, timestamp=str(int(time.time())), signature=wrong)
    assert status == 401
    status, _ = await post(bot, big)  # no signature at all
    assert status == 401
    shown = logged(caplog)
    assert secret_text not in shown
    assert "AAAAAAAAAA" not in shown
    assert wrong not in shown  # no header value either
    assert max((len(r.getMessage()) for r in caplog.records), default=0) < 300
    assert await bot.keys() == []


async def test_item10_stale_request_response_url_never_logged(
    logs: pytest.LogCaptureFixture, bot: Bot
) -> None:
    caplog = logs
    capability = f"https://hooks.slack.com/commands/T0/1/{uuid.uuid4().hex}"
    body = command_form(bot, "status", response_url=capability)
    stale = str(int(time.time()) - 301)
    status, _ = await post(bot, body, timestamp=stale, sign=True)
    assert status == 401
    shown = logged(caplog)
    assert capability not in shown
    assert capability.rsplit("/", 1)[1] not in shown
    assert stale not in shown


async def test_item10_oversized_body_is_413_and_never_logged(
    logs: pytest.LogCaptureFixture, bot: Bot
) -> None:
    caplog = logs
    secret_text = marker()
    huge = ("payload=" + secret_text + "B" * 900_000).encode()
    status, _ = await post(bot, huge)  # unsigned: refused on size before anything else
    assert status == 413
    status, _ = await post(bot, huge, sign=True)  # signed: still too large
    assert status == 413
    assert (await refused_counts(bot))["too_large"] == 2  # a new server: counts from 0
    shown = logged(caplog)
    assert secret_text not in shown and "BBBBBBBBBB" not in shown
    assert await bot.keys() == []


async def test_item10_rejections_counted_and_rate_limited(
    logs: pytest.LogCaptureFixture, bot: Bot
) -> None:
    caplog = logs
    body = command_form(bot, "status")
    now = int(time.time())
    for _ in range(25):
        status, _ = await post(bot, body, timestamp=str(now), signature="v0=" + "0" * 64)
        assert status == 401
    for _ in range(15):
        status, _ = await post(bot, body, timestamp=str(now - 3600), sign=True)
        assert status == 401
    for _ in range(10):
        status, _ = await post(bot, body, timestamp="abc", signature="v0=" + "0" * 64)
        assert status == 400
    counts = await refused_counts(bot)  # a new server: counts from 0
    assert counts["bad_signature"] == 25
    assert counts["stale"] == 15
    assert counts["bad_timestamp"] == 10
    assert counts["malformed"] == 0
    # One line per reason within the minute, however many were refused.
    lines = [r.getMessage() for r in caplog.records if r.name == "aibrix.bot.requests"]
    for reason in ("bad_signature", "stale", "bad_timestamp"):
        assert len([line for line in lines if reason in line]) == 1, lines
    assert len(lines) == 3, lines
    assert all(len(line) < 200 for line in lines)
    # A signed, fresh request still goes through.
    resp = await bot.slack.slash_command("help", user_id=REQUESTER)
    assert resp.status == 200


# ---- item 11: no 500 before authentication ------------------------------------------------


@pytest.mark.parametrize(
    "timestamp",
    [
        "abc",
        "1700000000.5",
        "9" * 400,
        "",
        "-1700000000",
        "1e9",
        "0x65",
        "1700000000 1",
        "\uff11\uff17\uff10\uff10",
    ],
)
async def test_item11_bad_timestamp_is_400_not_500(
    logs: pytest.LogCaptureFixture, bot: Bot, timestamp: str
) -> None:
    caplog = logs
    body = command_form(bot, "status")
    status, _ = await post(bot, body, timestamp=timestamp, signature="v0=" + "0" * 64)
    assert status == 400
    no_errors(caplog)
    assert await bot.keys() == []


async def test_item11_bad_timestamp_signed_with_it_is_still_400(
    bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    """Signed over the broken timestamp itself: the secret is known, the header is not
    a Slack timestamp."""
    caplog.set_level(logging.DEBUG)
    body = command_form(bot, "status")
    status, _ = await post(bot, body, timestamp=str(time.time()), sign=True)  # a float
    assert status == 400
    no_errors(caplog)


async def test_item11_non_utf8_body_is_400_not_500(
    logs: pytest.LogCaptureFixture, bot: Bot
) -> None:
    caplog = logs
    raw = command_form(bot, "status") + b"&junk=\xff\xfe\xc3("
    status, _ = await post(bot, raw, timestamp=str(int(time.time())), signature="v0=" + "0" * 64)
    assert status in (400, 401)
    status, _ = await post(bot, raw, sign=True)  # signed over those very bytes
    assert status == 400
    no_errors(caplog)
    assert await bot.keys() == []


def _payload(value: object) -> bytes:
    return urlencode({"payload": json.dumps(value)}).encode()


def _click(**changes: object) -> dict[str, object]:
    """A block_actions payload shaped as Slack's, with `changes` applied."""
    payload: dict[str, object] = {
        "type": "block_actions",
        "user": {"id": "U0APPROVER1", "name": "bob", "team_id": "T0AIBRIX"},
        "api_app_id": "A0AIBRIXAPP",
        "token": "standin-verification",
        "container": {"type": "message", "message_ts": "1.2", "channel_id": "C0RELEASES"},
        "trigger_id": "1.2.abc",
        "team": {"id": "T0AIBRIX", "domain": "aibrix"},
        "channel": {"id": "C0RELEASES", "name": "releases"},
        "message": {"type": "message", "ts": "1.2", "text": ""},
        "response_url": "http://127.0.0.1:9/unused",
        "actions": [
            {
                "action_id": "approve_release",
                "block_id": "b",
                "type": "button",
                "value": "v1.0.0|0123456789abcdef",
                "action_ts": "1.3",
            }
        ],
    }
    payload.update(changes)
    return payload


MALFORMED = {
    "payload not JSON": b"payload=%7Bnot+json",
    "payload empty": b"payload=",
    "payload a list": _payload([1, 2]),
    "payload a string": _payload("block_actions"),
    "payload a number": _payload(7),
    "payload null": _payload(None),
    "payload without type": _payload({"actions": []}),
    "payload type not a string": _payload({"type": 5}),
    "payload of an unknown type": _payload({"type": "view_submission", "view": {}}),
    "click without actions": _payload(_click(actions=None)),
    "click with no action": _payload(_click(actions=[])),
    "click actions a string": _payload(_click(actions="approve_release")),
    "click action a number": _payload(_click(actions=[5])),
    "click action_id a number": _payload(_click(actions=[{"action_id": 5, "value": "x"}])),
    "click value an object": _payload(
        _click(actions=[{"action_id": "approve_release", "value": {"a": 1}}])
    ),
    "click user a string": _payload(_click(user="U0APPROVER1")),
    "click user id a list": _payload(_click(user={"id": ["U0APPROVER1"]})),
    "click without user": _payload(_click(user=None)),
    "click team a number": _payload(_click(team=12)),
    "click enterprise a number": _payload(_click(enterprise=12)),
    "click channel a string": _payload(_click(channel="C0RELEASES")),
    "click container a list": _payload(_click(container=[1])),
    "click response_url a number": _payload(_click(response_url=5)),
    "click without response_url": _payload(_click(response_url=None)),
    "click response_url not a URL": _payload(_click(response_url="x")),
    "click authorizations junk": _payload(_click(authorizations=[5])),
    "JSON body a list": b"[1, 2]",
    "JSON body broken": b'{"type": ',
    "JSON body without type": b'{"challenge": "x"}',
    "form without command": b"user_id=U0REQUESTER&text=status",
    # Item 12: a command Slack sends always carries the URL its answer goes to.
    "command without response_url": b"command=%2Faibrix&text=release+v9.9.9&user_id=U0APPROVER1&channel_id=C0RELEASES",
    "command response_url not a URL": b"command=%2Faibrix&text=status&user_id=U0APPROVER1&channel_id=C0RELEASES&response_url=x",
    "command response_url with no host": b"command=%2Faibrix&text=status&user_id=U0APPROVER1&channel_id=C0RELEASES&response_url=http%3A%2F%2F",
    "command response_url javascript": b"command=%2Faibrix&text=status&user_id=U0APPROVER1&channel_id=C0RELEASES&response_url=javascript%3Aalert(1)",
    "empty body": b"",
}


@pytest.mark.parametrize("body", list(MALFORMED.values()), ids=list(MALFORMED))
async def test_item11_signed_malformed_payload_is_400(
    logs: pytest.LogCaptureFixture, bot: Bot, body: bytes
) -> None:
    caplog = logs
    status, _ = await post(bot, body, sign=True)
    assert status == 400
    no_errors(caplog)
    assert (await refused_counts(bot))["malformed"] == 1  # a new server: counts from 0
    assert await bot.keys() == []
    assert bot.standin.calls_to("chat.postMessage") == []


async def test_item11_a_command_saying_payload_is_not_taken_for_a_click(
    logs: pytest.LogCaptureFixture, bot: Bot
) -> None:
    """Bolt reads any form containing "payload" as a click; the command reached it empty
    and went unanswered (404). The gate hands Bolt the command as sent."""
    resp = await bot.slack.slash_command("inspect payload v1.0.0", user_id=REQUESTER)
    assert resp.status == 200
    assert "is not a component of this project" in json.loads(resp.body)["text"]
    no_errors(logs)
