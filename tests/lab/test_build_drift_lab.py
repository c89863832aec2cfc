"""Config drift between the bot and the workers (a worker whose config gives runtime
another build argument than the bot's): the bot plans metadata-service and runtime as one
shared build, and the worker, whose own config would build runtime otherwise, refuses the
job with the sentence that says so instead of building it; the failure goes the usual way
(attempts, dead letter, the run blocks with the reason) and nothing is pushed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from jobs.domain.platforms import parse_platform
from jobs.domain.release import BuildState, State
from tests.conftest import Lab
from tests.support.pipeline import Setup, shared_build_project, toml_config

pytestmark = pytest.mark.lab

VERSION = "v1.0.0"
AMD64 = parse_platform("linux/amd64")
COMPONENTS = {"metadata-service": "Dockerfile.shared", "runtime": "Dockerfile.shared"}


@pytest.fixture
def setups(
    lab: Lab, redis_url: str, docker_available: None, tmp_path: Path, key_prefix: str
) -> Iterator[tuple[Setup, Setup, str]]:
    namespace = f"drift-{uuid.uuid4().hex[:8]}"
    source = shared_build_project(tmp_path)
    bot_config = tmp_path / "bot.toml"
    worker_config = tmp_path / "worker.toml"
    for path, build_args in (
        (bot_config, {}),
        (worker_config, {"runtime": {"PY_VERSION": "3.12"}}),
    ):
        path.write_text(
            toml_config(
                lab,
                namespace=namespace,
                key_prefix=key_prefix,
                source=source,
                components=COMPONENTS,
                build_args=build_args,
                max_attempts=2,
            )
        )
    logs = tmp_path / "logs"
    logs.mkdir()
    bot = Setup(lab, bot_config, redis_url, logs)
    workers = Setup(lab, worker_config, redis_url, logs)
    yield bot, workers, namespace
    workers.stop_all()
    bot.stop_all()


async def test_a_worker_whose_config_builds_runtime_otherwise_refuses_the_shared_build(
    lab: Lab, setups: tuple[Setup, Setup, str]
) -> None:
    bot, workers, namespace = setups
    workers.start_worker("linux/amd64")
    code, out, err = await bot.cli(
        "release", VERSION, "--platform", "linux/amd64", "--timeout", "120"
    )
    assert code == 1, out + err + workers.tail_logs()
    sentence = "this worker's configuration builds runtime differently from the bot's"
    assert sentence in out, out + err
    blocked = await bot.wait_for(VERSION, [State.BLOCKED])
    record = blocked.build("metadata-service", AMD64)
    assert record.state is BuildState.FAILED
    records = await bot.records()
    try:
        dead = [d for d in await records.dead_letters() if d.job and str(d.job.version) == VERSION]
    finally:
        await records.close()
    assert [(d.job.component, str(d.job.platform)) for d in dead if d.job] == [
        ("metadata-service", "linux/amd64")
    ]
    assert sentence in dead[0].reason
    assert "give the workers the bot's configuration" in dead[0].reason
    assert "3.12" not in dead[0].reason
    # Nothing was pushed: neither repository exists in the registry.
    async with httpx.AsyncClient(base_url=f"http://{lab.registry}") as registry:
        for name in COMPONENTS:
            tags = await registry.get(f"/v2/{namespace}/{name}/tags/list")
            assert tags.status_code == 404, tags.text
    worker_logs = "\n".join(w.log.read_text() for w in workers.workers)
    assert f"pushed {lab.registry}/{namespace}" not in worker_logs
