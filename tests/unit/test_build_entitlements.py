"""A build asks for no entitlements (issue 14 item 1): no `--allow` (network.host,
security.insecure), no host network, no host entries, secrets or SSH agent, whatever the
request. A build step gets what the daemon gives every container, and a rootless daemon
gives less."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.domain.platforms import parse_platform
from jobs.tools.build import BuildRequest, _build_kwargs, redirect_base_images

# Every argument a build may pass to python-on-whales' docker.buildx.build.
ALLOWED = frozenset(
    {
        "file",
        "platforms",
        "build_args",
        "metadata_file",
        "progress",
        "stream_logs",
        "provenance",
        "target",
        "builder",
        "output",
        "tags",
        "push",
        "build_contexts",
    }
)
WIDENING = frozenset({"allow", "network", "add_hosts", "secrets", "ssh"})


def _request(tmp_path: Path, *, push_by_digest: bool, extras: bool) -> BuildRequest:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM golang:1.22 AS build\nRUN true\n")
    return BuildRequest(
        context=tmp_path,
        dockerfile=dockerfile,
        platform=parse_platform("linux/arm64"),
        image="127.0.0.1:5000/aibrix/runtime",
        staging_tag="v0.1.0-arm64",
        metadata_file=tmp_path / "meta" / "metadata.json",
        build_args={"BASE_IMAGE": "127.0.0.1:5000/lab/base:latest"},
        target="build" if extras else None,
        builder="rootless" if extras else None,
        push_by_digest=push_by_digest,
        base_images={"golang:1.22": "127.0.0.1:5000/lab/golang:1.22"} if extras else {},
    )


@pytest.mark.parametrize("push_by_digest", [False, True])
@pytest.mark.parametrize("extras", [False, True])
@pytest.mark.parametrize("named_contexts", [False, True])
def test_a_build_requests_no_entitlements(
    tmp_path: Path, push_by_digest: bool, extras: bool, named_contexts: bool
) -> None:
    request = _request(tmp_path, push_by_digest=push_by_digest, extras=extras)
    arguments = {**_build_kwargs(request), **redirect_base_images(request, named_contexts)}
    assert set(arguments) <= ALLOWED, set(arguments) - ALLOWED
    assert not set(arguments) & WIDENING
    # An output spec could carry its own flags; none of them widens what a step may do.
    output = arguments.get("output") or {}
    assert all(
        key in {"type", "name", "push-by-digest", "name-canonical", "push"} for key in output
    )
