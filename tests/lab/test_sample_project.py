"""The sample project really builds: every component of its current layout for
linux/amd64 (vllm-mock from development/app, metadata-service and runtime from the one
Dockerfile.python), two for linux/arm64 under QEMU, each from Docker Hub's base image
names redirected to the lab's by the sample's [base_images], pushed to the lab registry;
the pushed image is what the metadata file says and really is the platform it was built
for; FAIL_ON_ARCH breaks arm64 only."""

from __future__ import annotations

import dataclasses
import json
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from jobs.domain.config import Config
from jobs.domain.config_reader import parse_config
from jobs.domain.platforms import Platform, parse_platform
from jobs.domain.versions import Version, parse_version
from tests.conftest import Lab
from tests.support.sample_history import lab_addresses

pytestmark = pytest.mark.lab

SAMPLE_CONFIG = Path(__file__).resolve().parents[2] / "sample" / "aibrix-sample.toml"
BROKEN_CONFIG = SAMPLE_CONFIG.with_name("aibrix-sample-broken-arm64.toml")
AMD64 = parse_platform("linux/amd64")
ARM64 = parse_platform("linux/arm64")
# In the current layout (from v0.5.0) and with vllm-mock (from v0.7.0).
VERSION = parse_version("v0.7.0-test.1")
MAIN = "/opt/aibrix/bin/main.sh"
MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.index.v1+json",
    ]
)


def _sample(path: Path, lab: Lab, unique_repo: str) -> Config:
    """The sample config as it is, on this lab (its base images on this lab's registry),
    releasing into a repository of the test's own."""
    config = parse_config(lab_addresses(lab).rewrite(path.read_text()), path)
    return dataclasses.replace(config, repository=f"{lab.registry}/{unique_repo}")


@pytest.fixture
def sample(lab: Lab, docker_available: None, unique_repo: str) -> Config:
    return _sample(SAMPLE_CONFIG, lab, unique_repo)


@pytest.fixture
def broken_sample(lab: Lab, docker_available: None, unique_repo: str) -> Config:
    return _sample(BROKEN_CONFIG, lab, unique_repo)


@dataclasses.dataclass(frozen=True)
class Built:
    reference: str
    metadata: Mapping[str, Any]


def build(config: Config, name: str, platform: Platform, version: Version, out: Path) -> Built:
    """One per-platform build the way a worker does it: the component's Dockerfile,
    context and build args for `version`, the config's base images, pushed to its
    staging tag."""
    from jobs.tools.build import BuildRequest, run_build

    release = config.at(version)
    component = release.component(name)
    assert config.source.directory is not None
    paths = release.build_paths(component, config.source.directory)
    folder = out / f"{name}-{platform.architecture}"
    folder.mkdir()
    request = BuildRequest(
        context=paths.context,
        dockerfile=paths.dockerfile,
        platform=platform,
        image=release.image(component),
        staging_tag=release.staging_tag_for(version, platform),
        metadata_file=folder / "metadata.json",
        build_args=component.build_args,
        base_images=config.base_images,
    )
    run_build(request)
    reference = release.staging_reference(component, version, platform)
    return Built(reference, json.loads(request.metadata_file.read_text()))


def _get(url: str, accept: str | None = None) -> tuple[dict[str, str], bytes]:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=30) as response:
        return dict(response.headers), response.read()


def published(lab: Lab, reference: str) -> tuple[str, dict[str, Any]]:
    """The digest the registry serves for a tag, and the image config it points to."""
    name, _, tag = reference.removeprefix(f"{lab.registry}/").rpartition(":")
    base = f"http://{lab.registry}/v2/{name}"
    headers, body = _get(f"{base}/manifests/{tag}", MANIFEST_TYPES)
    manifest = json.loads(body)
    assert "config" in manifest, f"{reference} is not a single image manifest: {manifest}"
    _, config_blob = _get(f"{base}/blobs/{manifest['config']['digest']}")
    return headers["Docker-Content-Digest"], json.loads(config_blob)


@pytest.fixture
def pulled() -> Iterator[list[str]]:
    """References pulled into the local engine by a test, removed afterwards."""
    from python_on_whales import docker

    references: list[str] = []
    yield references
    if references:
        docker.image.remove(references, force=True)


def test_every_component_builds_for_amd64_and_two_for_arm64(
    sample: Config, lab: Lab, tmp_path: Path, pulled: list[str]
) -> None:
    from python_on_whales import docker

    names = sample.at(VERSION).component_names
    assert len(names) == 6
    jobs = [(name, AMD64) for name in names]
    jobs += [("gateway-plugins", ARM64), ("kvcache-watcher", ARM64)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {
            job: pool.submit(build, sample, job[0], job[1], VERSION, tmp_path) for job in jobs
        }
        results = {job: future.result() for job, future in futures.items()}

    for (name, platform), built in results.items():
        assert built.reference == (f"{sample.repository}/{name}:{VERSION}-{platform.architecture}")
        digest = built.metadata["containerimage.digest"]
        assert digest.startswith("sha256:") and len(digest) == len("sha256:") + 64
        served_digest, image_config = published(lab, built.reference)
        assert served_digest == digest
        assert (image_config["os"], image_config["architecture"]) == (
            platform.os,
            platform.architecture,
        )
        command = ["python3", "app.py"] if name == "vllm-mock" else ["/bin/sh", MAIN]
        assert image_config["config"]["Cmd"] == command

    # The images run and say what they are, natively and under QEMU; metadata-service is
    # the Python image with its own command, as its deployment runs it.
    for name, platform, machine, override in (
        ("runtime", AMD64, "x86_64", []),
        ("metadata-service", AMD64, "x86_64", ["/bin/sh", "/opt/aibrix/bin/metadata-service.sh"]),
        ("vllm-mock", AMD64, "x86_64", []),
        ("gateway-plugins", ARM64, "aarch64", []),
    ):
        reference = results[(name, platform)].reference
        pulled.append(reference)
        output = docker.run(reference, override, remove=True, platform=str(platform))
        assert isinstance(output, str)
        first_line = output.splitlines()[0]
        assert first_line == f"aibrix-sample {name} {machine} (built for {machine})"


def test_fail_on_arch_breaks_the_arm64_build_only(
    broken_sample: Config, lab: Lab, tmp_path: Path
) -> None:
    from jobs.tools.build import BuildError

    assert broken_sample.component("runtime").build_args["FAIL_ON_ARCH"] == "aarch64"
    amd64 = build(broken_sample, "runtime", AMD64, VERSION, tmp_path)
    assert published(lab, amd64.reference)[0] == amd64.metadata["containerimage.digest"]

    with pytest.raises(BuildError) as caught:
        build(broken_sample, "runtime", ARM64, VERSION, tmp_path)
    assert "runtime: unsupported on aarch64" in str(caught.value)
    # Nothing was pushed for arm64: the staging tag does not exist.
    arm64_reference = broken_sample.staging_reference("runtime", VERSION, ARM64)
    with pytest.raises(urllib.error.HTTPError) as missing:
        published(lab, arm64_reference)
    assert missing.value.code == 404
