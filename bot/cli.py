"""The aibrix-bot command line."""

import sys


def main(argv: list[str] | None = None) -> int:
    print("aibrix-bot: not implemented yet", file=sys.stderr)
    return 2
