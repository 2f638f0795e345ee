"""The launcher's side of the host lock: held shared around each round of starts, so no run starts
while `apply` changes GPUs (apply holds it exclusively) and apply never changes GPUs in the middle
of a start. Under it the launcher re-reads `bindings.json`: an apply, or an apply's rollback that
re-created instances with new MIG uuids, may have re-bound them since the launch began.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from migbench.apply.reconcile import HostLock
from migbench.errors import MigbenchError
from migbench.launch.procs import read_json


class HostGate:
    """`enter()` takes the host lock shared (False while an apply holds it), then refreshes
    `uuid_of` (plan instance key -> MIG uuid) from the bindings when they changed; `unbound` holds
    the instances the bindings no longer bind. `leave()` releases the lock."""

    def __init__(self, lock_path: Path, bindings: Path, uuid_of: dict[str, str], say: Callable[[str], None]):
        self.lock = HostLock(lock_path, shared=True)
        self.bindings = bindings
        self.uuid_of = uuid_of
        self.unbound: set[str] = set()
        self.held: dict[str, str] = {}  # unbound instances held back at a start, and why (`hostbook.admit`)
        self.say = say
        self.waiting: str | None = None  # why starts wait (an apply runs), once said
        self._warned = False
        self._seen = self._ident()

    def _ident(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.bindings)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def enter(self) -> bool:
        try:
            ok = self.lock.acquire()
        except MigbenchError as exc:
            if not self._warned:
                self.say(f"cannot take the host lock ({exc.message}); starts are not kept apart from a concurrent apply")
                self._warned = True
            ok = True
        else:
            if not ok:
                if self.waiting is None:
                    self.waiting = self.lock.busy_error().message
                    self.say(f"waiting: {self.waiting}; runs start when it is done")
                return False
        if self.waiting is not None:
            self.say("the apply is done: starting runs again")
            self.waiting = None
        self._reload()
        return True

    def hold(self, key: str, why: str) -> None:
        """No run starts on `key` until the bindings change (then its device is checked again)."""
        self.unbound.add(key)
        self.held[key] = why

    def why_unbound(self, keys: list[str]) -> str:
        return "; ".join(self.held.get(k) or f"{k}: bindings.json no longer binds it" for k in keys)

    def seen_now(self) -> None:
        """The bindings as they are now were read (by the launcher's own re-cut): not a change to reload."""
        self._seen = self._ident()

    def leave(self) -> None:
        self.lock.release()

    def _reload(self) -> None:
        ident = self._ident()
        if ident == self._seen:
            return
        self._seen = ident
        doc = read_json(self.bindings)
        if doc is None:
            self.say(f"{self.bindings} is missing or unreadable: keeping the MIG uuids read at the start")
            return
        inst = doc.get("instances") or {}
        changed = []
        for key in sorted(self.uuid_of):
            b = inst.get(key)
            uuid = str(b["uuid"]) if isinstance(b, dict) and b.get("uuid") else None
            if uuid is None:
                if key not in self.unbound:
                    self.unbound.add(key)
                    changed.append(f"{key} is no longer bound")
            else:
                self.unbound.discard(key)
                self.held.pop(key, None)
                if self.uuid_of.get(key) != uuid:
                    changed.append(f"{key} -> {uuid}")
                    self.uuid_of[key] = uuid
        if changed:
            self.say(f"bindings changed ({self.bindings.name}): " + "; ".join(changed))
