"""The publish list (issue 13 item 6): `publish` names every registry a release goes to,
the first the primary; a lone `repository` is its one-item form; mistakes are refused
with the key; the approval re-check expects the verified digests on every registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.domain.approvals import TagReading, decide_recheck, publish_expected
from jobs.domain.config import ConfigError
from jobs.domain.config_reader import default_config, parse_config
from jobs.domain.plan import build_plan
from jobs.domain.platforms import DEFAULT_PLATFORMS
from jobs.domain.sync_request import SyncInputError, parse_sync_request
from jobs.domain.versions import parse_version
from tests.support.config import doc

FILE = Path("/etc/aibrix.toml")
TWO = 'publish = ["registry.example.com/aibrix", "ghcr.io/aibrix"]'


def test_a_lone_repository_is_a_one_item_publish_list() -> None:
    config = parse_config(doc(), FILE)
    assert config.publish_locations == ("registry.example.com/aibrix",)
    assert config.secondary_publish == ()


def test_publish_names_every_registry_the_first_is_the_primary() -> None:
    config = parse_config(doc(top=TWO), FILE)
    assert config.repository == "registry.example.com/aibrix"
    assert config.publish_locations == ("registry.example.com/aibrix", "ghcr.io/aibrix")
    assert config.secondary_publish == ("ghcr.io/aibrix",)
    assert config.image("runtime") == "registry.example.com/aibrix/runtime"


def test_repository_beside_publish_must_be_its_first_entry() -> None:
    same = parse_config(doc(top=TWO + '\nrepository = "registry.example.com/aibrix"'), FILE)
    assert same.publish_locations[0] == same.repository
    with pytest.raises(ConfigError) as caught:
        parse_config(doc(top=TWO + '\nrepository = "ghcr.io/aibrix"'), FILE)
    assert caught.value.key == "repository"
    assert caught.value.reason == (
        "'ghcr.io/aibrix' must be the first entry of publish ('registry.example.com/aibrix'), "
        "the primary registry the merge writes; or leave repository out"
    )


@pytest.mark.parametrize(
    ("top", "key", "reason"),
    [
        ("publish = []", "publish", "must not be empty"),
        ('publish = ["ghcr.io/aibrix", "ghcr.io/aibrix"]', "publish[1]", "already given"),
        ('publish = ["ghcr.io/aibrix", "ghcr.io/aibrix/"]', "publish[1]", "not a registry"),
        ('publish = ["ghcr.io/aibrix", "--flag"]', "publish[1]", "command-line option"),
        ('publish = ["ghcr.io/aibrix", "Ghcr"]', "publish[1]", "not a registry location"),
        ('publish = "ghcr.io/aibrix"', "publish", "array"),
    ],
)
def test_bad_publish_lists_are_refused_with_the_key(top: str, key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(doc(top=top), FILE)
    assert caught.value.key == key
    assert reason in caught.value.reason


def test_neither_repository_nor_publish_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(doc(top=""), FILE)
    assert caught.value.key == "repository"


def test_a_mirror_may_not_be_a_publish_registry() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(doc(top=TWO, extra='[mirrors]\ngh = "ghcr.io/aibrix"'), FILE)
    assert caught.value.key == "mirrors.gh"
    config = parse_config(doc(top=TWO), FILE)
    with pytest.raises(SyncInputError):
        parse_sync_request(config, "v0.3.0", ["ghcr.io/aibrix"])


def test_aibrix_publishes_to_docker_hub_and_ghcr_and_extends_can_replace_it() -> None:
    assert default_config().publish_locations == ("docker.io/aibrix", "ghcr.io/aibrix")
    own = parse_config('extends = "aibrix"\nrepository = "registry.example.com/team"\n', FILE)
    assert own.publish_locations == ("registry.example.com/team",)
    both = parse_config('extends = "aibrix"\n' + TWO + "\n", FILE)
    assert both.publish_locations == ("registry.example.com/aibrix", "ghcr.io/aibrix")


def test_the_plan_shows_every_tag_on_every_publish_registry() -> None:
    config = parse_config(doc(top=TWO, extra='[promotion]\ntags = ["latest"]'), FILE)
    version = parse_version("v1.2.0")
    plan = build_plan(config, version, "a" * 40, config.at(version).components, DEFAULT_PLATFORMS)
    publish = dict(plan.publish)
    assert list(publish) == ["registry.example.com/aibrix", "ghcr.io/aibrix"]
    assert set(publish["ghcr.io/aibrix"]) == {
        f"ghcr.io/aibrix/{name}:{tag}"
        for name in ("runtime", "gateway-plugins")
        for tag in ("v1.2.0", "latest")
    }


def test_the_recheck_finds_a_publish_registry_holding_another_digest_or_none() -> None:
    verified = {"runtime": "sha256:" + "1" * 64}
    expected = publish_expected(verified, ("ghcr.io/aibrix", "quay.io/aibrix"))
    assert expected == {
        "runtime": "sha256:" + "1" * 64,
        "ghcr.io/aibrix/runtime": "sha256:" + "1" * 64,
        "quay.io/aibrix/runtime": "sha256:" + "1" * 64,
    }
    readings = {
        "runtime": TagReading("sha256:" + "1" * 64),
        "ghcr.io/aibrix/runtime": TagReading("sha256:" + "2" * 64),
        "quay.io/aibrix/runtime": TagReading(None),
    }
    recheck = decide_recheck("v1.0.0", expected, readings)
    assert len(recheck.drift) == 2
    assert any(s.startswith("ghcr.io/aibrix/runtime v1.0.0") for s in recheck.drift)
    assert any(s.startswith("quay.io/aibrix/runtime v1.0.0") for s in recheck.drift)


def test_slack_inspect_admits_every_publish_registry() -> None:
    from jobs.domain.inspect_scope import admitted, configured_locations
    from jobs.domain.references import parse_reference

    config = parse_config(doc(top=TWO), FILE)
    locations = configured_locations(
        config.repository, config.mirrors, publish=config.publish_locations
    )
    assert admitted(locations, parse_reference("ghcr.io/aibrix/runtime:v1.0.0")) is not None
    assert admitted(locations, parse_reference("ghcr.io/other/runtime:v1.0.0")) is None
