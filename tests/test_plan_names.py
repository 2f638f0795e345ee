"""The plan file as a hostile input (names and paths checked whatever wrote the file), and a fuzz of
its YAML shapes (every input loads or is an InputError, never a traceback)."""

from __future__ import annotations

import copy

import pytest
import yaml
from hypothesis import HealthCheck, given, settings

from migbench.errors import InputError
from migbench.plan import Plan
from migbench.state import state_dir_for
from migbench.sweep.model import LaunchSettings
from tests.support.fuzz import base_plan_doc, check_plan_text, plan_texts

BASE = base_plan_doc()


def _write(tmp_path, doc):  # type: ignore[no-untyped-def]
    p = tmp_path / "plans" / "x.plan.yaml"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(yaml.safe_dump(doc))
    return p


@pytest.mark.parametrize(
    "where, value, field",
    [
        (("sweep", "name"), "../../X", "sweep.name"),
        (("sweep", "name"), "a/b", "sweep.name"),
        (("sweep", "name"), ".hidden", "sweep.name"),
        (("launch", "log_dir"), "../..", "launch"),
        (("launch", "log_dir"), "runs/../../elsewhere", "launch"),
        (("runs", 0, "id"), "../../escape", "runs[0].id"),
        (("runs", 1, "env"), {"A=B": "x"}, "runs[1].env"),
        (("launch", "env"), {"BAD NAME": "x"}, "launch"),
        (("fleet", 0, "node"), "gpu01\ntouch /tmp/owned #", "fleet[0].node"),
        (("fleet", 0, "node"), "../../elsewhere", "fleet[0].node"),
        (("fleet", 0, "model"), "A100-X\ntouch /tmp/owned #", "fleet[0].model"),
        (("fleet", 0, "driver"), "550\rid", "fleet[0].driver"),
        (("instances", 0, "profile"), "1g.10gb\nid #", "instances[0].profile"),
    ],
)
def test_names_and_paths_from_a_hand_edited_plan_are_checked(tmp_path, where, value, field):
    """Guards: a plan's `sweep.name: ../../X` made apply write bindings.json outside the state dir,
    and `launch.log_dir: ../..` moved the state out of the plan's directory; a node, model or
    profile holding a line break was written into `export slurm`'s scripts (apply-<node>.sh, run as
    root, ran the line after it), and a node `../..` wrote them outside the export directory."""
    doc = copy.deepcopy(BASE)
    node = doc
    for k in where[:-1]:
        node = node[k]
    node[where[-1]] = value
    with pytest.raises(InputError) as ei:
        Plan.load(_write(tmp_path, doc))
    assert any((p.field or "").startswith(field) for p in ei.value.problems), [str(p) for p in ei.value.problems]


def test_the_state_dir_stays_below_the_plan_unless_log_dir_is_absolute(tmp_path):
    plan = Plan.load(_write(tmp_path, BASE))
    assert state_dir_for(plan) == tmp_path / "plans" / "runs" / "fuzz"
    plan.name = "../../X"  # built in code, not loaded: checked again where the path is made
    with pytest.raises(InputError):
        state_dir_for(plan)
    doc = copy.deepcopy(BASE)
    doc["launch"]["log_dir"] = str(tmp_path / "abs")
    assert state_dir_for(Plan.load(_write(tmp_path, doc))) == tmp_path / "abs" / "fuzz"


def test_launch_settings_round_trip_env_passthrough_and_state_mode(tmp_path):
    plan = Plan.load(_write(tmp_path, BASE))
    assert plan.launch.env_passthrough == ("PATH", "LC_*") and plan.launch.state_mode == 0o640
    assert BASE["launch"]["state_mode"] == "0640"
    assert "env_passthrough" not in LaunchSettings().to_dict()  # plans without them keep their bytes
    for bad in ({"state_mode": "0666"}, {"env_passthrough": "PATH"}, {"env_passthrough": ["A B"]}):
        with pytest.raises(ValueError):
            LaunchSettings.from_dict(bad)


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(text=plan_texts(BASE))
def test_fuzzed_plan_files_load_or_are_input_errors(tmp_path_factory, text):
    """Guards: malformed plan parts (fleet, unplaced, solver, a run that is not a mapping) raised
    KeyError/TypeError/AttributeError tracebacks instead of InputError."""
    check_plan_text(text, tmp_path_factory.mktemp("plan"))
