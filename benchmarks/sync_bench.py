"""Benchmark: sync a release of 5 components from registry A to registry B over a slow path.

Each component has linux/amd64 and linux/arm64 images of 3 layers of 10 MB of random
data each (real tar layers, so docker can pull them): 30 distinct layers, 300 MB. Both
registries are reached through an in-process TCP proxy that adds 25 ms each way. On the
same run, cold (empty destination) and warm (everything there already):

    aibrix-bot sync      `aibrix-bot sync VERSION --to MIRROR` as a user runs it: one
                         process (start-up included), every component, every platform
    (a) skopeo loop      `skopeo copy --all --src-tls-verify=false --dest-tls-verify=false`
                         per image, one after the other
    (b) docker loop      the original script: `docker pull` / `docker tag` / `docker push`
                         per image (copies only this host's platform, and recompresses)

Bytes sent are counted at the destination's proxy (everything written towards B,
HTTP included), next to the size of the blobs that had to arrive.

    .venv/bin/python benchmarks/sync_bench.py [--runs 3] [--peer-runs 1] [--delay 0.025]

The project's bytecode is compiled first (`compileall`), as an installed package and the
image have it: with PYTHONDONTWRITEBYTECODE set, an editable checkout would otherwise
recompile every module on every run. After the timed runs, one more cold/warm pair runs
with `--json` to show the engine's own time (the report's `seconds`, after start-up).

Needs the lab (scripts/lab up). Prints every run, medians, ratios and the load average;
asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.conftest import lab_dir, load_lab  # noqa: E402
from tests.support.netproxy import LatencyProxy  # noqa: E402
from tests.support.oci_push import OciPusher  # noqa: E402

BOT = str(REPO / ".venv" / "bin" / "aibrix-bot")
COMPONENTS = (
    "controller-manager",
    "gateway-plugins",
    "metadata-service",
    "kvcache-watcher",
    "runtime",
)
PLATFORMS = (("linux", "amd64"), ("linux", "arm64"))
LAYERS = 3
LAYER_BYTES = 10 * 1000 * 1000
VERSION = "v1.0.0"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tar_layer(name: str, size: int) -> bytes:
    """An uncompressed tar holding one file of random bytes."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = size
        info.mtime = 0
        tar.addfile(info, io.BytesIO(os.urandom(size)))
    return buffer.getvalue()


async def seed(registry: str, namespace: str) -> int:
    """Push the release to `registry`; returns the bytes of its distinct blobs."""
    pusher = OciPusher(registry)
    blob_bytes = 0
    async with aiohttp.ClientSession() as session:

        async def component(name: str) -> int:
            repo = f"{namespace}/{name}"
            entries = []
            pushed = 0
            for os_name, arch in PLATFORMS:
                layers = [tar_layer(f"{name}-{arch}-{i}", LAYER_BYTES) for i in range(LAYERS)]
                digests = await asyncio.gather(*(pusher.blob(session, repo, x) for x in layers))
                config = json.dumps(
                    {
                        "architecture": arch,
                        "os": os_name,
                        "config": {"Cmd": ["/bin/true"]},
                        "rootfs": {"type": "layers", "diff_ids": list(digests)},
                    }
                ).encode()
                config_digest = await pusher.blob(session, repo, config)
                pushed += sum(len(x) for x in layers) + len(config)
                manifest = {
                    "schemaVersion": 2,
                    "mediaType": OCI_MANIFEST,
                    "config": {
                        "mediaType": CONFIG_TYPE,
                        "digest": config_digest,
                        "size": len(config),
                    },
                    "layers": [
                        {"mediaType": LAYER_TYPE, "digest": d, "size": len(x)}
                        for d, x in zip(digests, layers, strict=True)
                    ],
                }
                raw = json.dumps(manifest).encode()
                put = await pusher.manifest(session, repo, sha(raw), manifest)
                entries.append(
                    {
                        "mediaType": OCI_MANIFEST,
                        "digest": put.digest,
                        "size": put.size,
                        "platform": {"os": os_name, "architecture": arch},
                    }
                )
            await pusher.manifest(
                session,
                repo,
                VERSION,
                {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries},
            )
            return pushed

        for size in await asyncio.gather(*(component(c) for c in COMPONENTS)):
            blob_bytes += size
    return blob_bytes


class _Reader:
    """Reads in chunks of up to 1 MiB (the proxy's own 64 KiB reads cost more CPU than the
    copies being measured), counting what passes."""

    def __init__(self, reader: asyncio.StreamReader, count: Callable[[int], None]) -> None:
        self.reader = reader
        self.count = count

    async def read(self, n: int) -> bytes:
        data = await self.reader.read(max(n, 1 << 20))
        self.count(len(data))
        return data


class CountingProxy(LatencyProxy):
    """The latency proxy (25 ms each way, one round trip to connect), counting the bytes
    clients send towards the registry."""

    bytes_up = 0

    def _up(self, count: int) -> None:
        self.bytes_up += count

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        try:
            await asyncio.sleep(2 * self.delay)
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            await asyncio.gather(
                self._pipe(_Reader(reader, self._up), up_writer),  # type: ignore[arg-type]
                self._pipe(_Reader(up_reader, lambda n: None), writer),  # type: ignore[arg-type]
            )
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)  # type: ignore[arg-type]
            with contextlib.suppress(Exception):
                writer.close()


@dataclass
class Run:
    seconds: float
    bytes_sent: int
    engine: float | None = None  # from a --json report: inside the process, after start-up


PYTHON = str(REPO / ".venv" / "bin" / "python")


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


async def timed(proxy: CountingProxy, *commands: list[str], env: dict[str, str]) -> Run:
    """Run commands one after the other; wall time and bytes sent towards the proxy."""
    before = proxy.bytes_up
    engine: float | None = None
    start = time.perf_counter()
    for command in commands:
        process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
        )
        out, err = await process.communicate()
        if process.returncode != 0:
            raise SystemExit(
                f"{' '.join(command)} failed ({process.returncode}):\n"
                f"{(out + err).decode()[-2000:]}"
            )
        if "--json" in command:
            engine = (engine or 0.0) + float(json.loads(out)["seconds"])
    return Run(time.perf_counter() - start, proxy.bytes_up - before, engine)


def write_config(directory: Path, source: str, mirror: str) -> Path:
    path = directory / "bench.toml"
    lines = [f'repository = "{source}"', "[source]", f'path = "{directory}"', "[mirrors]"]
    lines.append(f'bench = "{mirror}"')
    for name in COMPONENTS:
        lines += ["[[components]]", f'name = "{name}"']
    path.write_text("\n".join(lines) + "\n")
    return path


def docker_rmi(refs: list[str]) -> None:
    subprocess.run(["docker", "image", "rm", "-f", *refs], capture_output=True)


def median(runs: list[Run]) -> Run:
    ordered = sorted(runs, key=lambda r: r.seconds)
    return ordered[len(ordered) // 2]


def mb(count: int) -> str:
    return f"{count / 1e6:.1f} MB"


def compile_bytecode() -> None:
    subprocess.run(
        [PYTHON, "-m", "compileall", "-q", "bot", "jobs", "handlers"], cwd=REPO, check=True
    )


def ratio(peer: Run, ours: Run) -> str:
    return f"{peer.seconds / ours.seconds:.1f}x"


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3, help="runs of aibrix-bot sync")
    parser.add_argument("--peer-runs", type=int, default=1, help="runs of each peer")
    parser.add_argument("--delay", type=float, default=0.025, help="seconds added each way")
    parser.add_argument("--skip-docker", action="store_true")
    args = parser.parse_args()

    lab = load_lab(lab_dir())
    registry_a, registry_b = lab.registry, lab.mirror_registry
    namespace = f"bench-sync-{uuid.uuid4().hex[:6]}"
    print(f"before: {load()}", flush=True)
    print(
        f"seeding {len(COMPONENTS)} components x {len(PLATFORMS)} platforms x {LAYERS} layers "
        f"of {mb(LAYER_BYTES)} into {registry_a}/{namespace} ...",
        flush=True,
    )
    blob_bytes = await seed(registry_a, namespace)
    amd64_bytes = blob_bytes // len(PLATFORMS)  # near enough: what the docker loop must move
    compile_bytecode()

    proxy_a = CountingProxy("127.0.0.1", int(registry_a.rsplit(":", 1)[1]), args.delay)
    proxy_b = CountingProxy("127.0.0.1", int(registry_b.rsplit(":", 1)[1]), args.delay)
    await proxy_a.__aenter__()
    await proxy_b.__aenter__()
    results: dict[str, dict[str, list[Run]]] = {}
    loads: dict[str, str] = {}
    breakdown: dict[str, Run] = {}
    try:
        with tempfile.TemporaryDirectory() as scratch:
            docker_config = Path(scratch, "docker")
            docker_config.mkdir()
            (docker_config / "config.json").write_text("{}")
            env = {**os.environ, "DOCKER_CONFIG": str(docker_config)}
            source = f"{proxy_a.address}/{namespace}"

            startup = [
                (await timed(proxy_b, [BOT, "sync", "--help"], env=env)).seconds for _ in range(5)
            ]

            def sync_command(json_report: bool = False) -> list[str]:
                target = f"{proxy_b.address}/{namespace}-ours-{uuid.uuid4().hex[:6]}"
                config = write_config(Path(scratch), source, target)
                command = [BOT, "sync", VERSION, "--to", "bench", "--config", str(config)]
                return [*command, "--json"] if json_report else command

            ours: dict[str, list[Run]] = {"cold": [], "warm": []}
            for _ in range(args.runs):
                command = sync_command()
                ours["cold"].append(await timed(proxy_b, command, env=env))
                ours["warm"].append(await timed(proxy_b, command, env=env))
            results["aibrix-bot sync"] = ours
            loads["aibrix-bot sync"] = load()
            command = sync_command(json_report=True)
            breakdown["cold"] = await timed(proxy_b, command, env=env)
            breakdown["warm"] = await timed(proxy_b, command, env=env)

            skopeo: dict[str, list[Run]] = {"cold": [], "warm": []}
            for _ in range(args.peer_runs):
                target = f"{proxy_b.address}/{namespace}-skopeo-{uuid.uuid4().hex[:6]}"
                commands = [
                    [
                        "skopeo",
                        "copy",
                        "--all",
                        "--src-tls-verify=false",
                        "--dest-tls-verify=false",
                        f"docker://{source}/{c}:{VERSION}",
                        f"docker://{target}/{c}:{VERSION}",
                    ]
                    for c in COMPONENTS
                ]
                skopeo["cold"].append(await timed(proxy_b, *commands, env=env))
                skopeo["warm"].append(await timed(proxy_b, *commands, env=env))
            results["(a) skopeo copy --all loop"] = skopeo
            loads["(a) skopeo copy --all loop"] = load()

            if not args.skip_docker:
                docker: dict[str, list[Run]] = {"cold": [], "warm": []}
                for _ in range(args.peer_runs):
                    target = f"{proxy_b.address}/{namespace}-docker-{uuid.uuid4().hex[:6]}"
                    pulled = [f"{source}/{c}:{VERSION}" for c in COMPONENTS]
                    pushed = [f"{target}/{c}:{VERSION}" for c in COMPONENTS]
                    docker_rmi(pulled + pushed)
                    commands = []
                    for src, dst in zip(pulled, pushed, strict=True):
                        commands += [
                            ["docker", "pull", "-q", src],
                            ["docker", "tag", src, dst],
                            ["docker", "push", "-q", dst],
                        ]
                    docker["cold"].append(await timed(proxy_b, *commands, env=env))
                    docker["warm"].append(await timed(proxy_b, *commands, env=env))
                    docker_rmi(pulled + pushed)
                results["(b) docker pull/tag/push loop"] = docker
                loads["(b) docker pull/tag/push loop"] = load()
    finally:
        await proxy_a.__aexit__(None, None, None)
        await proxy_b.__aexit__(None, None, None)

    rtt = 2 * args.delay
    print()
    print(
        f"release: {len(COMPONENTS)} components x {len(PLATFORMS)} platforms x {LAYERS} layers "
        f"= {len(COMPONENTS) * len(PLATFORMS) * LAYERS} blobs of random data, {mb(blob_bytes)}; "
        f"{rtt * 1000:.0f} ms round trip to each registry"
    )
    print(
        f"aibrix-bot start-up (sync --help), median of {len(startup)}: "
        f"{statistics.median(startup):.3f} s ({', '.join(f'{x:.3f}' for x in startup)})"
    )
    print()
    print(f"{'method':34} {'run':>3} {'cold':>9} {'sent':>10} {'warm':>9} {'sent':>10}")
    for name, runs in results.items():
        for number, (cold, warm) in enumerate(zip(runs["cold"], runs["warm"], strict=True), 1):
            print(
                f"{name:34} {number:3} {cold.seconds:8.2f}s {mb(cold.bytes_sent):>10} "
                f"{warm.seconds:8.3f}s {mb(warm.bytes_sent):>10}"
            )
        print(f"{'':34} {'':3} after it: {loads[name]}")
    ours_cold = median(results["aibrix-bot sync"]["cold"])
    ours_warm = median(results["aibrix-bot sync"]["warm"])
    peer_cold = median(results["(a) skopeo copy --all loop"]["cold"])
    peer_warm = median(results["(a) skopeo copy --all loop"]["warm"])
    print()
    print(
        f"blobs to copy: {mb(blob_bytes)} (both platforms); the docker loop copies only "
        f"this host's platform (~{mb(amd64_bytes)}) and rewrites the digests"
    )
    sent = ", ".join(f"{r.bytes_sent / blob_bytes:.4f}" for r in results["aibrix-bot sync"]["cold"])
    print(
        f"aibrix-bot bytes sent cold / blob bytes, each run: {sent} "
        "(1 plus HTTP headers: no blob byte sent twice)"
    )
    print(
        "medians: cold: skopeo / aibrix-bot = "
        f"{ratio(peer_cold, ours_cold)} (target >= 5x); each run: "
        + ", ".join(ratio(peer_cold, r) for r in results["aibrix-bot sync"]["cold"])
    )
    print(
        "medians: warm: skopeo / aibrix-bot = "
        f"{ratio(peer_warm, ours_warm)} (target >= 20x); each run: "
        + ", ".join(ratio(peer_warm, r) for r in results["aibrix-bot sync"]["warm"])
    )
    cold_engine, warm_engine = breakdown["cold"].engine, breakdown["warm"].engine
    assert cold_engine is not None and warm_engine is not None
    print(
        f"one more pair with --json: cold {breakdown['cold'].seconds:.2f} s wall, "
        f"{cold_engine:.2f} s in the engine; warm {breakdown['warm'].seconds:.3f} s wall, "
        f"{warm_engine:.3f} s in the engine (the rest: start-up, rendering, exit)"
    )
    if "(b) docker pull/tag/push loop" in results:
        docker_cold = median(results["(b) docker pull/tag/push loop"]["cold"])
        docker_warm = median(results["(b) docker pull/tag/push loop"]["warm"])
        print(
            f"medians: cold: docker loop / aibrix-bot = {ratio(docker_cold, ours_cold)}; "
            f"warm: {ratio(docker_warm, ours_warm)}"
        )
    print(f"after: {load()}")


if __name__ == "__main__":
    asyncio.run(main())
