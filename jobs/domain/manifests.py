"""OCI and Docker manifest models, parsed once at the edge from verified bytes.

Accepted: OCI image index, OCI image manifest, Docker manifest list v2 and Docker
image manifest v2. Schema 1 manifests are refused with a clear reason.

What a manifest is: its `mediaType` field, else the Content-Type it was served with when
that names a manifest type, else its content (`classify_manifest`): a registry or a
static file server may send `application/octet-stream` or nothing, and OCI lets the field
be absent. Content is read as regclient does: `manifests` makes an index, `config` and
`layers` an image manifest, Docker or OCI by the media types of what they list.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from jobs.domain.errors import InvalidInput
from jobs.domain.platforms import Platform, platform_from_json
from jobs.domain.references import InvalidReferenceError, validate_digest

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_SCHEMA1 = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)
KNOWN_UNSUPPORTED = ("application/vnd.oci.artifact.manifest.v1+json",)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
IMAGE_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
MANIFEST_TYPES = (*INDEX_TYPES, *IMAGE_TYPES, *DOCKER_SCHEMA1, *KNOWN_UNSUPPORTED)
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
_DOCKER_PREFIX = "application/vnd.docker."
MANIFEST_ACCEPT = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))

ATTESTATION_ANNOTATION = "vnd.docker.reference.type"
ATTESTATION_VALUE = "attestation-manifest"


class ManifestError(InvalidInput, ValueError):
    """Bytes that are not a manifest this tool understands."""


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def digest_of(data: bytes, algorithm: str) -> str:
    if algorithm not in ("sha256", "sha512"):
        # Not named: the algorithm can come from a registry's header.
        raise ManifestError("the digest's algorithm is neither sha256 nor sha512")
    return f"{algorithm}:" + hashlib.new(algorithm, data).hexdigest()


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)
    # Where the content may be downloaded from instead (a foreign or non-distributable
    # layer); a mirror copy leaves such a layer where it is.
    urls: tuple[str, ...] = ()

    @property
    def is_attestation(self) -> bool:
        if self.annotations.get(ATTESTATION_ANNOTATION) == ATTESTATION_VALUE:
            return True
        return self.platform is not None and self.platform.is_unknown


@dataclass(frozen=True)
class Manifest:
    media_type: str
    digest: str
    raw: bytes = field(repr=False)
    manifests: tuple[Descriptor, ...] = ()  # index entries
    config: Descriptor | None = None  # image manifests
    layers: tuple[Descriptor, ...] = ()

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES


def _descriptor(data: object, where: str) -> Descriptor:
    if not isinstance(data, dict):
        raise ManifestError(f"{where} is not an object")
    media_type = data.get("mediaType", "")
    digest = data.get("digest")
    size = data.get("size", 0)
    annotations = data.get("annotations") or {}
    if not isinstance(digest, str) or ":" not in digest:
        raise ManifestError(f"{where} has no digest")
    try:
        validate_digest(digest)
    except InvalidReferenceError:
        # Not shown: a digest is what the verdict prints, and this one is free text.
        raise ManifestError(f"{where} has a malformed digest") from None
    if not isinstance(media_type, str) or not isinstance(size, int) or size < 0:
        raise ManifestError(f"{where} has a bad mediaType or size")
    if not isinstance(annotations, dict):
        raise ManifestError(f"{where} has bad annotations")
    urls = data.get("urls") or []
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise ManifestError(f"{where} has a bad 'urls' list")
    return Descriptor(
        media_type=media_type,
        digest=digest,
        size=size,
        platform=platform_from_json(data.get("platform")),
        annotations={str(k): str(v) for k, v in annotations.items()},
        urls=tuple(urls),
    )


def _media_types(items: object) -> list[str]:
    if not isinstance(items, list):
        return []
    return [str(i.get("mediaType") or "") for i in items if isinstance(i, dict)]


def classify_manifest(data: Mapping[str, object]) -> str | None:
    """The media type of a manifest that does not name one (no `mediaType`, no manifest
    Content-Type), from its content; None when it is no manifest this tool knows.

    - `schemaVersion` 1 or `fsLayers`: Docker schema 1 (refused by the caller).
    - a `manifests` list: an index; a Docker manifest list when every entry is a Docker
      type, else an OCI index.
    - a `config` object (with `layers`): an image manifest; Docker when its config is a
      Docker image config, or (no config type) every layer is a Docker type; else OCI."""
    if data.get("schemaVersion") == 1 or "fsLayers" in data:
        return DOCKER_SCHEMA1[0]
    if isinstance(data.get("manifests"), list):
        entries = _media_types(data["manifests"])
        docker = bool(entries) and all(t.startswith(_DOCKER_PREFIX) for t in entries)
        return DOCKER_LIST if docker else OCI_INDEX
    config = data.get("config")
    if isinstance(config, dict):
        config_type = config.get("mediaType") or ""
        if config_type == DOCKER_CONFIG:
            return DOCKER_MANIFEST
        layers = _media_types(data.get("layers"))
        if not config_type and layers and all(t.startswith(_DOCKER_PREFIX) for t in layers):
            return DOCKER_MANIFEST
        return OCI_MANIFEST
    return None


def parse_manifest(raw: bytes, digest: str, content_type: str = "") -> Manifest:
    """Parse manifest bytes whose digest the caller has already verified."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ManifestError("the manifest is not JSON") from None
    if not isinstance(data, dict):
        raise ManifestError("the manifest is not a JSON object")
    served = content_type.split(";")[0].strip().lower()
    media_type = data.get("mediaType") or (served if served in MANIFEST_TYPES else None)
    if media_type is None:
        media_type = classify_manifest(data) or ""
    if media_type in DOCKER_SCHEMA1 or data.get("schemaVersion") == 1:
        raise ManifestError(
            "Docker schema 1 manifests are not supported; push with a current client"
        )
    if media_type in INDEX_TYPES:
        entries = data.get("manifests")
        if not isinstance(entries, list):
            raise ManifestError("the index has no 'manifests' list")
        return Manifest(
            media_type,
            digest,
            raw,
            manifests=tuple(_descriptor(e, f"manifests[{i}]") for i, e in enumerate(entries)),
        )
    if media_type in IMAGE_TYPES:
        layers = data.get("layers") or []
        if not isinstance(layers, list):
            raise ManifestError("the manifest's 'layers' is not a list")
        return Manifest(
            media_type,
            digest,
            raw,
            config=_descriptor(data.get("config"), "config"),
            layers=tuple(_descriptor(e, f"layers[{i}]") for i, e in enumerate(layers)),
        )
    if media_type in KNOWN_UNSUPPORTED:
        raise ManifestError(f"unsupported manifest media type {media_type}")
    # Any other value is the registry's free text (or its Content-Type header): not shown.
    raise ManifestError("the manifest is neither an image index nor an image manifest")


def parse_config_platform(raw: bytes) -> Platform:
    """The platform an image config says it is (`os`, `architecture`, `variant`)."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ManifestError("the image config is not JSON") from None
    platform = platform_from_json(data)
    if platform is None:
        raise ManifestError("the image config has no os/architecture")
    return platform
