"""The preflight of the release manifests (issue 13, item 4): each finding names the
file, the line, what it says and what it should say; the other overlay images are the
release's dependencies."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobs.domain.preflight import (
    MANIFEST,
    UNREADABLE,
    Problem,
    check_chart,
    check_kustomization,
)
from jobs.domain.versions import Version, parse_version

OVERLAY = "config/overlays/release/kustomization.yaml"
CHART = "dist/chart/Chart.yaml"
OWN = ("controller-manager", "gateway-plugins", "metadata-service", "runtime")
V070 = parse_version("v0.7.0")

# AIBrix #2028: the overlay of a final release still named the previous version.
STALE = """\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
images:
- name: aibrix/gateway-plugins
  newTag: v0.7.0
- name: aibrix/runtime
  newTag: v0.6.0
- name: aibrix/metadata-service
- name: aibrix/kuberay-operator
  newName: registry.example.com/aibrix/kuberay-operator
  newTag: v1.2.1-patch-20250726
- name: busybox
  digest: sha256:0000000000000000000000000000000000000000000000000000000000000000
- name: redis
  newTag: "7.4"
"""


def test_a_stale_overlay_is_named_by_file_line_and_what_it_should_say() -> None:
    found = check_kustomization(OVERLAY, STALE, V070, OWN)
    assert found.problems == (
        Problem(
            MANIFEST,
            OVERLAY,
            7,
            "aibrix/runtime has newTag v0.6.0; a release of v0.7.0 must ship newTag v0.7.0",
        ),
        Problem(
            MANIFEST,
            OVERLAY,
            8,
            "aibrix/metadata-service has no newTag; a release of v0.7.0 must ship newTag v0.7.0",
        ),
    )
    assert found.problems[0].sentence() == (
        f"{OVERLAY}:7: aibrix/runtime has newTag v0.6.0; a release of v0.7.0 must ship "
        "newTag v0.7.0"
    )
    assert found.dependencies == (
        "registry.example.com/aibrix/kuberay-operator:v1.2.1-patch-20250726",
        "busybox@sha256:" + "0" * 64,
        "redis:7.4",
    )


def test_an_image_that_is_not_in_the_release_is_a_dependency_not_a_finding() -> None:
    # before v0.7.0 there is no vllm-mock in the release: its overlay entry is a dependency
    text = "images:\n- name: aibrix/vllm-mock\n  newTag: nightly\n"
    found = check_kustomization(OVERLAY, text, parse_version("v0.4.0"), OWN)
    assert found.problems == () and found.dependencies == ("aibrix/vllm-mock:nightly",)


@given(st.builds(Version, st.integers(0, 3), st.integers(0, 20), st.integers(0, 5)))
def test_an_overlay_at_the_version_is_clean(version: Version) -> None:
    text = "images:\n" + "".join(f"- name: aibrix/{c}\n  newTag: {version}\n" for c in OWN)
    assert check_kustomization(OVERLAY, text, version, OWN).problems == ()


def test_a_chart_whose_app_version_is_another_version() -> None:
    text = "apiVersion: v2\nname: aibrix\nversion: 0.6.0\nappVersion: v0.7.0\n"
    (problem,) = check_chart(CHART, text, V070).problems
    assert problem == Problem(
        MANIFEST, CHART, 4, "appVersion is v0.7.0; a release of v0.7.0 must ship appVersion 0.7.0"
    )
    assert check_chart(CHART, "appVersion: 0.7.0\n", V070).problems == ()
    assert (
        check_chart(CHART, 'appVersion: "0.7.0-rc.1"\n', parse_version("v0.7.0-rc.1")).problems
        == ()
    )


def test_a_chart_without_app_version() -> None:
    (problem,) = check_chart(CHART, "name: aibrix\n", V070).problems
    assert (problem.line, problem.message) == (
        0,
        "there is no appVersion; a release of v0.7.0 must ship appVersion 0.7.0",
    )


@pytest.mark.parametrize(
    ("text", "line"),
    [("images:\n- name: [unclosed\n", 3), ("- just\n- a list\n", 1), ("images: 3\n", 1)],
)
def test_a_manifest_that_cannot_be_read_is_a_finding_with_its_line(text: str, line: int) -> None:
    (problem,) = check_kustomization(OVERLAY, text, V070, OWN).problems
    assert problem.kind == UNREADABLE
    assert problem.file == OVERLAY
    assert problem.line == line


def test_an_empty_manifest_says_nothing() -> None:
    assert check_kustomization(OVERLAY, "", V070, OWN).problems == ()
    assert check_chart(CHART, "", V070).problems == ()


# AIBrix v0.6.0 as tagged (vllm-project/aibrix, Apache-2.0): the final release's overlay
# and chart still named v0.5.0, the #2028 class. The preflight refuses it.
AIBRIX_V060_OVERLAY = """\
# this manifest is for public stable release.
# Please override the tag with latest stable tags.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization

resources:
- ../../default
- pdb.yaml

patches:
  - path: envoy_proxy_patch.yaml
  - path: gateway_plugins_patch.yaml

images:
- name: quay.io/kuberay/operator
  newName: aibrix/kuberay-operator
  newTag: v1.2.1-patch-20250726
- name: busybox
  newTag: stable
- name: redis
  newTag: latest
- name: aibrix/gateway-plugins
  newTag: v0.5.0
- name: aibrix/metadata-service
  newTag: v0.5.0
- name: aibrix/controller-manager
  newTag: v0.5.0
- name: aibrix/runtime
  newTag: v0.5.0
"""
AIBRIX_V060_CHART = """\
apiVersion: v2
name: aibrix
description: Cloud-native LLM inference infrastructure
type: application
version: 0.5.0
appVersion: "0.5.0"
"""


def test_aibrix_v060_as_tagged_is_caught() -> None:
    v060 = parse_version("v0.6.0")
    found = check_kustomization(OVERLAY, AIBRIX_V060_OVERLAY, v060, OWN)
    assert [(p.line, p.message) for p in found.problems] == [
        (line, f"aibrix/{image} has newTag v0.5.0; a release of v0.6.0 must ship newTag v0.6.0")
        for line, image in (
            (23, "gateway-plugins"),
            (25, "metadata-service"),
            (27, "controller-manager"),
            (29, "runtime"),
        )
    ]
    assert found.dependencies == (
        "aibrix/kuberay-operator:v1.2.1-patch-20250726",
        "busybox:stable",
        "redis:latest",
    )
    (chart,) = check_chart(CHART, AIBRIX_V060_CHART, v060).problems
    assert chart.sentence() == (
        f"{CHART}:6: appVersion is 0.5.0; a release of v0.6.0 must ship appVersion 0.6.0"
    )
