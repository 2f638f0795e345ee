"""The state directory of a plan: `<plan dir>/<log_dir>/<sweep name>/` (or `--state-dir`).

- `bindings.json`: each planned instance and run bound to the MIG device uuid the host reported after
  `apply` (what `launch` pins with `CUDA_VISIBLE_DEVICES`); a rollback re-binds the instances it
  re-created (`rebind`), and a running launcher re-reads the file before each start;
- `checkpoint.json`: the GPUs' state before the last apply, and how that apply ended (`status`:
  `applying` while it runs, then `applied`, `rolled-back` or `rollback-failed`). A checkpoint still
  `applying` when no apply holds the host lock is an interrupted apply (`NEEDS_ATTENTION`);
- `launch.db` and the run directories: the launcher's (`migbench.launch.store`, `migbench.launch.spec`).

Files are created with the state mode (0600, directories 0700; `configure_modes`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict, cast

from migbench.backend.base import HostState
from migbench.errors import InputError, MigbenchError, UsageError, os_reason
from migbench.fsutil import STATE_MODE_ENV, configure_state_mode, make_dirs, parse_state_mode, read_regular, require_trusted, tighten_dir, write_json_atomic
from migbench.names import SAFE_NAME_RE, log_dir_problem
from migbench.plan import Plan, read_identity
from migbench.sweep.model import LaunchSettings
from migbench.types import InstanceRef, Placement

NEEDS_ATTENTION = ("applying", "rollback-failed")
"""Checkpoint statuses that leave GPUs possibly half-configured."""


class BoundInstance(TypedDict):
    """A planned instance as `apply` found it on the host: its GPU, GPU and compute instance ids,
    MIG device uuid and memory (MiB)."""

    gpu: int
    gi: int | None
    ci: int
    uuid: str
    memory_mib: int | None


class Bindings(TypedDict):
    """`bindings.json`: the plan's instances (by instance key) and runs (by id) bound to MIG uuids,
    and the GPUs' uuids (by index)."""

    version: int
    plan: str
    plan_file: str | None
    driver: str | None
    simulated: bool
    gpus: dict[str, str]
    instances: dict[str, BoundInstance]
    runs: dict[str, str]


class SavedCi(TypedDict):
    profile_id: int
    start: int
    size: int


class SavedInstance(TypedDict):
    placement: str
    profile_id: int
    size: int
    compute_instances: list[SavedCi]


class SavedGpu(TypedDict):
    """One GPU's MIG state as a checkpoint saves it (`apply.recovery.snapshot`)."""

    mig_current: bool | None  # None: the driver did not say
    mig_pending: bool | None
    instances: list[SavedInstance]


class _CheckpointCore(TypedDict):
    status: str
    gpus: dict[str, SavedGpu]


class Checkpoint(_CheckpointCore, total=False):
    """`checkpoint.json`: the GPUs (by index) before an apply, and how that apply ended (`status`).
    A checkpoint from before statuses were recorded has only `gpus` (read as `applied`)."""

    version: int
    pid: int
    started_at: float
    ended_at: float
    plan: str
    plan_file: str | None


def configure_modes(plan: Plan | LaunchSettings | None) -> int:
    """Set the mode of the state files this process writes: MIGBENCH_STATE_MODE, else the plan's
    `launch.state_mode` (or those launch settings', a sweep's), else 0600. Returns it."""
    env = os.environ.get(STATE_MODE_ENV)
    launch = plan.launch if isinstance(plan, Plan) else plan
    try:
        mode = parse_state_mode(env) if env else (launch.state_mode if launch is not None else None)
    except ValueError as exc:
        raise UsageError(f"{STATE_MODE_ENV}={env!r}: {exc}", hint="unset it, or give a mode such as 0600 or 0640") from None
    return configure_state_mode(mode)


BINDINGS_NAME = "bindings.json"
CHECKPOINT_NAME = "checkpoint.json"
DB_NAME = "launch.db"
LOCK_NAME = "launcher.lock"
LOG_NAME = "launcher.log"
JOBS_FILE = "slurm/jobs.tsv"
"""Where submit.sh records its job ids, under the plan's state dir (what status and stop read)."""


@dataclass(frozen=True)
class StateDir:
    """A plan's state directory, resolved once at a command's edge (`StateDir.of`) and passed down:
    its files are properties. `given`: it came from `--state-dir` (or is a node's share, or the
    launcher's own), so the hints that name a command add `--state-dir DIR` (`option`).
    It is path-like (`os.fspath`, `/`), and prints as its path."""

    path: Path
    given: bool = False

    @classmethod
    def of(cls, plan: Plan, given: StateDir | str | os.PathLike[str] | None = None) -> StateDir:
        """The state directory of `plan`: `given` (`--state-dir`) when there is one, else
        `<plan dir>/<log_dir>/<sweep name>/`."""
        if isinstance(given, StateDir):
            return given
        base = Path(plan.path).resolve().parent if plan.path else Path.cwd()
        return cls.in_dir(base, plan.launch.log_dir, plan.name, given)

    @classmethod
    def in_dir(cls, plan_dir: str | os.PathLike[str], log_dir: str, name: str, given: StateDir | str | os.PathLike[str] | None = None) -> StateDir:
        """The state directory of a plan of sweep `name` kept in `plan_dir` (before the plan exists).
        The name and `log_dir` are checked here, whatever file they came from: the state stays below
        the plan's directory (unless `log_dir` is absolute)."""
        if isinstance(given, StateDir):
            return given
        if given:
            return cls(Path(given), True)
        if not SAFE_NAME_RE.fullmatch(name or ""):
            raise InputError(f"sweep name {name!r} cannot name the state directory", hint="regenerate the plan with `migbench plan`")
        why = log_dir_problem(log_dir)
        if why is not None:
            raise InputError(why, hint="fix `launch.log_dir` in the sweep and plan again")
        return cls(Path(plan_dir).resolve() / log_dir / name)

    @classmethod
    def of_file(cls, plan_file: str | os.PathLike[str], given: StateDir | str | os.PathLike[str] | None = None) -> StateDir:
        """`of` from a plan file, reading only its head (see `plan.read_identity`)."""
        if isinstance(given, StateDir):
            return given
        if given:
            return cls.at(given)
        name, launch = read_identity(plan_file)
        return cls.in_dir(Path(plan_file).resolve().parent, launch.log_dir, name)

    @classmethod
    def at(cls, path: str | os.PathLike[str]) -> StateDir:
        """A state directory named outright (`--state-dir`, a launcher's own)."""
        return cls(Path(path), True)

    def node(self, node: str) -> StateDir:
        """Where one node's share keeps its bindings and checkpoint: `<state dir>/nodes/<node>/`."""
        if not SAFE_NAME_RE.fullmatch(node or ""):
            raise InputError(f"node name {node!r} cannot name a directory", hint="node names are letters, digits, '.', '_' and '-'")
        return StateDir(self.path / "nodes" / node, True)

    def named(self) -> StateDir:
        """The same directory, named outright (hints say `--state-dir` for it)."""
        return StateDir(self.path, True)

    @property
    def option(self) -> str:
        """` --state-dir DIR` for a hint naming a command, when the directory was given."""
        return f" --state-dir {self.path}" if self.given else ""

    @property
    def bindings(self) -> Path:
        return self.path / BINDINGS_NAME

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT_NAME

    @property
    def db(self) -> Path:
        return self.path / DB_NAME

    @property
    def lock(self) -> Path:
        return self.path / LOCK_NAME

    @property
    def log(self) -> Path:
        return self.path / LOG_NAME

    @property
    def jobs(self) -> Path:
        return self.path / JOBS_FILE

    def ensure(self) -> StateDir:
        """`ensure_state_dir`: create it (state mode) after the trust check."""
        ensure_state_dir(self.path)
        return self

    def resolve(self) -> Path:
        return self.path.resolve()

    def exists(self) -> bool:
        return self.path.exists()

    def is_dir(self) -> bool:
        return self.path.is_dir()

    def __truediv__(self, other: str | os.PathLike[str]) -> Path:
        return self.path / other

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __str__(self) -> str:
        return str(self.path)


def state_dir_for(plan: Plan, override: str | os.PathLike[str] | None = None) -> Path:
    """The path of `StateDir.of(plan, override)`."""
    return StateDir.of(plan, override).path


def ensure_state_dir(sd: Path) -> Path:
    """Create the state directory (state mode), or give an existing one of ours the state mode.
    A state directory another user could change (any directory from / down writable by, or owned
    by, a user other than root and us: `fsutil.untrusted_reason`) is refused before anything is
    written: the launcher writes there what its shims (possibly root's) run."""
    require_trusted(sd, "state directory")
    try:
        make_dirs(sd)
    except OSError as exc:
        raise MigbenchError(
            f"cannot create the state directory {sd}: {os_reason(exc)}",
            hint="check the permissions and free space of its parent, or pass --state-dir",
        ) from None
    require_trusted(sd, "state directory")  # again: in a shared directory another user may have made a part of it in between
    tighten_dir(sd)
    return sd


def require_trusted_state(sd: StateDir | str | os.PathLike[str], launch: Plan | LaunchSettings | None = None) -> None:
    """For the commands that only read a state directory (`check`, `status`, `logs`, `report`,
    `simulate`): the rule the commands that write it apply (`fsutil.require_trusted`, with the
    group rule of the plan's `state_mode`: `launch`), before anything in it is read. Another user's
    directory could make them show her launch as the plan's, print the file her planted link
    names, or tell root to run a command."""
    configure_modes(launch)
    require_trusted(sd, "state directory", reading=True)


def make_bindings(plan: Plan, host: HostState, gpus: Sequence[int]) -> Bindings:
    """Map each planned instance (and its runs) to the MIG device uuid the host reports."""
    instances: dict[str, BoundInstance] = {}
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


def _read_json(path: Path, what: str) -> dict[str, Any] | None:
    try:
        doc = json.loads(read_regular(path))  # a pipe planted there is refused, not waited on
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise MigbenchError(
            f"cannot read {what} {path}: {os_reason(exc)}",
            hint="run `migbench apply PLAN` again to rewrite it",
        ) from None
    if not isinstance(doc, dict):
        raise MigbenchError(f"{path} is not a {what}", hint="run `migbench apply PLAN` again to rewrite it")
    return doc


def load_bindings(plan: Plan, sd: StateDir | None = None) -> Bindings | None:
    """The plan's bindings file in `sd` (None: the plan's own state directory; returns None when
    there is none); one whose instances or runs are not mappings of instance keys and run ids is an
    error saying to apply again."""
    path = StateDir.of(plan, sd).bindings
    doc = _read_json(path, "bindings file")
    if doc is None:
        return None
    instances, runs = doc.setdefault("instances", {}), doc.setdefault("runs", {})
    if not isinstance(instances, dict) or not all(isinstance(b, dict) for b in instances.values()) or not isinstance(runs, dict):
        raise MigbenchError(f"{path} is not a bindings file (its instances or runs are not mappings)", hint="run `migbench apply PLAN` again to rewrite it")
    return cast(Bindings, doc)


def save_bindings(plan: Plan, bindings: Bindings, sd: StateDir) -> tuple[Path, Bindings]:
    """Merge `bindings` into the plan's bindings file in `sd` (instances of other GPUs stay bound)."""
    path = sd.ensure().bindings
    try:
        old = _read_json(path, "bindings file") or {}
    except MigbenchError:
        old = {}  # unreadable: replaced by the fresh bindings
    merged_instances = dict(old.get("instances", {})) if old.get("plan") == plan.name else {}
    merged_runs = dict(old.get("runs", {})) if old.get("plan") == plan.name else {}
    merged_instances.update(bindings["instances"])
    merged_runs.update(bindings["runs"])
    merged: Bindings = {**bindings, "instances": dict(sorted(merged_instances.items())), "runs": dict(sorted(merged_runs.items()))}
    write_json_atomic(path, merged)
    return path, merged


def rebind(path: Path, host: HostState, gpus: Sequence[int]) -> list[str]:
    """After a rollback re-created instances (with new MIG uuids), point the bindings in `path` at
    the devices now at each bound instance's placement, and drop those no longer there. Returns
    one line per change."""
    try:
        doc = _read_json(path, "bindings file")
    except MigbenchError:
        return []
    if doc is None:
        return []
    changes: list[str] = []
    new_uuid: dict[str, str | None] = {}
    instances = dict(doc.get("instances") or {})
    for key, b in sorted(instances.items()):
        try:
            ref = InstanceRef.parse(key)
        except ValueError:
            continue
        if ref.gpu not in gpus or not isinstance(b, dict):
            continue
        gpu = next((g for g in host.gpus if g.index == ref.gpu), None)
        gi = gpu.instance_at(ref.placement) if gpu is not None else None
        devs = gpu.devices_of(gi.id) if gpu is not None and gi is not None else []
        if not devs:
            new_uuid[str(b.get("uuid"))] = None
            del instances[key]
            changes.append(f"{key}: no longer on the host (unbound)")
        elif devs[0].uuid != b.get("uuid"):
            new_uuid[str(b.get("uuid"))] = devs[0].uuid
            instances[key] = dict(b, gi=gi.id if gi else None, ci=devs[0].ci_id, uuid=devs[0].uuid)
            changes.append(f"{key}: re-bound to {devs[0].uuid}")
    if not changes:
        return []
    runs = {}
    for rid, u in (doc.get("runs") or {}).items():
        if u in new_uuid:
            if new_uuid[u] is not None:
                runs[rid] = new_uuid[u]
        else:
            runs[rid] = u
    write_json_atomic(path, dict(doc, instances=dict(sorted(instances.items())), runs=dict(sorted(runs.items()))))
    return changes


# ---------------------------------------------------------------------------------------------
# The checkpoint
# ---------------------------------------------------------------------------------------------


def write_checkpoint(plan: Plan, gpus: dict[str, SavedGpu], sd: StateDir) -> Path:
    """Record the GPUs' state before an apply changes them (status `applying`) in `sd`."""
    path = sd.ensure().checkpoint
    doc: Checkpoint = {
        "version": 1,
        "status": "applying",
        "pid": os.getpid(),
        "started_at": time.time(),
        "plan": plan.name,
        "plan_file": str(Path(plan.path).resolve()) if plan.path else None,
        "gpus": gpus,
    }
    write_json_atomic(path, doc)
    return path


def read_checkpoint(path: str | os.PathLike[str]) -> Checkpoint | None:
    """The checkpoint at `path` (None when there is none or it is not a checkpoint)."""
    try:
        doc = _read_json(Path(path), "checkpoint")
    except MigbenchError:
        return None
    if doc is None or not isinstance(doc.get("gpus"), dict):
        return None
    doc.setdefault("status", "applied")  # written before statuses existed: that apply ended
    problem = _checkpoint_problem(doc)
    if problem is None:
        return cast(Checkpoint, doc)
    if doc["status"] not in NEEDS_ATTENTION:
        return None  # an apply that ended: nothing is read from it
    raise MigbenchError(
        f"{path} is not a checkpoint apply wrote: {problem}; it says an apply did not finish, but not how the GPUs were before it",
        hint="move it aside (the GPUs are then taken as they are now): `migbench check PLAN` shows how they differ from the plan, "
        "`migbench apply PLAN` brings them to it",
    )


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _saved_gpu_problem(g: str, snap: object) -> str | None:
    """What is wrong with one GPU's entry of a checkpoint (as `recovery.snapshot` writes it), or None."""
    if not (g.isascii() and g.isdigit()):
        return f"GPU key {g[:40]!r} is not a GPU index"
    if not isinstance(snap, dict) or not isinstance(snap.get("instances"), list):
        return f"GPU {g} is not a mapping with a list of instances"
    if any(k not in snap or not isinstance(snap[k], (bool, type(None))) for k in ("mig_current", "mig_pending")):
        return f"GPU {g}: mig_current and mig_pending are true, false or null"
    for i in snap["instances"]:
        if not isinstance(i, dict) or not all(_is_int(i.get(k)) for k in ("profile_id", "size")):
            return f"GPU {g}: an instance is not a mapping with a profile_id and a size"
        try:
            Placement.parse(str(i.get("placement")))
        except ValueError:
            return f"GPU {g}: instance placement {str(i.get('placement'))[:40]!r} is not profile@start"
        cis = i.get("compute_instances")
        if not isinstance(cis, list) or not all(isinstance(c, dict) and all(_is_int(c.get(k)) for k in ("profile_id", "start", "size")) for c in cis):
            return f"GPU {g}: instance {i['placement']}'s compute_instances are not a list of {{profile_id, start, size}}"
    return None


def _checkpoint_problem(doc: dict[str, Any]) -> str | None:
    """What is wrong with a checkpoint's document, or None."""
    for k in ("started_at", "ended_at"):
        if k in doc and (isinstance(doc[k], bool) or not isinstance(doc[k], (int, float))):
            return f"{k} is not a time"
    if not isinstance(doc.get("plan_file"), (str, type(None))) or not isinstance(doc.get("plan", ""), str):
        return "plan or plan_file is not text"
    for g, snap in doc["gpus"].items():
        if (problem := _saved_gpu_problem(g, snap)) is not None:
            return problem
    return None


def mark_checkpoint(path: str | os.PathLike[str], status: str) -> None:
    """Record how the apply of the checkpoint at `path` ended."""
    doc = read_checkpoint(path)
    if doc is not None:
        ended: Checkpoint = {**doc, "status": status, "ended_at": time.time()}
        write_json_atomic(path, ended)
