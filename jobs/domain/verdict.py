"""Platform verdicts: pure functions from what was read to what it means.

The inspection engine gathers `EntryFacts` (what the index entry declares, and what
the child's image config really says, or why it could not be read); `judge` turns
them and the required platforms into a `Verdict`. No I/O here.

Platforms arrive normalised (`jobs.domain.platforms`), so an entry declaring arm64 `v8.0`
and a config saying plain arm64 agree. An entry is judged by `agrees` (its config is what
it declares) and a required platform is present when an agreeing entry `satisfies` it;
both rules, and how os.version/os.features take part, are in the platforms module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from jobs.domain.platforms import Platform, agrees, satisfies


class EntryStatus(StrEnum):
    OK = "ok"
    MISMATCH = "mismatch"
    UNRESOLVABLE = "unresolvable"


class Outcome(StrEnum):
    OK = "ok"
    MISSING = "missing"
    MISMATCH = "mismatch"
    ERROR = "error"


@dataclass(frozen=True)
class EntryFacts:
    """One real (non-attestation) platform entry as read from the registry."""

    digest: str
    declared: Platform | None  # the index entry's platform; None for a single manifest
    actual: Platform | None  # the image config's platform; None when unreadable
    problem: str | None = None  # why the child or its config could not be read


@dataclass(frozen=True)
class EntryVerdict:
    platform: Platform | None  # what the entry claims to be (its config, for a single image)
    digest: str
    status: EntryStatus
    actual: Platform | None
    reason: str | None

    @property
    def label(self) -> str:
        return str(self.platform) if self.platform is not None else "unknown"


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    required: tuple[Platform, ...]
    missing: tuple[Platform, ...]
    entries: tuple[EntryVerdict, ...]
    attestations: int
    is_index: bool
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK

    @property
    def present(self) -> tuple[Platform, ...]:
        """Platforms with an entry whose config agrees, in index order."""
        return tuple(e.platform for e in self.entries if e.status is EntryStatus.OK and e.platform)

    @property
    def duplicates(self) -> tuple[Platform, ...]:
        """Platforms claimed by more than one entry, by full identity (os.version and
        os.features included): containerd pulls the first, the later ones are never used."""
        counts: dict[Platform, int] = {}
        for entry in self.entries:
            if entry.platform is not None:
                counts[entry.platform] = counts.get(entry.platform, 0) + 1
        return tuple(p for p, n in counts.items() if n > 1)


def judge_entry(facts: EntryFacts) -> EntryVerdict:
    if facts.actual is None:
        return EntryVerdict(
            facts.declared,
            facts.digest,
            EntryStatus.UNRESOLVABLE,
            None,
            facts.problem or "the child manifest or its config could not be read",
        )
    claimed = facts.declared if facts.declared is not None else facts.actual
    if not agrees(claimed, facts.actual):
        return EntryVerdict(
            claimed,
            facts.digest,
            EntryStatus.MISMATCH,
            facts.actual,
            f"the index says {claimed} but the image config says {facts.actual}",
        )
    return EntryVerdict(claimed, facts.digest, EntryStatus.OK, facts.actual, None)


def judge(
    required: Sequence[Platform],
    entries: Sequence[EntryFacts],
    *,
    attestations: int = 0,
    is_index: bool = True,
) -> Verdict:
    """The verdict for one published reference against the required platforms."""
    judged = tuple(judge_entry(e) for e in entries)
    satisfied = [e.platform for e in judged if e.status is EntryStatus.OK and e.platform]
    missing = tuple(p for p in required if not any(satisfies(s, p) for s in satisfied))
    if any(e.status is not EntryStatus.OK for e in judged):
        outcome = Outcome.MISMATCH
    elif missing:
        outcome = Outcome.MISSING
    else:
        outcome = Outcome.OK
    return Verdict(outcome, tuple(required), missing, judged, attestations, is_index)


def unreadable(required: Sequence[Platform], error: str) -> Verdict:
    """The verdict for a reference that could not be read at all."""
    return Verdict(Outcome.ERROR, tuple(required), tuple(required), (), 0, False, error)
