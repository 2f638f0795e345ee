"""`migbench schema`: the sweep file's JSON Schema is generated from `migbench/sweep/schema.py`, every
sweep the loader accepts validates against it, and files the loader refuses for their shape do not."""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml

from migbench.sweep import json_schema as js
from migbench.sweep import load_sweep, schema
from tests.support import DATA, sweep_files
from tests.support.cli import migbench

GOOD = sweep_files("sweeps", "examples") + sorted((DATA / "sweeps" / "good").glob("*.yaml")) + sorted((DATA / "sweeps" / "public").glob("*.yaml"))
# refused by the loader for their shape: the schema must refuse them too
BAD_SHAPE = [
    "unknown_key_top",
    "unknown_key_group",
    "wrong_version",
    "missing_version",
    "bad_group_name",
    "sweep_name_bad",
    "fleet_count_zero",
    "compute_out_of_range",
    "bad_quantity",
    "bad_duration",
    "bad_profile",
    "mixed_forms",
    "env_boolean",
    "wrong_type",
    "not_a_mapping",
    "empty_grid",
]


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    doc = js.sweep_json_schema()
    jsonschema.Draft7Validator.check_schema(doc)
    return jsonschema.Draft7Validator(doc)


def test_every_key_of_the_sweep_schema_has_a_type_and_nothing_else_is_allowed():
    """The schema cannot drift from schema.py: each key list there has exactly its entries here."""
    pairs = [
        (schema.TOP_KEYS, js.TOP),
        (schema.GROUP_KEYS, js.GROUP),
        (schema.FLEET_KEYS, js.FLEET),
        (schema.DURATION_MODEL_KEYS, js.DURATION_MODEL),
        (schema.LAUNCH_KEYS, js.LAUNCH),
        (schema.PARAM_KEYS, js.PARAMETER_MAP),
        (schema.MEMORY_TABLE_KEYS, js.MEMORY_TABLE),
        (schema.ESTIMATE_KEYS, js.ESTIMATE),
        (schema.MEASURED_KEYS, js.MEASURED),
    ]
    for keys, types in pairs:
        assert set(keys) == set(types), f"add the missing keys to migbench/sweep/json_schema.py: {set(keys) ^ set(types)}"
    doc = js.sweep_json_schema()
    assert set(doc["then"]["propertyNames"]["enum"]) == set(schema.TOP_KEYS) | set(schema.WANDB_ONLY_KEYS)
    group = doc["properties"]["groups"]["items"]
    assert set(group["properties"]) == set(schema.GROUP_KEYS) | set(schema.WANDB_ONLY_KEYS) and group["additionalProperties"] is False
    assert doc["properties"]["version"]["const"] == schema.SCHEMA_VERSION
    dist = group["properties"]["parameters"]["additionalProperties"]["anyOf"][2]["properties"]["distribution"]
    assert dist["enum"] == list(schema.DISTRIBUTIONS) + list(schema.LIST_DISTRIBUTIONS)


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.name)
def test_every_sweep_the_loader_accepts_validates(validator, path):
    load_sweep(path)  # the loader accepts it
    errors = sorted(validator.iter_errors(yaml.safe_load(path.read_text())), key=str)
    assert not errors, [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]


@pytest.mark.parametrize("name", BAD_SHAPE)
def test_sweeps_refused_for_their_shape_do_not_validate(validator, name):
    path = DATA / "sweeps" / "bad" / f"{name}.yaml"
    with pytest.raises(Exception):  # noqa: B017 - the loader's own error type is tested elsewhere
        load_sweep(path)
    assert not validator.is_valid(yaml.safe_load(path.read_text())), name


@pytest.mark.parametrize(
    "text, ok",
    [
        ("memory: 2.5GiB", True),
        ("memory: 3gb", True),
        ("memory: 2.5", False),
        ("memory: lots", False),
        ("duration: 1h30m", True),
        ("duration: 90", False),
        ("duration: 8 hours", False),
        ("memory: {by: size, table: {small: 2GiB, large: 8GiB}}", True),
        (
            "memory: {estimate: {params: 124M, precision: bf16-mixed, optimizer: adamw, batch_size: 8, seq_len: 1024, "
            "hidden: 768, layers: 12, heads: 12, vocab: 50257}}",
            True,
        ),
        ("memory: {estimate: {params: 124M}}", False),
        ("memory: measured", True),
        ("memory: {measured: true}", True),
        ("memory: {measured: true, fallback: 9GiB}", True),
        ("memory: {measured: true, fallback: {by: size, table: {small: 2GiB, large: 8GiB}}, by: [size], headroom: 0.2}", True),
        ("memory: {measured: false}", False),
        ("memory: {measured: true, fallback: lots}", False),
        ("memory: auto", False),
    ],
)
def test_quantities_follow_the_units_the_loader_reads(validator, text, ok):
    """Issue 22 item 9 (the measured forms): `migbench schema` rejected `memory: measured` and `{measured: true, ...}`."""
    doc = yaml.safe_load("version: 1\nname: q\ncommand: python t.py {size}\nparameters: {size: [small, large]}\n" + text + "\n")
    if "memory" not in doc:
        doc["memory"] = "2GiB"
    assert validator.is_valid(doc) is ok, text


def test_the_schema_command_prints_and_writes_it(tmp_path):
    r = migbench("schema")
    assert r.returncode == 0 and json.loads(r.stdout) == js.sweep_json_schema()
    out = tmp_path / "s" / "sweep.schema.json"
    r = migbench("schema", "-o", str(out))
    assert r.returncode == 0 and json.loads(out.read_text()) == js.sweep_json_schema()
    r = migbench("schema", "-o", str(tmp_path))
    assert r.returncode == 1 and "Error:" in r.stderr and "Traceback" not in r.stderr
