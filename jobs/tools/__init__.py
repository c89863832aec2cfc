"""Subprocess tools: the bounded process runner, git (source), buildx (build) and
imagetools (merge)."""
