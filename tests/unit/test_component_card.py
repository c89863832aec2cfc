"""A component's card, the pure part: which tags, what each cell says, what is wrong in
words, the Slack and terminal layouts within their limits, and how `/aibrix inspect
COMPONENT` and `/aibrix status COMPONENT` parse (issue 17)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.report import card_text
from handlers.blocks import card_message, inspection_with_card, release_message
from handlers.parse import CardCommand, InspectCommand, ParseError, StatusCommand, parse_command
from jobs.domain.component_card import (
    CardTag,
    Cell,
    CellState,
    ComponentCard,
    Record,
    Role,
    card_columns,
    card_headline,
    card_json,
    card_table,
    choose_tags,
    release_tags,
)
from jobs.domain.config import Config
from jobs.domain.config_reader import load_config
from jobs.domain.platforms import parse_platform
from jobs.domain.references import parse_reference
from jobs.domain.verdict import unreadable
from jobs.registry.inspection import Inspection
from tests.support.blocks import assert_within_limits
from tests.support.pipeline import SAMPLE

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    path: Path = tmp_path_factory.mktemp("card") / "aibrix.toml"
    path.write_text(
        "\n".join(
            [
                'repository = "docker.io/aibrix"',
                'platforms = ["linux/amd64", "linux/arm64"]',
                "[source]",
                f'path = "{SAMPLE}"',
                "[mirrors]",
                'beijing = "registry.cn-beijing.example.com/aibrix"',
                'shanghai = "registry.cn-shanghai.example.com/aibrix"',
                'tokyo = "registry.tokyo.example.com/aibrix"',
                "[promotion]",
                'tags = ["latest", "v{major}.{minor}"]',
                'mirrors = ["tokyo"]',
                "[inspect]",
                "registry_tags = 2",
                "[[components]]",
                'name = "runtime"',
                "[[components]]",
                'name = "gateway-plugins"',
            ]
        )
        + "\n"
    )
    return load_config(path)


def test_release_tags_newest_first_prereleases_after_their_release(config: Config) -> None:
    listed = [
        "v0.6.0-rc.1",
        "latest",
        "v0.7.0-amd64",  # a build's staging tag: never a release
        "v0.6.0",
        "nightly",
        "v0.10.0",
        "v0.7.0",
        "v0.7.0-rc.10",
        "v0.7.0-rc.2",
        "0.7.0",
    ]
    assert release_tags(listed, config) == [
        "v0.10.0",
        "v0.7.0",
        "v0.7.0-rc.10",
        "v0.7.0-rc.2",
        "v0.6.0",
        "v0.6.0-rc.1",
    ]


def test_columns_source_then_publish_then_mirrors(config: Config) -> None:
    columns = card_columns(config)
    assert [(c.name, c.kind.value) for c in columns] == [
        ("docker.io", "source"),
        ("tokyo", "publish"),
        ("beijing", "mirror"),
        ("shanghai", "mirror"),
    ]


def test_other_publish_registries_are_columns_after_the_source(config: Config) -> None:
    from dataclasses import replace

    published = replace(config, publish=("docker.io/aibrix", "ghcr.io/aibrix"))
    assert [(c.name, c.kind.value, c.location) for c in card_columns(published)][:3] == [
        ("docker.io", "source", "docker.io/aibrix"),
        ("ghcr.io/aibrix", "publish", "ghcr.io/aibrix"),
        ("tokyo", "publish", "registry.tokyo.example.com/aibrix"),
    ]


def test_choose_tags_records_registry_and_promotion_tags(config: Config) -> None:
    records = (
        Record("v0.6.0", "r1", "promoted", A),
        Record("v0.7.0", "r2", "promoted", A),
        Record("v0.8.0-rc.1", "r3", "ready", B),
        Record("v0.9.0", "r4", "failed", None),
    )
    listed = ["v0.7.0", "v0.6.0", "v0.5.0", "v0.4.0", "v0.3.0", "latest", "v0.8.0-rc.1"]
    tags = choose_tags(config, records, listed, 2)
    assert [(t.tag, t.role.value) for t in tags] == [
        ("v0.8.0-rc.1", "in-progress"),
        ("v0.7.0", "promoted"),
        ("v0.6.0", "registry"),  # on record (an older promoted release): kept with its record
        ("v0.5.0", "registry"),
        ("latest", "promotion-tag"),
        ("v0.7", "promotion-tag"),
    ]
    assert tags[2].record is not None and tags[3].record is None


def test_choose_tags_without_any_record_uses_the_tag_list(config: Config) -> None:
    tags = choose_tags(config, (), ["v0.2.0", "v0.3.0-rc.1", "v0.2.1", "foo"], 3)
    assert [t.tag for t in tags] == ["v0.3.0-rc.1", "v0.2.1", "v0.2.0", "latest", "v0.2"]
    assert choose_tags(config, (), [], 3) == (CardTag("latest", Role.PROMOTION_TAG),)


def _card(
    config: Config, cells: dict[tuple[str, str], Cell], tags: tuple[CardTag, ...]
) -> ComponentCard:
    return ComponentCard("runtime", "docker.io/aibrix/runtime", card_columns(config), tags, cells)


def _ok(digest: str) -> Cell:
    return Cell(CellState.OK, digest)


def test_problems_in_words_drift_lacking_missing_and_a_dead_registry(config: Config) -> None:
    released = CardTag("v0.7.0", Role.PROMOTED, Record("v0.7.0", "r", "promoted", A))
    old = CardTag("v0.3.0-rc.2", Role.REGISTRY)
    building = CardTag(
        "v0.8.0-rc.1", Role.IN_PROGRESS, Record("v0.8.0-rc.1", "s", "building", None)
    )
    dead = Cell(CellState.UNREADABLE, error="connection refused")
    cells = {
        ("v0.7.0", "docker.io"): _ok(A),
        ("v0.7.0", "tokyo"): _ok(A),
        ("v0.7.0", "beijing"): _ok(B),
        ("v0.7.0", "shanghai"): Cell(CellState.ABSENT),
        ("v0.3.0-rc.2", "docker.io"): Cell(CellState.MISSING, B, missing=("linux/amd64",)),
        ("v0.3.0-rc.2", "tokyo"): Cell(CellState.MISSING, B, missing=("linux/amd64",)),
        ("v0.3.0-rc.2", "beijing"): Cell(CellState.ABSENT),
        ("v0.3.0-rc.2", "shanghai"): Cell(CellState.ABSENT),
        ("v0.8.0-rc.1", "docker.io"): Cell(CellState.ABSENT),
        ("v0.8.0-rc.1", "tokyo"): Cell(CellState.ABSENT),
        ("v0.8.0-rc.1", "beijing"): Cell(CellState.ABSENT),
        ("v0.8.0-rc.1", "shanghai"): Cell(CellState.ABSENT),
    }
    card = _card(config, cells, (building, released, old))
    problems = card.problems
    assert problems == (
        "v0.3.0-rc.2 is missing linux/amd64 on docker.io",
        "v0.3.0-rc.2 is missing linux/amd64 on tokyo",
        f"beijing holds sha256:{'b' * 12} under v0.7.0, not the release's sha256:{'a' * 12}",
        "shanghai lacks v0.7.0",
    )  # an older tag is not expected on the mirrors, a release still building nowhere yet
    assert card_headline(card) == "v0.3.0-rc.2 is missing linux/amd64 on docker.io (and 3 more)"
    # A registry that cannot be read shows so in its column and never hides the others.
    cells.update({(t, "shanghai"): dead for t in ("v0.7.0", "v0.3.0-rc.2", "v0.8.0-rc.1")})
    card = _card(config, cells, (building, released, old))
    assert card.unreadable_columns == ("shanghai",)
    assert card.problems[-1] == "shanghai cannot be read: connection refused"
    assert "shanghai lacks v0.7.0" not in card.problems and len(card.problems) == 4
    header, *rows = card_table(card)
    assert header.split() == ["TAG", "docker.io", "tokyo", "beijing", "shanghai"]
    released_row = next(r for r in rows if r.startswith("v0.7.0 "))
    assert "DRIFT bbbbbbbb" in released_row and released_row.endswith("unreadable")
    data = card_json(card)
    assert data["registries"][3] == {  # type: ignore[index]
        "name": "shanghai",
        "kind": "mirror",
        "location": "registry.cn-shanghai.example.com/aibrix",
        "readable": False,
    }


def test_without_records_the_newest_final_tag_is_expected_everywhere(config: Config) -> None:
    tags = (
        CardTag("v0.3.0-rc.1", Role.REGISTRY),
        CardTag("v0.2.1", Role.REGISTRY),
        CardTag("v0.2.0", Role.REGISTRY),
        CardTag("latest", Role.PROMOTION_TAG),
    )
    absent = Cell(CellState.ABSENT)
    cells = {(t.tag, c.name): absent for t in tags for c in card_columns(config)}
    for tag in tags:
        cells[(tag.tag, "docker.io")] = _ok(A)
    problems = _card(config, cells, tags).problems
    assert problems == (
        "tokyo lacks v0.2.1",
        "beijing lacks v0.2.1",
        "shanghai lacks v0.2.1",
        "tokyo lacks latest",  # promotion publishes there; beijing and shanghai it does not
    )


def test_source_differing_from_the_record_is_drift_too(config: Config) -> None:
    released = CardTag("v0.7.0", Role.PROMOTED, Record("v0.7.0", "r", "promoted", A))
    cells = {("v0.7.0", c.name): _ok(B) for c in card_columns(config)}
    problems = _card(config, cells, (released,)).problems
    assert problems[0].startswith("docker.io holds sha256:bbbbbbbbbbbb under v0.7.0")
    assert len(problems) == 4


def test_all_good_headline(config: Config) -> None:
    tag = CardTag("v0.7.0", Role.REGISTRY)
    cells = {("v0.7.0", c.name): _ok(A) for c in card_columns(config)}
    card = _card(config, cells, (tag,))
    assert card.problems == ()
    assert card_headline(card) == (
        "runtime: all 1 tags carry every required platform, the same digest on all 4 registries"
    )
    assert "DRIFT" not in "\n".join(card_table(card))
    assert card_text(card).splitlines()[1] == card_headline(card)


def test_slack_card_stays_within_limits_however_much_is_wrong(config: Config) -> None:
    tags = tuple(CardTag(f"v0.{i}.0", Role.REGISTRY) for i in range(20))
    cells = {
        (t.tag, c.name): Cell(CellState.MISSING, A, missing=("linux/amd64",) * 40)
        for t in tags
        for c in card_columns(config)
    }
    message = card_message(_card(config, cells, tags))
    assert_within_limits(message)
    assert message.blocks[0]["type"] == "header"
    assert "missing" in message.blocks[1]["text"]["text"]
    source = Inspection(
        parse_reference("docker.io/aibrix/runtime:v0.1.0"),
        None,
        None,
        unreadable([parse_platform("linux/amd64")], "down"),
    )
    assert_within_limits(
        inspection_with_card("runtime v0.1.0", source, _card(config, cells, tags[:1]))
    )


def test_release_message_points_to_each_components_card() -> None:
    from jobs.domain.platforms import parse_platform
    from jobs.domain.release import Release, State
    from jobs.domain.versions import parse_version

    release = Release(
        parse_version("v0.3.0"), "ab" * 16, State.READY, "", "U0REQUESTER", "C0RELEASES",
        (parse_platform("linux/amd64"),), ("runtime", "gateway-plugins"), "v0.3.0", 0.0, 0.0,
        "", "", "", True, {}, {},
    )  # fmt: skip
    rendered = str(release_message(release).blocks)
    assert "`/aibrix inspect runtime`" in rendered
    assert "`/aibrix inspect gateway-plugins`" in rendered


def test_inspect_and_status_of_a_component_parse_to_its_card(config: Config) -> None:
    assert parse_command("inspect gateway-plugins", config) == CardCommand(
        "gateway-plugins", "inspect"
    )
    assert parse_command("status runtime", config) == CardCommand("runtime", "status")
    tagged = parse_command("inspect runtime v0.3.0", config)
    assert isinstance(tagged, InspectCommand) and tagged.component == "runtime"
    assert parse_command("status v0.3.0", config) == StatusCommand("v0.3.0")
    for text in ("inspect gateway", "status gateway"):
        refused = parse_command(text, config)
        assert isinstance(refused, ParseError)
        assert "runtime" in refused.message and "gateway-plugins" in refused.message
    bad_version = parse_command("status v0.3", config)
    assert isinstance(bad_version, ParseError) and "runtime" not in bad_version.message


def test_card_commands_need_what_inspect_and_status_need() -> None:
    from handlers.commands import command_action
    from jobs.domain.permissions import Action

    assert command_action(CardCommand("runtime", "inspect")) is Action.INSPECT
    assert command_action(CardCommand("runtime", "status")) is Action.STATUS


@pytest.mark.parametrize(
    ("value", "reason"),
    [("21", "20"), ("-1", "0"), ('"3"', "integer"), ("true", "integer")],
)
def test_registry_tags_is_checked_when_loaded(tmp_path: Path, value: str, reason: str) -> None:
    from jobs.domain.config import ConfigError

    path = tmp_path / "aibrix.toml"
    path.write_text(
        'repository = "127.0.0.1:5000/x"\n[source]\npath = "."\n'
        f'[inspect]\nregistry_tags = {value}\n[[components]]\nname = "runtime"\n'
    )
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert "inspect.registry_tags" in str(raised.value) and reason in str(raised.value)
