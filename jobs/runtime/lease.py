"""Keeping a job's lease while it runs, through Redis errors.

A renewal that fails (Redis restarting, a network blip, a stalled server) is retried with
backoff, each failure logged, for as long as the lease still has time left. When it has
not (the last successful renewal is nearly a lease ago), the keeper gives the lease up
*before* another worker may reclaim the job: it calls `on_lost`, which stops the build.
Another worker's reclaim takes a new lease token (the delivery count), so even a build
that outlived its lease cannot record its result: the record is fenced by the token.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from redis.exceptions import RedisError

from jobs.store.queue import Lease, Queue, backoff_seconds

log = logging.getLogger("aibrix.worker.lease")

RENEW_BACKOFF_BASE_S = 0.2
RENEW_BACKOFF_CAP_S = 2.0


def give_up_at(last_renewed: float, lease_s: float, interval_s: float) -> float:
    """When to give a lease up: before it expires, by enough to stop the build (half a
    renewal interval, at least a quarter of a second, never more than half the lease)."""
    margin = min(max(interval_s / 2, 0.25), lease_s / 2)
    return last_renewed + lease_s - margin


class LeaseKeeper:
    """Renews `lease` every renewal interval until cancelled; `lost` tells why it stopped."""

    def __init__(
        self,
        queue: Queue,
        lease: Lease,
        on_lost: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.queue = queue
        self.lease = lease
        self.on_lost = on_lost
        self.clock = clock
        self.lost: str | None = None
        self.failures = 0
        self.interval_s = queue.settings.renew_interval_s
        self.lease_s = queue.settings.lease_ms / 1000

    def _give_up(self, reason: str) -> None:
        self.lost = reason
        self.on_lost(reason)

    async def check_now(self) -> None:
        """Renew once, at once (a push is about to begin): if the lease has passed to
        another worker, give it up now rather than at the next renewal."""
        if self.lost is not None:
            return
        try:
            kept = await asyncio.wait_for(self.queue.renew(self.lease), timeout=self.interval_s)
        except (RedisError, OSError, TimeoutError) as error:
            log.warning("lease check before push failed (%s)", type(error).__name__)
            return  # the renewal loop decides, within the lease
        if not kept:
            log.warning("lease of job %s lost to another worker before push", self.lease.job.id)
            self._give_up("the lease was lost")

    async def run(self) -> None:
        # The lease was taken (claimed or renewed) no later than now.
        renewed = self.clock()
        while True:
            await asyncio.sleep(self.interval_s)
            failed = 0
            while True:
                deadline = give_up_at(renewed, self.lease_s, self.interval_s)
                left = deadline - self.clock()
                if left <= 0:
                    log.error(
                        "lease of job %s could not be renewed for %.1f s (%d failed attempts);"
                        " stopping its build before another worker may reclaim it",
                        self.lease.job.id,
                        self.clock() - renewed,
                        failed,
                    )
                    self._give_up("the lease could not be renewed")
                    return
                sent = self.clock()
                try:
                    kept = await asyncio.wait_for(
                        self.queue.renew(self.lease), timeout=min(left, self.interval_s)
                    )
                except (RedisError, OSError, TimeoutError) as error:
                    failed += 1
                    self.failures += 1
                    log.warning(
                        "renewing the lease of job %s failed (attempt %d: %s); %.1f s left",
                        self.lease.job.id,
                        failed,
                        type(error).__name__,
                        max(0.0, deadline - self.clock()),
                    )
                    pause = backoff_seconds(failed, RENEW_BACKOFF_BASE_S, RENEW_BACKOFF_CAP_S)
                    await asyncio.sleep(max(0.0, min(pause, deadline - self.clock())))
                    continue
                if not kept:
                    log.warning("lease of job %s lost to another worker", self.lease.job.id)
                    self._give_up("the lease was lost")
                    return
                if failed:
                    log.info(
                        "lease of job %s renewed after %d failed attempts",
                        self.lease.job.id,
                        failed,
                    )
                renewed = sent
                break
