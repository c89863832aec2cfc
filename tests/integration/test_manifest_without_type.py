"""Issue 12 item 10: a manifest served without a Content-Type and without `mediaType` is
classified by its content: `aibrix-bot inspect` calls a Docker v2 schema 2 manifest whose
config has the Docker config type Docker, not OCI.

The registry is a real HTTP server started here (the standard library's, which sends only
the headers it is told to: aiohttp's always adds a Content-Type), serving the registry
API paths of one image."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from jobs.domain.manifests import DOCKER_MANIFEST
from tests.conftest import REPO
from tests.support.sync import run_bot

REPOSITORY = "ns/untyped"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


CONFIG = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}}).encode()
LAYER = b"layer bytes"
# What docker pushes, less the mediaType field.
MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "config": {"mediaType": DOCKER_CONFIG, "digest": _digest(CONFIG), "size": len(CONFIG)},
        "layers": [
            {
                "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "digest": _digest(LAYER),
                "size": len(LAYER),
            }
        ],
    }
).encode()
SERVED = {
    "/v2/": b"{}",
    f"/v2/{REPOSITORY}/manifests/v1": MANIFEST,
    f"/v2/{REPOSITORY}/manifests/{_digest(MANIFEST)}": MANIFEST,
    f"/v2/{REPOSITORY}/blobs/{_digest(CONFIG)}": CONFIG,
}


class _Untyped(BaseHTTPRequestHandler):
    """Answers with a body, its length and digest, and no Content-Type."""

    def _answer(self, with_body: bool) -> None:
        body = SERVED.get(self.path)
        if body is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Docker-Content-Digest", _digest(body))
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer(True)

    def do_HEAD(self) -> None:
        self._answer(False)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def untyped_registry() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Untyped)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


async def test_issue12_item10_inspect_calls_an_untyped_docker_manifest_docker(
    untyped_registry: str,
) -> None:
    result = await run_bot(
        "inspect",
        "--json",
        "--require",
        "linux/amd64",
        f"{untyped_registry}/{REPOSITORY}:v1",
        env={"PYTHONPATH": str(REPO), "AIBRIX_CONFIG": ""},
    )
    assert result.code == 0, result.stdout + result.stderr
    [shown] = json.loads(result.stdout)
    assert shown["media_type"] == DOCKER_MANIFEST
    assert shown["digest"] == _digest(MANIFEST)
    assert shown["verdict"] == "ok"
    assert [p["config_platform"] for p in shown["platforms"]] == ["linux/amd64"]
