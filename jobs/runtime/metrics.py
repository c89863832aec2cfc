"""Prometheus metrics: a worker's, served on its own HTTP endpoint (/metrics), and the
bot's, on the bot's web server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from redis.exceptions import RedisError

REFRESH_TIMEOUT_S = 3.0  # a scrape answers with the last values rather than hang on Redis


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.queue_depth = Gauge(
            "aibrix_queue_depth",
            "Jobs queued, delayed or running per stream",
            ["stream", "kind"],
            registry=self.registry,
        )
        self.builds = Counter(
            "aibrix_builds_total",
            "Builds by platform and outcome",
            ["platform", "outcome"],
            registry=self.registry,
        )
        self.build_seconds = Histogram(
            "aibrix_build_duration_seconds",
            "Build and push duration",
            ["platform"],
            buckets=(5, 15, 30, 60, 120, 300, 600, 1200, 3600),
            registry=self.registry,
        )
        self.merge_seconds = Histogram(
            "aibrix_merge_duration_seconds",
            "Merge and verify duration",
            buckets=(0.5, 1, 2, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.reclaimed = Counter(
            "aibrix_jobs_reclaimed_total",
            "Jobs taken over from a stalled worker",
            ["stream"],
            registry=self.registry,
        )
        self.dead_lettered = Counter(
            "aibrix_jobs_dead_lettered_total",
            "Jobs that ran out of attempts",
            ["stream"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


async def serve_metrics(metrics: WorkerMetrics, host: str, port: int) -> web.AppRunner:
    async def handle(_: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


COMMAND_OUTCOMES = ("ok", "invalid", "refused", "not_found", "duplicate", "error")


class BotMetrics:
    """The bot's own metrics, on its web server's GET /metrics.

    Counters change as things happen (commands by outcome, refused requests by reason);
    the gauges read from Redis (releases by state, live workers per platform, the
    notifier's lag) are brought up to date by `refresh`, a hook the server sets, at each
    scrape: the numbers are what Redis holds then, whichever replica is scraped."""

    def __init__(
        self,
        refusal_reasons: Sequence[str] = (),
        commands: Sequence[str] = (),
    ) -> None:
        self.registry = CollectorRegistry()
        self.refresh: Callable[[BotMetrics], Awaitable[None]] | None = None
        self.commands = Counter(
            "aibrix_slack_commands",
            "Slash commands answered, by subcommand and outcome",
            ["command", "outcome"],
            registry=self.registry,
        )
        for name in commands:  # every series shows, at 0 until it happens
            for outcome in COMMAND_OUTCOMES:
                self.commands.labels(command=name, outcome=outcome)
        self.releases = Gauge(
            "aibrix_releases",
            "Current runs of the newest versions (at most 50), by state",
            ["state"],
            registry=self.registry,
        )
        self.workers = Gauge(
            "aibrix_workers_live",
            "Workers whose heartbeat has not expired, by platform",
            ["platform"],
            registry=self.registry,
        )
        self.notifier_lag = Gauge(
            "aibrix_notifier_lag_seconds",
            "Age of the oldest event the notifier has not shown yet (0: all shown)",
            registry=self.registry,
        )
        self.scrape_errors = Counter(
            "aibrix_metrics_refresh_errors",
            "Scrapes whose Redis-backed gauges could not be refreshed (they keep old values)",
            registry=self.registry,
        )
        self.refused = Counter(
            "aibrix_slack_requests_refused",
            "Requests to the Slack endpoint refused before the app saw them, by reason",
            ["reason"],
            registry=self.registry,
        )
        for reason in refusal_reasons:  # every reason shows, at 0 until it happens
            self.refused.labels(reason=reason)

    def command(self, name: str, outcome: str) -> None:
        self.commands.labels(command=name, outcome=outcome).inc()

    def set_releases(self, counts: Mapping[str, int]) -> None:
        """Releases by state: every state in `counts`; a state gone since is set to 0."""
        for state, count in counts.items():
            self.releases.labels(state=state).set(count)

    def set_workers(self, counts: Mapping[str, int]) -> None:
        for platform, count in counts.items():
            self.workers.labels(platform=platform).set(count)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def handle(self, _: web.Request) -> web.Response:
        if self.refresh is not None:
            try:
                async with asyncio.timeout(REFRESH_TIMEOUT_S):
                    await self.refresh(self)
            except (RedisError, OSError, TimeoutError):
                self.scrape_errors.inc()
        return web.Response(body=self.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})
