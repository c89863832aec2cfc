"""The bot's settings, from the environment. Secrets are kept out of every repr and
message: a missing or empty one is named, never shown."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from jobs.domain.errors import InvalidInput

DEFAULT_SLACK_API_URL = "https://slack.com/api/"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class SettingsError(InvalidInput, ValueError):
    """The bot cannot start with these settings; the message names what is wrong."""


@dataclass(frozen=True)
class BotSettings:
    bot_token: str = field(repr=False)
    signing_secret: str = field(repr=False)
    slack_api_url: str = DEFAULT_SLACK_API_URL
    redis_url: str = field(default=DEFAULT_REDIS_URL, repr=False)
    config_path: Path | None = None
    app_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, socket_mode: bool = False
    ) -> BotSettings:
        env = os.environ if env is None else env
        required = ["SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"]
        if socket_mode:
            required.append("SLACK_APP_TOKEN")
        missing = [name for name in required if not env.get(name, "").strip()]
        if missing:
            raise SettingsError(
                "the bot cannot start: "
                + ", ".join(missing)
                + (" is" if len(missing) == 1 else " are")
                + " not set or empty (set them from a Secret; their values are never printed)"
            )
        api_url = env.get("SLACK_API_URL", "").strip() or DEFAULT_SLACK_API_URL
        if not api_url.startswith(("https://", "http://")):
            raise SettingsError("SLACK_API_URL must be an http:// or https:// URL")
        if not api_url.endswith("/"):
            api_url += "/"
        config = env.get("AIBRIX_CONFIG", "").strip()
        return cls(
            bot_token=env["SLACK_BOT_TOKEN"].strip(),
            signing_secret=env["SLACK_SIGNING_SECRET"].strip(),
            slack_api_url=api_url,
            redis_url=env.get("REDIS_URL", "").strip() or DEFAULT_REDIS_URL,
            config_path=Path(config) if config else None,
            app_token=env.get("SLACK_APP_TOKEN", "").strip() or None,
        )
