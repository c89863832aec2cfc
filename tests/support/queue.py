"""A valid build job with any field overridden: the queue tests' one way to make a job."""

from __future__ import annotations

from typing import Any

from jobs.store.queue import Job, JobKind


def build_job(**overrides: Any) -> Job:
    values: dict[str, Any] = {
        "kind": JobKind.BUILD,
        "version": "v0.3.0-rc.2",
        "run_id": "run1",
        "component": "runtime",
        "source_revision": "0123abc",
        "platform": "linux/arm64",
    }
    values.update(overrides)
    return Job(**values)
