"""The error corpus: one file per kind of mistake in tests/data/sweeps/bad/, each with where it is
reported (line, field) and what it says. Every problem is found in one pass, with a line."""

from __future__ import annotations

import pytest

import migbench.sweep.group as group_mod
from migbench import units
from migbench.errors import InputError, Problem
from migbench.sweep import load_sweep, load_sweep_text
from tests.support import DATA

BAD = DATA / "sweeps" / "bad"


# file -> (number of problems, line, field, message fragment, hint fragment or None) of its first problem
CASES: dict[str, tuple[int, int | None, str | None, str, str | None]] = {
    "yaml_syntax.yaml": (1, 6, None, "YAML syntax error: mapping values are not allowed here (column 12)", "indentation"),
    "not_a_mapping.yaml": (1, 1, None, "a sweep file must be a mapping", None),
    "empty.yaml": (1, None, None, "the file is empty", "version: 1"),
    "missing_version.yaml": (1, 1, "version", "missing `version`", "version: 1"),
    "wrong_version.yaml": (1, 1, "version", "unsupported version 2; this migbench reads version 1", None),
    "unknown_key_top.yaml": (1, 3, "fleat", "unknown key 'fleat'", "did you mean 'fleet'?"),
    "unknown_key_group.yaml": (1, 7, "groups[0].max_run_per_instance", "unknown key 'max_run_per_instance'", "did you mean 'max_runs_per_instance'?"),
    "wrong_type.yaml": (1, 7, "groups[0].max_runs_per_instance", "expected a whole number >= 1, got a string ('four')", None),
    "bad_quantity.yaml": (1, 6, "groups[0].memory", "bad memory quantity: 2.5 has no unit", units.MEMORY_HINT),
    "bad_duration.yaml": (1, 7, "groups[0].duration", "bad duration: '8 hours' is not a duration", units.DURATION_HINT),
    "unknown_gpu.yaml": (1, 5, "fleet[1].gpu", "unknown GPU model 'A200-SXM9'", "known models: A100-PCIE-40GB"),
    "fleet_count_zero.yaml": (1, 5, "fleet[0].count", "must be >= 1, got 0", None),
    "placeholder_unknown.yaml": (1, 5, "groups[0].command", "placeholder {sed} names no parameter; parameters are: wells, seed", "{{"),
    "empty_grid.yaml": (1, 7, "groups[0].parameters.wells", "empty grid", None),
    "distribution_in_grid.yaml": (1, 8, "groups[0].parameters.lr.distribution", "a distribution never ends a grid; use method: random", None),
    "values_and_distribution.yaml": (1, 11, "groups[0].parameters.lr.distribution", "`values` together with `distribution` in one parameter", None),
    "zip_unequal.yaml": (1, 10, "groups[0].zip[0]", "equal length: lr has 3, warmup has 2", None),
    "zip_unknown.yaml": (1, 8, "groups[0].zip[0][1]", "zip names 'wamup', which is not a parameter; parameters are: lr", None),
    "duplicate_group.yaml": (1, 7, "groups[1].name", "duplicate group name 'a' (first at line 4)", None),
    "duplicate_yaml_key.yaml": (1, 7, "groups[0].memory", "duplicate key 'memory' (first at line 6)", None),
    "random_without_count.yaml": (1, 4, "groups[0].count", "missing `count` for method: random", "count: 20"),
    "compute_out_of_range.yaml": (1, 7, "groups[0].compute", "compute must be in (0, 1], got 1.5", None),
    "bad_profile.yaml": (1, 7, "groups[0].profiles[1]", "'3g-40gb' is not a MIG profile name", "1g.10gb"),
    "param_bad_form.yaml": (
        1,
        7,
        "groups[0].parameters.wells",
        "expected a list, {values: [...]}, {value: x} or a distribution, got a mapping with keys 'vals'",
        None,
    ),
    "mixed_forms.yaml": (1, 3, "command", "'command' is a group field, but this file uses groups: (mixing the two forms)", "defaults:"),
    "args_json_file.yaml": (1, 4, "command[2]", "${args_json_file} is not supported", "${args_json}"),
    "table_missing_entry.yaml": (1, 10, "groups[0].memory.table", "group 'a': no memory for batch_size=32 (no table entry and no default)", "default:"),
    "table_by_unknown.yaml": (1, 5, "memory.by", "memory table is by 'batch_size', which is not a parameter", None),
    "estimate_bad.yaml": (3, 8, "groups[0].memory.estimate.vocab", "the estimate needs `vocab`", "required: params"),
    "estimate_run_bad.yaml": (1, 9, "groups[0].memory.estimate.precision", 'bad precision \'fp8\' for run {"prec":"fp8"}', None),
    "duplicate_value.yaml": (1, 10, "groups[0].parameters.wells[2]", "value 2 is listed twice (first at line 8)", "repeats:"),
    "unclosed_quote.yaml": (1, 3, "command", "cannot split the command into arguments: No closing quotation", None),
    "lone_brace.yaml": (1, 3, "command[2]", "a lone '{'", "{{"),
    "args_not_alone.yaml": (1, 3, "command", "${args} expands to several arguments", None),
    "unknown_macro.yaml": (1, 3, "command", "unknown macro ${HOME}", "shell: true"),
    "program_missing.yaml": (1, 3, "command", "${program} is used but the group has no `program`", None),
    "bad_group_name.yaml": (1, 4, "groups[0].name", "'Ablation Study' is not a valid group name", None),
    "sweep_name_bad.yaml": (1, 2, "name", "'-bad name' is not a valid sweep name", None),
    "hydra_range_step_zero.yaml": (1, 5, "parameters.warmup", "'range(0,10,0)': the step cannot be 0", None),
    "hydra_interval.yaml": (1, 5, "parameters.lr", "unsupported sweep function interval()", "distribution: uniform"),
    "random_too_few_points.yaml": (1, 4, "count", "random sampling found only 2 distinct points for count: 5", None),
    "defaults_bad_memory.yaml": (1, 4, "defaults.memory", "bad memory quantity: unknown memory unit 'gigs'", None),
    "memory_auto.yaml": (1, 4, "memory", "memory: auto is spelled `measured`", "migbench profile"),
    "measured_by_unknown.yaml": (1, 6, "memory.by[1]", "'seq' is not a parameter; parameters are: batch, lr", None),
    "measured_bad_fallback.yaml": (2, 7, "groups[0].memory.fallback", "memory: measured cannot be used here", "a fallback is"),
    "repeats_alias_twice.yaml": (1, 5, "num_samples", "`num_samples` is another name for `repeats`", None),
    "env_boolean.yaml": (1, 6, "env.WANDB_SILENT", "expected a string, got a boolean (true)", "quote it"),
    "count_with_grid.yaml": (1, 5, "count", "`count` applies to method: random only", None),
    "profile_not_in_fleet.yaml": (1, 7, "profiles[1]", "profile '7g.80gb' exists on none of the fleet's GPUs (A30)", None),
    "missing_memory_and_command.yaml": (2, 4, "groups[0].command", "missing `command`", None),
    "three_problems.yaml": (3, 8, "groups[0].memory", "bad memory quantity: 2.5 has no unit", None),
    "distribution_min_max.yaml": (1, 7, "parameters.lr.max", "max (0.001) must be greater than min (0.01)", None),
}


def test_the_corpus_and_the_table_agree() -> None:
    assert sorted(p.name for p in BAD.glob("*.yaml")) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_file(name: str) -> None:
    count, line, field, fragment, hint = CASES[name]
    path = BAD / name
    with pytest.raises(InputError) as info:
        load_sweep(path)
    err = info.value
    assert err.message == f"{path}: {count} problem{'s' if count != 1 else ''}"
    assert len(err.problems) == count, [str(p) for p in err.problems]
    first = err.problems[0]
    assert (first.line, first.field) == (line, field), str(first)
    assert fragment in first.message, str(first)
    if hint is not None:
        assert first.hint and hint in first.hint, first.hint
    assert all(p.file == str(path) for p in err.problems)
    lines = [p.line for p in err.problems if p.line is not None]
    assert lines == sorted(lines)


def test_every_problem_is_reported_in_one_pass() -> None:
    with pytest.raises(InputError) as info:
        load_sweep(BAD / "three_problems.yaml")
    got = [(p.line, p.field) for p in info.value.problems]
    assert got == [(8, "groups[0].memory"), (9, "groups[0].compute"), (10, "groups[0].timeout")]
    assert str(info.value.problems[1]).startswith(f"{BAD / 'three_problems.yaml'}:9: groups[0].compute: compute must be")


def test_many_mistakes_at_once() -> None:
    text = """\
version: 1
name: many
fleet:
  - {gpu: Z100, count: -1}
launch: {retries: -1, backof: 3s}
groups:
  - name: a
    command: run {x} {y}
    parameters:
      x: []
      z: {distribution: uniform, min: 0, max: 1}
    memory: 2 GiBs
    profiles: [big]
  - name: a
    command: run
    memory: 1GiB
"""
    with pytest.raises(InputError) as info:
        load_sweep_text(text, file="many.yaml")
    err = info.value
    got = {(p.line, p.field) for p in err.problems}
    assert {
        (4, "fleet[0].gpu"),
        (4, "fleet[0].count"),
        (5, "launch.retries"),
        (5, "launch.backof"),
        (10, "groups[0].parameters.x"),
        (11, "groups[0].parameters.z.distribution"),
        (12, "groups[0].memory"),
        (13, "groups[0].profiles[0]"),
        (14, "groups[1].name"),
    } <= got
    assert err.message == f"many.yaml: {len(err.problems)} problems"


def test_defaults_problems_name_the_groups_they_concern() -> None:
    text = """\
version: 1
name: d
defaults:
  command: run {lr}
  memory: 1GiB
groups:
  - name: a
    parameters: {lr: [1]}
  - name: b
  - name: c
"""
    with pytest.raises(InputError) as info:
        load_sweep_text(text)
    (p,) = info.value.problems
    assert (p.line, p.field) == (4, "defaults.command")
    assert p.message == "placeholder {lr} names no parameter; the group has no parameters (in groups 'b', 'c')"


@pytest.mark.parametrize(
    ("snippet", "field", "fragment"),
    [
        ("parameters: {lr: {distribution: uniform, min: 0, max: 1}}\nmethod: random\ncount: 2\nzip: [[lr]]", "zip[0]", "cannot zip lr"),
        ("parameters: {lr: {distribution: gaussian, mu: 0}}\nmethod: random\ncount: 2", "parameters.lr.distribution", "unknown distribution 'gaussian'"),
        ("parameters: {lr: {distribution: normal, min: 0}}\nmethod: random\ncount: 2", "parameters.lr.min", "`min` does not apply to distribution normal"),
        ("parameters: {lr: {value: 1, values: [2]}}", "parameters.lr.value", "`value` is one fixed value"),
        ("parameters: {lr: {values: 3}}", "parameters.lr.values", "expected a list of values, got an integer (3)"),
        ("parameters: {lr: [[1, 2]]}", "parameters.lr[0]", "a parameter value must be a single value"),
        ("parameters: {repeat: [1]}", "parameters.repeat", "`repeat` is reserved"),
        ("parameters: {lr: '1,,2'}", "parameters.lr", "empty item in the comma list"),
        ("parameters: {lr: [1]}\nmethod: bayes", "method", "unknown method 'bayes'"),
        ("repeats: 0", "repeats", "must be >= 1, got 0"),
        ("retries: -1", "retries", "must be >= 0"),
        ("shell: yes please", "shell", "expected true or false"),
        ("workdir: ''", "workdir", "workdir is empty"),
        ("env: {1BAD: x}", "env.1BAD", "is not an environment variable name"),
        ("env: {X: '{nope}'}", "env.X", "placeholder {nope} names no parameter"),
        ("env: {X: '${args}'}", "env.X", "${args} can only be used in command"),
        ("profiles: []", "profiles", "`profiles` is empty"),
        ("timeout: -5", "timeout", "must be more than zero"),
    ],
)
def test_more_group_mistakes(snippet: str, field: str, fragment: str) -> None:
    text = "version: 1\nname: t\ncommand: run\nmemory: 1GiB\n" + snippet + "\n"
    with pytest.raises(InputError) as info:
        load_sweep_text(text)
    assert any(p.field == field and fragment in p.message and p.line for p in info.value.problems), [str(p) for p in info.value.problems]


@pytest.mark.parametrize(
    ("snippet", "field", "fragment"),
    [
        ("command: run\nmemory: {by: x}", "memory.table", "a memory table needs `table`"),
        ("command: run\nmemory: {estimate: {params: 1B}, headroom: 0.2}", "memory.headroom", "`headroom` cannot be combined with `estimate`"),
        ("command: run\nmemory: {size: 1GiB}", "memory", "expected a memory quantity, {by: param"),
        ("command: run\nmemory: [1GiB]", "memory", "expected a memory quantity, a table or an estimate, got a list"),
        ("command: run {bs}\nparameters: {bs: [8]}\nmemory: {by: bs, table: {8: 1GiB, '8': 2GiB}}", "memory.table.8", "table key '8' is given twice"),
        ("command: []\nmemory: 1GiB", "command", "the command is empty"),
        ("command: {run: x}\nmemory: 1GiB", "command", "expected a string or a list of strings"),
        ("shell: true\ncommand: [a, b]\nmemory: 1GiB", "command", "with shell: true the command must be one string"),
        ("command: run\nmemory: 1GiB\nduration_model: {interference: -1, compute_basis: cores}", "duration_model.interference", "must be >= 0"),
        ("command: run\nmemory: 1GiB\nduration_model: {compute_basis: cores}", "duration_model.compute_basis", "unknown compute_basis 'cores'"),
        ("command: run\nmemory: 1GiB\nfleet: []", "fleet", "`fleet` is empty"),
        ("command: run\nmemory: 1GiB\nfleet: [{gpu: A30, count: 1, driver: banana}]", "fleet[0].driver", "is not a driver version"),
        ("command: run\nmemory: 1GiB\nseed: 1.5", "seed", "expected a whole number"),
        ("command: run\nmemory: 1GiB\ndefaults: {name: x}", "defaults.name", "`name` cannot be a default"),
        ("command: run\nmemory: 1GiB\nlaunch: {env: {A: [1]}}", "launch.env.A", "expected a string, got a list"),
        ("command: run\nmemory: 1GiB\ngroups: []", "command", "mixing the two forms"),
        ("description: nothing to run", None, "no runs: write `groups:`"),
        ("command: run\nmemory: 1GiB\nx: &a [1]\n<<: {y: 2}", "x", "unknown key 'x'"),
    ],
)
def test_more_sweep_mistakes(snippet: str, field: str | None, fragment: str) -> None:
    text = "version: 1\nname: t\n" + snippet + "\n"
    with pytest.raises(InputError) as info:
        load_sweep_text(text)
    assert any(p.field == field and fragment in p.message for p in info.value.problems), [str(p) for p in info.value.problems]


def test_estimate_field_mistakes_have_lines() -> None:
    text = """\
version: 1
name: e
command: run
memory:
  estimate:
    params: lots
    precision: bf16-mixed
    optimizer: adamw
    batch_size: 0
    seq_len: 1024
    hidden: 768
    layers: 12
    heads: 12
    vocab: 50257
    context: 1
    activation_checkpointing: maybe
"""
    with pytest.raises(InputError) as info:
        load_sweep_text(text)
    got = {(p.line, p.field): p.message for p in info.value.problems}
    assert "'lots' is not a parameter count" in got[(6, "memory.estimate.params")]
    assert "expected a whole number >= 1" in got[(9, "memory.estimate.batch_size")]
    assert "has no unit" in got[(15, "memory.estimate.context")]
    assert "expected true or false" in got[(16, "memory.estimate.activation_checkpointing")]


def test_a_run_id_collision_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(group_mod, "run_id", lambda group, params, repeat: "same-0000000000")
    text = "version: 1\nname: t\ngroups:\n- {name: a, command: run, memory: 1GiB}\n- {name: b, command: run, memory: 1GiB}\n"
    with pytest.raises(InputError) as info:
        load_sweep_text(text)
    (p,) = info.value.problems
    assert "run id same-0000000000 is produced twice" in p.message and p.line == 5


def test_problems_are_problem_values() -> None:
    with pytest.raises(InputError) as info:
        load_sweep_text("version: 1\nname: t\ncommand: run\nmemory: 1 GiB\nmemroy: 2GiB\n", file="s.yaml")
    (p,) = info.value.problems
    assert isinstance(p, Problem) and p == Problem(
        "unknown key 'memroy'",
        "s.yaml",
        5,
        "memroy",
        p.hint,
    )
    assert p.hint and p.hint.startswith("did you mean 'memory'?")
