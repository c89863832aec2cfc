"""An OCI distribution client on aiohttp: manifests and blobs, verified by digest.

One `aiohttp.ClientSession` (one connection pool) per client, a semaphore bounding
requests in flight, retries with backoff on 429, 5xx and dropped connections
(honouring `Retry-After`), and Bearer/Basic authentication driven by the pure flow
in `jobs.auth`. Every manifest and config read is hashed and compared with the digest
it was asked for (or the one the registry announced) before it is parsed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import random
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from types import TracebackType

import aiohttp

from jobs.auth import (
    AuthFlowError,
    Authorization,
    TokenResponse,
    authorization_flow,
    parse_challenge,
    scope_for,
)
from jobs.credentials import Credentials, CredentialsError, DockerConfig
from jobs.manifests import (
    MANIFEST_ACCEPT,
    Manifest,
    ManifestError,
    digest_of,
    parse_manifest,
)
from jobs.references import Reference, validate_host

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_CONFIG_BYTES = 16 * 1024 * 1024
INSECURE_ENV = "AIBRIX_INSECURE_REGISTRIES"


class RegistryError(Exception):
    """A registry operation failed; `str()` is a sentence fit for a user."""

    def __init__(self, reference: str, message: str) -> None:
        self.reference = reference
        self.message = message
        super().__init__(f"{reference}: {message}")


class NotFoundError(RegistryError):
    pass


class AuthenticationError(RegistryError):
    pass


class UnreachableError(RegistryError):
    pass


class DigestMismatchError(RegistryError):
    pass


class ProtocolError(RegistryError):
    pass


# ---- pure helpers -------------------------------------------------------------------


def is_loopback_host(host: str) -> bool:
    """localhost, 127.0.0.0/8 and ::1, with or without a port, speak plain HTTP."""
    name = host
    if name.startswith("["):
        name = name[1:].split("]", 1)[0]
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def parse_insecure_registries(values: Iterable[str]) -> frozenset[str]:
    """Validate `HOST[:PORT]` entries (from flags or the comma-separated env variable)."""
    hosts = set()
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if item:
                hosts.add(validate_host(item))
    return frozenset(hosts)


def insecure_from_env(env: Mapping[str, str] | None = None) -> frozenset[str]:
    env = os.environ if env is None else env
    return parse_insecure_registries([env.get(INSECURE_ENV, "")])


def scheme_for(host: str, insecure: frozenset[str]) -> str:
    bare = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if is_loopback_host(host) or host in insecure or bare in insecure:
        return "http"
    return "https"


def retry_delay(attempt: int, retry_after: str | None, base: float, cap: float) -> float:
    """Seconds to wait before retry `attempt` (1-based): Retry-After wins, else backoff."""
    if retry_after:
        value = retry_after.strip()
        if value.isdigit():
            return min(float(value), cap * 4)
        try:
            moment = parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError):
            moment = None
        if moment is not None:
            return float(max(0.0, min(moment - time.time(), cap * 4)))
    backoff: float = min(cap, base * 2.0 ** (attempt - 1))
    return backoff / 2 + random.uniform(0, backoff / 2)  # noqa: S311 - jitter, not crypto


# ---- the client ---------------------------------------------------------------------


@dataclass(frozen=True)
class RegistrySettings:
    insecure_registries: frozenset[str] = frozenset()
    max_concurrency: int = 64
    max_attempts: int = 6
    backoff_base: float = 0.2
    backoff_cap: float = 5.0
    timeout: float = 30.0


@dataclass
class _Fetched:
    status: int
    headers: Mapping[str, str]
    body: bytes = field(repr=False)


@dataclass
class _HostAuth:
    challenge_header: str | None = None
    headers: dict[str, tuple[str, float]] = field(default_factory=dict)  # scope -> header, expiry


class RegistryClient:
    """Read manifests and configs from OCI registries. Use as `async with RegistryClient()`."""

    def __init__(
        self,
        settings: RegistrySettings | None = None,
        *,
        docker_config: DockerConfig | None = None,
    ) -> None:
        self.settings = settings or RegistrySettings()
        self._docker_config = docker_config
        self._session: aiohttp.ClientSession | None = None
        self._semaphore = asyncio.Semaphore(self.settings.max_concurrency)
        self._auth: dict[str, _HostAuth] = {}
        self._credentials: dict[str, Credentials | None] = {}
        self.requests_sent = 0

    async def __aenter__(self) -> RegistryClient:
        connector = aiohttp.TCPConnector(limit=self.settings.max_concurrency, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.settings.timeout),
            headers={"User-Agent": "aibrix-release-bot"},
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- public API

    async def get_manifest(self, ref: Reference) -> Manifest:
        """Fetch and verify the manifest `ref` names (by tag or digest)."""
        fetched = await self._get(
            ref,
            f"/v2/{ref.repository}/manifests/{ref.identifier}",
            MANIFEST_ACCEPT,
            MAX_MANIFEST_BYTES,
        )
        announced = fetched.headers.get("Docker-Content-Digest")
        expected = ref.digest or announced
        digest = self._verify(ref, fetched.body, expected, "manifest")
        try:
            return parse_manifest(fetched.body, digest, fetched.headers.get("Content-Type", ""))
        except ManifestError as error:
            raise ProtocolError(str(ref), str(error)) from None

    async def get_blob(
        self, ref: Reference, digest: str, max_bytes: int = MAX_CONFIG_BYTES
    ) -> bytes:
        """Fetch a small blob (an image config) and verify its digest."""
        fetched = await self._get(ref, f"/v2/{ref.repository}/blobs/{digest}", "*/*", max_bytes)
        self._verify(ref, fetched.body, digest, "blob")
        return fetched.body

    # -- internals

    def _verify(self, ref: Reference, body: bytes, expected: str | None, what: str) -> str:
        algorithm = (expected or "sha256:").split(":", 1)[0]
        try:
            actual = digest_of(body, algorithm)
        except ManifestError as error:
            raise ProtocolError(str(ref), str(error)) from None
        if expected is not None and actual != expected:
            raise DigestMismatchError(
                str(ref), f"the {what} content does not match its digest {expected} (got {actual})"
            )
        return actual

    def _credentials_for(self, ref: Reference) -> Credentials | None:
        host = ref.registry
        if host not in self._credentials:
            try:
                config = self._docker_config or DockerConfig.load()
                self._credentials[host] = config.lookup(host)
            except CredentialsError as error:
                raise AuthenticationError(str(ref), str(error)) from None
        return self._credentials[host]

    def _url(self, ref: Reference, path: str) -> str:
        return (
            f"{scheme_for(ref.api_host, self.settings.insecure_registries)}://{ref.api_host}{path}"
        )

    async def _get(self, ref: Reference, path: str, accept: str, max_bytes: int) -> _Fetched:
        scope = scope_for(ref.repository)
        host_auth = self._auth.setdefault(ref.api_host, _HostAuth())
        authenticated = False
        if host_auth.challenge_header and not self._cached_header(host_auth, scope):
            await self._authorize(ref, host_auth, scope)
            authenticated = True
        attempt = 0
        while True:
            attempt += 1
            headers = {"Accept": accept}
            cached = self._cached_header(host_auth, scope)
            if cached:
                headers["Authorization"] = cached
            fetched = await self._send(
                ref, "GET", self._url(ref, path), headers, max_bytes, attempt
            )
            if fetched is None:
                continue  # retried after a dropped connection
            if fetched.status == 401 and not authenticated:
                host_auth.challenge_header = fetched.headers.get("WWW-Authenticate", "")
                host_auth.headers.pop(scope, None)
                await self._authorize(ref, host_auth, scope)
                authenticated = True
                attempt -= 1  # a challenge is not a failure
                continue
            if fetched.status in RETRY_STATUSES and attempt < self.settings.max_attempts:
                await asyncio.sleep(
                    retry_delay(
                        attempt,
                        fetched.headers.get("Retry-After"),
                        self.settings.backoff_base,
                        self.settings.backoff_cap,
                    )
                )
                continue
            return self._check_status(ref, fetched)

    def _check_status(self, ref: Reference, fetched: _Fetched) -> _Fetched:
        if fetched.status == 200:
            return fetched
        if fetched.status == 404:
            raise NotFoundError(str(ref), "not found in the registry")
        if fetched.status in (401, 403):
            if self._credentials.get(ref.registry) is not None:
                raise AuthenticationError(str(ref), "the registry refused the credentials")
            raise AuthenticationError(
                str(ref),
                "the registry requires authentication and no credentials were found "
                "in the docker config",
            )
        if fetched.status in RETRY_STATUSES:
            raise UnreachableError(
                str(ref),
                f"the registry kept answering HTTP {fetched.status} after "
                f"{self.settings.max_attempts} attempts",
            )
        raise ProtocolError(str(ref), f"unexpected HTTP {fetched.status} from the registry")

    @staticmethod
    def _cached_header(host_auth: _HostAuth, scope: str) -> str | None:
        entry = host_auth.headers.get(scope)
        if entry and entry[1] > time.monotonic():
            return entry[0]
        return None

    async def _authorize(self, ref: Reference, host_auth: _HostAuth, scope: str) -> None:
        challenge = parse_challenge(host_auth.challenge_header or "")
        if challenge is None:
            raise AuthenticationError(str(ref), "the registry refused access without a challenge")
        credentials = self._credentials_for(ref)
        flow = authorization_flow(challenge, scope, credentials)
        try:
            token_request = next(flow)
            while True:
                fetched = await self._send(
                    ref, "GET", token_request.url, token_request.headers, MAX_MANIFEST_BYTES, 1
                )
                response = (
                    TokenResponse(fetched.status, fetched.body)
                    if fetched
                    else TokenResponse(0, b"")
                )
                token_request = flow.send(response)
        except StopIteration as done:
            authorization: Authorization = done.value
        except AuthFlowError as error:
            raise AuthenticationError(str(ref), str(error)) from None
        lifetime = max(1, authorization.lifetime - 5)
        host_auth.headers[scope] = (authorization.header, time.monotonic() + lifetime)

    async def _send(
        self,
        ref: Reference,
        method: str,
        url: str,
        headers: Mapping[str, str],
        max_bytes: int,
        attempt: int,
    ) -> _Fetched | None:
        """One HTTP exchange. None means the connection dropped and a retry is due."""
        assert self._session is not None, "use RegistryClient as an async context manager"
        try:
            async with self._semaphore:
                self.requests_sent += 1
                async with self._session.request(method, url, headers=headers) as response:
                    body = await self._read_limited(ref, response, max_bytes)
                    return _Fetched(response.status, dict(response.headers), body)
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as error:
            if attempt >= self.settings.max_attempts:
                raise UnreachableError(
                    str(ref), f"cannot reach {ref.api_host} ({type(error).__name__})"
                ) from None
            await asyncio.sleep(
                retry_delay(attempt, None, self.settings.backoff_base, self.settings.backoff_cap)
            )
            return None

    @staticmethod
    async def _read_limited(
        ref: Reference, response: aiohttp.ClientResponse, max_bytes: int
    ) -> bytes:
        if response.content_length is not None and response.content_length > max_bytes:
            raise ProtocolError(
                str(ref), f"the registry sent {response.content_length} bytes, over the limit"
            )
        chunks = []
        total = 0
        async for chunk in response.content.iter_chunked(65536):
            total += len(chunk)
            if total > max_bytes:
                raise ProtocolError(str(ref), "the registry sent more bytes than the limit")
            chunks.append(chunk)
        return b"".join(chunks)
