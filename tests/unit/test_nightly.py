"""Nightly as values (issue 13 item 7): the branch is a git ref name and never an option;
a nightly's version names its commit, its release tag is the full sha, its one promotion
tag is `nightly`, it takes the newest layouts, and nobody can `release` its version."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handlers.parse import NightlyCommand, ParseError, parse_command
from jobs.domain.config_reader import default_config, parse_config
from jobs.domain.nightly import (
    BranchError,
    is_nightly,
    nightly_revision,
    nightly_version,
    parse_branch,
    promotes_unapproved,
    release_tag,
)
from jobs.domain.plan import build_plan
from jobs.domain.platforms import DEFAULT_PLATFORMS
from jobs.domain.versions import parse_version
from jobs.usecases.pipeline import ReleaseInputError, plan_release
from tests.support.config import doc

SHA = "3f2a" + "0" * 36


@pytest.mark.parametrize(
    ("text", "branch"),
    [(None, "main"), ("", "main"), ("release-0.7", "release-0.7"), ("refs/heads/dev", "dev")],
)
def test_branches_accepted(text: str | None, branch: str) -> None:
    assert parse_branch(text) == branch


@pytest.mark.parametrize(
    "text", ["-x", "--upload-pack=touch", "a..b", "a b", "HEAD", "x.lock", "a;rm", "/main"]
)
def test_branches_refused(text: str) -> None:
    with pytest.raises(BranchError) as caught:
        parse_branch(text)
    assert "is not a branch name" in str(caught.value)


@given(st.text(max_size=40))
def test_an_accepted_branch_never_reads_as_an_option(text: str) -> None:
    try:
        branch = parse_branch(text)
    except BranchError:
        return
    assert not branch.startswith("-") and all(c.isprintable() and c != " " for c in branch)


def test_a_nightly_version_names_its_commit_and_tags_it() -> None:
    version = nightly_version(SHA)
    assert str(version) == f"v0.0.0-nightly.g{SHA}"
    assert parse_version(str(version)) == version  # the store reads it back
    assert nightly_revision(version) == SHA and is_nightly(version)
    assert release_tag(version) == SHA
    assert release_tag(parse_version("v0.7.0")) == "v0.7.0"
    assert not is_nightly(parse_version("v0.0.0-nightly.gabc"))
    with pytest.raises(BranchError):
        nightly_version("main")


def test_a_nightly_publishes_the_sha_and_nightly_on_every_registry() -> None:
    config = default_config()
    version = nightly_version(SHA)
    assert config.promotion_tags_for(version) == ("nightly",)
    assert config.release_reference("runtime", version) == f"docker.io/aibrix/runtime:{SHA}"
    built = config.at(version).components
    plan = build_plan(config, version, SHA, built, DEFAULT_PLATFORMS)
    publish = dict(plan.publish)
    assert list(publish) == ["docker.io/aibrix", "ghcr.io/aibrix"]
    assert f"ghcr.io/aibrix/vllm-mock:{SHA}" in publish["ghcr.io/aibrix"]
    assert "ghcr.io/aibrix/vllm-mock:nightly" in publish["ghcr.io/aibrix"]


def test_a_nightly_takes_the_newest_layouts() -> None:
    config = default_config()
    built = {c.name: c for c in config.at(nightly_version(SHA)).components}
    assert built["runtime"].dockerfile_path == "build/container/Dockerfile.python"
    assert "vllm-mock" in built
    assert config.source.ref_for(nightly_version(SHA)) == SHA


def test_manifest_findings_never_refuse_a_nightly_and_it_needs_no_approval() -> None:
    config = default_config()
    assert not config.preflight.refuses(nightly_version(SHA))
    assert promotes_unapproved(False, nightly_version(SHA))
    assert not promotes_unapproved(True, nightly_version(SHA))
    assert not promotes_unapproved(False, parse_version("v0.7.0"))
    own = parse_config(doc(extra="[nightly]\napproval = true"), Path("/etc/aibrix.toml"))
    assert own.nightly.approval


def test_release_refuses_a_nightly_version() -> None:
    with pytest.raises(ReleaseInputError) as caught:
        plan_release(default_config(), f"v0.0.0-nightly.g{SHA}")
    assert "reserved for nightly builds" in str(caught.value)


def test_slack_nightly_command() -> None:
    config = default_config()
    assert parse_command("nightly", config) == NightlyCommand("main")
    assert parse_command("nightly release-0.7", config) == NightlyCommand("release-0.7")
    refused = parse_command("nightly --upload-pack", config)
    assert isinstance(refused, ParseError) and "usage: /aibrix nightly [BRANCH]" in refused.message
    assert isinstance(parse_command("nightly a b", config), ParseError)
