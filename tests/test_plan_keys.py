"""A run's plan-file keys are declared once (issue 23, item 1): `plancheck.RUN_KEYS` drives how
`plan` writes a run, how `Plan.load` reads it back into its parts (`RunCore`, `Assignment`,
`Finished`) and what the check refuses; adding a key to the table is all a round trip takes."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from migbench import plan as plan_mod
from migbench import plancheck
from migbench.duration import DurationModel
from migbench.errors import InputError
from migbench.plan import Assignment, Finished, Plan, PlanGpu, PlanInstance, PlanRun, SolverInfo
from migbench.plancheck import RUN_KEYS, SCOPES, PlanKey
from migbench.sweep.model import LaunchSettings, RunCore

WHERE = Assignment(0, "3g.40gb", 4, 0)
"""The instance every run below is planned on (a legal A100 placement)."""


def _sample(k: PlanKey) -> Any:
    """A value of `k` that is neither its default nor null, as the run holds it, from its declaration only."""
    fixed = {"id": "g-1", "argv": ("python3", "train.py"), "workdir": "/work/runs", "ran_on": "0:1g.10gb@6", "profiles": ("3g.40gb",)}
    fixed.update({f.name: getattr(WHERE, f.name) for f in dataclasses.fields(Assignment) if f.name in ("gpu", "profile", "start")})
    if k.name in fixed:
        return fixed[k.name]
    if k.choices:
        return k.choices[-1]
    return {
        "int": int(k.minimum or 0) + 3,
        "number": 12.5,
        "fraction": 0.25,
        "str": f"{k.key}-value",
        "bool": True,
        "strs": ("a", "b"),
        "env": {"B_VAR": "2", "A_VAR": "1"},
        "map": {"lr": 0.1, "seed": 3},
    }[k.kind]


def _parts(keys: tuple[PlanKey, ...]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {scope: {} for scope in SCOPES}
    for k in keys:
        out[k.scope][k.name] = _sample(k)
    return out


def _plan(run: PlanRun) -> Plan:
    return Plan(
        name="keys",
        sweep_file=None,
        sweep_sha256="",
        fleet=[PlanGpu(0, "A100-SXM4-80GB")],
        instances=[PlanInstance(0, WHERE.profile, WHERE.start, 40192, 3 / 7, (run.id,))],
        runs=[run],
        unplaced=[],
        solver=SolverInfo("OPTIMAL", "runs_at_once", 1, 1, 0.0),
        duration_model=DurationModel(),
        launch=LaunchSettings(),
        models={},
    )


def test_every_part_of_a_planned_run_has_its_keys_declared_and_nothing_else():
    """Each field of a planned run's parts is one key of the table, and each key one field."""
    declared = {scope: {k.name for k in RUN_KEYS if k.scope == scope} for scope in SCOPES}
    assert declared == {
        "run": {f.name for f in dataclasses.fields(RunCore)},
        "at": {f.name for f in dataclasses.fields(Assignment)},
        "done": {f.name for f in dataclasses.fields(Finished)},
    }
    assert len({k.key for k in RUN_KEYS}) == len(RUN_KEYS)
    assert {f.name for f in dataclasses.fields(PlanRun)} == declared["run"] | {"at", "finished"}


def test_a_run_with_every_key_set_comes_back_as_it_was_written(tmp_path: Path):
    parts = _parts(RUN_KEYS)
    run = PlanRun.of(RunCore(**parts["run"]), Assignment(**parts["at"]), Finished(**parts["done"]))
    plan = _plan(run)
    written = plan.to_dict()["runs"][0]
    assert list(written) == [k.key for k in RUN_KEYS]  # the table's order is the file's
    assert all(written[k.key] is not None and written[k.key] != k.write(k.default) for k in RUN_KEYS)
    assert written["env"] == {"A_VAR": "1", "B_VAR": "2"}
    plan.save(tmp_path / "keys.plan.yaml")
    back = Plan.load(tmp_path / "keys.plan.yaml")
    assert back.runs == [run]
    assert back.to_yaml() == plan.to_yaml()


def test_absent_keys_read_as_their_declared_defaults(tmp_path: Path):
    parts = _parts(tuple(k for k in RUN_KEYS if k.required or k.scope == "at"))
    doc = _plan(PlanRun.of(RunCore(**_parts(RUN_KEYS)["run"]), Assignment(**parts["at"]))).to_dict()
    doc["runs"] = [{**{k: v for k, v in doc["runs"][0].items() if k in {x.key for x in RUN_KEYS if x.required or x.scope == "at"}}}]
    run = Plan.from_dict(doc).runs[0]
    for k in RUN_KEYS:
        if k.scope == "run" and not k.required:
            assert getattr(run, k.name) == k.read(None), k.key
    assert run.finished is None and run.at == Assignment(**parts["at"])


@pytest.mark.parametrize("key", [k for k in RUN_KEYS if k.minimum is not None], ids=lambda k: f"runs.{k.key}")
def test_a_value_below_a_declared_minimum_is_refused_at_its_line(tmp_path: Path, key: PlanKey):
    parts = _parts(RUN_KEYS)
    plan = _plan(PlanRun.of(RunCore(**parts["run"]), Assignment(**parts["at"]), Finished(**parts["done"])))
    doc = plan.to_dict()
    doc["runs"][0][key.key] = int(key.minimum or 0) - 1
    with pytest.raises(InputError) as err:
        Plan.from_dict(doc)
    assert any(p.field == f"runs[0].{key.key}" and re.search(r"must be >=? ", p.message) for p in err.value.problems), err.value.problems


def test_adding_a_key_to_the_table_is_all_a_round_trip_takes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A new key of the assignment (its part given the field) is written, read back and checked
    with its line, and no writer, reader or check was edited for it."""

    @dataclasses.dataclass(frozen=True)
    class Prioritised(Assignment):
        priority: int = 0

    keys = (*RUN_KEYS, PlanKey("priority", "int", "at", "the run's priority in its wave", default=0, minimum=0))
    monkeypatch.setattr(plancheck, "RUN_KEYS", keys)
    monkeypatch.setattr(plan_mod, "RUN_KEYS", keys)
    monkeypatch.setitem(plan_mod._PARTS, "at", Prioritised)
    parts = _parts(RUN_KEYS)
    run = PlanRun.of(RunCore(**parts["run"]), Prioritised(**parts["at"], priority=3))
    plan = _plan(run)
    path = tmp_path / "p.plan.yaml"
    plan.save(path)
    text = path.read_text()
    assert "  priority: 3\n" in text
    back = Plan.load(path)
    assert back.runs == [run] and back.to_yaml() == text
    path.write_text(text.replace("  priority: 3\n", "  priority: -2\n"))
    with pytest.raises(InputError) as err:
        Plan.load(path)
    line = text.splitlines().index("  priority: 3") + 1
    assert [(p.field, p.line, p.message) for p in err.value.problems] == [("runs[0].priority", line, "must be >= 0, got -2")]
