"""Identical builds run once (issue 13, item 2), end to end: a release of a small project
whose two components share one Dockerfile (and a third with its own), asked for through
the CLI, built by real workers (amd64 natively, arm64 under QEMU) with Buildx, merged and
read back from the lab registry. It ends ready with both components' indexes holding the
same per-platform digests, and the workers ran builds x platforms builds, not components x
platforms."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.domain.release import State
from tests.conftest import Lab
from tests.support.pipeline import BOT, Setup, shared_build_project, toml_config

pytestmark = pytest.mark.lab

VERSION = "v1.0.0"


@pytest.fixture
def setup(
    lab: Lab, redis_url: str, docker_available: None, tmp_path: Path, key_prefix: str
) -> Iterator[Setup]:
    config = tmp_path / "aibrix.toml"
    config.write_text(
        toml_config(
            lab,
            namespace=f"shared-{uuid.uuid4().hex[:8]}",
            key_prefix=key_prefix,
            source=shared_build_project(tmp_path),
            components={
                "metadata-service": "Dockerfile.shared",
                "runtime": "Dockerfile.shared",
                "controller-manager": "Dockerfile.own",
            },
        )
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    found = Setup(lab, config, redis_url, logs)
    yield found
    found.stop_all()


def inspect(*references: str) -> list[dict[str, object]]:
    done = subprocess.run(
        [BOT, "inspect", "--json", *references], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    reports: list[dict[str, object]] = json.loads(done.stdout)
    return reports


def platform_digests(report: dict[str, object]) -> dict[str, str]:
    platforms = report["platforms"]
    assert isinstance(platforms, list)
    return {p["platform"]: p["digest"] for p in platforms}


async def test_a_shared_build_runs_once_per_platform_and_both_indexes_hold_its_digests(
    setup: Setup,
) -> None:
    setup.start_worker("linux/amd64")
    setup.start_worker("linux/arm64")
    code, out, err = await setup.cli("release", VERSION, "--timeout", "300")
    assert code == 0, out + err + setup.tail_logs()
    assert "runtime: built with metadata-service" in err  # the live view says so
    release = await setup.wait_for(VERSION, [State.READY])

    # The workers ran one build per build and platform: 2 x 2, not 3 x 2. Each build job
    # reports "pushed" once on the events stream (a redelivery would run it again).
    records = await setup.records()
    try:
        pushed = [
            (e.fields["component"], e.fields["platform"])
            for e in await records.events()
            if e.type == "progress" and e.version == VERSION and e.fields.get("phase") == "pushed"
        ]
    finally:
        await records.close()
    builds, platforms = 2, len(release.platforms)
    assert sorted(pushed) == sorted(
        (c, str(p)) for c in ("metadata-service", "controller-manager") for p in release.platforms
    )
    assert len(pushed) == builds * platforms == 4
    print(f"\nbuilds run: {len(pushed)} for {len(release.components)} components x {platforms}")

    # Both release tags are verified indexes of the very same per-platform digests, the
    # ones the shared build pushed; the third component's are its own.
    config = setup.config
    refs = [config.release_reference(c, release.version) for c in release.components]
    reports = dict(zip(release.components, inspect(*refs), strict=True))
    for component, report in reports.items():
        assert report["verdict"] == "ok", report
        assert release.indexes[component].digest == report["digest"]
    shared = release.built_digests("metadata-service")
    assert shared is not None and release.built_digests("runtime") == shared
    expected = {str(p): d for p, d in shared.items()}
    assert platform_digests(reports["metadata-service"]) == expected
    assert platform_digests(reports["runtime"]) == expected
    own = platform_digests(reports["controller-manager"])
    assert set(own.values()).isdisjoint(expected.values())
    for platform in release.platforms:
        assert release.build("runtime", platform).built_with == "metadata-service"
