"""Load and validate a sweep file (schema version 1) into typed, expanded runs. Strict, one pass.

A sweep is dozens of variants of one training job. The file names the parameters (W&B forms, Hydra
shorthand strings, or plain lists), the command template, and what each run needs (memory, and
optionally duration, compute share, allowed MIG profiles). `load_sweep` returns a `Sweep` whose
`runs` are fully resolved: argv, environment, memory footprint in MiB, and a stable id.

Everything wrong with the file is reported at once: `InputError.problems` holds one `Problem` per
mistake, each with the file, the 1-based line of the offending key or value, the field path
(`groups[0].memory`, `fleet[1].gpu`, `parameters.lr` in the single-group form) and a hint.

Decisions worth knowing (the schema sketch in USERS.md A.10 left them open):

* **Rendering a value into a command** uses Python's `str()`: ints as `8`, floats in their shortest
  round-trip form (`0.1`, `1e-05`, `3.0`), booleans as `True`/`False` (Hydra's override grammar and
  W&B's `${args}` read these too), null as `None`. Floats drawn by `method: random` are not rounded,
  except `q_*` distributions, whose results are rounded to 12 decimals to drop float noise.
* **No value ever reaches a shell** unless the group says `shell: true`. A string command is split
  with `shlex.split` *before* substitution, so each `{param}` lands inside exactly one argv element.
  With `shell: true` the command must be one string; every substituted value is `shlex.quote`d, and
  `${NAME}` that is not a migbench macro is left for the shell.
* **Macros**: `${program}`, `${args}` (`--name=value`, sorted by name), `${args_no_hyphens}`
  (`name=value`), `${args_no_boolean_flags}` (`--name` for true, nothing for false), `${args_json}`
  (one JSON argument), `${env}` (`/usr/bin/env`) and `${interpreter}` (`python`) as in W&B. The
  list-producing ones must stand alone as one argument. `${run_id}`, `${run_dir}` and `${attempt}` are
  left verbatim for the launcher. `${args_json_file}` is refused.
* **YAML numbers**: `1e-5` is read as a float (YAML 1.2), not as the string PyYAML's YAML 1.1 makes it.
* **Expansion order**: grid is the Cartesian product in the order parameters are written (the first
  varies slowest; a zip group is one axis at its first member), then repeated `repeats` times (the
  repeat index is the outer loop, as Ray's `num_samples`). `Run.index` is the position in the whole
  sweep. Random sampling visits parameters in *name* order and draws from values sorted by their
  canonical JSON, so reordering the file changes neither the ids nor the samples; a sample that
  repeats an earlier one is redrawn (a bounded number of times), and raising `count` keeps the
  earlier samples.
* **defaults** are merged under each group: the group's value wins; `env` and `parameters` merge key
  by key (defaults' parameters come first in the expansion order).
* `memory` tables compare keys and values by their string forms (`8` matches `"8"`); a table's
  `memory_source` is `table:<param>=<value>` whether the entry or the table's `default` applied.
* An estimate's `memory_parts` are each rounded up to a MiB; `memory_mib` is the estimate's total
  (ceil of the exact sum), so the parts may add up to a few MiB more than `memory_mib`.
* `workdir` is resolved against the sweep file's directory but not required to exist here (the plan
  may be made on another machine than the launch).
* A key set to null (`run_cap: null`, `fleet: ~`) counts as not given, as in W&B files.
* Hydra shorthand: a string parameter holding a comma is a list whose items are read as YAML scalars
  (`"8,16"` gives ints); `range(start, stop[, step])` (ints or floats) and `choice(a, b)` are
  understood, Hydra's other sweep functions are refused. `{value: "a,b"}` is the literal string.
* With `shell: true`, do not put a `{param}` inside quotes in the template: the value arrives already
  quoted (`--note {note}`, not `--note "{note}"`).
* A duplicate value in a list is reported at the value; a random draw that repeats a point is redrawn
  (at most 100 × count tries). A group or sweep that would expand to more than `MAX_RUNS` is refused.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import hashlib
import itertools
import json
import math
import random
import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from migbench import units
from migbench.errors import InputError, Problem
from migbench.estimate import (
    ATTENTIONS,
    OPTIMIZERS,
    PRECISIONS,
    Estimate,
    EstimateSpec,
    estimate,
    parse_param_count,
)

SCHEMA_VERSION = 1
MAX_RUNS = 100_000
"""Refuse sweeps that expand to more runs than this (a typo in a range() should not hang the CLI)."""

LAUNCH_MACROS = ("run_id", "run_dir", "attempt")
"""Left verbatim in argv and env for the launcher to fill in."""
_LIST_MACROS = ("args", "args_no_hyphens", "args_no_boolean_flags")
_VALUE_MACROS = ("program", "args_json", "env", "interpreter")
_ALL_MACROS = _VALUE_MACROS + _LIST_MACROS + LAUNCH_MACROS

DISTRIBUTIONS = (
    "uniform",
    "int_uniform",
    "q_uniform",
    "log_uniform",
    "log_uniform_values",
    "q_log_uniform",
    "q_log_uniform_values",
    "normal",
    "q_normal",
    "log_normal",
    "q_log_normal",
)
_NORMAL_FAMILY = ("normal", "q_normal", "log_normal", "q_log_normal")

_SWEEP_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_GROUP_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]*")
_PARAM_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PROFILE_RE = re.compile(r"[0-9]+g\.[0-9]+gb(?:[+-][a-z.]+)?")

TOP_KEYS = ("version", "name", "description", "seed", "fleet", "duration_model", "launch", "defaults", "groups")
GROUP_KEYS = (
    "name",
    "command",
    "program",
    "shell",
    "method",
    "count",
    "run_cap",
    "repeats",
    "num_samples",
    "parameters",
    "zip",
    "memory",
    "duration",
    "compute",
    "max_runs_per_instance",
    "profiles",
    "env",
    "workdir",
    "retries",
    "timeout",
)
FLEET_KEYS = ("gpu", "count", "driver")
DURATION_MODEL_KEYS = ("interference", "compute_basis")
LAUNCH_KEYS = ("retries", "backoff", "stop_grace", "flapping_window", "flapping_max", "env", "log_dir")
PARAM_KEYS = ("value", "values", "distribution", "min", "max", "q", "mu", "sigma")
MEMORY_TABLE_KEYS = ("by", "table", "default")
ESTIMATE_REQUIRED = ("params", "precision", "optimizer", "batch_size", "seq_len", "hidden", "layers", "heads", "vocab")
ESTIMATE_OPTIONAL = ("attention", "activation_checkpointing", "ffn", "context", "workspace", "headroom")
ESTIMATE_KEYS = ESTIMATE_REQUIRED + ESTIMATE_OPTIONAL

Scalar = Union[str, int, float, bool, None]  # noqa: UP007 - a runtime alias


# =============================================================================================
# Public value types
# =============================================================================================


@dataclass(frozen=True)
class FleetEntry:
    """`count` GPUs of one catalogue model (`gpu` is the catalogue key), optionally on a driver."""

    gpu: str
    count: int
    driver: str | None = None


@dataclass(frozen=True)
class DurationModel:
    """How co-located runs slow each other down: `interference` is the fractional slowdown per extra
    run sharing an instance; `compute_basis` says whether an instance's compute share is counted in
    SMs ("sm") or in compute slices ("slices")."""

    interference: float = 0.0
    compute_basis: str = "sm"


@dataclass(frozen=True)
class LaunchOptions:
    """Launcher settings: retries per run, backoff and stop grace in seconds, the flapping guard
    (stop launching after `flapping_max` failures within `flapping_window_s` seconds), environment
    added to every run, and the log directory (relative to the sweep file unless absolute)."""

    retries: int = 2
    backoff_s: float = 30.0
    stop_grace_s: float = 30.0
    flapping_window_s: float = 60.0
    flapping_max: int = 3
    env: dict[str, str] = field(default_factory=dict)
    log_dir: str = "runs"


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


MemorySpec = Union[ExplicitMemory, MemoryTable, MemoryEstimate]


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
    the run can keep busy. `argv` may still hold `${run_id}`, `${run_dir}`, `${attempt}`."""

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
    launch: LaunchOptions
    seed: int
    description: str | None = None

    def run(self, run_id: str) -> Run:
        """The run with this id (KeyError if none)."""
        for r in self.runs:
            if r.id == run_id:
                return r
        raise KeyError(run_id)


# =============================================================================================
# Public entry points
# =============================================================================================


def load_sweep(path: str | Path, *, catalog: Any = None) -> Sweep:
    """Read and validate a sweep file; raises `InputError` listing every problem found."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such sweep file", hint="check the path; sweeps are YAML files") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read the sweep file ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        prob = Problem(f"the file is not UTF-8 text (byte {exc.start})", str(path), None, None, "save it as UTF-8")
        raise InputError(f"{path}: 1 problem", problems=[prob]) from None
    return _load(text, data, file=str(path), path=str(p.resolve()), base_dir=p.resolve().parent, catalog=catalog)


def load_sweep_text(text: str, *, file: str = "<sweep>", base_dir: Path | None = None, catalog: Any = None) -> Sweep:
    """Validate sweep YAML given as text; `file` names it in problems, `base_dir` anchors `workdir`
    (default: the current directory). `Sweep.path` is None and `sha256` is of the UTF-8 bytes."""
    base = (base_dir if base_dir is not None else Path.cwd()).resolve()
    return _load(text, text.encode("utf-8"), file=file, path=None, base_dir=base, catalog=catalog)


def render_value(value: Any) -> str:
    """A parameter value's string form in commands, env values and table lookups (Python `str()`)."""
    return str(value)


def run_id(group: str, params: dict[str, Any], repeat: int) -> str:
    """`{group}-{10 hex}`: sha256 of the canonical JSON of {"group", "params", "repeat"}."""
    blob = _canonical({"group": group, "params": params, "repeat": repeat})
    return f"{group}-{hashlib.sha256(blob.encode('utf-8')).hexdigest()[:10]}"


# =============================================================================================
# YAML with locations
# =============================================================================================


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-5` (no dot) as a float, as YAML 1.2 does."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


@dataclass(eq=False)
class _Node:
    line: int
    path: str


@dataclass(eq=False)
class _Scalar(_Node):
    value: Any
    raw: str


@dataclass(eq=False)
class _Seq(_Node):
    items: list[_Node]


@dataclass(eq=False)
class _Entry:
    key: Any
    key_line: int
    path: str
    value: _Node


@dataclass(eq=False)
class _Map(_Node):
    entries: dict[Any, _Entry]

    def get(self, key: str) -> _Node | None:
        """The value at `key`; None when absent or null (`run_cap: null` means "not set", as in W&B)."""
        e = self.entries.get(key)
        if e is None or (isinstance(e.value, _Scalar) and e.value.value is None):
            return None
        return e.value


def _join(path: str, key: Any) -> str:
    return str(key) if not path else f"{path}.{key}"


class _Converter:
    """Turns a composed YAML node graph into `_Node`s with lines and field paths."""

    def __init__(self, loader: _Loader, problems: _Problems):
        self.loader = loader
        self.problems = problems
        self.budget = 2_000_000  # alias bombs
        self.active: set[int] = set()

    def convert(self, node: yaml.Node, path: str) -> _Node:
        self.budget -= 1
        if self.budget < 0:
            raise _Abort("the file expands to too many values (YAML aliases?)")
        line = node.start_mark.line + 1
        if isinstance(node, yaml.ScalarNode):
            return _Scalar(line, path, self.loader.construct_object(node, deep=True), node.value)
        if id(node) in self.active:
            raise _Abort(f"line {line}: a YAML alias refers to itself")
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return _Seq(line, path, [self.convert(n, f"{path}[{i}]") for i, n in enumerate(node.value)])
            assert isinstance(node, yaml.MappingNode)
            return self._mapping(node, path, line)
        finally:
            self.active.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, path: str, line: int) -> _Map:
        entries: dict[Any, _Entry] = {}
        merged: list[_Entry] = []
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if key_node.tag == "tag:yaml.org,2002:merge":
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for src in sources:
                    if not isinstance(src, yaml.MappingNode):
                        self.problems.add("a `<<` merge key must refer to a mapping", line=key_line, field=path)
                        continue
                    sub = self.convert(src, path)
                    assert isinstance(sub, _Map)
                    merged.extend(sub.entries.values())
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.problems.add(
                    "a mapping key must be a plain value, not a list or mapping", line=key_line, field=path
                )
                continue
            key = self.loader.construct_object(key_node, deep=True)
            if key in entries:
                self.problems.add(
                    f"duplicate key {key!r} (first at line {entries[key].key_line})",
                    line=key_line,
                    field=_join(path, key),
                    hint="YAML keeps only the last one; remove or rename one of them",
                )
                continue
            kpath = _join(path, key)
            entries[key] = _Entry(key, key_line, kpath, self.convert(value_node, kpath))
        out: dict[Any, _Entry] = {}
        for e in merged:  # merged keys first (as PyYAML), explicit keys win, earlier merges win
            if e.key not in entries and e.key not in out:
                out[e.key] = e
        out.update(entries)
        return _Map(line, path, out)


_MOVED = {
    "resources": "memory:, profiles: and the estimator's inputs (memory: {estimate: {...}}) go directly in the group",
    "estimate": "write memory: {estimate: {...}}",
    "headroom": "headroom is an estimator input: memory: {estimate: {..., headroom: 0.15}}",
    "memory_keys": "memory_keys (calibration) is not supported yet; give memory per group or a table",
    "calibrate": "calibration is not supported yet; give memory per group, a table or an estimate",
    "max_concurrent": "concurrency follows the plan's MIG instances; see max_runs_per_instance",
    "seed": "seed is a sweep-level key (top level)",
    "timeout": "timeout is a group field (or under defaults:)",
    "args": "parameters are written under parameters:, and ${args} in the command passes them",
}


def _unknown_key_hint(key: Any, allowed: Sequence[str], known: str) -> str:
    """`did you mean 'x'?`, or where the key belongs, then the keys allowed here."""
    moved = _MOVED.get(str(key))
    if moved:
        return f"{moved}; {known}"
    close = difflib.get_close_matches(str(key), list(allowed), n=1, cutoff=0.6)
    return (f"did you mean {close[0]!r}? " if close else "") + known


class _Abort(Exception):
    """A problem that stops parsing (the structure cannot be read at all)."""


# =============================================================================================
# Problems
# =============================================================================================


class _Problems:
    """Collects problems, once each. A problem in `defaults:` is found once per group that inherits
    it; it is reported once, naming the groups unless it concerns all of them."""

    def __init__(self, file: str):
        self.file = file
        self._items: dict[tuple[Any, ...], tuple[Problem, list[str]]] = {}
        self.all_groups: list[str] = []

    @property
    def items(self) -> list[tuple[Problem, list[str]]]:
        return list(self._items.values())

    def add(
        self,
        message: str,
        *,
        line: int | None = None,
        field: str | None = None,
        hint: str | None = None,
        group: str | None = None,
    ) -> None:
        key = (message, line, field)
        if key not in self._items:
            self._items[key] = (Problem(message, self.file, line, field or None, hint), [])
        groups = self._items[key][1]
        if group is not None and group not in groups:
            groups.append(group)

    def sorted(self) -> list[Problem]:
        out = []
        for prob, groups in self._items.values():
            if groups and set(groups) != set(self.all_groups):
                names = ", ".join(repr(g) for g in groups)
                prob = Problem(
                    f"{prob.message} (in group{'s' if len(groups) > 1 else ''} {names})",
                    prob.file,
                    prob.line,
                    prob.field,
                    prob.hint,
                )
            out.append(prob)
        return sorted(out, key=lambda p: (p.line is None, p.line or 0))


def _describe(node: _Node) -> str:
    """`a mapping with keys 'a', 'b'`, `a list`, `a string ('x')`... for "expected X, got Y"."""
    if isinstance(node, _Map):
        keys = ", ".join(repr(k) for k in node.entries)
        return f"a mapping with keys {keys}" if keys else "an empty mapping"
    if isinstance(node, _Seq):
        return "a list" if node.items else "an empty list"
    assert isinstance(node, _Scalar)
    return _describe_value(node.value)


def _describe_value(v: Any) -> str:
    text = repr(v)
    if len(text) > 40:
        text = text[:37] + "..."
    if v is None:
        return "nothing (null)"
    if isinstance(v, bool):
        return f"a boolean ({str(v).lower()})"
    if isinstance(v, int):
        return f"an integer ({v})"
    if isinstance(v, float):
        return f"a number ({v!r})"
    if isinstance(v, str):
        return f"a string ({text})"
    if isinstance(v, (_dt.date, _dt.datetime)):
        return f"a date ({v}); quote it to make it a string"
    return type(v).__name__


# =============================================================================================
# Context for one group: every check reports through it
# =============================================================================================


class _Ctx:
    def __init__(self, problems: _Problems, group: str | None = None):
        self.p = problems
        self.group = group
        self.failed = False

    def at(
        self,
        node: _Node | _Entry | None,
        message: str,
        hint: str | None = None,
        *,
        key: bool = False,
        field: str | None = None,
    ) -> None:
        """Report a problem at a node's value line (or its key line for an `_Entry` when key=True)."""
        self.failed = True
        if node is None:
            self.p.add(message, hint=hint, field=field)
            return
        if isinstance(node, _Entry):
            line, path = (node.key_line if key else node.value.line), node.path
        else:
            line, path = node.line, node.path
        path = field or path
        group = self.group if self.group is not None and path.startswith("defaults") else None
        self.p.add(message, line=line, field=path or None, hint=hint, group=group)

    def missing(self, m: _Map, key: str, message: str, hint: str | None = None) -> None:
        """A required key is absent: reported at the mapping's first line, field = its would-be path."""
        self.at(m, message, hint, field=_join(m.path, key))

    # -- structural checks ------------------------------------------------------------------
    def keys(self, m: _Map, allowed: Sequence[str], what: str, extra: str = "") -> None:
        for key, e in m.entries.items():
            if key in allowed:
                continue
            self.at(
                e,
                f"unknown key {str(key)!r}",
                _unknown_key_hint(key, allowed, f"{what} keys are: {', '.join(allowed)}{extra}"),
                key=True,
            )

    def mapping(self, node: _Node, what: str) -> _Map | None:
        if isinstance(node, _Map):
            return node
        self.at(node, f"expected {what}, got {_describe(node)}")
        return None

    def string(self, node: _Node, what: str = "a string") -> str | None:
        if isinstance(node, _Scalar) and isinstance(node.value, str):
            return node.value
        self.at(node, f"expected {what}, got {_describe(node)}")
        return None

    def integer(self, node: _Node, minimum: int | None = None) -> int | None:
        if not (isinstance(node, _Scalar) and isinstance(node.value, int) and not isinstance(node.value, bool)):
            self.at(
                node, f"expected a whole number{'' if minimum is None else f' >= {minimum}'}, got {_describe(node)}"
            )
            return None
        if minimum is not None and node.value < minimum:
            self.at(node, f"must be >= {minimum}, got {node.value}")
            return None
        return node.value

    def number(self, node: _Node) -> float | None:
        if not (
            isinstance(node, _Scalar)
            and isinstance(node.value, (int, float))
            and not isinstance(node.value, bool)
            and math.isfinite(node.value)
        ):
            self.at(node, f"expected a number, got {_describe(node)}")
            return None
        return node.value

    def boolean(self, node: _Node) -> bool | None:
        if isinstance(node, _Scalar) and isinstance(node.value, bool):
            return node.value
        self.at(node, f"expected true or false, got {_describe(node)}")
        return None

    def duration(self, node: _Node) -> float | None:
        v = node.value if isinstance(node, _Scalar) else None
        if not isinstance(node, _Scalar):
            self.at(node, f"expected a duration such as 8h, got {_describe(node)}", units.DURATION_HINT)
            return None
        try:
            return units.parse_duration_s(v)
        except ValueError as exc:
            self.at(node, f"bad duration: {exc}", units.DURATION_HINT)
            return None

    def memory(self, node: _Node) -> int | None:
        if not isinstance(node, _Scalar):
            self.at(node, f"expected a memory quantity such as 2.5GiB, got {_describe(node)}", units.MEMORY_HINT)
            return None
        try:
            return units.parse_memory_mib(node.value)
        except ValueError as exc:
            self.at(node, f"bad memory quantity: {exc}", units.MEMORY_HINT)
            return None

    def env(self, node: _Node) -> dict[str, tuple[str, _Node]] | None:
        """`{NAME: value}`; numbers become their text as written; booleans must be quoted."""
        m = self.mapping(node, "a mapping of environment variables (NAME: value)")
        if m is None:
            return None
        out: dict[str, tuple[str, _Node]] = {}
        for key, e in m.entries.items():
            if not isinstance(key, str) or not _ENV_NAME_RE.fullmatch(key):
                self.at(e, f"{str(key)!r} is not an environment variable name", "use letters, digits and _", key=True)
                continue
            v = e.value
            if isinstance(v, _Scalar) and isinstance(v.value, str):
                out[key] = (v.value, v)
            elif isinstance(v, _Scalar) and isinstance(v.value, (int, float)) and not isinstance(v.value, bool):
                out[key] = (v.raw, v)
            else:
                hint = "quote it, e.g. 'true'" if isinstance(v, _Scalar) and isinstance(v.value, bool) else None
                self.at(v, f"expected a string, got {_describe(v)}", hint)
        return out


# =============================================================================================
# Templates: {param}, {{ }}, ${macro}
# =============================================================================================


@dataclass(frozen=True)
class _Lit:
    text: str


@dataclass(frozen=True)
class _Ph:
    name: str


@dataclass(frozen=True)
class _Macro:
    name: str
    text: str  # as written, e.g. "${run_id}"


_Part = Union[_Lit, _Ph, _Macro]
_PH_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.\-]*)\}")


def _parse_template(text: str, shell: bool) -> tuple[list[_Part], list[tuple[str, str | None]]]:
    """Split a template into literals, `{param}` placeholders and `${macro}`s; (parts, errors)."""
    parts: list[_Part] = []
    errors: list[tuple[str, str | None]] = []
    buf: list[str] = []
    brace_hint = "write {{ and }} for literal braces; {name} is a parameter placeholder"

    def flush() -> None:
        if buf:
            parts.append(_Lit("".join(buf)))
            buf.clear()

    def brace_error(message: str) -> None:
        if not any(m.startswith("a lone") for m, _ in errors):
            errors.append((message, brace_hint))

    i, n = 0, len(text)
    while i < n:
        if text.startswith("{{", i):
            buf.append("{")
            i += 2
        elif text.startswith("}}", i):
            buf.append("}")
            i += 2
        elif text.startswith("${", i):
            j = text.find("}", i + 2)
            if j < 0:
                if shell:
                    buf.append(text[i:])
                    break
                errors.append((f"unclosed '${{' in {text!r}", "write ${name} for a macro"))
                break
            name = text[i + 2 : j]
            written = text[i : j + 1]
            if name in _ALL_MACROS:
                flush()
                parts.append(_Macro(name, written))
            elif name == "args_json_file":
                errors.append(
                    ("${args_json_file} is not supported", "use ${args_json}, ${args} or {param} placeholders instead")
                )
            elif shell:
                buf.append(written)  # a shell variable: the shell expands it
            else:
                errors.append(
                    (
                        f"unknown macro {written}",
                        "macros are ${" + "}, ${".join(_ALL_MACROS) + "}; "
                        "without shell: true no environment variable is expanded",
                    )
                )
            i = j + 1
        elif text[i] == "{":
            m = _PH_RE.match(text, i)
            if m:
                flush()
                parts.append(_Ph(m.group(1)))
                i = m.end()
            else:
                brace_error(f"a lone '{{' in {text!r}")
                buf.append("{")
                i += 1
        elif text[i] == "}":
            brace_error(f"a lone '}}' in {text!r}")
            buf.append("}")
            i += 1
        else:
            buf.append(text[i])
            i += 1
    flush()
    return parts, errors


def _check_names(ctx: _Ctx, node: _Node, parts: list[_Part], names: Sequence[str]) -> bool:
    ok = True
    for p in parts:
        if isinstance(p, _Ph) and p.name != "repeat" and p.name not in names:
            known = f"parameters are: {', '.join(names)}" if names else "the group has no parameters"
            ctx.at(
                node,
                f"placeholder {{{p.name}}} names no parameter; {known}",
                "{repeat} is the repeat index; write {{ and }} for literal braces",
            )
            ok = False
    return ok


def _fill(parts: list[_Part], values: dict[str, Any], macro: Callable[[_Macro], str], quote: bool = False) -> str:
    out = []
    for p in parts:
        if isinstance(p, _Lit):
            out.append(p.text)
        elif isinstance(p, _Ph):
            s = render_value(values[p.name])
            out.append(shlex.quote(s) if quote else s)
        else:
            out.append(macro(p))
    return "".join(out)


# =============================================================================================
# Loading
# =============================================================================================


def _load(text: str, data: bytes, *, file: str, path: str | None, base_dir: Path, catalog: Any) -> Sweep:
    problems = _Problems(file)
    sha = hashlib.sha256(data).hexdigest()
    try:
        root = _parse_yaml(text, problems)
        sweep = None if root is None else _build(root, problems, sha=sha, path=path, base_dir=base_dir, catalog=catalog)
    except _Abort as exc:
        problems.add(str(exc))
        sweep = None
    if problems.items or sweep is None:
        items = problems.sorted()
        n = len(items)
        raise InputError(f"{file}: {n} problem{'s' if n != 1 else ''}", problems=items)
    return sweep


def _parse_yaml(text: str, problems: _Problems) -> _Node | None:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            problems.add("the file is empty", hint="a sweep starts with `version: 1` and `name:`")
            return None
        return _Converter(loader, problems).convert(node, "")
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = " ".join(x for x in (exc.context, exc.problem) if x) or "invalid YAML"
        problems.add(
            f"YAML syntax error: {what}" + (f" (column {mark.column + 1})" if mark else ""),
            line=mark.line + 1 if mark else None,
            hint="check the indentation and quoting around this line (a value holding ': ' or '#' needs quotes)",
        )
        return None
    except yaml.YAMLError as exc:  # pragma: no cover - every PyYAML error we know is marked
        problems.add(f"YAML error: {exc}")
        return None
    finally:
        loader.dispose()


def _build(
    root: _Node, problems: _Problems, *, sha: str, path: str | None, base_dir: Path, catalog: Any
) -> Sweep | None:
    ctx = _Ctx(problems)
    if not isinstance(root, _Map):
        ctx.at(root, f"a sweep file must be a mapping (version:, name:, groups: ...), got {_describe(root)}")
        return None

    single = [k for k in root.entries if k in GROUP_KEYS and k != "name"]
    has_groups = root.get("groups") is not None
    allowed = TOP_KEYS if has_groups else tuple(TOP_KEYS) + tuple(k for k in GROUP_KEYS if k != "name")
    for key, e in root.entries.items():
        if key in allowed:
            continue
        if has_groups and key in GROUP_KEYS:
            ctx.at(
                e,
                f"{key!r} is a group field, but this file uses groups: (mixing the two forms)",
                "move it into each group or under defaults:, or drop groups: and write one group at top level",
                key=True,
            )
            continue
        known = "top-level keys are: " + ", ".join(TOP_KEYS)
        if not has_groups:
            known += " (or a single group's fields: command, parameters, memory, ...)"
        ctx.at(e, f"unknown key {str(key)!r}", _unknown_key_hint(key, allowed, known), key=True)

    version = None
    vnode = root.get("version")
    if vnode is None:
        ctx.missing(root, "version", "missing `version`", "start the file with `version: 1`")
    else:
        version = ctx.integer(vnode)
        if version is not None and version != SCHEMA_VERSION:
            ctx.at(
                vnode,
                f"unsupported version {version}; this migbench reads version {SCHEMA_VERSION}",
                "write `version: 1`",
            )
            version = None

    name = None
    nnode = root.get("name")
    if nnode is None:
        ctx.missing(
            root,
            "name",
            "missing `name`",
            "name the sweep, e.g. `name: phase2-ablations` (its state lives in runs/<name>/)",
        )
    else:
        name = ctx.string(nnode, "a name")
        if name is not None and not _SWEEP_NAME_RE.fullmatch(name):
            ctx.at(
                nnode,
                f"{name!r} is not a valid sweep name",
                "use letters, digits, '.', '_' and '-', starting with a letter or digit",
            )
            name = None

    description = None
    if (d := root.get("description")) is not None:
        description = ctx.string(d)

    seed = 0
    if (s := root.get("seed")) is not None:
        seed = ctx.integer(s) or 0

    cat_holder: list[Any] = [catalog]

    def get_catalog() -> Any:
        if cat_holder[0] is None:
            from migbench.catalog import default_catalog

            cat_holder[0] = default_catalog()
        return cat_holder[0]

    fleet = _parse_fleet(ctx, root.get("fleet"), get_catalog) if "fleet" in root.entries else None
    duration_model = _parse_duration_model(ctx, root.get("duration_model"))
    launch = _parse_launch(ctx, root.get("launch"))

    defaults: _Map | None = None
    if (dn := root.get("defaults")) is not None:
        defaults = ctx.mapping(dn, "a mapping of group fields")
        if defaults is not None:
            allowed_defaults = tuple(k for k in GROUP_KEYS if k != "name")
            for key, e in defaults.entries.items():
                if key == "name":
                    ctx.at(e, "`name` cannot be a default (each group needs its own)", key=True)
            ctx.keys(
                _Map(defaults.line, defaults.path, {k: v for k, v in defaults.entries.items() if k != "name"}),
                allowed_defaults,
                "group",
            )

    group_nodes: list[tuple[_Map, str | None]] = []  # (mapping, name) per group
    if has_groups:
        gnode = root.get("groups")
        assert gnode is not None
        if not isinstance(gnode, _Seq):
            ctx.at(gnode, f"expected a list of groups, got {_describe(gnode)}")
        elif not gnode.items:
            ctx.at(gnode, "`groups` is empty", "list at least one group (name, command, memory, ...)")
        else:
            seen: dict[str, int] = {}
            for item in gnode.items:
                g = ctx.mapping(item, "a group (a mapping with name, command, memory, ...)")
                if g is None:
                    continue
                gname = None
                gn = g.get("name")
                if gn is None:
                    ctx.missing(g, "name", "missing group `name`", "give each group a unique name such as `ablation`")
                else:
                    gname = ctx.string(gn, "a group name")
                    if gname is not None and not _GROUP_NAME_RE.fullmatch(gname):
                        ctx.at(
                            gn,
                            f"{gname!r} is not a valid group name",
                            "use lower-case letters, digits, '_' and '-', starting with a letter or digit",
                        )
                        gname = None
                    elif gname is not None:
                        if gname in seen:
                            ctx.at(
                                gn,
                                f"duplicate group name {gname!r} (first at line {seen[gname]})",
                                "group names must be unique: they prefix the run ids",
                            )
                            gname = None
                        else:
                            seen[gname] = gn.line
                group_nodes.append((g, gname))
    elif single:
        fields = _Map(root.line, "", {k: e for k, e in root.entries.items() if k in GROUP_KEYS and k != "name"})
        group_nodes.append((fields, name or None))
    else:
        ctx.at(
            root,
            "no runs: write `groups:` (a list of groups) or one group's command, parameters and memory at top level",
            "see USERS.md A.10 for an example sweep",
        )

    problems.all_groups = [n for _, n in group_nodes if n is not None]
    groups: list[Group] = []
    runs: list[Run] = []
    ids: dict[str, str] = {}
    for g, gname in group_nodes:
        gctx = _Ctx(problems, gname)
        merged = _merge_defaults(defaults, g)
        parsed = _parse_group(gctx, merged, gname or "", g, base_dir, get_catalog, fleet)
        if parsed is None or gname is None:
            continue
        group, expander = parsed
        groups.append(group)
        for run in expander(seed, len(runs)):
            prior = ids.get(run.id)
            if prior is not None:
                gctx.at(g, f"run id {run.id} is produced twice (a hash collision); rename group {group.name!r}")
                continue
            ids[run.id] = run.group
            runs.append(run)
            if len(runs) > MAX_RUNS:
                raise _Abort(f"the sweep expands to more than {MAX_RUNS} runs")

    if problems.items or version is None or name is None:
        return None
    return Sweep(
        version=version,
        name=name,
        path=path,
        sha256=sha,
        fleet=fleet,
        groups=tuple(groups),
        runs=tuple(runs),
        duration_model=duration_model,
        launch=launch,
        seed=seed,
        description=description,
    )


# ---- sweep-level sections ----------------------------------------------------------------------


def _parse_fleet(ctx: _Ctx, node: _Node | None, get_catalog: Callable[[], Any]) -> tuple[FleetEntry, ...] | None:
    if node is None or not isinstance(node, _Seq):
        if node is not None:
            ctx.at(node, f"expected a list of {{gpu: MODEL, count: N}}, got {_describe(node)}")
        return None
    if not node.items:
        ctx.at(node, "`fleet` is empty", "list the GPUs, e.g. `- {gpu: A100-SXM4-80GB, count: 4}`, or omit fleet:")
        return None
    out: list[FleetEntry] = []
    for item in node.items:
        m = ctx.mapping(item, "{gpu: MODEL, count: N}")
        if m is None:
            continue
        ctx.keys(m, FLEET_KEYS, "fleet entry")
        gpu = count = None
        driver: str | None = None
        if (gn := m.get("gpu")) is None:
            ctx.missing(m, "gpu", "missing `gpu`", "name a catalogue model, e.g. gpu: A100-SXM4-80GB")
        elif (text := ctx.string(gn, "a GPU model name")) is not None:
            cat = get_catalog()
            gpu = cat.find_key(text)
            if gpu is None:
                close = difflib.get_close_matches(text, cat.keys(), n=1, cutoff=0.5)
                ctx.at(
                    gn,
                    f"unknown GPU model {text!r}",
                    (f"did you mean {close[0]!r}? " if close else "")
                    + "known models: "
                    + ", ".join(cat.keys())
                    + "; teach a new one with `migbench catalog import`",
                )
        if (cn := m.get("count")) is None:
            ctx.missing(m, "count", "missing `count`", "how many GPUs of this model, e.g. count: 4")
        else:
            count = ctx.integer(cn, 1)
        if (dn := m.get("driver")) is not None:
            if isinstance(dn, _Scalar) and dn.value is not None and not isinstance(dn.value, bool):
                from migbench.catalog import parse_driver

                try:
                    parse_driver(dn.raw)
                    driver = dn.raw.strip()
                except ValueError as exc:
                    ctx.at(dn, str(exc), 'write the driver version as nvidia-smi prints it, e.g. "535.129.03"')
            else:
                ctx.at(dn, f'expected a driver version such as "535.129.03", got {_describe(dn)}')
        if gpu is not None and count is not None:
            out.append(FleetEntry(gpu, count, driver))
    return tuple(out)


def _parse_duration_model(ctx: _Ctx, node: _Node | None) -> DurationModel:
    if node is None or (m := ctx.mapping(node, "a mapping {interference: 0.0, compute_basis: sm}")) is None:
        return DurationModel()
    ctx.keys(m, DURATION_MODEL_KEYS, "duration_model")
    interference, basis = 0.0, "sm"
    if (n := m.get("interference")) is not None and (v := ctx.number(n)) is not None:
        if v < 0:
            ctx.at(n, f"must be >= 0, got {v}", "the fractional slowdown per co-located run, e.g. 0.1")
        else:
            interference = float(v)
    if (n := m.get("compute_basis")) is not None and (s := ctx.string(n, "sm or slices")) is not None:
        if s not in ("sm", "slices"):
            ctx.at(n, f"unknown compute_basis {s!r}", "write sm or slices")
        else:
            basis = s
    return DurationModel(interference, basis)


def _parse_launch(ctx: _Ctx, node: _Node | None) -> LaunchOptions:
    if node is None or (m := ctx.mapping(node, "a mapping of launch options")) is None:
        return LaunchOptions()
    ctx.keys(m, LAUNCH_KEYS, "launch")
    kw: dict[str, Any] = {}
    if (n := m.get("retries")) is not None and (v := ctx.integer(n, 0)) is not None:
        kw["retries"] = v
    for key in ("backoff", "stop_grace", "flapping_window"):
        if (n := m.get(key)) is not None:
            if (
                key != "flapping_window"
                and isinstance(n, _Scalar)
                and re.fullmatch(r"\s*0+(\.0*)?\s*[a-z]*\s*", str(n.value))
            ):
                kw[f"{key}_s"] = 0.0  # zero backoff or grace is meaningful
            elif (d := ctx.duration(n)) is not None:
                kw[f"{key}_s"] = d
    if (n := m.get("flapping_max")) is not None and (v := ctx.integer(n, 1)) is not None:
        kw["flapping_max"] = v
    if (n := m.get("env")) is not None and (env := ctx.env(n)) is not None:
        kw["env"] = {k: v for k, (v, _) in env.items()}
    if (n := m.get("log_dir")) is not None and (s := ctx.string(n, "a directory")) is not None:
        if not s.strip():
            ctx.at(n, "log_dir is empty")
        else:
            kw["log_dir"] = s
    return LaunchOptions(**kw)


def _merge_defaults(defaults: _Map | None, group: _Map) -> _Map:
    """Group fields over defaults; `env` and `parameters` mappings merge key by key."""
    if defaults is None:
        return group
    out: dict[Any, _Entry] = {k: e for k, e in defaults.entries.items() if k in GROUP_KEYS and k != "name"}
    for key, e in group.entries.items():
        base = out.get(key)
        if (
            key in ("env", "parameters")
            and base is not None
            and isinstance(base.value, _Map)
            and isinstance(e.value, _Map)
        ):
            entries = dict(base.value.entries)
            entries.update(e.value.entries)
            out[key] = _Entry(key, e.key_line, e.path, _Map(e.value.line, e.value.path, entries))
        else:
            out[key] = e
    return _Map(group.line, group.path, out)


# ---- one group ---------------------------------------------------------------------------------


def _parse_group(
    ctx: _Ctx,
    g: _Map,
    name: str,
    own: _Map,
    base_dir: Path,
    get_catalog: Callable[[], Any],
    fleet: tuple[FleetEntry, ...] | None,
) -> tuple[Group, Callable[[int, int], list[Run]]] | None:
    """Validate one group's fields; returns the Group and a function that expands its runs."""
    if own.path:  # in the single-group form the top-level keys were checked already
        ctx.keys(_Map(own.line, own.path, own.entries), GROUP_KEYS, "group")

    # -- method, count, repeats
    method = "grid"
    if (n := g.get("method")) is not None and (s := ctx.string(n, "grid or random")) is not None:
        if s not in ("grid", "random"):
            hint = "bayes and other adaptive methods are out of scope (W&B or Optuna do them)" if s == "bayes" else None
            ctx.at(n, f"unknown method {s!r}; expected grid or random", hint)
            method = "?"
        else:
            method = s
    count = _alias(ctx, g, "count", "run_cap", 1)
    repeats = _alias(ctx, g, "repeats", "num_samples", 1) or 1
    if method == "random" and count is None and g.get("count") is None and g.get("run_cap") is None:
        ctx.missing(g, "count", "missing `count` for method: random", "say how many samples to draw, e.g. count: 20")
    if method == "grid" and (g.get("count") is not None or g.get("run_cap") is not None):
        key = "count" if g.get("count") is not None else "run_cap"
        ctx.at(g.entries[key], f"`{key}` applies to method: random only", "drop it, or add method: random", key=True)

    # -- parameters and zip
    params = _parse_parameters(ctx, g.get("parameters"), method)
    pnames = [p.name for p in params] if params is not None else []
    zips = _parse_zip(ctx, g.get("zip"), params, method)

    # -- command and program
    program = None
    if (n := g.get("program")) is not None:
        program = ctx.string(n, "a program path")
    shell = False
    if (n := g.get("shell")) is not None:
        shell = bool(ctx.boolean(n))
    cmd = _parse_command(ctx, g, shell, program, pnames if params is not None else None)

    # -- memory
    memory = None
    if (n := g.get("memory")) is None:
        ctx.missing(
            g,
            "memory",
            "missing `memory`",
            "give the run's device footprint: memory: 2.5GiB, a table {by:, table:}, or {estimate: {...}}",
        )
    else:
        memory = _parse_memory(ctx, n, pnames if params is not None else None)

    # -- the rest
    duration_s = _opt(g, "duration", ctx.duration)
    timeout_s = _opt(g, "timeout", ctx.duration)
    compute = 1.0
    if (n := g.get("compute")) is not None and (v := ctx.number(n)) is not None:
        if not 0 < v <= 1:
            ctx.at(n, f"compute must be in (0, 1], got {v}", "the fraction of a whole GPU's compute the run keeps busy")
        else:
            compute = float(v)
    max_per = 1
    if (n := g.get("max_runs_per_instance")) is not None and (v := ctx.integer(n, 1)) is not None:
        max_per = v
    retries = None
    if (n := g.get("retries")) is not None:
        retries = ctx.integer(n, 0)
    profiles = _parse_profiles(ctx, g.get("profiles"), get_catalog, fleet)
    env: dict[str, tuple[str, _Node]] = {}
    env_parts: dict[str, list[_Part]] = {}
    if (n := g.get("env")) is not None:
        env = ctx.env(n) or {}
        for key, (text, vnode) in env.items():
            parts, errors = _parse_template(text, shell=False)
            for msg, hint in errors:
                ctx.at(vnode, msg, hint)
            for p in parts:
                if isinstance(p, _Macro) and p.name not in LAUNCH_MACROS + ("program",):
                    ctx.at(
                        vnode,
                        f"{p.text} can only be used in command",
                        "env values may hold {param}, ${program}, ${run_id}, ${run_dir} and ${attempt}",
                    )
                if isinstance(p, _Macro) and p.name == "program" and program is None:
                    ctx.at(vnode, "${program} is used but the group has no `program`", "add program: train.py")
            if params is not None:
                _check_names(ctx, vnode, parts, pnames)
            env_parts[key] = parts
    workdir = str(base_dir)
    if (n := g.get("workdir")) is not None and (s := ctx.string(n, "a directory")) is not None:
        if not s.strip():
            ctx.at(n, "workdir is empty", "omit it to run in the sweep file's directory")
        else:
            workdir = str((base_dir / Path(s).expanduser()).resolve())

    def combos(seed: int) -> list[dict[str, Any]] | None:
        assert params is not None and zips is not None
        if method == "grid":
            return _grid(ctx, g, params, zips, repeats)
        if (count or 0) * repeats > MAX_RUNS:
            ctx.at(g, f"count × repeats is more than {MAX_RUNS} runs")
            return None
        return _random(ctx, g, name, params, zips, count or 0, seed)

    if params is None or zips is None or memory is None or method not in ("grid", "random"):
        return None
    if ctx.failed or cmd is None:
        if method == "grid" or count is not None:  # still find the per-run memory problems
            for values in (combos(0) or [])[:MAX_RUNS]:
                memory.resolve(ctx, values, 0)
        return None
    group = Group(
        name=name,
        command=cmd.written,
        memory=memory.spec,
        program=program,
        shell=shell,
        method=method,
        count=count if method == "random" else None,
        repeats=repeats,
        parameters=tuple(params),
        zip=tuple(zips),
        duration_s=duration_s,
        compute=compute,
        max_runs_per_instance=max_per,
        profiles=profiles,
        env={k: v for k, (v, _) in env.items()},
        workdir=workdir,
        retries=retries,
        timeout_s=timeout_s,
        line=own.line,
    )

    def expand(seed: int, start: int) -> list[Run]:
        points = combos(seed)
        if points is None:
            return []
        out: list[Run] = []
        seen: dict[str, int] = {}
        dups = 0
        for rep in range(repeats):
            for values in points:
                key = _canonical([values, rep])
                if key in seen:
                    dups += 1
                    continue
                seen[key] = len(out)
                mem = memory.resolve(ctx, values, rep)
                if mem is None:
                    continue
                full = dict(values)
                full["repeat"] = rep
                out.append(
                    Run(
                        id=run_id(name, values, rep),
                        group=name,
                        index=start + len(out),
                        params=dict(values),
                        repeat=rep,
                        argv=cmd.render(full, values),
                        shell=shell,
                        env={
                            k: _fill(env_parts[k], full, lambda m: (program or "") if m.name == "program" else m.text)
                            for k in env_parts
                        },
                        workdir=workdir,
                        memory_mib=mem[0],
                        memory_source=mem[1],
                        memory_parts=mem[2],
                        duration_s=duration_s,
                        compute=compute,
                        max_runs_per_instance=max_per,
                        profiles=profiles,
                        retries=retries,
                        timeout_s=timeout_s,
                    )
                )
        if dups:
            ctx.at(
                g,
                f"group {name!r} has {dups} duplicate run{'s' if dups != 1 else ''} (same parameters and repeat)",
                "remove repeated values; use repeats: for replicas",
            )
        return out

    return group, expand


def _opt(g: _Map, key: str, check: Callable[[_Node], Any]) -> Any:
    n = g.get(key)
    return None if n is None else check(n)


def _alias(ctx: _Ctx, g: _Map, key: str, alias: str, minimum: int) -> int | None:
    a, b = (g.entries.get(k) if g.get(k) is not None else None for k in (key, alias))
    if a is not None and b is not None:
        ctx.at(b, f"`{alias}` is another name for `{key}`; give only one", key=True)
        return None
    e = a or b
    return None if e is None else ctx.integer(e.value, minimum)


# ---- parameters --------------------------------------------------------------------------------


def _parse_parameters(ctx: _Ctx, node: _Node | None, method: str) -> list[Parameter] | None:
    if node is None:
        return []
    m = ctx.mapping(node, "a mapping of parameters (name: values)")
    if m is None:
        return None
    out: list[Parameter] = []
    ok = True
    for key, e in m.entries.items():
        if not isinstance(key, str) or not _PARAM_NAME_RE.fullmatch(key):
            ctx.at(
                e,
                f"{str(key)!r} is not a valid parameter name",
                "use letters, digits, '_', '.' and '-', starting with a letter or '_'",
                key=True,
            )
            ok = False
            continue
        if key == "repeat":
            ctx.at(e, "`repeat` is reserved for the repeat index ({repeat})", "rename the parameter", key=True)
            ok = False
            continue
        p = _parse_parameter(ctx, key, e.value, method)
        if p is None:
            ok = False
        else:
            out.append(p)
    return out if ok else None


_FORMS = "expected a list, {values: [...]}, {value: x} or a distribution"


def _parse_parameter(ctx: _Ctx, name: str, node: _Node, method: str) -> Parameter | None:
    if isinstance(node, _Seq):
        values = _scalar_values(ctx, node)
        if values is None:
            return None
        return Parameter(name, values, line=node.line) if _nonempty(ctx, node, values) else None
    if isinstance(node, _Scalar):
        if isinstance(node.value, str):
            return _hydra(ctx, name, node)
        if node.value is None:
            ctx.at(node, "empty grid: this parameter has no values", "write values, or {value: null} for a literal null")
            return None
        v = _scalar_value(ctx, node)
        return None if v is _BAD else Parameter(name, (v,), line=node.line)
    assert isinstance(node, _Map)
    keys = set(node.entries)
    if not keys & {"value", "values", "distribution", "min", "max", "mu", "sigma"}:
        ctx.at(
            node,
            f"{_FORMS}, got {_describe(node)}",
            "e.g. [1, 2, 3], {values: [1, 2, 3]}, {value: 7} or {distribution: uniform, min: 0, max: 1}",
        )
        return None
    ctx.keys(node, PARAM_KEYS, "parameter")
    if "values" in keys and "distribution" in keys:
        ctx.at(
            node.entries["distribution"],
            "`values` together with `distribution` in one parameter",
            "keep values: for a list, or distribution: (method: random) for sampling",
            key=True,
        )
        return None
    if "value" in keys and ("values" in keys or "distribution" in keys):
        ctx.at(
            node.entries["value"],
            "`value` is one fixed value; it cannot be combined with values or distribution",
            key=True,
        )
        return None
    if "value" in keys or "values" in keys:
        extra = keys - {"value", "values"}
        for k in sorted(extra & set(PARAM_KEYS), key=str):
            ctx.at(node.entries[k], f"`{k}` belongs to a distribution, not to a list of values", key=True)
        if "value" in keys:
            v = _scalar_value(ctx, node.entries["value"].value)
            return None if v is _BAD or extra else Parameter(name, (v,), line=node.line)
        vn = node.entries["values"].value
        if not isinstance(vn, _Seq):
            ctx.at(vn, f"expected a list of values, got {_describe(vn)}")
            return None
        values = _scalar_values(ctx, vn)
        if values is None or extra or not _nonempty(ctx, vn, values):
            return None
        return Parameter(name, values, line=node.line)
    return _distribution(ctx, name, node, method)


_BAD = object()


def _scalar_value(ctx: _Ctx, node: _Node) -> Any:
    if not isinstance(node, _Scalar):
        ctx.at(
            node,
            f"a parameter value must be a single value (string, number, boolean), got {_describe(node)}",
            "write a nested value as a string and parse it in the program",
        )
        return _BAD
    v = node.value
    if isinstance(v, (_dt.date, _dt.datetime)):
        ctx.at(node, f"expected a string, number or boolean, got {_describe_value(v)}")
        return _BAD
    if isinstance(v, float) and not math.isfinite(v):
        ctx.at(node, f"{node.raw!r} is not a finite number")
        return _BAD
    if isinstance(v, str) and "\x00" in v:
        ctx.at(node, "a value cannot hold a NUL character (no program can receive it)")
        return _BAD
    if not isinstance(v, (str, int, float, bool)) and v is not None:  # pragma: no cover - binary etc.
        ctx.at(node, f"unsupported value type {type(v).__name__}")
        return _BAD
    return v


def _scalar_values(ctx: _Ctx, node: _Seq) -> tuple[Scalar, ...] | None:
    out: list[Scalar] = []
    ok = True
    seen: dict[str, int] = {}
    for item in node.items:
        v = _scalar_value(ctx, item)
        if v is _BAD:
            ok = False
            continue
        key = _canonical(v)
        if key in seen:
            ctx.at(
                item,
                f"value {key} is listed twice (first at line {seen[key]})",
                "each value makes its own runs; use repeats: for replicas",
            )
            ok = False
            continue
        seen[key] = item.line
        out.append(v)
    return tuple(out) if ok else None


def _nonempty(ctx: _Ctx, node: _Node, values: Sequence[Any]) -> bool:
    if values:
        return True
    ctx.at(node, "empty grid: this parameter has no values", "list at least one value, or remove the parameter")
    return False


_HYDRA_FN = re.compile(r"^\s*(range|choice|interval|glob|sort|shuffle|tag)\s*\((.*)\)\s*$", re.S)


def _hydra(ctx: _Ctx, name: str, node: _Scalar) -> Parameter | None:
    """Hydra shorthand: `"a,b,c"`, `"range(0,10,2)"`, `"choice(a,b)"`; otherwise one string value."""
    text = node.value
    fn = _HYDRA_FN.match(text)
    if fn:
        fname, body = fn.group(1), fn.group(2)
        if fname == "range":
            return _hydra_range(ctx, name, node, body)
        if fname == "choice":
            items = _split_items(ctx, node, body)
            return None if items is None else Parameter(name, items, line=node.line)
        hint = (
            "interval() samples a range: write {distribution: uniform, min: a, max: b} with method: random"
            if fname == "interval"
            else "write the value as {value: '...'} if it is meant literally"
        )
        ctx.at(
            node,
            f"unsupported sweep function {fname}() in {text!r}; supported: a,b,c  range(start,stop[,step])  "
            "choice(a,b)",
            hint,
        )
        return None
    if "," in text:
        items = _split_items(ctx, node, text)
        return None if items is None else Parameter(name, items, line=node.line)
    v = _scalar_value(ctx, node)
    return None if v is _BAD else Parameter(name, (v,), line=node.line)


def _split_items(ctx: _Ctx, node: _Scalar, text: str) -> tuple[Scalar, ...] | None:
    out: list[Scalar] = []
    seen: set[str] = set()
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            ctx.at(
                node,
                f"empty item in the comma list {node.value!r}",
                "remove the extra comma; a value holding a comma is written {value: 'a,b'}",
            )
            return None
        v: Any = item
        try:
            parsed = yaml.load(item, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError:
            parsed = None
        if isinstance(parsed, (str, int, float, bool)) and not (
            isinstance(parsed, float) and not math.isfinite(parsed)
        ):
            v = parsed
        key = _canonical(v)
        if key in seen:
            ctx.at(node, f"value {item!r} is listed twice in {node.value!r}")
            return None
        seen.add(key)
        out.append(v)
    return tuple(out)


def _hydra_range(ctx: _Ctx, name: str, node: _Scalar, body: str) -> Parameter | None:
    nums: list[int | float] = []
    for raw in body.split(","):
        try:
            s = raw.strip()
            nums.append(int(s) if re.fullmatch(r"[-+]?[0-9]+", s) else float(s))
        except ValueError:
            nums = []
            break
    if not 1 <= len(nums) <= 3 or not all(math.isfinite(x) for x in nums):
        ctx.at(node, f"{node.value!r} is not range(stop), range(start, stop) or range(start, stop, step)")
        return None
    start, stop, step = (0, nums[0], 1) if len(nums) == 1 else (nums[0], nums[1], nums[2] if len(nums) == 3 else 1)
    if step == 0:
        ctx.at(node, f"{node.value!r}: the step cannot be 0")
        return None
    if all(isinstance(x, int) for x in (start, stop, step)):
        values: tuple[Scalar, ...] = tuple(range(int(start), int(stop), int(step)))
    else:
        n = max(0, math.ceil((stop - start) / step - 1e-12))
        values = tuple(round(start + i * step, 12) for i in range(n))
    if len(values) > MAX_RUNS:
        ctx.at(node, f"{node.value!r} has {len(values)} values (more than {MAX_RUNS})")
        return None
    if not values:
        ctx.at(node, f"empty grid: {node.value!r} has no values", "check start, stop and the step's sign")
        return None
    return Parameter(name, values, line=node.line)


def _distribution(ctx: _Ctx, name: str, node: _Map, method: str) -> Parameter | None:
    dist: str | None = None
    if (dn := node.get("distribution")) is not None:
        dist = ctx.string(dn, "a distribution name")
        if dist is None:
            return None
        if dist not in DISTRIBUTIONS:
            close = difflib.get_close_matches(dist, DISTRIBUTIONS, n=1, cutoff=0.6)
            hint = (
                "for a list of choices use values: [...]"
                if dist == "categorical"
                else ((f"did you mean {close[0]!r}? " if close else "") + "distributions: " + ", ".join(DISTRIBUTIONS))
            )
            ctx.at(dn, f"unknown distribution {dist!r}", hint)
            return None
    elif "min" in node.entries and "max" in node.entries:
        lo, hi = node.get("min"), node.get("max")
        both_int = all(
            isinstance(n, _Scalar) and isinstance(n.value, int) and not isinstance(n.value, bool) for n in (lo, hi)
        )
        dist = "int_uniform" if both_int else "uniform"  # as W&B infers it
    else:
        ctx.at(
            node,
            f"{_FORMS}, got {_describe(node)}",
            "a distribution needs distribution: (or min: and max: for uniform); normal takes mu: and sigma:",
        )
        return None
    if method == "grid":
        ctx.at(
            node.entries.get("distribution") or node,
            "a distribution never ends a grid; use method: random",
            "or list the values to try: values: [...]",
        )
        return None
    wanted = ("mu", "sigma", "q") if dist in _NORMAL_FAMILY else ("min", "max", "q")
    args: dict[str, float] = {}
    ok = True
    for key in ("min", "max", "q", "mu", "sigma"):
        e = node.entries.get(key)
        if e is None:
            continue
        if key not in wanted or (key == "q" and not dist.startswith("q_")):
            ctx.at(e, f"`{key}` does not apply to distribution {dist}", key=True)
            ok = False
            continue
        v = ctx.number(e.value)
        if v is None:
            ok = False
        else:
            args[key] = v
    if not ok:
        return None
    if dist in _NORMAL_FAMILY:
        args.setdefault("mu", 0.0)
        args.setdefault("sigma", 1.0)
        if args["sigma"] <= 0:
            ctx.at(node.get("sigma") or node, f"sigma must be > 0, got {args['sigma']}")
            return None
    else:
        for key in ("min", "max"):
            if key not in args:
                ctx.missing(node, key, f"distribution {dist} needs `{key}`")
                ok = False
        if not ok:
            return None
        if args["min"] >= args["max"]:
            ctx.at(node.get("max") or node, f"max ({args['max']}) must be greater than min ({args['min']})")
            return None
        if dist == "int_uniform" and not all(isinstance(args[k], int) for k in ("min", "max")):
            ctx.at(node, "int_uniform needs whole-number min and max")
            return None
        if dist in ("log_uniform_values", "q_log_uniform_values") and args["min"] <= 0:
            ctx.at(
                node.get("min") or node,
                f"{dist} needs min > 0 (it samples between the values' logarithms)",
                "for exponents use log_uniform (min and max are natural-log exponents, as W&B)",
            )
            return None
    if dist.startswith("q_"):
        args.setdefault("q", 1)
        if args["q"] <= 0:
            ctx.at(node.get("q") or node, f"q must be > 0, got {args['q']}")
            return None
    return Parameter(name, None, dist, args, line=node.line)


def _parse_zip(
    ctx: _Ctx, node: _Node | None, params: list[Parameter] | None, method: str
) -> list[tuple[str, ...]] | None:
    if node is None:
        return []
    if not isinstance(node, _Seq) or not all(isinstance(i, _Seq) for i in node.items):
        ctx.at(node, f"expected a list of parameter-name lists, e.g. [[lr, warmup]], got {_describe(node)}")
        return None
    by_name = {p.name: p for p in params or []}
    out: list[tuple[str, ...]] = []
    used: dict[str, int] = {}
    ok = True
    for item in node.items:
        assert isinstance(item, _Seq)
        names: list[str] = []
        for n in item.items:
            s = ctx.string(n, "a parameter name")
            if s is None:
                ok = False
                continue
            if params is not None and s not in by_name:
                ctx.at(
                    n, f"zip names {s!r}, which is not a parameter; parameters are: {', '.join(by_name) or '(none)'}"
                )
                ok = False
                continue
            if s in used:
                ctx.at(n, f"parameter {s!r} is in more than one zip group (first at line {used[s]})")
                ok = False
                continue
            used[s] = n.line
            names.append(s)
        if not item.items:
            ctx.at(item, "an empty zip group", "list the parameters that vary together, e.g. [lr, warmup]")
            ok = False
            continue
        if params is None or not names or len(names) != len(item.items):
            continue
        dists = [s for s in names if by_name[s].values is None]
        if dists:
            ctx.at(item, f"cannot zip {', '.join(dists)}: a distribution has no list of values to pair up")
            ok = False
            continue
        lengths = {s: len(by_name[s].values or ()) for s in names}
        if len(set(lengths.values())) > 1:
            shown = ", ".join(f"{s} has {k}" for s, k in lengths.items())
            ctx.at(item, f"zipped parameters need value lists of equal length: {shown}")
            ok = False
            continue
        tuples = list(zip(*(by_name[s].values or () for s in names), strict=True))
        if len({_canonical(list(t)) for t in tuples}) != len(tuples):
            ctx.at(item, f"zipped parameters {', '.join(names)} repeat the same combination of values")
            ok = False
            continue
        out.append(tuple(names))
    return out if ok and params is not None else None


# ---- expansion ---------------------------------------------------------------------------------


def _grid(
    ctx: _Ctx, g: _Map, params: list[Parameter], zips: list[tuple[str, ...]], repeats: int
) -> list[dict[str, Any]] | None:
    """Cartesian product in the written order; a zip group is one axis at its first member (in
    parameter order). None (with a problem) if the product would exceed MAX_RUNS."""
    by_name = {p.name: p for p in params}
    zip_of = {n: z for z in zips for n in z}
    axes: list[list[list[tuple[str, Any]]]] = []
    placed: set[tuple[str, ...]] = set()
    for p in params:
        z = zip_of.get(p.name)
        if z is None:
            axes.append([[(p.name, v)] for v in p.values or ()])
        elif z not in placed:
            placed.add(z)
            columns = [by_name[n].values or () for n in z]
            axes.append([list(zip(z, row, strict=True)) for row in zip(*columns, strict=True)])
    size = math.prod(len(a) for a in axes) * repeats
    if size > MAX_RUNS:
        ctx.at(g, f"the grid expands to {size} runs (more than {MAX_RUNS})", "use fewer values or method: random")
        return None
    order = [p.name for p in params]
    combos = []
    for choice in itertools.product(*axes):
        d = dict(kv for part in choice for kv in part)
        combos.append({k: d[k] for k in order})
    return combos


def _random(
    ctx: _Ctx, g: _Map, group: str, params: list[Parameter], zips: list[tuple[str, ...]], count: int, seed: int
) -> list[dict[str, Any]] | None:
    """`count` distinct samples, deterministic in (sweep seed, group name), independent of file order."""
    digest = hashlib.sha256(f"migbench-random:{seed}:{group}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    by_name = {p.name: p for p in params}
    zip_of = {n: z for z in zips for n in z}
    order = [p.name for p in params]
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    attempts, limit = 0, 100 * count + 100
    while len(out) < count and attempts < limit:
        attempts += 1
        d: dict[str, Any] = {}
        for n in sorted(by_name):
            if n in d:
                continue
            z = zip_of.get(n)
            if z is not None:
                members = sorted(z)
                columns = [by_name[m].values or () for m in members]
                rows = sorted(zip(*columns, strict=True), key=lambda r: _canonical(list(r)))
                d.update(zip(members, rng.choice(rows), strict=True))
            else:
                d[n] = _sample(rng, by_name[n])
        key = _canonical(d)
        if key in seen:
            continue
        seen.add(key)
        out.append({k: d[k] for k in order})
    if len(out) < count:
        ctx.at(
            g.entries.get("count") or g.entries.get("run_cap") or g,
            f"random sampling found only {len(out)} distinct points for count: {count}",
            "lower count, or use method: grid to try every combination once",
        )
        return None
    return out


def _sample(rng: random.Random, p: Parameter) -> Any:
    if p.values is not None:
        return rng.choice(sorted(p.values, key=_canonical))
    a, dist = p.args, p.distribution
    if dist == "int_uniform":
        return rng.randint(int(a["min"]), int(a["max"]))
    if dist in ("uniform", "q_uniform"):
        x = rng.uniform(a["min"], a["max"])
    elif dist in ("log_uniform", "q_log_uniform"):
        x = math.exp(rng.uniform(a["min"], a["max"]))
    elif dist in ("log_uniform_values", "q_log_uniform_values"):
        x = math.exp(rng.uniform(math.log(a["min"]), math.log(a["max"])))
    elif dist in ("normal", "q_normal"):
        x = rng.gauss(a["mu"], a["sigma"])
    else:  # log_normal, q_log_normal
        x = math.exp(rng.gauss(a["mu"], a["sigma"]))
    if dist and dist.startswith("q_"):
        q = a["q"]
        x = round(x / q) * q
        if isinstance(q, int) and all(isinstance(a.get(k, 0), int) for k in ("min", "max", "mu")):
            return int(x)
        return round(x, 12)
    return x


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


# ---- command -----------------------------------------------------------------------------------


@dataclass
class _Command:
    written: str | tuple[str, ...]
    shell: bool
    tokens: list[list[_Part]]  # non-shell: one parts list per argv element; shell: one list
    program: str | None

    def _macro(self, m: _Macro, params: dict[str, Any], quote: bool) -> str:
        q = shlex.quote if quote else (lambda s: s)
        if m.name == "program":
            return q(self.program or "")
        if m.name == "env":
            return "/usr/bin/env"
        if m.name == "interpreter":
            return "python"
        if m.name == "args_json":
            return q(_canonical(params))
        if m.name in _LIST_MACROS:  # only in shell mode; non-shell expands whole tokens
            return " ".join(q(a) for a in _list_macro(m.name, params))
        return m.text  # launch-time macro

    def render(self, values: dict[str, Any], params: dict[str, Any]) -> tuple[str, ...]:
        if self.shell:
            script = _fill(self.tokens[0], values, lambda m: self._macro(m, params, True), quote=True)
            return ("/bin/sh", "-c", script)
        argv: list[str] = []
        for parts in self.tokens:
            if len(parts) == 1 and isinstance(parts[0], _Macro) and parts[0].name in _LIST_MACROS:
                argv.extend(_list_macro(parts[0].name, params))
            else:
                argv.append(_fill(parts, values, lambda m: self._macro(m, params, False)))
        return tuple(argv)


def _list_macro(name: str, params: dict[str, Any]) -> list[str]:
    out = []
    for k in sorted(params):
        v = params[k]
        if name == "args":
            out.append(f"--{k}={render_value(v)}")
        elif name == "args_no_hyphens":
            out.append(f"{k}={render_value(v)}")
        elif v is True:  # args_no_boolean_flags
            out.append(f"--{k}")
        elif v is not False:
            out.append(f"--{k}={render_value(v)}")
    return out


def _parse_command(ctx: _Ctx, g: _Map, shell: bool, program: str | None, pnames: list[str] | None) -> _Command | None:
    node = g.get("command")
    if node is None:
        ctx.missing(
            g, "command", "missing `command`", "e.g. command: python train.py --lr {lr}   (or a list of arguments)"
        )
        return None
    tokens: list[tuple[_Node, str]] = []
    written: str | tuple[str, ...]
    if isinstance(node, _Scalar) and isinstance(node.value, str):
        written = node.value
        if not written.strip():
            ctx.at(node, "the command is empty")
            return None
        if shell:
            tokens = [(node, written)]
        else:
            try:
                tokens = [(node, t) for t in shlex.split(written)]
            except ValueError as exc:
                ctx.at(
                    node,
                    f"cannot split the command into arguments: {exc}",
                    "close the quote, or write the command as a list of arguments",
                )
                return None
    elif isinstance(node, _Seq):
        if shell:
            ctx.at(node, "with shell: true the command must be one string", 'write command: "a | b" as a string')
            return None
        if not node.items:
            ctx.at(node, "the command is empty")
            return None
        for item in node.items:
            if isinstance(item, _Scalar) and isinstance(item.value, str):
                tokens.append((item, item.value))
            elif isinstance(item, _Scalar) and item.value is not None and not isinstance(item.value, (_dt.date, bool)):
                tokens.append((item, item.raw))  # a number: the text as written
            else:
                ctx.at(item, f"expected a string argument, got {_describe(item)}", "quote it")
        written = tuple(t for _, t in tokens)
    else:
        ctx.at(node, f"expected a string or a list of strings, got {_describe(node)}")
        return None
    compiled: list[list[_Part]] = []
    ok = True
    for tnode, text in tokens:
        parts, errors = _parse_template(text, shell)
        for msg, hint in errors:
            ctx.at(tnode, msg, hint)
            ok = False
        for p in parts:
            if isinstance(p, _Macro) and p.name == "program" and program is None:
                ctx.at(tnode, "${program} is used but the group has no `program`", "add program: train.py")
                ok = False
            if isinstance(p, _Macro) and p.name in _LIST_MACROS and not shell and len(parts) != 1:
                ctx.at(
                    tnode,
                    f"{p.text} expands to several arguments, so it must stand alone as one argument",
                    "give it its own argument, e.g. python train.py ${args}",
                )
                ok = False
        if pnames is not None and not _check_names(ctx, tnode, parts, pnames):
            ok = False
        compiled.append(parts)
    if not ok or pnames is None:
        return None
    return _Command(written, shell, compiled, program)


# ---- profiles ----------------------------------------------------------------------------------


def _parse_profiles(
    ctx: _Ctx, node: _Node | None, get_catalog: Callable[[], Any], fleet: tuple[FleetEntry, ...] | None
) -> tuple[str, ...] | None:
    if node is None:
        return None
    if not isinstance(node, _Seq):
        ctx.at(node, f"expected a list of MIG profile names such as [1g.10gb, 2g.20gb], got {_describe(node)}")
        return None
    if not node.items:
        ctx.at(
            node, "`profiles` is empty: no instance could run this group", "list allowed profiles, or omit profiles:"
        )
        return None
    out: list[str] = []
    for item in node.items:
        s = ctx.string(item, "a MIG profile name such as 1g.10gb")
        if s is None:
            continue
        if not _PROFILE_RE.fullmatch(s):
            ctx.at(
                item,
                f"{s!r} is not a MIG profile name",
                "profiles look like 1g.10gb, 3g.40gb or 1g.10gb+me (nvidia-smi mig -lgip lists them)",
            )
            continue
        if s in out:
            ctx.at(item, f"profile {s!r} is listed twice")
            continue
        out.append(s)
    if fleet and len(out) == len(node.items):
        cat = get_catalog()
        try:
            models = [cat.model(f.gpu) for f in fleet]
        except Exception:  # noqa: BLE001 - a catalogue problem is reported elsewhere
            models = []
        if models:
            for item, s in zip(node.items, out, strict=True):
                if not any(m.has_profile(s) for m in models):
                    ctx.at(
                        item,
                        f"profile {s!r} exists on none of the fleet's GPUs ({', '.join(m.key for m in models)})",
                        "`migbench catalog show MODEL` lists a model's profiles",
                    )
    return tuple(out)


# ---- memory ------------------------------------------------------------------------------------


@dataclass
class _Memory:
    spec: MemorySpec
    resolve: Callable[[_Ctx, dict[str, Any], int], tuple[int, str, tuple[tuple[str, int], ...]] | None]


def _parse_memory(ctx: _Ctx, node: _Node, pnames: list[str] | None) -> _Memory | None:
    if isinstance(node, _Scalar):
        if node.value == "auto":
            ctx.at(
                node,
                "memory: auto (calibration on a GPU) is not supported yet",
                "give a quantity (2.5GiB), a table {by: param, table: {...}} or {estimate: {...}}",
            )
            return None
        mib = ctx.memory(node)
        if mib is None:
            return None
        return _Memory(ExplicitMemory(mib), lambda c, v, r: (mib, "explicit", ()))
    if not isinstance(node, _Map):
        ctx.at(node, f"expected a memory quantity, a table or an estimate, got {_describe(node)}", units.MEMORY_HINT)
        return None
    if "estimate" in node.entries:
        for k, e in node.entries.items():
            if k != "estimate":
                ctx.at(e, f"`{k}` cannot be combined with `estimate`", key=True)
        return _parse_estimate(ctx, node.entries["estimate"].value, pnames)
    if "by" in node.entries or "table" in node.entries:
        return _parse_table(ctx, node, pnames)
    ctx.at(
        node,
        f"expected a memory quantity, {{by: param, table: {{...}}}} or {{estimate: {{...}}}}, got {_describe(node)}",
        units.MEMORY_HINT,
    )
    return None


def _parse_table(ctx: _Ctx, node: _Map, pnames: list[str] | None) -> _Memory | None:
    ctx.keys(node, MEMORY_TABLE_KEYS, "memory table", " (or estimate:)")
    by = None
    if (bn := node.get("by")) is None:
        ctx.missing(node, "by", "a memory table needs `by` (the parameter whose value picks the entry)")
    elif (by := ctx.string(bn, "a parameter name")) is not None and pnames is not None and by not in pnames:
        ctx.at(
            bn, f"memory table is by {by!r}, which is not a parameter; parameters are: {', '.join(pnames) or '(none)'}"
        )
        by = None
    table: dict[str, int] = {}
    lines: dict[str, int] = {}
    ok = True
    if (tn := node.get("table")) is None:
        ctx.missing(node, "table", "a memory table needs `table` ({value: quantity, ...})")
        ok = False
    elif (tm := ctx.mapping(tn, "a mapping {value: quantity, ...}")) is None:
        ok = False
    else:
        if not tm.entries:
            ctx.at(tm, "the memory table is empty")
            ok = False
        for key, e in tm.entries.items():
            skey = render_value(key)
            if skey in table or skey in lines:
                ctx.at(e, f"table key {skey!r} is given twice (first at line {lines[skey]})", key=True)
                ok = False
                continue
            lines[skey] = e.key_line
            mib = ctx.memory(e.value)
            if mib is None:
                ok = False
            else:
                table[skey] = mib
    default = None
    if (dn := node.get("default")) is not None:
        default = ctx.memory(dn)
        ok = ok and default is not None
    if not ok or by is None:
        return None
    tnode = node.get("table")
    spec = MemoryTable(by, table, default)
    byname = by

    def resolve(c: _Ctx, values: dict[str, Any], rep: int) -> tuple[int, str, tuple[tuple[str, int], ...]] | None:
        val = render_value(values[byname])
        source = f"table:{byname}={val}"
        if val in table:
            return table[val], source, ()
        if default is not None:
            return default, source, ()
        c.at(
            tnode,
            f"group {c.group!r}: no memory for {byname}={val} (no table entry and no default)",
            f"add `{val}: <quantity>` to the table, or a `default:`",
        )
        return None

    return _Memory(spec, resolve)


_EST_INT = ("batch_size", "seq_len", "hidden", "layers", "heads", "vocab", "ffn")


def _coerce_estimate(key: str, value: Any) -> Any:
    """One estimate field from YAML (or from a substituted placeholder) to EstimateSpec's type."""
    if key == "params":
        return parse_param_count(value)
    if key in ("precision", "optimizer", "attention"):
        known = {"precision": PRECISIONS, "optimizer": OPTIMIZERS, "attention": ATTENTIONS}[key]
        if not isinstance(value, str) or value.strip().lower() not in known:
            raise ValueError(f"unknown {key} {value!r} (known: {', '.join(known)})")
        return value.strip().lower()
    if key in _EST_INT:
        if isinstance(value, str) and re.fullmatch(r"\s*[0-9]+\s*", value):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"expected a whole number >= 1, got {_describe_value(value)}")
        return value
    if key == "activation_checkpointing":
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {_describe_value(value)}")
        return value
    if key in ("context", "workspace"):
        return float(units.parse_memory_mib(value))
    if key == "headroom":
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"expected a number >= 0 such as 0.15, got {_describe_value(value)}")
        return float(value)
    raise KeyError(key)  # pragma: no cover


_EST_FIELD = {"context": "context_mib", "workspace": "workspace_mib"}


def _parse_estimate(ctx: _Ctx, node: _Node, pnames: list[str] | None) -> _Memory | None:
    m = ctx.mapping(node, "a mapping of estimator inputs (params, precision, optimizer, batch_size, ...)")
    if m is None:
        return None
    ctx.keys(m, ESTIMATE_KEYS, "estimate")
    fixed: dict[str, Any] = {}
    templated: dict[str, tuple[list[_Part], _Scalar]] = {}
    ok = True
    for key in ESTIMATE_REQUIRED:
        if key not in m.entries:
            ctx.missing(
                m,
                key,
                f"the estimate needs `{key}`",
                "required: " + ", ".join(ESTIMATE_REQUIRED) + "; optional: " + ", ".join(ESTIMATE_OPTIONAL),
            )
            ok = False
    for key, e in m.entries.items():
        if key not in ESTIMATE_KEYS:
            ok = False
            continue
        v = e.value
        if not isinstance(v, _Scalar):
            ctx.at(v, f"expected a single value, got {_describe(v)}")
            ok = False
            continue
        if isinstance(v.value, str) and ("{" in v.value or "}" in v.value):
            parts, errors = _parse_template(v.value, shell=False)
            for msg, hint in errors:
                ctx.at(v, msg, hint)
                ok = False
            if any(isinstance(p, _Macro) for p in parts):
                ctx.at(v, "macros cannot be used in an estimate; use {param} placeholders")
                ok = False
            if pnames is not None and not _check_names(ctx, v, parts, pnames):
                ok = False
            if any(isinstance(p, _Ph) for p in parts):
                templated[key] = (parts, v)
                continue
            value: Any = "".join(p.text for p in parts if isinstance(p, _Lit))
        else:
            value = v.value
        try:
            fixed[key] = _coerce_estimate(key, value)
        except ValueError as exc:
            hint = units.MEMORY_HINT if key in ("context", "workspace") else None
            ctx.at(v, f"bad {key}: {exc}", hint)
            ok = False
    if not ok or pnames is None:
        return None
    spec = MemoryEstimate({k: v for k, v in fixed.items()} | {k: v.value for k, (_, v) in templated.items()})
    cache: dict[str, Estimate | None] = {}

    def resolve(c: _Ctx, values: dict[str, Any], rep: int) -> tuple[int, str, tuple[tuple[str, int], ...]] | None:
        full = dict(values)
        full["repeat"] = rep
        kw: dict[str, Any] = {_EST_FIELD.get(k, k): v for k, v in fixed.items()}
        bad = False
        for key, (parts, vnode) in templated.items():
            if len(parts) == 1 and isinstance(parts[0], _Ph):
                raw: Any = full[parts[0].name]
            else:
                raw = _fill(parts, full, lambda mm: mm.text)
            try:
                kw[_EST_FIELD.get(key, key)] = _coerce_estimate(key, raw)
            except ValueError as exc:
                c.at(vnode, f"bad {key} {render_value(raw)!r} for run {_canonical(values)}: {exc}")
                bad = True
        if bad:
            return None
        ckey = _canonical(kw)
        if ckey not in cache:
            try:
                cache[ckey] = estimate(EstimateSpec(**kw))
            except ValueError as exc:  # pragma: no cover - fields were coerced one by one
                c.at(m, f"cannot estimate: {exc}")
                cache[ckey] = None
        est = cache[ckey]
        if est is None:
            return None
        parts_mib = tuple((n, int(math.ceil(v - 1e-9))) for n, v in est.parts)
        return est.total_mib, "estimate", parts_mib

    return _Memory(spec, resolve)


__all__ = [
    "DISTRIBUTIONS",
    "DurationModel",
    "ExplicitMemory",
    "FleetEntry",
    "Group",
    "LaunchOptions",
    "MemoryEstimate",
    "MemorySpec",
    "MemoryTable",
    "Parameter",
    "Run",
    "Sweep",
    "load_sweep",
    "load_sweep_text",
    "render_value",
    "run_id",
]
