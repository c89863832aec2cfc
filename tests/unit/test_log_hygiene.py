"""bot.log_hygiene (issue 10, item 10): the Slack libraries' log lines keep their head,
never the request data that follows it."""

from __future__ import annotations

import logging

import pytest

from bot.log_hygiene import WITHHELD, guard, head


@pytest.mark.parametrize(
    ("message", "kept"),
    [
        (
            "Invalid request signature detected (signature: v0=abc, timestamp: 1, body: token=x)",
            "Invalid request signature detected",
        ),
        ("Sending a request - url: https://hooks.slack.com/commands/T/1/x", "Sending a request"),
        ("Unhandled request ({'type': None})", "Unhandled request"),
        ("Request body: {'response_url': 'https://hooks'}", "Request body"),
        ("{'token': 'x', 'response_url': 'https://hooks'}", WITHHELD),
        ("token=x&response_url=https%3A%2F%2Fhooks", "token"),
        ("Applying slack_bolt.middleware.ssl_check.AsyncSslCheck", None),
    ],
)
def test_item10_head_keeps_what_happened_not_the_data(message: str, kept: str | None) -> None:
    assert head(message) == (kept if kept is not None else message)


def test_item10_head_is_short() -> None:
    assert len(head("x" * 100_000)) <= 120


def test_item10_guarded_logger_drops_arguments(caplog: pytest.LogCaptureFixture) -> None:
    logger = guard(logging.getLogger("slack_bolt.test_item10"))
    guard(logger)  # idempotent
    assert len(logger.filters) == 1
    with caplog.at_level(logging.DEBUG, logger=logger.name):
        logger.info("Request body: %s", {"response_url": "https://hooks.slack.com/x/SECRET"})
    assert caplog.records[-1].getMessage() == "Request body"
    assert "SECRET" not in caplog.text
