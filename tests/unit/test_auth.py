"""The authentication flow as a pure generator, and registry helper rules."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import overload

import pytest

from jobs.domain.references import InvalidReferenceError
from jobs.registry.auth import (
    AuthFlowError,
    Authorization,
    Challenge,
    TokenRequest,
    TokenResponse,
    authorization_flow,
    parse_challenge,
)
from jobs.registry.client import (
    is_loopback_host,
    parse_insecure_registries,
    retry_delay,
    scheme_for,
)
from jobs.registry.credentials import Credentials

CREDS = Credentials("alice", "s3cret-pass")


def test_parse_bearer_challenge() -> None:
    c = parse_challenge(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:aibrix/runtime:pull"'
    )
    assert c == Challenge(
        "bearer",
        {
            "realm": "https://auth.docker.io/token",
            "service": "registry.docker.io",
            "scope": "repository:aibrix/runtime:pull",
        },
    )
    assert parse_challenge('Basic realm="lab"') == Challenge("basic", {"realm": "lab"})


@overload
def run_flow(
    challenge: Challenge, creds: Credentials | None, response: None = None
) -> tuple[None, Authorization]: ...


@overload
def run_flow(
    challenge: Challenge, creds: Credentials | None, response: TokenResponse
) -> tuple[TokenRequest, Authorization]: ...


def run_flow(
    challenge: Challenge, creds: Credentials | None, response: TokenResponse | None = None
) -> tuple[TokenRequest | None, Authorization]:
    """The flow run to its end: the token request it made (none without `response`)."""
    flow = authorization_flow(challenge, "repository:a/b:pull", creds)
    try:
        request = next(flow)
    except StopIteration as done:
        return None, done.value
    assert response is not None
    try:
        flow.send(response)
    except StopIteration as done:
        return request, done.value
    raise AssertionError("flow did not finish")


def test_bearer_anonymous() -> None:
    c = Challenge("bearer", {"realm": "https://auth.example/token", "service": "reg"})
    request, auth = run_flow(
        c, None, TokenResponse(200, json.dumps({"token": "T", "expires_in": 300}).encode())
    )
    assert request.url == "https://auth.example/token?scope=repository%3Aa%2Fb%3Apull&service=reg"
    assert "Authorization" not in request.headers
    assert auth.header == "Bearer T" and auth.lifetime == 300


def test_bearer_with_credentials_and_access_token() -> None:
    c = Challenge("bearer", {"realm": "https://auth.example/token?x=1"})
    request, auth = run_flow(c, CREDS, TokenResponse(200, b'{"access_token": "A"}'))
    assert request.url.startswith("https://auth.example/token?x=1&scope=")
    assert (
        request.headers["Authorization"]
        == "Basic " + base64.b64encode(b"alice:s3cret-pass").decode()
    )
    assert auth.header == "Bearer A" and auth.lifetime == 60


def test_basic() -> None:
    request, auth = run_flow(Challenge("basic", {"realm": "lab"}), CREDS)
    assert request is None
    assert auth.header.startswith("Basic ")


@pytest.mark.parametrize(
    ("challenge", "creds", "response", "fragment"),
    [
        (Challenge("basic", {}), None, None, "user name and password"),
        (Challenge("negotiate", {}), CREDS, None, "unsupported"),
        (Challenge("bearer", {}), CREDS, None, "realm"),
        (Challenge("bearer", {"realm": "https://a/t"}), CREDS, TokenResponse(401, b""), "refused"),
        (Challenge("bearer", {"realm": "https://a/t"}), CREDS, TokenResponse(500, b""), "HTTP 500"),
        (
            Challenge("bearer", {"realm": "https://a/t"}),
            CREDS,
            TokenResponse(200, b"<html>"),
            "JSON",
        ),
        (
            Challenge("bearer", {"realm": "https://a/t"}),
            CREDS,
            TokenResponse(200, b"{}"),
            "without a token",
        ),
    ],
)
def test_flow_errors_never_show_secrets(challenge, creds, response, fragment) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(AuthFlowError) as error:
        run_flow(challenge, creds, response)
    assert fragment in str(error.value)
    assert "s3cret-pass" not in str(error.value)


def test_credentials_repr_hides_secret() -> None:
    assert "s3cret-pass" not in repr(CREDS) and "s3cret-pass" not in str(CREDS)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("localhost:5000", True),
        ("127.0.0.1", True),
        ("127.9.9.9:80", True),
        ("[::1]:5000", True),
        ("[::1]", True),
        ("10.0.0.1:5000", False),
        ("ghcr.io", False),
        ("localhost.example.com", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback
    assert scheme_for(host, frozenset()) == ("http" if loopback else "https")


def test_insecure_registries() -> None:
    insecure = parse_insecure_registries(["reg.lan:5000", "a.lan,b.lan"])
    assert insecure == {"reg.lan:5000", "a.lan", "b.lan"}
    assert scheme_for("reg.lan:5000", insecure) == "http"
    assert scheme_for("reg.lan:6000", insecure) == "https"
    assert scheme_for("a.lan:443", insecure) == "http"
    with pytest.raises(InvalidReferenceError):
        parse_insecure_registries(["bad host"])


def test_retry_delay() -> None:
    assert retry_delay(1, "3", 0.2, 5.0) == 3.0
    assert retry_delay(1, "1000", 0.2, 5.0) == 20.0  # capped
    future = format_datetime(datetime.now(UTC) + timedelta(seconds=4), usegmt=True)
    assert 2.0 <= retry_delay(1, future, 0.2, 5.0) <= 4.0
    for attempt in range(1, 12):
        d = retry_delay(attempt, None, 0.2, 5.0)
        expected = min(5.0, 0.2 * 2 ** (attempt - 1))
        assert expected / 2 <= d <= expected
