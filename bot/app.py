"""The Bolt AsyncApp: its Web API client, the listeners.

Nothing here reaches Slack when the app is built: Bolt calls auth.test once, on the
first request. Commands are acked at once (`process_before_response` stays off), and
their work runs after the HTTP answer.

Redeliveries (HTTP `X-Slack-Retry-Num`, Socket Mode `retry_attempt`) are not dropped
on sight: the first delivery may never have arrived. Each handler that changes
something claims the delivery's identity in Redis (`handlers.context.first_delivery`),
so a redelivery of a handled delivery does nothing and one whose first was lost is
handled once.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.logger import get_bolt_logger
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.web.async_client import AsyncWebClient

from bot.log_hygiene import guard, guard_slack_libraries
from bot.settings import BotSettings
from handlers.actions import (
    on_approve,
    on_confirm_overwrite,
    on_reject,
    on_retry,
    on_unknown_action,
)
from handlers.blocks import APPROVE_ACTION, OVERWRITE_ACTION, REJECT_ACTION, RETRY_ACTION
from handlers.commands import on_command
from handlers.context import Deps

log = logging.getLogger("aibrix.bot")

COMMAND = "/aibrix"


def is_redelivery(headers: Mapping[str, Sequence[str]], body: Mapping[str, Any]) -> bool:
    """Slack is delivering again something it already sent (HTTP: X-Slack-Retry-Num; Socket
    Mode: retry_attempt, which Bolt mirrors into the same header)."""
    values = headers.get("x-slack-retry-num") or ()
    if any(v.strip() not in ("", "0") for v in values):
        return True
    attempt = body.get("retry_attempt")
    return isinstance(attempt, int) and not isinstance(attempt, bool) and attempt > 0


async def log_redeliveries(
    req: AsyncBoltRequest, resp: BoltResponse, next: Callable[[], Awaitable[BoltResponse]]
) -> BoltResponse:
    """Say in the log that Slack delivers something again; the handlers decide, from the
    delivery's identity, whether it was already handled."""
    if is_redelivery(req.headers, req.body):
        log.info("a redelivery from Slack")
    return await next()


def slack_client(settings: BotSettings) -> AsyncWebClient:
    return AsyncWebClient(token=settings.bot_token, base_url=settings.slack_api_url)


# slack_sdk's webhook clients (Bolt's `respond`) log the response_url, a capability URL,
# at INFO on every retry while their own logger level is unset (they test `level <=
# DEBUG`); an explicit level keeps that line out of the log.
WEBHOOK_LOGGERS = ("slack_sdk.webhook.async_client", "slack_sdk.webhook.client")


def quiet_webhook_loggers() -> None:
    for name in WEBHOOK_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def build_app(
    settings: BotSettings,
    deps: Deps,
    *,
    client: AsyncWebClient | None = None,
    clock: Callable[[], float] = time.time,
) -> AsyncApp:
    # Bolt hands its base logger's filters to every logger it makes (middleware, each
    # listener's): none of them logs more than the head of a message.
    guard_slack_libraries()
    app = AsyncApp(
        signing_secret=settings.signing_secret,
        client=client or slack_client(settings),
        process_before_response=False,
        logger=guard(get_bolt_logger(AsyncApp)),
    )
    app.use(log_redeliveries)
    quiet_webhook_loggers()

    @app.command(COMMAND)
    async def command(ack: Any, body: dict[str, Any], respond: Any, client: Any) -> None:
        await on_command(deps, ack, body, respond, client)

    @app.action(APPROVE_ACTION)
    async def approve(ack: Any, body: dict[str, Any], respond: Any, client: Any) -> None:
        await on_approve(deps, ack, body, respond, client, clock())

    @app.action(REJECT_ACTION)
    async def reject(ack: Any, body: dict[str, Any], respond: Any, client: Any) -> None:
        await on_reject(deps, ack, body, respond, client, clock())

    @app.action(RETRY_ACTION)
    async def retry(ack: Any, body: dict[str, Any], respond: Any, client: Any) -> None:
        await on_retry(deps, ack, body, respond, client, clock())

    @app.action(OVERWRITE_ACTION)
    async def overwrite(ack: Any, body: dict[str, Any], respond: Any, client: Any) -> None:
        await on_confirm_overwrite(deps, ack, body, respond, client, clock())

    # Last, so it only sees clicks no listener above claimed.
    @app.action(re.compile(r".*"))
    async def unknown(ack: Any, body: dict[str, Any], respond: Any) -> None:
        await on_unknown_action(deps, ack, body, respond)

    return app
