"""Benchmark: sync a release of 5 components from registry A to registry B over a slow path.

Each component has linux/amd64 and linux/arm64 images of 3 layers of 10 MB of random
data each (real tar layers, so docker can pull them): 30 distinct layers, 300 MB. Both
registries are reached through an in-process TCP proxy that adds 25 ms each way. On the
same run, cold (empty destination) and warm (everything there already):

    aibrix-bot sync      one process, every component, every platform
    (a) skopeo loop      `skopeo copy --all --src-tls-verify=false --dest-tls-verify=false`
                         per image, one after the other
    (b) docker loop      the original script: `docker pull` / `docker tag` / `docker push`
                         per image (copies only this host's platform, and recompresses)

Bytes sent are counted at the destination's proxy (everything written towards B,
HTTP included), next to the size of the blobs that had to arrive.

    .venv/bin/python benchmarks/sync_bench.py [--runs 3] [--peer-runs 1] [--delay 0.025]

Needs the lab (scripts/lab up). Prints medians and ratios; asserts nothing.
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

from tests.netproxy import LatencyProxy  # noqa: E402
from tests.oci_push import OciPusher  # noqa: E402

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


def lab_values() -> dict[str, str]:
    lab_dir = Path(os.environ.get("AIBRIX_LAB_DIR", REPO / ".lab"))
    values = {}
    for line in (lab_dir / "lab.env").read_text().splitlines():
        key, _, value = line.partition("=")
        values[key] = value
    return values


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
    engine: float = 0.0  # aibrix-bot only: inside the process, after its imports


# The CLI's entry point, timing itself after its imports: what the long-running bot and
# the promotion step pay (they start up once).
TIMED_CLI = """
import sys, time
from bot.cli import main
start = time.perf_counter()
code = main(sys.argv[1:])
print(f"engine-seconds={time.perf_counter() - start:.6f}", file=sys.stderr)
sys.exit(code)
"""
PYTHON = str(REPO / ".venv" / "bin" / "python")


async def timed(proxy: CountingProxy, *commands: list[str], env: dict[str, str]) -> Run:
    """Run commands one after the other; wall time and bytes sent towards the proxy."""
    before = proxy.bytes_up
    engine = 0.0
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
        for line in err.decode().splitlines():
            if line.startswith("engine-seconds="):
                engine += float(line.split("=", 1)[1])
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


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3, help="runs of aibrix-bot sync")
    parser.add_argument("--peer-runs", type=int, default=1, help="runs of each peer")
    parser.add_argument("--delay", type=float, default=0.025, help="seconds added each way")
    parser.add_argument("--skip-docker", action="store_true")
    args = parser.parse_args()

    lab = lab_values()
    registry_a, registry_b = lab["AIBRIX_LAB_REGISTRY"], lab["AIBRIX_LAB_MIRROR_REGISTRY"]
    namespace = f"bench-sync-{uuid.uuid4().hex[:6]}"
    print(
        f"seeding {len(COMPONENTS)} components x {len(PLATFORMS)} platforms x {LAYERS} layers "
        f"of {mb(LAYER_BYTES)} into {registry_a}/{namespace} ...",
        flush=True,
    )
    blob_bytes = await seed(registry_a, namespace)
    amd64_bytes = blob_bytes // len(PLATFORMS)  # near enough: what the docker loop must move

    proxy_a = CountingProxy("127.0.0.1", int(registry_a.rsplit(":", 1)[1]), args.delay)
    proxy_b = CountingProxy("127.0.0.1", int(registry_b.rsplit(":", 1)[1]), args.delay)
    await proxy_a.__aenter__()
    await proxy_b.__aenter__()
    results: dict[str, dict[str, list[Run]]] = {}
    try:
        with tempfile.TemporaryDirectory() as scratch:
            docker_config = Path(scratch, "docker")
            docker_config.mkdir()
            (docker_config / "config.json").write_text("{}")
            env = {**os.environ, "DOCKER_CONFIG": str(docker_config)}
            source = f"{proxy_a.address}/{namespace}"

            startup = [
                (await timed(proxy_b, [BOT, "sync", "--help"], env=env)).seconds for _ in range(3)
            ]

            ours: dict[str, list[Run]] = {"cold": [], "warm": []}
            for _ in range(args.runs):
                target = f"{proxy_b.address}/{namespace}-ours-{uuid.uuid4().hex[:6]}"
                config = write_config(Path(scratch), source, target)
                command = [PYTHON, "-c", TIMED_CLI, "sync", VERSION, "--to", "bench"]
                command += ["--config", str(config)]
                ours["cold"].append(await timed(proxy_b, command, env=env))
                ours["warm"].append(await timed(proxy_b, command, env=env))
            results["aibrix-bot sync"] = ours

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
    print(f"aibrix-bot start-up (sync --help), median of 3: {statistics.median(startup):.3f} s")
    print()
    print(f"{'method':34} {'cold':>9} {'sent':>10} {'warm':>9} {'sent':>10}")
    for name, runs in results.items():
        cold, warm = median(runs["cold"]), median(runs["warm"])
        print(
            f"{name:34} {cold.seconds:8.2f}s {mb(cold.bytes_sent):>10} "
            f"{warm.seconds:8.2f}s {mb(warm.bytes_sent):>10}"
        )
    ours_cold = median(results["aibrix-bot sync"]["cold"])
    ours_warm = median(results["aibrix-bot sync"]["warm"])
    peer_cold = median(results["(a) skopeo copy --all loop"]["cold"])
    peer_warm = median(results["(a) skopeo copy --all loop"]["warm"])
    print()
    print(
        f"blobs to copy: {mb(blob_bytes)} (both platforms); the docker loop copies only "
        f"this host's platform (~{mb(amd64_bytes)}) and rewrites the digests"
    )
    print(
        f"aibrix-bot bytes sent cold / blob bytes: {ours_cold.bytes_sent / blob_bytes:.3f} "
        "(1.000 plus HTTP: no blob byte sent twice)"
    )
    print(
        f"cold: skopeo / aibrix-bot = {peer_cold.seconds / ours_cold.seconds:.1f}x (target >= 5x)"
    )
    print(
        f"warm: skopeo / aibrix-bot = {peer_warm.seconds / ours_warm.seconds:.1f}x (target >= 20x)"
    )
    print(
        f"engine alone (inside the process, after imports): cold {ours_cold.engine:.2f} s "
        f"({peer_cold.seconds / ours_cold.engine:.1f}x), warm {ours_warm.engine:.3f} s "
        f"({peer_warm.seconds / ours_warm.engine:.1f}x)"
    )
    if "(b) docker pull/tag/push loop" in results:
        docker_cold = median(results["(b) docker pull/tag/push loop"]["cold"])
        docker_warm = median(results["(b) docker pull/tag/push loop"]["warm"])
        print(
            f"cold: docker loop / aibrix-bot = {docker_cold.seconds / ours_cold.seconds:.1f}x; "
            f"warm: {docker_warm.seconds / ours_warm.seconds:.1f}x"
        )


if __name__ == "__main__":
    asyncio.run(main())
