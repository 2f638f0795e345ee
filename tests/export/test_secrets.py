"""Issue 19 item 13: a token in a sweep's `env:` was copied into a 0644 plan file and a 0644 k8s
`plan-configmap.yaml` (a ConfigMap, readable by whoever reads ConfigMaps). A plan that carries env
values is written 0600, and the k8s export puts it in a Secret, written 0600; no other exported
file holds the value."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import yaml

from tests.support.cli import migbench

TOKEN = "hf_s3cr3t_t0ken_value"
SWEEP = f"""version: 1
name: tok
command: echo {{x}}
parameters: {{x: [1, 2]}}
memory: 1GiB
env: {{HF_TOKEN: {TOKEN}}}
fleet: [{{node: n1, gpu: A100-SXM4-80GB, count: 1}}]
"""


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _plan(tmp_path: Path, sweep: str) -> Path:
    (tmp_path / "s.yaml").write_text(sweep)
    os.chmod(tmp_path / "s.yaml", 0o600)
    old = os.umask(0o022)
    try:
        r = migbench("plan", "s.yaml", "-o", "s.plan.yaml", "--no-runs", cwd=tmp_path)
    finally:
        os.umask(old)
    assert r.returncode == 0, r.stderr
    return tmp_path / "s.plan.yaml"


def test_a_plan_with_env_values_is_written_0600_even_over_a_0644_file(tmp_path):
    """Guards issue 19 item 13: the token of a 0600 sweep landed in a 0644 plan file."""
    plan = _plan(tmp_path, SWEEP)
    assert TOKEN in plan.read_text() and _mode(plan) == 0o600
    os.chmod(plan, 0o644)  # an older migbench's plan
    plan = _plan(tmp_path, SWEEP)
    assert _mode(plan) == 0o600


def test_a_plan_without_env_values_keeps_the_usual_mode(tmp_path):
    """Guards issue 19 item 13 (the other side): nothing secret, the usual 0666 less the umask."""
    plan = _plan(tmp_path, SWEEP.replace(f"env: {{HF_TOKEN: {TOKEN}}}\n", ""))
    assert _mode(plan) == 0o644


def test_the_k8s_export_puts_env_values_in_a_secret_only(tmp_path):
    """Guards issue 19 item 13: `export k8s` put the plan, token included, in a 0644 ConfigMap manifest."""
    _plan(tmp_path, SWEEP)
    out = tmp_path / "k8s"
    r = migbench("export", "k8s", "s.plan.yaml", "-o", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    sec = out / "plan-secret.yaml"
    assert not (out / "plan-configmap.yaml").exists()
    doc = yaml.safe_load(sec.read_text())
    assert doc["kind"] == "Secret" and TOKEN in doc["stringData"]["plan.yaml"] and _mode(sec) == 0o600
    holding = [str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and TOKEN in p.read_text()]
    assert holding == ["plan-secret.yaml"], holding
    for job in (out / "jobs").iterdir():
        vols = yaml.safe_load(job.read_text())["spec"]["template"]["spec"]["volumes"]
        plan_vol = next(v for v in vols if v["name"] == "plan")
        assert plan_vol == {"name": "plan", "secret": {"secretName": doc["metadata"]["name"]}}
    assert "plan-secret.yaml" in r.stdout and "plan-configmap.yaml" not in r.stdout, r.stdout
