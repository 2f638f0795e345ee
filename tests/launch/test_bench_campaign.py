"""The bench's exactly-once campaign (bench/faults_bench.py), one seeded trial of three of its fault
classes: real `migbench submit` processes, the bench and its shims killed with SIGKILL at random
moments, a submit killed mid-flight, a run taken out of its sweep while the bench is down or
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


# "a run removed while the bench is down" begins with "bench killed"; two submits racing are
# tests/launch/test_bench.py's; the campaign (python bench/faults.py --bench) runs every class
IN_SUITE = ("a run removed while the bench is down", "submit killed", "bench stopped, a run removed")


@pytest.mark.parametrize("fault", IN_SUITE)
def test_a_seeded_trial_of_each_fault_class_runs_every_run_once(fault: str):
    assert fault in CLASSES
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
