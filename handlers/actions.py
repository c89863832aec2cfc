"""The release message's buttons: Approve, Reject, Retry failed builds.

Each click: validate the button's value, gather the facts, let `jobs.approvals` decide,
re-read the release tags before recording an approval, record, and answer the clicker
(ephemeral). The live message follows through the events stream.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from bot import blocks, messages
from handlers.commands import Ack, Respond, _answer
from handlers.context import (
    Deps,
    confirm_delivery,
    first_delivery,
    forget_delivery,
    post_status_message,
    published_digests,
    user_groups,
)
from handlers.parse import ButtonValue, ParseError, action_delivery, parse_button_value
from jobs.approvals import (
    Click,
    Verdict,
    decide_approval,
    decide_overwrite,
    decide_rejection,
    drift_problems,
    may_change_run,
    tally,
)
from jobs.pipeline import ReleaseInputError, ReleaseNotFound
from jobs.promote import promote_job
from jobs.state import Release, State, pending_overwrites

log = logging.getLogger("aibrix.bot")


def _clicked(body: Mapping[str, Any]) -> tuple[str, ButtonValue | ParseError]:
    user = str((body.get("user") or {}).get("id") or "")
    actions = body.get("actions") or [{}]
    return user, parse_button_value(actions[0].get("value"))


async def _click_facts(
    deps: Deps, client: AsyncWebClient, user: str, value: ButtonValue, now: float
) -> tuple[Click, Release] | str:
    store = deps.pipeline.store
    clicked = await store.load(value.version, value.run_id)
    if clicked is None:
        return messages.slack_bad_button("no such run")
    active = await store.load(value.version)
    groups = await user_groups(deps, client, user)
    click = Click(
        user=user,
        user_groups=groups,
        version=clicked.version,
        run_id=clicked.run_id,
        active_run_id=active.run_id if active else None,
        state=clicked.state,
        requested_by=clicked.requested_by,
        approvals=clicked.approvals,
        verified={c: i.digest for c, i in clicked.indexes.items()},
        now=now,
    )
    return click, clicked


async def _read_click(
    deps: Deps, body: Mapping[str, Any], respond: Respond, client: AsyncWebClient, now: float
) -> tuple[str, Click, Release] | None:
    """The clicker, the click's facts and the clicked run; None once an error is answered,
    or when this click was already handled (a redelivery: nothing is said again)."""
    user, value = _clicked(body)
    if isinstance(value, ParseError):
        await _answer(respond, blocks.error_message(value.message))
        return None
    facts = await _click_facts(deps, client, user, value, now)
    if isinstance(facts, str):
        await _answer(respond, blocks.error_message(facts))
        return None
    if not await first_delivery(deps, action_delivery(body)):
        return None
    click, release = facts
    return user, click, release


async def on_approve(
    deps: Deps,
    ack: Ack,
    body: Mapping[str, Any],
    respond: Respond,
    client: AsyncWebClient,
    now: float,
) -> None:
    await ack()
    read = await _read_click(deps, body, respond, client, now)
    if read is None:
        return
    user, click, release = read
    store = deps.pipeline.store
    policy = deps.config.approval
    decision = decide_approval(policy, click)
    if decision.verdict is Verdict.REFUSE:
        await forget_delivery(deps, action_delivery(body))  # refused: no claim is kept
        await store.audit(
            release.version, release.run_id, user, "approval-refused", decision.reason
        )
        await _answer(respond, blocks.error_message(decision.reason))
        return
    if decision.verdict is Verdict.ALREADY:
        await forget_delivery(deps, action_delivery(body))  # nothing was recorded
        counted = tally(policy, release.approvals, click.verified, now, release.requested_by)
        await _answer(respond, blocks.plain(f"{decision.reason}. {counted.text()}"))
        return
    published, not_ok = await published_digests(deps, release)
    drift = drift_problems(release.version, click.verified, published, not_ok)
    if drift:
        reason = "; ".join(drift)
        await store.transition(
            release.version,
            release.run_id,
            [State.READY, State.APPROVED],
            State.BLOCKED,
            actor=user,
            reason=reason,
        )
        await store.audit(release.version, release.run_id, user, "approval-refused", reason)
        await confirm_delivery(deps, action_delivery(body))
        deps.touch(release)
        await _answer(
            respond,
            blocks.error_message(
                messages.approval_refused_drift(release.version) + "\n" + "\n".join(drift)
            ),
        )
        return
    result = await store.add_approval(release.version, release.run_id, user, click.verified)
    if not result.accepted:
        await forget_delivery(deps, action_delivery(body))  # nothing was recorded
        await _answer(respond, blocks.error_message(result.reason))
        return
    updated = await store.load(release.version, release.run_id)
    assert updated is not None
    counted = tally(policy, updated.approvals, click.verified, now, updated.requested_by)
    lines = [counted.text()]
    if decision.note:
        lines.append(decision.note)
    if counted.expired:
        lines.append(messages.approval_expired(counted.expired, policy.approval_ttl_seconds))
    if counted.complete and await store.transition(
        release.version, release.run_id, [State.READY], State.APPROVED, actor=user
    ):
        await deps.pipeline.queue.enqueue(promote_job(updated))
        lines.append(messages.promotion_queued(release.version))
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
    read = await _read_click(deps, body, respond, client, now)
    if read is None:
        return
    user, click, release = read
    store = deps.pipeline.store
    decision = decide_rejection(deps.config.approval, click)
    if decision.verdict is Verdict.REFUSE:
        await forget_delivery(deps, action_delivery(body))  # nothing was recorded
        await _answer(respond, blocks.error_message(decision.reason))
        return
    reason = messages.rejected_by(user)
    moved = await store.transition(
        release.version,
        release.run_id,
        [State.READY, State.APPROVED],
        State.BLOCKED,
        actor=user,
        reason=reason,
    )
    if moved:
        await store.audit(release.version, release.run_id, user, "rejected", reason)
    await confirm_delivery(deps, action_delivery(body))
    deps.touch(release)
    await _answer(respond, blocks.plain(f"{release.version}: {reason}"))


async def on_retry(
    deps: Deps,
    ack: Ack,
    body: Mapping[str, Any],
    respond: Respond,
    client: AsyncWebClient,
) -> None:
    await ack()
    user, value = _clicked(body)
    if isinstance(value, ParseError):
        await _answer(respond, blocks.error_message(value.message))
        return
    pipeline = deps.pipeline
    active = await pipeline.store.load(value.version)
    if active is None or active.run_id != value.run_id:
        await _answer(respond, blocks.error_message(messages.approval_superseded(value.version)))
        return
    groups = await user_groups(deps, client, user)
    if not may_change_run(deps.config.approval, user, groups, active.requested_by):
        await _answer(respond, blocks.error_message(messages.slack_not_allowed(user, "retry")))
        return
    identity = action_delivery(body)
    if not await first_delivery(deps, identity):
        return
    try:
        release, failed = await pipeline.retry(value.version, user, request_id=identity or "")
    except (ReleaseInputError, ReleaseNotFound) as error:
        await forget_delivery(deps, identity)
        await _answer(respond, blocks.error_message(str(error)))
        return
    if not release.status_ts:
        await post_status_message(deps, client, release)
    await confirm_delivery(deps, identity)
    await _answer(
        respond, blocks.plain(messages.slack_retrying(release.version, failed, release.run_id))
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
    facts = await _read_click(deps, body, respond, client, now)
    if facts is None:
        return
    user, click, release = facts
    pending = pending_overwrites(release)
    decision = decide_overwrite(deps.config.approval, click, pending)
    if decision.verdict is Verdict.REFUSE:
        await forget_delivery(deps, action_delivery(body))  # nothing was recorded
        await _answer(respond, blocks.error_message(decision.reason))
        return
    store = deps.pipeline.store
    await store.confirm_overwrites(release.version, release.run_id, pending)
    detail = "; ".join(f"{target} held {digest}" for target, digest in sorted(pending.items()))
    await store.audit(release.version, release.run_id, user, "overwrite-confirmed", detail)
    await deps.pipeline.queue.enqueue(promote_job(release, round_=int(now * 1000)))
    await confirm_delivery(deps, action_delivery(body))
    deps.touch(release)
    await _answer(respond, blocks.plain(messages.overwrite_confirmed(user, sorted(pending))))


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
