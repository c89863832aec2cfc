"""`/aibrix sync VERSION MIRROR [--ready]`: decide, audit, queue a sync job, post its
live message. The copy itself runs in a worker (`jobs.usecases.sync_job.run_sync`), never here.

The mirror is a configured name (the parser refuses anything else). The sync role was
checked by `on_command`; here the release must be promoted, or ready with an approver
asking `--ready` (`jobs.domain.sync_gate`), and its release tags must still hold the digests
that were approved or verified. Every refusal and every queued sync is in the audit
stream; a refusal repeated by the same user is recorded once an hour.
"""

from __future__ import annotations

import logging

from slack_sdk.web.async_client import AsyncWebClient

from handlers import blocks, messages
from handlers.context import Answered, Deps, permission_refusal
from handlers.parse import SyncCommand
from jobs.domain import messages as core_messages
from jobs.domain.permissions import Action
from jobs.domain.release import Release
from jobs.domain.sync_gate import sync_decision
from jobs.usecases.sync_job import (
    record_sync_refusal,
    record_sync_request,
    request_sync,
    set_sync_message,
    sync_job,
)

log = logging.getLogger("aibrix.bot")


async def audit_sync_refusal(
    deps: Deps,
    command: SyncCommand,
    user: str,
    where: str,
    reason: str,
    release: Release | None = None,
) -> None:
    """A refused sync, in the audit stream: who, the mirror, why (once per hour each)."""
    await record_sync_refusal(
        deps.syncs,
        command.version,
        release.run_id if release is not None else "",
        command.mirror,
        _mode_word(command),
        user,
        where,
        reason,
    )


def _mode_word(command: SyncCommand) -> str:
    return "ready" if command.ready else "promoted"


def _link(channel: str, ts: str) -> str:
    return f"https://slack.com/archives/{channel}/p{ts.replace('.', '')}"


async def _drift(deps: Deps, release: Release, digests: dict[str, str]) -> str | None:
    """Why the release tags no longer hold the digests to copy (None: they do). The
    worker's copy is gated on the same digests; this answers at once, before queueing."""
    readings = await deps.inspector.release_tags(release)
    if any(readings[c].unreadable for c in digests):
        return messages.sync_refused_unreadable(str(release.version))
    moved = [
        core_messages.sync_source_moved(
            core_messages.sync_subject(c, str(release.version)), d, str(readings[c].digest)
        )
        for c, d in digests.items()
        if readings[c].digest != d
    ]
    return core_messages.sync_refused_moved(str(release.version), moved) if moved else None


async def run_sync_command(
    deps: Deps,
    command: SyncCommand,
    user: str,
    channel: str,
    client: AsyncWebClient,
) -> Answered:
    """The answer; changed when a sync job was queued."""
    pipeline = deps.pipeline
    config = deps.config
    release = await pipeline.find_run(command.version)
    approver = False
    if command.ready and release is not None:
        approver = await permission_refusal(deps, client, Action.APPROVE, user, channel) is None
    decision = sync_decision(
        release,
        command.version,
        ready_asked=command.ready,
        approver=approver,
        user=user,
        approvers=config.permissions.grant(Action.APPROVE).describe(),
    )
    refusal = decision.refusal
    if refusal is None:
        assert release is not None
        refusal = await _drift(deps, release, dict(decision.digests))
    if refusal is not None:
        await audit_sync_refusal(deps, command, user, channel, refusal, release)
        # Not escaped: the sentence holds only validated values and mentions we made.
        return Answered(blocks.plain(":warning: " + refusal))
    assert release is not None
    job = sync_job(release, command.mirror, decision.digests, user, channel, decision.mode)
    requested = await request_sync(deps.syncs, job, config.mirrors[command.mirror])
    record = requested.record
    if not requested.added:
        link = (
            _link(record.status_channel, record.status_ts)
            if record is not None and record.status_ts
            else None
        )
        return Answered(
            blocks.plain(messages.sync_already_running(command.version, command.mirror, link))
        )
    assert record is not None
    await record_sync_request(
        deps.syncs, release, job, command.mirror, decision.mode.value, user, channel
    )
    message = blocks.sync_message(record)
    posted = await client.chat_postMessage(
        channel=channel, text=message.text, blocks=message.blocks
    )
    await set_sync_message(
        deps.syncs, record, str(posted.get("channel") or channel), str(posted["ts"])
    )
    deps.touch_sync(record.id)
    return Answered(blocks.plain(messages.sync_queued(command.version, command.mirror)), True)
