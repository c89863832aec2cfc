"""Dogfooding: the bot's own image, released by the bot's own pipeline.

The repository's Dockerfile is built for linux/amd64 and linux/arm64 by two real workers
(arm64 under QEMU), merged from pinned digests, read back and gated like any release;
then each platform's image is pulled and run: `aibrix-bot --help`, the interpreter's
machine, the non-root user, and the docker CLI with Buildx that the worker needs."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.domain.platforms import parse_platform
from jobs.domain.release import State
from tests.conftest import REPO, Lab
from tests.support.pipeline import BOT, SAMPLE, Setup, toml_config

COMPONENT = "aibrix-release-bot"
VERSION = "v0.1.0"
# What the Dockerfile's context needs; .dockerignore narrows it further.
CONTEXT_FILES = ("pyproject.toml", "README.md", "constraints.txt", "Dockerfile", ".dockerignore")
CONTEXT_DIRS = ("bot", "handlers", "jobs")
MACHINES = {"linux/amd64": "x86_64", "linux/arm64": "aarch64"}


def bot_source(lab: Lab, root: Path) -> Path:
    """The bot's source as a release would check it out, plus the per-platform docker CLI
    and Buildx binaries the Dockerfile takes from the context (DOCKER_CLI_SOURCE=context)."""
    for name in CONTEXT_FILES:
        shutil.copy2(REPO / name, root / name)
    for name in CONTEXT_DIRS:
        shutil.copytree(
            REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
    for arch in ("amd64", "arm64"):
        found = lab.docker_cli_dir / f"linux-{arch}"
        if not (found / "docker").is_file() or not (found / "docker-buildx").is_file():
            pytest.fail(f"{found} lacks docker or docker-buildx: run scripts/lab up")
        shutil.copytree(found, root / "build" / "docker-cli" / f"linux-{arch}")
    return root


@pytest.fixture
def setup(
    lab: Lab, redis_url: str, docker_available: None, tmp_path: Path, key_prefix: str
) -> Iterator[Setup]:
    source = tmp_path / "src"
    source.mkdir()
    config = tmp_path / "aibrix.toml"
    config.write_text(
        toml_config(
            lab,
            namespace=f"dogfood-{uuid.uuid4().hex[:8]}",
            key_prefix=key_prefix,
            source=bot_source(lab, source),
            components={COMPONENT: "Dockerfile"},
            build_args={
                COMPONENT: {
                    "BASE_IMAGE": lab.python_image,
                    "DOCKER_CLI_SOURCE": "context",
                    # The lab's base has no apt: git and ssh are not installed into it.
                    "RUNTIME_PACKAGES": "",
                    "VERSION": VERSION.removeprefix("v"),
                }
            },
            lease_seconds=20,
        )
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    found = Setup(lab, config, redis_url, logs)
    yield found
    found.stop_all()


def run_in_image(reference: str, platform: str, *command: str, entrypoint: str = "") -> str:
    args = ["docker", "run", "--rm", "--pull", "always", "--platform", platform]
    if entrypoint:
        args += ["--entrypoint", entrypoint]
    result = subprocess.run(
        [*args, reference, *command], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"{platform} {command}: {result.stderr}"
    return result.stdout


class ImageWorkers:
    """Workers running inside the released image, one container per platform, on the
    host's network (Redis, registry) and the host's Docker engine through its socket."""

    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        self.names: list[str] = []

    def start(self, image: str, platform: str) -> None:
        name = f"aibrix-dogfood-{uuid.uuid4().hex[:8]}"
        socket = Path("/var/run/docker.sock")
        config = self.setup.config_path
        args = [
            "docker", "run", "-d", "--name", name, "--network", "host",
            "--platform", platform, "--group-add", str(socket.stat().st_gid),
            "-v", f"{socket}:{socket}", "-v", f"{config}:{config}:ro",
            "-v", f"{SAMPLE}:{SAMPLE}:ro",
            "-e", f"AIBRIX_CONFIG={config}", "-e", f"REDIS_URL={self.setup.redis_url}",
            image, "worker", "--platform", platform, "--worker-id", name, "--metrics-port", "0",
        ]  # fmt: skip
        result = subprocess.run(args, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        self.names.append(name)

    def wait_started(self, seconds: float = 300) -> None:
        """Until each worker logs that it started (about 15 s for arm64 under QEMU), so a
        worker stuck at start fails here with its own log, not as a release that waits."""
        deadline = time.monotonic() + seconds
        for name in self.names:
            while not any(
                line.get("message", "").startswith(f"worker {name} started for")
                for line in self.log_lines(name)
            ):
                assert time.monotonic() < deadline, f"{name} did not start\n{self.logs()}"
                time.sleep(0.5)

    def log_lines(self, name: str) -> list[dict[str, str]]:
        out = subprocess.run(["docker", "logs", name], capture_output=True, text=True)
        lines = (out.stdout + out.stderr).splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def logs(self) -> str:
        """Each container's state and the tail of its output, JSON or not (a crash at
        start prints a traceback, not a log line)."""
        parts = []
        for name in self.names:
            state = subprocess.run(
                ["docker", "inspect", "-f", "{{.State.Status}} exit={{.State.ExitCode}}", name],
                capture_output=True,
                text=True,
            )
            out = subprocess.run(
                ["docker", "logs", "--tail", "30", name], capture_output=True, text=True
            )
            parts.append(f"--- {name} ({state.stdout.strip()})\n{out.stdout}{out.stderr}")
        return "\n".join(parts)

    def remove(self) -> None:
        if self.names:
            subprocess.run(["docker", "rm", "-f", *self.names], capture_output=True)


@pytest.fixture
def inner(
    lab: Lab, setup: Setup, redis_url: str, tmp_path: Path, key_prefix: str
) -> Iterator[tuple[Setup, ImageWorkers]]:
    """A sample project released by workers that run in the bot's own image."""
    config = tmp_path / "inner.toml"
    config.write_text(
        toml_config(
            lab,
            namespace=f"dogfood-inner-{uuid.uuid4().hex[:8]}",
            key_prefix=f"{key_prefix}:inner",
            components={"controller-manager": "build/container/Dockerfile"},
            lease_seconds=20,
        )
    )
    found = Setup(lab, config, redis_url, setup.logs)
    workers = ImageWorkers(found)
    yield found, workers
    workers.remove()


async def test_the_bot_image_is_released_by_its_own_pipeline(
    setup: Setup, inner: tuple[Setup, ImageWorkers]
) -> None:
    setup.start_worker("linux/amd64")
    setup.start_worker("linux/arm64")
    code, out, err = await setup.cli("release", VERSION, "--timeout", "1500", timeout=1600)
    assert code == 0, out + err + setup.tail_logs()
    assert f"{VERSION}: ready" in out
    release = await setup.wait_for(VERSION, [State.READY])
    reference = setup.config.release_reference(COMPONENT, release.version)

    # The project's own gate, as CI would run it: exit 0 and both platforms really there.
    gate = subprocess.run([BOT, "inspect", "--json", reference], capture_output=True, text=True)
    assert gate.returncode == 0, gate.stdout + gate.stderr
    (report,) = json.loads(gate.stdout)
    assert report["verdict"] == "ok"
    found = {p["platform"]: p for p in report["platforms"]}
    assert set(found) == set(MACHINES)
    for platform, entry in found.items():
        assert entry["config_platform"] == platform
        assert entry["digest"] == release.build(COMPONENT, parse_platform(platform)).digest

    # Each platform's image by its own digest in the index (Docker 20.10's image store
    # keeps one platform per index digest).
    repository = reference.rsplit(":", 1)[0]
    for platform, machine in MACHINES.items():
        pinned = f"{repository}@{found[platform]['digest']}"
        assert "usage: aibrix-bot" in run_in_image(pinned, platform, "--help")
        assert "usage: aibrix-bot worker" in run_in_image(pinned, platform, "worker", "--help")
        facts = run_in_image(
            pinned,
            platform,
            "-c",
            "import os, platform; print(platform.machine(), os.getuid(), os.getgid())",
            entrypoint="python3",
        )
        assert facts.split() == [machine, "10001", "10001"]
        assert "Docker version" in run_in_image(pinned, platform, "--version", entrypoint="docker")
        assert "buildx" in run_in_image(pinned, platform, "buildx", "version", entrypoint="docker")

    # And the image does its job: a worker per platform, each in that platform's image
    # (arm64 under QEMU), builds a release of the sample project that passes the gate.
    sample, workers = inner
    for platform in MACHINES:
        workers.start(f"{repository}@{found[platform]['digest']}", platform)
    workers.wait_started()
    code, out, err = await sample.cli("release", "v0.2.0", "--timeout", "600", timeout=700)
    assert code == 0, out + err + workers.logs()
    assert "v0.2.0: ready" in out
    built = await sample.wait_for("v0.2.0", [State.READY])
    assert {str(p) for _, p in built.builds} == set(MACHINES)
    for name, platform in zip(workers.names, MACHINES, strict=True):
        pushed = [
            line
            for line in workers.log_lines(name)
            if line.get("message", "").startswith("pushed ") and line.get("release") == "v0.2.0"
        ]
        assert pushed and {line.get("platform") for line in pushed} == {platform}, workers.logs()


def venv_tree(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every path under the image's /opt/aibrix with its mode, mtime and content digest."""
    venv = root / "opt" / "aibrix"
    tree = {}
    for path in sorted(venv.rglob("*")):
        info = path.lstat()
        content = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        if path.is_symlink():
            content = str(path.readlink())
        tree[str(path.relative_to(venv))] = (info.st_mode, int(info.st_mtime), content)
    return tree


def test_two_builds_from_scratch_give_the_same_venv(
    lab: Lab, docker_available: None, tmp_path: Path
) -> None:
    (tmp_path / "src").mkdir()
    source = bot_source(lab, tmp_path / "src")
    epoch = 1_700_000_000
    trees = []
    for run in ("first", "second"):
        out = tmp_path / run
        build = subprocess.run(
            [
                "docker", "buildx", "build", "--no-cache", "--platform", "linux/amd64",
                "--build-arg", f"BASE_IMAGE={lab.python_image}",
                "--build-arg", "DOCKER_CLI_SOURCE=context",
                "--build-arg", "RUNTIME_PACKAGES=",
                "--build-arg", f"SOURCE_DATE_EPOCH={epoch}",
                "--output", f"type=local,dest={out}", str(source),
            ],
            capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert build.returncode == 0, build.stderr[-3000:]
        trees.append(venv_tree(out))
    first, second = trees
    assert len(first) > 1000  # the whole venv, not an empty directory
    assert first == second
    assert {mtime for _, mtime, _ in first.values()} == {epoch}
