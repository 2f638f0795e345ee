"""The planner imports OR-Tools' CP-SAT without pandas (half a second of every `migbench plan`'s
start), and a process that wants pandas still gets the real one."""

from __future__ import annotations

import subprocess
import sys

from tests.support import REPO


def _python(code: str) -> str:
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_the_planner_solves_without_importing_pandas_and_pandas_stays_importable() -> None:
    out = _python(
        "import sys\n"
        "from migbench.planner.cpsat import cp_model\n"
        "print('pandas' in sys.modules)\n"
        "m = cp_model.CpModel(); x = m.new_int_var(0, 7, 'x'); m.maximize(x)\n"
        "s = cp_model.CpSolver(); print(s.solve(m) == cp_model.OPTIMAL, s.value(x))\n"
        "import pandas\n"
        "print(hasattr(pandas, 'DataFrame'))\n"
    )
    assert out.splitlines() == ["False", "True 7", "True"]


def test_where_pandas_is_already_imported_cp_model_takes_the_real_one() -> None:
    out = _python("import pandas\nfrom migbench.planner.cpsat import cp_model\nprint(cp_model.pd is pandas)")
    assert out == "True"
