"""Public W&B and Hydra sweep files (tests/data/sweeps/public/, each with its `# source:`) load: their
keys, parameter forms and commands as their authors wrote them, with migbench's header on top."""

from __future__ import annotations

import re

import pytest

from migbench.sweep import load_sweep
from tests.support import DATA

PUBLIC = sorted((DATA / "sweeps" / "public").glob("*.yaml"))


def test_there_are_about_fifteen_from_both_tools() -> None:
    names = [p.name for p in PUBLIC]
    assert len(names) >= 15
    assert sum(n.startswith("wandb-") for n in names) >= 10 and sum(n.startswith("hydra-") for n in names) >= 4


@pytest.mark.parametrize("path", PUBLIC, ids=lambda p: p.stem)
def test_a_public_sweep_file_loads(path) -> None:  # type: ignore[no-untyped-def]
    first = path.read_text().splitlines()[0]
    assert re.fullmatch(r"# source: https://github\.com/[\w.-]+/[\w.-]+/blob/[0-9a-f]{40}/\S+", first), first
    sweep = load_sweep(path)
    assert sweep.runs and len({r.argv for r in sweep.runs}) == len(sweep.runs)  # every parameter reaches the command
    assert not [n for n in sweep.notes if "is used by no command" in n], sweep.notes


def test_what_the_public_files_exercise() -> None:
    by = {p.stem: load_sweep(p) for p in PUBLIC}
    assert by["wandb-grid-hyperband"].runs[0].argv[:3] == ("/usr/bin/env", "python", "train.py")  # no command: W&B's
    assert any("`early_terminate`" in n for n in by["wandb-grid-hyperband"].notes)
    assert {r.params["epochs"] for r in by["wandb-cross-validation"].runs} == {200}  # distribution: constant
    assert {r.params["optimizer"] for r in by["wandb-cross-validation"].runs} <= {"Adam", "Adamax"}  # categorical
    assert "nested_param.double_nested_param.x" in by["wandb-docs-nested"].runs[0].params
    assert by["wandb-docs-command"].runs[0].argv[-3:] == ("experiment=expt001", "optimizer=sgd", "optimizer.config.learning_rate=1e-05")
    assert {r.params["note"] for r in by["hydra-extended-grammar"].runs} == {"a,b"}  # a quoted value is one value
    assert sorted({r.params["x"] for r in by["hydra-extended-grammar"].runs}) == [0.0, 3.3, 6.6, 9.9]
    assert len(by["hydra-multirun-docs"].runs) == 6 and len(by["hydra-learngpt"].runs) == 18
