"""No silent skips in CI: a pytest plugin (loaded by tests/conftest.py).

In CI (CI=true) a test that needs a missing service fails through `service_missing` in
tests/conftest.py and never skips. Any other skip, of a test or of a whole module, is
turned into a failure unless the test is listed, with the reason it may skip, in
tests/skips-allowed.txt (`NODEID-PATTERN  why`, fnmatch patterns, one a line). Outside CI
a skip stays a skip. An expected failure (xfail) is not a skip and is left alone.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Generator
from pathlib import Path

import pytest

ALLOWED_FILE = Path(__file__).resolve().parent.parent / "skips-allowed.txt"
# A test of this rule points it at a list of its own.
ALLOWED_FILE_VARIABLE = "AIBRIX_SKIPS_ALLOWED"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


class SkipListError(ValueError):
    """A line of the allowed-skip list without a reason."""


def read_allowed(text: str) -> dict[str, str]:
    """`PATTERN  why` per line; blank lines and `#` comments ignored. A pattern without a
    reason is refused: a skip is only allowed together with why."""
    found: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pattern, _, why = line.partition(" ")
        if not why.strip():
            raise SkipListError(f"line {number}: {pattern} has no reason")
        found[pattern] = why.strip()
    return found


def allowed_patterns() -> dict[str, str]:
    path = Path(os.environ.get(ALLOWED_FILE_VARIABLE, ALLOWED_FILE))
    return read_allowed(path.read_text()) if path.exists() else {}


def is_allowed(nodeid: str, allowed: dict[str, str]) -> bool:
    return any(fnmatch.fnmatchcase(nodeid, pattern) for pattern in allowed)


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _fail_unlisted(report: pytest.TestReport | pytest.CollectReport) -> None:
    if not (in_ci() and report.skipped) or hasattr(report, "wasxfail"):
        return
    if is_allowed(report.nodeid, allowed_patterns()):
        return
    reason = _skip_reason(report)
    report.outcome = "failed"
    report.longrepr = (
        f"skipped in CI, and not listed in tests/skips-allowed.txt: {reason}\n"
        "(a missing service goes through service_missing in tests/conftest.py, which fails "
        "in CI; any other skip must be listed there with its reason)"
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    _fail_unlisted(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    report = yield
    _fail_unlisted(report)
    return report
