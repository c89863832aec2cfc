"""Exact Block Kit of `/aibrix inspect` (`handlers.blocks.inspection_message`): the card of
one reference, of several, and the 50-block budget shared between many (issue 15)."""

from __future__ import annotations

from handlers import blocks
from jobs.domain.platforms import parse_platform
from jobs.domain.references import parse_reference
from jobs.domain.verdict import EntryFacts, judge, unreadable
from jobs.registry.inspection import Inspection

AMD, ARM = parse_platform("linux/amd64"), parse_platform("linux/arm64")


def md(text: str) -> dict[str, object]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def test_one_reference_with_an_unresolvable_entry_and_a_missing_platform() -> None:
    verdict = judge(
        [AMD, ARM],
        [
            EntryFacts("sha256:" + "1" * 64, ARM, ARM),
            EntryFacts("sha256:" + "3" * 64, AMD, None, "HTTP 404"),
        ],
        is_index=True,
    )
    ref = parse_reference("127.0.0.1:5000/x/runtime:v1")
    message = blocks.inspection_message(
        ["runtime v1"], [Inspection(ref, "sha256:" + "2" * 64, None, verdict)]
    )
    headline = "MISMATCH: an entry is not what it claims or cannot be resolved"
    assert message.text == f"127.0.0.1:5000/x/runtime:v1: {headline}"
    assert message.blocks == [
        md(
            f"*127.0.0.1:5000/x/runtime:v1* — {headline}\n"
            "index sha256:222222222222 · 0 attestation manifests\n"
            "```PLATFORM     STATUS        DIGEST\n"
            "linux/amd64  unresolvable  sha256:333333333333\n"
            "linux/arm64  present       sha256:111111111111```\n"
            "• runtime v1: the linux/amd64 entry sha256:333333333333 cannot be resolved: HTTP 404\n"
            "• runtime v1 is missing linux/amd64; the index has linux/arm64 only"
        )
    ]


def test_an_ok_entry_is_shown_before_a_broken_one_of_the_same_platform() -> None:
    verdict = judge(
        [AMD],
        [
            EntryFacts("sha256:" + "3" * 64, AMD, ARM),
            EntryFacts("sha256:" + "1" * 64, AMD, AMD),
        ],
        is_index=True,
    )
    inspection = Inspection(parse_reference("x.io/a:v1"), "sha256:" + "2" * 64, None, verdict)
    assert blocks.inspection_lines(inspection) == [
        "PLATFORM     STATUS    DIGEST",
        "linux/amd64  present   sha256:111111111111",
        "linux/amd64  mismatch  sha256:333333333333",
    ]


def test_several_references_one_unreadable() -> None:
    bad = Inspection(
        parse_reference("127.0.0.1:5000/x/gw:v1"), None, None, unreadable([AMD], "HTTP 401 <x>")
    )
    ok_verdict = judge([AMD], [EntryFacts("sha256:" + "1" * 64, AMD, AMD)], is_index=True)
    ok = Inspection(
        parse_reference("127.0.0.1:5000/x/ok:v1"), "sha256:" + "4" * 64, None, ok_verdict
    )
    message = blocks.inspection_message(["gw v1", "ok v1"], [bad, ok])
    assert message.text == "2 references inspected, 1 not ok"
    assert message.blocks == [
        md(
            "*127.0.0.1:5000/x/gw:v1* — ERROR: the reference could not be read\n"
            "index - · 0 attestation manifests\n"
            "• gw v1 cannot be read: HTTP 401 &lt;x&gt;"
        ),
        md(
            "*127.0.0.1:5000/x/ok:v1* — ok: every required platform is present\n"
            "index sha256:444444444444 · 0 attestation manifests\n"
            "```PLATFORM     STATUS   DIGEST\n"
            "linux/amd64  present  sha256:111111111111```"
        ),
    ]
    three = blocks.inspection_message(["gw v1", "ok v1", "ok v1"], [bad, ok, ok])
    assert three.text == "3 references inspected, 1 not ok"
    assert blocks.inspection_message([], []).blocks == []
    assert blocks.inspection_message([], []).text == "0 references inspected, 0 not ok"


# 60 entries that are not what they claim, each problem sentence holding the ~2,900
# character subject: one section per problem, far more than a message holds.
SUBJECT = "s" * 2900


def huge() -> Inspection:
    facts = [EntryFacts(f"sha256:{i:064x}", AMD, ARM) for i in range(60)]
    verdict = judge([AMD], facts, is_index=True)
    return Inspection(parse_reference("x.io/a:v1"), "sha256:" + "2" * 64, None, verdict)


def test_one_huge_reference_takes_49_blocks_and_counts_what_is_left_out() -> None:
    message = blocks.inspection_message([SUBJECT], [huge()])
    assert len(message.blocks) == 49
    # 63 lines: the head and its table share the first section, then 61 problems (60
    # entries and the missing platform) a section each; 48 sections shown, 14 counted.
    assert message.blocks[-1] == md("… and 14 more, not shown (Slack's message limit)")


def test_many_huge_references_share_the_budget_one_block_each() -> None:
    many = [huge()] * 25
    message = blocks.inspection_message([SUBJECT] * 25, many)
    assert message.blocks == [md("… and 63 more, not shown (Slack's message limit)")] * 25
    fifty = blocks.inspection_message([SUBJECT] * 50, [huge()] * 50)
    assert len(fifty.blocks) == 49  # the 50th is left out: one block is kept free


def test_a_missing_platform_row_and_a_second_entry_of_a_required_platform() -> None:
    verdict = judge(
        [AMD, ARM],
        [EntryFacts("sha256:" + "1" * 64, AMD, AMD), EntryFacts("sha256:" + "5" * 64, AMD, AMD)],
        is_index=True,
    )
    inspection = Inspection(parse_reference("x.io/a:v1"), "sha256:" + "2" * 64, None, verdict)
    assert blocks.inspection_lines(inspection) == [
        "PLATFORM     STATUS     DIGEST",
        "linux/amd64  present    sha256:111111111111",
        "linux/arm64  missing    -",
        "linux/amd64  duplicate  sha256:555555555555",
    ]
