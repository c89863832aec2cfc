"""Claims on Slack deliveries: what a claim's stored value means, and what to do next.

Slack redelivers a command or click it got no timely answer for (HTTP: at once, after
one and after five minutes; Socket Mode: the unacked envelope). A delivery is claimed
with a short lease while it is handled, and confirmed for an hour once its work is
durable; refused input leaves no claim. So a redelivery finds either nothing (handle it),
a live claim (another handler is on it: drop), an expired one (its handler died: the
lease ran out, handle it and finish the work), or a confirmed one (done: drop).

Pure: the Redis side is in `handlers.context`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

# How long a handled delivery is remembered. Slack redelivers within minutes (HTTP: at
# once, after 1 and after 5 minutes); an hour leaves room and still expires.
CONFIRMED_TTL_SECONDS = 3600


class Claim(StrEnum):
    """The value stored under a delivery's key."""

    HANDLING = "handling"  # a handler is on it; short lease
    CONFIRMED = "confirmed"  # its work is durable; kept CONFIRMED_TTL_SECONDS


def claim_ttl(claim: Claim, lease_seconds: int) -> int:
    """How long the key lives in this state."""
    if lease_seconds < 1:
        raise ValueError("a claim lease is at least one second")
    return lease_seconds if claim is Claim.HANDLING else CONFIRMED_TTL_SECONDS


def on_delivery(stored: str | None) -> Literal["handle", "in-progress", "done"]:
    """What a delivery does given the value under its key (None: no key, or expired).

    Anything unknown under the key counts as done: dropping a delivery is recoverable
    (the user asks again), running one twice may not be.
    """
    if stored is None:
        return "handle"
    if stored == Claim.HANDLING.value:
        return "in-progress"
    return "done"
