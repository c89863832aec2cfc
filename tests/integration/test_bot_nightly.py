"""`/aibrix nightly [BRANCH]` through the real Bolt app over HTTP (issue 13 item 7): the
branch is validated in the ack, the NIGHTLY role (unlisted: whoever may release) is
checked before anything is read, and a permitted request resolves the head of a real
git repository and starts its run with the live message. Lab Redis, the Slack stand-in."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from jobs.domain.nightly import nightly_version
from jobs.domain.release import State
from tests.conftest import Lab
from tests.integration.test_side_doors_roles import changes, command, redis_state
from tests.support.bot import (
    APPROVER,
    CHANNEL,
    REQUESTER,
    STRANGER,
    Bot,
    config_text,
    running_bot,
)
from tests.support.pipeline import SAMPLE

# Only the requester may release, so nightly (unlisted) is theirs and not the approver's.
ROLES = f'channels = ["{CHANNEL}"]\nrelease = ["{REQUESTER}"]\n'


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
async def bot(
    lab: Lab, redis_url: str, tmp_path: Path, key_prefix: str
) -> AsyncIterator[tuple[Bot, str]]:
    repo = tmp_path / "project"
    shutil.copytree(SAMPLE, repo)
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "head")
    namespace = f"nightly-{uuid.uuid4().hex[:8]}"
    text = config_text(lab, namespace, key_prefix)
    text = text.replace(f'path = "{SAMPLE}"\n', f'git = "{repo}"\n')
    text = text.replace(f'channels = ["{CHANNEL}"]\n', ROLES)
    path = tmp_path / "aibrix.toml"
    path.write_text(text)
    async with running_bot(lab, redis_url, path, key_prefix, namespace) as found:
        yield found, git(repo, "rev-parse", "HEAD")
        keys = await found.server.redis.keys(f"{key_prefix}*")
        if keys:
            await found.server.redis.delete(*keys)


async def test_nightly_from_slack_starts_the_head_of_main(bot: tuple[Bot, str]) -> None:
    found, head = bot
    said = await command(found, "nightly", REQUESTER)
    assert said.startswith(f"nightly of main at {head}: started run"), said
    run = await found.records.load(str(nightly_version(head)))
    assert run is not None and run.source_ref == head
    assert run.state in (State.BUILDING, State.MERGING)
    assert run.requested_by == REQUESTER
    assert len(found.standin.calls_to("chat.postMessage")) == 1  # its live message


@pytest.mark.parametrize(
    ("text", "user", "expected"),
    [
        ("nightly", APPROVER, "may not nightly here"),  # an approver who may not release
        ("nightly", STRANGER, "may not nightly here"),
        ("nightly --upload-pack", REQUESTER, "is not a branch name"),
        ("nightly a..b", REQUESTER, "is not a branch name"),
        ("nightly main extra", REQUESTER, "usage: /aibrix nightly [BRANCH]"),
        ("nightly no-such-branch", REQUESTER, "has no branch 'no-such-branch'"),
    ],
)
async def test_refused_nightlies_change_nothing(
    bot: tuple[Bot, str], text: str, user: str, expected: str
) -> None:
    found, _ = bot
    before = await redis_state(found)
    said = await command(found, text, user)
    assert expected in said, said
    after = await redis_state(found)
    assert changes(before, after) == {}
    assert found.standin.calls_to("chat.postMessage") == []
