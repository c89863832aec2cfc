"""Running the real pipeline in tests: a config per test, workers as real processes,
the CLI as users run it, and waits on the release record in Redis."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from jobs.domain.config import Config
from jobs.domain.config_reader import load_config
from jobs.domain.release import Release, State
from jobs.store.connections import RedisSettings, connect
from tests.conftest import REPO, Lab
from tests.support.records import Records

BOT = str(REPO / ".venv" / "bin" / "aibrix-bot")
SAMPLE = REPO / "sample"
# The sample's current layout, vllm-mock aside (its context is development/app): one
# Dockerfile.python for metadata-service and runtime, built once when their build
# arguments agree.
SAMPLE_COMPONENTS = {
    "controller-manager": "build/container/Dockerfile",
    "gateway-plugins": "build/container/Dockerfile.gateway",
    "kvcache-watcher": "build/container/Dockerfile.kvcache",
    "metadata-service": "build/container/Dockerfile.python",
    "runtime": "build/container/Dockerfile.python",
}


def toml_config(
    lab: Lab,
    *,
    namespace: str,
    key_prefix: str,
    source: Path = SAMPLE,
    components: dict[str, str] | None = None,
    build_args: dict[str, dict[str, str]] | None = None,
    max_attempts: int = 2,
    lease_seconds: int = 4,
) -> str:
    lines = [
        f'repository = "{lab.registry}/{namespace}"',
        'platforms = ["linux/amd64", "linux/arm64"]',
        "[source]",
        f'path = "{source}"',
        "[approval]",
        'approvers = ["U0APPROVER1", "U0APPROVER2"]',
        "approvals_required = 1",
        "[permissions]",
        'channels = ["C0RELEASES"]',
        "[queue]",
        f"max_attempts = {max_attempts}",
        "backoff_base_seconds = 0.2",
        "backoff_cap_seconds = 1.0",
        f"lease_seconds = {lease_seconds}",
        f'key_prefix = "{key_prefix}"',
        "[mirrors]",
        f'lab-mirror = "{lab.mirror_registry}/{namespace}"',
    ]
    for name, dockerfile in (components or SAMPLE_COMPONENTS).items():
        lines += ["[[components]]", f'name = "{name}"', f'dockerfile = "{dockerfile}"']
        args = {"BASE_IMAGE": lab.base_image, **(build_args or {}).get(name, {})}
        lines.append("build_args = { " + ", ".join(f'{k} = "{v}"' for k, v in args.items()) + " }")
    return "\n".join(lines) + "\n"


@dataclass
class Setup:
    lab: Lab
    config_path: Path
    redis_url: str
    logs: Path
    workers: list[WorkerProcess] = field(default_factory=list)

    @property
    def config(self) -> Config:
        return load_config(self.config_path)

    def env(self) -> dict[str, str]:
        return {**os.environ, "AIBRIX_CONFIG": str(self.config_path), "REDIS_URL": self.redis_url}

    def start_worker(
        self,
        platform: str,
        worker_id: str | None = None,
        *,
        control: bool = True,
        extra: Sequence[str] = (),
    ) -> WorkerProcess:
        worker = WorkerProcess(
            self, platform, worker_id or f"w-{uuid.uuid4().hex[:6]}", control, tuple(extra)
        )
        worker.start()
        self.workers.append(worker)
        return worker

    def stop_all(self) -> None:
        for worker in self.workers:
            worker.stop()

    async def cli(self, *args: str, timeout: float = 300) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            BOT,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env(),
        )
        out, err = await asyncio.wait_for(process.communicate(), timeout)
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()

    async def records(self) -> Records:
        """A view of the run's Redis on a client of its own (close it: `Records.close`)."""
        redis = await connect(
            RedisSettings.from_dsn(self.redis_url, key_prefix=self.config.queue.key_prefix)
        )
        return Records.on(redis, self.config.queue.key_prefix)

    async def wait_for(
        self, version: str, states: Sequence[State], timeout: float = 240
    ) -> Release:
        records = await self.records()
        try:
            deadline = time.monotonic() + timeout
            while True:
                release = await records.load(version)
                if release is not None and release.state in states:
                    return release
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"{version} did not reach {states}: {release.state if release else None}; "
                        f"worker logs: {self.tail_logs()}"
                    )
                await asyncio.sleep(0.3)
        finally:
            await records.close()

    def tail_logs(self) -> str:
        return "\n".join(
            f"--- {w.worker_id}\n" + "\n".join(w.log.read_text().splitlines()[-15:])
            for w in self.workers
        )


@dataclass
class WorkerProcess:
    setup: Setup
    platform: str
    worker_id: str
    control: bool
    extra: tuple[str, ...] = ()  # more `aibrix-bot worker` flags
    process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.setup.logs / f"worker-{self.worker_id}.log"

    def start(self) -> None:
        args = [
            BOT,
            "worker",
            "--platform",
            self.platform,
            "--worker-id",
            self.worker_id,
            "--metrics-port",
            "0",
        ]
        if not self.control:
            args.append("--no-control")
        args.extend(self.extra)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(args, stdout=out, stderr=out, env=self.setup.env())

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def shared_build_project(tmp_path: Path) -> Path:
    """A source for shared-build tests: two Dockerfiles without RUN (nothing to emulate),
    from the lab's multi-arch base; `Dockerfile.shared` for components built once."""
    source = tmp_path / "shared-src"
    source.mkdir()
    (source / "hello.txt").write_text(f"hello {uuid.uuid4().hex}\n")
    (source / "Dockerfile.shared").write_text(
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY hello.txt /hello.txt\n"
    )
    (source / "Dockerfile.own").write_text(
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY hello.txt /own.txt\n"
    )
    return source
