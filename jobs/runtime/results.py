"""A pushed result is never thrown away.

Once a build has pushed, its digest must reach the release record. `record_with_retries`
tries for a bounded time through Redis errors; if Redis stays away, `Spool` keeps the
result in a local file (written atomically: a temporary file, fsync, rename) that the
worker replays at start and on every janitor pass, through the same fenced record path,
so a replay is idempotent. `pushed_before` is the other half: a worker that reclaims a
job looks in the registry first, and when the staging tag already holds the image this
job built (its config label carries the job's idempotency key) it records that image
instead of building again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from jobs.domain.errors import AibrixError
from jobs.domain.references import parse_reference
from jobs.domain.release import Fence
from jobs.registry.client import RegistryClient
from jobs.store.queue import Job, JobFormatError, Lease, backoff_seconds
from jobs.tools.build import IDEMPOTENCY_LABEL

log = logging.getLogger("aibrix.worker.results")

T = TypeVar("T")
SPOOL_FORMAT = "1"


async def with_redis_retries(
    call: Callable[[], Awaitable[T]],
    what: str,
    *,
    attempts: int = 5,
    timeout_s: float = 2.0,
    base_s: float = 0.5,
    cap_s: float = 2.0,
) -> T:
    """`call()`, retried with backoff through Redis errors and stalls, each logged; the
    last error is raised after `attempts`."""
    for attempt in range(1, attempts + 1):
        try:
            return await asyncio.wait_for(call(), timeout=timeout_s)
        except (RedisError, OSError, TimeoutError) as error:
            log.warning(
                "%s failed (attempt %d of %d: %s)", what, attempt, attempts, type(error).__name__
            )
            if attempt == attempts:
                if isinstance(error, RedisError):
                    raise
                # A stalled Redis: handled as any other Redis error.
                raise RedisTimeoutError(f"{what}: {type(error).__name__}") from None
            await asyncio.sleep(backoff_seconds(attempt, base_s, cap_s))
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class SpooledResult:
    job: Job
    digest: str
    fence: Fence
    path: Path

    def lease(self) -> Lease:
        fence = self.fence
        return Lease(self.job, fence.stream, fence.entry_id, fence.consumer, fence.deliveries)


class Spool:
    """Results pushed but not yet recorded, one JSON file each, in `directory`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def write(self, lease: Lease, digest: str) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        doc: dict[str, Any] = {
            "v": SPOOL_FORMAT,
            "job": lease.job.to_document(),
            "digest": digest,
            "fence": {
                "stream": lease.stream,
                "entry_id": lease.entry_id,
                "consumer": lease.consumer,
                "deliveries": lease.deliveries,
            },
        }
        name = f"{lease.job.idempotency_key}-{lease.deliveries}.json"
        final = self.directory / name
        fd, tmp = tempfile.mkstemp(prefix=".spool-", dir=self.directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(doc, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a crash
        finally:
            os.close(dir_fd)
        return final

    def pending(self) -> list[SpooledResult | Path]:
        """Spooled results, oldest first; a file that cannot be read is returned as its path."""
        if not self.directory.is_dir():
            return []
        found: list[SpooledResult | Path] = []
        files = sorted(self.directory.glob("*.json"), key=lambda p: p.stat().st_mtime)
        for path in files:
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
                fence = doc["fence"]
                found.append(
                    SpooledResult(
                        Job.from_document(doc["job"]),
                        str(doc["digest"]),
                        Fence(
                            str(fence["stream"]),
                            str(fence["entry_id"]),
                            str(fence["consumer"]),
                            int(fence["deliveries"]),
                        ),
                        path,
                    )
                )
            except (OSError, ValueError, KeyError, TypeError, JobFormatError):
                found.append(path)
        return found

    @staticmethod
    def done(path: Path) -> None:
        path.unlink(missing_ok=True)

    @staticmethod
    def set_aside(path: Path) -> None:
        """Keep an unreadable file for a person to look at, out of the replay's way."""
        with contextlib.suppress(OSError):
            path.rename(path.with_suffix(".unreadable"))


async def pushed_before(client: RegistryClient, reference: str, key: str) -> str | None:
    """The digest of the image `reference` (a staging tag) names when its config carries
    the label `IDEMPOTENCY_LABEL` = `key`: the result of this very job, pushed by a worker
    that lost it before recording. None when absent, different, or unreadable."""
    ref = parse_reference(reference)
    try:
        manifest = await client.get_manifest(ref)
        if manifest.is_index or manifest.config is None:
            return None
        config = json.loads(await client.get_blob(ref, manifest.config.digest))
    except (AibrixError, ValueError) as error:
        log.info("no reusable image at %s (%s)", reference, type(error).__name__)
        return None
    labels = (config.get("config") or {}).get("Labels") or {}
    if isinstance(labels, dict) and labels.get(IDEMPOTENCY_LABEL) == key:
        return manifest.digest
    return None
