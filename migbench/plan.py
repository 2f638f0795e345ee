"""The plan: value types, the plan file (YAML, byte-deterministic) and its JSON form.

A plan names, per GPU, the instances to create (`profile@start`) and, per run, the instance it runs
on and its wave (0 = starts at once, 1 = next on that instance, ...). It carries everything `apply`
and `launch` need (argv, env, workdir, retries), so they work from the plan file alone.

The file holds no timings or timestamps: the same sweep and fleet give byte-identical files.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from migbench.catalog import GpuModel
from migbench.duration import Demand, DurationModel
from migbench.errors import InputError, Problem
from migbench.fsutil import umask, write_text_atomic
from migbench.types import ENV_NAME_RE, SAFE_NAME_RE, InstanceRef, LaunchSettings, Placement

PLAN_VERSION = 1
PLAN_KIND = "migbench-plan"


@dataclass(frozen=True)
class PlanGpu:
    gpu: int
    model: str
    driver: str | None = None


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
        return yaml.safe_dump(self.to_dict(), sort_keys=False, width=100, allow_unicode=True)

    def to_json(self, *, timings: bool = True) -> str:
        return json.dumps(self.to_dict(timings=timings), indent=2)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the plan file atomically (a temp file renamed over it). A device or a pipe (say
        `-o /dev/null`) is written through, never replaced; a directory is an error."""
        p = Path(path)
        if p.is_dir():
            raise InputError(f"{p} is a directory", hint="give the plan file's name, e.g. -o plans/sweep.plan.yaml")
        text = self.to_yaml()
        if p.exists() and not p.is_file():
            with open(p, "w") as f:
                f.write(text)
            return p
        p.parent.mkdir(parents=True, exist_ok=True)
        mode = stat.S_IMODE(p.stat().st_mode) if p.exists() else 0o666 & ~umask()
        write_text_atomic(p, text, mode=mode)
        self.path = str(p)
        return p

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Plan:
        p = Path(path)
        if not p.exists():
            raise InputError(f"plan file {p} does not exist", hint="write one with `migbench plan SWEEP -o PLAN`")
        try:
            doc = yaml.safe_load(p.read_text())
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            raise InputError(
                f"{p}: not valid YAML",
                hint="regenerate it with `migbench plan`",
                problems=[Problem(str(getattr(exc, "problem", exc)), file=str(p), line=line)],
            ) from exc
        plan = cls.from_dict(doc, file=str(p))
        plan.path = str(p)
        return plan

    @classmethod
    def from_dict(cls, doc: Any, *, file: str = "<plan>") -> Plan:
        problems: list[Problem] = []

        def need(d: Any, key: str, typ: type | tuple[type, ...], where: str) -> Any:
            if not isinstance(d, dict) or key not in d:
                problems.append(Problem(f"missing `{key}`", file=file, field=where))
                return None
            v = d[key]
            if v is not None and not isinstance(v, typ):
                problems.append(Problem(f"`{key}` has the wrong type ({type(v).__name__})", file=file, field=where))
                return None
            return v

        if not isinstance(doc, dict):
            raise InputError(f"{file}: a plan file is a YAML mapping", hint="regenerate it with `migbench plan`")
        if doc.get("kind") != PLAN_KIND or doc.get("version") != PLAN_VERSION:
            raise InputError(
                f"{file}: not a migbench plan (kind {doc.get('kind')!r}, version {doc.get('version')!r})",
                hint=f"expected kind: {PLAN_KIND}, version: {PLAN_VERSION}; regenerate it with `migbench plan`",
            )
        sweep = need(doc, "sweep", dict, "sweep") or {}
        name = sweep.get("name", "")
        if not isinstance(name, str) or not SAFE_NAME_RE.fullmatch(name):
            problems.append(
                Problem(
                    f"sweep name {name!r} cannot name the state directory",
                    file=file, field="sweep.name", hint="letters, digits, '.', '_' and '-', starting with a letter or digit",
                )
            )
        fleet = []
        for k, g in enumerate(need(doc, "fleet", list, "fleet") or []):
            try:
                fleet.append(PlanGpu(int(g["gpu"]), str(g["model"]), None if g.get("driver") is None else str(g["driver"])))
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                problems.append(Problem(f"malformed GPU ({_why(exc)})", file=file, field=f"fleet[{k}]"))
        instances = []
        for k, i in enumerate(need(doc, "instances", list, "instances") or []):
            try:
                instances.append(
                    PlanInstance(
                        int(i["gpu"]), str(i["profile"]), int(i["start"]), int(i["memory_mib"]),
                        float(i.get("compute", 1.0)), tuple(str(r) for r in (i.get("runs") or ())),
                    )
                )
            except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
                problems.append(Problem(f"malformed instance ({_why(exc)})", file=file, field=f"instances[{k}]"))
        runs = []
        for k, r in enumerate(need(doc, "runs", list, "runs") or []):
            try:
                run = _run_from(r)
            except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
                problems.append(Problem(f"malformed run ({_why(exc)})", file=file, field=f"runs[{k}]"))
                continue
            if not SAFE_NAME_RE.fullmatch(run.id):
                problems.append(Problem(f"run id {run.id!r} cannot name a directory", file=file, field=f"runs[{k}].id"))
            bad_env = [e for e in run.env if not ENV_NAME_RE.fullmatch(e)]
            if bad_env:
                problems.append(Problem(f"env names that are not variable names: {bad_env[:3]!r}", file=file, field=f"runs[{k}].env"))
            runs.append(run)
        unplaced = []
        unplaced_doc = doc.get("unplaced") or []
        for k, u in enumerate(unplaced_doc if isinstance(unplaced_doc, list) else [unplaced_doc]):
            try:
                unplaced.append(Unplaced(str(u["id"]), int(u["memory_mib"]), str(u["reason"])))
            except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
                problems.append(Problem(f"malformed unplaced run ({_why(exc)})", file=file, field=f"unplaced[{k}]"))
        s = need(doc, "solver", dict, "solver") or {}
        duration_model, launch = DurationModel(), LaunchSettings()
        try:
            duration_model = DurationModel.from_dict(doc.get("duration_model"))
        except (TypeError, ValueError, AttributeError) as exc:
            problems.append(Problem(f"malformed duration model ({exc})", file=file, field="duration_model"))
        try:
            launch = LaunchSettings.from_dict(doc.get("launch"))
        except (TypeError, ValueError, AttributeError) as exc:
            problems.append(Problem(str(exc), file=file, field="launch"))
        solver = SolverInfo("UNKNOWN", "", 0.0, 0.0, 0.0)
        try:
            solver = SolverInfo(
                str(s.get("status", "UNKNOWN")), str(s.get("objective_name", "")), float(s.get("objective") or 0),
                float(s.get("bound") or 0), float(s.get("gap") or 0), _opt_float(s.get("seconds")), int(s.get("runs_at_once") or 0),
                _opt_float(s.get("makespan_s")),
            )
        except (TypeError, ValueError, OverflowError) as exc:
            problems.append(Problem(f"malformed solver summary ({_why(exc)})", file=file, field="solver"))
        models, warnings = doc.get("models") or {}, doc.get("warnings") or []
        if not isinstance(models, dict):
            problems.append(Problem("`models` must be a mapping", file=file, field="models"))
        if not isinstance(warnings, list):
            problems.append(Problem("`warnings` must be a list", file=file, field="warnings"))
        if problems:
            raise InputError(f"{file}: {len(problems)} problem(s) in the plan", hint="regenerate it with `migbench plan`", problems=problems)
        return cls(
            name=str(name),
            sweep_file=sweep.get("file"),
            sweep_sha256=str(sweep.get("sha256", "")),
            fleet=fleet,
            instances=instances,
            runs=runs,
            unplaced=unplaced,
            solver=solver,
            duration_model=duration_model,
            launch=launch,
            models=dict(models),
            warnings=[str(w) for w in warnings],
        )


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


def _why(exc: BaseException) -> str:
    return f"missing {exc}" if isinstance(exc, KeyError) else str(exc)


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


def _run_from(r: dict[str, Any]) -> PlanRun:
    argv = r["argv"]
    if not isinstance(argv, list) or not argv:
        raise ValueError("`argv` must be a non-empty list")
    env = r.get("env") or {}
    params = r.get("params") or {}
    if not isinstance(env, dict) or not isinstance(params, dict):
        raise ValueError("`env` and `params` must be mappings")
    profiles = r.get("profiles")
    if profiles is not None and not isinstance(profiles, list):
        raise ValueError("`profiles` must be a list")
    return PlanRun(
        id=str(r["id"]),
        group=str(r["group"]),
        memory_mib=int(r["memory_mib"]),
        gpu=None if r.get("gpu") is None else int(r["gpu"]),
        profile=None if r.get("profile") is None else str(r["profile"]),
        start=None if r.get("start") is None else int(r["start"]),
        wave=None if r.get("wave") is None else int(r["wave"]),
        argv=tuple(str(a) for a in argv),
        shell=bool(r.get("shell", False)),
        env={str(k): str(v) for k, v in env.items()},
        workdir=str(r.get("workdir") or "."),
        params=dict(params),
        duration_s=_opt_float(r.get("duration_s")),
        compute=float(r.get("compute", 1.0)),
        max_runs_per_instance=int(r.get("max_runs_per_instance", 1)),
        profiles=tuple(str(p) for p in profiles) if profiles is not None else None,
        retries=None if r.get("retries") is None else int(r["retries"]),
        timeout_s=_opt_float(r.get("timeout_s")),
        est_start_s=_opt_float(r.get("est_start_s")),
        est_end_s=_opt_float(r.get("est_end_s")),
    )


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
