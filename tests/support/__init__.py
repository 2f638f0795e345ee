"""Helpers shared by the tests: paths, the simulated-host backend (`simhelp`), launch rigs (`launchkit`)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
