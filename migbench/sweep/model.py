"""A sweep as declared, after validation and expansion: `Sweep`, its `Group`s and their `Run`s.

`Run` is the *declared* shape of a run (see ARCHITECTURE.md: a run has three shapes, declared,
planned and launched). Its id is `<group>-<hash of the parameters>`, so a run keeps its id when
the file is reordered.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Union

from migbench.duration import Demand, DurationModel
from migbench.fsutil import parse_state_mode
from migbench.names import ENV_NAME_RE, ENV_PATTERN_RE, log_dir_problem
from migbench.sweep.schema import Scalar


@dataclass(frozen=True)
class FleetEntry:
    """`count` GPUs of one catalogue model (`gpu` is the catalogue key), optionally on a driver and
    on a named `node` (a machine of a Slurm or Kubernetes cluster; None: the one local host)."""

    gpu: str
    count: int
    driver: str | None = None
    node: str | None = None


@dataclass(frozen=True)
class Parameter:
    """One parameter as written: a finite list of `values` (list, `values:`, `value:`, Hydra string),
    or a `distribution` with its numeric `args` (min, max, q, mu, sigma) for `method: random`."""

    name: str
    values: tuple[Scalar, ...] | None = None
    distribution: str | None = None
    args: dict[str, float] = field(default_factory=dict)
    line: int | None = None


@dataclass(frozen=True)
class ExplicitMemory:
    """`memory: 2.5GiB` — the same footprint for every run of the group (MiB)."""

    mib: int


@dataclass(frozen=True)
class MemoryTable:
    """`memory: {by: param, table: {value: quantity}, default: quantity}`; keys are str forms, MiB."""

    by: str
    table: dict[str, int]
    default_mib: int | None = None


@dataclass(frozen=True)
class MemoryEstimate:
    """`memory: {estimate: {...}}` — the estimator's fields as written; a string holding `{param}`
    placeholders is resolved per run, everything else was validated at load."""

    fields: dict[str, Any]


DeclaredMemory = Union[ExplicitMemory, MemoryTable, MemoryEstimate]


@dataclass(frozen=True)
class MeasuredMemory:
    """`memory: measured` or `{measured: true, fallback: <memory>, by: [param, ...], headroom: 0.1}`:
    the run's measured peak (a launch's history, `migbench profile`'s footprints, or a fit over the
    group's measured runs) plus `headroom`, else `fallback` (a declared memory). `by` names the
    parameters that change the footprint (runs equal in them are measured once); None: all of them.
    Its runs carry the fallback's memory (0 without one) until `migbench.footprints` resolves them."""

    fallback: DeclaredMemory | None = None
    by: tuple[str, ...] | None = None
    headroom: float | None = None


MemorySpec = Union[ExplicitMemory, MemoryTable, MemoryEstimate, MeasuredMemory]


@dataclass(frozen=True)
class Group:
    """One group of runs as parsed (defaults merged in). `command` is the template as written: a
    string (split with shlex unless `shell`) or a tuple of strings. Durations are in seconds."""

    name: str
    command: str | tuple[str, ...]
    memory: MemorySpec
    program: str | None = None
    shell: bool = False
    method: str = "grid"
    count: int | None = None
    repeats: int = 1
    parameters: tuple[Parameter, ...] = ()
    zip: tuple[tuple[str, ...], ...] = ()
    duration_s: float | None = None
    compute: float = 1.0
    max_runs_per_instance: int = 1
    profiles: tuple[str, ...] | None = None
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "."
    retries: int | None = None
    timeout_s: float | None = None
    line: int | None = None


@dataclass(frozen=True, kw_only=True)
class RunCore:
    """What a run is wherever it goes: its command and environment, what it needs (memory,
    duration, compute, sharing, profiles) and its retry and timeout settings. `memory_mib` is the
    whole device footprint (MiB, rounded up); `duration_s`/`timeout_s` in seconds; `compute` is the
    fraction (0, 1] of a whole GPU's compute the run can keep busy (`compute_source` "default" when
    the group gives none: the planner then takes the share of the smallest instance that holds the
    run's memory, see `duration.model`). `argv` may still hold `${run_id}`, `${run_dir}`, `${attempt}`.

    A declared run (`Run`) is one plus where the sweep expanded it from; a planned run
    (`plan.PlanRun`) is one plus where and when it runs. A plan file carries exactly these fields
    (`plancheck.RUN_KEYS`, scope "run")."""

    id: str
    group: str
    params: dict[str, Any]
    argv: tuple[str, ...]
    shell: bool
    env: dict[str, str]
    workdir: str
    memory_mib: int
    memory_source: str
    duration_s: float | None
    compute: float
    max_runs_per_instance: int
    profiles: tuple[str, ...] | None
    retries: int | None
    timeout_s: float | None
    compute_source: str = "declared"  # declared | default (the memory-sized instance's share) | profile

    def demand(self) -> Demand:
        """What the planner and the duration model need of this run."""
        return Demand(self.id, self.memory_mib, self.duration_s, self.compute, self.max_runs_per_instance, self.profiles)

    def core(self) -> RunCore:
        """This run as a `RunCore` only (what a plan carries of it)."""
        return RunCore(**{f.name: getattr(self, f.name) for f in fields(RunCore)})


@dataclass(frozen=True, kw_only=True)
class Run(RunCore):
    """One fully resolved run, as declared: a `RunCore` plus its place in the sweep (its group's
    `index`-th run, `repeat`) and the parts its memory was summed from."""

    index: int
    repeat: int
    memory_parts: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class Sweep:
    """A validated sweep: its groups and every run, sorted by (group order in the file, index).
    `sha256` is of the file's bytes (the state file records it to detect edits)."""

    version: int
    name: str
    path: str | None
    sha256: str
    fleet: tuple[FleetEntry, ...] | None
    groups: tuple[Group, ...]
    runs: tuple[Run, ...]
    duration_model: DurationModel
    launch: LaunchSettings
    seed: int
    description: str | None = None
    notes: tuple[str, ...] = ()
    """What loading found worth saying without refusing the file (`file:line: field: message`): W&B-only
    keys ignored, parameters no command uses."""

    def run(self, run_id: str) -> Run:
        """The run with this id (KeyError if none)."""
        for r in self.runs:
            if r.id == run_id:
                return r
        raise KeyError(run_id)


def render_value(value: Any) -> str:
    """A parameter value's string form in commands, env values and table lookups (Python `str()`)."""
    return str(value)


def run_id(group: str, params: dict[str, Any], repeat: int) -> str:
    """`{group}-{10 hex}`: sha256 of the canonical JSON of {"group", "params", "repeat"}."""
    blob = canonical_json({"group": group, "params": params, "repeat": repeat})
    return f"{group}-{hashlib.sha256(blob.encode('utf-8')).hexdigest()[:10]}"


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@dataclass(frozen=True)
class LaunchSettings:
    """Launcher settings: retries per run, backoff and stop grace in seconds, the flapping guard
    (stop launching after `flapping_max` failures within `flapping_window_s` seconds), environment
    added to every run, the log directory (relative to the plan file unless absolute), the
    variables of the launcher's environment a run may see (`env_passthrough`; None: all of them)
    and the mode of state files (`state_mode`; None: 0600)."""

    retries: int = 2
    backoff_s: float = 30.0
    stop_grace_s: float = 30.0
    flapping_window_s: float = 60.0
    flapping_max: int = 3
    env: dict[str, str] = field(default_factory=dict)
    log_dir: str = "runs"
    env_passthrough: tuple[str, ...] | None = None
    state_mode: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "retries": self.retries,
            "backoff_s": self.backoff_s,
            "stop_grace_s": self.stop_grace_s,
            "flapping_window_s": self.flapping_window_s,
            "flapping_max": self.flapping_max,
            "env": dict(self.env),
            "log_dir": self.log_dir,
        }
        if self.env_passthrough is not None:
            out["env_passthrough"] = list(self.env_passthrough)
        if self.state_mode is not None:
            out["state_mode"] = f"{self.state_mode:04o}"
        return out

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any] | None) -> LaunchSettings:
        """From a plan file's `launch:`; missing keys take the defaults. Raises ValueError naming the
        key whose value is wrong."""
        doc = doc or {}
        if not isinstance(doc, Mapping):
            raise ValueError(f"`launch` must be a mapping, not {type(doc).__name__}")
        d = cls()

        def num(key: str, default: float, kind: type = float) -> Any:
            v = doc.get(key, default)
            if v is None:
                return default
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
                raise ValueError(f"`launch.{key}` must be a number, not {v!r}")
            if v < 0:
                raise ValueError(f"`launch.{key}` must be >= 0, not {v!r}")
            return kind(v)

        env = doc.get("env") or {}
        if not isinstance(env, dict):
            raise ValueError(f"`launch.env` must be a mapping, not {type(env).__name__}")
        bad = [k for k in env if not isinstance(k, str) or not ENV_NAME_RE.fullmatch(k)]
        if bad:
            raise ValueError(f"`launch.env` has names that are not environment variable names: {bad[:3]!r}")
        log_dir = doc.get("log_dir", d.log_dir)
        if not isinstance(log_dir, str) or not log_dir:
            raise ValueError(f"`launch.log_dir` must be a non-empty string, not {log_dir!r}")
        if (why := log_dir_problem(log_dir)) is not None:
            raise ValueError(why)
        passthrough = doc.get("env_passthrough")
        if passthrough is not None:
            if not isinstance(passthrough, list) or not all(isinstance(p, str) and ENV_PATTERN_RE.fullmatch(p) for p in passthrough):
                raise ValueError(f"`launch.env_passthrough` must be a list of variable names or patterns such as LC_*, not {passthrough!r}")
            passthrough = tuple(passthrough)
        mode = doc.get("state_mode")
        return cls(
            retries=num("retries", d.retries, int),
            backoff_s=num("backoff_s", d.backoff_s),
            stop_grace_s=num("stop_grace_s", d.stop_grace_s),
            flapping_window_s=num("flapping_window_s", d.flapping_window_s),
            flapping_max=num("flapping_max", d.flapping_max, int),
            env={str(k): str(v) for k, v in env.items()},
            log_dir=log_dir,
            env_passthrough=passthrough,
            state_mode=None if mode is None else _mode_of(mode),
        )


def _mode_of(value: Any) -> int:
    try:
        return parse_state_mode(value)
    except ValueError as exc:
        raise ValueError(f"`launch.state_mode`: {exc}") from None
