"""The entry points' own sentences: what the terminal (`aibrix-bot sync`) and the
operators' log say that neither the core nor the Slack adapter does.

The core's sentences are in `jobs.domain.messages`, Slack's in `handlers.messages`.
"""

from __future__ import annotations

# ---- the Slack connection (bot/server.py) -------------------------------------------------


def slack_app_token_refused(error: str) -> str:
    return (
        f"the bot cannot start: Slack refused SLACK_APP_TOKEN for Socket Mode ({error}); "
        "it must be an app-level token (xapp-...) with connections:write"
    )


# ---- aibrix-bot release --dry-run (bot/cli_pipeline.py) -------------------------------------


def json_needs_dry_run() -> str:
    return "--json goes with --dry-run (a release itself prints its progress, not JSON)"


def plan_heading(version: str, revision: str) -> str:
    return f"plan of {version} at revision {revision}"


def plan_clean() -> str:
    return "no problems: the release can be queued"


def plan_shared(components: str, build: str) -> str:
    return f"  {components} are one build ({build}): built once per platform"


# ---- aibrix-bot sync (bot/cli.py) -----------------------------------------------------------


def sync_cli_not_audited() -> str:
    return (
        "note: this sync is not audited (no --redis-url or REDIS_URL); give the bot's Redis "
        "to record it in the audit stream"
    )


# ---- the bot's log (operators) -----------------------------------------------------------


def slack_requests_refused(reason: str, status: int, count: int) -> str:
    """One line for `count` refusals of one reason; never anything the client sent."""
    return (
        f"refused {count} request(s) to /slack/events: {reason} (HTTP {status}); "
        "all are counted in aibrix_slack_requests_refused_total, "
        "this line repeats at most once a minute"
    )


# ---- aibrix-bot demo (bot/cli.py) -----------------------------------------------------------


def demo_needs_a_clone() -> str:
    return (
        "aibrix-bot demo: the demo is not installed here; it runs from a clone of the "
        "repository with scripts/demo"
    )


def card_heading(component: str, image: str) -> str:
    return f"{component} ({image}): versions, registries and mirrors"


# ---- aibrix-bot nightly (bot/cli_pipeline.py) ------------------------------------------------


def nightly_line(branch: str, revision: str) -> str:
    return f"nightly of {branch} at {revision}"


def nightly_outcome(revision: str, moved: bool, state: str) -> str:
    if moved:
        return f"nightly moved to {revision}: every publish registry holds it"
    if state == "ready":
        return (
            f"{revision} passed the gate; nightly moves to it once approved "
            "([nightly] approval = true)"
        )
    return (
        f"nightly not moved ({state}): the previous nightly stays in place; the reasons are above"
    )


# ---- a Redis outage while the CLI follows or reads (bot/redis_wait.py) ------------------------


def redis_waiting(where: str, seconds: float) -> str:
    return f"waiting for Redis at {where} (up to {seconds:g} s)..."


def redis_back(where: str, waited: float) -> str:
    return f"Redis at {where} is back after {waited:.1f} s"


def redis_gave_up(where: str, seconds: float, cause: str, hint: str = "") -> str:
    tail = f"; the release goes on without this terminal: {hint}" if hint else ""
    return f"Redis at {where} could not be reached for {seconds:g} s ({cause}){tail}"


def redis_wait_invalid() -> str:
    return (
        "--redis-wait (or AIBRIX_REDIS_WAIT_SECONDS) takes a number of seconds between 0 and 3600"
    )


def redis_lost(where: str, error: str) -> str:
    return f"Redis at {where} went away ({error}); nothing more was done"
