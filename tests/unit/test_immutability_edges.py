"""Edge cases of the released-version immutability decisions (`jobs.domain.immutability`):
every branch of the tag decision with its sentence, and the promoted-version refusal.
Expected values are written out here, not taken from the module (issue 15)."""

from __future__ import annotations

import pytest

from jobs.domain.immutability import TagAction, TagDecision, decide_tag_write, release_refusal
from jobs.domain.release import Promoted, TagWrite

SUBJECT = "127.0.0.1:5000/aibrix/runtime:v0.3.0"
HELD = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64


def wrote(digest: str, verified: bool) -> TagWrite:
    return TagWrite(digest=digest, verified=verified, run_id="r1", at=0.0)


def test_supersede_writes_whatever_the_tag_holds() -> None:
    assert decide_tag_write(SUBJECT, HELD, wrote(OTHER, True), supersede=True) == TagDecision(
        TagAction.WRITE, ""
    )
    assert (
        decide_tag_write(SUBJECT, None, wrote(OTHER, True), supersede=True).action
        is TagAction.WRITE
    )


def test_no_tag_and_nothing_verified_written_is_written() -> None:
    assert decide_tag_write(SUBJECT, None, None) == TagDecision(TagAction.WRITE, "")
    assert decide_tag_write(SUBJECT, None, wrote(HELD, False)) == TagDecision(TagAction.WRITE, "")


def test_a_removed_verified_tag_is_refused_naming_it() -> None:
    decision = decide_tag_write(SUBJECT, None, wrote(HELD, True))
    assert decision == TagDecision(
        TagAction.REFUSE,
        f"{SUBJECT} no longer exists, but {HELD} was written and verified there; it is not "
        "written again (someone removed it)",
    )


def test_the_verified_digest_it_holds_is_kept() -> None:
    decision = decide_tag_write(SUBJECT, HELD, wrote(HELD, True), holds_this_run=True)
    assert decision == TagDecision(
        TagAction.KEEP,
        f"{SUBJECT} already holds {HELD}, verified by an earlier run; it is kept as it is",
    )


def test_its_own_unverified_digest_is_written_again() -> None:
    assert decide_tag_write(SUBJECT, HELD, wrote(HELD, False), holds_this_run=True) == TagDecision(
        TagAction.WRITE, ""
    )


@pytest.mark.parametrize("last", [None, wrote(OTHER, False)])
def test_this_runs_own_builds_are_adopted_unless_something_verified_was_written(
    last: TagWrite | None,
) -> None:
    assert decide_tag_write(SUBJECT, HELD, last, holds_this_run=True) == TagDecision(
        TagAction.ADOPT, ""
    )


def test_a_tag_nobody_of_this_version_wrote_is_refused() -> None:
    assert decide_tag_write(SUBJECT, HELD, None) == TagDecision(
        TagAction.REFUSE,
        f"{SUBJECT} holds {HELD}, which no run of this version wrote; it is not "
        "overwritten (someone else wrote it)",
    )


@pytest.mark.parametrize("holds_this_run", [False, True])
def test_a_tag_changed_after_a_verified_write_is_refused(holds_this_run: bool) -> None:
    decision = decide_tag_write(SUBJECT, HELD, wrote(OTHER, True), holds_this_run=holds_this_run)
    assert decision == TagDecision(
        TagAction.REFUSE,
        f"{SUBJECT} holds {HELD}, but this version's runs last wrote {OTHER}; it is not "
        "overwritten (someone else changed it)",
    )


def test_a_changed_tag_after_an_unverified_write_not_of_this_run_is_refused() -> None:
    decision = decide_tag_write(SUBJECT, HELD, wrote(OTHER, False))
    assert decision.action is TagAction.REFUSE
    assert f"last wrote {OTHER}" in decision.reason


def test_a_promoted_version_is_refused_with_who_when_and_what() -> None:
    promoted = Promoted(
        run_id="r1",
        at=86400.0,
        by=("U0ALICE", "cli:bob"),
        digests={"runtime": HELD, "gateway": OTHER},
    )
    assert release_refusal("v0.3.0", promoted, supersede=False) == (
        "v0.3.0 was promoted by <@U0ALICE>, cli:bob on 1970-01-02 00:00 UTC and is "
        f"immutable: its tags hold gateway {OTHER}; runtime {HELD}. Cut a new version instead "
        "(an approver may `release VERSION --supersede` in an emergency)"
    )
    assert release_refusal("v0.3.0", promoted, supersede=True) is None
    assert release_refusal("v0.3.0", None, supersede=False) is None
