"""`python -m demo`: the demo without the CLI."""

from demo.run import run_demo

raise SystemExit(run_demo())
