"""The plan picture at fleet scale: GPUs without runs that share a model and layout are one picture."""

from __future__ import annotations

from pathlib import Path

from migbench.cli.render import index_ranges
from tests.support.cli import migbench


def test_idle_gpus_are_one_picture(tmp_path: Path) -> None:
    """Regression: 10,000 GPUs for 2 runs printed a picture per GPU (89,007 lines)."""
    (tmp_path / "two.yaml").write_text("version: 1\nname: two\ncommand: run {x}\nparameters: {x: [1, 2]}\nmemory: 30GiB\n")
    r = migbench("plan", "two.yaml", "--fleet", "A100-SXM4-80GB:300", "-o", "two.plan.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    titles = [ln for ln in r.stdout.splitlines() if "  ·  " in ln]  # one per picture
    grouped = [t for t in titles if " GPUs (" in t and "no runs" in t]
    assert grouped and len(titles) < 20, titles
    assert sum(int(t.split(" GPUs")[0]) for t in grouped) + len(titles) - len(grouped) == 300  # every GPU, once


def test_index_ranges() -> None:
    assert index_ranges([5, 0, 1, 2, 7, 8, 9, 11]) == "0-2, 5, 7-9, 11"
    assert index_ranges([3]) == "3"
