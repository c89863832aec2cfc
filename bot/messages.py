"""Every sentence a user reads: CLI errors, Slack answers, verdict explanations.

Kept in one module so wording stays consistent and no secret can slip into a
message by accident: functions here take values, never credentials.
"""

from __future__ import annotations

from collections.abc import Sequence

from jobs.platforms import Platform
from jobs.verdict import EntryStatus, Outcome, Verdict

# ---- inspection -------------------------------------------------------------------


def short_digest(digest: str | None, length: int = 12) -> str:
    if not digest:
        return "-"
    algorithm, _, hex_part = digest.partition(":")
    return f"{algorithm}:{hex_part[:length]}"


def platform_list(platforms: Sequence[Platform]) -> str:
    names = [str(p) for p in platforms]
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def verdict_problems(subject: str, verdict: Verdict) -> list[str]:
    """One plain sentence per problem, e.g.
    "runtime v0.3.0-rc.2 is missing linux/amd64; the index has linux/arm64 only"."""
    if verdict.outcome is Outcome.ERROR:
        return [f"{subject} cannot be read: {verdict.error}"]
    problems = []
    for entry in verdict.entries:
        if entry.status is EntryStatus.MISMATCH:
            problems.append(
                f"{subject}: the {entry.label} entry {short_digest(entry.digest)} is really "
                f"{entry.actual} (its image config says so)"
            )
        elif entry.status is EntryStatus.UNRESOLVABLE:
            problems.append(
                f"{subject}: the {entry.label} entry {short_digest(entry.digest)} cannot be "
                f"resolved: {entry.reason}"
            )
    if verdict.missing:
        present = verdict.present
        if not verdict.is_index and present:
            has = f"the tag is a single {present[0]} image, not a multi-platform index"
        elif present:
            has = f"the index has {platform_list(present)} only"
        else:
            has = "it has no usable platform at all"
        problems.append(f"{subject} is missing {platform_list(verdict.missing)}; {has}")
    return problems


def verdict_headline(outcome: Outcome) -> str:
    return {
        Outcome.OK: "ok: every required platform is present",
        Outcome.MISSING: "MISSING: a required platform is absent",
        Outcome.MISMATCH: "MISMATCH: an entry is not what it claims or cannot be resolved",
        Outcome.ERROR: "ERROR: the reference could not be read",
    }[outcome]
