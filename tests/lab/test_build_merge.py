"""Per-platform builds and the merge from pinned digests, with real Buildx and registry."""

from __future__ import annotations

import json
import socket
import uuid
from pathlib import Path

import pytest

from jobs.domain.platforms import parse_platform
from jobs.registry.client import RegistryClient
from jobs.registry.inspection import compare_with_builds, verify_published
from jobs.tools import build
from jobs.tools.build import (
    BuilderError,
    BuildError,
    BuildRequest,
    Progress,
    check_builder,
    parse_progress,
    run_build,
)
from jobs.tools.merge import MergeError, merge_sources, write_index
from tests.conftest import Lab

AMD = parse_platform("linux/amd64")
ARM = parse_platform("linux/arm64")
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("#5 [2/4] RUN echo hi", Progress("building", 2, 4)),
        ("#7 [builder 3/5] COPY . .", Progress("building", 3, 5)),
        ("#9 pushing layers", Progress("pushing")),
        ("#9 exporting to image", Progress("pushing")),
        ("#3 [internal] load metadata", None),
        ("random text [1/2]", None),
    ],
)
def test_parse_progress(line: str, expected: Progress | None) -> None:
    assert parse_progress(line) == expected


def test_merge_sources_needs_every_required_platform() -> None:
    assert merge_sources("r.io/a", {ARM: D2, AMD: D1}, [AMD, ARM]) == [
        f"r.io/a@{D1}",
        f"r.io/a@{D2}",
    ]
    with pytest.raises(MergeError) as error:
        merge_sources("r.io/a", {ARM: D2}, [AMD, ARM])
    assert "linux/amd64" in str(error.value) and "not written" in str(error.value)
    with pytest.raises(ValueError):
        merge_sources("r.io/a", {AMD: "sha256:short", ARM: D2}, [AMD, ARM])


def test_write_index_refuses_unpinned_sources() -> None:
    with pytest.raises(MergeError):
        write_index("127.0.0.1:1/a", "v1", ["127.0.0.1:1/a:v1-amd64"])


def test_builder_refuses_a_platform_it_cannot_build(docker_available: None) -> None:
    with pytest.raises(BuilderError) as error:
        check_builder(None, parse_platform("windows/amd64"))
    assert "cannot build windows/amd64" in str(error.value)
    assert check_builder(None, ARM).driver == "docker"
    with pytest.raises(BuilderError):
        check_builder("no-such-builder", AMD)


def test_a_docker_engine_that_never_answers_stops_the_builder_check_with_its_reason(
    docker_available: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real docker CLI against a socket that takes the connection and never replies,
    as a stuck engine (or a CLI stuck starting its plugin) would: the check ends with a
    reason instead of leaving the worker starting forever with nothing in its log."""
    path = tmp_path / "stuck.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen(16)  # connections wait in the backlog; nothing ever reads them
        monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
        monkeypatch.setattr(build, "BUILDER_CHECK_SECONDS", 3.0)
        with pytest.raises(BuilderError) as error:
            check_builder(None, AMD)
    message = str(error.value)
    assert "did not answer within 3 s" in message and "(default)" in message, message


def _context(tmp_path: Path, lab: Lab, body: str) -> Path:
    (tmp_path / "Dockerfile").write_text(f"FROM {lab.base_image}\n{body}")
    return tmp_path


async def test_build_push_merge_verify(lab: Lab, docker_available: None, tmp_path: Path) -> None:
    context = _context(tmp_path, lab, "RUN uname -m > /arch\nRUN cat /arch\n")
    image = f"{lab.registry}/merge-{uuid.uuid4().hex[:8]}/runtime"
    builds = {}
    for platform in (AMD, ARM):
        seen: list[Progress] = []
        result = run_build(
            BuildRequest(
                context=context,
                dockerfile=context / "Dockerfile",
                platform=platform,
                image=image,
                staging_tag=f"v1.0.0-{platform.architecture}",
                metadata_file=tmp_path / f"meta-{platform.architecture}.json",
            ),
            on_progress=seen.append,
        )
        assert Progress("building", 3, 3) in seen  # FROM and two RUN steps
        assert result.pushed_as == f"{image}:v1.0.0-{platform.architecture}"
        builds[platform] = result.digest
    write_index(image, "v1.0.0", merge_sources(image, builds, [AMD, ARM]))
    async with RegistryClient() as client:
        published = await verify_published(client, image, "v1.0.0", builds, [AMD, ARM])
        assert published.ok, published
        assert {e.platform: e.digest for e in published.inspection.verdict.entries} == builds
        # An index that carries other digests than were built is caught.
        wrong = {AMD: builds[ARM], ARM: builds[ARM]}
        assert compare_with_builds(published.inspection, wrong) == (
            f"linux/amd64 is {builds[AMD]} in the registry but {builds[ARM]} was built",
        )


def test_failed_build_reports_its_log_tail(
    lab: Lab, docker_available: None, tmp_path: Path
) -> None:
    context = _context(
        tmp_path, lab, 'RUN echo "no arm support here" >&2 && [ "$(uname -m)" != aarch64 ]\n'
    )
    with pytest.raises(BuildError) as error:
        run_build(
            BuildRequest(
                context=context,
                dockerfile=context / "Dockerfile",
                platform=ARM,
                image=f"{lab.registry}/fail-{uuid.uuid4().hex[:8]}/x",
                staging_tag="v1.0.0-arm64",
                metadata_file=tmp_path / "meta.json",
            )
        )
    assert any("no arm support here" in line for line in error.value.log_tail)
    assert "no arm support here" in str(error.value)
    assert not (tmp_path / "meta.json").exists() or "containerimage.digest" not in json.loads(
        (tmp_path / "meta.json").read_text() or "{}"
    )


def test_failure_summary_names_the_step_and_its_output() -> None:
    from jobs.tools.build import failure_summary

    tail = [
        "#10 [6/9] RUN echo ok",
        "#10 CACHED",
        '#11 [7/9] RUN [ "$(uname -m)" != "aarch64" ]',
        "#11 0.373 runtime: unsupported on aarch64",
        "#11 ERROR: executor failed running [/bin/sh -c ...]: exit code: 1",
        "ERROR: failed to solve: executor failed",
    ]
    assert failure_summary(tail) == "step 7/9 failed: runtime: unsupported on aarch64"
    assert failure_summary(["#3 [internal] load", "#3 ERROR: no such file"]) == "no such file"
    assert failure_summary(["nothing useful"]) is None
