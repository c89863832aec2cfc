"""Which tier a test belongs to, from the fixtures it asks for.

The folder says where a test sits (tests/unit, tests/integration, tests/lab); the fixtures
say what it needs. tests/conftest.py marks every test from its fixtures and refuses a
collection where a test under tests/unit asks for a service, so a test that needs Redis,
a registry or Docker cannot sit in the unit tier unnoticed.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

# The conftest fixtures that reach a lab service; every service test asks for one of them
# (directly or through a fixture of its own that does).
SERVICE_FIXTURES = frozenset({"lab", "redis_url", "docker_available"})
DOCKER_FIXTURES = frozenset({"docker_available"})


def markers_for(fixturenames: Iterable[str]) -> tuple[str, ...]:
    """`integration` for a test that needs a service, and `lab` too when it needs Docker."""
    used = set(fixturenames)
    found: list[str] = []
    if used & SERVICE_FIXTURES:
        found.append("integration")
    if used & DOCKER_FIXTURES:
        found.append("lab")
    return tuple(found)


def misplaced_in_unit(path: Path, fixturenames: Iterable[str], unit_dir: Path) -> list[str]:
    """The service fixtures a test under `unit_dir` asks for: empty when it is where it
    belongs."""
    if unit_dir not in path.parents:
        return []
    return sorted(set(fixturenames) & SERVICE_FIXTURES)
