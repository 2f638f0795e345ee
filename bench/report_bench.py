"""The report benchmark: `python bench/report_bench.py` (a few minutes on 2 cores).

Two sweeps, each planned, then reported with `migbench report`'s code (`ReportBuilder`):

1. seed-like: the launcher benchmark's 90-run toy sweep (`bench/launch_bench.py`) on a simulated
   4 x A100-SXM4-80GB host, really launched (`python -m migbench.launch`: real processes attached
   to the simulated MIG devices), so the report shows planned next to actual attempts;
2. scale: the planner benchmark's 10,000-run mixed sweep on 512 GPUs (`bench/scenarios.py`), with a
   launch state written as the launcher writes it (the plan's replay stretched per run, a retry, an
   OOM move; `tests/support/reportkit.py`): no machine runs 10,000 processes for this.

For each it prints: runs, GPUs, whether the page summarises, the time to build the page (plan side
and render; the grain lever separately), the HTML size, and, where Debian's chromium is installed,
the time from navigating to the file until its load event and until a screenshot is taken.

Options: --skip-launch (seed-like from a written state instead of a real launch), --skip-scale,
--grain-time-limit S (default 2), --keep (keep the temp dir), --shots DIR (save the screenshots).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def scale_sweep_yaml(seed: int = 13) -> str:
    """`scenarios.mixed(seed, 10000, 128, 200, 60)` as a sweep file (one group per distinct run shape)."""
    from bench.scenarios import MIXED_FLEET, mixed

    sc = mixed(seed, 10000, 128, 200, 60.0)
    shapes: dict[tuple, int] = {}
    for d in sc.runs:
        k = (d.memory_mib, d.duration_s, d.compute, d.max_runs_per_instance)
        shapes[k] = shapes.get(k, 0) + 1
    out = ["version: 1", "name: scale-10000x512", "fleet:"] + [f"  - {{gpu: {m}, count: 128}}" for m in MIXED_FLEET] + ["groups:"]
    for n, ((mem, dur, comp, cap), count) in enumerate(sorted(shapes.items())):
        out += [
            f"  - name: g{n:03d}",
            "    command: python3 train.py --i {i}",
            f"    parameters: {{i: 'range(0,{count})'}}",
            f"    memory: {mem}MiB",
            f"    duration: {int(dur)}s",
            f"    compute: {comp}",
            f"    max_runs_per_instance: {cap}",
        ]
    return "\n".join(out) + "\n"


def open_in_chromium(html: Path, shot: Path | None) -> tuple[float, float] | None:
    from tests.support.browser import Browser, find_chromium

    if find_chromium() is None:
        return None
    with Browser(width=1200, height=900, timeout_s=300) as b:
        t0 = time.monotonic()
        visit = b.open(html)
        b.screenshot(shot or html.with_suffix(".png"))
        took = time.monotonic() - t0
        if visit.errors:
            print(f"  console errors: {visit.errors[:3]}")
        return visit.load_s, took


def report_of(name: str, plan, grain_limit: float, shots: Path | None) -> None:  # type: ignore[no-untyped-def]
    from migbench.report import ReportBuilder
    from migbench.report.grain import lever_of_plan
    from migbench.state import StateDir

    t0 = time.perf_counter()
    builder = ReportBuilder(plan, state_dir=StateDir.of(plan), grain=False)
    t1 = time.perf_counter()
    page = builder.build()
    t2 = time.perf_counter()
    html = Path(plan.path).with_suffix(".html")
    html.write_text(page.html)
    lever_s = None
    if grain_limit > 0:
        g0 = time.perf_counter()
        builder.lever = lever_of_plan(plan, builder.side.sim, time_limit_s=grain_limit)
        lever_s = time.perf_counter() - g0
        page = builder.build()
        html.write_text(page.html)
    rep = page.report
    acts = sum(1 for b in rep.bars if b.kind == "actual")
    print(
        f"\n{name}: {rep.runs:,} runs on {len(rep.gpus)} GPUs ({sum(len(g.instances) for g in rep.gpus)} instances), "
        f"{acts:,} actual attempts; {'summarised' if rep.summarised else 'every bar drawn'}"
    )
    print(f"  plan side (replay of the plan)       {t1 - t0:8.2f} s")
    print(f"  page build (launch.db + render)      {t2 - t1:8.2f} s")
    if lever_s is not None:
        print(f"  grain lever ({len(builder.lever.points) if builder.lever else 0} grains, {grain_limit:g} s budget each) {lever_s:8.2f} s")
    print(f"  HTML size                            {len(page.html.encode()) / 1024:8.0f} KiB")
    opened = open_in_chromium(html, (shots / f"{name}.png") if shots else None)
    if opened is None:
        print("  chromium: not installed (.ci/install-chromium), not opened")
    else:
        print(f"  chromium: navigate -> load event     {opened[0]:8.2f} s")
        print(f"  chromium: navigate -> screenshot     {opened[1]:8.2f} s")
    for s in rep.summarised:
        print(f"  summarises: {s}")


def seed_like(tmp: Path, launch: bool, grain_limit: float, shots: Path | None) -> None:
    from bench.launch_bench import sweep_yaml
    from migbench.apply import apply_plan
    from migbench.backend.select import open_backend
    from migbench.backend.sim.host import init_host
    from migbench.plan import Plan
    from migbench.planner import FleetSpec, SolveOptions, build_fleet, make_plan
    from migbench.state import StateDir
    from migbench.sweep import load_sweep
    from tests.support.reportkit import write_state

    d = tmp / "seed"
    d.mkdir()
    (d / "seed.yaml").write_text(sweep_yaml(90).replace("name: launch-bench", "name: seed-like"))
    sweep = load_sweep(d / "seed.yaml")
    plan = make_plan(sweep, build_fleet([FleetSpec("A100-SXM4-80GB", 4)]), SolveOptions(time_limit_s=10.0))
    plan.save(d / "seed-like.plan.yaml")
    plan = Plan.load(d / "seed-like.plan.yaml")
    if launch:
        sim = d / "sim"
        init_host(sim, "A100-SXM4-80GB", 4, mig=True)
        os.environ["MIGBENCH_SIM"] = str(sim)
        apply_plan(plan, open_backend(), confirm=None, state_dir=StateDir.of(plan))
        t0 = time.monotonic()
        p = subprocess.run([sys.executable, "-m", "migbench.launch", str(plan.path)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        print(f"seed-like: launched on the simulated host in {time.monotonic() - t0:.0f} s (exit {p.returncode})")
    else:
        write_state(plan)
        print("seed-like: launch state written (--skip-launch)")
    report_of("seed-like", plan, grain_limit, shots)


def scale(tmp: Path, grain_limit: float, shots: Path | None) -> None:
    from migbench.plan import Plan
    from migbench.planner import FleetSpec, SolveOptions, build_fleet, make_plan
    from migbench.sweep import load_sweep
    from tests.support.reportkit import write_state

    d = tmp / "scale"
    d.mkdir()
    (d / "scale.yaml").write_text(scale_sweep_yaml())
    sweep = load_sweep(d / "scale.yaml")
    t0 = time.monotonic()
    fleet = build_fleet([FleetSpec(f.gpu, f.count, f.driver) for f in sweep.fleet])
    plan = make_plan(sweep, fleet, SolveOptions(time_limit_s=60.0))
    plan.save(d / "scale.plan.yaml")
    plan = Plan.load(d / "scale.plan.yaml")
    print(f"\nscale: planned {len(plan.runs):,} runs on {len(plan.fleet)} GPUs in {time.monotonic() - t0:.0f} s")
    write_state(plan)
    report_of("scale-10000x512", plan, grain_limit, shots)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-launch", action="store_true")
    ap.add_argument("--skip-scale", action="store_true")
    ap.add_argument("--grain-time-limit", type=float, default=2.0)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--shots", type=Path)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="migbench-report-bench-"))
    print(f"{os.cpu_count()} CPU(s), Python {platform.python_version()}; temp dir {tmp}")
    if args.shots:
        args.shots.mkdir(parents=True, exist_ok=True)
    try:
        seed_like(tmp, not args.skip_launch, args.grain_time_limit, args.shots)
        if not args.skip_scale:
            scale(tmp, args.grain_time_limit, args.shots)
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
