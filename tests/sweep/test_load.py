"""Loading good sweep files: expansion, ids, commands, memory, and the schema's conveniences."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shlex
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from migbench.errors import InputError
from migbench.estimate import EstimateSpec, estimate
from migbench.sweep import (
    ExplicitMemory,
    FleetEntry,
    LaunchSettings,
    MemoryEstimate,
    MemoryTable,
    Sweep,
    load_sweep,
    load_sweep_text,
    run_id,
)
from tests.support import DATA

SWEEPS = DATA / "sweeps"

GOOD = SWEEPS / "good"


def load(text: str, **kw: object) -> Sweep:
    return load_sweep_text(textwrap.dedent(text), file="test.yaml", base_dir=Path("/srv/exp"), **kw)  # type: ignore[arg-type]


def one_group(body: str, head: str = "") -> Sweep:
    """A sweep in the top-level single-group form; `body` holds the group's fields."""
    return load("version: 1\nname: t\n" + textwrap.dedent(head) + textwrap.dedent(body))


# -- the brief's example ----------------------------------------------------------------------------


def test_the_example_sweep_has_18_plus_2_runs() -> None:
    path = GOOD / "example.yaml"
    sweep = load_sweep(path)
    assert sweep.version == 1 and sweep.name == "phase2-ablations"
    assert sweep.fleet == (FleetEntry("A100-SXM4-80GB", 4, None),)
    assert [g.name for g in sweep.groups] == ["ablation", "full"]
    assert [r.group for r in sweep.runs] == ["ablation"] * 18 + ["full"] * 2
    assert [r.index for r in sweep.runs] == list(range(20))
    assert sweep.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert sweep.path == str(path.resolve())

    first = sweep.runs[0]
    assert first.params == {"wells": 2, "aug": 0.1, "seed": 0}
    assert first.argv == ("python", "train.py", "--wells", "2", "--aug", "0.1", "--seed", "0")
    assert first.memory_mib == 2560 and first.memory_source == "explicit" and first.memory_parts == ()
    assert first.duration_s == 8 * 3600 and first.max_runs_per_instance == 4 and first.compute == 1.0
    assert first.workdir == str(GOOD.resolve()) and first.shell is False and first.env == {}
    assert first.profiles is None and first.retries is None and first.timeout_s is None
    # grid order: the first parameter varies slowest
    assert [tuple(r.params.values()) for r in sweep.runs[:4]] == [(2, 0.1, 0), (2, 0.1, 1), (2, 0.1, 2), (2, 0.3, 0)]
    last = sweep.runs[-1]
    assert last.argv == ("python", "train.py", "--wells", "all", "--seed", "1")
    assert last.memory_mib == 60 * 1024 and last.duration_s == 18 * 3600 and last.max_runs_per_instance == 1
    assert len({r.id for r in sweep.runs}) == 20
    assert sweep.launch == LaunchSettings() and sweep.seed == 0
    assert isinstance(sweep.groups[0].memory, ExplicitMemory)


def test_run_id_is_the_hash_of_canonical_json() -> None:
    sweep = load_sweep(GOOD / "example.yaml")
    r = sweep.runs[5]
    blob = json.dumps({"group": r.group, "params": r.params, "repeat": r.repeat}, sort_keys=True, separators=(",", ":"))
    assert r.id == f"ablation-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"
    assert re.fullmatch(r"ablation-[0-9a-f]{10}", r.id)
    assert r.id == run_id("ablation", dict(reversed(list(r.params.items()))), 0)
    assert sweep.run(r.id) is r


REORDERED = """\
version: 1
name: phase2-ablations
groups:
  - duration: 18h
    memory: 60GiB
    parameters: {seed: [1, 0]}
    command: python train.py --wells all --seed {seed}
    name: full
  - name: ablation
    max_runs_per_instance: 4
    parameters:
      seed: [2, 0, 1]
      aug: {values: [0.3, 0.1]}
      wells: [4, 2, 3]
    memory: 2.5GiB
    duration: 8h
    command: python train.py --wells {wells} --aug {aug} --seed {seed}
fleet:
  - {count: 4, gpu: A100-SXM4-80GB}
"""


def test_ids_are_stable_when_groups_keys_and_values_are_reordered() -> None:
    a = load_sweep(GOOD / "example.yaml")
    b = load_sweep_text(REORDERED)
    assert {r.id: r.params for r in a.runs} == {r.id: r.params for r in b.runs}
    assert {r.id: r.argv for r in a.runs} == {r.id: r.argv for r in b.runs}
    assert [r.group for r in b.runs][:2] == ["full", "full"]  # file order decides the run order
    assert a.sha256 != b.sha256


@settings(max_examples=40, deadline=None)
@given(
    st.permutations([1, 2, 3, 4]),
    st.permutations(["a", "b", "c"]),
    st.permutations([0.5, 1e-05, 3.0]),
    st.permutations(["x", "y", "z"]),
    st.integers(1, 3),
)
def test_ids_are_unique_and_stable_under_any_permutation(xs: list[int], ys: list[str], zs: list[float], order: list[str], repeats: int) -> None:
    values = {"x": xs, "y": ys, "z": zs}
    params = "\n".join(f"  {k}: {json.dumps(values[k])}" for k in order)
    text = f"version: 1\nname: prop\ncommand: run {{x}} {{y}} {{z}}\nmemory: 1GiB\nrepeats: {repeats}\nparameters:\n{params}\n"
    sweep = load_sweep_text(text)
    canonical = load_sweep_text(
        "version: 1\nname: prop\ncommand: run {x} {y} {z}\nmemory: 1GiB\n"
        f"repeats: {repeats}\nparameters:\n  x: [1, 2, 3, 4]\n  y: [a, b, c]\n  z: [0.5, 1.0e-5, 3.0]\n"
    )
    ids = [r.id for r in sweep.runs]
    assert len(ids) == len(set(ids)) == 4 * 3 * 3 * repeats
    assert {r.id: (r.params, r.repeat) for r in sweep.runs} == {r.id: (r.params, r.repeat) for r in canonical.runs}


# -- commands: no value ever reaches a shell ------------------------------------------------------

EVIL = "; rm -rf ~ #"


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("python train.py --x {x}", ("python", "train.py", "--x", EVIL)),
        ("python train.py --x={x}", ("python", "train.py", f"--x={EVIL}")),
        ("python train.py '--x {x}'", ("python", "train.py", f"--x {EVIL}")),
        ("python train.py ${args}", ("python", "train.py", f"--x={EVIL}")),
        ("python train.py ${args_no_hyphens}", ("python", "train.py", f"x='{EVIL}'")),  # Hydra's quoting: one override
        ("python train.py ${args_json}", ("python", "train.py", json.dumps({"x": EVIL}, separators=(",", ":")))),
    ],
)
def test_an_injection_value_stays_one_argv_element(command: str, expected: tuple[str, ...]) -> None:
    sweep = one_group(f"command: {json.dumps(command)}\nparameters:\n  x: {{value: {json.dumps(EVIL)}}}\nmemory: 1GiB\n")
    (run,) = sweep.runs
    assert run.argv == expected and run.shell is False


@settings(max_examples=150, deadline=None)
@given(st.text(st.characters(max_codepoint=0xFFFF, blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30))
def test_no_value_is_ever_split_or_interpreted(value: str) -> None:
    """Whatever the value holds (quotes, braces, ${...}, ;, newlines), it is one argument, verbatim."""
    params = f"parameters:\n  x: {{value: {json.dumps(value)}}}\nmemory: 1GiB\n"
    plain = one_group("command: run --x={x} {x}\n" + params)
    assert plain.runs[0].argv == ("run", f"--x={value}", value)
    shell = one_group('shell: true\ncommand: "run --x={x} {x}"\n' + params)
    assert shlex.split(shell.runs[0].argv[2]) == ["run", f"--x={value}", value]


def test_the_shell_receives_values_as_data(tmp_path: Path) -> None:
    import subprocess

    values = ["; touch pwned1 #", "$(touch pwned2)", "`touch pwned3`", "a'b\"c", "{x} ${HOME} * ?"]
    for value in values:
        sweep = one_group(f'shell: true\ncommand: "printf %s {{x}}"\nparameters: {{x: {{value: {json.dumps(value)}}}}}\nmemory: 1GiB\n')
        out = subprocess.run(sweep.runs[0].argv, cwd=tmp_path, capture_output=True, text=True, check=True).stdout
        assert out == value
    assert list(tmp_path.iterdir()) == []


def test_a_list_command_is_not_split() -> None:
    sweep = one_group(f'command: [python, "train.py", "--x={{x}}", 3, 1.0e-5]\nparameters: {{x: [{json.dumps(EVIL)}]}}\nmemory: 1GiB\n')
    assert sweep.runs[0].argv == ("python", "train.py", f"--x={EVIL}", "3", "1.0e-5")
    assert sweep.groups[0].command == ("python", "train.py", "--x={x}", "3", "1.0e-5")


def test_shell_opt_in_quotes_every_value() -> None:
    sweep = one_group(
        """\
        shell: true
        command: "python train.py --x={x} --n {n} ${args} | tee log.txt"
        parameters:
          x: {value: "; rm -rf ~ #"}
          n: [1]
        memory: 1GiB
        """
    )
    (run,) = sweep.runs
    assert run.shell is True and run.argv[:2] == ("/bin/sh", "-c")
    words = shlex.split(run.argv[2])
    assert words == ["python", "train.py", f"--x={EVIL}", "--n", "1", "--n=1", f"--x={EVIL}", "|", "tee", "log.txt"]


def test_shell_leaves_shell_variables_to_the_shell() -> None:
    sweep = one_group('shell: true\ncommand: "echo ${HOME} {{literal}} ${run_id}"\nmemory: 1GiB\n')
    assert sweep.runs[0].argv == ("/bin/sh", "-c", "echo ${HOME} {literal} ${run_id}")


def test_macros_and_literal_braces() -> None:
    sweep = one_group(
        """\
        program: train.py
        command: ["${interpreter}", "${program}", "${args}", "--cfg={{a}}", --out, "${run_dir}/x", "${attempt}", "${run_id}"]
        parameters:
          lr: [1.0e-5]
          b: [true]
          a: {value: null}
        memory: 1GiB
        """
    )
    assert sweep.runs[0].argv == (
        "python",
        "train.py",
        "--a=None",
        "--b=True",
        "--lr=1e-05",
        "--cfg={a}",
        "--out",
        "${run_dir}/x",
        "${attempt}",
        "${run_id}",
    )


def test_args_no_boolean_flags() -> None:
    sweep = one_group("command: run ${args_no_boolean_flags}\nparameters: {fast: [true, false], n: [2]}\nmemory: 1GiB\n")
    assert [r.argv for r in sweep.runs] == [("run", "--fast", "--n=2"), ("run", "--n=2")]


def test_env_substitutes_placeholders_and_keeps_launch_macros() -> None:
    sweep = one_group(
        """\
        command: run {seed}
        parameters: {seed: [3]}
        env: {SEED: "{seed}", REP: "{repeat}", ID: "${run_id}", N: 5}
        memory: 1GiB
        """
    )
    assert sweep.runs[0].env == {"SEED": "3", "REP": "0", "ID": "${run_id}", "N": "5"}


# -- parameters: W&B, Hydra, zip, repeats, random --------------------------------------------------


def test_parameter_forms() -> None:
    sweep = one_group(
        """\
        command: run
        parameters:
          a: [1, 2]
          b: {values: [x]}
          c: {value: 0.5}
          d: "100,200,400"
          e: "range(0,10,4)"
          f: "choice(adam, sgd)"
          g: plain words
          h: 7
          i: "range(0, 0.3, 0.1)"
        memory: 1GiB
        """
    )
    values = {p.name: p.values for p in sweep.groups[0].parameters}
    assert values == {
        "a": (1, 2),
        "b": ("x",),
        "c": (0.5,),
        "d": (100, 200, 400),
        "e": (0, 4, 8),
        "f": ("adam", "sgd"),
        "g": ("plain words",),
        "h": (7,),
        "i": (0.0, 0.1, 0.2),
    }
    assert len(sweep.runs) == 2 * 3 * 3 * 2 * 3


def test_zip_makes_one_axis_at_its_first_member() -> None:
    sweep = one_group(
        """\
        command: run {lr} {bs} {warmup}
        parameters:
          lr: [0.1, 0.01, 0.001]
          bs: [8, 16]
          warmup: [100, 200, 300]
        zip: [[warmup, lr]]
        memory: 1GiB
        """
    )
    assert [tuple(r.params.values()) for r in sweep.runs] == [
        (0.1, 8, 100),
        (0.1, 16, 100),
        (0.01, 8, 200),
        (0.01, 16, 200),
        (0.001, 8, 300),
        (0.001, 16, 300),
    ]
    assert sweep.groups[0].zip == (("warmup", "lr"),)


def test_repeats_repeat_the_grid_with_the_repeat_index() -> None:
    sweep = one_group("command: run {a} --seed {repeat}\nparameters: {a: [1, 2]}\nrepeats: 3\nmemory: 1GiB\n")
    assert [(r.params["a"], r.repeat) for r in sweep.runs] == [(1, 0), (2, 0), (1, 1), (2, 1), (1, 2), (2, 2)]
    assert sweep.runs[3].argv == ("run", "2", "--seed", "1")
    assert len({r.id for r in sweep.runs}) == 6
    alias = one_group("command: run {a}\nparameters: {a: [1, 2]}\nnum_samples: 3\nmemory: 1GiB\n")
    assert [r.id for r in alias.runs] == [r.id for r in sweep.runs]


def test_a_group_without_parameters_is_one_run() -> None:
    sweep = one_group("command: python train.py\nmemory: 1GiB\n")
    assert len(sweep.runs) == 1 and sweep.runs[0].params == {}


RANDOM = """\
version: 1
name: rnd
seed: {seed}
method: random
count: {count}
command: python train.py --lr {{lr}} --wd {{wd}} --bs {{bs}} --act {{act}} --layers {{layers}}
parameters:
  lr: {{distribution: log_uniform_values, min: 1.0e-5, max: 1.0e-2}}
  wd: {{min: 0.0, max: 0.1}}
  bs: {{distribution: q_uniform, min: 16, max: 128, q: 16}}
  act: [relu, gelu, silu]
  layers: {{min: 2, max: 12}}
  mom: {{distribution: normal, mu: 0.9, sigma: 0.01}}
  ll: {{distribution: log_uniform, min: -3, max: 0}}
memory: 1GiB
"""


def test_random_is_deterministic_per_seed() -> None:
    a = load_sweep_text(RANDOM.format(seed=0, count=20))
    b = load_sweep_text(RANDOM.format(seed=0, count=20))
    c = load_sweep_text(RANDOM.format(seed=1, count=20))
    assert [r.params for r in a.runs] == [r.params for r in b.runs]
    assert [r.id for r in a.runs] == [r.id for r in b.runs]
    assert {r.id for r in a.runs}.isdisjoint({r.id for r in c.runs})
    assert len(a.runs) == 20 and len({r.id for r in a.runs}) == 20
    for r in a.runs:
        p = r.params
        assert 1e-5 <= p["lr"] <= 1e-2 and 0 <= p["wd"] <= 0.1
        assert p["bs"] in range(16, 129, 16) and isinstance(p["bs"], int)
        assert p["act"] in ("relu", "gelu", "silu") and isinstance(p["layers"], int) and 2 <= p["layers"] <= 12
        assert isinstance(p["mom"], float) and 0.01 / 20 < p["ll"] <= 1.0
    # more samples keep the earlier ones
    more = load_sweep_text(RANDOM.format(seed=0, count=25))
    assert [r.id for r in more.runs[:20]] == [r.id for r in a.runs]


def test_random_samples_ignore_the_order_of_keys_and_values() -> None:
    text = RANDOM.format(seed=3, count=8)
    lines = text.splitlines()
    start = lines.index("parameters:") + 1
    end = lines.index("memory: 1GiB")
    shuffled = lines[:start] + list(reversed(lines[start:end])) + lines[end:]
    shuffled = [ln.replace("[relu, gelu, silu]", "[silu, relu, gelu]") for ln in shuffled]
    a = load_sweep_text(text)
    b = load_sweep_text("\n".join(shuffled))
    assert [r.id for r in a.runs] == [r.id for r in b.runs]


def test_random_with_repeats_and_zip() -> None:
    sweep = one_group(
        """\
        method: random
        count: 3
        repeats: 2
        command: run {lr} {warmup} {x}
        parameters:
          lr: [0.1, 0.01, 0.001]
          warmup: [1, 2, 3]
          x: {min: 0.0, max: 1.0}
        zip: [[lr, warmup]]
        memory: 1GiB
        """
    )
    assert len(sweep.runs) == 6
    pairs = {(0.1, 1), (0.01, 2), (0.001, 3)}
    assert all((r.params["lr"], r.params["warmup"]) in pairs for r in sweep.runs)
    assert [r.params for r in sweep.runs[:3]] == [r.params for r in sweep.runs[3:]]
    assert [r.repeat for r in sweep.runs] == [0, 0, 0, 1, 1, 1]


# -- the single-group form and defaults ---------------------------------------------------------------


def test_top_level_single_group_takes_the_sweep_name() -> None:
    sweep = load_sweep(GOOD / "single.yaml")
    assert [g.name for g in sweep.groups] == ["gpt2-lr-bs"]
    assert all(r.id.startswith("gpt2-lr-bs-") for r in sweep.runs)
    assert len(sweep.runs) == 3 * 2
    assert sweep.runs[0].argv[:2] == ("python", "train.py")


def test_defaults_are_merged_under_each_group() -> None:
    sweep = load(
        """\
        version: 1
        name: d
        defaults:
          memory: 1GiB
          duration: 1h
          env: {A: "1", B: "2"}
          parameters: {seed: [0, 1]}
        groups:
          - name: a
            command: run {seed}
          - name: b
            command: run {seed} {lr}
            memory: 2GiB
            env: {B: "3"}
            parameters: {lr: [0.1]}
        """
    )
    a, b = sweep.groups
    assert a.memory == ExplicitMemory(1024) and b.memory == ExplicitMemory(2048)
    assert a.env == {"A": "1", "B": "2"} and b.env == {"A": "1", "B": "3"}
    assert [p.name for p in b.parameters] == ["seed", "lr"]
    assert len(sweep.runs) == 4 and all(r.duration_s == 3600 for r in sweep.runs)


# -- memory ----------------------------------------------------------------------------------------


def test_memory_table_matches_string_forms_and_falls_back_to_default() -> None:
    sweep = one_group(
        """\
        command: run {batch_size}
        parameters: {batch_size: [8, "16", 32]}
        memory: {by: batch_size, table: {8: 9GiB, "16": 14GiB}, default: 20GiB}
        """
    )
    got = [(r.params["batch_size"], r.memory_mib, r.memory_source) for r in sweep.runs]
    assert got == [
        (8, 9216, "table:batch_size=8"),
        ("16", 14336, "table:batch_size=16"),
        (32, 20480, "table:batch_size=32"),
    ]
    assert sweep.groups[0].memory == MemoryTable("batch_size", {"8": 9216, "16": 14336}, 20480)


def test_memory_estimate_resolves_placeholders_per_run() -> None:
    sweep = load_sweep(GOOD / "estimate.yaml")
    assert isinstance(sweep.groups[0].memory, MemoryEstimate)
    for run in sweep.runs:
        spec = EstimateSpec(
            params=124e6,
            precision="bf16-mixed",
            optimizer="adamw",
            batch_size=run.params["batch_size"],
            seq_len=1024,
            hidden=768,
            layers=12,
            heads=12,
            vocab=50257,
            attention=run.params["attention"],
            context_mib=384,
            workspace_mib=64,
        )
        est = estimate(spec)
        assert run.memory_source == "estimate"
        assert run.memory_mib == est.total_mib
        assert [n for n, _ in run.memory_parts] == [
            "cuda context",
            "model states",
            "activations",
            "logits",
            "workspace",
            "headroom",
        ]
        assert all(isinstance(v, int) and v >= est.part(n) for n, v in run.memory_parts)
        assert run.memory_parts[0] == ("cuda context", 384)
    by = {(r.params["attention"], r.params["batch_size"]): r.memory_mib for r in sweep.runs}
    assert by[("flash", 8)] < by[("eager", 8)] and by[("eager", 4)] < by[("eager", 8)]


# -- the rest of the schema ---------------------------------------------------------------------------


def test_everything_parses() -> None:
    sweep = load_sweep(GOOD / "everything.yaml")
    assert sweep.description and sweep.seed == 7
    assert sweep.fleet == (FleetEntry("H100-SXM5-80GB", 2, "550.54.15"), FleetEntry("A100-SXM4-80GB", 1, None))
    assert sweep.duration_model.interference == 0.1 and sweep.duration_model.compute_basis == "slices"
    assert sweep.launch == LaunchSettings(
        retries=3,
        backoff_s=60,
        stop_grace_s=0,
        flapping_window_s=120,
        flapping_max=5,
        env={"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"},
        log_dir="logs",
    )
    lm = [r for r in sweep.runs if r.group == "lm"]
    assert len(lm) == 8 and lm[0].profiles == ("1g.10gb", "2g.20gb", "3g.40gb")
    assert lm[0].compute == 0.5 and lm[0].timeout_s == 7200 and lm[0].retries == 1
    assert lm[0].env["WANDB_MODE"] == "offline"
    zipped = [r for r in sweep.runs if r.group == "zipped"]
    assert zipped[0].workdir == str(GOOD.parent.resolve())
    assert shlex.split(zipped[0].argv[2]) == [
        "cd",
        "/tmp",
        "&&",
        "python",
        "train.py",
        "--lr",
        "0.1",
        "--warmup",
        "100",
        "--note",
        EVIL,
        "|",
        "tee",
        "out.log",
    ]
    assert [r.index for r in sweep.runs] == list(range(len(sweep.runs)))


def test_yaml_12_floats_and_float_rendering() -> None:
    sweep = one_group("command: run {lr}\nparameters: {lr: [1e-5, 0.1, 3.0, 2.5e+3]}\nmemory: 1GiB\n")
    assert [r.argv[1] for r in sweep.runs] == ["1e-05", "0.1", "3.0", "2500.0"]


def test_load_sweep_text_and_injected_catalogue() -> None:
    class Cat:
        def find_key(self, name: str) -> str | None:
            return "TOY" if name.lower() == "toy" else None

        def keys(self) -> list[str]:
            return ["TOY"]

    text = "version: 1\nname: t\nfleet: [{gpu: toy, count: 2}]\ncommand: run\nmemory: 1GiB\n"
    sweep = load_sweep_text(text, catalog=Cat(), base_dir=Path("/srv/exp"))
    assert sweep.fleet == (FleetEntry("TOY", 2, None),)
    assert sweep.path is None and sweep.sha256 == hashlib.sha256(text.encode()).hexdigest()
    assert sweep.runs[0].workdir == str(Path("/srv/exp").resolve())


def test_values_are_frozen() -> None:
    sweep = load_sweep(GOOD / "example.yaml")
    with pytest.raises(dataclasses.FrozenInstanceError):
        sweep.runs[0].memory_mib = 1  # type: ignore[misc]


def test_a_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="sweep file .* does not exist"):
        load_sweep(tmp_path / "nope.yaml")


@pytest.mark.parametrize("path", sorted(GOOD.glob("*.yaml")), ids=lambda p: p.name)
def test_every_good_file_loads(path: Path) -> None:
    sweep = load_sweep(path)
    assert sweep.runs and len({r.id for r in sweep.runs}) == len(sweep.runs)
