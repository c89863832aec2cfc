"""Queue throughput: N no-op jobs through enqueue -> claim -> ack, against a real Redis.

    .venv/bin/python benchmarks/queue_throughput.py [--redis-url URL] [--jobs N]

Prints the raw Redis round-trip floor first (PING and XADD, one at a time and
pipelined), then jobs per second end to end, with the ratio against the target of
2,000 jobs/s. A producer and the consumers run at the same time in one event loop, as
the bot and a worker would; consumers claim in batches (`--claim-count`) and ack each
job on its own, the way a worker finishes jobs one by one. The "batched" run also
enqueues with `enqueue_many` and acks with `ack_many`, as a bot fanning out one
release's builds would. Keys live under a throwaway prefix and are deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import redis.asyncio as aioredis  # noqa: E402
from redis.utils import HIREDIS_AVAILABLE  # noqa: E402

from jobs.store.connections import RedisSettings, connect  # noqa: E402
from jobs.store.keys import Keys  # noqa: E402
from jobs.store.queue import Job, JobKind, Queue, QueueSettings  # noqa: E402

TARGET_JOBS_PER_S = 2000
PLATFORM = "linux/amd64"


def default_redis_url() -> str:
    lab_env = Path(os.environ.get("AIBRIX_LAB_DIR", REPO / ".lab")) / "lab.env"
    if lab_env.exists():
        for line in lab_env.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "AIBRIX_LAB_REDIS_URL":
                return value.strip()
    return "redis://127.0.0.1:6379/0"


def make_jobs(n: int, tag: str) -> list[Job]:
    return [
        Job(
            kind=JobKind.BUILD,
            release="v0.0.0-bench",
            run_id=tag,
            component="noop",
            platform=PLATFORM,
            source_revision=f"{i:08x}",
            payload={"n": str(i)},
        )
        for i in range(n)
    ]


async def timed(label: str, n: int, run: Callable[[], Awaitable[None]]) -> float:
    start = time.perf_counter()
    await run()
    elapsed = time.perf_counter() - start
    rate = n / elapsed
    print(f"  {label:<44} {rate:>10,.0f} /s   ({elapsed * 1e6 / n:7.1f} us each)")
    return rate


async def floor(redis: aioredis.Redis, keys: Keys, n: int) -> None:
    print(f"Redis round-trip floor ({n:,} operations each):")
    stream = keys.job_stream("linux/riscv64")  # a throwaway stream under the prefix

    async def ping_each() -> None:
        for _ in range(n):
            await redis.ping()

    async def ping_pipelined() -> None:
        for start in range(0, n, 100):
            async with redis.pipeline(transaction=False) as pipe:
                for _ in range(min(100, n - start)):
                    pipe.ping()
                await pipe.execute()

    async def xadd_each() -> None:
        for i in range(n):
            await redis.xadd(stream, {"n": str(i)})

    async def xadd_pipelined() -> None:
        for start in range(0, n, 100):
            async with redis.pipeline(transaction=False) as pipe:
                for i in range(start, min(start + 100, n)):
                    pipe.xadd(stream, {"n": str(i)})
                await pipe.execute()

    await timed("PING, one at a time", n, ping_each)
    await timed("PING, pipelined by 100", n, ping_pipelined)
    await timed("XADD, one at a time", n, xadd_each)
    await timed("XADD, pipelined by 100", n, xadd_pipelined)
    await redis.delete(stream)


async def through_queue(
    redis: aioredis.Redis,
    keys: Keys,
    n: int,
    consumers: int,
    claim_count: int,
    batched: bool,
) -> float:
    queue = Queue(redis, keys, QueueSettings())
    stream = keys.job_stream(PLATFORM)
    await queue.ensure_group(stream)
    jobs = make_jobs(n, uuid.uuid4().hex[:8])
    acked = 0
    produced = asyncio.Event()

    async def produce() -> None:
        if batched:
            for start in range(0, n, 100):
                results = await queue.enqueue_many(jobs[start : start + 100])
                assert all(r.added for r in results)
        else:
            for job in jobs:
                assert (await queue.enqueue(job)).added
        produced.set()

    async def consume(number: int) -> None:
        nonlocal acked
        consumer = f"bench:{PLATFORM}:{number}"
        while acked < n:
            leases = await queue.claim(stream, consumer, count=claim_count, block_ms=50)
            if batched and leases:
                oks = await queue.ack_many(leases, [None] * len(leases))
                assert all(oks)
            else:
                for lease in leases:
                    assert await queue.ack(lease)
            acked += len(leases)

    async def run() -> None:
        await asyncio.gather(produce(), *(consume(i) for i in range(consumers)))

    how = "enqueue_many + ack_many" if batched else "enqueue + ack one by one"
    label = f"{consumers} consumer(s), claim {claim_count}, {how}"
    rate = await timed(label, n, run)
    depth = await queue.depth(stream)
    assert depth.total == 0, depth
    assert queue.stats.claimed == n, queue.stats
    return rate


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default=default_redis_url())
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--claim-count", type=int, default=50)
    args = parser.parse_args()

    settings = RedisSettings.from_dsn(
        args.redis_url, key_prefix=f"aibrix-bench:{uuid.uuid4().hex[:8]}"
    )
    redis = await connect(settings)
    keys = settings.keys
    info = await redis.info("server")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"Redis {info.get('redis_version')} at {settings.dsn}, {os.cpu_count()} CPUs "
        f"(load {load}), {args.jobs:,} jobs, Python {sys.version.split()[0]}, "
        f"hiredis parser: {'yes' if HIREDIS_AVAILABLE else 'no'}\n"
    )
    try:
        await floor(redis, keys, min(args.jobs, 10_000))
        print(f"\nJobs end to end (enqueue -> claim -> ack), target {TARGET_JOBS_PER_S:,}/s:")
        rates = {}
        for consumers in (1, 2):
            for batched in (False, True):
                rates[(consumers, batched)] = await through_queue(
                    redis, keys, args.jobs, consumers, args.claim_count, batched
                )
        print()
        for (consumers, batched), rate in rates.items():
            how = "batched" if batched else "one by one"
            print(
                f"  {consumers} consumer(s), {how:<10}: {rate:>8,.0f} jobs/s = "
                f"{rate / TARGET_JOBS_PER_S:.2f}x target"
            )
    finally:
        stale = [key async for key in redis.scan_iter(match=f"{keys.prefix}:*", count=1000)]
        if stale:
            await redis.delete(*stale)
        await redis.aclose()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
