"""A worker refuses a build job its own config would build otherwise than the bot planned
(config drift between the bot and the workers): the job carries the plan's build id, a job
written without it builds as before, and the refusal names the component and what differs."""

from __future__ import annotations

from types import MappingProxyType

from jobs.domain.builds import (
    BUILD,
    SHARED_WITH,
    BuildGroup,
    build_drift,
    builds_to_run,
    job_build_id,
    job_components,
    shared_payload,
)
from jobs.domain.config import Component
from jobs.domain.plan import build_id
from jobs.domain.platforms import parse_platform

REV = "1a2b3c4d5e6f" + "0" * 28
PLATFORMS = (parse_platform("linux/amd64"), parse_platform("linux/arm64"))
SHARED = Component("metadata-service", dockerfile="build/container/Dockerfile.python")
RUNTIME = Component("runtime", dockerfile="build/container/Dockerfile.python")


def test_the_plans_build_id_round_trips_through_the_job_payload() -> None:
    plan = build_id(SHARED, REV, PLATFORMS)
    payload = shared_payload(["metadata-service", "runtime"], plan)
    assert payload == {SHARED_WITH: "runtime", BUILD: plan}
    assert job_build_id(payload) == plan
    assert job_components("metadata-service", payload) == ("metadata-service", "runtime")
    assert job_build_id(shared_payload(["runtime"], plan)) == plan
    planned = builds_to_run([BuildGroup(plan, ("metadata-service", "runtime"))], PLATFORMS)
    assert {p.build for p in planned} == {plan}


def test_a_job_written_without_the_id_builds_as_before() -> None:
    old = {SHARED_WITH: "runtime"}
    assert job_build_id(old) == ""
    assert job_build_id({}) == ""
    drifted = Component("runtime", build_args=MappingProxyType({"PY": "3.12"}))
    assert build_drift([SHARED, drifted], REV, PLATFORMS, old) is None
    assert shared_payload(["runtime"]) == {}


def test_the_same_inputs_are_no_drift() -> None:
    payload = shared_payload(["metadata-service", "runtime"], build_id(SHARED, REV, PLATFORMS))
    assert build_drift([SHARED, RUNTIME], REV, PLATFORMS, payload) is None


def test_a_follower_with_another_build_arg_is_refused_with_a_sentence_naming_it() -> None:
    plan = build_id(SHARED, REV, PLATFORMS)
    payload = shared_payload(["metadata-service", "runtime"], plan)
    drifted = Component(
        "runtime",
        dockerfile="build/container/Dockerfile.python",
        build_args=MappingProxyType({"PY": "3.12"}),
    )
    here = build_id(drifted, REV, PLATFORMS)
    sentence = build_drift([SHARED, drifted], REV, PLATFORMS, payload)
    assert sentence == (
        "this worker's configuration builds runtime differently from the bot's"
        " (Dockerfile build/container/Dockerfile.python; context .; build args PY):"
        f" the bot planned build {plan}, this worker would build {here};"
        " give the workers the bot's configuration"
    )
    assert "3.12" not in sentence  # values may be secrets: names only


def test_another_target_or_revision_is_drift_too() -> None:
    payload = shared_payload(["runtime"], build_id(RUNTIME, REV, PLATFORMS))
    targeted = Component("runtime", dockerfile=RUNTIME.dockerfile, target="slim")
    sentence = build_drift([targeted], REV, PLATFORMS, payload)
    assert sentence is not None and "target slim" in sentence
    assert build_drift([RUNTIME], "f" * 40, PLATFORMS, payload) is not None
