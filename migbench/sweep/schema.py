"""The sweep file's schema version 1: its keys, names, macros and distributions, and the limits."""

from __future__ import annotations

import re
from typing import Union

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
    "hydra",
)
FLEET_KEYS = ("node", "gpu", "count", "driver")
DURATION_MODEL_KEYS = ("interference", "compute_basis")
LAUNCH_KEYS = ("retries", "backoff", "stop_grace", "flapping_window", "flapping_max", "env", "log_dir", "env_passthrough", "state_mode")
PARAM_KEYS = ("value", "values", "distribution", "min", "max", "q", "mu", "sigma", "probabilities", "parameters")
LIST_DISTRIBUTIONS = ("categorical", "constant")
"""W&B's names for a list of values (`categorical` + `values:`) and one value (`constant` + `value:`)."""
MEMORY_TABLE_KEYS = ("by", "table", "default")
MEASURED_KEYS = ("measured", "fallback", "by", "headroom")
ESTIMATE_REQUIRED = ("params", "precision", "optimizer", "batch_size", "seq_len", "hidden", "layers", "heads", "vocab")
ESTIMATE_OPTIONAL = ("trainable", "attention", "activation_checkpointing", "ffn", "context", "workspace", "headroom")
ESTIMATE_KEYS = ESTIMATE_REQUIRED + ESTIMATE_OPTIONAL

Scalar = Union[str, int, float, bool, None]  # noqa: UP007 - a runtime alias
