"""The tier rule (issue 11 item 6): a test is marked from the fixtures it uses, and a
test under tests/unit that asks for a service is refused at collection."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.tiers import SERVICE_FIXTURES, markers_for, misplaced_in_unit

UNIT = Path("/repo/tests/unit")


@pytest.mark.parametrize(
    ("fixtures", "markers"),
    [
        ((), ()),
        (("tmp_path", "key_prefix", "unique_repo"), ()),
        (("redis_url", "lab"), ("integration",)),
        (("lab",), ("integration",)),
        (("lab", "redis_url", "docker_available"), ("integration", "lab")),
        (("docker_available",), ("integration", "lab")),
    ],
)
def test_markers_follow_the_fixtures(fixtures: tuple[str, ...], markers: tuple[str, ...]) -> None:
    assert markers_for(fixtures) == markers


@pytest.mark.parametrize("service", sorted(SERVICE_FIXTURES))
def test_a_service_fixture_under_unit_is_misplaced(service: str) -> None:
    path = UNIT / "test_x.py"
    assert misplaced_in_unit(path, ("tmp_path", service), UNIT) == [service]


def test_the_same_fixtures_elsewhere_are_fine() -> None:
    for tier in ("integration", "lab"):
        path = UNIT.parent / tier / "test_x.py"
        assert misplaced_in_unit(path, sorted(SERVICE_FIXTURES), UNIT) == []
    assert misplaced_in_unit(UNIT / "test_x.py", ("tmp_path", "key_prefix"), UNIT) == []


def test_every_unit_test_here_is_unmarked(request: pytest.FixtureRequest) -> None:
    """This very test sits in tests/unit and was collected: the rule marked it nothing."""
    assert request.node.get_closest_marker("integration") is None
    assert request.node.get_closest_marker("lab") is None
