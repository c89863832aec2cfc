"""The core's pure values and decisions: versions, platforms, references, manifests,
verdicts, copy plans, approvals, permissions, the release state table, the config model
and the core's sentences. No I/O here: every function takes values and returns values."""
