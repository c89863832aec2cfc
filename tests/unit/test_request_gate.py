"""bot.request_gate's pure checks (issue 10, items 10 and 11): which refusal each
header pair and body gets, without a server."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest

from bot.request_gate import STATUS, Refusal, header_refusal, parse_envelope

NOW = 1_700_000_000.0
SIG = "v0=" + "ab" * 32


@pytest.mark.parametrize(
    ("timestamp", "signature", "refusal"),
    [
        (None, None, Refusal.UNSIGNED),
        ("", "", Refusal.UNSIGNED),
        (None, SIG, Refusal.BAD_TIMESTAMP),
        ("abc", SIG, Refusal.BAD_TIMESTAMP),
        ("1700000000.5", SIG, Refusal.BAD_TIMESTAMP),
        ("9" * 400, SIG, Refusal.BAD_TIMESTAMP),
        ("-1700000000", SIG, Refusal.BAD_TIMESTAMP),
        ("\u0661\u0667\u0660\u0660", SIG, Refusal.BAD_TIMESTAMP),  # Arabic-Indic digits
        ("1700000000", None, Refusal.BAD_SIGNATURE),
        ("1700000000", "v0=zz", Refusal.BAD_SIGNATURE),
        ("1700000000", "v1=" + "ab" * 32, Refusal.BAD_SIGNATURE),
        ("1700000000", "v0=" + "\u00e9" * 64, Refusal.BAD_SIGNATURE),
        ("1699999699", SIG, Refusal.STALE),
        ("1700000301", SIG, Refusal.STALE),
        ("1699999700", SIG, None),
        ("1700000300", SIG, None),
    ],
)
def test_item11_header_refusals(
    timestamp: str | None, signature: str | None, refusal: Refusal | None
) -> None:
    assert header_refusal(timestamp, signature, NOW) == refusal


def test_item11_refusals_are_4xx() -> None:
    assert set(STATUS) == set(Refusal)
    assert all(400 <= status < 500 for status in STATUS.values())


def click(**changes: object) -> str:
    payload: dict[str, object] = {
        "type": "block_actions",
        "user": {"id": "U1"},
        "response_url": "https://hooks.slack.com/actions/T/1/x",
        "actions": [{"action_id": "approve_release", "value": "{}"}],
    }
    payload.update(changes)
    return urlencode({"payload": json.dumps(payload)})


def test_item11_envelopes_slack_sends_are_read_as_bolt_reads_them() -> None:
    hook = "https://hooks.slack.com/commands/T1/1/x"
    command = urlencode(
        {"command": "/aibrix", "text": "status payload", "user_id": "U1", "response_url": hook}
    )
    assert parse_envelope(command, "application/x-www-form-urlencoded") == {
        "command": "/aibrix",
        "text": "status payload",
        "user_id": "U1",
        "response_url": hook,
    }
    parsed = parse_envelope(click(), "application/x-www-form-urlencoded")
    assert parsed is not None and parsed["type"] == "block_actions"
    assert parse_envelope("ssl_check=1&token=x", None) == {"ssl_check": "1", "token": "x"}
    challenge = json.dumps({"type": "url_verification", "challenge": "c"})
    assert parse_envelope(challenge, "application/json") == {
        "type": "url_verification",
        "challenge": "c",
    }


@pytest.mark.parametrize(
    "body",
    [
        "",
        "text=status",
        "command=%2Faibrix&text=status",  # no response_url (item 12)
        "command=%2Faibrix&response_url=http%3A%2F%2F",
        "command=%2Faibrix&response_url=file%3A%2F%2F%2Fetc%2Fpasswd",
        "payload=%7B",
        urlencode({"payload": "[]"}),
        urlencode({"payload": json.dumps({"type": "view_submission"})}),
        click(actions=[]),
        click(actions=[{"action_id": None}]),
        click(actions=[{"action_id": "a", "value": 5}]),
        click(user="U1"),
        click(user={"id": 5}),
        click(response_url=None),
        click(response_url="hooks"),
        click(team=[1]),
        click(authorizations=[1]),
        click(trigger_id=5),
        "[1]",
        '{"type": "event_callback"}',
        '{"type": "url_verification", "challenge": 5}',
    ],
)
def test_item11_malformed_envelopes_are_refused(body: str) -> None:
    assert parse_envelope(body, "application/x-www-form-urlencoded") is None
