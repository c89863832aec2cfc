"""The README's main command: the demo tells its whole story and checks it."""

from __future__ import annotations

import subprocess

from tests.conftest import REPO, Lab


def test_demo_runs_end_to_end(lab: Lab, redis_url: str, docker_available: None) -> None:
    result = subprocess.run(
        [str(REPO / ".venv" / "bin" / "aibrix-bot"), "demo"],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "no matching manifest for linux/amd64 in the manifest list entries" in result.stdout
    assert "runtime v0.4.0-rc.1 failed to build for linux/arm64" in result.stdout
    # Both layouts of the sample's history released (issue 13): before v0.5 and today's.
    for line in (
        "[ok] the release of v0.4.1 is ready (exit 0)",
        "[ok] every tag of v0.4.1 passes the gate",
        "[ok] the plan of v0.7.0 is clean, 6 components",
        "[ok] the plan builds metadata-service and runtime once (Dockerfile.python)",
        "[ok] every tag of v0.7.0 passes the gate",
    ):
        assert line in result.stdout
    assert "[FAILED]" not in result.stdout
