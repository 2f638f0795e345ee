"""Devices: the checks before each round of starts (host lock, bindings, the launch register), on
a host lock and a bindings file in a temporary directory and a recorded register."""

from __future__ import annotations

import json

from migbench.apply.reconcile import HostLock
from migbench.launch.devices import Devices
from migbench.launch.gate import HostGate
from migbench.launch.store import RunRow
from migbench.types import InstanceRef

A, B = "0:3g.40gb@0", "0:3g.40gb@4"


class _Booking:
    """The register's side: instance `refuse` is bound to another launch."""

    def __init__(self, refuse: str | None = None):
        self.refuse = refuse
        self.asked: list[list[tuple[str, str]]] = []
        self.synced: list[set[str]] = []

    def admit(self, starts, rows, gate, dirty):  # type: ignore[no-untyped-def]
        self.asked.append(list(starts))
        for rid, key in starts:
            if key == self.refuse:
                gate.hold(key, f"{key} is bound to another launch")
                dirty.add(rid)
        return [s for s in starts if s[1] != self.refuse]

    def sync(self, rows, uuid_of):  # type: ignore[no-untyped-def]
        self.synced.append({r.queue.key for r in rows})


def _devices(tmp_path, booking, said):  # type: ignore[no-untyped-def]
    bindings = tmp_path / "bindings.json"
    bindings.write_text(json.dumps({"instances": {A: {"uuid": "MIG-a"}, B: {"uuid": "MIG-b"}}}))
    gate = HostGate(tmp_path / "host.lock", bindings, {A: "MIG-a", B: "MIG-b"}, said.append)
    return Devices(None, said.append, gate=gate, booking=booking), bindings  # type: ignore[arg-type]


def test_starts_on_unbound_or_refused_instances_are_not_made(tmp_path):
    said: list[str] = []
    booking = _Booking(refuse=B)
    dev, bindings = _devices(tmp_path, booking, said)
    unbound = dev.unbound
    assert dev.enter()
    dirty: set[str] = set()
    assert dev.admit([("r1", A), ("r2", B)], {}, dirty) == [("r1", A)]
    dev.leave()
    assert unbound == {B} and dirty == {"r2"} and "bound to another launch" in dev.why_unbound([B])
    bindings.write_text(json.dumps({"instances": {B: {"uuid": "MIG-b2"}}}))  # an apply re-bound B, unbound A
    assert dev.enter()
    assert dev.admit([("r1", A), ("r2", B)], {}, set()) == []
    dev.leave()
    assert dev.unbound is unbound and unbound == {A, B} and dev.uuid_of[B] == "MIG-b2"
    assert booking.asked == [[("r1", A), ("r2", B)], [("r2", B)]]  # an unbound instance never reaches the register


def test_no_round_of_starts_while_an_apply_holds_the_host_lock(tmp_path):
    said: list[str] = []
    dev, _ = _devices(tmp_path, _Booking(), said)
    apply_lock = HostLock(tmp_path / "host.lock")
    assert apply_lock.acquire()
    try:
        assert dev.enter() is False and dev.waiting and "waiting:" in said[-1]
        assert dev.enter() is False and len(said) == 1  # said once
    finally:
        apply_lock.release()
    assert dev.enter() and dev.waiting is None and said[-1] == "the apply is done: starting runs again"
    dev.leave()


def test_sync_gives_the_register_the_runs(tmp_path):
    booking = _Booking()
    dev, _ = _devices(tmp_path, booking, [])
    dev.sync([RunRow(id="r", ord=0, state="queued", queue=InstanceRef.parse(A))])
    assert booking.synced == [{A}]


def test_an_instance_added_after_the_start_waits_until_the_bindings_bind_it(tmp_path):
    """The seam a re-cut takes (`rebind`): a new instance key is unbound until bindings.json binds
    it; an instance the plan no longer has is forgotten."""
    said: list[str] = []
    dev, bindings = _devices(tmp_path, _Booking(), said)
    unbound = dev.unbound
    C = "0:1g.10gb@6"
    assert dev.rebind([A, C]) == [C] and unbound == {C} and B not in dev.uuid_of
    assert dev.enter()
    assert dev.admit([("r", C)], {}, set()) == []
    dev.leave()
    bindings.write_text(json.dumps({"instances": {A: {"uuid": "MIG-a"}, C: {"uuid": "MIG-c"}}}))
    assert dev.rebind([A, C]) == [] and dev.unbound is unbound and not unbound and dev.uuid_of[C] == "MIG-c"
    assert dev.enter()
    assert dev.admit([("r", C)], {}, set()) == [("r", C)]
    dev.leave()


def test_a_waiting_launch_reads_the_register_again_only_when_it_changed_or_a_while_passed(tmp_path):
    """While runs wait for another launch's instances, each wake-up asks whether that launch may have
    let one go: one stat of the register's directory, not a read of every entry and of NVML."""
    from types import SimpleNamespace

    from migbench.launch.devices import RECHECK_S

    reg = tmp_path / "launches"
    reg.mkdir()
    booking = _Booking()
    booking.reg = SimpleNamespace(dir=reg)  # type: ignore[attr-defined]
    dev, _ = _devices(tmp_path, booking, [])
    assert dev.others_may_have_changed(100.0)  # the first look
    assert not dev.others_may_have_changed(101.0)  # nothing changed
    (reg / "x.json").write_text("{}")  # an entry written (or removed): look again
    assert dev.others_may_have_changed(102.0) and not dev.others_may_have_changed(103.0)
    assert dev.others_may_have_changed(102.0 + RECHECK_S)  # a killed launcher's entry goes stale without a write
