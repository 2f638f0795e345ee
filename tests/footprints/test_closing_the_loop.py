"""The loop closed, on the simulated host with the toy trainer allocating what its parameters say:

- a sweep whose declared memory is 2x too high plans at most half as many runs at once as the
  same sweep planned on `migbench profile`'s footprints;
- a sweep declared too low has its OOM-prone runs sized up after one launch, with no run lost.
"""

from __future__ import annotations

import json
import math
import textwrap

import pytest

from migbench.apply import apply_plan
from migbench.backend.sim import fake_nvml
from migbench.backend.sim.host import init_host
from migbench.footprints.probe import ProbeOptions, profile
from migbench.plan import Plan
from migbench.planner import FleetSpec, SolveOptions, build_fleet, make_plan
from migbench.sweep import load_sweep
from migbench.workflows import resolve_memory
from tests.support.cli import migbench
from tests.support.launchkit import TOY_CMD
from tests.support.simhelp import sim_backend
from tests.support.statedir import sd_at

TWICE = """
version: 1
name: twice
command: {toy} --steps 50 --step-seconds 0.1 --memory 1GiB --per-token 1MiB --batch 16 --seq-len 1024 --lr {lr} --seed {seed}
parameters: {lr: [0.001, 0.0001], seed: [0, 1, 2, 3]}
memory: 34GiB        # the toy allocates 1 GiB + 16 x 1024 x 1 MiB = 17 GiB: declared 2x too high
"""


@pytest.mark.slow
def test_a_sweep_declared_twice_too_high_plans_half_as_many_runs_at_once_as_after_profile(tmp_path, monkeypatch):
    sim = tmp_path / "sim"
    init_host(sim, "A100-SXM4-80GB", 2, mig=True)
    monkeypatch.setenv("MIGBENCH_SIM", str(sim))
    sweep_file = tmp_path / "twice.yaml"
    sweep_file.write_text(textwrap.dedent(TWICE).replace("{toy}", TOY_CMD))
    env = {"MIGBENCH_SIM": str(sim)}
    try:
        res, fp, out = profile(load_sweep(sweep_file), opts=ProbeOptions(steps=2, seconds=60.0, grace_s=0.3, sample_s=0.02), backend=sim_backend(sim))
        assert len(fp.measurements) == 8 and not res.skipped and not res.problems
        declared = migbench("plan", str(sweep_file), "-o", str(tmp_path / "a.yaml"), "--json", cwd=tmp_path, env=env)
        measured = migbench("plan", str(sweep_file), "-o", str(tmp_path / "b.yaml"), "--json", "--footprints", str(out), cwd=tmp_path, env=env)
    finally:
        fake_nvml.uninstall()
    before = json.loads(declared.stdout)
    after = json.loads(measured.stdout)
    at_once = before["solver"]["runs_at_once"], after["solver"]["runs_at_once"]
    assert at_once == (4, 8)  # 34 GiB: two 40 GB instances per GPU; 17 GiB + 10 %: four 20 GB ones
    assert at_once[0] <= at_once[1] / 2
    assert {r["memory_source"] for r in after["runs"]} == {"profile"}
    assert {r["memory_mib"] for r in after["runs"]} == {math.ceil(17408 * 1.1)}
    assert {r["memory_source"] for r in before["runs"]} == {"explicit"}


TOO_LOW = """
version: 1
name: low
launch: {retries: 0, backoff: 0.1s, stop_grace: 1s}
groups:
  - name: lm
    command: {toy} --steps 5 --step-seconds 0.1 --memory 1GiB --per-token 1MiB --batch {batch} --seq-len 1024
    parameters: {batch: [2, 4, 12, 14]}
    memory: 4GiB       # the toy allocates 3, 5, 13 and 15 GiB: batch 12 and 14 do not fit the 1g.10gb instances they get
  - name: big
    command: {toy} --steps 5 --step-seconds 0.1 --memory 20GiB
    memory: 30GiB
"""


@pytest.mark.slow
def test_a_sweep_declared_too_low_is_sized_up_after_one_launch_with_no_run_lost(rig):
    r = rig(TOO_LOW, gpus=1)
    rc, out = r.launch(timeout=90)
    assert rc == 0, out
    assert set(r.states().values()) == {"succeeded"}  # no run lost: the OOM moved to a larger instance
    ooms = [a for a in r.attempts() if a["outcome"] == "oom"]
    oom_prone = {a["run_id"] for a in ooms}
    plan1 = r.plan
    assert oom_prone == {rr.id for rr in plan1.runs if rr.group == "lm" and rr.params["batch"] >= 12}
    assert all(plan1.run(rid).at.profile == "1g.10gb" for rid in oom_prone)

    sweep = load_sweep(r.plan_path.parent / "sweep.yaml")
    fleet = build_fleet([FleetSpec("A100-SXM4-80GB", 1)])
    res = resolve_memory(sweep, fleet, history=[r.state_dir])
    for rid in oom_prone:
        rm = res.runs[rid]
        assert rm.raised and rm.floor_mib == 9729 and rm.memory_mib == math.ceil(9729 * 1.1)  # > the 1g.10gb it died on
    assert {rid for rid, rm in res.runs.items() if rm.raised} == oom_prone  # the others keep what they declared
    plan2 = make_plan(res.sweep, fleet, SolveOptions(time_limit_s=5.0), notes=res.warnings)
    p2 = r.tmp / "second" / "low.plan.yaml"
    plan2.save(p2)
    plan2 = Plan.load(p2)
    for rid in oom_prone:
        assert plan2.run(rid).at.profile not in ("1g.10gb", "1g.10gb+me") and plan2.run(rid).memory_source == "explicit +OOM bound"
    sd2 = r.tmp / "second" / "state"
    apply_plan(plan2, sim_backend(r.sim), confirm=None, state_dir=sd_at(sd2))
    rc, out = _launch(r, p2, sd2)
    assert rc == 0, out
    assert "oom" not in out.lower().replace("room", "")


def _launch(r, plan_path, state_dir):  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    p = subprocess.run(
        [sys.executable, "-m", "migbench.launch", str(plan_path), "--state-dir", str(state_dir)],
        env=r.env,
        capture_output=True,
        text=True,
        timeout=90,
        cwd=r.tmp,
    )
    return p.returncode, p.stdout + p.stderr
