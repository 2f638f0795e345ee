"""Names and paths any file may carry, checked alike by the sweep and plan loaders and the launcher."""

from __future__ import annotations

import re

MAX_SAFE_NAME = 200
SAFE_NAME_RE = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_SAFE_NAME - 1}}}")
"""A name that becomes a file or directory name (sweep names, run ids): never `..`, `/` or hidden."""

ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
ENV_PATTERN_RE = re.compile(r"[A-Za-z0-9_*?\[\]!]+")
"""An `env_passthrough` entry: a variable name or a shell-style pattern (`LC_*`)."""


def log_dir_problem(log_dir: str) -> str | None:
    """Why `log_dir` cannot hold the state (None when it can): empty, or a relative path that
    climbs out of the plan's directory with `..`. An absolute path is the user's explicit choice."""
    if not log_dir.strip():
        return "`launch.log_dir` is empty"
    if "\0" in log_dir:
        return "`launch.log_dir` contains a NUL byte"
    if not log_dir.startswith("/") and ".." in log_dir.replace("\\", "/").split("/"):
        return f"`launch.log_dir` {log_dir!r} climbs out of the plan's directory ('..'); give a path below it, or an absolute one"
    return None


def printable(text: str) -> str:
    """`text` with each character that is not printable (an escape sequence's ESC, a line break)
    written as Python writes it (`\\x1b`, `\\n`): what a command or a sweep's value puts in a message
    never drives the terminal that shows it."""
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
