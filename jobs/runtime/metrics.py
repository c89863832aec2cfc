"""Prometheus metrics: a worker's, served on its own HTTP endpoint (/metrics), and the
bot's, on the bot's web server."""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


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


class BotMetrics:
    """The bot's own metrics, on its web server's GET /metrics."""

    def __init__(self, refusal_reasons: Sequence[str] = ()) -> None:
        self.registry = CollectorRegistry()
        self.refused = Counter(
            "aibrix_slack_requests_refused",
            "Requests to the Slack endpoint refused before the app saw them, by reason",
            ["reason"],
            registry=self.registry,
        )
        for reason in refusal_reasons:  # every reason shows, at 0 until it happens
            self.refused.labels(reason=reason)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def handle(self, _: web.Request) -> web.Response:
        return web.Response(body=self.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})
