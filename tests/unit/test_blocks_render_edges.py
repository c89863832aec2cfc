"""Exact Block Kit of the bot's smaller messages (`handlers.blocks`): every key and value a
Slack client reads, written out here (issue 15: mutants of a block's type, a text's
kind or an escape must fail a test)."""

from __future__ import annotations

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
from jobs.usecases.sync_job import SyncComponent, SyncRecord, SyncState

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
AMD = parse_platform("linux/amd64")
ARM = parse_platform("linux/arm64")


def md(text: str) -> dict[str, object]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def test_the_building_blocks() -> None:
    assert blocks.header("h" * 151) == {
        "type": "header",
        "text": {"type": "plain_text", "text": "h" * 149 + "…"},
    }
    assert blocks.header("h" * 150)["text"]["text"] == "h" * 150
    assert blocks.section("s") == md("s")
    assert blocks.section("s" * 3001)["text"]["text"] == "s" * 2999 + "…"
    assert blocks.context("c" * 2001) == {
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": "c" * 1999 + "…"}],
    }
    assert blocks.button("b" * 76, "act", "val", "primary") == {
        "type": "button",
        "text": {"type": "plain_text", "text": "b" * 74 + "…"},
        "action_id": "act",
        "value": "val",
        "style": "primary",
    }
    assert "style" not in blocks.button("b", "act", "val")
    assert blocks.escape("<a> & <b>") == "&lt;a&gt; &amp; &lt;b&gt;"
    assert blocks.mention("W0ABC") == "<@W0ABC>"
    assert blocks.mention("cli:al<i>ce") == "`cli:al&lt;i&gt;ce`"
    assert blocks.mention("U0") == "`U0`"


def test_plain_refusal_and_error_messages() -> None:
    plain = blocks.plain("a\nb <@U1>")
    assert (plain.text, plain.blocks) == ("a\nb <@U1>", [md("a\nb <@U1>")])
    refusal = blocks.refusal("no <@U1>")
    assert (refusal.text, refusal.blocks) == ("no <@U1>", [md(":warning: no <@U1>")])
    error = blocks.error_message("no <@U1> & >")
    assert error.text == "no &lt;@U1&gt; &amp; &gt;"
    assert error.blocks == [md(":warning: no &lt;@U1&gt; &amp; &gt;")]
    long = blocks.refusal("r" * 3001)
    assert long.text == "r" * 2999 + "…"


def test_a_failure_reply_escapes_and_never_closes_its_code_block_early() -> None:
    reply = blocks.failure_reply("runtime", "linux/arm64", "exit 1 <x>", ["a```b", "<c>"])
    assert reply.text == "*runtime* linux/arm64 failed: exit 1 &lt;x&gt;"
    assert reply.blocks == [
        md("*runtime* linux/arm64 failed: exit 1 &lt;x&gt;"),
        md("```a'''b\n&lt;c&gt;```"),
    ]
    assert blocks.failure_reply("c", "linux/amd64", "e", []).blocks == [
        md("*c* linux/amd64 failed: e")
    ]
    # A long log keeps its last 2,992 characters.
    tail = blocks.failure_reply("c", "linux/amd64", "e", ["x" * 5000 + "END"]).blocks[1]
    assert tail["text"]["text"] == "```" + ("x" * 5000 + "END")[-2992:] + "```"


def test_a_sync_message_says_who_what_how_far_and_each_outcome() -> None:
    record = SyncRecord(
        id="j1",
        version="v1.0.0",
        run_id="r1",
        mirror="tokyo",
        location="x.io/aibrix",
        requested_by="U0ALICE",
        channel="C0",
        mode="promoted",
        digests={"runtime": A, "gateway": B},
        state=SyncState.FAILED,
        components_total=2,
        components_done=1,
        bytes_planned=2048,
        bytes_sent=1024,
        deliveries=2,
        resumed=True,
        detail="HTTP 500 <x>",
        results=(SyncComponent("runtime", "synced", A, "<ok>"),),
    )
    message = blocks.sync_message(record)
    summary = (
        "1/2 components done · 1.0 kB of 2.0 kB copied · resumed by another worker (delivery 2)"
    )
    assert message.text == f"Sync v1.0.0 → tokyo: FAILED: {summary}"
    assert message.blocks == [
        {"type": "header", "text": {"type": "plain_text", "text": "Sync v1.0.0 → tokyo: FAILED"}},
        md("asked by <@U0ALICE>; the approved digests of the promoted release; to `x.io/aibrix`"),
        md(summary),
        md(":warning: HTTP 500 &lt;x&gt;"),
        md(
            "`runtime` synced sha256:aaaaaaaaaaaa: &lt;ok&gt;\n`gateway` sha256:bbbbbbbbbbbb waiting"
        ),
    ]
    # While running, the detail is not shown yet.
    running = SyncRecord(**{**record.__dict__, "state": SyncState.RUNNING, "results": ()})
    assert all(
        ":warning:" not in b.get("text", {}).get("text", "")
        for b in blocks.sync_message(running).blocks
    )
    assert len(blocks.sync_message(running).blocks) == 4


def run(state: State = State.READY, **changes: object) -> Release:
    base: dict[str, object] = {
        "version": parse_version("v1.0.0"),
        "run_id": "0123456789abcdef",
        "state": state,
        "state_reason": "",
        "requested_by": "U0ALICE",
        "channel": "C0",
        "platforms": (AMD, ARM),
        "components": ("runtime",),
        "source_ref": "v1.0.0",
        "created_at": 0.0,
        "updated_at": 0.0,
        "status_channel": "C0",
        "status_ts": "1.0",
        "previous_run_id": "",
        "active": True,
        "builds": {},
        "indexes": {},
    }
    base.update(changes)
    return Release(**base)  # type: ignore[arg-type]


def test_build_and_index_cells() -> None:
    builds = {
        ("runtime", AMD): BuildRecord("runtime", AMD, BuildState.PUSHED, A),
        ("runtime", ARM): BuildRecord("runtime", ARM, BuildState.BUILDING),
        ("gw", AMD): BuildRecord("gw", AMD, BuildState.FAILED),
        ("gw", ARM): BuildRecord("gw", ARM, BuildState.CANCELLED),
    }
    r = run(builds=builds)
    cell = blocks.build_cell
    assert cell(r, "runtime", AMD, None) == "pushed sha256:aaaaaaaa"
    assert cell(r, "gw", AMD, None) == "FAILED"
    assert cell(r, "gw", ARM, None) == "cancelled"
    assert cell(r, "kv", ARM, None) == "queued"
    assert cell(r, "runtime", ARM, None) == "building"
    assert cell(r, "runtime", ARM, StepProgress("building", 3, 7)) == "building 3/7"
    assert cell(r, "runtime", ARM, StepProgress("building", 3, 0)) == "building"
    assert cell(r, "runtime", ARM, StepProgress("pushing")) == "pushing"
    assert cell(r, "runtime", ARM, StepProgress("pushed")) == "pushing"
    assert cell(r, "runtime", ARM, StepProgress("resolving", 1, 2)) == "building"
    indexes = {
        "runtime": ComponentIndex("runtime", A, "ok"),
        "gw": ComponentIndex("gw", B, "missing"),
    }
    r = run(indexes=indexes)
    assert blocks.index_cell(r, "runtime") == "verified sha256:aaaaaaaa"
    assert blocks.index_cell(r, "gw") == "MISSING sha256:bbbbbbbb"
    assert blocks.index_cell(r, "kv") == "-"


def test_the_release_table_lines_up_and_escapes() -> None:
    builds = {
        ("r<t>", AMD): BuildRecord("r<t>", AMD, BuildState.PUSHED, A),
    }
    r = run(components=("r<t>",), builds=builds, indexes={"r<t>": ComponentIndex("r<t>", B, "ok")})
    assert blocks.release_table(r, {}) == [
        "COMPONENT  linux/amd64             linux/arm64  INDEX",
        "r&lt;t&gt;       pushed sha256:aaaaaaaa  queued       verified sha256:bbbbbbbb",
    ]


def test_a_small_release_message_exactly() -> None:
    r = run(
        State.READY,
        state_reason="first; second <x>",
        indexes={"runtime": ComponentIndex("runtime", A, "missing", "runtime lacks linux/arm64")},
        promotions={
            "m1": PromotionResult("m1", True, A, "", 1.0),
            "m2": PromotionResult("m2", False, B, OVERWRITE_PENDING, 1.0),
            "m3": PromotionResult("m3", False, B, "HTTP 500", 1.0),
        },
    )
    message = blocks.release_message(r, tally_text="1 of 2 approvals", notes=("n1", "n<2>", "n3"))
    assert message.text == "Release v1.0.0: ready for approval: first"
    kinds = [b["type"] for b in message.blocks]
    assert kinds == [
        "header",
        "section",
        "section",
        "section",
        "context",
        "context",
        "context",
        "context",
        "actions",
    ]
    assert message.blocks[0]["text"]["text"] == "Release v1.0.0: ready for approval"
    assert message.blocks[1] == md(
        "Requested by <@U0ALICE> · run `01234567` · 1 components x 2 platforms"
    )
    assert message.blocks[3] == md(
        "• first\n• second &lt;x&gt;\n• runtime lacks linux/arm64\n"
        "• m1 now points at sha256:aaaaaaaaaaaa\n"
        "• m2 already holds sha256:bbbbbbbbbbbb, not this release: it is not overwritten "
        "unless an approver confirms (Confirm overwrite)\n"
        "• m3 could not be written: HTTP 500"
    )
    assert [b["elements"][0]["text"] for b in message.blocks[4:7]] == [
        "1 of 2 approvals",
        "n1",
        "n&lt;2&gt;",
    ]
    # The same problem said twice is shown once.
    twice = run(
        State.BLOCKED,
        state_reason="runtime lacks linux/arm64",
        indexes={"runtime": ComponentIndex("runtime", A, "missing", "runtime lacks linux/arm64")},
    )
    shown = blocks.release_message(twice)
    assert shown.text == "Release v1.0.0: BLOCKED: runtime lacks linux/arm64"
    assert shown.blocks[-2] == md("• runtime lacks linux/arm64")
    # Each component's card is named last (issue 17).
    assert (
        shown.blocks[-1]["elements"][0]["text"]
        == "Each component's card: `/aibrix inspect runtime`"
    )


def test_the_status_of_several_releases_is_one_line_each() -> None:
    message = blocks.status_message(
        [run(State.READY), run(State.FAILED, version="v<2>", requested_by="cli:bob")]
    )
    assert message.text == "2 releases"
    assert message.blocks == [
        md(
            "*v1.0.0* `01234567` ready for approval · requested by <@U0ALICE>\n"
            "*v&lt;2&gt;* `01234567` FAILED · requested by `cli:bob`"
        )
    ]
    one = blocks.status_message([run(State.READY)])
    assert one.text == "Release v1.0.0: ready for approval"
    assert [b["type"] for b in one.blocks] == ["header", "section", "section", "context"]
    assert blocks.status_message([]).blocks == [
        md("there are no releases yet; start one with /aibrix release VERSION")
    ]


def test_a_ready_sync_says_so_and_a_huge_one_fits_in_50_blocks() -> None:
    digests = {f"c{i:04d}": A for i in range(6000)}  # about 80 lines a section
    record = SyncRecord(
        id="j1",
        version="v1.0.0",
        run_id="r1",
        mirror="tokyo",
        location="x.io/aibrix",
        requested_by="U0ALICE",
        channel="C0",
        mode="ready",
        digests=digests,
        state=SyncState.RUNNING,
    )
    message = blocks.sync_message(record)
    assert message.blocks[1] == md(
        "asked by <@U0ALICE>; an approver's sync of a ready, not yet approved release: its "
        "verified digests; to `x.io/aibrix`"
    )
    assert len(message.blocks) == 50
    assert message.blocks[-1]["text"]["text"].endswith("more, not shown (Slack's message limit)")
