"""Block Kit for the bot: pure functions from values to (fallback text, blocks).

Every message stays inside Slack's limits whatever it shows (50 blocks per message,
3,000 characters per section text, 150 per header, 75 per button label, 2,000 per
button value): long tables are split across sections and, past the block budget,
summarized. User-visible text that did not come from this module is escaped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from handlers import messages
from handlers.parse import button_value
from jobs.domain import messages as core_messages
from jobs.domain.builds import progress_key, sharing_lines
from jobs.domain.component_card import ComponentCard, card_headline, card_table
from jobs.domain.fleet import FleetView, aligned, gaps, worker_rows
from jobs.domain.plan import Plan
from jobs.domain.platforms import Platform, satisfies
from jobs.domain.progress import StepProgress
from jobs.domain.release import BuildState, Release, State, pending_overwrites
from jobs.domain.verdict import EntryStatus
from jobs.registry.inspection import Inspection
from jobs.usecases.sync_job import SyncRecord

Block = dict[str, Any]

MAX_BLOCKS = 50
SECTION_TEXT_LIMIT = 3000
HEADER_LIMIT = 150
FALLBACK_LIMIT = 3000
CONTEXT_ELEMENT_LIMIT = 2000
# What a section's text may hold once the code fence is counted.
_TABLE_LIMIT = SECTION_TEXT_LIMIT - 8
_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,20}\Z")

APPROVE_ACTION = "approve_release"
REJECT_ACTION = "reject_release"
RETRY_ACTION = "retry_release"
OVERWRITE_ACTION = "confirm_overwrite"


@dataclass(frozen=True)
class Message:
    text: str  # the notification / fallback text
    blocks: list[Block]


def escape(text: str) -> str:
    """Slack's three control characters, escaped so user text cannot make links or
    mentions."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def mention(user: str) -> str:
    """`<@U123>` for a Slack user id; anything else (such as `cli:alice`) shown escaped."""
    return f"<@{user}>" if _USER_ID.match(user) else f"`{escape(user)}`"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def header(text: str) -> Block:
    return {"type": "header", "text": {"type": "plain_text", "text": _clip(text, HEADER_LIMIT)}}


def section(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _clip(text, SECTION_TEXT_LIMIT)}}


def context(text: str) -> Block:
    return {
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": _clip(text, CONTEXT_ELEMENT_LIMIT)}],
    }


def button(text: str, action_id: str, value: str, style: str | None = None) -> Block:
    element: Block = {
        "type": "button",
        "text": {"type": "plain_text", "text": _clip(text, 75)},
        "action_id": action_id,
        "value": value,
    }
    if style:
        element["style"] = style
    return element


def chunk_lines(lines: Sequence[str], limit: int) -> list[list[str]]:
    """Lines grouped so that each group joined by newlines fits in `limit` characters (a
    longer line is cut)."""
    groups: list[list[str]] = []
    size = 0
    for raw in lines:
        line = _clip(raw, limit)
        if groups and size + 1 + len(line) <= limit:
            groups[-1].append(line)
            size += 1 + len(line)
        else:
            groups.append([line])
            size = len(line)
    return groups


def table_sections(lines: Sequence[str], budget: int) -> list[Block]:
    """Monospace table lines in as many sections as needed, at most `budget` of them; what
    does not fit is summarized in the last one."""
    groups = chunk_lines(lines, _TABLE_LIMIT)
    if budget <= 0:
        return []
    if len(groups) > budget:
        shown = groups[: budget - 1] if budget > 1 else []
        rest = sum(len(g) for g in groups[len(shown) :])
        blocks = [section("```" + "\n".join(g) + "```") for g in shown]
        blocks.append(section(f"… and {rest} more rows, not shown (Slack's message limit)"))
        return blocks
    return [section("```" + "\n".join(g) + "```") for g in groups]


def text_sections(lines: Sequence[str], budget: int) -> list[Block]:
    """Sentences (already escaped) in sections of at most 3,000 characters, `budget` at most."""
    groups = chunk_lines(lines, SECTION_TEXT_LIMIT)
    if budget <= 0:
        return []
    if len(groups) > budget:
        shown = groups[: budget - 1] if budget > 1 else []
        rest = sum(len(g) for g in groups[len(shown) :])
        return [section("\n".join(g)) for g in shown] + [
            section(f"… and {rest} more, not shown (Slack's message limit)")
        ]
    return [section("\n".join(g)) for g in groups]


# ---- the live release message ---------------------------------------------------------


def build_cell(
    release: Release, component: str, platform: Platform, step: StepProgress | None
) -> str:
    record = release.builds.get((component, platform))
    state = record.state if record else BuildState.QUEUED
    if state is BuildState.PUSHED:
        return f"pushed {core_messages.short_digest(record.digest if record else None, 8)}"
    if state is BuildState.FAILED:
        return "FAILED"
    if state is BuildState.CANCELLED:
        return "cancelled"
    if state is BuildState.BUILDING:
        if step is not None and step.phase == "building" and step.total:
            return f"building {step.step}/{step.total}"
        if step is not None and step.phase in ("pushing", "pushed"):
            return "pushing"
        return "building"
    return "queued"


def index_cell(release: Release, component: str) -> str:
    index = release.indexes.get(component)
    if index is None:
        return "-"
    word = "verified" if index.verdict == "ok" else index.verdict.upper()
    return f"{word} {core_messages.short_digest(index.digest, 8)}"


def release_table(release: Release, progress: Mapping[tuple[str, str], StepProgress]) -> list[str]:
    width = max([len("COMPONENT"), *(len(c) for c in release.components)])
    cells: list[list[str]] = [
        ["COMPONENT".ljust(width), *(str(p) for p in release.platforms), "INDEX"]
    ]
    for component in release.components:
        cells.append(
            [
                component.ljust(width),
                *(
                    build_cell(
                        release, component, p, progress.get(progress_key(release, component, p))
                    )
                    for p in release.platforms
                ),
                index_cell(release, component),
            ]
        )
    columns = len(cells[0])
    widths = [max(len(row[i]) for row in cells) for i in range(columns)]
    return [
        escape("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        for row in cells
    ]


_STATE_WORDS = {
    State.QUEUED: "queued",
    State.BUILDING: "building",
    State.MERGING: "merging",
    State.VERIFYING: "verifying",
    State.READY: "ready for approval",
    State.BLOCKED: "BLOCKED",
    State.APPROVED: "approved, promotion queued",
    State.PROMOTING: "promoting",
    State.PROMOTED: "promoted",
    State.FAILED: "FAILED",
    State.CANCELLED: "cancelled",
}


def release_message(
    release: Release,
    progress: Mapping[tuple[str, str], StepProgress] | None = None,
    *,
    tally_text: str = "",
    notes: Sequence[str] = (),
) -> Message:
    """The one live message of a release run: the table, the reasons, the gate."""
    state = _STATE_WORDS.get(release.state, release.state.value)
    title = f"Release {release.version}: {state}"
    summary = (
        f"Requested by {mention(release.requested_by)} · run `{release.run_id[:8]}` · "
        f"{len(release.components)} components x {len(release.platforms)} platforms"
    )
    reasons = [r for r in release.state_reason.split("; ") if r] if release.state_reason else []
    problem_lines = [f"• {escape(r)}" for r in reasons]
    for component in release.components:
        index = release.indexes.get(component)
        if index is not None and index.verdict != "ok" and index.detail:
            line = f"• {escape(index.detail)}"
            if line not in problem_lines:
                problem_lines.append(line)
    pending = pending_overwrites(release)
    promoted = [
        f"• {escape(messages.promotion_written(p.target, p.digest))}"
        if p.ok
        else f"• {escape(messages.promotion_overwrite_pending(p.target, p.digest))}"
        if p.target in pending
        else f"• {escape(core_messages.promotion_failed(p.target, p.detail))}"
        for p in release.promotions.values()
    ]
    actions = gate_actions(release)
    footer: list[Block] = []
    if tally_text:
        footer.append(context(tally_text))
    footer.extend(context(escape(n)) for n in notes[:2])
    shared = sharing_lines(release)
    if shared:  # identical builds ran once: say whose build each such component is
        footer.append(context(escape(" · ".join(shared))))
    footer.append(context(escape(messages.card_hint(release.components))))
    fixed = 2 + len(footer) + (1 if actions else 0)
    budget = MAX_BLOCKS - fixed
    problem_blocks = text_sections(problem_lines + promoted, max(1, budget // 3))
    table_blocks = table_sections(
        release_table(release, progress or {}), budget - len(problem_blocks)
    )
    blocks: list[Block] = [header(title), section(summary), *table_blocks, *problem_blocks]
    blocks.extend(footer)
    if actions:
        blocks.append(actions)
    text = _clip(f"{title}" + (f": {reasons[0]}" if reasons else ""), FALLBACK_LIMIT)
    return Message(escape(text), blocks)


def gate_actions(release: Release) -> Block | None:
    """Approve and Reject while ready; Retry failed builds while blocked by failed builds;
    Confirm overwrite while promotion waits on a mirror tag that holds another digest."""
    value = button_value(str(release.version), release.run_id)
    block_id = f"gate:{release.run_id}"
    if release.state is State.READY:
        return {
            "type": "actions",
            "block_id": block_id,
            "elements": [
                button("Approve", APPROVE_ACTION, value, "primary"),
                button("Reject", REJECT_ACTION, value, "danger"),
            ],
        }
    if release.state is State.APPROVED:
        return {
            "type": "actions",
            "block_id": block_id,
            "elements": [button("Reject", REJECT_ACTION, value, "danger")],
        }
    if release.state is State.PROMOTING and pending_overwrites(release):
        return {
            "type": "actions",
            "block_id": block_id,
            "elements": [button("Confirm overwrite", OVERWRITE_ACTION, value, "danger")],
        }
    failed = any(r.state is BuildState.FAILED for r in release.builds.values())
    if release.state is State.BLOCKED and failed:
        return {
            "type": "actions",
            "block_id": block_id,
            "elements": [button("Retry failed builds", RETRY_ACTION, value)],
        }
    return None


def failure_reply(component: str, platform: str, error: str, log_tail: Sequence[str]) -> Message:
    """The thread reply for one failed build: what failed and the tail of its log."""
    first = escape(messages.build_failure_reply(component, platform, error))
    blocks = [section(_clip(first, SECTION_TEXT_LIMIT))]
    if log_tail:
        tail = escape("\n".join(log_tail)).replace("```", "'''")
        room = _TABLE_LIMIT
        blocks.append(section("```" + tail[-room:] + "```"))
    return Message(_clip(first, FALLBACK_LIMIT), blocks)


# ---- inspection -----------------------------------------------------------------------


def inspection_lines(inspection: Inspection) -> list[str]:
    verdict = inspection.verdict
    rows = [("PLATFORM", "STATUS", "DIGEST")]
    # Entries are matched to required platforms by the gate's rule, not by label, and
    # every entry keeps its own row: two Windows entries that differ only in os.version
    # are two rows (both "present" when windows/amd64 is required), and a second entry of
    # the very same platform reads "duplicate".
    remaining = list(verdict.entries)
    shown: set[Platform | None] = set()
    for platform in verdict.required:
        candidates = [e for e in remaining if e.platform and satisfies(e.platform, platform)]
        good = [e for e in candidates if e.status is EntryStatus.OK]
        entry = next(iter(good or candidates), None)
        if entry is None:
            rows.append((str(platform), "missing", "-"))
        else:
            remaining.remove(entry)
            shown.add(entry.platform)
            status = "present" if entry.status is EntryStatus.OK else entry.status.value
            rows.append((entry.label, status, core_messages.short_digest(entry.digest)))
    for entry in remaining:
        status = entry.status.value
        if entry.status is EntryStatus.OK and entry.platform in shown:
            status = "duplicate"
        elif entry.status is EntryStatus.OK:
            claimed = entry.platform
            wanted = claimed is not None and any(satisfies(claimed, p) for p in verdict.required)
            status = "present" if wanted else "extra"
        shown.add(entry.platform)
        rows.append((entry.label, status, core_messages.short_digest(entry.digest)))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return [
        escape("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()) for r in rows
    ]


def inspection_message(subjects: Sequence[str], inspections: Sequence[Inspection]) -> Message:
    """`/aibrix inspect` and the end of a release: per reference its platforms, digests,
    attestation count, and one sentence per problem."""
    blocks: list[Block] = []
    problems_total = 0
    per_ref = max(1, (MAX_BLOCKS - 1) // max(1, len(inspections)))
    for subject, inspection in zip(subjects, inspections, strict=True):
        verdict = inspection.verdict
        if len(blocks) + 1 >= MAX_BLOCKS:
            break
        head = (
            f"*{escape(str(inspection.reference))}* — "
            f"{escape(core_messages.verdict_headline(verdict.outcome))}\n"
            f"index {core_messages.short_digest(inspection.digest)} · "
            f"{verdict.attestations} attestation manifests"
        )
        problems = core_messages.verdict_problems(subject, verdict)
        problems_total += len(problems)
        lines = [head]
        if not inspection.unreadable:
            lines.append("```" + "\n".join(inspection_lines(inspection)) + "```")
        lines.extend(f"• {escape(p)}" for p in problems)
        room = min(per_ref, MAX_BLOCKS - len(blocks))
        blocks.extend(text_sections(lines, room))
    shown = len([b for b in blocks if b["type"] == "section"])
    if len(inspections) and shown == 0:  # pragma: no cover - budget always allows one
        blocks.append(section("nothing to show"))
    bad = sum(1 for i in inspections if not i.verdict.ok)
    if len(inspections) == 1:
        only = inspections[0]
        text = f"{only.reference}: {core_messages.verdict_headline(only.verdict.outcome)}"
    else:
        text = f"{len(inspections)} references inspected, {bad} not ok"
    return Message(escape(_clip(text, FALLBACK_LIMIT)), blocks[:MAX_BLOCKS])


# ---- a component's card ------------------------------------------------------------------

_CARD_LEGEND = (
    "Each cell: the verdict and the index digest, `DRIFT` where a registry holds another "
    "digest than the release (or the source), `no tag`, or `unreadable`"
)


def _card_blocks(card: ComponentCard, budget: int) -> list[Block]:
    """The matrix (one row a tag, one column a registry) and one bullet per problem, in at
    most `budget` blocks: the table keeps at least one, the problems the rest."""
    problems = [f"• {escape(p)}" for p in card.problems]
    table = [escape(line) for line in card_table(card)] if card.tags else []
    problem_room = max(1, budget // 3) if problems else 0
    table_blocks = table_sections(table, max(1, budget - problem_room)) if table else []
    return [*table_blocks, *text_sections(problems, budget - len(table_blocks))]


def card_message(card: ComponentCard) -> Message:
    """`/aibrix inspect COMPONENT`: what is wrong on top, then every chosen tag on every
    registry, then each problem in words; within Slack's limits however many there are."""
    headline = card_headline(card)
    mark = ":warning: " if card.problems else ":white_check_mark: "
    blocks: list[Block] = [
        header(messages.card_title(card.component)),
        section(mark + escape(headline)),
    ]
    legend = context(f"`{escape(card.image)}` · {_CARD_LEGEND}")
    blocks.extend(_card_blocks(card, MAX_BLOCKS - len(blocks) - 1))
    blocks.append(legend)
    return Message(escape(_clip(headline, FALLBACK_LIMIT)), blocks[:MAX_BLOCKS])


def inspection_with_card(subject: str, inspection: Inspection, card: ComponentCard) -> Message:
    """`/aibrix inspect COMPONENT TAG`: the tag's inspection as before, then what every
    registry and mirror holds under it beside the source."""
    tag = card.tags[0].tag if card.tags else ""
    extra: list[Block] = [section(messages.card_tag_mirrors(escape(tag)))]
    room = 12
    first = inspection_message([subject], [inspection])
    kept = first.blocks[: MAX_BLOCKS - room - 1]
    extra.extend(_card_blocks(card, MAX_BLOCKS - len(kept) - 1))
    return Message(first.text, [*kept, *extra][:MAX_BLOCKS])


# ---- the live sync message -------------------------------------------------------------


def sync_message(record: SyncRecord) -> Message:
    """A sync's own message: who asked, which digests, progress (components done, bytes
    copied) and, at the end, each component's outcome."""
    title = messages.sync_title(record.version, record.mirror, record.state.value)
    summary = messages.sync_progress_summary(
        record.components_done,
        record.components_total,
        record.bytes_sent,
        record.bytes_planned,
        record.deliveries,
        record.resumed,
    )
    done = {r.component: r for r in record.results}
    lines = []
    for component, digest in record.digests.items():
        result = done.get(component)
        if result is None:
            lines.append(messages.sync_component_waiting(component, digest))
        else:
            lines.append(
                messages.sync_component_line(
                    component, result.status, result.digest, escape(result.detail)
                )
            )
    blocks = [
        header(title),
        section(
            escape(messages.sync_requested_line("{who}", record.mode, record.location)).replace(
                "{who}", mention(record.requested_by)
            )
        ),
        section(escape(summary)),
    ]
    if record.detail and record.finished:
        blocks.append(section(":warning: " + escape(record.detail)))
    blocks.extend(text_sections(lines, MAX_BLOCKS - len(blocks)))
    text = _clip(f"{title}: {summary}", FALLBACK_LIMIT)
    return Message(text, blocks[:MAX_BLOCKS])


# ---- answers --------------------------------------------------------------------------


def plain(text: str) -> Message:
    """A sentence (from a messages catalogue, may hold mentions we made) as one section."""
    return Message(_clip(text, FALLBACK_LIMIT), text_sections(text.split("\n"), MAX_BLOCKS))


def refusal(text: str) -> Message:
    """A refusal built only from validated values (Slack ids checked by the handlers,
    parsed versions, config names): its mentions and channel links render as Slack
    shows them. Anything holding user text goes through `error_message`."""
    return Message(_clip(text, FALLBACK_LIMIT), [section(":warning: " + text)])


def error_message(text: str) -> Message:
    """A refusal: user input inside it is escaped."""
    safe = escape(text)
    return Message(_clip(safe, FALLBACK_LIMIT), [section(":warning: " + safe)])


def workers_message(view: FleetView | None, platforms: Sequence[Platform]) -> Message:
    """`/aibrix workers`: the live workers' table, then each configured platform with no
    live worker ("no linux/arm64 worker has been seen for 10 min")."""
    if view is None:
        return error_message(messages.slack_fleet_unreadable())
    title = messages.slack_workers_title(len(view.workers))
    gap_lines = [f"• {escape(gap.sentence())}" for gap in gaps(platforms, view)]
    blocks: list[Block] = [header(title)]
    budget = MAX_BLOCKS - 1
    gap_blocks = text_sections(gap_lines, max(1, budget // 3)) if gap_lines else []
    if view.workers:
        table = [escape(line) for line in aligned(worker_rows(view))]
        blocks.extend(table_sections(table, budget - len(gap_blocks)))
    blocks.extend(gap_blocks)
    text = title + (f": {gap_lines[0][2:]}" if gap_lines else "")
    return Message(_clip(text, FALLBACK_LIMIT), blocks)


def status_message(releases: Sequence[Release]) -> Message:
    if not releases:
        return plain(messages.slack_no_releases())
    if len(releases) == 1:
        msg = release_message(releases[0])
        return Message(msg.text, [b for b in msg.blocks if b["type"] != "actions"])
    lines = [
        f"*{escape(str(r.version))}* `{r.run_id[:8]}` {escape(_STATE_WORDS.get(r.state, r.state))}"
        f" · requested by {mention(r.requested_by)}"
        for r in releases
    ]
    return Message(f"{len(releases)} releases", text_sections(lines, MAX_BLOCKS))


# ---- /aibrix plan -----------------------------------------------------------------------


def plan_message(plan: Plan) -> Message:
    """The plan of a release: its components and builds (shared ones said), the tags it
    would write, the dependency images' verdicts and every problem, within Slack's limits."""
    title = messages.plan_title(str(plan.version), plan.revision)
    not_ok = [d for d in plan.dependencies if not d.ok]
    summary = messages.plan_summary(
        len(plan.components),
        len({c.build for c in plan.components}),
        len(plan.problems),
        len(not_ok),
    )
    blocks: list[Block] = [header(title), context(escape(summary))]
    rows = [("COMPONENT", "DOCKERFILE", "CONTEXT", "BUILD")]
    rows += [(c.name, c.dockerfile, c.context, c.build) for c in plan.components]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    table = [escape("  ".join([r[i].ljust(widths[i]) for i in range(3)] + [r[3]])) for r in rows]
    lines = [escape(p.sentence()) for p in plan.problems]
    lines = [f":warning: {line}" for line in lines]
    lines += [
        escape(messages.plan_shared(", ".join(names), build))
        for build, names in plan.shared_builds().items()
    ]
    lines += [
        escape(core_messages.dependency_line(d.reference, d.verdict, d.missing, d.error))
        for d in plan.dependencies
    ]
    lines += [f"*{escape(location)}*: {len(refs)} tags" for location, refs in plan.publish]
    lines += [escape(messages.plan_nothing_changed())]
    # Problems first: when Slack's limit cuts, it cuts the table's tail, not a finding.
    problems_budget = MAX_BLOCKS - len(blocks) - 1
    blocks.extend(text_sections(lines[: len(plan.problems)], problems_budget))
    blocks.extend(table_sections(table, max(1, MAX_BLOCKS - len(blocks) - 1)))
    blocks.extend(text_sections(lines[len(plan.problems) :], MAX_BLOCKS - len(blocks)))
    text = _clip(f"{title}: {summary}", FALLBACK_LIMIT)
    return Message(escape(text), blocks[:MAX_BLOCKS])
