"""Run the CI recipe of examples/ci/ here: the GitHub Actions workflow's `run:` steps in order, in a
bash like the runner's (`bash --noprofile --norc -eo pipefail`), with RUNNER_TEMP, GITHUB_ENV and
GITHUB_STEP_SUMMARY as the runner sets them; and the pre-commit hook's entry."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.support import REPO

WORKFLOW = REPO / "examples" / "ci" / "migbench.yml"
PRE_COMMIT = REPO / "examples" / "ci" / "pre-commit-config.yaml"
SKIPPED = ("Install migbench",)  # migbench is installed here already (this checkout)


@dataclass
class StepRun:
    name: str
    returncode: int
    output: str


def _env(runner_temp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("MIGBENCH_SIM", None)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.update(RUNNER_TEMP=str(runner_temp), MIGBENCH_WIDTH="100", NO_COLOR="1")
    return env


def run_workflow(repo: Path, runner_temp: Path) -> tuple[list[StepRun], str]:
    """The workflow's steps in `repo` until one fails; returns each step's result and the job summary."""
    doc = yaml.safe_load(WORKFLOW.read_text())
    steps = doc["jobs"]["dry-run"]["steps"]
    runner_temp.mkdir(parents=True, exist_ok=True)
    env_file, summary = runner_temp / "github_env", runner_temp / "step_summary.md"
    env_file.write_text("")
    summary.write_text("")
    env = _env(runner_temp)
    env.update(GITHUB_ENV=str(env_file), GITHUB_STEP_SUMMARY=str(summary))
    out: list[StepRun] = []
    for step in steps:
        if "run" not in step or step.get("name") in SKIPPED:
            continue
        p = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]], cwd=repo, env=env, capture_output=True, text=True, timeout=600
        )
        out.append(StepRun(step.get("name", step["run"]), p.returncode, p.stdout + p.stderr))
        for line in env_file.read_text().splitlines():  # what a step exported for the next ones
            if "=" in line:
                k, v = line.split("=", 1)
                env[k] = v
        if p.returncode != 0:
            break
    return out, summary.read_text()


def run_pre_commit_hook(repo: Path, runner_temp: Path) -> StepRun:
    """The local hook's entry, split and run as pre-commit runs it (language: system)."""
    doc = yaml.safe_load(PRE_COMMIT.read_text())
    hook = doc["repos"][0]["hooks"][0]
    p = subprocess.run(shlex.split(hook["entry"]), cwd=repo, env=_env(runner_temp), capture_output=True, text=True, timeout=600)
    return StepRun(hook["id"], p.returncode, p.stdout + p.stderr)
