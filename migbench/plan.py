"""The plan: value types, the plan file (YAML, byte-deterministic) and its JSON form.

A plan names, per GPU, the instances to create (`profile@start`) and, per run, the instance it runs
on and its wave (0 = starts at once, 1 = next on that instance, ...). It carries everything `apply`
and `launch` need (argv, env, workdir, retries), so they work from the plan file alone.

The file holds no timings or timestamps: the same sweep and fleet give byte-identical files.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypedDict, cast

import yaml

from migbench import yamlio
from migbench.catalog import Catalog, GpuModel
from migbench.duration import Demand, DurationModel, Slot
from migbench.duration.replay import Result, replay
from migbench.errors import InputError
from migbench.fsutil import open_regular, read_input_text, read_regular, write_text_atomic
from migbench.plancheck import (
    MAX_PLAN_BYTES,
    REGENERATE,
    RUN_KEYS,
    bad_path,
    check_document,
    lines_of,
    located,
    num,
    parse_start,
    safe_name,
    shape_error,
    yaml_error,
)
from migbench.sweep.model import LaunchSettings, RunCore
from migbench.types import InstanceRef, Placement

PLAN_VERSION = 1
PLAN_KIND = "migbench-plan"


SECRET_MODE = 0o600
"""The mode of a file migbench writes that carries the sweep's `env:` values (a plan, its export)."""


class ProfileSummary(TypedDict, total=False):
    id: int
    memory_mib: int | None
    source: str  # where the memory size came from


class ModelSummary(TypedDict, total=False):
    """What a plan records of a GPU model's profile table (`models:`, `model_summary`): where it came
    from (builtin, user, nvml), for which driver, the profiles the plan uses and what the catalogue
    marks unverified. A plan file's is read as written (every key checked when present)."""

    origin: str
    driver: str | None
    profiles: dict[str, ProfileSummary]
    unverified: list[str]


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
class Assignment:
    """Where and when a planned run runs: its instance (`gpu`, `profile@start`), its wave (0 =
    starts at once, 1 = next on that instance, ...) and its estimated start and end (seconds from
    the plan's start; None without durations)."""

    gpu: int
    profile: str
    start: int
    wave: int
    est_start_s: float | None = None
    est_end_s: float | None = None

    @property
    def ref(self) -> InstanceRef:
        return InstanceRef.of(self.gpu, self.profile, self.start)

    @classmethod
    def on(cls, ref: InstanceRef, wave: int, est_start_s: float | None = None, est_end_s: float | None = None) -> Assignment:
        return cls(ref.gpu, ref.placement.profile, ref.placement.start, wave, est_start_s, est_end_s)


@dataclass(frozen=True)
class Finished:
    """How an earlier launch of the sweep ended a run of a grown plan: its final state (one of
    `plancheck.DONE_STATES`; never started again) and the instance it ran on (an instance key; that
    instance may since have been re-cut)."""

    state: str
    ran_on: str | None = None


@dataclass(frozen=True, kw_only=True)
class PlanRun(RunCore):
    """A planned run: a run (`RunCore`, what the sweep declares) plus where and when it runs (`at`,
    None: unplaced) and, in a grown plan, how an earlier launch ended it (`finished`)."""

    at: Assignment | None = None
    finished: Finished | None = None

    @classmethod
    def of(cls, run: RunCore, at: Assignment | None = None, finished: Finished | None = None) -> PlanRun:
        """`run` planned: at `at`, finished as `finished`."""
        return cls(**{f.name: getattr(run, f.name) for f in fields(RunCore)}, at=at, finished=finished)

    @property
    def ref(self) -> InstanceRef | None:
        """The instance it runs on (None: unplaced)."""
        return None if self.at is None else self.at.ref

    @property
    def instance_key(self) -> str | None:
        return None if self.at is None else str(self.at.ref)

    @property
    def gpu(self) -> int | None:
        return None if self.at is None else self.at.gpu

    @property
    def wave(self) -> int | None:
        return None if self.at is None else self.at.wave

    @property
    def est_start_s(self) -> float | None:
        return None if self.at is None else self.at.est_start_s

    @property
    def est_end_s(self) -> float | None:
        return None if self.at is None else self.at.est_end_s

    @property
    def done(self) -> str | None:
        return None if self.finished is None else self.finished.state

    @property
    def ran_on(self) -> str | None:
        return None if self.finished is None else self.finished.ran_on


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
    models: dict[str, ModelSummary]
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
        runs = [replace(r, at=replace(r.at, gpu=local[r.at.gpu])) for r in self.runs if r.at is not None and r.at.gpu in local]
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
            "objective": num(self.solver.objective),
            "bound": num(self.solver.bound),
            "gap": round(self.solver.gap, 6),
            "runs_at_once": self.solver.runs_at_once,
            "makespan_s": num(self.solver.makespan_s),
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
                    "compute": i.compute,
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

    def has_env_values(self) -> bool:
        """Whether the plan carries `env:` values (the sweep's `launch.env` or a group's `env`),
        which may be tokens: such a plan file is written 0600 (`SECRET_MODE`), and an export puts
        it in a Kubernetes Secret."""
        return bool(self.launch.env) or any(r.env for r in self.runs)

    def to_json(self, *, timings: bool = True) -> str:
        return json.dumps(self.to_dict(timings=timings), indent=2)

    def save(self, path: str | os.PathLike[str], *, force: bool = False) -> Path:
        """Write the plan file atomically (a temp file renamed over it): 0600 when it carries `env:`
        values (`has_env_values`). /dev/null is written through; a link, a pipe, another device or a
        directory is an error (`fsutil.write_text_atomic`). It never
        replaces its own sweep file, nor (without `force`) a file that is not a migbench plan."""
        p = Path(path)
        check_output(p, self.sweep_file, force=force, name=self.name)
        write_text_atomic(p, self.to_yaml(), "plan file", mode=SECRET_MODE if self.has_env_values() else None)
        if p.is_file():
            self.path = str(p)
        return p

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, catalog: Catalog | None = None, regular: bool = False, owned: bool = False, runs: bool = False) -> Plan:
        """Read a plan file and check it as strictly as a sweep: every problem at once, each with the
        file, line and field (see `_read`). `notes` says what the user should know (the sweep file
        changed since the plan was made, a GPU model the catalogue cannot check). `regular`: a plan
        found by its name (the bench's, one beside its sweep, one a state file names), never read
        from a pipe (`fsutil.open_regular`). `owned`: a plan found by its name whose commands are
        launched (the plan beside a sweep that `run` reuses): one another user could have written is
        refused (`fsutil.ForeignFile`). `runs`: a plan the user named whose commands the caller runs
        (`launch`, `exec`): refused the same way, its hint saying how to run it anyway."""
        p = Path(path)
        text = read_input_text(
            p, "plan file", limit=MAX_PLAN_BYTES, hint="give the file `migbench plan SWEEP -o PLAN` wrote", regular=regular, owned=owned or runs, named=runs
        )
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
# Reading a plan file (checked by migbench.plancheck.check_document first)
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

    refused = shape_error(text, file)
    if refused is not None:
        raise refused
    if not _MAYBE_ANCHOR.search(text):
        try:
            return yamlio.load(text), locate
        except yaml.YAMLError:
            pass  # the located loader below says where
    loader = parse_start(text, file)
    try:
        root = loader.get_single_node()
        return (loader.construct_document(root) if root is not None else None), locate
    except (yaml.YAMLError, RecursionError) as exc:
        raise yaml_error(exc, file, text) from None
    finally:
        loader.dispose()


def parse_document(text: str, file: str) -> Any:
    """A plan file's YAML document as `Plan.load` parses it, before any check."""
    return _parse(text, file)[0]


def _read(doc: Any, *, file: str, catalog: Catalog | None, locate: Callable[[], dict[str, int]] | None = None) -> Plan:
    """A `Plan` from a document `check_document` finds clean; its problems, located, otherwise."""
    if not isinstance(doc, dict):
        raise InputError(f"{file}: a plan file is a YAML mapping", hint=REGENERATE)
    if doc.get("kind") != PLAN_KIND or doc.get("version") != PLAN_VERSION:
        raise InputError(
            f"{file}: not a migbench plan (kind {doc.get('kind')!r}, version {doc.get('version')!r})",
            hint=f"expected kind: {PLAN_KIND}, version: {PLAN_VERSION}; {REGENERATE}",
        )
    checked = check_document(doc, catalog=catalog)
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
            str(s.get("status", "UNKNOWN")),
            str(s.get("objective_name", "")),
            float(s.get("objective") or 0),
            float(s.get("bound") or 0),
            float(s.get("gap") or 0),
            s.get("seconds"),
            int(s.get("runs_at_once") or 0),
            s.get("makespan_s"),
        ),
        duration_model=DurationModel.from_dict(doc.get("duration_model")),
        launch=LaunchSettings.from_dict(doc.get("launch")),
        models={str(k): cast(ModelSummary, v) for k, v in (doc.get("models") or {}).items()},
        warnings=[str(w) for w in doc.get("warnings") or []],
        notes=checked.notes,
    )


_PARTS: dict[str, type[Any]] = {"run": RunCore, "at": Assignment, "done": Finished}
"""The class of each part of a planned run (`plancheck.SCOPES`): `RUN_KEYS` names their fields."""


def _part(r: PlanRun, scope: str) -> Any:
    return r if scope == "run" else r.at if scope == "at" else r.finished


def _run_from(r: dict[str, Any]) -> PlanRun:
    """A run of a checked document (every field's type and range already checked), read by `RUN_KEYS`."""
    parts: dict[str, dict[str, Any]] = {scope: {} for scope in _PARTS}
    for k in RUN_KEYS:
        parts[k.scope][k.name] = k.read(r.get(k.key))
    at, done = parts["at"], parts["done"]
    return PlanRun.of(
        _PARTS["run"](**parts["run"]),
        _PARTS["at"](**at) if at["gpu"] is not None else None,
        _PARTS["done"](**done) if done["state"] is not None else None,
    )


def _sweep_changed(plan: Plan, plan_path: Path) -> list[str]:
    """A note when the sweep file the plan was made from is found (next to the plan, or from here)
    and its contents changed since (its sha256 differs)."""
    if not plan.sweep_file or not plan.sweep_sha256:
        return []
    for cand in (plan_path.parent / plan.sweep_file, Path(plan.sweep_file)):
        try:
            data = read_regular(cand)
        except OSError:
            continue
        if hashlib.sha256(data).hexdigest() != plan.sweep_sha256:
            return [f"the sweep file {cand} changed since this plan was made; re-plan with `migbench plan {cand} -o {plan_path}`"]
        return []
    return []


def check_output(path: str | os.PathLike[str], sweep_file: str | os.PathLike[str] | None, *, force: bool = False, name: str = "<sweep name>") -> None:
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


IDENTITY_HEAD_BYTES = 1 << 20
"""`read_identity` reads at most this much of a plan file: the head `plan` writes (the sweep, the
launch settings, the fleet, the solver's summary) is a few KiB."""


def read_identity(path: str | os.PathLike[str]) -> tuple[str, LaunchSettings]:
    """A plan file's sweep name and launch settings, read from the head of the file only: `status`,
    `logs` and `stop` need no more, and a 30,000-run plan is seconds of YAML to parse whole. Falls
    back to `Plan.load` (and its errors) when the head is not as `plan` writes it. The plan locates
    the launch state beside it, so it is a regular file: a named pipe is refused, not waited on."""
    p = Path(path)
    try:
        with os.fdopen(open_regular(p), "rb") as f:
            first = f.read(IDENTITY_HEAD_BYTES)
        head = []
        for line in first[: first.rfind(b"\n") + 1].decode("utf-8").splitlines(keepends=True):
            if line.startswith(("instances:", "runs:")):
                break
            head.append(line)
        else:  # no end of the head within the bytes read: not as `plan` writes it
            raise ValueError("no plan head")
        doc = yamlio.load("".join(head))
        # the launch settings in the head too: a plan whose `launch:` follows its runs (keys reordered by
        # hand or by a YAML tool) is read whole, not taken as having the default settings (its log_dir)
        if isinstance(doc, dict) and doc.get("kind") == PLAN_KIND and isinstance(doc.get("sweep"), dict) and isinstance(doc.get("launch"), dict):
            name, launch = doc["sweep"]["name"], LaunchSettings.from_dict(doc.get("launch"))
            # they become paths: trusted only as the full check would (else Plan.load says what is wrong)
            if safe_name(name) and not bad_path(launch.log_dir):
                return name, launch
    except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError, yaml.YAMLError, RecursionError):
        pass
    plan = Plan.load(p, regular=True)
    return plan.name, plan.launch


# ---------------------------------------------------------------------------------------------
# plan --check: is a committed plan what the sweep gives now?
# ---------------------------------------------------------------------------------------------

SWEEP_DIR = "<sweep dir>"
"""Stands for the sweep's directory when two plans are compared: a plan holds absolute paths (the
sweep file, each run's workdir), which differ between a checkout on the bench and one in CI."""


@dataclass
class PlanCheck:
    """`migbench plan SWEEP --check PLAN`: `stale` with a summary of what changed and a unified
    diff of the two plan files (paths under the sweep's directory written as <sweep dir>)."""

    stale: bool
    summary: list[str]
    diff: list[str]
    notes: list[str] = field(default_factory=list)  # provenance differences, which do not make a plan stale


def _relocate(value: Any, base: str | None) -> Any:
    if base is None:
        return value
    if isinstance(value, str):
        if value == base:
            return SWEEP_DIR
        if value.startswith(base + os.sep):
            return SWEEP_DIR + value[len(base) :]
        return value
    if isinstance(value, list):
        return [_relocate(v, base) for v in value]
    if isinstance(value, dict):
        return {k: _relocate(v, base) for k, v in value.items()}
    return value


def _portable(doc: dict[str, Any], base: str | None) -> dict[str, Any]:
    """`doc` with paths under `base` (the sweep's directory) written as <sweep dir>, and the sweep
    file by its name only (its path is relative to wherever `plan` ran; its sha256 says what it held)."""
    out = _relocate(doc, base)
    sweep = out.get("sweep")
    if isinstance(sweep, dict) and isinstance(sweep.get("file"), str):
        out["sweep"] = dict(sweep, file=os.path.basename(sweep["file"]))
    return out


def _old_sweep_dir(old: dict[str, Any], new: dict[str, Any], new_dir: str) -> str | None:
    """Where the committed plan's sweep was when it was made: the directory that, put in place of
    `new_dir`, turns the new plan's workdirs into the committed plan's (most runs agreeing)."""
    votes: dict[str, int] = {}
    new_wd = {str(r.get("id")): r.get("workdir") for r in new.get("runs") or [] if isinstance(r, dict)}
    for r in old.get("runs") or []:
        if not isinstance(r, dict):
            continue
        w_old, w_new = r.get("workdir"), new_wd.get(str(r.get("id")))
        if not isinstance(w_old, str) or not isinstance(w_new, str):
            continue
        if w_new == new_dir:
            votes[w_old] = votes.get(w_old, 0) + 1
        elif w_new.startswith(new_dir + os.sep) and w_old.endswith(w_new[len(new_dir) :]):
            cand = w_old[: len(w_old) - len(w_new) + len(new_dir)]
            votes[cand] = votes.get(cand, 0) + 1
    if votes:
        return max(sorted(votes), key=lambda d: votes[d])
    f = (old.get("sweep") or {}).get("file")
    return os.path.dirname(f) if isinstance(f, str) and os.path.isabs(f) else None


PROVENANCE = ("models", "warnings", "solver")
"""Plan keys that record where a plan's inputs came from and how the search went, not what the plan
decides: `--check` shows their differences as notes (with `sweep.file`/`sha256` and each GPU's
`driver`)."""


def decisions(doc: dict[str, Any]) -> dict[str, Any]:
    """What a plan document decides: its layouts (instances, with their memory), assignments, runs
    (commands, environment, memory), fleet, launch settings and duration model; not its provenance."""
    out = {k: v for k, v in doc.items() if k not in PROVENANCE}
    if isinstance(out.get("sweep"), dict):
        out["sweep"] = {"name": out["sweep"].get("name")}
    if isinstance(out.get("fleet"), list):
        out["fleet"] = [{k: v for k, v in g.items() if k != "driver"} if isinstance(g, dict) else g for g in out["fleet"]]
    return out


def _provenance_notes(old: Plan, new: Plan, pa: dict[str, Any], pb: dict[str, Any], stale: bool) -> list[str]:
    notes = []
    if old.sweep_sha256 != new.sweep_sha256 and not stale:
        notes.append(f"the sweep file changed (sha256 {old.sweep_sha256[:12]}... -> {new.sweep_sha256[:12]}...) but gives the same plan")
    for key in sorted(set(old.models) | set(new.models)):
        a, b = old.models.get(key) or {}, new.models.get(key) or {}
        if a != b:
            notes.append(
                f"{key}: the profile table came from {a.get('origin') or '?'} (driver {a.get('driver') or 'any'}) in the "
                f"committed plan and from {b.get('origin') or '?'} (driver {b.get('driver') or 'any'}) now"
            )
    if [g.get("driver") for g in pa.get("fleet") or [] if isinstance(g, dict)] != [g.get("driver") for g in pb.get("fleet") or [] if isinstance(g, dict)]:
        notes.append("the GPUs' recorded driver differs (the committed plan was made without the bench's driver, or with another)")
    if pa.get("warnings") != pb.get("warnings"):
        notes.append("the plan's warnings differ (they follow the profile table's provenance)")
    if pa.get("solver") != pb.get("solver"):
        notes.append("the solver's figures differ")
    return notes


def check_plan(committed: str | os.PathLike[str], fresh: Plan, sweep_dir: str | os.PathLike[str], *, max_diff_lines: int = 200) -> PlanCheck:
    """Compare what the committed plan file decides with what the sweep in `sweep_dir` gives now
    (`fresh`, not saved): layouts, assignments, commands, memory (`decisions`). Plans are
    deterministic, so any difference there is a change of the sweep, the fleet, the profile
    tables or the planner; where the checkout lives is not one, and provenance (where the profile
    table came from, the recorded driver, warnings) is a note, not staleness."""
    old_plan = Plan.load(committed)
    old_doc, new_doc = yaml.safe_load(Path(committed).read_text()), fresh.to_dict()
    new_dir = str(Path(sweep_dir).resolve())
    pa = _portable(old_doc, _old_sweep_dir(old_doc, new_doc, new_dir))
    pb = _portable(new_doc, new_dir)
    a = yaml.safe_dump(decisions(pa), sort_keys=False, width=100, allow_unicode=True)
    b = yaml.safe_dump(decisions(pb), sort_keys=False, width=100, allow_unicode=True)
    notes = _provenance_notes(old_plan, fresh, pa, pb, stale=a != b)
    if a == b:
        return PlanCheck(False, [], [], notes)
    summary: list[str] = []
    if old_plan.sweep_sha256 != fresh.sweep_sha256:
        summary.append(f"the sweep file changed (sha256 {old_plan.sweep_sha256[:12]}... -> {fresh.sweep_sha256[:12]}...)")
    old_fleet = [(g.gpu, g.model) for g in old_plan.fleet]
    new_fleet = [(g.gpu, g.model) for g in fresh.fleet]
    if old_fleet != new_fleet:
        summary.append(f"the fleet changed: {_fleet_text(old_plan)} -> {_fleet_text(fresh)}")
    if _tables_differ(old_plan.models, fresh.models):
        summary.append("the GPU profile tables changed (driver, catalogue or the host's NVML): the instances' memory below")
    old_runs = {r.id: r for r in old_plan.runs}
    new_runs = {r.id: r for r in fresh.runs}
    added = sorted(set(new_runs) - set(old_runs))
    removed = sorted(set(old_runs) - set(new_runs))
    if added:
        summary.append(f"{len(added)} run(s) added: {_some(added)}")
    if removed:
        summary.append(f"{len(removed)} run(s) removed: {_some(removed)}")
    for g in sorted({x.gpu for x in old_plan.fleet} | {x.gpu for x in fresh.fleet}):
        before, after = old_plan.layout(g), fresh.layout(g)
        if before != after:
            summary.append(f"GPU {g} layout: {' '.join(map(str, before)) or '(none)'} -> {' '.join(map(str, after)) or '(none)'}")
    moved = [
        f"{rid} {_where(old_runs[rid])} -> {_where(new_runs[rid])}"
        for rid in sorted(set(old_runs) & set(new_runs))
        if _where(old_runs[rid]) != _where(new_runs[rid])
    ]
    if moved:
        summary.append(f"{len(moved)} run(s) moved: {_some(moved, 3)}")
    placement = ("gpu", "profile", "start", "wave", "est_start_s", "est_end_s")

    def what(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {str(r.get("id")): {k: v for k, v in r.items() if k not in placement} for r in doc.get("runs") or []}

    wa, wb = what(pa), what(pb)
    changed = [rid for rid in sorted(set(wa) & set(wb)) if wa[rid] != wb[rid]]
    if changed:
        summary.append(f"{len(changed)} run(s) changed in place (command, environment, memory or estimates): {_some(changed)}")
    if not summary:
        summary.append("the plans differ in their details (launch settings, duration model): see the diff")
    diff = list(difflib.unified_diff(a.splitlines(), b.splitlines(), f"{committed} (committed)", "the sweep now", lineterm=""))
    if len(diff) > max_diff_lines:
        diff = diff[:max_diff_lines] + [f"... {len(diff) - max_diff_lines} more diff line(s)"]
    return PlanCheck(True, summary, diff, notes)


def _tables_differ(a: dict[str, ModelSummary], b: dict[str, ModelSummary]) -> bool:
    """Whether a model's table changed; a plan records only the profiles it uses, so a profile
    that is used by one plan and not the other is not a change of the table."""
    for key in set(a) & set(b):
        x, y = a[key], b[key]
        if {k: v for k, v in x.items() if k != "profiles"} != {k: v for k, v in y.items() if k != "profiles"}:
            return True
        px, py = x.get("profiles") or {}, y.get("profiles") or {}
        if any(px[n] != py[n] for n in set(px) & set(py)):
            return True
    return False


def _fleet_text(plan: Plan) -> str:
    counts: dict[str, int] = {}
    for g in plan.fleet:
        counts[g.model] = counts.get(g.model, 0) + 1
    return ", ".join(f"{m}:{n}" for m, n in counts.items()) or "(none)"


def _where(r: PlanRun) -> str:
    return "unplaced" if r.instance_key is None else f"{r.instance_key} wave {r.wave}"


def _some(items: Sequence[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f", ... ({len(items) - n} more)" if len(items) > n else "")


def replay_plan(plan: Plan, *, lend: bool = True) -> Result:
    """The plan played under its duration model with the launcher's queue policy: each instance
    starts its queue in wave order, and (with `lend`) an idle instance takes a run that is late on
    its own queue where the run's profiles allow. The one replay behind the plan's makespan,
    `migbench simulate` and the report, so the three say the same number. Every placed run needs a
    duration (else it counts one time unit)."""
    slots = [Slot(i.key, i.memory_mib, i.compute or 1.0, str(i.gpu)) for i in plan.instances]
    profile = {i.key: i.profile for i in plan.instances}

    def lend_ok(d: Demand, slot: Slot) -> bool:
        return d.profiles is None or profile[slot.key] in d.profiles

    placed = plan.placed_runs()
    planned = {r.id: float(r.est_start_s) for r in placed if r.est_start_s is not None}
    return replay(
        [r.demand() for r in placed],
        slots,
        {i.key: list(i.runs) for i in plan.instances},
        interference=plan.duration_model.interference,
        lend=lend_ok if lend else None,
        planned_start=planned or None,
    )


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _run_dict(r: PlanRun) -> dict[str, Any]:
    """A run as its plan file holds it, written by `RUN_KEYS`: a part the run does not have is
    null (`at`: unplaced) or absent (`done`: only a grown plan has it, so other plan files keep their bytes)."""
    d: dict[str, Any] = {}
    for k in RUN_KEYS:
        part = _part(r, k.scope)
        if part is None and k.scope == "done":
            continue
        d[k.key] = None if part is None else k.write(getattr(part, k.name))
    return d


def model_summary(model: GpuModel, used: Sequence[str]) -> ModelSummary:
    """What the plan records about a model's profile table: where memory sizes came from."""
    return {
        "origin": model.origin,
        "driver": None if model.driver is None else ".".join(map(str, model.driver)),
        "profiles": {p.name: {"id": p.id, "memory_mib": p.memory_mib, "source": p.memory_source} for p in model.profiles if p.name in used},
        "unverified": list(model.unverified),
    }
