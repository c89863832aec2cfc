"""Where and how a registry is reached: plain HTTP or TLS, by host. Pure, and light to
import (the command line parses its input with it before it loads the network code).

Plain HTTP for `localhost`, `127.0.0.0/8` and `::1`, with or without a port, and for the
hosts named by `--insecure-registry` or `AIBRIX_INSECURE_REGISTRIES=host1,host2:5000`.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Mapping

from jobs.domain.references import validate_host

INSECURE_ENV = "AIBRIX_INSECURE_REGISTRIES"


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


def default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80
