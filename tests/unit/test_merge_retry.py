"""Which registry faults a merge retries, and how long it waits (issue 16, item 4)."""

from __future__ import annotations

import pytest

from jobs.registry.client import AuthenticationError, NotFoundError, RegistryError
from jobs.tools.merge import MergeError, TransientMergeError, transient_registry_fault
from jobs.usecases.merge_retry import BACKOFF_CAP_S, GaveUp, backoff, ride_out, transient


@pytest.mark.parametrize(
    "stderr",
    [
        "ERROR: unexpected status code https://r/v2/x/manifests/v1: 503 Service Unavailable",
        "ERROR: failed commit on ref: unexpected status: 429 Too Many Requests",
        "ERROR: read tcp 127.0.0.1:1->127.0.0.1:2: read: connection reset by peer",
        "ERROR: httpReadSeeker: failed open: content at http://r/v2/x/manifests/sha256:ab "
        "not found: not found",
        "ERROR: Put http://r/v2/x/manifests/v1: EOF",
    ],
)
def test_transient_imagetools_failures(stderr: str) -> None:
    assert transient_registry_fault(stderr)


@pytest.mark.parametrize(
    "stderr",
    [
        "ERROR: failed to authorize: 401 Unauthorized",
        "ERROR: denied: requested access to the resource is denied",
        "ERROR: multiple repositories currently not supported",
    ],
)
def test_lasting_imagetools_failures(stderr: str) -> None:
    assert not transient_registry_fault(stderr)


def test_which_errors_are_retried() -> None:
    assert transient(TransientMergeError("503"))
    assert transient(RegistryError("r/x:v1", "the registry kept answering HTTP 503"))
    assert not transient(NotFoundError("r/x:v1", "not found"))
    assert not transient(AuthenticationError("r/x:v1", "refused"))
    assert not transient(MergeError("no verified build for linux/arm64"))


def test_backoff_grows_then_caps() -> None:
    waits = [backoff(n) for n in range(1, 30)]
    assert waits[0] < waits[1] < waits[2] and max(waits) == BACKOFF_CAP_S


async def test_ride_out_gives_up_within_its_budget_and_raises_lasting_faults() -> None:
    calls = 0

    async def always_503() -> str:
        nonlocal calls
        calls += 1
        raise TransientMergeError("503 Service Unavailable")

    outcome = await ride_out(always_503, 0.0)
    assert isinstance(outcome, GaveUp) and outcome.attempts == 1 == calls
    assert "503" in outcome.reason

    async def lasting() -> str:
        raise MergeError("no verified build")

    with pytest.raises(MergeError):
        await ride_out(lasting, 60.0)
