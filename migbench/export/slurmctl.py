"""An exported sweep on a running Slurm: `export slurm --check`, and `status` / `stop` of what
submit.sh submitted (its job ids are in `<state dir>/slurm/jobs.tsv`).

Only Slurm's own clients are used (`scontrol`, `squeue`, `sacct`, `scancel`), with the environment
the user has (SLURM_CONF, ...). Finished jobs are seen through `squeue -t all` for MinJobAge
seconds; when slurmctld does not answer, through `sacct` (where slurmdbd keeps accounting); and
always through the runs' own records (`exit.json`, `engine.json` in each attempt directory), which
`exec` writes in every case, so `status` and `logs` work with neither.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from migbench.errors import MigbenchError, from_os_error
from migbench.export.slurm import JOBS_FILE
from migbench.export.slurm_types import ClusterNode, detected_type, matches, parse_scontrol_nodes
from migbench.export.tasks import Array, arrays
from migbench.fsutil import read_regular, require_trusted
from migbench.plan import Plan

FINAL = {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE", "OUT_OF_MEMORY"}


def slurm(argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run a Slurm client; a missing client or a non-zero exit is a MigbenchError with its message."""
    if shutil.which(argv[0]) is None:
        raise MigbenchError(
            f"`{argv[0]}` is not on PATH: run this where the Slurm clients are (a login node)", hint="or export without --check and check later"
        )
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, env=dict(env) if env is not None else None)
    except subprocess.TimeoutExpired:
        raise MigbenchError(f"`{' '.join(argv)}` did not answer in {timeout:g} s", hint="is slurmctld reachable?") from None
    if proc.returncode != 0:
        raise MigbenchError(f"`{' '.join(argv)}` failed: {(proc.stderr or proc.stdout).strip()}", hint="is slurmctld reachable (SLURM_CONF)?")
    return proc


def cluster_nodes(env: Mapping[str, str] | None = None) -> dict[str, ClusterNode]:
    return parse_scontrol_nodes(slurm(["scontrol", "-o", "show", "node"], env=env).stdout)


def max_array_size(env: Mapping[str, str] | None = None) -> int:
    """The cluster's MaxArraySize (`scontrol show config`; Slurm's default when it does not say)."""
    from migbench.export.slurm import DEFAULT_MAX_ARRAY_SIZE

    for line in slurm(["scontrol", "show", "config"], env=env).stdout.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "MaxArraySize" and value.strip().isdigit():
            return int(value.strip())
    return DEFAULT_MAX_ARRAY_SIZE


# -- --check -----------------------------------------------------------------------------------


def _choose_types(plan: Plan, cluster: Mapping[str, ClusterNode], type_map: Mapping[str, str], problems: list[str]) -> dict[str, str]:
    """{array: the GRES type its profile has on every node}; an array whose type differs from node
    to node (or is missing) adds to `problems`."""
    chosen: dict[str, str] = {}
    for a in arrays(plan):
        per_node: dict[str, str] = {}
        for n in a.per_node:
            if n not in cluster:
                continue
            t = _type_on(a, cluster[n], type_map, problems)
            if t is not None:
                per_node[n] = t
        names = set(per_node.values())
        if len(names) > 1:
            problems.append(
                f"{a.profile} ({a.model}) has a different GRES type on each node ("
                + ", ".join(f"{n}: {t}" for n, t in per_node.items())
                + "); one job array asks for one type: declare one name (--type-map or slurm.conf)"
            )
        elif names:
            chosen[a.name] = names.pop()
    return chosen


def _count_problems(plan: Plan, n: str, node: ClusterNode, chosen: Mapping[str, str]) -> list[str]:
    """Node `n` declares fewer GRES of a type than the plan's arrays need there."""
    need: dict[str, int] = {}
    for a in arrays(plan):
        if a.name in chosen and a.per_node.get(n):
            need[chosen[a.name]] = need.get(chosen[a.name], 0) + a.per_node[n]
    out = []
    for t, k in need.items():
        have = node.gres.get(t, 0)
        if have < k:
            out.append(f"node {n} has {have} x gpu:{t}, the plan needs {k}")
    return out


def check(plan: Plan, cluster: Mapping[str, ClusterNode], type_map: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """Map each array of the plan onto the GRES types the cluster's nodes declare; returns
    ({array: type}, notes). Raises MigbenchError naming every missing node, type and count."""
    nodes = require_nodes(plan)
    problems: list[str] = []
    notes: list[str] = []
    known = ", ".join(sorted(cluster)) or "none"
    for n in nodes:
        if n not in cluster:
            problems.append(f"node {n} is not in the cluster (scontrol show node lists: {known})")
        elif any(s in cluster[n].state for s in ("DRAIN", "DOWN", "FAIL", "INVALID")):
            notes.append(f"node {n} is {cluster[n].state}")
    chosen = _choose_types(plan, cluster, type_map, problems)
    for n in nodes:  # counts, per type (several profiles may share a type)
        if n in cluster:
            problems += _count_problems(plan, n, cluster[n], chosen)
    if problems:
        raise MigbenchError(
            "the cluster cannot run plan " + plan.name + " as exported:\n  " + "\n  ".join(problems),
            hint="configure the nodes (apply-<node>.sh, then the Gres= lines of nodes/<node>.conf and restart slurmd), "
            "or map the plan's profiles onto the cluster's types with --type-map PROFILE=TYPE",
        )
    return chosen, notes


def require_nodes(plan: Plan) -> list[str]:
    """The plan's nodes; a plan without them cannot be compared with a cluster (MigbenchError)."""
    nodes = plan.nodes()
    if not nodes:
        raise MigbenchError(
            f"plan {plan.name} names no nodes, so there is nothing to compare with the cluster's nodes",
            hint="name each GPU's node in the fleet (`fleet: [{node: gpu01, gpu: MODEL, count: N}]` or --fleet-file), plan again, then export",
        )
    return nodes


def _type_on(a: Array, node: ClusterNode, type_map: Mapping[str, str], problems: list[str]) -> str | None:
    explicit = type_map.get(f"{a.model}:{a.profile}") or type_map.get(a.profile)
    detected = detected_type(a.model, a.profile, a.memory_mib)
    have = ", ".join(f"gpu:{t}:{c}" if t else f"gpu:{c} (untyped)" for t, c in node.gres.items()) or "no GPU GRES"
    if explicit:
        if explicit in node.gres:
            return explicit
        problems.append(f"node {node.name} lacks gpu:{explicit} (--type-map for {a.profile}); it has {have}")
        return None
    if detected in node.gres:
        return detected
    cands = [t for t in node.gres if t and matches(t, a.model, a.profile, a.memory_mib)]
    if len(cands) == 1:
        return cands[0]
    if not cands:
        problems.append(
            f"node {node.name} lacks a GRES type for {a.profile} ({a.model}, {a.per_node[node.name]} needed): "
            f"expected {detected} or a part of it ending in {detected.rsplit('_', 1)[-1]}; it has {have}"
        )
    else:
        problems.append(f"node {node.name}: {a.profile} ({a.model}) could be any of " + ", ".join(cands) + f"; say which with --type-map {a.profile}=TYPE")
    return None


# -- status and stop ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Submitted:
    array: str
    job_id: str
    tasks: int
    gres_type: str
    offset: int = 0  # the array's first task in this job (an array cut in parts for MaxArraySize)

    def key(self, index: int) -> str | None:
        """squeue's `<job>_<task>` of the array's task `index`, when this job holds it."""
        return f"{self.job_id}_{index - self.offset}" if self.offset <= index < self.offset + self.tasks else None


def submitted(state_dir: Path) -> tuple[list[Submitted], str | None]:
    """The jobs submit.sh recorded (the last submission) and the plan hash it submitted."""
    path = state_dir / JOBS_FILE
    if not path.exists():
        return [], None
    jobs, sha = [], None
    try:
        text = read_regular(path).decode("utf-8", "replace")
    except OSError as exc:
        raise from_os_error(exc, "read the record of the submitted jobs") from None
    for line in text.splitlines():
        parts = line.split("\t")
        if line.startswith("# plan") and len(parts) > 1:
            sha = parts[1]
        elif len(parts) >= 4 and not line.startswith("#"):
            offset = int(parts[4]) if len(parts) > 4 and parts[4].isdigit() else 0
            jobs.append(Submitted(parts[0], parts[1], int(parts[2]) if parts[2].isdigit() else 0, parts[3], offset))
    return jobs, sha


def has_submission(state_dir: Path) -> bool:
    return (state_dir / JOBS_FILE).exists()


def queue_states(job_ids: Sequence[str], env: Mapping[str, str] | None = None) -> dict[str, tuple[str, str, str]]:
    """{"<job>_<task>": (STATE, node, reason)} from `squeue -r -t all` (finished ones for MinJobAge)."""
    if not job_ids:
        return {}
    out = slurm(["squeue", "-h", "-r", "-t", "all", "-j", ",".join(job_ids), "-o", "%i|%T|%N|%r"], env=env).stdout
    states = {}
    for line in out.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 4:
            states[parts[0]] = (parts[1], parts[2], parts[3])
    return states


def accounting_states(job_ids: Sequence[str], env: Mapping[str, str] | None = None) -> dict[str, tuple[str, str, str]]:
    """The same from `sacct` (slurmdbd's record: it outlives slurmctld's memory and answers while
    slurmctld is down). `CANCELLED by 0` is CANCELLED."""
    if not job_ids:
        return {}
    out = slurm(["sacct", "-n", "-P", "-X", "-j", ",".join(job_ids), "-o", "JobID,State,NodeList,Reason"], env=env).stdout
    states = {}
    for line in out.splitlines():
        parts = line.strip().split("|")
        if len(parts) >= 3:
            states[parts[0]] = (parts[1].split()[0] if parts[1] else "", parts[2], parts[3] if len(parts) > 3 else "")
    return states


def engine_states(job_ids: Sequence[str], env: Mapping[str, str] | None = None) -> tuple[dict[str, tuple[str, str, str]], list[str]]:
    """squeue's states; when slurmctld does not answer, sacct's; when neither does, none (the runs'
    own records then say what they can). Returns (states, notes saying which was used)."""
    try:
        return queue_states(job_ids, env), []
    except MigbenchError as exc:
        why = str(exc)
    try:
        return accounting_states(job_ids, env), [f"squeue did not answer ({why}): job states from sacct"]
    except MigbenchError as exc:
        return {}, [f"neither squeue nor sacct answered ({why}; {exc}): states from the run directories only"]


class SlurmJobDoc(TypedDict):
    """One job submit.sh recorded: its array, job id, how many tasks and their `--gres` type."""

    array: str
    job_id: str
    tasks: int
    gres_type: str


class SlurmRunDoc(TypedDict):
    """One run of a submitted sweep: its task's Slurm state and what its attempt directory records
    (`attempt`: the latest; `job`: squeue's `<job>_<task>`)."""

    id: str
    group: str
    state: str
    attempt: int | None
    array: str
    task: int
    job: str | None
    slurm_state: str | None
    node: str | None
    device: str | None
    exit_code: int | None
    elapsed_s: float | None
    note: str


class SlurmStatusDoc(TypedDict):
    """`migbench status PLAN` of a sweep submitted to Slurm (`engine_status_doc`): its jobs, the
    runs' states (`counts` by state, of `total`), each run, and notes on where the states came from."""

    engine: str
    state_dir: str
    sweep: str
    plan_sha256: str | None
    jobs: list[SlurmJobDoc]
    counts: dict[str, int]
    total: int
    runs: list[SlurmRunDoc]
    notes: list[str]


def _read(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(read_regular(path))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def engine_status_doc(plan: Plan, state_dir: Path, env: Mapping[str, str] | None = None) -> SlurmStatusDoc:
    """Every run of the submitted sweep: its task's Slurm state and its own record."""
    jobs, sha = submitted(state_dir)
    by_array: dict[str, list[Submitted]] = {}
    for j in jobs:
        by_array.setdefault(j.array, []).append(j)
    queue, notes = engine_states([j.job_id for j in jobs], env)
    now = time.time()
    rows = []
    groups = {r.id: r.group for r in plan.runs}
    for a in arrays(plan):
        parts = by_array.get(a.name, [])
        for t in a.tasks:
            job = next((j for j in parts if j.key(t.index)), None)
            key = job.key(t.index) or "" if job else ""
            qstate, qnode, reason = queue.get(key, ("", "", ""))
            for rid in t.runs:
                rows.append(_run_row(state_dir, rid, groups.get(rid, ""), a, t.index, job, qstate, qnode, reason, now))
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    return {
        "engine": "slurm",
        "state_dir": str(state_dir),
        "sweep": plan.name,
        "plan_sha256": sha,
        "jobs": [SlurmJobDoc(array=j.array, job_id=j.job_id, tasks=j.tasks, gres_type=j.gres_type) for j in jobs],
        "counts": dict(sorted(counts.items())),
        "total": len(rows),
        "runs": rows,
        "notes": notes,
    }


def _run_row(sd: Path, rid: str, group: str, a: Array, index: int, job: Submitted | None, qstate: str, qnode: str, reason: str, now: float) -> SlurmRunDoc:
    rdir = sd / rid
    attempts = [int(p.name[8:]) for p in rdir.glob("attempt-*") if p.name[8:].isdigit()] if rdir.exists() else []
    last = max(attempts, default=0)
    adir = rdir / f"attempt-{last}"
    eng = _read(adir / "engine.json") if last else None
    ex = _read(adir / "exit.json") if last else None
    child = _read(adir / "child.json") if last else None
    mine = bool(job and eng and str(eng.get("slurm_array_job_id") or "") == job.job_id)
    if qstate in ("PENDING", "CONFIGURING"):
        state = "queued"
    elif ex is not None and (mine or not qstate):
        state = "succeeded" if ex.get("returncode") == 0 else ("oom" if ex.get("oom") else "failed")
        if qstate == "CANCELLED" or (ex.get("forwarded_signals") and ex.get("returncode") != 0):
            state = "cancelled"
    elif qstate in ("RUNNING", "COMPLETING"):
        state = "running"
    elif qstate:
        state = qstate.lower()
    else:
        state = "unknown" if job else "not submitted"
    started = (child or {}).get("started_at") if (mine or not qstate) else None
    ended = (ex or {}).get("ended_at") if (mine or not qstate) else None
    return {
        "id": rid,
        "group": group,
        "state": state,
        "attempt": last or None,
        "array": a.name,
        "task": index,
        "job": job.key(index) if job else None,
        "slurm_state": qstate or None,
        "node": qnode or (eng or {}).get("node"),
        "device": (eng or {}).get("device") if (mine or not qstate) else None,
        "exit_code": (ex or {}).get("returncode") if (mine or not qstate) else None,
        "elapsed_s": None if started is None else round((ended or now) - float(started), 3),
        "note": reason if qstate == "PENDING" and reason not in ("None", "") else "",
    }


def run_log(state_dir: Path, run_id: str, *, attempt: int | None = None, stderr: bool = False) -> tuple[Path, int, bool]:
    """A run's log when an engine ran it (no launch.db: `exec` writes the same attempt directories):
    (path, attempt, whether that attempt has ended)."""
    from migbench.launch.spec import check_run_id

    rdir = state_dir / check_run_id(run_id)
    seen = sorted(int(p.name[8:]) for p in rdir.glob("attempt-*") if p.name[8:].isdigit()) if rdir.is_dir() else []
    if not seen:
        near = sorted(p.name for p in state_dir.iterdir() if p.is_dir() and p.name.startswith(run_id.split("-")[0]))[:5] if state_dir.is_dir() else []
        raise MigbenchError(
            f"run {run_id} has not started in {state_dir} (no attempt directory)",
            hint=("runs like it: " + ", ".join(near)) if near and run_id not in near else "`migbench status PLAN` shows its job's state",
        )
    n = attempt if attempt is not None else seen[-1]
    if n not in seen:
        raise MigbenchError(f"run {run_id} has no attempt {n}", hint=f"it has attempt(s) {', '.join(map(str, seen))}")
    adir = rdir / f"attempt-{n}"
    return adir / ("stderr.log" if stderr else "stdout.log"), n, (adir / "exit.json").exists()


def cancel(state_dir: Path, env: Mapping[str, str] | None = None) -> list[str]:
    """scancel every job of the last submission; returns their ids. The ids come from the state
    directory's record of the jobs: a state directory another user could change is refused (she
    would pick which jobs are cancelled, by root too), as `launch.status.request_stop` refuses it."""
    require_trusted(state_dir, "state directory")
    jobs, _ = submitted(state_dir)
    if not jobs:
        raise MigbenchError(f"nothing was submitted from {state_dir}", hint="submit with the exported submit.sh")
    ids = [j.job_id for j in jobs]
    slurm(["scancel", *ids], env=env)
    return ids
