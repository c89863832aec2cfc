"""Where a release's code comes from: a git checkout at the version's ref, or a directory.

The source revision is resolved once, when the release is asked for, and carried in
every job (it is part of the idempotency key); the worker checks out exactly that
revision and refuses to build if the ref has moved since.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from jobs.domain import messages
from jobs.domain.config import Source
from jobs.domain.errors import Unavailable
from jobs.domain.nightly import nightly_revision
from jobs.domain.versions import Version
from jobs.tools import process

_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_SKIP_DIRS = {".git", "__pycache__", ".venv", ".lab"}


class SourceError(Unavailable):
    """The source could not be read or checked out; the message says why."""


@dataclass(frozen=True)
class Checkout:
    root: Path
    revision: str
    temporary: bool

    def remove(self) -> None:
        if self.temporary:
            shutil.rmtree(self.root, ignore_errors=True)


def tree_revision(root: Path) -> str:
    """A content hash of a directory (paths, modes and bytes), for `path` sources."""
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for name in sorted(filenames):
            path = Path(dirpath, name)
            relative = path.relative_to(root).as_posix()
            digest.update(relative.encode() + b"\0")
            if path.is_symlink():
                digest.update(b"link:" + os.readlink(path).encode() + b"\0")
            else:
                digest.update(oct(path.stat().st_mode & 0o111).encode() + b"\0")
                digest.update(path.read_bytes())
    return "tree-" + digest.hexdigest()[:40]


def _git(*args: str, timeout: float = 600) -> str:
    try:
        return process.run(["git", *args], timeout=timeout).stdout
    except process.CommandError as error:
        raise SourceError(f"git {args[0]} failed: {error.stderr.strip()[-400:]}") from None


def resolve_revision(source: Source, version: Version) -> str:
    """The revision a release of `version` builds: a commit id, or a tree hash."""
    if source.kind == "path":
        directory = source.directory
        assert directory is not None
        if not directory.is_dir():
            raise SourceError(f"the source directory {directory} does not exist")
        return tree_revision(directory)
    nightly = nightly_revision(version)
    if nightly is not None:
        return nightly  # resolved from its branch when it was asked for
    ref = source.ref_for(version)
    # `--` keeps a location from ever being read as an option.
    out = _git("ls-remote", "--", source.location, ref, f"{ref}^{{}}", timeout=120)
    found: dict[str, str] = {}
    for line in out.splitlines():
        sha, _, name = line.partition("\t")
        found[name] = sha
    for name in (f"refs/tags/{ref}^{{}}", f"refs/tags/{ref}", f"refs/heads/{ref}"):
        if name in found and _SHA.match(found[name]):
            return found[name]
    raise SourceError(f"{source.location} has no tag or branch {ref!r}")


def branch_head(source: Source, branch: str) -> str:
    """The commit a branch of a git source points at now (a nightly builds it)."""
    if source.kind != "git":
        raise SourceError(messages.nightly_needs_git(source.location))
    name = f"refs/heads/{branch}"
    # `--` keeps a location from ever being read as an option; the branch is validated.
    out = _git("ls-remote", "--", source.location, name, timeout=120)
    for line in out.splitlines():
        sha, _, found = line.partition("\t")
        if found == name and _SHA.match(sha):
            return sha
    raise SourceError(messages.nightly_no_branch(source.location, branch))


def checkout(source: Source, version: Version, revision: str, workdir: Path) -> Checkout:
    """The source tree of a release, at exactly `revision`."""
    if source.kind == "path":
        directory = source.directory
        assert directory is not None
        actual = tree_revision(directory)
        if actual != revision:
            raise SourceError(
                f"the source directory {directory} changed since the release was asked for "
                f"({revision} then, {actual} now)"
            )
        return Checkout(directory, revision, temporary=False)
    ref = source.ref_for(version)
    workdir.mkdir(parents=True, exist_ok=True)
    dest = workdir / f"src-{revision[:12]}-{os.getpid()}-{os.urandom(3).hex()}"
    if nightly_revision(version) is not None:
        # A nightly names its commit, not a ref (the branch may have moved on since).
        _git("init", "--quiet", str(dest))
        _git("-C", str(dest), "fetch", "--quiet", "--depth", "1", "--", source.location, revision)
        _git("-C", str(dest), "checkout", "--quiet", "--detach", "FETCH_HEAD")
        return Checkout(dest, revision, temporary=True)
    _git("clone", "--quiet", "--depth", "1", "--branch", ref, "--", source.location, str(dest))
    head = _git("-C", str(dest), "rev-parse", "HEAD").strip()
    if head != revision:
        shutil.rmtree(dest, ignore_errors=True)
        raise SourceError(
            f"{ref} moved: it is {head[:12]} now, the release was asked for {revision[:12]}"
        )
    return Checkout(dest, revision, temporary=True)
