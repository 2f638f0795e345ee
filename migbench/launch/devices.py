"""Device checks: whether the launcher may start runs on the plan's MIG devices now.

`Devices` puts together the host lock and the bindings (`gate.HostGate`: no start while an apply
changes GPUs; instances re-bound or unbound by an apply) and the host's launch register
(`hostbook.HostBooking`: the launch is booked before it touches its state, each start's device
must still exist and be bound to this launch). Its state: the instances' MIG uuids (`uuid_of`),
the instances no run may start on (`unbound`, with why) and whether starts wait for an apply.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from contextlib import ExitStack

from migbench.backend.select import host_lock_path
from migbench.errors import MigbenchError
from migbench.launch.gate import HostGate
from migbench.launch.hostbook import HostBooking
from migbench.launch.prepare import Prepared
from migbench.launch.procs import read_json
from migbench.launch.store import RunRow

RECHECK_S = 10.0
"""How often a launch waiting for another's instances reads the register even when it did not change."""


class Devices:
    """The device checks of one launch (see the module's notes)."""

    def __init__(self, prep: Prepared, say: Callable[[str], None], *, gate: HostGate | None = None, booking: HostBooking | None = None):
        self.gate = gate or HostGate(host_lock_path(), prep.state_dir.bindings, prep.uuid_of, say)
        self.booking = booking or HostBooking(prep, say)
        self._register_seen: tuple[int, int] | None = None
        self._register_checked = -math.inf  # this launch in the host's register (one per plan, no instance held by two)

    @property
    def uuid_of(self) -> dict[str, str]:
        """Plan instance key -> its MIG uuid, as the bindings last said."""
        return self.gate.uuid_of

    @property
    def unbound(self) -> set[str]:
        """The instances no run may start on now (the same set all along: it changes in place)."""
        return self.gate.unbound

    @property
    def behind(self) -> dict[str, str]:
        """The instances another live launch is bound to where runs of this one are queued (-> who):
        they start once it lets them go."""
        return self.booking.behind

    @property
    def waiting(self) -> str | None:
        """Why starts wait (an apply holds the host lock), or None."""
        return self.gate.waiting

    def why_unbound(self, keys: list[str]) -> str:
        return self.gate.why_unbound(keys)

    def open(self, stack: ExitStack) -> None:
        """Book the host for this launch (raises when the plan runs already on this host); the entry
        goes when `stack` closes."""
        self.booking.open(stack)

    def enter(self) -> bool:
        """Take the host lock (shared) for a round of starts and re-read the bindings; False while
        an apply holds it (then call nothing else)."""
        return self.gate.enter()

    def leave(self) -> None:
        self.gate.leave()

    def admit(self, starts: list[tuple[str, str]], rows: dict[str, RunRow], dirty: set[str]) -> list[tuple[str, str]]:
        """Of the starts (run id, instance) the queues picked, those whose instance is bound and
        whose MIG device exists and is bound to this launch; the others' runs stay queued, their
        note saying why (their ids added to `dirty`). Call between `enter` and `leave`."""
        return self.booking.admit([(rid, key) for rid, key in starts if key not in self.gate.unbound], rows, self.gate, dirty)

    def others_may_have_changed(self, now: float) -> bool:
        """Whether another launch may have let an instance go since the last call that said so: the
        register's directory changed (an entry written or removed), or `RECHECK_S` passed (a killed
        launcher's entry goes stale without a write). Cheap: one stat, no entry read."""
        try:
            st = os.stat(self.booking.reg.dir)
            stamp: tuple[int, int] | None = (st.st_ino, st.st_mtime_ns)
        except OSError:
            stamp = None
        if stamp != self._register_seen or now >= self._register_checked + RECHECK_S:
            self._register_seen, self._register_checked = stamp, now
            return True
        return False

    def held_by_others(self) -> set[str]:
        """The plan's instances another live launch is bound to (read from the register now)."""
        me = self.booking.me.id if self.booking.me is not None else None
        try:
            others = [b for b in self.booking.reg.entries() if b.id != me]
        except MigbenchError:
            return set()
        key_of = {u: k for k, u in self.gate.uuid_of.items()}
        return {key_of[u] for b in others for u in b.instances if u in key_of}

    def rebind(self, keys: Iterable[str]) -> list[str]:
        """After this launcher applied a re-cut: the instances `keys` take their MIG uuids from the
        bindings (those the bindings do not bind stay unbound); the others are forgotten. Returns the
        keys left unbound."""
        keys = set(keys)
        doc = read_json(self.gate.bindings) or {}
        inst = doc.get("instances") or {}
        for k in list(self.gate.uuid_of):
            if k not in keys:
                del self.gate.uuid_of[k]
                self.gate.unbound.discard(k)
                self.gate.held.pop(k, None)
        left = []
        for k in sorted(keys):
            b = inst.get(k)
            if isinstance(b, dict) and b.get("uuid"):
                self.gate.uuid_of[k] = str(b["uuid"])
                self.gate.unbound.discard(k)
                self.gate.held.pop(k, None)
            else:
                self.gate.unbound.add(k)
                left.append(k)
        self.gate.seen_now()
        return left

    def sync(self, rows: Iterable[RunRow]) -> None:
        """Bind this launch's register entry to the instances of its running and queued runs."""
        self.booking.sync(rows, self.gate.uuid_of)
