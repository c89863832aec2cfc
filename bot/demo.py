"""`aibrix-bot demo`: the whole story on the local lab, with real parts only.

1. The incident, replayed: two pipelines write one tag, the arm64 one last; `docker
   pull` fails on amd64 exactly as it did, and the inspection gate names the cause.
2. A release of the sample project (five components) through Redis and two workers
   (amd64 native, arm64 under QEMU) with runtime broken on arm64: the release is
   blocked, naming the component and platform, and runtime's release tag is never
   written.
3. The fix, and a second release that is ready: every tag a verified two-platform
   index built from pinned digests.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from python_on_whales import docker

from bot.cli import main as cli_main

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


def _demo_config(source: Path, target: Path, prefix: str, registry: str) -> Path:
    """The sample config with its own key prefix (a fresh run each time), absolute paths,
    and the lab's registry wherever the sample names the default one."""
    text = source.read_text().replace("127.0.0.1:5000", registry)
    text = re.sub(r'(?m)^key_prefix = ".*"$', f'key_prefix = "{prefix}"', text)
    text = re.sub(r'(?m)^path = "\."$', f'path = "{SAMPLE}"', text)
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


def run_demo() -> int:
    lab = _lab_values()
    redis_url = lab["AIBRIX_LAB_REDIS_URL"]
    started = time.monotonic()
    checks: list[tuple[str, bool]] = []
    with tempfile.TemporaryDirectory(prefix="aibrix-demo-") as tmp:
        workdir = Path(tmp)
        logs = workdir / "logs"
        logs.mkdir()
        (workdir / "incident").mkdir()

        _say("1. the incident, replayed with real Buildx")
        checks.append(
            ("the gate catches the arm64-only tag", _replay_incident(lab, workdir / "incident"))
        )

        prefix = f"aibrix-demo-{uuid.uuid4().hex[:6]}"
        registry = lab["AIBRIX_LAB_REGISTRY"]
        broken = _demo_config(
            SAMPLE / "aibrix-sample-broken-arm64.toml", workdir / "broken.toml", prefix, registry
        )
        fixed = _demo_config(
            SAMPLE / "aibrix-sample.toml", workdir / "fixed.toml", prefix, registry
        )
        broken_version, fixed_version = "v0.3.0-rc.1", "v0.3.0-rc.2"

        _say(f"2. release {broken_version} of the sample project, runtime broken on arm64")
        with _workers(broken, redis_url, logs):
            code = _release(broken, redis_url, broken_version)
        checks.append(("the broken release is blocked (exit 1)", code == 1))
        runtime_tag = f"{registry}/aibrix-sample/runtime:{broken_version}"
        print(f"  $ aibrix-bot inspect {runtime_tag}")
        [absent] = _inspect_json(runtime_tag)
        print(f"  {absent['verdict']}: {absent['error']}")
        checks.append(("runtime's release tag was never written", absent["verdict"] == "error"))

        _say(f"3. the fix, and release {fixed_version}")
        with _workers(fixed, redis_url, logs):
            code = _release(fixed, redis_url, fixed_version)
        checks.append(("the fixed release is ready (exit 0)", code == 0))
        components = (
            "controller-manager",
            "gateway-plugins",
            "metadata-service",
            "kvcache-watcher",
            "runtime",
        )
        refs = [
            f"{lab['AIBRIX_LAB_REGISTRY']}/aibrix-sample/{c}:{fixed_version}" for c in components
        ]
        print(f"  $ aibrix-bot inspect {' '.join(c + ':' + fixed_version for c in components)}")
        reports = _inspect_json(*refs)
        for report in reports:
            print(f"  {report['reference']}: {report['verdict']}")
        checks.append(
            ("every released tag passes the gate", all(r["verdict"] == "ok" for r in reports))
        )

    _say(f"summary ({time.monotonic() - started:.0f} s)")
    for what, ok in checks:
        print(f"  [{'ok' if ok else 'FAILED'}] {what}")
    if not all(ok for _, ok in checks):
        print("demo: something did not go as the story says (see above)", file=sys.stderr)
        return 1
    return 0
