"""What apply does when it cannot finish: the GPUs' snapshot (the checkpoint), restoring it, signals
deferred to step boundaries, and an interrupted apply found again (and described) afterwards.

- A driver error, a failed read-back, or SIGINT/SIGTERM/SIGHUP (checked between steps, so no
  nvidia-smi command is cut in half) restore the checkpoint; signals arriving during the restore
  are noted and wait for it to end.
- `kill -9` (or a crash of the machine's power) cannot be caught: the checkpoint then stays
  `applying` and the host lock keeps the dead apply's note naming it. The next `apply` or `check`
  finds it (`find_interrupted`), says what each GPU looks like now (`describe`), and `apply` offers
  to finish it (`--finish`) or roll it back (`--rollback`).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from migbench.apply.diff import verify
from migbench.backend.base import Backend, HostState
from migbench.errors import MigbenchError
from migbench.plan import Plan
from migbench.state import NEEDS_ATTENTION, Checkpoint, SavedGpu, StateDir, read_checkpoint
from migbench.types import Placement


class ApplyInterrupted(MigbenchError):
    """A signal stopped the apply (exit code 128 + the signal's number)."""

    def __init__(self, signum: int):
        name = signal.Signals(signum).name
        super().__init__(f"apply interrupted by {name}")
        self.exit_code = 128 + signum
        self.signum = signum


class InterruptedApplyPending(MigbenchError):
    """An earlier apply died half-way; apply refuses to go on until told to finish or roll back."""

    def __init__(self, message: str, hint: str, found: Interrupted):
        super().__init__(message, hint=hint)
        self.found = found


# ---------------------------------------------------------------------------------------------
# Snapshot and restore
# ---------------------------------------------------------------------------------------------


def snapshot(host: HostState, gpus: Sequence[int]) -> dict[str, SavedGpu]:
    """Each GPU's MIG state (by index), as a checkpoint saves it."""
    out: dict[str, SavedGpu] = {}
    for g in gpus:
        st = host.gpu(g)
        out[str(g)] = {
            "mig_current": st.mig_current,
            "mig_pending": st.mig_pending,
            "instances": [
                {
                    "placement": str(gi.placement),
                    "profile_id": gi.profile_id,
                    "size": gi.size,
                    "compute_instances": [{"profile_id": ci.profile_id, "start": ci.start, "size": ci.size} for ci in gi.compute_instances],
                }
                for gi in st.instances
            ],
        }
    return out


def shape(snap: SavedGpu) -> tuple:
    return (
        snap["mig_current"],
        snap["mig_pending"],
        tuple(sorted((i["placement"], tuple((c["profile_id"], c["start"], c["size"]) for c in i["compute_instances"])) for i in snap["instances"])),
    )


def _gpu_problem(g: int, exc: MigbenchError) -> str:
    """`GPU g: <message>`, without repeating the prefix the driver's message may already have."""
    msg = exc.message
    return msg if msg.startswith(f"GPU {g}:") else f"GPU {g}: {msg}"


def restore(backend: Backend, checkpoint: dict[str, SavedGpu]) -> list[str]:
    """Bring every checkpointed GPU back to its recorded mode and instances; an instance in use
    is never destroyed (it is reported instead). Returns the problems."""
    problems = []
    w = backend.writer
    for g_str, snap in sorted(checkpoint.items(), key=lambda kv: int(kv[0])):
        g = int(g_str)
        try:
            st = backend.reader.read().gpu(g)
            want = {Placement.parse(i["placement"]): i for i in snap["instances"]}
            for gi in st.instances:
                keep = gi.placement in want and [(c.profile_id, c.start, c.size) for c in gi.compute_instances] == [
                    (c["profile_id"], c["start"], c["size"]) for c in want[gi.placement]["compute_instances"]
                ]
                if keep:
                    continue
                procs = st.processes_of(gi.id)
                if procs:
                    pids = ", ".join(str(p.pid) for p in sorted(procs, key=lambda p: p.pid))
                    problems.append(f"GPU {g}: GPU instance {gi.id} ({gi.placement}) is in use by PID(s) {pids}: left in place")
                    continue
                for ci in gi.compute_instances:
                    w.destroy_compute_instance(g, gi.id, ci.id)
                w.destroy_gpu_instance(g, gi.id)
            st = backend.reader.read().gpu(g)
            have = {gi.placement for gi in st.instances}
            ordered = sorted(want.items(), key=lambda kv: (-kv[1]["size"], kv[0].start))
            for pl, spec in ordered:
                if pl in have:
                    continue
                gid = w.create_gpu_instance(g, spec["profile_id"], pl.start, spec["size"])
                if gid is None:
                    raise MigbenchError(f"GPU {g}: the driver gave no id for the re-created GPU instance {pl}")
                for c in spec["compute_instances"]:
                    w.create_compute_instance(g, gid, profile_id=c["profile_id"])
            st = backend.reader.read().gpu(g)
            if bool(st.mig_current) != bool(snap["mig_current"]) or bool(st.mig_pending) != bool(snap["mig_pending"]):
                w.set_mig_mode(g, bool(snap["mig_pending"]))
        except MigbenchError as exc:
            problems.append(_gpu_problem(g, exc))
    after = snapshot(backend.reader.read(), [int(k) for k in checkpoint])
    for g_str, snap in checkpoint.items():
        if shape(after[g_str]) != shape(snap) and not any(p.startswith(f"GPU {g_str}:") for p in problems):
            problems.append(f"GPU {g_str}: state after restore differs from the checkpoint")
    return problems


# ---------------------------------------------------------------------------------------------
# Signals
# ---------------------------------------------------------------------------------------------


class SignalGuard:
    """While active, SIGINT/SIGTERM/SIGHUP are recorded instead of killing the process; `check()`
    raises `ApplyInterrupted` for the first one. Inside `interruptible()` (apply waiting for an
    answer, before any change) a signal raises it at once. Outside the main thread it does nothing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.received: list[int] = []
        self._old: dict[int, Any] = {}
        self._now = False

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """A wait on the user (the confirmation prompt) that a signal ends at once: recorded, it
        would wait on, holding the host lock, until someone answered."""
        self.check()
        self._now = True
        try:
            yield
        finally:
            self._now = False

    def __enter__(self) -> SignalGuard:
        try:
            for s in self.SIGNALS:
                self._old[s] = signal.signal(s, self._on_signal)
        except ValueError:  # not the main thread
            self._restore()
        return self

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.received.append(signum)
        if self._now:
            self._now = False
            raise ApplyInterrupted(signum)

    def check(self) -> None:
        if self.received:
            raise ApplyInterrupted(self.received[0])

    def _restore(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        self._old.clear()

    def __exit__(self, *exc: object) -> None:
        self._restore()


# ---------------------------------------------------------------------------------------------
# An interrupted apply, found again
# ---------------------------------------------------------------------------------------------


@dataclass
class Interrupted:
    """A checkpoint whose apply did not end (`status` applying or rollback-failed)."""

    path: Path
    doc: Checkpoint
    plan: Plan | None  # the interrupted apply's plan, when its file still loads

    @property
    def gpus(self) -> list[int]:
        return sorted(int(g) for g in self.doc["gpus"])

    @property
    def plan_file(self) -> str | None:
        v = self.doc.get("plan_file")
        return str(v) if v else None

    def same_plan(self, plan: Plan) -> bool:
        mine = str(Path(plan.path).resolve()) if plan.path else None
        return self.plan_file is not None and self.plan_file == mine


def find_interrupted(candidates: Iterable[Path | str | None]) -> Interrupted | None:
    """The first checkpoint among `candidates` that needs attention."""
    seen = set()
    for c in candidates:
        if not c or str(c) in seen:
            continue
        seen.add(str(c))
        doc = read_checkpoint(c)
        if doc is None or doc.get("status") not in NEEDS_ATTENTION:
            continue
        plan = None
        if plan_file := doc.get("plan_file"):
            try:
                plan = Plan.load(plan_file, regular=True)
            except MigbenchError:
                plan = None
        return Interrupted(Path(c), doc, plan)
    return None


def _placements(snap: SavedGpu) -> str:
    mode = "MIG on" if snap["mig_current"] else ("MIG pending" if snap["mig_pending"] else "MIG off")
    insts = ", ".join(sorted(i["placement"] + ("" if i["compute_instances"] else " (no compute instance)") for i in snap["instances"]))
    insts = insts or "no instances"
    return f"{mode}, {insts}"


def describe(found: Interrupted, host: HostState) -> list[str]:
    """One line per GPU of the interrupted apply: as before it, as its plan wants, or half-way."""
    lines = []
    now = snapshot(host, [g for g in found.gpus if any(x.index == g for x in host.gpus)])
    for g in found.gpus:
        before = found.doc["gpus"][str(g)]
        if str(g) not in now:
            lines.append(f"GPU {g}: not on the host")
        elif shape(now[str(g)]) == shape(before):
            lines.append(f"GPU {g}: as before the apply ({_placements(before)})")
        elif found.plan is not None and g in found.plan.gpus() and not verify(found.plan, host, [g]):
            lines.append(f"GPU {g}: as the plan wants (the apply got that far)")
        else:
            want = ""
            if found.plan is not None and g in found.plan.gpus():
                want = "; the plan wants " + (", ".join(str(p) for p in found.plan.layout(g)) or "no instances")
            lines.append(f"GPU {g}: half-configured: now {_placements(now[str(g)])}; before the apply {_placements(before)}{want}")
    return lines


def _state_dir_option(found: Interrupted, plan: Plan) -> str:
    """` --state-dir DIR` when the interrupted apply's checkpoint is not in the plan's default state directory."""
    try:
        default = StateDir.of(found.plan or plan).resolve()
    except MigbenchError:
        default = None
    return "" if found.path.parent.resolve() == default else f" --state-dir {found.path.parent}"


def pending_error(found: Interrupted, host: HostState, plan: Plan) -> InterruptedApplyPending:
    """The error `apply` raises while an interrupted apply waits to be finished or rolled back."""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(found.doc.get("started_at") or 0)))
    who = found.plan_file or found.doc.get("plan") or "a plan"
    status = "whose rollback failed" if found.doc.get("status") == "rollback-failed" else "that did not finish (killed?)"
    lines = describe(found, host)
    message = f"an earlier apply of {who} (PID {found.doc.get('pid')}, started {when}) {status}:\n  " + "\n  ".join(lines)
    this = (plan.path or "PLAN") + _state_dir_option(found, plan)
    if found.same_plan(plan):
        hint = f"finish it: `migbench apply {this} --finish`; or restore the GPUs as they were before it: `migbench apply {this} --rollback`"
    else:
        hint = (
            f"finish it: `migbench apply {who} --finish`; or restore the GPUs as they were before it: "
            f"`migbench apply {who} --state-dir {found.path.parent} --rollback`; then apply this plan"
        )
    return InterruptedApplyPending(message + f"\n(checkpoint: {found.path})", hint, found)
