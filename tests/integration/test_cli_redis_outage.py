"""`aibrix-bot release` rides out a Redis outage while it follows a run (issue 16, item 3):
it says it waits for Redis at HOST:PORT, carries on when Redis is back, and when Redis
never comes back gives up with exit 3 (unavailable) and a sentence, never a traceback.
A real CLI subprocess against a redis-server of the test's own, stopped and started."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from jobs.domain.config_reader import load_config
from jobs.domain.release import State
from jobs.store.connections import RedisSettings, connect
from jobs.usecases.pipeline import Pipeline
from tests.conftest import Lab
from tests.support.bot import config_text
from tests.support.own_redis import OwnRedis
from tests.support.pipeline import BOT

PORTS = {"restart": 6551, "gone": 6552}  # this work's own range, never the lab's Redis


@pytest.fixture
async def own_redis(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OwnRedis]:
    server = OwnRedis(PORTS[request.param], tmp_path / "redis")
    await server.start()
    try:
        yield server
    finally:
        server.stop()


class Cli:
    """One `aibrix-bot` subprocess whose stderr is read line by line as it comes."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.err: list[str] = []

    @classmethod
    async def start(cls, env: dict[str, str], *args: str) -> Cli:
        process = await asyncio.create_subprocess_exec(
            BOT, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
        )
        return cls(process)

    async def wait_line(self, needle: str, timeout: float = 60) -> str:
        assert self.process.stderr is not None
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.process.stderr.readline()
                assert raw, f"exited ({self.process.returncode}) before {needle!r}: {self.err}"
                line = raw.decode()
                self.err.append(line)
                if needle in line:
                    return line

    async def finish(self, timeout: float = 60) -> tuple[int, str, str]:
        async with asyncio.timeout(timeout):
            out, rest = await self.process.communicate()
        assert self.process.returncode is not None
        return self.process.returncode, out.decode(), "".join(self.err) + rest.decode()


def env_for(lab: Lab, tmp_path: Path, server: OwnRedis, key_prefix: str) -> dict[str, str]:
    path = tmp_path / "aibrix.toml"
    path.write_text(config_text(lab, f"outage-{uuid.uuid4().hex[:8]}", key_prefix))
    return {**os.environ, "AIBRIX_CONFIG": str(path), "REDIS_URL": server.url}


@pytest.mark.parametrize("own_redis", ["restart"], indirect=True)
async def test_release_follows_through_a_redis_restart(
    lab: Lab, own_redis: OwnRedis, tmp_path: Path, key_prefix: str
) -> None:
    env = env_for(lab, tmp_path, own_redis, key_prefix)
    cli = await Cli.start(env, "release", "v1.0.0")  # the default wait, 60 s
    try:
        await cli.wait_line("started run")
        own_redis.stop()
        waiting = await cli.wait_line("waiting for Redis at")
        assert f"127.0.0.1:{own_redis.port}" in waiting
        await own_redis.start()
        back = await cli.wait_line("is back after")
        print(f"outage seen by the CLI: {back.strip()}")
        # The run settles while the CLI follows (no workers here: it is cancelled).
        client = await connect(RedisSettings.from_dsn(own_redis.url, key_prefix=key_prefix))
        try:
            pipeline = Pipeline(client, load_config(Path(env["AIBRIX_CONFIG"])))
            cancelled = await pipeline.cancel("v1.0.0", "cli:tester")
            assert cancelled.state is State.CANCELLED
        finally:
            await client.aclose()
        code, out, err = await cli.finish()
    finally:
        if cli.process.returncode is None:
            cli.process.kill()
            await cli.process.wait()
    assert "Traceback" not in err, err
    assert "v1.0.0: cancelled" in out, out + err
    assert code == 1  # followed to the end: a cancelled run is not ready


@pytest.mark.parametrize("own_redis", ["gone"], indirect=True)
async def test_release_gives_up_with_exit_3_when_redis_stays_away(
    lab: Lab, own_redis: OwnRedis, tmp_path: Path, key_prefix: str
) -> None:
    env = env_for(lab, tmp_path, own_redis, key_prefix)
    cli = await Cli.start({**env, "AIBRIX_REDIS_WAIT_SECONDS": "3"}, "release", "v1.0.0")
    try:
        await cli.wait_line("started run")
        own_redis.stop()
        await cli.wait_line("waiting for Redis at")
        code, _, err = await cli.finish()
    finally:
        if cli.process.returncode is None:
            cli.process.kill()
            await cli.process.wait()
    assert "Traceback" not in err, err
    assert code == 3, err
    assert f"Redis at 127.0.0.1:{own_redis.port} could not be reached for 3 s" in err
    assert "aibrix-bot status v1.0.0" in err
