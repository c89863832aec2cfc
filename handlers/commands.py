"""`/aibrix ...`: parse, ack at once, do the work after the ack, answer via response_url.

Invalid input is answered in the ack itself (ephemeral) and nothing else happens: the
sender's `user_id` and `channel_id` are checked first, then the text, then the
permission table; only then is the delivery claimed. A `response_url` that fails is
logged once (never the URL) and changes nothing else.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

from redis.exceptions import RedisError
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from handlers import blocks, messages
from handlers.context import (
    Deps,
    confirm_delivery,
    first_delivery,
    forget_delivery,
    permission_refusal,
    post_status_message,
)
from handlers.parse import (
    CancelCommand,
    Command,
    HelpCommand,
    InspectCommand,
    ParseError,
    PlanCommand,
    ReleaseCommand,
    RetryCommand,
    StatusCommand,
    SyncCommand,
    command_delivery,
    command_origin,
    parse_command,
)
from handlers.sync import audit_sync_refusal, run_sync_command
from jobs.domain.config import Config
from jobs.domain.errors import InvalidInput, NotFound
from jobs.domain.inspect_scope import admitted, configured_locations
from jobs.domain.permissions import Action
from jobs.tools.source import SourceError
from jobs.usecases.pipeline import cancel_notes
from jobs.usecases.plan import shown_findings

log = logging.getLogger("aibrix.bot")

Ack = Callable[..., Awaitable[None]]
Respond = Callable[..., Awaitable[Any]]

# Commands that change something: each delivery of one is claimed in Redis, so that a
# redelivery of one already handled does nothing (inspect and status only read).
CHANGING = (ReleaseCommand, SyncCommand, CancelCommand, RetryCommand)


def command_action(command: Command) -> Action:
    """What the permission table calls this command."""
    if isinstance(command, ReleaseCommand):
        # Superseding a promoted version is its own, narrower role (approvers by default).
        return Action.SUPERSEDE if command.supersede else Action.RELEASE
    if isinstance(command, SyncCommand):
        return Action.SYNC
    if isinstance(command, CancelCommand):
        return Action.CANCEL
    if isinstance(command, RetryCommand):
        return Action.RETRY
    if isinstance(command, InspectCommand):
        return Action.INSPECT
    if isinstance(command, PlanCommand):
        return Action.PLAN  # read-only: whoever may inspect may see what a release would do
    return Action.STATUS


def ack_text(command: Command) -> str:
    if isinstance(command, ReleaseCommand):
        supersede = " --supersede" if command.supersede else ""
        return messages.slack_working(f"release {command.plan.version}{supersede}")
    if isinstance(command, InspectCommand):
        return messages.slack_working(f"inspect {command.reference}")
    if isinstance(command, PlanCommand):
        return messages.slack_working(f"plan {command.plan.version}")
    if isinstance(command, SyncCommand):
        return messages.slack_working(f"sync {command.version} to {command.mirror}")
    if isinstance(command, CancelCommand):
        return messages.slack_working(f"cancel {command.version}")
    if isinstance(command, RetryCommand):
        return messages.slack_working(f"retry {command.version}")
    return messages.slack_working("status")


def inspect_in_scope(config: Config, command: InspectCommand) -> InspectCommand | str:
    """The command with its reference spelled as the config names the registry, or the
    refusal when the reference is on no registry the config names (`jobs.domain.inspect_scope`)."""
    locations = configured_locations(config.repository, config.mirrors)
    reference = admitted(locations, command.reference)
    if reference is None:
        return messages.inspect_not_configured(str(command.reference), locations)
    return replace(command, reference=reference)


async def _answer(respond: Respond, message: blocks.Message) -> bool:
    """Answer through Slack's response_url; False (logged once) when that failed. Never
    raises: the work is done and acked, and a lost answer must not become a second
    failure. The log says what failed, never the URL (a capability) or the answer."""
    try:
        sent = await respond(response_type="ephemeral", text=message.text, blocks=message.blocks)
    except Exception as error:  # any failure of the URL: connection, timeout, no URL at all
        log.warning("answer not delivered: the response_url failed (%s)", type(error).__name__)
        return False
    status = getattr(sent, "status_code", 200)
    if not isinstance(status, int) or status >= 400:
        log.warning("answer not delivered: the response_url answered HTTP %s", status)
        return False
    return True


async def on_command(
    deps: Deps,
    ack: Ack,
    body: Mapping[str, Any],
    respond: Respond,
    client: AsyncWebClient,
) -> None:
    origin = command_origin(body)
    if isinstance(origin, ParseError):
        error = blocks.error_message(origin.message)
        await ack(response_type="ephemeral", text=error.text, blocks=error.blocks)
        return
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
        deps, client, command_action(parsed), origin.user, origin.channel
    )
    if refusal is not None:
        error = blocks.refusal(refusal)
        await ack(response_type="ephemeral", text=error.text, blocks=error.blocks)
        if isinstance(parsed, SyncCommand):
            # Every sync, refused or done, is audited; after the ack (Slack's 3 s).
            try:
                await audit_sync_refusal(deps, parsed, origin.user, origin.channel, refusal)
            except RedisError as failure:
                log.warning("sync refusal not audited, Redis failed (%s)", type(failure).__name__)
        return
    if isinstance(parsed, InspectCommand):
        scoped = inspect_in_scope(deps.config, parsed)
        if isinstance(scoped, str):  # refused before any connection
            error = blocks.error_message(scoped)
            await ack(response_type="ephemeral", text=error.text, blocks=error.blocks)
            return
        parsed = scoped
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
        changed = await run_command(
            deps, parsed, origin.user, origin.channel, respond, client, request_id=identity
        )
        if changed:
            await confirm_delivery(deps, identity)
        else:
            await forget_delivery(deps, identity)
    except (InvalidInput, NotFound) as error:  # the branches: bad input, no such release
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
    user: str,
    channel: str,
    respond: Respond,
    client: AsyncWebClient,
    *,
    request_id: str | None = None,
) -> bool:
    """Run a valid, permitted command of `user` in `channel`; True when it changed
    something (started, cancelled, synced).

    `request_id` identifies the Slack delivery: a redelivery of a release or retry whose
    first handling died after starting the run gets that run back and finishes the work
    (posts the live message if it is missing, answers), instead of a second run or an
    "already running"."""
    pipeline = deps.pipeline
    if isinstance(command, ReleaseCommand):
        release, created = await pipeline.request_release(
            command.plan,
            user,
            channel,
            supersede=command.supersede,
            request_id=request_id or "",
        )
        if not created:
            await _answer(
                respond,
                blocks.plain(
                    messages.slack_release_running(
                        str(release.version), release.run_id, release.state.value
                    )
                ),
            )
            return False
        await post_status_message(deps, client, release)
        started = messages.slack_release_started(str(release.version), release.run_id)
        shown = await shown_findings(
            deps.config, command.plan.version, release.components, release.source_ref
        )
        await _answer(respond, blocks.plain(started if shown is None else f"{started}\n{shown}"))
        return True
    if isinstance(command, InspectCommand):
        inspection = await deps.inspector.inspect(command.reference)
        subject = (
            f"{command.component} {command.reference.tag}"
            if command.component and command.reference.tag
            else str(command.reference)
        )
        await _answer(respond, blocks.inspection_message([subject], [inspection]))
        return False
    if isinstance(command, PlanCommand):
        plan = command.plan
        try:
            made = await deps.inspector.plan(plan.version, plan.components, plan.platforms)
        except SourceError as error:  # the source cannot be read: say why, nothing changed
            await _answer(respond, blocks.error_message(str(error)))
            return False
        await _answer(respond, blocks.plan_message(made))
        return False
    if isinstance(command, StatusCommand):
        releases = await pipeline.status(command.version)
        await _answer(respond, blocks.status_message(releases))
        return False
    if isinstance(command, SyncCommand):

        async def answer(message: blocks.Message) -> None:
            await _answer(respond, message)

        return await run_sync_command(deps, command, user, channel, client, answer)
    # Cancel and retry were permitted by the table (`cancel`, `retry`) in on_command.
    if isinstance(command, CancelCommand):
        release = await pipeline.cancel(command.version, user, channel)
        deps.touch(release)
        # What the cancel could not undo: the release tags already written stay.
        lines = [messages.slack_cancelled(str(release.version), user), *cancel_notes(release)]
        await _answer(respond, blocks.plain("\n".join(lines)))
        return True
    if isinstance(command, RetryCommand):
        release, failed = await pipeline.retry(
            command.version, user, channel, request_id=request_id or ""
        )
        if not release.status_ts:
            await post_status_message(deps, client, release)
        await _answer(
            respond,
            blocks.plain(messages.slack_retrying(str(release.version), failed, release.run_id)),
        )
        return True
    return False
