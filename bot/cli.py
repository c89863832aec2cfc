"""The aibrix-bot command line: every subcommand runs on the same code the bot uses.

Exit status, relied on by users' CI: 0 all good; 1 a verdict is not ok (or a release
is blocked or failed, or a sync was refused or did not verify); 2 usage errors and
invalid input (nothing contacted, nothing enqueued); 3 a reference could not be read
at all (or a registry could not be read or written by a sync).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

# The one exception tree (a leaf module of the standard library only): every command's
# failure is an `AibrixError` that `main` maps to its exit status once.
from jobs.domain.errors import AibrixError, InvalidInput, Refused, UsageError

# Start-up is part of every `inspect` and `sync` run (CI gates both, a warm sync takes a
# few hundred milliseconds in all), so this module imports only argparse and the
# standard library at the top: each command imports what it uses when it runs. The
# pipeline's subcommands (bot.cli_pipeline) import Redis, python-on-whales and the worker,
# over a second, and are imported only when one of them (or the top-level help) is
# asked for. `python -X importtime .venv/bin/aibrix-bot sync --help` shows what is left.
if TYPE_CHECKING:
    from jobs.domain.config import Config
    from jobs.domain.platforms import Platform
    from jobs.domain.references import Reference
    from jobs.domain.sync_report import ProgressEvent
    from jobs.registry.client import RegistrySettings
    from jobs.registry.inspection import Inspection
    from jobs.usecases.sync import SyncRequest

LOCAL_COMMANDS = frozenset({"inspect", "sync", "demo"})


EXIT_OK = 0
EXIT_NOT_OK = 1
EXIT_UNREADABLE = 3


def _build_parser(pipeline: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aibrix-bot",
        description="Cut multi-architecture container releases and refuse to promote an image "
        "that lacks a required platform.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    inspect = commands.add_parser(
        "inspect",
        help="read published images back and check every required platform",
        description="Read each REF from its registry and check that every required platform is "
        "present and really is that platform. Exit 0 when all are ok, 1 when a platform is "
        "missing or mismatched, 2 for invalid input, 3 when a reference cannot be read.",
    )
    inspect.add_argument(
        "--require",
        metavar="P[,P...]",
        help="required platforms (default: the configured set, else linux/amd64,linux/arm64)",
    )
    inspect.add_argument("--json", action="store_true", help="print one JSON array")
    inspect.add_argument(
        "--insecure-registry",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="speak plain HTTP to this registry (repeatable; also AIBRIX_INSECURE_REGISTRIES)",
    )
    inspect.add_argument("--config", help="configuration file (default: $AIBRIX_CONFIG)")
    inspect.add_argument(
        "--across",
        metavar="VERSION",
        help="instead of REFs: the drift view of a release, the digest of each component "
        "at the source and at every mirror (exit 1 when one differs or is missing)",
    )
    inspect.add_argument(
        "--to",
        action="append",
        default=[],
        metavar="MIRROR",
        help="with --across: the mirrors to compare (default: every configured mirror)",
    )
    inspect.add_argument(
        "--redis-url",
        help="with COMPONENT: the bot's Redis, for its release records (default: $REDIS_URL; "
        "without one the card shows only what the registries hold)",
    )
    inspect.add_argument(
        "refs",
        nargs="*",
        metavar="REF",
        help="image references; or, with a configuration, COMPONENT [TAG]: the component's "
        "card, each chosen tag (or TAG) on the source and every mirror (exit 1 when "
        "something is wrong, 3 when a registry cannot be read)",
    )

    sync = commands.add_parser(
        "sync",
        help="copy a release to mirrors: gated, every platform, digests preserved",
        description="Check that every component of VERSION carries every required platform, "
        "then copy each one (index, children, attestations, blobs) to each MIRROR, skipping "
        "what is there, and read it back. MIRROR is a configured mirror name or "
        "HOST[:PORT][/NAMESPACE]. Exit 0 when synced and verified, 1 when the platform "
        "check refused the release, a mirror tag would be overwritten or a read-back "
        "differs, 2 for invalid input, 3 when a registry cannot be read or written.",
    )
    sync.add_argument("version", metavar="VERSION", help="release version, such as v0.3.0")
    sync.add_argument(
        "--to",
        action="append",
        default=[],
        required=True,
        metavar="MIRROR",
        help="a configured mirror name or HOST[:PORT][/NAMESPACE] (repeatable)",
    )
    sync.add_argument(
        "--component",
        action="append",
        default=None,
        metavar="NAME",
        help="copy only this component (repeatable; default: every configured one)",
    )
    sync.add_argument(
        "--allow-overwrite",
        action="store_true",
        help="replace a mirror tag that holds a different digest (otherwise refused)",
    )
    sync.add_argument(
        "--deep",
        action="store_true",
        help="check every blob even where the mirror tag is up to date, and repair",
    )
    sync.add_argument("--json", action="store_true", help="print the report as JSON")
    sync.add_argument(
        "--insecure-registry",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="speak plain HTTP to this registry (repeatable; also AIBRIX_INSECURE_REGISTRIES)",
    )
    sync.add_argument("--config", help="configuration file (default: $AIBRIX_CONFIG)")
    sync.add_argument(
        "--redis-url",
        help="the bot's Redis, where the sync is audited (default: $REDIS_URL; without one "
        "the sync is not audited)",
    )

    commands.add_parser("demo", help="run the local end-to-end demo on the lab")
    if pipeline:
        from bot import cli_pipeline as pipeline_commands

        pipeline_commands.add_commands(commands)
        from bot.serve_command import add_serve_command, cmd_serve

        add_serve_command(commands)
        COMMANDS["serve"] = cmd_serve
    return parser


def _required_platforms(args: argparse.Namespace) -> tuple[Platform, ...]:
    from jobs.domain.platforms import DEFAULT_PLATFORMS, parse_platform_list

    if args.require is not None:
        return parse_platform_list(args.require)
    if args.config or os.environ.get("AIBRIX_CONFIG"):
        return _load_config(args).platforms
    return DEFAULT_PLATFORMS


def _registry_budget(args: argparse.Namespace) -> float:
    """`registry.budget_seconds` of the configuration, when one is given."""
    from jobs.domain.config import RegistryConfig

    if args.config or os.environ.get("AIBRIX_CONFIG"):
        return _load_config(args).registry.budget_seconds
    return RegistryConfig().budget_seconds


def _parse_refs(texts: Sequence[str]) -> list[Reference]:
    from jobs.domain.references import parse_reference

    return [parse_reference(text) for text in texts]


async def _inspect(
    refs: Sequence[Reference], required: Sequence[Platform], settings: RegistrySettings
) -> list[Inspection]:
    from jobs.registry.client import RegistryClient
    from jobs.registry.inspection import inspect_many

    async with RegistryClient(settings) as client:
        return await inspect_many(client, refs, required)


def _load_config(args: argparse.Namespace) -> Config:
    from jobs.domain.config_reader import load_config

    return load_config(Path(args.config) if args.config else None)


def _release_inputs(
    args: argparse.Namespace,
    version_text: str,
    mirror_texts: Sequence[str],
    component_texts: Sequence[str] | None = None,
) -> tuple[Config, SyncRequest, RegistrySettings]:
    """Config, the validated request and the registry settings (insecure hosts,
    proxies), all before any I/O."""
    from bot.registry_env import registry_settings
    from jobs.domain.sync_request import parse_sync_request
    from jobs.registry.endpoints import parse_insecure_registries

    config = _load_config(args)
    request = parse_sync_request(config, version_text, mirror_texts, component_texts)
    settings = registry_settings(
        os.environ,
        parse_insecure_registries(args.insecure_registry),
        budget=config.registry.budget_seconds,
    )
    return config, request, settings


def cmd_inspect(args: argparse.Namespace) -> int:
    from bot.registry_env import registry_settings
    from jobs.registry.endpoints import parse_insecure_registries

    if args.across is not None:
        if args.refs:
            raise UsageError("give REFs or --across VERSION, not both")
        return _inspect_across(args)
    if args.to:
        raise UsageError("--to goes with --across VERSION")
    if not args.refs:
        raise UsageError("give at least one REF (or --across VERSION)")
    if _names_component(args):
        return _inspect_card(args)
    if args.redis_url:
        raise UsageError("--redis-url goes with COMPONENT")
    required = _required_platforms(args)
    refs = _parse_refs(args.refs)
    settings = registry_settings(
        os.environ, parse_insecure_registries(args.insecure_registry), budget=_registry_budget(args)
    )
    import asyncio

    from bot.report import inspection_tables
    from jobs.registry.inspection import inspection_json

    inspections = asyncio.run(_inspect(refs, required, settings))
    if args.json:
        print(json.dumps([inspection_json(i) for i in inspections], indent=2))
    else:
        print(inspection_tables(inspections))
    if any(i.unreadable for i in inspections):
        return EXIT_UNREADABLE
    if all(i.verdict.ok for i in inspections):
        return EXIT_OK
    return EXIT_NOT_OK


def _names_component(args: argparse.Namespace) -> bool:
    """`inspect COMPONENT [TAG]`: with a configuration, a bare first word that is a
    configured component (any other bare word still names a Docker Hub image)."""
    if not (args.config or os.environ.get("AIBRIX_CONFIG")) or len(args.refs) > 2:
        return False
    word = args.refs[0]
    if any(c in word for c in "/:.@"):
        return False
    return word in _load_config(args).component_names


def _inspect_card(args: argparse.Namespace) -> int:
    from bot.registry_env import registry_settings
    from jobs.domain.component_card import ComponentCard, card_json
    from jobs.domain.references import validate_tag
    from jobs.registry.client import RegistryClient
    from jobs.registry.endpoints import parse_insecure_registries
    from jobs.usecases.component_card import card_settings, read_card

    config = _load_config(args)
    component = args.refs[0]
    tag = validate_tag(args.refs[1]) if len(args.refs) == 2 else None
    settings = registry_settings(
        os.environ,
        parse_insecure_registries(args.insecure_registry),
        budget=config.registry.budget_seconds,
    )
    redis_url = args.redis_url or os.environ.get("REDIS_URL")

    async def records() -> list[Any]:
        if not redis_url:
            return []
        # Redis is imported only when asked for (a third of a second of start-up); a Redis
        # that does not answer is `Unavailable` (exit 3), said by `main`.
        redis, store = await _open_audit(redis_url, config)
        try:
            return list(await store.list_releases())
        finally:
            await redis.aclose()

    async def gather() -> ComponentCard:
        async with RegistryClient(card_settings(settings)) as client:
            return await read_card(client, config, component, await records(), only_tag=tag)

    import asyncio

    card = asyncio.run(gather())
    if args.json:
        print(json.dumps(card_json(card), indent=2))
    else:
        from bot.report import card_text

        print(card_text(card))
    if card.unreadable_columns or card.tag_list_error:
        return EXIT_UNREADABLE
    return EXIT_NOT_OK if card.problems else EXIT_OK


def _inspect_across(args: argparse.Namespace) -> int:
    from jobs.domain import messages as core_messages
    from jobs.domain.sync_report import DriftRow, drift_data
    from jobs.registry.client import RegistryClient
    from jobs.usecases.sync import gather_drift

    config = _load_config(args)
    mirror_texts = args.to or sorted(config.mirrors)
    if not mirror_texts:
        raise UsageError(core_messages.sync_nothing_to_sync())
    config, request, settings = _release_inputs(args, args.across, mirror_texts)
    version, mirrors = request.version, request.mirrors

    async def gather() -> tuple[DriftRow, ...]:
        async with RegistryClient(settings) as client:
            return await gather_drift(client, config, version, mirrors)

    import asyncio

    rows = asyncio.run(gather())
    data = drift_data(str(version), [m.label for m in mirrors], rows)
    print(json.dumps(data, indent=2) if args.json else core_messages.drift_text(data))
    if any(r.unreadable for r in rows):
        return EXIT_UNREADABLE
    return EXIT_NOT_OK if data["drifted"] else EXIT_OK


class _TerminalProgress:
    """A progress bar on a terminal (redrawn at most ten times a second); on anything else
    one plain line per finished copy."""

    def __init__(self, stream: TextIO, copies: int) -> None:
        from jobs.domain import messages
        from jobs.domain.sync_report import ProgressKind

        self._kinds, self._messages = ProgressKind, messages
        self.stream = stream
        self.tty = stream.isatty()
        self.copies = copies
        self.total = 0
        self.done = 0
        self.finished = 0
        self._drawn = 0.0

    def __call__(self, event: ProgressEvent) -> None:
        ProgressKind, messages = self._kinds, self._messages
        if event.kind is ProgressKind.PLANNED:
            self.total += event.total
        elif event.kind is ProgressKind.BYTES:
            self.done += event.delta
        elif event.report is not None:
            self.finished += 1
            if not self.tty:
                report = event.report
                blobs = report.blobs
                detail = (
                    f", {blobs.copied} blobs copied ({messages.human_bytes(blobs.copied_bytes)})"
                    f", {blobs.mounted} mounted, {blobs.skipped} skipped"
                    if report.status.value == "copied"
                    else ""
                )
                print(
                    messages.sync_progress_plain(
                        report.mirror, report.component, report.status.value, detail
                    ),
                    file=self.stream,
                    flush=True,
                )
        if self.tty and (time.monotonic() - self._drawn > 0.1 or event.kind is ProgressKind.DONE):
            self._drawn = time.monotonic()
            line = messages.sync_progress_line(self.done, self.total, self.finished, self.copies)
            self.stream.write("\r" + line)
            self.stream.flush()

    def close(self) -> None:
        if self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()


def cmd_sync(args: argparse.Namespace) -> int:
    from jobs.domain.sync_request import release_jobs

    config, request, settings = _release_inputs(args, args.version, args.to, args.component)
    # Unknown component names are refused before anything is read.
    release_jobs(config, request.version, request.mirrors, request.components)
    from bot import messages
    from jobs.domain import messages as core_messages
    from jobs.domain.sync_report import SyncReport, sync_report_data
    from jobs.registry.client import RegistryClient
    from jobs.usecases.sync import sync_release

    components = request.components
    count = len(request.mirrors) * len(components or config.component_names)
    progress = _TerminalProgress(sys.stderr, count)

    redis_url = args.redis_url or os.environ.get("REDIS_URL")
    if not redis_url:
        print(messages.sync_cli_not_audited(), file=sys.stderr)
    actor = f"cli:{os.environ.get('USER', 'cli')}"

    async def run() -> SyncReport:
        redis, audit = await _open_audit(redis_url, config) if redis_url else (None, None)
        try:
            if audit is not None:
                # Before any copy: a sync that is cut short is still on record.
                await _audit_sync(audit, request, actor, "sync-started", "started", "")
            async with RegistryClient(settings) as client:
                report = await sync_release(
                    client,
                    config,
                    request.version,
                    request.mirrors,
                    components=components,
                    overwrite_allowed=args.allow_overwrite,
                    deep=args.deep,
                    progress=progress,
                )
            if audit is not None:
                for mirror in report.mirrors or ():
                    outcome = "synced" if mirror.ok else "failed"
                    await _audit_sync(
                        audit, request, actor, f"sync-{outcome}", outcome, mirror.mirror.label
                    )
                if not report.gate_passed:
                    await _audit_sync(audit, request, actor, "sync-refused", "refused", "")
            return report
        finally:
            if redis is not None:
                await redis.aclose()

    # Redis (its client costs about 50 ms to import and 20 ms more at exit) is imported
    # only by a sync that is audited; without one there is no Redis error to catch.
    redis_errors: tuple[type[Exception], ...] = ()
    if redis_url:
        from jobs.store.connections import RedisConnectError

        redis_errors = (RedisConnectError,)

    try:
        import asyncio

        report = asyncio.run(run())
    except redis_errors as error:
        print(f"aibrix-bot sync: {error}; nothing was copied", file=sys.stderr)
        return EXIT_UNREADABLE
    finally:
        progress.close()
    data = sync_report_data(report)
    print(json.dumps(data, indent=2) if args.json else core_messages.sync_report_text(data))
    if report.registry_failure:
        return EXIT_UNREADABLE
    return EXIT_OK if report.ok else EXIT_NOT_OK


async def _open_audit(url: str, config: Config) -> tuple[Any, Any]:
    """A client of the bot's Redis (the caller closes it) and the release store on it, to
    audit a command-line sync in."""
    from jobs.store.connections import RedisSettings, connect
    from jobs.store.keys import Keys
    from jobs.store.releases import ReleaseStore

    settings = RedisSettings.from_dsn(url, key_prefix=config.queue.key_prefix)
    client = await connect(settings)
    return client, ReleaseStore(client, Keys(config.queue.key_prefix))


async def _audit_sync(
    store: Any, request: SyncRequest, actor: str, action: str, outcome: str, only: str
) -> None:
    """One audit entry per mirror (`only`: just that one): who, the mirror, the outcome.
    The command line runs with the operator's own credentials and may name locations."""
    for mirror in request.mirrors:
        if only and mirror.label != only:
            continue
        await store.audit(
            str(request.version),
            "",
            actor,
            action,
            mirror.location,
            "cli",
            extra={"mirror": mirror.label, "outcome": outcome, "mode": "cli"},
        )


def cmd_demo(args: argparse.Namespace) -> int:
    from bot import messages

    # The demo drives the product with the test stand-ins, so it is dev-only and the image
    # does not ship it: it is loaded by name from the clone this CLI runs from, and the
    # product never imports it.
    clone = Path(__file__).resolve().parent.parent
    if not (clone / "demo" / "run.py").is_file():
        print(messages.demo_needs_a_clone(), file=sys.stderr)
        return 2
    if str(clone) not in sys.path:
        sys.path.insert(0, str(clone))
    demo = importlib.import_module("demo.run")
    return int(demo.run_demo())


COMMANDS = {"inspect": cmd_inspect, "sync": cmd_sync, "demo": cmd_demo}


def _command_word(argv: Sequence[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def _error_prefix(command: str, error: AibrixError) -> str:
    """Input and refusals name the command the user typed; a service that cannot be
    reached or a release that does not exist is the tool's to say (as it always was)."""
    return f"aibrix-bot {command}" if isinstance(error, InvalidInput | Refused) else "aibrix-bot"


def main(argv: Sequence[str] | None = None) -> int:
    as_program = argv is None  # the console script: the process exits when this returns
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    finally:
        if as_program:
            # At exit the interpreter's cycle collections walk everything imported: about
            # 20 ms of every command's time (a warm sync takes a few hundred). The process
            # ends next, so nothing needs collecting: frozen objects are left out of them.
            gc.freeze()


def _main(argv: list[str]) -> int:
    local = _command_word(argv) in LOCAL_COMMANDS
    parser = _build_parser(pipeline=not local)
    args = parser.parse_args(argv)
    handlers = dict(COMMANDS)
    if not local:
        from bot import cli_pipeline as pipeline_commands

        handlers.update(pipeline_commands.COMMANDS)
    try:
        return handlers[args.command](args)
    except AibrixError as error:
        print(f"{_error_prefix(args.command, error)}: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        return 130
