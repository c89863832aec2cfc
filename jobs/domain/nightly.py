"""Nightly builds, as values: the branch asked for, the run that builds its head, and the
tags it writes.

A nightly is a run of the release pipeline (the same per-architecture workers, merge,
platform gate and binary check) keyed by a version of its own,
`v0.0.0-nightly.g<full commit sha>`, which nobody can ask for with `release` (refused as
reserved). Its release tag is the full commit sha (what AIBrix's workflows write for
every push to main); its one promotion tag is `nightly`, written only when the index
passed the gate, by the promotion step, with no approval unless the config asks for one.
A nightly that fails the gate never promotes: the previous `nightly` stays in place, and
the run's reason says why (AIBrix #2054: a single-architecture nightly that failed on
arm64 nodes with `exec format error`).

Its component layouts are those of the newest version (a nightly builds what the branch
holds now): every version range with no upper bound applies.
"""

from __future__ import annotations

import re

from jobs.domain import messages
from jobs.domain.config_grammar import is_git_ref
from jobs.domain.errors import InvalidInput
from jobs.domain.versions import Version

DEFAULT_BRANCH = "main"
# Who approved a nightly that needs no approval, in the audit stream: the policy.
NIGHTLY_ACTOR = "policy:nightly"
NIGHTLY_TAG = "nightly"
_PREFIX = "nightly.g"
_SHA = re.compile(r"[0-9a-f]{40}")
# Past every real version: a nightly takes the newest layouts (ranges without an upper
# bound), never one that ended.
NEWEST = Version(2**31 - 1, 0, 0)


class BranchError(InvalidInput, ValueError):
    """Not a branch name a nightly can build; the message says what is accepted."""


def parse_branch(text: str | None) -> str:
    """The branch a nightly builds (default `main`): a git ref name, never an option."""
    if text is None or text == "":
        return DEFAULT_BRANCH
    branch = text.removeprefix("refs/heads/")
    if not is_git_ref(branch) or branch.startswith("-") or branch == "HEAD":
        raise BranchError(messages.nightly_bad_branch(text))
    return branch


def nightly_version(revision: str) -> Version:
    """The version a nightly of commit `revision` runs as."""
    if not _SHA.fullmatch(revision):
        raise BranchError(messages.nightly_not_a_commit(revision))
    return Version(0, 0, 0, f"{_PREFIX}{revision}")


def nightly_revision(version: Version) -> str | None:
    """The commit a nightly version builds; None for a release version."""
    if (version.major, version.minor, version.patch) != (0, 0, 0):
        return None
    if not version.prerelease.startswith(_PREFIX):
        return None
    sha = version.prerelease.removeprefix(_PREFIX)
    return sha if _SHA.fullmatch(sha) else None


def is_nightly(version: Version) -> bool:
    return nightly_revision(version) is not None


def release_tag(version: Version) -> str:
    """The tag the merge writes: the version, or for a nightly its full commit sha."""
    return nightly_revision(version) or str(version)


def layout_version(version: Version) -> Version:
    """The version whose layouts a build uses: the version itself, or for a nightly the
    newest (see `NEWEST`)."""
    return NEWEST if is_nightly(version) else version


def promotes_unapproved(approval_required: bool, version: Version) -> bool:
    """Whether a run that passed the gate goes on to promotion with no approval: a nightly,
    unless `[nightly] approval = true`."""
    return is_nightly(version) and not approval_required
