"""Docker config lookup: auths, credHelpers, credsStore, DOCKER_CONFIG."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from jobs.registry.credentials import Credentials, CredentialsError, DockerConfig, config_dir


def write(tmp: Path, data: object) -> dict[str, str]:
    (tmp / "config.json").write_text(json.dumps(data))
    return {"DOCKER_CONFIG": str(tmp), "HOME": "/nonexistent"}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_config_dir(tmp_path: Path) -> None:
    assert config_dir({"DOCKER_CONFIG": str(tmp_path)}) == tmp_path
    assert config_dir({"HOME": "/home/x"}) == Path("/home/x/.docker")


def test_auths_forms(tmp_path: Path) -> None:
    env = write(
        tmp_path,
        {
            "auths": {
                "https://index.docker.io/v1/": {"auth": b64("hub:pw1")},
                "ghcr.io": {"username": "gh", "password": "pw2"},
                "http://reg.lan:5000/v2/": {"auth": b64("lan:pw:with:colons")},
                "token.io": {"identitytoken": "tok"},
            }
        },
    )
    config = DockerConfig.load(env)
    assert config.lookup("docker.io") == Credentials("hub", "pw1")
    assert config.lookup("ghcr.io") == Credentials("gh", "pw2")
    assert config.lookup("reg.lan:5000") == Credentials("lan", "pw:with:colons")
    assert config.lookup("token.io") == Credentials("", "", "tok")
    assert config.lookup("other.io") is None


def test_missing_config_means_no_credentials(tmp_path: Path) -> None:
    assert DockerConfig.load({"DOCKER_CONFIG": str(tmp_path)}).lookup("ghcr.io") is None


@pytest.mark.parametrize("content", ["{not json", "[]", '{"auths": []}'])
def test_bad_config_is_a_clear_error(tmp_path: Path, content: str) -> None:
    (tmp_path / "config.json").write_text(content)
    with pytest.raises(CredentialsError) as error:
        DockerConfig.load({"DOCKER_CONFIG": str(tmp_path)})
    assert str(tmp_path) in str(error.value)


def test_bad_auth_value_does_not_leak(tmp_path: Path) -> None:
    env = write(tmp_path, {"auths": {"x.io": {"auth": b64("nocolon-secret")}}})
    with pytest.raises(CredentialsError) as error:
        DockerConfig.load(env).lookup("x.io")
    assert "nocolon-secret" not in str(error.value)


def helper(tmp_path: Path, name: str, body: str, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / f"docker-credential-{name}"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")


def test_cred_helper_and_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The helper receives the server on stdin, as the docker CLI sends it.
    helper(
        tmp_path,
        "per",
        'read -r s || true\necho "{\\"Username\\":\\"u-$s\\",\\"Secret\\":\\"p\\"}"\n',
        monkeypatch,
    )
    helper(
        tmp_path, "store", 'echo "credentials not found in native keychain"; exit 1\n', monkeypatch
    )
    env = write(
        tmp_path,
        {
            "credHelpers": {"ghcr.io": "per"},
            "credsStore": "store",
            "auths": {"x.io": {"auth": b64("a:b")}},
        },
    )
    config = DockerConfig.load(env)
    assert config.lookup("ghcr.io") == Credentials("u-ghcr.io", "p")
    assert config.lookup("x.io") == Credentials("a", "b")  # store has none: fall back to auths
    assert config.lookup("y.io") is None


def test_failing_helper_is_reported_without_its_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    helper(tmp_path, "bad", 'echo "leaked-secret" >&2; exit 3\n', monkeypatch)
    env = write(tmp_path, {"credHelpers": {"ghcr.io": "bad"}})
    with pytest.raises(CredentialsError) as error:
        DockerConfig.load(env).lookup("ghcr.io")
    assert "exit 3" in str(error.value)
    assert "leaked-secret" not in str(error.value)


def test_missing_helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    env = write(tmp_path, {"credHelpers": {"ghcr.io": "absent"}})
    with pytest.raises(CredentialsError) as error:
        DockerConfig.load(env).lookup("ghcr.io")
    assert "docker-credential-absent" in str(error.value)
