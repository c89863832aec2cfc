"""Release inputs typed by people: release versions and component names.

A release version is `vMAJOR.MINOR.PATCH[-PRERELEASE]`: semantic versioning 2.0.0 with a
lowercase `v` in front, no build metadata (a `+` cannot be in a docker tag), and at most
128 characters so it is a docker tag as it is. Whatever is accepted here contains only
ASCII letters, digits, `.` and `-`, starts with `v`, and so can never be read as a
command-line option or reach a shell as anything but a word.

Versions order by semver precedence: `v1.0.0-alpha < v1.0.0-alpha.1 < v1.0.0-beta.2 <
v1.0.0-beta.11 < v1.0.0-rc.1 < v1.0.0`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from jobs.domain import messages
from jobs.domain.errors import InvalidInput

MAX_VERSION_LENGTH = 128
"""The longest docker tag, so a version is always a tag."""

_NUMBER = r"(?:0|[1-9][0-9]*)"
_IDENTIFIER = r"(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
_PRERELEASE = re.compile(rf"{_IDENTIFIER}(?:\.{_IDENTIFIER})*")
VERSION_PATTERN = rf"v({_NUMBER})\.({_NUMBER})\.({_NUMBER})(?:-({_PRERELEASE.pattern}))?"
"""The grammar of a release version, as a regular expression (for `re.fullmatch`)."""
NUMBER_PATTERN = _NUMBER
_VERSION = re.compile(VERSION_PATTERN)
_ALLOWED_CHARACTERS = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-+")
_DIGITS = frozenset("0123456789")

COMPONENT_NAME_MAX_LENGTH = 64
_COMPONENT_NAME = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*")


class VersionError(InvalidInput, ValueError):
    """Text that is not a release version; the message says what is wrong and what is
    accepted, quoting at most 80 characters of the text with control characters escaped."""


class ComponentError(InvalidInput, ValueError):
    """A component name that is not configured; the message lists the configured names."""


def _identifier_key(identifier: str) -> tuple[int, int, str]:
    # Semver: numeric identifiers compare numerically and sort before alphanumeric ones,
    # which compare in ASCII order.
    if identifier.isdigit():
        return (0, int(identifier), "")
    return (1, 0, identifier)


@functools.total_ordering
@dataclass(frozen=True)
class Version:
    """A release version; `str(version)` is the tag, e.g. `v0.3.0-rc.2`."""

    major: int
    minor: int
    patch: int
    prerelease: str = ""

    def __post_init__(self) -> None:
        numbers = (self.major, self.minor, self.patch)
        if any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in numbers):
            raise VersionError(messages.version_malformed(repr(numbers)))
        if not isinstance(self.prerelease, str) or (
            self.prerelease and not _PRERELEASE.fullmatch(self.prerelease)
        ):
            raise VersionError(messages.version_malformed(str(self.prerelease)))
        text = str(self)
        if len(text) > MAX_VERSION_LENGTH:
            raise VersionError(messages.version_too_long(text, MAX_VERSION_LENGTH))

    def __str__(self) -> str:
        core = f"v{self.major}.{self.minor}.{self.patch}"
        return f"{core}-{self.prerelease}" if self.prerelease else core

    @property
    def is_prerelease(self) -> bool:
        return bool(self.prerelease)

    @property
    def prerelease_identifiers(self) -> tuple[str, ...]:
        return tuple(self.prerelease.split(".")) if self.prerelease else ()

    def _precedence(self) -> tuple[int, int, int, int, tuple[tuple[int, int, str], ...]]:
        # A release sorts after all of its prereleases; between prereleases, identifiers
        # compare left to right and a shorter list sorts first when it is a prefix.
        identifiers = tuple(_identifier_key(i) for i in self.prerelease_identifiers)
        return (self.major, self.minor, self.patch, 0 if self.prerelease else 1, identifiers)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._precedence() < other._precedence()


def parse_version(text: str) -> Version:
    """Parse a release version such as `v0.3.0` or `v0.3.0-rc.2`; raise `VersionError`."""
    if not isinstance(text, str) or text == "":
        raise VersionError(messages.version_empty())
    if len(text) > MAX_VERSION_LENGTH:
        raise VersionError(messages.version_too_long(text, MAX_VERSION_LENGTH))
    for char in text:
        if char not in _ALLOWED_CHARACTERS:
            raise VersionError(messages.version_bad_character(text, char))
    if not text.startswith("v"):
        raise VersionError(messages.version_missing_v(text))
    if "+" in text:
        raise VersionError(messages.version_build_metadata(text))
    core, dash, prerelease = text[1:].partition("-")
    numbers = core.split(".")
    if len(numbers) != 3 or not all(n and set(n) <= _DIGITS for n in numbers):
        raise VersionError(messages.version_malformed(text))
    for number in numbers:
        if len(number) > 1 and number.startswith("0"):
            raise VersionError(messages.version_leading_zero(text, number))
    if dash:
        identifiers = prerelease.split(".")
        if not all(identifiers):
            raise VersionError(messages.version_empty_prerelease(text))
        for identifier in identifiers:
            if len(identifier) > 1 and identifier.startswith("0") and identifier.isdigit():
                raise VersionError(messages.version_leading_zero(text, identifier))
    match = _VERSION.fullmatch(text)
    if match is None:  # every way to miss the grammar is reported above; kept as a guard
        raise VersionError(messages.version_malformed(text))
    major, minor, patch, pre = match.groups()
    return Version(int(major), int(minor), int(patch), pre or "")


def is_component_name(text: str) -> bool:
    """A valid docker repository path component, as component names must be:
    lowercase `[a-z0-9]+([._-][a-z0-9]+)*`, at most 64 characters."""
    return len(text) <= COMPONENT_NAME_MAX_LENGTH and bool(_COMPONENT_NAME.fullmatch(text))


def validate_component_name(name: str, known: Iterable[str]) -> str:
    """Return `name` if it is one of the configured component names, else raise
    `ComponentError` listing them."""
    names = tuple(known)
    if name == "":
        raise ComponentError(messages.component_empty(names))
    if name not in names:
        raise ComponentError(messages.component_unknown(name, names))
    return name


def parse_component_list(text: str, known: Sequence[str]) -> tuple[str, ...]:
    """Parse `runtime,gateway-plugins` into configured names, without duplicates, in the
    given order; raise `ComponentError` for an empty list or an unknown name."""
    items = [item for item in (piece.strip() for piece in text.split(",")) if item]
    if not items:
        raise ComponentError(messages.component_empty(tuple(known)))
    chosen: dict[str, None] = {}
    for item in items:
        chosen.setdefault(validate_component_name(item, known), None)
    return tuple(chosen)
