"""Registry credentials from the standard docker config, as the docker CLI finds them.

Lookup order for a registry host: `credHelpers[host]`, then `credsStore`, then the
`auths` entry (`auth` = base64 "user:password", or `username`/`password`, or an
`identitytoken`). The config directory is `$DOCKER_CONFIG`, else `~/.docker`.
Secrets are held in `Credentials`, whose repr never shows them.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from jobs.domain.errors import Unavailable
from jobs.tools import process

DOCKER_HUB_CONFIG_KEY = "https://index.docker.io/v1/"
_HUB_HOSTS = {"docker.io", "index.docker.io", "registry-1.docker.io"}


class CredentialsError(Unavailable):
    """The docker config or a credential helper could not give credentials."""


@dataclass(frozen=True)
class Credentials:
    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, secret=<redacted>)"

    __str__ = __repr__


def config_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("DOCKER_CONFIG"):
        return Path(env["DOCKER_CONFIG"])
    return Path(env.get("HOME", str(Path.home()))) / ".docker"


def _normalize_key(key: str) -> str:
    """`https://host/v1/` and `host` name the same registry in `auths`."""
    host = key.removeprefix("https://").removeprefix("http://").split("/", 1)[0]
    return "docker.io" if host in _HUB_HOSTS else host


def _config_host(registry: str) -> str:
    return "docker.io" if registry in _HUB_HOSTS else registry


def _helper_server(registry: str) -> str:
    return DOCKER_HUB_CONFIG_KEY if _config_host(registry) == "docker.io" else registry


def _from_auth_entry(entry: Mapping[str, object], where: str) -> Credentials | None:
    username = entry.get("username")
    password = entry.get("password")
    token = entry.get("identitytoken")
    auth = entry.get("auth")
    if isinstance(auth, str) and auth:
        try:
            decoded = base64.b64decode(auth, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise CredentialsError(
                f"{where}: the 'auth' value is not base64 of user:password"
            ) from None
        user, sep, secret = decoded.partition(":")
        if not sep:
            raise CredentialsError(f"{where}: the 'auth' value is not base64 of user:password")
        return Credentials(user, secret, token if isinstance(token, str) else "")
    if isinstance(username, str) and isinstance(password, str) and username:
        return Credentials(username, password)
    if isinstance(token, str) and token:
        return Credentials("", "", token)
    return None


def _run_helper(helper: str, registry: str) -> Credentials | None:
    command = [f"docker-credential-{helper}", "get"]
    try:
        result = process.run(command, input_text=_helper_server(registry), timeout=30, check=False)
    except process.CommandError as error:
        raise CredentialsError(
            f"credential helper docker-credential-{helper} could not run for {registry} "
            f"(exit {error.returncode})"
        ) from None
    # Helpers say "credentials not found" on stdout with exit 1 when they have none.
    if "credentials not found" in (result.stdout + result.stderr).lower():
        return None
    if result.returncode != 0:
        # The helper's output can echo what it was given; report only the exit status.
        raise CredentialsError(
            f"credential helper docker-credential-{helper} failed for {registry} "
            f"(exit {result.returncode})"
        )
    try:
        data = json.loads(result.stdout)
    except json.JSONDecodeError:
        raise CredentialsError(
            f"credential helper docker-credential-{helper} gave no JSON for {registry}"
        ) from None
    username = str(data.get("Username", ""))
    secret = str(data.get("Secret", ""))
    if username == "<token>":
        return Credentials("", "", secret)
    return Credentials(username, secret)


@dataclass(frozen=True)
class DockerConfig:
    """The parsed docker config file; `lookup` gives credentials for a registry host."""

    path: Path | None
    auths: Mapping[str, Mapping[str, object]]
    creds_store: str
    cred_helpers: Mapping[str, str]

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None) -> DockerConfig:
        path = config_dir(env) / "config.json"
        if not path.exists():
            return cls(None, {}, "", {})
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise CredentialsError(
                f"{path}: not a readable docker config ({type(error).__name__})"
            ) from None
        if not isinstance(data, dict):
            raise CredentialsError(f"{path}: not a JSON object")
        auths_raw = data.get("auths", {})
        helpers_raw = data.get("credHelpers", {})
        store = data.get("credsStore", "")
        if (
            not isinstance(auths_raw, dict)
            or not isinstance(helpers_raw, dict)
            or not isinstance(store, str)
        ):
            raise CredentialsError(
                f"{path}: 'auths', 'credHelpers' or 'credsStore' has the wrong type"
            )
        auths = {_normalize_key(k): v for k, v in auths_raw.items() if isinstance(v, dict)}
        helpers = {_normalize_key(k): str(v) for k, v in helpers_raw.items()}
        return cls(path, auths, store, helpers)

    def lookup(self, registry: str) -> Credentials | None:
        host = _config_host(registry)
        helper = self.cred_helpers.get(host)
        if helper:
            return _run_helper(helper, registry)
        if self.creds_store:
            found = _run_helper(self.creds_store, registry)
            if found is not None:
                return found
        entry = self.auths.get(host)
        if entry is None:
            return None
        return _from_auth_entry(entry, f"{self.path}: auths[{host!r}]")
