"""A valid build job with any field overridden: the queue tests' one way to make a job.

Version and platform may be given as text (parsed here, as a test's own input) or as
the typed values a `Job` carries."""

from __future__ import annotations

from typing import Any

from jobs.domain.platforms import parse_platform
from jobs.domain.versions import parse_version
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
    if isinstance(values["version"], str):
        values["version"] = parse_version(values["version"])
    if isinstance(values["platform"], str):
        values["platform"] = parse_platform(values["platform"])
    return Job(**values)
