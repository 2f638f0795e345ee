"""Output people can use (issue 10, item 7): ids, model names and commands are never cut, at 80, 100
or 200 columns or piped; the picture and the tables use the width there is; each run's parameters
are shown."""

from __future__ import annotations

import json
import re

import pytest

from tests.support import REPO
from tests.support.cli import migbench

TOY = REPO / "examples" / "toy-sweep.yaml"
WIDTHS = (80, 100, 200)


@pytest.fixture(scope="module")
def toy_plan(tmp_path_factory):  # type: ignore[no-untyped-def]
    """The toy sweep planned once (the plan file and its JSON)."""
    out = tmp_path_factory.mktemp("plan") / "toy.plan.yaml"
    r = migbench("plan", str(TOY), "-o", str(out), "--json", "--time-limit", "2")
    assert r.returncode == 0, r.stderr
    return out, json.loads(r.stdout)


def _words(text: str) -> set[str]:
    return set(re.split(r"[\s│┃|]+", text))


@pytest.mark.parametrize("width", WIDTHS)
def test_plan_runs_never_cuts_a_run_id_and_shows_parameters(toy_plan, tmp_path, width):
    """Guards: at 80 columns run ids were cut (`medium-2…`), so rows looked alike and could not be
    copied for `logs`; no run showed its parameters."""
    _, doc = toy_plan
    r = migbench("plan", str(TOY), "-o", str(tmp_path / "p.yaml"), "--runs", "--time-limit", "2", env={"MIGBENCH_WIDTH": str(width)})
    assert r.returncode == 0, r.stderr
    assert "…" not in r.stdout
    words = _words(r.stdout)
    for run in doc["runs"]:
        assert run["id"] in words, (run["id"], width)
        for k, v in run["params"].items():
            assert f"{k}={v}" in words, (run["id"], k, width)


@pytest.mark.parametrize("width", WIDTHS)
def test_the_layout_picture_uses_the_width_there_is(toy_plan, width):
    """Guards: the layout picture stayed 76 columns wide at 200 columns (and cut `1g.10gb@0` to
    `1g.10gb@` at 80)."""
    from migbench.catalog import default_catalog
    from migbench.cli.render import plan_pictures
    from migbench.plan import Plan

    path, doc = toy_plan
    plan = Plan.load(path)
    models = {g.model: default_catalog().model(g.model) for g in plan.fleet}
    lines = [ln for pic in plan_pictures(plan, models, width=width) for ln in pic.plain.splitlines()]
    widest = max(len(ln) for ln in lines)
    assert widest <= width
    if width >= 100:
        assert widest > 76 and widest >= width - 8  # 8 slices: at most 7 columns lost to rounding
    text = "\n".join(lines)
    assert "1g.10gb@0" in text or ("1g.10gb" in text and "@0" in text)
    assert not re.search(r"1g\.10gb@│", text)
    ids = {rid for i in doc["instances"] for rid in i["runs"]}
    for token in _words(text):  # every run-id-looking word is a whole run id
        if re.fullmatch(r"[a-z]+-[0-9a-f]{4,}", token):
            assert token in ids, token
    if width == 200:  # wide enough for every id
        assert ids <= _words(text)


@pytest.mark.parametrize("width", WIDTHS)
def test_catalog_never_cuts_a_model_name(width):
    """Guards: `catalog` cut the model names a user must type into sweeps and --fleet."""
    from migbench.catalog import default_catalog

    r = migbench("catalog", env={"MIGBENCH_WIDTH": str(width)})
    assert r.returncode == 0 and "…" not in r.stdout
    words = _words(r.stdout)
    for key in default_catalog().keys():
        assert key in words, (key, width)
    r = migbench("catalog", "A100-SXM4-80GB", env={"MIGBENCH_WIDTH": str(width)})
    assert r.returncode == 0 and "…" not in r.stdout
    assert {"1g.10gb+me", "{0,1,2,3,4,5,6}:1", "7g.80gb"} <= _words(r.stdout)


@pytest.mark.parametrize("width", WIDTHS)
def test_simulate_compare_headers_are_whole_words(toy_plan, width):
    """Guards: `simulate --compare` headers were cut to `makesp…` at 80 columns."""
    path, _ = toy_plan
    r = migbench("simulate", str(path), "--compare", env={"MIGBENCH_WIDTH": str(width)})
    assert r.returncode == 0, r.stderr
    assert "…" not in r.stdout
    words = _words(r.stdout)
    assert {"makespan", "utilisation", "layout"} <= words
    assert max(len(ln) for ln in r.stdout.splitlines()) <= width


def test_a_long_line_is_never_hard_wrapped(tmp_path):
    """Guards: piped output hard-wrapped at 80 columns, breaking paths and commands in two."""
    deep = tmp_path / ("a-rather-long-directory-name-" * 3) / "plans" / "toy.plan.yaml"
    r = migbench("plan", str(TOY), "-o", str(deep), "--no-runs", "--time-limit", "2", env={"MIGBENCH_WIDTH": "80"})
    assert r.returncode == 0, r.stderr
    assert f"plan written to {deep}\n" in r.stdout


def test_catalog_import_refuses_to_replace_a_built_in_model_without_force(tmp_path):
    """Guards: `catalog import --name A100-SXM4-80GB` silently replaced a built-in model."""
    text = (REPO / "tests" / "data" / "samples" / "h100-nvl_lgip-lgipp_1.txt").read_text()
    lgip, lgipp = tmp_path / "lgip.txt", tmp_path / "lgipp.txt"
    lgip.write_text(text.split("nvidia-smi mig -lgipp")[0])
    lgipp.write_text(text.split("nvidia-smi mig -lgipp")[1])
    cat = tmp_path / "catalog.yaml"
    env = {"MIGBENCH_CATALOG": str(cat)}
    r = migbench("catalog", "import", str(lgip), str(lgipp), "--name", "A100-SXM4-80GB", env=env)
    assert r.returncode == 1 and "built-in" in r.stderr and "--force" in r.stderr
    assert not cat.exists()
    r = migbench("catalog", "import", str(lgip), str(lgipp), "--name", "My-GPU", env=env)
    assert r.returncode == 0, r.stderr
    r = migbench("catalog", "import", str(lgip), str(lgipp), "--name", "My-GPU", env=env)
    assert r.returncode == 1 and "you imported" in r.stderr
    r = migbench("catalog", "import", str(lgip), str(lgipp), "--name", "A100-SXM4-80GB", "--force", env=env)
    assert r.returncode == 0, r.stderr


def test_plan_runs_and_no_runs_contradict():
    r = migbench("plan", str(TOY), "--runs", "--no-runs")
    assert r.returncode == 2 and "contradict" in r.stderr


@pytest.mark.slow
def test_status_shows_whole_ids_and_each_runs_parameters(rig):
    """Guards: `status` showed no run's parameters, and cut ids at 80 columns."""
    from tests.cli.test_launch_commands import SMALL

    r = rig(SMALL)
    rc, out = r.launch()
    assert rc == 0, out
    for width in WIDTHS:
        r.env["MIGBENCH_WIDTH"] = str(width)
        res = r.cli("status", str(r.plan_path))
        assert res.returncode == 0, res.stderr
        words = _words(res.stdout)
        assert "…" not in res.stdout
        for run in r.plan.runs:
            assert run.id in words and f"lr={run.params['lr']}" in words, (run.id, width)
    doc = json.loads(r.cli("status", str(r.plan_path), "--json").stdout)
    assert {x["id"]: x["params"] for x in doc["runs"]["runs"]} == {x.id: x.params for x in r.plan.runs}


def test_a_parameter_value_never_writes_terminal_control_sequences_raw(tmp_path):
    """Guards: a sweep value holding escape sequences (`"\\e]0;title\\a"`, `"\\e[2J"`; an OSC 52 would
    write the clipboard) was printed raw by `plan --runs`, `launch --dry-run` and `status`, so a
    sweep file from someone else drove the terminal. Such a value is shown as bash's $'...' word."""
    from migbench.backend.sim.host import init_host

    init_host(tmp_path / "sim", "A100-SXM4-80GB", 1, mig=True)
    env = {"MIGBENCH_SIM": str(tmp_path / "sim")}
    (tmp_path / "s.yaml").write_text('version: 1\nname: s\ncommand: "echo {x}"\nparameters: {x: ["\\e]0;pwned\\a\\e[2Jab"]}\nmemory: 1GiB\nduration: 1s\n')
    r = migbench("plan", "s.yaml", "-o", "s.plan.yaml", "--runs", cwd=tmp_path, env=env, keep_sim=True)
    assert r.returncode == 0 and "x=$'\\x1b]0;pwned\\x07\\x1b[2Jab'" in r.stdout and "\x1b" not in r.stdout + r.stderr, r.stdout + r.stderr
    r = migbench("launch", "s.plan.yaml", "--dry-run", cwd=tmp_path, env=env, keep_sim=True)
    assert r.returncode == 0 and "echo $'\\x1b]0;pwned\\x07\\x1b[2Jab'" in r.stdout and "\x1b" not in r.stdout + r.stderr, r.stdout + r.stderr


def test_square_brackets_in_a_value_or_a_path_are_printed_as_they_are(tmp_path):
    """Guards: the console read rich markup in what it printed: a sweep value `[bold]hi[/bold]` was
    shown as `hi` by `plan --runs` and `status` (`[link=...]` hid text), and a value `[/]` or a
    path holding it (`report -o 'a[/]b.html'`) ended the command in 'internal error (MarkupError)',
    after the report was written."""
    from migbench.backend.sim.host import init_host

    init_host(tmp_path / "sim", "A100-SXM4-80GB", 1, mig=True)
    env = {"MIGBENCH_SIM": str(tmp_path / "sim")}
    (tmp_path / "s.yaml").write_text('version: 1\nname: s\ncommand: "echo {x}"\nparameters: {x: ["[/]", "[bold]hi[/bold]"]}\nmemory: 1GiB\nduration: 1s\n')
    r = migbench("plan", "s.yaml", "-o", "s.plan.yaml", "--runs", cwd=tmp_path, env=env, keep_sim=True)
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "x='[/]'" in r.stdout and "x='[bold]hi[/bold]'" in r.stdout and "internal error" not in out, out
    (tmp_path / "a[").mkdir()
    r = migbench("report", "s.plan.yaml", "--no-grain", "-o", "a[/]b.html", cwd=tmp_path, env=env, keep_sim=True)
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "report written to a[/]b.html" in r.stdout and "internal error" not in out, out
    r = migbench("sim", "show", env=env, keep_sim=True)
    assert r.returncode == 0 and "[bold]" not in r.stdout and "NVIDIA A100-SXM4-80GB x 1" in r.stdout, r.stdout
