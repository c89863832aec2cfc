"""The aibrix-bot command line: every subcommand runs on the same code the bot uses.

Exit status, relied on by users' CI: 0 all good; 1 a verdict is not ok (or a release
is blocked or failed); 2 usage errors and invalid input (nothing contacted, nothing
enqueued); 3 a reference could not be read at all.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence

from bot import commands as pipeline_commands
from bot.commands import UsageError
from bot.report import inspection_tables
from jobs.inspection import inspect_many, inspection_json
from jobs.platforms import DEFAULT_PLATFORMS, Platform, PlatformError, parse_platform_list
from jobs.references import InvalidReferenceError, Reference, parse_reference
from jobs.registry import (
    RegistryClient,
    RegistrySettings,
    insecure_from_env,
    parse_insecure_registries,
)

EXIT_OK = 0
EXIT_NOT_OK = 1
EXIT_USAGE = 2
EXIT_UNREADABLE = 3


def _build_parser() -> argparse.ArgumentParser:
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
    inspect.add_argument("refs", nargs="+", metavar="REF", help="image references")

    commands.add_parser("demo", help="run the local end-to-end demo on the lab")
    pipeline_commands.add_commands(commands)
    return parser


def _required_platforms(args: argparse.Namespace) -> tuple[Platform, ...]:
    if args.require is not None:
        return parse_platform_list(args.require)
    if args.config or os.environ.get("AIBRIX_CONFIG"):
        return pipeline_commands.load(args).platforms
    return DEFAULT_PLATFORMS


def _parse_refs(texts: Sequence[str]) -> list[Reference]:
    return [parse_reference(text) for text in texts]


async def _inspect(
    refs: Sequence[Reference], required: Sequence[Platform], settings: RegistrySettings
) -> list:  # type: ignore[type-arg]
    async with RegistryClient(settings) as client:
        return await inspect_many(client, refs, required)


def cmd_inspect(args: argparse.Namespace) -> int:
    try:
        required = _required_platforms(args)
        refs = _parse_refs(args.refs)
        insecure = parse_insecure_registries(args.insecure_registry) | insecure_from_env()
    except (PlatformError, InvalidReferenceError) as error:
        raise UsageError(str(error)) from None
    inspections = asyncio.run(
        _inspect(refs, required, RegistrySettings(insecure_registries=insecure))
    )
    if args.json:
        print(json.dumps([inspection_json(i) for i in inspections], indent=2))
    else:
        print(inspection_tables(inspections))
    if any(i.unreadable for i in inspections):
        return EXIT_UNREADABLE
    if all(i.verdict.ok for i in inspections):
        return EXIT_OK
    return EXIT_NOT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from bot.demo import run_demo  # docker is needed only here

    return run_demo()


COMMANDS = {"inspect": cmd_inspect, "demo": cmd_demo, **pipeline_commands.COMMANDS}


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except UsageError as error:
        print(f"aibrix-bot {args.command}: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
