"""The bench's exactly-once campaign (bench/faults_bench.py), one seeded trial per fault class: real
`migbench submit` processes, the bench and its shims killed with SIGKILL at random moments, a submit
killed mid-flight, two submits racing, a run taken out of its sweep while the bench is down or
stopped. Whatever the moments (they depend on the machine's speed), no run's command starts twice,
no finished run starts again, a removed run never starts after its removal, and every other run
succeeds."""

from __future__ import annotations

import random
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import pytest

from bench.faults_bench import CLASSES, Trial, judge

pytestmark = pytest.mark.slow  # real benches, submits and kills: seconds each


@pytest.mark.parametrize("fault", sorted(CLASSES))
def test_a_seeded_trial_of_each_fault_class_runs_every_run_once(fault: str):
    rng = random.Random(f"{fault}:23")
    base = Path(tempfile.mkdtemp(prefix="bench-faults-"))  # as the campaign: "pkill -f migbench" must not match the runs' command lines
    t = Trial(base, 0, rng)
    try:
        CLASSES[fault](t, rng)
        out = t.to_the_end()
        tally: Counter = Counter()
        notes: list[str] = []
        judge(t, out, tally, notes)
    finally:
        t.cleanup()
        shutil.rmtree(base, ignore_errors=True)
    assert tally["runs"] == 10 and not notes, (dict(tally), notes, out)
    for bad in ("runs executed twice", "finished runs re-run", "removed, started after", "holes", "did not succeed"):
        assert tally[bad] == 0, (bad, dict(tally), notes)
