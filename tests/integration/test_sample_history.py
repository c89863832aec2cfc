"""The sample project is laid out like AIBrix today, with the pre-v0.5 layout in its git
history (issue 13, "Done when"): `aibrix-bot release VERSION --dry-run --json` as users run
it, with the sample's own config, on the repository `tests/support/sample_history.py`
makes (real git) and on `sample/` as it is; dependency images judged on the lab registry."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from tests.conftest import REPO, Lab
from tests.support.sample_history import (
    NEW_TAG,
    OLD_TAG,
    lab_addresses,
    make_sample_history,
    sample_config,
    sample_on_lab,
)

BOT = str(REPO / ".venv" / "bin" / "aibrix-bot")
PYTHON = "build/container/Dockerfile.python"


async def dry_run(
    config: Path, tmp_path: Path, redis_url: str, version: str
) -> tuple[int, dict[str, Any]]:
    env = {
        **os.environ,
        "AIBRIX_CONFIG": str(config),
        "AIBRIX_SOURCE_CACHE": str(tmp_path / "cache"),
        "REDIS_URL": redis_url,
    }
    process = await asyncio.create_subprocess_exec(
        *(BOT, "release", version, "--dry-run", "--json"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    assert out, err.decode()
    return process.returncode, json.loads(out)


def layout(plan: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["name"]: (c["dockerfile"], c["context"]) for c in plan["components"]}


def builds(plan: dict[str, Any]) -> dict[str, str]:
    return {c["name"]: c["build"] for c in plan["components"]}


async def test_the_history_plans_its_old_and_its_new_tag_clean(
    lab: Lab, tmp_path: Path, redis_url: str, key_prefix: str
) -> None:
    repo = tmp_path / "sample"
    commits = make_sample_history(repo, lab=lab_addresses(lab))
    config = sample_config(lab, tmp_path, f'git = "{repo}"', key_prefix)

    code, old = await dry_run(config, tmp_path, redis_url, OLD_TAG)
    assert (code, old["revision"], old["problems"]) == (0, commits[OLD_TAG], [])
    assert layout(old) == {
        "controller-manager": ("build/container/Dockerfile", "."),
        "gateway-plugins": ("build/container/Dockerfile.gateway", "."),
        "kvcache-watcher": ("build/container/Dockerfile.kvcache", "."),
        "metadata-service": ("build/container/Dockerfile.metadata", "."),
        "runtime": ("build/container/Dockerfile.runtime", "."),
    }
    assert len(set(builds(old).values())) == 5  # every component a build of its own

    code, new = await dry_run(config, tmp_path, redis_url, NEW_TAG)
    assert (code, new["revision"], new["problems"]) == (0, commits[NEW_TAG], [])
    assert layout(new) == {
        "controller-manager": ("build/container/Dockerfile", "."),
        "gateway-plugins": ("build/container/Dockerfile.gateway", "."),
        "kvcache-watcher": ("build/container/Dockerfile.kvcache", "."),
        "metadata-service": (PYTHON, "."),
        "runtime": (PYTHON, "."),
        "vllm-mock": ("development/app/Dockerfile", "development/app"),
    }
    shared = builds(new)
    assert shared["metadata-service"] == shared["runtime"]
    assert len(set(shared.values())) == 5  # six components, five builds

    # The overlay's third-party image and the configured one, both on the lab registry
    # with both platforms.
    for plan in (old, new):
        assert [(d["reference"], d["verdict"]) for d in plan["dependencies"]] == [
            (lab.base_image, "ok"),
            (lab.python_image, "ok"),
        ]


async def test_the_sample_directory_is_the_current_layout_only(
    lab: Lab, tmp_path: Path, redis_url: str, key_prefix: str
) -> None:
    sample = sample_on_lab(tmp_path / "sample", lab_addresses(lab))
    config = sample_config(lab, tmp_path, f'path = "{sample}"', key_prefix)

    code, new = await dry_run(config, tmp_path, redis_url, NEW_TAG)
    assert (code, new["problems"]) == (0, [])
    assert len(new["components"]) == 6

    # An old version from the directory: its Dockerfiles are only in the history, and
    # the manifests name v0.7.0.
    code, old = await dry_run(config, tmp_path, redis_url, OLD_TAG)
    assert code == 1
    missing = sorted(p["file"] for p in old["problems"] if p["kind"] == "missing")
    assert missing == ["build/container/Dockerfile.metadata", "build/container/Dockerfile.runtime"]
    manifests = {p["file"] for p in old["problems"] if p["kind"] == "manifest"}
    assert manifests == {"config/overlays/release/kustomization.yaml", "dist/chart/Chart.yaml"}
