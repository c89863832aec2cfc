"""A merge rides out a flaky registry (issue 16, item 4).

`imagetools create` does not retry a 503, and the queue's retries of a job (three over a
few seconds) are far shorter than a registry restart or a rate-limit window. So the merge
is retried here, in the worker that holds its lease, with backoff for a stated budget
(`registry.merge_retry_seconds`): every attempt is safe to repeat, because the merge reads
the tag first and adopts an index it already wrote (`jobs.domain.immutability`). Only
faults that may pass are retried; when the budget is spent the caller leaves the release
`blocked` with the reason, from which `retry` merges again without rebuilding.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from jobs.registry.client import (
    AuthenticationError,
    DigestMismatchError,
    NotFoundError,
    ProtocolError,
    RegistryError,
)
from jobs.tools.merge import TransientMergeError

log = logging.getLogger("aibrix.merge")

T = TypeVar("T")

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 20.0
# A registry's answer that no retry changes: a missing manifest, refused credentials, bytes
# that are not what was asked for, a malformed reply.
_PERMANENT = (NotFoundError, AuthenticationError, DigestMismatchError, ProtocolError)


def transient(error: BaseException) -> bool:
    """Whether `error` is a registry fault that may pass (pure)."""
    if isinstance(error, TransientMergeError):
        return True
    return isinstance(error, RegistryError) and not isinstance(error, _PERMANENT)


def backoff(attempt: int, base: float = BACKOFF_BASE_S, cap: float = BACKOFF_CAP_S) -> float:
    """Seconds before attempt `attempt + 1` (1-based `attempt`; pure)."""
    return float(min(cap, base * 2 ** min(attempt - 1, 16)))


@dataclass(frozen=True)
class GaveUp:
    """The budget ran out (or the caller stopped it) with the last fault still there."""

    reason: str
    attempts: int
    seconds: float


@dataclass(frozen=True)
class Done(Generic[T]):
    value: T
    attempts: int


async def ride_out(
    attempt_once: Callable[[], Awaitable[T]],
    budget_s: float,
    *,
    stopped: Callable[[], bool] = lambda: False,
    what: str = "the merge",
) -> Done[T] | GaveUp:
    """`attempt_once()` until it succeeds, a fault that will not pass is raised (as is), or
    `budget_s` from the first attempt is spent on faults that may pass (`GaveUp`)."""
    started = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        try:
            return Done(await attempt_once(), attempt)
        except (TransientMergeError, RegistryError) as error:
            if not transient(error):
                raise
            elapsed = time.monotonic() - started
            delay = backoff(attempt)
            if elapsed + delay > budget_s or stopped():
                log.warning(
                    "%s: giving up after %d attempts in %.1f s: %s", what, attempt, elapsed, error
                )
                return GaveUp(str(error), attempt, elapsed)
            log.warning(
                "%s: attempt %d met a registry fault that may pass (%s); again in %.1f s",
                what,
                attempt,
                error,
                delay,
            )
            await asyncio.sleep(delay)
