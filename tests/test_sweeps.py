"""The sweep files a user starts from (`sweeps/`): each loads, plans on its own fleet with every run
placed on a legal layout, and its runs keep the shape the file's comment promises."""

from __future__ import annotations

import json
import math

import pytest

from migbench.catalog import default_catalog
from tests.support import REPO, sweep_files
from tests.support.cli import migbench

SWEEPS = sweep_files("sweeps")


def test_there_are_starting_points():
    assert {p.stem for p in SWEEPS} >= {"phase2-ablations", "augmentation-random", "mixed-fleet", "lora-lr-seed"}


@pytest.mark.slow
@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_every_sweep_plans_with_every_run_placed(path, tmp_path):
    r = migbench("plan", str(path), "-o", str(tmp_path / "p.yaml"), "--json", "--time-limit", "3")
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


def test_the_lora_sweep_is_sized_by_its_trainable_parameters(tmp_path):
    """The LoRA grid: 4 learning rates x 3 seeds, each about 22 GiB (frozen bf16 base + adapters), so
    two share an 80 GB GPU; the same model fully fine-tuned would not fit one."""
    r = migbench("estimate", "sweeps/lora-lr-seed.yaml", "--json")
    assert r.returncode == 0, r.stderr
    runs = json.loads(r.stdout)["runs"]
    assert len(runs) == 12 and {(x["params"]["lr"], x["params"]["seed"]) for x in runs} == {(lr, s) for lr in (5e-5, 1e-4, 2e-4, 3e-4) for s in (0, 1, 2)}
    parts = runs[0]["parts"]
    assert parts["frozen weights"] == math.ceil((6.74e9 - 39_976_960) * 2 / 2**20)  # frozen at 2 B each
    assert parts["model states"] == math.ceil(39_976_960 * 18 / 2**20)  # trained at 18 B each (AMP AdamW)
    assert 20 * 1024 < runs[0]["memory_mib"] < 24 * 1024
    full = tmp_path / "full.yaml"
    full.write_text((REPO / "sweeps" / "lora-lr-seed.yaml").read_text().replace("    trainable: 39976960", "    # all trained"))
    f = json.loads(migbench("estimate", str(full), "--json").stdout)["runs"][0]
    assert "frozen weights" not in f["parts"] and f["memory_mib"] > 130 * 1024  # more than an 80 GB GPU
    plan = json.loads(migbench("plan", "sweeps/lora-lr-seed.yaml", "-o", str(tmp_path / "p.yaml"), "--json").stdout)
    mib = {i["gpu"] * 100 + i["start"]: i["memory_mib"] for i in plan["instances"]}
    assert all(r["memory_mib"] <= mib[r["gpu"] * 100 + r["start"]] for r in plan["runs"])
    assert plan["solver"]["runs_at_once"] == 8  # two runs on each of the four 80 GB GPUs
