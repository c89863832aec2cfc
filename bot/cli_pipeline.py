"""The pipeline's subcommands: release, status, cancel, retry, worker.

They run the same `jobs.usecases.pipeline` code the Slack bot calls. Invalid input raises
an `InvalidInput` (exit 2) before Redis is touched; `bot.cli.main` maps every
`AibrixError` to its exit status. Release, cancel and retry ask the same
permission table as Slack (`jobs.domain.permissions.authorize`), as the operator (`cli:$USER`),
and are audited with `where` = `cli`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import json
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bot import messages as terminal
from bot.follow import Display, release_lines
from bot.redis_wait import DEFAULT_WAIT_SECONDS, OUTAGE, RedisGone, RedisWait, host_port
from bot.registry_env import registry_settings
from bot.report import plan_lines
from jobs.domain.config import Config
from jobs.domain.config_reader import load_config
from jobs.domain.errors import Refused, UsageError
from jobs.domain.fleet import FleetView, fleet_json, fleet_lines, release_gaps
from jobs.domain.messages import retry_started, short_digest
from jobs.domain.nightly import parse_branch as parse_nightly_branch
from jobs.domain.permissions import Action, Actor, authorize, operator
from jobs.domain.plan import plan_json
from jobs.domain.platforms import parse_platform
from jobs.domain.progress import StepProgress, apply_event
from jobs.domain.release import Release, State
from jobs.runtime import logs
from jobs.runtime.heartbeat import DEFAULT_TTL_SECONDS
from jobs.runtime.worker import Worker, WorkerSettings
from jobs.store.connections import RedisSettings, connect
from jobs.store.fleet import Fleet
from jobs.store.keys import Keys
from jobs.usecases.pipeline import (
    Pipeline,
    ReleasePlan,
    cancel_notes,
    job_queue,
    plan_release,
)
from jobs.usecases.plan import make_plan, shown_findings

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
WORKER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
FINAL_STATES = frozenset(
    {State.READY, State.BLOCKED, State.FAILED, State.CANCELLED, State.PROMOTED}
)


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="configuration file (default: $AIBRIX_CONFIG)")
    parser.add_argument(
        "--redis-url", help=f"Redis URL (default: $REDIS_URL, else {DEFAULT_REDIS_URL})"
    )


REDIS_WAIT_ENV = "AIBRIX_REDIS_WAIT_SECONDS"


def add_redis_wait(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--redis-wait",
        type=float,
        default=None,
        metavar="SECONDS",
        help="how long to wait out a Redis outage before giving up with exit 3 "
        f"(default: ${REDIS_WAIT_ENV}, else {DEFAULT_WAIT_SECONDS:g})",
    )


def add_commands(commands: Any) -> None:
    release = commands.add_parser("release", help="build, merge and verify a release")
    release.add_argument("version", metavar="VERSION", help="vMAJOR.MINOR.PATCH[-PRERELEASE]")
    release.add_argument("--component", action="append", default=[], metavar="NAME")
    release.add_argument("--platform", action="append", default=[], metavar="P")
    release.add_argument(
        "--supersede",
        action="store_true",
        help="emergency only: re-release a promoted (immutable) version, rewriting its "
        "release tags; audited (see docs/security.md)",
    )
    release.add_argument("--no-follow", action="store_true", help="enqueue and return")
    release.add_argument(
        "--dry-run",
        action="store_true",
        help="show the plan (components, builds, tags, preflight problems, dependency "
        "images) and change nothing; exit 0 clean, 1 problems, 2 invalid input, 3 the "
        "source cannot be read",
    )
    release.add_argument("--json", action="store_true", help="with --dry-run: one JSON object")
    release.add_argument("--timeout", type=float, default=None, metavar="SECONDS")
    add_common(release)
    add_redis_wait(release)

    nightly = commands.add_parser(
        "nightly",
        help="build a branch head (default main): tags COMMIT and nightly on every publish "
        "registry, once every platform passes the gate",
    )
    nightly.add_argument("branch", metavar="BRANCH", nargs="?", default=None)
    nightly.add_argument("--no-follow", action="store_true", help="enqueue and return")
    nightly.add_argument("--timeout", type=float, default=None, metavar="SECONDS")
    add_redis_wait(nightly)
    add_common(nightly)

    status = commands.add_parser("status", help="show releases and their builds")
    status.add_argument("version", nargs="?", metavar="VERSION")
    add_common(status)
    add_redis_wait(status)

    cancel = commands.add_parser("cancel", help="cancel a release: queued work stops")
    cancel.add_argument("version", metavar="VERSION")
    add_common(cancel)

    retry = commands.add_parser("retry", help="rebuild the failed builds of a blocked release")
    retry.add_argument("version", metavar="VERSION")
    retry.add_argument("--no-follow", action="store_true")
    retry.add_argument("--timeout", type=float, default=None, metavar="SECONDS")
    add_common(retry)
    add_redis_wait(retry)

    worker = commands.add_parser("worker", help="run a build worker for one platform")
    worker.add_argument("--platform", required=True, metavar="PLATFORM")
    worker.add_argument("--builder", metavar="NAME", help="Buildx builder (default: current)")
    worker.add_argument("--concurrency", type=int, default=1, metavar="N")
    worker.add_argument("--worker-id", metavar="ID", help="stable name (default: host name)")
    worker.add_argument("--no-control", action="store_true", help="do not run merge jobs")
    worker.add_argument("--metrics-port", type=int, default=9464, metavar="PORT", help="0: off")
    worker.add_argument("--metrics-host", default="127.0.0.1", metavar="HOST")
    worker.add_argument(
        "--heartbeat-ttl",
        type=float,
        default=DEFAULT_TTL_SECONDS,
        metavar="SECONDS",
        help="how long the worker's heartbeat outlives it if it dies (it beats every third)",
    )
    worker.add_argument(
        "--state-dir", metavar="DIR", help="checkouts, build metadata and the result spool"
    )
    worker.add_argument(
        "--spool-dir",
        metavar="DIR",
        help="results pushed but not yet recorded (default: DIR/spool)",
    )
    add_common(worker)

    workers = commands.add_parser("workers", help="list the live workers (heartbeats)")
    workers.add_argument("--json", action="store_true", help="one JSON object")
    add_common(workers)


def load(args: argparse.Namespace) -> Config:
    return load_config(Path(args.config) if args.config else None)


def redis_settings(args: argparse.Namespace, config: Config) -> RedisSettings:
    url = args.redis_url or os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    return RedisSettings.from_dsn(url, key_prefix=config.queue.key_prefix)


def redis_wait(args: argparse.Namespace, settings: RedisSettings, hint: str = "") -> RedisWait:
    """How long this command waits out a Redis outage (`--redis-wait`)."""
    seconds = args.redis_wait
    if seconds is None:
        try:
            seconds = float(os.environ.get(REDIS_WAIT_ENV) or DEFAULT_WAIT_SECONDS)
        except ValueError:
            raise UsageError(terminal.redis_wait_invalid()) from None
    if not 0 <= seconds <= 3600:
        raise UsageError(terminal.redis_wait_invalid())
    return RedisWait.of(settings, seconds, hint)


@contextlib.asynccontextmanager
async def open_pipeline(
    settings: RedisSettings, config: Config, wait: RedisWait | None = None
) -> AsyncIterator[Pipeline]:
    async with open_with_fleet(settings, config, wait) as (pipeline, _):
        yield pipeline


@contextlib.asynccontextmanager
async def open_with_fleet(
    settings: RedisSettings, config: Config, wait: RedisWait | None = None
) -> AsyncIterator[tuple[Pipeline, Fleet]]:
    """The pipeline and the workers' heartbeats, on one Redis client (connected through
    `wait`'s outage budget when given)."""
    client: aioredis.Redis = (
        await wait.call(lambda: connect(settings)) if wait else await connect(settings)
    )
    try:
        yield Pipeline(client, config), Fleet(client, Keys(config.queue.key_prefix))
    finally:
        await client.aclose()


async def fleet_view(fleet: Fleet | None) -> FleetView | None:
    """The fleet now, or None when it cannot be read (the release lines then say nothing
    of workers rather than fail)."""
    if fleet is None:
        return None
    with contextlib.suppress(RedisError):
        return await fleet.view()
    return None


CLI_WHERE = "cli"  # what the audit stream records as where a CLI command came from


def cli_actor() -> Actor:
    """The operator running this command (named by $USER)."""
    return operator(os.environ.get("USER", "cli"))


def authorized(config: Config, action: Action) -> Actor:
    """The operator, once the permission table admits them for `action` (the same check
    Slack goes through; see `jobs.domain.permissions.authorize` for why it admits them)."""
    actor = cli_actor()
    refusal = authorize(config.permissions, action, actor)
    if refusal is not None:
        raise Refused(refusal)
    return actor


def run(coro_factory: Callable[[], Any], settings: RedisSettings | None = None) -> int:
    # Redis unreachable (3), no such release (1), bad input or a refusal (2): each is an
    # `AibrixError` that `bot.cli.main` maps to its exit status. A Redis outage met
    # outside a waited call (a write, which is not repeated blindly) is exit 3 too.
    try:
        return int(asyncio.run(coro_factory()))
    except OUTAGE as error:
        where = host_port(settings) if settings else "its address"
        raise RedisGone(terminal.redis_lost(where, type(error).__name__)) from None


async def follow(
    pipeline: Pipeline,
    release: Release,
    timeout: float | None,
    wait: RedisWait,
    final: frozenset[State] = FINAL_STATES,
    fleet: Fleet | None = None,
) -> Release:
    """Show the run until it settles (or `timeout`), waiting out Redis outages (`wait`)."""
    display = Display()
    progress: dict[tuple[str, str], StepProgress] = {}
    after = "0-0"
    deadline = None if timeout is None else time.monotonic() + timeout
    current = release
    while True:
        loaded = await wait.call(lambda: pipeline.find_run(release.version, release.run_id))
        if loaded is not None:
            current = loaded
        notes = release_gaps(current, await fleet_view(fleet))
        display.show(release_lines(current, progress, notes))
        if current.state in final or (deadline and time.monotonic() > deadline):
            return current
        events = await wait.call(functools.partial(pipeline.events, after, 500, 1000))
        for event in events:
            after = event.id
            if event.run_id == release.run_id:
                apply_event(progress, event)


def release_exit(release: Release) -> int:
    return 0 if release.state in (State.READY, State.PROMOTED) else 1


def cmd_plan(args: argparse.Namespace, config: Config, plan: ReleasePlan) -> int:
    """`release VERSION --dry-run`: the plan, read-only (no Redis, nothing written)."""
    authorized(config, Action.PLAN)
    registry = registry_settings(os.environ, budget=config.registry.budget_seconds)
    made = asyncio.run(
        make_plan(config, plan.version, plan.components, plan.platforms, registry=registry)
    )
    if args.json:
        print(json.dumps(plan_json(made), indent=2))
    else:
        print("\n".join(plan_lines(made)))
    return 0 if made.clean else 1


def cmd_release(args: argparse.Namespace) -> int:
    config = load(args)
    plan = plan_release(config, args.version, args.component, args.platform)
    if args.dry_run:
        return cmd_plan(args, config, plan)
    if args.json:
        raise UsageError(terminal.json_needs_dry_run())
    settings = redis_settings(args, config)
    actor = authorized(config, Action.RELEASE)
    wait = redis_wait(args, settings, f"aibrix-bot status {plan.version}")

    async def go() -> int:
        async with open_with_fleet(settings, config, wait) as (pipeline, fleet):
            # A repeated request is safe: it returns the version's active run.
            release, created = await wait.call(
                lambda: pipeline.request_release(
                    plan, actor.user, CLI_WHERE, supersede=args.supersede
                )
            )
            print(
                f"{release.version}: {'started run' if created else 'already running as run'} "
                f"{release.run_id[:8]}",
                file=sys.stderr,
            )
            if created:
                shown = await shown_findings(
                    config, plan.version, release.components, release.source_ref
                )
                if shown is not None:
                    print(shown, file=sys.stderr)
            if args.no_follow:
                return 0
            final = await follow(pipeline, release, args.timeout, wait, fleet=fleet)
            summarize(final)
            return release_exit(final)

    return run(go, settings)


def cmd_nightly(args: argparse.Namespace) -> int:
    """`nightly [BRANCH]`: the branch validated before anything is read; its head built as
    a run; followed until `nightly` moved (0) or did not (1, with the reason)."""
    from jobs.usecases.nightly import plan_nightly, request_nightly

    config = load(args)
    parse_nightly_branch(args.branch)  # bad input: exit 2 before Redis or git is touched
    settings = redis_settings(args, config)
    wait = redis_wait(args, settings)
    actor = authorized(config, Action.NIGHTLY)
    # Without an approval step a nightly goes on from ready to promoted by itself.
    final = FINAL_STATES - {State.READY} if not config.nightly.approval else FINAL_STATES

    async def go() -> int:
        async with open_with_fleet(settings, config, wait) as (pipeline, fleet):
            request = await plan_nightly(pipeline, args.branch)
            release, created = await request_nightly(pipeline, request, actor.user, CLI_WHERE)
            print(
                f"{terminal.nightly_line(request.branch, request.revision)} "
                f"({'started run' if created else 'already running as run'} "
                f"{release.run_id[:8]})",
                file=sys.stderr,
            )
            if args.no_follow:
                return 0
            ended = await follow(pipeline, release, args.timeout, wait, final, fleet)
            summarize(ended)
            moved = ended.state is State.PROMOTED
            print(terminal.nightly_outcome(request.revision, moved, ended.state.value))
            return 0 if moved or ended.state is State.READY else 1

    return run(go)


def summarize(release: Release) -> None:
    print(f"{release.version}: {release.state.value}")
    for component in release.components:
        index = release.indexes.get(component)
        if index is not None:
            print(f"  {component}: {index.verdict} {short_digest(index.digest)}")
    if release.state_reason:
        for reason in release.state_reason.split("; "):
            print(f"  - {reason}")


def cmd_status(args: argparse.Namespace) -> int:
    config = load(args)
    settings = redis_settings(args, config)
    wait = redis_wait(args, settings)

    async def go() -> int:
        async with open_with_fleet(settings, config, wait) as (pipeline, fleet):
            releases = await wait.call(lambda: pipeline.status(args.version))
            if not releases:
                print("no releases")
            view = await fleet_view(fleet) if releases else None
            for release in releases:
                print("\n".join(release_lines(release, {}, release_gaps(release, view))))
            return 0

    return run(go, settings)


def cmd_cancel(args: argparse.Namespace) -> int:
    config = load(args)
    settings = redis_settings(args, config)
    actor = authorized(config, Action.CANCEL)

    async def go() -> int:
        async with open_pipeline(settings, config) as pipeline:
            release = await pipeline.cancel(args.version, actor.user, CLI_WHERE)
            print(f"{release.version}: {release.state.value}")
            for note in cancel_notes(release):  # what the cancel could not undo
                print(f"  {note}")
            return 0

    return run(go, settings)


def cmd_retry(args: argparse.Namespace) -> int:
    config = load(args)
    settings = redis_settings(args, config)
    actor = authorized(config, Action.RETRY)
    wait = redis_wait(args, settings, f"aibrix-bot status {args.version}")

    async def go() -> int:
        async with open_with_fleet(settings, config, wait) as (pipeline, fleet):
            release, failed = await pipeline.retry(args.version, actor.user, CLI_WHERE)
            print(
                retry_started(str(release.version), failed, release.run_id),
                file=sys.stderr,
            )
            if args.no_follow:
                return 0
            final = await follow(pipeline, release, args.timeout, wait, fleet=fleet)
            summarize(final)
            return release_exit(final)

    return run(go, settings)


def cmd_workers(args: argparse.Namespace) -> int:
    """`aibrix-bot workers`: the live workers, and each configured platform without one."""
    config = load(args)
    settings = redis_settings(args, config)

    async def go() -> int:
        client: aioredis.Redis = await connect(settings)
        try:
            view = await Fleet(client, Keys(config.queue.key_prefix)).view()
        finally:
            await client.aclose()
        if args.json:
            print(json.dumps(fleet_json(view, config.platforms), indent=2))
        else:
            print("\n".join(fleet_lines(view, config.platforms)))
        return 0

    return run(go)


def cmd_worker(args: argparse.Namespace) -> int:
    config = load(args)
    platform = parse_platform(args.platform)
    if args.concurrency < 1 or args.concurrency > 16:
        raise UsageError("--concurrency must be between 1 and 16")
    if not 0 <= args.metrics_port < 65536:
        raise UsageError("--metrics-port must be between 0 and 65535")
    if not 1 <= args.heartbeat_ttl <= 3600:
        raise UsageError("--heartbeat-ttl must be between 1 and 3600 seconds")
    for flag, value in (("--builder", args.builder), ("--worker-id", args.worker_id)):
        if value is not None and not WORKER_NAME.match(value):
            raise UsageError(f"{flag} takes a name of letters, digits, '.', '_' and '-' (1-64)")
    settings = redis_settings(args, config)
    # Before Redis is touched: a bad proxy value stops the worker here (exit 2).
    registry = registry_settings(os.environ, budget=config.registry.budget_seconds)
    worker_settings = WorkerSettings(
        platform=platform,
        builder=args.builder,
        concurrency=args.concurrency,
        control=not args.no_control,
        metrics_host=args.metrics_host,
        metrics_port=args.metrics_port or None,
        heartbeat_ttl_s=args.heartbeat_ttl,
        spool_dir=Path(args.spool_dir) if args.spool_dir else None,
        **({"worker_id": args.worker_id} if args.worker_id else {}),
    )
    if args.state_dir:
        worker_settings = dataclasses.replace(worker_settings, workdir=Path(args.state_dir))
    logs.configure()

    async def go() -> int:
        client: aioredis.Redis = await connect(settings)
        try:
            # One queue, handed to both: the pipeline enqueues on it, the worker claims.
            queue = job_queue(client, config)
            pipeline = Pipeline(client, config, queue)
            worker = Worker(pipeline, queue, worker_settings, registry)
            await worker.check()  # BuilderError: Refused, exit 2
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await worker.run(stop)
            return 0
        finally:
            await client.aclose()

    return run(go, settings)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "release": cmd_release,
    "nightly": cmd_nightly,
    "status": cmd_status,
    "cancel": cmd_cancel,
    "retry": cmd_retry,
    "worker": cmd_worker,
    "workers": cmd_workers,
}
