"""Registries reachable only through an HTTP proxy (issue 12, item 2), against a real
tinyproxy and real distribution registries in a network namespace of their own
(`tests/support/proxy_rig.py`): from this host, `registry.proxy-only.test` resolves and
answers only through the proxy.

inspect and sync run as the command line runs (a subprocess, the proxy in its
environment); the worker's read-back of a merged tag (`verify_published`) runs on the
settings the worker command builds from its environment. The lab's registries are on
loopback, which goes direct whatever the variables say: a sync from them succeeds only
because it does (the proxy, in its namespace, could not reach this host's loopback).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from bot.registry_env import registry_settings
from jobs.domain.platforms import parse_platform
from jobs.registry.client import RegistryClient
from jobs.registry.inspection import verify_published
from tests.conftest import Lab
from tests.support.oci_push import OciPusher
from tests.support.proxy_rig import ProxyRig, proxy_rig
from tests.support.sync import VERSION, Result, craft_component, run_bot, write_docker_config

# Every proxy variable, emptied: what the test process inherited must not leak in (an
# empty variable counts as unset).
NO_PROXIES = {
    name: ""
    for name in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY")
}


@pytest.fixture(scope="module")
def rig(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyRig]:
    with proxy_rig(tmp_path_factory.mktemp("proxy-rig")) as made:
        yield made


def sync_config(directory: Path, source: str, mirror: str) -> Path:
    path = directory / f"aibrix-{uuid.uuid4().hex[:6]}.toml"
    path.write_text(
        f'repository = "{source}"\n[source]\npath = "{directory}"\n'
        f'[mirrors]\nbehind-proxy = "{mirror}"\n[[components]]\nname = "runtime"\n'
    )
    return path


def proxied(rig: ProxyRig, **more: str) -> dict[str, str]:
    return {**NO_PROXIES, "HTTPS_PROXY": rig.proxy_url, "HTTP_PROXY": rig.proxy_url, **more}


def connects(rig: ProxyRig) -> int:
    return rig.log_text().count(f"CONNECT {rig.tls_host} ")


async def crafted(lab: Lab, namespace: str) -> str:
    async with aiohttp.ClientSession() as session:
        pushed = await craft_component(OciPusher(lab.registry), session, f"{namespace}/runtime")
    return pushed.digest


def said(result: Result) -> str:
    return result.stdout + result.stderr


async def test_https_registry_behind_the_proxy_inspect_and_sync_through_connect(
    lab: Lab, rig: ProxyRig, tmp_path: Path
) -> None:
    namespace = f"px-{uuid.uuid4().hex[:8]}"
    source = await crafted(lab, namespace)
    target = f"{rig.tls_host}/{namespace}/runtime:{VERSION}"
    docker = write_docker_config(tmp_path / "docker", {rig.tls_host: (rig.user, rig.password)})
    base = {"DOCKER_CONFIG": str(docker), "SSL_CERT_FILE": str(rig.ca_file)}

    # Direct, the name does not even resolve: the rig is honest.
    before = connects(rig)
    direct = await run_bot("inspect", target, env={**NO_PROXIES, **base})
    assert direct.code == 3, said(direct)
    assert (
        f"cannot be read: cannot reach {rig.tls_host}: the name does not resolve (" in direct.stdout
    ), said(direct)
    assert connects(rig) == before

    env = proxied(rig, **base)
    config = sync_config(tmp_path, f"{lab.registry}/{namespace}", f"{rig.tls_host}/{namespace}")
    synced = await run_bot(
        "sync", VERSION, "--to", "behind-proxy", "--config", str(config), "--json", env=env
    )
    assert synced.code == 0, said(synced)
    (item,) = synced.json["mirrors"][0]["components"]
    assert item["status"] == "copied" and item["final_digest"] == source

    shown = await run_bot("inspect", "--json", target, env=env)
    assert shown.code == 0, said(shown)
    (report,) = json.loads(shown.stdout)
    assert report["verdict"] == "ok" and report["digest"] == source

    # The proxy saw tunnels to the registry and nothing of what went inside them: no
    # request line, no Authorization, no password in any form.
    log = rig.log_text()
    assert connects(rig) >= before + 2, log
    assert f"http://{rig.tls_host}" not in log and "/v2/" not in log
    basic = base64.b64encode(f"{rig.user}:{rig.password}".encode()).decode()
    for secret in (rig.password, basic, "Authorization", "Bearer"):
        assert secret not in log
        assert secret not in said(synced) + said(shown)


async def test_plain_http_registry_behind_the_proxy_is_read_through_it(
    lab: Lab, rig: ProxyRig, tmp_path: Path
) -> None:
    namespace = f"px-{uuid.uuid4().hex[:8]}"
    source = await crafted(lab, namespace)
    env = proxied(rig, AIBRIX_INSECURE_REGISTRIES=rig.plain_host)
    config = sync_config(tmp_path, f"{lab.registry}/{namespace}", f"{rig.plain_host}/{namespace}")
    synced = await run_bot(
        "sync", VERSION, "--to", "behind-proxy", "--config", str(config), "--json", env=env
    )
    assert synced.code == 0, said(synced)
    assert synced.json["mirrors"][0]["components"][0]["final_digest"] == source

    shown = await run_bot(
        "inspect", "--json", f"{rig.plain_host}/{namespace}/runtime:{VERSION}", env=env
    )
    assert shown.code == 0, said(shown)
    assert json.loads(shown.stdout)[0]["digest"] == source
    # Plain HTTP is forwarded, not tunnelled: the proxy sees each request whole.
    log = rig.log_text()
    assert f"GET http://{rig.plain_host}/v2/{namespace}/runtime/manifests/{VERSION} " in log
    assert f"PUT http://{rig.plain_host}/v2/{namespace}/runtime/manifests/{VERSION} " in log


async def test_the_workers_read_back_goes_through_the_proxy(
    lab: Lab, rig: ProxyRig, tmp_path: Path
) -> None:
    namespace = f"px-{uuid.uuid4().hex[:8]}"
    await crafted(lab, namespace)
    environ = proxied(rig, AIBRIX_INSECURE_REGISTRIES=rig.plain_host)
    config = sync_config(tmp_path, f"{lab.registry}/{namespace}", f"{rig.plain_host}/{namespace}")
    synced = await run_bot(
        "sync", VERSION, "--to", "behind-proxy", "--config", str(config), "--json", env=environ
    )
    assert synced.code == 0, said(synced)
    image = f"{rig.plain_host}/{namespace}/runtime"
    manifest_get = f"GET http://{image.replace('/', '/v2/', 1)}/manifests/{VERSION} "
    before = rig.log_text().count(manifest_get)

    # The settings `aibrix-bot worker` builds from its environment at start-up, and the
    # merge's read-back of the tag it wrote.
    settings = registry_settings(environ)
    required = [parse_platform("linux/amd64"), parse_platform("linux/arm64")]
    async with RegistryClient(settings) as client:
        published = await verify_published(client, image, VERSION, {}, required)
    assert published.inspection.verdict.ok, published.inspection.verdict
    assert rig.log_text().count(manifest_get) > before


async def test_no_proxy_sends_a_registry_direct(lab: Lab, rig: ProxyRig, tmp_path: Path) -> None:
    target = f"{rig.tls_host}/px-{uuid.uuid4().hex[:8]}/runtime:{VERSION}"
    docker = write_docker_config(tmp_path / "docker", {rig.tls_host: (rig.user, rig.password)})
    env = proxied(rig, SSL_CERT_FILE=str(rig.ca_file), DOCKER_CONFIG=str(docker))
    # Through the proxy the registry answers (the tag does not exist there): it is reached.
    before = connects(rig)
    reached = await run_bot("inspect", target, env=env)
    assert reached.code == 3, said(reached)
    assert "not found in the registry (HTTP 404, MANIFEST_UNKNOWN)" in reached.stdout, said(reached)
    assert connects(rig) > before

    # Two forms (the table in tests/unit/test_proxies.py has them all); each direct
    # attempt is retried as any unreachable registry is.
    for no_proxy in ("proxy-only.test", f"10.0.0.0/8 {rig.tls_host}"):
        before = connects(rig)
        direct = await run_bot("inspect", target, env={**env, "NO_PROXY": no_proxy})
        assert direct.code == 3, said(direct)
        # The direct sentence: no proxy named.
        assert (
            f"cannot be read: cannot reach {rig.tls_host}: the name does not resolve ("
            in direct.stdout
        ), said(direct)
        assert "through the proxy" not in direct.stdout
        assert connects(rig) == before


async def test_a_proxy_that_will_not_open_the_tunnel_is_named(lab: Lab, rig: ProxyRig) -> None:
    # tinyproxy refuses CONNECT to a port its ConnectPort lines do not name.
    closed_port = rig.tls_host.replace(":5121", ":5999")
    refused = await run_bot("inspect", f"{closed_port}/px/runtime:{VERSION}", env=proxied(rig))
    assert refused.code == 3, said(refused)
    assert (
        f"  - {closed_port}/px/runtime:{VERSION} cannot be read: the proxy {rig.proxy_url} "
        f"(from HTTPS_PROXY) did not open a tunnel to {closed_port} (HTTP 403 to CONNECT) "
        "(6 attempts)\n"
    ) in refused.stdout, said(refused)
    assert f"CONNECT {closed_port} " in rig.log_text()


async def test_a_bad_proxy_value_is_refused_before_anything_is_read(tmp_path: Path) -> None:
    value = "socks5://builder:s3cret-proxy-pass@proxy.corp:1080"
    for args in (
        ("inspect", f"registry.example.com/px/runtime:{VERSION}"),
        ("sync", VERSION, "--to", "behind-proxy", "--config",
         str(sync_config(tmp_path, "registry.example.com/px", "mirror.example.com/px"))),
    ):  # fmt: skip
        refused = await run_bot(*args, env={**NO_PROXIES, "HTTPS_PROXY": value})
        assert refused.code == 2, said(refused)
        assert refused.stderr.strip() == (
            f"aibrix-bot {args[0]}: HTTPS_PROXY is not a proxy this bot can use: its scheme "
            "socks5:// is not supported (only http:// and https:// proxies are) "
            "(expected http://[USER:PASSWORD@]HOST[:PORT] or https://...)"
        ), said(refused)
        assert "s3cret" not in said(refused)
