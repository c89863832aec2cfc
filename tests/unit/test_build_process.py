"""The build process this code owns (issue 16, item 5): its arguments, and a stop that
really ends it even when it prints nothing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from jobs.tools.buildx_command import buildx_build_command
from jobs.tools.process import CommandError, Stopped, stream_lines


def test_the_command_names_every_option_as_its_own_argument() -> None:
    command = buildx_build_command(
        ["docker"],
        Path("/src"),
        {
            "file": Path("/src/Dockerfile"),
            "platforms": ["linux/arm64"],
            "build_args": {"A": "1 2", "B": "$(x)"},
            "metadata_file": Path("/tmp/m.json"),
            "progress": "plain",
            "provenance": False,
            "builder": "lab",
            "tags": ["r/x:v1-arm64"],
            "push": True,
            "build_contexts": {"base": "docker-image://r/base@sha256:" + "a" * 64},
        },
    )
    assert command[:3] == ["docker", "buildx", "build"]
    assert command[-1] == "/src"
    at = command.index("A=1 2")
    assert command[at - 1] == "--build-arg"
    assert "B=$(x)" in command and "--provenance=false" in command and "--push" in command
    assert command[command.index("--platform") + 1] == "linux/arm64"
    assert command[command.index("--tag") + 1] == "r/x:v1-arm64"
    assert command[command.index("--builder") + 1] == "lab"


def test_a_silent_process_is_stopped_on_request() -> None:
    asked = []

    def stop() -> bool:
        asked.append(1)
        return len(asked) > 2

    silent = [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"]
    lines = []
    with pytest.raises(Stopped):
        for line in stream_lines(silent, stop, poll_s=0.05):
            lines.append(line)
    assert lines == ["started\n"]  # the flag was asked again while no line came


def test_a_failing_process_says_its_exit_status() -> None:
    with pytest.raises(CommandError) as raised:
        list(stream_lines([sys.executable, "-c", "raise SystemExit(3)"], lambda: False))
    assert raised.value.returncode == 3


def test_a_killed_parent_leaves_no_build_behind(tmp_path: Path) -> None:
    """A SIGKILLed worker's Buildx must not go on to push after its job was reclaimed."""
    import os
    import signal
    import subprocess
    import time

    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\n"
            "from jobs.tools.process import stream_lines\n"
            "child = [sys.executable, '-c', 'import os, sys, time; "
            f'open(sys.argv[1], "w").write(str(os.getpid())); time.sleep(60)\', {str(pid_file)!r}]\n'
            "for _ in stream_lines(child, lambda: False): pass\n",
        ],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    try:
        deadline = time.monotonic() + 60  # two interpreters starting on a loaded machine
        while not (pid_file.exists() and pid_file.read_text()):
            assert time.monotonic() < deadline, "the build process never started"
            time.sleep(0.05)
        child = int(pid_file.read_text())
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the positive signal: the child has exited
            if not _running(child):
                return
            time.sleep(0.05)
        raise AssertionError("the build process outlived its killed parent")
    finally:
        if parent.poll() is None:
            parent.kill()


def _running(pid: int) -> bool:
    """Whether `pid` still runs. An exited child of a dead parent waits as a zombie until
    init reaps it, on init's schedule: exited is what counts here (it can push nothing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
