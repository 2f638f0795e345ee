"""A plan file read as strictly as a sweep: `check_document` checks every field of the document (types,
ranges, run ids and the sweep name and `log_dir` that become paths) and the whole against itself and
the catalogue (legal placements without overlap on GPUs of the fleet, runs on instances of the plan
that list them, unique run ids, runs that fit their instance). Problems carry their field path;
`locate` finds their lines with the sweep loader's located YAML, built only when there is one.

`migbench.plan` builds the `Plan` once the document is clean: this module knows the file, not the
value types.
"""

from __future__ import annotations

import math
import os
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from migbench.catalog import Catalog, GpuModel, default_catalog
from migbench.duration import DurationModel
from migbench.errors import InputError, MigbenchError, Problem
from migbench.names import SAFE_NAME_RE
from migbench.sweep.model import LaunchSettings
from migbench.sweep.schema import ENV_NAME_RE, MAX_FLEET_GPUS, MAX_NAME_LEN, NODE_NAME_RE, SWEEP_NAME_RE
from migbench.sweep.yamlnodes import Abort, Converter, LimitedSafeLoader, MapNode, Node, Problems, SeqNode, reader_error_char, reader_error_line
from migbench.types import InstanceRef, Placement
from migbench.yamlio import error_problem, shape_problem

MAX_PLAN_BYTES = 256 * 2**20
"""A plan file larger than this is refused before it is parsed (`plan` writes about 0.5 KiB a run: the
toy sweep's plan holds 486 bytes a run, so 100,000 runs are about 50 MiB)."""
RUN_ID_RE = SAFE_NAME_RE
"""Run ids name directories (`<state dir>/<run id>/`): plain file names only."""
REGENERATE = "regenerate it with `migbench plan SWEEP -o PLAN`"
DONE_STATES = ("succeeded", "failed", "oom")
"""The final states a run of a grown plan may be marked `done:` with (an earlier launch finished it)."""


def parse_start(text: str, file: str) -> LimitedSafeLoader:
    """The located loader over `text`; a control character YAML refuses is a problem at its line."""
    try:
        return LimitedSafeLoader(text)
    except yaml.reader.ReaderError as exc:
        prob = Problem(f"a control character ({reader_error_char(exc)}) YAML does not allow", file, reader_error_line(exc, text))
        raise InputError(f"{file}: not a valid plan file", hint=REGENERATE, problems=[prob]) from None


MAX_PLAN_NODES = 16_000_000
"""A plan file holds at most this many YAML values (160 a run at `MAX_RUNS`; the toy sweep's plan
holds 70): more is refused by `yamlio.shape_problem` before anything is built (a 26-million-item list
once took 8 GiB)."""


MAX_PLAN_ITEMS = 1_000_000
"""The most items one list or mapping of a plan file may hold (its longest, `runs`, holds at most
100,000): a longer one is refused as soon as it is counted (values are counted one by one only in
a file that may hold more than `MAX_PLAN_NODES`: a 74 MiB plan with a 26M-item list is refused in
about 7 s, in 300 MiB)."""


def shape_error(text: str, file: str) -> InputError | None:
    """The plan file refused for its size in values or its depth (None: fine)."""
    shape = shape_problem(text, max_nodes=MAX_PLAN_NODES, max_items=MAX_PLAN_ITEMS)
    if shape is None:
        return None
    prob = Problem(shape.message, file, shape.line, shape.field)
    return InputError(f"{file}: refused as a plan file", hint=REGENERATE, problems=[prob])


def yaml_error(exc: yaml.YAMLError | RecursionError, file: str, text: str = "") -> InputError:
    what, line, field = error_problem(exc, text)
    prob = Problem(what, file, line, field)
    return InputError(f"{file}: not valid YAML", hint=REGENERATE, problems=[prob])


def lines_of(loader: LimitedSafeLoader, root: yaml.Node | None, file: str) -> dict[str, int]:
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
            want = {"int": "a whole number", "number": "a number", "str": "a string", "bool": "true or false", "list": "a list", "map": "a mapping"}[kind]
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


@dataclass(frozen=True)
class Checked:
    """What `check_document` found: problems as (field path, message, hint), notes for the user."""

    problems: list[tuple[str, str, str | None]]
    notes: list[str]


def check_document(doc: dict[str, Any], *, catalog: Catalog | None = None) -> Checked:
    """Every field of a plan document (a mapping of kind migbench-plan) and the whole, see the module."""
    chk = _Check()
    notes: list[str] = []
    sweep = chk.get(doc, "sweep", "", "map") or {}
    name = chk.get(sweep, "name", "sweep", "str") if sweep else None
    if name is not None and not safe_name(name):
        chk.add("sweep.name", f"{_kind(name)} cannot name the state directory", f"sweep names are letters, digits, '.', '_' and '-' (at most {MAX_NAME_LEN})")
    if sweep:
        chk.get(sweep, "file", "sweep", "str", required=False)
        chk.get(sweep, "sha256", "sweep", "str", required=False)
    fleet = _read_fleet(chk, doc)
    models = _fleet_models(chk, fleet, catalog, notes)
    try:
        DurationModel.from_dict(chk.get(doc, "duration_model", "", "map", required=False))
    except (TypeError, ValueError) as exc:
        chk.add("duration_model", f"malformed duration model ({exc})")
    _read_launch(chk, chk.get(doc, "launch", "", "map", required=False))
    instances, refused = _read_instances(chk, doc, fleet, models)
    runs, ids = _read_runs(chk, doc)
    _cross_check(chk, instances, runs, ids, refused)
    for k, u in enumerate(chk.get(doc, "unplaced", "", "list", required=False) or []):
        if not isinstance(u, dict):
            chk.add(f"unplaced[{k}]", f"expected a mapping, got {_kind(u)}")
            continue
        chk.get(u, "id", f"unplaced[{k}]", "str")
        chk.get(u, "memory_mib", f"unplaced[{k}]", "int")
        chk.get(u, "reason", f"unplaced[{k}]", "str", required=False)
    s = chk.get(doc, "solver", "", "map", required=False) or {}
    for key in ("objective", "bound", "gap", "seconds", "makespan_s"):
        chk.get(s, key, "solver", "number", required=False)
    chk.get(s, "runs_at_once", "solver", "int", required=False)
    chk.get(doc, "warnings", "", "list", required=False)
    _check_models(chk, chk.get(doc, "models", "", "map", required=False) or {})
    return Checked(chk.items, notes)


def _check_models(chk: _Check, models: dict[str, Any]) -> None:
    """`models:`, what the plan records of each model's profile table (`plan.ModelSummary`): each key
    of the kind `plan` writes, where present."""
    for key, m in models.items():
        where = f"models.{key}"
        if not isinstance(m, dict):
            chk.add(where, f"expected a mapping, got {_kind(m)}")
            continue
        chk.get(m, "origin", where, "str", required=False)
        chk.get(m, "driver", where, "str", required=False)
        for j, u in enumerate(chk.get(m, "unverified", where, "list", required=False) or []):
            if not isinstance(u, str):
                chk.add(f"{where}.unverified[{j}]", f"expected a string, got {_kind(u)}")
        for name, p in (chk.get(m, "profiles", where, "map", required=False) or {}).items():
            at = f"{where}.profiles.{name}"
            if not isinstance(p, dict):
                chk.add(at, f"expected a mapping, got {_kind(p)}")
                continue
            chk.get(p, "id", at, "int", required=False)
            chk.get(p, "memory_mib", at, "int", required=False)
            chk.get(p, "source", at, "str", required=False)


def located(checked: Checked, file: str, locate: Callable[[], dict[str, int]] | None) -> InputError:
    """The problems as an `InputError`, each with the line of its field (or of the nearest enclosing
    one), sorted by line."""
    lines = locate() if locate is not None else {}
    probs = [Problem(msg, file, _line_of(lines, f), f or None, hint) for f, msg, hint in checked.problems]
    probs.sort(key=lambda p: (p.line is None, p.line or 0))
    n = len(probs)
    return InputError(f"{file}: {n} problem{'s' if n != 1 else ''} in the plan", hint=REGENERATE, problems=probs)


def _line_of(lines: dict[str, int], field: str) -> int | None:
    """The line of `field`, or of the nearest enclosing field the file has."""
    while True:
        if field in lines:
            return lines[field]
        cut = max(field.rfind("."), field.rfind("["))
        if cut <= 0:
            return lines.get(field)
        field = field[:cut]


@dataclass(frozen=True)
class _Gpu:
    gpu: int
    model: str
    driver: str | None


@dataclass(frozen=True)
class _Inst:
    key: InstanceRef
    memory_mib: int
    runs: tuple[str, ...]


@dataclass(frozen=True)
class _Run:
    id: str
    memory_mib: int
    instance_key: InstanceRef | None


def _read_fleet(chk: _Check, doc: dict[str, Any]) -> list[_Gpu]:
    fleet: list[_Gpu] = []
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
        model = _one_line(chk, chk.get(g, "model", where, "str"), f"{where}.model")
        driver = _one_line(chk, chk.get(g, "driver", where, "str", required=False), f"{where}.driver")
        node = chk.get(g, "node", where, "str", required=False)
        if node is not None and not NODE_NAME_RE.fullmatch(node):
            chk.add(
                f"{where}.node",
                f"{_kind(node)} is not a node name Slurm and Kubernetes accept",
                "use letters, digits, '.', '_' and '-' (at most 63), starting and ending with a letter or digit",
            )
        if idx is not None and idx in seen:
            chk.add(f"{where}.gpu", f"GPU {idx} is listed twice")
            continue
        if idx is not None and model is not None:
            seen.add(idx)
            fleet.append(_Gpu(idx, model, driver))
    return fleet


def _one_line(chk: _Check, text: str | None, field: str) -> str | None:
    """`text` when it holds no control character or line break (a model, driver or profile name is
    written into the exported scripts' comments, where a line break would start a command); with a
    problem otherwise."""
    if text is not None and any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in text):
        chk.add(field, f"{_kind(text)} holds a control character or a line break", "a name is one line of printable text")
    return text


def _fleet_models(chk: _Check, fleet: list[_Gpu], catalog: Catalog | None, notes: list[str]) -> dict[int, GpuModel]:
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


def _read_launch(chk: _Check, d: dict[str, Any] | None) -> None:
    if not d:
        return
    for key, kind, minimum in (
        ("retries", "int", 0),
        ("backoff_s", "number", 0),
        ("stop_grace_s", "number", 0),
        ("flapping_window_s", "number", 0),
        ("flapping_max", "int", 1),
    ):
        chk.at_least(chk.get(d, key, "launch", kind, required=False), minimum, f"launch.{key}")
    env = chk.get(d, "env", "launch", "map", required=False)
    _check_env(chk, env, "launch.env")
    log_dir = chk.get(d, "log_dir", "launch", "str", required=False)
    if log_dir is not None:
        bad = bad_path(log_dir)
        if bad:
            chk.add("launch.log_dir", f"{_kind(log_dir)} {bad}", "log_dir is a directory, e.g. runs")
    try:
        LaunchSettings.from_dict(d)
    except (TypeError, ValueError) as exc:  # env_passthrough, state_mode, a log_dir that climbs out
        if not any(f.startswith("launch") for f, _, _ in chk.items):
            chk.add("launch", str(exc))


def safe_name(name: object) -> bool:
    """Whether a sweep name may name a state directory (as the sweep loader allows it)."""
    return isinstance(name, str) and bool(SWEEP_NAME_RE.fullmatch(name)) and len(name) <= MAX_NAME_LEN


def bad_path(text: str) -> str | None:
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


def _read_instances(chk: _Check, doc: dict[str, Any], fleet: list[_Gpu], models: dict[int, GpuModel]) -> tuple[list[_Inst], set[InstanceRef]]:
    """The instances, and the keys of those refused (so that their runs are not reported again)."""
    gpus = {g.gpu for g in fleet}
    out: list[_Inst] = []
    refused: set[InstanceRef] = set()
    keys: dict[InstanceRef, int] = {}
    on_gpu: dict[int, list[Placement]] = {}
    for k, i in enumerate(chk.get(doc, "instances", "", "list") or []):
        where = f"instances[{k}]"
        if not isinstance(i, dict):
            chk.add(where, f"expected a mapping, got {_kind(i)}")
            continue
        n = len(chk.items)
        gpu = chk.at_least(chk.get(i, "gpu", where, "int"), 0, f"{where}.gpu")
        profile = _one_line(chk, chk.get(i, "profile", where, "str"), f"{where}.profile")
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
        key = InstanceRef(gpu, pl)
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
        out.append(_Inst(key, mib, tuple(runs)))
    return out, refused


def _ranges(xs: Sequence[int]) -> str:
    return ", ".join(map(str, xs[:8])) + (", ..." if len(xs) > 8 else "") if xs else "none"


@dataclass(frozen=True)
class PlanKey:
    """One key of a run in a plan file, declared once: `plan` writes it, `Plan.load` reads it and
    `check_document` checks it from this declaration alone (`RUN_KEYS`).

    `kind` is how the file holds it (int, number, fraction: a number in (0, 1], str, bool, strs: a
    list of strings, env: a mapping of environment variables, map); `scope` the part of the planned
    run it belongs to (`SCOPES`); `default` what an absent or null value reads as; `minimum` (with
    `strict`: excluded) and `choices` (`choices_are` names them) its range; `unit` MiB, s (written to the millisecond, a whole
    number as an integer) or "" ; `attr` the attribute it reads into when not `key`."""

    key: str
    kind: str
    scope: str
    doc: str
    required: bool = False
    default: Any = None
    minimum: float | None = None
    strict: bool = False
    choices: tuple[str, ...] = ()
    choices_are: str = "one of its choices"
    unit: str = ""
    attr: str | None = None

    @property
    def name(self) -> str:
        """The attribute of its part the key reads into."""
        return self.attr or self.key

    def read(self, v: Any) -> Any:
        """The checked value `v` (None: absent or null) as the planned run holds it."""
        if v is None:
            v = self.default
            if v is None:
                return None
        if self.kind == "strs":
            return tuple(str(a) for a in v)
        if self.kind == "env":
            return {str(k): str(x) for k, x in v.items()}
        if self.kind == "map":
            return dict(v)
        if self.kind == "fraction":
            return float(v)
        if self.kind == "bool":
            return bool(v)
        return v

    def write(self, v: Any) -> Any:
        """The planned run's value as the file holds it."""
        if v is None:
            return None
        if self.kind == "strs":
            return list(v)
        if self.kind == "env":
            return dict(sorted(v.items()))
        if self.unit == "s":
            return num(v)
        return v


SCOPES = {
    "run": "what runs, as the sweep declares it (`sweep.model.RunCore`): written for every run",
    "at": "where and when it runs (`plan.Assignment`): null for an unplaced run",
    "done": "how an earlier launch of the sweep ended it (`plan.Finished`): written only for such a run",
}
"""The parts of a planned run, and how the plan file writes a part the run does not have."""

_GET_KIND = {"fraction": "number", "strs": "list", "env": "map"}
"""The kinds `_Check.get` reads each `PlanKey.kind` as."""

RUN_KEYS: tuple[PlanKey, ...] = (
    PlanKey("id", "str", "run", "the run's id (`<group>-<hash of its parameters>`); names its state directory", required=True),
    PlanKey("group", "str", "run", "the sweep group it belongs to", required=True),
    PlanKey("memory_mib", "int", "run", "the device memory it needs", required=True, minimum=0, unit="MiB"),
    PlanKey("memory_source", "str", "run", "where memory_mib came from: explicit, table:..., estimate, history, profile, fit, ...", default=""),
    PlanKey("gpu", "int", "at", "the plan-wide index of the GPU it runs on", minimum=0),
    PlanKey("profile", "str", "at", "its instance's MIG profile"),
    PlanKey("start", "int", "at", "its instance's placement start slice", minimum=0),
    PlanKey("wave", "int", "at", "its place in its instance's queue (0 = starts at once)", minimum=0),
    PlanKey("argv", "strs", "run", "the command, one argument an item", required=True),
    PlanKey("shell", "bool", "run", "whether argv runs through a shell", default=False),
    PlanKey("env", "env", "run", "environment variables the group adds", default={}),
    PlanKey("workdir", "str", "run", "the directory it runs in", default="."),
    PlanKey("params", "map", "run", "its parameters", default={}),
    PlanKey("duration_s", "number", "run", "its time alone on the instance its compute is sized for", minimum=0, strict=True, unit="s"),
    PlanKey("compute", "fraction", "run", "the share of a whole GPU's compute it can keep busy", default=1.0),
    PlanKey("compute_source", "str", "run", "declared | default (the memory-sized instance's share) | profile", default="declared"),
    PlanKey("max_runs_per_instance", "int", "run", "how many runs may share its instance", default=1, minimum=1),
    PlanKey("profiles", "strs", "run", "the profiles it may run on (absent: any)"),
    PlanKey("retries", "int", "run", "its retries (absent: the launch settings')", minimum=0),
    PlanKey("timeout_s", "number", "run", "the time an attempt may take", minimum=0, strict=True, unit="s"),
    PlanKey("est_start_s", "number", "at", "its estimated start, from the plan's start", unit="s"),
    PlanKey("est_end_s", "number", "at", "its estimated end, from the plan's start", unit="s"),
    PlanKey(
        "done",
        "str",
        "done",
        "the final state an earlier launch left it in; never started again",
        choices=DONE_STATES,
        choices_are="a final state",
        attr="state",
    ),
    PlanKey("ran_on", "str", "done", "the instance (`gpu:profile@start`) that launch ran it on; it may since have been re-cut"),
)
"""Every key of a run in a plan file, in the order `plan` writes them."""


def num(v: float | None) -> float | int | None:
    """A number as a plan file writes it: a whole number as an integer, else to the millisecond."""
    if v is None:
        return None
    if float(v).is_integer():
        return int(v)
    return round(float(v), 3)


def _check_run_keys(chk: _Check, r: dict[str, Any], where: str) -> dict[str, Any]:
    """Each key of `RUN_KEYS` read from the run `r`: its value if of its kind and in its range, else
    None (with a problem)."""
    v: dict[str, Any] = {}
    for k in RUN_KEYS:
        if k.key == "argv" and isinstance(r.get("argv"), str):
            v[k.key] = None  # said below, with a hint
            continue
        x = chk.get(r, k.key, where, _GET_KIND.get(k.kind, k.kind), required=k.required)
        field = f"{where}.{k.key}"
        if x is not None and k.minimum is not None:
            x = chk.at_least(x, k.minimum, field, strict=k.strict)
        if x is not None and k.kind == "fraction" and not 0 < x <= 1:
            chk.add(field, f"must be in (0, 1], got {x}")
            x = None
        if x is not None and k.choices and x not in k.choices:
            chk.add(field, f"{_kind(x)} is not {k.choices_are}", "one of " + ", ".join(k.choices))
            x = None
        v[k.key] = x
    return v


def _check_run_fields(chk: _Check, v: dict[str, Any], where: str) -> None:
    """What one run's keys (`v`, read by `_check_run_keys`) must be beyond their kind and range."""
    argv = v["argv"] or []
    if v["argv"] is not None and not argv:
        chk.add(f"{where}.argv", "argv is empty: nothing to run")
    for j, a in enumerate(argv):
        if not isinstance(a, (str, int, float)) or isinstance(a, bool) or "\x00" in str(a):
            chk.add(f"{where}.argv[{j}]", f"expected a string argument, got {_kind(a)}")
    _check_env(chk, v["env"], f"{where}.env")
    if v["workdir"] is not None and (bad := bad_path(v["workdir"])):
        chk.add(f"{where}.workdir", f"{_kind(v['workdir'])} {bad}")
    for j, pr in enumerate(v["profiles"] or []):
        if not isinstance(pr, str):
            chk.add(f"{where}.profiles[{j}]", f"expected a profile name, got {_kind(pr)}")
    if v["ran_on"] is not None:
        try:
            InstanceRef.parse(v["ran_on"])
        except ValueError as exc:
            chk.add(f"{where}.ran_on", str(exc))
    placed = [v[x] is not None for x in ("gpu", "profile", "start")]
    if any(placed) and not all(placed):
        chk.add(where, "a placed run needs gpu, profile and start (an unplaced one, none of them)")
    elif all(placed) and v["wave"] is None:
        chk.add(f"{where}.wave", "a placed run needs its wave (0 = starts at once)")


def _read_runs(chk: _Check, doc: dict[str, Any]) -> tuple[list[_Run], set[str]]:
    """The runs, and every id the file names (a run refused for another field still has its id)."""
    out: list[_Run] = []
    ids: dict[str, int] = {}
    for k, r in enumerate(chk.get(doc, "runs", "", "list") or []):
        where = f"runs[{k}]"
        if not isinstance(r, dict):
            chk.add(where, f"expected a mapping, got {_kind(r)}")
            continue
        n = len(chk.items)
        v = _check_run_keys(chk, r, where)
        rid = v["id"]
        if rid is not None and (not RUN_ID_RE.fullmatch(rid) or rid in (".", "..")):
            chk.add(f"{where}.id", f"run id {_kind(rid)} cannot name a directory", "run ids are letters, digits, '.', '_' and '-'")
        elif rid is not None and rid in ids:
            chk.add(f"{where}.id", f"duplicate run id {rid} (first at runs[{ids[rid]}])", "each run needs its own id")
        elif rid is not None:
            ids[rid] = k
        if isinstance(r.get("argv"), str):
            chk.add(
                f"{where}.argv",
                "argv is a string; it must be a list of arguments (a string would run as one program name)",
                "write it as a list: [python, train.py, --lr, '0.1']",
            )
        _check_run_fields(chk, v, where)
        if len(chk.items) > n or rid is None:
            continue
        on = None if v["gpu"] is None else InstanceRef.of(v["gpu"], v["profile"], v["start"])
        out.append(_Run(rid, v["memory_mib"], on))
    return out, set(ids)


def _cross_check(chk: _Check, instances: list[_Inst], runs: list[_Run], ids: set[str], refused: set[InstanceRef]) -> None:
    """Runs and instances agree: each placed run is on an instance of the plan that lists it, once;
    each listed id is a run of the plan; a run fits its instance's memory. (`ids`: every run id the
    file names; `refused`: instances already reported.)"""
    by_key = {i.key: i for i in instances}
    listed: dict[str, InstanceRef] = {}
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
            chk.add(f"runs[{k}]", f"run {r.id} is on {key}, but that instance's runs do not list it" + (f" ({listed[r.id]} does)" if r.id in listed else ""))
        inst = by_key[key]
        if r.memory_mib > inst.memory_mib:
            chk.add(f"runs[{k}].memory_mib", f"run {r.id} needs {r.memory_mib} MiB; its instance {key} has {inst.memory_mib} MiB")
