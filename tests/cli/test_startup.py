"""What a command pays before it starts: `migbench exec` runs once per Slurm array task."""

from __future__ import annotations

import subprocess
import sys

from tests.support import REPO


def test_the_cli_starts_without_or_tools():
    """Regression: cli/render imported forecast.simulate (and so OR-Tools and pandas, ~1 s) at every
    command's start, `migbench --help` and every `migbench exec` task included."""
    code = "import sys, migbench.cli.app, migbench.cli.export; print(sorted(m for m in ('ortools', 'pandas') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_plain_launch_starts_without_or_tools():
    """Regression: the launcher imported the bench's living scheduler (planner.recut, so OR-Tools,
    ~1.5 s) at every start, a plain plan's included: a launcher restarted after a crash adopted
    its runs too late (the after-spawn crash test found the run already finished)."""
    code = "import sys, migbench.launch.supervisor; print(sorted(m for m in ('ortools', 'pandas') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
