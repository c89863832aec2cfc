"""Benchmark: what building without root costs (issue 14 item 1).

The same small build (the sample project's runtime component: nine busybox steps on the
lab base image, pushed to the lab registry) on the lab's root Docker daemon and on its
rootless one (`scripts/lab up`, AIBRIX_LAB_ROOTLESS_DOCKER_HOST in lab.env), for
linux/amd64 (native) and linux/arm64 (QEMU); and, to show what the rootless daemon's
storage and network cost where they matter, one build whose only step writes a layer of
--blob-mb MiB of random bytes (linux/amd64). Every build runs with --no-cache so its RUN
steps really run; one warm-up per daemon and case (not counted) puts the base image in
each daemon's store. Runs alternate between the daemons so a load spike from other
work on the machine falls on both. Prints the median and spread per daemon and platform,
and the ratio rootless / root.

    .venv/bin/python benchmarks/rootless_build.py [--runs 5] [--blob-mb 32] [--rootless-host ...]

Asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from python_on_whales import DockerClient

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.conftest import lab_dir, load_lab  # noqa: E402
from tests.support.pipeline import SAMPLE, SAMPLE_COMPONENTS  # noqa: E402

PLATFORMS = ("linux/amd64", "linux/arm64")
SAMPLE_DOCKERFILE = SAMPLE / SAMPLE_COMPONENTS["runtime"]


def rootless_host_from_lab(directory: Path) -> str:
    for line in (directory / "lab.env").read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "AIBRIX_LAB_ROOTLESS_DOCKER_HOST":
            return value.strip()
    raise SystemExit(
        "lab.env names no rootless Docker daemon (AIBRIX_LAB_ROOTLESS_DOCKER_HOST): "
        "start it with scripts/lab up, or scripts/lab rootless"
    )


def one_build(
    client: DockerClient,
    dockerfile: Path,
    platform: str,
    tag: str,
    base_image: str,
    metadata: Path,
) -> float:
    started = time.perf_counter()
    client.buildx.build(
        SAMPLE,
        file=dockerfile,
        platforms=[platform],
        build_args={"BASE_IMAGE": base_image},
        tags=[tag],
        push=True,
        cache=False,
        provenance=False,
        metadata_file=metadata,
        progress=False,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--blob-mb", type=int, default=32)
    parser.add_argument("--rootless-host", help="default: from the lab's lab.env")
    args = parser.parse_args()
    lab = load_lab(lab_dir())
    rootless_host = args.rootless_host or rootless_host_from_lab(lab.dir)
    daemons = {"root": DockerClient(), "rootless": DockerClient(host=rootless_host)}
    for name, client in daemons.items():
        options = client.info().security_options or []
        print(f"{name:9} {client.client_config.host or 'default'}: {', '.join(options)}")
    repo = f"{lab.registry}/bench-rootless-{uuid.uuid4().hex[:8]}"
    times: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        metadata = Path(tmp) / "metadata.json"
        blob = Path(tmp) / "Dockerfile.blob"
        blob.write_text(
            "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"
            f"RUN head -c {args.blob_mb * 1024 * 1024} /dev/urandom > /blob\n"
        )
        cases = [(f"runtime {p}", SAMPLE_DOCKERFILE, p) for p in PLATFORMS]
        cases.append((f"{args.blob_mb} MiB layer linux/amd64", blob, "linux/amd64"))
        for run in range(args.runs + 1):  # run 0 is the warm-up
            for case, (label, dockerfile, platform) in enumerate(cases):
                for name, client in daemons.items():
                    tag = f"{repo}/case{case}:{name}-{run}"
                    seconds = one_build(client, dockerfile, platform, tag, lab.base_image, metadata)
                    if run:
                        times.setdefault((name, label), []).append(seconds)
    print(f"\n{args.runs} uncached build+push runs each (after one warm-up), seconds:")
    print(f"{'case':28} {'daemon':9} {'median':>7} {'min':>7} {'max':>7}")
    for label, _, _ in cases:
        medians = {}
        for name in daemons:
            figures = times[(name, label)]
            medians[name] = statistics.median(figures)
            print(
                f"{label:28} {name:9} {medians[name]:7.2f} {min(figures):7.2f} {max(figures):7.2f}"
            )
        print(f"{label:28} ratio rootless / root: {medians['rootless'] / medians['root']:.2f}")


if __name__ == "__main__":
    main()
