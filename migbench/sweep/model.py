"""A sweep as declared, after validation and expansion: `Sweep`, its `Group`s and their `Run`s.

`Run` is the *declared* shape of a run (see ARCHITECTURE.md: a run has three shapes, declared,
planned and launched). Its id is `<group>-<hash of the parameters>`, so a run keeps its id when
the file is reordered.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Union

from migbench.duration import Demand, DurationModel
from migbench.sweep.schema import Scalar
from migbench.types import LaunchSettings


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


@dataclass(frozen=True)
class Run:
    """One fully resolved run. `memory_mib` is the whole device footprint (MiB, rounded up);
    `duration_s`/`timeout_s` in seconds; `compute` is the fraction (0, 1] of a whole GPU's compute
    the run can keep busy (`compute_source` "default" when the group gives none: the planner then
    takes the share of the smallest instance that holds the run's memory, see `duration.model`).
    `argv` may still hold `${run_id}`, `${run_dir}`, `${attempt}`."""

    id: str
    group: str
    index: int
    params: dict[str, Any]
    repeat: int
    argv: tuple[str, ...]
    shell: bool
    env: dict[str, str]
    workdir: str
    memory_mib: int
    memory_source: str
    memory_parts: tuple[tuple[str, int], ...]
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
