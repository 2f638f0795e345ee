"""Before a launch: the plan's start order, its file's hash, the check that it is applied, and
the dry run (which reads only)."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from migbench.errors import HardwareError, MigbenchError, UsageError
from migbench.fsutil import require_text_path, require_trusted
from migbench.launch.spec import RunSpec, attempt_dir, attempt_started, build_spec, check_run_id
from migbench.launch.store import ACTIVE_STATES, FINAL_STATES, RunRow, key_of, read_state
from migbench.plan import Plan, PlanRun
from migbench.state import StateDir, configure_modes, load_bindings, require_trusted_state


def plan_sha256(plan: Plan) -> str:
    """sha256 of the plan file's bytes (the state records it)."""
    if not plan.path:
        raise UsageError("the plan has no file", hint="save it first (`migbench plan` writes one)")
    return hashlib.sha256(Path(plan.path).read_bytes()).hexdigest()


def start_order(plan: Plan) -> list[PlanRun]:
    """Placed runs in the order the plan starts them: by wave, then estimated start, then the
    instance's plan order and the run's place in that instance's queue. A run a grown plan marks
    `done` (an earlier launch of the sweep finished it) is never started again, whatever the state."""
    inst_index = {i.key: n for n, i in enumerate(plan.instances)}
    pos: dict[str, int] = {}
    for i in plan.instances:
        for n, rid in enumerate(i.runs):
            pos[rid] = n
    placed = [r for r in plan.runs if r.done is None and r.instance_key is not None and r.instance_key in inst_index]
    return sorted(
        placed,
        key=lambda r: (r.wave or 0, r.est_start_s or 0.0, inst_index[r.instance_key or ""], pos.get(r.id, 0), r.id),
    )


def retries_of(plan: Plan, run: PlanRun) -> int:
    if run.retries is not None:
        return int(run.retries)
    return plan.launch.retries


# ---------------------------------------------------------------------------------------------
# Preflight: the plan must be applied
# ---------------------------------------------------------------------------------------------


@dataclass
class Prepared:
    """A plan checked against the host: the state dir and each instance's MIG uuid and memory."""

    plan: Plan
    state_dir: StateDir
    uuid_of: dict[str, str]
    sha256: str


def preflight(plan: Plan, state_dir: StateDir) -> Prepared:
    """Check the plan is applied: bindings.json exists and every planned instance's MIG uuid is on
    the host (read through the backend: the driver, or the simulated one). `state_dir`: the
    command's `StateDir`."""
    from migbench.apply.reconcile import HostLock
    from migbench.backend.select import host_lock_path, read_host

    sd = state_dir
    configure_modes(plan)  # before the trust check: a team's `state_mode: 0660` lets the group write the directory
    require_trusted(sd, "state directory")  # its bindings choose the devices, its run files what runs
    require_text_path(Path(plan.path or ".").resolve(), "plan file")  # the launch state records it
    require_text_path(sd, "state directory")
    for r in plan.runs:
        check_run_id(r.id)
    hint = f"apply it first: migbench apply {plan.path or 'PLAN'}" + sd.option
    gate = HostLock(host_lock_path(), shared=True)
    if gate.is_held():
        raise gate.busy_error()
    bindings = load_bindings(plan, sd)
    if bindings is None:
        raise MigbenchError(f"the plan is not applied: no {sd.bindings}", hint=hint)
    if bindings.get("plan") != plan.name:
        raise MigbenchError(f"{sd.bindings} belongs to plan {bindings.get('plan')!r}, not {plan.name!r}", hint=hint)
    inst = bindings.get("instances") or {}
    uuid_of: dict[str, str] = {}
    missing = []
    for i in plan.instances:
        b = inst.get(i.key)
        if not b or not b.get("uuid"):
            missing.append(f"{i.key} has no bound MIG device")
        else:
            uuid_of[i.key] = str(b["uuid"])
    try:
        host = read_host()
    except HardwareError as exc:
        raise MigbenchError(f"cannot read the GPUs to check the plan's MIG devices: {exc.message}", hint=exc.hint or hint) from exc
    live = {d.uuid for g in host.gpus for d in g.devices}
    for key, u in sorted(uuid_of.items()):
        if u not in live:
            missing.append(f"{key}: MIG device {u} no longer exists on the host")
    if missing:
        raise MigbenchError("the host no longer matches the applied plan:\n  " + "\n  ".join(missing), hint=hint)
    return Prepared(plan, sd, uuid_of, plan_sha256(plan))


# ---------------------------------------------------------------------------------------------
# Dry run
# ---------------------------------------------------------------------------------------------


def dry_run(plan: Plan, state_dir: StateDir) -> tuple[list[RunSpec], list[str]]:
    """The spec of every run the launcher would start, in start order, and notes. Reads only:
    creates no directory, no database, no file."""
    sd = state_dir
    require_trusted_state(sd, plan)  # before its bindings and launch state are read, as `launch` does
    notes: list[str] = []
    bindings = load_bindings(plan, sd)
    uuid_of = {k: str(v.get("uuid")) for k, v in (bindings["instances"] if bindings is not None else {}).items()}
    if bindings is None:
        notes.append(f"the plan is not applied yet (no {sd.bindings}): MIG uuids are shown as <MIG uuid of INSTANCE>")
    rows: dict[str, RunRow] = {}
    if sd.db.exists():
        rows, sha = read_state(sd, lambda st: (st.runs(), st.meta("plan_sha256")))
        if plan.path and sha and sha != plan_sha256(plan):
            notes.append("the state was made from a different plan: `launch` refuses it without --force")
    specs = []
    skipped: Counter[str] = Counter()
    for r in start_order(plan):
        row = rows.get(r.id)
        if row is not None and row.state in FINAL_STATES + ACTIVE_STATES:
            skipped[row.state] += 1
            continue
        inst = (key_of(row.queue) if row is not None else None) or r.instance_key or ""
        attempt = (row.attempt if row is not None else 0) + 1
        uuid = uuid_of.get(inst, f"<MIG uuid of {inst}>")
        resume = any(attempt_started(attempt_dir(sd, r.id, k)) for k in range(1, attempt))
        specs.append(build_spec(plan, r, instance=inst, mig_uuid=uuid, attempt=attempt, state_dir=sd, resume=resume))
    for state, n in sorted(skipped.items()):
        notes.append(f"{n} {state} run(s) not listed (a launch does not start them)")
    if plan.unplaced:
        notes.append(f"{len(plan.unplaced)} unplaced run(s) are never started")
    return specs, notes
