"""`migbench profile --speed` measures a group's compute (issue 20, item 1): the toy trainer emulates
a declared compute share on the simulated host, profile fits it back from its progress lines, writes
it next to memory, `plan --footprints` plans on it and `estimate --accuracy` compares it."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml

from migbench.backend.sim import fake_nvml
from migbench.backend.sim.host import init_host
from migbench.footprints.file import SpeedSide
from migbench.footprints.speed import StepClock, fit_compute
from tests.support.cli import migbench
from tests.support.launchkit import TOY_CMD


def test_step_clock_reads_markers_before_progress_lines(tmp_path: Path) -> None:
    c = StepClock(tmp_path / "log")
    for k, line in enumerate(["loading", "step 1/9 loss 2", "Step 2: loss 1", "step=3", "step 4/9"]):
        c.feed(line, float(k))
    assert c.step_s() == (1.0, 2, "progress-lines")  # steps 1..4 at t 1..4: from step 2, the first left out
    for k in range(5):
        c.feed(f"MIGBENCH_STEP {k}", 10.0 + 2 * k)
    assert c.step_s() == (2.0, 3, "step-markers")


def test_fit_reads_the_duration_model_back() -> None:
    small, big = SpeedSide("1g.10gb", 1 / 7, 0.7, 9), SpeedSide("3g.40gb", 3 / 7, 0.3333, 9)
    assert fit_compute(small, big)[0] == pytest.approx(0.3, rel=0.01) and not fit_compute(small, big)[1]
    assert fit_compute(small, SpeedSide("3g.40gb", 3 / 7, 0.69, 9)) == (1 / 7, False)  # no faster: the memory-sized share
    assert fit_compute(small, SpeedSide("3g.40gb", 3 / 7, 0.2333, 9)) == (3 / 7, True)  # 3x faster: at least the large share


@pytest.mark.slow
def test_profile_speed_measures_the_toy_trainers_compute_and_plan_uses_it(tmp_path: Path) -> None:
    """Bug: nothing measured compute; plans assumed it (1.0 by default)."""
    sim = tmp_path / "sim"
    init_host(sim, "A100-SXM4-80GB", 1, mig=True)
    (tmp_path / "sp.yaml").write_text(
        textwrap.dedent(f"""
        version: 1
        name: sp
        fleet: [{{gpu: A100-SXM4-80GB, count: 1}}]
        groups:
          - name: busy
            command: {TOY_CMD} --steps 14 --step-seconds 0.12 --memory 1500MiB --compute 0.3 --seed {{seed}}
            parameters: {{seed: [0, 1, 2]}}
            memory: 2GiB
            duration: 1h
            compute: 0.1
        """)
    )
    env = {"MIGBENCH_SIM": str(sim)}
    try:
        r = migbench("profile", "sp.yaml", "--speed", "-o", "fp.yaml", cwd=tmp_path, env=env)
        assert r.returncode == 0, r.stderr + r.stdout
        doc = yaml.safe_load((tmp_path / "fp.yaml").read_text())
        (s,) = doc["speeds"]
        assert s["group"] == "busy" and s["small"]["profile"].startswith("1g.") and s["large"]["profile"].startswith("3g.")
        assert s["compute"] == pytest.approx(0.3, rel=0.15) and s["lower_bound"] is False and s["how"] == "progress-lines"
        r = migbench("sim", "nvidia-smi", "-L", cwd=tmp_path, env=env)
        assert "MIG" not in r.stdout  # the probe instances are gone
    finally:
        fake_nvml.uninstall()
    r = migbench("plan", "sp.yaml", "--footprints", "fp.yaml", "-o", "sp.plan.yaml", "--no-runs", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    runs = yaml.safe_load((tmp_path / "sp.plan.yaml").read_text())["runs"]
    assert {x["compute_source"] for x in runs} == {"profile"} and runs[0]["compute"] == pytest.approx(s["compute"])
    assert "measured by `profile --speed`" in " ".join(r.stdout.split())
    r = migbench("estimate", "sp.yaml", "--accuracy", "--footprints", "fp.yaml", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    comp = {c["group"]: c for c in json.loads(r.stdout)["compute"]}
    assert comp["busy"]["declared"] == 0.1 and comp["busy"]["measured"] == pytest.approx(s["compute"], abs=1e-3)
    r = migbench("estimate", "sp.yaml", "--accuracy", "--footprints", "fp.yaml", cwd=tmp_path, env={"MIGBENCH_WIDTH": "200"})
    assert r.returncode == 0, r.stderr
    assert "compute per group" in r.stdout and "busy" in r.stdout and "0.1" in r.stdout
