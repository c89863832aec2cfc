"""jobs.domain.ratelimit (issue 10, item 10): one log line per reason per minute, with a
count of what it stands for; a fake clock, no sleeping."""

from __future__ import annotations

import pytest

from jobs.domain.ratelimit import PerKeyRateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_item10_limiter_first_event_of_a_key_is_let_through() -> None:
    limiter = PerKeyRateLimiter(60, Clock())
    assert limiter.allow("bad_signature") == 1
    assert limiter.allow("stale") == 1  # another reason has its own minute


def test_item10_limiter_holds_back_within_the_period_then_counts_them() -> None:
    clock = Clock()
    limiter = PerKeyRateLimiter(60, clock)
    assert limiter.allow("bad_signature") == 1
    held = [limiter.allow("bad_signature") for _ in range(9999)]
    assert held == [None] * 9999
    clock.now += 59.9
    assert limiter.allow("bad_signature") is None
    clock.now += 0.1
    # This line stands for itself and the 10,000 held back since the first one.
    assert limiter.allow("bad_signature") == 10001
    assert limiter.allow("bad_signature") is None


def test_item10_limiter_quiet_key_gets_its_line_at_once_after_the_period() -> None:
    clock = Clock()
    limiter = PerKeyRateLimiter(60, clock)
    assert limiter.allow("too_large") == 1
    clock.now += 3600
    assert limiter.allow("too_large") == 1


def test_item10_limiter_clock_stepping_back_opens_no_window() -> None:
    clock = Clock()
    limiter = PerKeyRateLimiter(60, clock)
    assert limiter.allow("stale") == 1
    clock.now -= 500
    assert limiter.allow("stale") is None


def test_item10_limiter_period_must_be_positive() -> None:
    with pytest.raises(ValueError):
        PerKeyRateLimiter(0, Clock())
