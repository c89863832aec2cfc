"""Exactly once under Redis faults (issue 16 items 1, 2 and 7), against a Redis of this
test's own (AOF on, stopped and restarted with its data), the lab registry, Docker and
Buildx, and workers as real processes. The build is one slow `RUN sleep` on the lab base
image for the native platform, so a fault can land in the middle of it.

Each test prints its figures (recovery time after Redis is back, builds pushed), the
numbers the issue asks for; no assertion is about time.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from jobs.domain.platforms import parse_platform
from jobs.domain.release import BuildState, Release, State
from jobs.domain.versions import parse_version
from jobs.store.keys import CONSUMER_GROUP, Keys
from tests.conftest import Lab
from tests.support.pipeline import BOT, Setup, toml_config

PORTS = range(6540, 6546)
AMD64 = parse_platform("linux/amd64")


def _free_port() -> int:
    for port in PORTS:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                return port
    pytest.skip("no free port in 6540-6545 for this test's Redis")


@dataclass
class OwnRedis:
    """A redis-server this test may stop and start; its data survives (AOF, fsync always)."""

    directory: Path
    port: int = field(default_factory=_free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while (
            subprocess.run(
                ["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True
            ).stdout.strip()
            != "PONG"
        ):
            assert time.monotonic() < deadline, "own redis-server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        """Shut down (AOF is flushed): clients see connection refused until `start`."""
        if self.process is None:
            return
        subprocess.run(["redis-cli", "-p", str(self.port), "shutdown"], capture_output=True)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


@dataclass
class Rig:
    setup: Setup
    redis: OwnRedis
    source: Path
    tmp: Path
    procs: list[tuple[str, subprocess.Popen[bytes], Path]] = field(default_factory=list)

    def worker(self, name: str, state_dir: Path | None = None) -> subprocess.Popen[bytes]:
        log = self.setup.logs / f"worker-{name}.log"
        args = [BOT, "worker", "--platform", "linux/amd64", "--worker-id", name]
        args += ["--metrics-port", "0"]
        if state_dir is not None:
            args += ["--state-dir", str(state_dir)]
        with log.open("ab") as out:
            process = subprocess.Popen(args, stdout=out, stderr=out, env=self.setup.env())
        self.procs.append((name, process, log))
        return process

    def stop_workers(self) -> None:
        for _, process, _ in self.procs:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()

    def messages(self) -> list[tuple[str, str]]:
        """(worker, message) of every JSON log line of every worker."""
        found: list[tuple[str, str]] = []
        for name, _, log in self.procs:
            for line in log.read_text(errors="replace").splitlines():
                try:
                    found.append((name, str(json.loads(line)["message"])))
                except (ValueError, KeyError, TypeError):
                    continue
        return found

    def pushes(self) -> int:
        return sum(1 for _, text in self.messages() if text.startswith("pushed "))

    def logs(self) -> str:
        return "\n".join(
            f"--- {name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-25:])
            for name, _, log in self.procs
        )

    async def client(self) -> aioredis.Redis:
        return aioredis.Redis.from_url(self.redis.url, decode_responses=True)

    async def wait_until(self, what: str, check: object, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert callable(check)
            if await check():
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}\n{self.logs()}")
            await asyncio.sleep(0.2)

    async def build_state(self, version: str) -> BuildState | None:
        try:
            records = await self.setup.records()
        except Exception:
            return None
        try:
            release = await records.load(version)
        finally:
            await records.close()
        if release is None:
            return None
        record = release.builds.get(("slow", AMD64))
        return None if record is None else record.state

    async def build_step(self, version: str, step: int) -> bool:
        """Whether the slow build has reached step `step` (its progress event)."""
        records = await self.setup.records()
        try:
            events = await records.events()
        finally:
            await records.close()
        return any(e.version == version and e.fields.get("step") == str(step) for e in events)


def slow_source(directory: Path, sleep_s: int, fail: bool) -> Path:
    """A source tree whose one image takes `sleep_s` in a single silent RUN step (step
    3 of 3; a nonce keeps BuildKit's cache from skipping it), failing at its end if asked."""
    directory.mkdir()
    end = "false" if fail else "date > /built"
    (directory / "Dockerfile").write_text(
        "ARG BASE_IMAGE\n"
        "FROM ${BASE_IMAGE}\n"
        f"RUN echo {uuid.uuid4().hex} > /nonce\n"
        f"RUN sleep {sleep_s} && {end}\n"
    )
    return directory


@pytest.fixture
def rig_factory(
    lab: Lab, docker_available: None, tmp_path: Path, key_prefix: str
) -> Iterator[object]:
    made: list[Rig] = []

    def make(*, sleep_s: int, lease_s: int, queue_extra: str = "", fail: bool = False) -> Rig:
        data = tmp_path / "redis"
        data.mkdir()
        own = OwnRedis(data)
        own.start()
        source = slow_source(tmp_path / "src", sleep_s, fail)
        text = toml_config(
            lab,
            namespace=f"lease-{uuid.uuid4().hex[:8]}",
            key_prefix=key_prefix,
            source=source,
            components={"slow": "Dockerfile"},
            lease_seconds=lease_s,
        )
        text = text.replace(
            'platforms = ["linux/amd64", "linux/arm64"]', 'platforms = ["linux/amd64"]'
        ).replace("[queue]\n", "[queue]\n" + queue_extra)
        config = tmp_path / "aibrix.toml"
        config.write_text(text)
        logs = tmp_path / "logs"
        logs.mkdir()
        rig = Rig(Setup(lab, config, own.url, logs), own, source, tmp_path)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.stop_workers()
        rig.redis.stop()


async def release(rig: Rig, version: str) -> None:
    code, out, err = await rig.setup.cli("release", version, "--no-follow")
    assert code == 0, out + err


async def recorded(rig: Rig, version: str) -> Release:
    records = await rig.setup.records()
    try:
        return await records.run(version)
    finally:
        await records.close()


def staging_digest(rig: Rig, version: str) -> str:
    ref = rig.setup.config.staging_reference("slow", parse_version(version), AMD64)
    out = subprocess.run(
        [BOT, "inspect", "--json", "--require", "linux/amd64", ref],
        capture_output=True,
        text=True,
        env=rig.setup.env(),
    )
    return str(json.loads(out.stdout)[0]["digest"])


async def test_a_redis_blip_shorter_than_the_lease_gives_one_build(rig_factory: object) -> None:
    """Item 1: Redis down (8 s) longer than a renewal interval (a third of the 20 s lease)
    but shorter than the lease, during a 32 s build: the lease is kept, one build is
    pushed, not two. (A lease survives an outage shorter than the lease less one renewal
    interval and the margin to stop a build: here 20 - 6.7 - 3.3 = 10 s.)"""
    assert callable(rig_factory)
    rig: Rig = rig_factory(sleep_s=32, lease_s=20)
    rig.worker("blip-a")
    rig.worker("blip-b")
    await release(rig, "v1.0.0")
    await rig.wait_until("the slow step", lambda: rig.build_step("v1.0.0", 3))
    await asyncio.sleep(1)
    rig.redis.stop()
    await asyncio.sleep(8)  # the outage: longer than one renewal interval
    rig.redis.start()
    back = time.monotonic()
    await rig.setup.wait_for("v1.0.0", [State.READY], timeout=180)
    print(f"\n[blip 8 s] ready {time.monotonic() - back:.1f} s after Redis was back;")
    print(f"[blip 8 s] builds pushed: {rig.pushes()}")
    assert rig.pushes() == 1, rig.logs()
    failures = [m for _, m in rig.messages() if m.startswith("renewing the lease")]
    assert failures, "every failed renewal is logged"
    release_record = await recorded(rig, "v1.0.0")
    assert release_record.build("slow", AMD64).digest == staging_digest(rig, "v1.0.0")


async def test_an_outage_longer_than_the_lease_stops_the_build_and_records_one(
    rig_factory: object,
) -> None:
    """Item 1: Redis down (10 s) longer than the lease (6 s): the build stops before a
    reclaim; after Redis is back exactly one build is pushed and its digest recorded."""
    assert callable(rig_factory)
    rig: Rig = rig_factory(sleep_s=20, lease_s=6)
    rig.worker("long-a", rig.tmp / "state-a")
    rig.worker("long-b", rig.tmp / "state-b")
    await release(rig, "v1.1.0")
    await rig.wait_until("the slow step", lambda: rig.build_step("v1.1.0", 3))
    await asyncio.sleep(1)
    assert _processes_with(str(rig.tmp / "state-")), "the build runs (its processes are seen)"
    rig.redis.stop()
    outage_ends = time.monotonic() + 10
    gave_up: list[str] = []
    build_gone = False
    while time.monotonic() < outage_ends:
        gave_up = [w for w, m in rig.messages() if "could not be renewed" in m]
        # The stopped build's docker/buildx processes are gone, while Redis is still away.
        build_gone = bool(gave_up) and not _processes_with(str(rig.tmp / "state-"))
        await asyncio.sleep(0.2)
        if build_gone:
            break
    await asyncio.sleep(max(0.0, outage_ends - time.monotonic()))
    rig.redis.start()
    back = time.monotonic()
    await rig.setup.wait_for("v1.1.0", [State.READY], timeout=240)
    print(f"\n[outage 10 s > lease 6 s] ready {time.monotonic() - back:.1f} s after Redis was back")
    print(f"[outage 10 s > lease 6 s] builds pushed: {rig.pushes()}")
    assert gave_up, "the holder gave its lease up while Redis was away\n" + rig.logs()
    assert build_gone, "its build processes were stopped before the lease ran out"
    assert rig.pushes() == 1, rig.logs()
    release_record = await recorded(rig, "v1.1.0")
    assert release_record.build("slow", AMD64).digest == staging_digest(rig, "v1.1.0")


async def test_a_result_pushed_during_an_outage_is_recorded_not_rebuilt(
    rig_factory: object,
) -> None:
    """Item 2: Redis goes away during the last step and stays away past the push and the
    record's retries; the worker keeps the digest (spool) and records it when Redis is
    back: one push, no rebuild."""
    assert callable(rig_factory)
    rig: Rig = rig_factory(sleep_s=5, lease_s=30)
    rig.worker("spool-a")
    await release(rig, "v1.2.0")
    await rig.wait_until("the slow step", lambda: rig.build_step("v1.2.0", 3))
    rig.redis.stop()
    await rig.wait_until("the push", lambda: _true(rig.pushes() >= 1), timeout=60)
    await rig.wait_until("the spool", lambda: _true(_spooled(rig)), timeout=60)
    rig.redis.start()
    back = time.monotonic()
    await rig.setup.wait_for("v1.2.0", [State.READY], timeout=180)
    print(f"\n[outage push->record] ready {time.monotonic() - back:.1f} s after Redis was back")
    print(f"[outage push->record] builds pushed: {rig.pushes()}")
    assert rig.pushes() == 1, rig.logs()
    release_record = await recorded(rig, "v1.2.0")
    assert release_record.build("slow", AMD64).digest == staging_digest(rig, "v1.2.0")


async def test_a_spooled_result_is_replayed_by_the_next_worker_at_start(
    rig_factory: object,
) -> None:
    """Item 2: the worker that spooled the result is killed; Redis comes back; a new
    worker on the same state dir records the spooled digest at start: one push."""
    assert callable(rig_factory)
    rig: Rig = rig_factory(sleep_s=5, lease_s=12, queue_extra="renew_seconds = 1\n")
    state = rig.tmp / "state"
    first = rig.worker("replay-a", state)
    await release(rig, "v1.3.0")
    await rig.wait_until("the slow step", lambda: rig.build_step("v1.3.0", 3))
    rig.redis.stop()
    await rig.wait_until(
        "the spool",
        lambda: _true(_spooled(rig)),
        timeout=90,
    )
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert list((state / "spool").glob("*.json")), "the result is in the spool file"
    rig.redis.start()
    back = time.monotonic()
    rig.worker("replay-b", state)
    await rig.setup.wait_for("v1.3.0", [State.READY], timeout=180)
    print(f"\n[spool replay] ready {time.monotonic() - back:.1f} s after Redis was back")
    print(f"[spool replay] builds pushed: {rig.pushes()}")
    assert rig.pushes() == 1, rig.logs()
    assert not list((state / "spool").glob("*.json"))
    release_record = await recorded(rig, "v1.3.0")
    assert release_record.build("slow", AMD64).digest == staging_digest(rig, "v1.3.0")


async def test_a_reclaim_records_the_image_already_at_the_staging_tag(
    rig_factory: object,
) -> None:
    """Item 2: a worker killed between push and record (its spool lost with it): the
    worker that reclaims the job finds its image at the staging tag (the idempotency
    key in the config's labels) and records it without building: one push."""
    assert callable(rig_factory)
    rig: Rig = rig_factory(sleep_s=5, lease_s=12, queue_extra="renew_seconds = 1\n")
    state = rig.tmp / "state"
    first = rig.worker("reclaim-a", state)
    await release(rig, "v1.4.0")
    await rig.wait_until("the slow step", lambda: rig.build_step("v1.4.0", 3))
    rig.redis.stop()
    await rig.wait_until(
        "the spool",
        lambda: _true(_spooled(rig)),
        timeout=90,
    )
    first.send_signal(signal.SIGKILL)
    first.wait()
    shutil.rmtree(state / "spool")  # the result survives only in the registry
    rig.redis.start()
    back = time.monotonic()
    rig.worker("reclaim-b")
    await rig.setup.wait_for("v1.4.0", [State.READY], timeout=180)
    print(f"\n[reclaim after kill] ready {time.monotonic() - back:.1f} s after Redis was back")
    print(f"[reclaim after kill] builds pushed: {rig.pushes()}")
    assert rig.pushes() == 1, rig.logs()
    assert any("recorded, not rebuilt" in m for w, m in rig.messages() if w == "reclaim-b")


async def test_no_metadata_dirs_or_dead_consumers_are_left(rig_factory: object) -> None:
    """Item 7: a worker killed mid-build, then every attempt of the build failing: no
    metadata directory is left in the state dir, and the dead worker's consumers leave
    the groups."""
    assert callable(rig_factory)
    rig: Rig = rig_factory(
        sleep_s=6, lease_s=4, fail=True, queue_extra="consumer_idle_seconds = 2\n"
    )
    state = rig.tmp / "state"
    doomed = rig.worker("leak-a", state)
    await release(rig, "v1.5.0")
    await rig.wait_until("the slow step", lambda: rig.build_step("v1.5.0", 3))
    assert list(state.glob("aibrix-meta-*")), "the build's metadata dir exists while it runs"
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    rig.worker("leak-b", state)
    keys = Keys(rig.setup.config.queue.key_prefix)
    streams = (keys.job_stream("linux/amd64"), keys.job_stream(None))
    redis = await rig.client()
    try:

        async def dead_consumers() -> list[str]:
            names: list[str] = []
            for key in streams:
                for info in await redis.xinfo_consumers(key, CONSUMER_GROUP):
                    if str(info["name"]).startswith("leak-a:"):
                        names.append(str(info["name"]))
            return names

        await rig.wait_until(
            "every attempt to fail", lambda: _state_is(rig, "v1.5.0", {State.BLOCKED, State.FAILED})
        )
        await rig.wait_until("dead consumers removed", lambda: _empty(dead_consumers()))
    finally:
        await redis.aclose()
    failed = sum(1 for _, m in rig.messages() if m.startswith("attempt ") and "failed" in m)
    left = sorted(p.name for p in state.glob("aibrix-meta-*"))
    print(f"\n[leaks] failed attempts: {failed}; metadata dirs left: {len(left)}")
    assert failed >= 1, rig.logs()
    assert left == []


def _processes_with(marker: str) -> list[int]:
    """Build processes (docker CLI, buildx) whose metadata path lies under `marker`."""
    needle = (marker + "").encode()
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"buildx" in cmdline and needle in cmdline and b"metadata" in cmdline:
            found.append(int(entry.name))
    return found


def _spooled(rig: Rig) -> bool:
    return any("recorded when Redis is back" in m for _, m in rig.messages())


async def _true(value: bool) -> bool:
    return value


async def _empty(names: object) -> bool:
    assert asyncio.iscoroutine(names)
    return not await names


async def _state_is(rig: Rig, version: str, states: set[State]) -> bool:
    records = await rig.setup.records()
    try:
        release = await records.load(version)
    finally:
        await records.close()
    return release is not None and release.state in states
