"""Image references (`[host[:port]/]path[:tag][@digest]`), parsed as distribution does.

The grammar is distribution/reference's: lowercase path components joined by `/`,
a tag of at most 128 word characters, a digest `algorithm:hex` (sha256 needs 64 hex
digits). Docker Hub defaults apply: `aibrix/runtime` is `docker.io/aibrix/runtime`,
`ubuntu` is `docker.io/library/ubuntu`, and the API host of docker.io is
`registry-1.docker.io`. Nothing here touches the network.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from jobs.domain.errors import InvalidInput

DOCKER_HUB = "docker.io"
DOCKER_HUB_API_HOST = "registry-1.docker.io"
_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io"}

_PATH_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*\Z")
_HOST = re.compile(
    r"^(?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
    r"(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*"
    r"|\[[0-9a-fA-F:]+\])(?::[0-9]{1,5})?\Z"
)
_TAG = re.compile(r"^[\w][\w.-]{0,127}\Z", re.ASCII)
_DIGEST = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+\Z")
_DIGEST_HEX_LENGTH = {"sha256": 64, "sha512": 128}
NAME_MAX_LENGTH = 255


class InvalidReferenceError(InvalidInput, ValueError):
    """An image reference that cannot be parsed; the message says what is accepted."""


def _quote(text: str, limit: int = 80) -> str:
    shown = text if len(text) <= limit else text[:limit] + "..."
    return repr(shown)


def validate_digest(digest: str) -> str:
    """Return the digest if it is `algorithm:hex` with the right length, else raise."""
    if not _DIGEST.match(digest):
        raise InvalidReferenceError(
            f"{_quote(digest)} is not a digest; expected sha256:<64 hex digits>"
        )
    algorithm, _, hex_part = digest.partition(":")
    expected = _DIGEST_HEX_LENGTH.get(algorithm)
    if expected is None:
        raise InvalidReferenceError(
            f"{_quote(digest)} uses an unsupported digest algorithm {algorithm!r}"
        )
    if len(hex_part) != expected or not re.fullmatch(r"[a-f0-9]+", hex_part):
        raise InvalidReferenceError(
            f"{_quote(digest)} is not a valid {algorithm} digest; "
            f"expected {expected} lowercase hex digits"
        )
    return digest


def validate_tag(tag: str) -> str:
    if not _TAG.match(tag):
        raise InvalidReferenceError(
            f"{_quote(tag)} is not a valid tag; expected up to 128 characters of "
            "letters, digits, '_', '.' and '-', not starting with '.' or '-'"
        )
    return tag


def validate_host(host: str) -> str:
    if not _HOST.match(host):
        raise InvalidReferenceError(f"{_quote(host)} is not a registry host; expected HOST[:PORT]")
    if not host.endswith("]") and ":" in host and not 0 < int(host.rsplit(":", 1)[1]) < 65536:
        raise InvalidReferenceError(f"{_quote(host)} has a port out of range")
    return host


@dataclass(frozen=True)
class Reference:
    """A parsed image reference. `registry` is the name as users write it (docker.io)."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def api_host(self) -> str:
        """The host the registry API is served on."""
        return DOCKER_HUB_API_HOST if self.registry == DOCKER_HUB else self.registry

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    @property
    def identifier(self) -> str:
        """What to ask the manifests endpoint for: the digest when pinned, else the tag."""
        if self.digest:
            return self.digest
        return self.tag or "latest"

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.registry, self.repository, None, validate_digest(digest))

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.registry, self.repository, validate_tag(tag), None)

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def _split_host(name: str) -> tuple[str | None, str]:
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        return first, rest
    return None, name


def parse_reference(text: str, *, default_tag: str = "latest") -> Reference:
    """Parse an image reference as the docker CLI does, with Docker Hub defaults."""
    if not text:
        raise InvalidReferenceError(
            "an image reference is required, such as docker.io/aibrix/runtime:v0.3.0"
        )
    if text.startswith("-"):
        raise InvalidReferenceError(
            f"{_quote(text)} is not an image reference: it must not start with '-'"
        )
    if text != text.strip() or any(ch.isspace() or ord(ch) < 32 for ch in text):
        raise InvalidReferenceError(
            f"{_quote(text)} is not an image reference: it contains white space"
        )
    remainder = text
    digest: str | None = None
    if "@" in remainder:
        remainder, _, digest = remainder.partition("@")
        validate_digest(digest)
    host, path = _split_host(remainder)
    tag: str | None = None
    last_slash = path.rfind("/")
    colon = path.find(":", last_slash + 1)
    if colon != -1:
        path, tag = path[:colon], path[colon + 1 :]
        if ":" in tag:
            raise InvalidReferenceError(f"{_quote(text)} has more than one ':tag'")
        validate_tag(tag)
    if host is not None:
        validate_host(host)
    if not path:
        raise InvalidReferenceError(f"{_quote(text)} has no repository name")
    for component in path.split("/"):
        if not _PATH_COMPONENT.match(component):
            if component.lower() != component:
                raise InvalidReferenceError(f"{_quote(text)}: repository names must be lowercase")
            raise InvalidReferenceError(
                f"{_quote(text)}: {_quote(component)} is not a valid repository path component; "
                "expected lowercase letters and digits separated by '.', '_', '__' or '-'"
            )
    registry = host or DOCKER_HUB
    if registry in _HUB_ALIASES:
        registry = DOCKER_HUB
        if "/" not in path:
            path = f"library/{path}"
    if len(f"{registry}/{path}") > NAME_MAX_LENGTH:
        raise InvalidReferenceError(
            f"{_quote(text)}: the repository name is longer than 255 characters"
        )
    if tag is None and digest is None:
        tag = default_tag
    return Reference(registry=registry, repository=path, tag=tag, digest=digest)
