"""Command and button handlers: parse, authorize, call into jobs, render."""
