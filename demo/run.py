"""`aibrix-bot demo`: the whole story on the local lab, with real parts only.

1. The incident, replayed: two pipelines write one tag, the arm64 one last; `docker
   pull` fails on amd64 exactly as it did, and the inspection gate names the cause.
2. A release of the sample project through Redis and two workers (amd64 native, arm64
   under QEMU) with runtime broken on arm64: the release is blocked, naming the
   component and platform, and runtime's release tag is never written. The sample is a
   git repository made for the demo (tests/support/sample_history.py): AIBrix's layout
   before v0.5 at tags v0.4.x, its layout today at v0.7.x.
3. The fix, and two releases that are ready, one per layout: v0.4.1 (five components,
   metadata-service and runtime from Dockerfiles of their own) and v0.7.0 (six:
   metadata-service and runtime one build of Dockerfile.python, vllm-mock from
   development/app), each planned first (`release --dry-run`); every tag a verified
   two-platform index built from pinned digests.
4. The same story through Slack (v0.4.0-rc.1 broken, v0.7.0 fixed): the real
   `aibrix-bot serve` against the Slack stand-in, signed `/aibrix release` commands,
   the live message, a self-approval refused, an approver's click accepted, promotion
   done, and at the end `/aibrix inspect runtime`: runtime's card across versions and
   registries; the channel is printed as text and written as an HTML page
   (demo-output/channel.html).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from python_on_whales import docker

from bot.cli import main as cli_main

if TYPE_CHECKING:
    from tests.support.sample_history import LabAddresses

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample"
BOT = str(REPO / ".venv" / "bin" / "aibrix-bot")


def _lab_values() -> dict[str, str]:
    lab_dir = Path(os.environ.get("AIBRIX_LAB_DIR", REPO / ".lab"))
    env_file = lab_dir / "lab.env"
    if not env_file.exists():
        raise SystemExit(f"demo: the lab is not up ({env_file} is missing); run scripts/lab up")
    values = {}
    for line in env_file.read_text().splitlines():
        key, _, value = line.partition("=")
        values[key] = value
    return values


def _say(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def _inspect_json(*refs: str) -> list[dict[str, object]]:
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        cli_main(["inspect", "--json", *refs])
    return list(json.loads(captured.getvalue()))


def _demo_config(source: Path, target: Path, prefix: str, lab: LabAddresses, history: Path) -> Path:
    """The sample config with its own key prefix and registry namespace, both named after
    the prefix (a fresh installation each time: released versions are immutable, so a
    new bot must not meet tags an earlier one wrote), the sample's git history as the
    source (releases check out their tag), and the lab's registry and mirror wherever
    the sample names the default ones."""
    namespace = prefix.replace(":", "-")
    text = source.read_text().replace("127.0.0.1:5000/aibrix-sample", f"127.0.0.1:5000/{namespace}")
    text = lab.rewrite(text)
    text = re.sub(r'(?m)^key_prefix = ".*"$', f'key_prefix = "{prefix}"', text)
    text = re.sub(r'(?m)^path = "\."$', f'git = "{history}"', text)
    text = re.sub(r"(?m)^max_attempts = \d+$", "max_attempts = 1", text)
    target.write_text(text)
    return target


@contextlib.contextmanager
def _workers(config: Path, redis_url: str, logs: Path) -> Iterator[None]:
    env = {**os.environ, "AIBRIX_CONFIG": str(config), "REDIS_URL": redis_url}
    processes = []
    for platform in ("linux/amd64", "linux/arm64"):
        name = f"demo-{platform.split('/')[1]}"
        log = (logs / f"{name}.log").open("ab")
        processes.append(
            subprocess.Popen(
                [BOT, "worker", "--platform", platform, "--worker-id", name, "--metrics-port", "0"],
                stdout=log,
                stderr=log,
                env=env,
            )
        )
        print(f"  started worker {name} for {platform} (log: {logs / (name + '.log')})")
    try:
        yield
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def _release(config: Path, redis_url: str, version: str) -> int:
    os.environ["AIBRIX_CONFIG"] = str(config)
    os.environ["REDIS_URL"] = redis_url
    print(f"$ aibrix-bot release {version}", flush=True)
    return cli_main(["release", version, "--timeout", "600"])


def _plan(config: Path, version: str) -> dict[str, Any]:
    """`aibrix-bot release VERSION --dry-run --json`, shown as a table; the plan's object."""
    os.environ["AIBRIX_CONFIG"] = str(config)
    print(f"$ aibrix-bot release {version} --dry-run", flush=True)
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        code = cli_main(["release", version, "--dry-run", "--json"])
    plan: dict[str, Any] = json.loads(captured.getvalue())
    plan["exit"] = code
    print(f"  {version} at revision {plan['revision'][:12]} (exit {code})")
    for c in plan["components"]:
        print(f"  {c['name']:<20} {c['dockerfile']:<36} context {c['context']:<16} {c['build']}")
    for d in plan["dependencies"]:
        print(f"  dependency {d['reference']}: {d['verdict']}")
    for problem in plan["problems"]:
        print(f"  problem: {problem['message']}")
    return plan


def _release_both_layouts(
    config: Path, redis_url: str, registry: str, prefix: str, logs: Path
) -> list[tuple[str, bool]]:
    """Step 3: the last release of the pre-v0.5 layout and one of today's, each planned
    first, then released by the same workers and inspected."""
    from tests.support.sample_history import NEW_TAG, OLD_TAG

    checks: list[tuple[str, bool]] = []
    for version, expected in ((OLD_TAG, 5), (NEW_TAG, 6)):
        plan = _plan(config, version)
        names = [c["name"] for c in plan["components"]]
        checks.append(
            (
                f"the plan of {version} is clean, {expected} components",
                plan["exit"] == 0 and len(names) == expected,
            )
        )
        if version == NEW_TAG:
            build = {c["name"]: c["build"] for c in plan["components"]}
            checks.append(
                (
                    "the plan builds metadata-service and runtime once (Dockerfile.python)",
                    build["metadata-service"] == build["runtime"],
                )
            )
        with _workers(config, redis_url, logs):
            code = _release(config, redis_url, version)
        checks.append((f"the release of {version} is ready (exit 0)", code == 0))
        refs = [f"{registry}/{prefix}/{name}:{version}" for name in names]
        print(f"  $ aibrix-bot inspect {' '.join(n + ':' + version for n in names)}")
        reports = _inspect_json(*refs)
        for report in reports:
            print(f"  {report['reference']}: {report['verdict']}")
        checks.append(
            (
                f"every tag of {version} passes the gate",
                len(reports) == expected and all(r["verdict"] == "ok" for r in reports),
            )
        )
    return checks


def _replay_incident(lab: dict[str, str], workdir: Path) -> bool:
    namespace = f"{lab['AIBRIX_LAB_REGISTRY']}/incident-{uuid.uuid4().hex[:6]}"
    runtime = f"{namespace}/runtime"
    version = "v0.3.0-rc.2"
    (workdir / "Dockerfile").write_text(
        f"FROM {lab['AIBRIX_LAB_BASE_IMAGE']}\nRUN echo built on $(uname -m) > /etc/aibrix-build\n"
    )
    digests = {}
    for arch in ("amd64", "arm64"):
        meta = workdir / f"meta-{arch}.json"
        docker.buildx.build(
            workdir,
            platforms=[f"linux/{arch}"],
            tags=[f"{runtime}:{version}-{arch}"],
            push=True,
            metadata_file=meta,
            progress=False,
        )
        digests[arch] = str(json.loads(meta.read_text())["containerimage.digest"])
    print("  the amd64 pipeline writes runtime's tag with both platforms...")
    docker.buildx.imagetools.create(
        [f"{runtime}@{d}" for d in digests.values()], tags=[f"{runtime}:{version}"]
    )
    print("  ...then the arm64 pipeline writes the same tag with its list alone")
    docker.buildx.imagetools.create(
        [f"{runtime}@{digests['arm64']}"], tags=[f"{runtime}:{version}"]
    )
    print(f"  $ docker pull {runtime}:{version}")
    pull = subprocess.run(
        ["docker", "pull", f"{runtime}:{version}"], capture_output=True, text=True, check=False
    )
    print("  " + (pull.stderr.strip() or pull.stdout.strip()).replace("\n", "\n  "))
    print(f"  $ aibrix-bot inspect {runtime}:{version}")
    code = cli_main(["inspect", f"{runtime}:{version}"])
    [report] = _inspect_json(f"{runtime}:{version}")
    return code == 1 and report["missing"] == ["linux/amd64"]


SLACK_TOKEN = "xoxb-demo-" + "0" * 12
SLACK_CHANNEL = "C0RELEASES"
REQUESTER = "U0APPROVER2"  # an approver too: the refusal is for approving oneself
APPROVER = "U0APPROVER1"
OUTPUT = REPO / "demo-output"
# Tags of the sample's history (tests/support/sample_history.py). The broken one is of the
# pre-v0.5 layout, where runtime has a Dockerfile of its own: the demo breaks runtime by
# giving the workers (not the bot) a config with FAIL_ON_ARCH, and from v0.5 runtime is
# one build with metadata-service, which the bot plans and a worker runs as
# metadata-service's build.
SLACK_BROKEN, SLACK_FIXED = "v0.4.0-rc.1", "v0.7.0"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _wait(predicate: Callable[[], Awaitable[bool]], timeout: float, what: str) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(0.3)
    print(f"  (gave up waiting for {what})")
    return False


async def _slack_story(
    broken: Path, fixed: Path, redis_url: str, registry: str, logs: Path
) -> list[tuple[str, bool]]:
    """The release story told through Slack: the real `aibrix-bot serve` against the
    Slack stand-in, commands and clicks signed exactly as Slack signs them."""
    from jobs.domain.config_reader import load_config
    from jobs.domain.release import State
    from jobs.store.connections import RedisSettings, connect
    from jobs.usecases.pipeline import Pipeline
    from tests.support.slack_client import SignedSlackClient
    from tests.support.slack_standin import SlackStandIn

    checks: list[tuple[str, bool]] = []
    secret = uuid.uuid4().hex  # a fresh signing secret, never printed
    config = load_config(fixed)
    users = {REQUESTER: "riley", APPROVER: "alex"}
    async with SlackStandIn(
        SLACK_TOKEN, channels={SLACK_CHANNEL: "releases"}, users=users
    ) as standin:
        port = _free_port()
        env = {
            **os.environ,
            "SLACK_BOT_TOKEN": SLACK_TOKEN,
            "SLACK_SIGNING_SECRET": secret,
            "SLACK_API_URL": standin.api_url,
            "REDIS_URL": redis_url,
            "AIBRIX_CONFIG": str(fixed),
        }
        serve_log = (logs / "serve.log").open("ab")
        server = subprocess.Popen(
            [BOT, "serve", "--host", "127.0.0.1", "--port", str(port)],
            stdout=serve_log,
            stderr=serve_log,
            env=env,
        )
        print(
            f"  started aibrix-bot serve on 127.0.0.1:{port} (Slack stand-in at {standin.api_url})"
        )
        redis = await connect(RedisSettings.from_dsn(redis_url, key_prefix=config.queue.key_prefix))
        pipeline = Pipeline(redis, config)
        url = f"http://127.0.0.1:{port}/slack/events"
        try:
            await _wait(lambda: _healthy(port), 30, "the bot to serve /healthz")
            async with SignedSlackClient(url, secret, standin=standin) as slack:

                async def state_of(version: str) -> State | None:
                    release = await pipeline.find_run(version)
                    return release.state if release else None

                async def reached(version: str, states: set[State]) -> bool:
                    return await _wait(
                        lambda: _in(state_of(version), states), 600, f"{version} to settle"
                    )

                print(f"  riley: /aibrix release {SLACK_BROKEN}   (runtime broken on arm64)")
                with _workers(broken, redis_url, logs):
                    await slack.slash_command(
                        f"release {SLACK_BROKEN}", user_id=REQUESTER, channel_id=SLACK_CHANNEL
                    )
                    await reached(SLACK_BROKEN, {State.BLOCKED, State.READY, State.FAILED})
                    blocked = await state_of(SLACK_BROKEN) is State.BLOCKED
                    await asyncio.sleep(2.5)  # let the notifier bring the message up to date
                checks.append(("Slack: the broken release is blocked", blocked))

                print(f"  riley: /aibrix release {SLACK_FIXED}   (the fix)")
                with _workers(fixed, redis_url, logs):
                    await slack.slash_command(
                        f"release {SLACK_FIXED}", user_id=REQUESTER, channel_id=SLACK_CHANNEL
                    )
                    await reached(SLACK_FIXED, {State.BLOCKED, State.READY, State.FAILED})
                    ready = await pipeline.find_run(SLACK_FIXED)
                    checks.append(
                        (
                            "Slack: the fixed release is ready",
                            ready is not None and ready.state is State.READY,
                        )
                    )
                    await asyncio.sleep(2.5)
                    status = ready.status_ts if ready else ""
                    print("  riley clicks Approve on their own release")
                    answers = len(standin.ephemerals_for(REQUESTER))
                    await slack.block_action(
                        "approve_release",
                        user_id=REQUESTER,
                        channel_id=SLACK_CHANNEL,
                        message_ts=status,
                    )

                    async def answered() -> bool:
                        return len(standin.ephemerals_for(REQUESTER)) > answers

                    # A click is answered after everything it writes, so after the answer
                    # the run shows whatever the click did.
                    told = await _wait(answered, 30, "the answer to riley's click")
                    after = await pipeline.find_run(SLACK_FIXED)
                    checks.append(
                        (
                            "Slack: self-approval is refused",
                            told
                            and after is not None
                            and not after.approvals
                            and after.state is State.READY,
                        )
                    )
                    print("  alex (an approver) clicks Approve")
                    await slack.block_action(
                        "approve_release",
                        user_id=APPROVER,
                        channel_id=SLACK_CHANNEL,
                        message_ts=status,
                    )
                    await reached(SLACK_FIXED, {State.PROMOTED, State.FAILED, State.BLOCKED})
                    done = await pipeline.find_run(SLACK_FIXED)
                    promoted = done is not None and done.state is State.PROMOTED
                    checks.append(("Slack: the approval promotes the release", promoted))
                    await asyncio.sleep(2.5)
                # The end of the story: where runtime stands, on every registry.
                checks.append(await inspect_runtime(slack, standin, REQUESTER, SLACK_CHANNEL))
            latest = await asyncio.to_thread(
                _inspect_json,
                *(f"{config.repository}/{c}:latest" for c in config.component_names),
            )
            checks.append(
                (
                    "promotion wrote :latest from the verified digests",
                    all(
                        r["digest"] == done.indexes[c].digest
                        for r, c in zip(latest, config.component_names, strict=True)
                    )
                    if done
                    else False,
                )
            )
        finally:
            server.terminate()
            server.wait(timeout=20)
            await redis.aclose()
        OUTPUT.mkdir(exist_ok=True)
        text = standin.render_text(SLACK_CHANNEL)
        (OUTPUT / "channel.txt").write_text(text)
        html = standin.write_html(SLACK_CHANNEL, OUTPUT / "channel.html")
        _say("the #releases channel as the team saw it")
        print(text)
        print(f"\n  written: {OUTPUT / 'channel.txt'} and {html}")
    return checks


async def inspect_runtime(
    slack: Any, standin: Any, user: str, channel: str, timeout: float = 60
) -> tuple[str, bool]:
    """`/aibrix inspect runtime` in the channel: runtime's card, every version on every
    registry and mirror, answered to `user` (the demo's last step; a test runs it alone
    against a release it makes)."""
    print(f"  {standin.user_name(user) or user}: /aibrix inspect runtime")
    before = len(standin.ephemerals_for(user))
    await slack.slash_command("inspect runtime", user_id=user, channel_id=channel)

    async def answered() -> bool:
        return any(
            "versions, registries and mirrors" in json.dumps(e.blocks or [])
            for e in standin.ephemerals_for(user)[before:]
        )

    shown = await _wait(answered, timeout, "runtime's card")
    return ("Slack: /aibrix inspect runtime shows runtime's card", shown)


async def _healthy(port: int) -> bool:
    import aiohttp

    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/healthz") as r,
        ):
            return r.status == 200
    except aiohttp.ClientError:
        return False


async def _in(state: Awaitable[object], states: set[Any]) -> bool:
    return await state in states


def run_demo() -> int:
    from tests.support.sample_history import LabAddresses, make_sample_history

    lab = _lab_values()
    redis_url = lab["AIBRIX_LAB_REDIS_URL"]
    started = time.monotonic()
    checks: list[tuple[str, bool]] = []
    with tempfile.TemporaryDirectory(prefix="aibrix-demo-") as tmp:
        workdir = Path(tmp)
        logs = workdir / "logs"
        logs.mkdir()
        # The bare repositories a git source is read from, the demo's own (the plan, the
        # workers and the bot all read it from the environment).
        os.environ["AIBRIX_SOURCE_CACHE"] = str(workdir / "source-cache")
        (workdir / "incident").mkdir()

        _say("1. the incident, replayed with real Buildx")
        checks.append(
            ("the gate catches the arm64-only tag", _replay_incident(lab, workdir / "incident"))
        )

        prefix = f"aibrix-demo-{uuid.uuid4().hex[:6]}"
        registry = lab["AIBRIX_LAB_REGISTRY"]
        history = workdir / "sample"
        print(f"  the sample project as a git repository, with tags: {history}")
        addresses = LabAddresses(registry, lab["AIBRIX_LAB_MIRROR_REGISTRY"])
        for version, commit in make_sample_history(history, lab=addresses).items():
            print(f"    {version} {commit[:12]}")
        broken = _demo_config(
            SAMPLE / "aibrix-sample-broken-arm64.toml",
            workdir / "broken.toml",
            prefix,
            addresses,
            history,
        )
        fixed = _demo_config(
            SAMPLE / "aibrix-sample.toml", workdir / "fixed.toml", prefix, addresses, history
        )
        broken_version = "v0.4.0-rc.1"

        _say(f"2. release {broken_version} of the sample project, runtime broken on arm64")
        with _workers(broken, redis_url, logs):
            code = _release(broken, redis_url, broken_version)
        checks.append(("the broken release is blocked (exit 1)", code == 1))
        runtime_tag = f"{registry}/{prefix}/runtime:{broken_version}"
        print(f"  $ aibrix-bot inspect {runtime_tag}")
        [absent] = _inspect_json(runtime_tag)
        print(f"  {absent['verdict']}: {absent['error']}")
        checks.append(("runtime's release tag was never written", absent["verdict"] == "error"))

        _say("3. the fix, and a release of each layout: v0.4.1 (before v0.5) and v0.7.0 (today)")
        checks += _release_both_layouts(fixed, redis_url, registry, prefix, logs)

        _say("4. the same story in Slack: /aibrix release, the live message, the approval gate")
        slack_prefix = f"aibrix-demo-slack-{uuid.uuid4().hex[:6]}"
        slack_broken = _demo_config(
            SAMPLE / "aibrix-sample-broken-arm64.toml",
            workdir / "s-broken.toml",
            slack_prefix,
            addresses,
            history,
        )
        slack_fixed = _demo_config(
            SAMPLE / "aibrix-sample.toml",
            workdir / "s-fixed.toml",
            slack_prefix,
            addresses,
            history,
        )
        checks += asyncio.run(_slack_story(slack_broken, slack_fixed, redis_url, registry, logs))

    _say(f"summary ({time.monotonic() - started:.0f} s)")
    for what, ok in checks:
        print(f"  [{'ok' if ok else 'FAILED'}] {what}")
    if not all(ok for _, ok in checks):
        print("demo: something did not go as the story says (see above)", file=sys.stderr)
        return 1
    return 0
