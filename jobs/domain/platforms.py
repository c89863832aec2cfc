"""Platforms: what an index entry, an image config or a user names, in one normal form.

The gate agrees with what `docker pull` / containerd will do with an index, so platforms
are normalised by containerd's rules (its `platforms.Normalize`; the rules are ported,
not its code) in one place, the `Platform` type itself: every Platform, however it was
made (typed by a user, read from the config, an index entry or an image config), is
already normal, so comparing two is comparing values.

Normalisation (os, architecture and variant are lower-cased first):

- os: `macos` is `darwin`.
- `x86_64`, `x86-64` are `amd64`; `amd64/v1` is plain `amd64` (v2, v3, ... are kept).
- `aarch64` is `arm64`; arm64 variants `8`, `v8`, `v8.0` are no variant; `9`, `9.0`,
  `v9.0` are `v9`. Other arm64 variants (`v8.2`, `v9.1`) stay as they are.
- `armhf` is `arm/v7` and `armel` is `arm/v6`, whatever variant was given with them.
- `arm` with no variant or `7` is `arm/v7`; `5`, `6`, `8` gain their `v`.
- `i386` is `386` and loses any variant. (`386` itself keeps a variant, as in
  containerd; `i486`..`i686` are not aliases there, so not here either.)
- os.features are sorted and deduplicated; os.version is kept as written.

What is shown is the normal form, so `linux/arm64/v8` typed by a user reads back as
`linux/arm64`, and an index entry with arm64 `v8.0` is shown as `linux/arm64`: they are
one platform. The one spelling is what `canonical_platform` insists on for queue
streams and store keys.

Windows entries carry `os.version` (the build, e.g. 10.0.17763.1234) and sometimes
`os.features` (`win32k`). Both are part of an entry's identity: two entries that differ
only in os.version are two platforms, listed apart and never counted as duplicates.
They are shown after the os/arch[/variant] part: `windows/amd64 10.0.17763.1234`, and
with features `windows/amd64 10.0.17763.1234 +win32k`.

Matching a required platform (`satisfies`) is equality of os, architecture and variant,
then containerd's matcher's rules for the rest: a required platform names no os.version
(users and the config write os/arch[/variant] only), and containerd's matcher with no
os.version accepts any, so a required `windows/amd64` is satisfied by a windows/amd64
entry of any build; an entry's os.features must all be in the required platform's (none),
except `win32k` on Windows, which containerd ignores when matching. Compatibility
fallbacks (`linux/arm64` running `arm/v7`, amd64/v3 running v2) are not used: the gate
asks whether the platform is in the index, not whether something else could stand in.
An image config agrees with its entry (`agrees`) when os/arch/variant are equal and the
os.version and os.features the entry names (win32k aside) are the config's too.
The same rules, for readers of docs rather than code: docs/platforms.md.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass

from jobs.domain.errors import InvalidInput

_PART = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,31}$")
# os.version and os.features come from a registry's JSON and are shown: short tokens only.
_OS_OPTION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

_OS_ALIASES = {"macos": "darwin"}

# Platforms buildx writes on attestation manifests: not a platform an image runs on.
UNKNOWN_OS = "unknown"

PLATFORM_EXPECTED = (
    "expected os/arch[/variant] such as linux/amd64, linux/arm64 or linux/arm/v7 "
    "(letters, digits, '.', '_' or '-' in each part)"
)


class PlatformError(InvalidInput, ValueError):
    """A platform string that cannot be parsed; the message says what is accepted."""


def _normal_arch(arch: str, variant: str) -> tuple[str, str]:
    """containerd's `normalizeArch` rules, on lower-cased values."""
    if arch == "i386":
        return "386", ""
    if arch in ("x86_64", "x86-64", "amd64"):
        return "amd64", "" if variant == "v1" else variant
    if arch in ("aarch64", "arm64"):
        if variant in ("8", "v8", "v8.0"):
            return "arm64", ""
        if variant in ("9", "9.0", "v9.0"):
            return "arm64", "v9"
        return "arm64", variant
    if arch == "armhf":
        return "arm", "v7"
    if arch == "armel":
        return "arm", "v6"
    if arch == "arm":
        if variant in ("", "7"):
            return "arm", "v7"
        if variant in ("5", "6", "8"):
            return "arm", "v" + variant
    return arch, variant


@dataclass(frozen=True, order=True)
class Platform:
    """A normalised platform. Built from any spelling; always holds the normal form."""

    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""
    os_features: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        os = self.os.lower()
        arch, variant = _normal_arch(self.architecture.lower(), self.variant.lower())
        features = tuple(sorted({f for f in self.os_features if f}))
        # The one place values are normalised: frozen, so set through object.
        object.__setattr__(self, "os", _OS_ALIASES.get(os, os))
        object.__setattr__(self, "architecture", arch)
        object.__setattr__(self, "variant", variant)
        object.__setattr__(self, "os_features", features)

    @property
    def base(self) -> str:
        """`os/arch[/variant]`: the part a user writes and a build targets."""
        if self.variant:
            return f"{self.os}/{self.architecture}/{self.variant}"
        return f"{self.os}/{self.architecture}"

    def __str__(self) -> str:
        text = self.base
        if self.os_version:
            text += f" {self.os_version}"
        if self.os_features:
            text += " +" + "+".join(self.os_features)
        return text

    @property
    def is_unknown(self) -> bool:
        return self.os == UNKNOWN_OS or self.architecture == UNKNOWN_OS


def normalize(
    os: str,
    architecture: str,
    variant: str = "",
    os_version: str = "",
    os_features: Iterable[str] = (),
) -> Platform:
    """The canonical form of a platform, as containerd's `Normalize` gives it."""
    return Platform(os, architecture, variant, os_version, tuple(os_features))


def satisfies(entry: Platform, required: Platform) -> bool:
    """Whether an index entry of platform `entry` is what `required` asks for: the rule of
    containerd's matcher without its compatibility fallbacks (see the module docstring)."""
    if entry.base != required.base:
        return False
    if required.os_version and entry.os_version != required.os_version:
        return False
    return _claimed_features(entry) <= set(required.os_features)


def agrees(declared: Platform, actual: Platform) -> bool:
    """Whether an image config (`actual`) is the platform its index entry declares: the
    same os/arch/variant, the same os.version if the entry names one, and every os.feature
    the entry names (but `win32k` on Windows) in the config. An entry that leaves them out
    claims nothing about them."""
    if declared.base != actual.base:
        return False
    if declared.os_version and declared.os_version != actual.os_version:
        return False
    return _claimed_features(declared) <= set(actual.os_features)


def _claimed_features(platform: Platform) -> set[str]:
    """The os.features matching looks at: containerd ignores `win32k` on Windows."""
    features = set(platform.os_features)
    if platform.os == "windows":
        features.discard("win32k")
    return features


def parse_platform(text: str) -> Platform:
    """Parse `os/arch[/variant]` (for example `linux/arm64` or `linux/arm/v7`)."""
    parts = text.strip().lower().split("/")
    if len(parts) not in (2, 3) or not all(_PART.fullmatch(p) for p in parts):
        raise PlatformError(f"{text!r} is not a platform; {PLATFORM_EXPECTED}")
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
    """The platform of an OCI descriptor's `platform` or an image config (the same field
    names: `os`, `architecture`, `variant`, `os.version`, `os.features`); None when
    absent or malformed."""
    if not isinstance(data, dict):
        return None
    os = data.get("os")
    arch = data.get("architecture")
    variant = data.get("variant") or ""
    os_version = data.get("os.version") or ""
    features = data.get("os.features") or []
    if not isinstance(os, str) or not isinstance(arch, str) or not isinstance(variant, str):
        return None
    if not isinstance(os_version, str) or not isinstance(features, list):
        return None
    if os_version and not _OS_OPTION.fullmatch(os_version):
        return None
    if not all(isinstance(f, str) and _OS_OPTION.fullmatch(f) for f in features):
        return None
    return normalize(os, arch, variant, os_version, features)


DEFAULT_PLATFORMS: tuple[Platform, ...] = (Platform("linux", "amd64"), Platform("linux", "arm64"))
