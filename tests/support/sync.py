"""Helpers of the mirror-sync lab tests that other tests share: the CLI run in a
subprocess, a release index crafted through the registry API, a docker config file.

Moved here from tests/test_sync_lab.py so tests import helpers, never another test module."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from jobs.domain.manifests import OCI_MANIFEST
from tests.conftest import REPO
from tests.support.oci_push import CONFIG_TYPE, OciPusher, Pushed, entry

BOT = str(REPO / ".venv" / "bin" / "aibrix-bot")


VERSION = "v0.3.0"


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.stdout)
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


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def attestation(
    pusher: OciPusher, session: aiohttp.ClientSession, repo: str, subject: str
) -> dict[str, object]:
    """An in-toto attestation manifest as buildx writes it (its statement names the
    subject, so each is distinct), and its index entry."""
    statement = json.dumps(
        {"_type": "https://in-toto.io/Statement/v0.1", "subject": [{"digest": subject}]}
    ).encode()
    layer = await pusher.blob(session, repo, statement)
    config = json.dumps(
        {
            "architecture": "unknown",
            "os": "unknown",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": []},
        }
    ).encode()
    config_digest = await pusher.blob(session, repo, config)
    body = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": CONFIG_TYPE, "digest": config_digest, "size": len(config)},
        "layers": [
            {
                "mediaType": "application/vnd.in-toto+json",
                "digest": layer,
                "size": len(statement),
                "annotations": {"in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"},
            }
        ],
    }
    pushed = await pusher.manifest(session, repo, sha(json.dumps(body).encode()), body)
    return {
        "mediaType": OCI_MANIFEST,
        "digest": pushed.digest,
        "size": pushed.size,
        "platform": {"architecture": "unknown", "os": "unknown"},
        "annotations": {
            "vnd.docker.reference.digest": subject,
            "vnd.docker.reference.type": "attestation-manifest",
        },
    }


async def craft_component(
    pusher: OciPusher,
    session: aiohttp.ClientSession,
    repo: str,
    platforms: Sequence[str] = ("linux/amd64", "linux/arm64"),
    *,
    layer_bytes: int = 64 * 1024,
    tag: str = VERSION,
) -> Pushed:
    """A release index crafted through the API: one random layer per platform, each
    image with its attestation."""
    entries: list[dict[str, object]] = []
    attestations = []
    for platform in platforms:
        os_name, arch = platform.split("/")
        image = await pusher.image(
            session, repo, os=os_name, arch=arch, payload=os.urandom(layer_bytes)
        )
        entries.append(entry(image, os_name, arch))
        attestations.append(await attestation(pusher, session, repo, image.digest))
    return await pusher.index(session, repo, tag, entries + attestations)


def write_docker_config(directory: Path, auths: dict[str, tuple[str, str]]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    data = {
        "auths": {
            host: {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}
            for host, (user, password) in auths.items()
        }
    }
    (directory / "config.json").write_text(json.dumps(data))
    return directory
