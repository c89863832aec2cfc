"""Craft images straight through the OCI distribution API, for cases Buildx cannot make
with the docker driver (attestation manifests, lying index entries, arm/v7, deleted
children). Real HTTP against the real lab registry; nothing is faked."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass

import aiohttp

from jobs.domain.manifests import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST

LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Pushed:
    digest: str
    size: int
    media_type: str


class OciPusher:
    def __init__(self, registry: str, user: str | None = None, password: str | None = None):
        self.base = f"http://{registry}"
        self.headers: dict[str, str] = {}
        if user is not None and password is not None:
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            self.headers["Authorization"] = f"Basic {token}"

    async def blob(self, session: aiohttp.ClientSession, repo: str, data: bytes) -> str:
        d = digest(data)
        async with session.post(f"{self.base}/v2/{repo}/blobs/uploads/", headers=self.headers) as r:
            assert r.status == 202, await r.text()
            location = r.headers["Location"]
        if location.startswith("/"):
            location = self.base + location
        sep = "&" if "?" in location else "?"
        async with session.put(
            f"{location}{sep}digest={d}",
            data=data,
            headers={**self.headers, "Content-Type": "application/octet-stream"},
        ) as r:
            assert r.status == 201, await r.text()
        return d

    async def manifest(
        self, session: aiohttp.ClientSession, repo: str, ref: str, body: dict[str, object]
    ) -> Pushed:
        raw = json.dumps(body).encode()
        media_type = str(body["mediaType"])
        async with session.put(
            f"{self.base}/v2/{repo}/manifests/{ref}",
            data=raw,
            headers={**self.headers, "Content-Type": media_type},
        ) as r:
            assert r.status == 201, await r.text()
        return Pushed(digest(raw), len(raw), media_type)

    async def delete_manifest(self, session: aiohttp.ClientSession, repo: str, d: str) -> None:
        async with session.delete(
            f"{self.base}/v2/{repo}/manifests/{d}", headers=self.headers
        ) as r:
            assert r.status == 202, await r.text()

    async def image(
        self,
        session: aiohttp.ClientSession,
        repo: str,
        *,
        os: str,
        arch: str,
        variant: str = "",
        oci: bool = True,
        tag: str | None = None,
        payload: bytes = b"layer",
        os_version: str = "",
        os_features: tuple[str, ...] = (),
    ) -> Pushed:
        """A one-layer image whose config says os/arch/variant (and os.version and
        os.features when given), pushed by digest (or tag)."""
        layer = payload + f" {os}/{arch}/{variant}".encode()
        if os_version or os_features:  # other images keep the layer bytes they always had
            layer += f" {os_version} {'+'.join(os_features)}".encode()
        layer_digest = await self.blob(session, repo, layer)
        config: dict[str, object] = {
            "os": os,
            "architecture": arch,
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
            "config": {},
        }
        if variant:
            config["variant"] = variant
        if os_version:
            config["os.version"] = os_version
        if os_features:
            config["os.features"] = list(os_features)
        config_raw = json.dumps(config).encode()
        config_digest = await self.blob(session, repo, config_raw)
        body = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST if oci else DOCKER_MANIFEST,
            "config": {
                "mediaType": CONFIG_TYPE
                if oci
                else "application/vnd.docker.container.image.v1+json",
                "digest": config_digest,
                "size": len(config_raw),
            },
            "layers": [{"mediaType": LAYER_TYPE, "digest": layer_digest, "size": len(layer)}],
        }
        raw = json.dumps(body).encode()
        return await self.manifest(session, repo, tag or digest(raw), body)

    async def attestation(
        self, session: aiohttp.ClientSession, repo: str, subject: str
    ) -> tuple[Pushed, dict[str, object]]:
        """An in-toto attestation manifest as buildx writes it, and its index entry."""
        statement = json.dumps({"_type": "https://in-toto.io/Statement/v0.1"}).encode()
        layer_digest = await self.blob(session, repo, statement)
        config_raw = b'{"architecture":"unknown","os":"unknown","config":{},"rootfs":{"type":"layers","diff_ids":[]}}'
        config_digest = await self.blob(session, repo, config_raw)
        body = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": CONFIG_TYPE, "digest": config_digest, "size": len(config_raw)},
            "layers": [
                {
                    "mediaType": "application/vnd.in-toto+json",
                    "digest": layer_digest,
                    "size": len(statement),
                    "annotations": {
                        "in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"
                    },
                }
            ],
        }
        raw = json.dumps(body).encode()
        pushed = await self.manifest(session, repo, digest(raw), body)
        entry = {
            "mediaType": OCI_MANIFEST,
            "digest": pushed.digest,
            "size": pushed.size,
            "platform": {"architecture": "unknown", "os": "unknown"},
            "annotations": {
                "vnd.docker.reference.digest": subject,
                "vnd.docker.reference.type": "attestation-manifest",
            },
        }
        return pushed, entry

    async def index(
        self,
        session: aiohttp.ClientSession,
        repo: str,
        tag: str,
        entries: list[dict[str, object]],
        *,
        oci: bool = True,
    ) -> Pushed:
        body = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX if oci else DOCKER_LIST,
            "manifests": entries,
        }
        return await self.manifest(session, repo, tag, body)


def entry(
    pushed: Pushed,
    os: str,
    arch: str,
    variant: str = "",
    *,
    os_version: str = "",
    os_features: tuple[str, ...] = (),
) -> dict[str, object]:
    platform: dict[str, object] = {"os": os, "architecture": arch}
    if variant:
        platform["variant"] = variant
    if os_version:
        platform["os.version"] = os_version
    if os_features:
        platform["os.features"] = list(os_features)
    return {
        "mediaType": pushed.media_type,
        "digest": pushed.digest,
        "size": pushed.size,
        "platform": platform,
    }
