"""The plan: value types, the plan file (YAML, byte-deterministic) and its JSON form.

A plan names, per GPU, the instances to create (`profile@start`) and, per run, the instance it runs
on and its wave (0 = starts at once, 1 = next on that instance, ...). It carries everything `apply`
and `launch` need (argv, env, workdir, retries), so they work from the plan file alone.

The file holds no timings or timestamps: the same sweep and fleet give byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from migbench import yamlio
from migbench.catalog import Catalog, GpuModel
from migbench.duration import Demand, DurationModel
from migbench.errors import InputError
from migbench.fsutil import read_input_text, write_text_atomic
from migbench.plancheck import (
    MAX_PLAN_BYTES,
    REGENERATE,
    bad_path,
    check_plan,
    lines_of,
    located,
    parse_start,
    safe_name,
    yaml_error,
)
from migbench.types import InstanceRef, LaunchSettings, Placement

PLAN_VERSION = 1
PLAN_KIND = "migbench-plan"


@dataclass(frozen=True)
class PlanGpu:
    """A GPU of the plan: its plan-wide index, model, driver and, in a fleet of several machines,
    its node (on the node it is the `local`-th GPU of the node, in plan order)."""

    gpu: int
    model: str
    driver: str | None = None
    node: str | None = None


@dataclass(frozen=True)
class PlanInstance:
    gpu: int
    profile: str
    start: int
    memory_mib: int
    compute: float  # share of the GPU's compute (SMs), for the duration model
    runs: tuple[str, ...] = ()  # in wave order

    @property
    def placement(self) -> Placement:
        return Placement(self.profile, self.start)

    @property
    def ref(self) -> InstanceRef:
        return InstanceRef(self.gpu, self.placement)

    @property
    def key(self) -> str:
        return str(self.ref)


@dataclass(frozen=True)
class PlanRun:
    id: str
    group: str
    memory_mib: int
    gpu: int | None
    profile: str | None
    start: int | None
    wave: int | None
    argv: tuple[str, ...]
    shell: bool = False
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "."
    params: dict[str, Any] = field(default_factory=dict)
    duration_s: float | None = None
    compute: float = 1.0
    max_runs_per_instance: int = 1
    profiles: tuple[str, ...] | None = None
    retries: int | None = None
    timeout_s: float | None = None
    est_start_s: float | None = None
    est_end_s: float | None = None

    @property
    def instance_key(self) -> str | None:
        if self.gpu is None or self.profile is None or self.start is None:
            return None
        return str(InstanceRef.of(self.gpu, self.profile, self.start))

    def demand(self) -> Demand:
        """What the duration model needs of this run."""
        return Demand(self.id, self.memory_mib, self.duration_s, self.compute, self.max_runs_per_instance, self.profiles)


@dataclass(frozen=True)
class Unplaced:
    id: str
    memory_mib: int
    reason: str


@dataclass(frozen=True)
class SolverInfo:
    status: str
    objective_name: str
    objective: float
    bound: float
    gap: float
    seconds: float | None = None
    runs_at_once: int = 0
    makespan_s: float | None = None


@dataclass
class Plan:
    name: str
    sweep_file: str | None
    sweep_sha256: str
    fleet: list[PlanGpu]
    instances: list[PlanInstance]
    runs: list[PlanRun]
    unplaced: list[Unplaced]
    solver: SolverInfo
    duration_model: DurationModel
    launch: LaunchSettings
    models: dict[str, dict[str, Any]]
    warnings: list[str] = field(default_factory=list)
    path: str | None = None  # where it was loaded from / saved to (not serialised)
    notes: list[str] = field(default_factory=list)  # what loading it found worth saying (not serialised)

    # -- lookups -------------------------------------------------------------------------------
    def run(self, run_id: str) -> PlanRun:
        for r in self.runs:
            if r.id == run_id:
                return r
        raise KeyError(run_id)

    def instances_of(self, gpu: int) -> list[PlanInstance]:
        return [i for i in self.instances if i.gpu == gpu]

    def layout(self, gpu: int) -> tuple[Placement, ...]:
        return tuple(sorted((i.placement for i in self.instances_of(gpu)), key=lambda p: (p.start, p.profile)))

    def gpus(self) -> list[int]:
        return [g.gpu for g in self.fleet]

    def placed_runs(self) -> list[PlanRun]:
        return [r for r in self.runs if r.gpu is not None]

    # -- nodes ---------------------------------------------------------------------------------
    def nodes(self) -> list[str]:
        """The fleet's node names in plan order ([] for a fleet without nodes: one local host)."""
        return list(dict.fromkeys(g.node for g in self.fleet if g.node))

    def node_of(self, gpu: int) -> str | None:
        return next((g.node for g in self.fleet if g.gpu == gpu), None)

    def node_gpus(self, node: str) -> list[PlanGpu]:
        """The node's GPUs in plan order: the k-th is GPU k on that machine."""
        return [g for g in self.fleet if g.node == node]

    def node_share(self, node: str) -> Plan:
        """What one node runs: its GPUs renumbered as the node numbers them (0, 1, ...), their
        instances, and the runs placed on them. What `apply --node` reconciles and `check --node` checks."""
        gpus = self.node_gpus(node)
        if not gpus:
            known = ", ".join(self.nodes()) or "none (the fleet names no nodes)"
            raise InputError(f"node {node!r} is not in the plan's fleet", hint=f"the plan's nodes: {known}")
        local = {g.gpu: k for k, g in enumerate(gpus)}
        runs = [replace(r, gpu=local[r.gpu]) for r in self.runs if r.gpu in local]
        return Plan(
            name=self.name,
            sweep_file=self.sweep_file,
            sweep_sha256=self.sweep_sha256,
            fleet=[replace(g, gpu=local[g.gpu]) for g in gpus],
            instances=[replace(i, gpu=local[i.gpu]) for i in self.instances if i.gpu in local],
            runs=runs,
            unplaced=[],
            solver=self.solver,
            duration_model=self.duration_model,
            launch=self.launch,
            models=self.models,
            warnings=list(self.warnings),
            path=self.path,
        )

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self, *, timings: bool = False) -> dict[str, Any]:
        solver = {
            "status": self.solver.status,
            "objective_name": self.solver.objective_name,
            "objective": _num(self.solver.objective),
            "bound": _num(self.solver.bound),
            "gap": round(self.solver.gap, 6),
            "runs_at_once": self.solver.runs_at_once,
            "makespan_s": _num(self.solver.makespan_s),
        }
        if timings:
            solver["seconds"] = round(self.solver.seconds or 0.0, 3)
        return {
            "version": PLAN_VERSION,
            "kind": PLAN_KIND,
            "sweep": {"name": self.name, "file": self.sweep_file, "sha256": self.sweep_sha256},
            "fleet": [_clean(asdict(g)) for g in self.fleet],
            "models": self.models,
            "duration_model": self.duration_model.to_dict(),
            "launch": self.launch.to_dict(),
            "instances": [
                {
                    "gpu": i.gpu,
                    "profile": i.profile,
                    "start": i.start,
                    "placement": str(i.placement),
                    "memory_mib": i.memory_mib,
                    "compute": round(i.compute, 6),
                    "runs": list(i.runs),
                }
                for i in self.instances
            ],
            "runs": [_run_dict(r) for r in self.runs],
            "unplaced": [asdict(u) for u in self.unplaced],
            "solver": solver,
            "warnings": list(self.warnings),
        }

    def to_yaml(self) -> str:
        return yamlio.dump(self.to_dict())

    def to_json(self, *, timings: bool = True) -> str:
        return json.dumps(self.to_dict(timings=timings), indent=2)

    def save(self, path: str | os.PathLike[str], *, force: bool = False) -> Path:
        """Write the plan file atomically (a temp file renamed over it). A device or a pipe (say
        `-o /dev/null`) is written through, never replaced; a directory is an error. It never
        replaces its own sweep file, nor (without `force`) a file that is not a migbench plan."""
        p = Path(path)
        check_output(p, self.sweep_file, force=force, name=self.name)
        write_text_atomic(p, self.to_yaml(), "plan file")
        if p.is_file():
            self.path = str(p)
        return p

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, catalog: Catalog | None = None) -> Plan:
        """Read a plan file and check it as strictly as a sweep: every problem at once, each with the
        file, line and field (see `_read`). `notes` says what the user should know (the sweep file
        changed since the plan was made, a GPU model the catalogue cannot check)."""
        p = Path(path)
        text = read_input_text(p, "plan file", limit=MAX_PLAN_BYTES, hint="give the file `migbench plan SWEEP -o PLAN` wrote")
        doc, locate = _parse(text, str(p))
        plan = _read(doc, file=str(p), catalog=catalog, locate=locate)
        plan.path = str(p)
        plan.notes.extend(_sweep_changed(plan, p))
        return plan

    @classmethod
    def from_dict(cls, doc: Any, *, file: str = "<plan>", catalog: Catalog | None = None) -> Plan:
        """A plan from its dict form, checked as `load` checks a file (without lines)."""
        return _read(doc, file=file, catalog=catalog)


# =============================================================================================
# Reading a plan file (checked by migbench.plancheck first)
# =============================================================================================

_MAYBE_ANCHOR = re.compile(r"(?:^|[\s\[{,:-])&[^\s,\[\]{}]", re.M)
"""Where a YAML anchor could be (`plan` writes none): such a file is read with the alias-counting
loader; any other with libyaml (`yamlio.load`), as fast as `plan` writes it."""


def _parse(text: str, file: str) -> tuple[Any, Callable[[], dict[str, int]]]:
    """The document, and how to find its fields' lines (a second, located parse, only when asked)."""

    def locate() -> dict[str, int]:
        loader = parse_start(text, file)
        try:
            return lines_of(loader, loader.get_single_node(), file)
        except yaml.YAMLError:
            return {}
        finally:
            loader.dispose()

    if not _MAYBE_ANCHOR.search(text):
        try:
            return yamlio.load(text), locate
        except yaml.YAMLError:
            pass  # the located loader below says where
    loader = parse_start(text, file)
    try:
        root = loader.get_single_node()
        return (loader.construct_document(root) if root is not None else None), locate
    except yaml.YAMLError as exc:
        raise yaml_error(exc, file) from None
    finally:
        loader.dispose()


def _read(doc: Any, *, file: str, catalog: Catalog | None, locate: Callable[[], dict[str, int]] | None = None) -> Plan:
    """A `Plan` from a document `check_plan` finds clean; its problems, located, otherwise."""
    if not isinstance(doc, dict):
        raise InputError(f"{file}: a plan file is a YAML mapping", hint=REGENERATE)
    if doc.get("kind") != PLAN_KIND or doc.get("version") != PLAN_VERSION:
        raise InputError(
            f"{file}: not a migbench plan (kind {doc.get('kind')!r}, version {doc.get('version')!r})",
            hint=f"expected kind: {PLAN_KIND}, version: {PLAN_VERSION}; {REGENERATE}",
        )
    checked = check_plan(doc, catalog=catalog)
    if checked.problems:
        raise located(checked, file, locate)
    sweep, s = doc["sweep"], doc.get("solver") or {}
    return Plan(
        name=sweep["name"],
        sweep_file=sweep.get("file"),
        sweep_sha256=sweep.get("sha256") or "",
        fleet=[PlanGpu(g["gpu"], g["model"], g.get("driver"), g.get("node")) for g in doc["fleet"]],
        instances=[
            PlanInstance(i["gpu"], i["profile"], i["start"], i["memory_mib"], float(i.get("compute") or 1.0), tuple(i.get("runs") or ()))
            for i in doc["instances"]
        ],
        runs=[_run_from(r) for r in doc["runs"]],
        unplaced=[Unplaced(u["id"], u["memory_mib"], u.get("reason") or "") for u in doc.get("unplaced") or []],
        solver=SolverInfo(
            str(s.get("status", "UNKNOWN")), str(s.get("objective_name", "")), float(s.get("objective") or 0),
            float(s.get("bound") or 0), float(s.get("gap") or 0), s.get("seconds"), int(s.get("runs_at_once") or 0),
            s.get("makespan_s"),
        ),
        duration_model=DurationModel.from_dict(doc.get("duration_model")),
        launch=LaunchSettings.from_dict(doc.get("launch")),
        models=dict(doc.get("models") or {}),
        warnings=[str(w) for w in doc.get("warnings") or []],
        notes=checked.notes,
    )


def _run_from(r: dict[str, Any]) -> PlanRun:
    """A run of a checked document (every field's type and range already checked)."""
    return PlanRun(
        id=r["id"], group=r["group"], memory_mib=r["memory_mib"], gpu=r.get("gpu"), profile=r.get("profile"),
        start=r.get("start"), wave=r.get("wave"), argv=tuple(str(a) for a in r["argv"]), shell=bool(r.get("shell")),
        env={str(k): str(v) for k, v in (r.get("env") or {}).items()}, workdir=r.get("workdir") or ".",
        params=dict(r.get("params") or {}), duration_s=r.get("duration_s"),
        compute=float(r["compute"]) if r.get("compute") is not None else 1.0,
        max_runs_per_instance=r.get("max_runs_per_instance") or 1,
        profiles=tuple(r["profiles"]) if r.get("profiles") is not None else None, retries=r.get("retries"),
        timeout_s=r.get("timeout_s"), est_start_s=r.get("est_start_s"), est_end_s=r.get("est_end_s"),
    )


def _sweep_changed(plan: Plan, plan_path: Path) -> list[str]:
    """A note when the sweep file the plan was made from is found (next to the plan, or from here)
    and its contents changed since (its sha256 differs)."""
    if not plan.sweep_file or not plan.sweep_sha256:
        return []
    for cand in (plan_path.parent / plan.sweep_file, Path(plan.sweep_file)):
        try:
            data = cand.read_bytes()
        except OSError:
            continue
        if hashlib.sha256(data).hexdigest() != plan.sweep_sha256:
            return [f"the sweep file {cand} changed since this plan was made; re-plan with `migbench plan {cand} -o {plan_path}`"]
        return []
    return []


def check_output(
    path: str | os.PathLike[str], sweep_file: str | os.PathLike[str] | None, *, force: bool = False, name: str = "<sweep name>"
) -> None:
    """May a plan be written to `path`? Never over its own sweep file; without `force`, never over
    an existing file that is not a migbench plan (an empty file is fine). Checked before planning,
    and again when saving."""
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{p} is a directory", hint="give the plan file's name, e.g. -o plans/sweep.plan.yaml")
    if not p.is_file():
        return
    other = f"choose another output, e.g. -o {name}.plan.yaml"
    if sweep_file:
        try:
            same = os.path.samefile(p, sweep_file)
        except OSError:
            same = False
        if same:
            raise InputError(f"refusing to write the plan over its own sweep file {p}", hint=other)
    if force or p.stat().st_size == 0:
        return
    try:
        with open(p, "rb") as f:
            head = f.read(65536)
    except OSError:
        return  # writing it will say what is wrong
    if not re.search(rb"^kind: *['\"]?" + PLAN_KIND.encode() + rb"['\"]? *$", head, re.M):
        raise InputError(f"{p} exists and is not a migbench plan; refusing to replace it", hint=f"{other}, or pass --force to replace it")


def read_identity(path: str | os.PathLike[str]) -> tuple[str, LaunchSettings]:
    """A plan file's sweep name and launch settings, read from the head of the file only: `status`,
    `logs` and `stop` need no more, and a 30,000-run plan is seconds of YAML to parse whole. Falls
    back to `Plan.load` (and its errors) when the head is not as `plan` writes it."""
    p = Path(path)
    try:
        with open(p, encoding="utf-8") as f:
            head = []
            for line in f:
                if line.startswith(("instances:", "runs:")):
                    break
                head.append(line)
        doc = yamlio.load("".join(head))
        if isinstance(doc, dict) and doc.get("kind") == PLAN_KIND and isinstance(doc.get("sweep"), dict):
            name, launch = doc["sweep"]["name"], LaunchSettings.from_dict(doc.get("launch"))
            # they become paths: trusted only as the full check would (else Plan.load says what is wrong)
            if safe_name(name) and not bad_path(launch.log_dir):
                return name, launch
    except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError, yaml.YAMLError):
        pass
    plan = Plan.load(p)
    return plan.name, plan.launch


def _num(v: float | None) -> float | int | None:
    if v is None:
        return None
    if float(v).is_integer():
        return int(v)
    return round(float(v), 3)


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _run_dict(r: PlanRun) -> dict[str, Any]:
    d: dict[str, Any] = {
        "id": r.id,
        "group": r.group,
        "memory_mib": r.memory_mib,
        "gpu": r.gpu,
        "profile": r.profile,
        "start": r.start,
        "wave": r.wave,
        "argv": list(r.argv),
        "shell": r.shell,
        "env": dict(sorted(r.env.items())),
        "workdir": r.workdir,
        "params": r.params,
        "duration_s": _num(r.duration_s),
        "compute": r.compute,
        "max_runs_per_instance": r.max_runs_per_instance,
        "profiles": list(r.profiles) if r.profiles is not None else None,
        "retries": r.retries,
        "timeout_s": _num(r.timeout_s),
        "est_start_s": _num(r.est_start_s),
        "est_end_s": _num(r.est_end_s),
    }
    return d


def model_summary(model: GpuModel, used: Sequence[str]) -> dict[str, Any]:
    """What the plan records about a model's profile table: where memory sizes came from."""
    return {
        "origin": model.origin,
        "driver": None if model.driver is None else ".".join(map(str, model.driver)),
        "profiles": {
            p.name: {"id": p.id, "memory_mib": p.memory_mib, "source": p.memory_source}
            for p in model.profiles
            if p.name in used
        },
        "unverified": list(model.unverified),
    }
