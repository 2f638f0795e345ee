"""A JSON Schema (draft-07) for sweep files, generated from the key table of `migbench.sweep.schema`,
so editors validate and complete sweeps (`migbench schema`).

Every key, its description, range and default come from its declaration (`schema.KEYS`); this
module turns each kind into its JSON shape (the units' patterns come from `units.py`). The schema
checks the shape of a file; `migbench plan` still checks what a schema cannot (placeholders, tables
against parameters, GPU models against the catalogue, the run count).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from migbench import units
from migbench.names import ENV_PATTERN_RE
from migbench.sweep.schema import (
    DISTRIBUTIONS,
    ENV_NAME_RE,
    ESTIMATE_REQUIRED,
    GROUP_FIELDS,
    GROUP_NAME_RE,
    LIST_DISTRIBUTIONS,
    MAX_NAME_LEN,
    NODE_NAME_RE,
    PARAM_NAME_RE,
    PROFILE_RE,
    SCHEMA_VERSION,
    SWEEP_NAME_RE,
    TOP_KEYS,
    WANDB_ONLY_KEYS,
    ZERO_WAIT_RE,
    Key,
    keys_of,
)

SCHEMA_ID = "https://migbench.invalid/schema/sweep-v1.json"

# -- reusable pieces -------------------------------------------------------------------------------

_SCALAR: dict[str, Any] = {"type": ["string", "number", "integer", "boolean", "null"]}
_MEMORY: dict[str, Any] = {
    "type": "string",
    "pattern": units.MEMORY_PATTERN,
    "description": "A memory quantity with a unit: 2560MiB, 2.5GiB, 3GB (GB = 10^9 bytes, GiB = 2^30).",
}
_RUN_TIME: dict[str, Any] = {  # a unit is required (8 could be seconds or hours), and it is more than zero
    "type": "string",
    "pattern": units.DURATION_PATTERN,
    "not": {"pattern": units.ZERO_DURATION_PATTERN},
}
_DURATION: dict[str, Any] = {"anyOf": [_RUN_TIME, {"type": "number", "exclusiveMinimum": 0}]}  # a bare number is seconds
_WAIT: dict[str, Any] = {  # backoff and stop_grace may be zero
    "anyOf": [
        {"type": "string", "pattern": units.DURATION_PATTERN},
        {"type": "string", "pattern": f"^{ZERO_WAIT_RE.pattern}$"},
        {"type": "number", "minimum": 0},
    ],
}
_ENV: dict[str, Any] = {
    "type": "object",
    "propertyNames": {"pattern": f"^{ENV_NAME_RE.pattern}$"},
    "additionalProperties": {"type": ["string", "number"]},
}


def _name(pattern: str) -> dict[str, Any]:
    return {"type": "string", "pattern": f"^{pattern}$", "maxLength": MAX_NAME_LEN}


def _integer(k: Key) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "integer"}
    if k.minimum is not None:
        out["minimum"] = k.minimum
    if k.maximum is not None:
        out["maximum"] = k.maximum
    return out


def _number(k: Key) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "number"}
    if k.minimum is not None:
        out["exclusiveMinimum" if k.exclusive_minimum else "minimum"] = k.minimum
    if k.maximum is not None:
        out["maximum"] = k.maximum
    return out


def _section(scope: str, required: tuple[str, ...] | None = None) -> dict[str, Any]:
    """An object of the declared keys of `scope`, no others; `required` defaults to the declared."""
    keys = keys_of(scope)
    out: dict[str, Any] = {"type": "object", "properties": {k.name: fragment(k) for k in keys}, "additionalProperties": False}
    req = [k.name for k in keys if k.required] if required is None else list(required)
    if req:
        out["required"] = req
    return out


def _parameter() -> dict[str, Any]:
    return {
        "description": "A list of values, one value, Hydra's `a,b` / `range(0,10,2)`, W&B's {values: [...]}, {value: x} "
        "or a distribution {distribution: uniform, min: 0, max: 1}.",
        "anyOf": [
            {"type": "array", "items": _SCALAR, "minItems": 1},
            {"type": ["string", "number", "integer", "boolean"]},
            _section("parameter"),
        ],
    }


def _declared_memory() -> list[dict[str, Any]]:
    """The forms of a declared memory: a quantity, a table, an estimate."""
    return [
        _MEMORY,
        _section("memory_table"),
        {
            "type": "object",
            "properties": {"estimate": _section("estimate", ESTIMATE_REQUIRED)},
            "required": ["estimate"],
            "additionalProperties": False,
        },
    ]


def _memory() -> dict[str, Any]:
    return {
        "anyOf": [
            *_declared_memory(),
            {"const": "measured"},
            {
                **_section("measured"),
                "if": {"properties": {"measured": {"const": False}}},
                "then": {"required": ["fallback"]},
            },
        ],
    }


# Each kind's JSON shape (the description, default and range come from the declaration).
_SHAPES: dict[str, Callable[[Key], dict[str, Any]]] = {
    "integer": _integer,
    "number": _number,
    "fraction": _number,
    "real": lambda k: {"type": "number"},
    "positive": lambda k: {"type": "number", "exclusiveMinimum": 0},
    "string": lambda k: {"type": "string"},
    "boolean": lambda k: {"type": "boolean"},
    "choice": lambda k: {"enum": list(k.choices)},
    "duration": lambda k: dict(_DURATION),
    "run_time": lambda k: dict(_RUN_TIME),
    "wait": lambda k: dict(_WAIT),
    "env": lambda k: dict(_ENV),
    "version": lambda k: {"const": SCHEMA_VERSION},
    "sweep_name": lambda k: _name(SWEEP_NAME_RE.pattern),
    "group_name": lambda k: _name(GROUP_NAME_RE.pattern),
    "fleet": lambda k: {"type": "array", "items": _section("fleet"), "minItems": 1},
    "duration_model": lambda k: _section("duration_model"),
    "launch": lambda k: _section("launch"),
    "defaults": lambda k: {},  # filled in by sweep_json_schema: the group fields without name
    "groups": lambda k: {"type": "array", "minItems": 1},
    "node": lambda k: {"type": "string", "pattern": f"^{NODE_NAME_RE.pattern}$"},
    "gpu": lambda k: {"type": "string"},
    "driver": lambda k: {"type": ["string", "number"]},
    "log_dir": lambda k: {"type": "string", "minLength": 1},
    "env_passthrough": lambda k: {"type": "array", "items": {"type": "string", "pattern": f"^{ENV_PATTERN_RE.pattern}$"}},
    "state_mode": lambda k: {"type": ["integer", "string"]},
    "command": lambda k: {
        "anyOf": [
            {"type": "string", "minLength": 1},
            {"type": "array", "items": {"type": ["string", "number", "integer"]}, "minItems": 1},
        ],
    },
    "parameters": lambda k: {
        "type": "object",
        "propertyNames": {"pattern": f"^{PARAM_NAME_RE.pattern}$"},
        "additionalProperties": _parameter(),
    },
    "zip": lambda k: {"type": "array", "items": {"type": "array", "items": {"type": "string"}, "minItems": 2}},
    "memory": lambda k: _memory(),
    "profiles": lambda k: {
        "type": "array",
        "items": {"type": "string", "pattern": f"^{PROFILE_RE.pattern}$"},
        "minItems": 1,
        "uniqueItems": True,
    },
    "workdir": lambda k: {"type": "string", "minLength": 1},
    "hydra": lambda k: {"type": "object"},
    "scalar": lambda k: dict(_SCALAR),
    "values": lambda k: {"type": "array", "items": _SCALAR, "minItems": 1},
    "distribution": lambda k: {"enum": list(DISTRIBUTIONS) + list(LIST_DISTRIBUTIONS)},
    "probabilities": lambda k: {"type": "array", "items": {"type": "number"}},
    "nested": lambda k: {"type": "object"},
    "param_name": lambda k: {"type": "string"},
    "param_names": lambda k: {"type": "array", "items": {"type": "string"}},
    "table": lambda k: {"type": "object", "additionalProperties": _MEMORY, "minProperties": 1},
    "quantity": lambda k: dict(_MEMORY),
    "fallback": lambda k: {"anyOf": _declared_memory()},
    "estimate_field": lambda k: {"type": ["string", "number", "integer", "boolean"]},
}


def fragment(k: Key) -> dict[str, Any]:
    """The JSON Schema of one declared key: its kind's shape, its description and its default."""
    shape = _SHAPES.get(k.kind)
    if shape is None:  # pragma: no cover - tests/sweep/test_declared_keys.py covers every kind
        raise KeyError(f"json_schema.py has no shape for the kind {k.kind!r} of {k.scope} key {k.name!r}")
    out = shape(k)
    out["description"] = k.description
    if k.default is not None:
        out["default"] = k.default
    return out


def _props(scope: str) -> dict[str, dict[str, Any]]:
    return {k.name: fragment(k) for k in keys_of(scope)}


# -- sections (each key of a section to its JSON Schema) -------------------------------------------

TOP = _props("top")
GROUP = _props("group")
FLEET = _props("fleet")
DURATION_MODEL = _props("duration_model")
LAUNCH = _props("launch")
PARAMETER_MAP = _props("parameter")
MEMORY_TABLE = _props("memory_table")
MEASURED = _props("measured")
ESTIMATE = _props("estimate")
WANDB_ONLY = {k: {"description": "A W&B-only key: accepted and ignored with a note."} for k in WANDB_ONLY_KEYS}


def sweep_json_schema() -> dict[str, Any]:
    """The JSON Schema of a sweep file (draft-07), with a description for every key."""
    group = _section("group")
    group["properties"].update(WANDB_ONLY)
    group["description"] = "A group of runs: one command, its parameters and its memory."
    defaults = {"type": "object", "properties": {k: GROUP[k] for k in GROUP_FIELDS}, "additionalProperties": False}
    defaults["description"] = TOP["defaults"]["description"]
    top = dict(TOP, defaults=defaults, groups=dict(TOP["groups"], items=group))
    props = {k: top[k] for k in TOP_KEYS}
    props.update({k: GROUP[k] for k in GROUP_FIELDS if k not in props})  # the single-group form
    props.update(WANDB_ONLY)
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$id": SCHEMA_ID,
        "title": "migbench sweep file",
        "description": "A sweep for `migbench plan` / `migbench run`: groups of runs, their parameters and memory. "
        "Either `groups:` or one group's fields at the top level.",
        "type": "object",
        "properties": props,
        "required": [k.name for k in keys_of("top") if k.required],
        "if": {"required": ["groups"]},
        "then": {"propertyNames": {"enum": list(TOP_KEYS) + list(WANDB_ONLY_KEYS)}},
        "else": {"propertyNames": {"enum": list(TOP_KEYS) + list(GROUP_FIELDS) + list(WANDB_ONLY_KEYS)}},
    }
