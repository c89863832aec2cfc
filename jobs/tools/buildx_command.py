"""The argument list of `docker buildx build`, built from validated values; pure.

`jobs.tools.build` runs it with `jobs.tools.process.stream_lines`, its own process rather
than python-on-whales' stream, so that a cancel really stops the build; this module
writes the same flags python-on-whales would for the options the build uses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def _pairs(mapping: Mapping[str, str], separator: str = "=") -> list[str]:
    return [f"{key}{separator}{value}" for key, value in mapping.items()]


_KNOWN_OPTIONS = frozenset(
    {
        "progress", "build_args", "build_contexts", "labels", "builder", "provenance",
        "push", "metadata_file", "file", "target", "output", "platforms", "tags",
        "stream_logs",  # python-on-whales' own switch: our process always streams
    }
)  # fmt: skip


def buildx_build_command(
    base: Sequence[str], context: Path, kwargs: Mapping[str, Any]
) -> list[str]:
    """The argument list of `docker buildx build` for the options `jobs.tools.build` uses
    (the same flags python-on-whales writes for them); pure. An option it does not know
    is refused, never dropped: a lost `--label` would lose the idempotency key."""
    unknown = set(kwargs) - _KNOWN_OPTIONS
    if unknown:
        raise ValueError(f"buildx options not translated: {', '.join(sorted(unknown))}")
    command = [*base, "buildx", "build"]
    if kwargs.get("progress"):
        command += ["--progress", str(kwargs["progress"])]
    for item in _pairs(kwargs.get("build_args", {})):
        command += ["--build-arg", item]
    for item in _pairs(kwargs.get("build_contexts", {})):
        command += ["--build-context", item]
    for item in _pairs(kwargs.get("labels", {})):
        command += ["--label", item]
    if kwargs.get("builder"):
        command += ["--builder", str(kwargs["builder"])]
    if "provenance" in kwargs:
        command.append(f"--provenance={str(bool(kwargs['provenance'])).lower()}")
    if kwargs.get("push"):
        command.append("--push")
    if kwargs.get("metadata_file"):
        command += ["--metadata-file", str(kwargs["metadata_file"])]
    if kwargs.get("file"):
        command += ["--file", str(kwargs["file"])]
    if kwargs.get("target"):
        command += ["--target", str(kwargs["target"])]
    if kwargs.get("output"):
        command += ["--output", ",".join(_pairs(kwargs["output"]))]
    if kwargs.get("platforms"):
        command += ["--platform", ",".join(str(p) for p in kwargs["platforms"])]
    for tag in kwargs.get("tags", ()):
        command += ["--tag", str(tag)]
    command.append(str(context))
    return command
