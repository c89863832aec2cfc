"""The fleet of workers as values, and the decisions on it.

Each worker announces itself in Redis with a heartbeat (`jobs.store.fleet`, written by
`jobs.runtime.heartbeat`): its id, platform, version, Buildx builder, the jobs it runs
now. A record lives for a TTL the worker renews, so a killed worker drops out on its own;
the store also keeps, per platform, when a worker of it was last seen, so that a release
waiting for a platform nobody builds can say since when.

Pure: the store reads, these functions decide (which platforms of a release wait for a
worker that is not there, how many live workers each platform has).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from jobs.domain import messages
from jobs.domain.platforms import Platform
from jobs.domain.release import BuildState, Release, State

# Release states in which builds may still wait for a worker of their platform.
WAITING_STATES = frozenset({State.QUEUED, State.BUILDING})
# A build in one of these states still needs a worker of its platform.
_UNBUILT = frozenset({BuildState.QUEUED, BuildState.BUILDING})


@dataclass(frozen=True)
class WorkerBeat:
    """One live worker, as its last heartbeat described it."""

    worker_id: str
    platform: Platform
    version: str
    builder: str
    control: bool  # it also runs merge, promote and sync jobs
    jobs: tuple[str, ...]  # what it runs now, e.g. `build v0.3.0 runtime`
    started: float  # unix seconds
    last_seen: float  # unix seconds (Redis's clock)


@dataclass(frozen=True)
class FleetView:
    """Live workers and, per platform, when a worker of it was last seen, at `now`."""

    workers: tuple[WorkerBeat, ...]
    last_seen: Mapping[Platform, float] = field(default_factory=dict)
    now: float = 0.0


@dataclass(frozen=True)
class PlatformGap:
    """A platform with no live worker; `seen_ago` None when none was ever seen."""

    platform: Platform
    seen_ago: float | None

    def sentence(self) -> str:
        return messages.no_live_worker(str(self.platform), self.seen_ago)


def live_counts(view: FleetView, platforms: Iterable[Platform] = ()) -> dict[Platform, int]:
    """Live workers per platform: every platform with a worker, and each of `platforms`
    (0 when none is alive), so a dashboard sees the zero."""
    counts = dict.fromkeys(platforms, 0)
    for beat in view.workers:
        counts[beat.platform] = counts.get(beat.platform, 0) + 1
    return counts


def gaps(needed: Iterable[Platform], view: FleetView) -> list[PlatformGap]:
    """The platforms of `needed` (in order, once each) with no live worker."""
    alive = {beat.platform for beat in view.workers}
    out: list[PlatformGap] = []
    for platform in dict.fromkeys(needed):
        if platform in alive:
            continue
        seen = view.last_seen.get(platform)
        out.append(PlatformGap(platform, None if seen is None else max(0.0, view.now - seen)))
    return out


def waiting_platforms(release: Release) -> tuple[Platform, ...]:
    """The platforms a release still needs a worker for: while it is queued or building,
    those with a build not pushed, failed or cancelled yet."""
    if release.state not in WAITING_STATES:
        return ()
    waiting: list[Platform] = []
    for platform in release.platforms:
        for component in release.components:
            record = release.builds.get((component, platform))
            if record is None or record.state in _UNBUILT:
                waiting.append(platform)
                break
    return tuple(waiting)


def release_gaps(release: Release, view: FleetView | None) -> list[str]:
    """The sentences a release's live message and the CLI show: one per platform it waits
    for that has no live worker (none when the fleet could not be read)."""
    if view is None:
        return []
    return [gap.sentence() for gap in gaps(waiting_platforms(release), view)]


TABLE_HEADINGS = ("PLATFORM", "WORKER", "VERSION", "BUILDER", "MERGES", "SEEN", "RUNNING")


def worker_rows(view: FleetView) -> list[tuple[str, ...]]:
    """The live workers as table rows (headings first), for the CLI and Slack alike."""
    rows: list[tuple[str, ...]] = [TABLE_HEADINGS]
    for beat in view.workers:
        rows.append(
            (
                str(beat.platform),
                beat.worker_id,
                beat.version,
                beat.builder or "-",
                "yes" if beat.control else "no",
                f"{messages.duration_words(view.now - beat.last_seen)} ago",
                ", ".join(beat.jobs) or "idle",
            )
        )
    return rows


def aligned(rows: Iterable[tuple[str, ...]]) -> list[str]:
    """Rows as lines with columns padded to their widest cell."""
    table = list(rows)
    if not table:
        return []
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in table
    ]


def fleet_lines(view: FleetView, platforms: Iterable[Platform]) -> list[str]:
    """The fleet for people: the table of live workers (or that none is alive), then one
    sentence per configured platform without a live worker."""
    lines = aligned(worker_rows(view)) if view.workers else [messages.no_workers()]
    lines.extend(gap.sentence() for gap in gaps(platforms, view))
    return lines


def fleet_json(view: FleetView, platforms: Iterable[Platform]) -> dict[str, object]:
    """`aibrix-bot workers --json`: the live workers and the configured platforms with none."""
    return {
        "now": view.now,
        "workers": [
            {
                "worker": beat.worker_id,
                "platform": str(beat.platform),
                "version": beat.version,
                "builder": beat.builder,
                "control": beat.control,
                "running": list(beat.jobs),
                "started": beat.started,
                "last_seen": beat.last_seen,
            }
            for beat in view.workers
        ],
        "missing": [
            {"platform": str(gap.platform), "seen_ago": gap.seen_ago, "message": gap.sentence()}
            for gap in gaps(platforms, view)
        ],
    }
