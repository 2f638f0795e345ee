"""A JSON Schema (draft-07) for sweep files, generated from `migbench.sweep.schema`, so editors
validate and complete sweeps (`migbench schema`).

The keys, names, macros, distributions and patterns come from `schema.py` and the units from
`units.py`; this module adds each key's type and a one-line description. Every key `schema.py`
lists must have one here (a test checks it), so the two cannot drift apart. The schema checks the
shape of a file; `migbench plan` still checks what a schema cannot (placeholders, tables against
parameters, GPU models against the catalogue, the run count).
"""

from __future__ import annotations

from typing import Any

from migbench import units
from migbench.names import ENV_PATTERN_RE
from migbench.sweep.schema import (
    DISTRIBUTIONS,
    DURATION_MODEL_KEYS,
    ENV_NAME_RE,
    ESTIMATE_KEYS,
    ESTIMATE_REQUIRED,
    FLEET_KEYS,
    GROUP_KEYS,
    GROUP_NAME_RE,
    LAUNCH_KEYS,
    LIST_DISTRIBUTIONS,
    MAX_NAME_LEN,
    MEASURED_KEYS,
    MEMORY_TABLE_KEYS,
    PARAM_KEYS,
    PARAM_NAME_RE,
    PROFILE_RE,
    SCHEMA_VERSION,
    SWEEP_NAME_RE,
    TOP_KEYS,
    WANDB_ONLY_KEYS,
)

SCHEMA_ID = "https://migbench.invalid/schema/sweep-v1.json"

# -- reusable pieces -------------------------------------------------------------------------------

_SCALAR: dict[str, Any] = {"type": ["string", "number", "integer", "boolean", "null"]}
_MEMORY: dict[str, Any] = {
    "type": "string",
    "pattern": units.MEMORY_PATTERN,
    "description": "A memory quantity with a unit: 2560MiB, 2.5GiB, 3GB (GB = 10^9 bytes, GiB = 2^30).",
}
_DURATION: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "pattern": units.DURATION_PATTERN},
        {"type": "number", "exclusiveMinimum": 0},
    ],
    "description": "A duration: 8h, 90m, 1h30m, 45s or 2d (a bare number is seconds).",
}
_RUN_TIME: dict[str, Any] = {  # a run's duration and timeout: a unit is required (8 could be seconds or hours)
    "type": "string",
    "pattern": units.DURATION_PATTERN,
    "description": "A duration with a unit: 8h, 90m, 1h30m, 45s or 2d.",
}
_WAIT: dict[str, Any] = {  # backoff and stop_grace may be zero
    "anyOf": [
        {"type": "string", "pattern": units.DURATION_PATTERN},
        {"type": "number", "minimum": 0},
    ],
}
_ENV: dict[str, Any] = {
    "type": "object",
    "propertyNames": {"pattern": f"^{ENV_NAME_RE.pattern}$"},
    "additionalProperties": {"type": ["string", "number"]},
    "description": "Environment variables, NAME: value (quote booleans).",
}


def _count(minimum: int, text: str) -> dict[str, Any]:
    return {"type": "integer", "minimum": minimum, "description": text}


def _obj(keys: tuple[str, ...], props: dict[str, Any], what: str, required: tuple[str, ...] = ()) -> dict[str, Any]:
    missing = [k for k in keys if k not in props]
    if missing:  # pragma: no cover - the test over schema.py's keys fails first
        raise KeyError(f"json_schema.py has no type for {what} key(s) {', '.join(missing)}")
    out: dict[str, Any] = {"type": "object", "properties": {k: props[k] for k in keys}, "additionalProperties": False}
    if required:
        out["required"] = list(required)
    return out


# -- sections --------------------------------------------------------------------------------------

FLEET = {
    "node": {"type": "string", "description": "The machine these GPUs are on (a fleet of several nodes, for `migbench export`)."},
    "gpu": {"type": "string", "description": "A GPU model of the catalogue (`migbench catalog`), e.g. A100-SXM4-80GB."},
    "count": _count(1, "How many GPUs of this model."),
    "driver": {"type": ["string", "number"], "description": 'Driver version the plan is for, e.g. "535.129.03".'},
}
DURATION_MODEL = {
    "interference": {"type": "number", "minimum": 0, "description": "Fractional slowdown per co-located run (default 0)."},
    "compute_basis": {"enum": ["sm", "slices"], "description": "An instance's compute capacity: SM count (sm) or compute slices (slices)."},
}
LAUNCH = {
    "retries": _count(0, "Retries of a failed run (default 3)."),
    "backoff": {**_WAIT, "description": "Wait before a retry (0 allowed)."},
    "stop_grace": {**_WAIT, "description": "SIGTERM to SIGKILL grace when stopping (0 allowed)."},
    "flapping_window": {**_DURATION, "description": "Window of the flapping guard."},
    "flapping_max": _count(1, "Failures within the window that stop new launches."),
    "env": {**_ENV, "description": "Environment variables of every run."},
    "log_dir": {"type": "string", "minLength": 1, "description": "State and logs, relative to the plan (default runs; no '..')."},
    "env_passthrough": {
        "type": "array",
        "items": {"type": "string", "pattern": f"^{ENV_PATTERN_RE.pattern}$"},
        "description": "The only variables of the launcher's environment a run sees (names or patterns such as LC_*); default: all.",
    },
    "state_mode": {
        "type": ["integer", "string"],
        "description": "Mode of the state files (default 0600; 0640 lets the group read them; directories get the execute bits).",
    },
}
PARAMETER_MAP = {
    "value": {**_SCALAR, "description": "One fixed value."},
    "values": {"type": "array", "items": _SCALAR, "minItems": 1, "description": "The values to try."},
    "distribution": {
        "enum": list(DISTRIBUTIONS) + list(LIST_DISTRIBUTIONS),
        "description": "A W&B distribution (method: random); categorical (with values) and constant (with value) are lists.",
    },
    "min": {"type": "number"},
    "max": {"type": "number"},
    "q": {"type": "number", "exclusiveMinimum": 0},
    "mu": {"type": "number"},
    "sigma": {"type": "number", "exclusiveMinimum": 0},
    "probabilities": {"type": "array", "items": {"type": "number"}, "description": "W&B's weights of values: ignored by a grid."},
    "parameters": {"type": "object", "description": "Nested parameters (W&B): each leaf is named parent.child."},
}
PARAMETER = {
    "description": "A list of values, one value, Hydra's `a,b` / `range(0,10,2)`, W&B's {values: [...]}, {value: x} "
    "or a distribution {distribution: uniform, min: 0, max: 1}.",
    "anyOf": [
        {"type": "array", "items": _SCALAR, "minItems": 1},
        {"type": ["string", "number", "integer", "boolean"]},
        _obj(PARAM_KEYS, PARAMETER_MAP, "parameter"),
    ],
}
ESTIMATE = {
    **{k: {"type": ["string", "number", "integer", "boolean"]} for k in ESTIMATE_KEYS},
}
MEMORY_TABLE = {
    "by": {"type": "string", "description": "The parameter whose value picks the entry."},
    "table": {"type": "object", "additionalProperties": _MEMORY, "minProperties": 1},
    "default": _MEMORY,
}
FALLBACK = {
    "description": "Declared memory: a quantity, a table {by: param, table: {...}} or {estimate: {...}}.",
    "anyOf": [
        _MEMORY,
        _obj(MEMORY_TABLE_KEYS, MEMORY_TABLE, "memory table", required=("by", "table")),
        {
            "type": "object",
            "properties": {"estimate": _obj(ESTIMATE_KEYS, ESTIMATE, "estimate", required=ESTIMATE_REQUIRED)},
            "required": ["estimate"],
            "additionalProperties": False,
        },
    ],
}
MEASURED = {
    "measured": {"type": "boolean", "description": "Use measured peaks (migbench profile, earlier launches); false: the fallback."},
    "fallback": FALLBACK,
    "by": {"type": "array", "items": {"type": "string"}, "description": "The parameters that change the footprint."},
    "headroom": {"type": "number", "minimum": 0, "maximum": 10, "description": "Fraction added to a measured peak (default 0.1)."},
}
MEMORY = {
    "description": "The run's device footprint: a quantity, a table {by: param, table: {...}}, {estimate: {...}}, "
    "or measured ({measured: true, fallback: ...}).",
    "anyOf": [
        *FALLBACK["anyOf"],
        {"const": "measured"},
        {
            **_obj(MEASURED_KEYS, MEASURED, "measured memory", required=("measured",)),
            "if": {"properties": {"measured": {"const": False}}},
            "then": {"required": ["fallback"]},
        },
    ],
}
GROUP: dict[str, dict[str, Any]] = {
    "name": {
        "type": "string",
        "pattern": f"^{GROUP_NAME_RE.pattern}$",
        "maxLength": MAX_NAME_LEN,
        "description": "The group's name: run ids are <name>-<hash>.",
    },
    "command": {
        "description": "The command: a string (split like a shell, no shell runs it) or a list of arguments; "
        "{param}, ${program}, ${args}, ${run_id}, ${run_dir}, ${attempt}.",
        "anyOf": [
            {"type": "string", "minLength": 1},
            {"type": "array", "items": {"type": ["string", "number", "integer"]}, "minItems": 1},
        ],
    },
    "program": {"type": "string", "description": "The program ${program} names (W&B's program:)."},
    "shell": {"type": "boolean", "description": "Run the command with /bin/sh -c, every value quoted."},
    "method": {"enum": ["grid", "random"], "description": "grid (every combination) or random (count samples)."},
    "count": _count(1, "method: random: how many samples."),
    "run_cap": _count(1, "W&B's name for count."),
    "repeats": _count(1, "Replicas of every combination."),
    "num_samples": _count(1, "Another name for repeats."),
    "parameters": {
        "type": "object",
        "propertyNames": {"pattern": f"^{PARAM_NAME_RE.pattern}$"},
        "additionalProperties": PARAMETER,
        "description": "The parameters and their values.",
    },
    "zip": {
        "type": "array",
        "items": {"type": "array", "items": {"type": "string"}, "minItems": 2},
        "description": "Linked parameters, varied together: [[lr, warmup]].",
    },
    "memory": MEMORY,
    "duration": {**_RUN_TIME, "description": "The run's wall time alone with all the compute it can use."},
    "compute": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "description": "Share of a GPU kept busy (default: its memory-sized instance's)."},
    "max_runs_per_instance": _count(1, "How many runs may share one MIG instance (default 1)."),
    "profiles": {
        "type": "array",
        "items": {"type": "string", "pattern": f"^{PROFILE_RE.pattern}$"},
        "minItems": 1,
        "uniqueItems": True,
        "description": "Only these MIG profiles, e.g. [1g.10gb, 2g.20gb].",
    },
    "env": _ENV,
    "workdir": {"type": "string", "minLength": 1, "description": "Where the run starts (default: the sweep file's directory)."},
    "retries": _count(0, "Retries of this group's runs (default: launch.retries)."),
    "timeout": {**_RUN_TIME, "description": "Stop a run after this long."},
    "hydra": {"type": "object", "description": "Hydra's config block: hydra.sweeper.params gives parameters (the rest is ignored)."},
}
WANDB_ONLY = {k: {"description": "A W&B-only key: accepted and ignored with a note."} for k in WANDB_ONLY_KEYS}
TOP: dict[str, dict[str, Any]] = {
    "version": {"const": SCHEMA_VERSION, "description": "The sweep file's schema version."},
    "name": {
        "type": "string",
        "pattern": f"^{SWEEP_NAME_RE.pattern}$",
        "maxLength": MAX_NAME_LEN,
        "description": "The sweep's name: its state lives in runs/<name>/.",
    },
    "description": {"type": "string"},
    "seed": {"type": "integer", "description": "Seed of random sampling."},
    "fleet": {
        "type": "array",
        "items": _obj(FLEET_KEYS, FLEET, "fleet", required=("gpu", "count")),
        "minItems": 1,
        "description": "The GPUs to plan for (optional where NVML sees them; --fleet overrides).",
    },
    "duration_model": _obj(DURATION_MODEL_KEYS, DURATION_MODEL, "duration_model"),
    "launch": _obj(LAUNCH_KEYS, LAUNCH, "launch"),
    "defaults": {},  # filled below: the group fields without name
    "groups": {"type": "array", "minItems": 1, "description": "The groups of runs."},
}


def sweep_json_schema() -> dict[str, Any]:
    """The JSON Schema of a sweep file (draft-07), with a description for every key."""
    group_fields = tuple(k for k in GROUP_KEYS if k != "name")
    group = _obj(GROUP_KEYS, GROUP, "group", required=("name",))
    group["properties"].update(WANDB_ONLY)
    group["description"] = "A group of runs: one command, its parameters and its memory."
    defaults = _obj(group_fields, GROUP, "defaults")
    defaults["description"] = "Group fields merged under every group."
    top = dict(TOP, defaults=defaults, groups=dict(TOP["groups"], items=group))
    missing = [k for k in TOP_KEYS if k not in top]
    if missing:  # pragma: no cover - the test over schema.py's keys fails first
        raise KeyError(f"json_schema.py has no type for top-level key(s) {', '.join(missing)}")
    props = {k: top[k] for k in TOP_KEYS}
    props.update({k: GROUP[k] for k in group_fields if k not in props})  # the single-group form
    props.update(WANDB_ONLY)
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$id": SCHEMA_ID,
        "title": "migbench sweep file",
        "description": "A sweep for `migbench plan` / `migbench run`: groups of runs, their parameters and memory. "
        "Either `groups:` or one group's fields at the top level.",
        "type": "object",
        "properties": props,
        "required": ["version", "name"],
        "if": {"required": ["groups"]},
        "then": {"propertyNames": {"enum": list(TOP_KEYS) + list(WANDB_ONLY_KEYS)}},
        "else": {"propertyNames": {"enum": list(TOP_KEYS) + list(group_fields) + list(WANDB_ONLY_KEYS)}},
    }
