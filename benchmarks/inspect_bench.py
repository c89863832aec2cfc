"""Benchmark: inspect 5 components on 3 registries (15 references) over a slow path.

Every registry is reached through an in-process TCP proxy that adds 25 ms each way.
Compared on the same run with the peer, a loop of
`docker buildx imagetools inspect --format '{{json .Image}}'` per reference (which
reads the same index, children and configs), and with the round-trip floor:
process start-up plus connect, index, children and configs (4 round trips; the
htpasswd registry costs one more for its challenge).

    .venv/bin/python benchmarks/inspect_bench.py [--runs 5] [--peer-runs 3] [--delay 0.025]

Needs the lab (scripts/lab up). Prints medians and ratios; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.conftest import lab_dir, load_lab  # noqa: E402
from tests.support.netproxy import LatencyProxy  # noqa: E402
from tests.support.oci_push import OciPusher, entry  # noqa: E402

BOT = str(REPO / ".venv" / "bin" / "aibrix-bot")
COMPONENTS = (
    "controller-manager",
    "gateway-plugins",
    "metadata-service",
    "kvcache-watcher",
    "runtime",
)


async def seed(registries: list[tuple[str, str | None, str | None]], namespace: str) -> None:
    async with aiohttp.ClientSession() as session:
        for registry, user, password in registries:
            pusher = OciPusher(registry, user, password)
            for component in COMPONENTS:
                repo = f"{namespace}/{component}"
                amd = await pusher.image(
                    session, repo, os="linux", arch="amd64", payload=component.encode()
                )
                arm = await pusher.image(
                    session, repo, os="linux", arch="arm64", payload=component.encode()
                )
                await pusher.index(
                    session,
                    repo,
                    "v0.3.0",
                    [entry(amd, "linux", "amd64"), entry(arm, "linux", "arm64")],
                )


async def timed(*command: str, env: dict[str, str]) -> tuple[float, int, bytes]:
    start = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    out, err = await process.communicate()
    elapsed = time.perf_counter() - start
    assert process.returncode is not None
    if process.returncode != 0:
        sys.stderr.write(err.decode()[-2000:])
    return elapsed, process.returncode, out


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--peer-runs", type=int, default=3)
    parser.add_argument("--delay", type=float, default=0.025, help="seconds added each way")
    args = parser.parse_args()

    lab = load_lab(lab_dir())
    targets = [
        (lab.registry, None, None),
        (lab.mirror_registry, None, None),
        (lab.auth_registry, lab.auth_user, lab.auth_password),
    ]
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    await seed(targets, namespace)

    proxies = [LatencyProxy("127.0.0.1", int(t[0].rsplit(":", 1)[1]), args.delay) for t in targets]
    for proxy in proxies:
        await proxy.__aenter__()
    try:
        with tempfile.TemporaryDirectory() as config_dir:
            auth = base64.b64encode(f"{lab.auth_user}:{lab.auth_password}".encode()).decode()
            Path(config_dir, "config.json").write_text(
                json.dumps({"auths": {proxies[2].address: {"auth": auth}}})
            )
            env = {**os.environ, "DOCKER_CONFIG": config_dir}
            refs = [f"{p.address}/{namespace}/{c}:v0.3.0" for p in proxies for c in COMPONENTS]

            startup = []
            for _ in range(args.runs):
                elapsed, _, _ = await timed(BOT, "inspect", "--help", env=env)
                startup.append(elapsed)

            ours = []
            for _ in range(args.runs):
                elapsed, code, out = await timed(BOT, "inspect", "--json", *refs, env=env)
                verdicts = {r["verdict"] for r in json.loads(out)}
                if code != 0 or verdicts != {"ok"}:
                    raise SystemExit(f"aibrix-bot inspect did not pass: exit {code}, {verdicts}")
                ours.append(elapsed)

            peer = []
            for _ in range(args.peer_runs):
                start = time.perf_counter()
                for ref in refs:
                    _, code, _ = await timed(
                        "docker",
                        "buildx",
                        "imagetools",
                        "inspect",
                        "--format",
                        "{{json .Image}}",
                        ref,
                        env=env,
                    )
                    if code != 0:
                        raise SystemExit(f"imagetools inspect failed for {ref}")
                peer.append(time.perf_counter() - start)
    finally:
        for proxy in proxies:
            await proxy.__aexit__(None, None, None)

    rtt = 2 * args.delay
    floor = statistics.median(startup) + 4 * rtt
    ours_median = statistics.median(ours)
    peer_median = statistics.median(peer)
    print(f"references: {len(refs)} (5 components x 3 registries), {rtt * 1000:.0f} ms round trip")
    print(f"aibrix-bot inspect (all 15, one process), median of {args.runs}: {ours_median:.3f} s")
    print(f"docker buildx imagetools inspect loop, median of {args.peer_runs}: {peer_median:.3f} s")
    print(
        f"round-trip floor: start-up {statistics.median(startup):.3f} s + 4 x {rtt * 1000:.0f} ms = {floor:.3f} s"
    )
    print(f"speed-up against the imagetools loop: {peer_median / ours_median:.1f}x (target >= 10x)")
    print(f"ratio to the round-trip floor: {ours_median / floor:.2f}x (target <= 2x)")


if __name__ == "__main__":
    asyncio.run(main())
