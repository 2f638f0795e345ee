"""Plans read from disk are checked like sweeps (issue 10, item 5): every hand edit that breaks a plan
is an error at its file, line and field, before apply or launch touch anything; a plan never
replaces its own sweep or a file that is not a plan; a changed sweep is said."""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from migbench.catalog import Catalog
from migbench.errors import InputError
from migbench.plan import Plan
from tests.support.cli import migbench

SWEEP = """version: 1
name: edits
fleet: [{gpu: A100-SXM4-80GB, count: 1}]
groups:
  - name: small
    command: python3 -c pass --lr {lr}
    parameters: {lr: [0.1, 0.2, 0.3]}
    memory: 8GiB
  - name: big
    command: [python3, -c, pass]
    memory: 30GiB
"""


@functools.cache
def builtin() -> Catalog:
    return Catalog.load(include_user=False)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("plan-edits")
    (d / "edits.yaml").write_text(SWEEP)
    r = migbench("plan", "edits.yaml", "-o", "edits.plan.yaml", "--no-runs", cwd=d)
    assert r.returncode == 0, r.stderr
    return yaml.safe_load((d / "edits.plan.yaml").read_text())


def big_instance(doc: dict) -> dict:
    return next(i for i in doc["instances"] if any(r.startswith("big-") for r in i["runs"]))


def _illegal(d: dict) -> None:
    i = big_instance(d)
    i["start"], i["placement"] = 5, f"{i['profile']}@5"


def _overlap(d: dict) -> None:
    i = copy.deepcopy(d["instances"][0])
    i.update(profile="7g.80gb", start=0, placement="7g.80gb@0", runs=[])
    d["instances"].append(i)


def _ghost_gpu(d: dict) -> None:
    i = copy.deepcopy(d["instances"][0])
    i.update(gpu=5, runs=[])
    d["instances"].append(i)


def _off_instance(d: dict) -> None:
    r = d["runs"][0]
    r["profile"], r["start"] = "1g.10gb", 6
    d["instances"].append({"gpu": r["gpu"], "profile": "9g.99gb", "start": 0, "memory_mib": 1, "compute": 0.5, "runs": []})
    d["instances"].pop()


def _unknown_profile(d: dict) -> None:
    d["instances"].append({"gpu": 0, "profile": "4g.99gb", "start": 0, "memory_mib": 10, "compute": 0.5, "runs": []})


def _set(path: str, value: Any) -> Callable[[dict], None]:
    def edit(d: dict) -> None:
        *head, last = path.split(".")
        node: Any = d
        for part in head:
            node = node[int(part)] if part.isdigit() else node[part]
        if last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value

    return edit


def _dup_id(d: dict) -> None:
    d["runs"][1]["id"] = d["runs"][0]["id"]


# edit -> (field, message fragment); every one was accepted by `apply --dry-run` before
EDITS: dict[str, tuple[Callable[[dict], None], str, str]] = {
    "illegal placement": (_illegal, "instances[", "is not a legal placement (starts for"),
    "overlapping instances": (_overlap, "instances[", "7g.80gb@0 overlaps"),
    "negative memory": (_set("runs.0.memory_mib", -5), "runs[0].memory_mib", "must be >= 0, got -5"),
    "duplicate run id": (_dup_id, "runs[1].id", "duplicate run id"),
    "argv as a string": (_set("runs.0.argv", "python3 train.py"), "runs[0].argv", "argv is a string"),
    "instance on a GPU the fleet lacks": (_ghost_gpu, "instances[", "GPU 5 is not in the plan's fleet (GPUs 0)"),
    "run on an instance not in the plan": (_off_instance, "runs[0]", "which is not one of the plan's instances"),
    "unknown profile": (_unknown_profile, "instances[", "has no MIG profile '4g.99gb'"),
    "ghost run id": (_set("instances.0.runs", ["nobody-0000000000"]), "instances[0].runs[0]", "run nobody-0000000000 is not one of the plan's runs"),
    "backoff soon": (_set("launch.backoff_s", "soon"), "launch.backoff_s", "expected a number, got the string 'soon'"),
    "sweep name as a path": (_set("sweep.name", "../../etc"), "sweep.name", "cannot name the state directory"),
    "empty log_dir": (_set("launch.log_dir", ""), "launch.log_dir", "is empty"),
    "NUL in log_dir": (_set("launch.log_dir", "ru\x00ns"), "launch.log_dir", "holds a NUL character"),
    "run id as a path": (_set("runs.0.id", "../x"), "runs[0].id", "cannot name a directory"),
    "run bigger than its instance": (_set("runs.0.memory_mib", 10**7), "runs[0].memory_mib", "MiB; its instance"),
    "fleet GPU listed twice": (lambda d: d["fleet"].append(dict(d["fleet"][0])), "fleet[1].gpu", "GPU 0 is listed twice"),
    "placement disagrees": (_set("instances.0.placement", "1g.10gb@6"), "instances[0].placement", "says 1g.10gb@6 but"),
    "wave missing": (_set("runs.0.wave", None), "runs[0].wave", "a placed run needs its wave"),
    "compute out of range": (_set("runs.0.compute", 7), "runs[0].compute", "must be in (0, 1]"),
    "env not a mapping": (_set("runs.0.env", ["A=1"]), "runs[0].env", "expected a mapping, got a list"),
    "bad driver": (_set("fleet.0.driver", "banana"), "fleet[0].driver", "'banana' is not a driver version"),
    "model table a string": (lambda d: d["models"].update(dict.fromkeys(d["models"], "builtin")), "models.", "expected a mapping, got the string"),
    "model origin a number": (lambda d: next(iter(d["models"].values())).update(origin=3), "models.", "expected a string, got int 3"),
    "model profile a string": (lambda d: next(iter(d["models"].values())).update(profiles={"3g.40gb": "big"}), "models.", "got the string 'big'"),
}


@pytest.mark.parametrize("name", sorted(EDITS))
def test_a_hand_edited_plan_is_checked_at_its_line(tmp_path: Path, base: dict, name: str) -> None:
    """Regression: hand-edited plans with these mistakes passed `apply --dry-run` (or traced back)."""
    edit, field, fragment = EDITS[name]
    doc = copy.deepcopy(base)
    edit(doc)
    p = tmp_path / "p.plan.yaml"
    p.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    with pytest.raises(InputError) as info:
        Plan.load(p, catalog=builtin())
    hits = [q for q in info.value.problems if (q.field or "").startswith(field) and fragment in q.message]
    assert hits, [str(q) for q in info.value.problems]
    assert all(q.file == str(p) and q.line for q in hits)
    lines = p.read_text().splitlines()
    assert hits[0].line is not None and 1 <= hits[0].line <= len(lines)


def test_the_line_is_the_edited_one(tmp_path: Path, base: dict) -> None:
    doc = copy.deepcopy(base)
    doc["runs"][2]["memory_mib"] = -1
    p = tmp_path / "p.plan.yaml"
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    with pytest.raises(InputError) as info:
        Plan.load(p, catalog=builtin())
    (prob,) = info.value.problems
    assert p.read_text().splitlines()[prob.line - 1].strip() == "memory_mib: -1"  # type: ignore[operator]


def test_a_good_plan_round_trips(tmp_path: Path, base: dict) -> None:
    p = tmp_path / "p.plan.yaml"
    p.write_text(yaml.safe_dump(base, sort_keys=False))
    plan = Plan.load(p, catalog=builtin())
    assert plan.to_dict() == Plan.from_dict(base, catalog=builtin()).to_dict()
    assert yaml.safe_load(plan.to_yaml()) == base


def test_a_model_the_catalogue_lacks_is_a_note_not_an_error(tmp_path: Path, base: dict) -> None:
    """A plan made from a live NVML table of a GPU the catalogue does not know still loads."""
    doc = copy.deepcopy(base)
    doc["fleet"][0]["model"] = "NEW-GPU-96GB"
    p = tmp_path / "p.plan.yaml"
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    plan = Plan.load(p, catalog=builtin())
    assert plan.notes == ["GPU model NEW-GPU-96GB is not in the catalogue: its placements are checked on the host only"]


def test_apply_yes_refuses_an_instance_on_a_gpu_the_host_lacks(tmp_path: Path, base: dict) -> None:
    """Regression: `apply --yes` said "every GPU read back as planned" and bound 1 of 2 runs."""
    doc = copy.deepcopy(base)
    _ghost_gpu(doc)
    (tmp_path / "p.plan.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    assert migbench("sim", "init", str(tmp_path / "sim"), "--gpu", "A100-SXM4-80GB", "--mig", "on").returncode == 0
    r = migbench("apply", "p.plan.yaml", "--yes", cwd=tmp_path, env={"MIGBENCH_SIM": str(tmp_path / "sim")})
    assert r.returncode == 1 and "GPU 5 is not in the plan's fleet" in r.stderr, r.stderr
    assert not (tmp_path / "runs").exists()


def test_a_changed_sweep_is_said_when_the_plan_is_used(tmp_path: Path) -> None:
    (tmp_path / "edits.yaml").write_text(SWEEP)
    assert migbench("plan", "edits.yaml", "-o", "edits.plan.yaml", "--no-runs", cwd=tmp_path).returncode == 0
    r = migbench("launch", "--dry-run", "edits.plan.yaml", cwd=tmp_path)
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    (tmp_path / "edits.yaml").write_text(SWEEP.replace("0.3]", "0.3, 0.4]"))
    for cwd, plan in ((tmp_path, "edits.plan.yaml"), (tmp_path.parent, f"{tmp_path.name}/edits.plan.yaml")):
        r = migbench("launch", "--dry-run", plan, cwd=cwd)
        assert r.returncode == 0, r.stderr
        assert "warning: the sweep file" in r.stderr and "changed since this plan was made" in r.stderr, r.stderr


def test_plan_never_writes_over_its_own_sweep(tmp_path: Path) -> None:
    """Regression: `plan S -o S` replaced the sweep with its plan."""
    (tmp_path / "edits.yaml").write_text(SWEEP)
    for force in ([], ["--force"]):
        r = migbench("plan", "edits.yaml", "-o", "edits.yaml", *force, cwd=tmp_path)
        assert r.returncode == 1 and "refusing to write the plan over its own sweep file" in r.stderr, r.stderr
        assert "-o edits.plan.yaml" in r.stderr
        assert (tmp_path / "edits.yaml").read_text() == SWEEP


def test_plan_replaces_a_plan_but_not_another_file_without_force(tmp_path: Path) -> None:
    """Regression: `plan -o notes.txt` silently replaced a file that was not a plan."""
    (tmp_path / "edits.yaml").write_text(SWEEP)
    (tmp_path / "notes.txt").write_text("my notes\n")
    r = migbench("plan", "edits.yaml", "-o", "notes.txt", cwd=tmp_path)
    assert r.returncode == 1 and "notes.txt exists and is not a migbench plan" in r.stderr and "--force" in r.stderr
    assert (tmp_path / "notes.txt").read_text() == "my notes\n"
    assert migbench("plan", "edits.yaml", "-o", "notes.txt", "--force", "--no-runs", cwd=tmp_path).returncode == 0
    assert Plan.load(tmp_path / "notes.txt", catalog=builtin()).name == "edits"
    assert migbench("plan", "edits.yaml", "-o", "notes.txt", "--no-runs", cwd=tmp_path).returncode == 0  # a plan now


@pytest.mark.parametrize("content", [b"", b"kind: migbench-plan\n"])
def test_reading_a_plans_identity_never_reads_a_huge_file_whole(tmp_path: Path, content: bytes) -> None:
    """Guards: `status`, `logs` and `stop` read a plan file's head line by line, so a huge file without
    a newline (a sparse file, a dataset passed by mistake) was read whole into memory (4 GiB for a
    4 GiB file) before the size limit was said."""
    import tracemalloc

    from migbench.plan import IDENTITY_HEAD_BYTES, read_identity

    huge = tmp_path / "huge.plan.yaml"
    with open(huge, "wb") as f:
        f.write(content)
        f.truncate(300 * 2**20)  # sparse: no memory, no disk
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match="too large for a plan file"):
            read_identity(huge)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * IDENTITY_HEAD_BYTES, peak


@pytest.mark.slow
def test_a_plans_identity_with_its_launch_settings_after_its_runs_is_read_whole(tmp_path: Path) -> None:
    """Bug: a plan whose `launch:` follows its `runs:` (keys reordered by hand or by a YAML tool)
    was read by `status`, `logs` and `stop` with the default launch settings: its log_dir (so its
    state directory) was taken as `runs`, while `launch` used the plan's."""
    from migbench.plan import read_identity

    (tmp_path / "edits.yaml").write_text(SWEEP)
    assert migbench("plan", "edits.yaml", "-o", "p.yaml", cwd=tmp_path).returncode == 0
    text = (tmp_path / "p.yaml").read_text()
    doc = yaml.safe_load(text)
    launch = doc.pop("launch")
    launch["log_dir"] = "custom"
    doc["launch"] = launch
    moved = tmp_path / "moved.yaml"
    moved.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert moved.read_text().index("\nlaunch:") > moved.read_text().index("\nruns:")
    name, settings = read_identity(moved)
    assert (name, settings.log_dir) == (Plan.load(moved).name, "custom")
