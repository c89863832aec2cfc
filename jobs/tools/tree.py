"""The source tree at a release's revision, read without a checkout: what the plan needs
to know before anything is queued (does each Dockerfile and context exist, what do the
release manifests say).

For a git source, one bare repository per source location is kept in a cache directory
and the release's ref is fetched into it shallowly (`--depth 1`), only when the revision
is not there yet: a request never clones the project. Paths are looked up with
`git cat-file --batch-check` (one process for all of them) and files read with
`git cat-file blob REV:PATH`. The location and ref come from the validated config; the
location is placed after `--end-of-options`, so neither can become an option. A `path`
source is read from its directory.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from jobs.domain.config import Source
from jobs.domain.versions import Version
from jobs.tools import process
from jobs.tools.source import SourceError, tree_revision

CACHE_ENV = "AIBRIX_SOURCE_CACHE"
FETCH_TIMEOUT = 300.0


def default_cache_dir() -> Path:
    """`$AIBRIX_SOURCE_CACHE`, else `$XDG_CACHE_HOME/aibrix-bot/sources` (~/.cache)."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "aibrix-bot" / "sources"


class DirectoryTree:
    """A `path` source: its directory as it is now (its revision is its content hash)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _inside(self, path: str) -> Path | None:
        full = (self.root / path).resolve()
        return full if full.is_relative_to(self.root) else None

    def kinds(self, paths: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for path in paths:
            full = self._inside(path)
            if full is not None and full.is_dir():
                found[path] = "dir"
            elif full is not None and full.is_file():
                found[path] = "file"
            else:
                found[path] = ""
        return found

    def read(self, path: str) -> str | None:
        full = self._inside(path)
        if full is None or not full.is_file():
            return None
        try:
            return full.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None


@dataclass(frozen=True)
class GitTree:
    """A commit in the cache's bare repository."""

    repository: Path
    revision: str

    def _git(
        self, *args: str, input_text: str | None = None, check: bool = True
    ) -> process.Completed:
        try:
            return process.run(
                ["git", "-C", str(self.repository), *args],
                input_text=input_text,
                timeout=60,
                check=check,
            )
        except process.CommandError as error:
            raise SourceError(f"git {args[0]} failed: {error.stderr.strip()[-400:]}") from None

    def kinds(self, paths: Sequence[str]) -> dict[str, str]:
        found = {path: "dir" for path in paths if path == "."}
        asked = [path for path in paths if path != "."]
        if not asked:
            return found
        lines = "".join(f"{self.revision}:{path}\n" for path in asked)
        out = self._git("cat-file", "--batch-check", input_text=lines).stdout.splitlines()
        for path, line in zip(asked, out, strict=False):
            parts = line.split()
            kind = parts[1] if len(parts) == 3 else ""
            found[path] = {"tree": "dir", "blob": "file"}.get(kind, "")
        return found

    def read(self, path: str) -> str | None:
        try:
            done = self._git("cat-file", "blob", f"{self.revision}:{path}", check=False)
        except UnicodeDecodeError:
            return None
        return done.stdout if done.returncode == 0 else None


SourceTree = DirectoryTree | GitTree


def _cache_repository(cache_dir: Path, location: str) -> Path:
    name = hashlib.sha256(location.encode()).hexdigest()[:24]
    return cache_dir / f"{name}.git"


def _has_commit(repository: Path, revision: str) -> bool:
    done = process.run(
        ["git", "-C", str(repository), "cat-file", "-e", f"{revision}^{{commit}}"],
        check=False,
    )
    return done.returncode == 0


def open_tree(source: Source, version: Version, revision: str, cache_dir: Path) -> SourceTree:
    """The tree of `source` at `revision` (resolved from the version's ref when the
    release was asked for). Raises `SourceError` (exit 3) when it cannot be read."""
    if source.kind == "path":
        directory = source.directory
        assert directory is not None
        if not directory.is_dir() or tree_revision(directory) != revision:
            raise SourceError(f"the source directory {directory} changed or is gone")
        return DirectoryTree(directory)
    repository = _cache_repository(cache_dir, source.location)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # One fetch at a time per repository: two plans of the same version share the work.
    with open(f"{repository}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (repository / "HEAD").exists():
            _run_git("init", "--bare", "--quiet", str(repository))
        if not _has_commit(repository, revision):
            ref = source.ref_for(version)
            _run_git(
                "-C",
                str(repository),
                "fetch",
                "--quiet",
                "--depth",
                "1",
                "--no-tags",
                "--end-of-options",
                source.location,
                ref,
            )
            if not _has_commit(repository, revision):
                raise SourceError(
                    f"{ref} moved: fetching it did not bring revision {revision[:12]}, "
                    "which it named when the release was asked for"
                )
            # Keep the commit from being pruned by a later gc of the cache.
            _run_git("-C", str(repository), "update-ref", f"refs/aibrix/{revision}", revision)
    return GitTree(repository, revision)


def _run_git(*args: str) -> None:
    try:
        process.run(["git", *args], timeout=FETCH_TIMEOUT)
    except process.CommandError as error:
        what = args[2] if args[0] == "-C" else args[0]
        raise SourceError(f"git {what} failed: {error.stderr.strip()[-400:]}") from None
