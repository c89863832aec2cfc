"""The plan before anything is queued (issue 13, items 1, 3, 4 and the inspection half
of 5): real git repositories laid out like AIBrix at two tags (tests/support/sample_repo.py),
the real lab Redis and registry, `aibrix-bot` as users run it, and the real Bolt app
against the Slack stand-in."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from jobs.domain.config_reader import load_config
from jobs.domain.release import State
from jobs.store.connections import RedisSettings, connect
from jobs.usecases.pipeline import Pipeline, plan_release
from jobs.usecases.plan import PlanRefused
from tests.conftest import REPO, Lab
from tests.support.bot import (
    APPROVER,
    CHANNEL,
    REQUESTER,
    STRANGER,
    answer,
    click,
    make_ready,
    running_bot,
)
from tests.support.oci_push import OciPusher, entry
from tests.support.records import Records
from tests.support.sample_repo import (
    CHART_APP_VERSION_LINE,
    NEW,
    OLD,
    SampleRelease,
    make_sample_repo,
    overlay_line,
)

BOT = str(REPO / ".venv" / "bin" / "aibrix-bot")
OVERLAY = "config/overlays/release/kustomization.yaml"
CHART = "dist/chart/Chart.yaml"
PLATFORMS = ("linux/amd64", "linux/arm64")


@pytest.fixture
def namespace() -> str:
    return f"plan-{uuid.uuid4().hex[:8]}"


def plan_config(
    lab: Lab,
    repo: Path,
    namespace: str,
    key_prefix: str,
    *,
    dependencies: tuple[str, ...] = (),
) -> str:
    """The built-in AIBrix layouts (`extends`), with the lab's registry, the sample
    repository and a preflight whose dependency images are on the lab registry."""
    deps = ", ".join(f'"{d}"' for d in dependencies)
    return "\n".join(
        [
            'extends = "aibrix"',
            f'repository = "{lab.registry}/{namespace}"',
            "[source]",
            f'git = "{repo}"',
            "[approval]",
            f'approvers = ["{APPROVER}"]',
            "[permissions]",
            f'channels = ["{CHANNEL}"]',
            f'release = ["{REQUESTER}"]',
            "[queue]",
            f'key_prefix = "{key_prefix}"',
            "[preflight]",
            f'kustomizations = ["{OVERLAY}"]',
            f'charts = ["{CHART}"]',
            f"dependencies = [{deps}]",
        ]
    )


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "aibrix.toml"
    path.write_text(text + "\n")
    return path


async def cli(config: Path, cache: Path, redis_url: str, *args: str) -> tuple[int, str, str]:
    env = {
        **os.environ,
        "AIBRIX_CONFIG": str(config),
        "AIBRIX_SOURCE_CACHE": str(cache),
        "REDIS_URL": redis_url,
    }
    process = await asyncio.create_subprocess_exec(
        BOT, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.fixture
async def redis_keys(redis_url: str, key_prefix: str) -> AsyncIterator[Any]:
    """The test's keys in the real Redis (deleted afterwards)."""
    redis = await connect(RedisSettings.from_dsn(redis_url, key_prefix=key_prefix))

    async def keys() -> list[str]:
        return sorted(str(k) for k in await redis.keys(f"{key_prefix}*"))

    try:
        yield keys
    finally:
        found = await redis.keys(f"{key_prefix}*")
        if found:
            await redis.delete(*found)
        await redis.aclose()


# ---- the plan of an old tag and a new tag ------------------------------------------------


async def test_the_plan_of_an_old_tag_and_a_new_tag(
    lab: Lab, redis_url: str, key_prefix: str, namespace: str, tmp_path: Path, redis_keys: Any
) -> None:
    repo = tmp_path / "aibrix"
    commits = make_sample_repo(repo, [OLD, NEW])
    config = write_config(tmp_path, plan_config(lab, repo, namespace, key_prefix))
    cache = tmp_path / "cache"
    image = f"{lab.registry}/{namespace}"

    code, out, err = await cli(
        config, cache, redis_url, "release", "v0.3.0-rc.2", "--dry-run", "--json"
    )
    assert code == 0, err
    old = json.loads(out)
    assert old["version"] == "v0.3.0-rc.2"
    assert old["revision"] == commits["v0.3.0-rc.2"]
    assert [(c["name"], c["dockerfile"], c["context"]) for c in old["components"]] == [
        ("controller-manager", "build/container/Dockerfile", "."),
        ("gateway-plugins", "build/container/Dockerfile.gateway", "."),
        ("metadata-service", "build/container/Dockerfile.metadata", "."),
        ("kvcache-watcher", "build/container/Dockerfile.kvcache", "."),
        ("runtime", "build/container/Dockerfile.runtime", "."),
    ]
    assert len({c["build"] for c in old["components"]}) == 5  # nothing shared before v0.5
    names = [c["name"] for c in old["components"]]
    assert old["publish"] == {image: [f"{image}/{n}:v0.3.0-rc.2" for n in names]}
    assert old["problems"] == [] and old["dependencies"] == []

    code, out, err = await cli(config, cache, redis_url, "release", "v0.7.0", "--dry-run", "--json")
    assert code == 0, err
    new = json.loads(out)
    assert new["revision"] == commits["v0.7.0"]
    assert [(c["name"], c["dockerfile"], c["context"]) for c in new["components"]] == [
        ("controller-manager", "build/container/Dockerfile", "."),
        ("gateway-plugins", "build/container/Dockerfile.gateway", "."),
        ("metadata-service", "build/container/Dockerfile.python", "."),
        ("kvcache-watcher", "build/container/Dockerfile.kvcache", "."),
        ("runtime", "build/container/Dockerfile.python", "."),
        ("vllm-mock", "development/app/Dockerfile", "development/app"),
    ]
    builds = {c["name"]: c["build"] for c in new["components"]}
    assert builds["metadata-service"] == builds["runtime"]  # one build, the plan shows it
    assert len(set(builds.values())) == 5
    assert f"{image}/vllm-mock:v0.7.0" in new["publish"][image]
    assert new["problems"] == []
    # A plan changes nothing: no key in Redis; the source came from one cached fetch.
    assert await redis_keys() == []
    assert len(list(cache.glob("*.git"))) == 1

    code, out, _ = await cli(config, cache, redis_url, "release", "v0.7.0", "--dry-run")
    assert code == 0
    assert "metadata-service, runtime are one build" in out


# ---- a missing Dockerfile refused before anything is queued ------------------------------


async def test_a_missing_dockerfile_is_refused_before_anything_is_queued(
    lab: Lab,
    redis_url: str,
    key_prefix: str,
    namespace: str,
    tmp_path: Path,
    redis_keys: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # v0.7.0 whose tree lost Dockerfile.python: the old defaults' failure, caught at request.
    broken = SampleRelease(
        "v0.7.0", "new", chart=True, remove=("build/container/Dockerfile.python",)
    )
    repo = tmp_path / "aibrix"
    commits = make_sample_repo(repo, [OLD, broken])
    config_path = write_config(tmp_path, plan_config(lab, repo, namespace, key_prefix))
    cache = tmp_path / "cache"
    monkeypatch.setenv("AIBRIX_SOURCE_CACHE", str(cache))
    config = load_config(config_path)
    redis = await connect(RedisSettings.from_dsn(redis_url, key_prefix=key_prefix))
    pipeline = Pipeline(redis, config)
    try:
        with pytest.raises(PlanRefused) as caught:
            await pipeline.request_release(plan_release(config, "v0.7.0"), "U0REQUESTER")
        message = str(caught.value)
        revision = commits["v0.7.0"][:12]
        for component in ("metadata-service", "runtime"):
            assert (
                f"{component}: the Dockerfile build/container/Dockerfile.python does not exist "
                f"in v0.7.0 at revision {revision}"
            ) in message
        assert message.startswith(f"v0.7.0 is not queued: the source at revision {revision}")
        # Nothing queued: every job stream is empty and there is no run.
        records = Records.on(redis, key_prefix)
        for platform in [*PLATFORMS, None]:  # every job stream and the control stream
            depth = await records.depth(platform)
            assert (depth.pending, depth.lag, depth.delayed) == (0, 0, 0)
        assert await pipeline.find_run("v0.7.0") is None
        assert await redis_keys() == []
    finally:
        await redis.aclose()

    # The CLI goes through the same use case: refused (2), and the dry run says why (1).
    code, _, err = await cli(config_path, cache, redis_url, "release", "v0.7.0", "--no-follow")
    assert code == 2
    assert "build/container/Dockerfile.python does not exist in v0.7.0" in err
    code, out, _ = await cli(
        config_path, cache, redis_url, "release", "v0.7.0", "--dry-run", "--json"
    )
    assert code == 1
    problems = json.loads(out)["problems"]
    assert [(p["kind"], p["file"], p["line"]) for p in problems] == [
        ("missing", "build/container/Dockerfile.python", 0),
        ("missing", "build/container/Dockerfile.python", 0),
    ]
    assert await redis_keys() == []


# ---- the preflight of the release manifests -------------------------------------------------


async def test_each_manifest_finding_names_the_file_the_line_and_what_it_should_say(
    lab: Lab,
    redis_url: str,
    key_prefix: str,
    namespace: str,
    tmp_path: Path,
    redis_keys: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # AIBrix #2028: a final release tagged before the "cut release" PR merged, and a
    # candidate whose overlay names a tag that was never published.
    final = SampleRelease(
        "v0.7.0", "new", chart=True, overlay_tags={"runtime": "v0.6.0"}, chart_app_version="0.6.0"
    )
    candidate = SampleRelease("v0.7.1-rc.1", "new", chart=True, overlay_tag="v0.7.1-rc.0")
    repo = tmp_path / "aibrix"
    make_sample_repo(repo, [final, candidate])
    config_path = write_config(tmp_path, plan_config(lab, repo, namespace, key_prefix))
    cache = tmp_path / "cache"

    code, out, _ = await cli(
        config_path, cache, redis_url, "release", "v0.7.0", "--dry-run", "--json"
    )
    assert code == 1
    assert json.loads(out)["problems"] == [
        {
            "kind": "manifest",
            "file": OVERLAY,
            "line": overlay_line(final, "runtime"),
            "message": "aibrix/runtime has newTag v0.6.0; a release of v0.7.0 must ship "
            "newTag v0.7.0",
        },
        {
            "kind": "manifest",
            "file": CHART,
            "line": CHART_APP_VERSION_LINE,
            "message": "appVersion is 0.6.0; a release of v0.7.0 must ship appVersion 0.7.0",
        },
    ]
    code, out, _ = await cli(
        config_path, cache, redis_url, "release", "v0.7.1-rc.1", "--dry-run", "--json"
    )
    assert code == 1
    found = json.loads(out)["problems"]
    assert len(found) == 4  # the four images of its own the overlay names
    assert found[0]["message"] == (
        "aibrix/gateway-plugins has newTag v0.7.1-rc.0; a release of v0.7.1-rc.1 must ship "
        "newTag v0.7.1-rc.1"
    )

    # The policy: the final release is refused with both findings, the candidate goes ahead.
    monkeypatch.setenv("AIBRIX_SOURCE_CACHE", str(cache))
    config = load_config(config_path)
    redis = await connect(RedisSettings.from_dsn(redis_url, key_prefix=key_prefix))
    pipeline = Pipeline(redis, config)
    try:
        with pytest.raises(PlanRefused) as caught:
            await pipeline.request_release(plan_release(config, "v0.7.0"), "U0REQUESTER")
        line = overlay_line(final, "runtime")
        assert f"{OVERLAY}:{line}: aibrix/runtime has newTag v0.6.0" in str(caught.value)
        assert f"{CHART}:{CHART_APP_VERSION_LINE}: appVersion is 0.6.0" in str(caught.value)
        assert await redis_keys() == []
    finally:
        await redis.aclose()
    code, _, err = await cli(config_path, cache, redis_url, "release", "v0.7.1-rc.1", "--no-follow")
    assert code == 0, err
    assert "v0.7.1-rc.1: started run" in err
    assert (
        f"v0.7.1-rc.1 is a prerelease, so it goes ahead, but its manifests disagree with it: "
        f"{OVERLAY}:{overlay_line(candidate, 'gateway-plugins')}: aibrix/gateway-plugins has "
        "newTag v0.7.1-rc.0"
    ) in err
    redis = await connect(RedisSettings.from_dsn(redis_url, key_prefix=key_prefix))
    try:
        depth = await Records.on(redis, key_prefix).depth("linux/amd64")
        # The candidate's six components are queued for amd64 as five builds:
        # metadata-service and runtime are one (identical build inputs).
        assert depth.lag == 5
    finally:
        await redis.aclose()


# ---- dependency images ------------------------------------------------------------------------


async def test_dependency_images_are_inspected_for_every_required_platform(
    lab: Lab, redis_url: str, key_prefix: str, namespace: str, tmp_path: Path
) -> None:
    pusher = OciPusher(lab.registry)
    async with aiohttp.ClientSession() as session:
        # kuberay-operator without arm64 (AIBrix #1094), busybox for both platforms
        amd = await pusher.image(session, f"{namespace}/kuberay-operator", os="linux", arch="amd64")
        await pusher.index(
            session, f"{namespace}/kuberay-operator", "v1.2.1", [entry(amd, "linux", "amd64")]
        )
        both = [
            await pusher.image(session, f"{namespace}/busybox", os="linux", arch=arch)
            for arch in ("amd64", "arm64")
        ]
        await pusher.index(
            session,
            f"{namespace}/busybox",
            "stable",
            [entry(both[0], "linux", "amd64"), entry(both[1], "linux", "arm64")],
        )
    kuberay = f"{lab.registry}/{namespace}/kuberay-operator"
    release = SampleRelease("v0.7.0", "new", chart=True, dependencies=[(kuberay, "v1.2.1")])
    repo = tmp_path / "aibrix"
    make_sample_repo(repo, [release])
    busybox = f"{lab.registry}/{namespace}/busybox:stable"
    absent = f"{lab.registry}/{namespace}/redis:7.4"
    config = write_config(
        tmp_path,
        plan_config(lab, repo, namespace, key_prefix, dependencies=(busybox, absent)),
    )
    code, out, err = await cli(
        config, tmp_path / "cache", redis_url, "release", "v0.7.0", "--dry-run", "--json"
    )
    assert code == 1, err  # the plan is not clean: a dependency lacks a platform
    plan = json.loads(out)
    assert plan["problems"] == []
    dependencies = {d["reference"]: d for d in plan["dependencies"]}
    assert dependencies[busybox] == {
        "reference": busybox,
        "verdict": "ok",
        "missing": [],
        "error": None,
    }
    assert dependencies[f"{kuberay}:v1.2.1"]["verdict"] == "missing"
    assert dependencies[f"{kuberay}:v1.2.1"]["missing"] == ["linux/arm64"]
    assert dependencies[absent]["verdict"] == "error"
    assert dependencies[absent]["error"]
    # the release's own images are never taken for dependencies
    assert not any("aibrix/" in reference for reference in dependencies)


# ---- exit codes ---------------------------------------------------------------------------


async def test_exit_codes_of_the_dry_run(
    lab: Lab, redis_url: str, key_prefix: str, namespace: str, tmp_path: Path
) -> None:
    repo = tmp_path / "aibrix"
    make_sample_repo(repo, [OLD, NEW])
    config = write_config(tmp_path, plan_config(lab, repo, namespace, key_prefix))
    cache = tmp_path / "cache"
    code, _, err = await cli(config, cache, redis_url, "release", "v0.7", "--dry-run")
    assert code == 2 and "v0.7" in err
    code, _, err = await cli(
        config, cache, redis_url, "release", "v0.3.0-rc.2", "--component", "vllm-mock", "--dry-run"
    )
    assert code == 2
    assert "vllm-mock is not part of v0.3.0-rc.2 (it is released for >=v0.7.0)" in err
    code, _, err = await cli(config, cache, redis_url, "release", "v9.9.9", "--dry-run", "--json")
    assert code == 3  # the source has no such tag: it cannot be read
    assert "no tag or branch 'v9.9.9'" in err
    code, _, err = await cli(config, cache, redis_url, "release", "v0.7.0", "--json")
    assert code == 2 and "--json goes with --dry-run" in err


# ---- /aibrix plan over the real Bolt app -------------------------------------------------------


async def test_slash_plan_shows_the_plan_and_slash_release_refuses_a_missing_path(
    lab: Lab,
    redis_url: str,
    key_prefix: str,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIBRIX_SOURCE_CACHE", str(tmp_path / "cache"))
    broken = SampleRelease("v0.7.1", "new", chart=True, remove=("development/app",))
    repo = tmp_path / "aibrix"
    candidate = SampleRelease("v0.7.2-rc.1", "new", chart=True, overlay_tag="v0.7.2-rc.0")
    commits = make_sample_repo(repo, [NEW, broken, candidate])
    config = write_config(tmp_path, plan_config(lab, repo, namespace, key_prefix))
    async with running_bot(lab, redis_url, config, key_prefix, namespace) as bot:
        try:
            # read-only: open to anyone in the accepted channel, not only to releasers
            response = await bot.slack.slash_command("plan v0.7.0", user_id=STRANGER)
            assert response.status == 200
            found = await bot.ephemeral(STRANGER, lambda e: "Plan of v0.7.0" in e.text)
            shown = json.dumps(found.blocks)
            assert f"Plan of v0.7.0 at {commits['v0.7.0'][:12]}" in shown
            assert "metadata-service, runtime are one build" in shown
            assert "development/app/Dockerfile" in shown
            assert await bot.keys() == []  # nothing written, not even a delivery claim

            await bot.slack.slash_command("plan v0.7.1", user_id=STRANGER)
            found = await bot.ephemeral(STRANGER, lambda e: "Plan of v0.7.1" in e.text)
            assert "1 problems" in found.text
            assert "vllm-mock: the context development/app does not exist in v0.7.1" in (
                json.dumps(found.blocks)
            )

            await bot.slack.slash_command("release v0.7.1", user_id=REQUESTER)
            refused = await bot.ephemeral(REQUESTER, lambda e: "is not queued" in e.text)
            assert "vllm-mock: the context development/app does not exist in v0.7.1" in (
                refused.text
            )
            assert await bot.keys() == []  # no run, no job, no kept delivery claim
            assert await bot.pipeline.find_run("v0.7.1") is None

            # a prerelease whose overlay disagrees goes ahead, and its answer says so
            await bot.slack.slash_command("release v0.7.2-rc.1", user_id=REQUESTER)
            started = await bot.ephemeral(REQUESTER, lambda e: "started run" in e.text)
            assert "v0.7.2-rc.1 is a prerelease, so it goes ahead" in started.text
            assert "aibrix/runtime has newTag v0.7.2-rc.0" in started.text

            # refused in the ack itself, before anything is read
            response = await bot.slack.slash_command("plan v0.7.0 --json", user_id=STRANGER)
            bad = answer(response.body)
            assert bad["response_type"] == "ephemeral"
            assert "`plan` takes a version and component names" in bad["text"]
        finally:
            keys = await bot.server.redis.keys(f"{key_prefix}*")
            if keys:
                await bot.server.redis.delete(*keys)


# ---- a dependency without arm64 blocks promotion ------------------------------------------


async def test_a_dependency_without_arm64_blocks_promotion_with_the_reason(
    lab: Lab,
    redis_url: str,
    key_prefix: str,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIBRIX_SOURCE_CACHE", str(tmp_path / "cache"))
    pusher = OciPusher(lab.registry)
    async with aiohttp.ClientSession() as session:
        amd = await pusher.image(session, f"{namespace}/kuberay-operator", os="linux", arch="amd64")
        await pusher.index(
            session, f"{namespace}/kuberay-operator", "v1.2.1", [entry(amd, "linux", "amd64")]
        )
    kuberay = f"{lab.registry}/{namespace}/kuberay-operator"
    release = SampleRelease("v0.7.0", "new", chart=True, dependencies=[(kuberay, "v1.2.1")])
    repo = tmp_path / "aibrix"
    commits = make_sample_repo(repo, [release])
    config = write_config(tmp_path, plan_config(lab, repo, namespace, key_prefix))
    async with running_bot(lab, redis_url, config, key_prefix, namespace) as bot:
        try:
            ready = await make_ready(bot, "v0.7.0", commits["v0.7.0"])
            answer_text = await click(bot, "approve_release", APPROVER, ready.status_ts)
            assert "approval of v0.7.0 refused: a dependency image lacks a required platform" in (
                answer_text
            )
            reason = (
                f"dependency {kuberay}:v1.2.1 is missing linux/arm64: the release deploys it, "
                "so it cannot be promoted until the image has every required platform"
            )
            assert reason in answer_text
            blocked = await bot.pipeline.find_run("v0.7.0")
            assert blocked is not None and blocked.state is State.BLOCKED
            assert blocked.state_reason == reason
            assert not blocked.approvals
        finally:
            keys = await bot.server.redis.keys(f"{key_prefix}*")
            if keys:
                await bot.server.redis.delete(*keys)
