"""`/aibrix ...`: parse, ack at once, do the work after the ack, answer via response_url.

Invalid input is answered in the ack itself (ephemeral) and nothing else happens.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from redis.exceptions import RedisError
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot import blocks, messages
from handlers.context import (
    Deps,
    confirm_delivery,
    first_delivery,
    forget_delivery,
    permission_refusal,
    post_status_message,
    user_groups,
)
from handlers.parse import (
    CancelCommand,
    Command,
    HelpCommand,
    InspectCommand,
    ParseError,
    ReleaseCommand,
    RetryCommand,
    StatusCommand,
    SyncCommand,
    command_delivery,
    parse_command,
)
from jobs.approvals import may_change_run
from jobs.inspection import inspect_reference
from jobs.permissions import Action
from jobs.pipeline import ReleaseInputError, ReleaseNotFound
from jobs.registry import RegistryClient

log = logging.getLogger("aibrix.bot")

Ack = Callable[..., Awaitable[None]]
Respond = Callable[..., Awaitable[Any]]

# Commands that change something: each delivery of one is claimed in Redis, so that a
# redelivery of one already handled does nothing (inspect and status only read).
CHANGING = (ReleaseCommand, SyncCommand, CancelCommand, RetryCommand)


def command_action(command: Command) -> Action:
    """What the permission table calls this command."""
    if isinstance(command, ReleaseCommand):
        return Action.RELEASE
    if isinstance(command, SyncCommand):
        return Action.SYNC
    if isinstance(command, CancelCommand):
        return Action.CANCEL
    if isinstance(command, RetryCommand):
        return Action.RETRY
    if isinstance(command, InspectCommand):
        return Action.INSPECT
    return Action.STATUS


def ack_text(command: Command) -> str:
    if isinstance(command, ReleaseCommand):
        return messages.slack_working(f"release {command.plan.version}")
    if isinstance(command, InspectCommand):
        return messages.slack_working(f"inspect {command.reference}")
    if isinstance(command, SyncCommand):
        return messages.slack_working(f"sync {command.version} to {command.mirror}")
    if isinstance(command, CancelCommand):
        return messages.slack_working(f"cancel {command.version}")
    if isinstance(command, RetryCommand):
        return messages.slack_working(f"retry {command.version}")
    return messages.slack_working("status")


async def _answer(respond: Respond, message: blocks.Message) -> None:
    await respond(response_type="ephemeral", text=message.text, blocks=message.blocks)


async def on_command(
    deps: Deps,
    ack: Ack,
    body: Mapping[str, Any],
    respond: Respond,
    client: AsyncWebClient,
) -> None:
    text = str(body.get("text") or "")
    parsed = parse_command(text, deps.config)
    if isinstance(parsed, ParseError):
        error = blocks.error_message(parsed.message)
        await ack(response_type="ephemeral", text=error.text, blocks=error.blocks)
        return
    if isinstance(parsed, HelpCommand):
        help_ = blocks.plain(messages.slack_help())
        await ack(response_type="ephemeral", text=help_.text, blocks=help_.blocks)
        return
    refusal = await permission_refusal(
        deps,
        client,
        command_action(parsed),
        str(body.get("user_id") or ""),
        str(body.get("channel_id") or ""),
    )
    if refusal is not None:
        error = blocks.error_message(refusal)
        await ack(response_type="ephemeral", text=error.text, blocks=error.blocks)
        return
    identity = command_delivery(body) if isinstance(parsed, CHANGING) else None
    try:
        first = await first_delivery(deps, identity)
    except RedisError as error:
        log.warning("delivery not claimed, Redis failed (%s)", type(error).__name__)
        identity, first = None, True  # the command itself will meet Redis and say so
    if not first:
        await ack()
        return
    await ack(response_type="ephemeral", text=ack_text(parsed))
    # Bolt answered Slack when ack() was called; the rest runs after the HTTP response.
    try:
        changed = await run_command(deps, parsed, body, respond, client, request_id=identity)
        if changed:
            await confirm_delivery(deps, identity)
        else:
            await forget_delivery(deps, identity)
    except (ReleaseInputError, ReleaseNotFound) as error:
        await forget_delivery(deps, identity)
        await _answer(respond, blocks.error_message(str(error)))
    except SlackApiError as error:
        # Not done: no claim is kept, so Slack's redelivery tries again (a release gets
        # its run back and finishes, see run_command).
        await forget_delivery(deps, identity)
        log.warning("Slack refused a call: %s", error.response.get("error"))
        await _answer(respond, blocks.error_message(messages.slack_internal_error(text[:40])))
    except Exception:
        await forget_delivery(deps, identity)
        log.exception("command failed")
        await _answer(respond, blocks.error_message(messages.slack_internal_error("the command")))


async def run_command(
    deps: Deps,
    command: Command,
    body: Mapping[str, Any],
    respond: Respond,
    client: AsyncWebClient,
    *,
    request_id: str | None = None,
) -> bool:
    """Run a valid command; True when it changed something (started, cancelled, synced).

    `request_id` identifies the Slack delivery: a redelivery of a release or retry whose
    first handling died after starting the run gets that run back and finishes the work
    (posts the live message if it is missing, answers), instead of a second run or an
    "already running"."""
    user = str(body.get("user_id") or "")
    channel = str(body.get("channel_id") or "")
    pipeline = deps.pipeline
    if isinstance(command, ReleaseCommand):
        release, created = await pipeline.request_release(
            command.plan, user, channel, request_id=request_id or ""
        )
        if not created:
            await _answer(
                respond,
                blocks.plain(
                    messages.slack_release_running(
                        release.version, release.run_id, release.state.value
                    )
                ),
            )
            return False
        await post_status_message(deps, client, release)
        await _answer(
            respond, blocks.plain(messages.slack_release_started(release.version, release.run_id))
        )
        return True
    if isinstance(command, InspectCommand):
        async with RegistryClient(deps.registry) as registry:
            inspection = await inspect_reference(registry, command.reference, deps.config.platforms)
        subject = (
            f"{command.component} {command.reference.tag}"
            if command.component and command.reference.tag
            else str(command.reference)
        )
        await _answer(respond, blocks.inspection_message([subject], [inspection]))
        return False
    if isinstance(command, StatusCommand):
        releases = await pipeline.status(command.version)
        await _answer(respond, blocks.status_message(releases))
        return False
    if isinstance(command, SyncCommand):
        await _answer(respond, await run_sync(deps, command))
        return True
    if isinstance(command, CancelCommand | RetryCommand):
        current = (await pipeline.status(command.version))[0]
        groups = await user_groups(deps, client, user)
        if not may_change_run(deps.config.approval, user, groups, current.requested_by):
            verb = "cancel" if isinstance(command, CancelCommand) else "retry"
            await _answer(respond, blocks.error_message(messages.slack_not_allowed(user, verb)))
            return False
        if isinstance(command, CancelCommand):
            release = await pipeline.cancel(command.version, user)
            deps.touch(release)
            await _answer(respond, blocks.plain(messages.slack_cancelled(release.version, user)))
            return True
        release, failed = await pipeline.retry(command.version, user, request_id=request_id or "")
        if not release.status_ts:
            await post_status_message(deps, client, release)
        await _answer(
            respond,
            blocks.plain(messages.slack_retrying(release.version, failed, release.run_id)),
        )
        return True
    return False


async def run_sync(deps: Deps, command: SyncCommand) -> blocks.Message:
    """Run the mirror sync engine if this build has it."""
    try:
        from jobs.sync import parse_sync_request, sync_release, sync_report_data
    except ImportError:
        return blocks.plain(messages.slack_sync_unavailable())
    request = parse_sync_request(deps.config, command.version, [command.mirror])
    async with RegistryClient(deps.registry) as registry:
        report = await sync_release(registry, deps.config, request.version, request.mirrors)
    text = messages.sync_report_text(sync_report_data(report))
    return blocks.Message(
        blocks.escape(text[:2900]), blocks.table_sections(blocks.escape(text).split("\n"), 10)
    )
