"""Issue 12 item 10: a manifest that names no media type (no `mediaType`, no manifest
Content-Type) is classified by its content, as regclient reads one; and descriptors keep
their `urls` (item 9 decides on them)."""

from __future__ import annotations

import json

import pytest

from jobs.domain.manifests import (
    DOCKER_CONFIG,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    DOCKER_SCHEMA1,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    ManifestError,
    classify_manifest,
    parse_manifest,
    sha256_digest,
)

D = "sha256:" + "a" * 64
E = "sha256:" + "b" * 64
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def image(config_type: str | None, *layer_types: str) -> dict[str, object]:
    config: dict[str, object] = {"digest": D, "size": 10}
    if config_type is not None:
        config["mediaType"] = config_type
    return {
        "schemaVersion": 2,
        "config": config,
        "layers": [{"mediaType": t, "digest": E, "size": 5} for t in layer_types],
    }


def listing(*entry_types: str) -> dict[str, object]:
    return {
        "schemaVersion": 2,
        "manifests": [{"mediaType": t, "digest": D, "size": 5} for t in entry_types],
    }


CASES: list[tuple[str, dict[str, object], str | None]] = [
    ("docker image: Docker config type", image(DOCKER_CONFIG, DOCKER_LAYER), DOCKER_MANIFEST),
    ("docker config, OCI layers: still Docker", image(DOCKER_CONFIG, OCI_LAYER), DOCKER_MANIFEST),
    ("docker image without layers", image(DOCKER_CONFIG), DOCKER_MANIFEST),
    ("oci image", image(OCI_CONFIG, OCI_LAYER), OCI_MANIFEST),
    ("oci config, Docker layers: OCI", image(OCI_CONFIG, DOCKER_LAYER), OCI_MANIFEST),
    ("artifact config type: OCI", image("application/vnd.cncf.helm.config.v1+json"), OCI_MANIFEST),
    ("no config type, Docker layers", image(None, DOCKER_LAYER, DOCKER_LAYER), DOCKER_MANIFEST),
    ("no config type, mixed layers", image(None, DOCKER_LAYER, OCI_LAYER), OCI_MANIFEST),
    ("no config type, no layers", image(None), OCI_MANIFEST),
    ("index of OCI images", listing(OCI_MANIFEST, OCI_MANIFEST), OCI_INDEX),
    ("index of Docker images", listing(DOCKER_MANIFEST, DOCKER_MANIFEST), DOCKER_LIST),
    ("index of mixed entries", listing(DOCKER_MANIFEST, OCI_MANIFEST), OCI_INDEX),
    ("empty index", listing(), OCI_INDEX),
    ("schema 1", {"schemaVersion": 1, "fsLayers": []}, DOCKER_SCHEMA1[0]),
    ("fsLayers alone", {"fsLayers": [{"blobSum": D}]}, DOCKER_SCHEMA1[0]),
    ("neither", {"schemaVersion": 2, "blobs": []}, None),
    ("config not an object", {"schemaVersion": 2, "config": "x", "layers": []}, None),
]


@pytest.mark.parametrize(("case", "data", "expected"), CASES, ids=[c[0] for c in CASES])
def test_issue12_item10_classify_by_content(
    case: str, data: dict[str, object], expected: str | None
) -> None:
    assert classify_manifest(data) == expected


@pytest.mark.parametrize("content_type", ["", "application/octet-stream", "text/plain"])
def test_issue12_item10_a_docker_manifest_served_without_its_type_is_docker(
    content_type: str,
) -> None:
    raw = json.dumps(image(DOCKER_CONFIG, DOCKER_LAYER)).encode()
    manifest = parse_manifest(raw, sha256_digest(raw), content_type)
    assert manifest.media_type == DOCKER_MANIFEST and not manifest.is_index
    assert manifest.config is not None and manifest.config.media_type == DOCKER_CONFIG


def test_issue12_item10_the_field_and_a_manifest_content_type_still_win() -> None:
    raw = json.dumps({**image(DOCKER_CONFIG, DOCKER_LAYER), "mediaType": OCI_MANIFEST}).encode()
    assert parse_manifest(raw, sha256_digest(raw)).media_type == OCI_MANIFEST
    bare = json.dumps(image(DOCKER_CONFIG, DOCKER_LAYER)).encode()
    served = parse_manifest(bare, sha256_digest(bare), f"{OCI_MANIFEST}; charset=utf-8")
    assert served.media_type == OCI_MANIFEST
    docker_list = json.dumps(listing(DOCKER_MANIFEST)).encode()
    assert parse_manifest(docker_list, sha256_digest(docker_list)).is_index


def test_issue12_item10_content_that_is_no_manifest_is_refused_without_echoing_it() -> None:
    raw = json.dumps({"schemaVersion": 2, "mediaType": "", "blobs": []}).encode()
    with pytest.raises(ManifestError, match="neither an image index nor an image manifest"):
        parse_manifest(raw, sha256_digest(raw), "application/x-secret-looking-type")


def test_issue12_item9_descriptors_keep_their_urls() -> None:
    layer = {"mediaType": OCI_LAYER, "digest": E, "size": 5, "urls": ["https://a.example/l"]}
    raw = json.dumps({**image(OCI_CONFIG), "mediaType": OCI_MANIFEST, "layers": [layer]}).encode()
    [parsed] = parse_manifest(raw, sha256_digest(raw)).layers
    assert parsed.urls == ("https://a.example/l",)
    bad = json.dumps({**image(OCI_CONFIG), "layers": [{**layer, "urls": "https://x"}]}).encode()
    with pytest.raises(ManifestError, match="bad 'urls' list"):
        parse_manifest(bad, sha256_digest(bad))
