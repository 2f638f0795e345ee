"""`StateDir`: a plan's state directory, resolved once at a command's edge and passed down (its files
as properties); `--state-dir` given outright is kept as given and named in hints."""

from __future__ import annotations

import copy
import os

import pytest
import yaml

from migbench.errors import InputError
from migbench.plan import Plan
from migbench.state import StateDir, state_dir_for
from tests.support import REPO
from tests.support.fuzz import base_plan_doc
from tests.support.race import eve_makes_runs_first, shared_sticky


def _plan(tmp_path):  # type: ignore[no-untyped-def]
    p = tmp_path / "plans" / "x.plan.yaml"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(yaml.safe_dump(copy.deepcopy(base_plan_doc())))
    return p


def test_the_plans_state_dir_and_its_files(tmp_path):
    path = _plan(tmp_path)
    plan = Plan.load(path)
    sd = StateDir.of(plan)
    base = tmp_path / "plans" / "runs" / "fuzz"
    assert sd.path == base == state_dir_for(plan) and not sd.given and sd.option == ""
    assert (sd.bindings, sd.checkpoint, sd.db, sd.lock, sd.log, sd.jobs) == (
        base / "bindings.json",
        base / "checkpoint.json",
        base / "launch.db",
        base / "launcher.lock",
        base / "launcher.log",
        base / "slurm" / "jobs.tsv",
    )
    assert os.fspath(sd) == str(sd) == f"{sd}" == str(base) and sd / "r-1" == base / "r-1"
    assert StateDir.of_file(path) == sd  # from the file's head, before the plan is loaded
    assert StateDir.in_dir(path.parent, plan.launch.log_dir, plan.name) == sd
    assert StateDir.of(plan, sd) is sd  # made once: passing it on never re-derives it


def test_a_given_state_dir_is_kept_as_given_and_named_in_hints(tmp_path):
    plan = Plan.load(_plan(tmp_path))
    given = tmp_path / "elsewhere"
    sd = StateDir.of(plan, given)
    assert sd.path == given and sd.given and sd.option == f" --state-dir {given}"
    assert StateDir.of_file(plan.path or "", given) == sd == StateDir.at(given)
    node = StateDir.of(plan).node("n1")
    assert node.path == StateDir.of(plan).path / "nodes" / "n1" and node.given  # apply --node names it in hints
    assert StateDir.of(plan).named().option == f" --state-dir {StateDir.of(plan).path}"
    with pytest.raises(InputError):
        StateDir.of(plan).node("../x")


def test_ensure_creates_it_with_the_state_mode(tmp_path):
    sd = StateDir.at(tmp_path / "a" / "state").ensure()
    assert sd.is_dir() and (sd.path.stat().st_mode & 0o777) == 0o700


def test_the_core_never_derives_a_state_dir_from_the_plan_again():
    """The state directory is made once, at a command's edge (cli/, workflows.py, launch/__main__.py,
    export/execute.py), and handed down: `state_dir_for` (the plan's default, for tests and scripts)
    is not called inside migbench, and the core makes a StateDir only where a caller gave none
    (`StateDir.of(plan, given)` returns a given StateDir as it is)."""
    pkg = REPO / "migbench"
    callers = sorted(str(p.relative_to(pkg)) for p in pkg.rglob("*.py") if p.name != "state.py" and "state_dir_for(" in p.read_text())
    assert callers == []


def test_the_entry_points_take_the_commands_state_dir_only():
    """Guards: apply, launch, report and export also took `Path | str | None` for the state
    directory and made the StateDir again inside (`StateDir.of(plan, state_dir)` in each)."""
    import dataclasses
    import inspect

    from migbench.apply.reconcile import apply_plan
    from migbench.export import execute, slurm
    from migbench.launch.options import LaunchOptions
    from migbench.launch.prepare import dry_run, preflight
    from migbench.report import ReportBuilder
    from migbench.report.data import build_report
    from migbench.workflows import RunReady, plan_and_apply

    for fn in (apply_plan, execute.load_task_plan, execute.prepare, slurm.write, preflight, dry_run, ReportBuilder.__init__, build_report, plan_and_apply):
        param = inspect.signature(fn).parameters["state_dir"]
        assert (param.annotation, param.default) == ("StateDir", inspect.Parameter.empty), fn
    for cls in (LaunchOptions, RunReady):
        field = next(f for f in dataclasses.fields(cls) if f.name == "state_dir")
        assert (field.type, field.default) == ("StateDir", dataclasses.MISSING), cls
    pkg = REPO / "migbench"
    remade = sorted(str(p.relative_to(pkg)) for p in pkg.rglob("*.py") if not p.is_relative_to(pkg / "cli") and "StateDir.of(plan, state_dir)" in p.read_text())
    assert remade == []


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_a_state_directory_another_user_makes_between_the_check_and_its_creation_is_refused(tmp_path, monkeypatch):
    """Guards: the state directory was checked (no directory on its way another user could change),
    then created where missing: in a shared sticky directory, another user who made runs/ in
    between (after the check, before the mkdir) had the launch's state made inside her directory."""
    from migbench import state as state_mod
    from migbench.errors import MigbenchError
    from migbench.state import ensure_state_dir

    shared = shared_sticky(tmp_path)
    eve_makes_runs_first(monkeypatch, state_mod, shared)
    with pytest.raises(MigbenchError, match=r"refusing .*/runs/s as the state directory: the directory .*/runs is owned by uid 12345"):
        ensure_state_dir(shared / "runs" / "s")
