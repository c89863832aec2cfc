"""The local end-to-end demo (`scripts/demo`, `aibrix-bot demo` from a clone).

Why a top-level package of its own, beside `bot/`, `handlers/` and `jobs/` rather than
inside them: the demo drives the product with the Slack stand-in and the signed test
client (tests/support), which must not ship, and the image copies only `bot/`,
`handlers/` and `jobs/`. It is not a test either, so it does not sit under `tests/`.
`aibrix-bot demo` loads it by name only when asked, from the clone the CLI runs in.
"""
