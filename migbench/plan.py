"""The plan: value types, the plan file (YAML, byte-deterministic) and its JSON form.

A plan names, per GPU, the instances to create (`profile@start`) and, per run, the instance it runs
on and its wave (0 = starts at once, 1 = next on that instance, ...). It carries everything `apply`
and `launch` need (argv, env, workdir, retries), so they work from the plan file alone.

The file holds no timings or timestamps: the same sweep and fleet give byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from migbench.catalog import Catalog, GpuModel, default_catalog
from migbench.duration import Demand, DurationModel
from migbench.errors import InputError, MigbenchError, Problem
from migbench.fsutil import read_input_text, write_text_atomic
from migbench.sweep.schema import ENV_NAME_RE, MAX_FLEET_GPUS, MAX_NAME_LEN, SWEEP_NAME_RE
from migbench.sweep.yamlnodes import Abort, Converter, LimitedSafeLoader, MapNode, Node, Problems, SeqNode, reader_error_line
from migbench.types import InstanceRef, LaunchSettings, Placement

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
        loader = _parse_start(text, str(p))
        try:
            try:
                root = loader.get_single_node()
                doc = loader.construct_document(root) if root is not None else None
            except yaml.YAMLError as exc:
                raise _yaml_error(exc, str(p)) from None
            plan = _read(doc, file=str(p), catalog=catalog, locate=lambda: _lines(loader, root, str(p)))
        finally:
            loader.dispose()
        plan.path = str(p)
        plan.notes.extend(_sweep_changed(plan, p))
        return plan

    @classmethod
    def from_dict(cls, doc: Any, *, file: str = "<plan>", catalog: Catalog | None = None) -> Plan:
        """A plan from its dict form, checked as `load` checks a file (without lines)."""
        return _read(doc, file=file, catalog=catalog)


# =============================================================================================
# Reading a plan file: every field checked, problems located like a sweep's
# =============================================================================================

MAX_PLAN_BYTES = 256 * 2**20
"""A plan file larger than this is refused before it is parsed (a plan of 100,000 runs is ~60 MiB)."""
RUN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
"""Run ids name directories (`<state dir>/<run id>/`): plain file names only."""
_REGENERATE = "regenerate it with `migbench plan SWEEP -o PLAN`"


def _parse_start(text: str, file: str) -> LimitedSafeLoader:
    try:
        return LimitedSafeLoader(text)
    except yaml.reader.ReaderError as exc:
        prob = Problem(f"a control character ({exc.character!r}) YAML does not allow", file, reader_error_line(exc, text))
        raise InputError(f"{file}: not a valid plan file", hint=_REGENERATE, problems=[prob]) from None


def _yaml_error(exc: yaml.YAMLError, file: str) -> InputError:
    mark = getattr(exc, "problem_mark", None)
    what = " ".join(x for x in (getattr(exc, "context", None), getattr(exc, "problem", None)) if x) or str(exc)
    prob = Problem(what, file, mark.line + 1 if mark is not None else None)
    return InputError(f"{file}: not valid YAML", hint=_REGENERATE, problems=[prob])


def _lines(loader: LimitedSafeLoader, root: yaml.Node | None, file: str) -> dict[str, int]:
    """Field path -> line, from the sweep loader's located YAML (built only when there are problems)."""
    out: dict[str, int] = {}
    if root is None:
        return out
    try:
        tree = Converter(loader, Problems(file)).convert(root, "")
    except Abort:
        return out
    todo: list[Node] = [tree]
    while todo:
        n = todo.pop()
        out.setdefault(n.path, n.line)
        if isinstance(n, MapNode):
            for e in n.entries.values():
                out[e.path] = e.value.line
                todo.append(e.value)
        elif isinstance(n, SeqNode):
            todo.extend(n.items)
    return out


class _Check:
    """Problems found while reading a plan: (field path, message, hint), located at the end."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str, str | None]] = []

    def add(self, field: str, message: str, hint: str | None = None) -> None:
        self.items.append((field, message, hint))

    def get(self, d: dict[str, Any], key: str, path: str, kind: str, *, required: bool = True) -> Any:
        """d[key] if it is of `kind` (int, number, str, bool, list, map, strs); None (with a problem
        unless it is optional and absent or null) otherwise."""
        field = f"{path}.{key}" if path else key
        if key not in d or d[key] is None:
            if required:
                self.add(field, f"missing `{key}`" if key not in d else f"`{key}` is null")
            return None
        v = d[key]
        ok = {
            "int": isinstance(v, int) and not isinstance(v, bool),
            "number": isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
            "str": isinstance(v, str),
            "bool": isinstance(v, bool),
            "list": isinstance(v, list),
            "map": isinstance(v, dict),
        }[kind]
        if not ok:
            want = {"int": "a whole number", "number": "a number", "str": "a string", "bool": "true or false",
                    "list": "a list", "map": "a mapping"}[kind]
            self.add(field, f"expected {want}, got {_kind(v)}")
            return None
        return v

    def at_least(self, v: Any, minimum: float, field: str, strict: bool = False) -> Any:
        if v is not None and (v <= minimum if strict else v < minimum):
            self.add(field, f"must be {'>' if strict else '>='} {minimum:g}, got {v}")
            return None
        return v


def _kind(v: Any) -> str:
    if isinstance(v, dict):
        return "a mapping"
    if isinstance(v, list):
        return "a list"
    text = repr(v) if len(repr(v)) <= 40 else repr(v)[:37] + "..."
    if isinstance(v, str):
        return f"the string {text}"
    return f"{'a boolean' if isinstance(v, bool) else type(v).__name__} {text}"


def _read(doc: Any, *, file: str, catalog: Catalog | None, locate: Callable[[], dict[str, int]] | None = None) -> Plan:
    """Every field of a plan document checked (types, ranges, names that become paths, run ids),
    then the whole against itself and the catalogue: legal placements without overlap on GPUs of
    the fleet, runs on instances of the plan that hold them, unique run ids."""
    if not isinstance(doc, dict):
        raise InputError(f"{file}: a plan file is a YAML mapping", hint=_REGENERATE)
    if doc.get("kind") != PLAN_KIND or doc.get("version") != PLAN_VERSION:
        raise InputError(
            f"{file}: not a migbench plan (kind {doc.get('kind')!r}, version {doc.get('version')!r})",
            hint=f"expected kind: {PLAN_KIND}, version: {PLAN_VERSION}; {_REGENERATE}",
        )
    chk = _Check()
    notes: list[str] = []
    sweep = chk.get(doc, "sweep", "", "map") or {}
    name = chk.get(sweep, "name", "sweep", "str") if sweep else None
    if name is not None and (not SWEEP_NAME_RE.fullmatch(name) or len(name) > MAX_NAME_LEN):
        chk.add("sweep.name", f"{_kind(name)} cannot name the state directory",
                f"sweep names are letters, digits, '.', '_' and '-' (at most {MAX_NAME_LEN})")
        name = None
    sweep_file = chk.get(sweep, "file", "sweep", "str", required=False) if sweep else None
    sha = chk.get(sweep, "sha256", "sweep", "str", required=False) if sweep else None

    fleet = _read_fleet(chk, doc)
    models = _fleet_models(chk, fleet, catalog, notes)
    duration_model, launch = DurationModel(), LaunchSettings()
    try:
        duration_model = DurationModel.from_dict(chk.get(doc, "duration_model", "", "map", required=False))
    except (TypeError, ValueError) as exc:
        chk.add("duration_model", f"malformed duration model ({exc})")
    launch = _read_launch(chk, chk.get(doc, "launch", "", "map", required=False))
    instances, refused = _read_instances(chk, doc, fleet, models)
    runs, ids = _read_runs(chk, doc)
    _cross_check(chk, instances, runs, ids, refused)
    unplaced = []
    for k, u in enumerate(chk.get(doc, "unplaced", "", "list", required=False) or []):
        if not isinstance(u, dict):
            chk.add(f"unplaced[{k}]", f"expected a mapping, got {_kind(u)}")
            continue
        uid, mib, why = (chk.get(u, "id", f"unplaced[{k}]", "str"), chk.get(u, "memory_mib", f"unplaced[{k}]", "int"),
                         chk.get(u, "reason", f"unplaced[{k}]", "str", required=False))
        if uid is not None and mib is not None:
            unplaced.append(Unplaced(uid, mib, why or ""))
    s = chk.get(doc, "solver", "", "map", required=False) or {}
    solver = SolverInfo("UNKNOWN", "", 0.0, 0.0, 0.0)
    try:
        solver = SolverInfo(
            str(s.get("status", "UNKNOWN")), str(s.get("objective_name", "")), float(s.get("objective") or 0),
            float(s.get("bound") or 0), float(s.get("gap") or 0), s.get("seconds"), int(s.get("runs_at_once") or 0),
            None if s.get("makespan_s") is None else float(s["makespan_s"]),
        )
    except (TypeError, ValueError) as exc:
        chk.add("solver", f"malformed solver summary ({exc})")
    warnings = chk.get(doc, "warnings", "", "list", required=False) or []
    plan_models = chk.get(doc, "models", "", "map", required=False) or {}
    if chk.items:
        lines = locate() if locate is not None else {}
        probs = [Problem(msg, file, _line_of(lines, f), f or None, hint) for f, msg, hint in chk.items]
        probs.sort(key=lambda p: (p.line is None, p.line or 0))
        n = len(probs)
        raise InputError(f"{file}: {n} problem{'s' if n != 1 else ''} in the plan", hint=_REGENERATE, problems=probs)
    assert name is not None
    return Plan(
        name=name, sweep_file=sweep_file, sweep_sha256=sha or "", fleet=fleet, instances=instances, runs=runs,
        unplaced=unplaced, solver=solver, duration_model=duration_model, launch=launch, models=dict(plan_models),
        warnings=[str(w) for w in warnings], notes=notes,
    )


def _line_of(lines: dict[str, int], field: str) -> int | None:
    """The line of `field`, or of the nearest enclosing field the file has."""
    while True:
        if field in lines:
            return lines[field]
        cut = max(field.rfind("."), field.rfind("["))
        if cut <= 0:
            return lines.get(field)
        field = field[:cut]


def _read_fleet(chk: _Check, doc: dict[str, Any]) -> list[PlanGpu]:
    fleet: list[PlanGpu] = []
    raw = chk.get(doc, "fleet", "", "list") or []
    if len(raw) > MAX_FLEET_GPUS:
        chk.add("fleet", f"{len(raw)} GPUs; a fleet has at most {MAX_FLEET_GPUS}")
        return fleet
    seen: set[int] = set()
    for k, g in enumerate(raw):
        where = f"fleet[{k}]"
        if not isinstance(g, dict):
            chk.add(where, f"expected a mapping {{gpu: N, model: MODEL}}, got {_kind(g)}")
            continue
        idx = chk.at_least(chk.get(g, "gpu", where, "int"), 0, f"{where}.gpu")
        model = chk.get(g, "model", where, "str")
        driver = chk.get(g, "driver", where, "str", required=False)
        if idx is not None and idx in seen:
            chk.add(f"{where}.gpu", f"GPU {idx} is listed twice")
            continue
        if idx is not None and model is not None:
            seen.add(idx)
            fleet.append(PlanGpu(idx, model, driver))
    return fleet


def _fleet_models(chk: _Check, fleet: list[PlanGpu], catalog: Catalog | None, notes: list[str]) -> dict[int, GpuModel]:
    """Each fleet GPU's model from the catalogue, to check placements against; a model the catalogue
    does not know (a plan made from a live NVML table) is a note, not an error."""
    if not fleet:
        return {}
    cat = catalog if catalog is not None else default_catalog()
    out: dict[int, GpuModel] = {}
    resolved: dict[tuple[str, str | None], GpuModel | None] = {}
    for k, g in enumerate(fleet):
        if (g.model, g.driver) not in resolved:
            key = cat.find_key(g.model)
            model = None
            if key is None:
                notes.append(f"GPU model {g.model} is not in the catalogue: its placements are checked on the host only")
            else:
                try:
                    model = cat.model(key, g.driver)
                except (MigbenchError, ValueError) as exc:
                    chk.add(f"fleet[{k}].driver", getattr(exc, "message", str(exc)))
            resolved[(g.model, g.driver)] = model
        m = resolved[(g.model, g.driver)]
        if m is not None:
            out[g.gpu] = m
    return out


def _read_launch(chk: _Check, d: dict[str, Any] | None) -> LaunchSettings:
    if not d:
        return LaunchSettings()
    for key, kind, minimum in (("retries", "int", 0), ("backoff_s", "number", 0), ("stop_grace_s", "number", 0),
                               ("flapping_window_s", "number", 0), ("flapping_max", "int", 1)):
        chk.at_least(chk.get(d, key, "launch", kind, required=False), minimum, f"launch.{key}")
    env = chk.get(d, "env", "launch", "map", required=False)
    _check_env(chk, env, "launch.env")
    log_dir = chk.get(d, "log_dir", "launch", "str", required=False)
    if log_dir is not None:
        bad = _bad_path(log_dir)
        if bad:
            chk.add("launch.log_dir", f"{_kind(log_dir)} {bad}", "log_dir is a directory, e.g. runs")
    if len(chk.items):
        return LaunchSettings()
    try:
        return LaunchSettings.from_dict(d)
    except (TypeError, ValueError) as exc:
        chk.add("launch", str(exc))
        return LaunchSettings()


def _bad_path(text: str) -> str | None:
    """Why `text` cannot be a directory path, or None."""
    if not text.strip():
        return "is empty"
    if "\x00" in text:
        return "holds a NUL character"
    if any(len(os.fsencode(part)) > 255 for part in text.split("/")):
        return "has a component longer than 255 bytes"
    return None


def _check_env(chk: _Check, env: dict[str, Any] | None, where: str) -> None:
    for k, v in (env or {}).items():
        if not isinstance(k, str) or not ENV_NAME_RE.fullmatch(k):
            chk.add(f"{where}.{k}", f"{_kind(k)} is not an environment variable name")
        elif not isinstance(v, (str, int, float)) or isinstance(v, bool) or "\x00" in str(v):
            chk.add(f"{where}.{k}", f"expected a string, got {_kind(v)}")


def _read_instances(
    chk: _Check, doc: dict[str, Any], fleet: list[PlanGpu], models: dict[int, GpuModel]
) -> tuple[list[PlanInstance], set[str]]:
    """The instances, and the keys of those refused (so that their runs are not reported again)."""
    gpus = {g.gpu for g in fleet}
    out: list[PlanInstance] = []
    refused: set[str] = set()
    keys: dict[str, int] = {}
    on_gpu: dict[int, list[Placement]] = {}
    for k, i in enumerate(chk.get(doc, "instances", "", "list") or []):
        where = f"instances[{k}]"
        if not isinstance(i, dict):
            chk.add(where, f"expected a mapping, got {_kind(i)}")
            continue
        n = len(chk.items)
        gpu = chk.at_least(chk.get(i, "gpu", where, "int"), 0, f"{where}.gpu")
        profile = chk.get(i, "profile", where, "str")
        start = chk.at_least(chk.get(i, "start", where, "int"), 0, f"{where}.start")
        mib = chk.at_least(chk.get(i, "memory_mib", where, "int"), 0, f"{where}.memory_mib", strict=True)
        compute = chk.get(i, "compute", where, "number", required=False)
        if compute is not None and not 0 < compute <= 1:
            chk.add(f"{where}.compute", f"must be in (0, 1], got {compute}")
        runs = chk.get(i, "runs", where, "list", required=False) or []
        for j, r in enumerate(runs):
            if not isinstance(r, str):
                chk.add(f"{where}.runs[{j}]", f"expected a run id, got {_kind(r)}")
        if len(chk.items) > n or gpu is None or profile is None or start is None or mib is None:
            continue
        pl = Placement(profile, start)
        key = str(InstanceRef(gpu, pl))
        refused.add(key)
        if (written := i.get("placement")) is not None and str(written) != str(pl):
            chk.add(f"{where}.placement", f"says {written} but profile and start say {pl}", "make them agree")
        if gpu not in gpus:
            chk.add(f"{where}.gpu", f"GPU {gpu} is not in the plan's fleet (GPUs {_ranges(sorted(gpus))})")
            continue
        if key in keys:
            chk.add(where, f"instance {key} is listed twice (first at instances[{keys[key]}])")
            continue
        keys[key] = k
        model = models.get(gpu)
        if model is not None:
            before = on_gpu.get(gpu, [])
            new = [m for m in model.check(before + [pl]) if m not in set(model.check(before))]
            for m in new:
                chk.add(where, f"GPU {gpu} ({model.key}): {m}", f"`migbench catalog {model.key} --layouts` lists the legal layouts")
            if new:
                continue
            on_gpu[gpu] = before + [pl]
        refused.discard(key)
        out.append(PlanInstance(gpu, profile, start, mib, float(compute if compute is not None else 1.0), tuple(runs)))
    return out, refused


def _ranges(xs: Sequence[int]) -> str:
    return ", ".join(map(str, xs[:8])) + (", ..." if len(xs) > 8 else "") if xs else "none"


_RUN_FIELDS = (
    ("group", "str", True), ("memory_mib", "int", True), ("gpu", "int", False), ("profile", "str", False),
    ("start", "int", False), ("wave", "int", False), ("argv", "list", True), ("shell", "bool", False),
    ("env", "map", False), ("workdir", "str", False), ("params", "map", False), ("duration_s", "number", False),
    ("compute", "number", False), ("max_runs_per_instance", "int", False), ("profiles", "list", False),
    ("retries", "int", False), ("timeout_s", "number", False), ("est_start_s", "number", False),
    ("est_end_s", "number", False),
)


def _read_runs(chk: _Check, doc: dict[str, Any]) -> tuple[list[PlanRun], set[str]]:
    """The runs, and every id the file names (a run refused for another field still has its id)."""
    out: list[PlanRun] = []
    ids: dict[str, int] = {}
    for k, r in enumerate(chk.get(doc, "runs", "", "list") or []):
        where = f"runs[{k}]"
        if not isinstance(r, dict):
            chk.add(where, f"expected a mapping, got {_kind(r)}")
            continue
        n = len(chk.items)
        rid = chk.get(r, "id", where, "str")
        if rid is not None and (not RUN_ID_RE.fullmatch(rid) or rid in (".", "..")):
            chk.add(f"{where}.id", f"run id {_kind(rid)} cannot name a directory", "run ids are letters, digits, '.', '_' and '-'")
        elif rid is not None and rid in ids:
            chk.add(f"{where}.id", f"duplicate run id {rid} (first at runs[{ids[rid]}])", "each run needs its own id")
        elif rid is not None:
            ids[rid] = k
        if isinstance(r.get("argv"), str):
            chk.add(f"{where}.argv", "argv is a string; it must be a list of arguments (a string would run "
                    "as one program name)", "write it as a list: [python, train.py, --lr, '0.1']")
        v = {key: chk.get(r, key, where, kind, required=req) for key, kind, req in _RUN_FIELDS
             if not (key == "argv" and isinstance(r.get("argv"), str))}
        v.setdefault("argv", None)
        argv = v["argv"] or []
        if v["argv"] is not None and not argv:
            chk.add(f"{where}.argv", "argv is empty: nothing to run")
        for j, a in enumerate(argv):
            if not isinstance(a, (str, int, float)) or isinstance(a, bool) or "\x00" in str(a):
                chk.add(f"{where}.argv[{j}]", f"expected a string argument, got {_kind(a)}")
        chk.at_least(v["memory_mib"], 0, f"{where}.memory_mib")
        chk.at_least(v["wave"], 0, f"{where}.wave")
        chk.at_least(v["max_runs_per_instance"], 1, f"{where}.max_runs_per_instance")
        chk.at_least(v["retries"], 0, f"{where}.retries")
        for key in ("duration_s", "timeout_s"):
            chk.at_least(v[key], 0, f"{where}.{key}", strict=True)
        if v["compute"] is not None and not 0 < v["compute"] <= 1:
            chk.add(f"{where}.compute", f"must be in (0, 1], got {v['compute']}")
        _check_env(chk, v["env"], f"{where}.env")
        if v["workdir"] is not None and (bad := _bad_path(v["workdir"])):
            chk.add(f"{where}.workdir", f"{_kind(v['workdir'])} {bad}")
        for j, pr in enumerate(v["profiles"] or []):
            if not isinstance(pr, str):
                chk.add(f"{where}.profiles[{j}]", f"expected a profile name, got {_kind(pr)}")
        placed = [v[x] is not None for x in ("gpu", "profile", "start")]
        if any(placed) and not all(placed):
            chk.add(where, "a placed run needs gpu, profile and start (an unplaced one, none of them)")
        elif all(placed) and v["wave"] is None:
            chk.add(f"{where}.wave", "a placed run needs its wave (0 = starts at once)")
        if len(chk.items) > n or rid is None:
            continue
        out.append(PlanRun(
            id=rid, group=v["group"], memory_mib=v["memory_mib"], gpu=v["gpu"], profile=v["profile"], start=v["start"],
            wave=v["wave"], argv=tuple(str(a) for a in argv), shell=bool(v["shell"]),
            env={str(a): str(b) for a, b in (v["env"] or {}).items()}, workdir=v["workdir"] or ".",
            params=dict(v["params"] or {}), duration_s=v["duration_s"],
            compute=float(v["compute"] if v["compute"] is not None else 1.0),
            max_runs_per_instance=v["max_runs_per_instance"] or 1,
            profiles=tuple(v["profiles"]) if v["profiles"] is not None else None, retries=v["retries"],
            timeout_s=v["timeout_s"], est_start_s=v["est_start_s"], est_end_s=v["est_end_s"],
        ))
    return out, set(ids)


def _cross_check(chk: _Check, instances: list[PlanInstance], runs: list[PlanRun], ids: set[str], refused: set[str]) -> None:
    """Runs and instances agree: each placed run is on an instance of the plan that lists it, once;
    each listed id is a run of the plan; a run fits its instance's memory. (`ids`: every run id the
    file names; `refused`: instances already reported.)"""
    by_key = {i.key: (k, i) for k, i in enumerate(instances)}
    listed: dict[str, str] = {}
    for k, i in enumerate(instances):
        for j, rid in enumerate(i.runs):
            if rid not in ids:
                chk.add(f"instances[{k}].runs[{j}]", f"run {rid} is not one of the plan's runs", "remove it from this list")
            elif rid in listed:
                chk.add(f"instances[{k}].runs[{j}]", f"run {rid} is listed on {listed[rid]} too")
            else:
                listed[rid] = i.key
    for k, r in enumerate(runs):
        key = r.instance_key
        if key is None or key in refused:
            continue
        if key not in by_key:
            chk.add(f"runs[{k}]", f"run {r.id} is on {key}, which is not one of the plan's instances")
            continue
        if listed.get(r.id) != key:
            chk.add(f"runs[{k}]", f"run {r.id} is on {key}, but that instance's runs do not list it"
                    + (f" ({listed[r.id]} does)" if r.id in listed else ""))
        inst = by_key[key][1]
        if r.memory_mib > inst.memory_mib:
            chk.add(f"runs[{k}].memory_mib", f"run {r.id} needs {r.memory_mib} MiB; its instance {key} has {inst.memory_mib} MiB")


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
