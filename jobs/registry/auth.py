"""Registry authentication as pure logic: challenges in, Authorization headers out.

`authorization_flow` is a generator in the manner of httpx's auth flows: for a Bearer
challenge it yields the token request it needs and receives the token response; the
registry client does the I/O. For Basic it returns at once. Nothing here logs or
formats a secret.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

from jobs.domain import messages
from jobs.domain.errors import Unavailable
from jobs.registry.credentials import Credentials
from jobs.registry.endpoints import scheme_for

_PARAM = re.compile(r'([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')
DEFAULT_TOKEN_LIFETIME = 60


class AuthFlowError(Unavailable):
    """The registry's challenge or token answer could not be used."""


@dataclass(frozen=True)
class Challenge:
    scheme: str  # "bearer" or "basic", lowercase
    params: dict[str, str]


@dataclass(frozen=True)
class TokenRequest:
    url: str
    headers: dict[str, str] = field(repr=False)


@dataclass(frozen=True)
class TokenResponse:
    status: int
    body: bytes = field(repr=False)


@dataclass(frozen=True)
class Authorization:
    header: str = field(repr=False)
    lifetime: int  # seconds this header may be reused


def parse_challenge(header: str) -> Challenge | None:
    """Parse a `WWW-Authenticate` value such as `Bearer realm="...",service="..."`."""
    scheme, _, rest = header.strip().partition(" ")
    if not scheme:
        return None
    params = {}
    for match in _PARAM.finditer(rest):
        value = match.group(2) if match.group(2) is not None else match.group(3)
        params[match.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
    return Challenge(scheme.lower(), params)


def basic_header(credentials: Credentials) -> str:
    raw = f"{credentials.username}:{credentials.password}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def scope_for(repository: str, actions: str = "pull") -> str:
    return f"repository:{repository}:{actions}"


def mount_scope(repository: str, from_repository: str) -> str:
    """What a cross-repository mount into `repository` needs: push there and pull from
    `from_repository`. Scopes are separated by spaces (one `scope=` each in the token
    request)."""
    return f"{scope_for(repository, 'pull,push')} {scope_for(from_repository)}"


def realm_may_carry_credentials(
    realm: str, registry_host: str, insecure: frozenset[str] = frozenset()
) -> bool:
    """Whether the registry's credentials may go to its Bearer token service `realm`.

    Like docker and containerd, the realm gets the registry's credentials whatever its
    host (Docker Hub's registry-1.docker.io sends clients to auth.docker.io): the
    registry, which holds them already, names its token service. One rule more than
    theirs: never in clear text to a host that was not given as plain HTTP. The realm
    must be https, or on a host this client speaks plain HTTP to anyway (loopback, a
    host given by --insecure-registry / AIBRIX_INSECURE_REGISTRIES, or the registry's own
    plain-HTTP host)."""
    parts = urlsplit(realm)
    scheme = parts.scheme.lower()
    if scheme == "https":
        return True
    if scheme != "http" or not parts.hostname:
        return False
    try:
        port = parts.port
    except ValueError:
        return False
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    hostport = f"{host}:{port}" if port is not None else host
    if scheme_for(hostport, insecure) == "http":
        return True
    registry_plain = scheme_for(registry_host, insecure) == "http"
    return registry_plain and _bare_host(registry_host).lower() == host.lower()


def _bare_host(host: str) -> str:
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.split(":", 1)[0]


def authorization_flow(
    challenge: Challenge,
    scope: str,
    credentials: Credentials | None,
    *,
    realm_allowed: Callable[[str], bool] = lambda realm: True,
) -> Generator[TokenRequest, TokenResponse, Authorization]:
    """Turn a challenge into an Authorization header, yielding a token request for Bearer.
    `scope` is one scope or several separated by spaces (each its own `scope=`);
    `realm_allowed` says whether a Bearer realm may receive the credentials."""
    if challenge.scheme == "basic":
        if credentials is None or not credentials.username:
            raise AuthFlowError(
                "the registry asks for a user name and password and none is configured"
            )
        return Authorization(basic_header(credentials), lifetime=24 * 3600)
    if challenge.scheme != "bearer":
        # Not named: the scheme is the registry's header text.
        raise AuthFlowError(
            "the registry asks for an unsupported authentication scheme (neither Basic nor Bearer)"
        )
    realm = challenge.params.get("realm")
    if not realm or not realm.startswith(("https://", "http://")):
        raise AuthFlowError("the registry's Bearer challenge has no usable realm")
    query = [("scope", item) for item in scope.split()]
    if challenge.params.get("service"):
        query.append(("service", challenge.params["service"]))
    headers: dict[str, str] = {}
    has_secret = credentials is not None and (
        bool(credentials.username and credentials.password) or bool(credentials.identity_token)
    )
    if has_secret and not realm_allowed(realm):
        raise AuthFlowError(messages.registry_token_realm_insecure())
    if credentials is not None and credentials.username and credentials.password:
        headers["Authorization"] = basic_header(credentials)
    elif credentials is not None and credentials.identity_token:
        # Identity tokens are refresh tokens: distribution's token spec takes them by POST,
        # but most registries also accept them as the Basic password of "<token>".
        headers["Authorization"] = basic_header(Credentials("<token>", credentials.identity_token))
    separator = "&" if "?" in realm else "?"
    response = yield TokenRequest(f"{realm}{separator}{urlencode(query)}", headers)
    if response.status in (401, 403):
        raise AuthFlowError("the token service refused the credentials")
    if response.status != 200:
        raise AuthFlowError(f"the token service answered HTTP {response.status}")
    try:
        data = json.loads(response.body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise AuthFlowError("the token service answered with something other than JSON") from None
    token = data.get("token") or data.get("access_token") if isinstance(data, dict) else None
    if not isinstance(token, str) or not token:
        raise AuthFlowError("the token service answered without a token")
    lifetime = data.get("expires_in", DEFAULT_TOKEN_LIFETIME)
    if not isinstance(lifetime, int) or lifetime <= 0:
        lifetime = DEFAULT_TOKEN_LIFETIME
    return Authorization(f"Bearer {token}", lifetime=lifetime)
