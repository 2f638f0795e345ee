"""`migbench exec PLAN --array NAME [--index N]`: run one array task of an exported plan where a
batch engine (Slurm, Kubernetes) started it, on the MIG device the engine gave it.

1. The task: `tasks.find_array(plan, NAME).task(N + --index-offset)`; N from `--index`, else `SLURM_ARRAY_TASK_ID`,
   else `JOB_COMPLETION_INDEX` (an Indexed Job's pod).
2. The device: `CUDA_VISIBLE_DEVICES` (or `NVIDIA_VISIBLE_DEVICES`, what the NVIDIA device plugin
   sets in a pod) holding one `MIG-<uuid>` is used as it is (Slurm's AutoDetect=nvml with a driver
   >= 470.42.01). An index instead (a hand-written gres.conf) is resolved through the node's GRES
   order (`tasks.node_devices`): `SLURM_STEP_GPUS`, else `SLURM_JOB_GPUS` (global ids, unlike
   `CUDA_VISIBLE_DEVICES` under ConstrainDevices), else `CUDA_VISIBLE_DEVICES`, mapped to the MIG uuid
   `apply --node` bound (`<state dir>/nodes/<node>/bindings.json`) or to the k-th entry of
   `--device-map FILE` (a JSON list of MIG uuids).
3. Each run of the task starts as the local launcher starts an attempt: the same `RunSpec`
   (`launch.spec.build_spec`: MIGBENCH_RUN_ID, MIGBENCH_RUN_DIR, MIGBENCH_ATTEMPT, MIGBENCH_RESUME,
   CUDA_VISIBLE_DEVICES), the same attempt directory (`prepare_attempt`: cmd.json, params.json,
   latest, logs) and the same per-run shim (`python -m migbench.launch.shim`: child.json,
   exit.json), plus `engine.json` (the engine's job id, task, node and device). The attempt number
   continues the run's directory: a requeued job is attempt 2, with MIGBENCH_RESUME=1.
4. SIGTERM/SIGINT (scancel, a pod deletion) are forwarded to the shims, which forward them to the
   runs. `exec` exits with the run's status (with several runs: the first non-zero, in order).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from migbench.errors import InputError, MigbenchError
from migbench.export.tasks import Array, Task, find_array, node_devices
from migbench.fsutil import make_dirs, read_input, read_regular, write_json_atomic
from migbench.launch.procs import spawn_shim
from migbench.launch.spec import RunSpec, build_spec, prepare_attempt, run_dir
from migbench.plan import Plan, parse_document
from migbench.plancheck import MAX_PLAN_BYTES
from migbench.state import BINDINGS_NAME, StateDir, configure_modes


@dataclass(frozen=True)
class Device:
    uuid: str
    instance: str  # a plan instance key when known, else "<node>:<profile>"
    source: str  # how it was found, for engine.json and errors


@dataclass
class PreparedTask:
    plan: Plan
    array: Array
    task: Task
    node: str
    device: Device
    specs: list[RunSpec]
    engine: dict[str, Any]


def task_index(index: int | None, env: Mapping[str, str]) -> int:
    if index is not None:
        return index
    for var in ("SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX"):
        v = env.get(var, "").strip()
        if v:
            if not v.isdigit():
                raise InputError(f"{var}={v!r} is not a task index")
            return int(v)
    raise InputError("no task index: give --index N, or run under a Slurm job array (SLURM_ARRAY_TASK_ID) or an Indexed Job (JOB_COMPLETION_INDEX)")


def node_name(env: Mapping[str, str], node: str | None) -> str:
    return node or env.get("SLURMD_NODENAME") or env.get("NODE_NAME") or socket.gethostname().split(".")[0]


def resolve_device(plan: Plan, array: Array, env: Mapping[str, str], node: str, *, state_dir: StateDir, device_map: Path | None = None) -> Device:
    """The MIG device the engine gave this task (see the module's docstring)."""
    for var in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"):
        v = env.get(var, "").strip()
        if v.startswith("MIG-"):
            got = [u.strip() for u in v.split(",") if u.strip()]
            if len(got) != 1:
                raise MigbenchError(
                    f"{var}={v} names {len(got)} devices; a task asks for exactly one", hint="submit with --gres=gpu:<type>:1 (what submit.sh does)"
                )
            return Device(got[0], _instance_of_uuid(plan, node, got[0], state_dir) or f"{node}:{array.profile}", var)
    found = next((k for k in ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS", "CUDA_VISIBLE_DEVICES") if env.get(k, "").strip()), None)
    if found is None:
        raise MigbenchError(
            "no device: neither CUDA_VISIBLE_DEVICES nor SLURM_JOB_GPUS is set",
            hint="run it as a task that asks for one GPU GRES (--gres=gpu:<type>:1), as submit.sh does",
        )
    var = found
    text = env[var].strip()
    if not text.isdigit():
        raise MigbenchError(f"{var}={text!r}: expected one MIG-<uuid> or one GRES index", hint="submit with --gres=gpu:<type>:1 (what submit.sh does)")
    k = int(text)
    if device_map is not None:
        uuids = _device_map(device_map)
        where = f"--device-map {device_map}"
        if k >= len(uuids):
            raise MigbenchError(
                f"GRES index {k} ({var}) maps to no MIG device on node {node}: {where} lists {len(uuids)} ({_span(len(uuids))})",
                hint="list every MIG device of the node in its gres.conf order",
            )
        return Device(uuids[k], _instance_of_uuid(plan, node, uuids[k], state_dir) or f"{node}:{array.profile}", f"{var}={k} via {where}")
    share_node = node if node in plan.nodes() else None
    devices = node_devices(plan, share_node) if share_node else node_devices(plan, None)
    if k >= len(devices):
        raise MigbenchError(
            f"GRES index {k} ({var}) maps to no MIG device on node {node}: the plan gives it {len(devices)} ({_span(len(devices))})",
            hint="the node's gres.conf lists more GPUs than the plan; list its MIG devices in the order nodes/<node>.conf shows, or pass --device-map",
        )
    inst = devices[k]
    if inst.profile != array.profile:
        raise MigbenchError(
            f"GRES index {k} ({var}) on node {node} is a {inst.profile} instance in the plan's GRES order, but array {array.name} asks for {array.profile}",
            hint="the node's gres.conf must list its MIG devices in the order nodes/<node>.conf shows",
        )
    bindings = _bindings(plan, share_node, state_dir)
    local = _local_key(plan, share_node, inst.key) if share_node else inst.key
    uuid = ((bindings or {}).get("instances", {}).get(local) or {}).get("uuid")
    if not uuid:
        raise MigbenchError(
            f"GRES index {k} ({var}) is instance {inst.key}, which has no bound MIG device on node {node}",
            hint=f"apply the plan on the node first (migbench apply {plan.path or 'PLAN'} --node {node}), or pass --device-map",
        )
    return Device(str(uuid), inst.key, f"{var}={k}")


def _span(n: int) -> str:
    return f"0-{n - 1}" if n else "none"


DEVICE_MAP_BYTES = 2**20
"""The largest --device-map file read (a list of one node's MIG uuids is a few KiB)."""


def _device_map(path: Path) -> list[str]:
    hint = 'a JSON list of MIG uuids: ["MIG-...", ...]'
    data = read_input(path, "device map", limit=DEVICE_MAP_BYTES, hint=hint)  # a pipe is read up to the limit
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise InputError(f"--device-map {path}: cannot read it ({exc})", hint=hint) from None
    if isinstance(doc, dict):
        doc = doc.get("devices")
    if not isinstance(doc, list) or not all(isinstance(u, str) for u in doc):
        raise InputError(f"--device-map {path}: expected a JSON list of MIG uuids", hint='["MIG-...", ...] in GRES index order')
    return list(doc)


def _bindings(plan: Plan, node: str | None, state_dir: StateDir) -> dict[str, Any] | None:
    paths = [state_dir / "nodes" / node / BINDINGS_NAME] if node else []
    if len(plan.nodes()) <= 1:
        paths.append(state_dir.bindings)
    for p in paths:
        if p.exists():
            try:
                doc = json.loads(read_regular(p))
            except (OSError, ValueError):  # unreadable, or not a regular file (a pipe is never waited on)
                continue
            if isinstance(doc, dict):
                return doc
    return None


def _local_key(plan: Plan, node: str, key: str) -> str:
    gpu, _, rest = key.partition(":")
    local = [g.gpu for g in plan.node_gpus(node)].index(int(gpu))
    return f"{local}:{rest}"


def _instance_of_uuid(plan: Plan, node: str, uuid: str, state_dir: StateDir) -> str | None:
    share_node = node if node in plan.nodes() else None
    b = _bindings(plan, share_node, state_dir)
    if not b:
        return None
    for local, v in (b.get("instances") or {}).items():
        if isinstance(v, dict) and v.get("uuid") == uuid:
            if share_node is None:
                return str(local)
            gpus = [g.gpu for g in plan.node_gpus(share_node)]
            g, _, rest = str(local).partition(":")
            return f"{gpus[int(g)]}:{rest}" if g.isdigit() and int(g) < len(gpus) else str(local)
    return None


def next_attempt(state_dir: StateDir, run_id: str) -> int:
    """1 + the highest attempt-N in the run's directory (a requeued task continues it)."""
    rdir = run_dir(state_dir, run_id)
    seen = [int(p.name.split("-", 1)[1]) for p in rdir.glob("attempt-*") if p.name.split("-", 1)[1].isdigit()] if rdir.exists() else []
    return max(seen, default=0) + 1


def engine_doc(env: Mapping[str, str], array: Array, task: Task, node: str, device: Device) -> dict[str, Any]:
    kind = "slurm" if env.get("SLURM_JOB_ID") else "k8s" if env.get("JOB_COMPLETION_INDEX") else "exec"
    doc: dict[str, Any] = {
        "version": 1,
        "engine": kind,
        "array": array.name,
        "index": task.index,
        "node": node,
        "profile": array.profile,
        "device": device.uuid,
        "device_from": device.source,
    }
    for var in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_GPUS", "CUDA_VISIBLE_DEVICES", "JOB_COMPLETION_INDEX", "HOSTNAME"):
        if env.get(var):
            doc[var.lower()] = env[var]
    return doc


def parsed_plan_path(state_dir: str | os.PathLike[str], sha256: str) -> Path:
    """Where `export slurm` leaves the exported plan already parsed (JSON), for `exec`: parsing a
    10,000-run plan's YAML takes each array task 5 s, reading this 0.4 s."""
    return Path(state_dir) / f"plan-{sha256[:16]}.json"


def save_parsed_plan(plan: Plan, state_dir: Path, sha256: str) -> Path | None:
    """Write the plan file's document, parsed, beside the launch state with the sha256 of the bytes
    it was parsed from (None, and nothing written, when the file no longer has `sha256`)."""
    data = Path(plan.path or "").read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        return None
    doc = parse_document(data.decode("utf-8"), str(plan.path))
    configure_modes(plan)
    make_dirs(state_dir)
    out = parsed_plan_path(state_dir, sha256)
    write_json_atomic(out, {"sha256": sha256, "plan": doc})
    return out


def load_task_plan(plan_file: Path, sha256: str | None, state_dir: StateDir) -> Plan:
    """The plan an array task runs: from the parsed copy `export slurm` left in `state_dir` (the
    command's, made from the file's head: `StateDir.of_file`) when it is there and the plan file
    still has the exported sha256 (checked on the file's bytes), else the file itself (`Plan.load`,
    whose errors say what is wrong). Either way it is checked as a plan file is."""
    if sha256:
        try:
            saved = json.loads(read_regular(parsed_plan_path(state_dir, sha256), most=4 * MAX_PLAN_BYTES))  # JSON of a plan of at most that much YAML
            if isinstance(saved, dict) and saved.get("sha256") == sha256 and _sha256_of(plan_file) == sha256:
                plan = Plan.from_dict(saved["plan"], file=str(plan_file))
                plan.path = str(plan_file)
                return plan
        except (OSError, ValueError, KeyError, MigbenchError):
            pass  # no usable copy: read the file
    return Plan.load(plan_file, runs=True)


def _sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def prepare(
    plan: Plan,
    array_name: str,
    *,
    index: int | None = None,
    index_offset: int = 0,
    env: Mapping[str, str] | None = None,
    node: str | None = None,
    state_dir: StateDir,
    device_map: Path | None = None,
    sha256: str | None = None,
    dry_run: bool = False,
    workdir: Path | None = None,
) -> PreparedTask:
    """Find the task, its device and each run's spec; with `dry_run` nothing is written. `state_dir`:
    the command's `StateDir`."""
    env = dict(os.environ if env is None else env)
    if sha256:
        got = _sha256_of(Path(plan.path)) if plan.path else ""
        if got != sha256:
            raise MigbenchError(
                f"the plan file {plan.path} changed since it was exported (sha256 {got[:12]}, exported {sha256[:12]})",
                hint="tasks are numbered from the exported plan: export and submit again",
            )
    array = find_array(plan, array_name)
    task = array.task(task_index(index, env) + index_offset)
    where = node_name(env, node)
    sd = state_dir
    if not dry_run:
        configure_modes(plan)  # the state files' mode, as the launcher's
    device = resolve_device(plan, array, env, where, state_dir=sd, device_map=device_map)
    runs = {r.id: r for r in plan.runs}
    specs = []
    for rid in task.runs:
        attempt = 1 if dry_run else next_attempt(sd, rid)
        spec = build_spec(plan, runs[rid], instance=device.instance, mig_uuid=device.uuid, attempt=attempt, state_dir=sd)
        if workdir is not None:  # in a container the submitter's directories do not exist
            spec = replace(spec, workdir=str(Path(workdir).resolve()))
        specs.append(spec)
    return PreparedTask(plan, array, task, where, device, specs, engine_doc(env, array, task, where, device))


def run(prep: PreparedTask) -> int:
    """Start every run of the task through the per-run shim, forward signals, wait; the status."""
    procs: list[subprocess.Popen[bytes]] = []
    for spec in prep.specs:
        prepare_attempt(spec)
        adir = Path(spec.attempt_dir)
        write_json_atomic(adir / "engine.json", dict(prep.engine, started_at=time.time()))
    forwarded: list[int] = []

    def forward(signum: int, _frame: Any) -> None:
        forwarded.append(signum)
        for p in procs:
            if p.poll() is None:
                try:
                    p.send_signal(signum)
                except OSError:
                    pass

    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for spec in prep.specs:
            procs.append(spawn_shim(Path(spec.attempt_dir), new_session=False))
        codes = []
        for p in procs:
            while True:
                try:
                    codes.append(p.wait())
                    break
                except InterruptedError:  # pragma: no cover - PEP 475 retries for us
                    continue
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    for spec, code in zip(prep.specs, codes):
        exit_doc = Path(spec.attempt_dir) / "exit.json"
        if not exit_doc.exists():
            print(f"migbench exec: run {spec.run_id}: the shim ended ({code}) without a result; see {Path(spec.attempt_dir) / 'shim.log'}", file=sys.stderr)
    return next((c for c in codes if c != 0), 0)
