"""When the command started: `--time-limit` counts from here. Imported first of the CLI (before
typer and rich load), so the console script's reading is its start, near enough."""

from __future__ import annotations

import time

STARTED = time.monotonic()
_started = STARTED


def mark_started(at: float | None = None) -> None:
    """Record when the command started (default: now)."""
    global _started
    _started = time.monotonic() if at is None else at


def command_started() -> float:
    """When the command started, as a `time.monotonic()` reading."""
    return _started
