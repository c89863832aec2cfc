"""Fixtures that find the real lab services started by `scripts/lab up`, and the tier rule.

In CI (CI=true) a missing service is a failure; elsewhere the test skips and says why.
Any other skip in CI fails too unless listed with its reason (tests/support/skips.py).
Every test is marked from the fixtures it uses (`integration`, `lab`), and a test under
tests/unit that asks for a service fails the collection (tests/support/tiers.py).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

# In CI a skip not listed in tests/skips-allowed.txt fails the run: the rule's hooks.
from tests.support.skips import (  # noqa: F401
    in_ci,
    pytest_make_collect_report,
    pytest_runtest_makereport,
)
from tests.support.tiers import markers_for, misplaced_in_unit

# pytester runs the no-silent-skips rule's own tests (tests/unit/test_skips_rule.py).
pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "tests" / "unit"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test by the services its fixtures reach, and refuse a service test in
    the unit tier: `scripts/test --unit` must never need the lab."""
    misplaced: list[str] = []
    for item in items:
        used = getattr(item, "fixturenames", ())
        for name in markers_for(used):
            item.add_marker(name)
        services = misplaced_in_unit(Path(item.path), used, UNIT)
        if services:
            misplaced.append(f"  {item.nodeid} uses {', '.join(services)}")
    if misplaced:
        raise pytest.UsageError(
            "tests under tests/unit must not use a service; move these to "
            "tests/integration (Redis, registry) or tests/lab (Docker):\n" + "\n".join(misplaced)
        )


def _in_ci() -> bool:
    return in_ci()


def service_missing(reason: str, hint: str = "start it with scripts/lab up") -> NoReturn:
    """Fail in CI, skip elsewhere: a test that needs a service never passes without it.
    Every skip for a missing service or host capability goes through here."""
    message = f"{reason} ({hint})"
    if _in_ci():
        pytest.fail(f"CI requires the lab: {message}", pytrace=False)
    pytest.skip(message)


@dataclass(frozen=True)
class Lab:
    dir: Path
    registry: str  # plain registry, host:port
    auth_registry: str  # htpasswd registry
    mirror_registry: str
    auth_user: str
    auth_password_file: Path
    base_image: str  # busybox, both architectures: the sample project's base
    python_image: str  # Debian's Python 3.11, both architectures: the bot image's base
    docker_cli_dir: Path  # linux-ARCH/docker and docker-buildx for the bot image
    redis_url: str

    @property
    def auth_password(self) -> str:
        return self.auth_password_file.read_text().strip()


def _read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    return values


def _port_open(hostport: str) -> bool:
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def lab_dir() -> Path:
    return Path(os.environ.get("AIBRIX_LAB_DIR", REPO / ".lab"))


def load_lab(directory: Path) -> Lab:
    """The lab's addresses as `scripts/lab up` wrote them to lab.env."""
    env = _read_env_file(directory / "lab.env")
    return Lab(
        dir=directory,
        registry=env["AIBRIX_LAB_REGISTRY"],
        auth_registry=env["AIBRIX_LAB_AUTH_REGISTRY"],
        mirror_registry=env["AIBRIX_LAB_MIRROR_REGISTRY"],
        auth_user=env["AIBRIX_LAB_AUTH_USER"],
        auth_password_file=Path(env["AIBRIX_LAB_AUTH_PASSWORD_FILE"]),
        base_image=env["AIBRIX_LAB_BASE_IMAGE"],
        python_image=env["AIBRIX_LAB_PYTHON_IMAGE"],
        docker_cli_dir=Path(env["AIBRIX_LAB_DOCKER_CLI_DIR"]),
        redis_url=env["AIBRIX_LAB_REDIS_URL"],
    )


@pytest.fixture(scope="session")
def lab() -> Lab:
    directory = lab_dir()
    env_file = directory / "lab.env"
    if not env_file.exists():
        service_missing(f"the lab is not up: {env_file} does not exist")
    found = load_lab(directory)
    for name, hostport in (
        ("registry", found.registry),
        ("auth registry", found.auth_registry),
        ("mirror registry", found.mirror_registry),
    ):
        if not _port_open(hostport):
            service_missing(f"the lab {name} at {hostport} does not answer")
    return found


@pytest.fixture(scope="session")
def redis_url(lab: Lab) -> str:
    hostport = lab.redis_url.removeprefix("redis://").split("/")[0]
    if not _port_open(hostport):
        service_missing(f"Redis at {hostport} does not answer")
    return lab.redis_url


@pytest.fixture(scope="session")
def docker_available(lab: Lab) -> None:
    from python_on_whales import DockerException, docker

    try:
        docker.buildx.version()
        docker.info()
    except DockerException as error:
        service_missing(f"the Docker engine or Buildx does not answer: {error.stderr or error}")


@pytest.fixture
def key_prefix() -> str:
    """A Redis key prefix of its own for each test, so tests never see each other's keys."""
    return f"aibrix-test:{uuid.uuid4().hex[:12]}"


@pytest.fixture
def unique_repo() -> Iterator[str]:
    """A repository path of its own for each test inside the lab registries."""
    yield f"test/{uuid.uuid4().hex[:12]}"
