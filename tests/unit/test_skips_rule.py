"""The no-silent-skips rule (tests/support/skips.py), run on small suites of its own with
pytester: in CI an unlisted skip fails, a listed one and an xfail do not; outside CI a
skip stays a skip; `service_missing` fails in CI (issue 15 item 3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.skips import SkipListError, is_allowed, read_allowed

SUITE = """
import pytest

def test_passes():
    pass

def test_skips():
    pytest.skip("no frobnicator here")

@pytest.mark.skipif(True, reason="never on this host")
def test_skipif():
    pass

@pytest.mark.xfail(reason="known")
def test_xfail():
    assert False
"""


# The plugin is the one this session loaded; the inner runs load it again by name.
PLUGIN = "-ptests.support.skips"
QUIET = "ignore::pytest.PytestAssertRewriteWarning"
# The inner runs have no ini of ours: name the loop scope, as pyproject does, or
# pytest-asyncio warns in every run.
LOOP_SCOPE = ("-o", "asyncio_default_fixture_loop_scope=session")


def run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, *, ci: bool, listed: str = ""
) -> pytest.RunResult:
    allowed = pytester.path / "allowed.txt"
    allowed.write_text(listed)
    monkeypatch.setenv("AIBRIX_SKIPS_ALLOWED", str(allowed))
    if ci:
        monkeypatch.setenv("CI", "true")
    else:
        monkeypatch.delenv("CI", raising=False)
    pytester.makepyfile(test_suite=SUITE)
    return pytester.runpytest_inprocess(PLUGIN, *LOOP_SCOPE, "-W", QUIET, "-rA")


def test_in_ci_an_unlisted_skip_fails_the_run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run(pytester, monkeypatch, ci=True)
    # A skip in the call fails the test; a skipif (decided in setup) errors it.
    result.assert_outcomes(passed=1, failed=1, errors=1, xfailed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*test_skipif - skipped in CI, and not listed in tests/skips-allowed.txt: never on this host",
            "*test_skips - skipped in CI, and not listed in tests/skips-allowed.txt: no frobnicator here",
        ],
        consecutive=False,
    )


def test_in_ci_a_listed_skip_stays_a_skip(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    listed = "# comment\ntest_suite.py::test_skips  the frobnicator is optional\ntest_suite.py::test_skip*  so is this\n"
    result = run(pytester, monkeypatch, ci=True, listed=listed)
    result.assert_outcomes(passed=1, skipped=2, xfailed=1)
    assert result.ret == pytest.ExitCode.OK


def test_outside_ci_a_skip_is_a_skip(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run(pytester, monkeypatch, ci=False)
    result.assert_outcomes(passed=1, skipped=2, xfailed=1)


def test_in_ci_a_skipped_module_fails(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("AIBRIX_SKIPS_ALLOWED", str(pytester.path / "none.txt"))
    pytester.makepyfile(
        test_module_skip="import pytest\npytest.importorskip('no_such_module_here')\ndef test_x():\n    pass\n"
    )
    result = pytester.runpytest_inprocess(PLUGIN, *LOOP_SCOPE, "-W", QUIET)
    assert result.ret != pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*skipped in CI, and not listed*no_such_module_here*"])


def test_service_missing_fails_in_ci_and_skips_elsewhere(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    suite = "from tests.conftest import service_missing\ndef test_needs_redis():\n    service_missing('Redis at 127.0.0.1:1 does not answer')\n"
    monkeypatch.setenv("AIBRIX_SKIPS_ALLOWED", str(pytester.path / "none.txt"))
    pytester.makepyfile(test_service=suite)
    monkeypatch.setenv("CI", "true")
    failed = pytester.runpytest_inprocess(PLUGIN, *LOOP_SCOPE, "-W", QUIET)
    failed.assert_outcomes(failed=1)
    failed.stdout.fnmatch_lines(["*CI requires the lab: Redis at 127.0.0.1:1 does not answer*"])
    monkeypatch.setenv("CI", "false")
    pytester.runpytest_inprocess(PLUGIN, *LOOP_SCOPE, "-W", QUIET).assert_outcomes(skipped=1)


def test_the_list_needs_a_reason_per_entry() -> None:
    assert read_allowed("# c\n\na::b  why\n") == {"a::b": "why"}
    with pytest.raises(SkipListError, match="line 2: a::b has no reason"):
        read_allowed("# c\na::b\n")
    assert is_allowed("tests/x.py::test_a[1]", {"tests/x.py::test_a*": "why"})
    assert not is_allowed("tests/x.py::test_b", {"tests/x.py::test_a*": "why"})


def test_the_projects_list_reads() -> None:
    text = (Path(__file__).resolve().parent.parent / "skips-allowed.txt").read_text()
    read_allowed(text)
