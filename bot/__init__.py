"""Slack app: settings, app wiring, server, notifier, Block Kit rendering, CLI."""
