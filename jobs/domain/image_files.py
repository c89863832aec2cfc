"""An image's file tree as its layers build it, and which files the binary check judges.

Layers are applied in order with the OCI whiteout rules (`.wh.NAME` deletes NAME from the
layers below, `.wh..wh..opq` empties its directory of them). Only metadata is kept for
every path (kind, link target); the first `HEAD_BYTES` of a regular file are kept only
for the files a `HeadPlan` asks for, so memory is bounded by the number of paths, not by
the image's size.

The files judged: the entrypoint (the image config's Entrypoint, else Cmd, looked up on
the config's PATH, relative to its WorkingDir), the interpreter of every `#!` script met
(and the program `/usr/bin/env` runs), and every file under the configured paths.

Pure: entries in, findings out. The registry side (`jobs.registry.layers`) streams the
layers and feeds the entries.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from jobs.domain.elf import (
    BinaryCheck,
    BinaryFinding,
    BinaryStatus,
    interpreter_of,
    judge_file,
    shebang_argument,
)
from jobs.domain.platforms import Platform

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MAX_SYMLINK_HOPS = 40
MAX_SCRIPT_DEPTH = 4
# A layer with more entries than this is not held (the metadata bound).
MAX_ENTRIES = 2_000_000


class Kind(StrEnum):
    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    HARDLINK = "hardlink"  # resolved to a FILE when its layer is applied
    OTHER = "other"  # devices, fifos


@dataclass(frozen=True)
class Entry:
    """One tar member of a layer: `path` absolute and normalised; `link` the symlink's
    target as written, or the hard link's target path (absolute, normalised); `head` the
    first bytes of a regular file, when they were asked for."""

    path: str
    kind: Kind
    link: str = ""
    head: bytes | None = None


def normalize_member(name: str) -> str | None:
    """A tar member name as an absolute, normalised path (`./usr/bin/x` -> `/usr/bin/x`;
    `..` stops at the root); None for the root itself."""
    path = posixpath.normpath("/" + name)
    if path.startswith("//"):
        path = "/" + path.lstrip("/")
    return None if path == "/" else path


@dataclass
class ImageTree:
    """The merged file tree of the layers applied so far."""

    nodes: dict[str, Entry] = field(default_factory=dict)
    children: dict[str, set[str]] = field(default_factory=dict)

    def _remove(self, path: str) -> None:
        for child in list(self.children.pop(path, ())):
            self._remove(child)
        if self.nodes.pop(path, None) is not None:
            self.children.get(posixpath.dirname(path), set()).discard(path)

    def _put(self, entry: Entry) -> None:
        old = self.nodes.get(entry.path)
        if old is not None and old.kind is Kind.DIR and entry.kind is not Kind.DIR:
            self._remove(entry.path)
        self.nodes[entry.path] = entry
        path = entry.path
        # A layer may list a file without its directories: they exist all the same.
        while path != "/":
            parent = posixpath.dirname(path)
            self.children.setdefault(parent, set()).add(path)
            if parent == "/" or parent in self.nodes:
                break
            self.nodes[parent] = Entry(parent, Kind.DIR)
            path = parent

    def apply_layer(self, entries: Sequence[Entry]) -> None:
        """Apply one layer: its whiteouts remove from the layers below, then its entries
        are laid over them (a whiteout never removes an entry of its own layer)."""
        own: dict[str, Entry] = {}
        for entry in entries:
            name = posixpath.basename(entry.path)
            parent = posixpath.dirname(entry.path)
            if name == OPAQUE:
                for child in list(self.children.get(parent, ())):
                    self._remove(child)
            elif name.startswith(WHITEOUT):
                self._remove(posixpath.join(parent, name[len(WHITEOUT) :]))
            else:
                own[entry.path] = entry
        for entry in own.values():
            if entry.kind is Kind.HARDLINK:
                target = own.get(entry.link) or self.nodes.get(entry.link)
                head = target.head if target is not None else None
                # `link` stays: a later read that wants this file must keep its source's bytes.
                entry = Entry(entry.path, Kind.FILE, link=entry.link, head=head)
            self._put(entry)

    def resolve(self, path: str) -> str | None:
        """The path with every symbolic link followed (inside the image: `..` stops at
        the root, as in a container); None when some part does not exist or loops."""
        parts = [p for p in path.split("/") if p]
        current = "/"
        hops = 0
        while parts:
            part = parts.pop(0)
            if part == ".":
                continue
            if part == "..":
                current = posixpath.dirname(current)
                continue
            candidate = posixpath.join(current, part)
            node = self.nodes.get(candidate)
            if node is None:
                return None
            if node.kind is Kind.SYMLINK:
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    return None
                target = node.link
                parts = [p for p in target.split("/") if p] + parts
                if target.startswith("/"):
                    current = "/"
                continue
            current = candidate
        return current

    def under(self, directory: str) -> list[str]:
        """Every path below `directory`, sorted."""
        found: list[str] = []
        stack = [directory]
        while stack:
            for child in self.children.get(stack.pop(), ()):
                found.append(child)
                stack.append(child)
        return sorted(found)


@dataclass(frozen=True)
class RunConfig:
    """What the image runs, from its config: argv (Entrypoint + Cmd), PATH, WorkingDir."""

    argv: tuple[str, ...] = ()
    path: str = DEFAULT_PATH
    workdir: str = "/"

    @property
    def path_dirs(self) -> tuple[str, ...]:
        return tuple(d for d in self.path.split(":") if d.startswith("/"))


def _strings(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(item for item in value if isinstance(item, str))


def run_config_from(raw: bytes) -> RunConfig:
    """The run settings of an image config (invalid or absent fields count as unset)."""
    try:
        data = json.loads(raw)
    except ValueError:
        return RunConfig()
    config = data.get("config") if isinstance(data, dict) else None
    if not isinstance(config, dict):
        return RunConfig()
    entrypoint = _strings(config.get("Entrypoint"))
    cmd = _strings(config.get("Cmd"))
    path = DEFAULT_PATH
    for item in _strings(config.get("Env")):
        if item.startswith("PATH="):
            path = item[len("PATH=") :]
    workdir = config.get("WorkingDir")
    if not isinstance(workdir, str) or not workdir.startswith("/"):
        workdir = "/"
    return RunConfig(argv=entrypoint + cmd if entrypoint else cmd, path=path, workdir=workdir)


@dataclass(frozen=True)
class HeadPlan:
    """Which regular files' first bytes a layer read keeps: those in `directories`
    (direct children), below `prefixes`, or named in `exact`."""

    directories: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()
    exact: frozenset[str] = frozenset()

    def wants(self, path: str) -> bool:
        if path in self.exact or posixpath.dirname(path) in self.directories:
            return True
        return any(path == p or path.startswith(p.rstrip("/") + "/") for p in self.prefixes)

    def with_exact(self, more: Iterable[str]) -> HeadPlan:
        return HeadPlan(self.directories, self.prefixes, self.exact | frozenset(more))


def first_plan(run: RunConfig, paths: Sequence[str]) -> HeadPlan:
    """What to keep on the first read: the PATH directories, the working directory, the
    entrypoint's own directory, and the configured paths."""
    directories = set(run.path_dirs) | {run.workdir}
    if run.argv and "/" in run.argv[0]:
        directories.add(posixpath.dirname(posixpath.join(run.workdir, run.argv[0])))
    return HeadPlan(frozenset(directories), tuple(paths))


@dataclass(frozen=True)
class Walk:
    """The result of judging a tree: the check, or (when `need` is not empty) the files
    whose first bytes must be read in another pass before it can be judged."""

    check: BinaryCheck | None
    need: frozenset[str] = frozenset()


def _lookup(tree: ImageTree, run: RunConfig, program: str) -> str | None:
    """Where the image finds `program`: a path (relative to WorkingDir), or the first
    PATH directory that has it."""
    if "/" in program:
        return tree.resolve(posixpath.join(run.workdir, program))
    for directory in run.path_dirs:
        found = tree.resolve(posixpath.join(directory, program))
        if found is not None and tree.nodes.get(found, Entry(found, Kind.OTHER)).kind is Kind.FILE:
            return found
    return None


def judge_tree(
    tree: ImageTree,
    run: RunConfig,
    paths: Sequence[str],
    platform: Platform,
    digest: str,
) -> Walk:
    """Judge the entrypoint chain and the configured paths of a fully applied tree."""
    findings: dict[str, BinaryFinding] = {}
    need: set[str] = set()
    # (the path as named, how it was reached, how deep in a script chain, whether its
    # absence is a finding)
    todo: list[tuple[str, str, int, bool]] = []
    if run.argv:
        todo.append((run.argv[0], "entrypoint", 0, True))
    for configured in paths:
        resolved = tree.resolve(configured)
        if resolved is None:
            findings[configured] = BinaryFinding(
                configured, "configured path", BinaryStatus.MISSING
            )
            continue
        node = tree.nodes.get(resolved)
        if node is not None and node.kind is Kind.DIR:
            for below in tree.under(resolved):
                if tree.nodes[below].kind in (Kind.FILE, Kind.SYMLINK):
                    todo.append((below, f"configured path {configured}", 0, False))
        else:
            todo.append((resolved, f"configured path {configured}", 0, False))
    seen: set[str] = set()
    while todo:
        named, via, depth, required = todo.pop(0)
        where = _lookup(tree, run, named)
        node = tree.nodes.get(where) if where is not None else None
        if where is None or node is None or node.kind is not Kind.FILE:
            if required:
                findings.setdefault(named, BinaryFinding(named, via, BinaryStatus.MISSING))
            continue
        if where in seen:
            continue
        seen.add(where)
        if node.head is None:
            need.add(where)
            if node.link:
                need.add(node.link)
            continue
        finding = judge_file(where, via, node.head, platform)
        if finding is not None:
            findings.setdefault(where, finding)
            continue
        interpreter = interpreter_of(node.head)
        if interpreter is None or depth >= MAX_SCRIPT_DEPTH:
            continue
        # A missing interpreter breaks the entrypoint; a script under a configured path
        # that nothing runs (a perl tool in /usr/bin of an image without perl) does not.
        todo.append((interpreter, f"interpreter of {where}", depth + 1, required))
        if posixpath.basename(interpreter) == "env":
            program = shebang_argument(node.head)
            if program is not None:
                todo.append((program, f"program {where} runs", depth + 1, required))
    if need:
        return Walk(None, frozenset(need))
    return Walk(BinaryCheck(platform, digest, tuple(findings.values())))
