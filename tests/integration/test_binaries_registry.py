"""The binary check against the real lab registry (issue 13 item 8), on images crafted
through the distribution API: several layers with whiteouts, an interpreter outside the
PATH (a second read of the layers), a zstd layer, a layer that is not a tar. Layers are
streamed from the registry exactly as after a merge."""

from __future__ import annotations

import json
from collections.abc import Mapping

import aiohttp

from jobs.domain import messages
from jobs.domain.elf import BinaryStatus
from jobs.registry.client import RegistryClient
from jobs.usecases.binaries import check_index
from tests.conftest import Lab
from tests.support.elf_files import ET_DYN, Member, elf_header, tar_bytes
from tests.support.oci_push import CONFIG_TYPE, OciPusher, Pushed, entry
from tests.support.oci_push import digest as digest_of

GZIP_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
ZSTD_LAYER = "application/vnd.oci.image.layer.v1.tar+zstd"


async def push_image(
    pusher: OciPusher,
    session: aiohttp.ClientSession,
    repo: str,
    arch: str,
    layers: list[tuple[str, bytes]],
    run: Mapping[str, object],
) -> Pushed:
    descriptors = []
    for media_type, blob in layers:
        digest = await pusher.blob(session, repo, blob)
        descriptors.append({"mediaType": media_type, "digest": digest, "size": len(blob)})
    config = json.dumps(
        {"os": "linux", "architecture": arch, "config": run, "rootfs": {"type": "layers"}}
    ).encode()
    config_digest = await pusher.blob(session, repo, config)
    body = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": CONFIG_TYPE, "digest": config_digest, "size": len(config)},
        "layers": descriptors,
    }
    return await pusher.manifest(session, repo, digest_of(json.dumps(body).encode()), body)


async def test_layers_whiteouts_and_a_second_read_over_http(lab: Lab, unique_repo: str) -> None:
    pusher = OciPusher(lab.registry)
    repo = f"{unique_repo}/app"
    run = {"Entrypoint": ["/app/run"], "Env": ["PATH=/usr/bin:/bin"]}
    async with aiohttp.ClientSession() as session:
        images = {}
        for arch, wrong in (("amd64", "amd64"), ("arm64", "amd64")):
            base = tar_bytes(
                [
                    Member("bin/", kind="dir"),
                    Member("bin/sh", elf_header(arch)),
                    Member("opt/tools/old", elf_header("riscv64")),
                    Member("app/run", b"#!/opt/venv/bin/python -u\n"),
                ]
            )
            upper = tar_bytes(
                [
                    Member("opt/tools/.wh.old"),
                    Member("opt/tools/new", elf_header(arch, e_type=ET_DYN)),
                    # The interpreter the entrypoint names, outside every PATH directory.
                    Member("opt/venv/bin/python", elf_header(wrong)),
                ],
                compress=False,
            )
            images[arch] = await push_image(
                pusher, session, repo, arch, [(GZIP_LAYER, base), (GZIP_LAYER, upper)], run
            )
        index = await pusher.index(
            session,
            repo,
            "v1.0.0",
            [entry(images["amd64"], "linux", "amd64"), entry(images["arm64"], "linux", "arm64")],
        )
    async with RegistryClient() as client:
        checks = await check_index(client, f"{lab.registry}/{repo}", index.digest, ["/opt/tools"])
    assert [str(c.platform) for c in checks] == ["linux/amd64", "linux/arm64"]
    amd, arm = checks
    assert amd.ok
    assert {(f.path, f.status) for f in amd.checked} == {
        ("/opt/venv/bin/python", BinaryStatus.OK),
        ("/opt/tools/new", BinaryStatus.OK),
    }
    assert messages.binary_problems("app v1.0.0", checks) == [
        "app v1.0.0: the linux/arm64 image's /opt/venv/bin/python (interpreter of /app/run) "
        "is built for x86-64, not arm64"
    ]
    assert [f.path for f in arm.checked if f.status is BinaryStatus.OK] == ["/opt/tools/new"]


async def test_layers_that_cannot_be_read_block_with_the_reason(lab: Lab, unique_repo: str) -> None:
    pusher = OciPusher(lab.registry)
    repo = f"{unique_repo}/app"
    run = {"Cmd": ["/bin/sh"]}
    async with aiohttp.ClientSession() as session:
        zstd = await push_image(
            pusher, session, repo, "amd64", [(ZSTD_LAYER, b"\x28\xb5\x2f\xfd" + bytes(40))], run
        )
        not_tar = await push_image(
            pusher, session, repo, "arm64", [(GZIP_LAYER, b"plain text, not a layer")], run
        )
        index = await pusher.index(
            session,
            repo,
            "v1.0.0",
            [entry(zstd, "linux", "amd64"), entry(not_tar, "linux", "arm64")],
        )
    async with RegistryClient() as client:
        checks = await check_index(client, f"{lab.registry}/{repo}", index.digest, ())
    assert messages.binary_problems("app v1.0.0", checks) == [
        "app v1.0.0: the linux/amd64 image's binaries could not be checked: a layer is "
        "zstd-compressed, which this check cannot read",
        "app v1.0.0: the linux/arm64 image's binaries could not be checked: a layer is not a "
        "valid tar archive",
    ]
