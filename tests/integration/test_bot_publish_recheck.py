"""The approval click re-reads the release tags on every publish registry (issue 13 item
6): a second publish registry missing the verified index blocks the release with the
reason; holding the same digests (copied with the sync engine) lets the approval count.
The real Bolt app over HTTP, the lab Redis and registries, the Slack stand-in."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from jobs.domain.release import State
from jobs.registry.client import RegistryClient, RegistrySettings
from jobs.usecases.publish import publish_targets
from jobs.usecases.sync import sync_release
from tests.conftest import Lab
from tests.integration.test_side_doors_roles import click
from tests.support.bot import APPROVER, Bot, config_text, make_ready, running_bot


@pytest.fixture
async def bot(lab: Lab, redis_url: str, tmp_path: Path, key_prefix: str) -> AsyncIterator[Bot]:
    namespace = f"pubcheck-{uuid.uuid4().hex[:8]}"
    primary = f"{lab.registry}/{namespace}"
    second = f"{lab.mirror_registry}/{namespace}-pub"
    text = config_text(lab, namespace, key_prefix).replace(
        f'repository = "{primary}"\n', f'publish = ["{primary}", "{second}"]\n'
    )
    path = tmp_path / "aibrix.toml"
    path.write_text(text)
    async with running_bot(lab, redis_url, path, key_prefix, namespace) as found:
        yield found
        keys = await found.server.redis.keys(f"{key_prefix}*")
        if keys:
            await found.server.redis.delete(*keys)


async def test_a_publish_registry_without_the_index_blocks_the_approval(bot: Bot) -> None:
    release = await make_ready(bot, "v3.0.0")  # its indexes on the primary only
    said = await click(bot, "approve_release", APPROVER, release.status_ts)
    second = f"{bot.lab.mirror_registry}/{bot.namespace}-pub"
    assert "refused" in said
    assert f"{second}/runtime v3.0.0 no longer exists in the registry" in said
    after = await bot.records.run("v3.0.0")
    assert after.state is State.BLOCKED
    assert f"{second}/controller-manager v3.0.0" in after.state_reason
    assert after.approvals == {}


async def test_the_same_digests_on_every_publish_registry_let_the_approval_count(
    bot: Bot,
) -> None:
    release = await make_ready(bot, "v3.1.0")
    config = bot.server.deps.config
    async with RegistryClient(RegistrySettings()) as client:
        report = await sync_release(
            client,
            config,
            release.version,
            publish_targets(config),
            expected_digests={c: i.digest for c, i in release.indexes.items()},
        )
    assert report.ok
    said = await click(bot, "approve_release", APPROVER, release.status_ts)
    assert "refused" not in said, said
    after = await bot.records.run("v3.1.0")
    assert after.state is State.READY and APPROVER in after.approvals
