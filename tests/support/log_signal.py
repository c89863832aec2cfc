"""A positive signal from the bot's own log, for tests that check that nothing happened.

Instead of sleeping "long enough" before asserting that a redelivery did nothing, a test
waits for the line the bot logs once it has decided to drop the delivery (it returns
right after), then asserts that nothing else happened."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

DROPPED = "this one is acked and dropped"  # handlers.context.first_delivery, both cases


class LogSignal(logging.Handler):
    """Collects the messages of one logger that contain `text`."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.INFO)
        self.text = text
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if self.text in message:
            self.seen.append(message)

    async def wait_for(self, count: int, timeout: float = 10) -> None:
        """Until `count` matching lines were logged (they are logged in the bot's task,
        on this event loop)."""
        async with asyncio.timeout(timeout):
            while len(self.seen) < count:
                await asyncio.sleep(0.01)


@contextlib.contextmanager
def log_signal(text: str, logger: str = "aibrix.bot") -> Iterator[LogSignal]:
    target = logging.getLogger(logger)
    handler = LogSignal(text)
    level = target.level
    target.addHandler(handler)
    if target.getEffectiveLevel() > logging.INFO:
        target.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        target.removeHandler(handler)
        target.setLevel(level)
