"""Issue 10, items 4, 5 and 12 (refused input), black-box: signed requests through the real
Bolt app over HTTP, the Slack stand-in, the lab Redis and registry, and the real CLI.

A hostile or careless user (on no list, in the wrong channel, with forged, copied or
replayed clicks, with missing or malformed fields) is refused with a clear sentence, and
Redis is compared key by key before and after: nothing is written but, for a refused
click on a real run, one audit entry per user and action however often they click.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from handlers.parse import button_value
from jobs.domain.permissions import operator
from jobs.domain.release import Release, State
from tests.conftest import Lab
from tests.support.bot import (
    APPROVER,
    CHANNEL,
    GROUPIE,
    REQUESTER,
    STRANGER,
    TOKEN,
    USERS,
    Bot,
    config_text,
    make_ready,
    running_bot,
)
from tests.support.pipeline import Setup
from tests.support.slack_client import encode_form
from tests.support.slack_standin import SlackStandIn

OTHER = "C0ELSEWHERE"  # a channel the config does not accept
RELEASER = "U0RELEASER"  # may release (by user id), nothing else
GROUP_RELEASER = "U0GRPRELEASER"  # may release through the S0RELEASERS user group
ROLES = f"""channels = ["{CHANNEL}"]
release = ["{REQUESTER}", "{RELEASER}", "S0RELEASERS"]
"""
BUTTONS = {
    "approve_release": "approve",
    "reject_release": "reject",
    "retry_release": "retry",
    "confirm_overwrite": "confirm overwrite",
}


@pytest.fixture
async def bot(lab: Lab, redis_url: str, tmp_path: Path, key_prefix: str) -> AsyncIterator[Bot]:
    """The real app with a permission table: release to the requester, RELEASER and the
    S0RELEASERS group; cancel, retry and sync unlisted (the approvers: APPROVER, REQUESTER
    and the S0APPROVERS group); commands in CHANNEL only. The stand-in knows OTHER too."""
    namespace = f"roles-{uuid.uuid4().hex[:8]}"
    text = config_text(lab, namespace, key_prefix).replace(f'channels = ["{CHANNEL}"]\n', ROLES)
    assert "S0RELEASERS" in text
    path = tmp_path / "aibrix.toml"
    path.write_text(text)
    users = {**USERS, RELEASER: "rita", GROUP_RELEASER: "gus"}
    async with (
        SlackStandIn(
            TOKEN,
            channels={CHANNEL: "releases", OTHER: "random"},
            users=users,
            usergroups={"S0APPROVERS": [GROUPIE], "S0RELEASERS": [GROUP_RELEASER]},
        ) as standin,
        running_bot(lab, redis_url, path, key_prefix, namespace, standin=standin) as found,
    ):
        yield found
        keys = await found.server.redis.keys(f"{key_prefix}*")
        if keys:
            await found.server.redis.delete(*keys)


# ---- what Redis holds -------------------------------------------------------------------


async def redis_state(bot: Bot) -> dict[str, Any]:
    """Every key under the test's prefix with its type and whole value, but the notifier's
    lease and cursor (a running bot moves them whatever it is asked)."""
    redis = bot.server.redis
    keys = bot.key_names
    skip = {keys.notifier_leader, keys.notifier_cursor}
    state: dict[str, Any] = {}
    for key in sorted(await bot.keys()):
        if key in skip:
            continue
        kind = await redis.type(key)
        kind = kind.decode() if isinstance(kind, bytes) else str(kind)
        if kind == "string":
            value: Any = await redis.get(key)
        elif kind == "hash":
            value = await redis.hgetall(key)
        elif kind == "stream":
            value = await redis.xrange(key)
        elif kind == "zset":
            value = await redis.zrange(key, 0, -1, withscores=True)
        elif kind == "set":
            value = sorted(await redis.smembers(key))
        else:
            value = await redis.lrange(key, 0, -1)
        state[key] = (kind, value)
    return state


def changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The keys added, removed or changed, with their new value (None: removed)."""
    names = set(before) | set(after)
    return {k: after.get(k) for k in sorted(names) if before.get(k) != after.get(k)}


def new_audit(bot: Bot, before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, str]]:
    key = bot.key_names.audit
    old = {entry_id for entry_id, _ in (before.get(key) or ("stream", []))[1]}
    return [fields for entry_id, fields in after[key][1] if entry_id not in old]


async def state_once_audited(bot: Bot, before: dict[str, Any]) -> dict[str, Any]:
    """The state once a new audit entry is written: a sync refused by the permission
    table is answered in the ack and audited right after it (the ack must not wait on
    Redis), so a read right after the answer can come first."""
    async with asyncio.timeout(10):
        while True:
            after = await redis_state(bot)
            if new_audit(bot, before, after):
                return after
            await asyncio.sleep(0.05)


def delivery_keys(state: dict[str, Any]) -> list[str]:
    return [k for k in state if ":slack:delivery:" in k]


def only_refusal_audit(bot: Bot, release: Release, change: dict[str, Any]) -> None:
    """The change is the audit stream and the refusal's audit-once marker, nothing else."""
    keys = bot.key_names
    markers = {k for k in change if ":audit-once:" in k}  # one per refused user and action
    assert set(change) <= {keys.audit} | markers, sorted(change)


# ---- how Slack is driven ----------------------------------------------------------------


async def command(bot: Bot, text: str, user: str, channel: str = CHANNEL) -> str:
    """A slash command; its answer, whether in the ack or through the response_url."""
    before = len(bot.standin.ephemerals_for(user))
    resp = await bot.slack.slash_command(text, user_id=user, channel_id=channel)
    assert resp.status == 200
    if resp.body:
        said = str(json.loads(resp.body)["text"])
        if not said.startswith("working on"):
            return said
    async with asyncio.timeout(30):
        while len(bot.standin.ephemerals_for(user)) <= before:
            await asyncio.sleep(0.05)
    return bot.standin.ephemerals_for(user)[-1].text


async def click(
    bot: Bot, action: str, user: str, ts: str, channel: str = CHANNEL, **options: Any
) -> str:
    before = len(bot.standin.ephemerals_for(user))
    resp = await bot.slack.block_action(
        action, user_id=user, channel_id=channel, message_ts=ts, **options
    )
    assert resp.status == 200
    async with asyncio.timeout(15):
        while len(bot.standin.ephemerals_for(user)) <= before:
            await asyncio.sleep(0.05)
    return bot.standin.ephemerals_for(user)[-1].text


async def send_payload(bot: Bot, payload: dict[str, Any], user: str) -> str:
    """POST a (mutated) click payload, signed; the answer `user`'s response_url got."""
    before = len(bot.standin.ephemerals_for(user))
    body = encode_form({"payload": json.dumps(payload, separators=(",", ":"))})
    resp = await bot.slack.send(body)
    assert resp.status == 200, resp.body
    async with asyncio.timeout(15):
        while len(bot.standin.ephemerals_for(user)) <= before:
            await asyncio.sleep(0.05)
    return bot.standin.ephemerals_for(user)[-1].text


async def copy_of(bot: Bot, release: Release, channel: str) -> str:
    """Post a copy of the run's status message (its buttons included) in `channel`, as
    anyone who can post there could; its ts."""
    from tests.support.bot import _client

    original = bot.standin.message(CHANNEL, release.status_ts)
    assert original is not None
    posted = await _client(bot).chat_postMessage(
        channel=channel, text=original.text, blocks=original.blocks
    )
    return str(posted["ts"])


def value_of(release: Release) -> str:
    return button_value(str(release.version), release.run_id)


# ---- item 4: roles ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "verb"),
    [
        ("release v4.0.0", "release"),
        ("cancel v4.0.0", "cancel"),
        ("retry v4.0.0", "retry"),
        ("sync v4.0.0 lab-mirror", "sync"),
    ],
)
async def test_item4_stranger_may_not_release_cancel_retry_or_sync(
    bot: Bot, text: str, verb: str
) -> None:
    await make_ready(bot, "v4.0.0")
    before = await redis_state(bot)
    said = await command(bot, text, STRANGER)
    assert f"may not {verb} here" in said and "permissions grant it to" in said
    after = await (state_once_audited(bot, before) if verb == "sync" else redis_state(bot))
    change = changes(before, after)
    if verb == "sync":
        # Every sync, refused or done, is audited (item 1): one entry, deduplicated by a
        # short-lived marker; no delivery key, nothing queued.
        keys = bot.key_names
        assert set(change) <= {keys.audit} | {k for k in change if ":audit-once:" in k}
        assert [(e["action"], e["actor"]) for e in new_audit(bot, before, after)] == [
            ("sync-refused", STRANGER)
        ]
    else:
        assert change == {}  # not even a delivery key
    assert len(bot.standin.calls_to("chat.postMessage")) == 1  # make_ready's only


@pytest.mark.parametrize(
    "text",
    ["release v4.1.0", "cancel v4.1.0", "retry v4.1.0", "sync v4.1.0 lab-mirror", "status"],
)
async def test_item4_commands_from_another_channel_are_refused(bot: Bot, text: str) -> None:
    before = await redis_state(bot)
    said = await command(bot, text, APPROVER, channel=OTHER)
    assert said == f"this channel does not take release commands; use <#{CHANNEL}>"
    sync = text.startswith("sync")
    after = await (state_once_audited(bot, before) if sync else redis_state(bot))
    change = changes(before, after)
    if sync:
        # Every sync, refused or done, is audited (item 1), once.
        assert [(e["action"], e["where"]) for e in new_audit(bot, before, after)] == [
            ("sync-refused", OTHER)
        ]
        assert set(change) <= {bot.key_names.audit} | {k for k in change if ":audit-once:" in k}
    else:
        assert change == {}
    assert "/aibrix release VERSION" in await command(bot, "help", APPROVER, channel=OTHER)
    assert bot.standin.calls_to("chat.postMessage") == []


async def test_item4_requester_with_release_but_not_retry_or_cancel_may_do_neither(
    bot: Bot,
) -> None:
    said = await command(bot, "release v4.2.0", RELEASER)
    assert "started run" in said
    started = await bot.records.run("v4.2.0")
    assert started is not None and started.requested_by == RELEASER
    before = await redis_state(bot)
    assert "may not cancel here" in await command(bot, "cancel v4.2.0", RELEASER)
    assert "may not retry here" in await command(bot, "retry v4.2.0", RELEASER)
    assert changes(before, await redis_state(bot)) == {}
    # An approver (the unlisted cancel role) may; both decisions are audited with where.
    assert f"cancelled by <@{APPROVER}>" in await command(bot, "cancel v4.2.0", APPROVER)
    entries = {e["action"]: e for e in await bot.records.audit(50)}
    assert entries["requested"]["actor"] == RELEASER
    assert entries["requested"]["where"] == CHANNEL
    assert entries["cancelled"]["actor"] == APPROVER
    assert entries["cancelled"]["where"] == CHANNEL


async def test_item4_a_member_of_a_listed_group_may_release(bot: Bot) -> None:
    assert "started run" in await command(bot, "release v4.3.0", GROUP_RELEASER)
    release = await bot.records.run("v4.3.0")
    assert release is not None and release.requested_by == GROUP_RELEASER
    # An approver through S0APPROVERS is not in S0RELEASERS: approving is not releasing.
    assert "may not release here" in await command(bot, "release v4.3.1", GROUPIE)


@pytest.mark.parametrize("action", list(BUTTONS))
async def test_item4_a_stranger_clicking_each_button_is_refused_and_audited_once(
    bot: Bot, action: str
) -> None:
    release = await make_ready(bot, "v4.4.0")
    before = await redis_state(bot)
    value = value_of(release)
    for _ in range(3):
        said = await click(bot, action, STRANGER, release.status_ts, value=value)
        assert f"may not {BUTTONS[action]} here" in said
    after = await redis_state(bot)
    only_refusal_audit(bot, release, changes(before, after))
    (entry,) = new_audit(bot, before, after)
    assert entry["actor"] == STRANGER and entry["where"] == CHANNEL
    assert entry["action"].endswith("-refused") and entry["run_id"] == release.run_id
    assert delivery_keys(after) == []
    loaded = await bot.records.run("v4.4.0")
    assert loaded is not None and loaded.state is State.READY and loaded.approvals == {}


async def test_item4_reject_is_open_to_the_runs_requester_who_is_no_approver(bot: Bot) -> None:
    release = await make_ready(bot, "v4.5.0")
    run_key = bot.key_names.run(release.version, release.run_id)
    await bot.server.redis.hset(run_key, "requested_by", RELEASER)  # requested by RELEASER
    assert "may not approve here" in await click(
        bot, "approve_release", RELEASER, release.status_ts
    )
    said = await click(bot, "reject_release", RELEASER, release.status_ts)
    assert f"rejected by <@{RELEASER}>" in said
    blocked = await bot.records.run("v4.5.0")
    assert blocked is not None and blocked.state is State.BLOCKED
    (rejected,) = [e for e in await bot.records.audit(50) if e["action"] == "rejected"]
    assert rejected["actor"] == RELEASER and rejected["where"] == CHANNEL


async def test_item4_approval_is_audited_with_where_it_came_from(bot: Bot) -> None:
    release = await make_ready(bot, "v4.6.0")
    assert "1 of 2 approvals" in await click(bot, "approve_release", APPROVER, release.status_ts)
    (approved,) = [e for e in await bot.records.audit(50) if e["action"] == "approved"]
    assert approved["actor"] == APPROVER and approved["where"] == CHANNEL


async def test_item4_cli_release_and_cancel_are_authorized_as_the_operator_and_audited(
    bot: Bot, lab: Lab, redis_url: str, tmp_path: Path
) -> None:
    # The bot fixture wrote its config in this test's tmp_path.
    setup = Setup(lab, tmp_path / "aibrix.toml", redis_url, tmp_path)
    code, _, err = await setup.cli("release", "v4.7.0", "--no-follow")
    assert code == 0, err
    code, _, err = await setup.cli("cancel", "v4.7.0")
    assert code == 0, err
    actor = operator(os.environ.get("USER", "cli")).user
    entries = [e for e in await bot.records.audit(50) if e["version"] == "v4.7.0"]
    found = {e["action"]: e for e in entries}
    assert found["requested"]["actor"] == actor and found["requested"]["where"] == "cli"
    assert found["cancelled"]["actor"] == actor and found["cancelled"]["where"] == "cli"


# ---- item 5: clicks are bound to their message -------------------------------------------


@pytest.mark.parametrize("action", list(BUTTONS))
async def test_item5_click_from_another_channel_is_refused(bot: Bot, action: str) -> None:
    release = await make_ready(bot, "v5.0.0")
    copy = await copy_of(bot, release, OTHER)
    before = await redis_state(bot)
    said = await click(bot, action, APPROVER, copy, channel=OTHER, value=value_of(release))
    assert "is not on the status message of v5.0.0" in said and "nothing was done" in said
    after = await redis_state(bot)
    only_refusal_audit(bot, release, changes(before, after))
    (entry,) = new_audit(bot, before, after)
    assert entry["actor"] == APPROVER and entry["where"] == OTHER
    loaded = await bot.records.run("v5.0.0")
    assert loaded is not None and loaded.state is State.READY and loaded.approvals == {}


@pytest.mark.parametrize("action", list(BUTTONS))
async def test_item5_click_on_a_copy_of_the_button_in_the_same_channel_is_refused(
    bot: Bot, action: str
) -> None:
    release = await make_ready(bot, "v5.1.0")
    copy = await copy_of(bot, release, CHANNEL)
    before = await redis_state(bot)
    said = await click(bot, action, APPROVER, copy, value=value_of(release))
    assert "is not on the status message of v5.1.0" in said
    only_refusal_audit(bot, release, changes(before, await redis_state(bot)))
    loaded = await bot.records.run("v5.1.0")
    assert loaded is not None and loaded.state is State.READY and loaded.approvals == {}


async def test_item5_the_same_approver_on_the_real_message_counts(bot: Bot) -> None:
    release = await make_ready(bot, "v5.2.0")
    copy = await copy_of(bot, release, OTHER)
    assert "is not on the status message" in await click(
        bot, "approve_release", APPROVER, copy, channel=OTHER, value=value_of(release)
    )
    said = await click(bot, "approve_release", APPROVER, release.status_ts)
    assert f"1 of 2 approvals: <@{APPROVER}>" in said


async def test_item5_a_click_naming_a_message_the_container_does_not_is_refused(
    bot: Bot,
) -> None:
    """Forged: the container names a copy, `message.ts` names the real message."""
    release = await make_ready(bot, "v5.3.0")
    copy = await copy_of(bot, release, CHANNEL)
    payload = bot.slack.action_payload("approve_release", user_id=APPROVER, message_ts=copy)
    payload["message"]["ts"] = release.status_ts
    before = await redis_state(bot)
    said = await send_payload(bot, payload, APPROVER)
    assert "does not say which message it came from (two different messages)" in said
    assert changes(before, await redis_state(bot)) == {}


# ---- item 12: refused input writes nothing ------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "said"),
    [
        ("user_id", None, "valid Slack user_id"),
        ("user_id", "", "valid Slack user_id"),
        ("user_id", "<!channel>", "valid Slack user_id"),
        ("user_id", "U0REQUESTER U0APPROVER1", "valid Slack user_id"),
        ("channel_id", None, "valid Slack channel_id"),
        ("channel_id", "#releases", "valid Slack channel_id"),
        ("channel_id", "C0RELEASES\n", "valid Slack channel_id"),
    ],
)
@pytest.mark.parametrize("text", ["release v12.0.0", "cancel v12.0.0", "status"])
async def test_item12_missing_or_malformed_user_or_channel_id_writes_nothing(
    bot: Bot, field: str, value: str | None, said: str, text: str
) -> None:
    before = await redis_state(bot)
    fields = bot.slack.command_fields(text, user_id=REQUESTER)
    if value is None:
        del fields[field]
    else:
        fields[field] = value
    resp = await bot.slack.send(encode_form(fields))
    assert resp.status == 200
    answer = json.loads(resp.body)
    assert answer["response_type"] == "ephemeral" and said in answer["text"]
    assert changes(before, await redis_state(bot)) == {}
    assert bot.standin.calls_to("chat.postMessage") == []


def _drop(payload: dict[str, Any], path: str) -> None:
    head, _, tail = path.partition(".")
    if tail:
        del payload[head][tail]
    else:
        del payload[head]


@pytest.mark.parametrize(
    ("mutate", "said"),
    [
        # A click with no user at all is not a click Slack sends: the request gate in
        # front of Bolt answers it 400 (malformed) before any handler runs.
        ({"drop": "user"}, "HTTP 400"),
        ({"drop": "user.id"}, "HTTP 400"),
        ({"set": ("user", {"id": "<!here>"})}, "valid Slack user id"),
        ({"drop": "container"}, "no message container"),
        ({"drop": "container.channel_id"}, "valid Slack channel id"),
        ({"drop": "container.message_ts"}, "no message ts"),
        ({"set": ("channel", {"id": OTHER})}, "two different channels"),
    ],
)
async def test_item12_a_click_without_a_valid_user_or_container_writes_nothing(
    bot: Bot, mutate: dict[str, Any], said: str
) -> None:
    release = await make_ready(bot, "v12.1.0")
    payload = bot.slack.action_payload(
        "approve_release", user_id=APPROVER, message_ts=release.status_ts
    )
    if "drop" in mutate:
        _drop(payload, mutate["drop"])
    else:
        key, value = mutate["set"]
        payload[key] = value
    before = await redis_state(bot)
    if said == "HTTP 400":
        body = encode_form({"payload": json.dumps(payload, separators=(",", ":"))})
        resp = await bot.slack.send(body)
        assert (resp.status, json.loads(resp.body)) == (400, {"error": "malformed"})
    else:
        assert said in await send_payload(bot, payload, APPROVER)
    assert changes(before, await redis_state(bot)) == {}


async def test_item12_many_refused_clicks_of_one_user_are_audited_once_with_no_delivery_key(
    bot: Bot,
) -> None:
    release = await make_ready(bot, "v12.2.0")
    before = await redis_state(bot)
    for _ in range(40):
        await click(bot, "approve_release", STRANGER, release.status_ts)
    # The requester's own refused approval (self-approval is off) is its own entry.
    for _ in range(5):
        said = await click(bot, "approve_release", REQUESTER, release.status_ts)
        assert "self-approval is off" in said
    after = await redis_state(bot)
    change = changes(before, after)
    only_refusal_audit(bot, release, change)
    entries = new_audit(bot, before, after)
    assert sorted(e["actor"] for e in entries) == sorted([STRANGER, REQUESTER])
    assert len([k for k in change if ":audit-once:" in k]) == len(entries)
    assert {e["action"] for e in entries} == {"approval-refused"}
    assert delivery_keys(after) == []


@pytest.mark.parametrize("failure", ["refused-connection", "http-404"])
async def test_item12_a_failing_response_url_is_logged_once_and_keeps_the_ack(
    bot: Bot, caplog: pytest.LogCaptureFixture, failure: str
) -> None:
    url = (
        "http://127.0.0.1:1/response/gone"
        if failure == "refused-connection"
        else f"{bot.standin.url}/response/no-such-hook"
    )
    caplog.set_level(logging.INFO)
    resp = await bot.slack.slash_command("release v12.3.0", user_id=REQUESTER, response_url=url)
    assert resp.status == 200
    assert "working on release v12.3.0" in json.loads(resp.body)["text"]  # the ack
    await bot.standin.wait_for_calls("chat.postMessage", 1, timeout=15)
    async with asyncio.timeout(15):  # the answer is attempted last, after the status message
        while not [r for r in caplog.records if "answer not delivered" in r.getMessage()]:
            await asyncio.sleep(0.05)
    release = await bot.records.run("v12.3.0")
    assert release is not None and release.requested_by == REQUESTER and release.status_ts

    # The same for a click on the run's message: answered, and the lost answer logged.
    click_payload = bot.slack.action_payload(
        "approve_release", user_id=APPROVER, message_ts=release.status_ts, response_url=url
    )
    body = encode_form({"payload": json.dumps(click_payload, separators=(",", ":"))})
    assert (await bot.slack.send(body)).status == 200
    async with asyncio.timeout(15):
        while len([r for r in caplog.records if "answer not delivered" in r.getMessage()]) < 2:
            await asyncio.sleep(0.05)
    logged = [r for r in caplog.records if r.name.startswith("aibrix")]
    lost = [r for r in logged if "answer not delivered" in r.getMessage()]
    assert len(lost) == 2  # once per lost answer
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert url not in text and "/response/" not in text
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert "failed on the bot's side" not in json.dumps(
        [e.text for e in bot.standin.ephemerals_for(REQUESTER)]
    )
