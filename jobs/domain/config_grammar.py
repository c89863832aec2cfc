"""The configuration's grammar: what a host, a path component, a tag, a git ref and a
Slack id look like, and the `{placeholder}` templates (staging tag, promotion tags, git
ref) with the values they are rendered from. Pure; shared by the model and the reader."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from jobs.domain import messages
from jobs.domain.platforms import Platform
from jobs.domain.versions import (
    NUMBER_PATTERN,
    VERSION_PATTERN,
    Version,
    VersionError,
    parse_version,
)

TAG_MAX_LENGTH = 128
IMAGE_NAME_MAX_LENGTH = 255

HOST_LABEL = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
HOST = re.compile(
    rf"(?:{HOST_LABEL}(?:\.{HOST_LABEL})*|\[[0-9A-Fa-f:]+\])(?::(?P<port>[0-9]{{1,5}}))?"
)
PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
BUILD_ARG_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
STAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
SLACK_USER = re.compile(r"[UW][A-Z0-9]{2,31}")
SLACK_GROUP = re.compile(r"S[A-Z0-9]{2,31}")
SLACK_CHANNEL = re.compile(r"[CGD][A-Z0-9]{2,31}")
KEY_PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
SIMPLE_KEY = re.compile(r"[A-Za-z0-9_-]+")
PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
GIT_REF_CHARACTERS = re.compile(r"[A-Za-z0-9._/-]+")
URL_USER = re.compile(r"[A-Za-z0-9._][A-Za-z0-9._-]*")
SCP_LIKE = re.compile(
    r"(?P<user>[A-Za-z0-9._][A-Za-z0-9._-]*)@(?P<host>[^:/@]+):[A-Za-z0-9._~][A-Za-z0-9._~/-]*"
)
GIT_SCHEMES = frozenset({"https", "http", "ssh", "git", "file"})

VERSION_PLACEHOLDERS = ("version", "major", "minor", "patch")
STAGING_PLACEHOLDERS = (*VERSION_PLACEHOLDERS, "os", "arch", "variant", "platform")

# Versions the templates are tried with at load: a release and a prerelease.
SAMPLE_VERSIONS = (parse_version("v1.2.3"), parse_version("v1.2.3-rc.1"))


def file_label(path: Path) -> str:
    text = str(path)
    return text if text.isprintable() else messages.quote_input(text, 200)


def is_location(text: str) -> bool:
    """`HOST[:PORT][/NAMESPACE...]` where HOST is unmistakably a registry host: it has a
    '.' or a port, or is localhost (docker's own rule for the first path component)."""
    if not text or len(text) > IMAGE_NAME_MAX_LENGTH:
        return False
    host, *path = text.split("/")
    match = HOST.fullmatch(host)
    if match is None:
        return False
    port = match.group("port")
    if port is not None and not 0 < int(port) < 65536:
        return False
    if not ("." in host or ":" in host or host == "localhost"):
        return False
    return all(PATH_COMPONENT.fullmatch(part) for part in path)


def is_version(text: str) -> bool:
    try:
        parse_version(text)
    except VersionError:
        return False
    return True


def is_tag(text: str) -> bool:
    return bool(TAG.fullmatch(text))


def is_git_ref(text: str) -> bool:
    # git check-ref-format's rules, narrowed to a safe character set.
    if len(text) > 255 or not GIT_REF_CHARACTERS.fullmatch(text):
        return False
    if text[0] in "-./" or text.endswith(("/", ".", ".lock")):
        return False
    if ".." in text or "//" in text or "/." in text or "/-" in text:
        return False
    return all(not part.endswith(".lock") for part in text.split("/"))


def version_values(version: Version) -> dict[str, str]:
    return {
        "version": str(version),
        "major": str(version.major),
        "minor": str(version.minor),
        "patch": str(version.patch),
    }


def platform_values(version: Version, platform: Platform) -> dict[str, str]:
    return {
        **version_values(version),
        "os": platform.os,
        "arch": platform.architecture,
        "variant": platform.variant,
        "platform": str(platform).replace("/", "-"),
    }


def staging_pattern(template: str, platform: Platform) -> re.Pattern[str]:
    """A regular expression matching every tag the staging template makes for a platform."""
    fixed = platform_values(parse_version("v0.0.0"), platform)
    grammar = {"version": VERSION_PATTERN, "major": NUMBER_PATTERN}
    grammar["minor"] = grammar["patch"] = NUMBER_PATTERN
    pieces = PLACEHOLDER.split(template)  # literal, name, literal, name, ..., literal
    pattern = "".join(
        re.escape(piece) if index % 2 == 0 else grammar.get(piece, re.escape(fixed[piece]))
        for index, piece in enumerate(pieces)
    )
    return re.compile(pattern)


def render(template: str, values: Mapping[str, str]) -> str:
    # Plain substitution of validated `{name}` placeholders: never str.format, so a
    # template cannot reach attributes of the values.
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


# ---- version ranges ------------------------------------------------------------------

RANGE_OPERATORS = (">=", "<=", "==", ">", "<")


@dataclass(frozen=True)
class VersionRange:
    """The versions a component or a layout applies to: bounds joined by commas, all of
    which must hold (`>=v0.5.0`, `>=v0.2.0, <v0.5.0`, `==v0.3.0-rc.2`).

    A bound without a prerelease compares on MAJOR.MINOR.PATCH only, so the release
    candidates of a version belong to its layout (`>=v0.5.0` holds for v0.5.0-rc.1, as
    the files of a release are those of its candidates); a bound with a prerelease
    compares by semver precedence."""

    bounds: tuple[tuple[str, Version], ...]

    def __str__(self) -> str:
        return ", ".join(f"{op}{version}" for op, version in self.bounds)

    def contains(self, version: Version) -> bool:
        return all(_holds(op, version, bound) for op, bound in self.bounds)


def _holds(op: str, version: Version, bound: Version) -> bool:
    left: Version = version
    if not bound.is_prerelease:
        left = Version(version.major, version.minor, version.patch)
    if op == ">=":
        return left >= bound
    if op == "<=":
        return left <= bound
    if op == ">":
        return left > bound
    if op == "<":
        return left < bound
    return left == bound


def parse_range(text: str) -> VersionRange:
    """Parse `>=v0.5.0, <v0.7.0`; raise `VersionError` saying what is accepted."""
    bounds: list[tuple[str, Version]] = []
    for piece in text.split(","):
        bound = piece.strip()
        op = next((o for o in RANGE_OPERATORS if bound.startswith(o)), None)
        if op is None:
            raise VersionError(messages.range_bad_bound(text, bound, RANGE_OPERATORS))
        bounds.append((op, parse_version(bound[len(op) :].strip())))
    return VersionRange(tuple(bounds))
