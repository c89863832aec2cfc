"""POST /slack/events: what Slack sends is checked here, in front of Bolt.

Size, signature headers, timestamp, encoding, signature (slack_sdk's SignatureVerifier)
and the shape of the payload are checked before Bolt parses anything, so that:

- a refused request never reaches Bolt, whose own verification logs the whole body,
  the signature and the timestamp of every request it refuses;
- nothing a client sends can raise while being parsed (a timestamp of "abc", a body
  that is not UTF-8, a `payload=` that is not a Slack payload): it is a 400 or 401,
  never a 500 with a traceback;
- every refusal is counted by reason (GET /metrics) and logged as at most one short
  line per reason per minute, never with anything the client sent.

The checks are pure functions of the request's values; `SlackRequestGate` is the
aiohttp edge around them.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.request.async_internals import build_async_context
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.signature import Clock, SignatureVerifier

from bot import messages
from jobs.domain.ratelimit import PerKeyRateLimiter
from jobs.runtime.metrics import BotMetrics

log = logging.getLogger("aibrix.bot.requests")

# A click carries the whole message clicked; Slack caps a message at 50 blocks of at
# most 3,000 characters, so even the largest, form-encoded, stays well under this.
# Slash commands are a few hundred bytes.
MAX_BODY_BYTES = 256 * 1024
MAX_AGE_SECONDS = 60 * 5  # Slack's rule, and SignatureVerifier's
# Slack's timestamps are whole seconds since the epoch; ASCII digits only ([0-9], not
# \d, which also matches other scripts' digits).
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")
# Payload types the app answers: the buttons of its messages. Anything else is refused
# before Bolt, which would log it as unhandled.
CLICK = "block_actions"


class Refusal(StrEnum):
    TOO_LARGE = "too_large"
    UNSIGNED = "unsigned"  # no signature or no timestamp header
    BAD_TIMESTAMP = "bad_timestamp"  # not whole seconds
    STALE = "stale"
    BAD_SIGNATURE = "bad_signature"
    NOT_UTF8 = "not_utf8"
    MALFORMED = "malformed"  # signed, but not a request Slack sends this app


STATUS = {
    Refusal.TOO_LARGE: 413,
    Refusal.UNSIGNED: 401,
    Refusal.BAD_TIMESTAMP: 400,
    Refusal.STALE: 401,
    Refusal.BAD_SIGNATURE: 401,
    Refusal.NOT_UTF8: 400,
    Refusal.MALFORMED: 400,
}


def header_refusal(timestamp: str | None, signature: str | None, now: float) -> Refusal | None:
    """What is wrong with the signature headers on their own, if anything."""
    if not timestamp and not signature:
        return Refusal.UNSIGNED
    if timestamp is None or _TIMESTAMP.fullmatch(timestamp) is None:
        return Refusal.BAD_TIMESTAMP
    if signature is None or _SIGNATURE.fullmatch(signature) is None:
        return Refusal.BAD_SIGNATURE
    if abs(now - int(timestamp)) > MAX_AGE_SECONDS:
        return Refusal.STALE
    return None


def _is_obj(value: object) -> bool:
    return isinstance(value, dict)


def _optional(payload: Mapping[str, Any], key: str, kind: type) -> bool:
    value = payload.get(key)
    return value is None or isinstance(value, kind)


def is_response_url(value: object) -> bool:
    """An http(s) URL with a host: what Slack sends as `response_url` on every command
    and click. Without one the app could not say anything back."""
    if not isinstance(value, str):
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("https", "http") and bool(parts.hostname)


def click_is_well_formed(payload: Mapping[str, Any]) -> bool:
    """A block_actions payload with the fields Bolt and the handlers read, of the types
    Slack sends (values are checked later, by the handlers, with an answer)."""
    user = payload.get("user")
    if not isinstance(user, dict) or not isinstance(user.get("id"), str):
        return False
    actions = payload.get("actions")
    if not isinstance(actions, list) or not actions:
        return False
    for action in actions:
        if not isinstance(action, dict) or not isinstance(action.get("action_id"), str):
            return False
        if not all(_optional(action, key, str) for key in ("value", "block_id", "action_ts")):
            return False
    if not is_response_url(payload.get("response_url")):
        return False
    objects = ("team", "channel", "container", "message", "enterprise", "state")
    if not all(_optional(payload, key, dict) for key in objects):
        return False
    texts = ("trigger_id", "api_app_id", "token", "enterprise_id", "team_id")
    if not all(_optional(payload, key, str) for key in texts):
        return False
    authorizations = payload.get("authorizations")
    return authorizations is None or (
        isinstance(authorizations, list) and all(_is_obj(a) for a in authorizations)
    )


def parse_envelope(text: str, content_type: str | None) -> dict[str, Any] | None:
    """The body as the app must read it, or None when it is not a request Slack sends
    this app: a slash command, a click on one of its buttons, Slack's SSL check or URL
    verification. Read the way Bolt reads it (JSON when it says so or looks so, else a
    form, with a JSON `payload` field for clicks)."""
    if not text:
        return None
    if content_type == "application/json" or text.startswith("{"):
        try:
            body = json.loads(text)
        except ValueError:
            return None
        ok = _is_obj(body) and body.get("type") == "url_verification"
        return body if ok and isinstance(body.get("challenge"), str) else None
    form = dict(parse_qsl(text, keep_blank_values=True))
    if "payload" in form:
        try:
            payload = json.loads(form["payload"])
        except ValueError:
            return None
        if not _is_obj(payload) or payload.get("type") != CLICK:
            return None
        return payload if click_is_well_formed(payload) else None
    if form.get("ssl_check"):
        return form
    if form.get("command"):
        return form if is_response_url(form.get("response_url")) else None
    return None


class _Wall(Clock):
    def __init__(self, wall: Callable[[], float]) -> None:
        self._wall = wall

    def now(self) -> float:
        return self._wall()


@dataclass(frozen=True)
class _Read:
    body: bytes | None  # None: over the limit


async def _read_capped(request: web.Request, limit: int) -> _Read:
    """The body, read no further than one byte past `limit`."""
    declared = request.content_length
    if declared is not None and declared > limit:
        return _Read(None)
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(limit + 1 - size)
        if not chunk:
            return _Read(b"".join(chunks))
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return _Read(None)


class SlackRequestGate:
    """The aiohttp handler of POST /slack/events: refuse, count and log (rate-limited), or
    hand the request to Bolt."""

    def __init__(
        self,
        bolt: AsyncApp,
        signing_secret: str,
        metrics: BotMetrics,
        *,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        max_body: int = MAX_BODY_BYTES,
        log_period: float = 60.0,
    ) -> None:
        self.bolt = bolt
        self.metrics = metrics
        self._verifier = SignatureVerifier(signing_secret, clock=_Wall(wall))
        self._wall = wall
        self._max_body = max_body
        self._limiter = PerKeyRateLimiter(log_period, monotonic)

    def refuse(self, reason: Refusal) -> web.Response:
        status = STATUS[reason]
        self.metrics.refused.labels(reason=reason.value).inc()
        count = self._limiter.allow(reason.value)
        if count is not None:
            log.warning(messages.slack_requests_refused(reason.value, status, count))
        return web.json_response({"error": reason.value}, status=status)

    async def handle(self, request: web.Request) -> web.Response:
        read = await _read_capped(request, self._max_body)
        if read.body is None:
            return self.refuse(Refusal.TOO_LARGE)
        timestamp = request.headers.get("X-Slack-Request-Timestamp")
        signature = request.headers.get("X-Slack-Signature")
        refused = header_refusal(timestamp, signature, self._wall())
        if refused is not None:
            return self.refuse(refused)
        try:
            text = read.body.decode("utf-8")
        except UnicodeDecodeError:
            return self.refuse(Refusal.NOT_UTF8)
        if not self._verifier.is_valid(text, timestamp, signature):
            return self.refuse(Refusal.BAD_SIGNATURE)
        envelope = parse_envelope(text, request.content_type)
        if envelope is None:
            return self.refuse(Refusal.MALFORMED)
        try:
            bolt_request = AsyncBoltRequest(
                body=text,
                query=request.query_string,
                headers=request.headers,  # type: ignore[arg-type]
            )
        except Exception:  # anything Bolt cannot parse is the request's fault
            return self.refuse(Refusal.MALFORMED)
        if bolt_request.body != envelope:
            # Bolt takes any form that contains "payload" for a click: a slash command
            # whose text says "payload" would reach it empty, and go unanswered.
            bolt_request.body = envelope
            bolt_request.context = build_async_context(AsyncBoltContext({}), envelope)
        answer = await self.bolt.async_dispatch(bolt_request)
        return await to_aiohttp_response(answer)
