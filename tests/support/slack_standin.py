"""A local stand-in for the Slack Web API, for tests and the demo.

No machine here reaches Slack, so the real Bolt app talks to this server instead
(`SLACK_API_URL` -> `AsyncWebClient(base_url=standin.api_url)`). It answers as Slack
does (HTTP 200 with ``{"ok": false, "error": ...}`` for API errors, 429 with
``Retry-After`` when rate limited) and enforces the Block Kit limits that make Slack
reject a message, so a message accepted here is one Slack would take.

Pure parts (Block Kit validation, ts formatting, rendering) are plain functions;
the aiohttp server at the bottom only reads requests and keeps state.
"""

from __future__ import annotations

import asyncio
import copy
import hmac
import html
import json
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from aiohttp import WSMsgType, web

JSONDict = dict[str, Any]

# Slack's documented limits for message blocks.
MAX_BLOCKS = 50
MAX_MESSAGE_TEXT = 40_000
MAX_SECTION_TEXT = 3000
MAX_FIELDS = 10
MAX_FIELD_TEXT = 2000
MAX_HEADER_TEXT = 150
MAX_BLOCK_ID = 255
MAX_ACTION_ID = 255
MAX_ACTIONS_ELEMENTS = 25
MAX_CONTEXT_ELEMENTS = 10
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2000
MAX_URL = 3000
MAX_ALT_TEXT = 2000
MAX_MARKDOWN_TEXT = 12_000
MAX_OPTIONS = 100
MAX_OPTION_TEXT = 75
MAX_OPTION_VALUE = 150

# ---------------------------------------------------------------- Block Kit validation


def _err(message: str, pointer: str) -> str:
    # Same shape as the `errors` entries Slack returns with invalid_blocks.
    return f"{message} [json-pointer:{pointer}]"


def _check_text(
    obj: object, path: str, errors: list[str], max_len: int, *, plain_only: bool = False
) -> None:
    if not isinstance(obj, dict):
        errors.append(_err("expected an object", path))
        return
    kinds = ("plain_text",) if plain_only else ("plain_text", "mrkdwn")
    if obj.get("type") not in kinds:
        errors.append(_err(f"must be one of: {', '.join(kinds)}", f"{path}/type"))
    text = obj.get("text")
    if not isinstance(text, str):
        errors.append(_err("missing required field: text", path))
    elif not text:
        errors.append(_err("must be more than 0 characters", f"{path}/text"))
    elif len(text) > max_len:
        errors.append(_err(f"must be less than {max_len + 1} characters", f"{path}/text"))


def _check_str(
    obj: Mapping[str, Any], key: str, path: str, errors: list[str], max_len: int
) -> None:
    value = obj.get(key)
    if value is None:
        return
    if not isinstance(value, str) or not value:
        errors.append(_err("must be a non-empty string", f"{path}/{key}"))
    elif len(value) > max_len:
        errors.append(_err(f"must be less than {max_len + 1} characters", f"{path}/{key}"))


def _check_list(
    obj: Mapping[str, Any], key: str, path: str, errors: list[str], most: int, *, least: int = 1
) -> list[Any]:
    value = obj.get(key)
    if not isinstance(value, list):
        errors.append(_err(f"missing required field: {key}", path))
        return []
    if len(value) < least:
        errors.append(_err(f"must provide at least {least} items", f"{path}/{key}"))
    if len(value) > most:
        errors.append(_err(f"no more than {most} items allowed", f"{path}/{key}"))
    return value


def _check_confirm(obj: object, path: str, errors: list[str]) -> None:
    if not isinstance(obj, dict):
        errors.append(_err("expected an object", path))
        return
    for key, limit in (("title", 100), ("text", 300), ("confirm", 30), ("deny", 30)):
        _check_text(obj.get(key), f"{path}/{key}", errors, limit, plain_only=key != "text")


def _check_options(el: Mapping[str, Any], path: str, errors: list[str], most: int) -> None:
    for i, option in enumerate(_check_list(el, "options", path, errors, most)):
        opath = f"{path}/options/{i}"
        if not isinstance(option, dict):
            errors.append(_err("expected an object", opath))
            continue
        _check_text(option.get("text"), f"{opath}/text", errors, MAX_OPTION_TEXT)
        value = option.get("value")
        if not isinstance(value, str) or not value:
            errors.append(_err("missing required field: value", opath))
        elif len(value) > MAX_OPTION_VALUE:
            errors.append(_err(f"must be less than {MAX_OPTION_VALUE + 1} characters", opath))


_SELECTS = {
    "static_select",
    "multi_static_select",
    "users_select",
    "multi_users_select",
    "conversations_select",
    "multi_conversations_select",
    "channels_select",
    "multi_channels_select",
    "external_select",
    "multi_external_select",
}
_INTERACTIVE = {"button", "overflow", "datepicker", "timepicker", "checkboxes", "radio_buttons"}
ACTIONS_ELEMENTS = frozenset(_INTERACTIVE | _SELECTS | {"datetimepicker", "workflow_button"})
ACCESSORY_ELEMENTS = frozenset(_INTERACTIVE | _SELECTS | {"image", "workflow_button"})


def _check_element(
    el: object, path: str, errors: list[str], allowed: frozenset[str], action_ids: set[str]
) -> None:
    if not isinstance(el, dict):
        errors.append(_err("expected an object", path))
        return
    kind = el.get("type")
    if not isinstance(kind, str):
        errors.append(_err("missing required field: type", path))
        return
    if kind not in allowed:
        errors.append(_err(f"unsupported type: {kind}", f"{path}/type"))
        return
    if kind == "image":
        _check_image(el, path, errors)
        return
    action_id = el.get("action_id")
    if action_id is not None:
        _check_str(el, "action_id", path, errors, MAX_ACTION_ID)
        if isinstance(action_id, str):
            # Slack requires action_ids to be unique within their block.
            if action_id in action_ids:
                errors.append(_err("duplicate action_id", f"{path}/action_id"))
            action_ids.add(action_id)
    if kind == "button":
        _check_text(el.get("text"), f"{path}/text", errors, MAX_BUTTON_TEXT, plain_only=True)
        _check_str(el, "value", path, errors, MAX_BUTTON_VALUE)
        _check_str(el, "url", path, errors, MAX_URL)
        if "style" in el and el["style"] not in ("primary", "danger"):
            errors.append(_err("must be one of: primary, danger", f"{path}/style"))
    elif kind in ("static_select", "multi_static_select") and "option_groups" not in el:
        _check_options(el, path, errors, MAX_OPTIONS)
    elif kind == "overflow":
        _check_options(el, path, errors, 5)
    elif kind in ("checkboxes", "radio_buttons"):
        _check_options(el, path, errors, 10)
    if kind in _SELECTS and "placeholder" in el:
        _check_text(el["placeholder"], f"{path}/placeholder", errors, 150, plain_only=True)
    if "confirm" in el:
        _check_confirm(el["confirm"], f"{path}/confirm", errors)


def _check_image(el: Mapping[str, Any], path: str, errors: list[str]) -> None:
    if "image_url" not in el and "slack_file" not in el:
        errors.append(_err("must define either `image_url` or `slack_file`", path))
    _check_str(el, "image_url", path, errors, MAX_URL)
    if not isinstance(el.get("alt_text"), str):
        errors.append(_err("missing required field: alt_text", path))
    else:
        _check_str(el, "alt_text", path, errors, MAX_ALT_TEXT)


def _section(block: Mapping[str, Any], path: str, errors: list[str]) -> None:
    text, fields = block.get("text"), block.get("fields")
    if text is None and fields is None:
        errors.append(_err("must define either `text` or `fields`", path))
    if text is not None:
        _check_text(text, f"{path}/text", errors, MAX_SECTION_TEXT)
    if fields is not None:
        for i, item in enumerate(_check_list(block, "fields", path, errors, MAX_FIELDS)):
            _check_text(item, f"{path}/fields/{i}", errors, MAX_FIELD_TEXT)
    if "accessory" in block:
        _check_element(block["accessory"], f"{path}/accessory", errors, ACCESSORY_ELEMENTS, set())


def _header(block: Mapping[str, Any], path: str, errors: list[str]) -> None:
    _check_text(block.get("text"), f"{path}/text", errors, MAX_HEADER_TEXT, plain_only=True)


def _context(block: Mapping[str, Any], path: str, errors: list[str]) -> None:
    elements = _check_list(block, "elements", path, errors, MAX_CONTEXT_ELEMENTS)
    for i, el in enumerate(elements):
        epath = f"{path}/elements/{i}"
        if isinstance(el, dict) and el.get("type") == "image":
            _check_image(el, epath, errors)
        else:
            _check_text(el, epath, errors, MAX_SECTION_TEXT)


def _actions(block: Mapping[str, Any], path: str, errors: list[str]) -> None:
    action_ids: set[str] = set()
    for i, el in enumerate(_check_list(block, "elements", path, errors, MAX_ACTIONS_ELEMENTS)):
        _check_element(el, f"{path}/elements/{i}", errors, ACTIONS_ELEMENTS, action_ids)


def _image_block(block: Mapping[str, Any], path: str, errors: list[str]) -> None:
    _check_image(block, path, errors)
    if "title" in block:
        _check_text(block["title"], f"{path}/title", errors, 2000, plain_only=True)


def _markdown(block: Mapping[str, Any], path: str, errors: list[str]) -> None:
    text = block.get("text")
    if not isinstance(text, str) or not text:
        errors.append(_err("missing required field: text", path))
    elif len(text) > MAX_MARKDOWN_TEXT:
        errors.append(_err(f"must be less than {MAX_MARKDOWN_TEXT + 1} characters", path))


def _unchecked(block: Mapping[str, Any], path: str, errors: list[str]) -> None:
    """Block types Slack accepts that this bot never sends: only their type is checked."""


_BLOCK_CHECKS: dict[str, Callable[[Mapping[str, Any], str, list[str]], None]] = {
    "section": _section,
    "header": _header,
    "divider": _unchecked,
    "context": _context,
    "actions": _actions,
    "image": _image_block,
    "markdown": _markdown,
    "rich_text": _unchecked,
    "input": _unchecked,
    "file": _unchecked,
    "video": _unchecked,
}


def validate_blocks(blocks: object) -> list[str]:
    """Why Slack would refuse these message blocks; empty when it would take them."""
    if not isinstance(blocks, list):
        return [_err("must be an array", "/blocks")]
    errors: list[str] = []
    if len(blocks) > MAX_BLOCKS:
        errors.append(_err(f"no more than {MAX_BLOCKS} items allowed", "/blocks"))
    block_ids: set[str] = set()
    for i, block in enumerate(blocks):
        path = f"/blocks/{i}"
        if not isinstance(block, dict):
            errors.append(_err("expected an object", path))
            continue
        kind = block.get("type")
        if not isinstance(kind, str):
            errors.append(_err("missing required field: type", path))
            continue
        block_id = block.get("block_id")
        if block_id is not None:
            _check_str(block, "block_id", path, errors, MAX_BLOCK_ID)
            if isinstance(block_id, str):
                if block_id in block_ids:
                    errors.append(_err("duplicate block_id", f"{path}/block_id"))
                block_ids.add(block_id)
        check = _BLOCK_CHECKS.get(kind)
        if check is None:
            errors.append(_err(f"unsupported type: {kind}", f"{path}/type"))
        else:
            check(block, path, errors)
    return errors


def slack_error(error: str, **extra: Any) -> JSONDict:
    return {"ok": False, "error": error, **extra}


def parse_blocks(raw: object) -> tuple[list[Any] | None, JSONDict | None]:
    """Blocks as sent (a list in JSON bodies, a JSON string in form bodies), or Slack's error."""
    if raw is None:
        return None, None
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return None, slack_error("invalid_blocks_format")
    if not isinstance(raw, list):
        return None, slack_error("invalid_blocks_format")
    return raw, None


def message_content_error(text: str | None, blocks: list[Any] | None) -> JSONDict | None:
    """Slack's error for a message body (text and blocks), or None when it is acceptable."""
    if not text and not blocks:
        return slack_error("no_text")
    if text is not None and len(text) > MAX_MESSAGE_TEXT:
        return slack_error("msg_too_long")
    if blocks is not None:
        errors = validate_blocks(blocks)
        if errors:
            return slack_error(
                "invalid_blocks",
                errors=errors,
                response_metadata={"messages": [f"[ERROR] {e}" for e in errors]},
            )
    return None


def format_ts(micros: int) -> str:
    """Slack's message ts: seconds, a dot, six digits ("1700000000.000100")."""
    return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"


def _message_metadata(raw: object) -> tuple[JSONDict | None, JSONDict | None]:
    """chat.postMessage's `metadata` (an object, or its JSON text in a form body): the
    value to keep, or Slack's error."""
    if raw is None or raw == "":
        return None, None
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return None, slack_error("invalid_metadata_format")
    if (
        not isinstance(raw, dict)
        or not isinstance(raw.get("event_type"), str)
        or not re.fullmatch(r"[A-Za-z0-9_.-]{1,255}", raw["event_type"])
        or not isinstance(raw.get("event_payload"), dict)
    ):
        return None, slack_error("invalid_metadata_schema")
    return {"event_type": raw["event_type"], "event_payload": raw["event_payload"]}, None


def _truthy(value: object) -> bool:
    # JSON bodies carry booleans; form bodies and some clients send "true"/"1".
    return value is True or (isinstance(value, str) and value.lower() in ("true", "1"))


# ---------------------------------------------------------------- state


@dataclass(frozen=True)
class MessageVersion:
    """A message's text and blocks as they were before an edit replaced them."""

    text: str
    blocks: list[Any] | None
    replaced_at: float


@dataclass
class Message:
    channel: str
    ts: str
    text: str
    blocks: list[Any] | None
    user: str
    bot_id: str
    thread_ts: str | None = None
    history: list[MessageVersion] = field(default_factory=list)
    deleted: bool = False
    # chat.postMessage's `metadata` ({"event_type", "event_payload"}); Slack returns it
    # from conversations.history only when asked (include_all_metadata).
    metadata: JSONDict | None = None

    @property
    def edited(self) -> bool:
        return bool(self.history)

    def to_slack(self, team_id: str, *, with_metadata: bool = False) -> JSONDict:
        """The message object as Slack returns it in API responses and payloads."""
        out: JSONDict = {
            "type": "message",
            "user": self.user,
            "bot_id": self.bot_id,
            "text": self.text,
            "ts": self.ts,
            "team": team_id,
        }
        if self.blocks is not None:
            out["blocks"] = copy.deepcopy(self.blocks)
        if self.thread_ts is not None:
            out["thread_ts"] = self.thread_ts
        if self.history:
            out["edited"] = {"user": self.user, "ts": self.ts}
        if with_metadata and self.metadata is not None:
            out["metadata"] = copy.deepcopy(self.metadata)
        return out


@dataclass(frozen=True)
class Ephemeral:
    """A message only `user` sees, from chat.postEphemeral or a response_url."""

    channel: str | None
    user: str | None
    ts: str
    text: str
    blocks: list[Any] | None
    source: str
    thread_ts: str | None = None


@dataclass(frozen=True)
class Call:
    """One Web API request as the stand-in saw and answered it (never holds the token)."""

    method: str
    params: JSONDict
    time: float
    status: int
    response: JSONDict
    token_via: str | None  # "header", "param" or None
    content_type: str
    response_headers: Mapping[str, str]

    @property
    def ok(self) -> bool:
        return bool(self.response.get("ok"))

    @property
    def error(self) -> str | None:
        error = self.response.get("error")
        return error if isinstance(error, str) else None


@dataclass(frozen=True)
class ResponsePost:
    """One POST to a response_url and how the stand-in answered it."""

    payload: JSONDict
    status: int
    body: str
    time: float


@dataclass
class ResponseUrl:
    id: str
    channel: str | None
    user: str | None
    message_ts: str | None
    max_uses: int
    posts: list[ResponsePost] = field(default_factory=list)

    @property
    def uses(self) -> int:
        return sum(1 for p in self.posts if p.status == 200)


@dataclass
class _RateLimit:
    remaining: int
    retry_after: int


@dataclass
class Hold:
    """One Web API call held open: Slack has done what was asked (the message is
    posted), but the answer has not left yet, as when the caller dies while its request
    is in flight. `arrived` is set when the call comes; `release()` lets the answer go."""

    method: str
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    released: asyncio.Event = field(default_factory=asyncio.Event)
    call: Call | None = None

    def release(self) -> None:
        self.released.set()

    async def wait_arrived(self, timeout: float = 10.0) -> Call:
        async with asyncio.timeout(timeout):
            await self.arrived.wait()
        assert self.call is not None
        return self.call


# Socket Mode: https://api.slack.com/apis/socket-mode
APP_TOKEN_METHODS = frozenset({"apps.connections.open"})
SOCKET_PATH = "/link/"


@dataclass(frozen=True)
class SocketAck:
    """One acknowledgement the app sent over a Socket Mode connection."""

    envelope_id: str
    payload: JSONDict | None
    time: float
    connection: int
    known: bool  # it names an envelope the stand-in sent
    error: str | None = None  # why Slack would refuse the response payload


@dataclass(frozen=True)
class SocketSend:
    """One attempt at delivering an envelope: which retry, on which connection."""

    retry_attempt: int
    retry_reason: str | None
    connection: int | None  # None: lost on the way (never reached the app)
    time: float


@dataclass
class SocketDelivery:
    """An envelope (slash_commands, interactive, ...) with each attempt and each ack."""

    envelope_id: str
    type: str
    payload: JSONDict
    accepts_response_payload: bool
    sends: list[SocketSend] = field(default_factory=list)
    acks: list[SocketAck] = field(default_factory=list)

    @property
    def acked(self) -> bool:
        return bool(self.acks)

    def envelope(self, retry_attempt: int, retry_reason: str | None) -> JSONDict:
        """The message Slack writes to the WebSocket for this attempt."""
        return {
            "envelope_id": self.envelope_id,
            "type": self.type,
            "payload": copy.deepcopy(self.payload),
            "accepts_response_payload": self.accepts_response_payload,
            "retry_attempt": retry_attempt,
            "retry_reason": retry_reason or "",
        }


@dataclass
class SocketConnection:
    """One WebSocket an app opened with a ticket from apps.connections.open."""

    index: int
    opened_at: float
    ws: web.WebSocketResponse = field(repr=False)
    closed_at: float | None = None
    received: list[JSONDict] = field(default_factory=list)  # what the app sent besides acks

    @property
    def open(self) -> bool:
        return self.closed_at is None and not self.ws.closed


# ---------------------------------------------------------------- server


class SlackStandIn:
    """A Slack Web API on 127.0.0.1 that keeps messages and records every call.

    `channels` maps known channel ids to names (or lists ids); when None, any channel
    id is accepted. `users` maps user ids to names; when None, any user is accepted.
    `usergroups` maps user group ids to their members.
    """

    def __init__(
        self,
        token: str,
        *,
        channels: Mapping[str, str] | Iterable[str] | None = None,
        users: Mapping[str, str] | None = None,
        usergroups: Mapping[str, Sequence[str]] | None = None,
        team_id: str = "T0AIBRIX",
        team_domain: str = "aibrix",
        bot_user_id: str = "U0AIBRIXBOT",
        bot_id: str = "B0AIBRIXBOT",
        bot_name: str = "aibrix-bot",
        clock: Callable[[], float] = time.time,
        app_token: str | None = None,
        app_id: str = "A0AIBRIXAPP",
        ack_timeout: float | None = 3.0,
        max_redeliveries: int = 3,
    ) -> None:
        if not token:
            raise ValueError("the stand-in needs a bot token to check requests against")
        if app_token is not None and not app_token.startswith("xapp-"):
            raise ValueError("a Socket Mode app-level token starts with xapp-")
        self._token = token
        self._app_token = app_token
        self.app_id = app_id
        self.ack_timeout = ack_timeout
        self.max_redeliveries = max_redeliveries
        self._tickets: set[str] = set()
        self.socket_connections: list[SocketConnection] = []
        self.deliveries: dict[str, SocketDelivery] = {}
        self.socket_acks: list[SocketAck] = []
        self._timers: set[asyncio.Task[None]] = set()
        if channels is None:
            self._channels: dict[str, str] | None = None
        elif isinstance(channels, Mapping):
            self._channels = dict(channels)
        else:
            self._channels = {c: c for c in channels}
        self._users = dict(users) if users is not None else None
        self._usergroups = {k: list(v) for k, v in (usergroups or {}).items()}
        self.team_id = team_id
        self.team_domain = team_domain
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.bot_name = bot_name
        self._clock = clock
        self._last_ts = 0
        self._messages: dict[str, dict[str, Message]] = {}
        self.ephemerals: list[Ephemeral] = []
        self.calls: list[Call] = []
        self._response_urls: dict[str, ResponseUrl] = {}
        self._limits: dict[str, _RateLimit] = {}
        self._holds: dict[str, Hold] = {}
        self._channel_limits: dict[str, tuple[float, int]] = {}
        self._channel_last: dict[tuple[str, str], float] = {}
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._base = ""
        self._methods: dict[str, Callable[[JSONDict], JSONDict]] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.getPermalink": self._chat_get_permalink,
            "usergroups.users.list": self._usergroups_users_list,
            "users.info": self._users_info,
            "conversations.info": self._conversations_info,
            "conversations.history": self._conversations_history,
            "apps.connections.open": self._apps_connections_open,
        }

    def __repr__(self) -> str:
        return f"SlackStandIn(url={self._base or 'not started'!r}, team_id={self.team_id!r})"

    # -- lifecycle

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("the Slack stand-in is already running")
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_post("/response/{id}", self._handle_response_url)
        app.router.add_get(SOCKET_PATH, self._handle_socket)
        # No access log: a request line may carry a token in its query string.
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        self._runner = runner
        self._base = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        for timer in list(self._timers):
            timer.cancel()
        for conn in self.socket_connections:
            if conn.open:
                await conn.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        if not self._base:
            raise RuntimeError("the Slack stand-in is not started")
        return self._base

    @property
    def api_url(self) -> str:
        """Base URL for slack_sdk (`AsyncWebClient(base_url=...)`), ending in /api/."""
        return f"{self.url}/api/"

    # -- configuration

    def rate_limit(self, method: str, *, calls: int = 1, retry_after: int = 1) -> None:
        """Answer the next `calls` calls to `method` with 429 and Retry-After."""
        if calls < 0 or retry_after < 0:
            raise ValueError("calls and retry_after must not be negative")
        self._limits[method] = _RateLimit(calls, retry_after)

    def hold(self, method: str) -> Hold:
        """Hold the answer to the next call to `method` until `Hold.release()`: the call
        takes effect at once (a message is posted), only its answer waits."""
        if method in self._holds:
            raise RuntimeError(f"a call to {method} is already held")
        self._holds[method] = Hold(method)
        return self._holds[method]

    def per_channel_rate_limit(
        self, method: str = "chat.update", *, interval: float | None = 1.0, retry_after: int = 1
    ) -> None:
        """Allow one successful `method` call per channel per `interval` seconds (None: off)."""
        if interval is None:
            self._channel_limits.pop(method, None)
        else:
            self._channel_limits[method] = (interval, retry_after)

    def add_channel(self, channel_id: str, name: str | None = None) -> None:
        if self._channels is not None:
            self._channels[channel_id] = name or channel_id

    # -- inspection

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def messages(self, channel: str, *, include_deleted: bool = False) -> list[Message]:
        """Every message of the channel, thread replies included, oldest first."""
        found = self._messages.get(channel, {}).values()
        return [m for m in found if include_deleted or not m.deleted]

    def message(self, channel: str, ts: str) -> Message | None:
        return self._messages.get(channel, {}).get(ts)

    def thread(self, channel: str, ts: str) -> list[Message]:
        """Replies in the thread started by `ts`, oldest first."""
        return [m for m in self.messages(channel) if m.thread_ts == ts and m.ts != ts]

    def ephemerals_for(self, user: str) -> list[Ephemeral]:
        return [e for e in self.ephemerals if e.user == user]

    def new_response_url(
        self,
        *,
        channel: str | None = None,
        user: str | None = None,
        message_ts: str | None = None,
        max_uses: int = 5,
    ) -> str:
        """A response_url on the stand-in, bound to the channel, user and original message."""
        rid = secrets.token_hex(8)
        self._response_urls[rid] = ResponseUrl(rid, channel, user, message_ts, max_uses)
        return f"{self.url}/response/{rid}"

    def response_url(self, url_or_id: str) -> ResponseUrl:
        return self._response_urls[url_or_id.rstrip("/").rsplit("/", 1)[-1]]

    def responses(self, url_or_id: str) -> list[ResponsePost]:
        """Every POST to that response_url, accepted or not, oldest first."""
        return list(self.response_url(url_or_id).posts)

    async def wait_for_calls(self, method: str, count: int = 1, timeout: float = 5.0) -> list[Call]:
        """Wait until `method` was called `count` times (for handlers that run after ack)."""
        async with asyncio.timeout(timeout):
            while len(self.calls_to(method)) < count:
                await self._changed.wait()
        return self.calls_to(method)

    async def wait_for_responses(
        self, url_or_id: str, count: int = 1, timeout: float = 5.0
    ) -> list[ResponsePost]:
        async with asyncio.timeout(timeout):
            while len(self.responses(url_or_id)) < count:
                await self._changed.wait()
        return self.responses(url_or_id)

    def channel_name(self, channel: str) -> str:
        return (self._channels or {}).get(channel, channel)

    def user_name(self, user: str) -> str | None:
        return self.bot_name if user == self.bot_user_id else (self._users or {}).get(user)

    def render_text(self, channel: str) -> str:
        return render_channel_text(
            self.messages(channel),
            channel_name=self.channel_name(channel),
            users=self._users or {},
            bot_name=self.bot_name,
            ephemerals=[e for e in self.ephemerals if e.channel == channel],
        )

    def write_html(self, channel: str, path: Path) -> Path:
        page = render_channel_html(
            self.messages(channel),
            channel_name=self.channel_name(channel),
            users=self._users or {},
            bot_name=self.bot_name,
            ephemerals=[e for e in self.ephemerals if e.channel == channel],
        )
        path.write_text(page, encoding="utf-8")
        return path

    # -- internals

    def _notify(self) -> None:
        # Wake every waiter, then give later waiters a fresh event to wait on.
        self._changed.set()
        self._changed = asyncio.Event()

    def _next_ts(self) -> str:
        # Slack ts values are unique per channel and increase; keep them globally so.
        self._last_ts = max(int(self._clock() * 1_000_000), self._last_ts + 1)
        return format_ts(self._last_ts)

    def _resolve_channel(self, raw: object) -> str | None:
        if not isinstance(raw, str) or not raw:
            return None
        if self._channels is None:
            return raw
        if raw in self._channels:
            return raw
        name = raw.removeprefix("#")
        return next((cid for cid, n in self._channels.items() if n == name), None)

    def _known_user(self, user: object) -> bool:
        if not isinstance(user, str) or not user:
            return False
        return self._users is None or user in self._users or user == self.bot_user_id

    async def _read_params(
        self, request: web.Request
    ) -> tuple[JSONDict, str | None, str | None, JSONDict]:
        """Query and body parameters merged, the token, how it came, and an error or warning."""
        params: JSONDict = dict(request.query)
        token: str | None = None
        via: str | None = None
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer ") and auth[7:].strip():
            token, via = auth[7:].strip(), "header"
        error: JSONDict = {}
        if request.method == "POST" and request.can_read_body:
            if request.content_type == "application/json":
                try:
                    body = json.loads(await request.text())
                except ValueError:
                    return params, token, via, slack_error("invalid_json")
                if not isinstance(body, dict):
                    return params, token, via, slack_error("json_not_object")
                # Slack ignores a token inside a JSON body: only the header counts.
                body.pop("token", None)
                params.update(body)
                if "charset" not in request.headers.get("Content-Type", "").lower():
                    error = {"warning": "missing_charset"}
            else:
                form = await request.post()
                params.update({k: v for k, v in form.items() if isinstance(v, str)})
        param_token = params.pop("token", None)
        if token is None and isinstance(param_token, str) and param_token:
            token, via = param_token, "param"
        return params, token, via, error

    def _token_error(self, method: str, token: str) -> str | None:
        """Slack's error for this token on this method, None when it is the right one:
        apps.connections.open takes the app-level token only, every other method the bot
        token only."""
        wants_app = method in APP_TOKEN_METHODS
        expected = self._app_token if wants_app else self._token
        other = self._token if wants_app else self._app_token
        if expected is not None and hmac.compare_digest(token.encode(), expected.encode()):
            return None
        if other is not None and hmac.compare_digest(token.encode(), other.encode()):
            return "not_allowed_token_type"
        if wants_app and not token.startswith("xapp-"):
            return "not_allowed_token_type"
        return "invalid_auth"

    def _rate_limited(self, method: str, params: JSONDict) -> int | None:
        """Retry-After seconds if this call is rate limited, else None."""
        limit = self._limits.get(method)
        if limit is not None and limit.remaining > 0:
            limit.remaining -= 1
            return limit.retry_after
        channel_limit = self._channel_limits.get(method)
        channel = self._resolve_channel(params.get("channel"))
        if channel_limit is not None and channel is not None:
            last = self._channel_last.get((method, channel))
            if last is not None and self._clock() - last < channel_limit[0]:
                return channel_limit[1]
        return None

    async def _handle_api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params, token, via, extra = await self._read_params(request)
        status, headers = 200, {}
        handler = self._methods.get(method)
        if extra.get("ok") is False:
            body = extra
        elif handler is None:
            body = slack_error("unknown_method", req_method=method)
        elif token is None:
            body = slack_error("not_authed")
        elif (refused := self._token_error(method, token)) is not None:
            body = slack_error(refused)
        elif (retry_after := self._rate_limited(method, params)) is not None:
            status, headers = 429, {"Retry-After": str(retry_after)}
            body = slack_error("ratelimited")
        else:
            body = handler(params)
            channel = body.get("channel")
            if body.get("ok") and method in self._channel_limits and isinstance(channel, str):
                self._channel_last[(method, channel)] = self._clock()
            if "warning" in extra:
                body["warning"] = extra["warning"]
                body["response_metadata"] = {"warnings": [extra["warning"]]}
        if method == "auth.test" and body.get("ok"):
            headers["X-OAuth-Scopes"] = (
                "channels:history,chat:write,commands,groups:history,usergroups:read,users:read"
            )
        call = Call(
            method=method,
            params=copy.deepcopy(params),
            time=self._clock(),
            status=status,
            response=copy.deepcopy(body),
            token_via=via,
            content_type=request.content_type,
            response_headers=dict(headers),
        )
        self.calls.append(call)
        self._notify()
        held = self._holds.pop(method, None)
        if held is not None:
            held.call = call
            held.arrived.set()
            await held.released.wait()
        return web.json_response(body, status=status, headers=headers)

    # -- Web API methods: each takes the request parameters, returns Slack's answer

    def _auth_test(self, params: JSONDict) -> JSONDict:
        return {
            "ok": True,
            "url": f"https://{self.team_domain}.slack.com/",
            "team": self.team_domain,
            "user": self.bot_name,
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _content(self, params: JSONDict) -> tuple[str | None, list[Any] | None, JSONDict | None]:
        text = params.get("text")
        text = None if text is None else str(text)
        blocks, error = parse_blocks(params.get("blocks"))
        return text, blocks, error or message_content_error(text, blocks)

    def _chat_post_message(self, params: JSONDict) -> JSONDict:
        channel = self._resolve_channel(params.get("channel"))
        if channel is None:
            return slack_error("channel_not_found")
        text, blocks, error = self._content(params)
        if error:
            return error
        thread_ts = params.get("thread_ts") or None
        if thread_ts is not None:
            parent = self.message(channel, str(thread_ts))
            # A reply to a reply joins the parent's thread, as in Slack.
            thread_ts = (parent.thread_ts or parent.ts) if parent else str(thread_ts)
            if parent is not None and parent.thread_ts is None:
                parent.thread_ts = parent.ts
        meta, meta_error = _message_metadata(params.get("metadata"))
        if meta_error:
            return meta_error
        msg = self._store(channel, text or "", blocks, thread_ts)
        msg.metadata = meta
        return {"ok": True, "channel": channel, "ts": msg.ts, "message": msg.to_slack(self.team_id)}

    def _store(
        self, channel: str, text: str, blocks: list[Any] | None, thread_ts: str | None
    ) -> Message:
        msg = Message(
            channel=channel,
            ts=self._next_ts(),
            text=text,
            blocks=copy.deepcopy(blocks),
            user=self.bot_user_id,
            bot_id=self.bot_id,
            thread_ts=thread_ts,
        )
        self._messages.setdefault(channel, {})[msg.ts] = msg
        return msg

    def _edit(self, msg: Message, text: str | None, blocks: list[Any] | None) -> None:
        # Like chat.update: a field left out keeps its value; blocks=[] removes blocks.
        msg.history.append(MessageVersion(msg.text, msg.blocks, self._clock()))
        if text is not None:
            msg.text = text
        if blocks is not None:
            msg.blocks = copy.deepcopy(blocks) or None

    def _chat_update(self, params: JSONDict) -> JSONDict:
        channel = self._resolve_channel(params.get("channel"))
        if channel is None:
            return slack_error("channel_not_found")
        ts = params.get("ts")
        if not ts:
            return slack_error(
                "invalid_arguments", response_metadata={"messages": ["[ERROR] missing ts"]}
            )
        msg = self.message(channel, str(ts))
        if msg is None or msg.deleted:
            return slack_error("message_not_found")
        text, blocks, error = self._content(params)
        if error:
            return error
        self._edit(msg, text, blocks)
        return {
            "ok": True,
            "channel": channel,
            "ts": msg.ts,
            "text": msg.text,
            "message": msg.to_slack(self.team_id),
        }

    def _chat_post_ephemeral(self, params: JSONDict) -> JSONDict:
        channel = self._resolve_channel(params.get("channel"))
        if channel is None:
            return slack_error("channel_not_found")
        user = params.get("user")
        if not self._known_user(user):
            return slack_error("user_not_found")
        text, blocks, error = self._content(params)
        if error:
            return error
        thread_ts = params.get("thread_ts")
        eph = Ephemeral(
            channel=channel,
            user=str(user),
            ts=self._next_ts(),
            text=text or "",
            blocks=copy.deepcopy(blocks),
            source="chat.postEphemeral",
            thread_ts=str(thread_ts) if thread_ts else None,
        )
        self.ephemerals.append(eph)
        return {"ok": True, "message_ts": eph.ts}

    def _chat_get_permalink(self, params: JSONDict) -> JSONDict:
        channel = self._resolve_channel(params.get("channel"))
        if channel is None:
            return slack_error("channel_not_found")
        msg = self.message(channel, str(params.get("message_ts", "")))
        if msg is None or msg.deleted:
            return slack_error("message_not_found")
        link = f"https://{self.team_domain}.slack.com/archives/{channel}/p{msg.ts.replace('.', '')}"
        if msg.thread_ts and msg.thread_ts != msg.ts:
            link += f"?thread_ts={msg.thread_ts}&cid={channel}"
        return {"ok": True, "channel": channel, "permalink": link}

    def _usergroups_users_list(self, params: JSONDict) -> JSONDict:
        group = params.get("usergroup")
        if not isinstance(group, str) or group not in self._usergroups:
            return slack_error("no_such_subteam")
        return {"ok": True, "users": list(self._usergroups[group])}

    def _users_info(self, params: JSONDict) -> JSONDict:
        user = params.get("user")
        if not self._known_user(user):
            return slack_error("user_not_found")
        uid = str(user)
        is_bot = uid == self.bot_user_id
        name = self.bot_name if is_bot else (self._users or {}).get(uid, uid)
        return {
            "ok": True,
            "user": {
                "id": uid,
                "team_id": self.team_id,
                "name": name,
                "real_name": name,
                "deleted": False,
                "is_bot": is_bot,
                "profile": {"real_name": name, "display_name": name},
            },
        }

    def _conversations_info(self, params: JSONDict) -> JSONDict:
        channel = self._resolve_channel(params.get("channel"))
        if channel is None:
            return slack_error("channel_not_found")
        return {
            "ok": True,
            "channel": {
                "id": channel,
                "name": self.channel_name(channel),
                "is_channel": True,
                "is_private": False,
                "is_archived": False,
                "is_member": True,
            },
        }

    def _conversations_history(self, params: JSONDict) -> JSONDict:
        # The channel's messages, newest first, thread replies left out (as Slack does);
        # `oldest`/`latest` bound the ts (exclusive unless `inclusive`), `limit` <= 1000.
        channel = self._resolve_channel(params.get("channel"))
        if channel is None:
            return slack_error("channel_not_found")
        try:
            oldest = float(params.get("oldest") or 0)
            latest = float(params.get("latest") or "inf")
            limit = int(params.get("limit") or 100)
        except (TypeError, ValueError):
            return slack_error("invalid_arguments")
        inclusive = _truthy(params.get("inclusive"))
        with_metadata = _truthy(params.get("include_all_metadata"))
        found = []
        for msg in sorted(self.messages(channel), key=lambda m: float(m.ts), reverse=True):
            ts = float(msg.ts)
            if msg.thread_ts not in (None, msg.ts):
                continue
            if ts < oldest or ts > latest or (not inclusive and ts in (oldest, latest)):
                continue
            found.append(msg.to_slack(self.team_id, with_metadata=with_metadata))
        shown = found[: max(1, min(limit, 1000))]
        return {
            "ok": True,
            "messages": shown,
            "has_more": len(found) > len(shown),
            "pin_count": 0,
            "response_metadata": {"next_cursor": ""},
        }

    # -- Socket Mode

    def _apps_connections_open(self, params: JSONDict) -> JSONDict:
        # Reached only with the app token (see _token_error). A ticket is good for one
        # connection, as Slack's are.
        ticket = secrets.token_hex(16)
        self._tickets.add(ticket)
        ws_base = "ws" + self.url.removeprefix("http")
        return {"ok": True, "url": f"{ws_base}{SOCKET_PATH}?ticket={ticket}&app_id={self.app_id}"}

    async def _handle_socket(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        if ticket not in self._tickets:
            return web.Response(status=401, text="invalid_ticket")
        self._tickets.discard(ticket)
        ws = web.WebSocketResponse(autoping=True)  # answers the SDK's pings with pongs
        await ws.prepare(request)
        conn = SocketConnection(len(self.socket_connections), self._clock(), ws)
        self.socket_connections.append(conn)
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": sum(1 for c in self.socket_connections if c.open),
                "debug_info": {
                    "host": "applink-standin",
                    "build_number": 1,
                    "approximate_connection_time": 18060,
                },
                "connection_info": {"app_id": self.app_id},
            }
        )
        self._notify()
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(msg.data)
                except ValueError:
                    data = None
                if isinstance(data, dict) and isinstance(data.get("envelope_id"), str):
                    self._record_ack(conn, data)
                elif isinstance(data, dict):
                    conn.received.append(data)
                self._notify()
        finally:
            conn.closed_at = self._clock()
            self._notify()
        return ws

    def _record_ack(self, conn: SocketConnection, data: JSONDict) -> None:
        envelope_id = str(data["envelope_id"])
        delivery = self.deliveries.get(envelope_id)
        raw = data.get("payload")
        payload = copy.deepcopy(raw) if isinstance(raw, dict) else None
        error = None
        if delivery is not None and payload and delivery.accepts_response_payload:
            error = self._show_response_payload(delivery, payload)
        ack = SocketAck(
            envelope_id, payload, self._clock(), conn.index, delivery is not None, error
        )
        self.socket_acks.append(ack)
        if delivery is not None:
            delivery.acks.append(ack)

    def _show_response_payload(self, delivery: SocketDelivery, payload: JSONDict) -> str | None:
        """What Slack does with a slash command's ack payload: shows it to the user (or in
        the channel with response_type in_channel). Slack's error name when it would not."""
        text = payload.get("text")
        text = None if text is None else str(text)
        blocks, error = parse_blocks(payload.get("blocks"))
        error = error or message_content_error(text, blocks)
        if error:
            return str(error["error"])
        channel = self._resolve_channel(delivery.payload.get("channel_id"))
        user = delivery.payload.get("user_id")
        if payload.get("response_type") == "in_channel" and channel is not None:
            self._store(channel, text or "", blocks, None)
        else:
            self.ephemerals.append(
                Ephemeral(
                    channel,
                    str(user) if user else None,
                    self._next_ts(),
                    text or "",
                    copy.deepcopy(blocks),
                    "socket mode ack",
                )
            )
        return None

    def _open_connection(self) -> SocketConnection | None:
        found = [c for c in self.socket_connections if c.open]
        return found[-1] if found else None

    async def wait_for_socket(self, count: int = 1, timeout: float = 10.0) -> SocketConnection:
        """Wait until `count` connections have been opened and one is open; the newest."""
        async with asyncio.timeout(timeout):
            while len(self.socket_connections) < count or self._open_connection() is None:
                await self._changed.wait()
        found = self._open_connection()
        assert found is not None
        return found

    async def deliver(
        self,
        type: str,
        payload: Mapping[str, Any],
        *,
        accepts_response_payload: bool | None = None,
        envelope_id: str | None = None,
        lose: bool = False,
    ) -> SocketDelivery:
        """Send an envelope to the app's open connection, as Slack does for a command or
        a click in Socket Mode. `lose`: it never reaches the app (a dropped first delivery).
        Unacked after `ack_timeout` seconds, it is sent again with retry_attempt + 1, up
        to `max_redeliveries` times."""
        delivery = SocketDelivery(
            envelope_id or secrets.token_hex(16),
            type,
            copy.deepcopy(dict(payload)),
            type == "slash_commands"
            if accepts_response_payload is None
            else accepts_response_payload,
        )
        self.deliveries[delivery.envelope_id] = delivery
        await self._send(delivery, None, lose=lose)
        if self.ack_timeout is not None:
            timer = asyncio.create_task(self._redeliver_unacked(delivery, self.ack_timeout))
            self._timers.add(timer)
            timer.add_done_callback(self._timers.discard)
        return delivery

    async def redeliver(
        self, envelope_id: str, *, reason: str = "timeout", lose: bool = False
    ) -> SocketDelivery:
        """Send the envelope again at once, with the next retry_attempt."""
        delivery = self.deliveries[envelope_id]
        await self._send(delivery, reason, lose=lose)
        return delivery

    async def _send(self, delivery: SocketDelivery, reason: str | None, *, lose: bool) -> None:
        attempt = len(delivery.sends)
        conn = None if lose else self._open_connection()
        if conn is not None:
            try:
                await conn.ws.send_json(delivery.envelope(attempt, reason))
            except ConnectionError:
                conn = None
        delivery.sends.append(
            SocketSend(attempt, reason, conn.index if conn else None, self._clock())
        )
        self._notify()

    async def _redeliver_unacked(self, delivery: SocketDelivery, timeout: float) -> None:
        while len(delivery.sends) <= self.max_redeliveries:
            seen = len(delivery.sends)
            await asyncio.sleep(timeout)
            if delivery.acked:
                return
            if len(delivery.sends) == seen:  # not redelivered by hand meanwhile
                await self._send(delivery, "timeout", lose=False)

    async def wait_for_ack(self, envelope_id: str, timeout: float = 10.0) -> SocketAck:
        delivery = self.deliveries[envelope_id]
        async with asyncio.timeout(timeout):
            while not delivery.acks:
                await self._changed.wait()
        return delivery.acks[0]

    async def request_reconnect(self, reason: str = "refresh_requested") -> None:
        """Ask the app to reconnect, as Slack does before it rotates a connection."""
        conn = self._open_connection()
        if conn is not None:
            await conn.ws.send_json(
                {"type": "disconnect", "reason": reason, "debug_info": {"host": "applink-standin"}}
            )

    # -- response_url

    async def _handle_response_url(self, request: web.Request) -> web.Response:
        hook = self._response_urls.get(request.match_info["id"])
        if hook is None:
            return web.Response(status=404, text="no_service")
        try:
            payload = json.loads(await request.text())
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            status, body = 400, "invalid_payload"
            payload = {}
        elif hook.uses >= hook.max_uses:
            status, body = 404, "used_url"
        else:
            status, body = self._apply_response(hook, payload)
        hook.posts.append(ResponsePost(copy.deepcopy(payload), status, body, self._clock()))
        self._notify()
        return web.Response(status=status, text=body)

    def _apply_response(self, hook: ResponseUrl, payload: JSONDict) -> tuple[int, str]:
        original = (
            self.message(hook.channel, hook.message_ts)
            if hook.channel is not None and hook.message_ts is not None
            else None
        )
        if _truthy(payload.get("delete_original")):
            if original is None or original.deleted:
                return 404, "message_not_found"
            original.deleted = True
            return 200, "ok"
        text = payload.get("text")
        text = None if text is None else str(text)
        blocks, error = parse_blocks(payload.get("blocks"))
        error = error or message_content_error(text, blocks)
        if error:
            return 400, str(error["error"])
        if _truthy(payload.get("replace_original")) and original is not None:
            self._edit(original, text or "", blocks if blocks is not None else [])
        elif payload.get("response_type") == "in_channel" and hook.channel is not None:
            thread_ts = payload.get("thread_ts")
            self._store(hook.channel, text or "", blocks, str(thread_ts) if thread_ts else None)
        else:
            self.ephemerals.append(
                Ephemeral(
                    hook.channel, hook.user, self._next_ts(), text or "", blocks, "response_url"
                )
            )
        return 200, "ok"


# ---------------------------------------------------------------- rendering

_LINK = re.compile(r"<([^<>]+)>")


def _link_label(inner: str, users: Mapping[str, str]) -> tuple[str, str | None, str]:
    """(label, url or None, kind) for the inside of a Slack <...> token."""
    target, _, label = inner.partition("|")
    if target.startswith("@"):
        return "@" + (label or users.get(target[1:], target[1:])), None, "mention"
    if target.startswith("#"):
        return "#" + (label or target[1:]), None, "mention"
    if target.startswith("!subteam^"):
        return label or "@" + target.removeprefix("!subteam^"), None, "mention"
    if target.startswith("!"):
        return "@" + (label or target[1:]), None, "mention"
    return label or target, target, "link"


def _unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def mrkdwn_to_text(text: str, users: Mapping[str, str]) -> str:
    def replace(m: re.Match[str]) -> str:
        label, url, _ = _link_label(m.group(1), users)
        return f"{label} ({url})" if url and url != label else label

    return _unescape(_LINK.sub(replace, text))


def _obj_text(obj: object) -> str:
    if isinstance(obj, dict):
        text = obj.get("text")
        if isinstance(text, str):
            return text
    return ""


def _element_label(el: Mapping[str, Any]) -> str:
    label = _obj_text(el.get("text")) or _obj_text(el.get("placeholder")) or el.get("type", "")
    return f"[{label}]" if el.get("type") == "button" else f"[{label} v]"


def _fields_table(fields: Sequence[str]) -> list[str]:
    # Slack lays fields out two per row; line them up as two columns.
    cells = [f.splitlines() or [""] for f in fields]
    width = max((len(line) for c in cells[0::2] for line in c), default=0)
    rows: list[str] = []
    for i in range(0, len(cells), 2):
        left, right = cells[i], cells[i + 1] if i + 1 < len(cells) else []
        for j in range(max(len(left), len(right))):
            a = left[j] if j < len(left) else ""
            b = right[j] if j < len(right) else ""
            rows.append(f"{a.ljust(width)} | {b}".rstrip() if right else a)
    return rows


def _rich_text(obj: object) -> str:
    if isinstance(obj, dict):
        if isinstance(obj.get("text"), str):
            return str(obj["text"])
        return "".join(_rich_text(e) for e in obj.get("elements", []))
    return ""


def _block_text_lines(block: Mapping[str, Any], users: Mapping[str, str]) -> list[str]:
    kind = block.get("type")

    def md(text: str) -> str:
        return mrkdwn_to_text(text, users)

    if kind == "header":
        return [f"== {_obj_text(block.get('text'))} =="]
    if kind == "section":
        lines = md(_obj_text(block.get("text"))).splitlines() if block.get("text") else []
        fields = [md(_obj_text(f)) for f in block.get("fields") or []]
        if fields:
            lines += _fields_table(fields)
        accessory = block.get("accessory")
        if isinstance(accessory, dict) and accessory.get("type") != "image":
            lines.append(_element_label(accessory))
        return lines
    if kind == "context":
        parts = [
            f"[image: {e.get('alt_text', '')}]"
            if isinstance(e, dict) and e.get("type") == "image"
            else md(_obj_text(e))
            for e in block.get("elements", [])
        ]
        return [" · ".join(parts)]
    if kind == "actions":
        return [" ".join(_element_label(e) for e in block.get("elements", []))]
    if kind == "divider":
        return ["-" * 40]
    if kind == "image":
        return [f"[image: {block.get('alt_text', '')}]"]
    if kind == "markdown":
        return str(block.get("text", "")).splitlines()
    if kind == "rich_text":
        return _rich_text(block).splitlines()
    return [f"[{kind}]"]


def _threads(messages: Sequence[Message]) -> list[tuple[Message, list[Message]]]:
    """Top-level messages, each with its replies; a reply whose parent is gone stands alone."""
    tops = {m.ts: m for m in messages if m.thread_ts in (None, m.ts)}
    replies: dict[str, list[Message]] = {ts: [] for ts in tops}
    for m in messages:
        if m.ts in tops:
            continue
        if m.thread_ts in replies:
            replies[m.thread_ts].append(m)
        else:
            tops[m.ts] = m
            replies[m.ts] = []
    return [(tops[ts], replies[ts]) for ts in sorted(tops, key=lambda t: float(t))]


def _clock_time(ts: str) -> str:
    return datetime.fromtimestamp(float(ts), UTC).strftime("%H:%M:%S")


def _content_text(text: str, blocks: list[Any] | None, users: Mapping[str, str]) -> list[str]:
    if blocks:
        lines: list[str] = []
        for block in blocks:
            if isinstance(block, dict):
                lines += _block_text_lines(block, users)
        return lines
    return mrkdwn_to_text(text, users).splitlines() or [""]


def render_channel_text(
    messages: Sequence[Message],
    *,
    channel_name: str,
    users: Mapping[str, str] | None = None,
    bot_name: str = "aibrix-bot",
    ephemerals: Sequence[Ephemeral] = (),
) -> str:
    """A channel as readable plain text: blocks' text, field tables, [Buttons], threads."""
    users = users or {}
    out = [f"#{channel_name}", "=" * (len(channel_name) + 1)]
    for top, replies in _threads(messages):
        edited = " (edited)" if top.edited else ""
        out.append(f"[{_clock_time(top.ts)} UTC] {bot_name}{edited}")
        out += ["  " + line for line in _content_text(top.text, top.blocks, users)]
        if replies:
            out.append(f"  > {len(replies)} {'reply' if len(replies) == 1 else 'replies'}")
            for r in replies:
                out.append(f"  | [{_clock_time(r.ts)} UTC] {bot_name}")
                out += ["  |   " + line for line in _content_text(r.text, r.blocks, users)]
        out.append("")
    for e in ephemerals:
        who = users.get(e.user or "", e.user or "someone")
        out.append(f"[{_clock_time(e.ts)} UTC] {bot_name} (only visible to {who})")
        out += ["  " + line for line in _content_text(e.text, e.blocks, users)]
        out.append("")
    return "\n".join(out).rstrip() + "\n"


_EMPHASIS = [
    (re.compile(r"```(.+?)```", re.S), r"<pre>\1</pre>"),
    (re.compile(r"`([^`\n]+)`"), r"<code>\1</code>"),
    (re.compile(r"(?<![\w*])\*(?!\s)([^*\n]+?)\*(?![\w*])"), r"<b>\1</b>"),
    (re.compile(r"(?<![\w_])_(?!\s)([^_\n]+?)_(?![\w_])"), r"<i>\1</i>"),
    (re.compile(r"(?<![\w~])~(?!\s)([^~\n]+?)~(?![\w~])"), r"<s>\1</s>"),
]


def mrkdwn_to_html(text: str, users: Mapping[str, str], *, plain: bool = False) -> str:
    """Slack mrkdwn as HTML; every piece of content is escaped before markup is added."""
    parts: list[str] = []
    pos = 0
    for m in _LINK.finditer(text):
        parts.append(_emphasis_html(text[pos : m.start()], plain))
        label, url, kind = _link_label(m.group(1), users)
        label_html = html.escape(_unescape(label))
        if url and re.match(r"https?://", url):
            parts.append(f'<a href="{html.escape(_unescape(url))}">{label_html}</a>')
        elif kind == "mention":
            parts.append(f'<span class="mention">{label_html}</span>')
        else:
            parts.append(label_html)
        pos = m.end()
    parts.append(_emphasis_html(text[pos:], plain))
    return "".join(parts).replace("\n", "<br>")


def _emphasis_html(text: str, plain: bool) -> str:
    out = html.escape(_unescape(text), quote=False)
    if not plain:
        for pattern, repl in _EMPHASIS:
            out = pattern.sub(repl, out)
    return out


def _text_obj_html(obj: object, users: Mapping[str, str]) -> str:
    plain = isinstance(obj, dict) and obj.get("type") == "plain_text"
    return mrkdwn_to_html(_obj_text(obj), users, plain=plain)


def _element_html(el: Mapping[str, Any]) -> str:
    if el.get("type") == "button":
        style = el.get("style")
        cls = f"btn {style}" if style in ("primary", "danger") else "btn"
        return f'<button class="{cls}">{html.escape(_obj_text(el.get("text")))}</button>'
    return f'<span class="btn select">{html.escape(_element_label(el)[1:-1])}</span>'


def _block_html(block: Mapping[str, Any], users: Mapping[str, str]) -> str:
    kind = block.get("type")
    if kind == "header":
        return f'<div class="header">{html.escape(_obj_text(block.get("text")))}</div>'
    if kind == "section":
        body = ""
        if block.get("text"):
            body += f'<div class="text">{_text_obj_html(block["text"], users)}</div>'
        if block.get("fields"):
            cells = "".join(
                f'<div class="field">{_text_obj_html(f, users)}</div>' for f in block["fields"]
            )
            body += f'<div class="fields">{cells}</div>'
        accessory = block.get("accessory")
        acc = ""
        if isinstance(accessory, dict):
            if accessory.get("type") == "image":
                acc = f'<img class="thumb" alt="{html.escape(str(accessory.get("alt_text", "")))}"'
                acc += f' src="{html.escape(str(accessory.get("image_url", "")))}">'
            else:
                acc = _element_html(accessory)
        return f'<div class="section"><div class="grow">{body}</div>{acc}</div>'
    if kind == "context":
        parts = []
        for e in block.get("elements", []):
            if isinstance(e, dict) and e.get("type") == "image":
                alt, src = html.escape(str(e.get("alt_text", ""))), str(e.get("image_url", ""))
                parts.append(f'<img class="ctx-img" alt="{alt}" src="{html.escape(src)}">')
            else:
                parts.append(f"<span>{_text_obj_html(e, users)}</span>")
        return f'<div class="context">{"".join(parts)}</div>'
    if kind == "actions":
        buttons = "".join(
            _element_html(e) for e in block.get("elements", []) if isinstance(e, dict)
        )
        return f'<div class="actions">{buttons}</div>'
    if kind == "divider":
        return "<hr>"
    if kind == "image":
        alt, src = html.escape(str(block.get("alt_text", ""))), str(block.get("image_url", ""))
        return f'<img class="image" alt="{alt}" src="{html.escape(src)}">'
    if kind == "markdown":
        return f'<div class="text">{mrkdwn_to_html(str(block.get("text", "")), users)}</div>'
    if kind == "rich_text":
        return f'<div class="text">{html.escape(_rich_text(block))}</div>'
    return f'<div class="context">[{html.escape(str(kind))}]</div>'


def _content_html(text: str, blocks: list[Any] | None, users: Mapping[str, str]) -> str:
    if blocks:
        return "".join(_block_html(b, users) for b in blocks if isinstance(b, dict))
    return f'<div class="text">{mrkdwn_to_html(text, users)}</div>'


def _message_html(
    ts: str, bot_name: str, content: str, *, edited: bool = False, note: str = ""
) -> str:
    initials = html.escape("".join(w[0] for w in re.split(r"[-_ ]+", bot_name) if w)[:2].upper())
    mark = ' <span class="edited">(edited)</span>' if edited else ""
    return (
        f'<div class="msg">{note}<div class="avatar">{initials}</div><div class="body">'
        f'<div class="meta"><span class="author">{html.escape(bot_name)}</span>'
        f'<span class="app">APP</span><span class="time">{_clock_time(ts)}</span></div>'
        f"{content}{mark}</div></div>"
    )


_CSS = """
body{margin:0;font:15px/1.46668 Lato,"Helvetica Neue",Helvetica,Arial,sans-serif;color:#1d1c1d;
background:#fff}
.channel{border-bottom:1px solid #ddd;padding:12px 20px;font-weight:900;font-size:18px}
.channel small{font-weight:400;color:#616061;font-size:13px;margin-left:8px}
.msg{display:flex;flex-wrap:wrap;padding:8px 20px}.msg:hover{background:#f8f8f8}
.avatar{width:36px;height:36px;border-radius:4px;background:#4a154b;color:#fff;font-weight:700;
font-size:13px;display:flex;align-items:center;justify-content:center;margin-right:8px;flex:none}
.body{flex:1;min-width:0}.author{font-weight:900}
.app{background:rgba(29,28,29,.13);color:rgba(29,28,29,.7);font-size:10px;font-weight:700;
padding:1px 3px;border-radius:2px;margin:0 6px;vertical-align:1px}
.time{color:#616061;font-size:12px}.edited{color:#616061;font-size:13px}
.header{font-weight:900;font-size:18px;margin:6px 0 2px}
.section{display:flex;gap:12px;margin:4px 0}.grow{flex:1}.text{margin:2px 0}
.fields{display:grid;grid-template-columns:1fr 1fr;gap:8px 16px;margin:6px 0}
.context{color:#616061;font-size:13px;margin:4px 0;display:flex;gap:8px;align-items:center}
.ctx-img{width:16px;height:16px;border-radius:2px}.thumb{width:88px;height:88px;border-radius:4px}
.image{max-width:360px;border-radius:4px;margin:4px 0}
.actions{display:flex;flex-wrap:wrap;gap:8px;margin:8px 0 4px}
.btn{font:700 13px Lato,"Helvetica Neue",Arial,sans-serif;height:28px;padding:0 12px;
border-radius:4px;border:1px solid rgba(29,28,29,.3);background:#fff;color:#1d1c1d;
display:inline-flex;align-items:center;white-space:nowrap}
.btn.primary{background:#007a5a;border-color:#007a5a;color:#fff}
.btn.danger{background:#e01e5a;border-color:#e01e5a;color:#fff}
hr{border:0;border-top:1px solid #ddd;margin:8px 0}
code{font-family:Monaco,Menlo,monospace;font-size:12px;color:#e01e5a;background:#f6f6f6;
border:1px solid #e1e1e1;border-radius:3px;padding:1px 3px}
pre{font-family:Monaco,Menlo,monospace;font-size:12px;background:#f8f8f8;border:1px solid #e1e1e1;
border-radius:4px;padding:8px;white-space:pre-wrap;margin:4px 0}
a{color:#1264a3;text-decoration:none}.mention{color:#1264a3;background:rgba(29,155,209,.1);
border-radius:3px;padding:0 2px}
.replies{color:#1264a3;font-weight:700;font-size:13px;margin:4px 0 0 64px}
.thread{margin:0 20px 8px 64px;border-left:3px solid #ddd}.thread .msg{padding-left:12px}
.ephemeral{background:#f8f8f8}.only{width:100%;color:#616061;font-size:12px;margin-bottom:4px}
"""


def render_channel_html(
    messages: Sequence[Message],
    *,
    channel_name: str,
    users: Mapping[str, str] | None = None,
    bot_name: str = "aibrix-bot",
    ephemerals: Sequence[Ephemeral] = (),
) -> str:
    """A self-contained HTML page showing the channel the way Slack would."""
    users = users or {}
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>#{html.escape(channel_name)}</title><style>{_CSS}</style></head><body>",
        f'<div class="channel">#{html.escape(channel_name)}'
        f"<small>{len(messages)} messages</small></div>",
    ]
    for top, replies in _threads(messages):
        content = _content_html(top.text, top.blocks, users)
        parts.append(_message_html(top.ts, bot_name, content, edited=top.edited))
        if replies:
            word = "reply" if len(replies) == 1 else "replies"
            parts.append(f'<div class="replies">{len(replies)} {word}</div><div class="thread">')
            for r in replies:
                rc = _content_html(r.text, r.blocks, users)
                parts.append(_message_html(r.ts, bot_name, rc, edited=r.edited))
            parts.append("</div>")
    for e in ephemerals:
        who = html.escape(users.get(e.user or "", e.user or "you"))
        note = f'<div class="only">Only visible to {who}</div>'
        content = _content_html(e.text, e.blocks, users)
        parts.append(
            _message_html(e.ts, bot_name, content, note=note).replace(
                'class="msg"', 'class="msg ephemeral"', 1
            )
        )
    parts.append("</body></html>\n")
    return "\n".join(parts)
