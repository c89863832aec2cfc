"""Terminal rendering of inspection results (the table `aibrix-bot inspect` prints) and
of a release's plan (`aibrix-bot release VERSION --dry-run`)."""

from __future__ import annotations

from collections.abc import Sequence

from bot import messages as terminal
from jobs.domain.component_card import ComponentCard, card_headline, card_table
from jobs.domain.messages import (
    dependency_line,
    duplicate_entry,
    short_digest,
    verdict_headline,
    verdict_problems,
)
from jobs.domain.plan import Plan
from jobs.domain.platforms import Platform
from jobs.registry.inspection import Inspection


def inspection_table(inspection: Inspection) -> str:
    verdict = inspection.verdict
    lines = [
        f"{inspection.reference}",
        f"  digest: {inspection.digest or '-'}",
        f"  verdict: {verdict_headline(verdict.outcome)}",
        f"  required: {', '.join(str(p) for p in verdict.required)}",
    ]
    if verdict.entries:
        rows = [("PLATFORM", "DIGEST", "STATUS", "DETAIL")]
        seen: set[Platform | None] = set()
        for entry in verdict.entries:
            detail = entry.reason or ""
            if not detail and entry.platform is not None and entry.platform in seen:
                detail = duplicate_entry()
            seen.add(entry.platform)
            rows.append((entry.label, short_digest(entry.digest), entry.status.value, detail))
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        for row in rows:
            cells = [row[i].ljust(widths[i]) for i in range(3)] + [row[3]]
            lines.append("  " + "  ".join(cells).rstrip())
    lines.append(f"  attestations: {verdict.attestations}")
    subject = str(inspection.reference)
    for problem in verdict_problems(subject, verdict):
        lines.append(f"  - {problem}")
    return "\n".join(lines)


def inspection_tables(inspections: Sequence[Inspection]) -> str:
    return "\n\n".join(inspection_table(i) for i in inspections)


def plan_lines(plan: Plan) -> list[str]:
    lines = [terminal.plan_heading(str(plan.version), plan.revision), "components:"]
    rows = [("NAME", "DOCKERFILE", "CONTEXT", "BUILD")]
    rows += [(c.name, c.dockerfile, c.context, c.build) for c in plan.components]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        lines.append("  " + "  ".join([row[i].ljust(widths[i]) for i in range(3)] + [row[3]]))
    for build, names in plan.shared_builds().items():
        lines.append(terminal.plan_shared(", ".join(names), build))
    lines.append("publish:")
    for location, references in plan.publish:
        lines.append(f"  {location}")
        lines += [f"    {reference}" for reference in references]
    if plan.dependencies:
        lines.append("dependencies:")
        lines += [
            "  " + dependency_line(d.reference, d.verdict, d.missing, d.error)
            for d in plan.dependencies
        ]
    if plan.problems:
        lines.append("problems:")
        lines += [f"  - {p.sentence()}" for p in plan.problems]
    elif plan.clean:
        lines.append(terminal.plan_clean())
    return lines


def card_text(card: ComponentCard) -> str:
    """`aibrix-bot inspect COMPONENT`: the headline, the matrix, then each problem."""
    lines = [terminal.card_heading(card.component, card.image), card_headline(card), ""]
    if card.tags:
        lines.extend("  " + line for line in card_table(card))
    problems = card.problems
    if problems:
        lines.append("")
        lines.extend(f"  - {p}" for p in problems)
    return "\n".join(lines)
