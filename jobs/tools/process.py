"""The one place that runs subprocesses.

Commands are argument lists, never shell strings, so no user text is ever interpreted
by a shell. Failures raise `CommandError` carrying the command, exit code and stderr
(as python-on-whales does), trimmed so a huge build log cannot flood a message.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from jobs.domain.errors import Failed

STDERR_TAIL_CHARS = 4000


class CommandError(Failed):
    def __init__(self, command: Sequence[str], returncode: int | None, stderr: str) -> None:
        self.command = list(command)
        self.returncode = returncode
        self.stderr = stderr[-STDERR_TAIL_CHARS:]
        status = "timed out" if returncode is None else f"exited with {returncode}"
        super().__init__(f"{self.command[0]} {status}: {self.stderr.strip()[-500:]}")


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
