"""What a click on a ready release does to it: approve, block on drift, reject, confirm.

The decisions (who may click, what the re-check found, whether the count is complete)
are `jobs.domain.approvals`'s; the Slack adapter (`handlers.actions`) claims the
delivery and answers. `Approvals` holds the writes in between as named operations on the
release store and the job queue it is handed (by the bot, through `handlers.context.Deps`),
so the adapter calls a use case instead of reaching into the store and the queue.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from jobs.domain.release import ApprovalResult, Release, State
from jobs.store.queue import Queue
from jobs.store.releases import ReleaseStore
from jobs.usecases.promote import promote_job


@dataclass(frozen=True)
class Approvals:
    store: ReleaseStore
    queue: Queue

    async def block_on_drift(self, release: Release, user: str, reason: str, where: str) -> None:
        """The click-time re-check found the published digests moved, or a dependency
        image without a required platform: block the run with the reason (audited)."""
        await self.store.transition(
            release.version,
            release.run_id,
            [State.READY, State.APPROVED],
            State.BLOCKED,
            actor=user,
            reason=reason,
            where=where,
        )
        await self.store.audit(
            release.version, release.run_id, user, "approval-refused", reason, where
        )

    async def approve(
        self, release: Release, user: str, verified: Mapping[str, str], where: str
    ) -> tuple[ApprovalResult, Release | None]:
        """Record `user`'s approval of the digests they saw; the result and the run after."""
        result = await self.store.add_approval(
            release.version, release.run_id, user, verified, where
        )
        if not result.accepted:
            return result, None
        return result, await self.store.load(release.version, release.run_id)

    async def start_promotion(self, release: Release, user: str, where: str) -> bool:
        """Move a ready run to approved and queue its one promotion; False if it was not
        ready."""
        if not await self.store.transition(
            release.version, release.run_id, [State.READY], State.APPROVED, actor=user, where=where
        ):
            return False
        await self.queue.enqueue(promote_job(release))
        return True

    async def reject(self, release: Release, user: str, reason: str, where: str) -> None:
        """Block a ready or approved run at an approver's word (audited when it moved)."""
        moved = await self.store.transition(
            release.version,
            release.run_id,
            [State.READY, State.APPROVED],
            State.BLOCKED,
            actor=user,
            reason=reason,
            where=where,
        )
        if moved:
            await self.store.audit(release.version, release.run_id, user, "rejected", reason, where)

    async def confirm_overwrite(
        self, release: Release, pending: Mapping[str, str], user: str, where: str
    ) -> bool:
        """Confirm overwriting these mirror tags (holding these digests) and queue the
        promotion that does it; False when this very decision was confirmed already."""
        if not await self.store.confirm_overwrites(release.version, release.run_id, pending):
            return False
        detail = "; ".join(f"{target} held {digest}" for target, digest in sorted(pending.items()))
        await self.store.audit(
            release.version, release.run_id, user, "overwrite-confirmed", detail, where
        )
        await self.queue.enqueue(promote_job(release, pending))
        return True

    async def audit_refusal(
        self, release: Release, user: str, action: str, reason: str, where: str
    ) -> None:
        """Audit a refused click, once per run, user and action."""
        await self.store.audit_refusal(release.version, release.run_id, user, action, reason, where)
