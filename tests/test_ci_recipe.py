"""The CI recipe end to end (issue 10, item 8): the GitHub Actions workflow and the pre-commit hook
of examples/ci/ run on a repository whose bench is the real H100 PCIe of tests/data/samples/."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support import REPO
from tests.support.captures import h100_pcie
from tests.support.ci import PRE_COMMIT, WORKFLOW, run_pre_commit_hook, run_workflow
from tests.support.cli import migbench

pytestmark = pytest.mark.slow

SWEEPS = {
    "ablation": """\
version: 1
name: ablation
groups:
  - name: small
    command: python train.py --lr {lr} --seed {seed}
    parameters: {lr: [0.001, 0.0003], seed: [0, 1]}
    memory: 6GiB
""",
    "big": """\
version: 1
name: big
command: python train.py --layers {layers}
parameters: {layers: [24, 48]}
memory: 30GiB
""",
}


def make_repo(root: Path) -> Path:
    """sweeps/, the bench's capture in ci/bench/, and plans/ made against the bench (as a team
    would commit them)."""
    repo = root / "repo"
    (repo / "sweeps").mkdir(parents=True)
    (repo / "plans").mkdir()
    for name, text in SWEEPS.items():
        (repo / "sweeps" / f"{name}.yaml").write_text(text)
    cap = h100_pcie(repo / "ci" / "bench")
    (cap / "nvidia-smi-q.txt").write_text("Driver Version                            : 525.125.06\n")  # the driver scaleway states
    bench = root / "bench"
    assert migbench("sim", "init", str(bench), "--from", str(cap)).returncode == 0
    for name in SWEEPS:
        r = migbench("plan", f"sweeps/{name}.yaml", "-o", f"plans/{name}.plan.yaml", "--no-runs", cwd=repo, env={"MIGBENCH_SIM": str(bench)})
        assert r.returncode == 0, r.stderr
    return repo


def test_the_files_are_what_the_readme_says():
    wf = yaml.safe_load(WORKFLOW.read_text())
    names = [s.get("name") for s in wf["jobs"]["dry-run"]["steps"]]
    assert "Install migbench" in names and "Every sweep plans, and its committed plan is not stale" in names
    hook = yaml.safe_load(PRE_COMMIT.read_text())["repos"][0]["hooks"][0]
    assert hook["language"] == "system" and hook["pass_filenames"] is False


def test_the_workflow_and_the_hook_pass_then_catch_a_stale_plan(tmp_path):
    repo = make_repo(tmp_path)
    steps, summary = run_workflow(repo, tmp_path / "runner")
    assert [s.returncode for s in steps] == [0] * 4, "\n\n".join(f"## {s.name}\n{s.output}" for s in steps)
    assert "Simulated host" in steps[0].output and "1 x NVIDIA H100 PCIe" in steps[0].output
    assert "[ok] GPU 0 (NVIDIA H100 PCIe): MIG enabled, 4 GPU instance(s)" in steps[1].output
    assert steps[2].output.count("is up to date") == 2
    assert "### migbench apply plans/ablation.plan.yaml --dry-run" in summary
    assert "nvidia-smi mig -i 0 -gi" in summary  # what apply would do to the captured bench
    assert run_pre_commit_hook(repo, tmp_path / "hook").returncode == 0

    # a new seed: the committed plan is stale, CI and the hook say so
    (repo / "sweeps" / "ablation.yaml").write_text(SWEEPS["ablation"].replace("seed: [0, 1]", "seed: [0, 1, 2]"))
    steps, _ = run_workflow(repo, tmp_path / "runner2")
    assert steps[-1].name == "Every sweep plans, and its committed plan is not stale" and steps[-1].returncode == 1
    assert "plans/ablation.plan.yaml is stale" in steps[-1].output and "2 run(s) added" in steps[-1].output
    assert "plans/big.plan.yaml is up to date" in steps[-1].output
    hook = run_pre_commit_hook(repo, tmp_path / "hook2")
    assert hook.returncode == 1 and "is stale" in hook.output


def test_a_plan_committed_from_a_laptop_passes_on_the_ci_bench_and_the_hint_fixes_a_stale_one(tmp_path):
    """Issue 22 item 11: a plan made without MIGBENCH_SIM was always stale against the CI bench (provenance differs), and the
    hint's command, run, reproduced the stale plan."""
    repo = tmp_path / "repo"
    (repo / "sweeps").mkdir(parents=True)
    (repo / "plans").mkdir()
    fleet = "fleet: [{gpu: H100-PCIE-80GB, count: 1}]\n"
    for name, text in SWEEPS.items():
        (repo / "sweeps" / f"{name}.yaml").write_text(text.replace("version: 1\n", "version: 1\n" + fleet, 1))
    cap = h100_pcie(repo / "ci" / "bench")
    (cap / "nvidia-smi-q.txt").write_text("Driver Version                            : 525.125.06\n")
    laptop = {k: v for k, v in os.environ.items() if k != "MIGBENCH_SIM"}
    for name in SWEEPS:  # on a laptop: no GPU, no simulator, the built-in catalogue
        r = subprocess.run(
            [sys.executable, "-m", "migbench", "plan", f"sweeps/{name}.yaml", "-o", f"plans/{name}.plan.yaml", "--no-runs"],
            cwd=repo,
            env=laptop,
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0, r.stderr
        assert "origin: builtin" in (repo / "plans" / f"{name}.plan.yaml").read_text()
    steps, _ = run_workflow(repo, tmp_path / "runner")
    assert [s.returncode for s in steps] == [0] * 4, "\n\n".join(f"## {s.name}\n{s.output}" for s in steps)
    assert steps[2].output.count("is up to date") == 2 and "the profile table came from builtin" in steps[2].output
    assert run_pre_commit_hook(repo, tmp_path / "hook").returncode == 0

    # a real change: bigger runs need other instances
    (repo / "sweeps" / "big.yaml").write_text((repo / "sweeps" / "big.yaml").read_text().replace("memory: 30GiB", "memory: 50GiB"))
    steps, _ = run_workflow(repo, tmp_path / "runner2")
    assert steps[-1].returncode == 1 and "plans/big.plan.yaml is stale" in steps[-1].output and "layout" in steps[-1].output
    hook = run_pre_commit_hook(repo, tmp_path / "hook2")
    assert hook.returncode == 1 and "plans/big.plan.yaml is stale" in hook.output
    hint = re.search(r"Hint: regenerate it with `(.+)` and commit it", hook.output)
    assert hint and "--from ci/bench" in hint[1], hook.output
    r = subprocess.run(["bash", "-c", hint[1]], cwd=repo, env=laptop, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert run_pre_commit_hook(repo, tmp_path / "hook3").returncode == 0  # following the hint makes the check pass
    steps, _ = run_workflow(repo, tmp_path / "runner3")
    assert [s.returncode for s in steps] == [0] * 4


def test_the_workflow_installs_migbench_from_its_repository_pinned(tmp_path):
    """Issue 22 item 11: the workflow ran `pip install migbench`, which is not on PyPI."""
    step = next(s for s in yaml.safe_load(WORKFLOW.read_text())["jobs"]["dry-run"]["steps"] if s.get("name") == "Install migbench")
    env = yaml.safe_load(WORKFLOW.read_text())["env"]
    assert "git+${MIGBENCH_GIT}@${MIGBENCH_REF}" in step["run"] and set(env) == {"MIGBENCH_GIT", "MIGBENCH_REF"}
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)], check=True)
    # the step as written, against this repository at its HEAD commit, into a fresh environment (deps: the runner's)
    r = subprocess.run(
        [
            "bash",
            "-eo",
            "pipefail",
            "-c",
            step["run"].replace("pip install", f"{sys.executable} -m pip --python {venv / 'bin' / 'python'} install --no-deps -q"),
        ],
        env=dict(os.environ, MIGBENCH_GIT=f"file://{REPO}", MIGBENCH_REF=head.stdout.strip()),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert (venv / "bin" / "migbench").exists()
