"""Versioned components (issue 13, item 1): version ranges, `[[components.layout]]`, the
built-in AIBrix layouts at every tag, `extends = "aibrix"`, and the `[preflight]` keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobs.domain.config import ConfigError, components_for
from jobs.domain.config_grammar import parse_range
from jobs.domain.config_reader import default_config, parse_config
from jobs.domain.versions import Version, VersionError, parse_version
from jobs.usecases.pipeline import ReleaseInputError, plan_release
from tests.support.config import SOURCE, TOP, doc

FILE = Path("/etc/aibrix/aibrix.toml")
DEFAULTS = default_config()
ALWAYS = {
    "controller-manager": "build/container/Dockerfile",
    "gateway-plugins": "build/container/Dockerfile.gateway",
}

versions = st.builds(
    Version,
    st.integers(0, 2),
    st.integers(0, 9),
    st.integers(0, 3),
    st.sampled_from(["", "rc.1", "rc.2", "rc.3", "alpha.0"]),
)


def layout_of(version: str) -> dict[str, tuple[str, str]]:
    return {
        c.name: (c.dockerfile_path, c.context)
        for c in components_for(DEFAULTS, parse_version(version))
    }


# ---- the built-in defaults: AIBrix at every tag ----------------------------------------


def test_aibrix_up_to_v04_builds_the_metadata_and_runtime_dockerfiles() -> None:
    for version in ("v0.3.0-rc.2", "v0.4.1"):
        assert layout_of(version) == {
            "controller-manager": ("build/container/Dockerfile", "."),
            "gateway-plugins": ("build/container/Dockerfile.gateway", "."),
            "metadata-service": ("build/container/Dockerfile.metadata", "."),
            "kvcache-watcher": ("build/container/Dockerfile.kvcache", "."),
            "runtime": ("build/container/Dockerfile.runtime", "."),
        }


def test_aibrix_from_v05_builds_dockerfile_python_and_from_v07_vllm_mock() -> None:
    v05 = layout_of("v0.5.0")
    assert v05["metadata-service"] == v05["runtime"] == ("build/container/Dockerfile.python", ".")
    assert "vllm-mock" not in v05
    # #1702 landed between v0.5.0-rc.1 (old Dockerfiles) and v0.5.0-rc.2 (Dockerfile.python)
    assert layout_of("v0.5.0-rc.1")["runtime"][0] == "build/container/Dockerfile.runtime"
    assert layout_of("v0.5.0-rc.2")["runtime"][0] == "build/container/Dockerfile.python"
    # vllm-mock was released from v0.7.0-rc.1 on
    assert "vllm-mock" in layout_of("v0.7.0-rc.1")
    v07 = layout_of("v0.7.0")
    assert v07["vllm-mock"] == ("development/app/Dockerfile", "development/app")
    assert list(v07) == [
        "controller-manager",
        "gateway-plugins",
        "metadata-service",
        "kvcache-watcher",
        "runtime",
        "vllm-mock",
    ]


@given(versions)
def test_the_defaults_follow_the_table_of_aibrix_md(version: Version) -> None:
    core = (version.major, version.minor, version.patch)
    found = {c.name: c for c in components_for(DEFAULTS, version)}
    for name, dockerfile in ALWAYS.items():
        assert found[name].dockerfile_path == dockerfile
    python = version >= parse_version("v0.5.0-rc.2")
    for name, old in (("metadata-service", "metadata"), ("runtime", "runtime")):
        expected = "Dockerfile.python" if python else f"Dockerfile.{old}"
        if name in found:
            assert found[name].dockerfile_path == f"build/container/{expected}"
    assert ("metadata-service" in found) == (version >= parse_version("v0.2.0-rc.2"))
    assert ("kvcache-watcher" in found) == (version >= parse_version("v0.3.0-rc.1"))
    assert ("vllm-mock" in found) == (core >= (0, 7, 0))
    assert all(not c.layouts and c.versions is None for c in found.values())


def test_a_release_of_a_component_before_it_existed_is_refused_with_its_range() -> None:
    with pytest.raises(ReleaseInputError) as caught:
        plan_release(DEFAULTS, "v0.3.0-rc.2", ["vllm-mock"])
    assert str(caught.value) == (
        "vllm-mock is not part of v0.3.0-rc.2 (it is released for >=v0.7.0); the components "
        "of v0.3.0-rc.2 are: controller-manager, gateway-plugins, metadata-service, "
        "kvcache-watcher, runtime"
    )
    assert plan_release(DEFAULTS, "v0.7.0", ["vllm-mock"]).components == ("vllm-mock",)


# ---- version ranges -------------------------------------------------------------------


@given(versions, versions.filter(lambda v: not v.is_prerelease))
def test_a_bound_without_prerelease_compares_the_release_core(
    version: Version, bound: Version
) -> None:
    core = Version(version.major, version.minor, version.patch)
    assert parse_range(f">={bound}").contains(version) == (core >= bound)
    assert parse_range(f"<{bound}").contains(version) == (core < bound)
    # the two halves of a split never overlap and never leave a gap
    assert parse_range(f">={bound}").contains(version) != parse_range(f"<{bound}").contains(version)


def test_a_range_joins_bounds_that_must_all_hold() -> None:
    both = parse_range(">=v0.2.0, <v0.5.0")
    assert str(both) == ">=v0.2.0, <v0.5.0"
    assert both.contains(parse_version("v0.4.9"))
    assert not both.contains(parse_version("v0.5.0"))
    assert not both.contains(parse_version("v0.1.9"))
    exact = parse_range("==v0.3.0-rc.2")
    assert exact.contains(parse_version("v0.3.0-rc.2"))
    assert not exact.contains(parse_version("v0.3.0"))


@pytest.mark.parametrize("text", ["v0.5.0", "~v0.5", ">=0.5.0", ">=v0.5", "", ">=v0.5.0,"])
def test_a_bad_range_is_refused(text: str) -> None:
    with pytest.raises(VersionError):
        parse_range(text)


# ---- the grammar of a file ------------------------------------------------------------------

LAYOUT = """
[[components]]
name = "runtime"
versions = ">=v0.2.0"

[[components.layout]]
versions = "<v0.5.0"
dockerfile = "build/container/Dockerfile.runtime"

[[components.layout]]
versions = ">=v0.5.0"
dockerfile = "build/container/Dockerfile.python"
build_args = { MODE = "runtime" }
"""


def test_a_file_names_layouts_by_version_range() -> None:
    config = parse_config(doc(components=LAYOUT), FILE)
    old = config.at(parse_version("v0.3.0")).component("runtime")
    assert old.dockerfile == "build/container/Dockerfile.runtime" and not old.build_args
    new = config.at(parse_version("v0.6.0")).component("runtime")
    assert new.dockerfile == "build/container/Dockerfile.python"
    assert dict(new.build_args) == {"MODE": "runtime"}
    assert config.at(parse_version("v0.1.0")).components == ()


@pytest.mark.parametrize(
    ("layout", "key", "reason"),
    [
        (
            'versions = "5"\ndockerfile = "D"',
            "components[0].layout[0].versions",
            "not a version range",
        ),
        ('dockerfile = "D"', "components[0].layout[0].versions", "is required"),
        ('versions = ">=v0.5.0"', "components[0].layout[0]", "must name a dockerfile"),
        (
            'versions = ">=v0.5.0"\ndockerfile = "/etc/x"',
            "components[0].layout[0].dockerfile",
            "absolute",
        ),
        ('versions = ">=v0.5.0"\nimage = "x"', "components[0].layout[0].image", "unknown key"),
    ],
)
def test_a_bad_layout_names_its_key(layout: str, key: str, reason: str) -> None:
    text = doc(components=f'[[components]]\nname = "runtime"\n[[components.layout]]\n{layout}\n')
    with pytest.raises(ConfigError) as caught:
        parse_config(text, FILE)
    assert caught.value.key == key
    assert reason in caught.value.reason


def test_a_bad_component_range_names_its_key() -> None:
    text = doc(components='[[components]]\nname = "runtime"\nversions = "v0.5.0"\n')
    with pytest.raises(ConfigError) as caught:
        parse_config(text, FILE)
    assert caught.value.key == "components[0].versions"
    assert "does not start with one of >= <= == > <" in caught.value.reason


# ---- extends ------------------------------------------------------------------------------


def test_extends_takes_the_aibrix_defaults_and_overrides_only_what_the_file_names() -> None:
    text = "\n".join(
        [
            'extends = "aibrix"',
            'repository = "registry.example.com/team"',
            "[[components]]",
            'name = "gateway-plugins"',
            'dockerfile = "gateway/Dockerfile"',
            "[[components]]",
            'name = "extra"',
        ]
    )
    config = parse_config(text, FILE)
    assert config.repository == "registry.example.com/team"
    assert config.source == DEFAULTS.source
    assert config.preflight == DEFAULTS.preflight
    assert config.mirrors == DEFAULTS.mirrors
    v07 = config.at(parse_version("v0.7.0"))
    assert v07.component_names == (*DEFAULTS.at(parse_version("v0.7.0")).component_names, "extra")
    assert v07.component("gateway-plugins").dockerfile == "gateway/Dockerfile"
    assert v07.component("runtime").dockerfile == "build/container/Dockerfile.python"


def test_without_extends_a_file_stands_alone() -> None:
    config = parse_config(doc(), FILE)
    assert config.component_names == ("runtime", "gateway-plugins")
    assert config.preflight.kustomizations == () and config.preflight.dependencies == ()
    assert config.mirrors == {}


def test_extends_names_a_built_in_configuration() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config('extends = "kubeflow"\n', FILE)
    assert caught.value.key == "extends"
    assert caught.value.reason == (
        "'kubeflow' is not a built-in configuration to extend; the ones that exist are: aibrix"
    )


# ---- [preflight] ----------------------------------------------------------------------------


def test_the_preflight_section() -> None:
    extra = "\n".join(
        [
            "[preflight]",
            'kustomizations = ["deploy/kustomization.yaml"]',
            'dependencies = ["redis:7.4"]',
            'final = "show"',
            'prerelease = "refuse"',
        ]
    )
    config = parse_config(doc(extra=extra), FILE)
    assert config.preflight.kustomizations == ("deploy/kustomization.yaml",)
    assert config.preflight.dependencies == ("docker.io/library/redis:7.4",)
    assert not config.preflight.refuses(parse_version("v1.0.0"))
    assert config.preflight.refuses(parse_version("v1.0.0-rc.1"))
    assert DEFAULTS.preflight.refuses(parse_version("v1.0.0"))
    assert not DEFAULTS.preflight.refuses(parse_version("v1.0.0-rc.1"))


@pytest.mark.parametrize(
    ("line", "key", "reason"),
    [
        ('final = "warn"', "preflight.final", "is not a policy; expected one of refuse, show"),
        ('charts = ["../Chart.yaml"]', "preflight.charts[0]", "leads out of the source"),
        ('dependencies = ["Not An Image"]', "preflight.dependencies[0]", ""),
    ],
)
def test_a_bad_preflight_key_is_refused(line: str, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(f"{TOP}\n{SOURCE}\n[preflight]\n{line}\n{doc(top='', source='')}", FILE)
    assert caught.value.key == key
    assert reason in caught.value.reason
