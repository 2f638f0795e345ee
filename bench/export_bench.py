"""The export benchmark: `python bench/export_bench.py` (a few minutes on 2 cores at the defaults).

Generates a sweep of `--runs` runs (four sizes, one of them sharing instances) on a fleet of
`--nodes` nodes of `--gpus-per-node` A100-SXM4-80GB each, plans it (the planner's time is printed
apart), writes the plan file, and times each export as the CLI does it (reading the plan file):
`export slurm`, `export k8s` (with its own checks) and `export mig-parted`, plus one `migbench exec
--dry-run` of the first task, the work each Slurm task pays before its runs start.

Options: --runs N (default 10000), --nodes N (64), --gpus-per-node N (8), --keep (keep the files).
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from migbench.errors import MigbenchError  # noqa: E402
from migbench.export import k8s, migparted, slurm  # noqa: E402
from migbench.export.execute import load_task_plan, prepare  # noqa: E402
from migbench.export.tasks import arrays  # noqa: E402
from migbench.plan import Plan  # noqa: E402
from migbench.planner import FleetSpec, SolveOptions, build_fleet, make_plan  # noqa: E402
from migbench.state import StateDir  # noqa: E402
from migbench.sweep import load_sweep_text  # noqa: E402


def sweep_text(runs: int) -> str:
    q = runs // 8
    sizes = [("tiny", runs - 5 * q, "4GiB", 2), ("small", 2 * q, "9GiB", 1), ("mid", 2 * q, "18GiB", 1), ("big", q, "35GiB", 1)]
    groups = "".join(
        f"  - name: {n}\n    command: python3 train.py --seed {{seed}}\n    parameters: {{seed: 'range(0,{k})'}}\n"
        f"    memory: {m}\n    max_runs_per_instance: {share}\n"
        for n, k, m, share in sizes
    )
    return f"version: 1\nname: export-bench\ngroups:\n{groups}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--nodes", type=int, default=64)
    ap.add_argument("--gpus-per-node", type=int, default=8)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="migbench-export-bench-"))
    try:
        sweep = load_sweep_text(sweep_text(a.runs), base_dir=work)
        fleet = build_fleet([FleetSpec("A100-SXM4-80GB", a.gpus_per_node, None, f"gpu{k:03d}") for k in range(a.nodes)])
        t0 = time.perf_counter()
        plan = make_plan(sweep, fleet, SolveOptions(time_limit_s=10.0))
        t_plan = time.perf_counter() - t0
        path = plan.save(work / "export-bench.plan.yaml")
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        timings: list[tuple[str, float, str]] = []

        def timed(name: str, fn) -> object:  # type: ignore[no-untyped-def]
            t = time.perf_counter()
            try:
                out = fn()
            except MigbenchError as exc:  # reported, not hidden: e.g. a plan too big for a ConfigMap
                out, name = None, f"{name}: refused ({exc.message})"
            timings.append((name, time.perf_counter() - t, ""))
            return out

        p = timed("load the plan file", lambda: Plan.load(path))
        assert isinstance(p, Plan)
        exp = timed("export slurm", lambda: slurm.write(p, work / "slurm", sha256=sha, type_map={}, state_dir=StateDir.of(p)))
        kexp = timed("export k8s (with its checks)", lambda: k8s.write(p, work / "k8s", plan_text=path.read_text(), sha256=sha))
        timed("export mig-parted (+ placement warnings)", lambda: (migparted.config_text(p), migparted.placement_warnings(p)))
        first = next(ar for ar in arrays(p) if ar.tasks)
        timed(
            "exec --dry-run of one task, plan parsed from YAML",
            lambda: prepare(Plan.load(path), first.name, index=0, env={"CUDA_VISIBLE_DEVICES": "MIG-x"}, state_dir=StateDir.at(work / "state"), dry_run=True),
        )
        timed(
            "exec --dry-run of one task, the export's parsed copy",
            lambda: prepare(
                load_task_plan(path, sha, StateDir.of_file(path)),
                first.name,
                index=0,
                env={"CUDA_VISIBLE_DEVICES": "MIG-x"},
                state_dir=StateDir.at(work / "state"),
                sha256=sha,
                dry_run=True,
            ),
        )
        tasks = sum(len(ar.tasks) for ar in arrays(p))
        print(f"# export benchmark on {platform.node() or '?'} ({platform.machine()}, Python {platform.python_version()})")
        print(
            f"plan: {len(p.placed_runs())} placed runs of {len(p.runs)}, {len(p.fleet)} GPUs on {len(p.nodes())} nodes, "
            f"{len(p.instances)} instances, {tasks} tasks in {len(arrays(p))} arrays; plan file {path.stat().st_size / 1e6:.1f} MB; "
            f"planned in {t_plan:.1f} s"
        )
        for name, s, _ in timings:
            print(f"{name:52s} {s:7.2f} s")
        print(f"files: slurm {len(exp.files) if exp else 0}, k8s {len(kexp.files) if kexp else 0}")  # type: ignore[attr-defined]
        if a.keep:
            print(f"kept in {work}")
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
