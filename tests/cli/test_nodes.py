"""Plans for several nodes: `plan` prints per node, the plan records each GPU's node, `apply --node`
and `check --node` work on one node's share, a multi-node plan needs --node."""

from __future__ import annotations

import pytest
import yaml

from migbench.plan import Plan
from tests.support.cli import migbench

SWEEP = """version: 1
name: two-nodes
fleet:
  - {node: gpu01, gpu: A100-SXM4-80GB, count: 1}
  - {node: gpu02, gpu: A100-SXM4-80GB, count: 2}
groups:
  - name: small
    command: python3 t.py --seed {seed}
    parameters: {seed: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]}
    memory: 8GiB
  - name: big
    command: python3 t.py --seed {seed}
    parameters: {seed: [0, 1, 2]}
    memory: 35GiB
"""


def make_plan(tmp_path):  # type: ignore[no-untyped-def]
    (tmp_path / "s.yaml").write_text(SWEEP)
    r = migbench("plan", "s.yaml", "-o", "p.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    return r, Plan.load(tmp_path / "p.yaml")


def test_plan_records_nodes_and_prints_per_node(tmp_path):
    r, plan = make_plan(tmp_path)
    assert [(g.gpu, g.node) for g in plan.fleet] == [(0, "gpu01"), (1, "gpu02"), (2, "gpu02")]
    assert plan.nodes() == ["gpu01", "gpu02"]
    doc = yaml.safe_load((tmp_path / "p.yaml").read_text())
    assert {k: doc["fleet"][2][k] for k in ("gpu", "model", "node")} == {"gpu": 2, "model": "A100-SXM4-80GB", "node": "gpu02"}
    out = r.stdout
    assert out.index("node gpu01: 1 GPU(s)") < out.index("gpu01 GPU 0") < out.index("node gpu02: 2 GPU(s)") < out.index("gpu02 GPU 1")
    assert " node " in out.splitlines()[[i for i, line in enumerate(out.splitlines()) if "run " in line and "group" in line][0]]


def test_node_share_renumbers_gpus_as_the_node_sees_them(tmp_path):
    _, plan = make_plan(tmp_path)
    share = plan.node_share("gpu02")
    assert [(g.gpu, g.node) for g in share.fleet] == [(0, "gpu02"), (1, "gpu02")]
    assert {i.gpu for i in share.instances} <= {0, 1}
    on = [r.id for r in plan.runs if r.gpu in (1, 2)]
    assert sorted(r.id for r in share.runs) == sorted(on)
    assert [i.profile for i in share.instances] == [i.profile for i in plan.instances if i.gpu in (1, 2)]


@pytest.mark.slow
def test_apply_and_check_one_node_on_a_host_shaped_like_it(tmp_path):
    _, plan = make_plan(tmp_path)
    sim = tmp_path / "sim"
    assert migbench("sim", "init", str(sim), "--gpu", "A100-SXM4-80GB", "--count", "2").returncode == 0
    env = {"MIGBENCH_SIM": str(sim)}
    r = migbench("apply", "p.yaml", "--yes", cwd=tmp_path, env=env)
    assert r.returncode == 2 and "spans 2 nodes (gpu01, gpu02)" in r.stderr and "--node NODE" in r.stderr
    r = migbench("apply", "p.yaml", "--node", "gpu03", "--yes", cwd=tmp_path, env=env)
    assert r.returncode == 1 and "node 'gpu03' is not in the plan's fleet" in r.stderr and "gpu01, gpu02" in r.stderr
    r = migbench("apply", "p.yaml", "--node", "gpu02", "--yes", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    bindings = tmp_path / "runs" / "two-nodes" / "nodes" / "gpu02" / "bindings.json"
    assert bindings.exists() and not (tmp_path / "runs" / "two-nodes" / "bindings.json").exists()
    r = migbench("check", "p.yaml", "--node", "gpu02", cwd=tmp_path, env=env)
    assert r.returncode == 0 and "matches" in r.stdout, r.stdout + r.stderr
    r = migbench("apply", "p.yaml", "--node", "gpu02", "--yes", cwd=tmp_path, env=env)
    assert r.returncode == 0 and "already matches" in r.stdout


def test_run_refuses_a_fleet_of_several_nodes(tmp_path):
    (tmp_path / "s.yaml").write_text(SWEEP)
    r = migbench("run", "s.yaml", cwd=tmp_path, env={"MIGBENCH_SIM": str(tmp_path / "nosim")})
    assert r.returncode == 1 and "spans 2 nodes" in r.stderr and "migbench export slurm" in r.stderr
