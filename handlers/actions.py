"""The release message's buttons: Approve, Reject, Retry failed builds, Confirm overwrite.

Each click, in this order, and nothing is written until all of it says yes:
1. Slack's fields are checked: the clicker's user id, the message clicked (container
   channel and ts), the button's value. Anything missing or malformed is answered and
   nothing else happens.
2. The run the button names is read (never written), and the click must come from that
   run's own status message: same channel, same ts. A copy of the button elsewhere, or
   the button of an earlier run, is refused.
3. The permission table (`handlers.context.permission_refusal`) and then the approval
   policy (`jobs.domain.approvals`) decide.
Only a click that passed claims its Slack delivery and writes. A refused click writes no
delivery key; it is audited once per run, user and action (`ReleaseStore.audit_refusal`),
so a user clicking 200 times leaves one entry (a button of an earlier run, clicked in
good faith, and a button naming no run are answered, not audited). The live message
follows through the events stream; the clicker gets an ephemeral answer.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from handlers import blocks, messages
from handlers.commands import Ack, Respond, _answer
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
    ClickOrigin,
    ParseError,
    action_delivery,
    click_origin,
    parse_button_value,
)
from jobs.domain import messages as core_messages
from jobs.domain.approvals import (
    Click,
    Verdict,
    decide_approval,
    decide_overwrite,
    decide_recheck,
    decide_rejection,
    publish_expected,
    tally,
)
from jobs.domain.approvals import needs_groups as needs_approver_groups
from jobs.domain.errors import InvalidInput, NotFound
from jobs.domain.permissions import APPROVER_ACTIONS, Action, Actor
from jobs.domain.permissions import needs_groups as needs_permission_groups
from jobs.domain.release import Release, pending_overwrites
from jobs.usecases.pipeline import retry_refusal

log = logging.getLogger("aibrix.bot")

# What the audit stream calls a refused click of each button.
REFUSED = {
    Action.APPROVE: "approval-refused",
    Action.REJECT: "rejection-refused",
    Action.RETRY: "retry-refused",
    Action.CONFIRM_OVERWRITE: "overwrite-refused",
}


@dataclass(frozen=True)
class Opened:
    """A click that passed the checks every button shares."""

    origin: ClickOrigin
    click: Click
    release: Release  # the clicked run, which is the version's active run


def on_status_message(release: Release, origin: ClickOrigin) -> bool:
    """Whether the click came from the run's own status message (one was recorded, and
    the click's channel and ts are its)."""
    return bool(release.status_ts) and (release.status_channel, release.status_ts) == (
        origin.channel,
        origin.message_ts,
    )


async def _refuse(
    deps: Deps,
    respond: Respond,
    origin: ClickOrigin,
    release: Release,
    action: Action,
    reason: str,
) -> None:
    """Answer a refused click, audited once per run, user and action; no delivery key."""
    await deps.approvals.audit_refusal(
        release, origin.user, REFUSED[action], reason, origin.channel
    )
    await _answer(respond, blocks.refusal(reason))


async def _clicker_groups(
    deps: Deps, client: AsyncWebClient, action: Action, origin: ClickOrigin, requested_by: str
) -> frozenset[str]:
    """The clicker's user groups among those that can decide this click: the action's
    grant (permission table) and, for the approval buttons, the approver groups. Looked
    up only when a listed user id does not already decide (each lookup is a Slack call)."""
    permissions, policy = deps.config.permissions, deps.config.approval
    actor = Actor(origin.user, channel=origin.channel)
    wanted: dict[str, None] = {}
    if needs_permission_groups(permissions, action, actor, requested_by):
        wanted.update(dict.fromkeys(permissions.grant(action).groups))
    if action in APPROVER_ACTIONS and needs_approver_groups(policy, origin.user):
        wanted.update(dict.fromkeys(policy.approver_groups))
    if not wanted:
        return frozenset()
    return await user_groups(deps, client, origin.user, tuple(wanted))


async def _open_click(
    deps: Deps,
    action: Action,
    body: Mapping[str, Any],
    respond: Respond,
    client: AsyncWebClient,
    now: float,
) -> Opened | None:
    """Steps 1 to 3 of the module docstring but the button's own decision; None once the
    refusal is answered."""
    origin = click_origin(body)
    if isinstance(origin, ParseError):
        await _answer(respond, blocks.error_message(origin.message))
        return None
    actions = body.get("actions")
    first = actions[0] if isinstance(actions, list) and actions else None
    value = parse_button_value(first.get("value") if isinstance(first, Mapping) else None)
    if isinstance(value, ParseError):
        await _answer(respond, blocks.error_message(value.message))
        return None
    clicked = await deps.pipeline.find_run(value.version, value.run_id)
    if clicked is None:
        # No run to hold an audit entry: a forged run id leaves nothing behind.
        await _answer(respond, blocks.error_message(messages.slack_bad_button("no such run")))
        return None
    active = await deps.pipeline.find_run(value.version)
    if active is None or active.run_id != clicked.run_id:
        # A stale button, clicked in good faith: said, not audited.
        reason = core_messages.approval_superseded(str(clicked.version))
        await _answer(respond, blocks.error_message(reason))
        return None
    if not on_status_message(clicked, origin):
        reason = messages.click_not_on_status_message(str(clicked.version))
        await _refuse(deps, respond, origin, clicked, action, reason)
        return None
    groups = await _clicker_groups(deps, client, action, origin, clicked.requested_by)
    refusal = await permission_refusal(
        deps,
        client,
        action,
        origin.user,
        origin.channel,
        requested_by=clicked.requested_by,
        groups=groups,
    )
    if refusal is not None:
        await _refuse(deps, respond, origin, clicked, action, refusal)
        return None
    click = Click(
        user=origin.user,
        user_groups=groups,
        version=str(clicked.version),
        run_id=clicked.run_id,
        active_run_id=active.run_id,
        state=clicked.state,
        requested_by=clicked.requested_by,
        approvals=clicked.approvals,
        verified={c: i.digest for c, i in clicked.indexes.items()},
        now=now,
    )
    return Opened(origin, click, clicked)


async def on_approve(
    deps: Deps,
    ack: Ack,
    body: Mapping[str, Any],
    respond: Respond,
    client: AsyncWebClient,
    now: float,
) -> None:
    await ack()
    opened = await _open_click(deps, Action.APPROVE, body, respond, client, now)
    if opened is None:
        return
    origin, click, release = opened.origin, opened.click, opened.release
    user, where = origin.user, origin.channel
    policy = deps.config.approval
    decision = decide_approval(policy, click)
    if decision.verdict is Verdict.REFUSE:
        await _refuse(deps, respond, origin, release, Action.APPROVE, decision.reason)
        return
    # Claimed before "already approved" too: a redelivery of the click that approved
    # must stay silent, not say "already approved" to its own approver.
    if not await first_delivery(deps, action_delivery(body)):
        return
    if decision.verdict is Verdict.ALREADY:
        await forget_delivery(deps, action_delivery(body))  # nothing was recorded
        counted = tally(policy, release.approvals, click.verified, now, release.requested_by)
        await _answer(respond, blocks.plain(f"{decision.reason}. {counted.text()}"))
        return
    readings = await deps.inspector.release_tags(release)
    # Every publish registry must hold the verified digests, not only the primary.
    expected = publish_expected(click.verified, deps.config.secondary_publish)
    recheck = decide_recheck(str(release.version), expected, readings)
    if recheck.unreadable and not recheck.drift:
        # Unreadable is not drift: nothing is recorded, the release stays ready.
        log.warning("click-time re-check of %s: registry unreadable", release.version)
        await forget_delivery(deps, action_delivery(body))
        await _answer(
            respond,
            blocks.error_message(
                messages.approval_registry_unreadable(str(release.version), recheck.unreadable)
            ),
        )
        return
    drift = recheck.drift
    if drift:
        reason = "; ".join(drift)
        await deps.approvals.block_on_drift(release, user, reason, where)
        await confirm_delivery(deps, action_delivery(body))
        deps.touch(release)
        await _answer(
            respond,
            blocks.error_message(
                messages.approval_refused_drift(str(release.version)) + "\n" + "\n".join(drift)
            ),
        )
        return
    gate = await deps.inspector.dependencies(release)
    if gate.unreadable and not gate.blocking:
        await forget_delivery(deps, action_delivery(body))  # proves nothing: stays ready
        await _answer(
            respond,
            blocks.error_message(
                messages.approval_dependencies_unreadable(str(release.version), gate.unreadable)
            ),
        )
        return
    if gate.blocking:
        reason = "; ".join(gate.blocking)
        await deps.approvals.block_on_drift(release, user, reason, where)
        await confirm_delivery(deps, action_delivery(body))
        deps.touch(release)
        await _answer(
            respond,
            blocks.error_message(
                messages.approval_refused_dependencies(str(release.version))
                + "\n"
                + "\n".join(gate.blocking)
            ),
        )
        return
    result, updated = await deps.approvals.approve(release, user, click.verified, where)
    if not result.accepted:
        await forget_delivery(deps, action_delivery(body))  # nothing was recorded
        await _answer(respond, blocks.error_message(result.reason))
        return
    assert updated is not None
    counted = tally(policy, updated.approvals, click.verified, now, updated.requested_by)
    lines = [counted.text()]
    if decision.note:
        lines.append(decision.note)
    if counted.expired:
        lines.append(messages.approval_expired(counted.expired, policy.approval_ttl_seconds))
    if counted.complete and await deps.approvals.start_promotion(updated, user, where):
        lines.append(messages.promotion_queued(str(release.version)))
    await confirm_delivery(deps, action_delivery(body))
    deps.touch(release)
    await _answer(respond, blocks.plain("\n".join(lines)))


async def on_reject(
    deps: Deps,
    ack: Ack,
    body: Mapping[str, Any],
    respond: Respond,
    client: AsyncWebClient,
    now: float,
) -> None:
    await ack()
    opened = await _open_click(deps, Action.REJECT, body, respond, client, now)
    if opened is None:
        return
    origin, click, release = opened.origin, opened.click, opened.release
    decision = decide_rejection(deps.config.approval, click)
    if decision.verdict is Verdict.REFUSE:
        await _refuse(deps, respond, origin, release, Action.REJECT, decision.reason)
        return
    if not await first_delivery(deps, action_delivery(body)):
        return
    reason = messages.rejected_by(origin.user)
    await deps.approvals.reject(release, origin.user, reason, origin.channel)
    await confirm_delivery(deps, action_delivery(body))
    deps.touch(release)
    await _answer(respond, blocks.plain(f"{release.version}: {reason}"))


async def on_retry(
    deps: Deps,
    ack: Ack,
    body: Mapping[str, Any],
    respond: Respond,
    client: AsyncWebClient,
    now: float,
) -> None:
    await ack()
    opened = await _open_click(deps, Action.RETRY, body, respond, client, now)
    if opened is None:
        return
    origin, release = opened.origin, opened.release
    refusal = retry_refusal(release)
    if refusal is not None:
        await _refuse(deps, respond, origin, release, Action.RETRY, refusal)
        return
    identity = action_delivery(body)
    if not await first_delivery(deps, identity):
        return
    try:
        retried, failed = await deps.pipeline.retry(
            release.version, origin.user, origin.channel, request_id=identity or ""
        )
    except (InvalidInput, NotFound) as error:  # the branches: bad input, no such release
        await forget_delivery(deps, identity)  # the run moved under us: nothing was written
        await _answer(respond, blocks.error_message(str(error)))
        return
    if not retried.status_ts:
        await post_status_message(deps, client, retried)
    await confirm_delivery(deps, identity)
    await _answer(
        respond,
        blocks.plain(core_messages.retry_started(str(retried.version), failed, retried.run_id)),
    )


async def on_confirm_overwrite(
    deps: Deps,
    ack: Ack,
    body: Mapping[str, Any],
    respond: Respond,
    client: AsyncWebClient,
    now: float,
) -> None:
    """An approver lets promotion overwrite the mirror tags that hold other digests: a
    decision of its own, audited, bound to the digests those tags hold now."""
    await ack()
    opened = await _open_click(deps, Action.CONFIRM_OVERWRITE, body, respond, client, now)
    if opened is None:
        return
    origin, click, release = opened.origin, opened.click, opened.release
    pending = pending_overwrites(release)
    decision = decide_overwrite(deps.config.approval, click, pending)
    if decision.verdict is Verdict.REFUSE:
        await _refuse(deps, respond, origin, release, Action.CONFIRM_OVERWRITE, decision.reason)
        return
    if not await first_delivery(deps, action_delivery(body)):
        return
    if not await deps.approvals.confirm_overwrite(release, pending, origin.user, origin.channel):
        # This very decision (these targets holding these digests) is confirmed already:
        # a double click, or a second approver; its one promotion is queued.
        await forget_delivery(deps, action_delivery(body))  # nothing was recorded
        await _answer(
            respond,
            blocks.plain(
                messages.overwrite_already_confirmed(str(release.version), sorted(pending))
            ),
        )
        return
    await confirm_delivery(deps, action_delivery(body))
    deps.touch(release)
    await _answer(respond, blocks.plain(messages.overwrite_confirmed(origin.user, sorted(pending))))


async def on_unknown_action(
    deps: Deps, ack: Ack, body: Mapping[str, Any], respond: Respond
) -> None:
    """A click on an element this bot never made (or a forged action_id): say so, do
    nothing."""
    await ack()
    actions = body.get("actions") or [{}]
    action_id = actions[0].get("action_id") if isinstance(actions[0], Mapping) else None
    shown = action_id if isinstance(action_id, str) else ""
    await _answer(respond, blocks.error_message(messages.slack_unknown_action(shown)))
