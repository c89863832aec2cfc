"""Terminal rendering of inspection results (the table `aibrix-bot inspect` prints)."""

from __future__ import annotations

from collections.abc import Sequence

from jobs.domain.messages import short_digest, verdict_headline, verdict_problems
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
        for entry in verdict.entries:
            rows.append(
                (entry.label, short_digest(entry.digest), entry.status.value, entry.reason or "")
            )
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
