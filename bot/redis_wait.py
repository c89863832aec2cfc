"""The terminal rides out a Redis outage: `release`, `retry` (while following) and
`status` retry their Redis calls with backoff for a stated time, saying on the terminal
that they wait and for whom, and only then give up with `RedisGone` (exit 3, unavailable),
never a traceback. Only connection failures are waited out; a reply Redis gave (a wrong
type, a script error) is not an outage and is raised at once.

The release itself does not depend on the terminal: workers carry on, so giving up says
how to look again."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TextIO, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot import messages as terminal
from jobs.domain.errors import Unavailable
from jobs.store.connections import RedisConnectError, RedisSettings

T = TypeVar("T")

DEFAULT_WAIT_SECONDS = 60.0
# Backoff between attempts: short first (a restart takes about a second), capped so a
# Redis that comes back is noticed within two seconds.
BACKOFF_BASE_S = 0.2
BACKOFF_CAP_S = 2.0
OUTAGE = (RedisConnectionError, RedisTimeoutError, RedisConnectError)


class RedisGone(Unavailable):
    """Redis stayed unreachable for the whole wait."""


def backoff(attempt: int) -> float:
    """Seconds before attempt `attempt + 1` (pure)."""
    return float(min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** min(attempt, 16)))


def host_port(settings: RedisSettings) -> str:
    """Where Redis is, as the terminal names it: never the user or password."""
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return f"{host}:{settings.port}"


@dataclass
class RedisWait:
    """How long the command waits out one outage, and where it says so."""

    where: str
    seconds: float = DEFAULT_WAIT_SECONDS
    hint: str = ""  # what to run to look again, shown when giving up
    out: TextIO = field(default_factory=lambda: sys.stderr)

    @classmethod
    def of(cls, settings: RedisSettings, seconds: float, hint: str = "") -> RedisWait:
        return cls(host_port(settings), seconds, hint)

    async def call(self, attempt_call: Callable[[], Awaitable[T]]) -> T:
        """`attempt_call()`, again with backoff while Redis is unreachable, up to
        `seconds` from the first failure; then `RedisGone` with the sentence."""
        deadline: float | None = None
        started = 0.0
        attempt = 0
        while True:
            try:
                result = await attempt_call()
            except OUTAGE as error:
                now = time.monotonic()
                if deadline is None:
                    started, deadline = now, now + self.seconds
                    if self.seconds > 0:
                        self._say(terminal.redis_waiting(self.where, self.seconds))
                if now >= deadline:
                    # The cause by its type only: a message could carry the URL.
                    cause = type(error).__name__
                    raise RedisGone(
                        terminal.redis_gave_up(self.where, self.seconds, cause, self.hint)
                    ) from None
                await asyncio.sleep(min(backoff(attempt), max(0.0, deadline - now)))
                attempt += 1
                continue
            if deadline is not None:
                self._say(terminal.redis_back(self.where, time.monotonic() - started))
            return result

    def _say(self, line: str) -> None:
        print(line, file=self.out, flush=True)
