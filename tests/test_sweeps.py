"""The sweep files a user starts from (`sweeps/`): each loads, plans on its own fleet with every run
placed on a legal layout, and its runs keep the shape the file's comment promises."""

from __future__ import annotations

import json

import pytest

from migbench.catalog import default_catalog
from tests.support import REPO
from tests.support.cli import migbench

SWEEPS = sorted((REPO / "sweeps").glob("*.yaml"))


def test_there_are_starting_points():
    assert {p.stem for p in SWEEPS} >= {"phase2-ablations", "augmentation-random", "mixed-fleet"}


@pytest.mark.slow
@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_every_sweep_plans_with_every_run_placed(path, tmp_path):
    r = migbench("plan", str(path), "-o", str(tmp_path / "p.yaml"), "--json")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["unplaced"] == [] and plan["runs"] and all(run["gpu"] is not None for run in plan["runs"])
    cat = default_catalog()
    models = {g["gpu"]: cat.model(g["model"]) for g in plan["fleet"]}
    from migbench.types import Placement

    for gpu, model in models.items():
        lay = [Placement(i["profile"], i["start"]) for i in plan["instances"] if i["gpu"] == gpu]
        assert model.check(lay) == [], (gpu, lay)
    assert plan["solver"]["status"] in ("OPTIMAL", "FEASIBLE")


def test_the_mixed_fleet_sweep_cuts_gpus_of_both_models(tmp_path):
    r = migbench("plan", "sweeps/mixed-fleet.yaml", "-o", str(tmp_path / "p.yaml"), "--json")
    plan = json.loads(r.stdout)
    by_model = {g["model"] for g in plan["fleet"]}
    assert by_model == {"A100-SXM4-80GB", "H100-SXM5-80GB"}
    # small probes share instances, so there are fewer instances than runs
    assert len(plan["instances"]) < len(plan["runs"])


def test_the_random_scan_draws_its_count_reproducibly(tmp_path):
    a = json.loads(migbench("plan", "sweeps/augmentation-random.yaml", "-o", str(tmp_path / "p.yaml"), "--json").stdout)
    params = [r["params"] for r in a["runs"]]
    assert len(params) == 40 and len({json.dumps(p, sort_keys=True) for p in params}) == 40
    assert all(0 <= p["rand_aug"] <= 15 and 1e-4 <= p["lr"] <= 1e-2 for p in params)
