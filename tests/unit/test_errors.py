"""The one exception tree: every user-facing exception descends from `AibrixError`
through a branch that carries its exit status, and the CLI maps the root once."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import socket
from collections.abc import Iterator

import pytest

from bot import cli
from jobs.domain.errors import (
    AibrixError,
    Failed,
    InvalidInput,
    NotFound,
    Refused,
    Unavailable,
    UsageError,
)
from jobs.domain.versions import VersionError, parse_version

# Exceptions that never reach a user: control flow inside one module, caught where raised.
INTERNAL = {
    # sync's gate signal, caught inside the sync use case and turned into a refused report
    "jobs.usecases.sync._Refused",
    # the registry client's "start the transfer again" signal, caught by its own retry loop
    "jobs.registry.client._RetryTransfer",
    # a build stopped because its release was cancelled: the worker catches it and acks
    "jobs.tools.build.BuildCancelled",
    # the build process stopped on request: `run_build` turns it into BuildCancelled
    "jobs.tools.process.Stopped",
}


def _exception_classes() -> Iterator[tuple[str, type[BaseException]]]:
    for package_name in ("bot", "handlers", "jobs"):
        package = importlib.import_module(package_name)
        names = [package_name] + [
            info.name for info in pkgutil.walk_packages(package.__path__, prefix=f"{package_name}.")
        ]
        for name in names:
            module = importlib.import_module(name)
            for _, value in inspect.getmembers(module, inspect.isclass):
                if issubclass(value, BaseException) and value.__module__ == name:
                    yield f"{name}.{value.__qualname__}", value


def test_every_exception_in_the_product_descends_from_aibrix_error_or_is_listed_internal() -> None:
    found = dict(_exception_classes())
    outside = sorted(
        name
        for name, cls in found.items()
        if not issubclass(cls, AibrixError) and name not in INTERNAL
    )
    assert outside == []
    assert set(found) >= INTERNAL, "an internal exception listed here no longer exists"


def test_every_user_facing_exception_sits_on_exactly_one_branch() -> None:
    branches = (InvalidInput, Refused, Unavailable, NotFound, Failed)
    for name, cls in _exception_classes():
        if cls in branches or cls is AibrixError or name in INTERNAL:
            continue
        on = [branch.__name__ for branch in branches if issubclass(cls, branch)]
        assert len(on) == 1, f"{name} is on {on}"


@pytest.mark.parametrize(
    ("branch", "code"),
    [
        (InvalidInput, 2),
        (UsageError, 2),
        (Refused, 2),
        (Unavailable, 3),
        (NotFound, 1),
        (Failed, 1),
    ],
)
def test_each_branch_carries_its_exit_status(branch: type[AibrixError], code: int) -> None:
    assert branch.exit_code == code
    assert branch("x").exit_code == code


@pytest.mark.parametrize(
    ("branch", "code", "prefix"),
    [
        (InvalidInput, 2, "aibrix-bot inspect: "),
        (Refused, 2, "aibrix-bot inspect: "),
        (Unavailable, 3, "aibrix-bot: "),
        (NotFound, 1, "aibrix-bot: "),
        (Failed, 1, "aibrix-bot: "),
    ],
)
def test_the_cli_maps_a_raised_branch_to_its_exit_status_and_prints_the_sentence(
    branch: type[AibrixError],
    code: int,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def command(_: object) -> int:
        raise branch("the sentence the user reads")

    monkeypatch.setitem(cli.COMMANDS, "inspect", command)
    assert cli.main(["inspect", "example.com/a:v1"]) == code
    assert capsys.readouterr().err == f"{prefix}the sentence the user reads\n"


def test_a_bad_version_exits_2_with_the_version_sentence_and_touches_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AIBRIX_CONFIG", raising=False)
    with pytest.raises(VersionError) as raised:
        parse_version("not-a-version")
    # a Redis URL on a closed port: reaching it would fail with 3, so 2 proves nothing was
    # contacted before the version was refused
    code = cli.main(
        ["release", "not-a-version", "--redis-url", f"redis://127.0.0.1:{_closed_port()}/0"]
    )
    assert code == 2
    assert capsys.readouterr().err == f"aibrix-bot release: {raised.value}\n"


def test_an_unreachable_redis_exits_3_with_the_connection_sentence(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AIBRIX_CONFIG", raising=False)
    port = _closed_port()
    # No wait for Redis to come back (the default waits 60 s: tests/integration/
    # test_cli_redis_outage.py).
    url = f"redis://127.0.0.1:{port}/0"
    assert cli.main(["status", "--redis-url", url, "--redis-wait", "0"]) == 3
    err = capsys.readouterr().err
    assert err.startswith("aibrix-bot: ")
    assert f"127.0.0.1:{port}" in err


def test_a_usage_error_exits_2_naming_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["inspect"]) == 2
    assert capsys.readouterr().err == (
        "aibrix-bot inspect: give at least one REF (or --across VERSION)\n"
    )


def _closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
