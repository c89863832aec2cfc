"""`aibrix-bot serve`: the Slack app over HTTP (or Socket Mode), with /healthz."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from bot.settings import BotSettings
from jobs.runtime import logs


def add_serve_command(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the Slack app: POST /slack/events, GET /healthz",
        description="Serve the Slack app. Secrets come from the environment: "
        "SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET (and SLACK_APP_TOKEN with --socket-mode); "
        "also SLACK_API_URL, REDIS_URL and AIBRIX_CONFIG.",
    )
    serve.add_argument("--host", default="127.0.0.1", metavar="HOST")
    serve.add_argument("--port", type=int, default=3000, metavar="PORT")
    serve.add_argument("--socket-mode", action="store_true", help="receive events over Socket Mode")
    serve.add_argument("--config", help="configuration file (default: $AIBRIX_CONFIG)")


def cmd_serve(args: argparse.Namespace) -> int:
    from bot.cli_pipeline import load
    from jobs.domain.errors import UsageError

    if not 0 <= args.port < 65536:
        raise UsageError("--port must be between 0 and 65535")
    # SettingsError (a missing secret, or Slack refusing the app-level token at start) and
    # RedisSettingsError are InvalidInput: `bot.cli.main` prints them and exits 2.
    settings = BotSettings.from_env(socket_mode=args.socket_mode)
    if args.config is None and settings.config_path is not None:
        args.config = str(settings.config_path)
    config = load(args)
    logs.configure()
    from bot.server import serve

    asyncio.run(
        serve(settings, config, host=args.host, port=args.port, socket_mode=args.socket_mode)
    )
    return 0
