"""Plans use measured footprints: the order of the sources, the headroom, fits, OOM lower bounds,
and footprints from elsewhere used only with a warning."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pytest

from migbench.errors import MigbenchError
from migbench.footprints import Footprints, Sources, resolve
from migbench.launch.history import AttemptRecord, LaunchHistory
from migbench.planner import FleetSpec, SolveOptions, build_fleet, make_plan
from migbench.sweep import load_sweep_text
from tests.footprints.test_file import m as measurement

SWEEP = """
version: 1
name: s
groups:
  - name: lm
    command: python train.py --batch {batch} --seq {seq} --lr {lr}
    parameters: {batch: [4, 8, 16], seq: [256, 512], lr: [0.1, 0.01]}
    memory: {measured: true, fallback: 30GiB, by: [batch, seq]}
  - name: fixed
    command: python train.py --seed {seed}
    parameters: {seed: [0, 1]}
    memory: 4GiB
"""


def sweep(text: str = SWEEP):  # type: ignore[no-untyped-def]
    return load_sweep_text(textwrap.dedent(text), file="s.yaml")


def true_peak(p: dict) -> int:
    return 1024 + p["batch"] * p["seq"] // 2


def run_of(sw, **params):  # type: ignore[no-untyped-def]
    return next(r for r in sw.runs if all(r.params.get(k) == v for k, v in params.items()))


def probe(r, peak: int | None = None, **kw) -> object:  # type: ignore[no-untyped-def]
    return measurement(r.id, true_peak(r.params) if peak is None else peak, group=r.group, params=r.params, **kw)


def history(attempts: list[AttemptRecord], floors: dict[str, int] | None = None, sweep_name: str = "s") -> LaunchHistory:
    return LaunchHistory(Path("/x/runs/s"), sweep_name, tuple(attempts), floors or {})


def att(r, peak: int, outcome: str = "succeeded") -> AttemptRecord:  # type: ignore[no-untyped-def]
    return AttemptRecord(r.id, r.group, 1, outcome, peak, "0:1g.10gb@0", 9728, r.memory_mib, 0.0, 10.0)


def test_the_order_history_profile_configuration_fit_declared_and_the_headroom():
    sw = sweep()
    a = run_of(sw, batch=4, seq=256, lr=0.1)
    a_twin = run_of(sw, batch=4, seq=256, lr=0.01)  # same configuration (by: batch, seq)
    b = run_of(sw, batch=8, seq=512, lr=0.1)
    probed = [probe(run_of(sw, batch=bb, seq=ss, lr=0.1)) for bb, ss in ((4, 256), (16, 256), (4, 512))]
    probed.append(probe(b, true_peak(b.params) - 200))  # a short probe that saw less than the whole run
    fp = Footprints("s", "", probed)
    h = history([att(b, true_peak(b.params))])
    res = resolve(sw, Sources((fp,), (h,), headroom=0.2))
    got = {rid: (rm.source, rm.memory_mib) for rid, rm in res.runs.items()}
    assert got[b.id] == ("history", math.ceil(true_peak(b.params) * 1.2))  # a whole run's peak beats its probe
    assert got[a.id] == ("profile", math.ceil(true_peak(a.params) * 1.2))
    assert got[a_twin.id] == ("config (profile)", math.ceil(true_peak(a.params) * 1.2))
    c = run_of(sw, batch=16, seq=512, lr=0.1)  # never measured, nor its configuration: the fit
    assert got[c.id][0] == "fit"
    assert got[c.id][1] == pytest.approx(math.ceil(true_peak(c.params) * 1.2), rel=0.02)
    assert res.fits["lm"].ok and "batch·seq" in res.fits["lm"].formula()
    for r in sw.runs:  # a group that declares its memory keeps it
        if r.group == "fixed":
            assert got[r.id] == ("explicit", 4096)
    resolved = {r.id: r for r in res.sweep.runs}
    assert resolved[a.id].memory_source == "profile" and dict(resolved[a.id].memory_parts)["profile peak"] == true_peak(a.params)
    assert any("group lm: peak ≈" in n for n in res.notes)


def test_footprints_given_explicitly_apply_to_every_group():
    sw = sweep()
    f0 = run_of(sw, seed=0)
    fp = Footprints("s", "", [probe(f0, 2000)])
    res = resolve(sw, Sources((fp,), all_groups=True))
    assert (res.runs[f0.id].source, res.runs[f0.id].memory_mib) == ("profile", 2200)
    assert resolve(sw, Sources((fp,))).runs[f0.id].memory_mib == 4096  # not asked: declared


def test_a_poor_fit_leaves_unmeasured_runs_declared():
    sw = sweep()
    noisy = [
        probe(run_of(sw, batch=bb, seq=ss, lr=0.1), peak)
        for (bb, ss), peak in {(4, 256): 9000, (8, 256): 1500, (16, 256): 7000, (4, 512): 2000, (8, 512): 12000}.items()
    ]
    res = resolve(sw, Sources((Footprints("s", "", noisy),)))
    c = run_of(sw, batch=16, seq=512, lr=0.1)
    assert not res.fits["lm"].ok
    assert (res.runs[c.id].source, res.runs[c.id].memory_mib) == ("explicit", 30 * 1024)
    assert "no usable fit" in res.runs[c.id].detail
    assert any("keep their declared memory" in n for n in res.notes)


def test_an_oom_raises_the_run_and_its_configuration_even_when_declared():
    sw = sweep()
    f0, f1 = run_of(sw, seed=0), run_of(sw, seed=1)
    h = history([att(f0, 3000, "oom")], floors={f0.id: 9729})
    res = resolve(sw, Sources((), (h,)))
    assert res.runs[f0.id].raised and res.runs[f0.id].memory_mib == math.ceil(9729 * 1.1)
    assert res.runs[f0.id].label == "explicit +OOM bound"
    assert res.runs[f1.id].memory_mib == 4096  # another configuration (its own parameters)
    a = run_of(sw, batch=4, seq=256, lr=0.1)
    twin = run_of(sw, batch=4, seq=256, lr=0.01)
    fp = Footprints("s", "", [probe(a, 9728, outcome="oom", lower_bound=True, instance_mib=9728)])
    res = resolve(sw, Sources((fp,)))
    assert res.runs[twin.id].floor_mib == 9729  # its configuration died on a 9728 MiB instance ...
    assert res.runs[twin.id].memory_mib == 30 * 1024 and not res.runs[twin.id].raised  # ... its fallback is above that
    sw = sweep(SWEEP.replace("fallback: 30GiB, ", ""))  # no fallback: the bound is all there is
    b = run_of(sw, batch=8, seq=256, lr=0.1)
    fp = Footprints("s", "", [probe(b, 3000, outcome="oom", lower_bound=True, instance_mib=9728)])
    res = resolve(sw, Sources((fp,)))
    assert res.runs[b.id].raised and res.runs[b.id].memory_mib == math.ceil(9729 * 1.1)
    assert res.runs[b.id].label == "measured +OOM bound"


def test_the_groups_headroom_wins():
    text = SWEEP.replace("by: [batch, seq]}", "by: [batch, seq], headroom: 0.5}")
    sw = sweep(text)
    a = run_of(sw, batch=4, seq=256, lr=0.1)
    res = resolve(sw, Sources((Footprints("s", "", [probe(a, 1000)]),), headroom=0.2))
    assert res.runs[a.id].memory_mib == 1500


def test_footprints_from_another_sweep_model_or_driver_are_used_with_a_warning():
    sw = sweep()
    a = run_of(sw, batch=4, seq=256, lr=0.1)
    fp = Footprints("other-sweep", "", [probe(a, 1000, gpu_model="A100-SXM4-40GB", driver="535.104.05")], path="f.yaml")
    res = resolve(sw, Sources((fp,)), targets=[("H100-SXM5-80GB", "550.54.15"), ("A100-SXM4-40GB", "550.54.15")])
    assert res.runs[a.id].source == "profile"
    text = "\n".join(res.warnings)
    assert "measured for sweep 'other-sweep', not 's'" in text
    assert "taken on A100-SXM4-40GB" not in text  # a model of the plan
    assert "driver 535.104.05, this plan is for driver 550.54.15" in text
    res = resolve(sw, Sources((fp,)), targets=[("H100-SXM5-80GB", None)])
    assert any("1 measurement(s) were taken on A100-SXM4-40GB, this plan is for H100-SXM5-80GB" in w for w in res.warnings)
    res = resolve(sw, Sources((fp,)), targets=[("A100-SXM4-40GB", "535.104")])
    assert not any("driver" in w for w in res.warnings)  # the same driver, less precisely


def test_measured_without_fallback_needs_a_measurement_to_plan():
    text = SWEEP.replace("memory: {measured: true, fallback: 30GiB, by: [batch, seq]}", "memory: measured")
    sw = sweep(text)
    res = resolve(sw, Sources())
    assert len(res.unresolved) == 12
    with pytest.raises(MigbenchError, match="have no memory yet") as info:
        make_plan(res.sweep, build_fleet([FleetSpec("A100-SXM4-80GB", 1)]), SolveOptions(time_limit_s=1))
    assert "migbench profile" in (info.value.hint or "")
