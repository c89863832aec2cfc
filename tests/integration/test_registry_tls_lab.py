"""The registry client over TLS, against a real distribution registry serving HTTPS.

Every registry a release engineer uses is HTTPS; the lab's are plain HTTP on loopback.
Here a registry serves TLS with a certificate from a CA made for the test, on one of this
host's non-loopback addresses (loopback registries are spoken to in plain HTTP, as
Docker does), behind htpasswd: sync writes to it (streamed uploads over TLS), inspect
reads it back, and a certificate the client does not trust is refused with a clear
error and nothing written."""

from __future__ import annotations

import ipaddress
import json
import shutil
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import Lab, service_missing
from tests.support.oci_push import OciPusher
from tests.support.sync import VERSION, craft_component, run_bot, write_docker_config


@dataclass(frozen=True)
class TlsRegistry:
    host: str  # host:port
    ca_file: Path


def non_loopback_address() -> str:
    """An IPv4 address of this host that is not loopback, so the client chooses HTTPS."""
    out = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
    for candidate in out:
        try:
            address = ipaddress.ip_address(candidate)
        except ValueError:
            continue
        if address.version == 4 and not address.is_loopback:
            return candidate
    service_missing(
        "this host has no non-loopback IPv4 address to serve TLS on",
        hint="the TLS registry needs an address other than loopback",
    )


def free_port(address: str) -> int:
    with socket.socket() as probe:
        probe.bind((address, 0))
        port: int = probe.getsockname()[1]
        return port


def openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def make_certificates(directory: Path, address: str) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate it signs for `address` (subjectAltName IP)."""
    ca_key, ca_cert = directory / "ca.key", directory / "ca.pem"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.pem"
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key),
            "-out", str(ca_cert), "-days", "2", "-subj", "/CN=aibrix test CA")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
            "-subj", f"/CN={address}")  # fmt: skip
    extensions = directory / "san.cnf"
    extensions.write_text(f"subjectAltName = IP:{address}\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
            "-CAcreateserial", "-out", str(cert), "-days", "2",
            "-extfile", str(extensions))  # fmt: skip
    return ca_cert, cert, key


def tls_answers(host: str, ca_file: Path) -> bool:
    address, _, port = host.rpartition(":")
    context = ssl.create_default_context(cafile=str(ca_file))
    try:
        with (
            socket.create_connection((address, int(port)), timeout=1) as raw,
            context.wrap_socket(raw, server_hostname=address),
        ):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def tls_registry(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRegistry]:
    if shutil.which("docker-registry") is None or shutil.which("openssl") is None:
        service_missing(
            "docker-registry or openssl is not installed", hint="scripts/lab up installs them"
        )
    directory = tmp_path_factory.mktemp("tls-registry")
    address = non_loopback_address()
    host = f"{address}:{free_port(address)}"
    ca_file, cert, key = make_certificates(directory, address)
    config = directory / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log: {level: warn}\n"
        f"storage: {{filesystem: {{rootdirectory: {directory / 'data'}}}, delete: {{enabled: true}}}}\n"
        f"http: {{addr: '{host}', tls: {{certificate: {cert}, key: {key}}}}}\n"
        f"auth: {{htpasswd: {{realm: aibrix-tls, path: {lab.dir / 'htpasswd'}}}}}\n"
    )
    log = (directory / "registry.log").open("wb")
    server = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 20
        while not tls_answers(host, ca_file):
            assert server.poll() is None, (directory / "registry.log").read_text()
            assert time.monotonic() < deadline, "the TLS registry did not come up"
            time.sleep(0.2)
        yield TlsRegistry(host, ca_file)
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()


def sync_config(directory: Path, source: str, mirror: str) -> Path:
    path = directory / f"aibrix-{uuid.uuid4().hex[:6]}.toml"
    path.write_text(
        f'repository = "{source}"\n[source]\npath = "{directory}"\n'
        f'[mirrors]\ntls = "{mirror}"\n[[components]]\nname = "runtime"\n'
    )
    return path


async def test_sync_and_inspect_over_tls(
    lab: Lab, tls_registry: TlsRegistry, tmp_path: Path
) -> None:
    namespace = f"tls-{uuid.uuid4().hex[:8]}"
    async with aiohttp.ClientSession() as session:
        # Two platforms with attestations; a 3 MB layer, so uploads span many TLS records.
        source = await craft_component(
            OciPusher(lab.registry), session, f"{namespace}/runtime", layer_bytes=3 << 20
        )
    config = sync_config(
        tmp_path, f"{lab.registry}/{namespace}", f"{tls_registry.host}/{namespace}"
    )
    credentials = write_docker_config(
        tmp_path / "docker", {tls_registry.host: (lab.auth_user, lab.auth_password)}
    )
    env = {"DOCKER_CONFIG": str(credentials), "SSL_CERT_FILE": str(tls_registry.ca_file)}

    synced = await run_bot(
        "sync", VERSION, "--to", "tls", "--config", str(config), "--json", env=env
    )
    assert synced.code == 0, synced.stdout + synced.stderr
    (mirror,) = synced.json["mirrors"]
    (item,) = mirror["components"]
    assert item["status"] == "copied" and item["final_digest"] == source.digest

    shown = await run_bot(
        "inspect", "--json", f"{tls_registry.host}/{namespace}/runtime:{VERSION}", env=env
    )
    assert shown.code == 0, shown.stdout + shown.stderr
    (report,) = json.loads(shown.stdout)
    assert report["verdict"] == "ok" and report["digest"] == source.digest
    assert {p["platform"] for p in report["platforms"]} == {"linux/amd64", "linux/arm64"}

    again = await run_bot(
        "sync", VERSION, "--to", "tls", "--config", str(config), "--json", env=env
    )
    assert again.code == 0, again.stdout + again.stderr
    assert again.json["mirrors"][0]["components"][0]["status"] == "up-to-date"


async def test_a_certificate_nobody_trusts_is_refused_and_nothing_is_written(
    lab: Lab, tls_registry: TlsRegistry, tmp_path: Path
) -> None:
    namespace = f"tls-{uuid.uuid4().hex[:8]}"
    async with aiohttp.ClientSession() as session:
        await craft_component(OciPusher(lab.registry), session, f"{namespace}/runtime")
    config = sync_config(
        tmp_path, f"{lab.registry}/{namespace}", f"{tls_registry.host}/{namespace}"
    )
    password = lab.auth_password
    credentials = write_docker_config(
        tmp_path / "docker", {tls_registry.host: (lab.auth_user, password)}
    )
    # The system's CA bundle, without the test CA.
    system_bundle = ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt"
    env = {"DOCKER_CONFIG": str(credentials), "SSL_CERT_FILE": system_bundle}
    refused = await run_bot("sync", VERSION, "--to", "tls", "--config", str(config), env=env)
    assert refused.code != 0
    said = refused.stdout + refused.stderr
    assert "certificate" in said.lower(), said
    assert "Traceback" not in said and password not in said

    # Nothing arrived: read with the right CA, the tag is not there.
    trusted = {**env, "SSL_CERT_FILE": str(tls_registry.ca_file)}
    shown = await run_bot(
        "inspect", "--json", f"{tls_registry.host}/{namespace}/runtime:{VERSION}", env=trusted
    )
    assert shown.code != 0
    (report,) = json.loads(shown.stdout)
    assert report["verdict"] != "ok"


async def test_an_unreachable_proxy_is_named_without_its_credentials(lab: Lab) -> None:
    address = non_loopback_address()
    closed = f"{address}:{free_port(address)}"  # nothing listens there
    no_proxy = {
        name: ""
        for name in (
            "HTTPS_PROXY",
            "https_proxy",
            "HTTP_PROXY",
            "http_proxy",
            "NO_PROXY",
            "no_proxy",
        )
    }
    direct = await run_bot("inspect", f"{closed}/aibrix/runtime:v1.0.0", env=no_proxy)
    assert direct.code == 3, direct.stdout + direct.stderr
    assert f"cannot reach {closed}" in direct.stdout and "proxy" not in direct.stdout.lower()

    # The request goes to the proxy (which does not exist): the sentence says which proxy,
    # by scheme, host and port, and which variable named it, never the password.
    proxied = {**no_proxy, "HTTPS_PROXY": "http://builder:s3cret-proxy-pass@proxy.invalid:3128"}
    said = await run_bot("inspect", f"{closed}/aibrix/runtime:v1.0.0", env=proxied)
    assert said.code == 3
    # Through a proxy, the proxy is the only host connected to: it is the one named.
    assert (
        f"{closed}/aibrix/runtime:v1.0.0 cannot be read: cannot reach the proxy "
        "http://proxy.invalid:3128 (from HTTPS_PROXY): the name does not resolve ("
    ) in said.stdout, said.stdout
    assert "s3cret-proxy-pass" not in said.stdout + said.stderr
    assert "builder" not in said.stdout + said.stderr
