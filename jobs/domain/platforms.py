"""Platforms (`os/arch[/variant]`), parsed and matched the way containerd does.

Normalisation follows containerd's `platforms.Normalize`: architecture aliases collapse
(`x86_64` is `amd64`, `aarch64` is `arm64`), `arm64/v8` is plain `arm64`, bare `arm`
means `arm/v7`, and the os always matters. Matching a required platform is equality of
the normalised forms: a release that needs linux/arm64 is not satisfied by linux/arm/v7.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass

from jobs.domain.errors import InvalidInput

_PART = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,31}$")

_ARCH_ALIASES = {
    "x86_64": "amd64",
    "x86-64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "arm": "arm",
    "i386": "386",
    "i486": "386",
    "i586": "386",
    "i686": "386",
    "386": "386",
}

# Debian's names for arm imply a variant.
_ARCH_WITH_VARIANT = {"armhf": ("arm", "v7"), "armel": ("arm", "v6")}

_OS_ALIASES = {"macos": "darwin"}

# Platforms buildx writes on attestation manifests: not a platform an image runs on.
UNKNOWN_OS = "unknown"


class PlatformError(InvalidInput, ValueError):
    """A platform string that cannot be parsed; the message says what is accepted."""


@dataclass(frozen=True, order=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        if self.variant:
            return f"{self.os}/{self.architecture}/{self.variant}"
        return f"{self.os}/{self.architecture}"

    @property
    def is_unknown(self) -> bool:
        return self.os == UNKNOWN_OS or self.architecture == UNKNOWN_OS


def normalize(os: str, architecture: str, variant: str = "") -> Platform:
    """The canonical form of a platform, as containerd's `Normalize` gives it."""
    os = os.lower()
    os = _OS_ALIASES.get(os, os)
    arch = architecture.lower()
    variant = variant.lower()
    if arch in _ARCH_WITH_VARIANT:
        arch, implied = _ARCH_WITH_VARIANT[arch]
        variant = variant or implied
    arch = _ARCH_ALIASES.get(arch, arch)
    if (arch == "amd64" and variant == "v1") or (arch == "arm64" and variant in ("8", "v8")):
        variant = ""
    elif arch == "arm":
        if variant == "":
            variant = "v7"
        elif variant in ("5", "6", "7", "8"):
            variant = "v" + variant
    return Platform(os, arch, variant)


def parse_platform(text: str) -> Platform:
    """Parse `os/arch[/variant]` (for example `linux/arm64` or `linux/arm/v7`)."""
    parts = text.strip().lower().split("/")
    if len(parts) not in (2, 3) or not all(_PART.match(p) for p in parts):
        raise PlatformError(
            f"{text!r} is not a platform; expected os/arch[/variant] such as "
            "linux/amd64, linux/arm64 or linux/arm/v7"
        )
    return normalize(*parts)


@functools.lru_cache(maxsize=256)
def canonical_platform(text: str) -> str:
    """`text` if it is a platform in its one spelling (so one stream and one key per
    platform); raise PlatformError, saying the spelling to use, otherwise. The one
    check the queue and the release store share."""
    canonical = str(parse_platform(text))
    if canonical != text:
        raise PlatformError(f"platform {text!r} must be written {canonical}")
    return text


def parse_platform_list(text: str) -> tuple[Platform, ...]:
    """Parse a comma-separated list of platforms, without duplicates, in given order."""
    items = [item for item in (piece.strip() for piece in text.split(",")) if item]
    if not items:
        raise PlatformError("no platform given; expected os/arch[,os/arch...]")
    return unique(parse_platform(item) for item in items)


def unique(platforms: Iterable[Platform]) -> tuple[Platform, ...]:
    seen: dict[Platform, None] = {}
    for platform in platforms:
        seen.setdefault(platform, None)
    return tuple(seen)


def platform_from_json(data: object) -> Platform | None:
    """The platform of an OCI descriptor's or config's fields; None when absent."""
    if not isinstance(data, dict):
        return None
    os = data.get("os")
    arch = data.get("architecture")
    variant = data.get("variant") or ""
    if not isinstance(os, str) or not isinstance(arch, str) or not isinstance(variant, str):
        return None
    return normalize(os, arch, variant)


DEFAULT_PLATFORMS: tuple[Platform, ...] = (Platform("linux", "amd64"), Platform("linux", "arm64"))
