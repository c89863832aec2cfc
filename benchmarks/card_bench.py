"""Benchmark: a component's card of 4 tags on 4 registries at 50 ms round trip.

The source is the lab's registry, the mirrors the lab's mirror and two registries this
starts (`docker-registry` on ports 5212 and 5213); every one is reached through an
in-process TCP proxy that adds 25 ms each way. The card reads the source's tag list,
then each of the 4 tags (3 release tags found in the list and `latest`) on each of the 4
registries: 16 cells, each an index, its 2 children and their 2 configs.

    .venv/bin/python benchmarks/card_bench.py [--runs 5] [--delay 0.025]

Needs the lab (scripts/lab up). Prints medians: the card read in-process (what the bot
does per `/aibrix inspect COMPONENT`) and `aibrix-bot inspect COMPONENT --json` as a
process; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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

from jobs.domain.config_reader import load_config  # noqa: E402
from jobs.registry.client import RegistryClient, RegistrySettings  # noqa: E402
from jobs.usecases.component_card import card_settings, read_card  # noqa: E402
from tests.conftest import lab_dir, load_lab  # noqa: E402
from tests.support.distribution import distribution  # noqa: E402
from tests.support.netproxy import LatencyProxy  # noqa: E402
from tests.support.oci_push import OciPusher, entry  # noqa: E402

BOT = str(REPO / ".venv" / "bin" / "aibrix-bot")
TAGS = ("v0.1.0", "v0.2.0", "v0.3.0")


async def seed(registries: list[str], namespace: str) -> None:
    async with aiohttp.ClientSession() as session:
        for registry in registries:
            pusher = OciPusher(registry)
            repo = f"{namespace}/runtime"
            for tag in TAGS:
                amd = await pusher.image(
                    session, repo, os="linux", arch="amd64", payload=tag.encode()
                )
                arm = await pusher.image(
                    session, repo, os="linux", arch="arm64", payload=tag.encode()
                )
                entries = [entry(amd, "linux", "amd64"), entry(arm, "linux", "arm64")]
                await pusher.index(session, repo, tag, entries)
                if tag == TAGS[-1]:
                    await pusher.index(session, repo, "latest", entries)


def config_text(addresses: list[str], namespace: str) -> str:
    return (
        "\n".join(
            [
                f'repository = "{addresses[0]}/{namespace}"',
                'platforms = ["linux/amd64", "linux/arm64"]',
                "[source]",
                f'path = "{REPO / "sample"}"',
                "[mirrors]",
                *(f'm{i} = "{a}/{namespace}"' for i, a in enumerate(addresses[1:], 1)),
                "[promotion]",
                'tags = ["latest"]',
                "[inspect]",
                f"registry_tags = {len(TAGS)}",
                "[[components]]",
                'name = "runtime"',
                'dockerfile = "build/container/Dockerfile.runtime"',
            ]
        )
        + "\n"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--delay", type=float, default=0.025, help="seconds added each way")
    args = parser.parse_args()

    lab = load_lab(lab_dir())
    namespace = f"cardbench-{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory() as work:
        async with contextlib.AsyncExitStack() as stack:
            extra = []
            for port in (5212, 5213):
                directory = Path(work, str(port))
                directory.mkdir()
                extra.append(
                    await stack.enter_async_context(
                        distribution(directory, host=f"127.0.0.1:{port}")
                    )
                )
            registries = [lab.registry, lab.mirror_registry, *extra]
            await seed(registries, namespace)
            proxies = [
                await stack.enter_async_context(
                    LatencyProxy("127.0.0.1", int(r.rsplit(":", 1)[1]), args.delay)
                )
                for r in registries
            ]
            path = Path(work, "aibrix.toml")
            path.write_text(config_text([p.address for p in proxies], namespace))
            config = load_config(path)

            inside = []
            for _ in range(args.runs):
                start = time.perf_counter()
                async with RegistryClient(card_settings(RegistrySettings())) as client:
                    card = await read_card(client, config, "runtime", [])
                inside.append(time.perf_counter() - start)
                if len(card.tags) != 4 or len(card.columns) != 4 or card.problems:
                    raise SystemExit(f"unexpected card: {card.problems or card.tags}")

            env = {**os.environ, "PYTHONPATH": str(REPO), "AIBRIX_CONFIG": str(path)}
            env.pop("REDIS_URL", None)
            process_times = []
            for _ in range(args.runs):
                start = time.perf_counter()
                process = await asyncio.create_subprocess_exec(
                    BOT, "inspect", "runtime", "--json", env=env,
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                )  # fmt: skip
                out, err = await process.communicate()
                process_times.append(time.perf_counter() - start)
                if process.returncode != 0:
                    raise SystemExit(f"exit {process.returncode}: {err.decode()[-500:]}")
                data = json.loads(out)
                assert len(data["tags"]) == 4

    rtt = 2 * args.delay
    print(f"card: 4 tags x 4 registries = 16 cells, {rtt * 1000:.0f} ms round trip")
    print(f"read_card in-process, median of {args.runs}: {statistics.median(inside):.3f} s")
    print(
        f"aibrix-bot inspect runtime --json, median of {args.runs}: "
        f"{statistics.median(process_times):.3f} s"
    )
    # The floor: tag list (connect + GET), then a cell's three dependent reads (index,
    # children, configs), each a round trip: 5 round trips.
    print(f"round-trip floor in-process: 5 x {rtt * 1000:.0f} ms = {5 * rtt:.3f} s")


if __name__ == "__main__":
    asyncio.run(main())
