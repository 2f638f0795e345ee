"""`migbench profile` measured: how long profiling takes, and what planning on its footprints buys.

    python bench/profile_bench.py [--seconds 10] [--configs 50] [--out bench/profile-results.md]

1. **Profiling time.** A sweep of `--configs` memory configurations of the toy trainer (batch
   1..N, each allocating 1 GiB + batch x 64 MiB) on a fresh simulated 2 x A100-SXM4-80GB host with
   MIG on and no instance: `migbench profile` creates its probe layout (the planner's runs-at-once
   layout), probes every configuration for `--seconds`, and removes the layout. The figure to
   compare is the probing time against `mean probe time x configurations / instances used at
   once` (the time if probes followed each other with no gap); setting up and leaving the host as
   found are reported apart (on the simulator each nvidia-smi call is a Python process).
2. **Sampling a group.** The footprints of `--sample 5` of those configurations, fitted
   (`migbench.footprints.fit`), predict the other ones: the error against their measured peaks.
3. **Declared 2x too high.** Eight runs that allocate 17 GiB, declared 34 GiB, planned for the
   same host before and after profiling: runs at once.

Everything runs on the simulated driver with real processes (the toy trainer under the per-run
shim); the machine's load shows in the probe times (each probe starts two Python processes).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from migbench.backend.select import init_simulated_host, use_simulated_host  # noqa: E402
from migbench.footprints import Footprints, Sources, resolve  # noqa: E402
from migbench.footprints.fit import candidate_params, fit_group  # noqa: E402
from migbench.footprints.probe import ProbeOptions, profile  # noqa: E402
from migbench.footprints.select import probe_targets  # noqa: E402
from migbench.planner import FleetGpu, SolveOptions, make_plan  # noqa: E402
from migbench.sweep import load_sweep  # noqa: E402

TOY = f"{sys.executable} {REPO / 'examples' / 'toy_trainer.py'}"


def profiling_time(work: Path, configs: int, seconds: float) -> tuple[list[str], Footprints]:
    sim = work / "sim"
    init_simulated_host(sim, "A100-SXM4-80GB", 2, mig=True)
    use_simulated_host(sim)
    sweep_file = work / "fifty.yaml"
    sweep_file.write_text(
        textwrap.dedent(f"""
        version: 1
        name: fifty
        command: {TOY} --steps 1000 --step-seconds 0.1 --memory 1GiB --per-token 64MiB --batch {{batch}}
        parameters: {{batch: "range(1,{configs + 1})"}}
        memory: {{measured: true, fallback: 6GiB, by: [batch]}}
        """)
    )
    sweep = load_sweep(sweep_file)
    t0 = time.monotonic()
    res, fp, _ = profile(sweep, opts=ProbeOptions(seconds=seconds, grace_s=1.0, sample_s=0.05))
    wall = time.monotonic() - t0
    probe_s = [m.probe_s for m in res.measurements]
    mean = statistics.mean(probe_s)
    ideal = mean * len(res.measurements) / res.slots
    right = sum(1 for m in res.measurements if m.peak_mib == 1024 + 64 * m.params["batch"])
    lines = [
        f"## 1. Profiling {configs} configurations on a simulated 2 x A100-SXM4-80GB host (`--seconds {seconds:g}`)",
        "",
        "| | |",
        "|---|---|",
        f"| configurations probed | {len(res.measurements)} (skipped {len(res.skipped)}) |",
        f"| instances used at once | {res.slots} (the probe layout: 7 x 1g.10gb per GPU) |",
        f"| probe time, mean (min-max) | {mean:.2f} s ({min(probe_s):.2f}-{max(probe_s):.2f} s): the {seconds:g} s limit, plus starting "
        "the shim and the run, plus the run's SIGTERM handling |",
        f"| probe time x configurations / instances | {ideal:.1f} s |",
        f"| **probing, measured** | **{res.probing_s:.1f} s** ({res.probing_s / ideal:.2f} x the figure above; "
        f"{-(-len(res.measurements) // res.slots)} rounds of {res.slots}) |",
        f"| setting up the probe layout | {res.setup_s:.1f} s |",
        f"| leaving the host as found | {res.teardown_s:.1f} s |",
        f"| whole command | {wall:.1f} s |",
        f"| peaks equal to what the toy allocates | {right} / {len(res.measurements)} |",
        f"| host left as found | {'yes' if not res.problems else '; '.join(res.problems)} |",
        "",
    ]
    return lines, fp


def sampling(work: Path, fp: Footprints) -> list[str]:
    sweep = load_sweep(work / "fifty.yaml")
    chosen = {t.run.id for t in probe_targets(sweep, sample=5)}
    measured = {m.run: m for m in fp.measurements}
    pts = [(measured[r].params, float(measured[r].peak_mib)) for r in chosen if r in measured]
    fit = fit_group("fifty", pts, candidate_params([r.params for r in sweep.runs], ["batch"]))
    errs = []
    for rid, m in measured.items():
        if rid in chosen:
            continue
        pred = fit.predict(m.params)
        if pred is not None:
            errs.append(abs(pred - m.peak_mib) / m.peak_mib)
    # the same through the planner's resolution: footprints of the sample only
    sample_fp = Footprints("fifty", "", [measured[r] for r in chosen if r in measured])
    res = resolve(sweep, Sources((sample_fp,)))
    fitted = sum(1 for rm in res.runs.values() if rm.source == "fit")
    return [
        "## 2. `--sample 5`: five configurations predict the other ones",
        "",
        f"- sampled batch sizes: {sorted(measured[r].params['batch'] for r in chosen if r in measured)}",
        f"- fit: {fit.describe()}",
        f"- error on the {len(errs)} configurations not sampled: mean {statistics.mean(errs) * 100:.2f} %, worst {max(errs) * 100:.2f} %"
        if errs
        else "- nothing to compare",
        f"- planned from the fit: {fitted} run(s) (source `fit`), with the 10 % headroom on top",
        "",
    ]


def twice(work: Path, seconds: float) -> list[str]:
    sim = work / "sim2"
    init_simulated_host(sim, "A100-SXM4-80GB", 2, mig=True)
    use_simulated_host(sim)
    sweep_file = work / "twice.yaml"
    sweep_file.write_text(
        textwrap.dedent(f"""
        version: 1
        name: twice
        command: {TOY} --steps 1000 --step-seconds 0.1 --memory 1GiB --per-token 1MiB --batch 16 --seq-len 1024 --lr {{lr}} --seed {{seed}}
        parameters: {{lr: [0.001, 0.0001], seed: [0, 1, 2, 3]}}
        memory: 34GiB
        """)
    )
    sweep = load_sweep(sweep_file)
    res, fp, _ = profile(sweep, opts=ProbeOptions(seconds=seconds, grace_s=1.0, sample_s=0.05))
    from migbench.backend.select import host_models

    fleet = [FleetGpu(i, m) for i, m in host_models()]
    before = make_plan(sweep, fleet, SolveOptions(time_limit_s=5))
    measured = resolve(sweep, Sources((fp,), all_groups=True))
    after = make_plan(measured.sweep, fleet, SolveOptions(time_limit_s=5))
    peaks = sorted({m.peak_mib for m in fp.measurements})

    def shape(p):  # type: ignore[no-untyped-def]
        from collections import Counter

        return ", ".join(f"{n} x {k}" for k, n in sorted(Counter(i.profile for i in p.instances).items()))

    return [
        "## 3. Eight runs that allocate 17 GiB, declared 34 GiB (2x too high)",
        "",
        "| plan | memory per run | instances | runs at once |",
        "|---|---|---|---|",
        f"| declared | 34816 MiB | {shape(before)} | {before.solver.runs_at_once} |",
        f"| after `migbench profile` | {after.runs[0].memory_mib} MiB (peak {peaks} + 10 %) | {shape(after)} | {after.solver.runs_at_once} |",
        "",
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="each probe's limit; it includes the run's own start-up")
    ap.add_argument("--configs", type=int, default=50)
    ap.add_argument("--out", default=str(REPO / "bench" / "profile-results.md"))
    args = ap.parse_args()
    os.environ.setdefault("MIGBENCH_CATALOG", "/nonexistent/catalog.yaml")
    with tempfile.TemporaryDirectory(prefix="migbench-profile-bench-") as tmp:
        work = Path(tmp)
        lines = [
            "# `migbench profile`: time and effect",
            "",
            f"Made by `python bench/profile_bench.py --seconds {args.seconds:g} --configs {args.configs}` "
            f"on {os.cpu_count()} CPU(s) (load average {os.getloadavg()[0]:.1f} at the start); the simulated driver, real processes.",
            "",
        ]
        part1, fp = profiling_time(work, args.configs, args.seconds)
        lines += part1
        lines += sampling(work, fp)
        lines += twice(work, args.seconds)
    lines.append(f"Load average at the end: {os.getloadavg()[0]:.1f}.")
    text = "\n".join(lines)
    print(text)
    Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
