"""Each key of the sweep file is declared once (`migbench.sweep.schema.KEYS`): the JSON Schema of
`migbench schema`, the loader's checks and known keys, and docs/sweep-keys.md all come from that
declaration, so they cannot drift apart."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest

from migbench.errors import InputError, Problem
from migbench.sweep import load_sweep_text
from migbench.sweep.json_schema import sweep_json_schema
from migbench.sweep.keydoc import keys_markdown
from migbench.sweep.model import Group, LaunchSettings
from migbench.sweep.schema import KEYS, READ_KINDS, SCOPES, WANDB_ONLY_KEYS, Key, declared, keys_of, names_of
from tests.support import REPO
from tests.support.cli import migbench

DOC = sweep_json_schema()
_GROUP = DOC["properties"]["groups"]["items"]
_MEMORY = _GROUP["properties"]["memory"]["anyOf"]
SECTIONS: dict[str, dict[str, Any]] = {
    "top": DOC,
    "group": _GROUP,
    "fleet": DOC["properties"]["fleet"]["items"],
    "duration_model": DOC["properties"]["duration_model"],
    "launch": DOC["properties"]["launch"],
    "parameter": _GROUP["properties"]["parameters"]["additionalProperties"]["anyOf"][2],
    "memory_table": _MEMORY[1],
    "estimate": _MEMORY[2]["properties"]["estimate"],
    "measured": _MEMORY[4],
}
"""Where each section's keys are in the JSON Schema."""

JSON_TYPE = {"integer": "integer", "number": "number", "string": "string", "boolean": "boolean", "env": "object"}


def _ids(k: Key) -> str:
    return f"{k.scope}.{k.name}"


def test_every_section_of_the_json_schema_has_exactly_the_declared_keys():
    assert set(SECTIONS) == set(SCOPES)
    for scope, section in SECTIONS.items():
        extra = set(WANDB_ONLY_KEYS) if scope in ("top", "group") else set()
        if scope == "top":  # the single-group form
            extra |= set(names_of("group")) - {"name"}
        assert set(section["properties"]) == set(names_of(scope)) | extra, scope
        if scope != "top":
            assert section.get("additionalProperties") is False, scope
        required = [k.name for k in keys_of(scope) if k.required]
        assert section.get("required", []) == required, scope
    defaults = DOC["properties"]["defaults"]["properties"]
    assert set(defaults) == set(names_of("group")) - {"name"}


@pytest.mark.parametrize("k", KEYS, ids=_ids)
def test_the_json_schema_has_each_key_with_its_declared_type_range_default_and_description(k):
    frag = SECTIONS[k.scope]["properties"][k.name]
    assert frag["description"] == k.description
    assert frag.get("default") == k.default
    if k.kind in JSON_TYPE:
        assert frag["type"] == JSON_TYPE[k.kind]
    if k.kind == "choice":
        assert frag["enum"] == list(k.choices)
    if k.minimum is not None:
        assert frag["exclusiveMinimum" if k.exclusive_minimum else "minimum"] == k.minimum
    if k.maximum is not None:
        assert frag["maximum"] == k.maximum


def test_the_declared_launch_defaults_are_the_loaders():
    """Regression: `migbench schema` said launch.retries defaults to 3, while the loader's default is 2."""
    launch = DOC["properties"]["launch"]["properties"]
    assert launch["retries"]["default"] == LaunchSettings().retries == 2
    assert "default 3" not in launch["retries"]["description"]
    sweep = load_sweep_text("version: 1\nname: s\ncommand: run\nmemory: 1GiB\n")
    assert sweep.launch == LaunchSettings()
    for k in keys_of("launch"):
        if k.default is not None:
            assert getattr(sweep.launch, k.field) == k.default, k.name


def test_a_group_without_its_optional_fields_takes_the_declared_defaults():
    sweep = load_sweep_text("version: 1\nname: s\ncommand: run\nmemory: 1GiB\n")
    group = sweep.groups[0]
    assert isinstance(group, Group)
    for k in keys_of("group"):
        if k.kind in READ_KINDS and k.alias_of is None and k.kind != "env":
            assert getattr(group, k.field) == k.default, k.name
    assert sweep.seed == declared("top", "seed").default == 0
    assert sweep.duration_model.interference == 0.0 and str(sweep.duration_model.compute_basis) == "sm"


# -- the loader refuses what the schema refuses, at the key's line -------------------------------

WRONG: list[Any] = [{"x": 1}, ["x"], "abc", -1, 0, 1.5, 5000, True, "", [], {}]
"""Values of the wrong type or range for most keys; each key is tried with those its JSON Schema refuses."""

_ESTIMATE = "params: 124M, precision: bf16-mixed, optimizer: adamw, batch_size: 8, seq_len: 1024, hidden: 768, layers: 12, heads: 12, vocab: 50257"


_PARAMETER_BASE: dict[str, dict[str, str]] = {
    "probabilities": {"values": "[1, 2]"},
    "distribution": {"min": "0", "max": "1"},
    "min": {"distribution": "uniform", "max": "1"},
    "max": {"distribution": "uniform", "min": "0"},
    "q": {"distribution": "q_uniform", "min": "0", "max": "1"},
    "mu": {"distribution": "normal", "sigma": "1"},
    "sigma": {"distribution": "normal", "mu": "0"},
}
"""The other keys of a parameter written as a mapping, for each key tried (value, values and
parameters stand alone)."""


def _place(k: Key, value: Any) -> tuple[str, int, str]:
    """A sweep with `value` at `k` (every other key valid), the value's line and the key's field."""
    v = json.dumps(value)  # JSON is YAML's flow style: the whole value on one line
    group = {
        "name": "g",
        "command": "run {a}",
        "method": "random",
        "count": "2",
        "parameters": "{a: {distribution: uniform, min: 0, max: 1}}",
        "memory": "1GiB",
    }
    lines = ["version: 1", "name: s"]
    if k.scope == "top":
        top = {"version": "1", "name": "s", "command": "run", "memory": "1GiB"}
        top[k.name] = v
        lines = [f"{n}: {x}" for n, x in top.items()]
        return "\n".join(lines) + "\n", list(top).index(k.name) + 1, k.name
    if k.scope == "fleet":
        entry = {"gpu": "A100-SXM4-80GB", "count": "2"}
        entry.pop(k.name, None)
        entry[k.name] = v
        lines += ["command: run", "memory: 1GiB", "fleet:", "  - " + "\n    ".join(f"{n}: {x}" for n, x in entry.items())]
        field = f"fleet[0].{k.name}"
    elif k.scope in ("launch", "duration_model"):
        lines += ["command: run", "memory: 1GiB", f"{k.scope}:", f"  {k.name}: {v}"]
        field = f"{k.scope}.{k.name}"
    else:
        lines.append("groups:")
        if k.scope == "group":
            group.pop(k.name, None)
            group[k.name] = v
            field = f"groups[0].{k.name}"
        elif k.scope == "parameter":
            others = {n: x for n, x in _PARAMETER_BASE.get(k.name, {}).items() if n != k.name}
            group["parameters"] = "\n      a:" + "".join(f"\n        {n}: {x}" for n, x in [*others.items(), (k.name, v)])
            field = f"groups[0].parameters.a.{k.name}"
        else:
            base = {
                "memory_table": "\n      by: a\n      table: {1: 1GiB, 2: 2GiB}",
                "measured": "" if k.name == "measured" else "\n      measured: true",
                "estimate": f"\n      estimate: {{{_ESTIMATE}}}",
            }[k.scope]
            if k.scope == "estimate":
                base = f"\n      estimate:\n        {_ESTIMATE.replace(', ', chr(10) + '        ')}"
                base = "\n".join(x for x in base.split("\n") if not x.strip().startswith(f"{k.name}:"))
            elif k.scope == "memory_table":
                base = "\n".join(x for x in base.split("\n") if not x.strip().startswith(f"{k.name}:"))
            indent = "        " if k.scope == "estimate" else "      "
            group["memory"] = f"{base}\n{indent}{k.name}: {v}"
            field = f"groups[0].memory.{'estimate.' if k.scope == 'estimate' else ''}{k.name}"
        lines += ["  - " + "\n    ".join(f"{n}: {x}" for n, x in group.items())]
    text = "\n".join(lines) + "\n"
    line = next(i for i, x in enumerate(text.split("\n"), 1) if x.strip().startswith(f"{k.name}: {v}"))
    return text, line, field


def _problems(text: str) -> list[Problem]:
    try:
        load_sweep_text(text)
    except InputError as exc:
        return list(exc.problems)
    return []


@pytest.mark.parametrize("k", KEYS, ids=_ids)
def test_the_loader_refuses_every_value_the_schema_refuses_naming_the_key_and_its_line(k):
    schema = {**SECTIONS[k.scope]["properties"][k.name], "definitions": {}}
    refused = [v for v in WRONG if not jsonschema.Draft7Validator(schema).is_valid(v)]
    assert refused, f"no wrong value tried for {k.scope}.{k.name}"
    for value in refused:
        text, line, field = _place(k, value)
        problems = _problems(text)
        here = [p for p in problems if p.line == line and p.field is not None and re.match(rf"{re.escape(field)}($|[.\[])", p.field)]
        assert here, f"{k.scope}.{k.name}: {value!r} is refused by the JSON Schema but not by the loader at line {line}:\n{text}\n{problems}"


TRIED: list[Any] = [*WRONG, False, "8h", "1h30m", "0s", "0h 0m", "0", 90, 2, 0.5, 1e-9, "sm", "slices", "grid", "random", "bayes", "x", {"A": "1"}, {"A": 1}]


@pytest.mark.parametrize("k", [k for k in KEYS if k.kind in READ_KINDS and k.alias_of is None], ids=_ids)
def test_a_key_read_from_its_declaration_alone_is_refused_by_the_loader_exactly_where_the_schema_refuses_it(k):
    """For the keys whose declaration is all the loader reads (type, range, choices), the loader and
    the JSON Schema agree on every value tried, both ways."""
    schema = SECTIONS[k.scope]["properties"][k.name]
    for value in TRIED:
        text, line, field = _place(k, value)
        refused = [p for p in _problems(text) if p.line == line and p.field is not None and re.match(rf"{re.escape(field)}($|[.\[])", p.field)]
        assert jsonschema.Draft7Validator(schema).is_valid(value) == (not refused), (k.name, value, refused)


def test_the_placement_alone_is_a_good_sweep():
    """The test above can fail: the sweeps it writes load when the key's value is a good one."""
    good = {"top.seed": 3, "group.compute": 0.5, "fleet.driver": "535.129.03", "launch.retries": 1, "parameter.q": 0.1}
    for name, value in good.items():
        scope, key = name.split(".")
        text, _, _ = _place(next(k for k in KEYS if k.scope == scope and k.name == key), value)
        assert _problems(text) == [], (name, text)


@pytest.mark.parametrize(
    "scope, what, where",
    [
        ("top", "top-level", "zzz: 1\n"),
        ("group", "group", "groups:\n  - {name: g, command: run, memory: 1GiB, zzz: 1}\n"),
        ("fleet", "fleet entry", "command: run\nmemory: 1GiB\nfleet: [{gpu: A100-SXM4-80GB, count: 1, zzz: 1}]\n"),
        ("launch", "launch", "command: run\nmemory: 1GiB\nlaunch: {zzz: 1}\n"),
        ("duration_model", "duration_model", "command: run\nmemory: 1GiB\nduration_model: {zzz: 1}\n"),
        ("parameter", "parameter", "groups:\n  - {name: g, command: 'run {a}', memory: 1GiB, parameters: {a: {values: [1], zzz: 1}}}\n"),
        ("estimate", "estimate", "groups:\n  - {name: g, command: run, memory: {estimate: {zzz: 1}}}\n"),
    ],
)
def test_the_loaders_known_keys_are_the_declared_ones(scope, what, where):
    """An unknown key's hint lists the section's keys: exactly the declared ones, in their order."""
    problems = _problems("version: 1\nname: s\n" + where)
    hints = [p.hint for p in problems if p.message == "unknown key 'zzz'"]
    assert hints and hints[0] is not None
    listed = hints[0].split(f"{what} keys are: ", 1)[1].split(" (", 1)[0]
    assert listed.split(", ") == list(names_of(scope))


def test_a_typo_is_matched_against_the_declared_keys():
    problems = _problems("version: 1\nname: s\ncommand: run\nmemory: 1GiB\nlaunch: {flaping_max: 2}\n")
    assert [p.hint.split("?")[0] for p in problems if p.hint] == ["did you mean 'flapping_max'"]


# -- the docs ------------------------------------------------------------------------------------


def test_docs_sweep_keys_is_generated_from_the_declarations():
    text = (REPO / "docs" / "sweep-keys.md").read_text()
    assert text == keys_markdown(), "regenerate it: migbench schema --markdown > docs/sweep-keys.md"
    r = migbench("schema", "--markdown")
    assert r.returncode == 0 and r.stdout == text


def test_the_docs_the_schema_and_the_loader_list_the_same_keys():
    """docs/sweep-keys.md's tables, the JSON Schema's sections and the declarations name the same keys."""
    text = (REPO / "docs" / "sweep-keys.md").read_text()
    sections = re.split(r"^## ", text, flags=re.M)[1:]
    assert len(sections) == len(SCOPES)
    for scope, body in zip(SCOPES, sections, strict=True):
        documented = re.findall(r"^\| `([^`]+)` \|", body, flags=re.M)
        assert documented == list(names_of(scope)), scope
        extra = set(WANDB_ONLY_KEYS) if scope in ("top", "group") else set()
        if scope == "top":
            extra |= set(names_of("group")) - {"name"}
        assert set(SECTIONS[scope]["properties"]) - extra == set(documented), scope
    assert "docs/sweep-keys.md" in (REPO / "README.md").read_text()


def test_a_zero_backoff_is_zero_in_any_unit():
    """Regression: `backoff: 0h 0m` was refused ("must be more than zero") while `0s` and `0` meant no wait."""
    for text in ("0", "0s", "'0h 0m'", "0.0m"):
        sweep = load_sweep_text(f"version: 1\nname: s\ncommand: run\nmemory: 1GiB\nlaunch: {{backoff: {text}, stop_grace: {text}}}\n")
        assert sweep.launch.backoff_s == sweep.launch.stop_grace_s == 0.0, text


def test_the_json_schema_refuses_a_zero_duration_as_the_loader_does():
    """Regression: `migbench schema` accepted `duration: 0s`, `timeout: 0h` and `flapping_window: 0s`, which the loader refuses."""
    validator = jsonschema.Draft7Validator(DOC)
    for text in ("duration: 0s", "timeout: 0h 0m", "launch: {flapping_window: 0s}"):
        doc = {"version": 1, "name": "s", "command": "run", "memory": "1GiB"}
        key, _, value = text.partition(": ")
        doc[key] = {"flapping_window": "0s"} if key == "launch" else value
        assert not validator.is_valid(doc), text
        problems = _problems(f"version: 1\nname: s\ncommand: run\nmemory: 1GiB\n{text}\n")
        assert [p.message.split(": ", 1)[1] for p in problems] == [f"'{value if key != 'launch' else '0s'}' must be more than zero"], text
    assert validator.is_valid({"version": 1, "name": "s", "command": "run", "memory": "1GiB", "duration": "0h 30m"})
