"""Registry settings from the process environment: the one place the entry points (the
command line, the bot, the worker) read `AIBRIX_INSECURE_REGISTRIES` and the proxy
variables (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`, lower-case forms: see
`jobs.registry.proxies`). The core takes the result as a value and never reads the
environment itself. A bad proxy value raises `ProxyConfigError` (exit 2) before any I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jobs.registry.client import RegistrySettings


def registry_settings(
    environ: Mapping[str, str],
    insecure: frozenset[str] = frozenset(),
    *,
    budget: float | None = None,
) -> RegistrySettings:
    """`insecure` (from `--insecure-registry`) joins the hosts the environment names;
    `budget`: the configuration's `registry.budget_seconds`, when there is one."""
    from jobs.registry.client import RegistrySettings
    from jobs.registry.endpoints import insecure_from_env
    from jobs.registry.proxies import ProxySettings

    settings = RegistrySettings(
        insecure_registries=insecure | insecure_from_env(environ),
        proxies=ProxySettings.from_environ(environ),
    )
    return settings if budget is None else replace(settings, budget=budget)
