"""The plan builder (issue 13, items 2 and 3): build ids shared by identical build
inputs, every tag the release would write, missing paths, the JSON shape, the refusal
policy, and the Block Kit rendering of `/aibrix plan` within Slack's limits."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from types import MappingProxyType

from hypothesis import given
from hypothesis import strategies as st

from handlers.blocks import HEADER_LIMIT, MAX_BLOCKS, SECTION_TEXT_LIMIT, plan_message
from handlers.parse import ParseError, PlanCommand, parse_command
from jobs.domain.config import Component, Preflight, components_for
from jobs.domain.config_reader import default_config, parse_config
from jobs.domain.plan import (
    Dependency,
    Plan,
    build_id,
    build_plan,
    missing_paths,
    plan_json,
    refusing,
)
from jobs.domain.platforms import DEFAULT_PLATFORMS, parse_platform
from jobs.domain.preflight import MANIFEST, MISSING, Problem
from jobs.domain.versions import parse_version

DEFAULTS = default_config()
REV = "1a2b3c4d5e6f" + "0" * 28
V030, V070 = parse_version("v0.3.0-rc.2"), parse_version("v0.7.0")


def plan_of(
    version_text: str, problems: Sequence[Problem] = (), dependencies: Sequence[Dependency] = ()
) -> Plan:
    version = parse_version(version_text)
    builds = components_for(DEFAULTS, version)
    return build_plan(DEFAULTS, version, REV, builds, DEFAULT_PLATFORMS, problems, dependencies)


def test_metadata_service_and_runtime_share_one_build_from_v05_only() -> None:
    new = plan_of("v0.7.0")
    builds = {c.name: c.build for c in new.components}
    assert builds["metadata-service"] == builds["runtime"]
    assert new.shared_builds() == {builds["runtime"]: ("metadata-service", "runtime")}
    assert plan_of("v0.3.0-rc.2").shared_builds() == {}


component_strategy = st.builds(
    Component,
    name=st.sampled_from(["a", "b"]),
    dockerfile=st.sampled_from(["Dockerfile", "Dockerfile.python"]),
    context=st.sampled_from([".", "app"]),
    build_args=st.dictionaries(st.sampled_from(["X", "Y"]), st.sampled_from(["1", "2"])).map(
        MappingProxyType
    ),
    target=st.sampled_from([None, "final"]),
)


@given(component_strategy, component_strategy, st.sampled_from([REV, "f" * 40]))
def test_the_build_id_is_the_same_exactly_when_the_inputs_are(
    first: Component, second: Component, revision: str
) -> None:
    same_inputs = (
        first.dockerfile_path == second.dockerfile_path
        and first.context == second.context
        and dict(first.build_args) == dict(second.build_args)
        and first.target == second.target
    )
    platforms = DEFAULT_PLATFORMS
    assert (build_id(first, REV, platforms) == build_id(second, revision, platforms)) == (
        same_inputs and revision == REV
    )
    assert build_id(first, REV, platforms) != build_id(first, REV, platforms[:1])


def test_publish_lists_every_tag_per_registry() -> None:
    text = "\n".join(
        [
            'extends = "aibrix"',
            "[promotion]",
            'tags = ["latest", "v{major}.{minor}"]',
            'mirrors = ["beijing"]',
        ]
    )
    config = parse_config(text, Path("/etc/aibrix.toml"))
    builds = components_for(config, V070)
    plan = build_plan(config, V070, REV, builds, DEFAULT_PLATFORMS)
    publish = dict(plan.publish)
    beijing = "aibrix-container-registry-cn-beijing.cr.volces.com/aibrix"
    # every publish registry (AIBrix: Docker Hub and GHCR), then the promotion mirror
    assert list(publish) == ["docker.io/aibrix", "ghcr.io/aibrix", beijing]
    assert "docker.io/aibrix/vllm-mock:v0.7.0" in publish["docker.io/aibrix"]
    assert "ghcr.io/aibrix/runtime:v0.7" in publish["ghcr.io/aibrix"]
    assert "docker.io/aibrix/runtime:v0.7" in publish["docker.io/aibrix"]
    assert f"{beijing}/runtime:latest" in publish[beijing]
    assert len(publish["docker.io/aibrix"]) == 6 * 3
    # a prerelease gets only its own tag (promotion.prereleases is false)
    rc = parse_version("v0.7.1-rc.1")
    assert all(
        r.endswith(":v0.7.1-rc.1")
        for _, refs in build_plan(config, rc, REV, builds, DEFAULT_PLATFORMS).publish
        for r in refs
    )


def test_missing_paths_names_the_component_the_path_and_the_revision() -> None:
    builds = components_for(DEFAULTS, V070)
    present = {".": "dir", "build/container/Dockerfile": "file", "development/app": "file"}
    problems = missing_paths(builds, V070, REV, lambda path: present.get(path, ""))
    assert [p.file for p in problems] == [
        "build/container/Dockerfile.gateway",
        "build/container/Dockerfile.python",
        "build/container/Dockerfile.kvcache",
        "build/container/Dockerfile.python",
        "development/app",  # a file where the context directory should be
    ]
    assert problems[-1].message == (
        "vllm-mock: the context development/app does not exist in v0.7.0 at revision 1a2b3c4d5e6f"
    )
    assert all(p.kind == MISSING and p.line == 0 for p in problems)


def test_the_json_shape() -> None:
    problem = Problem(MANIFEST, "dist/chart/Chart.yaml", 4, "appVersion is 0.6.0; ...")
    dependency = Dependency("docker.io/library/redis:7.4", "missing", ("linux/arm64",))
    data = plan_json(plan_of("v0.7.0", problems=[problem], dependencies=[dependency]))
    assert list(data) == [
        "version",
        "revision",
        "components",
        "publish",
        "problems",
        "dependencies",
    ]
    assert data["version"] == "v0.7.0" and data["revision"] == REV
    assert data["problems"] == [
        {
            "kind": "manifest",
            "file": "dist/chart/Chart.yaml",
            "line": 4,
            "message": "appVersion is 0.6.0; ...",
        }
    ]
    assert data["dependencies"] == [
        {
            "reference": "docker.io/library/redis:7.4",
            "verdict": "missing",
            "missing": ["linux/arm64"],
            "error": None,
        }
    ]
    json.dumps(data)  # plain JSON values only


def test_the_policy_refuses_a_final_release_and_shows_for_a_prerelease() -> None:
    manifest = Problem(MANIFEST, "k.yaml", 3, "x")
    missing = Problem(MISSING, "Dockerfile", 0, "y")
    final = plan_of("v0.7.0", problems=[manifest, missing])
    assert refusing(final, DEFAULTS.preflight) == (manifest, missing)
    rc = plan_of("v0.7.0-rc.1", problems=[manifest, missing])
    assert refusing(rc, DEFAULTS.preflight) == (missing,)  # a missing path always refuses
    lenient = Preflight(final="show")
    assert refusing(final, lenient) == (missing,)
    assert plan_of("v0.7.0").clean
    assert not plan_of("v0.7.0", dependencies=[Dependency("r", "error", error="e")]).clean


# ---- /aibrix plan ------------------------------------------------------------------------------


def test_slash_plan_parses_like_release_and_takes_no_options() -> None:
    parsed = parse_command("plan v0.7.0 vllm-mock", DEFAULTS)
    assert isinstance(parsed, PlanCommand)
    assert parsed.plan.components == ("vllm-mock",)
    refused = parse_command("plan v0.3.0 vllm-mock", DEFAULTS)
    assert isinstance(refused, ParseError)
    assert "vllm-mock is not part of v0.3.0" in refused.message
    assert isinstance(parse_command("plan", DEFAULTS), ParseError)
    option = parse_command("plan v0.7.0 --supersede", DEFAULTS)
    assert isinstance(option, ParseError) and "no options" in option.message


def test_the_plan_message_stays_within_slack_limits_and_shows_problems_first() -> None:
    problems = [Problem(MANIFEST, "k.yaml", n, "x" * 400) for n in range(1, 300)]
    dependencies = [Dependency(f"r/{n}:t", "missing", ("linux/arm64",)) for n in range(200)]
    many = [
        dataclasses.replace(c, name=f"c{n}")
        for n in range(60)
        for c in components_for(DEFAULTS, V070)[:1]
    ]
    plan = build_plan(
        DEFAULTS, V070, REV, many, [parse_platform("linux/amd64")], problems, dependencies
    )
    message = plan_message(plan)
    assert len(message.blocks) <= MAX_BLOCKS
    assert message.blocks[0]["type"] == "header"
    assert len(message.blocks[0]["text"]["text"]) <= HEADER_LIMIT
    for block in message.blocks:
        if block["type"] == "section":
            assert len(block["text"]["text"]) <= SECTION_TEXT_LIMIT
    assert "k.yaml:1: " in json.dumps(message.blocks[2])
    small = plan_message(plan_of("v0.7.0"))
    shown = json.dumps(small.blocks)
    assert "metadata-service, runtime are one build" in shown
    assert "A plan changes nothing" in shown
