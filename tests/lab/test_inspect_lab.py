"""`aibrix-bot inspect` against the real lab registry, with images built by real Buildx
where it can make them and crafted through the registry API where it cannot."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import REPO, Lab
from tests.support.netproxy import FaultProxy
from tests.support.oci_push import OciPusher, entry

BOT = str(REPO / ".venv" / "bin" / "aibrix-bot")


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = json.loads(self.stdout)
        return data


async def run_bot(*args: str, env: dict[str, str] | None = None) -> Result:
    process = await asyncio.create_subprocess_exec(
        BOT,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode())


# ---- images made by real Buildx -----------------------------------------------------


@dataclass
class BuiltImages:
    repo: str  # host/path, no tag
    amd64: str
    arm64: str


@pytest.fixture(scope="session")
def built(
    lab: Lab, docker_available: None, tmp_path_factory: pytest.TempPathFactory
) -> BuiltImages:
    from python_on_whales import docker

    context = tmp_path_factory.mktemp("inspect-ctx")
    (context / "Dockerfile").write_text(
        f"FROM {lab.base_image}\nRUN uname -m > /built-on && echo runtime > /component\n"
    )
    repo = f"{lab.registry}/inspect-{uuid.uuid4().hex[:8]}/runtime"
    digests = {}
    for arch in ("amd64", "arm64"):
        meta = context / f"meta-{arch}.json"
        docker.buildx.build(
            context,
            platforms=[f"linux/{arch}"],
            tags=[f"{repo}:v0.3.0-rc.2-{arch}"],
            push=True,
            metadata_file=meta,
        )
        digests[arch] = json.loads(meta.read_text())["containerimage.digest"]
    # A healthy release tag, merged from pinned digests...
    docker.buildx.imagetools.create(
        [f"{repo}@{digests['amd64']}", f"{repo}@{digests['arm64']}"], tags=[f"{repo}:healthy"]
    )
    # ...and the incident: the arm64 pipeline rewrote the shared tag with its list alone.
    docker.buildx.imagetools.create(
        [f"{repo}@{digests['amd64']}", f"{repo}@{digests['arm64']}"], tags=[f"{repo}:v0.3.0-rc.2"]
    )
    docker.buildx.imagetools.create([f"{repo}@{digests['arm64']}"], tags=[f"{repo}:v0.3.0-rc.2"])
    return BuiltImages(repo, digests["amd64"], digests["arm64"])


async def test_healthy_two_platform_index(built: BuiltImages) -> None:
    result = await run_bot("inspect", "--json", f"{built.repo}:healthy")
    assert result.code == 0, result.stderr
    [report] = result.json
    assert report["verdict"] == "ok"
    assert report["missing"] == []
    assert report["reference"] == f"{built.repo}:healthy"
    platforms = {p["platform"]: p for p in report["platforms"]}
    assert set(platforms) == {"linux/amd64", "linux/arm64"}
    assert platforms["linux/amd64"]["digest"] == built.amd64
    assert platforms["linux/arm64"]["digest"] == built.arm64
    assert all(p["status"] == "ok" for p in platforms.values())
    assert report["attestations"] == 0
    assert report["error"] is None


async def test_incident_arm64_only_list_is_missing_amd64(built: BuiltImages) -> None:
    ref = f"{built.repo}:v0.3.0-rc.2"
    # The failure the incident produced, reproduced for real on this amd64 host:
    pull = subprocess.run(["docker", "pull", ref], capture_output=True, text=True)
    assert pull.returncode != 0
    assert "no matching manifest for linux/amd64 in the manifest list entries" in pull.stderr
    result = await run_bot("inspect", "--json", ref)
    assert result.code == 1
    [report] = result.json
    assert report["verdict"] == "missing"
    assert report["missing"] == ["linux/amd64"]
    assert [p["platform"] for p in report["platforms"]] == ["linux/arm64"]
    text = await run_bot("inspect", ref)
    assert text.code == 1
    assert f"{ref} is missing linux/amd64; the index has linux/arm64 only" in text.stdout


async def test_single_arch_tag_has_its_config_platform(built: BuiltImages) -> None:
    ref = f"{built.repo}:v0.3.0-rc.2-arm64"
    result = await run_bot("inspect", "--json", ref)
    [report] = result.json
    assert report["verdict"] == "missing"
    assert report["missing"] == ["linux/amd64"]
    assert report["digest"] == built.arm64
    assert report["platforms"] == [
        {
            "platform": "linux/arm64",
            "digest": built.arm64,
            "status": "ok",
            "config_platform": "linux/arm64",
            "reason": None,
        }
    ]
    assert result.code == 1
    ok = await run_bot("inspect", "--require", "linux/arm64", ref)
    assert ok.code == 0, ok.stdout


async def test_several_references_in_argument_order(built: BuiltImages) -> None:
    refs = [f"{built.repo}:v0.3.0-rc.2", f"{built.repo}:healthy", f"{built.repo}@{built.amd64}"]
    result = await run_bot("inspect", "--json", "--require", "linux/amd64", *refs)
    assert [r["reference"] for r in result.json] == refs
    assert [r["verdict"] for r in result.json] == ["missing", "ok", "ok"]
    assert result.code == 1


# ---- crafted through the registry API -------------------------------------------------


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def crafted_repo(lab: Lab) -> str:
    return f"crafted-{uuid.uuid4().hex[:10]}/app"


async def test_oci_index_with_attestations(
    lab: Lab, session: aiohttp.ClientSession, crafted_repo: str
) -> None:
    pusher = OciPusher(lab.registry)
    amd = await pusher.image(session, crafted_repo, os="linux", arch="amd64")
    arm = await pusher.image(session, crafted_repo, os="linux", arch="arm64")
    _, att_amd = await pusher.attestation(session, crafted_repo, amd.digest)
    _, att_arm = await pusher.attestation(session, crafted_repo, arm.digest)
    entries = [entry(amd, "linux", "amd64"), entry(arm, "linux", "arm64"), att_amd, att_arm]
    await pusher.index(session, crafted_repo, "v1", entries)
    result = await run_bot("inspect", "--json", f"{lab.registry}/{crafted_repo}:v1")
    [report] = result.json
    assert result.code == 0, result.stdout
    assert report["verdict"] == "ok"
    assert report["attestations"] == 2
    assert [p["platform"] for p in report["platforms"]] == ["linux/amd64", "linux/arm64"]


async def test_entry_whose_config_says_another_architecture(
    lab: Lab, session: aiohttp.ClientSession, crafted_repo: str
) -> None:
    pusher = OciPusher(lab.registry)
    arm = await pusher.image(session, crafted_repo, os="linux", arch="arm64")
    # The overwrite in disguise: an arm64 image listed as amd64.
    await pusher.index(
        session, crafted_repo, "v1", [entry(arm, "linux", "amd64"), entry(arm, "linux", "arm64")]
    )
    result = await run_bot("inspect", "--json", f"{lab.registry}/{crafted_repo}:v1")
    [report] = result.json
    assert result.code == 1
    assert report["verdict"] == "mismatch"
    assert report["missing"] == ["linux/amd64"]
    statuses = {p["platform"]: p["status"] for p in report["platforms"]}
    assert statuses == {"linux/amd64": "mismatch", "linux/arm64": "ok"}
    text = await run_bot("inspect", f"{lab.registry}/{crafted_repo}:v1")
    assert "is really linux/arm64" in text.stdout


async def test_arm64_v8_is_arm64(
    lab: Lab, session: aiohttp.ClientSession, crafted_repo: str
) -> None:
    pusher = OciPusher(lab.registry)
    amd = await pusher.image(session, crafted_repo, os="linux", arch="amd64", oci=False)
    arm = await pusher.image(
        session, crafted_repo, os="linux", arch="arm64", variant="v8", oci=False
    )
    await pusher.index(
        session,
        crafted_repo,
        "v1",
        [entry(amd, "linux", "amd64"), entry(arm, "linux", "arm64", "v8")],
        oci=False,
    )
    result = await run_bot("inspect", "--json", f"{lab.registry}/{crafted_repo}:v1")
    [report] = result.json
    assert report["verdict"] == "ok", report
    assert result.code == 0
    require_v8 = await run_bot(
        "inspect", "--require", "linux/arm64/v8,linux/amd64", f"{lab.registry}/{crafted_repo}:v1"
    )
    assert require_v8.code == 0


async def test_arm_v7_does_not_satisfy_arm64(
    lab: Lab, session: aiohttp.ClientSession, crafted_repo: str
) -> None:
    pusher = OciPusher(lab.registry)
    amd = await pusher.image(session, crafted_repo, os="linux", arch="amd64")
    arm7 = await pusher.image(session, crafted_repo, os="linux", arch="arm", variant="v7")
    await pusher.index(
        session,
        crafted_repo,
        "v1",
        [entry(amd, "linux", "amd64"), entry(arm7, "linux", "arm", "v7")],
    )
    result = await run_bot("inspect", "--json", f"{lab.registry}/{crafted_repo}:v1")
    [report] = result.json
    assert report["verdict"] == "missing"
    assert report["missing"] == ["linux/arm64"]
    assert [p["platform"] for p in report["platforms"]] == ["linux/amd64", "linux/arm/v7"]
    assert result.code == 1


async def test_windows_amd64_is_not_linux_amd64(
    lab: Lab, session: aiohttp.ClientSession, crafted_repo: str
) -> None:
    pusher = OciPusher(lab.registry)
    win = await pusher.image(session, crafted_repo, os="windows", arch="amd64")
    arm = await pusher.image(session, crafted_repo, os="linux", arch="arm64")
    await pusher.index(
        session, crafted_repo, "v1", [entry(win, "windows", "amd64"), entry(arm, "linux", "arm64")]
    )
    result = await run_bot("inspect", "--json", f"{lab.registry}/{crafted_repo}:v1")
    [report] = result.json
    assert report["missing"] == ["linux/amd64"]
    assert result.code == 1


async def test_deleted_child_is_unresolvable(
    lab: Lab, session: aiohttp.ClientSession, crafted_repo: str
) -> None:
    pusher = OciPusher(lab.registry)
    amd = await pusher.image(session, crafted_repo, os="linux", arch="amd64")
    arm = await pusher.image(session, crafted_repo, os="linux", arch="arm64")
    await pusher.index(
        session, crafted_repo, "v1", [entry(amd, "linux", "amd64"), entry(arm, "linux", "arm64")]
    )
    await pusher.delete_manifest(session, crafted_repo, amd.digest)
    result = await run_bot("inspect", "--json", f"{lab.registry}/{crafted_repo}:v1")
    [report] = result.json
    assert result.code == 1
    assert report["verdict"] == "mismatch"
    assert report["missing"] == ["linux/amd64"]
    amd_entry = report["platforms"][0]
    assert amd_entry["status"] == "unresolvable"
    assert amd_entry["digest"] == amd.digest


async def test_missing_tag_exits_3(lab: Lab, crafted_repo: str) -> None:
    result = await run_bot("inspect", "--json", f"{lab.registry}/{crafted_repo}:nope")
    assert result.code == 3
    [report] = result.json
    assert report["verdict"] == "error"
    assert report["digest"] is None
    assert "not found" in str(report["error"])


async def test_unreachable_registry_exits_3() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = await run_bot("inspect", f"127.0.0.1:{port}/aibrix/runtime:v1")
    assert result.code == 3
    assert "cannot reach" in result.stdout


# ---- authentication ---------------------------------------------------------------------


@pytest.fixture
def docker_config(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "docker-config"


def write_docker_config(directory: Path, registry: str, user: str, password: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (directory / "config.json").write_text(json.dumps({"auths": {registry: {"auth": auth}}}))


async def test_htpasswd_registry_with_and_without_credentials(
    lab: Lab, session: aiohttp.ClientSession, crafted_repo: str, docker_config: Path
) -> None:
    pusher = OciPusher(lab.auth_registry, lab.auth_user, lab.auth_password)
    amd = await pusher.image(session, crafted_repo, os="linux", arch="amd64")
    arm = await pusher.image(session, crafted_repo, os="linux", arch="arm64")
    await pusher.index(
        session, crafted_repo, "v1", [entry(amd, "linux", "amd64"), entry(arm, "linux", "arm64")]
    )
    ref = f"{lab.auth_registry}/{crafted_repo}:v1"

    write_docker_config(docker_config, lab.auth_registry, lab.auth_user, lab.auth_password)
    good = await run_bot("inspect", "--json", ref, env={"DOCKER_CONFIG": str(docker_config)})
    assert good.code == 0, good.stdout + good.stderr
    assert good.json[0]["verdict"] == "ok"

    empty = docker_config.parent / "empty-config"
    empty.mkdir()
    anonymous = await run_bot("inspect", ref, env={"DOCKER_CONFIG": str(empty)})
    assert anonymous.code == 3
    assert "user name and password" in anonymous.stdout

    wrong_password = "wrong-" + uuid.uuid4().hex
    write_docker_config(docker_config, lab.auth_registry, lab.auth_user, wrong_password)
    refused = await run_bot("inspect", ref, env={"DOCKER_CONFIG": str(docker_config)})
    assert refused.code == 3
    assert "refused the credentials" in refused.stdout
    for output in (good, anonymous, refused):
        for secret in (lab.auth_password, wrong_password):
            assert secret not in output.stdout + output.stderr


async def test_credential_helper_from_docker_config(
    lab: Lab, session: aiohttp.ClientSession, crafted_repo: str, tmp_path: Path
) -> None:
    pusher = OciPusher(lab.auth_registry, lab.auth_user, lab.auth_password)
    amd = await pusher.image(session, crafted_repo, os="linux", arch="amd64", tag="single")
    helper_dir = tmp_path / "bin"
    helper_dir.mkdir()
    helper = helper_dir / "docker-credential-lab"
    secret_file = tmp_path / "secret"
    secret_file.write_text(json.dumps({"Username": lab.auth_user, "Secret": lab.auth_password}))
    helper.write_text(f'#!/bin/sh\n[ "$1" = get ] || exit 1\ncat {secret_file}\n')
    helper.chmod(0o755)
    config = tmp_path / "cfg"
    config.mkdir()
    (config / "config.json").write_text(json.dumps({"credHelpers": {lab.auth_registry: "lab"}}))
    env = {"DOCKER_CONFIG": str(config), "PATH": f"{helper_dir}:{os.environ['PATH']}"}
    result = await run_bot(
        "inspect",
        "--json",
        "--require",
        "linux/amd64",
        f"{lab.auth_registry}/{crafted_repo}:single",
        env=env,
    )
    assert result.code == 0, result.stdout + result.stderr
    assert result.json[0]["digest"] == amd.digest


# ---- faults -----------------------------------------------------------------------------


async def test_inspection_survives_500_and_429(built: BuiltImages, lab: Lab) -> None:
    async with FaultProxy(lab.registry) as proxy:
        path = built.repo.removeprefix(lab.registry + "/")
        result = await run_bot("inspect", "--json", f"{proxy.address}/{path}:healthy")
    assert result.code == 0, result.stdout + result.stderr
    assert result.json[0]["verdict"] == "ok"
    assert proxy.injected[500] > 0 and proxy.injected[429] > 0


# ---- invalid input: exit 2, nothing contacted -------------------------------------------


INVALID_REFERENCES = [
    "127.0.0.1:{port}/Aibrix/runtime:v1",
    "127.0.0.1:{port}/aibrix/runtime:v1:v2",
    "127.0.0.1:{port}/aibrix/runtime:" + "t" * 200,
    "127.0.0.1:{port}/aibrix/runtime@sha256:abc123",
    "127.0.0.1:{port}/aibrix/run time:v1",
    "-127.0.0.1:{port}/aibrix/runtime:v1",
    "127.0.0.1:{port}/aibrix/runtime:v1;id",
    "127.0.0.1:{port}/aibrix/$(id):v1",
]


@pytest.fixture
async def listener() -> AsyncIterator[tuple[int, list[int]]]:
    accepted: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield port, accepted
    server.close()
    await server.wait_closed()


@pytest.mark.parametrize("template", INVALID_REFERENCES)
async def test_invalid_reference_exits_2_without_contact(
    template: str, listener: tuple[int, list[int]]
) -> None:
    port, accepted = listener
    valid = f"127.0.0.1:{port}/aibrix/runtime:v1"
    result = await run_bot("inspect", valid, "--", template.format(port=port))
    assert result.code == 2, result.stdout + result.stderr
    assert result.stderr.strip(), "a usage error says what was wrong"
    assert result.stdout == ""
    assert accepted == []


@pytest.mark.parametrize(
    "args",
    [
        ["--require", "linux"],
        ["--require", "linux/amd64/v1/x"],
        ["--require", "Linux/$(id)"],
        ["--insecure-registry", "bad host"],
        ["--bogus-flag"],
        ["--require", ""],
    ],
)
async def test_invalid_flags_exit_2_without_contact(
    args: list[str], listener: tuple[int, list[int]]
) -> None:
    port, accepted = listener
    result = await run_bot("inspect", *args, f"127.0.0.1:{port}/aibrix/runtime:v1")
    assert result.code == 2, result.stdout + result.stderr
    assert result.stderr.strip()
    assert accepted == []


async def test_no_reference_is_a_usage_error() -> None:
    result = await run_bot("inspect")
    assert result.code == 2
    assert "REF" in result.stderr
