"""Scripts written for the W&B agent, run by migbench: each sees its parameters in `wandb.config`
and its run's group, name and id, as the agent would give them (launch/wandbenv.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from migbench.launch.spec import build_spec
from tests.support.launchkit import PY

STUB = Path(__file__).parent / "wandb_stub"

QUICKSTART = """\
import json, os, wandb
run = wandb.init(project="quickstart")
lr, epochs = wandb.config.get("lr", 0.01), wandb.config.get("epochs", 1)   # the defaults it trains with otherwise
out = os.path.join(os.environ["OUT_DIR"], os.environ["MIGBENCH_RUN_ID"] + ".json")
with open(out, "w") as f:
    json.dump({"config": dict(wandb.config), "lr": lr, "epochs": epochs, "group": run.group, "name": run.name,
               "id": run.id, "job_type": run.job_type, "tags": list(run.tags), "resume": run.resume}, f)
"""

SWEEP = f"""
version: 1
name: wb
launch: {{retries: 0, env: {{WANDB_TAGS: mine}}}}
program: quickstart.py
command: [{PY}, "${{program}}"]
method: grid
parameters:
  lr: {{values: [0.1, 0.001]}}
  epochs: {{value: 3}}
  optimizer:
    parameters:
      beta: {{values: [0.9]}}
memory: 2GiB
"""


@pytest.mark.slow
def test_a_wandb_quickstart_script_sees_each_runs_parameters_in_wandb_config(rig, tmp_path):
    """Issue 22 item 7: a script that reads wandb.config silently trained with its defaults under migbench."""
    r = rig(SWEEP)
    (r.plan_path.parent / "quickstart.py").write_text(QUICKSTART)
    out = tmp_path / "out"
    out.mkdir()
    rc, log = r.launch(cli=True, extra_env={"PYTHONPATH": str(STUB), "OUT_DIR": str(out), "WANDB_MODE": "offline", "WANDB_JOB_TYPE": "from-the-shell"})
    assert rc == 0, log
    plan = r.plan
    seen = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}
    assert sorted(seen) == sorted(run.id for run in plan.runs)
    assert sorted(s["lr"] for s in seen.values()) == [0.001, 0.1]
    for run in plan.runs:
        s = seen[run.id]
        assert s["config"] == {"lr": run.params["lr"], "epochs": 3, "optimizer": {"beta": 0.9}} and s["epochs"] == 3
        assert (s["group"], s["name"], s["job_type"]) == ("wb", run.id, "from-the-shell")  # the user's own WANDB_* wins
        assert s["id"].startswith(run.id + "-") and s["resume"] == "allow"
        assert s["tags"] == ["mine"]


def test_the_wandb_run_id_is_the_same_on_every_attempt(rig):
    """Issue 22 item 7: a retried run must continue its W&B run, so its WANDB_RUN_ID may not change."""
    r = rig(SWEEP)
    plan = r.plan
    run = plan.runs[0]
    inst = next(i for i in plan.instances if run.id in i.runs)
    one, two = (build_spec(plan, run, instance=inst.key, mig_uuid="MIG-x", attempt=a, state_dir=r.state_dir) for a in (1, 2))
    assert one.env["WANDB_RUN_ID"] == two.env["WANDB_RUN_ID"] and one.env["WANDB_CONFIG_PATHS"] == two.env["WANDB_CONFIG_PATHS"]
    assert one.env["WANDB_TAGS"] == "mine" and "MIGBENCH_RESUME" in two.env
