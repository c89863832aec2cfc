"""Edge cases of the Block Kit budget (`handlers.blocks`): the over-budget branches of the
table and text splitters with the exact count of what is left out, the action block
counted in the 50-block budget, and the gate's buttons per state (issue 15). Expected
values are written out here, not taken from the module."""

from __future__ import annotations

import dataclasses
import json

import pytest

from handlers import blocks
from jobs.domain.platforms import parse_platform
from jobs.domain.progress import StepProgress
from jobs.domain.release import (
    OVERWRITE_PENDING,
    BuildRecord,
    BuildState,
    ComponentIndex,
    PromotionResult,
    Release,
    State,
)
from jobs.domain.versions import parse_version

PLATFORMS = (parse_platform("linux/amd64"), parse_platform("linux/arm64"))
VALUE = '{"version":"v0.3.0","run_id":"0123456789abcdef"}'


def release(components: int, state: State = State.READY, *, failed: bool = False) -> Release:
    names = tuple(f"c{i:04d}-" + "x" * 50 for i in range(components))
    builds = {
        (name, p): BuildRecord(
            name,
            p,
            BuildState.FAILED if failed else BuildState.PUSHED,
            None if failed else "sha256:" + "d" * 64,
        )
        for name in names
        for p in PLATFORMS
    }
    return Release(
        version=parse_version("v0.3.0"),
        run_id="0123456789abcdef",
        state=state,
        state_reason="",
        requested_by="U0REQUESTER",
        channel="C0RELEASES",
        platforms=PLATFORMS,
        components=names,
        source_ref="abc",
        created_at=0,
        updated_at=0,
        status_channel="C0RELEASES",
        status_ts="1.0",
        previous_run_id="",
        active=True,
        builds=builds,
        indexes={name: ComponentIndex(name, "sha256:" + "e" * 64, "ok") for name in names},
    )


def texts(sections: list[blocks.Block]) -> list[str]:
    return [b["text"]["text"] for b in sections]


# 100 lines of 98 characters: 30 fit in one 2,992-character table section (30 * 99 - 1 =
# 2,969), 31 do not (3,068).
ROWS = [f"{i:03d}" + "r" * 95 for i in range(100)]


def test_a_table_within_budget_is_split_in_full() -> None:
    shown = texts(blocks.table_sections(ROWS, 4))
    assert [len(t.strip("`").split("\n")) for t in shown] == [30, 30, 30, 10]
    assert all(t.startswith("```") and t.endswith("```") for t in shown)


@pytest.mark.parametrize(("budget", "tables", "left_out"), [(3, 2, 40), (2, 1, 70), (1, 0, 100)])
def test_a_table_over_budget_shows_what_fits_and_counts_the_rest_exactly(
    budget: int, tables: int, left_out: int
) -> None:
    shown = texts(blocks.table_sections(ROWS, budget))
    assert len(shown) == budget
    assert [len(t.strip("`").split("\n")) for t in shown[:-1]] == [30] * tables
    assert shown[-1] == f"… and {left_out} more rows, not shown (Slack's message limit)"


def test_no_budget_no_table() -> None:
    assert blocks.table_sections(ROWS, 0) == []
    assert blocks.text_sections(ROWS, 0) == []
    assert blocks.table_sections(ROWS, -1) == []


# 3,000-character text sections: 30 of those lines fit (2,969), 31 do not (3,068).
def test_text_over_budget_shows_what_fits_and_counts_the_rest_exactly() -> None:
    assert [len(t.split("\n")) for t in texts(blocks.text_sections(ROWS, 4))] == [30, 30, 30, 10]
    shown = texts(blocks.text_sections(ROWS, 3))
    assert [len(t.split("\n")) for t in shown[:-1]] == [30, 30]
    assert shown[-1] == "… and 40 more, not shown (Slack's message limit)"
    assert texts(blocks.text_sections(ROWS, 1)) == [
        "… and 100 more, not shown (Slack's message limit)"
    ]


def test_chunking_fits_lines_exactly_to_the_limit() -> None:
    assert blocks.chunk_lines(["ab", "cd", "ef"], 5) == [["ab", "cd"], ["ef"]]
    assert blocks.chunk_lines(["abcdef"], 4) == [["abc…"]]
    assert blocks.chunk_lines([], 4) == []


def overflowing(state: State, **kwargs: bool) -> blocks.Message:
    # 1,500 rows of ~170 characters: far more table than 50 blocks can hold.
    return blocks.release_message(
        release(1500, state, **kwargs), tally_text="0 of 2 approvals", notes=("n1", "n2", "n3")
    )


def left_out_rows(message: blocks.Message) -> int:
    summaries = [
        t for t in texts([b for b in message.blocks if b["type"] == "section"]) if "more rows" in t
    ]
    assert len(summaries) == 1
    return int(summaries[0].removeprefix("… and ").split(" ")[0])


@pytest.mark.parametrize("state", [State.READY, State.APPROVED, State.BLOCKED])
def test_an_overflowing_release_uses_exactly_50_blocks_with_its_actions_last(state: State) -> None:
    message = overflowing(state, failed=state is State.BLOCKED)
    assert len(message.blocks) == 50
    assert message.blocks[-1]["type"] == "actions"
    assert [b["type"] for b in message.blocks[-3:-1]] == ["context", "context"]  # tally, 2 notes
    # Every row is either in a table section or counted in the summary: 1,500 and a header.
    tables = [
        t
        for t in texts([b for b in message.blocks if b["type"] == "section"])
        if t.startswith("```")
    ]
    shown_rows = sum(len(t.strip("`").split("\n")) for t in tables)
    assert shown_rows + left_out_rows(message) == 1501


def test_an_overflowing_release_without_actions_gives_the_block_to_the_table() -> None:
    with_actions = overflowing(State.READY)
    without = overflowing(State.PROMOTED)
    assert len(without.blocks) == 50 and without.blocks[-1]["type"] == "context"
    assert left_out_rows(without) < left_out_rows(with_actions)


def elements(state: State, **kwargs: bool) -> list[tuple[str, str, str | None]]:
    actions = blocks.gate_actions(release(1, state, **kwargs))
    assert actions is not None
    assert actions["block_id"] == "gate:0123456789abcdef"
    assert all(json.loads(e["value"]) == json.loads(VALUE) for e in actions["elements"])
    return [(e["text"]["text"], e["action_id"], e.get("style")) for e in actions["elements"]]


def test_the_gate_buttons_of_each_state() -> None:
    assert elements(State.READY) == [
        ("Approve", "approve_release", "primary"),
        ("Reject", "reject_release", "danger"),
    ]
    # Approved and not yet promoting: a requester or approver may still reject it.
    assert elements(State.APPROVED) == [("Reject", "reject_release", "danger")]
    assert elements(State.BLOCKED, failed=True) == [("Retry failed builds", "retry_release", None)]
    assert blocks.gate_actions(release(1, State.BLOCKED)) is None
    for state in (State.QUEUED, State.PROMOTING, State.PROMOTED, State.FAILED, State.CANCELLED):
        assert blocks.gate_actions(release(1, state, failed=True)) is None


def test_every_gate_button_carries_the_run() -> None:
    actions = blocks.gate_actions(release(1, State.READY))
    assert actions is not None
    assert [json.loads(e["value"]) for e in actions["elements"]] == [json.loads(VALUE)] * 2


def test_a_promotion_waiting_on_a_mirror_tag_asks_to_confirm_the_overwrite() -> None:
    waiting = PromotionResult("x.io/m:v0.3.0", False, "sha256:" + "f" * 64, OVERWRITE_PENDING, 1.0)
    promoting = dataclasses.replace(
        release(1, State.PROMOTING), promotions={waiting.target: waiting}
    )
    actions = blocks.gate_actions(promoting)
    assert actions == {
        "type": "actions",
        "block_id": "gate:0123456789abcdef",
        "elements": [
            {
                "type": "button",
                "text": {"type": "plain_text", "text": "Confirm overwrite"},
                "action_id": "confirm_overwrite",
                "value": VALUE,
                "style": "danger",
            }
        ],
    }
    ready = blocks.gate_actions(release(1, State.READY))
    assert ready is not None and ready["type"] == "actions"


def test_chunks_count_the_newline_between_lines() -> None:
    assert blocks.chunk_lines(["ab", "cd"], 4) == [["ab"], ["cd"]]
    assert blocks.chunk_lines(["ab", "cd"], 5) == [["ab", "cd"]]


def test_plain_text_is_split_at_its_newlines() -> None:
    message = blocks.plain("a" * 2000 + "\n" + "b" * 2000)
    assert texts(message.blocks) == ["a" * 2000, "b" * 2000]


def many_problems(state: State) -> Release:
    base = release(1500, state)
    reasons = "; ".join(f"problem {i} " + "p" * 2900 for i in range(40))
    indexes = dict(base.indexes)
    first = base.components[0]
    indexes[first] = ComponentIndex(first, "sha256:" + "e" * 64, "ok", "a detail of an ok index")
    return dataclasses.replace(base, state_reason=reasons, indexes=indexes)


def test_problems_get_a_third_of_the_budget_and_the_table_the_rest() -> None:
    message = blocks.release_message(many_problems(State.READY), tally_text="t", notes=("a", "b"))
    assert len(message.blocks) == 50
    sections = texts([b for b in message.blocks if b["type"] == "section"])
    problems = [t for t in sections if t.startswith("• problem") or "more, not shown" in t]
    # 50 blocks less header, summary, tally, two notes and the actions: 44; a third is 14.
    assert len(problems) == 14
    assert problems[-1] == "… and 27 more, not shown (Slack's message limit)"
    assert not any("a detail of an ok index" in t for t in sections)


def test_the_table_shows_build_progress_and_pads_long_names() -> None:
    base = release(1, State.BUILDING)
    name = base.components[0]
    arm64 = parse_platform("linux/arm64")
    building = BuildRecord(name, arm64, BuildState.BUILDING)
    run = dataclasses.replace(base, builds={**base.builds, (name, arm64): building})
    lines = blocks.release_table(run, {(name, "linux/arm64"): StepProgress("building", 2, 9)})
    assert lines[0].startswith("COMPONENT" + " " * 49 + "linux/amd64")
    assert lines[1].split()[3:5] == ["building", "2/9"]


def test_the_shown_sections_over_budget_are_the_first_lines_exactly() -> None:
    assert texts(blocks.table_sections(ROWS, 2)) == [
        "```" + "\n".join(ROWS[:30]) + "```",
        "… and 70 more rows, not shown (Slack's message limit)",
    ]
    assert texts(blocks.text_sections(ROWS, 2)) == [
        "\n".join(ROWS[:30]),
        "… and 70 more, not shown (Slack's message limit)",
    ]
