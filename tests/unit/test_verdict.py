"""Verdicts as pure functions: every combination of entry facts and requirements."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobs.domain.messages import verdict_problems
from jobs.domain.platforms import Platform, parse_platform, platform_from_json
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


# ---- index entries with variants containerd normalises (issue 12, item 7) ---------------
# Each entry is built from the raw JSON an index and a config carry, as inspection does.


def raw(
    os: str, arch: str, variant: str = "", *, version: str = "", features: tuple[str, ...] = ()
) -> Platform:
    data: dict[str, object] = {"os": os, "architecture": arch}
    if variant:
        data["variant"] = variant
    if version:
        data["os.version"] = version
    if features:
        data["os.features"] = list(features)
    found = platform_from_json(data)
    assert found is not None
    return found


@pytest.mark.parametrize(
    ("declared", "config"),
    [
        (raw("linux", "arm64", "v8.0"), raw("linux", "arm64")),
        (raw("linux", "arm64", "v8"), raw("linux", "arm64")),
        (raw("linux", "arm64"), raw("linux", "arm64", "v8")),
        (raw("linux", "arm64", "v8.0"), raw("linux", "aarch64", "8")),
        (raw("linux", "arm64"), raw("linux", "arm64")),
    ],
    ids=["v8.0/none", "v8/none", "none/v8", "v8.0/aarch64-8", "none/none"],
)
def test_arm64_base_variants_are_linux_arm64(declared: Platform, config: Platform) -> None:
    v = judge(REQ, [ok(AMD), EntryFacts("sha256:5", declared, config)])
    assert v.outcome is Outcome.OK, verdict_problems("x", v)
    assert v.present == (AMD, ARM)
    assert [e.label for e in v.entries] == ["linux/amd64", "linux/arm64"]


def test_arm64_v9_spellings_meet_required_v9_and_not_v8() -> None:
    v9 = parse_platform("linux/arm64/v9")
    for spelled in ("9", "9.0", "v9.0"):
        v = judge(
            (AMD, v9),
            [
                ok(AMD),
                EntryFacts("sha256:6", raw("linux", "arm64", spelled), raw("linux", "arm64", "v9")),
            ],
        )
        assert v.outcome is Outcome.OK, (spelled, verdict_problems("x", v))
        # ...and a v9 image is not the plain linux/arm64 a release requires
        only_v9 = judge(REQ, [ok(AMD), ok(raw("linux", "arm64", spelled))])
        assert only_v9.missing == (ARM,)


def test_armhf_and_armel_take_their_forced_variants() -> None:
    arm6 = parse_platform("linux/arm/v6")
    v = judge(
        (ARM7, arm6),
        [
            EntryFacts("sha256:7", raw("linux", "armhf", "v6"), raw("linux", "arm", "v7")),
            EntryFacts("sha256:8", raw("linux", "armel"), raw("linux", "arm", "6")),
        ],
    )
    assert v.outcome is Outcome.OK, verdict_problems("x", v)
    assert [e.label for e in v.entries] == ["linux/arm/v7", "linux/arm/v6"]


def test_i386_with_a_variant_is_386() -> None:
    i386 = parse_platform("linux/386")
    v = judge((i386,), [EntryFacts("sha256:9", raw("linux", "i386", "v1"), raw("linux", "386"))])
    assert v.outcome is Outcome.OK and v.present == (i386,)


def test_a_real_variant_difference_is_still_a_mismatch() -> None:
    v = judge(
        REQ,
        [
            ok(AMD),
            EntryFacts("sha256:a", raw("linux", "arm64", "v8.0"), raw("linux", "arm64", "v9.0")),
        ],
    )
    assert v.outcome is Outcome.MISMATCH
    assert verdict_problems("x", v)[0] == (
        "x: the linux/arm64 entry sha256:a is really linux/arm64/v9 (its image config says so)"
    )


def test_entries_v8_and_none_are_one_platform_twice() -> None:
    v = judge(
        REQ,
        [
            ok(AMD),
            ok(raw("linux", "arm64", "v8"), "sha256:b"),
            ok(raw("linux", "arm64"), "sha256:c"),
        ],
    )
    assert v.ok
    assert v.duplicates == (ARM,)


# ---- Windows entries: os.version and os.features (issue 12, item 8) -----------------------

WIN = parse_platform("windows/amd64")
WIN_2019 = raw("windows", "amd64", version="10.0.17763.1234")
WIN_2022 = raw("windows", "amd64", version="10.0.20348.2227")


def test_two_windows_entries_differing_in_os_version_are_two_platforms() -> None:
    v = judge((AMD, WIN), [ok(AMD), ok(WIN_2019, "sha256:d"), ok(WIN_2022, "sha256:e")])
    assert v.ok and v.missing == ()
    assert v.duplicates == ()
    assert [e.label for e in v.entries] == [
        "linux/amd64",
        "windows/amd64 10.0.17763.1234",
        "windows/amd64 10.0.20348.2227",
    ]
    assert v.present == (AMD, WIN_2019, WIN_2022)


def test_windows_entries_shown_in_the_missing_sentence() -> None:
    v = judge(REQ, [ok(WIN_2019, "sha256:d"), ok(WIN_2022, "sha256:e")])
    assert verdict_problems("x", v) == [
        "x is missing linux/amd64 and linux/arm64; the index has windows/amd64 10.0.17763.1234 "
        "and windows/amd64 10.0.20348.2227 only"
    ]


def test_a_config_of_another_windows_build_is_a_mismatch() -> None:
    v = judge((WIN,), [EntryFacts("sha256:f", WIN_2019, WIN_2022)])
    assert v.outcome is Outcome.MISMATCH
    assert verdict_problems("x", v)[0] == (
        "x: the windows/amd64 10.0.17763.1234 entry sha256:f is really "
        "windows/amd64 10.0.20348.2227 (its image config says so)"
    )


def test_an_entry_without_os_version_agrees_with_any_config_build() -> None:
    v = judge((WIN,), [EntryFacts("sha256:f", WIN, WIN_2022)])
    assert v.ok


def test_os_features_win32k_is_windows_amd64_and_others_are_not() -> None:
    win32k = raw("windows", "amd64", version="10.0.17763.1234", features=("win32k",))
    assert judge((WIN,), [ok(win32k)]).ok
    odd = raw("linux", "amd64", features=("sgx",))
    v = judge((AMD,), [ok(odd)])
    assert v.missing == (AMD,)
    assert verdict_problems("x", v) == [
        "x is missing linux/amd64; the index has linux/amd64 +sgx only"
    ]
