"""`migbench submit` given a bench directory it must not use: an error that says why, nothing
started and nothing written there (issue 21)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from migbench.backend.sim.host import init_host
from migbench.duration import DurationModel
from migbench.launch.bench import empty_bench
from migbench.plan import PlanGpu
from migbench.sweep.model import LaunchSettings
from tests.support.cli import migbench

pytestmark = pytest.mark.slow  # plans and submits: seconds

SWEEP = """
version: 1
name: {name}
groups:
  - name: w
    command: "true {{i}}"
    parameters: {{i: [0, 1]}}
    memory: 9GiB
"""


def _host(tmp: Path) -> dict[str, str]:
    init_host(tmp / "sim", "A100-SXM4-80GB", 2, mig=True)
    (tmp / "home").mkdir()
    return {"MIGBENCH_SIM": str(tmp / "sim"), "HOME": str(tmp / "home")}


def test_submit_refuses_a_bench_directory_whose_bench_plan_is_a_sweeps_plan(tmp_path: Path):
    """Guards: a sweep's own plan named bench.plan.yaml (sweep `bench`, `--bench-dir .`) was taken
    as the bench plan: submit rewrote its instances, launched it as a fixed plan and waited for a
    bench that never took the submission."""
    env = _host(tmp_path)
    (tmp_path / "bench.yaml").write_text(SWEEP.format(name="bench"))
    (tmp_path / "a.yaml").write_text(SWEEP.format(name="a"))
    res = migbench("plan", "bench.yaml", "--fleet", "A100-SXM4-80GB:2", cwd=tmp_path, env=env, keep_sim=True)
    assert res.returncode == 0, res.stdout + res.stderr
    before = (tmp_path / "bench.plan.yaml").read_bytes()
    res = migbench("submit", "a.yaml", "--bench-dir", str(tmp_path), "--timeout", "2", cwd=tmp_path, env=env, keep_sim=True)
    assert res.returncode == 1 and "Error:" in res.stderr and "not a bench plan" in res.stderr and "Traceback" not in res.stderr, res.stdout + res.stderr
    assert (tmp_path / "bench.plan.yaml").read_bytes() == before
    assert not (tmp_path / "inbox").exists() and not (tmp_path / "runs").exists()


def test_submit_refuses_a_bench_directory_every_user_may_write_into_even_sticky(tmp_path: Path):
    """Guards: a bench directory such as /tmp (world-writable, sticky) passed the trust check, and a
    bench plan another user put there was launched: its runs' commands ran as the submitting user
    (root on a real host)."""
    env = _host(tmp_path)
    shared = tmp_path / "scratch"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    planted = empty_bench([PlanGpu(0, "A100-SXM4-80GB"), PlanGpu(1, "A100-SXM4-80GB")], [], LaunchSettings(), DurationModel())
    planted.save(shared / "bench.plan.yaml")
    os.chown(shared / "bench.plan.yaml", 4242, 4242)  # another user's
    (tmp_path / "a.yaml").write_text(SWEEP.format(name="a"))
    res = migbench("submit", "a.yaml", "--bench-dir", str(shared), "--timeout", "2", cwd=tmp_path, env=env, keep_sim=True)
    out = res.stdout + res.stderr
    assert res.returncode == 1 and "writable by every user" in res.stderr and "Hint:" in res.stderr and "Traceback" not in out, out
    assert sorted(p.name for p in shared.iterdir()) == ["bench.plan.yaml"]  # nothing started, nothing written


def test_submit_refuses_a_sweep_with_runs_no_instance_of_the_fleet_holds(tmp_path: Path):
    """Guards: submit took a run larger than any instance ("1 new run(s)", exit 0), and the bench
    abandoned it; `plan` refuses the same sweep."""
    env = _host(tmp_path)
    (tmp_path / "huge.yaml").write_text(SWEEP.format(name="huge").replace("9GiB", "100GiB"))
    res = migbench("submit", "huge.yaml", "--bench-dir", str(tmp_path / "bench"), "--timeout", "2", cwd=tmp_path, env=env, keep_sim=True)
    out = res.stdout + res.stderr
    assert res.returncode == 1 and "fit no instance of the fleet" in res.stderr and "Hint:" in res.stderr and "Traceback" not in out, out
    assert not (tmp_path / "bench").exists()  # nothing submitted, no bench started
