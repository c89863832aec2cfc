"""`docker buildx build` as a process this code owns, so a stop really stops it.

python-on-whales streams a build's log from a process it never kills: closing its
generator (a cancel) left Buildx building and pushing in the background, and the stop
flag was only looked at when a log line arrived, which a long `RUN` step may not send for
minutes (issue 16, item 5). Here the flag is polled every `poll_s` whether or not a line
came, and a stop interrupts Buildx (SIGINT, as Ctrl-C: it cancels the solve, its push
included), then kills it after a grace period. The command line is an argument list
built from validated values (`buildx_build_command`), never a shell.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from jobs.domain.errors import Failed

POLL_S = 0.1
GRACE_S = 5.0


class Stopped(RuntimeError):
    """The build was stopped on request; the process is gone."""


class BuildxExited(Failed):
    """Buildx exited with a non-zero status."""

    def __init__(self, return_code: int) -> None:
        super().__init__(f"docker buildx build exited with {return_code}")
        self.return_code = return_code


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


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec (Linux): SIGINT when the worker dies, so a SIGKILLed
    worker leaves no Buildx behind to push after its job was reclaimed by another."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGINT)


def _read(stream: IO[bytes], lines: queue.Queue[bytes | None]) -> None:
    try:
        for raw in iter(stream.readline, b""):
            lines.put(raw)
    finally:
        lines.put(None)


def _stop(process: subprocess.Popen[bytes], grace_s: float) -> None:
    """Interrupt Buildx as Ctrl-C does, then kill it if it lingers; wait for it."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGINT)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait()


def stream_lines(
    command: Sequence[str],
    should_stop: Callable[[], bool],
    *,
    poll_s: float = POLL_S,
    grace_s: float = GRACE_S,
) -> Iterator[str]:
    """The process's output (stdout and stderr), line by line. `should_stop` is asked after
    every line and every `poll_s` without one; when it says so the process is stopped and
    `Stopped` raised. A non-zero exit raises `BuildxExited`. Whatever ends the iteration
    (the caller closing it included), the process is not left running."""
    process = subprocess.Popen(
        list(command),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
    )
    assert process.stdout is not None
    lines: queue.Queue[bytes | None] = queue.Queue()
    reader = threading.Thread(target=_read, args=(process.stdout, lines), daemon=True)
    reader.start()
    try:
        while True:
            try:
                raw = lines.get(timeout=poll_s)
            except queue.Empty:
                raw = b""
            if raw is None:
                break
            if raw:
                yield raw.decode(errors="replace")
            if should_stop():
                _stop(process, grace_s)
                raise Stopped("stopped on request")
        code = process.wait()
        if code != 0:
            raise BuildxExited(code)
    finally:
        _stop(process, grace_s)
        reader.join(1)
        process.stdout.close()
