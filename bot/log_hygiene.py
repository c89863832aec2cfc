"""What the Slack libraries may write to the log: the head of each message only.

Bolt and slack_sdk put request bodies, response_urls (capability URLs: whoever has one
may post to the channel) and header values into their log messages, at INFO and DEBUG
("Invalid request signature detected (signature: ..., body: ...)", "Sending a request -
url: https://hooks.slack.com/..."). The filter here keeps what a message says happened
and drops what follows: the text before its first "(", ":", "{", "[", "=", " - " or
newline, at most 120 characters. Tracebacks of the app's own errors are kept.
"""

from __future__ import annotations

import logging
import sys

LIBRARIES = ("slack_bolt", "slack_sdk")
_STOPS = ("(", ":", "{", "[", "=", " - ", "\n", "\r")
HEAD_LIMIT = 120
WITHHELD = "(a library message, withheld: it starts with request data)"


def head(message: str, limit: int = HEAD_LIMIT) -> str:
    cut = min((i for i in (message.find(stop) for stop in _STOPS) if i >= 0), default=-1)
    kept = (message if cut < 0 else message[:cut]).strip()[:limit].rstrip()
    return kept or WITHHELD


class HeadOnly(logging.Filter):
    """Rewrites a record to the head of its message, with no arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = head(record.getMessage())
        record.args = None
        return True


_FILTER = HeadOnly()


def guard(logger: logging.Logger) -> logging.Logger:
    if not any(isinstance(f, HeadOnly) for f in logger.filters):
        logger.addFilter(_FILTER)
    return logger


def guard_slack_libraries() -> None:
    """Filter every logger of the Slack libraries loaded so far. A logger filter applies
    to records made on that very logger, so each module's logger gets one; call again
    after importing more of them (Socket Mode)."""
    names = {name for name in sys.modules if name.split(".")[0] in LIBRARIES}
    names |= {name for name in logging.root.manager.loggerDict if name.split(".")[0] in LIBRARIES}
    for name in sorted(names):
        guard(logging.getLogger(name))
