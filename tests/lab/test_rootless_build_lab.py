"""Builds without root (issue 14 item 1): the lab's rootless Docker daemon really is
rootless, and a release built by workers pointed at it (DOCKER_HOST) ends `ready`.

`scripts/lab up` starts the daemon under RootlessKit as a non-root user and names its
socket in lab.env (AIBRIX_LAB_ROOTLESS_DOCKER_HOST). Without it these tests skip with the
reason, and fail in CI."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from python_on_whales import DockerClient, DockerException

from jobs.domain.platforms import parse_platform
from jobs.domain.release import State
from jobs.domain.versions import parse_version
from jobs.tools.build import BuilderError, check_builder
from tests.conftest import Lab, service_missing
from tests.support.pipeline import BOT, SAMPLE_COMPONENTS, Setup, toml_config

ENV_KEY = "AIBRIX_LAB_ROOTLESS_DOCKER_HOST"
HINT = "scripts/lab up starts it as the user aibrix-builder; that needs root or sudo once"


def read_lab_env(directory: Path) -> dict[str, str]:
    values = {}
    for line in (directory / "lab.env").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    return values


@pytest.fixture(scope="module")
def rootless_host(lab: Lab, docker_available: None) -> str:
    """The rootless daemon's DOCKER_HOST, once it answers."""
    host = read_lab_env(lab.dir).get(ENV_KEY, "")
    if not host:
        service_missing(f"the lab has no rootless Docker daemon: lab.env has no {ENV_KEY}", HINT)
    try:
        DockerClient(host=host).info()
    except DockerException as error:
        service_missing(
            f"the rootless Docker daemon at {host} does not answer: {error.stderr or error}",
            "scripts/lab rootless starts it; only root and its user may use the socket",
        )
    return host


def socket_peer(host: str) -> tuple[int, int]:
    """(pid, uid) of the process serving the daemon's socket, as this machine sees them:
    SO_PEERCRED translates the ids out of the daemon's user namespace."""
    path = host.removeprefix("unix://")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(path)
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", creds)
    return pid, uid


def process_uids(pid: int) -> list[int]:
    """Real, effective, saved and filesystem uids of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return [int(field) for field in line.split()[1:]]
    raise AssertionError(f"/proc/{pid}/status has no Uid line")


def test_the_rootless_daemon_is_rootless(rootless_host: str) -> None:
    info = DockerClient(host=rootless_host).info()
    assert any("name=rootless" in option for option in info.security_options or []), (
        info.security_options
    )
    pid, uid = socket_peer(rootless_host)
    assert uid != 0
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "dockerd"
    assert 0 not in process_uids(pid)
    # The root daemon, for contrast: the check above tells the two apart.
    assert not any(
        "name=rootless" in option for option in DockerClient().info().security_options or []
    )


def test_build_steps_cannot_reach_the_hosts_loopback(
    rootless_host: str, lab: Lab, tmp_path: Path
) -> None:
    """The daemon reaches the host's loopback (its registries) through slirp4netns's
    10.0.2.2; its build steps must not: the lab's Redis listens there."""
    redis_port = lab.redis_url.removeprefix("redis://").split("/")[0].rpartition(":")[2]
    (tmp_path / "Dockerfile").write_text(
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"
        f"RUN printf 'PING\\r\\n' | nc -w 10 10.0.2.2 {redis_port}; echo probe-done\n"
    )
    lines = DockerClient(host=rootless_host).buildx.build(
        tmp_path,
        build_args={"BASE_IMAGE": lab.base_image},
        cache=False,
        progress="plain",
        stream_logs=True,
    )
    assert isinstance(lines, Iterator), "stream_logs=True yields log lines"
    log = "".join(lines)
    assert "probe-done" in log, log
    assert "Connection refused" in log, log
    assert "PONG" not in log, log


def test_a_builder_of_another_docker_context_is_refused_at_start(
    docker_available: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--builder CONTEXT` looks like a way to reach a rootless daemon: Buildx inspects the
    docker driver of any context, but builds with it only in the current context. The
    worker refuses it at start with the way that works, instead of failing every build."""
    endpoint = DockerClient().context.inspect(None).endpoints["docker"].host
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    subprocess.run(
        ["docker", "context", "create", "other-daemon", "--docker", f"host={endpoint}"],
        check=True,
        capture_output=True,
    )
    amd64 = parse_platform("linux/amd64")
    # Buildx itself refuses to build there, which is what the check spares the worker.
    build = subprocess.run(
        ["docker", "buildx", "build", "--builder", "other-daemon", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert build.returncode != 0 and "--context=other-daemon" in build.stderr, build.stderr
    with pytest.raises(BuilderError) as error:
        check_builder("other-daemon", amd64)
    assert "DOCKER_CONTEXT=other-daemon" in str(error.value)
    assert check_builder(None, amd64).driver == "docker"
    monkeypatch.setenv("DOCKER_CONTEXT", "other-daemon")
    assert check_builder("other-daemon", amd64).name == "other-daemon"


@dataclass
class RootlessSetup(Setup):
    """Workers and CLI with DOCKER_HOST at the rootless daemon: how a worker picks it."""

    docker_host: str = ""

    def env(self) -> dict[str, str]:
        return {**super().env(), "DOCKER_HOST": self.docker_host}


@pytest.fixture
def setup(
    lab: Lab, redis_url: str, rootless_host: str, tmp_path: Path, key_prefix: str
) -> Iterator[RootlessSetup]:
    namespace = f"rootless-{uuid.uuid4().hex[:8]}"
    config = tmp_path / "aibrix.toml"
    # The sample's smallest release: one component, both platforms.
    components = {"runtime": SAMPLE_COMPONENTS["runtime"]}
    config.write_text(
        toml_config(lab, namespace=namespace, key_prefix=key_prefix, components=components)
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    found = RootlessSetup(lab, config, redis_url, logs, docker_host=rootless_host)
    yield found
    found.stop_all()


async def test_release_built_by_rootless_workers_is_ready(setup: RootlessSetup) -> None:
    setup.start_worker("linux/amd64")
    setup.start_worker("linux/arm64")
    code, out, err = await setup.cli("release", "v0.1.0", "--timeout", "300")
    assert code == 0, out + err + setup.tail_logs()
    assert "v0.1.0: ready" in out
    release = await setup.wait_for("v0.1.0", [State.READY])
    config = setup.config
    version = parse_version("v0.1.0")
    assert release.version == version
    reference = config.release_reference("runtime", version)
    inspect = subprocess.run(
        [BOT, "inspect", "--json", "--require", "linux/amd64,linux/arm64", reference],
        capture_output=True,
        text=True,
        env={**os.environ, "DOCKER_HOST": setup.docker_host},
    )
    assert inspect.returncode == 0, inspect.stdout + inspect.stderr
    # The rootless daemon built both platforms (the docker driver keeps what it pushes in
    # its own image store); the root daemon built neither.
    rootless, root = DockerClient(host=setup.docker_host), DockerClient()
    for platform in ("linux/amd64", "linux/arm64"):
        staging = config.staging_reference("runtime", version, parse_platform(platform))
        assert rootless.image.exists(staging), staging
        assert not root.image.exists(staging), staging
