"""A component's card against real registries (issue 17): the lab's source (:5000) and
mirror (:5002), a second publish registry and a second mirror this test starts
(`docker-registry` on 5210 and 5211), and a mirror whose port is closed (5219).

`runtime` has: v0.7.0 promoted on record, the same digest at the source and the publish
registry, another digest on beijing (drifted), nothing on shanghai (lacks it); v0.8.0-rc.1
ready on record, at the source only; and tags the bot never recorded, pushed straight to
the source: v0.6.0 (arm64 only), v0.6.0-rc.1, v0.5.0 (past `registry_tags = 2`), a staging
tag and `latest`. Asked over the real Bolt app, and through `aibrix-bot inspect --json`.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from jobs.domain.references import parse_reference
from jobs.domain.release import State
from jobs.registry.client import RegistryClient
from jobs.store.connections import RedisSettings, connect
from jobs.store.keys import Keys
from jobs.store.releases import ReleaseStore
from tests.conftest import Lab
from tests.support.bot import CHANNEL, REQUESTER, running_bot
from tests.support.distribution import distribution
from tests.support.oci_push import OciPusher, Pushed, entry
from tests.support.pipeline import SAMPLE

PUBLISH_HOST = "127.0.0.1:5210"
MIRROR_HOST = "127.0.0.1:5211"
DEAD_HOST = "127.0.0.1:5219"  # nothing listens here: a registry that is down
REPO = Path(__file__).resolve().parents[2]


@dataclass
class World:
    config_path: Path
    namespace: str
    source: str  # the source registry's column name
    released: str  # v0.7.0's index digest (the record's)
    drifted: str  # what beijing holds under v0.7.0


def _config(lab: Lab, namespace: str, key_prefix: str) -> str:
    return (
        "\n".join(
            [
                f'repository = "{lab.registry}/{namespace}"',
                'platforms = ["linux/amd64", "linux/arm64"]',
                "[source]",
                f'path = "{SAMPLE}"',
                "[permissions]",
                f'channels = ["{CHANNEL}"]',
                "[queue]",
                f'key_prefix = "{key_prefix}"',
                "[mirrors]",
                f'tokyo = "{PUBLISH_HOST}/{namespace}"',
                f'beijing = "{lab.mirror_registry}/{namespace}"',
                f'shanghai = "{MIRROR_HOST}/{namespace}"',
                f'frankfurt = "{DEAD_HOST}/{namespace}"',
                "[promotion]",
                'tags = ["latest"]',
                'mirrors = ["tokyo"]',
                "[inspect]",
                "registry_tags = 2",
                "[[components]]",
                'name = "runtime"',
                'dockerfile = "build/container/Dockerfile.runtime"',
                "[[components]]",
                'name = "gateway-plugins"',
                'dockerfile = "build/container/Dockerfile.gateway"',
            ]
        )
        + "\n"
    )


async def _release(
    session: aiohttp.ClientSession,
    registry: str,
    repo: str,
    tags: tuple[str, ...],
    payload: bytes,
    arches: tuple[str, ...] = ("amd64", "arm64"),
) -> Pushed:
    pusher = OciPusher(registry)
    images = [
        (arch, await pusher.image(session, repo, os="linux", arch=arch, payload=payload))
        for arch in arches
    ]
    entries = [entry(image, "linux", arch) for arch, image in images]
    index = None
    for tag in tags:
        index = await pusher.index(session, repo, tag, entries)
    assert index is not None
    return index


async def _record(store: ReleaseStore, version: str, digest: str, final: State) -> None:
    """A release record as the pipeline leaves it: merged, verified, then `final`."""
    release, created = await store.create_or_get(
        version, REQUESTER, CHANNEL, ["linux/amd64", "linux/arm64"], ["runtime"], version
    )
    assert created
    run = release.run_id
    path = [State.BUILDING, State.MERGING, State.VERIFYING]
    current = State.QUEUED
    for state in path:
        assert await store.transition(version, run, [current], state)
        current = state
    await store.record_index(version, run, "runtime", digest, "ok")
    for state in (State.READY, State.APPROVED, State.PROMOTING, State.PROMOTED):
        assert await store.transition(version, run, [current], state)
        current = state
        if state is final:
            break


@pytest.fixture
async def world(lab: Lab, redis_url: str, tmp_path: Path, key_prefix: str) -> AsyncIterator[World]:
    namespace = f"card-{uuid.uuid4().hex[:8]}"
    async with contextlib.AsyncExitStack() as stack:
        (tmp_path / "tokyo").mkdir()
        (tmp_path / "shanghai").mkdir()
        await stack.enter_async_context(distribution(tmp_path / "tokyo", host=PUBLISH_HOST))
        await stack.enter_async_context(distribution(tmp_path / "shanghai", host=MIRROR_HOST))
        repo = f"{namespace}/runtime"
        async with aiohttp.ClientSession() as session:
            released = await _release(session, lab.registry, repo, ("v0.7.0", "latest"), b"070")
            published = await _release(session, PUBLISH_HOST, repo, ("v0.7.0", "latest"), b"070")
            assert published.digest == released.digest
            drifted = await _release(session, lab.mirror_registry, repo, ("v0.7.0",), b"other")
            await _release(session, MIRROR_HOST, repo, ("v0.6.0-rc.1",), b"060rc1")
            ready = await _release(session, lab.registry, repo, ("v0.8.0-rc.1",), b"080rc1")
            # Pushed straight to the source, never recorded by the bot:
            await _release(session, lab.registry, repo, ("v0.6.0",), b"060", arches=("arm64",))
            await _release(session, lab.registry, repo, ("v0.6.0-rc.1",), b"060rc1")
            await _release(session, lab.registry, repo, ("v0.5.0",), b"050")
            await _release(session, lab.registry, repo, ("v0.7.0-amd64",), b"staging")
        path = tmp_path / "aibrix.toml"
        path.write_text(_config(lab, namespace, key_prefix))
        settings = RedisSettings.from_dsn(redis_url, key_prefix=key_prefix)
        redis = await connect(settings)
        store = ReleaseStore(redis, Keys(key_prefix))
        try:
            await _record(store, "v0.7.0", released.digest, State.PROMOTED)
            await _record(store, "v0.8.0-rc.1", ready.digest, State.READY)
            yield World(path, namespace, lab.registry, released.digest, drifted.digest)
        finally:
            keys = await redis.keys(f"{key_prefix}*")
            if keys:
                await redis.delete(*keys)
            await redis.aclose()


def _short(digest: str) -> str:
    return digest[: len("sha256:") + 12]


def _expected_problems(world: World) -> list[str]:
    """Every problem, in order (most telling first); the down registry's column is said
    once, whatever its error."""
    return [
        f"v0.6.0 is missing linux/amd64 on {world.source}",
        f"beijing holds {_short(world.drifted)} under v0.7.0, not the release's "
        f"{_short(world.released)}",
        "shanghai lacks v0.7.0",
        "frankfurt cannot be read: ",
    ]


async def _ask(bot: Any, text: str, marker: str) -> Any:
    before = len(bot.standin.ephemerals_for(REQUESTER))
    response = await bot.slack.slash_command(text, user_id=REQUESTER, channel_id=CHANNEL)
    assert response.status == 200
    return await bot.ephemeral(
        REQUESTER,
        lambda e: (
            marker in json.dumps(e.blocks or [])
            and len(bot.standin.ephemerals_for(REQUESTER)) > before
        ),
        timeout=30,
    )


async def test_slack_inspect_component_shows_its_card(
    world: World, lab: Lab, redis_url: str, key_prefix: str
) -> None:
    async with running_bot(lab, redis_url, world.config_path, key_prefix, world.namespace) as bot:
        card = await _ask(bot, "inspect runtime", "versions, registries and mirrors")
        rendered = json.dumps(card.blocks)
        texts = [b["text"]["text"] for b in card.blocks if b.get("type") == "section"]
        # The line at the top says what is wrong.
        assert texts[0] == f":warning: v0.6.0 is missing linux/amd64 on {world.source} (and 3 more)"
        for problem in _expected_problems(world):
            assert problem in rendered, problem
        table = next(t for t in texts if t.startswith("```TAG"))
        header, *rows = table.strip("`").splitlines()
        assert header.split() == ["TAG", world.source, "tokyo", "beijing", "shanghai", "frankfurt"]
        by_tag = {row.split()[0]: row for row in rows}
        assert list(by_tag) == ["v0.8.0-rc.1", "v0.7.0", "v0.6.0", "v0.6.0-rc.1", "latest"]
        # no v0.5.0 (past registry_tags), no staging tag, no non-version tag
        hex8 = world.released.split(":")[1][:8]
        drift8 = world.drifted.split(":")[1][:8]
        cells = " ".join(by_tag["v0.7.0"].split())
        assert cells.endswith(f"ok {hex8} ok {hex8} DRIFT {drift8} no tag unreadable")
        assert "(latest in progress: ready)" in by_tag["v0.8.0-rc.1"]
        assert "MISSING" in by_tag["v0.6.0"] and "(in the registry, no record)" in by_tag["v0.6.0"]
        assert "unreadable" in by_tag["latest"]
        # Nothing here is on the release's way to the mirrors yet: no "lacks v0.8.0-rc.1".
        assert "lacks v0.8.0-rc.1" not in rendered

        # `/aibrix status runtime` is the same card.
        status = await _ask(bot, "status runtime", "versions, registries and mirrors")
        assert json.dumps(status.blocks).count("shanghai lacks v0.7.0") == 1

        # COMPONENT TAG: that tag's inspection as before, and every mirror's digest beside it.
        one = await _ask(bot, "inspect runtime v0.7.0", "on every registry and mirror")
        rendered = json.dumps(one.blocks)
        assert f"{lab.registry}/{world.namespace}/runtime:v0.7.0" in rendered
        assert "every required platform" in rendered or "linux/arm64" in rendered
        assert "shanghai lacks v0.7.0" in rendered
        assert "beijing holds" in rendered

        # A component that does not exist: the configured ones are listed.
        refused = await bot.slack.slash_command(
            "inspect gateway", user_id=REQUESTER, channel_id=CHANNEL
        )
        text = json.loads(refused.body)["text"]
        assert "runtime" in text and "gateway-plugins" in text


def test_cli_inspect_component_json(world: World, redis_url: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "AIBRIX_CONFIG": str(world.config_path)}
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "aibrix-bot"),
            "inspect",
            "runtime",
            "--json",
            "--redis-url",
            redis_url,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 3, done.stderr  # a registry cannot be read
    data = json.loads(done.stdout)
    assert data["component"] == "runtime"
    assert [r["name"] for r in data["registries"]] == [
        world.source,
        "tokyo",
        "beijing",
        "shanghai",
        "frankfurt",
    ]
    assert [r["readable"] for r in data["registries"]] == [True, True, True, True, False]
    tags = {t["tag"]: t for t in data["tags"]}
    assert list(tags) == ["v0.8.0-rc.1", "v0.7.0", "v0.6.0", "v0.6.0-rc.1", "latest"]
    v070 = tags["v0.7.0"]
    assert v070["role"] == "promoted" and v070["record"]["state"] == "promoted"
    assert v070["expected_digest"] == world.released and v070["expected_from"] == "release"
    cells = v070["registries"]
    assert cells[world.source] == {
        "status": "ok",
        "digest": world.released,
        "missing": [],
        "mismatched": [],
        "same_as_expected": True,
        "error": None,
    }
    assert cells["tokyo"]["same_as_expected"] is True
    assert cells["beijing"]["digest"] == world.drifted
    assert cells["beijing"]["same_as_expected"] is False
    assert cells["shanghai"]["status"] == "absent"
    assert cells["frankfurt"]["status"] == "unreadable" and cells["frankfurt"]["error"]
    assert tags["v0.6.0"]["record"] is None
    assert tags["v0.6.0"]["registries"][world.source]["missing"] == ["linux/amd64"]
    assert tags["v0.6.0-rc.1"]["registries"]["shanghai"]["status"] == "ok"
    expected = _expected_problems(world)
    assert len(data["problems"]) == len(expected)
    for problem, wanted in zip(data["problems"], expected, strict=True):
        assert problem.startswith(wanted), problem
    assert data["headline"].startswith(expected[0])

    # One tag: every registry's digest under it.
    one = subprocess.run(
        [str(Path(sys.executable).parent / "aibrix-bot"), "inspect", "runtime", "v0.7.0", "--json"],
        capture_output=True,
        text=True,
        env={k: v for k, v in env.items() if k != "REDIS_URL"},
        timeout=120,
    )
    single = json.loads(one.stdout)
    assert [t["tag"] for t in single["tags"]] == ["v0.7.0"]
    assert single["tags"][0]["expected_from"] == world.source  # no records without Redis


async def test_tag_list_of_a_real_registry(world: World, lab: Lab) -> None:
    ref = parse_reference(f"{lab.registry}/{world.namespace}/runtime:latest")
    async with RegistryClient() as client:
        found = await client.tags(ref)
    assert set(found) == {
        "latest",
        "v0.5.0",
        "v0.6.0",
        "v0.6.0-rc.1",
        "v0.7.0",
        "v0.7.0-amd64",
        "v0.8.0-rc.1",
    }


@contextlib.asynccontextmanager
async def _paging_registry(
    tags: list[str], next_origin: str | None = None
) -> AsyncIterator[tuple[str, list[str]]]:
    """A registry's tag list endpoint that pages as the distribution spec says (`n`,
    `last`, a `Link: <...>; rel="next"` header); distribution 2.8 in the lab returns one
    page whatever `n` is. `next_origin`: send the next page's link to another origin."""
    seen: list[str] = []

    async def tag_list(request: web.Request) -> web.Response:
        seen.append(request.path_qs)
        n = int(request.query.get("n", "1000"))
        last = request.query.get("last")
        start = tags.index(last) + 1 if last else 0
        page = tags[start : start + n]
        headers = {}
        if start + n < len(tags):
            target = f"/v2/ns/app/tags/list?n={n}&last={page[-1]}"
            headers["Link"] = f'<{(next_origin or "") + target}>; rel="next"'
        return web.json_response({"name": "ns/app", "tags": page}, headers=headers)

    app = web.Application()
    app.router.add_get("/v2/ns/app/tags/list", tag_list)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"127.0.0.1:{runner.addresses[0][1]}", seen
    finally:
        await runner.cleanup()


async def test_tag_list_follows_link_pages_on_its_own_origin_only() -> None:
    tags = [f"v0.{i}.0" for i in range(7)]
    async with _paging_registry(tags) as (host, seen):
        async with RegistryClient() as client:
            found = await client.tags(parse_reference(f"{host}/ns/app:x"), page_size=2)
        assert found == tags
        assert len(seen) == 4  # 7 tags, 2 a page
        assert seen[1] == "/v2/ns/app/tags/list?n=2&last=v0.1.0"
    async with _paging_registry(tags) as (elsewhere, visited):
        away = f"http://{elsewhere}"
        async with _paging_registry(tags, away) as (host, seen), RegistryClient() as client:
            found = await client.tags(parse_reference(f"{host}/ns/app:x"), page_size=2)
        assert found == tags[:2] and len(seen) == 1 and visited == []


async def test_demo_ends_with_inspect_runtime(
    world: World, lab: Lab, redis_url: str, key_prefix: str
) -> None:
    """The demo's last step, alone, against the releases this test made."""
    from demo.run import inspect_runtime

    async with running_bot(lab, redis_url, world.config_path, key_prefix, world.namespace) as bot:
        name, shown = await inspect_runtime(bot.slack, bot.standin, REQUESTER, CHANNEL, 30)
    assert shown, name
    channel = bot.standin.render_text(CHANNEL)
    assert "runtime: versions, registries and mirrors" in channel
    assert "shanghai lacks v0.7.0" in channel
