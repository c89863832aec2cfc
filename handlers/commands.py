"""`/aibrix ...`: parse, ack at once, do the work after the ack, answer via response_url.

Invalid input is answered in the ack itself (ephemeral) and nothing else happens: the
sender's `user_id` and `channel_id` are checked first, then the text, then the
permission table; only then is the delivery claimed. A `response_url` that fails is
logged once (never the URL) and changes nothing else.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

from redis.exceptions import RedisError
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from handlers import blocks, messages
from handlers.context import (
    Answered,
    Deps,
    confirm_delivery,
    first_delivery,
    forget_delivery,
    permission_refusal,
    post_status_message,
)
from handlers.parse import (
    CancelCommand,
    CardCommand,
    Command,
    HelpCommand,
    InspectCommand,
    NightlyCommand,
    ParseError,
    PlanCommand,
    ReleaseCommand,
    RetryCommand,
    StatusCommand,
    SyncCommand,
    WorkersCommand,
    command_delivery,
    command_origin,
    parse_command,
)
from handlers.sync import audit_sync_refusal, run_sync_command
from jobs.domain import messages as core_messages
from jobs.domain.config import Config
from jobs.domain.errors import InvalidInput, NotFound
from jobs.domain.fleet import FleetView
from jobs.domain.inspect_scope import admitted, configured_locations
from jobs.domain.permissions import Action
from jobs.domain.references import Reference
from jobs.domain.release import Release
from jobs.tools.source import SourceError
from jobs.usecases.nightly import plan_nightly, request_nightly
from jobs.usecases.pipeline import cancel_notes
from jobs.usecases.plan import shown_findings

log = logging.getLogger("aibrix.bot")

Ack = Callable[..., Awaitable[None]]
Respond = Callable[..., Awaitable[Any]]

# Commands that change something: each delivery of one is claimed in Redis, so that a
# redelivery of one already handled does nothing (inspect and status only read).
CHANGING = (ReleaseCommand, SyncCommand, CancelCommand, RetryCommand, NightlyCommand)


def command_action(command: Command) -> Action:
    """What the permission table calls this command."""
    if isinstance(command, ReleaseCommand):
        # Superseding a promoted version is its own, narrower role (approvers by default).
        return Action.SUPERSEDE if command.supersede else Action.RELEASE
    if isinstance(command, SyncCommand):
        return Action.SYNC
    if isinstance(command, NightlyCommand):
        return Action.NIGHTLY
    if isinstance(command, CancelCommand):
        return Action.CANCEL
    if isinstance(command, RetryCommand):
        return Action.RETRY
    if isinstance(command, InspectCommand):
        return Action.INSPECT
    if isinstance(command, CardCommand):
        # Read-only either way; asked as `status COMPONENT` it is what status may see.
        return Action.STATUS if command.via == "status" else Action.INSPECT
    if isinstance(command, PlanCommand):
        return Action.PLAN  # read-only: whoever may inspect may see what a release would do
    return Action.STATUS


def ack_text(command: Command) -> str:
    if isinstance(command, ReleaseCommand):
        supersede = " --supersede" if command.supersede else ""
        return messages.slack_working(f"release {command.plan.version}{supersede}")
    if isinstance(command, InspectCommand):
        return messages.slack_working(f"inspect {command.reference}")
    if isinstance(command, CardCommand):
        return messages.slack_working(f"{command.via} {command.component}")
    if isinstance(command, PlanCommand):
        return messages.slack_working(f"plan {command.plan.version}")
    if isinstance(command, SyncCommand):
        return messages.slack_working(f"sync {command.version} to {command.mirror}")
    if isinstance(command, CancelCommand):
        return messages.slack_working(f"cancel {command.version}")
    if isinstance(command, RetryCommand):
        return messages.slack_working(f"retry {command.version}")
    if isinstance(command, NightlyCommand):
        return messages.slack_working(f"nightly {command.branch}")
    if isinstance(command, WorkersCommand):
        return messages.slack_working("workers")
    return messages.slack_working("status")


async def _fleet(deps: Deps) -> FleetView | None:
    """The fleet's view, or None when it cannot be read (the answer says so)."""
    if deps.fleet is None:
        return None
    try:
        return await deps.fleet.view()
    except RedisError as error:
        log.warning("fleet not read, Redis failed (%s)", type(error).__name__)
        return None


def inspect_in_scope(config: Config, command: InspectCommand) -> InspectCommand | str:
    """The command with its reference spelled as the config names the registry, or the
    refusal when the reference is on no registry the config names (`jobs.domain.inspect_scope`)."""
    locations = configured_locations(
        config.repository, config.mirrors, publish=config.publish_locations
    )
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
    outcome = await _on_command(deps, ack, body, respond, client)
    if deps.metrics is not None:
        deps.metrics.command(command_name(str(body.get("text") or "")), outcome)


def command_name(text: str) -> str:
    """The subcommand a metric counts: a known one's name, else `other` (user text never
    becomes a label value)."""
    words = text.split()
    name = words[0].lower() if words else "help"
    return name if name in messages.SLACK_USAGE else "other"


async def _on_command(
    deps: Deps,
    ack: Ack,
    body: Mapping[str, Any],
    respond: Respond,
    client: AsyncWebClient,
) -> str:
    """Answer one slash command; its outcome, for the metrics."""
    origin = command_origin(body)
    if isinstance(origin, ParseError):
        error = blocks.error_message(origin.message)
        await ack(response_type="ephemeral", text=error.text, blocks=error.blocks)
        return "invalid"
    text = str(body.get("text") or "")
    parsed = parse_command(text, deps.config)
    if isinstance(parsed, ParseError):
        error = blocks.error_message(parsed.message)
        await ack(response_type="ephemeral", text=error.text, blocks=error.blocks)
        return "invalid"
    if isinstance(parsed, HelpCommand):
        help_ = blocks.plain(messages.slack_help())
        await ack(response_type="ephemeral", text=help_.text, blocks=help_.blocks)
        return "ok"
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
        return "refused"
    if isinstance(parsed, InspectCommand):
        scoped = inspect_in_scope(deps.config, parsed)
        if isinstance(scoped, str):  # refused before any connection
            error = blocks.error_message(scoped)
            await ack(response_type="ephemeral", text=error.text, blocks=error.blocks)
            return "refused"
        parsed = scoped
    identity = command_delivery(body) if isinstance(parsed, CHANGING) else None
    try:
        first = await first_delivery(deps, identity)
    except RedisError as error:
        log.warning("delivery not claimed, Redis failed (%s)", type(error).__name__)
        identity, first = None, True  # the command itself will meet Redis and say so
    if not first:
        await ack()
        return "duplicate"
    await ack(response_type="ephemeral", text=ack_text(parsed))
    # Bolt answered Slack when ack() was called; the rest runs after the HTTP response.
    try:
        answered = await run_command(
            deps, parsed, origin.user, origin.channel, client, request_id=identity
        )
        if answered.changed:
            await confirm_delivery(deps, identity)
        else:
            await forget_delivery(deps, identity)
    except (InvalidInput, NotFound) as error:  # the branches: bad input, no such release
        await forget_delivery(deps, identity)
        await _answer(respond, blocks.error_message(str(error)))
        return "not_found" if isinstance(error, NotFound) else "invalid"
    except SlackApiError as error:
        # Not done: no claim is kept, so Slack's redelivery tries again (a release gets
        # its run back and finishes, see run_command).
        await forget_delivery(deps, identity)
        log.warning("Slack refused a call: %s", error.response.get("error"))
        await _answer(respond, blocks.error_message(messages.slack_internal_error(text[:40])))
        return "error"
    except Exception:
        await forget_delivery(deps, identity)
        log.exception("command failed")
        await _answer(respond, blocks.error_message(messages.slack_internal_error("the command")))
        return "error"
    await _answer(respond, answered.message)
    return "ok"


async def run_command(
    deps: Deps,
    command: Command,
    user: str,
    channel: str,
    client: AsyncWebClient,
    *,
    request_id: str | None = None,
) -> Answered:
    """Run a valid, permitted command of `user` in `channel`: its answer, changed when it
    started, cancelled or synced something.

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
            return Answered(_running(release))
        await post_status_message(deps, client, release)
        started = messages.slack_release_started(str(release.version), release.run_id)
        shown = await shown_findings(
            deps.config, command.plan.version, release.components, release.source_ref
        )
        return Answered(blocks.plain(started if shown is None else f"{started}\n{shown}"), True)
    if isinstance(command, NightlyCommand):
        return await _run_nightly(deps, command, user, channel, client, request_id)
    if isinstance(command, InspectCommand):
        if command.component and command.reference.tag:
            return Answered(await _tag_everywhere(deps, command.component, command.reference))
        inspection = await deps.inspector.inspect(command.reference)
        return Answered(blocks.inspection_message([str(command.reference)], [inspection]))
    if isinstance(command, CardCommand):
        releases = await pipeline.status(None)
        return Answered(blocks.card_message(await deps.inspector.card(command.component, releases)))
    if isinstance(command, PlanCommand):
        plan = command.plan
        try:
            made = await deps.inspector.plan(plan.version, plan.components, plan.platforms)
        except SourceError as error:  # the source cannot be read: say why, nothing changed
            return Answered(blocks.error_message(str(error)))
        return Answered(blocks.plan_message(made))
    if isinstance(command, StatusCommand):
        return Answered(blocks.status_message(await pipeline.status(command.version)))
    if isinstance(command, WorkersCommand):
        return Answered(blocks.workers_message(await _fleet(deps), deps.config.platforms))
    if isinstance(command, SyncCommand):
        return await run_sync_command(deps, command, user, channel, client)
    # Cancel and retry were permitted by the table (`cancel`, `retry`) in on_command.
    if isinstance(command, CancelCommand):
        release = await pipeline.cancel(command.version, user, channel)
        deps.touch(release)
        # What the cancel could not undo: the release tags already written stay.
        lines = [messages.slack_cancelled(str(release.version), user), *cancel_notes(release)]
        return Answered(blocks.plain("\n".join(lines)), True)
    if isinstance(command, RetryCommand):
        release, failed = await pipeline.retry(
            command.version, user, channel, request_id=request_id or ""
        )
        if not release.status_ts:
            await post_status_message(deps, client, release)
        started = core_messages.retry_started(str(release.version), failed, release.run_id)
        return Answered(blocks.plain(started), True)
    raise AssertionError(f"no handler for {type(command).__name__}")


def _running(release: Release) -> blocks.Message:
    """The answer to a release or nightly whose run is already going."""
    return blocks.plain(
        messages.slack_release_running(str(release.version), release.run_id, release.state.value)
    )


async def _tag_everywhere(deps: Deps, component: str, reference: Reference) -> blocks.Message:
    """`/aibrix inspect COMPONENT TAG`: the tag's inspection at the source, as always, and
    beside it what every registry and mirror holds under the tag, read at the same time."""
    tag = reference.tag or ""
    try:
        releases = await deps.pipeline.status(None)
    except RedisError as error:  # the records only name the release's digest: go without
        log.warning("release records not read, Redis failed (%s)", type(error).__name__)
        releases = []

    inspection, everywhere = await asyncio.gather(
        deps.inspector.inspect(reference), deps.inspector.card(component, releases, only_tag=tag)
    )
    return blocks.inspection_with_card(f"{component} {tag}", inspection, everywhere)


async def _run_nightly(
    deps: Deps,
    command: NightlyCommand,
    user: str,
    channel: str,
    client: AsyncWebClient,
    request_id: str | None,
) -> Answered:
    """`/aibrix nightly [BRANCH]`: the branch head resolved, its run started (or the run of
    that commit already going answered), the live message posted."""
    try:
        request = await plan_nightly(deps.pipeline, command.branch)
    except SourceError as error:  # no such branch, or the source cannot be read
        return Answered(blocks.error_message(str(error)))
    release, created = await request_nightly(
        deps.pipeline, request, user, channel, request_id=request_id or ""
    )
    if not created:
        return Answered(_running(release))
    await post_status_message(deps, client, release)
    started = messages.slack_nightly_started(request.branch, request.revision, release.run_id)
    return Answered(blocks.plain(started), True)
