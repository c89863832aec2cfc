"""A run's live message, posted once: claimed, looked for, posted, recorded.

A run started from Slack enters an outbox (`Keys.status_outbox`) in the same atomic step
that creates it; recording its message's channel and ts takes it out. Whoever posts it
(the command handler at once, or the notifier's leader finding it still in the outbox,
as after a bot killed mid-post) first claims the post with a short lease
(`Keys.status_post`, `[queue] claim_seconds`), so two replicas, or a handler and the
notifier, never post it both; a claim whose holder died expires and a later try posts.

Before the first chat.postMessage a marker is set (`Keys.status_post_tried`). A later
poster that finds it looks in the channel first (conversations.history, for the message
whose metadata names the run) and adopts what it finds, so a message Slack accepted just
before its poster died is not posted twice. When that look is not possible (the app
lacks the channels:history or groups:history scope), the message is posted: two
messages are then possible only if the bot died after Slack accepted the post and
before the ts was recorded.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from handlers import blocks
from jobs.domain.release import TERMINAL, Release
from jobs.store.notices import NoticeStore, outbox_member
from jobs.usecases.pipeline import CLI_CHANNEL, Pipeline

log = logging.getLogger("aibrix.notifier")

# Slack message metadata naming the run a live message belongs to.
METADATA_EVENT = "aibrix_release"
# How long the "a post was tried" marker lasts: past any claim lease and redelivery.
TRIED_TTL_SECONDS = 7 * 24 * 3600
# How far back (seconds before the run was created) the channel is searched.
HISTORY_SLACK_SECONDS = 60
HISTORY_LIMIT = 200


def needs_live_message(release: Release) -> bool:
    """Whether the run should have a live message it does not have yet: it is the active
    run, started from Slack, not finished (ready or blocked runs still await a click)."""
    return (
        release.active
        and not release.status_ts
        and release.state not in TERMINAL
        and release.channel != CLI_CHANNEL
    )


def metadata(release: Release) -> dict[str, Any]:
    return {
        "event_type": METADATA_EVENT,
        "event_payload": {"version": str(release.version), "run_id": release.run_id},
    }


def carries_run(message: object, run_id: str) -> bool:
    """Whether a message from conversations.history is the live message of `run_id`."""
    if not isinstance(message, dict):
        return False
    meta = message.get("metadata")
    if not isinstance(meta, dict) or meta.get("event_type") != METADATA_EVENT:
        return False
    payload = meta.get("event_payload")
    return isinstance(payload, dict) and payload.get("run_id") == run_id


async def find_live_message(client: AsyncWebClient, release: Release) -> tuple[str, str] | None:
    """(channel, ts) of the run's live message if the channel already has it."""
    try:
        reply = await client.conversations_history(
            channel=release.channel,
            oldest=f"{max(0.0, release.created_at - HISTORY_SLACK_SECONDS):.6f}",
            limit=HISTORY_LIMIT,
            include_all_metadata=True,
        )
    except SlackApiError as error:
        log.warning(
            "could not look for a live message already posted (%s); posting it",
            error.response.get("error"),
        )
        return None
    for message in reply.get("messages") or []:
        if carries_run(message, release.run_id) and isinstance(message.get("ts"), str):
            return release.channel, message["ts"]
    return None


async def post_live_message(
    pipeline: Pipeline, notices: NoticeStore, client: AsyncWebClient, release: Release
) -> str | None:
    """Post the run's live message unless it has one, and record where it is.

    Returns its ts; None when there is nothing to post (the run finished, was superseded
    or started from the command line) or another poster holds the claim.
    """
    if release.status_ts:
        return release.status_ts
    version, run_id = release.version, release.run_id
    token = uuid.uuid4().hex
    if not await notices.claim_post(version, run_id, token, pipeline.config.queue.claim_seconds):
        return None
    try:
        current = await pipeline.find_run(version, run_id)  # another may have finished
        if current is not None and current.status_ts:
            return current.status_ts
        if current is None or not needs_live_message(current):
            await notices.leave_outbox(outbox_member(version, run_id))
            return None
        found = None
        if not await notices.first_post_try(version, run_id, TRIED_TTL_SECONDS):
            found = await find_live_message(client, current)
        if found is None:
            message = blocks.release_message(current)
            posted = await client.chat_postMessage(
                channel=current.channel,
                text=message.text,
                blocks=message.blocks,
                metadata=metadata(current),
            )
            found = (str(posted.get("channel") or current.channel), str(posted["ts"]))
        await pipeline.record_status_message(version, run_id, *found)
        return found[1]
    finally:
        await notices.drop_post_claim(version, run_id, token)
