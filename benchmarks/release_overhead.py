"""Benchmark: orchestration overhead of a full release of the sample project.

Two real workers (linux/amd64 native, linux/arm64 under QEMU) and real Redis. Prints
the wall time from request to ready, the longest build chain (per platform, the sum of
its builds' durations, since each worker builds one at a time), and the difference:
the time spent in queueing, fan-in, merges and verification. Target: under 1 s.

    .venv/bin/python benchmarks/release_overhead.py [--runs 3]

Asserts nothing. Builds may come from the Buildx cache; the chain is measured, not
assumed, so the overhead stays honest either way.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from jobs.store.releases import State  # noqa: E402
from tests.conftest import lab_dir, load_lab  # noqa: E402
from tests.support.pipeline import Setup, toml_config  # noqa: E402


def ms(event_id: str) -> int:
    return int(event_id.split("-")[0])


async def one_run(setup: Setup, version: str) -> tuple[float, float]:
    records = await setup.records()
    try:
        code, out, err = await setup.cli("release", version, "--no-follow")
        if code != 0:
            raise SystemExit(out + err)
        await setup.wait_for(version, [State.READY, State.BLOCKED], timeout=600)
        events = [e for e in await records.events(count=100_000) if e.version == version]
        ready = max(
            ms(e.id) for e in events if e.type == "state" and e.fields.get("state") == "ready"
        )
        created = min(ms(e.id) for e in events if e.type == "created")
        wall = (ready - created) / 1000
        began: dict[tuple[str, str], int] = {}
        chain: dict[str, float] = {}
        for e in events:
            if e.type != "build":
                continue
            key = (e.fields["component"], e.fields["platform"])
            if e.fields.get("build_state") == "building":
                began.setdefault(key, ms(e.id))
            elif e.fields.get("build_state") == "pushed" and key in began:
                chain[key[1]] = chain.get(key[1], 0.0) + (ms(e.id) - began[key]) / 1000
        return wall, max(chain.values())
    finally:
        await records.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    lab = load_lab(lab_dir())
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "bench.toml"
        config.write_text(
            toml_config(lab, namespace="bench-release", key_prefix=f"bench-{uuid.uuid4().hex[:6]}")
        )
        logs = Path(tmp) / "logs"
        logs.mkdir()
        setup = Setup(lab, config, lab.redis_url, logs)
        setup.start_worker("linux/amd64")
        setup.start_worker("linux/arm64")
        try:
            results = [await one_run(setup, f"v9.0.{i}") for i in range(args.runs)]
        finally:
            setup.stop_all()
    for i, (wall, chain) in enumerate(results):
        print(
            f"run {i}: request to ready {wall:.2f} s, longest build chain {chain:.2f} s, overhead {wall - chain:.2f} s"
        )
    overhead = statistics.median(w - c for w, c in results)
    print(
        f"median orchestration overhead: {overhead:.2f} s per release (target < 1 s: {overhead / 1.0:.2f}x of the budget)"
    )


if __name__ == "__main__":
    asyncio.run(main())
