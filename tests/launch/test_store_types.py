"""The runs' instance keys are typed: mypy (with the project's settings) refuses a queue compared
to a run id, which as text it took silently."""

from __future__ import annotations

from pathlib import Path

import pytest

mypy_api = pytest.importorskip("mypy.api")

ROOT = Path(__file__).parents[2]

SNIPPET = """
from migbench.launch.store import RunRow


def same(row: RunRow) -> bool:
    return row.queue == row.id
"""


@pytest.mark.slow
def test_mypy_refuses_a_queue_compared_to_a_run_id(tmp_path):
    """Guards: `RunRow.queue` was `str`, so `row.queue == row.id` type-checked."""
    src = tmp_path / "snippet.py"
    src.write_text(SNIPPET)
    out, err, code = mypy_api.run(
        ["--config-file", str(ROOT / "pyproject.toml"), "--cache-dir", str(tmp_path / "cache"), "--follow-imports", "silent", str(src)]
    )
    assert code == 1, out + err
    assert 'Non-overlapping equality check (left operand type: "InstanceRef | Anywhere | None", right operand type: "str")' in out, out
