"""The binary architecture check (issue 13 item 8) and base images from a mirror (item 9),
with real Buildx, QEMU, the lab registry, Redis and workers.

The Dockerfile is AIBrix's gateway-plugins pattern of #1942: global `ARG TARGETOS=linux`
and `ARG TARGETARCH=amd64` defaults and `FROM --platform=${TARGETOS}/${TARGETARCH}` on its
stages. The global default overrides the platform Buildx passes, so the arm64 build
"compiles" amd64 (here: copies the amd64 binary its TARGETARCH picks) from amd64 bases,
while the index entry and the image config still say arm64. The binaries are ELF headers
written by the test (the check reads only the header; nothing runs them).

Every Dockerfile says `FROM busybox:1.36`, which cannot be pulled here: the builds work only
because the configuration maps it to the lab's base image.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.domain import messages
from jobs.domain.elf import BinaryStatus
from jobs.domain.platforms import parse_platform
from jobs.domain.release import State
from jobs.registry.client import RegistryClient
from jobs.registry.inspection import verify_published
from jobs.tools.build import BuildError, BuildRequest, run_build
from jobs.tools.merge import merge_sources, write_index
from jobs.usecases.binaries import check_index
from tests.conftest import Lab
from tests.support.elf_files import elf_header
from tests.support.pipeline import Setup, toml_config

AMD = parse_platform("linux/amd64")
ARM = parse_platform("linux/arm64")

# AIBrix #1942, as it was: the global defaults win over the platform Buildx passes.
BROKEN = """\
ARG TARGETOS=linux
ARG TARGETARCH=amd64
FROM --platform=${TARGETOS}/${TARGETARCH} busybox:1.36 AS builder
ARG TARGETARCH
WORKDIR /workspace
COPY bin/ /workspace/bin/
# Stands in for `GOARCH=${TARGETARCH} go build -o gateway-plugins`.
RUN cp "bin/gateway-plugins-${TARGETARCH}" gateway-plugins
FROM --platform=${TARGETOS}/${TARGETARCH} busybox:1.36
COPY --from=builder /workspace/gateway-plugins /gateway-plugins
COPY start.sh /start.sh
ENTRYPOINT ["/gateway-plugins"]
"""

# The fix (#1945): no global defaults; Buildx's platform decides. (No global `ARG TARGETARCH`
# at all: BuildKit v0.8, Docker 20.10's, reads a bare global declaration as empty.)
FIXED = """\
FROM busybox:1.36 AS builder
ARG TARGETARCH
WORKDIR /workspace
COPY bin/ /workspace/bin/
RUN cp "bin/gateway-plugins-${TARGETARCH}" gateway-plugins
FROM busybox:1.36
COPY --from=builder /workspace/gateway-plugins /gateway-plugins
COPY start.sh /start.sh
ENTRYPOINT ["/start.sh"]
"""


def project(root: Path) -> Path:
    """A source tree with both Dockerfiles and a binary per architecture."""
    (root / "bin").mkdir(parents=True)
    for arch in ("amd64", "arm64"):
        (root / "bin" / f"gateway-plugins-{arch}").write_bytes(elf_header(arch))
    # A `#!` entrypoint: followed to its interpreter (busybox, through /bin/sh).
    (root / "start.sh").write_text('#!/bin/sh\nexec /gateway-plugins "$@"\n')
    (root / "Dockerfile.broken").write_text(BROKEN)
    (root / "Dockerfile.fixed").write_text(FIXED)
    return root


def build_and_merge(lab: Lab, root: Path, dockerfile: str, image: str, tmp: Path) -> str:
    builds = {}
    for platform in (AMD, ARM):
        result = run_build(
            BuildRequest(
                context=root,
                dockerfile=root / dockerfile,
                platform=platform,
                image=image,
                staging_tag=f"v0.7.0-{platform.architecture}",
                metadata_file=tmp / f"{dockerfile}-{platform.architecture}" / "meta.json",
                base_images={"busybox:1.36": lab.base_image},
            )
        )
        builds[platform] = result.digest
    write_index(image, "v0.7.0", merge_sources(image, builds, [AMD, ARM]))
    return image


async def test_amd64_binaries_behind_an_arm64_label_are_caught_with_their_path(
    lab: Lab, docker_available: None, tmp_path: Path, unique_repo: str
) -> None:
    root = project(tmp_path / "src")
    for name in ("broken", "fixed"):
        (tmp_path / name).mkdir()
    broken = build_and_merge(
        lab, root, "Dockerfile.broken", f"{lab.registry}/{unique_repo}/broken", tmp_path / "broken"
    )
    fixed = build_and_merge(
        lab, root, "Dockerfile.fixed", f"{lab.registry}/{unique_repo}/fixed", tmp_path / "fixed"
    )
    async with RegistryClient() as client:
        published = await verify_published(client, broken, "v0.7.0", {}, [AMD, ARM])
        # The labels are right: the platform gate alone passes the broken image.
        assert published.inspection.verdict.ok, published.inspection.verdict
        digest = published.inspection.digest
        assert digest is not None
        checks = await check_index(client, broken, digest, ())
        by_platform = {c.platform: c for c in checks}
        assert by_platform[AMD].ok
        [wrong] = by_platform[ARM].problems
        assert (wrong.path, wrong.status, wrong.via) == (
            "/gateway-plugins",
            BinaryStatus.MISMATCH,
            "entrypoint",
        )
        assert messages.binary_problems("gateway-plugins v0.7.0", checks) == [
            "gateway-plugins v0.7.0: the linux/arm64 image's /gateway-plugins (entrypoint) is "
            "built for x86-64, not arm64"
        ]

        fixed_index = await verify_published(client, fixed, "v0.7.0", {}, [AMD, ARM])
        assert fixed_index.inspection.digest is not None
        good = await check_index(client, fixed, fixed_index.inspection.digest, ["/gateway-plugins"])
        assert [c.ok for c in good] == [True, True]
        # The script entrypoint led to busybox, and the configured path was judged too.
        arm = next(c for c in good if c.platform == ARM)
        assert {(f.path, f.via) for f in arm.checked} == {
            ("/bin/busybox", "interpreter of /start.sh"),
            ("/gateway-plugins", "configured path /gateway-plugins"),
        }


def test_from_an_unpullable_image_builds_only_through_the_mapping(
    lab: Lab, docker_available: None, tmp_path: Path, unique_repo: str
) -> None:
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Dockerfile").write_text("FROM busybox:1.36\nRUN uname -m > /arch\n")
    request = BuildRequest(
        context=tmp_path / "ctx",
        dockerfile=tmp_path / "ctx" / "Dockerfile",
        platform=ARM,
        image=f"{lab.registry}/{unique_repo}/mirrored",
        staging_tag="v1-arm64",
        metadata_file=tmp_path / "meta" / "metadata.json",
    )
    (tmp_path / "meta").mkdir()
    with pytest.raises(BuildError):
        run_build(request)  # Docker Hub cannot be reached from the lab
    mapped = BuildRequest(**{**request.__dict__, "base_images": {"busybox:1.36": lab.base_image}})
    result = run_build(mapped)
    assert result.digest.startswith("sha256:")
    assert (tmp_path / "ctx" / "Dockerfile").read_text().startswith("FROM busybox:1.36\n")


@pytest.fixture
def setup(
    lab: Lab, redis_url: str, docker_available: None, tmp_path: Path, key_prefix: str
) -> Iterator[Setup]:
    root = project(tmp_path / "src")
    config = tmp_path / "aibrix.toml"
    text = toml_config(
        lab,
        namespace=f"elf-{uuid.uuid4().hex[:8]}",
        key_prefix=key_prefix,
        source=root,
        components={"gateway-plugins": "Dockerfile.broken", "kvcache-watcher": "Dockerfile.fixed"},
    )
    text += f'[base_images]\n"busybox:1.36" = "{lab.base_image}"\n'
    config.write_text(text)
    logs = tmp_path / "logs"
    logs.mkdir()
    found = Setup(lab, config, redis_url, logs)
    yield found
    found.stop_all()


async def test_a_release_with_foreign_binaries_is_blocked_and_says_which_file(
    setup: Setup,
) -> None:
    setup.start_worker("linux/amd64")
    setup.start_worker("linux/arm64")
    code, out, err = await setup.cli("release", "v0.7.0", "--timeout", "300")
    release = await setup.wait_for("v0.7.0", [State.BLOCKED, State.READY])
    assert release.state is State.BLOCKED, release.indexes
    sentence = (
        "gateway-plugins v0.7.0: the linux/arm64 image's /gateway-plugins (entrypoint) is "
        "built for x86-64, not arm64"
    )
    assert release.indexes["gateway-plugins"].verdict == "mismatch"
    assert release.indexes["gateway-plugins"].detail == sentence
    assert release.indexes["kvcache-watcher"].verdict == "ok"
    assert sentence in release.state_reason
    assert code != 0 and sentence in out + err, out + err + setup.tail_logs()
    _, status_out, _ = await setup.cli("status", "v0.7.0")
    assert sentence in status_out
