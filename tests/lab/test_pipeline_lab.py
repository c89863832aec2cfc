"""The release pipeline end to end: real Redis, Docker engine, Buildx, QEMU, registry,
workers as real processes, releases asked for through the CLI."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.domain.platforms import parse_platform
from jobs.domain.release import BuildState, State
from jobs.domain.versions import parse_version
from tests.conftest import Lab
from tests.support.pipeline import BOT, Setup, toml_config


@pytest.fixture
def setup(
    lab: Lab, redis_url: str, docker_available: None, tmp_path: Path, key_prefix: str
) -> Iterator[Setup]:
    namespace = f"pipe-{uuid.uuid4().hex[:8]}"
    config = tmp_path / "aibrix.toml"
    config.write_text(toml_config(lab, namespace=namespace, key_prefix=key_prefix))
    logs = tmp_path / "logs"
    logs.mkdir()
    found = Setup(lab, config, redis_url, logs)
    yield found
    found.stop_all()


async def merge_claims(setup: Setup, version: str) -> Counter[str]:
    records = await setup.records()
    try:
        events = await records.events()
        return Counter(
            e.fields.get("component", "")
            for e in events
            if e.type == "merge_claimed" and e.version == version
        )
    finally:
        await records.close()


async def test_full_release_reaches_ready_and_every_tag_is_verified(setup: Setup) -> None:
    setup.start_worker("linux/amd64")
    setup.start_worker("linux/arm64")
    code, out, err = await setup.cli("release", "v0.3.0", "--timeout", "300")
    assert code == 0, out + err + setup.tail_logs()
    assert "v0.3.0: ready" in out
    release = await setup.wait_for("v0.3.0", [State.READY])
    config = setup.config
    refs = [config.release_reference(c, release.version) for c in release.components]
    inspect = subprocess.run([BOT, "inspect", "--json", *refs], capture_output=True, text=True)
    assert inspect.returncode == 0, inspect.stdout
    for report, component in zip(json.loads(inspect.stdout), release.components, strict=True):
        assert report["verdict"] == "ok"
        built = {str(p): release.build(component, p).digest for p in release.platforms}
        assert {p["platform"]: p["digest"] for p in report["platforms"]} == built
        assert all(p["config_platform"] == p["platform"] for p in report["platforms"])
        assert release.indexes[component].digest == report["digest"]
    assert set((await merge_claims(setup, "v0.3.0")).values()) == {1}
    # The release tag is written once, from digests; staging tags hold one platform each.
    # (runtime's build is metadata-service's, identical inputs: only that one pushes a
    # staging tag, and runtime's index holds the same per-platform digests.)
    assert release.built_digests("runtime") == release.built_digests("metadata-service")
    staging = config.staging_reference(
        "metadata-service", parse_version("v0.3.0"), parse_platform("linux/arm64")
    )
    single = subprocess.run(
        [BOT, "inspect", "--json", "--require", "linux/arm64", staging],
        capture_output=True,
        text=True,
    )
    assert json.loads(single.stdout)[0]["media_type"].endswith("manifest.v2+json")
    status_code, status_out, _ = await setup.cli("status", "v0.3.0")
    assert status_code == 0 and "ready" in status_out


async def test_arm64_failure_blocks_and_leaves_the_tag_untouched(setup: Setup, lab: Lab) -> None:
    setup.start_worker("linux/amd64")
    setup.start_worker("linux/arm64")
    code, out, err = await setup.cli(
        "release", "v0.4.0", "--component", "runtime", "--timeout", "300"
    )
    assert code == 0, out + err + setup.tail_logs()
    good = await setup.wait_for("v0.4.0", [State.READY])
    # Now the same tag is asked for again with runtime broken on arm64 (a new run).
    config = setup.config
    broken = toml_config(
        lab,
        namespace=config.repository.split("/", 1)[1],
        key_prefix=config.queue.key_prefix,
        build_args={"runtime": {"FAIL_ON_ARCH": "aarch64"}},
    )
    setup.stop_all()
    setup.config_path.write_text(broken)
    setup.start_worker("linux/amd64")
    setup.start_worker("linux/arm64")
    code, out, err = await setup.cli("release", "v0.4.1", "--timeout", "300")
    assert code == 1, out + err
    assert "runtime v0.4.1 failed to build for linux/arm64" in out
    assert "unsupported on aarch64" in out
    blocked = await setup.wait_for("v0.4.1", [State.BLOCKED])
    assert blocked.build("runtime", parse_platform("linux/arm64")).state is BuildState.FAILED
    assert "runtime" not in blocked.indexes
    assert set(blocked.indexes) == {
        "controller-manager",
        "gateway-plugins",
        "metadata-service",
        "kvcache-watcher",
    }
    image = setup.config.image("runtime")
    absent = subprocess.run([BOT, "inspect", f"{image}:v0.4.1"], capture_output=True, text=True)
    assert absent.returncode == 3, "the runtime release tag was never written"
    # The earlier release's tag is untouched, and still pulls on this amd64 host.
    inspect = subprocess.run(
        [BOT, "inspect", "--json", f"{image}:v0.4.0"], capture_output=True, text=True
    )
    assert json.loads(inspect.stdout)[0]["digest"] == good.indexes["runtime"].digest
    pull = subprocess.run(["docker", "pull", f"{image}:v0.4.0"], capture_output=True, text=True)
    assert pull.returncode == 0, pull.stderr
    # The dead-letter stream holds the failed build with its reason.
    records = await setup.records()
    try:
        dead = [d for d in await records.dead_letters() if d.job and str(d.job.version) == "v0.4.1"]
        assert [(d.job.component, str(d.job.platform)) for d in dead if d.job] == [
            ("runtime", "linux/arm64")
        ]
        assert "attempt 2 of 2" in dead[0].reason
    finally:
        await records.close()


async def test_duplicate_request_is_one_run(setup: Setup) -> None:
    first = await setup.cli("release", "v0.5.0", "--no-follow")
    second = await setup.cli("release", "v0.5.0", "--no-follow")
    assert first[0] == 0 and second[0] == 0
    assert "started run" in first[2]
    assert "already running" in second[2]
    records = await setup.records()
    try:
        assert len(await records.run_ids("v0.5.0")) == 1
        depth = await records.depth("linux/amd64")
        assert depth.total == 4  # metadata-service and runtime are one build
    finally:
        await records.close()


@pytest.mark.parametrize(
    "args",
    [
        ["v1;rm -rf /"],
        ["--output=type=local,dest=/"],
        ["$(id)"],
        ["v1.0.0\nv2.0.0"],
        ["v1.0.0-" + "a" * 300],
        ["v1.0.0", "--component", "nope"],
        ["v1.0.0", "--component", "--output=type=local"],
        ["v1.0.0", "--platform", "linux/s390x"],
        ["v1.0.0", "--platform", "linux/$(id)"],
        ["1.0.0"],
        [""],
    ],
)
async def test_malformed_requests_enqueue_nothing(setup: Setup, args: list[str]) -> None:
    code, out, err = await setup.cli("release", *args, "--no-follow")
    assert code == 2, out + err
    assert err.strip()
    records = await setup.records()
    try:
        keys = await records.all_keys()
        assert keys == []
    finally:
        await records.close()


async def test_worker_refuses_a_platform_its_builder_cannot_build(setup: Setup) -> None:
    code, _, err = await setup.cli(
        "worker", "--platform", "windows/amd64", "--metrics-port", "0", timeout=60
    )
    assert code == 2
    assert "cannot build windows/amd64" in err


def slow_project(tmp_path: Path, lab: Lab, seconds: int) -> Path:
    source = tmp_path / "slow-src"
    source.mkdir()
    (source / "Dockerfile").write_text(
        f"FROM {lab.base_image}\n"
        "ARG NONCE\n"
        "RUN echo start $NONCE\n"
        f"RUN sleep {seconds} && echo slept $NONCE > /slept\n"
        "RUN cat /slept\n"
    )
    return source


async def test_killed_worker_job_is_finished_by_another(
    lab: Lab, redis_url: str, docker_available: None, tmp_path: Path, key_prefix: str
) -> None:
    source = slow_project(tmp_path, lab, 6)
    nonce = uuid.uuid4().hex
    config = tmp_path / "slow.toml"
    config.write_text(
        toml_config(
            lab,
            namespace=f"kill-{nonce[:8]}",
            key_prefix=key_prefix,
            source=source,
            components={"slow-a": "Dockerfile", "slow-b": "Dockerfile"},
            build_args={"slow-a": {"NONCE": nonce + "a"}, "slow-b": {"NONCE": nonce + "b"}},
            lease_seconds=3,
        )
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    setup = Setup(lab, config, redis_url, logs)
    try:
        victim = setup.start_worker("linux/amd64", "victim")
        setup.start_worker("linux/arm64", "arm")
        code, out, err = await setup.cli("release", "v1.0.0", "--no-follow")
        assert code == 0, out + err
        records = await setup.records()
        try:
            # Wait until the victim is inside a build step, then kill it outright.
            await wait_build_running(setup, "v1.0.0", "linux/amd64")
            await asyncio.sleep(1.5)
            victim.kill()
            setup.start_worker("linux/amd64", "rescuer")
            done = await setup.wait_for("v1.0.0", [State.READY, State.BLOCKED], timeout=240)
            assert done.state is State.READY, done.state_reason
            claims = await merge_claims(setup, "v1.0.0")
            assert claims == Counter({"slow-a": 1, "slow-b": 1})
            rescuer_log = (logs / "worker-rescuer.log").read_text()
            assert "pushed" in rescuer_log
        finally:
            await records.close()
    finally:
        setup.stop_all()


async def test_two_workers_of_one_platform_race(setup: Setup) -> None:
    for name in ("amd-1", "amd-2"):
        setup.start_worker("linux/amd64", name)
    for name in ("arm-1", "arm-2"):
        setup.start_worker("linux/arm64", name)
    code, out, err = await setup.cli("release", "v0.6.0", "--timeout", "300")
    assert code == 0, out + err + setup.tail_logs()
    release = await setup.wait_for("v0.6.0", [State.READY])
    claims = await merge_claims(setup, "v0.6.0")
    assert claims == Counter({c: 1 for c in release.components})
    records = await setup.records()
    try:
        events = await records.events()
        pushed = Counter(
            (e.fields["component"], e.fields["platform"])
            for e in events
            if e.version == "v0.6.0"
            and e.type == "build"
            and e.fields.get("build_state") == "pushed"
        )
        assert set(pushed.values()) == {1} and len(pushed) == 10
    finally:
        await records.close()
    builds_per_worker: Counter[str] = Counter()
    for worker in setup.workers:
        builds_per_worker[worker.worker_id] = worker.log.read_text().count('"message": "pushed ')
    # Five components, but runtime and metadata-service share Dockerfile.python: four
    # builds per platform, each run by exactly one of the racing workers.
    assert sum(builds_per_worker.values()) == 8, builds_per_worker


async def test_release_survives_a_redis_restart(
    lab: Lab, docker_available: None, tmp_path: Path, key_prefix: str
) -> None:
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        pytest.fail("redis-server is not installed (scripts/lab up installs it)")
    port = free_port()
    data = tmp_path / "redis"
    data.mkdir()

    def start_redis() -> None:
        subprocess.run(
            [
                redis_server,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--daemonize",
                "yes",
                "--dir",
                str(data),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--pidfile",
                str(data / "pid"),
                "--logfile",
                str(data / "log"),
            ],
            check=True,
        )

    start_redis()
    url = f"redis://127.0.0.1:{port}/0"
    await wait_redis(url)
    source = slow_project(tmp_path, lab, 3)
    nonce = uuid.uuid4().hex
    config = tmp_path / "restart.toml"
    config.write_text(
        toml_config(
            lab,
            namespace=f"restart-{nonce[:8]}",
            key_prefix=key_prefix,
            source=source,
            components={"slow-a": "Dockerfile"},
            build_args={"slow-a": {"NONCE": nonce}},
            lease_seconds=5,
            max_attempts=4,
        )
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    setup = Setup(lab, config, url, logs)
    try:
        setup.start_worker("linux/amd64")
        setup.start_worker("linux/arm64")
        code, out, err = await setup.cli("release", "v2.0.0", "--no-follow")
        assert code == 0, out + err
        await wait_build_running(setup, "v2.0.0")
        subprocess.run(["redis-cli", "-p", str(port), "shutdown"], check=False)
        await asyncio.sleep(1)
        start_redis()
        await wait_redis(url)
        done = await setup.wait_for("v2.0.0", [State.READY, State.BLOCKED], timeout=240)
        assert done.state is State.READY, done.state_reason
        assert set((await merge_claims(setup, "v2.0.0")).values()) == {1}
    finally:
        setup.stop_all()
        subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"], check=False)


async def wait_build_running(setup: Setup, version: str, platform: str | None = None) -> None:
    """Until a worker reports a build step (so a build is really running)."""
    records = await setup.records()
    try:
        for _ in range(600):
            events = await records.events()
            if any(
                e.version == version
                and e.type == "progress"
                and e.fields.get("phase") == "building"
                and platform in (None, e.fields.get("platform"))
                for e in events
            ):
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"no build of {version} started: {setup.tail_logs()}")
    finally:
        await records.close()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_redis(url: str) -> None:
    from jobs.store.connections import RedisSettings, connect

    for _ in range(50):
        try:
            client = await connect(RedisSettings.from_dsn(url))
            await client.aclose()
            return
        except Exception:
            await asyncio.sleep(0.1)
    raise AssertionError(f"redis at {url} did not start")


async def test_cancel_stops_queued_and_running_builds(
    lab: Lab, redis_url: str, docker_available: None, tmp_path: Path, key_prefix: str
) -> None:
    source = slow_project(tmp_path, lab, 8)
    nonce = uuid.uuid4().hex
    config = tmp_path / "cancel.toml"
    config.write_text(
        toml_config(
            lab,
            namespace=f"cancel-{nonce[:8]}",
            key_prefix=key_prefix,
            source=source,
            components={"slow-a": "Dockerfile", "slow-b": "Dockerfile"},
            build_args={"slow-a": {"NONCE": nonce + "a"}, "slow-b": {"NONCE": nonce + "b"}},
        )
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    setup = Setup(lab, config, redis_url, logs)
    try:
        setup.start_worker("linux/amd64")
        code, out, err = await setup.cli("release", "v3.0.0", "--no-follow")
        assert code == 0, out + err
        await wait_build_running(setup, "v3.0.0", "linux/amd64")
        code, out, err = await setup.cli("cancel", "v3.0.0")
        assert code == 0, out + err
        assert "cancelled" in out
        records = await setup.records()
        try:
            for _ in range(200):
                release = await records.load("v3.0.0")
                assert release is not None and release.state is State.CANCELLED
                states = {r.state for r in release.builds.values()}
                if states == {BuildState.CANCELLED}:
                    break
                await asyncio.sleep(0.1)
            assert states == {BuildState.CANCELLED}, states
            assert release is not None and release.indexes == {}
            depth = await records.depth("linux/arm64")
            assert depth.total == 0, "queued arm64 builds were removed"
        finally:
            await records.close()
        # A cancelled release cannot be cancelled again; the answer says why.
        code, _, err = await setup.cli("cancel", "v3.0.0")
        assert code == 2 and "cannot be cancelled" in err
    finally:
        setup.stop_all()
