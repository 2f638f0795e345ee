"""Plans and launch states for the report tests and `bench/report_bench.py`, without running a
launcher: the plan's own replay with each run taking `stretch` x its planned time (varied per run),
written through `launch.store`'s write side exactly as the launcher writes it (runs, attempts,
launcher row), plus the events a person looks for: a retry after a failure and an OOM moved to a
larger instance."""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import dataclass
from pathlib import Path

from migbench.forecast.simulate import play_plan
from migbench.launch.store import AttemptEnd, RunRow, Store, db_path
from migbench.plan import Plan
from migbench.planner import FleetSpec, SolveOptions, build_fleet, make_plan
from migbench.state import state_dir_for
from migbench.sweep import load_sweep
from migbench.types import InstanceRef

SEED_LIKE = """\
version: 1
name: seed-like
fleet: [{gpu: A100-SXM4-80GB, count: 4}]
launch: {retries: 1}
groups:
"""
# name, runs, plan memory, duration (s), compute: the launcher benchmark's 90-run toy sweep
_SEED_GROUPS = [
    ("tiny", 28, "1GiB", 2.5, 0.05),
    ("small", 27, "4GiB", 3.0, 0.1),
    ("medium", 18, "9GiB", 3.0, 0.15),
    ("large", 10, "18GiB", 3.5, 0.25),
    ("xl", 7, "30GiB", 4.0, 0.4),
]


def seed_like_yaml(runs: int = 90, gpus: int = 4) -> str:
    """The 90-run, 4-GPU toy sweep of `bench/launch_bench.py` (five sizes, 1 to 30 GiB)."""
    total = sum(n for _, n, *_ in _SEED_GROUPS)
    out = [SEED_LIKE.replace("count: 4", f"count: {gpus}")]
    left = runs
    for k, (name, n, mem, dur, comp) in enumerate(_SEED_GROUPS):
        m = left if k == len(_SEED_GROUPS) - 1 else max(1, round(runs * n / total))
        left -= m
        out.append(
            f"  - name: {name}\n    command: python3 train.py --seed {{seed}}\n    parameters: {{seed: {list(range(m))}}}\n"
            f"    memory: {mem}\n    duration: {dur}s\n    compute: {comp}\n    max_runs_per_instance: 2\n"
        )
    return "".join(out)


def plan_sweep(tmp: Path, sweep_yaml: str, *, time_limit_s: float = 2.0) -> Plan:
    """Write the sweep, plan it for its fleet and save the plan next to it."""
    tmp.mkdir(parents=True, exist_ok=True)
    f = tmp / "sweep.yaml"
    f.write_text(sweep_yaml)
    sweep = load_sweep(f)
    specs = [FleetSpec(x.gpu, x.count, x.driver) for x in sweep.fleet]
    plan = make_plan(sweep, build_fleet(specs), SolveOptions(time_limit_s=time_limit_s))
    out = tmp / f"{sweep.name}.plan.yaml"
    plan.save(out)
    return Plan.load(out)


@dataclass
class Written:
    state_dir: Path
    t0: float
    retried: str | None
    moved: str | None
    moved_to: str | None
    lent: str | None = None
    lent_to: str | None = None


def write_state(
    plan: Plan,
    *,
    stretch: float = 1.1,
    done_fraction: float = 1.0,
    retry: bool = True,
    oom: bool = True,
    lend: bool = False,
    alive_pid: int | None = None,
    seed: int = 1,
    t0: float = 1_700_000_000.0,
) -> Written:
    """A launch state for `plan`: its replay stretched, runs starting before `done_fraction` of the
    stretched makespan finished (or running), the rest queued. One run fails once and is retried;
    one runs out of memory on its instance and finishes on a larger one; with `lend`, one more runs
    on another instance than its own (the launcher lent it an idle one), without any failure."""
    rng = random.Random(seed)
    _, res = play_plan(plan)
    sd = state_dir_for(plan)
    sd.mkdir(parents=True, exist_ok=True)
    for p in sd.glob("launch.db*"):
        p.unlink()
    inst_mem = {i.key: i.memory_mib for i in plan.instances}
    by_mem = sorted(plan.instances, key=lambda i: -i.memory_mib)
    cut = res.makespan_s * stretch * done_fraction if done_fraction < 1 else float("inf")
    placed = [r for r in plan.runs if r.id in res.slot_of]
    retried = placed[0].id if retry and placed else None
    moved = moved_to = None
    if oom:
        for r in placed[1:]:
            bigger = [i for i in by_mem if i.memory_mib > inst_mem[res.slot_of[r.id]]]
            if bigger:
                moved, moved_to = r.id, bigger[0].key
                break
    lent = lent_to = None
    if lend:
        for r in placed[1:]:
            other = [i for i in by_mem if i.memory_mib >= r.memory_mib and i.key != res.slot_of[r.id]]
            if r.id not in (retried, moved) and other:
                lent, lent_to = r.id, other[0].key
                break
    st = Store.create(db_path(sd))
    rows = []
    ends: list[AttemptEnd] = []
    with st.transaction():
        st.set_meta("sweep", plan.name)
        st.set_meta("plan_file", str(Path(plan.path or "").resolve()))
        st.set_meta("plan_sha256", hashlib.sha256(Path(plan.path or "").read_bytes()).hexdigest() if plan.path else "")
        for n, r in enumerate(plan.runs):
            row = RunRow(r.id, n, r.group, home=r.instance_key, queue=r.instance_key, memory_mib=r.memory_mib, need_mib=r.memory_mib, queued_at=t0)
            rows.append(row)
            if r.id not in res.slot_of:
                row.state = "abandoned" if r.gpu is None else "queued"
                continue
            s = res.start_s[r.id] * stretch
            e = s + (res.end_s[r.id] - res.start_s[r.id]) * stretch * rng.uniform(0.85, 1.2)
            if s >= cut:
                continue  # still queued
            where = lent_to if r.id == lent and lent_to else res.slot_of[r.id]
            attempts = []
            if r.id == retried:
                mid = s + (e - s) * 0.3
                attempts.append((where, s, mid, "failed", 1, None))
                s = mid + 0.5
                e = s + (e - s)
            if r.id == moved and moved_to:
                mid = s + (e - s) * 0.4
                attempts.append((where, s, mid, "oom", None, int(inst_mem[where] * 0.99)))
                where = moved_to
                s, e = mid + 0.2, mid + 0.2 + (e - s)
            running = e > cut
            attempts.append((where, s, None if running else e, "running" if running else "succeeded", None if running else 0, None))
            for k, (inst, a_s, a_e, outcome, code, peak) in enumerate(attempts, 1):
                row.attempt, row.instance, row.start_at = k, InstanceRef.parse(inst), t0 + a_s
                row.mig_uuid = f"MIG-{abs(hash(inst)) % 10**8:08d}"
                row.instance_mib = inst_mem.get(inst)
                st.begin_attempt(row)
                if a_e is not None:
                    row.end_at = t0 + a_e
                    row.exit_code = code
                    row.peak_mib = peak if peak is not None else int(r.memory_mib * rng.uniform(0.6, 1.05))
                    ends.append(AttemptEnd.of(row, outcome, "exit code 1" if outcome == "failed" else None))
            row.queue = InstanceRef.parse(where)
            row.failures = 1 if r.id == retried else 0
            if running:
                row.state, row.end_at, row.exit_code, row.peak_mib = "running", None, None, int(r.memory_mib * 0.5)
            else:
                row.state = "succeeded"
        st.save_runs(rows)
        for end in ends:
            st.end_attempt(end)
        now = t0 + (cut if done_fraction < 1 else res.makespan_s * stretch * 1.3)
        if alive_pid is None and done_fraction < 1:
            now = t0 + cut  # the launcher died there
        st.set_launcher(
            pid=alive_pid,
            create_time=None,
            started_at=t0 - 1,
            heartbeat_at=now,
            state="running" if alive_pid else "exited",
            ended_at=None if alive_pid else now,
            exit_code=None if alive_pid else 0,
        )
    st.close(checkpoint=True)
    return Written(sd, t0, retried, moved, moved_to, lent, lent_to)


def now_after(plan: Plan, written: Written, stretch: float = 1.1, fraction: float = 1.0) -> float:
    """The Unix time at `fraction` of the stretched makespan (what `build_report(now=...)` takes)."""
    _, res = play_plan(plan)
    return written.t0 + res.makespan_s * stretch * fraction


def wall() -> float:
    return time.time()
