"""The one place that runs subprocesses.

Commands are argument lists, never shell strings, so no user text is ever interpreted
by a shell. Failures raise `CommandError` carrying the command, exit code and stderr
(as python-on-whales does), trimmed so a huge build log cannot flood a message.

Two ways to run one: `run`, bounded in time, for a command whose output is read when it
ends; and `stream_lines`, for a build: its output line by line as it comes, and a stop
that really ends it. python-on-whales streams a build's log from a process it never
kills: closing its generator (a cancel) left Buildx building and pushing in the
background, and the stop flag was only looked at when a log line arrived, which a long
`RUN` step may not send for minutes (issue 16, item 5). Here the flag is polled every
`poll_s` whether or not a line came, and a stop interrupts the process (SIGINT, as
Ctrl-C: Buildx cancels the solve, its push included), then kills it after a grace
period; a worker that dies takes the process with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO

from jobs.domain.errors import Failed

STDERR_TAIL_CHARS = 4000
POLL_S = 0.1
GRACE_S = 5.0


class CommandError(Failed):
    def __init__(self, command: Sequence[str], returncode: int | None, stderr: str) -> None:
        self.command = list(command)
        self.returncode = returncode
        self.stderr = stderr[-STDERR_TAIL_CHARS:]
        status = "timed out" if returncode is None else f"exited with {returncode}"
        detail = self.stderr.strip()[-500:]
        super().__init__(f"{self.command[0]} {status}" + (f": {detail}" if detail else ""))


class Stopped(RuntimeError):
    """A streamed process was stopped on request; it is gone."""


@dataclass(frozen=True)
class Completed:
    command: list[str]
    returncode: int
    stdout: str
    stderr: str


def run(
    command: Sequence[str],
    *,
    input_text: str | None = None,
    timeout: float = 60.0,
    check: bool = True,
) -> Completed:
    """Run `command` (an argument list) and return its output; raise CommandError on failure."""
    argv = list(command)
    try:
        result = subprocess.run(
            argv,
            input=input_text,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            shell=False,
        )
    except subprocess.TimeoutExpired as error:
        stderr = error.stderr.decode() if isinstance(error.stderr, bytes) else (error.stderr or "")
        raise CommandError(argv, None, stderr) from None
    except FileNotFoundError:
        raise CommandError(argv, 127, f"{argv[0]}: command not found") from None
    if check and result.returncode != 0:
        raise CommandError(argv, result.returncode, result.stderr)
    return Completed(argv, result.returncode, result.stdout, result.stderr)


async def run_async(
    command: Sequence[str],
    *,
    input_text: str | None = None,
    timeout: float = 60.0,
    check: bool = True,
) -> Completed:
    """`run` off the event loop, for asyncio callers."""
    return await asyncio.to_thread(
        run, command, input_text=input_text, timeout=timeout, check=check
    )


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
    """Interrupt the process as Ctrl-C does, then kill it if it lingers; wait for it."""
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
    `Stopped` raised. A non-zero exit raises `CommandError` (its output was the lines).
    Whatever ends the iteration (the caller closing it included), the process is not left
    running."""
    argv = list(command)
    process = subprocess.Popen(
        argv,
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
            raise CommandError(argv, code, "")
    finally:
        _stop(process, grace_s)
        reader.join(1)
        process.stdout.close()
