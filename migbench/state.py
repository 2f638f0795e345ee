"""The state directory of a plan: `<plan dir>/<log_dir>/<sweep name>/` (or `--state-dir`).

- `bindings.json`: each planned instance and run bound to the MIG device uuid the host reported after
  `apply` (what `launch` pins with `CUDA_VISIBLE_DEVICES`);
- `checkpoint.json`: the GPUs' state before the last apply;
- `launch.db` and the run directories: the launcher's (`migbench.launch.store`, `migbench.launch.spec`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from migbench.backend.base import HostState
from migbench.fsutil import write_json_atomic
from migbench.plan import Plan, read_identity


def state_dir_for(plan: Plan, override: str | os.PathLike[str] | None = None) -> Path:
    """Where apply's bindings and launch's state live: `<plan dir>/<log_dir>/<sweep name>/`."""
    base = Path(plan.path).resolve().parent if plan.path else Path.cwd()
    return state_dir_in(base, plan.launch.log_dir, plan.name, override)


def state_dir_in(plan_dir: str | os.PathLike[str], log_dir: str, name: str, override: str | os.PathLike[str] | None = None) -> Path:
    """The state directory of a plan of sweep `name` kept in `plan_dir` (before the plan exists)."""
    if override:
        return Path(override)
    return Path(plan_dir).resolve() / log_dir / name


def state_dir_of_file(plan_file: str | os.PathLike[str]) -> Path:
    """`state_dir_for` from a plan file, reading only its head (see `plan.read_identity`)."""
    name, launch = read_identity(plan_file)
    return state_dir_in(Path(plan_file).resolve().parent, launch.log_dir, name)


def node_state_dir(plan: Plan, node: str, override: str | os.PathLike[str] | None = None) -> Path:
    """Where one node's share keeps its bindings and checkpoint: `<state dir>/nodes/<node>/`."""
    return state_dir_for(plan, override) / "nodes" / node


def make_bindings(plan: Plan, host: HostState, gpus: Sequence[int]) -> dict:
    """Map each planned instance (and its runs) to the MIG device uuid the host reports."""
    instances: dict[str, dict] = {}
    runs: dict[str, str] = {}
    for g in gpus:
        st = host.gpu(g)
        for inst in plan.instances_of(g):
            gi = st.instance_at(inst.placement)
            if gi is None:
                continue
            devs = st.devices_of(gi.id)
            if not devs:
                continue
            dev = devs[0]
            instances[inst.key] = {"gpu": g, "gi": gi.id, "ci": dev.ci_id, "uuid": dev.uuid, "memory_mib": dev.memory_total_mib}
            for rid in inst.runs:
                runs[rid] = dev.uuid
    return {
        "version": 1,
        "plan": plan.name,
        "plan_file": plan.path,
        "driver": host.driver,
        "simulated": host.simulated,
        "gpus": {str(g): host.gpu(g).uuid for g in gpus},
        "instances": dict(sorted(instances.items())),
        "runs": dict(sorted(runs.items())),
    }


def load_bindings(plan: Plan, state_dir: str | os.PathLike[str] | None = None) -> dict | None:
    p = state_dir_for(plan, state_dir) / "bindings.json"
    if not p.exists():
        return None
    return json.loads(p.read_text())


def save_bindings(plan: Plan, bindings: dict[str, Any], state_dir: str | os.PathLike[str] | None = None) -> tuple[Path, dict[str, Any]]:
    """Merge `bindings` into the plan's bindings file (instances of other GPUs stay bound)."""
    path = state_dir_for(plan, state_dir) / "bindings.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    merged_instances = dict(old.get("instances", {})) if old.get("plan") == plan.name else {}
    merged_runs = dict(old.get("runs", {})) if old.get("plan") == plan.name else {}
    merged_instances.update(bindings["instances"])
    merged_runs.update(bindings["runs"])
    bindings = dict(bindings, instances=dict(sorted(merged_instances.items())), runs=dict(sorted(merged_runs.items())))
    write_json_atomic(path, bindings)
    return path, bindings


def write_checkpoint(plan: Plan, gpus: dict[str, Any], state_dir: str | os.PathLike[str] | None = None) -> Path:
    """Record the GPUs' state before an apply changes them."""
    path = state_dir_for(plan, state_dir) / "checkpoint.json"
    write_json_atomic(path, {"version": 1, "gpus": gpus})
    return path
