"""The fleet of workers (issue 14 item 6): the pure decisions (which platforms a release
waits for with no live worker, live workers per platform), their sentences, the table
the CLI and Slack show, the heartbeat record's parsing, `/aibrix workers` parsing and
rendering, and the metrics' command label."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.follow import release_lines
from handlers import blocks
from handlers.commands import command_name
from handlers.parse import ParseError, WorkersCommand, parse_command
from jobs.domain import messages
from jobs.domain.config import Config
from jobs.domain.fleet import (
    FleetView,
    WorkerBeat,
    fleet_json,
    fleet_lines,
    gaps,
    live_counts,
    release_gaps,
    waiting_platforms,
)
from jobs.domain.platforms import Platform, parse_platform
from jobs.domain.release import BuildRecord, BuildState, Release, State
from jobs.domain.versions import parse_version
from jobs.runtime.heartbeat import Heartbeat
from jobs.runtime.metrics import BotMetrics, WorkerMetrics
from jobs.store.fleet import Announcement, parse_beat
from tests.support.blocks import assert_within_limits

AMD64, ARM64, ARMV7 = (parse_platform(p) for p in ("linux/amd64", "linux/arm64", "linux/arm/v7"))
ALL = (AMD64, ARM64, ARMV7)


def beat(platform: Platform, worker: str = "w1", *, seen: float = 1000.0, **kw: Any) -> WorkerBeat:
    fields: dict[str, Any] = {
        "worker_id": worker,
        "platform": platform,
        "version": "0.1.0",
        "builder": "lab",
        "control": True,
        "jobs": (),
        "started": 900.0,
        "last_seen": seen,
    }
    fields.update(kw)
    return WorkerBeat(**fields)


def release(state: State, builds: dict[tuple[str, Platform], BuildState] | None = None) -> Release:
    return Release(
        version=parse_version("v0.3.0"),
        run_id="0123456789abcdef",
        state=state,
        state_reason="",
        requested_by="U0REQUESTER",
        channel="C0RELEASES",
        platforms=(AMD64, ARM64),
        components=("runtime", "gateway"),
        source_ref="abc",
        created_at=0,
        updated_at=0,
        status_channel="C0RELEASES",
        status_ts="1.0",
        previous_run_id="",
        active=True,
        builds={key: BuildRecord(key[0], key[1], value) for key, value in (builds or {}).items()},
        indexes={},
    )


# ---- sentences


@pytest.mark.parametrize(
    ("seconds", "words"),
    [(0, "0 s"), (59.9, "59 s"), (60, "1 min"), (600, "10 min"), (7199, "119 min"),
     (7200, "2 h"), (2 * 86400, "2 days"), (-5, "0 s")],
)  # fmt: skip
def test_duration_words(seconds: float, words: str) -> None:
    assert messages.duration_words(seconds) == words


def test_the_no_live_worker_sentences() -> None:
    assert messages.no_live_worker("linux/arm64", 600).startswith(
        "no linux/arm64 worker has been seen for 10 min"
    )
    assert messages.no_live_worker("linux/arm64", None).startswith(
        "no linux/arm64 worker has ever been seen"
    )


# ---- decisions


def test_a_platform_with_a_live_worker_is_no_gap_and_one_without_says_since_when() -> None:
    view = FleetView((beat(AMD64),), {AMD64: 1000.0, ARM64: 400.0}, now=1000.0)
    (gap,) = gaps([AMD64, ARM64], view)
    assert gap.platform == ARM64 and gap.seen_ago == 600
    assert gap.sentence().startswith("no linux/arm64 worker has been seen for 10 min")


def test_a_platform_never_seen_says_so() -> None:
    (gap,) = gaps([ARMV7], FleetView((), {}, now=5.0))
    assert gap.seen_ago is None
    assert "linux/arm/v7 worker has ever been seen" in gap.sentence()


@given(
    live=st.lists(st.sampled_from(ALL)),
    needed=st.lists(st.sampled_from(ALL)),
    seen=st.dictionaries(st.sampled_from(ALL), st.floats(0, 2000)),
    now=st.floats(0, 2000),
)
def test_gaps_are_exactly_the_needed_platforms_without_a_live_worker(
    live: list[Platform], needed: list[Platform], seen: dict[Platform, float], now: float
) -> None:
    view = FleetView(tuple(beat(p, f"w{i}") for i, p in enumerate(live)), seen, now)
    found = gaps(needed, view)
    expected = [p for p in dict.fromkeys(needed) if p not in live]
    assert [g.platform for g in found] == expected
    for gap in found:
        if gap.platform in seen:
            assert gap.seen_ago is not None and gap.seen_ago >= 0
        else:
            assert gap.seen_ago is None
    counts = live_counts(view, needed)
    assert sum(counts.values()) == len(live)
    assert all(counts[p] == 0 for p in expected)


def test_a_queued_release_waits_for_every_platform() -> None:
    assert waiting_platforms(release(State.QUEUED)) == (AMD64, ARM64)


def test_a_building_release_waits_only_for_platforms_with_unbuilt_builds() -> None:
    builds = {
        ("runtime", AMD64): BuildState.PUSHED,
        ("gateway", AMD64): BuildState.PUSHED,
        ("runtime", ARM64): BuildState.PUSHED,
        ("gateway", ARM64): BuildState.BUILDING,
    }
    assert waiting_platforms(release(State.BUILDING, builds)) == (ARM64,)
    builds[("gateway", ARM64)] = BuildState.FAILED
    assert waiting_platforms(release(State.BUILDING, builds)) == ()


@pytest.mark.parametrize("state", [s for s in State if s not in (State.QUEUED, State.BUILDING)])
def test_a_release_past_its_builds_waits_for_no_worker(state: State) -> None:
    view = FleetView((), {}, now=0.0)
    assert release_gaps(release(state), view) == []


def test_release_gaps_say_nothing_when_the_fleet_could_not_be_read() -> None:
    assert release_gaps(release(State.QUEUED), None) == []


def test_the_cli_release_lines_carry_the_fleet_notes() -> None:
    view = FleetView((beat(AMD64),), {ARM64: 0.0}, now=600.0)
    lines = release_lines(release(State.QUEUED), {}, release_gaps(release(State.QUEUED), view))
    assert lines[-1].startswith("  waiting: no linux/arm64 worker has been seen for 10 min")
    assert not any("amd64 worker" in line for line in lines)


# ---- the table


def test_fleet_lines_list_the_workers_then_the_platforms_without_one() -> None:
    view = FleetView(
        (beat(AMD64, "builder-a", seen=995.0, jobs=("build v0.3.0 runtime",)),),
        {AMD64: 995.0},
        now=1000.0,
    )
    lines = fleet_lines(view, [AMD64, ARM64])
    assert lines[0].split() == ["PLATFORM", "WORKER", "VERSION", "BUILDER", "MERGES", "SEEN",
                                "RUNNING"]  # fmt: skip
    assert "builder-a" in lines[1] and "5 s ago" in lines[1] and "build v0.3.0 runtime" in lines[1]
    assert lines[2].startswith("no linux/arm64 worker has ever been seen")
    data = fleet_json(view, [AMD64, ARM64])
    assert json.loads(json.dumps(data)) == data
    assert [m["platform"] for m in cast(list[dict[str, str]], data["missing"])] == ["linux/arm64"]


def test_no_workers_at_all_says_so() -> None:
    assert fleet_lines(FleetView((), {}, 0.0), [])[0] == messages.no_workers()


# ---- the heartbeat record


def record(**changes: object) -> str:
    data: dict[str, object] = {
        "worker": "w1",
        "platform": "linux/arm64",
        "version": "0.1.0",
        "builder": "lab",
        "control": False,
        "jobs": ["build v0.3.0 runtime"],
        "started": 1.5,
    }
    data.update(changes)
    return json.dumps(data)


def test_a_record_this_code_writes_parses() -> None:
    parsed = parse_beat(record(), 2.5)
    assert parsed.platform == ARM64 and parsed.jobs == ("build v0.3.0 runtime",)
    assert parsed.last_seen == 2.5 and not parsed.control


@pytest.mark.parametrize(
    "changes",
    [
        {"platform": "linux/aarch64"},  # not the one spelling the worker writes
        {"platform": "nonsense"},
        {"worker": 7},
        {"worker": "x" * 201},
        {"jobs": "build"},
        {"jobs": ["j"] * 17},
        {"started": "soon"},
        {"started": True},
    ],
)
def test_a_record_this_code_does_not_write_is_refused(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        parse_beat(record(**changes), 2.5)


def running(heart: Heartbeat) -> list[str]:
    return list(heart.jobs)


def test_the_heartbeat_names_every_job_running_now() -> None:
    me = Announcement("w1", ARM64, "0.1.0", "lab", True, 0.0)
    heart = Heartbeat(cast(Any, None), me, ttl_seconds=3)
    assert heart.interval == 1
    with heart.running("build v1 a"):
        with heart.running("merge v1 a"):
            assert running(heart) == ["build v1 a", "merge v1 a"]
        assert running(heart) == ["build v1 a"]
    assert running(heart) == []
    with pytest.raises(ValueError):
        Heartbeat(cast(Any, None), me, ttl_seconds=0)


# ---- Slack


def test_workers_parses_and_takes_no_argument() -> None:
    config = cast(Config, None)  # `workers` reads nothing from the config
    assert parse_command("workers", config) == WorkersCommand()
    assert isinstance(parse_command("workers now", config), ParseError)


def test_the_workers_message_fits_slack_and_escapes_worker_text() -> None:
    many = tuple(beat(AMD64, f"w{i:03d}-<!channel>", jobs=("build v0.3.0 x",) * 3)
                 for i in range(400))  # fmt: skip
    view = FleetView(many, {AMD64: 1000.0, ARM64: 10.0}, now=1000.0)
    message = blocks.workers_message(view, [AMD64, ARM64, ARMV7])
    assert_within_limits(message)
    rendered = json.dumps(message.blocks)
    assert "<!channel>" not in rendered and "&lt;!channel&gt;" in rendered
    assert "no linux/arm64 worker has been seen for 16 min" in rendered
    assert "no linux/arm/v7 worker has ever been seen" in rendered
    assert message.text.startswith("400 live workers")


def test_the_workers_message_when_the_fleet_cannot_be_read() -> None:
    message = blocks.workers_message(None, [AMD64])
    assert "cannot be read" in message.text


def test_the_release_message_shows_the_fleet_notes() -> None:
    note = messages.no_live_worker("linux/arm64", 600)
    message = blocks.release_message(release(State.QUEUED), notes=[note])
    assert note in json.dumps(message.blocks)


def test_a_command_metric_label_is_a_known_subcommand_or_other() -> None:
    assert command_name("workers") == "workers"
    assert command_name("RELEASE v1.0.0") == "release"
    assert command_name("") == "help"
    assert command_name("<!everyone> x") == "other"


async def test_a_scrape_answers_with_the_counters_when_redis_fails() -> None:
    from redis.exceptions import ConnectionError as RedisConnectionError

    metrics = BotMetrics(["bad_signature"], ["workers"])

    async def refresh(_: BotMetrics) -> None:
        raise RedisConnectionError("down")

    metrics.refresh = refresh
    metrics.command("workers", "ok")
    response = await metrics.handle(cast(Any, None))
    body = cast(bytes, response.body).decode()
    assert 'aibrix_slack_commands_total{command="workers",outcome="ok"} 1.0' in body
    assert 'aibrix_slack_commands_total{command="workers",outcome="refused"} 0.0' in body
    assert "aibrix_metrics_refresh_errors_total 1.0" in body


# ---- the sample Grafana dashboard

DASHBOARD = Path(__file__).parents[2] / "helm/aibrix-release-bot/dashboards/aibrix-release-bot.json"


def exposed_series() -> set[str]:
    """Every series name the bot and a worker expose (with the suffixes Prometheus adds)."""
    names: set[str] = set()
    for registry in (BotMetrics(["x"], ["workers"]).registry, WorkerMetrics().registry):
        for family in registry.collect():
            names.update(sample.name for sample in family.samples)
            # A labelled family shows no sample until a child exists: name its series.
            suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
            names.update(family.name + s for s in suffixes.get(family.type, ("",)))
    return names


def test_the_dashboard_queries_only_series_the_code_exposes() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    used = {name for expr in exprs for name in re.findall(r"\baibrix_[a-z_]+", expr)}
    assert used - exposed_series() == set()
    for wanted in ("aibrix_workers_live", "aibrix_releases", "aibrix_notifier_lag_seconds",
                   "aibrix_slack_commands_total", "aibrix_slack_requests_refused_total"):  # fmt: skip
        assert wanted in used


def test_workers_is_read_only_like_status() -> None:
    from handlers.commands import command_action
    from jobs.domain.permissions import READ_ONLY, Action

    assert command_action(WorkersCommand()) is Action.STATUS
    assert Action.STATUS in READ_ONLY
