"""Edge cases of the platform verdict (`jobs.domain.verdict`): every field of an entry's
verdict (unreadable, mismatched, agreeing) and of the verdict of a reference that could
not be read (issue 15). Expected values are written out here."""

from __future__ import annotations

from jobs.domain.platforms import parse_platform
from jobs.domain.verdict import (
    EntryFacts,
    EntryStatus,
    EntryVerdict,
    Outcome,
    Verdict,
    judge_entry,
    unreadable,
)

AMD = parse_platform("linux/amd64")
ARM = parse_platform("linux/arm64")
D = "sha256:" + "d" * 64


def test_an_unreadable_child_says_why_or_the_default_sentence() -> None:
    assert judge_entry(EntryFacts(D, AMD, None, "HTTP 404")) == EntryVerdict(
        AMD, D, EntryStatus.UNRESOLVABLE, None, "HTTP 404"
    )
    assert judge_entry(EntryFacts(D, AMD, None)) == EntryVerdict(
        AMD, D, EntryStatus.UNRESOLVABLE, None, "the child manifest or its config could not be read"
    )


def test_a_mismatch_keeps_both_platforms_and_the_digest() -> None:
    assert judge_entry(EntryFacts(D, AMD, ARM)) == EntryVerdict(
        AMD,
        D,
        EntryStatus.MISMATCH,
        ARM,
        "the index says linux/amd64 but the image config says linux/arm64",
    )


def test_an_agreeing_entry_keeps_what_its_config_says() -> None:
    assert judge_entry(EntryFacts(D, AMD, AMD)) == EntryVerdict(AMD, D, EntryStatus.OK, AMD, None)
    # A single image (no index entry) is what its config says.
    assert judge_entry(EntryFacts(D, None, ARM)) == EntryVerdict(ARM, D, EntryStatus.OK, ARM, None)


def test_an_unreadable_reference_misses_every_required_platform() -> None:
    verdict = unreadable([AMD, ARM], "HTTP 401")
    assert verdict == Verdict(Outcome.ERROR, (AMD, ARM), (AMD, ARM), (), 0, False, "HTTP 401")
    assert verdict.required == (AMD, ARM) and verdict.missing == (AMD, ARM)
    assert verdict.entries == () and verdict.attestations == 0
    assert verdict.is_index is False and not verdict.ok
