"""A redis-server of a test's own, which the test may stop and start again (the shared lab
Redis is never stopped). Its data is kept in an append-only file, so a restart comes back
with what was written, as a production Redis with persistence does."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
from pathlib import Path

import redis.asyncio as aioredis


class OwnRedis:
    def __init__(self, port: int, directory: Path) -> None:
        found = shutil.which("redis-server")
        if found is None:
            raise RuntimeError("redis-server is not installed (scripts/lab up installs it)")
        self.binary = found
        self.port = port
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        subprocess.run(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--daemonize",
                "yes",
                "--dir",
                str(self.dir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--pidfile",
                str(self.dir / "pid"),
                "--logfile",
                str(self.dir / "log"),
            ],
            check=True,
        )
        client = aioredis.Redis(port=self.port)
        try:
            async with asyncio.timeout(10):
                while True:
                    with contextlib.suppress(Exception):
                        if await client.ping():
                            return
                    await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    def stop(self) -> None:
        """Shut the server down (no save: the append-only file already holds everything)."""
        subprocess.run(
            ["redis-cli", "-p", str(self.port), "shutdown", "nosave"],
            check=False,
            capture_output=True,
        )
        pidfile = self.dir / "pid"
        with contextlib.suppress(FileNotFoundError):
            # redis removes its pid file on a clean exit: wait for it.
            for _ in range(200):
                if not pidfile.exists():
                    return
                subprocess.run(["sleep", "0.05"], check=False)
