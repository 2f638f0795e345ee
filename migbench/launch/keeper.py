"""The launcher's hold on its state directory: the one-launcher lock, `launch.db`, and what happens when
either goes wrong under a running launcher.

- Each write is one transaction. When it fails because the disk is full, nothing is lost: the
  changes stay in the launcher's memory and the next write retries them (`Trouble.full`).
- When the database file is deleted (the whole state directory, say) or damaged while the launcher
  runs (`Trouble.lost`), the launcher re-creates it from its memory (`recreate`), taking the lock
  again at the new path; if another launcher took the directory meanwhile, it writes nothing more.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from migbench.errors import MigbenchError, os_reason
from migbench.fsutil import NO_SPACE
from migbench.launch.procs import LauncherLock
from migbench.launch.rebuild import open_store
from migbench.launch.store import Store, is_full
from migbench.state import StateDir


@dataclass(frozen=True)
class Trouble:
    full: bool  # the disk is full: retry later
    message: str


class Keeper:
    """Owns `launch.db` for one launcher (`store`), and notices when the file is no longer there."""

    def __init__(self, sd: StateDir | Path):
        self.sd = sd if isinstance(sd, StateDir) else StateDir.at(sd)  # a directory named outright (tests)
        self.db = self.sd.db
        self.lock = LauncherLock(self.sd.lock)
        self.store: Store | None = None
        self.writable = True  # False once another launcher holds the state directory
        self._ident: tuple[int, int] | None = None

    def open(self, stack: ExitStack) -> str | None:
        """Create the directory, take the lock, open the database (moving a damaged one aside).
        Returns a note when the database had to be replaced."""
        self.sd.ensure()
        stack.enter_context(self.lock)
        self.store, note = open_store(self.sd)
        stack.callback(self.close)
        self._ident = self._stat()
        return note

    def close(self) -> None:
        if self.store is not None:
            try:
                self.store.close(checkpoint=self.writable)
            except sqlite3.Error:
                pass

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.db)
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    def intact(self) -> bool:
        """Whether `launch.db` is still the file this launcher opened."""
        return self._stat() == self._ident

    def write(self, fn: Callable[[Store], None]) -> Trouble | None:
        """Run `fn` in one transaction. Returns the trouble when it could not be written."""
        if not self.writable or self.store is None:
            return None
        if not self.intact():
            return Trouble(False, f"{self.db} was deleted or replaced while the launcher ran")
        try:
            with self.store.transaction():
                fn(self.store)
        except sqlite3.Error as exc:
            if is_full(exc):
                return Trouble(True, f"no space left on the device to write {self.db}")
            return Trouble(False, f"{self.db} cannot be written any more ({exc})")
        except OSError as exc:
            return Trouble(exc.errno in NO_SPACE, f"cannot write {self.db}: {os_reason(exc)}")
        return None

    def recreate(self, fill: Callable[[Store], None]) -> str | None:
        """Make a fresh `launch.db` (and directory, and lock) and fill it from memory. Returns why
        that failed, or None."""
        self.close()
        self.store = None
        try:
            self.sd.ensure()
            self.lock.release()
            if not self.lock.acquire():
                self.writable = False
                return f"another launcher (PID {self.lock.holder()}) has taken {self.sd} over; this one writes nothing more there"
            self.store, _ = open_store(self.sd)
            self._ident = self._stat()
        except MigbenchError as exc:
            return exc.message
        trouble = self.write(fill)
        return None if trouble is None else trouble.message

    def stop_requested(self) -> int:
        """`migbench stop`'s flag in the launcher row (0 when it cannot be read)."""
        if self.store is None:
            return 0
        try:
            row = self.store.conn.execute("SELECT stop_requested FROM launcher WHERE id = 1").fetchone()
        except sqlite3.Error:
            return 0
        return int(row[0]) if row and row[0] else 0
