"""Terminal rendering of inspection results (the table `aibrix-bot inspect` prints)."""

from __future__ import annotations

from collections.abc import Sequence

from jobs.domain.messages import (
    duplicate_entry,
    short_digest,
    verdict_headline,
    verdict_problems,
)
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
