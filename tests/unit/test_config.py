"""The configuration file: defaults, the sample files, and every kind of mistake refused at
load with the file, the key and the reason."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from jobs.domain.config import (
    CONFIG_ENV,
    DEFAULTS_LABEL,
    ApprovalPolicy,
    Component,
    ConfigError,
    MirrorError,
    Promotion,
    QueueSettings,
    Source,
)
from jobs.domain.config_reader import default_config, load_config, parse_config
from jobs.domain.platforms import DEFAULT_PLATFORMS, Platform, parse_platform
from jobs.domain.versions import ComponentError, VersionError, parse_version
from tests.support.config import COMPONENTS, SOURCE, TOP, doc

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "sample"
SAMPLE_CONFIG = SAMPLE / "aibrix-sample.toml"
BROKEN_CONFIG = SAMPLE / "aibrix-sample-broken-arm64.toml"

AIBRIX_COMPONENTS = {
    "controller-manager": "build/container/Dockerfile",
    "gateway-plugins": "build/container/Dockerfile.gateway",
    "metadata-service": "build/container/Dockerfile.metadata",
    "kvcache-watcher": "build/container/Dockerfile.kvcache",
    "runtime": "build/container/Dockerfile.runtime",
}
# The sample project today (AIBrix's layout from v0.7.0): name -> (dockerfile, context).
SAMPLE_CURRENT = {
    "controller-manager": ("build/container/Dockerfile", "."),
    "gateway-plugins": ("build/container/Dockerfile.gateway", "."),
    "kvcache-watcher": ("build/container/Dockerfile.kvcache", "."),
    "metadata-service": ("build/container/Dockerfile.python", "."),
    "runtime": ("build/container/Dockerfile.python", "."),
    "vllm-mock": ("Dockerfile", "development/app"),
}

# ---- the built-in defaults ----------------------------------------------------------


def test_the_defaults_describe_aibrix() -> None:
    config = default_config()
    assert config.path is None
    assert config.label == DEFAULTS_LABEL
    # AIBrix as it was up to v0.4.x (the layouts of later versions: test_config_layouts.py)
    old = config.at(parse_version("v0.3.0-rc.2"))
    assert {c.name: c.dockerfile for c in old.components} == AIBRIX_COMPONENTS
    assert old.component_names == tuple(AIBRIX_COMPONENTS)
    assert all(c.context == "." and not c.build_args and c.target is None for c in old.components)
    assert config.source == Source(kind="git", location="https://github.com/vllm-project/aibrix")
    assert config.source.ref_for(parse_version("v0.3.0-rc.2")) == "v0.3.0-rc.2"
    assert config.repository == "docker.io/aibrix"
    assert config.platforms == (Platform("linux", "amd64"), Platform("linux", "arm64"))
    assert dict(config.mirrors) == {
        "beijing": "aibrix-container-registry-cn-beijing.cr.volces.com/aibrix",
        "shanghai": "aibrix-container-registry-cn-shanghai.cr.volces.com/aibrix",
    }
    assert config.approval == ApprovalPolicy()
    assert config.approval.approvers == () and config.approval.approver_groups == ()
    assert config.approval.approvals_required == 1
    assert config.approval.allow_self_approval is False
    assert config.approval.approval_ttl_seconds == 3600
    assert config.promotion == Promotion(tags=(), prereleases=False)
    assert config.queue == QueueSettings(
        max_attempts=3,
        backoff_base_seconds=2.0,
        backoff_cap_seconds=60.0,
        lease_seconds=60,
        key_prefix="aibrix",
        claim_seconds=30,
    )
    assert config.staging_tag == "{version}-{arch}"


def test_images_tags_and_references_of_the_defaults() -> None:
    config = default_config()
    version = parse_version("v0.3.0-rc.2")
    arm64 = parse_platform("linux/arm64")
    assert config.image("runtime") == "docker.io/aibrix/runtime"
    assert config.image(config.component("gateway-plugins")) == "docker.io/aibrix/gateway-plugins"
    assert config.release_reference("runtime", version) == "docker.io/aibrix/runtime:v0.3.0-rc.2"
    assert config.staging_tag_for(version, arm64) == "v0.3.0-rc.2-arm64"
    assert (
        config.staging_reference("runtime", version, arm64)
        == "docker.io/aibrix/runtime:v0.3.0-rc.2-arm64"
    )


def test_no_file_and_no_environment_variable_means_the_defaults() -> None:
    assert load_config(env={}) == default_config()
    assert load_config(env={CONFIG_ENV: ""}) == default_config()


def test_the_config_objects_are_frozen_and_hashable() -> None:
    config = load_config(SAMPLE_CONFIG)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.repository = "elsewhere.example.com/x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.mirrors["x"] = "registry.example.com"  # type: ignore[index]
    with pytest.raises(TypeError):
        config.components[0].build_args["X"] = "y"  # type: ignore[index]
    assert hash(config) == hash(load_config(SAMPLE_CONFIG))


# ---- the sample files ---------------------------------------------------------------


def test_the_sample_file_loads() -> None:
    config = load_config(SAMPLE_CONFIG)
    assert config.path == SAMPLE_CONFIG
    assert config.repository == "127.0.0.1:5000/aibrix-sample"
    current = config.at(parse_version("v0.7.0"))
    assert {c.name: (c.dockerfile, c.context) for c in current.components} == SAMPLE_CURRENT
    # The pre-v0.5 layout of the sample's git history (tests/support/sample_history.py).
    old = config.at(parse_version("v0.4.1"))
    assert {c.name: c.dockerfile for c in old.components} == {
        name: AIBRIX_COMPONENTS[name] for name in sorted(AIBRIX_COMPONENTS)
    }
    assert dict(config.base_images) == {
        "busybox:1.36": "127.0.0.1:5000/lab/base:latest",
        "python:3.11": "127.0.0.1:5000/lab/python:3.11",
    }
    assert config.preflight.kustomizations == ("config/overlays/release/kustomization.yaml",)
    assert config.preflight.charts == ("dist/chart/Chart.yaml",)
    assert config.source.kind == "path"
    assert config.source.directory == SAMPLE
    assert config.platforms == DEFAULT_PLATFORMS
    assert config.mirror("lab-mirror") == "127.0.0.1:5002/aibrix-sample"
    assert config.approval.approvers == ("U0APPROVER1", "U0APPROVER2")
    assert config.approval.approvals_required == 1
    assert config.promotion.tags == ("latest",)
    assert config.queue.key_prefix == "aibrix-sample"
    assert config.image("runtime") == "127.0.0.1:5000/aibrix-sample/runtime"


def test_every_sample_component_has_its_dockerfile_in_the_sample_tree() -> None:
    config = load_config(SAMPLE_CONFIG)
    current = config.at(parse_version("v0.7.0"))
    for component in current.components:
        dockerfile, context = SAMPLE_CURRENT[component.name]
        paths = current.build_paths(component, SAMPLE)
        assert paths.context == SAMPLE / context
        assert paths.dockerfile == SAMPLE / context / dockerfile
        text = paths.dockerfile.read_text()
        # Unmodified Docker Hub names, each redirected by [base_images].
        named = re.findall(r"(?m)^ARG BASE_IMAGE=(\S+)$|^FROM (\S+)$", text)
        images = {arg or image for arg, image in named} - {"${BASE_IMAGE}"}
        assert images and images <= set(config.base_images), component.name
        if component.name != "vllm-mock":
            assert "FROM ${BASE_IMAGE}" in text and "ARG FAIL_ON_ARCH" in text
            assert (SAMPLE / "cmd" / component.name / "main.sh").is_file()
    # Where the git history takes the pre-v0.5 Dockerfiles from.
    old = config.at(parse_version("v0.4.1"))
    for name in ("metadata-service", "runtime"):
        history = SAMPLE / "history" / "pre-v0.5" / old.component(name).dockerfile
        assert not (SAMPLE / old.component(name).dockerfile).exists()
        assert "ARG FAIL_ON_ARCH" in history.read_text()


def test_the_broken_sample_differs_only_by_failing_runtime_on_aarch64() -> None:
    good = load_config(SAMPLE_CONFIG)
    broken = load_config(BROKEN_CONFIG)
    assert dict(broken.component("runtime").build_args) == {
        **good.component("runtime").build_args,
        "FAIL_ON_ARCH": "aarch64",
    }
    fixed = tuple(
        dataclasses.replace(c, build_args=good.component(c.name).build_args)
        for c in broken.components
    )
    assert dataclasses.replace(broken, components=fixed, path=good.path) == good


def test_the_environment_variable_names_the_file() -> None:
    config = load_config(env={CONFIG_ENV: str(SAMPLE_CONFIG)})
    assert config.path == SAMPLE_CONFIG


def test_an_explicit_path_wins_over_the_environment_variable(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    config = load_config(SAMPLE_CONFIG, env={CONFIG_ENV: str(missing)})
    assert config.path == SAMPLE_CONFIG


def test_a_relative_environment_path_is_relative_to_the_working_directory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(REPO)
    config = load_config(env={CONFIG_ENV: "sample/aibrix-sample.toml"})
    assert config.path == SAMPLE_CONFIG
    assert config.source.directory == SAMPLE


def test_relative_source_paths_are_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "src").mkdir()
    (tmp_path / "repo.git").mkdir()
    (tmp_path / "conf" / "a.toml").write_text(doc(source='[source]\npath = "../src"'))
    (tmp_path / "conf" / "b.toml").write_text(doc(source='[source]\ngit = "../repo.git"'))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    a = load_config(Path("../conf/a.toml"))
    assert a.source == Source(kind="path", location=str(tmp_path / "src"))
    assert a.source.directory == tmp_path / "src"
    b = load_config(Path("../conf/b.toml"))
    assert b.source == Source(kind="git", location=str(tmp_path / "repo.git"))
    assert b.source.directory is None


# ---- a small valid file and its variations ------------------------------------------


def component(body: str) -> str:
    return f'[[components]]\nname = "runtime"\n{body}\n'


def test_the_small_file_is_valid_and_fills_in_defaults(tmp_path: Path) -> None:
    path = tmp_path / "aibrix.toml"
    path.write_text(doc())
    config = load_config(path)
    assert config.components == (
        Component(name="runtime", dockerfile="build/container/Dockerfile.runtime"),
        Component(name="gateway-plugins", dockerfile="build/container/Dockerfile.gateway"),
    )
    assert config.platforms == DEFAULT_PLATFORMS
    assert dict(config.mirrors) == {}
    assert config.approval == ApprovalPolicy()
    assert config.queue == QueueSettings()
    assert config.staging_tag == "{version}-{arch}"


def test_a_full_file_is_read_into_every_field(tmp_path: Path) -> None:
    path = tmp_path / "aibrix.toml"
    path.write_text(
        doc(
            top=TOP + '\nplatforms = ["linux/arm64", "linux/amd64", "linux/arm/v7"]\n'
            'staging_tag = "staging-{version}-{platform}"',
            source=SOURCE + '\nref = "release-{major}.{minor}"',
            extra="""
[mirrors]
tokyo = "registry.tokyo.example.com:5443/aibrix/mirror"
local = "localhost:5002"
[approval]
approvers = ["U012AB3CD", "W0ENTERPRISE"]
approver_groups = ["S0RELEASERS"]
approvals_required = 2
allow_self_approval = true
approval_ttl_seconds = 600
[promotion]
tags = ["latest", "v{major}.{minor}"]
prereleases = true
[queue]
max_attempts = 5
backoff_base_seconds = 1
backoff_cap_seconds = 30.5
lease_seconds = 120
key_prefix = "aibrix:prod"
""",
            components="""
[[components]]
name = "runtime"
context = "python/aibrix/./"
dockerfile = "docker/../docker/Dockerfile.runtime"
target = "final"
build_args = { PYTHON_VERSION = "3.11", EMPTY = "", "lower_case" = "x y z $(not expanded)" }
""",
        )
    )
    config = load_config(path)
    version = parse_version("v0.3.0-rc.2")
    arm = parse_platform("linux/arm/v7")
    assert config.platforms == (
        Platform("linux", "arm64"),
        Platform("linux", "amd64"),
        Platform("linux", "arm", "v7"),
    )
    assert config.staging_tag_for(version, arm) == "staging-v0.3.0-rc.2-linux-arm-v7"
    assert config.source.ref_for(version) == "release-0.3"
    assert config.mirror("tokyo") == "registry.tokyo.example.com:5443/aibrix/mirror"
    assert config.mirror("local") == "localhost:5002"
    assert config.approval == ApprovalPolicy(
        approvers=("U012AB3CD", "W0ENTERPRISE"),
        approver_groups=("S0RELEASERS",),
        approvals_required=2,
        allow_self_approval=True,
        approval_ttl_seconds=600,
    )
    assert config.promotion_tags_for(version) == ("latest", "v0.3")
    assert config.queue == QueueSettings(5, 1.0, 30.5, 120, "aibrix:prod")
    (runtime,) = config.components
    assert runtime == Component(
        name="runtime",
        context="python/aibrix",
        dockerfile="docker/Dockerfile.runtime",
        target="final",
        build_args={"PYTHON_VERSION": "3.11", "EMPTY": "", "lower_case": "x y z $(not expanded)"},
    )


# ---- every kind of mistake ----------------------------------------------------------

# fmt: off
INVALID = [
    # (id, file text, key, a piece of the reason)
    ("not-toml", "repository = ", "", "is not valid TOML"),
    ("unknown-top-key", doc(top=TOP + '\ncolour = "red"'), "colour", "unknown key"),
    ("unknown-key-lists-allowed", doc(top=TOP + "\nplatform = []"), "platform", "platforms"),
    ("odd-key-is-quoted", doc(top=TOP + '\n"a\\nb" = 1'), "['a\\nb']", "unknown key"),
    ("missing-repository", doc(top=""), "repository", "is required"),
    ("missing-source", doc(source=""), "source", "is required"),
    ("missing-components", doc(components=""), "components", "is required"),
    ("empty-components", doc(top=TOP + "\ncomponents = []", components=""), "components",
     "must not be empty"),
    ("components-not-array", doc(top=TOP + '\ncomponents = "runtime"', components=""),
     "components", "must be an array, not a string"),
    ("repository-not-string", doc(top="repository = 5"), "repository",
     "must be a string, not an integer"),
    # repository
    ("repository-no-host", doc(top='repository = "aibrix"'), "repository",
     "not a registry location"),
    ("repository-uppercase", doc(top='repository = "docker.io/AIBrix"'), "repository",
     "lowercase path components"),
    ("repository-trailing-slash", doc(top='repository = "docker.io/aibrix/"'), "repository",
     "not a registry location"),
    ("repository-dash", doc(top='repository = "-docker.io/aibrix"'), "repository",
     "starts with '-'"),
    ("repository-port", doc(top='repository = "registry.example.com:99999/x"'), "repository",
     "not a registry location"),
    ("repository-space", doc(top='repository = "docker.io/ai brix"'), "repository",
     "not a registry location"),
    ("repository-newline", doc(top='repository = "docker.io/aibrix\\n"'), "repository",
     "control character"),
    # components
    ("component-unknown-key", doc(components=component('dockerfle = "Dockerfile"')),
     "components[0].dockerfle", "unknown key"),
    ("component-not-table", doc(top=TOP + '\ncomponents = ["runtime"]', components=""),
     "components[0]", "must be a table, not a string"),
    ("component-no-name", doc(components='[[components]]\ndockerfile = "Dockerfile"'),
     "components[0].name", "is required"),
    ("name-uppercase", doc(components='[[components]]\nname = "Runtime"'), "components[0].name",
     "not a valid component name"),
    ("name-space", doc(components='[[components]]\nname = "run time"'), "components[0].name",
     "not a valid component name"),
    ("name-dash", doc(components='[[components]]\nname = "-rf"'), "components[0].name",
     "starts with '-'"),
    ("name-double-dot", doc(components='[[components]]\nname = "a..b"'), "components[0].name",
     "not a valid component name"),
    ("name-slash", doc(components='[[components]]\nname = "aibrix/runtime"'),
     "components[0].name", "not a valid component name"),
    ("name-too-long", doc(components=f'[[components]]\nname = "{"a" * 65}"'),
     "components[0].name", "at most 64 characters"),
    ("name-empty", doc(components='[[components]]\nname = ""'), "components[0].name",
     "not a valid component name"),
    ("name-lookalike", doc(components='[[components]]\nname = "runtim\u0435"'),
     "components[0].name", "'runtim\\u0435'"),
    ("name-duplicate", doc(components=COMPONENTS + '[[components]]\nname = "runtime"'),
     "components[2].name", "'runtime' is already given at components[0].name"),
    ("name-number", doc(components="[[components]]\nname = 5"), "components[0].name",
     "must be a string"),
    ("dockerfile-absolute", doc(components=component('dockerfile = "/etc/passwd"')),
     "components[0].dockerfile", "is an absolute path"),
    ("dockerfile-escapes", doc(components=component('dockerfile = "../../Dockerfile"')),
     "components[0].dockerfile", "leads out of the build context"),
    ("dockerfile-escapes-midway", doc(components=component('dockerfile = "a/../../Dockerfile"')),
     "components[0].dockerfile", "leads out of the build context"),
    ("dockerfile-dot", doc(components=component('dockerfile = "."')),
     "components[0].dockerfile", "names a directory"),
    ("dockerfile-empty", doc(components=component('dockerfile = ""')),
     "components[0].dockerfile", "not empty"),
    ("dockerfile-backslash", doc(components=component('dockerfile = "build\\\\Dockerfile"')),
     "components[0].dockerfile", "backslash"),
    ("dockerfile-dash", doc(components=component('dockerfile = "-f"')),
     "components[0].dockerfile", "starts with '-'"),
    ("dockerfile-nul", doc(components=component('dockerfile = "Dockerfile\\u0000"')),
     "components[0].dockerfile", "control character"),
    ("context-absolute", doc(components=component('context = "/"')),
     "components[0].context", "is an absolute path"),
    ("context-escapes", doc(components=component('context = ".."')),
     "components[0].context", "leads out of the source"),
    ("context-array", doc(components=component('context = ["."]')),
     "components[0].context", "must be a string, not an array"),
    ("target-dash", doc(components=component('target = "-x"')), "components[0].target",
     "starts with '-'"),
    ("target-space", doc(components=component('target = "a b"')), "components[0].target",
     "not a valid build stage name"),
    ("build-args-not-table", doc(components=component('build_args = "A=1"')),
     "components[0].build_args", "must be a table, not a string"),
    ("build-arg-name-digit", doc(components=component('build_args = { "1A" = "x" }')),
     "components[0].build_args.1A", "not a valid build argument name"),
    ("build-arg-name-dash", doc(components=component('build_args = { "A-B" = "x" }')),
     "components[0].build_args.A-B", "not a valid build argument name"),
    ("build-arg-name-flag", doc(components=component('build_args = { "--push" = "x" }')),
     "components[0].build_args.--push", "not a valid build argument name"),
    ("build-arg-name-equals", doc(components=component('build_args = { "A=B" = "x" }')),
     "components[0].build_args['A=B']", "not a valid build argument name"),
    ("build-arg-newline", doc(components=component('build_args = { A = "x\\ny" }')),
     "components[0].build_args.A", "control character"),
    ("build-arg-nul", doc(components=component('build_args = { A = "x\\u0000" }')),
     "components[0].build_args.A", "control character"),
    ("build-arg-dash", doc(components=component('build_args = { A = "--output=type=local" }')),
     "components[0].build_args.A", "starts with '-'"),
    ("build-arg-integer", doc(components=component("build_args = { A = 5 }")),
     "components[0].build_args.A", "must be a string, not an integer"),
    ("build-arg-too-long", doc(components=component(f'build_args = {{ A = "{"x" * 4097}" }}')),
     "components[0].build_args.A", "longer than 4096"),
    ("image-too-long",
     doc(top=f'repository = "registry.example.com/{"a" * 190}"',
         components=f'[[components]]\nname = "{"b" * 64}"'),
     "components[0].name", "longer than 255"),
    # platforms
    ("platform-bad", doc(top=TOP + '\nplatforms = ["linux"]'), "platforms[0]",
     "expected os/arch[/variant]"),
    ("platform-too-deep", doc(top=TOP + '\nplatforms = ["linux/arm/v7/x"]'), "platforms[0]",
     "not a platform"),
    ("platform-duplicate", doc(top=TOP + '\nplatforms = ["linux/arm64", "linux/aarch64"]'),
     "platforms[1]", "is linux/arm64, already given at platforms[0]"),
    ("platform-empty", doc(top=TOP + "\nplatforms = []"), "platforms", "must not be empty"),
    ("platform-string", doc(top=TOP + '\nplatforms = "linux/amd64"'), "platforms",
     "must be an array, not a string"),
    ("platform-unknown", doc(top=TOP + '\nplatforms = ["unknown/unknown"]'), "platforms[0]",
     "not a platform an image runs on"),
    ("platform-dash", doc(top=TOP + '\nplatforms = ["--platform"]'), "platforms[0]",
     "starts with '-'"),
    # staging tag
    ("staging-no-arch", doc(top=TOP + '\nstaging_tag = "{version}"'), "staging_tag",
     "must contain {arch} or {platform}"),
    ("staging-no-version", doc(top=TOP + '\nstaging_tag = "{arch}"'), "staging_tag",
     "must contain {version}"),
    ("staging-os-only", doc(top=TOP + '\nstaging_tag = "{version}-{os}"'), "staging_tag",
     "must contain {arch} or {platform}"),
    ("staging-unknown-placeholder", doc(top=TOP + '\nstaging_tag = "{version}-{bogus}"'),
     "staging_tag", "unknown placeholder '{bogus}'"),
    ("staging-attribute", doc(top=TOP + '\nstaging_tag = "{version.__class__}-{arch}"'),
     "staging_tag", "unknown placeholder"),
    ("staging-stray-brace", doc(top=TOP + '\nstaging_tag = "{version}-{arch"'), "staging_tag",
     "not part of a placeholder"),
    ("staging-bad-tag", doc(top=TOP + '\nstaging_tag = "{version}/{arch}"'), "staging_tag",
     "not a valid tag"),
    ("staging-collides",
     doc(top=TOP + '\nplatforms = ["linux/arm/v6", "linux/arm/v7"]'),
     "staging_tag", "gives linux/arm/v6 and linux/arm/v7 the same tag"),
    ("staging-too-long", doc(top=TOP + f'\nstaging_tag = "{{version}}-{{arch}}{"x" * 120}"'),
     "staging_tag", "not a valid tag"),
    # mirrors
    ("mirror-bad-name", doc(extra='[mirrors]\nBeijing = "registry.example.com/aibrix"'),
     "mirrors.Beijing", "not a valid mirror name"),
    ("mirror-no-host", doc(extra='[mirrors]\nbeijing = "aibrix"'), "mirrors.beijing",
     "not a registry location"),
    ("mirror-uppercase-path", doc(extra='[mirrors]\nx = "registry.example.com/AIBRIX"'),
     "mirrors.x", "not a registry location"),
    ("mirror-url", doc(extra='[mirrors]\nx = "https://registry.example.com/aibrix"'),
     "mirrors.x", "not a registry location"),
    ("mirror-is-repository", doc(extra='[mirrors]\nx = "registry.example.com/aibrix"'),
     "mirrors.x", "is the release repository itself"),
    ("mirror-integer", doc(extra="[mirrors]\nx = 5"), "mirrors.x", "must be a string"),
    ("mirrors-array", doc(top=TOP + '\nmirrors = ["registry.example.com"]'), "mirrors",
     "must be a table, not an array"),
    # approval
    ("approval-unknown-key", doc(extra='[approval]\napprover = ["U012AB3CD"]'),
     "approval.approver", "unknown key"),
    ("approvals-required-zero", doc(extra="[approval]\napprovals_required = 0"),
     "approval.approvals_required", "0 is out of range"),
    ("approvals-required-negative", doc(extra="[approval]\napprovals_required = -1"),
     "approval.approvals_required", "out of range"),
    ("approvals-required-string", doc(extra='[approval]\napprovals_required = "2"'),
     "approval.approvals_required", "must be an integer, not a string"),
    ("approvals-required-bool", doc(extra="[approval]\napprovals_required = true"),
     "approval.approvals_required", "must be an integer, not true/false"),
    ("approvals-required-float", doc(extra="[approval]\napprovals_required = 1.5"),
     "approval.approvals_required", "must be an integer, not a number with a fraction"),
    ("approvals-unreachable",
     doc(extra='[approval]\napprovers = ["U0APPROVER1", "U0APPROVER2"]\napprovals_required = 3'),
     "approval.approvals_required", "no release could ever be approved"),
    ("approver-name", doc(extra='[approval]\napprovers = ["alice"]'), "approval.approvers[0]",
     "not a Slack user id"),
    ("approver-mention", doc(extra='[approval]\napprovers = ["<@U012AB3CD>"]'),
     "approval.approvers[0]", "not a Slack user id"),
    ("approver-lowercase", doc(extra='[approval]\napprovers = ["u012ab3cd"]'),
     "approval.approvers[0]", "not a Slack user id"),
    ("approver-group-id", doc(extra='[approval]\napprovers = ["S012AB3CD"]'),
     "approval.approvers[0]", "not a Slack user id"),
    ("approver-duplicate", doc(extra='[approval]\napprovers = ["U012AB3CD", "U012AB3CD"]'),
     "approval.approvers[1]", "already given at approval.approvers[0]"),
    ("approvers-string", doc(extra='[approval]\napprovers = "U012AB3CD"'), "approval.approvers",
     "must be an array, not a string"),
    ("group-user-id", doc(extra='[approval]\napprover_groups = ["U012AB3CD"]'),
     "approval.approver_groups[0]", "not a Slack user group id"),
    ("self-approval-string", doc(extra='[approval]\nallow_self_approval = "no"'),
     "approval.allow_self_approval", "must be true or false, not a string"),
    ("ttl-zero", doc(extra="[approval]\napproval_ttl_seconds = 0"),
     "approval.approval_ttl_seconds", "out of range"),
    ("ttl-huge", doc(extra="[approval]\napproval_ttl_seconds = 99999999999"),
     "approval.approval_ttl_seconds", "out of range"),
    # promotion
    ("promotion-version", doc(extra='[promotion]\ntags = ["{version}"]'), "promotion.tags[0]",
     "is a release tag"),
    ("promotion-other-release", doc(extra='[promotion]\ntags = ["v{major}.{minor}.{patch}"]'),
     "promotion.tags[0]", "is a release tag"),
    ("promotion-bad-tag", doc(extra='[promotion]\ntags = ["latest!"]'), "promotion.tags[0]",
     "not a valid tag"),
    ("promotion-dash", doc(extra='[promotion]\ntags = ["-latest"]'), "promotion.tags[0]",
     "starts with '-'"),
    ("promotion-placeholder", doc(extra='[promotion]\ntags = ["{arch}"]'), "promotion.tags[0]",
     "unknown placeholder '{arch}'"),
    ("promotion-duplicate", doc(extra='[promotion]\ntags = ["latest", "latest"]'),
     "promotion.tags[1]", "already given at promotion.tags[0]"),
    ("promotion-prereleases", doc(extra='[promotion]\nprereleases = "yes"'),
     "promotion.prereleases", "must be true or false"),
    ("promotion-mirror-unknown", doc(extra='[promotion]\nmirrors = ["nowhere"]'),
     "promotion.mirrors[0]", "'nowhere' is not a configured mirror"),
    # queue
    ("queue-attempts-zero", doc(extra="[queue]\nmax_attempts = 0"), "queue.max_attempts",
     "out of range"),
    ("queue-lease-float", doc(extra="[queue]\nlease_seconds = 1.5"), "queue.lease_seconds",
     "must be an integer"),
    ("queue-claim-zero", doc(extra="[queue]\nclaim_seconds = 0"), "queue.claim_seconds",
     "out of range"),
    ("queue-claim-over-an-hour", doc(extra="[queue]\nclaim_seconds = 3601"),
     "queue.claim_seconds", "out of range"),
    ("queue-backoff-zero", doc(extra="[queue]\nbackoff_base_seconds = 0"),
     "queue.backoff_base_seconds", "out of range"),
    ("queue-backoff-nan", doc(extra="[queue]\nbackoff_base_seconds = nan"),
     "queue.backoff_base_seconds", "out of range"),
    ("queue-backoff-inf", doc(extra="[queue]\nbackoff_cap_seconds = inf"),
     "queue.backoff_cap_seconds", "out of range"),
    ("queue-backoff-string", doc(extra='[queue]\nbackoff_cap_seconds = "60"'),
     "queue.backoff_cap_seconds", "must be a number of seconds, not a string"),
    ("queue-cap-below-base",
     doc(extra="[queue]\nbackoff_base_seconds = 10\nbackoff_cap_seconds = 5"),
     "queue.backoff_cap_seconds", "is below backoff_base_seconds"),
    ("queue-prefix-space", doc(extra='[queue]\nkey_prefix = "a b"'), "queue.key_prefix",
     "not a valid key prefix"),
    ("queue-prefix-glob", doc(extra='[queue]\nkey_prefix = "aibrix*"'), "queue.key_prefix",
     "not a valid key prefix"),
    # source
    ("source-both", doc(source='[source]\ngit = "https://example.com/x"\npath = "."'), "source",
     "give exactly one of git or path"),
    ("source-neither", doc(source='[source]\nref = "{version}"'), "source",
     "give exactly one of git or path"),
    ("source-unknown-key", doc(source=SOURCE + '\nbranch = "main"'), "source.branch",
     "unknown key"),
    ("source-string", doc(source='source = "https://github.com/vllm-project/aibrix"'), "source",
     "must be a table, not a string"),
    ("git-ext-transport", doc(source='[source]\ngit = "ext::sh -c id"'), "source.git",
     "not a git repository location"),
    ("git-ssh-option-host", doc(source='[source]\ngit = "ssh://-oProxyCommand=id/x"'),
     "source.git", "not a git repository location"),
    ("git-ssh-option-user", doc(source='[source]\ngit = "ssh://-oProxyCommand=id@host/x"'),
     "source.git", "not a git repository location"),
    ("git-scp-option-host", doc(source='[source]\ngit = "git@-oProxyCommand=id:x"'),
     "source.git", "not a git repository location"),
    ("git-ftp", doc(source='[source]\ngit = "ftp://example.com/x"'), "source.git",
     "not a git repository location"),
    ("git-password", doc(source='[source]\ngit = "https://bot:hunter2@github.com/x"'),
     "source.git", "has a password in it"),
    ("git-flag", doc(source='[source]\ngit = "--upload-pack=id"'), "source.git",
     "starts with '-'"),
    ("git-host-path", doc(source='[source]\ngit = "github.com:vllm-project/aibrix"'),
     "source.git", "not a git repository location"),
    ("git-space", doc(source='[source]\ngit = "https://github.com/x y"'), "source.git",
     "not a git repository location"),
    ("git-missing-local", doc(source='[source]\ngit = "no/such/repo"'), "source.git",
     "is not a directory"),
    ("path-missing", doc(source='[source]\npath = "no/such/dir"'), "source.path",
     "is not a directory"),
    ("path-empty", doc(source='[source]\npath = ""'), "source.path", "not empty"),
    ("ref-dash", doc(source=SOURCE + '\nref = "-{version}"'), "source.ref", "starts with '-'"),
    ("ref-dotdot", doc(source=SOURCE + '\nref = "refs/../{version}"'), "source.ref",
     "not a valid ref"),
    ("ref-lock", doc(source=SOURCE + '\nref = "{version}.lock"'), "source.ref",
     "not a valid ref"),
    ("ref-space", doc(source=SOURCE + '\nref = "release {version}"'), "source.ref",
     "not a valid ref"),
    ("ref-unknown-placeholder", doc(source=SOURCE + '\nref = "{branch}"'), "source.ref",
     "unknown placeholder '{branch}'"),
]
# fmt: on


@pytest.mark.parametrize(
    ("text", "key", "reason"), [case[1:] for case in INVALID], ids=[case[0] for case in INVALID]
)
def test_an_invalid_file_is_refused_naming_file_key_and_reason(
    tmp_path: Path, text: str, key: str, reason: str
) -> None:
    path = tmp_path / "aibrix.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    error = caught.value
    assert (error.file, error.key) == (str(path), key)
    assert reason in error.reason
    prefix = f"{path}: {key}: " if key else f"{path}: "
    assert str(error) == prefix + error.reason
    assert str(error).isprintable()


def test_the_case_ids_are_unique() -> None:
    ids = [case[0] for case in INVALID]
    assert len(ids) == len(set(ids))


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(env={CONFIG_ENV: str(path)})
    assert str(caught.value) == f"{path}: cannot be read: No such file or directory"


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(tmp_path)


def test_a_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "aibrix.toml"
    path.write_bytes(doc().encode() + b"\n# caf\xe9\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.reason == "is not UTF-8 text"


def test_the_toml_error_says_where(tmp_path: Path) -> None:
    path = tmp_path / "aibrix.toml"
    path.write_text(doc() + "\n[approval\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "line" in caught.value.reason


# ---- values that people type, checked against a configuration -----------------------


def test_component_lookup_lists_the_configured_names() -> None:
    config = default_config().at(parse_version("v0.3.0"))
    assert config.component("runtime").dockerfile == "build/container/Dockerfile.runtime"
    with pytest.raises(ComponentError) as caught:
        config.component("--rm")
    assert str(caught.value) == (
        "'--rm' is not a component of this project; the configured components are: "
        "controller-manager, gateway-plugins, metadata-service, kvcache-watcher, runtime"
    )
    with pytest.raises(ComponentError):
        config.image("bogus")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("beijing", "aibrix-container-registry-cn-beijing.cr.volces.com/aibrix"),
        ("shanghai", "aibrix-container-registry-cn-shanghai.cr.volces.com/aibrix"),
        ("registry.example.com", "registry.example.com"),
        ("registry.example.com/aibrix", "registry.example.com/aibrix"),
        ("127.0.0.1:5002/aibrix-sample", "127.0.0.1:5002/aibrix-sample"),
        ("localhost/aibrix", "localhost/aibrix"),
    ],
)
def test_a_mirror_is_a_configured_name_or_a_literal_location(given: str, expected: str) -> None:
    assert default_config().mirror(given) == expected


@pytest.mark.parametrize(
    "given",
    [
        "tokyo",
        "",
        "--output=type=local,dest=/",
        "$(id)",
        "registry.example.com/AIBRIX",
        "https://registry.example.com",
        "registry.example.com/aibrix\n",
        "registry.example.com:0",
        "-registry.example.com",
        "registry.example.com//x",
        "registry.example.com/x;id",
    ],
)
def test_anything_else_is_refused_as_a_mirror(given: str) -> None:
    with pytest.raises(MirrorError) as caught:
        default_config().mirror(given)
    message = str(caught.value)
    assert "is neither a configured mirror (beijing, shanghai) nor a registry location" in message
    assert message.isprintable()


def test_staging_tags_and_promotion_tags_for_versions(tmp_path: Path) -> None:
    path = tmp_path / "aibrix.toml"
    path.write_text(doc(extra='[promotion]\ntags = ["latest", "v{major}.{minor}"]'))
    config = load_config(path)
    release, candidate = parse_version("v0.3.0"), parse_version("v0.3.0-rc.2")
    assert config.promotion_tags_for(release) == ("latest", "v0.3")
    assert config.promotion_tags_for(candidate) == ()
    for platform in config.platforms:
        config.check_version(release)
        assert config.staging_tag_for(release, platform) == f"v0.3.0-{platform.architecture}"


@pytest.mark.parametrize(
    "text", ["v0.3.0-amd64", "v0.3.0-arm64", "v0.3.0-rc.2-arm64", "v0.3.0-amd64-arm64"]
)
def test_a_version_shaped_like_a_staging_tag_cannot_be_released(text: str) -> None:
    config = default_config()
    with pytest.raises(VersionError, match="has the form of a staging tag"):
        config.check_version(parse_version(text))


@pytest.mark.parametrize("text", ["v0.3.0", "v0.3.0-rc.2", "v0.3.0-arm64.1", "v0.3.0-amd"])
def test_ordinary_versions_can_be_released(text: str) -> None:
    default_config().check_version(parse_version(text))


def test_a_version_too_long_for_the_staging_tag_cannot_be_released() -> None:
    version = parse_version("v1.0.0-" + "a" * 121)
    config = default_config()
    with pytest.raises(VersionError, match=r"makes the tag .* which is too long or not valid"):
        config.check_version(version)
    with pytest.raises(VersionError):
        config.staging_tag_for(version, DEFAULT_PLATFORMS[0])


def test_a_version_that_makes_a_bad_git_ref_cannot_be_released() -> None:
    with pytest.raises(VersionError, match="git ref"):
        default_config().check_version(parse_version("v1.0.0-x.lock"))


def test_approvers_and_groups() -> None:
    approval = ApprovalPolicy(approvers=("U1AA",), approver_groups=("S1GG",))
    assert approval.is_approver("U1AA")
    assert approval.is_approver("U2BB", ["S0XX", "S1GG"])
    assert not approval.is_approver("U2BB", ["S0XX"])
    assert not ApprovalPolicy().is_approver("U1AA", ["S1GG"])


# ---- build paths inside a checked-out source ----------------------------------------


def _source_tree(root: Path) -> None:
    (root / "build" / "container").mkdir(parents=True)
    (root / "build" / "container" / "Dockerfile.runtime").write_text("FROM scratch\n")


def test_build_paths_are_resolved_inside_the_source(tmp_path: Path) -> None:
    _source_tree(tmp_path)
    config = default_config().at(parse_version("v0.3.0"))
    paths = config.build_paths("runtime", tmp_path)
    assert paths.context == tmp_path.resolve()
    assert paths.dockerfile == tmp_path.resolve() / "build/container/Dockerfile.runtime"


def test_a_missing_dockerfile_is_reported_with_its_key(tmp_path: Path) -> None:
    _source_tree(tmp_path)
    with pytest.raises(ConfigError) as caught:
        default_config().build_paths("gateway-plugins", tmp_path)
    assert caught.value.file == DEFAULTS_LABEL
    assert caught.value.key == "components[1].dockerfile"
    assert "does not exist" in caught.value.reason


def test_a_symbolic_link_out_of_the_source_is_refused(tmp_path: Path) -> None:
    source, outside = tmp_path / "source", tmp_path / "outside"
    source.mkdir()
    _source_tree(outside)
    (source / "build").symlink_to(outside / "build")
    with pytest.raises(ConfigError) as caught:
        default_config().at(parse_version("v0.3.0")).build_paths("runtime", source)
    assert caught.value.key == "components[4].dockerfile"
    assert "outside" in caught.value.reason


def test_a_context_linked_out_of_the_source_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / "ctx").symlink_to(tmp_path)
    config = dataclasses.replace(
        default_config(), components=(Component(name="runtime", context="ctx"),)
    )
    with pytest.raises(ConfigError) as caught:
        config.build_paths("runtime", source)
    assert caught.value.key == "components[0].context"


# ---- properties ---------------------------------------------------------------------


def _toml_string(text: str) -> str:
    escaped = []
    for char in text:
        if char in '"\\':
            escaped.append("\\" + char)
        elif char.isprintable() and char != "\x7f":
            escaped.append(char)
        else:
            escaped.append(f"\\U{ord(char):08X}")
    return '"' + "".join(escaped) + '"'


NOWHERE = Path("/nonexistent/aibrix.toml")


@given(st.text(max_size=60))
@example("x\ny")
@example("\x00")
@example("-O2")
@example("$(id) `id` ; rm -rf /")
def test_a_build_arg_value_is_kept_exactly_or_refused(value: str) -> None:
    text = doc(components=component(f"build_args = {{ A = {_toml_string(value)} }}"))
    try:
        config = parse_config(text, NOWHERE)
    except ConfigError as error:
        assert error.key == "components[0].build_args.A"
        assert value.startswith("-") or not value.isprintable()
        assert str(error).isprintable()
    else:
        assert config.component("runtime").build_args["A"] == value
        assert value.isprintable() and not value.startswith("-")


@given(st.text(max_size=70))
@example("-rf")
@example("a" * 64)
def test_a_component_name_is_accepted_exactly_when_it_is_a_path_component(name: str) -> None:
    text = doc(components=f"[[components]]\nname = {_toml_string(name)}")
    valid = len(name) <= 64 and re.fullmatch(r"[a-z0-9]+([._-][a-z0-9]+)*", name) is not None
    try:
        config = parse_config(text, NOWHERE)
    except ConfigError as error:
        assert not valid
        assert error.key == "components[0].name"
    else:
        assert valid
        assert config.image(name) == f"registry.example.com/aibrix/{name}"


def test_the_defaults_do_not_depend_on_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = default_config()
    monkeypatch.chdir(tmp_path)
    assert default_config() == before


def test_the_registry_budget_is_read_and_checked() -> None:
    """`registry.budget_seconds` (issue 12, item 4): the time one reference's reads may
    take against a registry that hangs or trickles."""
    assert parse_config(doc(), NOWHERE).registry.budget_seconds == 35.0
    config = parse_config(doc(extra="[registry]\nbudget_seconds = 12.5"), NOWHERE)
    assert config.registry.budget_seconds == 12.5
    for bad, reason in (
        ("0", "out of range"),
        ("5000", "out of range"),
        ('"35"', "a number of seconds"),
    ):
        with pytest.raises(ConfigError) as raised:
            parse_config(doc(extra=f"[registry]\nbudget_seconds = {bad}"), NOWHERE)
        assert raised.value.key == "registry.budget_seconds"
        assert reason in str(raised.value)
    with pytest.raises(ConfigError) as raised:
        parse_config(doc(extra="[registry]\nbudget = 3"), NOWHERE)
    assert raised.value.key.startswith("registry")
