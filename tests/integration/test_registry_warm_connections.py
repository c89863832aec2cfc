"""Connections opened ahead of a burst of reads (`RegistryClient.open_connections`), and the
sync opening them to its source registries while the gate reads the tags.

Real registries: the lab registry behind a TCP forwarder that counts the connections made
to it (`LatencyProxy`, no delay), or behind a counting HTTP forwarder (`FaultProxy`, no
faults) for what the sync sends."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections import Counter
from pathlib import Path

import aiohttp

from jobs.domain.references import parse_reference
from jobs.registry.client import RegistryClient
from tests.conftest import REPO, Lab
from tests.support.netproxy import FaultProxy, LatencyProxy
from tests.support.oci_push import OciPusher, entry
from tests.support.sync import run_bot


async def test_connections_opened_ahead_carry_the_burst_that_follows(
    lab: Lab, unique_repo: str
) -> None:
    async with aiohttp.ClientSession() as session:
        image = await OciPusher(lab.registry).image(
            session, unique_repo, os="linux", arch="amd64", tag="t"
        )
    host, port = lab.registry.rsplit(":", 1)
    async with LatencyProxy(host, int(port), 0.0) as proxy:
        ref = parse_reference(f"{proxy.address}/{unique_repo}:t")
        async with RegistryClient() as client:
            await client.open_connections(ref, 3)
            assert proxy.connections == 3
            digests = await asyncio.gather(*(client.head_manifest(ref) for _ in range(3)))
            assert proxy.connections == 3  # the three reads went out on them
    assert digests == [image.digest] * 3
    assert client.requests_by_method == Counter({"GET": 3, "HEAD": 3})


async def test_connections_that_cannot_be_opened_are_not_an_error() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with RegistryClient() as client:
        await client.open_connections(parse_reference(f"127.0.0.1:{port}/x/y:t"), 2)


def _never(method: str, path: str, seen: int) -> int | None:
    return None


async def test_a_sync_opens_connections_to_its_source_not_to_its_mirror(
    lab: Lab, unique_repo: str, tmp_path: Path
) -> None:
    # Two components of two platforms: the gate reads two tags, then four children and
    # four configs; four connections are begun with the tags' reads. The mirror is sent
    # only what the copy needs.
    components = ("one", "two")
    async with aiohttp.ClientSession() as session:
        pusher = OciPusher(lab.registry)
        for name in components:
            repo = f"{unique_repo}/{name}"
            amd = await pusher.image(session, repo, os="linux", arch="amd64")
            arm = await pusher.image(session, repo, os="linux", arch="arm64")
            await pusher.index(
                session,
                repo,
                "v1.0.0",
                [entry(amd, "linux", "amd64"), entry(arm, "linux", "arm64")],
            )
    mirror = f"{lab.mirror_registry}/{unique_repo}-{uuid.uuid4().hex[:6]}"
    async with (
        FaultProxy(lab.registry, _never) as source,
        FaultProxy(lab.mirror_registry, _never) as target,
    ):
        config = tmp_path / "sync.toml"
        lines = [
            f'repository = "{source.address}/{unique_repo}"',
            'platforms = ["linux/amd64", "linux/arm64"]',
            "[source]",
            f'path = "{tmp_path}"',
            "[mirrors]",
            f'm = "{target.address}/{mirror.split("/", 1)[1]}"',
        ]
        for name in components:
            lines += ["[[components]]", f'name = "{name}"']
        config.write_text("\n".join(lines) + "\n")
        result = await run_bot(
            "sync",
            "v1.0.0",
            "--to",
            "m",
            "--config",
            str(config),
            "--json",
            env={"PYTHONPATH": str(REPO), "REDIS_URL": ""},
        )
    assert result.code == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["status"] == "synced"
    assert source.seen[("GET", "/v2/")] == 4
    assert not any(path == "/v2/" for _, path in target.seen)


async def test_a_sync_without_redis_does_not_import_the_redis_client(
    lab: Lab, unique_repo: str, tmp_path: Path
) -> None:
    # Start-up is part of every sync's time: the Redis client (about 50 ms to import, 20 ms
    # more at exit) is loaded only by a sync that is audited in Redis.
    config = tmp_path / "sync.toml"
    config.write_text(
        f'repository = "{lab.registry}/{unique_repo}"\n[source]\npath = "{tmp_path}"\n'
        f'[mirrors]\nm = "{lab.mirror_registry}/{unique_repo}"\n[[components]]\nname = "a"\n'
    )
    script = (
        "import sys\n"
        "from bot.cli import main\n"
        f"code = main(['sync', 'v1.0.0', '--to', 'm', '--config', {str(config)!r}, '--json'])\n"
        "print('exit', code, sorted(m for m in sys.modules if m.split('.')[0] == 'redis'))\n"
    )
    process = await asyncio.create_subprocess_exec(
        str(REPO / ".venv" / "bin" / "python"),
        "-c",
        script,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    out, err = await process.communicate()
    last = out.decode().splitlines()[-1]
    # The tag does not exist: the gate refuses (exit 3) after reading it, Redis unused.
    assert last == "exit 3 []", out.decode() + err.decode()
