"""`aibrix-bot demo`: the incident, replayed on the local lab, and the gate catching it.

Builds a tiny image for linux/amd64 and linux/arm64 with real Buildx (arm64 under
QEMU), publishes a healthy release tag merged from pinned digests, then replays the
incident: a second pipeline rewrites the shared tag with an arm64-only list. The
inspection gate passes the first and stops the second with one plain sentence.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from python_on_whales import docker

from bot.cli import main as cli_main

LAB_ENV = "AIBRIX_LAB_DIR"


def _lab_values() -> dict[str, str]:
    lab_dir = Path(os.environ.get(LAB_ENV, Path(__file__).resolve().parent.parent / ".lab"))
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


def _build(context: Path, repo: str, version: str, arch: str) -> str:
    meta = context / f"meta-{arch}.json"
    docker.buildx.build(
        context,
        platforms=[f"linux/{arch}"],
        tags=[f"{repo}:{version}-{arch}"],
        push=True,
        metadata_file=meta,
        progress=False,
    )
    digest = str(json.loads(meta.read_text())["containerimage.digest"])
    print(f"  built {repo} for linux/{arch}: {digest}")
    return digest


def run_demo() -> int:
    lab = _lab_values()
    registry = lab["AIBRIX_LAB_REGISTRY"]
    namespace = f"{registry}/demo-{uuid.uuid4().hex[:6]}"
    version = "v0.3.0-rc.2"
    with tempfile.TemporaryDirectory() as tmp:
        context = Path(tmp)
        (context / "Dockerfile").write_text(
            f"FROM {lab['AIBRIX_LAB_BASE_IMAGE']}\n"
            "RUN echo built on $(uname -m) > /etc/aibrix-build\n"
            'CMD ["cat", "/etc/aibrix-build"]\n'
        )
        _say("building gateway-plugins and runtime for linux/amd64 and linux/arm64 (Buildx)")
        digests = {}
        for component in ("gateway-plugins", "runtime"):
            repo = f"{namespace}/{component}"
            digests[component] = {
                arch: _build(context, repo, version, arch) for arch in ("amd64", "arm64")
            }

        _say("publishing gateway-plugins from pinned digests of both platforms (one writer)")
        gateway = f"{namespace}/gateway-plugins"
        docker.buildx.imagetools.create(
            [f"{gateway}@{d}" for d in digests["gateway-plugins"].values()],
            tags=[f"{gateway}:{version}"],
        )
        _say("replaying the incident: the arm64 pipeline overwrites runtime's tag last")
        runtime = f"{namespace}/runtime"
        docker.buildx.imagetools.create(
            [f"{runtime}@{d}" for d in digests["runtime"].values()], tags=[f"{runtime}:{version}"]
        )
        docker.buildx.imagetools.create(
            [f"{runtime}@{digests['runtime']['arm64']}"], tags=[f"{runtime}:{version}"]
        )
        _say(f"what the old mirror script saw: docker pull {runtime}:{version}")
        pull = subprocess.run(
            ["docker", "pull", f"{runtime}:{version}"], capture_output=True, text=True, check=False
        )
        print("  " + (pull.stderr.strip() or pull.stdout.strip()).replace("\n", "\n  "))

        _say("the gate: aibrix-bot inspect on both release tags")
        code = cli_main(["inspect", f"{gateway}:{version}", f"{runtime}:{version}"])
        print(f"\n  aibrix-bot inspect exit status: {code} (0 = all ok, 1 = a platform is missing)")
        if code != 1:
            print("demo: expected the gate to stop the incident (exit 1)", file=sys.stderr)
            return 1
        captured = io.StringIO()
        with contextlib.redirect_stdout(captured):
            cli_main(["inspect", "--json", f"{gateway}:{version}", f"{runtime}:{version}"])
        verdicts = [(r["verdict"], r["missing"]) for r in json.loads(captured.getvalue())]
        if verdicts != [("ok", []), ("missing", ["linux/amd64"])]:
            print(f"demo: unexpected verdicts {verdicts}", file=sys.stderr)
            return 1
    _say(
        "demo done: the healthy release passes, the incident is caught before any mirror copies it"
    )
    return 0
