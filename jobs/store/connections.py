"""Redis connection settings and the one way to open a client.

The URL comes from the environment and carries a password: every repr, message and
error here shows it as `***`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import NoScriptError, RedisError

from jobs.domain.errors import InvalidInput, Unavailable
from jobs.store.keys import DEFAULT_PREFIX, Keys, check_prefix

_SCHEMES = {"redis": False, "rediss": True}


class RedisSettingsError(InvalidInput, ValueError):
    """A Redis URL or setting that cannot be used; the message never shows the password."""


class RedisConnectError(Unavailable, ConnectionError):
    """Redis did not answer (or refused us) when connecting."""


def redact_url(url: str) -> str:
    """`url` with any password replaced by `***`; also works on URLs that do not parse."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        # Not URL-shaped: we cannot tell a password from a host, so show nothing.
        return "<unparseable URL>"
    authority, slash, tail = rest.partition("/")
    if "@" not in authority:
        return url
    userinfo, _, hostport = authority.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    shown = f"{user}:***" if colon else "***"
    return f"{scheme}://{shown}@{hostport}{slash}{tail}"


@dataclass(frozen=True)
class RedisSettings:
    host: str = "localhost"
    port: int = 6379
    database: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssl: bool = False
    key_prefix: str = DEFAULT_PREFIX
    connect_timeout_s: float = 5.0
    # Must exceed the longest XREADGROUP BLOCK a worker asks for (see Queue.claim).
    socket_timeout_s: float = 30.0
    retries: int = 3
    max_connections: int | None = None

    def __post_init__(self) -> None:
        if not self.host:
            raise RedisSettingsError(f"Redis URL {self.dsn} has no host")
        if not 0 < self.port < 65536:
            raise RedisSettingsError(f"Redis port {self.port} is outside 1-65535")
        if self.database < 0:
            raise RedisSettingsError(f"Redis database {self.database} is negative")
        if self.connect_timeout_s <= 0 or self.socket_timeout_s <= 0:
            raise RedisSettingsError("Redis timeouts must be positive")
        if self.retries < 0:
            raise RedisSettingsError("Redis retries cannot be negative")
        try:
            check_prefix(self.key_prefix)
        except ValueError as error:
            raise RedisSettingsError(str(error)) from None

    @classmethod
    def from_dsn(
        cls,
        dsn: str,
        *,
        key_prefix: str = DEFAULT_PREFIX,
        connect_timeout_s: float = 5.0,
        socket_timeout_s: float = 30.0,
        retries: int = 3,
        max_connections: int | None = None,
    ) -> RedisSettings:
        """Settings from `redis://[user[:password]@]host[:port][/db]` (or `rediss://`)."""
        shown = redact_url(dsn)
        try:
            parts = urlsplit(dsn.strip())
            port = parts.port
        except ValueError as error:
            # urlsplit's message may quote the netloc, password included.
            raise RedisSettingsError(
                f"Redis URL {shown} does not parse: {type(error).__name__}"
            ) from None
        if parts.scheme not in _SCHEMES:
            raise RedisSettingsError(
                f"Redis URL {shown} must start with redis:// or rediss:// "
                f"(got {parts.scheme or 'no scheme'!r})"
            )
        if not parts.hostname:
            raise RedisSettingsError(f"Redis URL {shown} has no host")
        path = parts.path.strip("/")
        if path and not path.isdigit():
            raise RedisSettingsError(
                f"Redis URL {shown}: the path must be a database number such as /0"
            )
        if parts.query or parts.fragment:
            raise RedisSettingsError(
                f"Redis URL {shown}: query parameters are not supported; pass settings explicitly"
            )
        return cls(
            host=parts.hostname,
            port=port or 6379,
            database=int(path) if path else 0,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            ssl=_SCHEMES[parts.scheme],
            key_prefix=key_prefix,
            connect_timeout_s=connect_timeout_s,
            socket_timeout_s=socket_timeout_s,
            retries=retries,
            max_connections=max_connections,
        )

    @property
    def dsn(self) -> str:
        """The URL with the password shown as `***`: safe to log."""
        scheme = "rediss" if self.ssl else "redis"
        userinfo = self.username or ""
        if self.password is not None:
            userinfo += ":***"
        at = f"{userinfo}@" if userinfo else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{at}{host}:{self.port}/{self.database}"

    @property
    def keys(self) -> Keys:
        return Keys(self.key_prefix)

    def __str__(self) -> str:
        return self.dsn


def make_client(settings: RedisSettings) -> aioredis.Redis:
    """An asyncio client (str responses) for `settings` that connects on first use, so a
    server can start while Redis is still down."""
    return aioredis.Redis(
        host=settings.host,
        port=settings.port,
        db=settings.database,
        username=settings.username,
        password=settings.password,
        ssl=settings.ssl,
        socket_connect_timeout=settings.connect_timeout_s,
        socket_timeout=settings.socket_timeout_s,
        retry=Retry(ExponentialWithJitterBackoff(cap=1.0, base=0.05), settings.retries),
        max_connections=settings.max_connections,
        decode_responses=True,
        health_check_interval=30,
    )


async def connect(settings: RedisSettings) -> aioredis.Redis:
    """`make_client(settings)`, checked with a PING."""
    client = make_client(settings)
    try:
        await client.ping()
    except RedisError as error:
        await client.aclose()
        raise RedisConnectError(
            f"cannot use Redis at {settings.dsn}: {type(error).__name__}: {error}"
        ) from error
    return client


Arg = str | int | float


class Script:
    """A Lua script run by EVALSHA, loaded again when Redis has forgotten it (a restart).

    Unlike redis-py's registered scripts it adds no SCRIPT EXISTS round trip to each
    pipeline; `Batch` re-runs just the calls that met NOSCRIPT.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()

    async def __call__(
        self, redis: aioredis.Redis, keys: Sequence[str], args: Sequence[Arg] = ()
    ) -> Any:
        try:
            return await redis.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await redis.script_load(self.text)
            return await redis.evalsha(self.sha, len(keys), *keys, *args)


class Batch:
    """A non-transactional pipeline of commands and scripts: one round trip.

    Queue plain commands on `.pipe`, scripts with `.script(...)`. A script call that fails
    with NOSCRIPT had no effect, so it alone is run again after loading the script.
    """

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self.pipe: Pipeline = redis.pipeline(transaction=False)
        self._scripts: dict[int, tuple[Script, Sequence[str], Sequence[Arg]]] = {}

    def script(self, script: Script, keys: Sequence[str], args: Sequence[Arg] = ()) -> None:
        self._scripts[len(self.pipe.command_stack)] = (script, keys, args)
        self.pipe.evalsha(script.sha, len(keys), *keys, *args)

    async def execute(self) -> list[Any]:
        # execute() resets the pipeline whatever happens.
        results: list[Any] = await self.pipe.execute(raise_on_error=False)
        for index, result in enumerate(results):
            if isinstance(result, NoScriptError) and index in self._scripts:
                script, keys, args = self._scripts[index]
                results[index] = await script(self.redis, keys, args)
        for result in results:
            if isinstance(result, Exception):
                raise result
        self._scripts = {}
        return results
