"""Plans for the export tests, made by the real planner from small sweeps (in-process CLI)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from migbench.plan import Plan
from tests.support import REPO
from tests.support.cli import migbench

TOY = f"{sys.executable} {REPO / 'examples' / 'toy_trainer.py'}"

TWO_NODES = f"""version: 1
name: two
fleet:
  - {{node: n0, gpu: A100-SXM4-80GB, count: 1}}
  - {{node: n1, gpu: A100-SXM4-80GB, count: 1}}
launch: {{retries: 1}}
groups:
  - name: tiny
    command: {TOY} --steps 1 --step-seconds 0.05 --seed {{seed}}
    parameters: {{seed: 'range(0,12)'}}
    memory: 4GiB
    max_runs_per_instance: 2
    profiles: [1g.10gb]
  - name: big
    command: {TOY} --steps 1 --step-seconds 0.05 --seed {{seed}}
    parameters: {{seed: [0, 1, 2]}}
    memory: 30GiB
    profiles: [3g.40gb]
"""


def make_plan(where: Path, text: str = TWO_NODES) -> tuple[Plan, Path]:
    where.mkdir(parents=True, exist_ok=True)
    (where / "s.yaml").write_text(text)
    r = migbench("plan", "s.yaml", "-o", "p.yaml", "--no-runs", cwd=where)
    assert r.returncode == 0, r.stderr
    return Plan.load(where / "p.yaml"), where / "p.yaml"


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Plan, Path]:
    return make_plan(tmp_path_factory.mktemp("two"))
