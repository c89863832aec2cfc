"""`/aibrix` text to command: pure, exhaustive over what a user can type."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handlers.parse import (
    MAX_TEXT_LENGTH,
    ButtonValue,
    CancelCommand,
    HelpCommand,
    InspectCommand,
    ParseError,
    ReleaseCommand,
    RetryCommand,
    StatusCommand,
    SyncCommand,
    button_value,
    parse_button_value,
    parse_command,
)
from jobs.domain.config import Config
from jobs.domain.config_reader import load_config
from tests.support.pipeline import SAMPLE, SAMPLE_COMPONENTS

_TOML = "\n".join(
    [
        'repository = "127.0.0.1:5000/parse"',
        'platforms = ["linux/amd64", "linux/arm64"]',
        "[source]",
        f'path = "{SAMPLE}"',
        "[mirrors]",
        'lab-mirror = "127.0.0.1:5002/parse"',
        *(
            line
            for name, dockerfile in SAMPLE_COMPONENTS.items()
            for line in ("[[components]]", f'name = "{name}"', f'dockerfile = "{dockerfile}"')
        ),
    ]
)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    path: Path = tmp_path_factory.mktemp("parse") / "aibrix.toml"
    path.write_text(_TOML + "\n")
    return load_config(path)


CONFIG_HOLDER: list[Config] = []


def _config() -> Config:
    if not CONFIG_HOLDER:
        import tempfile

        path = Path(tempfile.mkdtemp()) / "aibrix.toml"
        path.write_text(_TOML + "\n")
        CONFIG_HOLDER.append(load_config(path))
    return CONFIG_HOLDER[0]


def test_release_with_and_without_components(config: Config) -> None:
    parsed = parse_command("release v0.3.0-rc.2", config)
    assert isinstance(parsed, ReleaseCommand)
    assert str(parsed.plan.version) == "v0.3.0-rc.2"
    assert parsed.plan.components == config.component_names
    parsed = parse_command("  release   v1.2.3 runtime runtime gateway-plugins ", config)
    assert isinstance(parsed, ReleaseCommand)
    assert parsed.plan.components == ("runtime", "gateway-plugins")


def test_every_subcommand(config: Config) -> None:
    assert parse_command("", config) == HelpCommand()
    assert parse_command("help", config) == HelpCommand()
    assert parse_command("HELP", config) == HelpCommand()
    assert parse_command("status", config) == StatusCommand(None)
    assert parse_command("status v0.3.0", config) == StatusCommand("v0.3.0")
    assert parse_command("cancel v0.3.0", config) == CancelCommand("v0.3.0")
    assert parse_command("retry v0.3.0", config) == RetryCommand("v0.3.0")
    assert parse_command("sync v0.3.0 lab-mirror", config) == SyncCommand("v0.3.0", "lab-mirror")
    assert parse_command("sync v0.3.0 lab-mirror --ready", config) == SyncCommand(
        "v0.3.0", "lab-mirror", ready=True
    )
    inspect = parse_command("inspect runtime v0.3.0", config)
    assert isinstance(inspect, InspectCommand)
    assert str(inspect.reference) == "127.0.0.1:5000/parse/runtime:v0.3.0"
    assert inspect.component == "runtime"
    for text in ("inspect docker.io/aibrix/runtime:v1", "inspect docker.io/aibrix/runtime v1"):
        inspect = parse_command(text, config)
        assert isinstance(inspect, InspectCommand) and inspect.reference.tag == "v1"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bogus", "is not an /aibrix command"),
        ("release", "no release version given"),
        ("release v1", "is not a release version"),
        ("release V1.0.0", "lowercase 'v'"),
        ("release v1.0.0+build", "'+' (U+002B)"),
        ("release v1.0.0 nope", "is not a component"),
        ("release v1.0.0 Runtime", "is not a component"),
        ("status a b", "does not take 2 arguments"),
        ("cancel", "no release version given"),
        ("cancel v1.0.0 v1.0.1", "does not take 2 arguments"),
        ("retry", "no release version given"),
        ("sync", "does not take 0 arguments"),
        ("sync v1.0.0 nowhere", "is not a configured mirror"),
        ("sync v1.0.0 127.0.0.1:5002/x", "is not a configured mirror"),
        ("sync v1.0.0 127.0.0.1:5000/parse", "is the release repository itself"),
        ("sync v1.0.0 lab-mirror --force", "does not take 3 arguments"),
        ("inspect", "does not take 0 arguments"),
        ("inspect a b c", "does not take 3 arguments"),
        ("inspect docker.io/x/y:v1 v2", "already has a tag"),
        ("inspect runtme", "is not a component"),
        ("help now", "usage"),
    ],
)
def test_refusals_say_what_is_wrong_and_what_is_accepted(
    config: Config, text: str, expected: str
) -> None:
    parsed = parse_command(text, config)
    assert isinstance(parsed, ParseError)
    assert expected in parsed.message


SHELL = ";|&$`\\\"'<>(){}[]*?!~#%^=,\n\r\x00\u200b\u0435"


@given(
    prefix=st.sampled_from(["", "release v1.0.0 ", "status ", "inspect "]),
    char=st.sampled_from(SHELL),
)
def test_any_shell_or_odd_character_is_refused(prefix: str, char: str) -> None:
    parsed = parse_command(prefix + char + "x", _config())
    assert isinstance(parsed, ParseError)
    assert "(U+" in parsed.message


@given(st.text(max_size=600))
def test_any_text_gives_a_command_or_a_refusal_never_an_exception(text: str) -> None:
    parsed = parse_command(text, _config())
    if isinstance(parsed, ParseError):
        assert parsed.message
        assert len(parsed.message) < 1500
    if len(text) > MAX_TEXT_LENGTH:
        assert isinstance(parsed, ParseError)


@given(st.integers(min_value=MAX_TEXT_LENGTH + 1, max_value=20_000))
def test_long_text_is_refused_with_the_limit(length: int) -> None:
    parsed = parse_command("release " + "v" * length, _config())
    assert isinstance(parsed, ParseError) and "at most 500" in parsed.message


@given(
    major=st.integers(0, 999),
    minor=st.integers(0, 999),
    patch=st.integers(0, 999),
    pre=st.one_of(st.none(), st.from_regex(r"\A(rc|alpha|beta)\.[1-9][0-9]?\Z")),
    components=st.lists(st.sampled_from(sorted(SAMPLE_COMPONENTS)), max_size=5),
)
def test_valid_releases_round_trip(
    major: int, minor: int, patch: int, pre: str | None, components: list[str]
) -> None:
    version = f"v{major}.{minor}.{patch}" + (f"-{pre}" if pre else "")
    parsed = parse_command(" ".join(["release", version, *components]), _config())
    assert isinstance(parsed, ReleaseCommand), parsed
    assert str(parsed.plan.version) == version
    assert parsed.plan.components == (tuple(dict.fromkeys(components)) or _config().component_names)


@given(st.from_regex(r"\A[a-z]{1,12}\Z"))
def test_unknown_words_are_unknown_subcommands(word: str) -> None:
    parsed = parse_command(word + " v1.0.0", _config())
    known = {"release", "inspect", "status", "sync", "cancel", "retry", "help"}
    if word in known:
        return
    assert isinstance(parsed, ParseError) and "is not an /aibrix command" in parsed.message


@given(
    version=st.sampled_from(["v0.3.0", "v1.2.3-rc.1"]), run_id=st.from_regex(r"\A[0-9a-f]{16}\Z")
)
def test_button_values_round_trip(version: str, run_id: str) -> None:
    assert parse_button_value(button_value(version, run_id)) == ButtonValue(version, run_id)


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "",
        "x" * 400,
        "[]",
        '{"version": "v1.0.0"}',
        '{"version": "v1.0.0", "run_id": "abcdef12", "extra": 1}',
        '{"version": 1, "run_id": "abcdef12"}',
        '{"version": "1.0.0", "run_id": "abcdef12"}',
        '{"version": "v1.0.0", "run_id": "ABCDEF12"}',
        '{"version": "v1.0.0", "run_id": "abc"}',
        '{"version": "v1.0.0", "run_id": "abcdef12;rm"}',
    ],
)
def test_forged_button_values_are_refused(raw: object) -> None:
    assert isinstance(parse_button_value(raw), ParseError)
