"""`migbench plan SWEEP --check PLAN`: CI's test that a committed plan is what the sweep gives now."""

from __future__ import annotations

import shutil

import pytest

from tests.support.cli import migbench

SWEEP = """\
version: 1
name: seeds
fleet: [{gpu: A100-SXM4-80GB, count: 1}]
groups:
  - name: a
    command: python train.py --seed {seed}
    parameters: {seed: [0, 1, 2]}
    memory: 8GiB
  - name: b
    command: python train.py --big
    memory: 30GiB
"""


@pytest.fixture
def committed(tmp_path):  # type: ignore[no-untyped-def]
    repo = tmp_path / "repo"
    (repo / "sweeps").mkdir(parents=True)
    (repo / "plans").mkdir()
    (repo / "sweeps" / "seeds.yaml").write_text(SWEEP)
    r = migbench("plan", "sweeps/seeds.yaml", "-o", "plans/seeds.plan.yaml", "--no-runs", cwd=repo)
    assert r.returncode == 0, r.stderr
    return repo


def test_an_up_to_date_plan_passes_and_nothing_is_written(committed):
    before = {p: p.read_bytes() for p in committed.rglob("*") if p.is_file()}
    r = migbench("plan", "sweeps/seeds.yaml", "--check", "plans/seeds.plan.yaml", cwd=committed)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "is up to date" in r.stdout
    assert {p: p.read_bytes() for p in committed.rglob("*") if p.is_file()} == before


def test_a_stale_plan_fails_with_what_changed_and_a_diff(committed):
    (committed / "sweeps" / "seeds.yaml").write_text(SWEEP.replace("[0, 1, 2]", "[0, 1, 2, 3]"))
    r = migbench("plan", "sweeps/seeds.yaml", "--check", "plans/seeds.plan.yaml", cwd=committed, env={"MIGBENCH_WIDTH": "80"})
    assert r.returncode == 1, r.stdout + r.stderr
    out = r.stdout
    assert "plans/seeds.plan.yaml is stale" in out
    assert "the sweep file changed (sha256" in out
    assert "1 run(s) added: a-" in out
    assert "--- plans/seeds.plan.yaml (committed)" in out and "+++ the sweep now" in out
    assert any(line.startswith("+  - a-") or line.startswith("+- id: a-") for line in out.splitlines())
    assert "migbench plan sweeps/seeds.yaml -o plans/seeds.plan.yaml" in out  # how to fix it, on one line


def test_a_run_that_changes_in_place_is_named(committed):
    (committed / "sweeps" / "seeds.yaml").write_text(SWEEP.replace("--big", "--bigger"))
    r = migbench("plan", "sweeps/seeds.yaml", "--check", "plans/seeds.plan.yaml", cwd=committed)
    assert r.returncode == 1
    assert "1 run(s) changed in place (command, environment, memory or estimates): b-" in r.stdout, r.stdout


def test_where_the_checkout_lives_does_not_matter(committed, tmp_path):
    """A plan holds absolute paths (each run's workdir); a CI checkout is somewhere else."""
    elsewhere = tmp_path / "ci" / "checkout"
    shutil.copytree(committed, elsewhere)
    for cwd, args in (
        (elsewhere, ("sweeps/seeds.yaml", "--check", "plans/seeds.plan.yaml")),
        (tmp_path, (str(elsewhere / "sweeps/seeds.yaml"), "--check", str(elsewhere / "plans/seeds.plan.yaml"))),
    ):
        r = migbench("plan", *args, cwd=cwd)
        assert r.returncode == 0, r.stdout + r.stderr


def test_check_refuses_an_output_and_a_missing_plan(committed):
    r = migbench("plan", "sweeps/seeds.yaml", "--check", "plans/seeds.plan.yaml", "-o", "x.yaml", cwd=committed)
    assert r.returncode == 2 and "--check writes nothing" in r.stderr
    r = migbench("plan", "sweeps/seeds.yaml", "--check", "plans/nope.plan.yaml", cwd=committed)
    assert r.returncode == 1 and r.stderr.startswith("Error:") and "does not exist" in r.stderr
