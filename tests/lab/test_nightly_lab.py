"""Nightly (issue 13 item 7): `aibrix-bot nightly` builds the head of a branch of a real
git repository with the per-architecture workers, merges, gates, and writes the full
commit sha and `nightly` on both publish registries with no approval; a later head whose
arm64 build is broken (the sample's FAIL_ON_ARCH, as sample/aibrix-sample-broken-arm64.toml
breaks a platform, here in the branch's own Dockerfile) leaves `nightly` where it was, and
says why. Real git, Redis, registries, Buildx."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from jobs.domain.manifests import MANIFEST_ACCEPT
from jobs.domain.nightly import nightly_version
from jobs.domain.release import State
from tests.conftest import Lab
from tests.support.distribution import distribution
from tests.support.pipeline import SAMPLE, Setup, toml_config

COMPONENT = "controller-manager"
DOCKERFILE = "build/container/Dockerfile"
SECOND_PORT = 6521  # this helper's range: the test's own second publish registry


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def make_repository(root: Path) -> Path:
    """A git repository holding what the sample's controller-manager build needs, on main."""
    repo = root / "project"
    for part in (DOCKERFILE, "lib/aibrix.sh", f"cmd/{COMPONENT}"):
        source, target = SAMPLE / part, repo / part
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "first")
    return repo


@pytest.fixture
async def setup(
    lab: Lab, redis_url: str, docker_available: None, tmp_path: Path, key_prefix: str
) -> AsyncIterator[tuple[Setup, Path, str, str]]:
    namespace = f"nightly-{uuid.uuid4().hex[:8]}"
    repo = make_repository(tmp_path)
    async with distribution(tmp_path, host=f"127.0.0.1:{SECOND_PORT}") as second:
        text = toml_config(
            lab,
            namespace=namespace,
            key_prefix=key_prefix,
            source=repo,
            components={COMPONENT: DOCKERFILE},
        )
        primary = f"{lab.registry}/{namespace}"
        text = text.replace(f'path = "{repo}"\n', f'git = "{repo}"\n')
        text = text.replace(
            f'repository = "{primary}"\n', f'publish = ["{primary}", "{second}/{namespace}"]\n'
        )
        config = tmp_path / "aibrix.toml"
        config.write_text(text)
        logs = tmp_path / "logs"
        logs.mkdir()
        found = Setup(lab, config, redis_url, logs)
        try:
            yield found, repo, namespace, second
        finally:
            found.stop_all()


async def digest_at(host: str, repo: str, tag: str) -> str | None:
    async with aiohttp.ClientSession() as session:
        url = f"http://{host}/v2/{repo}/manifests/{tag}"
        async with session.head(url, headers={"Accept": MANIFEST_ACCEPT}) as response:
            if response.status == 404:
                return None
            assert response.status == 200, response.status
            return response.headers["Docker-Content-Digest"]


async def test_nightly_moves_when_the_gate_passes_and_stays_when_arm64_breaks(
    setup: tuple[Setup, Path, str, str],
) -> None:
    found, repo, namespace, second = setup
    lab = found.lab
    image = f"{namespace}/{COMPONENT}"
    found.start_worker("linux/amd64")
    found.start_worker("linux/arm64")

    # A good head: built, merged, gated, and both tags on both registries, unapproved.
    first = git(repo, "rev-parse", "HEAD")
    code, out, err = await found.cli("nightly", "--timeout", "300")
    assert code == 0, out + err + found.tail_logs()
    assert f"nightly moved to {first}" in out
    run = await found.wait_for(str(nightly_version(first)), [State.PROMOTED])
    good = run.indexes[COMPONENT].digest
    for host in (lab.registry, second):
        assert await digest_at(host, image, first) == good
        assert await digest_at(host, image, "nightly") == good
    records = await found.records()
    try:
        audit = await records.store.audit_entries()
    finally:
        await records.close()
    # No approval: the policy moved it on, and the audit stream says so.
    assert any(e["actor"] == "policy:nightly" for e in audit)

    # Asked again for the same head: nothing to do, said so, nothing queued.
    code, out, err = await found.cli("nightly", "--no-follow")
    assert code == 2 and "was built and published as nightly already" in err, out + err

    # The next head breaks arm64 in its Dockerfile: blocked, and nightly stays put.
    dockerfile = repo / DOCKERFILE
    dockerfile.write_text(
        dockerfile.read_text().replace("ARG FAIL_ON_ARCH=\n", "ARG FAIL_ON_ARCH=aarch64\n")
    )
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-am", "break arm64")
    broken = git(repo, "rev-parse", "HEAD")
    code, out, err = await found.cli("nightly", "main", "--timeout", "300")
    assert code == 1, out + err + found.tail_logs()
    assert "nightly not moved (blocked)" in out
    assert "linux/arm64" in out and "unsupported on aarch64" in out + err
    blocked = await found.wait_for(str(nightly_version(broken)), [State.BLOCKED])
    assert COMPONENT not in blocked.indexes
    for host in (lab.registry, second):
        assert await digest_at(host, image, "nightly") == good
        assert await digest_at(host, image, broken) is None


async def test_a_branch_that_is_an_option_or_missing_is_refused(
    setup: tuple[Setup, Path, str, str],
) -> None:
    found, _, _, _ = setup
    code, out, err = await found.cli("nightly", "--", "--upload-pack=touch")
    assert code == 2, out + err
    assert "is not a branch name" in err
    code, out, err = await found.cli("nightly", "no-such-branch", "--no-follow")
    assert code == 3, out + err
    assert "has no branch 'no-such-branch'" in err
