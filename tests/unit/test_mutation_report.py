"""The mutation report's arithmetic (tests/support/mutation.py, run by scripts/mutants):
equivalent mutants are counted apart and only with a reason; timeouts and crashes count
as killed, "no tests" as survived."""

from __future__ import annotations

import pytest

from tests.support.mutation import (
    EQUIVALENT_FILE,
    EquivalentListError,
    ModuleReport,
    read_equivalents,
    render,
    tally,
)


def test_the_equivalent_list_needs_a_reason_per_entry() -> None:
    assert read_equivalents("# c\n\nm.x__mutmut_1  same value\n") == {"m.x__mutmut_1": "same value"}
    with pytest.raises(EquivalentListError, match=r"line 1: m\.x__mutmut_1 has no reason"):
        read_equivalents("m.x__mutmut_1\n")


def test_the_projects_equivalent_list_reads() -> None:
    assert read_equivalents(EQUIVALENT_FILE.read_text())


def test_tally_counts_equivalents_apart_and_scores_the_rest() -> None:
    codes: dict[str, int | None] = {
        "m.a_1": 1,  # a failing test run
        "m.a_2": 36,  # timeout
        "m.a_3": 0,  # survived
        "m.a_4": 33,  # no test reached it
        "m.a_5": 0,  # equivalent
        "m.a_6": None,  # not checked
    }
    report = tally("m", codes, {"m.a_5": "why"})
    assert (report.killed, report.survived, report.equivalent, report.unchecked) == (2, 2, 1, 1)
    assert report.total == 6
    assert report.score == pytest.approx(40.0)
    assert report.survivors == ["m.a_3", "m.a_4", "m.a_6"]
    assert ModuleReport("empty").score == 100.0


def test_render_shows_each_module_and_names_survivors() -> None:
    report = tally("m", {"m.a_1": 1, "m.a_2": 0}, {})
    report.seconds = 12
    text = render([report])
    assert text.splitlines()[1].split() == ["m", "1", "1", "0", "2", "50.0%", "12", "s"]
    assert "  m.a_2" in text.splitlines()
