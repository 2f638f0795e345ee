"""The one error type migbench raises for expected failures, caught once in the CLI.

Every error carries a message and, where we know one, a hint with the fix. Input errors carry a list
of problems, each naming the file, line and field, so that one pass reports everything wrong.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input file: where, which field, what, and how to fix it."""

    message: str
    file: str | None = None
    line: int | None = None
    field: str | None = None
    hint: str | None = None

    def where(self) -> str:
        parts = []
        if self.file:
            parts.append(self.file if self.line is None else f"{self.file}:{self.line}")
        if self.field:
            parts.append(self.field)
        return ": ".join(parts)

    def __str__(self) -> str:
        where = self.where()
        return f"{where}: {self.message}" if where else self.message


class MigbenchError(Exception):
    """An expected failure: printed as `Error: <message>` (+ `Hint:`), exit code 1, no traceback."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None, problems: list[Problem] | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.problems: list[Problem] = list(problems or [])

    def lines(self) -> list[tuple[str, str]]:
        """The printed form as (label, text) lines: `Error: `, each problem (indented, with its
        hint), then `Hint: `. The CLI styles the labels; plain writers join them."""
        out = [("Error: ", self.message)]
        for p in self.problems:
            out.append(("  ", str(p)))
            if p.hint:
                out.append(("    Hint: ", p.hint))
        if self.hint:
            out.append(("Hint: ", self.hint))
        return out

    def render(self) -> str:
        """Plain text, for logs and processes without the CLI."""
        return "\n".join(label + text for label, text in self.lines())


class UsageError(MigbenchError):
    """The command line itself is wrong (exit code 2, like typer/click usage errors)."""

    exit_code = 2


class InputError(MigbenchError):
    """A file the user wrote (sweep, plan, catalogue text) is malformed; `problems` lists each issue."""


class HardwareError(MigbenchError):
    """The GPU (real or simulated) refused or failed an operation."""


class UnsafeError(MigbenchError):
    """migbench refused to do something that would harm running work or leave a GPU half-configured."""


class BadValue(InputError, ValueError):
    """A malformed value the user typed (a driver version, a quantity): a `ValueError` for the parsers
    that collect problems, and an `Error:` with its hint wherever nothing catches it."""


_OS_HINTS = {
    errno.EACCES: "check the permissions of the file and of its directory, or choose another place",
    errno.EPERM: "check the permissions of the file and of its directory, or choose another place",
    errno.EROFS: "that file system is read-only: choose a writable place",
    errno.ENAMETOOLONG: "use a shorter name (a file name holds at most 255 bytes)",
    errno.ENOSPC: "the disk is full: free some space",
    errno.EDQUOT: "the disk quota is exhausted: free some space",
    errno.ENOTDIR: "a part of the path is a file, not a directory",
    errno.EISDIR: "give a file, not a directory",
    errno.ELOOP: "the path has a symbolic-link loop",
    errno.ENOENT: "check the path",
    errno.EEXIST: "choose another name, or remove what is there",
}


def os_reason(exc: BaseException) -> str:
    """Why an OSError happened, in words that read inside a sentence ("permission denied"); any other
    exception's message."""
    reason = (getattr(exc, "strerror", None) or str(exc)).rstrip(".")
    return reason[:1].lower() + reason[1:]


def from_os_error(exc: OSError, doing: str | None = None) -> MigbenchError:
    """An `OSError` as migbench's error: what we were doing, the path and the reason in words, and a
    hint for the usual causes (permissions, read-only, name too long, disk full)."""
    reason = os_reason(exc)
    path = exc.filename if exc.filename is not None else None
    if isinstance(path, bytes):
        path = path.decode("utf-8", errors="replace")
    where = f"{path}: " if path else ""
    head = f"cannot {doing}: " if doing else ""
    return MigbenchError(f"{head}{where}{reason}", hint=_OS_HINTS.get(exc.errno or -1))
