"""Serving the bot: POST /slack/events (checked by `bot.request_gate`, then Bolt), GET
/healthz, GET /metrics, the notifier beside them.

`make_server` builds everything without contacting Slack or requiring Redis to be up
(the health check says whether it is); `serve` runs it until SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from aiohttp import ClientError, web
from redis.exceptions import RedisError
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot import messages
from bot.app import build_app, slack_client
from bot.log_hygiene import guard_slack_libraries
from bot.notifier import Notifier
from bot.registry_env import registry_settings
from bot.request_gate import Refusal, SlackRequestGate
from bot.settings import BotSettings, SettingsError
from handlers.context import Deps
from handlers.messages import SLACK_USAGE
from jobs.domain.config import Config
from jobs.domain.fleet import live_counts
from jobs.domain.release import State
from jobs.registry.client import RegistrySettings
from jobs.runtime.metrics import BotMetrics
from jobs.store.connections import RedisSettings, make_client
from jobs.store.fleet import Fleet
from jobs.store.keys import Keys
from jobs.usecases.approval import Approvals
from jobs.usecases.inspector import Inspector
from jobs.usecases.pipeline import Pipeline, job_queue, notice_store, release_store
from jobs.usecases.sync_job import sync_jobs

log = logging.getLogger("aibrix.bot")

EVENTS_PATH = "/slack/events"
HEALTH_PATH = "/healthz"
METRICS_PATH = "/metrics"


@dataclass
class Server:
    bolt: AsyncApp
    web_app: web.Application
    deps: Deps
    notifier: Notifier
    redis: aioredis.Redis
    metrics: BotMetrics


async def _healthz(redis: aioredis.Redis) -> web.Response:
    try:
        async with asyncio.timeout(2):
            await redis.ping()
    except (RedisError, OSError, TimeoutError):
        return web.json_response({"ok": False, "redis": "unreachable"}, status=503)
    return web.json_response({"ok": True, "redis": "ok"})


def make_server(
    settings: BotSettings,
    config: Config,
    *,
    registry: RegistrySettings | None = None,
    client: AsyncWebClient | None = None,
    notifier_interval: float = 1.0,
    clock: Callable[[], float] = time.time,
    socket_mode: bool = False,
) -> Server:
    """The app and its web server. In Socket Mode, Slack's events come over the WebSocket,
    so the web server has /healthz and /metrics only: no Slack endpoint is left open to
    the network. Over HTTP, Slack's requests pass `SlackRequestGate` before Bolt (whose
    own signature check still runs); the signature's age is judged by the wall clock,
    never by `clock` (which tests move forward)."""
    redis_settings = RedisSettings.from_dsn(settings.redis_url, key_prefix=config.queue.key_prefix)
    redis = make_client(redis_settings)
    # One store and one queue, handed to the pipeline and to the approvals alike.
    store, queue = release_store(redis, config), job_queue(redis, config)
    pipeline = Pipeline(redis, config, queue, store)
    web_client = client or slack_client(settings)
    notices = notice_store(redis, config)
    fleet = Fleet(redis, Keys(config.queue.key_prefix))
    notifier = Notifier(
        pipeline, notices, web_client, interval=notifier_interval, wall=clock, fleet=fleet
    )
    metrics = BotMetrics([reason.value for reason in Refusal], [*SLACK_USAGE, "other"])
    inspector = Inspector(
        registry or registry_settings(os.environ, budget=config.registry.budget_seconds), config
    )
    deps = Deps(
        pipeline,
        inspector,
        Approvals(store, queue),
        sync_jobs(redis, config, store, queue),
        notices,
        notifier,
        fleet=fleet,
        metrics=metrics,
    )
    bolt = build_app(settings, deps, client=web_client, clock=clock)

    async def refresh(metrics: BotMetrics) -> None:
        counts = dict.fromkeys((state.value for state in State), 0)
        for release in await pipeline.status(None):
            counts[release.state.value] += 1
        metrics.set_releases(counts)
        view = await fleet.view()
        live = live_counts(view, [*config.platforms, *view.last_seen])
        metrics.set_workers({str(platform): count for platform, count in live.items()})
        metrics.notifier_lag.set(await notices.unshown_age())

    metrics.refresh = refresh
    web_app = web.Application()
    if not socket_mode:
        gate = SlackRequestGate(bolt, settings.signing_secret, metrics)
        web_app.router.add_post(EVENTS_PATH, gate.handle)
    web_app.router.add_get(METRICS_PATH, metrics.handle)

    async def healthz(request: web.Request) -> web.Response:
        return await _healthz(redis)

    web_app.router.add_get(HEALTH_PATH, healthz)

    async def on_startup(app: web.Application) -> None:
        await notifier.start()

    async def on_cleanup(app: web.Application) -> None:
        await notifier.stop()
        for task in list(deps.background):
            task.cancel()
        await redis.aclose()

    web_app.on_startup.append(on_startup)
    web_app.on_cleanup.append(on_cleanup)
    return Server(bolt, web_app, deps, notifier, redis, metrics)


# What apps.connections.open answers when the app-level token itself is wrong: no retry
# can help, so the bot stops and says so (anything else is retried by the SDK's loop).
FATAL_APP_TOKEN_ERRORS = frozenset(
    {"invalid_auth", "not_authed", "not_allowed_token_type", "token_revoked", "account_inactive"}
)


async def _socket_mode(bolt: AsyncApp, app_token: str | None) -> Any:
    """A Socket Mode handler whose first WebSocket URL is already issued: a refused app
    token stops the bot with a clear message instead of being retried forever."""
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

    guard_slack_libraries()  # the Socket Mode client's loggers, imported just now
    handler = AsyncSocketModeHandler(bolt, app_token=app_token)
    try:
        handler.client.wss_uri = await handler.client.issue_new_wss_url()
    except SlackApiError as error:
        code = str(error.response.get("error") or "")
        if code in FATAL_APP_TOKEN_ERRORS:
            await handler.close_async()  # type: ignore[no-untyped-call]
            raise SettingsError(messages.slack_app_token_refused(code)) from None
        log.warning("apps.connections.open failed (%s); the client retries", code)
    except (ClientError, OSError) as error:
        log.warning("apps.connections.open failed (%s); the client retries", type(error).__name__)
    return handler


async def serve(
    settings: BotSettings,
    config: Config,
    *,
    host: str,
    port: int,
    socket_mode: bool = False,
    ready: asyncio.Event | None = None,
) -> None:
    server = make_server(settings, config, socket_mode=socket_mode)
    runner = web.AppRunner(server.web_app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    log.info("listening on %s:%d (%s)", host, port, "socket mode" if socket_mode else "HTTP")
    handler = None
    connecting: asyncio.Task[Any] | None = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        if socket_mode:
            handler = await _socket_mode(server.bolt, settings.app_token)
            # Connecting retries until Slack answers; a stop signal still ends it.
            connecting = asyncio.create_task(handler.connect_async())
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        if connecting is not None and not connecting.done():
            connecting.cancel()
        if handler is not None:
            with contextlib.suppress(Exception):
                await handler.close_async()
        await runner.cleanup()
