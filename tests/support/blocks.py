"""Slack's limits on a rendered message, checked the way Slack would: shared by the
Block Kit tests and the lab tests that render real releases."""

from __future__ import annotations

from typing import Protocol

from tests.support.slack_standin import validate_blocks


class Rendered(Protocol):
    """A rendered message (the Slack adapter's `Message`), by shape, so this helper does
    not follow the adapter's module around."""

    @property
    def text(self) -> str: ...

    @property
    def blocks(self) -> list[dict[str, object]]: ...


def assert_within_limits(message: Rendered) -> None:
    assert validate_blocks(message.blocks) == []
    assert len(message.blocks) <= 50
    assert len(message.text) <= 40_000
