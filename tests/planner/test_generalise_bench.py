"""bench/generalise.py: the planner on scenarios it was not tuned on (issue 20's question whether the
10 s quality holds beyond the repo's own six scenarios)."""

from __future__ import annotations

import json

import pytest

from bench.generalise import MIXED_SEEDS, SEED_SEEDS, Store, _measure, fresh_scenarios, long_budgets, table
from bench.scenarios import seed_workload
from migbench.planner.budget import default_work


def test_fresh_scenarios_use_other_seeds_and_are_the_same_every_time():
    """Seeds outside the repo's 7..13 (all_scenarios(seed=7)), unique names, drawn the same way each time."""
    assert not set(MIXED_SEEDS + SEED_SEEDS) & set(range(7, 14))
    a, b = fresh_scenarios(), fresh_scenarios()
    assert len({s.name for s in a}) == len(a) == 12
    assert [(s.name, s.runs, [g.model.key for g in s.fleet]) for s in a] == [(s.name, s.runs, [g.model.key for g in s.fleet]) for s in b]
    shapes = {s.name.rsplit(" ", 1)[0]: (len(s.runs), len(s.fleet)) for s in a}
    assert shapes == {
        "mixed 120x8": (120, 8),
        "mixed 200x8": (200, 8),
        "mixed 400x16": (400, 16),
        "mixed 1000x64": (1000, 64),
        "seed 90x4": (90, 4),
        "seed 60x4": (60, 4),
    }


def test_work_budgets_parse_and_a_bad_one_is_said_in_words():
    assert long_budgets(["120", "300:mixed"]) == [(120.0, ""), (300.0, "mixed")]
    with pytest.raises(SystemExit, match=r"--work 'lots'.*expected a number of reference seconds"):
        long_budgets(["lots"])


def test_the_table_compares_each_budget_with_the_best_plan_kept_and_flags_a_miss(tmp_path):
    """A plan measured (checked and replayed) goes into the store; the table reads the 10 s and 60 s
    results against the best kept, and a 10 s plan 5 % over the best misses the seed target."""
    sc = seed_workload(31, 12, 2, whole=1)
    sc.name = "seed 12x2 s31"
    n = len(sc.runs)
    store = Store(tmp_path, "test")
    doc = _measure(sc, 0.2)
    assert doc["makespan_s"] > 0 and doc["bound_s"] <= doc["makespan_s"] + 1e-6
    assert _measure(sc, 0.2)["queues"] == doc["queues"]  # the same budget, the same plan
    for lim in (10.0, 60.0):
        store.put(sc, default_work(lim, n), dict(doc, work_s=default_work(lim, n)))
    lines, misses = table([sc], store)
    assert misses == [] and "| 1.000 | 1.000 |" in lines[2] and lines[2].endswith("| met |")
    slow = dict(doc, makespan_s=doc["makespan_s"] * 1.05, work_s=default_work(10.0, n))
    store.result_path(sc, default_work(10.0, n)).write_text(json.dumps(slow))
    lines, misses = table([sc], store)
    near_bound = (doc["makespan_s"] - doc["bound_s"]) / doc["makespan_s"] <= 0.005
    assert misses == ["seed 12x2 s31: 10 s > 1.01" + (", 10 s gap to the bound > 0.5 %" if near_bound else "")]
    assert "| 1.050 | 1.000 |" in lines[2] and "missed: 10 s > 1.01" in lines[2]


def test_a_seed_sweep_whose_best_known_meets_the_bound_must_come_within_half_a_percent_of_it(tmp_path):
    """Issue 20's seed target: within 0.5 % of the bound where the bound allows it. A 10 s plan 0.53 %
    over the bound (1.0035 of the best known) misses it, though it is within 1 % of the best known."""
    sc = seed_workload(31, 12, 2, whole=1)
    sc.name = "seed 12x2 s31"
    n = len(sc.runs)
    store = Store(tmp_path, "test")
    doc = _measure(sc, 0.2)
    best = doc["makespan_s"]
    store.put(sc, 0.2, dict(doc, bound_s=best / 1.0035))  # the bound allows 0.5 %: the best is 0.35 % over it
    for lim, ratio in ((10.0, 1.0018), (60.0, 1.0)):
        store.result_path(sc, default_work(lim, n)).write_text(json.dumps(dict(doc, makespan_s=best * ratio, work_s=default_work(lim, n))))
    assert table([sc], store)[1] == ["seed 12x2 s31: 10 s gap to the bound > 0.5 %"]
