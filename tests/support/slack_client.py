"""Requests to the app under test, signed exactly as Slack signs them.

Slack signs each request with the app's signing secret:
``X-Slack-Signature: v0=hex(HMAC-SHA256(secret, "v0:{timestamp}:{raw body}"))`` next
to ``X-Slack-Request-Timestamp``, and apps refuse a timestamp older than five
minutes. `SignedSlackClient` builds the form bodies Slack sends for slash commands
and button clicks and can break a request on purpose (tampered body, aged
timestamp, wrong secret) to prove the app refuses it.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlencode

import aiohttp

from tests.support.slack_standin import SlackStandIn, SocketDelivery

FORM = "application/x-www-form-urlencoded"
_PLACEHOLDER_VERIFICATION = "standin-verification"
MAX_AGE_SECONDS = 60 * 5  # Slack's advice, and what Bolt's SignatureVerifier enforces


def slack_signature(secret: str, timestamp: str | int, body: str | bytes) -> str:
    """The X-Slack-Signature value Slack sends for this body at this timestamp."""
    raw = body if isinstance(body, bytes) else body.encode("utf-8")
    base = b"v0:" + str(timestamp).encode("ascii") + b":" + raw
    return "v0=" + hmac.new(secret.encode("utf-8"), base, hashlib.sha256).hexdigest()


def verify_slack_signature(
    secret: str,
    timestamp: str | None,
    body: str | bytes,
    signature: str | None,
    *,
    now: float,
    max_age: int = MAX_AGE_SECONDS,
) -> bool:
    """True when `signature` is Slack's for this body and the timestamp is fresh."""
    if not timestamp or not signature:
        return False
    try:
        stamp = int(timestamp)
    except ValueError:
        return False
    if abs(now - stamp) > max_age:
        return False
    return hmac.compare_digest(slack_signature(secret, timestamp, body), signature)


def signed_headers(secret: str, timestamp: int, body: str) -> dict[str, str]:
    return {
        "Content-Type": FORM,
        "X-Slack-Request-Timestamp": str(timestamp),
        "X-Slack-Signature": slack_signature(secret, timestamp, body),
    }


def encode_form(fields: Mapping[str, str]) -> str:
    # Slack form-encodes with '+' for spaces, as urlencode does.
    return urlencode(list(fields.items()))


def slash_command_form(
    *,
    command: str,
    text: str,
    user_id: str,
    user_name: str,
    channel_id: str,
    channel_name: str,
    team_id: str,
    team_domain: str,
    api_app_id: str,
    response_url: str,
    trigger_id: str,
    verification_token: str,
) -> dict[str, str]:
    """The fields of Slack's slash command POST, in the order Slack sends them."""
    return {
        "token": verification_token,
        "team_id": team_id,
        "team_domain": team_domain,
        "channel_id": channel_id,
        "channel_name": channel_name,
        "user_id": user_id,
        "user_name": user_name,
        "command": command,
        "text": text,
        "api_app_id": api_app_id,
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": trigger_id,
    }


def find_action(message: Mapping[str, Any], action_id: str) -> tuple[str, dict[str, Any]] | None:
    """(block_id, element) of the interactive element with this action_id in a message."""
    for block in message.get("blocks") or []:
        if not isinstance(block, dict):
            continue
        elements = list(block.get("elements") or [])
        if isinstance(block.get("accessory"), dict):
            elements.append(block["accessory"])
        for el in elements:
            if isinstance(el, dict) and el.get("action_id") == action_id:
                return str(block.get("block_id", "")), el
    return None


def block_actions_payload(
    *,
    action_id: str,
    value: str | None,
    block_id: str,
    user_id: str,
    user_name: str,
    channel_id: str,
    channel_name: str,
    message: Mapping[str, Any],
    team_id: str,
    team_domain: str,
    api_app_id: str,
    response_url: str,
    trigger_id: str,
    action_ts: str,
    verification_token: str,
    element: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The `block_actions` payload Slack sends when a button in `message` is clicked."""
    el = dict(element or {"type": "button"})
    action: dict[str, Any] = {
        "action_id": action_id,
        "block_id": block_id,
        "type": el.get("type", "button"),
        "action_ts": action_ts,
    }
    for key in ("text", "style"):
        if key in el:
            action[key] = el[key]
    if value is not None:
        action["value"] = value
    container: dict[str, Any] = {
        "type": "message",
        "message_ts": message.get("ts"),
        "channel_id": channel_id,
        "is_ephemeral": False,
    }
    if message.get("thread_ts"):
        container["thread_ts"] = message["thread_ts"]
    return {
        "type": "block_actions",
        "user": {"id": user_id, "username": user_name, "name": user_name, "team_id": team_id},
        "api_app_id": api_app_id,
        "token": verification_token,
        "container": container,
        "trigger_id": trigger_id,
        "team": {"id": team_id, "domain": team_domain},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel_id, "name": channel_name},
        "message": dict(message),
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [action],
    }


@dataclass(frozen=True)
class SignedResponse:
    """What the app answered: status, body text, headers, and seconds it took."""

    status: int
    body: str
    headers: Mapping[str, str]
    elapsed: float
    sent_body: str

    def json(self) -> Any:
        return json.loads(self.body)


class SlackPayloads:
    """Builds what Slack sends for slash commands and button clicks: the same fields over
    HTTP (form encoded, signed) and in Socket Mode envelopes (JSON).

    With a `standin`, response_urls point at it and clicked messages are read from it,
    so the payload carries the message and button exactly as they were posted.
    """

    def __init__(
        self,
        *,
        standin: SlackStandIn | None = None,
        team_id: str | None = None,
        team_domain: str | None = None,
        api_app_id: str = "A0AIBRIXAPP",
        verification_token: str | None = None,
        users: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.standin = standin
        self.team_id = team_id or (standin.team_id if standin else "T0AIBRIX")
        self.team_domain = team_domain or (standin.team_domain if standin else "aibrix")
        self.api_app_id = api_app_id
        # Slack still sends its deprecated verification token in every body; a fixed
        # placeholder here, since Bolt checks the signature, not this field.
        self.verification_token = verification_token or _PLACEHOLDER_VERIFICATION
        self.users = dict(users or {})
        self._clock = clock
        self._counter = itertools.count(1)

    def _trigger_id(self) -> str:
        n = next(self._counter)
        return f"{int(self._clock())}.{n}.{secrets.token_hex(16)}"

    def _response_url(self, channel_id: str, user_id: str, message_ts: str | None) -> str:
        if self.standin is not None:
            return self.standin.new_response_url(
                channel=channel_id, user=user_id, message_ts=message_ts
            )
        n = next(self._counter)
        return f"https://hooks.slack.com/commands/{self.team_id}/{n}/{secrets.token_hex(12)}"

    def _user_name(self, user_id: str) -> str:
        known = self.users.get(user_id) or (self.standin and self.standin.user_name(user_id))
        return known or user_id.lower()

    def _channel_name(self, channel_id: str) -> str:
        return self.standin.channel_name(channel_id) if self.standin else channel_id.lower()

    def command_fields(
        self,
        text: str = "",
        *,
        command: str = "/aibrix",
        user_id: str = "U0REQUESTER",
        user_name: str | None = None,
        channel_id: str = "C0RELEASES",
        channel_name: str | None = None,
        response_url: str | None = None,
    ) -> dict[str, str]:
        """One slash command invocation, with a fresh trigger_id."""
        return slash_command_form(
            command=command,
            text=text,
            user_id=user_id,
            user_name=user_name or self._user_name(user_id),
            channel_id=channel_id,
            channel_name=channel_name or self._channel_name(channel_id),
            team_id=self.team_id,
            team_domain=self.team_domain,
            api_app_id=self.api_app_id,
            response_url=response_url or self._response_url(channel_id, user_id, None),
            trigger_id=self._trigger_id(),
            verification_token=self.verification_token,
        )

    def action_payload(
        self,
        action_id: str,
        value: str | None = None,
        *,
        user_id: str = "U0APPROVER",
        channel_id: str = "C0RELEASES",
        message_ts: str,
        block_id: str | None = None,
        user_name: str | None = None,
        channel_name: str | None = None,
        response_url: str | None = None,
    ) -> dict[str, Any]:
        """A click on the element `action_id` of the message at `message_ts`.

        When the stand-in holds that message, the block_id, value, text and style
        default to the posted button's; a value or block_id given here overrides them.
        """
        message: dict[str, Any] = {"type": "message", "ts": message_ts, "text": ""}
        element: dict[str, Any] | None = None
        if self.standin is not None:
            posted = self.standin.message(channel_id, message_ts)
            if posted is not None:
                message = posted.to_slack(self.team_id)
        found = find_action(message, action_id)
        if found is not None:
            block_id = block_id if block_id is not None else found[0]
            element = found[1]
            if value is None and isinstance(element.get("value"), str):
                value = element["value"]
        return block_actions_payload(
            action_id=action_id,
            value=value,
            block_id=block_id or "",
            user_id=user_id,
            user_name=user_name or self._user_name(user_id),
            channel_id=channel_id,
            channel_name=channel_name or self._channel_name(channel_id),
            message=message,
            team_id=self.team_id,
            team_domain=self.team_domain,
            api_app_id=self.api_app_id,
            response_url=response_url or self._response_url(channel_id, user_id, message_ts),
            trigger_id=self._trigger_id(),
            action_ts=f"{self._clock():.6f}",
            verification_token=self.verification_token,
            element=element,
        )


class SignedSlackClient(SlackPayloads):
    """Sends Slack-signed slash commands and button clicks to an app's request URL.

    With a `standin`, response_urls point at it and clicked messages are read from it,
    so the payload carries the message and button exactly as they were posted.
    """

    def __init__(
        self,
        url: str,
        signing_secret: str,
        *,
        standin: SlackStandIn | None = None,
        team_id: str | None = None,
        team_domain: str | None = None,
        api_app_id: str = "A0AIBRIXAPP",
        verification_token: str | None = None,
        users: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not signing_secret:
            raise ValueError("a signing secret is needed to sign requests")
        super().__init__(
            standin=standin,
            team_id=team_id,
            team_domain=team_domain,
            api_app_id=api_app_id,
            verification_token=verification_token,
            users=users,
            clock=clock,
        )
        self.url = url
        self._secret = signing_secret
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"SignedSlackClient(url={self.url!r}, team_id={self.team_id!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(
        self,
        body: str,
        *,
        tamper: bool = False,
        age: float = 0,
        secret: str | None = None,
        retry_num: int | None = None,
        retry_reason: str = "http_timeout",
    ) -> SignedResponse:
        """POST `body` signed as Slack would, or broken as asked.

        tamper: the signature is the one for `body`, but a changed body is sent.
        age: seconds to backdate the timestamp (over 300 and Slack's rule rejects it).
        secret: sign with this secret instead (a wrong one, to be refused).
        retry_num: send Slack's retry headers, as when the first delivery timed out.
        """
        timestamp = int(self._clock() - age)
        headers = signed_headers(secret if secret is not None else self._secret, timestamp, body)
        sent = body + "&tampered=1" if tamper else body
        if retry_num is not None:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = retry_reason
        if self._session is None:
            self._session = aiohttp.ClientSession()
        started = time.perf_counter()
        async with self._session.post(self.url, data=sent.encode(), headers=headers) as resp:
            text = await resp.text()
        return SignedResponse(
            status=resp.status,
            body=text,
            headers=dict(resp.headers),
            elapsed=time.perf_counter() - started,
            sent_body=sent,
        )

    async def resend(
        self, previous: SignedResponse, *, retry_num: int = 1, retry_reason: str = "http_timeout"
    ) -> SignedResponse:
        """Deliver exactly the same body again, signed afresh, with Slack's retry headers:
        what Slack does when it did not get an answer to `previous` in time."""
        return await self.send(previous.sent_body, retry_num=retry_num, retry_reason=retry_reason)

    async def slash_command(
        self,
        text: str = "",
        *,
        command: str = "/aibrix",
        user_id: str = "U0REQUESTER",
        user_name: str | None = None,
        channel_id: str = "C0RELEASES",
        channel_name: str | None = None,
        response_url: str | None = None,
        tamper: bool = False,
        age: float = 0,
        secret: str | None = None,
        retry_num: int | None = None,
        retry_reason: str = "http_timeout",
    ) -> SignedResponse:
        form = self.command_fields(
            text,
            command=command,
            user_id=user_id,
            user_name=user_name,
            channel_id=channel_id,
            channel_name=channel_name,
            response_url=response_url,
        )
        return await self.send(
            encode_form(form),
            tamper=tamper,
            age=age,
            secret=secret,
            retry_num=retry_num,
            retry_reason=retry_reason,
        )

    async def block_action(
        self,
        action_id: str,
        value: str | None = None,
        *,
        user_id: str = "U0APPROVER",
        channel_id: str = "C0RELEASES",
        message_ts: str,
        block_id: str | None = None,
        user_name: str | None = None,
        channel_name: str | None = None,
        response_url: str | None = None,
        tamper: bool = False,
        age: float = 0,
        secret: str | None = None,
        retry_num: int | None = None,
        retry_reason: str = "http_timeout",
    ) -> SignedResponse:
        """Click the element `action_id` of the message at `message_ts` (see
        `action_payload` for what the click carries)."""
        payload = self.action_payload(
            action_id,
            value,
            user_id=user_id,
            channel_id=channel_id,
            message_ts=message_ts,
            block_id=block_id,
            user_name=user_name,
            channel_name=channel_name,
            response_url=response_url,
        )
        body = encode_form({"payload": json.dumps(payload, separators=(",", ":"))})
        return await self.send(
            body,
            tamper=tamper,
            age=age,
            secret=secret,
            retry_num=retry_num,
            retry_reason=retry_reason,
        )


class SocketModeSlack(SlackPayloads):
    """Slack's side of Socket Mode: slash commands and clicks delivered as envelopes over
    the stand-in's WebSocket to the connected app."""

    def __init__(self, standin: SlackStandIn, **options: Any) -> None:
        super().__init__(standin=standin, **options)
        self.socket = standin

    def __repr__(self) -> str:
        return f"SocketModeSlack(standin={self.socket!r})"

    async def slash_command(
        self, text: str = "", *, lose: bool = False, **fields: Any
    ) -> SocketDelivery:
        payload = self.command_fields(text, **fields)
        return await self.socket.deliver("slash_commands", payload, lose=lose)

    async def block_action(
        self, action_id: str, value: str | None = None, *, lose: bool = False, **fields: Any
    ) -> SocketDelivery:
        payload = self.action_payload(action_id, value, **fields)
        return await self.socket.deliver("interactive", payload, lose=lose)
