"""Verdicts as pure functions: every combination of entry facts and requirements."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from jobs.domain.messages import verdict_problems
from jobs.domain.platforms import Platform, parse_platform
from jobs.domain.verdict import EntryFacts, EntryStatus, Outcome, judge, unreadable

AMD = parse_platform("linux/amd64")
ARM = parse_platform("linux/arm64")
ARM7 = parse_platform("linux/arm/v7")
REQ = (AMD, ARM)


def ok(p: Platform, d: str = "sha256:1") -> EntryFacts:
    return EntryFacts(d, p, p)


def test_healthy() -> None:
    v = judge(REQ, [ok(AMD), ok(ARM)])
    assert v.outcome is Outcome.OK and v.missing == () and v.ok


def test_incident_arm64_only() -> None:
    v = judge(REQ, [ok(ARM)])
    assert v.outcome is Outcome.MISSING
    assert v.missing == (AMD,)
    assert verdict_problems("runtime v0.3.0-rc.2", v) == [
        "runtime v0.3.0-rc.2 is missing linux/amd64; the index has linux/arm64 only"
    ]


def test_mismatch_beats_missing_and_counts_as_missing() -> None:
    v = judge(REQ, [EntryFacts("sha256:2", AMD, ARM), ok(ARM)])
    assert v.outcome is Outcome.MISMATCH
    assert v.missing == (AMD,)
    assert v.entries[0].status is EntryStatus.MISMATCH
    problems = verdict_problems("runtime", v)
    assert any("is really linux/arm64" in p for p in problems)
    assert any("is missing linux/amd64" in p for p in problems)


def test_unresolvable_is_never_ok() -> None:
    v = judge(REQ, [EntryFacts("sha256:3", AMD, None, "not found in the registry"), ok(ARM)])
    assert v.outcome is Outcome.MISMATCH
    assert v.entries[0].status is EntryStatus.UNRESOLVABLE
    assert v.missing == (AMD,)


def test_arm_v7_is_not_arm64() -> None:
    v = judge(REQ, [ok(AMD), ok(ARM7)])
    assert v.missing == (ARM,)
    assert "the index has linux/amd64 and linux/arm/v7 only" in verdict_problems("x", v)[0]


def test_single_manifest_takes_config_platform() -> None:
    v = judge(REQ, [EntryFacts("sha256:4", None, ARM)], is_index=False)
    assert v.entries[0].platform == ARM and v.entries[0].status is EntryStatus.OK
    assert verdict_problems("x", v) == [
        "x is missing linux/amd64; the tag is a single linux/arm64 image, not a multi-platform index"
    ]


def test_empty_index() -> None:
    v = judge(REQ, [])
    assert v.missing == REQ and v.outcome is Outcome.MISSING
    assert "no usable platform" in verdict_problems("x", v)[0]


def test_unreadable() -> None:
    v = unreadable(REQ, "not found in the registry")
    assert v.outcome is Outcome.ERROR
    assert verdict_problems("x", v) == ["x cannot be read: not found in the registry"]


platforms = st.sampled_from(
    [AMD, ARM, ARM7, parse_platform("windows/amd64"), parse_platform("linux/s390x")]
)
facts = st.builds(
    EntryFacts,
    st.sampled_from(["sha256:a", "sha256:b"]),
    st.none() | platforms,
    st.none() | platforms,
    st.none() | st.just("gone"),
)


@given(st.lists(platforms, min_size=1, max_size=3, unique=True), st.lists(facts, max_size=5))
def test_verdict_laws(required: list[Platform], entries: list[EntryFacts]) -> None:
    v = judge(required, entries)
    good = {
        e.declared or e.actual
        for e in entries
        if e.actual is not None and (e.declared in (None, e.actual))
    }
    # ok exactly when every required platform has an agreeing entry and nothing is off
    all_agree = all(e.actual is not None and e.declared in (None, e.actual) for e in entries)
    assert v.ok == (all_agree and set(required) <= good)
    assert set(v.missing) == set(required) - good
    assert len(v.entries) == len(entries)
    if not all_agree:
        assert v.outcome is Outcome.MISMATCH
    elif v.missing:
        assert v.outcome is Outcome.MISSING
    assert bool(verdict_problems("x", v)) == (not v.ok)
