"""docs/sweep-keys.md: every key of the sweep file, from its declaration (`schema.KEYS`), as a
Markdown table per section (`migbench schema --markdown`; a test keeps the file current)."""

from __future__ import annotations

from migbench.sweep.schema import SCOPES, Key, keys_of

TITLES = {
    "top": ("Top level", "Besides these, a single group's fields may stand at the top level (then without `groups:`)."),
    "fleet": ("A `fleet:` entry", ""),
    "duration_model": ("`duration_model:`", ""),
    "launch": ("`launch:`", ""),
    "group": (
        "A group (an item of `groups:`)",
        "`defaults:` holds the same fields but `name`, merged under every group; `memory` is needed in each group or under `defaults:`.",
    ),
    "parameter": ("A parameter written as a mapping (`parameters: {lr: {...}}`)", ""),
    "memory_table": ("`memory: {by: ..., table: ...}`", ""),
    "measured": ("`memory: {measured: ...}`", ""),
    "estimate": ("`memory: {estimate: {...}}`", "The estimator's inputs (docs/memory-estimation.md); a string value may hold `{param}`."),
}

KIND_TEXT = {
    "integer": "whole number",
    "number": "number",
    "fraction": "number",
    "real": "number",
    "positive": "number > 0",
    "string": "string",
    "boolean": "true or false",
    "choice": "",  # the choices
    "duration": "duration (8h, 90m, 1h30m; a bare number is seconds)",
    "run_time": "duration with a unit (8h, 90m, 1h30m)",
    "wait": "duration (0 allowed)",
    "env": "mapping NAME: value",
    "version": "1",
    "sweep_name": "name: letters, digits, `.`, `_`, `-` (at most 100)",
    "group_name": "name: lower-case letters, digits, `_`, `-` (at most 100)",
    "fleet": "list of fleet entries",
    "duration_model": "mapping",
    "launch": "mapping",
    "defaults": "mapping of group fields",
    "groups": "list of groups",
    "node": "host name",
    "gpu": "catalogue model",
    "driver": "driver version",
    "log_dir": "directory",
    "env_passthrough": "list of variable names or patterns",
    "state_mode": "octal file mode",
    "command": "string or list of arguments",
    "parameters": "mapping name: values",
    "zip": "list of lists of parameter names",
    "memory": "quantity, table, estimate or measured",
    "profiles": "list of MIG profiles",
    "workdir": "directory",
    "hydra": "mapping (Hydra's config)",
    "scalar": "value",
    "values": "list of values",
    "distribution": "distribution name",
    "probabilities": "list of numbers",
    "nested": "mapping of parameters",
    "param_name": "parameter name",
    "param_names": "list of parameter names",
    "table": "mapping value: quantity",
    "quantity": "memory quantity (2.5GiB)",
    "fallback": "quantity, table or estimate",
    "estimate_field": "value or {param} template",
}


def _range(k: Key) -> str:
    if k.minimum is None and k.maximum is None:
        return ""
    if k.maximum is None:
        return f" {'>' if k.exclusive_minimum else '>='} {k.minimum}"
    if k.minimum is None:  # pragma: no cover - no key is bounded above only
        return f" <= {k.maximum}"
    return f" in {'(' if k.exclusive_minimum else '['}{k.minimum}, {k.maximum}]"


def kind_text(k: Key) -> str:
    """The key's type as the docs say it: `whole number >= 1`, `sm or slices`..."""
    if k.kind == "choice":
        return " or ".join(f"`{c}`" for c in k.choices)
    return KIND_TEXT[k.kind] + _range(k)


def _default(k: Key) -> str:
    if k.required:
        return "required"
    if k.alias_of is not None:
        return f"another name for `{k.alias_of}`"
    if k.default is None:
        return ""
    text = str(k.default).lower() if isinstance(k.default, bool) else str(k.default)
    return f"`{text}`" + (f" {k.unit}" if k.unit else "")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def keys_markdown() -> str:
    """The whole of docs/sweep-keys.md."""
    out = [
        "# The sweep file's keys",
        "",
        "Every key a sweep file may hold, section by section. Generated from the declarations in",
        "`migbench/sweep/schema.py` (`migbench schema --markdown > docs/sweep-keys.md`), the same ones the",
        "loader checks and `migbench schema` turns into the JSON Schema; a test keeps this file current.",
        "W&B's own keys (`metric`, `project`, `entity`, ...) are accepted and ignored with a note.",
    ]
    for scope in SCOPES:
        title, note = TITLES[scope]
        out += ["", f"## {title}", ""]
        if note:
            out += [note, ""]
        out += ["| key | type | default | description |", "|---|---|---|---|"]
        for k in keys_of(scope):
            out.append(f"| `{k.name}` | {_cell(kind_text(k))} | {_cell(_default(k))} | {_cell(k.description)} |")
    return "\n".join(out) + "\n"
