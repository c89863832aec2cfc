"""Which image references the Slack bot may inspect: those on registries the config names.

From Slack, `/aibrix inspect` reads only references under a configured location: the
release repository (`repository`: a registry host and a namespace) and each mirror
(`[mirrors]`), plus dependency images if the config ever lists them. Anything else is
refused before any connection is made. Otherwise any channel member could make the bot
send requests, with the docker-config credentials of the host they name, to loopback
services, link-local metadata addresses or anything else the bot's network reaches.

The rule, exactly. A reference is admitted when, for some configured location
`HOST[:PORT][/NS...]`:

- its registry equals the location's registry: the host as written, lower-cased (DNS
  names are case-insensitive) and without a trailing dot, with the port as written.
  `host` and `host:443` are different registries (as they are different keys of the
  docker config). Docker Hub's names (docker.io, index.docker.io, registry-1.docker.io)
  are one registry, docker.io. Nothing is resolved and addresses are not normalised:
  `127.1` is not `127.0.0.1` and `[0::1]` is not `[::1]`, so only a registry spelled
  as the config spells it is ever reached. (A reference cannot carry userinfo: `@`
  starts its digest.)
- and the location's namespace components are a prefix of the reference's repository
  components: `docker.io/aibrix` admits `docker.io/aibrix/runtime` and
  `docker.io/aibrix/x/y`, never `docker.io/aibrix-evil/runtime` or `docker.io/other`. A
  location with no namespace admits the whole registry. Official Docker Hub images are
  under `library` (`ubuntu` is `docker.io/library/ubuntu`).

The CLI (`aibrix-bot inspect`) runs with the operator's own credentials and is not
limited. Pure: values in, values out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import Enum

from jobs.domain.references import DOCKER_HUB, Reference, parse_reference

_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})


class LocationKind(Enum):
    REPOSITORY = "repository"
    MIRROR = "mirror"
    DEPENDENCY = "dependency"


@dataclass(frozen=True)
class Location:
    """A configured place images may be read from: `text` as the config writes it, and
    its canonical registry and namespace components."""

    kind: LocationKind
    name: str  # the mirror's name; the image for a dependency; "" for the repository
    text: str
    registry: str
    namespace: tuple[str, ...]
    spelled: str = ""  # the registry as the config writes it (docker.io for Docker Hub)


def canonical_registry(host: str) -> str:
    """The registry `host[:port]` compares as: lower-case, no trailing dot on the name,
    Docker Hub's aliases as docker.io."""
    text = host.lower()
    if text.startswith("["):  # an IPv6 literal: nothing to strip
        name, port = text, ""
        if "]:" in text:
            name, port = text.split("]:", 1)
            name, port = name + "]", ":" + port
    else:
        name, sep, rest = text.partition(":")
        port = sep + rest
    if not name.startswith("["):
        name = name.removesuffix(".")
    if name in _HUB_ALIASES:
        name = DOCKER_HUB
    return name + port


def parse_location(
    text: str, kind: LocationKind = LocationKind.REPOSITORY, name: str = ""
) -> Location:
    """A configured `HOST[:PORT][/NS...]` (validated by the config loader)."""
    host, _, path = text.strip("/").partition("/")
    namespace = tuple(part for part in path.split("/") if part)
    registry = canonical_registry(host)
    spelled = DOCKER_HUB if registry == DOCKER_HUB else host
    return Location(kind, name, text, registry, namespace, spelled)


def configured_locations(
    repository: str,
    mirrors: Mapping[str, str],
    dependencies: Iterable[str] = (),
    publish: Iterable[str] = (),
) -> tuple[Location, ...]:
    """The release repository (and the other publish registries), then each mirror by
    name, then dependency images."""
    found = [parse_location(repository, LocationKind.REPOSITORY)]
    found.extend(
        parse_location(location, LocationKind.REPOSITORY)
        for location in publish
        if location != repository
    )
    found.extend(
        parse_location(location, LocationKind.MIRROR, name)
        for name, location in sorted(mirrors.items())
    )
    for image in dependencies:
        ref = parse_reference(image)
        namespace = tuple(ref.repository.split("/"))
        registry = canonical_registry(ref.registry)
        found.append(
            Location(LocationKind.DEPENDENCY, image, image, registry, namespace, ref.registry)
        )
    return tuple(found)


def admits(location: Location, ref: Reference) -> bool:
    if canonical_registry(ref.registry) != location.registry:
        return False
    parts = tuple(ref.repository.split("/"))
    return parts[: len(location.namespace)] == location.namespace


def admitted(locations: Sequence[Location], ref: Reference) -> Reference | None:
    """`ref` with its registry spelled as the config spells it (so that it is reached, and
    its credentials looked up, as the config names it: `Docker.IO/aibrix/x` becomes
    `docker.io/aibrix/x`) when it is under one of `locations` (see the module's rule);
    None when it is not."""
    for location in locations:
        if admits(location, ref):
            return replace(ref, registry=location.spelled or location.registry)
    return None
