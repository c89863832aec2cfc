"""The permission table (`jobs.domain.permissions`), exhaustively: every action for every kind of
actor and channel; the `[permissions]` config section, every mistake refused with its key;
and the pure checks of who sent a command or click (`handlers.parse`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handlers.parse import ClickOrigin, Origin, ParseError, click_origin, command_origin
from jobs.domain.config import ConfigError
from jobs.domain.config_reader import load_config
from jobs.domain.permissions import (
    APPROVER_ACTIONS,
    READ_ONLY,
    ROLES,
    Action,
    Actor,
    Grant,
    Permissions,
    authorize,
    build_permissions,
    needs_groups,
    operator,
)
from jobs.domain.platforms import parse_platform
from jobs.domain.release import BuildRecord, BuildState, Release, State
from jobs.domain.versions import parse_version
from jobs.usecases.pipeline import retry_refusal
from tests.support.config import TOP, doc

CHANNEL = "C0RELEASES"
OTHER_CHANNEL = "C0ELSEWHERE"
APPROVER = "U0APPROVER"
RELEASER = "U0RELEASER"
GROUPIE = "U0GROUPIE"
STRANGER = "U0STRANGER"
APPROVER_GROUP = "S0APPROVERS"
RELEASE_GROUP = "S0RELEASERS"

# A table as an operator would write it: release to one user and a group, sync to nobody,
# cancel/retry/supersede not listed (so: the approvers).
TABLE = build_permissions(
    [CHANNEL],
    {
        Action.RELEASE: Grant(users=(RELEASER,), groups=(RELEASE_GROUP,)),
        Action.SYNC: Grant(),
    },
    Grant(users=(APPROVER,), groups=(APPROVER_GROUP,)),
)


def expected(action: Action, user: str, groups: frozenset[str], requested_by: str) -> bool:
    """The table above, spelled out by hand."""
    if action in READ_ONLY:
        return True
    if action is Action.REJECT and user == requested_by:
        return True
    if action in (Action.RELEASE, Action.NIGHTLY):  # nightly unlisted: as release
        return user == RELEASER or RELEASE_GROUP in groups
    if action is Action.SYNC:
        return False
    return user == APPROVER or APPROVER_GROUP in groups


USERS = st.sampled_from([APPROVER, RELEASER, GROUPIE, STRANGER, "W0ENTERPRISE"])
GROUPS = st.frozensets(st.sampled_from([APPROVER_GROUP, RELEASE_GROUP, "S0OTHER"]))


@given(
    action=st.sampled_from(list(Action)),
    user=USERS,
    groups=GROUPS,
    requested_by=st.sampled_from(["", APPROVER, RELEASER, STRANGER]),
)
def test_item4_the_table_in_an_accepted_channel(
    action: Action, user: str, groups: frozenset[str], requested_by: str
) -> None:
    actor = Actor(user, groups, CHANNEL)
    refusal = authorize(TABLE, action, actor, requested_by or None)
    assert (refusal is None) == expected(action, user, groups, requested_by)
    if refusal is not None:
        assert f"<@{user}> may not {action.value.replace('_', ' ')} here" in refusal


@given(
    action=st.sampled_from(list(Action)),
    user=USERS,
    groups=GROUPS,
    channel=st.sampled_from([OTHER_CHANNEL, "", "D0DIRECT", "G0PRIVATE"]),
)
def test_item4_no_action_at_all_outside_the_accepted_channels(
    action: Action, user: str, groups: frozenset[str], channel: str
) -> None:
    refusal = authorize(TABLE, action, Actor(user, groups, channel), requested_by=user)
    assert refusal == f"this channel does not take release commands; use <#{CHANNEL}>"


@pytest.mark.parametrize("action", list(Action))
def test_item4_the_operator_is_admitted_to_everything(action: Action) -> None:
    actor = operator("alice")
    assert actor.user == "cli:alice" and actor.is_operator
    assert authorize(TABLE, action, actor) is None
    assert authorize(Permissions(), action, actor) is None
    assert not needs_groups(TABLE, action, actor)


@pytest.mark.parametrize("action", list(Action))
def test_item4_an_empty_config_grants_nothing_that_changes_anything(action: Action) -> None:
    empty = build_permissions([], {}, Grant())
    refused = authorize(empty, action, Actor(APPROVER, channel=CHANNEL))
    assert "lists no `permissions.channels`" in str(refused)
    somewhere = build_permissions([CHANNEL], {}, Grant())
    refusal = authorize(somewhere, action, Actor(APPROVER, frozenset({"S0X"}), CHANNEL))
    if action in READ_ONLY:
        assert refusal is None
    else:
        assert refusal is not None and "grant it to: nobody" in refusal


@pytest.mark.parametrize("action", ROLES + APPROVER_ACTIONS)
def test_item4_an_unlisted_role_belongs_to_the_approvers(action: Action) -> None:
    approvers = Grant(users=(APPROVER,), groups=(APPROVER_GROUP,))
    table = build_permissions([CHANNEL], {}, approvers)
    assert table.grant(action) == approvers
    assert authorize(table, action, Actor(APPROVER, channel=CHANNEL)) is None
    assert authorize(table, action, Actor(GROUPIE, frozenset({APPROVER_GROUP}), CHANNEL)) is None
    assert authorize(table, action, Actor(STRANGER, channel=CHANNEL)) is not None


@pytest.mark.parametrize("action", [Action.RETRY, Action.CANCEL, Action.APPROVE])
def test_item4_requesting_a_release_grants_no_retry_cancel_or_approve(action: Action) -> None:
    table = build_permissions(
        [CHANNEL], {Action.RELEASE: Grant(users=(RELEASER,))}, Grant(users=(APPROVER,))
    )
    refusal = authorize(table, action, Actor(RELEASER, channel=CHANNEL), requested_by=RELEASER)
    assert refusal is not None and f"grant it to: <@{APPROVER}>" in refusal


def test_item4_reject_is_open_to_the_runs_requester_only() -> None:
    table = build_permissions([CHANNEL], {}, Grant(users=(APPROVER,)))
    requester = Actor(RELEASER, channel=CHANNEL)
    assert authorize(table, Action.REJECT, requester, requested_by=RELEASER) is None
    assert authorize(table, Action.REJECT, requester, requested_by=STRANGER) is not None
    assert authorize(table, Action.REJECT, requester) is not None
    elsewhere = Actor(RELEASER, channel=OTHER_CHANNEL)
    assert authorize(table, Action.REJECT, elsewhere, requested_by=RELEASER) is not None


def test_item4_groups_are_looked_up_only_when_they_can_decide() -> None:
    inside = Actor(STRANGER, channel=CHANNEL)
    assert needs_groups(TABLE, Action.RELEASE, inside)
    assert not needs_groups(TABLE, Action.RELEASE, Actor(RELEASER, channel=CHANNEL))
    assert not needs_groups(TABLE, Action.SYNC, inside)  # nobody: groups cannot help
    assert not needs_groups(TABLE, Action.STATUS, inside)
    assert not needs_groups(TABLE, Action.REJECT, inside, requested_by=STRANGER)
    assert not needs_groups(TABLE, Action.RELEASE, Actor(STRANGER, channel=OTHER_CHANNEL))


def test_item4_the_tables_groups_are_every_group_it_names() -> None:
    assert set(TABLE.groups) == {RELEASE_GROUP, APPROVER_GROUP}


def test_grant_describes_who_in_slack_markup() -> None:
    assert Grant().describe() == "nobody"
    assert Grant(("U1",), ("S1",)).describe() == "<@U1>, <!subteam^S1>"


# ---- the config's [permissions] --------------------------------------------------------


def load(tmp_path: Path, extra: str) -> Any:
    path = tmp_path / "aibrix.toml"
    path.write_text(doc(extra=extra))
    return load_config(path)


def test_item4_no_permissions_section_means_no_channel_and_approvers_only(
    tmp_path: Path,
) -> None:
    config = load(tmp_path, '[approval]\napprovers = ["U0APPROVER"]')
    table = config.permissions
    assert table.channels == ()
    for action in ROLES + APPROVER_ACTIONS:
        assert table.grant(action) == Grant(users=(APPROVER,))


def test_item4_roles_split_users_and_groups(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        '[approval]\napprovers = ["U0APPROVER"]\napprover_groups = ["S0APPROVERS"]\n'
        '[permissions]\nchannels = ["C0RELEASES", "G0PRIVATE"]\n'
        'release = ["U0RELEASER", "S0RELEASERS", "W0ENTERPRISE"]\nsync = []\n'
        'cancel = ["U0CANCELLER"]',
    )
    table = config.permissions
    assert table.channels == ("C0RELEASES", "G0PRIVATE")
    assert table.grant(Action.RELEASE) == Grant(("U0RELEASER", "W0ENTERPRISE"), ("S0RELEASERS",))
    assert table.grant(Action.SYNC) == Grant()
    assert table.grant(Action.CANCEL) == Grant(("U0CANCELLER",))
    approvers = Grant((APPROVER,), (APPROVER_GROUP,))
    for action in (Action.RETRY, Action.SUPERSEDE, *APPROVER_ACTIONS):
        assert table.grant(action) == approvers


# fmt: off
INVALID = [
    ("not-a-table", 'permissions = "everyone"', "permissions", "must be a table"),
    ("unknown-key", "[permissions]\nadmins = []", "permissions.admins", "unknown key"),
    ("approve-is-approval", '[permissions]\napprove = ["U0A1"]', "permissions.approve",
     "unknown key"),
    ("reject-is-approval", '[permissions]\nreject = ["U0A1"]', "permissions.reject",
     "unknown key"),
    ("confirm-is-approval", '[permissions]\nconfirm_overwrite = ["U0A1"]',
     "permissions.confirm_overwrite", "unknown key"),
    ("channel-name", '[permissions]\nchannels = ["#releases"]', "permissions.channels[0]",
     "is not a Slack channel id"),
    ("channel-lowercase", '[permissions]\nchannels = ["c0releases"]',
     "permissions.channels[0]", "is not a Slack channel id"),
    ("channel-user", '[permissions]\nchannels = ["U0RELEASER"]', "permissions.channels[0]",
     "is not a Slack channel id"),
    ("channel-duplicate", '[permissions]\nchannels = ["C0AA", "C0AA"]',
     "permissions.channels[1]", "already given at permissions.channels[0]"),
    ("channels-string", '[permissions]\nchannels = "C0AA"', "permissions.channels",
     "must be"),
    ("channel-number", "[permissions]\nchannels = [1]", "permissions.channels[0]", "must be"),
    ("role-mention", '[permissions]\nrelease = ["<@U0AA>"]', "permissions.release[0]",
     "is not a Slack user id or user group id"),
    ("role-name", '[permissions]\nretry = ["alice"]', "permissions.retry[0]",
     "is not a Slack user id or user group id"),
    ("role-channel", '[permissions]\ncancel = ["C0AA"]', "permissions.cancel[0]",
     "is not a Slack user id or user group id"),
    ("role-everyone", '[permissions]\nsync = ["<!everyone>"]', "permissions.sync[0]",
     "is not a Slack user id or user group id"),
    ("role-duplicate", '[permissions]\nsupersede = ["U0AA", "U0AA"]',
     "permissions.supersede[1]", "already given at permissions.supersede[0]"),
    ("role-string", '[permissions]\nrelease = "U0AA"', "permissions.release", "must be"),
]
# fmt: on


@pytest.mark.parametrize(
    ("text", "key", "reason"), [case[1:] for case in INVALID], ids=[case[0] for case in INVALID]
)
def test_item4_a_bad_permissions_section_is_refused_naming_key_and_reason(
    tmp_path: Path, text: str, key: str, reason: str
) -> None:
    path = tmp_path / "aibrix.toml"
    top_level = not text.startswith("[")  # a key of the file itself, before any table
    path.write_text(doc(top=f"{TOP}\n{text}") if top_level else doc(extra=text))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert (caught.value.file, caught.value.key) == (str(path), key)
    assert reason in caught.value.reason
    assert str(caught.value).isprintable()


def test_the_case_ids_are_unique() -> None:
    ids = [case[0] for case in INVALID]
    assert len(ids) == len(set(ids))


# ---- who sent a command or a click ----------------------------------------------------


def test_item12_a_command_needs_a_user_and_a_channel_id() -> None:
    assert command_origin({"user_id": "U0AA", "channel_id": "C0BB"}) == Origin("U0AA", "C0BB")
    for body, field in (
        ({"channel_id": "C0BB"}, "user_id"),
        ({"user_id": "", "channel_id": "C0BB"}, "user_id"),
        ({"user_id": "<!channel>", "channel_id": "C0BB"}, "user_id"),
        ({"user_id": "u0aa", "channel_id": "C0BB"}, "user_id"),
        ({"user_id": ["U0AA"], "channel_id": "C0BB"}, "user_id"),
        ({"user_id": "U0AA"}, "channel_id"),
        ({"user_id": "U0AA", "channel_id": "#releases"}, "channel_id"),
        ({"user_id": "U0AA", "channel_id": "C0BB\n"}, "channel_id"),
    ):
        found = command_origin(body)
        assert isinstance(found, ParseError), body
        assert f"valid Slack {field}" in found.message and "nothing was done" in found.message


def click_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "user": {"id": "U0AA"},
        "container": {"type": "message", "channel_id": "C0BB", "message_ts": "1700000000.000100"},
        "channel": {"id": "C0BB"},
        "message": {"ts": "1700000000.000100"},
    }
    body.update(changes)
    return body


def test_item12_a_click_names_its_clicker_and_its_message() -> None:
    assert click_origin(click_body()) == ClickOrigin("U0AA", "C0BB", "1700000000.000100")
    # Slack's channel and message fields are optional, the container is not.
    bare = click_body()
    del bare["channel"], bare["message"]
    assert click_origin(bare) == ClickOrigin("U0AA", "C0BB", "1700000000.000100")


@pytest.mark.parametrize(
    ("changes", "said"),
    [
        ({"user": None}, "valid Slack user id"),
        ({"user": {"id": ""}}, "valid Slack user id"),
        ({"user": {"id": "U0AA<"}}, "valid Slack user id"),
        ({"user": "U0AA"}, "valid Slack user id"),
        ({"container": None}, "no message container"),
        ({"container": {"type": "view", "channel_id": "C0BB"}}, "no message container"),
        ({"container": {"type": "message", "message_ts": "1.2"}}, "valid Slack channel id"),
        ({"container": {"type": "message", "channel_id": "C0BB"}}, "no message ts"),
        (
            {"container": {"type": "message", "channel_id": "C0BB", "message_ts": "now"}},
            "no message ts",
        ),
        ({"channel": {"id": "C0OTHER"}}, "two different channels"),
        ({"channel": "C0BB"}, "two different channels"),
        ({"message": {"ts": "1700000000.000200"}}, "two different messages"),
    ],
)
def test_item12_a_click_with_a_missing_or_contradictory_origin_is_refused(
    changes: dict[str, Any], said: str
) -> None:
    found = click_origin(click_body(**changes))
    assert isinstance(found, ParseError), json.dumps(changes)
    assert said in found.message and "nothing was done" in found.message


@given(
    st.dictionaries(
        st.sampled_from(["user", "container", "channel", "message"]),
        st.none()
        | st.text(max_size=5)
        | st.dictionaries(st.text(max_size=12), st.text(max_size=20)),
    )
)
def test_item12_any_body_gives_an_origin_or_a_refusal_never_an_exception(
    body: dict[str, Any],
) -> None:
    assert isinstance(click_origin(body), ClickOrigin | ParseError)
    assert isinstance(command_origin(body), Origin | ParseError)


# ---- retry: decided before anything is claimed -----------------------------------------


def run(state: State, failed: bool) -> Release:
    arm64 = parse_platform("linux/arm64")
    build = BuildRecord("runtime", arm64, BuildState.FAILED if failed else BuildState.PUSHED)
    return Release(
        version=parse_version("v1.0.0"),
        run_id="0123456789abcdef",
        state=state,
        state_reason="",
        requested_by=RELEASER,
        channel=CHANNEL,
        platforms=(arm64,),
        components=("runtime",),
        source_ref="v1.0.0",
        created_at=0.0,
        updated_at=0.0,
        status_channel=CHANNEL,
        status_ts="1700000000.000100",
        previous_run_id="",
        active=True,
        builds={("runtime", arm64): build},
        indexes={},
    )


@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("failed", [True, False])
def test_item4_only_a_blocked_or_failed_run_with_failed_builds_may_be_retried(
    state: State, failed: bool
) -> None:
    refusal = retry_refusal(run(state, failed))
    assert (refusal is None) == (failed and state in (State.BLOCKED, State.FAILED))


def test_nightly_listed_is_its_own_role() -> None:
    table = build_permissions(
        [CHANNEL],
        {Action.RELEASE: Grant(users=(RELEASER,)), Action.NIGHTLY: Grant(users=(STRANGER,))},
        Grant(users=(APPROVER,)),
    )
    assert authorize(table, Action.NIGHTLY, Actor(STRANGER, frozenset(), CHANNEL)) is None
    refused = authorize(table, Action.NIGHTLY, Actor(RELEASER, frozenset(), CHANNEL))
    assert refused is not None and "may not nightly here" in refused
