"""The sweep file's schema version 1: its keys, names, macros and distributions, and the limits."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Union

from migbench.names import ENV_NAME_RE as ENV_NAME_RE  # re-exported: the sweep's readers take it from here
from migbench.names import SAFE_NAME_RE

SCHEMA_VERSION = 1
MAX_RUNS = 100_000
"""Refuse sweeps that expand to more runs than this (a typo in a range() should not hang the CLI)."""
MAX_SWEEP_BYTES = 16 * 2**20
"""A sweep file larger than this is refused before it is parsed."""
MAX_SWEEP_NODES = 2_000_000
"""A sweep file holds at most this many YAML values (`yamlio.shape_problem`, before anything is built)."""
MAX_FLEET_FILE_NODES = 50_000
"""A fleet file (`--fleet-file`) holds at most this many YAML values: 4,096 GPUs in entries of a
few keys need far fewer; a larger one is refused in well under a second."""
MAX_NAME_LEN = 100
"""Sweep and group names name files and directories (`<name>.plan.yaml`, `runs/<name>/`, run ids)."""
MAX_FLEET_GPUS = 4096
"""The most GPUs a fleet (`fleet:`, `--fleet`, a plan) may have."""

LAUNCH_MACROS = ("run_id", "run_dir", "attempt")
"""Left verbatim in argv and env for the launcher to fill in."""
LIST_MACROS = ("args", "args_no_hyphens", "args_no_boolean_flags")
VALUE_MACROS = ("program", "args_json", "env", "interpreter")
ALL_MACROS = VALUE_MACROS + LIST_MACROS + LAUNCH_MACROS

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
NORMAL_FAMILY = ("normal", "q_normal", "log_normal", "q_log_normal")

SWEEP_NAME_RE = SAFE_NAME_RE  # it names the state directory, as in the plan
GROUP_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]*")
PARAM_NAME_RE = re.compile(r"\+{0,2}[A-Za-z_][A-Za-z0-9_.-]*")
"""A parameter name; dots name nested values (W&B's nested `parameters:`, Hydra's `model.lr`), and a
leading `+` or `++` is Hydra's append/force override, kept so that `${args_no_hyphens}` passes it on."""
NODE_NAME_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?")
"""A fleet entry's `node:`: a host name as Slurm, Kubernetes and DNS accept it (at most 63 characters)."""
PROFILE_RE = re.compile(r"[0-9]+g\.[0-9]+gb(?:[+-][a-z.]+)?")

WANDB_ONLY_KEYS = ("metric", "project", "entity", "early_terminate", "controller", "job", "scheduler")
"""Keys of a W&B sweep file that steer W&B's own service (the metric its Bayes search and early
stopping read, where runs are logged, its controller and launch jobs): accepted and ignored with a
note, so W&B files load as they are."""

ZERO_WAIT_RE = re.compile(r"\s*0+(\.0*)?\s*[a-z]*\s*")
"""A `backoff` or `stop_grace` of zero (`0`, `0s`), which a duration otherwise may not be."""

LIST_DISTRIBUTIONS = ("categorical", "constant")
"""W&B's names for a list of values (`categorical` + `values:`) and one value (`constant` + `value:`)."""

# =============================================================================================
# The keys, declared once
# =============================================================================================

READ_KINDS = ("integer", "number", "string", "boolean", "choice", "duration", "run_time", "wait", "env")
"""Kinds the loader reads from the declaration alone (`fields.read_keys`): type, range, unit and
default. A key of another kind has a structure of its own (a hand-written parser reads it, and
`json_schema` gives its shape); its name, scope and description are still declared here."""


@dataclass(frozen=True)
class Key:
    """One key of the sweep file: where it may be written (`scope`), its kind (one of `READ_KINDS`,
    or the name of a structure), range, unit, default and description. From the table of these come
    the loader's checks, the JSON Schema (`migbench schema`), the known keys of each section (and so
    the "did you mean" hints) and docs/sweep-keys.md."""

    name: str
    scope: str
    kind: str
    description: str
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    unit: str | None = None
    what: str | None = None
    """How an "expected ..." problem names a value of a string or choice key."""
    choices: tuple[str, ...] = ()
    hint: str | None = None
    """The hint of a value out of range (or not one of the choices)."""
    required: bool = False
    missing: str | None = None
    """The hint when the key is missing where it is needed."""
    refused: tuple[tuple[str, str, str], ...] = ()
    """(value, message, hint) of values of a choice refused with a reason of their own."""
    alias_of: str | None = None
    """Another name for that key (`run_cap` for `count`, `num_samples` for `repeats`); giving both is a problem."""
    attr: str | None = None
    """The model's attribute the value goes to, where its name differs (`backoff` -> `backoff_s`)."""

    @property
    def field(self) -> str:
        return self.attr or self.name

    def in_range(self, v: float) -> bool:
        """Whether a number is within the declared minimum (exclusive or not) and maximum."""
        if self.minimum is not None and (v <= self.minimum if self.exclusive_minimum else v < self.minimum):
            return False
        return self.maximum is None or v <= self.maximum


def _k(scope: str, name: str, kind: str, description: str, **kw: Any) -> Key:
    return Key(name, scope, kind, description, **kw)


_S = "seconds"
KEYS: tuple[Key, ...] = (
    # -- top level
    _k("top", "version", "version", "The sweep file's schema version.", required=True, missing="start the file with `version: 1`"),
    _k(
        "top",
        "name",
        "sweep_name",
        "The sweep's name: its state lives in runs/<name>/.",
        required=True,
        missing="name the sweep, e.g. `name: phase2-ablations` (its state lives in runs/<name>/)",
    ),
    _k("top", "description", "string", "What the sweep is for (free text).", what="a string"),
    _k("top", "seed", "integer", "Seed of random sampling.", default=0),
    _k("top", "fleet", "fleet", "The GPUs to plan for (optional where NVML sees them; --fleet overrides)."),
    _k("top", "duration_model", "duration_model", "Tuning of the duration model (interference, compute basis)."),
    _k("top", "launch", "launch", "Launcher settings: retries, backoff, flapping guard, env, log_dir, state_mode."),
    _k("top", "defaults", "defaults", "Group fields merged under every group."),
    _k("top", "groups", "groups", "The groups of runs."),
    # -- a fleet entry
    _k("fleet", "node", "node", "The machine these GPUs are on (a fleet of several nodes, for `migbench export`)."),
    _k(
        "fleet",
        "gpu",
        "gpu",
        "A GPU model of the catalogue (`migbench catalog`), e.g. A100-SXM4-80GB.",
        required=True,
        missing="name a catalogue model, e.g. gpu: A100-SXM4-80GB",
    ),
    _k(
        "fleet",
        "count",
        "integer",
        "How many GPUs of this model.",
        minimum=1,
        maximum=MAX_FLEET_GPUS,
        required=True,
        missing="how many GPUs of this model, e.g. count: 4",
        hint="plan a bigger cluster in parts",
    ),
    _k("fleet", "driver", "driver", 'Driver version the plan is for, e.g. "535.129.03".'),
    # -- duration_model
    _k(
        "duration_model",
        "interference",
        "number",
        "Fractional slowdown per co-located run.",
        default=0.0,
        minimum=0,
        hint="the fractional slowdown per co-located run, e.g. 0.1",
    ),
    _k(
        "duration_model",
        "compute_basis",
        "choice",
        "An instance's compute capacity: SM count (sm) or compute slices (slices).",
        default="sm",
        choices=("sm", "slices"),
        what="sm or slices",
    ),
    # -- launch
    _k("launch", "retries", "integer", "Retries of a failed run.", default=2, minimum=0),
    _k("launch", "backoff", "wait", "Wait before a retry (0 allowed).", default=30.0, unit=_S, attr="backoff_s"),
    _k("launch", "stop_grace", "wait", "SIGTERM to SIGKILL grace when stopping (0 allowed).", default=30.0, unit=_S, attr="stop_grace_s"),
    _k("launch", "flapping_window", "duration", "Window of the flapping guard.", default=60.0, unit=_S, attr="flapping_window_s"),
    _k("launch", "flapping_max", "integer", "Failures within the window that stop new launches.", default=3, minimum=1),
    _k("launch", "env", "env", "Environment variables of every run."),
    _k("launch", "log_dir", "log_dir", "State and logs, relative to the plan (no '..').", default="runs"),
    _k(
        "launch",
        "env_passthrough",
        "env_passthrough",
        "The only variables of the launcher's environment a run sees (names or patterns such as LC_*); default: all.",
    ),
    _k(
        "launch",
        "state_mode",
        "state_mode",
        "Mode of the state files (default 0600; 0640 lets the group read them; directories get the execute bits).",
    ),
    # -- a group (and defaults:, and the single-group form at top level)
    _k("group", "name", "group_name", "The group's name: run ids are <name>-<hash>.", required=True),
    _k(
        "group",
        "command",
        "command",
        "The command: a string (split like a shell, no shell runs it) or a list of arguments; {param}, ${program}, ${args}, ${run_id}, ${run_dir}, ${attempt}.",
    ),
    _k("group", "program", "string", "The program ${program} names (W&B's program:).", what="a program path"),
    _k("group", "shell", "boolean", "Run the command with /bin/sh -c, every value quoted.", default=False),
    _k(
        "group",
        "method",
        "choice",
        "grid (every combination) or random (count samples).",
        default="grid",
        choices=("grid", "random"),
        what="grid or random",
        refused=(
            (
                "bayes",
                "unknown method 'bayes': Bayesian search picks each run from the results of the earlier ones, "
                "and migbench plans a fixed set of runs before any starts (grid or random)",
                "use method: random with count: N for the same space, or let W&B's or Optuna's agent drive a Bayes search",
            ),
        ),
    ),
    _k("group", "count", "integer", "method: random: how many samples.", minimum=1),
    _k("group", "run_cap", "integer", "W&B's name for count.", minimum=1, alias_of="count"),
    _k("group", "repeats", "integer", "Replicas of every combination.", default=1, minimum=1),
    _k("group", "num_samples", "integer", "Another name for repeats.", minimum=1, alias_of="repeats"),
    _k("group", "parameters", "parameters", "The parameters and their values."),
    _k("group", "zip", "zip", "Linked parameters, varied together: [[lr, warmup]]."),
    _k(
        "group",
        "memory",
        "memory",
        "The run's device footprint: a quantity, a table {by: param, table: {...}}, {estimate: {...}}, or measured ({measured: true, fallback: ...}).",
        missing="give the run's device footprint: memory: 2.5GiB, a table {by:, table:}, {estimate: {...}}, or measured",
    ),
    _k("group", "duration", "run_time", "The run's wall time alone with all the compute it can use.", unit=_S, attr="duration_s"),
    _k(
        "group",
        "compute",
        "number",
        "Share of a GPU kept busy (default: its memory-sized instance's).",
        default=1.0,
        minimum=0,
        exclusive_minimum=True,
        maximum=1,
        hint="the fraction of a whole GPU's compute the run keeps busy",
    ),
    _k("group", "max_runs_per_instance", "integer", "How many runs may share one MIG instance.", default=1, minimum=1),
    _k("group", "profiles", "profiles", "Only these MIG profiles, e.g. [1g.10gb, 2g.20gb]."),
    _k("group", "env", "env", "Environment variables, NAME: value (quote booleans)."),
    _k("group", "workdir", "workdir", "Where the run starts (default: the sweep file's directory)."),
    _k("group", "retries", "integer", "Retries of this group's runs (default: launch.retries).", minimum=0),
    _k("group", "timeout", "run_time", "Stop a run after this long.", unit=_S, attr="timeout_s"),
    _k("group", "hydra", "hydra", "Hydra's config block: hydra.sweeper.params gives parameters (the rest is ignored)."),
    # -- a parameter written as a mapping
    _k("parameter", "value", "scalar", "One fixed value."),
    _k("parameter", "values", "values", "The values to try."),
    _k(
        "parameter",
        "distribution",
        "distribution",
        "A W&B distribution (method: random); categorical (with values) and constant (with value) are lists.",
    ),
    _k("parameter", "min", "real", "The distribution's lower bound."),
    _k("parameter", "max", "real", "The distribution's upper bound."),
    _k("parameter", "q", "positive", "The quantisation step of the q_ distributions."),
    _k("parameter", "mu", "real", "The mean of the normal distributions."),
    _k("parameter", "sigma", "positive", "The standard deviation of the normal distributions."),
    _k("parameter", "probabilities", "probabilities", "W&B's weights of values: ignored by a grid."),
    _k("parameter", "parameters", "nested", "Nested parameters (W&B): each leaf is named parent.child."),
    # -- memory: {by:, table:, default:}
    _k("memory_table", "by", "param_name", "The parameter whose value picks the entry.", required=True),
    _k("memory_table", "table", "table", "The memory of each value of the parameter: {value: quantity}.", required=True),
    _k("memory_table", "default", "quantity", "The memory of a value the table does not list: 2560MiB, 2.5GiB, 3GB (GB = 10^9 bytes, GiB = 2^30)."),
    # -- memory: {measured: ..., fallback: ..., by: ..., headroom: ...}
    _k("measured", "measured", "boolean", "Use measured peaks (migbench profile, earlier launches); false: the fallback.", required=True),
    _k("measured", "fallback", "fallback", "Declared memory: a quantity, a table {by: param, table: {...}} or {estimate: {...}}."),
    _k("measured", "by", "param_names", "The parameters that change the footprint."),
    _k(
        "measured",
        "headroom",
        "fraction",
        "Fraction added to a measured peak (default 0.1).",
        minimum=0,
        maximum=10,
        hint="a fraction of the measured peak, e.g. 0.1 for 10 %",
    ),
    # -- memory: {estimate: {...}} (the estimator's inputs; docs/memory-estimation.md)
    _k("estimate", "params", "estimate_field", "The model's parameter count: 124M, 1.3B or 124e6.", required=True),
    _k("estimate", "precision", "estimate_field", "fp32, fp16-mixed, bf16-mixed, bf16 or fp16.", required=True),
    _k("estimate", "optimizer", "estimate_field", "adamw, adam, adamw8bit, sgd or sgd-momentum.", required=True),
    _k("estimate", "batch_size", "estimate_field", "Micro-batch per step (sequences).", required=True),
    _k("estimate", "seq_len", "estimate_field", "Tokens per sequence.", required=True),
    _k("estimate", "hidden", "estimate_field", "The transformer's hidden size.", required=True),
    _k("estimate", "layers", "estimate_field", "The transformer's layer count.", required=True),
    _k("estimate", "heads", "estimate_field", "The transformer's attention heads.", required=True),
    _k("estimate", "vocab", "estimate_field", "The vocabulary size.", required=True),
    _k("estimate", "trainable", "estimate_field", "The trained parameters (LoRA adapters): a count or a fraction of params."),
    _k("estimate", "attention", "estimate_field", "eager (stores the score tensors) or flash (does not)."),
    _k("estimate", "activation_checkpointing", "estimate_field", "Full recompute of each layer."),
    _k("estimate", "ffn", "estimate_field", "The FFN width (default 4 x hidden)."),
    _k("estimate", "context", "estimate_field", "The CUDA context (a memory quantity; default 512MiB)."),
    _k("estimate", "workspace", "estimate_field", "cuBLAS/cuDNN workspaces (a memory quantity; default 64MiB)."),
    _k("estimate", "headroom", "estimate_field", "Fraction added for the caching allocator and fragmentation (default 0.15)."),
)

SCOPES = ("top", "fleet", "duration_model", "launch", "group", "parameter", "memory_table", "measured", "estimate")


def keys_of(scope: str) -> tuple[Key, ...]:
    """The declared keys of one section, in the order of the table."""
    return tuple(k for k in KEYS if k.scope == scope)


def names_of(scope: str) -> tuple[str, ...]:
    return tuple(k.name for k in KEYS if k.scope == scope)


def declared(scope: str, name: str) -> Key:
    """The declaration of `name` in `scope` (KeyError when there is none)."""
    for k in KEYS:
        if k.scope == scope and k.name == name:
            return k
    raise KeyError(f"{scope}.{name}")


# The key lists of each section, from the table (the loader's known keys and "did you mean" hints).
TOP_KEYS = names_of("top")
GROUP_KEYS = names_of("group")
GROUP_FIELDS = tuple(k for k in GROUP_KEYS if k != "name")
"""What `defaults:` and the single-group form at top level may hold."""
FLEET_KEYS = names_of("fleet")
DURATION_MODEL_KEYS = names_of("duration_model")
LAUNCH_KEYS = names_of("launch")
PARAM_KEYS = names_of("parameter")
MEMORY_TABLE_KEYS = names_of("memory_table")
MEASURED_KEYS = names_of("measured")
ESTIMATE_KEYS = names_of("estimate")
ESTIMATE_REQUIRED = tuple(k.name for k in keys_of("estimate") if k.required)
ESTIMATE_OPTIONAL = tuple(k.name for k in keys_of("estimate") if not k.required)

Scalar = Union[str, int, float, bool, None]  # noqa: UP007 - a runtime alias
