"""Issue 12 item 9: the layers a mirror must hold. A layer is left out only when it names
its own download URLs, and the report says so; a "non-distributable" layer without URLs
is copied like any other (skopeo and regclient decide the same way).

Real registries started here: the lab registries refuse a manifest whose layer names URLs
without holding its blob (distribution's default), so the source and the mirror are
distribution registries configured with `validation.manifests.urls.allow`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import aiohttp

from jobs.domain.manifests import OCI_MANIFEST
from tests.conftest import REPO, Lab
from tests.support.distribution import distribution
from tests.support.oci_push import CONFIG_TYPE, OciPusher, digest
from tests.support.sync import VERSION, run_bot, write_docker_config

ALLOW_URLS = "validation: {manifests: {urls: {allow: ['^https://']}}}\n"
NONDISTRIBUTABLE = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
ORDINARY = "application/vnd.oci.image.layer.v1.tar+gzip"


async def test_issue12_item9_sync_copies_a_nondistributable_layer_and_reports_one_with_urls(
    lab: Lab, tmp_path: Path
) -> None:
    (tmp_path / "source").mkdir()
    (tmp_path / "mirror").mkdir()
    async with (
        distribution(tmp_path / "source", ALLOW_URLS) as source,
        distribution(tmp_path / "mirror", ALLOW_URLS) as mirror,
    ):
        pusher = OciPusher(source)
        config = json.dumps(
            {"os": "linux", "architecture": "amd64", "rootfs": {"type": "layers"}}
        ).encode()
        restricted = os.urandom(3000)  # only the registry has it: the mirror must too
        elsewhere = os.urandom(1500)  # downloaded from its URL: no registry holds it
        async with aiohttp.ClientSession() as session:
            config_digest = await pusher.blob(session, "rel/windows", config)
            restricted_digest = await pusher.blob(session, "rel/windows", restricted)
            body: dict[str, object] = {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": CONFIG_TYPE, "digest": config_digest, "size": len(config)},
                "layers": [
                    {
                        "mediaType": NONDISTRIBUTABLE,
                        "digest": restricted_digest,
                        "size": len(restricted),
                    },
                    {
                        "mediaType": ORDINARY,
                        "digest": digest(elsewhere),
                        "size": len(elsewhere),
                        "urls": ["https://downloads.example.com/layer.tar.gz"],
                    },
                ],
            }
            pushed = await pusher.manifest(session, "rel/windows", VERSION, body)
        settings = tmp_path / "aibrix.toml"
        settings.write_text(
            f'repository = "{source}/rel"\nplatforms = ["linux/amd64"]\n'
            f'[source]\npath = "{tmp_path}"\n[mirrors]\nm = "{mirror}/copy"\n'
            '[[components]]\nname = "windows"\n'
        )
        result = await run_bot(
            "sync",
            VERSION,
            "--to",
            "m",
            "--config",
            str(settings),
            env={
                "PYTHONPATH": str(REPO),
                "DOCKER_CONFIG": str(write_docker_config(tmp_path / "docker", {})),
            },
        )
        assert result.code == 0, result.stdout + result.stderr
        async with aiohttp.ClientSession() as session:

            async def held(digest_: str) -> int:
                url = f"http://{mirror}/v2/copy/windows/blobs/{digest_}"
                async with session.head(url) as response:
                    return response.status

            async with session.head(
                f"http://{mirror}/v2/copy/windows/manifests/{VERSION}",
                headers={"Accept": OCI_MANIFEST},
            ) as response:
                assert response.headers["Docker-Content-Digest"] == pushed.digest
            assert await held(restricted_digest) == 200  # copied: the mirror holds it
            assert await held(digest(elsewhere)) == 404  # left out, as its URLs say
    assert (
        "  - windows: 1 layer (1.5 kB) not copied: it names its own download URLs "
        "(a foreign layer), so the mirror does not hold it and pulls fetch it from there"
    ) in result.stdout
