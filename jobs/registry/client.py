"""An OCI distribution client: manifests and blobs, verified by digest.

One `jobs.registry.http.HttpClient` (httpx's pool of keep-alive connections) per client, a
semaphore bounding requests in flight per registry host, retries with backoff on 429,
5xx and dropped connections (honouring `Retry-After`; a request that timed out is tried
`timeout_attempts` times, fewer: a server that hung once hangs again), a time budget per
request and, within `reference_budget`, per reference, and Bearer/Basic authentication
driven by the pure flow in `jobs.registry.auth`. Every manifest and config read is hashed and
compared with the digest it was asked for (or the one the registry announced) before it
is parsed.

Writes (for the mirror sync): HEAD of manifests and blobs, manifest PUT, and blob
copies that mount across repositories of one registry when the registry agrees and
otherwise stream the source's GET body into a monolithic upload PUT, in chunks, with
the digest checked on the way (the last chunk is held back until it is, so a bad
blob is never completed). The upload's POST goes out with the source GET. (The body is
never sent with the POST itself: distribution answers `POST ...?digest=` with 202 and
drops the body, which would send the bytes twice.) Concurrency is bounded per registry
host.

Where credentials go. The docker config's credentials for a reference's registry (looked
up by that name) are sent only (a) to that registry's own origin: scheme, host and port
exactly. `_headers` attaches the Authorization header only to URLs of the registry's API
host, and httpx (under `jobs.registry.http`) drops it on any redirect that leaves the
origin (another host, another port, https to http; it keeps it only for an upgrade of
http://host:80 to https://host:443): blob and manifest reads redirected to storage go there
without it. (Go's net/http, under docker and containerd, keeps it for subdomains; this
client does not.) And (b) to the Bearer token service the registry's challenge names,
whatever its host, as docker and containerd do (registry-1.docker.io sends clients to
auth.docker.io), but never in clear text to a host not given as plain HTTP
(`jobs.registry.auth.realm_may_carry_credentials`). The token it issues goes to the registry's
origin only.

What a refusal shows. A registry's answer becomes a sentence in one place,
`_status_error`: the HTTP status and the error `code` of its body when that is an
upper-case identifier. Never its free text (`message`, `detail`) nor a header: a registry
can put anything there, including the credentials it was sent, and the sentence goes to
Slack. Digests a registry announces in a header are validated before any sentence may
show them. A transport failure becomes a sentence in `transport_fault`
(`messages.registry_transport_fault`): the host and the cause (refused, name not resolved,
TLS, timeout and which, malformed answer in the HTTP library's words, body cut short).

Bodies: manifests and configs are read decoded (a server may gzip them although no
Accept-Encoding is sent) and their digests computed on the decoded bytes; blob copies
stream the raw bytes, stored as sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import json
import random
import re
import time
from collections import Counter
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterator,
    Mapping,
)
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import cast
from urllib.parse import urljoin, urlsplit

from jobs.domain import messages
from jobs.domain.errors import Unavailable
from jobs.domain.manifests import (
    MANIFEST_ACCEPT,
    Descriptor,
    Manifest,
    ManifestError,
    digest_of,
    parse_manifest,
)
from jobs.domain.references import (
    InvalidReferenceError,
    Reference,
    validate_digest,
)
from jobs.registry.auth import (
    AuthFlowError,
    Authorization,
    TokenResponse,
    authorization_flow,
    mount_scope,
    parse_challenge,
    realm_may_carry_credentials,
    scope_for,
)
from jobs.registry.credentials import Credentials, CredentialsError, DockerConfig
from jobs.registry.endpoints import INSECURE_ENV as INSECURE_ENV
from jobs.registry.endpoints import insecure_from_env as insecure_from_env
from jobs.registry.endpoints import is_loopback_host as is_loopback_host
from jobs.registry.endpoints import parse_insecure_registries as parse_insecure_registries
from jobs.registry.endpoints import scheme_for as scheme_for
from jobs.registry.http import CertificateError, HttpClient, HttpError, ProxyFor, Response
from jobs.registry.proxies import Proxy, ProxySettings, route

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_CONFIG_BYTES = 16 * 1024 * 1024
MAX_ERROR_BYTES = 64 * 1024
CHUNK_BYTES = 1024 * 1024


class RegistryError(Unavailable):
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


def retry_delay(attempt: int, retry_after: str | None, base: float, cap: float) -> float:
    """Seconds to wait before retry `attempt` (1-based): Retry-After wins, else backoff."""
    if retry_after:
        value = retry_after.strip()
        if value.isdigit():
            return min(float(value), cap * 4)
        try:
            from email.utils import parsedate_to_datetime  # rare: not worth start-up time

            moment = parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError):
            moment = None
        if moment is not None:
            return float(max(0.0, min(moment - time.time(), cap * 4)))
    backoff: float = min(cap, base * 2.0 ** (attempt - 1))
    return backoff / 2 + random.uniform(0, backoff / 2)  # noqa: S311 - jitter, not crypto


_ERROR_CODE = re.compile(r"[A-Z][A-Z0-9_]{0,63}")


def registry_error_code(body: bytes) -> str | None:
    """The `code` of the first error of a distribution error body (`{"errors": [...]}`)
    when it is an upper-case identifier (MANIFEST_UNKNOWN, DENIED, UNAUTHORIZED); None
    otherwise. Never the free text (`message`, `detail`): a registry may put anything
    there, the credentials it was sent included (it has been seen)."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return None
    errors = data.get("errors") if isinstance(data, dict) else None
    if not isinstance(errors, list) or not errors or not isinstance(errors[0], dict):
        return None
    code = errors[0].get("code")
    if isinstance(code, str) and _ERROR_CODE.fullmatch(code):
        return code
    return None


def _announced_digest(ref: Reference, headers: Mapping[str, str]) -> str | None:
    """The `Docker-Content-Digest` header when there is one; it is a header, so it is
    validated before any sentence can show it."""
    announced = headers.get("Docker-Content-Digest")
    if not announced:
        return None
    try:
        return validate_digest(announced)
    except InvalidReferenceError:
        raise ProtocolError(str(ref), "the registry announced a malformed digest") from None


def upload_url(request_url: str, location: str, digest: str) -> str:
    """The URL of the PUT that completes an upload: the `Location` the registry gave
    (absolute, or relative to the POST's URL) with `digest=` added to its query."""
    url = urljoin(request_url, location)
    return f"{url}{'&' if '?' in url else '?'}digest={digest}"


def same_origin(url: str, api_host: str) -> bool:
    """Whether `url` is served by `api_host` (credentials are only ever sent there)."""
    parsed = urlsplit(url)
    try:
        port = parsed.port
    except ValueError:
        return False
    host = parsed.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return (f"{host}:{port}" if port is not None else host) == api_host


# ---- the client ---------------------------------------------------------------------


@dataclass(frozen=True)
class RegistrySettings:
    insecure_registries: frozenset[str] = frozenset()
    max_concurrency: int = 64  # requests in flight per registry host
    max_attempts: int = 6  # of a request answered 429/5xx or dropped
    # A server that let a request time out is likely to again: fewer attempts.
    timeout_attempts: int = 2
    backoff_base: float = 0.2
    backoff_cap: float = 5.0
    connect_timeout: float = 10.0
    head_timeout: float = 15.0  # request sent (or its body ended) to the response head
    idle_timeout: float = 30.0  # any one read or write of a body (a blob's included)
    # All attempts of one request, and with `RegistryClient.reference_budget` all the
    # requests made for one reference (not blob bodies, whose size sets their time).
    budget: float = 35.0
    # Read from the environment at the edge (`bot.registry_env`), never here.
    proxies: ProxySettings = field(default_factory=ProxySettings)


@dataclass(frozen=True)
class BlobTransfer:
    """How one blob reached the destination: mounted from another repository of the same
    registry, or uploaded (`bytes_sent` of the successful attempt)."""

    mounted: bool
    bytes_sent: int
    attempts: int = 1


@dataclass
class _Fetched:
    status: int
    headers: Mapping[str, str]
    body: bytes = field(repr=False)


@dataclass
class _HostAuth:
    challenge_header: str | None = None
    headers: dict[str, tuple[str, float]] = field(default_factory=dict)  # scope -> header, expiry
    # scope -> the token request under way: concurrent requests for one scope await it
    pending: dict[str, asyncio.Future[None]] = field(default_factory=dict)


class _RetryTransfer(Exception):
    """A blob upload attempt failed in a way a new attempt may fix."""

    def __init__(self, reason: str, retry_after: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


@dataclass
class _StreamState:
    error: BaseException | None = None
    sent: int = 0
    location: str | None = None  # the upload session, once there is one


_TRANSPORT_ERRORS = (HttpError, OSError, TimeoutError)
_TIMEOUTS = frozenset({"connect-timeout", "head-timeout", "idle-timeout"})
# Within `RegistryClient.reference_budget`: the loop time by which a reference's requests
# give up (tasks started inside inherit it).
_REFERENCE_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "registry_reference_deadline", default=None
)


def transport_fault(host: str, error: BaseException, attempts: int) -> str:
    """The sentence for a transport failure: what happened, on which host."""
    if isinstance(error, HttpError):
        return messages.registry_transport_fault(
            error.kind, error.host or host, error.detail, error.seconds, attempts
        )
    return messages.registry_transport_fault("network", host, str(error), None, attempts)


def _unreachable(
    ref: Reference, error: BaseException, attempts: int, via: Proxy | None = None
) -> UnreachableError:
    """What to say when the transport failed for good (after the retries, or at once for a
    certificate nobody here trusts, which no retry changes). `via`: the proxy the request
    went through, shown by scheme, host and port and the variable that named it."""
    if isinstance(error, CertificateError):
        return UnreachableError(
            str(ref), messages.registry_certificate_untrusted(error.host, error.reason)
        )
    if via is not None and isinstance(error, HttpError) and error.kind in _PROXY_FAULTS:
        # Through a proxy, the only connection made is to the proxy: it is the one that
        # did not resolve, refused or did not answer, not the registry.
        proxy = messages.proxy_named(via.shown, via.variable)
        said = messages.registry_transport_fault(
            error.kind, proxy, error.detail, error.seconds, attempts
        )
        return UnreachableError(str(ref), said)
    if via is not None and isinstance(error, HttpError) and error.kind == "proxy-refused":
        return UnreachableError(
            str(ref),
            messages.proxy_refused_tunnel(
                via.shown, via.variable, ref.api_host, int(error.detail), attempts
            ),
        )
    said = transport_fault(ref.api_host, error, attempts)
    through = messages.registry_via_proxy(via.shown, via.variable) if via is not None else None
    return UnreachableError(str(ref), messages.registry_unreachable(said, through))


_PROXY_FAULTS = frozenset({"dns", "refused", "connect-timeout"})


_ReadKey = tuple[str, str, str]  # (registry API host, repository, what was read)


@dataclass
class _SharedReads:
    """One `RegistryClient.shared_reads` scope: the reads made or under way in it."""

    client: RegistryClient
    reads: dict[_ReadKey, asyncio.Future[object]]
    outer: _SharedReads | None  # another client's scope, further out


_SHARED_READS: contextvars.ContextVar[_SharedReads | None] = contextvars.ContextVar(
    "registry_shared_reads", default=None
)


def _scope_for(client: RegistryClient) -> _SharedReads | None:
    scope = _SHARED_READS.get()
    while scope is not None and scope.client is not client:
        scope = scope.outer
    return scope


def _forget_failed(
    reads: dict[_ReadKey, asyncio.Future[object]], key: _ReadKey, done: asyncio.Future[object]
) -> None:
    """A failed shared read is not kept: the next caller tries again."""
    failed = done.cancelled() or done.exception() is not None
    if failed and reads.get(key) is done:
        del reads[key]


class RegistryClient:
    """Read and write manifests and blobs on OCI registries. Use as `async with RegistryClient()`.

    Counters for tests and reports: `requests_sent`, `requests_by_method` and
    `bytes_uploaded` (every blob byte sent, failed attempts included)."""

    def __init__(
        self,
        settings: RegistrySettings | None = None,
        *,
        docker_config: DockerConfig | None = None,
        proxy_for: ProxyFor | None = None,
    ) -> None:
        self.settings = settings or RegistrySettings()
        if proxy_for is None and self.settings.proxies.any:
            proxy_for = self._settings_proxy
        self._proxy_for = proxy_for  # a request URL's proxy, or None: direct
        self._docker_config = docker_config
        self._http: HttpClient | None = None
        self._semaphores: dict[str, asyncio.Semaphore] = {}
        self._auth: dict[str, _HostAuth] = {}
        self._credentials: dict[str, Credentials | None] = {}
        self.requests_sent = 0
        self.requests_by_method: Counter[str] = Counter()
        self.bytes_uploaded = 0

    def _unreachable(self, ref: Reference, error: BaseException, attempts: int) -> UnreachableError:
        """The sentence names the proxy the registry's requests go through, if any."""
        via = route(self._url(ref, "/v2/"), self.settings.proxies)
        return _unreachable(ref, error, attempts, via)

    def _settings_proxy(self, url: str) -> str | None:
        proxy = route(url, self.settings.proxies)
        return proxy.url if proxy is not None else None

    async def __aenter__(self) -> RegistryClient:
        self._http = HttpClient(
            connect_timeout=self.settings.connect_timeout,
            head_timeout=self.settings.head_timeout,
            idle_timeout=self.settings.idle_timeout,
            default_headers={"User-Agent": "aibrix-release-bot"},
            max_idle_per_origin=self.settings.max_concurrency,
            proxy_for=self._proxy_for,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    # -- public API: reads

    @contextlib.contextmanager
    def shared_reads(self) -> Iterator[None]:
        """Within the block, concurrent and repeated reads of one manifest (same registry,
        repository and tag or digest) or config blob are one request, and a manifest put
        through this client is read afresh. For one command, or one piece of work that pins
        what it read (an inspection: an index whose entries name the same child many times;
        the sync: its gate and its copy read the same source trees at the same time).

        The scope is the block's task and the tasks it starts (a context variable), not the
        client: another command running at the same time on the same client (the worker's
        loops share one) reads for itself. A read that fails (or is cancelled) is dropped
        from the scope as soon as it fails: the callers waiting on it at that moment get its
        error, and the next ask sends a new request. Blocks nest; the outermost one for this
        client is the scope."""
        if _scope_for(self) is not None:
            yield
            return
        token = _SHARED_READS.set(_SharedReads(self, {}, _SHARED_READS.get()))
        try:
            yield
        finally:
            _SHARED_READS.reset(token)

    @contextlib.contextmanager
    def reference_budget(self) -> Iterator[None]:
        """Within the block (and tasks started in it), requests give up once
        `settings.budget` seconds have passed since it was entered: for the reads of one
        reference (its index, children and configs), so that a server that hangs or
        trickles costs a stated time, not the sum of every request's timeouts."""
        deadline = asyncio.get_running_loop().time() + self.settings.budget
        token = _REFERENCE_DEADLINE.set(deadline)
        try:
            yield
        finally:
            _REFERENCE_DEADLINE.reset(token)

    def _deadline(self) -> float:
        """When the request about to start must give up: its own budget, or the
        reference's when that comes first."""
        own = asyncio.get_running_loop().time() + self.settings.budget
        shared = _REFERENCE_DEADLINE.get()
        return own if shared is None else min(own, shared)

    def _out_of_time(self, ref: Reference, deadline: float) -> HttpError:
        return HttpError(
            "out of time", kind="budget", host=ref.api_host, seconds=self.settings.budget
        )

    async def _backoff(
        self, ref: Reference, error: BaseException, attempt: int, deadline: float
    ) -> None:
        """Sleep before another attempt after a transport failure, or give up: after the
        last attempt (fewer when it timed out), on an untrusted certificate, or when the
        sleep would pass the deadline."""
        timed_out = isinstance(error, HttpError) and error.kind in _TIMEOUTS
        limit = self.settings.timeout_attempts if timed_out else self.settings.max_attempts
        if attempt >= limit or isinstance(error, CertificateError):
            raise self._unreachable(ref, error, attempt) from None
        if isinstance(error, HttpError) and error.kind in ("malformed", "budget"):
            raise self._unreachable(ref, error, attempt) from None  # the same answer again
        delay = retry_delay(attempt, None, self.settings.backoff_base, self.settings.backoff_cap)
        if asyncio.get_running_loop().time() + delay >= deadline:
            raise self._unreachable(ref, self._out_of_time(ref, deadline), attempt) from None
        await asyncio.sleep(delay)

    async def get_manifest(self, ref: Reference) -> Manifest:
        """Fetch and verify the manifest `ref` names (by tag or digest)."""
        key = (ref.api_host, ref.repository, ref.identifier)
        return cast(Manifest, await self._shared_read(key, lambda: self._read_manifest(ref)))

    async def _shared_read(
        self, key: tuple[str, str, str], read: Callable[[], Awaitable[object]]
    ) -> object:
        """`read()`, or the result of the same read already made or under way in this
        command's `shared_reads` scope."""
        scope = _scope_for(self)
        if scope is None:
            return await read()
        shared = scope.reads.get(key)
        if shared is None:
            shared = scope.reads[key] = asyncio.ensure_future(read())
            shared.add_done_callback(lambda done: _forget_failed(scope.reads, key, done))
        return await asyncio.shield(shared)

    async def _read_manifest(self, ref: Reference) -> Manifest:
        fetched = await self._get(
            ref,
            f"/v2/{ref.repository}/manifests/{ref.identifier}",
            MANIFEST_ACCEPT,
            MAX_MANIFEST_BYTES,
        )
        announced = _announced_digest(ref, fetched.headers)
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
        key = (ref.api_host, ref.repository, f"blob {digest} {max_bytes}")
        return cast(
            bytes, await self._shared_read(key, lambda: self._read_blob(ref, digest, max_bytes))
        )

    async def _read_blob(self, ref: Reference, digest: str, max_bytes: int) -> bytes:
        fetched = await self._get(ref, f"/v2/{ref.repository}/blobs/{digest}", "*/*", max_bytes)
        self._verify(ref, fetched.body, digest, "blob")
        return fetched.body

    @asynccontextmanager
    async def stream_blob(
        self, ref: Reference, blob: Descriptor
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """A blob's bytes in chunks as they arrive (a layer read without holding it whole).
        Its size and digest are checked on the way: a longer blob, or one that does not
        match, raises DigestMismatchError, before the last chunk is handed over."""
        async with self._blob_response(ref, blob.digest) as response:
            yield self._checked_chunks(ref, response, blob)

    def _blob_response(self, ref: Reference, digest: str) -> AbstractAsyncContextManager[Response]:
        """The answer to a GET of blob `digest` in `ref`'s repository, its body unread."""
        return self._exchange(
            ref,
            "GET",
            self._url(ref, f"/v2/{ref.repository}/blobs/{digest}"),
            scope=scope_for(ref.repository),
            headers={"Accept": "*/*"},
            final=(200,),
        )

    async def _checked_chunks(
        self, ref: Reference, response: Response, blob: Descriptor
    ) -> AsyncIterator[bytes]:
        algorithm = blob.digest.split(":", 1)[0]
        try:
            hasher = hashlib.new(algorithm)
        except ValueError:
            raise ProtocolError(str(ref), f"unsupported digest {blob.digest}") from None
        held: bytes | None = None
        received = 0
        async for chunk in response.iter_chunks(CHUNK_BYTES):
            received += len(chunk)
            if received > blob.size:
                raise DigestMismatchError(
                    str(ref), f"the blob {blob.digest} is longer than its {blob.size} bytes"
                )
            hasher.update(chunk)
            if held is not None:
                yield held
            held = chunk
        actual = f"{algorithm}:{hasher.hexdigest()}"
        if received != blob.size or actual != blob.digest:
            raise DigestMismatchError(
                str(ref),
                f"the blob {blob.digest} does not match its digest (got {received} bytes)",
            )
        if held is not None:
            yield held

    def open_connections(self, ref: Reference, count: int) -> asyncio.Task[None]:
        """Begin `count` keep-alive connections to `ref`'s registry (through its proxy, TLS
        included) with as many concurrent `GET /v2/`, the API's cheapest request, for a
        burst of reads about to come: a request that finds no idle connection opens its
        own, a round trip (more over TLS) before it is even sent. The pool keeps them once
        answered. What they get back is not looked at, and failures are silent: the reads
        that follow say what is wrong. Cancel the task (or let it end) before closing."""
        url = self._url(ref, "/v2/")
        host = ref.api_host

        async def ping() -> None:
            http = self._require_http()
            with contextlib.suppress(*_TRANSPORT_ERRORS):
                async with self._semaphore_for(host), asyncio.timeout(self.settings.budget):
                    self._count("GET")
                    async with http.request("GET", url) as response:
                        await self._read_error_body(response)

        async def pings() -> None:
            await asyncio.gather(*(ping() for _ in range(count)))

        return asyncio.create_task(pings())

    async def head_manifest(self, ref: Reference) -> str | None:
        """The digest `ref` (tag or digest) resolves to, read with one HEAD; None when the
        registry has no such manifest."""
        url = self._url(ref, f"/v2/{ref.repository}/manifests/{ref.identifier}")
        fetched = await self._call(
            ref,
            "HEAD",
            url,
            scope=scope_for(ref.repository),
            headers={"Accept": MANIFEST_ACCEPT},
            final=(200, 404),
        )
        if fetched.status == 404:
            return None
        digest = fetched.headers.get("Docker-Content-Digest")
        if not digest:  # not every registry announces it on HEAD: read the manifest
            return (await self.get_manifest(ref)).digest
        try:
            validate_digest(digest)
        except InvalidReferenceError:
            raise ProtocolError(str(ref), "the registry announced a malformed digest") from None
        if ref.digest is not None and digest != ref.digest:
            raise DigestMismatchError(
                str(ref), f"the registry says the manifest is {digest}, not {ref.digest}"
            )
        return digest

    async def blob_exists(self, ref: Reference, digest: str) -> bool:
        """Whether the repository of `ref` holds the blob (one HEAD)."""
        url = self._url(ref, f"/v2/{ref.repository}/blobs/{digest}")
        fetched = await self._call(
            ref, "HEAD", url, scope=scope_for(ref.repository), headers={}, final=(200, 404)
        )
        return fetched.status == 200

    # -- public API: writes

    async def put_manifest(self, ref: Reference, raw: bytes, media_type: str) -> str:
        """Store manifest bytes under `ref`'s tag (or digest) as they are; returns their
        digest, checked against what the registry says it stored."""
        algorithm = ref.digest.split(":", 1)[0] if ref.digest else "sha256"
        digest = digest_of(raw, algorithm)
        if ref.digest is not None and digest != ref.digest:
            raise DigestMismatchError(
                str(ref), f"the manifest bytes are {digest}, not {ref.digest}"
            )
        url = self._url(ref, f"/v2/{ref.repository}/manifests/{ref.identifier}")
        fetched = await self._call(
            ref,
            "PUT",
            url,
            scope=scope_for(ref.repository, "pull,push"),
            headers={"Content-Type": media_type},
            data=raw,
            final=(201,),
        )
        announced = _announced_digest(ref, fetched.headers)
        if announced and announced != digest:
            raise DigestMismatchError(
                str(ref), f"the registry stored the manifest as {announced}, not {digest}"
            )
        scope = _scope_for(self)
        if scope is not None:
            for identifier in (ref.tag, ref.digest, digest):
                scope.reads.pop((ref.api_host, ref.repository, identifier or ""), None)
        return digest

    async def copy_blob(
        self,
        source: Reference,
        destination: Reference,
        blob: Descriptor,
        *,
        mount_from: str | None = None,
        on_bytes: Callable[[int], None] | None = None,
    ) -> BlobTransfer:
        """Put one blob of `source`'s repository into `destination`'s repository.

        With `mount_from` (a repository of the destination's registry that holds the blob)
        the registry is asked to mount it; when it declines, or without `mount_from`, the
        blob is streamed from the source's GET into the upload's PUT in chunks, its size
        and digest checked on the way (the upload is started while the GET is answered:
        one round trip, not two, before the bytes flow). Attempts that fail on a dropped
        connection, 429 or 5xx are started over after a backoff (honouring Retry-After).
        `on_bytes` gets the size of each chunk sent, and the negative total of an attempt
        that is abandoned.
        """
        mounting = mount_from is not None and mount_from != destination.repository
        attempt = 0
        while True:
            attempt += 1
            state = _StreamState()
            try:
                if mounting:
                    state.location = await self._start_upload(destination, blob.digest, mount_from)
                    if state.location is None:
                        return BlobTransfer(mounted=True, bytes_sent=0, attempts=attempt)
                await self._upload_from(source, destination, blob, state, on_bytes)
                return BlobTransfer(mounted=False, bytes_sent=state.sent, attempts=attempt)
            except RegistryError:
                if state.location is not None:
                    await self._cancel_upload(destination, state.location)
                raise
            except _RetryTransfer as retry:
                if on_bytes is not None and state.sent:
                    on_bytes(-state.sent)
                if state.location is not None:
                    await self._cancel_upload(destination, state.location)
                if attempt >= self.settings.max_attempts:
                    raise UnreachableError(
                        str(destination),
                        f"the upload of blob {blob.digest} kept failing ({retry.reason}) "
                        f"after {attempt} attempts",
                    ) from None
                await asyncio.sleep(
                    retry_delay(
                        attempt,
                        retry.retry_after,
                        self.settings.backoff_base,
                        self.settings.backoff_cap,
                    )
                )

    # -- blob transfer internals

    async def _start_upload(
        self, destination: Reference, digest: str, mount_from: str | None
    ) -> str | None:
        """POST an upload (a mount when `mount_from` is given): None when the registry
        mounted the blob, else the URL of the upload session."""
        query = ""
        scope = scope_for(destination.repository, "pull,push")
        if mount_from is not None and mount_from != destination.repository:
            query = f"?mount={digest}&from={mount_from}"
            scope = mount_scope(destination.repository, mount_from)  # token registries
        url = self._url(destination, f"/v2/{destination.repository}/blobs/uploads/{query}")
        fetched = await self._call(
            destination,
            "POST",
            url,
            scope=scope,
            headers={},
            data=b"",
            final=(201, 202),
        )
        if fetched.status == 201 and query:
            return None
        location = fetched.headers.get("Location")
        if fetched.status != 202 or not location:
            raise ProtocolError(
                str(destination), "the registry did not start an upload (no Location given)"
            )
        return urljoin(url, location)

    async def _upload_from(
        self,
        source: Reference,
        destination: Reference,
        blob: Descriptor,
        state: _StreamState,
        on_bytes: Callable[[int], None] | None,
    ) -> None:
        """Stream the blob from the source into an upload: `state.location`'s, or one
        POSTed here while the source's GET is on its way."""
        post: asyncio.Task[str | None] | None = None
        if state.location is None:
            post = asyncio.create_task(self._start_upload(destination, blob.digest, None))
        try:
            await self._stream_blob(source, destination, blob, state, on_bytes, post)
        finally:
            if post is not None:
                if not post.done():
                    post.cancel()
                [started] = await asyncio.gather(post, return_exceptions=True)
                if state.location is None and isinstance(started, str):
                    state.location = started  # to be cancelled by the caller

    async def _stream_blob(
        self,
        source: Reference,
        destination: Reference,
        blob: Descriptor,
        state: _StreamState,
        on_bytes: Callable[[int], None] | None,
        post: asyncio.Task[str | None] | None,
    ) -> None:
        async with self._blob_response(source, blob.digest) as response:
            if post is not None:
                state.location = await post
            location = state.location
            assert location is not None
            if response.content_length is not None and response.content_length != blob.size:
                raise DigestMismatchError(
                    str(source),
                    f"the blob {blob.digest} is {response.content_length} bytes in the "
                    f"registry but its descriptor says {blob.size}",
                )
            body = self._verified_chunks(source, response, blob, state, on_bytes)
            try:
                async with self._exchange(
                    destination,
                    "PUT",
                    upload_url(location, location, blob.digest),
                    scope=scope_for(destination.repository, "pull,push"),
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Length": str(blob.size),
                    },
                    data=body,
                    final=(201, 401, *RETRY_STATUSES),
                    attempts=1,
                ) as put:
                    status, headers = put.status, put.headers
                    error_body = await self._read_error_body(put)
            except UnreachableError as error:
                self._raise_stream_error(state)
                raise _RetryTransfer(error.message) from None
            except _TRANSPORT_ERRORS as error:
                self._raise_stream_error(state)
                raise _RetryTransfer(transport_fault(destination.api_host, error, 1)) from None
            except DigestMismatchError:
                raise
            except Exception:
                self._raise_stream_error(state)
                raise
        self._raise_stream_error(state)
        if status in RETRY_STATUSES:
            raise _RetryTransfer(f"HTTP {status}", headers.get("Retry-After"))
        if status != 201:
            raise self._status_error(destination, status, error_body)
        announced = _announced_digest(destination, headers)
        if announced and announced != blob.digest:
            raise DigestMismatchError(
                str(destination), f"the registry stored blob {blob.digest} as {announced}"
            )

    @staticmethod
    def _raise_stream_error(state: _StreamState) -> None:
        error = state.error
        if error is None:
            return
        if isinstance(error, RegistryError):
            raise error
        if isinstance(error, _TRANSPORT_ERRORS):
            raise _RetryTransfer(transport_fault("the source registry", error, 1))
        raise error

    async def _verified_chunks(
        self,
        source: Reference,
        response: Response,
        blob: Descriptor,
        state: _StreamState,
        on_bytes: Callable[[int], None] | None,
    ) -> AsyncIterator[bytes]:
        """The source body in chunks, hashed on the way; the last chunk is sent only once
        the size and digest are right, so a wrong blob never completes an upload."""
        algorithm = blob.digest.split(":", 1)[0]
        try:
            hasher = hashlib.new(algorithm)
        except ValueError:
            state.error = ProtocolError(str(source), f"unsupported digest {blob.digest}")
            raise state.error from None
        held: bytes | None = None
        received = 0
        try:
            # As sent: a blob is stored as it is, whatever Content-Encoding is claimed.
            async for chunk in response.iter_raw(CHUNK_BYTES):
                received += len(chunk)
                if received > blob.size:
                    raise DigestMismatchError(
                        str(source), f"the blob {blob.digest} is longer than its {blob.size} bytes"
                    )
                hasher.update(chunk)
                if held is not None:
                    yield held
                    self._sent(state, len(held), on_bytes)
                held = chunk
            actual = f"{algorithm}:{hasher.hexdigest()}"
            if received != blob.size or actual != blob.digest:
                raise DigestMismatchError(
                    str(source),
                    f"the blob {blob.digest} does not match its digest "
                    f"(got {received} bytes, {actual}); the upload was abandoned",
                )
        except Exception as error:  # not a cancellation: the request is being abandoned
            state.error = error
            raise
        if held is not None:
            yield held
            self._sent(state, len(held), on_bytes)

    def _sent(self, state: _StreamState, size: int, on_bytes: Callable[[int], None] | None) -> None:
        state.sent += size
        self.bytes_uploaded += size
        if on_bytes is not None:
            on_bytes(size)

    async def _cancel_upload(self, destination: Reference, location: str) -> None:
        """Best effort: tell the registry to drop an abandoned upload session."""
        with contextlib.suppress(Exception):
            host_auth, _ = await self._prepare(
                destination, scope_for(destination.repository, "pull,push")
            )
            headers = self._headers(
                destination, location, host_auth, scope_for(destination.repository, "pull,push"), {}
            )
            await self._send(
                destination,
                "DELETE",
                location,
                headers,
                MAX_ERROR_BYTES,
                self.settings.max_attempts,
            )

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

    def _semaphore_for(self, host: str) -> asyncio.Semaphore:
        semaphore = self._semaphores.get(host)
        if semaphore is None:
            semaphore = self._semaphores[host] = asyncio.Semaphore(self.settings.max_concurrency)
        return semaphore

    async def _get(self, ref: Reference, path: str, accept: str, max_bytes: int) -> _Fetched:
        return await self._call(
            ref,
            "GET",
            self._url(ref, path),
            scope=scope_for(ref.repository),
            headers={"Accept": accept},
            max_bytes=max_bytes,
        )

    async def _prepare(self, ref: Reference, scope: str) -> tuple[_HostAuth, bool]:
        """The host's auth state; authorizes ahead when the host is known to challenge."""
        host_auth = self._auth.setdefault(ref.api_host, _HostAuth())
        if host_auth.challenge_header and not self._cached_header(host_auth, scope):
            await self._authorize(ref, host_auth, scope)
            return host_auth, True
        return host_auth, False

    def _headers(
        self,
        ref: Reference,
        url: str,
        host_auth: _HostAuth,
        scope: str,
        extra: Mapping[str, str],
    ) -> dict[str, str]:
        headers = dict(extra)
        cached = self._cached_header(host_auth, scope)
        if cached and same_origin(url, ref.api_host):
            headers["Authorization"] = cached
        return headers

    async def _next_step(
        self,
        ref: Reference,
        host_auth: _HostAuth,
        scope: str,
        status: int,
        headers: Mapping[str, str],
        attempt: int,
        authenticated: bool,
        attempts: int,
        sent: str | None,
    ) -> str:
        """After a non-final answer: "auth" (challenge met, send again), "retry" (after
        the backoff it slept) or "fail". `sent` is the Authorization the request carried:
        when another request has meanwhile got a newer one for the scope, that is used
        rather than asking the token service again."""
        if status == 401 and not authenticated:
            host_auth.challenge_header = headers.get("WWW-Authenticate", "")
            current = self._cached_header(host_auth, scope)
            if current is None or current == sent:
                host_auth.headers.pop(scope, None)
                await self._authorize(ref, host_auth, scope)
            return "auth"
        if status in RETRY_STATUSES and attempt < attempts:
            await asyncio.sleep(
                retry_delay(
                    attempt,
                    headers.get("Retry-After"),
                    self.settings.backoff_base,
                    self.settings.backoff_cap,
                )
            )
            return "retry"
        return "fail"

    async def _call(
        self,
        ref: Reference,
        method: str,
        url: str,
        *,
        scope: str,
        headers: Mapping[str, str],
        data: bytes | None = None,
        final: Collection[int] = (200,),
        max_bytes: int = MAX_MANIFEST_BYTES,
    ) -> _Fetched:
        """One request with a buffered body, retried and authenticated as needed; returns
        when the status is in `final`, raises a `RegistryError` otherwise."""
        host_auth, authenticated = await self._prepare(ref, scope)
        deadline = self._deadline()
        attempt = 0
        while True:
            attempt += 1
            request_headers = self._headers(ref, url, host_auth, scope, headers)
            fetched = await self._send(
                ref,
                method,
                url,
                request_headers,
                max_bytes,
                attempt,
                data=data,
                deadline=deadline,
            )
            if fetched is None:
                continue  # retried after a dropped connection
            if fetched.status in final:
                return fetched
            step = await self._next_step(
                ref,
                host_auth,
                scope,
                fetched.status,
                fetched.headers,
                attempt,
                authenticated,
                self.settings.max_attempts,
                request_headers.get("Authorization"),
            )
            if step == "auth":
                authenticated = True
                attempt -= 1  # a challenge is not a failure
            elif step == "fail":
                raise self._status_error(ref, fetched.status, fetched.body)
            # The server answered (and set the pace): the request's own time starts over;
            # a reference's budget, when there is one, still holds.
            deadline = self._deadline()

    @asynccontextmanager
    async def _exchange(
        self,
        ref: Reference,
        method: str,
        url: str,
        *,
        scope: str,
        headers: Mapping[str, str],
        data: AsyncIterator[bytes] | bytes | None = None,
        final: Collection[int],
        attempts: int | None = None,
    ) -> AsyncIterator[Response]:
        """A request whose response body the caller streams. Retried (before any body is
        handed over) like `_call`; the host's concurrency slot is held until the caller
        is done. A streamed request body (an iterator) is sent once: pass `attempts=1`."""
        http = self._require_http()
        host_auth, authenticated = await self._prepare(ref, scope)
        limit = attempts or self.settings.max_attempts
        deadline = self._deadline()
        attempt = 0
        while True:
            attempt += 1
            handed_over = False
            answer: tuple[int, Mapping[str, str], bytes] | None = None
            request_headers = self._headers(ref, url, host_auth, scope, headers)
            try:
                async with self._semaphore_for(ref.api_host):
                    self._count(method)
                    # The budget bounds the wait for an answer, not the body that follows,
                    # nor a streamed request body (a blob upload takes the time it takes;
                    # the response-head timeout starts at its end).
                    streamed = data is not None and not isinstance(data, bytes)
                    waiting = asyncio.timeout_at(None if streamed else deadline)
                    async with waiting:
                        opened = http.request(
                            method,
                            url,
                            headers=request_headers,
                            body=data,
                        )
                        response = await opened.__aenter__()
                        waiting.reschedule(None)
                    try:
                        if response.status in final:
                            handed_over = True
                            yield response
                            return
                        body = await self._read_error_body(response)
                        answer = (response.status, response.headers, body)
                    finally:
                        await opened.__aexit__(None, None, None)
            except _TRANSPORT_ERRORS as error:
                if handed_over:
                    raise
                if isinstance(error, TimeoutError) and waiting.expired():
                    error = self._out_of_time(ref, deadline)
                if attempt >= limit:
                    raise self._unreachable(ref, error, attempt) from None
                await self._backoff(ref, error, attempt, deadline)
                continue
            status, answer_headers, body = answer
            step = await self._next_step(
                ref,
                host_auth,
                scope,
                status,
                answer_headers,
                attempt,
                authenticated,
                limit,
                request_headers.get("Authorization"),
            )
            if step == "auth" and attempts is None:
                authenticated = True
                attempt -= 1
            elif step != "retry":
                raise self._status_error(ref, status, body)
            deadline = self._deadline()  # answered: as in `_call`

    def _require_http(self) -> HttpClient:
        assert self._http is not None, "use RegistryClient as an async context manager"
        return self._http

    def _count(self, method: str) -> None:
        self.requests_sent += 1
        self.requests_by_method[method] += 1

    def _status_error(self, ref: Reference, status: int, body: bytes) -> RegistryError:
        """The one place a registry's refusal becomes a sentence: its HTTP status and
        error code, never its free text nor any header it sent."""
        code = registry_error_code(body)
        if status == 404:
            return NotFoundError(str(ref), messages.registry_not_found(status, code))
        if status in (401, 403):
            if self._credentials.get(ref.registry) is not None:
                return AuthenticationError(
                    str(ref), messages.registry_refused_credentials(status, code)
                )
            return AuthenticationError(str(ref), messages.registry_needs_credentials(status, code))
        if status in RETRY_STATUSES:
            return UnreachableError(
                str(ref), messages.registry_kept_failing(status, code, self.settings.max_attempts)
            )
        return ProtocolError(str(ref), messages.registry_unexpected_status(status, code))

    @staticmethod
    def _cached_header(host_auth: _HostAuth, scope: str) -> str | None:
        entry = host_auth.headers.get(scope)
        if entry and entry[1] > time.monotonic():
            return entry[0]
        return None

    async def _authorize(self, ref: Reference, host_auth: _HostAuth, scope: str) -> None:
        """Get an Authorization header for `scope` into the host's cache. One token request
        per scope at a time: concurrent callers await the one under way (a burst of reads
        of one repository asks the token service once). A failed one is not kept: its
        waiters get its error (about their own reference), the next caller asks again."""
        pending = host_auth.pending.get(scope)
        if pending is None:
            pending = asyncio.ensure_future(self._fetch_authorization(ref, host_auth, scope))
            host_auth.pending[scope] = pending

            def forget(done: asyncio.Future[None]) -> None:
                if host_auth.pending.get(scope) is done:
                    del host_auth.pending[scope]
                if not done.cancelled():
                    done.exception()  # retrieved: each waiter re-raises it for itself

            pending.add_done_callback(forget)
        try:
            await asyncio.shield(pending)
        except RegistryError as error:
            if error.reference == str(ref):
                raise
            raise type(error)(str(ref), error.message) from None

    async def _fetch_authorization(self, ref: Reference, host_auth: _HostAuth, scope: str) -> None:
        challenge = parse_challenge(host_auth.challenge_header or "")
        if challenge is None:
            raise AuthenticationError(str(ref), "the registry refused access without a challenge")
        credentials = self._credentials_for(ref)
        insecure = self.settings.insecure_registries
        flow = authorization_flow(
            challenge,
            scope,
            credentials,
            realm_allowed=lambda realm: realm_may_carry_credentials(realm, ref.api_host, insecure),
        )
        try:
            token_request = next(flow)
            while True:
                fetched = await self._send(
                    ref,
                    "GET",
                    token_request.url,
                    token_request.headers,
                    MAX_MANIFEST_BYTES,
                    self.settings.max_attempts,
                    deadline=self._deadline(),
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
        *,
        data: bytes | None = None,
        deadline: float | None = None,
    ) -> _Fetched | None:
        """One HTTP exchange, whole by `deadline`. None means the transport failed and a
        retry is due (after the backoff it slept)."""
        http = self._require_http()
        deadline = self._deadline() if deadline is None else deadline
        whole = asyncio.timeout_at(deadline)
        try:
            async with self._semaphore_for(ref.api_host), whole:
                self._count(method)
                async with http.request(method, url, headers=headers, body=data) as response:
                    if method == "HEAD":
                        body = b""
                    elif response.status >= 300:
                        body = await self._read_error_body(response)
                    else:
                        body = await self._read_limited(ref, response, max_bytes)
                    return _Fetched(response.status, response.headers, body)
        except _TRANSPORT_ERRORS as error:
            if isinstance(error, TimeoutError) and whole.expired():
                error = self._out_of_time(ref, deadline)
            await self._backoff(ref, error, attempt, deadline)
            return None

    @staticmethod
    async def _read_error_body(response: Response) -> bytes:
        """At most MAX_ERROR_BYTES of a body that is only read for its error detail."""
        chunks = []
        total = 0
        async for chunk in response.iter_chunks(65536):
            chunks.append(chunk[: MAX_ERROR_BYTES - total])
            total += len(chunk)
            if total >= MAX_ERROR_BYTES:
                break
        return b"".join(chunks)

    @staticmethod
    async def _read_limited(ref: Reference, response: Response, max_bytes: int) -> bytes:
        if response.content_length is not None and response.content_length > max_bytes:
            raise ProtocolError(
                str(ref), f"the registry sent {response.content_length} bytes, over the limit"
            )
        chunks = []
        total = 0
        async for chunk in response.iter_chunks(65536):
            total += len(chunk)
            if total > max_bytes:
                raise ProtocolError(str(ref), "the registry sent more bytes than the limit")
            chunks.append(chunk)
        return b"".join(chunks)

    # -- public API: tag lists (appended for the component card; kept self-contained)

    async def tags(
        self, ref: Reference, *, page_size: int = 1000, max_pages: int = 20
    ) -> list[str]:
        """Every tag of `ref`'s repository (`/v2/<name>/tags/list`), page after page as
        the registry's `Link: <...>; rel="next"` header leads, at most `max_pages` pages.
        A next page on another origin is not followed (the credentials stay home)."""
        url: str | None = self._url(ref, f"/v2/{ref.repository}/tags/list?n={page_size}")
        found: list[str] = []
        pages = 0
        while url is not None and pages < max_pages:
            pages += 1
            fetched = await self._call(
                ref,
                "GET",
                url,
                scope=scope_for(ref.repository),
                headers={"Accept": "application/json"},
                max_bytes=MAX_MANIFEST_BYTES,
            )
            try:
                data = json.loads(fetched.body)
            except ValueError:
                raise ProtocolError(str(ref), "the tag list is not JSON") from None
            listed = data.get("tags") if isinstance(data, dict) else None
            if listed is not None and not (
                isinstance(listed, list) and all(isinstance(t, str) for t in listed)
            ):
                raise ProtocolError(str(ref), "the tag list is not a list of tags")
            found.extend(listed or [])
            url = _next_page(url, fetched.headers, ref.api_host)
        return found


def _next_page(url: str, headers: Mapping[str, str], api_host: str) -> str | None:
    """The `rel="next"` target of a tag list page's Link header (parsed by httpx), made
    absolute; None on the last page or when it leaves the registry's origin."""
    import httpx  # the Link grammar is httpx's; imported here, on the tag-list path only

    link = headers.get("Link") or headers.get("link")
    if not link:
        return None
    links = httpx.Response(200, headers=[("Link", link)], request=httpx.Request("GET", url)).links
    target = links.get("next", {}).get("url")
    if not target:
        return None
    absolute = urljoin(url, target)
    same_scheme = urlsplit(absolute).scheme == urlsplit(url).scheme
    return absolute if same_scheme and same_origin(absolute, api_host) else None
