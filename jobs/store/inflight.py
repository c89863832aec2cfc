"""Which jobs of a run a worker holds right now (delivered, not yet acknowledged).

A cancel waits on this (issue 16, item 5): a worker acknowledges a build's job only after
its Buildx process is gone, so when none of the run's jobs is held, nothing of the run can
still push. Read-only: the consumer groups' pending lists and the entries they name.
"""

from __future__ import annotations

from typing import Any

from redis.exceptions import ResponseError

from jobs.domain.versions import Version
from jobs.store.connections import Batch
from jobs.store.keys import CONSUMER_GROUP
from jobs.store.queue import Job, JobFormatError, Queue

SCAN = 1000  # pending entries read per stream: far more than a release has jobs


async def held_jobs(queue: Queue, version: Version | str, run_id: str) -> list[Job]:
    """The run's jobs that a worker has claimed and not yet acknowledged."""
    streams = sorted(str(s) for s in await queue.redis.smembers(queue.keys.job_streams))
    held: list[Job] = []
    for stream in streams:
        try:
            pending: list[dict[str, Any]] = await queue.redis.xpending_range(
                stream, CONSUMER_GROUP, "-", "+", SCAN
            )
        except ResponseError as error:
            if "NOGROUP" in str(error):
                continue
            raise
        if not pending:
            continue
        batch = Batch(queue.redis)
        for entry in pending:
            entry_id = str(entry["message_id"])
            batch.pipe.xrange(stream, entry_id, entry_id, count=1)
        for found in await batch.execute():
            for _, fields in found or ():
                try:
                    job = Job.from_fields(fields)
                except JobFormatError:
                    continue
                if job.run_id == run_id and str(job.version) == str(version):
                    held.append(job)
    return held
