"""Base images from a mirror: an image a Dockerfile names in `FROM` is taken from another
reference, so an unmodified Dockerfile that says `FROM golang:1.22` builds where Docker Hub
cannot be reached.

Two ways, the same result:
- BuildKit named build contexts (`--build-context golang:1.22=docker-image://MIRROR`),
  which BuildKit looks up by the image's familiar name (`golang:1.22`, never
  `docker.io/library/golang:1.22`, and without `:latest`): `context_name` gives that name.
  They need the Dockerfile frontend 1.4, built into BuildKit v0.10 and later.
- For an older builder (Docker 20.10's own BuildKit v0.8 answers "unsupported frontend
  capability moby.buildkit.frontend.contexts"), `rewrite_from_lines` writes a copy of the
  Dockerfile whose mapped `FROM` lines name the mirror. Global `ARG` defaults and build
  arguments are expanded first, so `ARG BUILDER_IMAGE=golang:1.22` + `FROM
  ${BUILDER_IMAGE}` is redirected as BuildKit would redirect it.

Pure: text in, text out. Every value was validated by the configuration (both sides are
image references; a reference can never start with `-`, so it can never be a flag).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from jobs.domain.references import DOCKER_HUB, InvalidReferenceError, parse_reference

# BuildKit v0.10 is the first whose built-in Dockerfile frontend (1.4) has named contexts.
NAMED_CONTEXTS_SINCE = (0, 10)

_VERSION = re.compile(r"v?(\d+)\.(\d+)")
_ARG_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_VARIABLE = re.compile(
    r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::([-+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))"
)
_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z]+)\s*=\s*(\S+)\s*$")


def context_name(text: str) -> str:
    """The name BuildKit gives the image `text` names in `FROM` (its familiar form):
    `docker.io/library/golang:1.22` -> `golang:1.22`; `busybox:latest` -> `busybox`.
    Raises InvalidReferenceError for text that is not an image reference."""
    ref = parse_reference(text, default_tag="")
    hub = ref.registry == DOCKER_HUB
    name = ref.repository.removeprefix("library/") if hub else f"{ref.registry}/{ref.repository}"
    if ref.tag and ref.tag != "latest":
        name += f":{ref.tag}"
    if ref.digest:
        name += f"@{ref.digest}"
    return name


def build_contexts(mapping: Mapping[str, str]) -> dict[str, str]:
    """The `--build-context` values: `{familiar name: docker-image://REFERENCE}`."""
    return {context_name(name): f"docker-image://{target}" for name, target in mapping.items()}


def supports_named_contexts(buildkit_version: str) -> bool:
    """Whether a builder reporting this BuildKit version (`v0.8+unknown`, `v0.12.5`) has
    named contexts. An unreadable version counts as new: the build then says so itself."""
    match = _VERSION.match(buildkit_version.strip())
    if match is None:
        return True
    return (int(match.group(1)), int(match.group(2))) >= NAMED_CONTEXTS_SINCE


def _expand(text: str, values: Mapping[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(4)
        value = values.get(name, "")
        operator, word = match.group(2), match.group(3) or ""
        if operator == "-":
            return value or word
        if operator == "+":
            return word if value else ""
        return value

    return _VARIABLE.sub(one, text)


@dataclass(frozen=True)
class _Line:
    start: int  # index of the first physical line of the instruction
    end: int  # index past its last physical line
    text: str  # the instruction joined (continuations removed)


def _instructions(lines: list[str], escape: str) -> list[_Line]:
    found: list[_Line] = []
    index = 0
    while index < len(lines):
        start = index
        parts: list[str] = []
        while index < len(lines):
            line = lines[index].rstrip("\r\n")
            index += 1
            stripped = line.rstrip()
            if stripped.endswith(escape) and not stripped.lstrip().startswith("#"):
                parts.append(stripped[: -len(escape)])
                continue
            if parts and stripped.lstrip().startswith("#"):
                continue  # a comment inside a continued instruction
            parts.append(line)
            break
        found.append(_Line(start, index, " ".join(p.strip() for p in parts)))
    return found


def _escape_of(lines: list[str]) -> str:
    for line in lines:
        match = _DIRECTIVE.match(line.strip())
        if match is None:
            break
        if match.group(1).lower() == "escape" and match.group(2) in ("\\", "`"):
            return match.group(2)
    return "\\"


def _parse_arg(words: list[str], values: dict[str, str], build_args: Mapping[str, str]) -> None:
    for word in words:
        name, sep, default = word.partition("=")
        if not _ARG_NAME.fullmatch(name):
            continue
        if name in build_args:
            values[name] = build_args[name]
        elif sep:
            values[name] = default.strip("\"'")


def rewrite_from_lines(
    dockerfile: str, mapping: Mapping[str, str], build_args: Mapping[str, str] | None = None
) -> tuple[str, tuple[str, ...]]:
    """The Dockerfile with every `FROM` whose image (after expanding global `ARG`s) is
    mapped naming the mapped reference instead; and the images redirected. A `FROM` of an
    earlier stage's name is left alone, as BuildKit does."""
    wanted: dict[str, str] = {}
    for name, target in mapping.items():
        wanted[context_name(name)] = target
    lines = dockerfile.splitlines(keepends=True)
    escape = _escape_of(lines)
    global_args: dict[str, str] = {}
    stages: set[str] = set()
    seen_from = False
    replaced: dict[int, tuple[int, str]] = {}
    redirected: list[str] = []
    for instruction in _instructions(lines, escape):
        words = instruction.text.split()
        if not words or words[0].startswith("#"):
            continue
        keyword = words[0].upper()
        if keyword == "ARG" and not seen_from:
            _parse_arg(words[1:], global_args, build_args or {})
            continue
        if keyword != "FROM":
            continue
        seen_from = True
        rest = words[1:]
        flags = [w for w in rest if w.startswith("--")]
        plain = [w for w in rest if not w.startswith("--")]
        if not plain:
            continue
        image_text = _expand(plain[0], global_args)
        stage = plain[2].lower() if len(plain) >= 3 and plain[1].upper() == "AS" else ""
        if image_text.lower() not in stages:
            try:
                key = context_name(image_text)
            except InvalidReferenceError:
                key = ""
            if key in wanted:
                tail = f" AS {plain[2]}" if stage else ""
                new = " ".join(["FROM", *flags, wanted[key]]) + tail
                ending = "\n" if lines[instruction.end - 1].endswith("\n") else ""
                replaced[instruction.start] = (instruction.end, new + ending)
                redirected.append(key)
        if stage:
            stages.add(stage)
    out: list[str] = []
    index = 0
    while index < len(lines):
        if index in replaced:
            end, text = replaced[index]
            out.append(text)
            index = end
            continue
        out.append(lines[index])
        index += 1
    return "".join(out), tuple(dict.fromkeys(redirected))
