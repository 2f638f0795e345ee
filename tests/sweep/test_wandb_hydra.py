"""W&B and Hydra sweep files load (issue 10, item 6): W&B-only keys are ignored with a note,
`categorical`/`constant`, nested `parameters:`, `program:` without `command:`, Hydra's quoted values and
its `hydra.sweeper.params` block; `method: bayes` is refused with its reason; a parameter no command
uses is said; a command that cannot start is said at plan time."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from migbench.errors import InputError
from migbench.sweep import load_sweep_text
from migbench.sweep.runnable import start_problems

HEAD = "version: 1\nname: t\nmemory: 1GiB\n"


def problems(text: str) -> list[str]:
    with pytest.raises(InputError) as info:
        load_sweep_text(text)
    return [str(p) for p in info.value.problems]


def test_wandb_only_keys_are_ignored_with_one_note() -> None:
    """Regression: `metric:` (in every W&B file) was refused ("did you mean 'retries'?")."""
    sweep = load_sweep_text(
        HEAD
        + """\
program: train.py
method: grid
project: p
entity: e
metric: {name: val_loss, goal: minimize}
early_terminate: {type: hyperband, min_iter: 3}
parameters: {lr: {values: [0.1, 0.01]}}
"""
    )
    assert len(sweep.runs) == 2
    (note, *rest) = sweep.notes
    assert note.startswith("<sweep>:6: project: `project`, `entity`, `metric`, `early_terminate`: W&B-only keys, ignored"), note
    assert rest == []


def test_wandb_only_keys_in_a_group_are_ignored_too() -> None:
    sweep = load_sweep_text("version: 1\nname: t\ngroups:\n  - {name: a, program: t.py, memory: 1GiB, metric: {name: x}}\n")
    assert any("groups[0].metric: `metric`: W&B-only key, ignored" in n for n in sweep.notes), sweep.notes


def test_categorical_and_constant() -> None:
    """Regression: `distribution: categorical` / `constant` were refused."""
    sweep = load_sweep_text(
        HEAD
        + """\
command: run ${args}
parameters:
  opt: {distribution: categorical, values: [adam, sgd]}
  epochs: {distribution: constant, value: 200}
"""
    )
    assert [r.params for r in sweep.runs] == [{"opt": "adam", "epochs": 200}, {"opt": "sgd", "epochs": 200}]
    assert any(
        "distribution: categorical needs `values`" in p
        for p in problems(HEAD + "command: run ${args}\nparameters: {o: {distribution: categorical, value: 1}}\n")
    )


def test_nested_parameters_are_dotted_names() -> None:
    """Regression: nested `parameters:` (W&B) were refused."""
    sweep = load_sweep_text(
        HEAD
        + """\
command: [run, "{optimizer.lr}", "${args}"]
parameters:
  optimizer:
    parameters:
      lr: {values: [0.1, 0.01]}
      sched:
        parameters:
          warmup: {value: 5}
  seed: [0]
"""
    )
    assert sweep.runs[0].params == {"optimizer.lr": 0.1, "optimizer.sched.warmup": 5, "seed": 0}
    assert sweep.runs[0].argv == ("run", "0.1", "--optimizer.lr=0.1", "--optimizer.sched.warmup=5", "--seed=0")
    assert any("beside `parameters:`" in p for p in problems(HEAD + "command: run\nparameters: {o: {parameters: {a: [1]}, values: [2]}}\n"))


def test_program_without_command_runs_the_wandb_default() -> None:
    """Regression: `program:` without `command:` was refused ("missing `command`")."""
    sweep = load_sweep_text(HEAD + "program: train.py\nparameters: {lr: [0.1], flag: [true]}\n")
    assert sweep.runs[0].argv == ("/usr/bin/env", "python", "train.py", "--flag=True", "--lr=0.1")


@pytest.mark.parametrize(
    ("written", "values"),
    [
        ("\"'a,b'\"", ["a,b"]),
        ("'\"a,b\"'", ["a,b"]),
        ("\"'1'\"", ["1"]),
        ("\"x,'b,c',3\"", ["x", "b,c", 3]),
        ("\"choice('a,b',c)\"", ["a,b", "c"]),
        ('"1,2"', [1, 2]),
    ],
)
def test_hydra_quotes_make_one_value(written: str, values: list) -> None:
    """Regression: Hydra's quoted `"'a,b'"` was split into two values."""
    sweep = load_sweep_text(HEAD + f"command: run {{x}}\nparameters:\n  x: {written}\n")
    assert [r.params["x"] for r in sweep.runs] == values


def test_an_unclosed_hydra_quote_is_a_problem() -> None:
    assert any("a quote is not closed" in p for p in problems(HEAD + 'command: run {x}\nparameters: {x: "a,\'b"}\n'))


def test_a_hydra_sweep_block_gives_the_parameters() -> None:
    sweep = load_sweep_text(
        HEAD
        + """\
command: python3 app.py ${args_no_hyphens}
hydra:
  mode: MULTIRUN
  sweeper:
    params:
      db: mysql,postgresql
      +model: vit-base,T0_3B
      seed: range(0,3)
"""
    )
    assert len(sweep.runs) == 12
    assert sweep.runs[0].argv == ("python3", "app.py", "+model=vit-base", "db=mysql", "seed=0", "hydra.run.dir=${run_dir}")
    assert any("`hydra.mode` is Hydra's own setting: ignored" in n for n in sweep.notes)
    both = HEAD + "command: run ${args}\nparameters: {db: [a]}\nhydra: {sweeper: {params: {db: 'b,c'}}}\n"
    assert any("db given in both parameters: and hydra.sweeper.params" in p for p in problems(both))
    assert any("has no parameters" in p for p in problems(HEAD + "command: run\nhydra: {mode: MULTIRUN}\n"))


def test_bayes_is_refused_with_its_reason() -> None:
    probs = problems(HEAD + "program: t.py\nmethod: bayes\nparameters: {lr: {min: 0.1, max: 1.0}}\n")
    assert any("unknown method 'bayes': Bayesian search picks each run from the results of the earlier ones" in p for p in probs), probs


def test_probabilities_are_ignored_by_a_grid_and_refused_by_random() -> None:
    sweep = load_sweep_text(HEAD + "command: run {x}\nparameters: {x: {values: [1, 2], probabilities: [0.9, 0.1]}}\n")
    assert len(sweep.runs) == 2 and any("`probabilities` is ignored" in n for n in sweep.notes)
    random = HEAD + "command: run {x}\nmethod: random\ncount: 2\nparameters: {x: {values: [1, 2], probabilities: [0.9, 0.1]}}\n"
    assert any("`probabilities` is not supported" in p for p in problems(random))


def test_a_parameter_no_command_uses_is_said() -> None:
    """Regression: a parameter the command did not use silently made identical runs."""
    sweep = load_sweep_text(HEAD + "command: python3 train.py --lr {lr}\nparameters:\n  lr: [0.1, 0.2]\n  seed: [0, 1]\n  epochs: {value: 3}\n")
    notes = "\n".join(sweep.notes)
    assert "<sweep>:7: parameter 'seed' is used by no command, env value or memory rule: its 2 values give runs with the same command" in notes
    assert "parameter 'epochs'" in notes and "its value never reaches the program" in notes
    assert "'lr'" not in notes
    quiet = HEAD.replace("memory: 1GiB\n", "") + "command: run ${args}\nmemory: {by: bs, table: {1: 1GiB}}\nparameters: {bs: [1], x: [1, 2]}\n"
    assert load_sweep_text(quiet).notes == ()


def test_a_command_that_cannot_start_is_said_at_plan_time(tmp_path: Path) -> None:
    """Regression: a missing command or workdir was found only by the launcher, after 101 s of retries."""
    (tmp_path / "train.py").write_text("")
    text = f"""\
version: 1
name: t
groups:
  - {{name: nocmd, command: "nosuchprog-migbench --x {{x}}", parameters: {{x: [1, 2]}}, memory: 1GiB}}
  - {{name: nodir, command: "{sys.executable} train.py", workdir: gone, memory: 1GiB}}
  - {{name: noscript, command: "{sys.executable} -u missing.py", memory: 1GiB}}
  - {{name: env, command: "/usr/bin/env nosuchprog-migbench", memory: 1GiB}}
  - {{name: fine, command: "{sys.executable} train.py", memory: 1GiB}}
"""
    said = start_problems(load_sweep_text(text, base_dir=tmp_path))
    assert said == [
        "group nocmd: command 'nosuchprog-migbench' is not found on PATH; its runs would fail to start (exit 127, not retried)",
        f"group nodir: workdir {tmp_path / 'gone'} does not exist; its runs would fail to start (exit 127, not retried)",
        f"group noscript: script missing.py does not exist in {tmp_path}; its runs would fail at once",
        "group env: command 'nosuchprog-migbench' is not found on PATH; its runs would fail to start (exit 127, not retried)",
    ]


def test_a_quoted_hydra_value_reaches_the_app_quoted() -> None:
    """Issue 22 item 8: `'/data/a,b'` reached the app as `++data.root=/data/a,b`, which Hydra rejects as ambiguous."""
    sweep = load_sweep_text(
        HEAD
        + """\
command: python3 app.py ${args_no_hyphens}
hydra:
  sweeper:
    params:
      ++data.root: "'/data/a,b'"
      tag: "'1'"
      db: mysql,postgresql
"""
    )
    assert sweep.runs[0].argv[:5] == ("python3", "app.py", "++data.root='/data/a,b'", "db=mysql", "tag='1'")
    assert sweep.runs[0].params["++data.root"] == "/data/a,b"


def test_hydra_runs_get_their_own_output_dir_and_the_submitit_time_limit() -> None:
    """Issue 22 item 8: runs wrote to Hydra's outputs/<date>/<time> (shared by runs started in the same second), and
    the submitit launcher block (timeout_min) was ignored."""
    sweep = load_sweep_text(
        HEAD
        + """\
command: python3 app.py ${args_no_hyphens}
hydra:
  sweep: {dir: multirun/exp, subdir: '${hydra.job.num}_${hydra.job.override_dirname}'}
  launcher: {_target_: hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher, timeout_min: 90, gpus_per_node: 2}
  sweeper:
    params: {db: 'mysql,postgresql'}
"""
    )
    assert [r.argv[-1] for r in sweep.runs] == ["hydra.run.dir=multirun/exp/${run_id}_${hydra.job.override_dirname}"] * 2
    assert all(r.timeout_s == 5400 and r.duration_s == 5400 for r in sweep.runs)
    assert any("gpus_per_node: 2`: each run gets one MIG instance" in n for n in sweep.notes)
    plain = load_sweep_text(
        HEAD + "command: python3 app.py ${args_no_hyphens}\nduration: 2h\nhydra: {launcher: {timeout_min: 600}, sweeper: {params: {db: 'a,b'}}}\n"
    )
    assert plain.runs[0].argv == ("python3", "app.py", "db=a", "hydra.run.dir=${run_dir}")  # migbench's run dir
    assert plain.runs[0].duration_s == 7200 and plain.runs[0].timeout_s == 36000
    own = load_sweep_text(HEAD + "command: python3 app.py ${args_no_hyphens} hydra.run.dir=out/{db}\nhydra: {sweeper: {params: {db: 'a,b'}}}\n")
    assert own.runs[0].argv == ("python3", "app.py", "db=a", "hydra.run.dir=out/a")
    argparse = load_sweep_text(HEAD + "command: python3 app.py ${args}\nhydra: {sweeper: {params: {db: 'a,b'}}}\n")
    assert argparse.runs[0].argv == ("python3", "app.py", "--db=a")  # not a Hydra command line: nothing added, and said
    assert any("passes no Hydra overrides" in n and "hydra.run.dir=${run_dir}" in n for n in argparse.notes)
