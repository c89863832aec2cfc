"""Following a release in the terminal: one progress bar per component and platform,
redrawn in place on a terminal, printed as plain changed lines otherwise."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import TextIO

from jobs.domain.builds import progress_key, sharing_lines
from jobs.domain.messages import short_digest
from jobs.domain.platforms import Platform
from jobs.domain.progress import StepProgress
from jobs.domain.release import BuildState, Release

BAR_WIDTH = 20


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    filled = max(0, min(width, round(fraction * width)))
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def build_line(
    release: Release, component: str, platform: Platform, progress: StepProgress | None
) -> str:
    record = release.builds.get((component, platform))
    state = record.state if record else BuildState.QUEUED
    label = f"{component:<20} {platform!s:<13}"
    if state is BuildState.PUSHED:
        return f"{label} {bar(1.0)} pushed {short_digest(record.digest if record else None)}"
    if state is BuildState.FAILED:
        return f"{label} {bar(0.0)} FAILED"
    if state is BuildState.CANCELLED:
        return f"{label} {bar(0.0)} cancelled"
    if state is BuildState.BUILDING and progress is not None:
        if progress.phase == "building" and progress.total:
            fraction = progress.step / progress.total * 0.9
            return f"{label} {bar(fraction)} step {progress.step}/{progress.total}"
        if progress.phase in ("pushing", "pushed"):
            return f"{label} {bar(0.95)} pushing"
    if state is BuildState.BUILDING:
        return f"{label} {bar(0.0)} building"
    return f"{label} {bar(0.0)} queued"


def release_lines(
    release: Release,
    progress: Mapping[tuple[str, str], StepProgress],
    notes: Sequence[str] = (),
) -> list[str]:
    """The release's lines; `notes`: the fleet's word on platforms it waits for with no
    live worker (`jobs.domain.fleet.release_gaps`)."""
    lines = [f"{release.version} ({release.run_id[:8]}): {release.state.value}"]
    for component in release.components:
        for platform in release.platforms:
            lines.append(
                "  "
                + build_line(
                    release,
                    component,
                    platform,
                    progress.get(progress_key(release, component, platform)),
                )
            )
        index = release.indexes.get(component)
        if index is not None:
            lines.append(
                f"  {component:<20} {'index':<13} {index.verdict} {short_digest(index.digest)}"
            )
    lines.extend(f"  {line}" for line in sharing_lines(release))
    if release.state_reason:
        lines.append(f"  reason: {release.state_reason}")
    lines.extend(f"  waiting: {note}" for note in notes)
    return lines


class Display:
    """Draws the lines; on a TTY it redraws the block, elsewhere it prints what changed."""

    def __init__(self, out: TextIO = sys.stderr) -> None:
        self.out = out
        self.tty = out.isatty()
        self.previous: list[str] = []

    def show(self, lines: list[str]) -> None:
        if self.tty:
            if self.previous:
                self.out.write(f"\x1b[{len(self.previous)}F\x1b[J")
            self.out.write("\n".join(lines) + "\n")
        else:
            for line in lines:
                if line not in self.previous:
                    self.out.write(line + "\n")
        self.out.flush()
        self.previous = lines
