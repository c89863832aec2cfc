"""A registry reachable only through a real HTTP proxy (tinyproxy), for the proxy tests.

A network namespace of its own holds, on its own loopback, two distribution registries
named `registry.proxy-only.test` (one plain HTTP, one TLS with htpasswd, its certificate
from a CA made here), and tinyproxy listening on the namespace's end of a veth pair
(10.201.X.2). `/etc/netns/NAME/hosts` maps the name to 127.0.0.1 inside the namespace
only (`ip netns exec` bind-mounts it over /etc/hosts there). From this host the name does
not resolve and the namespace's loopback cannot be reached at all: a request gets there
through the proxy or not at all.

Needs root (`ip netns`), `ip`, `tinyproxy`, `docker-registry`, `openssl`, `htpasswd` and
`curl`; without them the fixture goes through `service_missing` (a skip that says why,
a failure in CI). Everything it makes (namespace, veth, processes, /etc/netns/NAME, the
temporary directory) is removed at teardown, failed test or not; names are unique per run.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import service_missing

NAME = "registry.proxy-only.test"
PLAIN_PORT = 5120  # inside the namespace: ports of this helper's range
TLS_PORT = 5121
PROXY_PORT = 8880
TOOLS = ("ip", "tinyproxy", "docker-registry", "openssl", "htpasswd", "curl")


@dataclass(frozen=True)
class ProxyRig:
    namespace: str
    proxy_url: str  # http://10.201.X.2:PORT
    plain_host: str  # registry.proxy-only.test:5120, plain HTTP
    tls_host: str  # registry.proxy-only.test:5121, TLS and htpasswd
    ca_file: Path
    user: str
    password: str
    proxy_log: Path

    def log_text(self) -> str:
        return self.proxy_log.read_text(errors="replace") if self.proxy_log.exists() else ""


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60)


def _must(*args: str) -> str:
    result = _run(*args)
    assert result.returncode == 0, f"{' '.join(args)}: {result.stderr.strip()}"
    return result.stdout


def _free_subnet() -> int:
    """A 10.201.X.0/24 that no interface or route here uses (other runs may hold some)."""
    taken = _run("ip", "-4", "route", "show").stdout + _run("ip", "-4", "addr").stdout
    for _ in range(64):
        x = secrets.randbelow(250) + 2
        if f"10.201.{x}." not in taken:
            return x
    raise AssertionError("no free 10.201.X.0/24 subnet for the proxy rig")


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    ca_key, ca = directory / "ca.key", directory / "ca.pem"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.pem"
    _must("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key),
          "-out", str(ca), "-days", "2", "-subj", "/CN=aibrix proxy-test CA")  # fmt: skip
    _must("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
          "-out", str(csr), "-subj", f"/CN={NAME}")  # fmt: skip
    san = directory / "san.cnf"
    san.write_text(f"subjectAltName = DNS:{NAME}\n")
    _must("openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
          "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(san))  # fmt: skip
    return ca, cert, key


def _registry_config(directory: Path, port: int, tls: tuple[Path, Path] | None,
                     htpasswd: Path | None) -> Path:  # fmt: skip
    """Like scripts/lab's registry configs, on the namespace's loopback."""
    http = f"addr: '127.0.0.1:{port}'"
    if tls is not None:
        http += f", tls: {{certificate: {tls[0]}, key: {tls[1]}}}"
    text = (
        "version: 0.1\n"
        "log: {level: warn}\n"
        f"storage: {{filesystem: {{rootdirectory: {directory / 'data'}}}, delete: {{enabled: true}}}}\n"
        f"http: {{{http}}}\n"
    )
    if htpasswd is not None:
        text += f"auth: {{htpasswd: {{realm: aibrix-proxy-test, path: {htpasswd}}}}}\n"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.yml"
    path.write_text(text)
    return path


def _tinyproxy_config(directory: Path, listen: str, subnet: str) -> tuple[Path, Path]:
    log = directory / "tinyproxy.log"
    path = directory / "tinyproxy.conf"
    path.write_text(
        f"Port {PROXY_PORT}\n"
        f"Listen {listen}\n"
        "Timeout 60\n"
        "MaxClients 64\n"
        f"Allow {subnet}\n"
        # CONNECT is refused to ports not named here; the TLS registry's port is not 443.
        "ConnectPort 443\n"
        f"ConnectPort {TLS_PORT}\n"
        f'LogFile "{log}"\n'
        "LogLevel Connect\n"
        f'PidFile "{directory / "tinyproxy.pid"}"\n'
        "DisableViaHeader Yes\n"
    )
    return path, log


def _answers(namespace: str, url: str) -> bool:
    """The registry answers /v2/ (200 or 401), asked from inside the namespace."""
    result = _run("ip", "netns", "exec", namespace, "curl", "-s", "-k", "-o", "/dev/null",
                  "-w", "%{http_code}", "--max-time", "2", url)  # fmt: skip
    return result.stdout.strip() in ("200", "401")


def _proxy_listens(address: str) -> bool:
    import socket

    try:
        with socket.create_connection((address, PROXY_PORT), timeout=1):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def proxy_rig(directory: Path) -> Iterator[ProxyRig]:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        service_missing(
            f"the proxy tests need {', '.join(missing)}",
            hint="scripts/lab up installs tinyproxy, docker-registry and apache2-utils",
        )
    if os.geteuid() != 0:
        service_missing(
            "the proxy tests make a network namespace, which needs root",
            hint="run them as root, as CI does",
        )
    tag = secrets.token_hex(4)
    namespace = f"aibx-px-{tag}"
    host_if, ns_if = f"apx{tag}h", f"apx{tag}n"
    netns_etc = Path("/etc/netns") / namespace
    processes: list[subprocess.Popen[bytes]] = []
    logs = []
    try:
        made = _run("ip", "netns", "add", namespace)
        if made.returncode != 0:
            service_missing(
                f"cannot make a network namespace: {made.stderr.strip()}",
                hint="the proxy tests need root and ip netns",
            )
        x = _free_subnet()
        host_ip, ns_ip, subnet = f"10.201.{x}.1", f"10.201.{x}.2", f"10.201.{x}.0/24"
        _must("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _must("ip", "link", "set", ns_if, "netns", namespace)
        _must("ip", "addr", "add", f"{host_ip}/24", "dev", host_if)
        _must("ip", "link", "set", host_if, "up")
        inside = ("ip", "netns", "exec", namespace)
        _must(*inside, "ip", "addr", "add", f"{ns_ip}/24", "dev", ns_if)
        _must(*inside, "ip", "link", "set", ns_if, "up")
        _must(*inside, "ip", "link", "set", "lo", "up")
        netns_etc.mkdir(parents=True)
        (netns_etc / "hosts").write_text(f"127.0.0.1 localhost\n127.0.0.1 {NAME}\n")

        ca, cert, key = _certificates(directory)
        user, password = "proxy-test", f"pw-{secrets.token_hex(12)}"
        htpasswd = directory / "htpasswd"
        htpasswd.write_text(_must("htpasswd", "-Bbn", user, password))
        configs = [
            _registry_config(directory / "plain", PLAIN_PORT, None, None),
            _registry_config(directory / "tls", TLS_PORT, (cert, key), htpasswd),
        ]
        proxy_config, proxy_log = _tinyproxy_config(directory, ns_ip, subnet)
        commands = [
            *(["docker-registry", "serve", str(config)] for config in configs),
            ["tinyproxy", "-d", "-c", str(proxy_config)],
        ]
        for index, command in enumerate(commands):
            log = (directory / f"process-{index}.log").open("wb")
            logs.append(log)
            processes.append(subprocess.Popen([*inside, *command], stdout=log, stderr=log))

        deadline = time.monotonic() + 20
        while not (
            _answers(namespace, f"http://{NAME}:{PLAIN_PORT}/v2/")
            and _answers(namespace, f"https://{NAME}:{TLS_PORT}/v2/")
            and _proxy_listens(ns_ip)
        ):
            for index, process in enumerate(processes):
                said = (directory / f"process-{index}.log").read_text(errors="replace")
                assert process.poll() is None, f"{commands[index][0]} exited: {said}"
            assert time.monotonic() < deadline, "the proxy rig did not come up in 20 s"
            time.sleep(0.2)
        yield ProxyRig(
            namespace=namespace,
            proxy_url=f"http://{ns_ip}:{PROXY_PORT}",
            plain_host=f"{NAME}:{PLAIN_PORT}",
            tls_host=f"{NAME}:{TLS_PORT}",
            ca_file=ca,
            user=user,
            password=password,
            proxy_log=proxy_log,
        )
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in logs:
            log.close()
        _run("ip", "link", "del", host_if)  # its peer goes with it, or with the namespace
        _run("ip", "netns", "del", namespace)
        shutil.rmtree(netns_etc, ignore_errors=True)
