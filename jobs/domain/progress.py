"""A build step's progress, folded from the worker's `progress` events: what the terminal
follower and the Slack live message both draw (each in its own wording)."""

from __future__ import annotations

from dataclasses import dataclass

from jobs.domain.release import ReleaseEvent


@dataclass(frozen=True)
class StepProgress:
    phase: str
    step: int = 0
    total: int = 0


def apply_event(progress: dict[tuple[str, str], StepProgress], event: ReleaseEvent) -> None:
    if event.type != "progress":
        return
    fields = event.fields
    key = (fields.get("component", ""), fields.get("platform", ""))
    try:
        progress[key] = StepProgress(
            fields.get("phase", ""), int(fields.get("step", "0")), int(fields.get("total", "0"))
        )
    except ValueError:
        return
