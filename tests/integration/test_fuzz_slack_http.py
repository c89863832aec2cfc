"""Fuzz run (issue 10, "Done when"): a few thousand random and adversarial slash command
texts and button clicks, signed as Slack signs them, sent over HTTP to the real Bolt app
(the in-process server of tests/test_bot_http.py, the Slack stand-in, the lab Redis).

Every generated input must be refused, by construction:
- texts from the requester are kept only when the command parser refuses them;
- texts from a stranger (in no role list) are kept when the parser refuses them or when
  they parse to a command that changes something (release, retry, cancel, sync), which
  the permission table refuses;
- clicks name no run that exists (no release is ever started here), or carry a forged
  action id, a junk value or a payload of the wrong shape;
- some requests are unsigned, stale or badly signed junk.
A separate handful of valid, read-only commands (help, status, inspect) runs as well.

Asserted: no answer is a 5xx, no log record is an ERROR or carries a traceback, and no
Redis key is written under the test's prefix. Bounded: at most AIBRIX_FUZZ_CASES cases
(default 3000) or AIBRIX_FUZZ_SECONDS seconds (default 60), whichever comes first; the
seed is AIBRIX_FUZZ_SEED (default: a fixed one) and is printed with the case count.
`scripts/fuzz-slack` runs it longer.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from handlers.parse import (
    CancelCommand,
    ParseError,
    ReleaseCommand,
    RetryCommand,
    SyncCommand,
    parse_command,
)
from jobs.domain.config_reader import load_config
from tests.support.bot import APPROVER, CHANNEL, REQUESTER, SECRET, STRANGER, Bot, running_bot
from tests.support.bot import config_text as bot_config_text
from tests.support.slack_client import encode_form, slack_signature

SEED = int(os.environ.get("AIBRIX_FUZZ_SEED", "20261206"))
CASES = int(os.environ.get("AIBRIX_FUZZ_CASES", "3000"))
SECONDS = float(os.environ.get("AIBRIX_FUZZ_SECONDS", "60"))
PARALLEL = 6

# ---- what the texts are made of -----------------------------------------------------

WORDS = [
    "release",
    "inspect",
    "status",
    "sync",
    "cancel",
    "retry",
    "help",
    "RELEASE",
    "Status",
    "r\u0435lease",  # Cyrillic e
    "promote",
    "approve",
    "supersede",
    "payload",
    "delete",
    "",
    "frobnicate",
]
VERSIONS = [
    "v0.3.0",
    "v9.9.9-rc.1",
    "v1.2",
    "v01.2.3",
    "1.2.3",
    "v1.2.3.4",
    "v1.2.3-",
    "v1.2.3-rc..1",
    "v1.2.3+meta",
    "V1.2.3",
    "v-1.2.3",
    "v1.2.3-rc.01",
    "v" + "9" * 400,
    "v1.2.3\u200b",
    "v\uff11.2.3",
    "v1.2.3\x00",
    "v0.0.0",
    "v1.2.3-rc.1.2.3.4.5",
    "v99999999999999999999.0.0",
]
COMPONENTS = ["runtime", "controller-manager", "nosuch", "../etc", "runtime:latest", "RUNTIME"]
HOSTS = [
    "http://169.254.169.254/latest/meta-data",
    "127.0.0.1:5000/ns",
    "localhost:6390",
    "registry.example.com/a/b:tag",
    "file:///etc/passwd",
    "<http://evil.example|click>",
    "ghcr.io/x/y@sha256:" + "ab" * 32,
    "[::1]:5000/x",
    "lab-mirror",
    "lab-mirror/../x",
]
SHELL = [";", "|", "&&", "`id`", "$(id)", "${IFS}", ">", "<", "\\", "'", '"', "*", "~", "#", "!"]
FLAGS = ["--supersede", "--to", "-h", "--help", "--config=/etc/passwd", "--redis-url", "-rf"]
MENTIONS = ["<@U0APPROVER1>", "<!channel>", "<#C123|x>", "<!subteam^S0APPROVERS>", "@here"]
UNICODE = ["\u00e9", "\U0001f4a5", "\u202e", "\ufeff", "\u200d", "e\u0301", "\u4e2d", "\uffff"]
CONTROL = ["\x00", "\x1b[31m", "\r\n", "\t", "\x7f", "\x08", "\x0b", "\u2028"]
ATOMS = [WORDS, VERSIONS, COMPONENTS, HOSTS, SHELL, FLAGS, MENTIONS, UNICODE, CONTROL]
ACTIONS = ["approve_release", "reject_release", "retry_failed", "confirm_overwrite"]
CHANGING = (ReleaseCommand, RetryCommand, CancelCommand, SyncCommand)


def junk(rng: random.Random, depth: int = 0) -> Any:
    """A JSON value of any type, nested a little."""
    kinds = ["str", "int", "float", "bool", "null", "list", "dict", "huge"]
    kind = rng.choice(kinds if depth < 3 else kinds[:5])
    if kind == "str":
        return text(rng, words=3)
    if kind == "int":
        return rng.choice([0, -1, 2**63, 10**40, rng.randint(-99, 99)])
    if kind == "float":
        return rng.choice([1e308, -0.0, 3.14])
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if kind == "huge":
        return "Z" * rng.choice([1000, 20_000, 60_000])
    if kind == "list":
        return [junk(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {text(rng, words=1)[:20]: junk(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def text(rng: random.Random, words: int = 8) -> str:
    parts = [rng.choice(rng.choice(ATOMS)) for _ in range(rng.randint(0, words))]
    joined = rng.choice([" ", " ", "", "\t", "  "]).join(parts)
    if rng.random() < 0.05:
        joined = (joined or "x") * rng.randint(50, 2000)
    return joined


# ---- cases --------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    kind: str
    send: Callable[[Bot, aiohttp.ClientSession], Any]  # -> awaitable status
    expect_4xx: bool = False


async def _post(
    bot: Bot, session: aiohttp.ClientSession, body: bytes, headers: dict[str, str]
) -> int:
    async with session.post(bot.url + "/slack/events", data=body, headers=headers) as resp:
        await resp.read()
        return resp.status


def _signed(body: bytes) -> dict[str, str]:
    timestamp = str(int(time.time()))
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": slack_signature(SECRET, timestamp, body),
    }


def command_case(user: str, channel: str, said: str, command: str = "/aibrix") -> Case:
    async def send(bot: Bot, session: aiohttp.ClientSession) -> int:
        fields = bot.slack.command_fields(said, user_id=user, channel_id=channel, command=command)
        body = encode_form(fields).encode()
        return await _post(bot, session, body, _signed(body))

    return Case(f"command by {user}", send)


# Identities Slack never sends (item 12): each is answered in the ack, and writes nothing.
BAD_USERS = ["", " ", "bob", "<@U0APPROVER1>", "U", "u0approver1", "U0APPROVER1 ", "U0\u00e91"]
BAD_CHANNELS = ["", "#releases", "C", "c0releases", "C0RELEASES\n", "<#C0RELEASES>"]
BAD_RESPONSE_URLS = ["", "x", "javascript:alert(1)", "ftp://127.0.0.1/", "http://"]


def identity_case(rng: random.Random, said: str) -> Case:
    """A command whose user id, channel id or response_url is missing or malformed: the
    gate or the handler refuses it before anything is claimed or written."""
    broken = rng.choice(["user_id", "channel_id", "response_url"])
    pool = {"user_id": BAD_USERS, "channel_id": BAD_CHANNELS, "response_url": BAD_RESPONSE_URLS}
    replacement = rng.choice([None, *pool[broken]])

    async def send(bot: Bot, session: aiohttp.ClientSession) -> int:
        fields = bot.slack.command_fields(said, user_id=APPROVER, channel_id=CHANNEL)
        if replacement is None:
            del fields[broken]
        else:
            fields[broken] = replacement
        body = encode_form(fields).encode()
        return await _post(bot, session, body, _signed(body))

    return Case(f"command with a bad {broken}", send)


def click_case(payload_of: Callable[[Bot], dict[str, Any]], well_formed: bool) -> Case:
    async def send(bot: Bot, session: aiohttp.ClientSession) -> int:
        payload = payload_of(bot)
        body = encode_form({"payload": json.dumps(payload)}).encode()
        return await _post(bot, session, body, _signed(body))

    return Case("click" if well_formed else "malformed click", send, expect_4xx=not well_formed)


def unsigned_case(rng: random.Random) -> Case:
    body = rng.randbytes(rng.randint(0, 3000))
    timestamp = rng.choice([str(int(time.time())), str(int(time.time()) - 4000), "abc", "1.5", ""])
    signature = rng.choice(["", "v0=" + "0" * 64, "v0=zz", "v1=" + "a" * 64, "\u00e9"])

    async def send(bot: Bot, session: aiohttp.ClientSession) -> int:
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if timestamp:
            headers["X-Slack-Request-Timestamp"] = timestamp
        if signature:
            headers["X-Slack-Signature"] = signature
        return await _post(bot, session, body, headers)

    return Case("unsigned junk", send, expect_4xx=True)


def click_payload(rng: random.Random, user: str) -> Callable[[Bot], dict[str, Any]]:
    """A click shaped as Slack's, on no existing run, or with a forged action id or a
    junk value."""
    action_id = rng.choice(ACTIONS) if rng.random() < 0.7 else text(rng, words=2)[:255]
    value_kind = rng.randrange(6)
    version = rng.choice(VERSIONS)
    run_id = rng.choice(["0123456789abcdef", "f" * 64, "nope", "", "0" * 65])
    value: Any
    if value_kind == 0:
        value = json.dumps({"version": version, "run_id": run_id})
    elif value_kind == 1:
        value = json.dumps({"version": junk(rng), "run_id": junk(rng)})
    elif value_kind == 2:
        value = json.dumps(junk(rng))
    elif value_kind == 3:
        value = text(rng)
    elif value_kind == 4:
        value = "v0.3.0|0123456789abcdef"
    else:
        value = None
    extra = {text(rng, words=1)[:20]: junk(rng) for _ in range(rng.randint(0, 3))}
    message_blocks = junk(rng)

    def build(bot: Bot) -> dict[str, Any]:
        action: dict[str, Any] = {
            "action_id": action_id,
            "block_id": "b",
            "type": "button",
            "action_ts": f"{time.time():.6f}",
        }
        if value is not None:
            action["value"] = value
        return {
            "type": "block_actions",
            "user": {"id": user, "name": "x", "team_id": bot.standin.team_id},
            "api_app_id": "A0AIBRIXAPP",
            "token": "standin-verification",
            "container": {"type": "message", "message_ts": "1.2", "channel_id": CHANNEL},
            "trigger_id": "1.2.abc",
            "team": {"id": bot.standin.team_id, "domain": "aibrix"},
            "channel": {"id": CHANNEL, "name": "releases"},
            "message": {"type": "message", "ts": "1.2", "text": "", "blocks": message_blocks},
            "state": {"values": {}},
            "response_url": bot.standin.new_response_url(
                channel=CHANNEL, user=user, message_ts="1.2"
            ),
            "actions": [action],
            **extra,
        }

    return build


def broken_click(rng: random.Random) -> Callable[[Bot], dict[str, Any]]:
    """A click with one field of a type Slack never sends there: refused before the app
    sees it."""
    good = click_payload(rng, APPROVER)
    wrong: dict[str, list[Any]] = {
        "user": [5, "U0APPROVER1", [1], None, True, {"id": [1]}, {"id": None}],
        "actions": [5, "approve_release", None, {"a": 1}, [], [5], [None]],
        "action_id": [5, None, [1], True, {"a": 1}],
        "value": [5, [1], {"a": 1}, True, 1e308],
        "team": [5, "x", [1], 1e308, True],
        "channel": [5, "x", [1], True],
        "container": [5, "x", [1], True],
        "response_url": [5, [1], None, {"a": 1}, True, "", "x", "javascript:alert(1)"],
    }
    field = rng.choice(sorted(wrong))
    replacement = rng.choice(wrong[field])

    def build(bot: Bot) -> dict[str, Any]:
        payload = good(bot)
        if field in ("action_id", "value"):
            payload["actions"] = [dict(payload["actions"][0], **{field: replacement})]
        else:
            payload[field] = replacement
        return payload

    return build


def generate(rng: random.Random, count: int, refused: Callable[[str, str], bool]) -> list[Case]:
    cases: list[Case] = []
    while len(cases) < count:
        roll = rng.random()
        if roll < 0.08:
            # Any text, even one an approver could run: the identity is what is wrong.
            cases.append(identity_case(rng, rng.choice([text(rng), "release v9.9.9", "status"])))
        elif roll < 0.55:
            user = rng.choice([REQUESTER, STRANGER])
            said = text(rng)
            if not refused(user, said):
                continue  # could be accepted: not generated, by construction
            channel = CHANNEL if rng.random() < 0.9 else "C0ELSEWHERE"
            command = "/aibrix" if rng.random() < 0.97 else rng.choice(["/aibrixx", "/AIBRIX"])
            cases.append(command_case(user, channel, said, command))
        elif roll < 0.8:
            user = rng.choice([APPROVER, REQUESTER, STRANGER, "U" + text(rng, words=1)[:12]])
            cases.append(click_case(click_payload(rng, user), well_formed=True))
        elif roll < 0.9:
            cases.append(click_case(broken_click(rng), well_formed=False))
        else:
            cases.append(unsigned_case(rng))
    return cases


VALID_READS = ["help", "", "status", "status v0.3.0", "inspect runtime v0.3.0"]


@pytest.fixture
def quiet_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    # WARNING and up, set before the app is built: ERRORs and tracebacks are what is
    # asserted, and thousands of DEBUG lines would only slow the run.
    caplog.set_level(logging.WARNING)
    return caplog


async def _settled(bot: Bot) -> None:
    """Until Bolt's listeners (they run after the HTTP answer) and the bot's background
    work have all ended."""

    def busy() -> list[asyncio.Task[Any]]:
        return [
            t
            for t in asyncio.all_tasks()
            if not t.done()
            and (
                "run_ack_function_asynchronously" in getattr(t.get_coro(), "__qualname__", "")
                or t in bot.server.deps.background
            )
        ]

    async with asyncio.timeout(60):
        while busy():
            await asyncio.sleep(0.05)


async def test_fuzz_refused_input_gets_no_5xx_no_traceback_and_writes_nothing(
    quiet_logs: pytest.LogCaptureFixture,
    lab: Any,
    redis_url: str,
    tmp_path: Path,
    key_prefix: str,
) -> None:
    caplog = quiet_logs
    namespace = f"fuzz-{SEED}"
    path = tmp_path / "aibrix.toml"
    path.write_text(bot_config_text(lab, namespace, key_prefix))
    config = load_config(path)

    def refused(user: str, said: str) -> bool:
        parsed = parse_command(said, config)
        if isinstance(parsed, ParseError):
            return True
        if isinstance(parsed, SyncCommand):
            # Every sync, refused or done, is audited (issue 10 item 1): a stranger's sync
            # writes its one audit entry by design, so it is not generated here.
            return False
        return user == STRANGER and isinstance(parsed, CHANGING)

    rng = random.Random(SEED)
    cases = generate(rng, CASES, refused)
    statuses: collections.Counter[int] = collections.Counter()
    problems: list[str] = []
    ran = 0
    async with (
        running_bot(lab, redis_url, path, key_prefix, namespace) as bot,
        aiohttp.ClientSession() as session,
    ):
        try:
            for said in VALID_READS:
                status = await command_case(REQUESTER, CHANNEL, said).send(bot, session)
                assert status == 200, (said, status)
            deadline = time.monotonic() + SECONDS
            queue = iter(enumerate(cases))

            async def lane() -> None:
                nonlocal ran
                for index, case in queue:
                    if time.monotonic() > deadline:
                        return
                    status = await case.send(bot, session)
                    ran += 1
                    statuses[status] += 1
                    if status >= 500 or (case.expect_4xx and not 400 <= status < 500):
                        problems.append(f"case {index} ({case.kind}): HTTP {status}")

            await asyncio.gather(*(lane() for _ in range(PARALLEL)))
            await _settled(bot)
            written = await bot.keys()
        finally:
            keys = await bot.server.redis.keys(f"{key_prefix}*")
            if keys:
                await bot.server.redis.delete(*keys)
    print(f"\nfuzz: {ran} cases of {len(cases)}, seed {SEED}, answers {dict(statuses)}")
    where = f"(seed {SEED}; rerun with AIBRIX_FUZZ_SEED={SEED})"
    assert ran > 0
    assert problems == [], f"{where}: {problems[:20]}"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert errors == [], f"{where}: " + "; ".join(
        f"{r.name}: {r.getMessage()[:160]}" for r in errors[:10]
    )
    assert written == [], f"{where}: refused input wrote {written[:10]}"
