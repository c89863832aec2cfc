"""Structured logs: one JSON object per line, with release, component and platform on
every line (empty when not set), carried by context variables so concurrent jobs in
one worker never mix their fields."""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterator

release_var: contextvars.ContextVar[str] = contextvars.ContextVar("release", default="")
component_var: contextvars.ContextVar[str] = contextvars.ContextVar("component", default="")
platform_var: contextvars.ContextVar[str] = contextvars.ContextVar("platform", default="")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "release": release_var.get(),
            "component": component_var.get(),
            "platform": platform_var.get(),
            "message": record.getMessage(),
        }
        if record.exc_info and record.exc_info[0] is not None:
            entry["error"] = f"{record.exc_info[0].__name__}: {record.exc_info[1]}"
        return json.dumps(entry)


@contextlib.contextmanager
def job_context(release: str, component: str, platform: str) -> Iterator[None]:
    tokens = (release_var.set(release), component_var.set(component), platform_var.set(platform))
    try:
        yield
    finally:
        release_var.reset(tokens[0])
        component_var.reset(tokens[1])
        platform_var.reset(tokens[2])


def configure(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Client libraries log request URLs at debug; keep them quiet either way.
    for noisy in ("python_on_whales", "aiohttp.access", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
