"""Edge cases of the Slack adapter's input checks (`handlers.parse`, `handlers.blocks`):
a trailing newline is not part of a valid run id or user id (`$` in a regular expression
matches before a final newline; issue 15)."""

from __future__ import annotations

from handlers.blocks import mention
from handlers.parse import ButtonValue, ParseError, parse_button_value


def test_a_run_id_with_a_trailing_newline_is_refused() -> None:
    good = parse_button_value('{"version":"v1.0.0","run_id":"abcdef12"}')
    assert good == ButtonValue(version="v1.0.0", run_id="abcdef12")
    assert isinstance(parse_button_value('{"version":"v1.0.0","run_id":"abcdef12\\n"}'), ParseError)


def test_a_user_id_with_a_trailing_newline_is_not_a_mention() -> None:
    assert mention("U0ALICE") == "<@U0ALICE>"
    assert mention("U0ALICE\n") == "`U0ALICE\n`"
