"""`migbench submit` given a bench directory it must not use: an error that says why, nothing
started and nothing written there (issue 21)."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from migbench.backend.sim.host import init_host
from migbench.duration import DurationModel
from migbench.errors import MigbenchError
from migbench.launch.bench import empty_bench, submission
from migbench.plan import Plan, PlanGpu
from migbench.planner.assemble import _planned
from migbench.sweep.model import LaunchSettings
from tests.support.cli import migbench
from tests.support.fifo import Unblock

pytestmark = pytest.mark.slow  # plans and submits: seconds

SWEEP = """
version: 1
name: {name}
groups:
  - name: w
    command: "true {{i}}"
    parameters: {{i: [0, 1]}}
    memory: 9GiB
"""


def _host(tmp: Path) -> dict[str, str]:
    init_host(tmp / "sim", "A100-SXM4-80GB", 2, mig=True)
    (tmp / "home").mkdir()
    return {"MIGBENCH_SIM": str(tmp / "sim"), "HOME": str(tmp / "home")}


def test_submit_refuses_a_bench_directory_whose_bench_plan_is_a_sweeps_plan(tmp_path: Path):
    """Guards: a sweep's own plan named bench.plan.yaml (sweep `bench`, `--bench-dir .`) was taken
    as the bench plan: submit rewrote its instances, launched it as a fixed plan and waited for a
    bench that never took the submission."""
    env = _host(tmp_path)
    (tmp_path / "bench.yaml").write_text(SWEEP.format(name="bench"))
    (tmp_path / "a.yaml").write_text(SWEEP.format(name="a"))
    res = migbench("plan", "bench.yaml", "--fleet", "A100-SXM4-80GB:2", cwd=tmp_path, env=env, keep_sim=True)
    assert res.returncode == 0, res.stdout + res.stderr
    before = (tmp_path / "bench.plan.yaml").read_bytes()
    res = migbench("submit", "a.yaml", "--bench-dir", str(tmp_path), "--timeout", "2", cwd=tmp_path, env=env, keep_sim=True)
    assert res.returncode == 1 and "Error:" in res.stderr and "not a bench plan" in res.stderr and "Traceback" not in res.stderr, res.stdout + res.stderr
    assert (tmp_path / "bench.plan.yaml").read_bytes() == before
    assert not (tmp_path / "inbox").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("mode", [0o1777, 0o1770])
def test_submit_refuses_a_bench_directory_every_user_may_write_into_even_sticky(tmp_path: Path, mode: int):
    """Guards: a bench directory such as /tmp (world-writable, sticky) passed the trust check, and a
    bench plan another user put there was launched: its runs' commands ran as the submitting user
    (root on a real host). 0o1770: the same through the directory's group."""
    env = _host(tmp_path)
    shared = tmp_path / "scratch"
    shared.mkdir()
    os.chown(shared, os.geteuid(), 4242)
    os.chmod(shared, mode)
    planted = empty_bench([PlanGpu(0, "A100-SXM4-80GB"), PlanGpu(1, "A100-SXM4-80GB")], [], LaunchSettings(), DurationModel())
    planted.save(shared / "bench.plan.yaml")
    os.chown(shared / "bench.plan.yaml", 4242, 4242)  # another user's
    (tmp_path / "a.yaml").write_text(SWEEP.format(name="a"))
    res = migbench("submit", "a.yaml", "--bench-dir", str(shared), "--timeout", "2", cwd=tmp_path, env=env, keep_sim=True)
    out = res.stdout + res.stderr
    assert res.returncode == 1 and "writable by" in res.stderr and "Hint:" in res.stderr and "Traceback" not in out, out
    assert sorted(p.name for p in shared.iterdir()) == ["bench.plan.yaml"]  # nothing started, nothing written


def test_submit_refuses_a_sweep_with_runs_no_instance_of_the_fleet_holds(tmp_path: Path):
    """Guards: submit took a run larger than any instance ("1 new run(s)", exit 0), and the bench
    abandoned it; `plan` refuses the same sweep."""
    env = _host(tmp_path)
    (tmp_path / "huge.yaml").write_text(SWEEP.format(name="huge").replace("9GiB", "100GiB"))
    res = migbench("submit", "huge.yaml", "--bench-dir", str(tmp_path / "bench"), "--timeout", "2", cwd=tmp_path, env=env, keep_sim=True)
    out = res.stdout + res.stderr
    assert res.returncode == 1 and "fit no instance of the fleet" in res.stderr and "Hint:" in res.stderr and "Traceback" not in out, out
    assert not (tmp_path / "bench").exists()  # nothing submitted, no bench started


def test_submit_refuses_a_sweep_whose_run_ids_on_the_bench_are_too_long(tmp_path: Path):
    """Guards: a sweep name and a group name of 100 characters each (the sweep's own limits) make
    bench run ids `<sweep>.<run id>` of 212 characters; submit wrote the submission, the bench
    refused it ("2 problems in the plan") and submit printed that and exited 0, nothing submitted."""
    env = _host(tmp_path)
    text = SWEEP.format(name="s" * 100).replace("name: w", "name: " + "g" * 100)
    (tmp_path / "long.yaml").write_text(text)
    res = migbench("submit", "long.yaml", "--bench-dir", str(tmp_path / "bench"), "--timeout", "2", cwd=tmp_path, env=env, keep_sim=True)
    out = res.stdout + res.stderr
    assert res.returncode == 1 and "212 characters long" in res.stderr and "Hint:" in res.stderr and "Traceback" not in out, out
    assert not (tmp_path / "bench").exists()  # nothing submitted, no bench started


def test_a_damaged_bench_plan_is_an_error_whose_hint_says_how_to_recover(tmp_path: Path):
    """Guards: a damaged bench.plan.yaml said "regenerate it with `migbench plan SWEEP -o PLAN`",
    which makes a sweep's plan, not a bench plan."""
    env = _host(tmp_path)
    bench = tmp_path / "bench"
    bench.mkdir(mode=0o700)
    (bench / "bench.plan.yaml").write_text("version: 1\nkind: migbench-plan\nsweep: [\n")
    (tmp_path / "a.yaml").write_text(SWEEP.format(name="a"))
    res = migbench("submit", "a.yaml", "--bench-dir", str(bench), "--timeout", "2", cwd=tmp_path, env=env, keep_sim=True)
    out = res.stdout + res.stderr
    assert res.returncode == 1 and "Error:" in res.stderr and "move the damaged file away" in res.stderr and "migbench plan" not in res.stderr, out
    assert sorted(p.name for p in bench.iterdir()) == ["bench.plan.yaml"]


def test_a_submit_never_replaces_the_bench_plan_another_submit_made_meanwhile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Guards: two submits on a host with no bench both found no bench.plan.yaml, and the later one
    wrote its empty bench plan over the one the first one's bench had already adopted a sweep into."""
    from migbench import workflows
    from migbench.sweep import load_sweep

    env = _host(tmp_path)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    bench = tmp_path / "bench"
    theirs = submission("other", None, "x", [PlanGpu(0, "A100-SXM4-80GB"), PlanGpu(1, "A100-SXM4-80GB")], [], LaunchSettings(), tmp_path, DurationModel())
    adopted = empty_bench(theirs.fleet, [], LaunchSettings(), DurationModel())
    real = workflows.read_host_if_available

    def meanwhile():  # type: ignore[no-untyped-def]
        if not (bench / "bench.plan.yaml").exists():  # the other submit's bench, a sweep adopted: between our look and our write
            other = load_sweep(_write(tmp_path / "other.yaml", SWEEP.format(name="other")))
            runs = [replace(_planned(r, None), id=f"other.{r.id}") for r in other.runs]
            replace(adopted, runs=runs).save(bench / "bench.plan.yaml")
        return real()

    monkeypatch.setattr(workflows, "read_host_if_available", meanwhile)
    a = tmp_path / "a.yaml"
    a.write_text(SWEEP.format(name="a"))
    sub = workflows.submit_sweep(load_sweep(a), a, fleet=None, bench=bench)
    assert [r.id.split(".")[0] for r in Plan.load(sub.bench_plan).runs] == ["other", "other"]
    assert sorted(p.name for p in bench.iterdir()) == ["bench.plan.yaml", "inbox", "sweeps"]  # no temp file left


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_submit_whose_bench_cannot_start_leaves_no_submission_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Guards: when the bench could not be started (an apply a killed bench left unfinished), submit
    said Error but left its submission in the inbox, taken later by whichever bench started next."""
    from migbench import workflows
    from migbench.errors import MigbenchError

    env = _host(tmp_path)

    def interrupted(*_a, **_k):  # type: ignore[no-untyped-def]
        raise MigbenchError("an earlier apply of the bench plan did not finish (killed?)", hint="apply --finish or --rollback")

    monkeypatch.setattr(workflows, "apply_plan", interrupted)
    (tmp_path / "a.yaml").write_text(SWEEP.format(name="a"))
    res = migbench("submit", "a.yaml", "--bench-dir", str(tmp_path / "bench"), "--timeout", "5", cwd=tmp_path, env=env, keep_sim=True)
    out = res.stdout + res.stderr
    assert res.returncode == 1 and "did not finish" in res.stderr and "Traceback" not in out, out
    assert not list((tmp_path / "bench" / "inbox").iterdir())


def test_status_of_one_sweep_of_the_bench_leaves_out_a_sweep_whose_name_extends_its_own():
    """Guards: `status --sweep a` showed the runs of sweep `a.x` too (ids `a.x.<run>`), and listed
    sweep `a.x` as `a`."""
    from migbench.cli.launch import _one_sweep

    doc = {
        "counts": {"queued": 0, "running": 0},
        "total": 3,
        "runs": [{"id": "a.w-1", "state": "running"}, {"id": "a.x.w-1", "state": "queued"}, {"id": "a.x.w-2", "state": "queued"}],
    }
    one = _one_sweep(doc, "a")  # type: ignore[arg-type]
    assert [r["id"] for r in one["runs"]] == ["a.w-1"] and one["counts"] == {"queued": 0, "running": 1}
    with pytest.raises(MigbenchError) as err:
        _one_sweep(doc, "b")  # type: ignore[arg-type]
    assert err.value.hint == "its sweeps: a, a.x"


def test_submit_refuses_another_file_with_the_name_of_a_sweep_the_bench_has(tmp_path: Path):
    """Guards: two sweep files with the same `name:` were one sweep on the bench: submitting the second
    cancelled the first's waiting runs (and took its finished runs of the same ids as done) without a
    word. Now it is refused before anything is written, and the hint names --replace."""
    from migbench.launch.bench import claim_sweep_name

    env = _host(tmp_path)
    d = tmp_path / "bench"
    d.mkdir(mode=0o700)
    (tmp_path / "p1").mkdir()
    first = tmp_path / "p1" / "a.yaml"
    first.write_text(SWEEP.format(name="a"))
    claim_sweep_name(d, "a", first)  # pipeline 1 submitted its sweep `a`
    (tmp_path / "a.yaml").write_text(SWEEP.format(name="a").replace("[0, 1]", "[0, 1, 2]"))  # pipeline 2's, same name
    res = migbench("submit", "a.yaml", "--bench-dir", str(d), "--timeout", "2", cwd=tmp_path, env=env, keep_sim=True)
    out = res.stdout + res.stderr
    assert res.returncode == 1 and "already has a sweep named a, submitted from" in res.stderr and str(first) in res.stderr, out
    assert "--replace" in res.stderr and "Traceback" not in out, out
    assert sorted(p.name for p in d.iterdir()) == ["sweeps"]  # no bench plan, no inbox, no bench started
    assert (d / "sweeps" / "a.source").read_text().strip() == str(first)  # still pipeline 1's


def test_stop_of_a_bench_that_is_not_running_points_to_submit(tmp_path: Path):
    """Guards: `stop` of a bench plan whose bench had exited said "`migbench launch PLAN` resumes
    them", which would launch the bench plan as a fixed plan; a bench is started again by a submit."""
    d = tmp_path / "bench"
    d.mkdir(mode=0o700)
    plan = empty_bench([PlanGpu(0, "A100-SXM4-80GB")], [], LaunchSettings(), DurationModel())
    plan.save(d / "bench.plan.yaml")
    res = migbench("stop", str(d / "bench.plan.yaml"), cwd=tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode == 1 and "Error:" in res.stderr and "migbench submit SWEEP" in res.stderr and "migbench launch" not in res.stderr, out
    assert "Traceback" not in out


def test_sweep_of_a_plan_that_is_not_a_bench_is_an_error(tmp_path: Path):
    """`report --sweep` and `simulate --sweep` pick one sweep of a bench plan; given a sweep's own plan
    they say so, write nothing, and print no traceback."""
    env = _host(tmp_path)
    (tmp_path / "a.yaml").write_text(SWEEP.format(name="a"))
    res = migbench("plan", "a.yaml", "--fleet", "A100-SXM4-80GB:2", cwd=tmp_path, env=env, keep_sim=True)
    assert res.returncode == 0, res.stdout + res.stderr
    for cmd in (["report", "a.plan.yaml", "--sweep", "a"], ["simulate", "a.plan.yaml", "--sweep", "a"]):
        res = migbench(*cmd, cwd=tmp_path, env=env, keep_sim=True)
        out = res.stdout + res.stderr
        assert res.returncode == 1 and "not a bench plan" in res.stderr and "Hint: leave --sweep out" in res.stderr and "Traceback" not in out, out
    assert not list(tmp_path.glob("*.html"))


def test_submit_says_which_launch_settings_of_the_sweep_the_bench_does_not_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Guards: the bench applies the launch settings it started with (the first sweep's stop grace,
    flapping guard, env passthrough ...) to every run; a later sweep's were dropped without a word."""
    from migbench import workflows
    from migbench.sweep import load_sweep

    for k, v in _host(tmp_path).items():
        monkeypatch.setenv(k, v)
    bench = tmp_path / "bench"
    said: list[str] = []
    a = _write(tmp_path / "a.yaml", SWEEP.format(name="a"))
    workflows.submit_sweep(load_sweep(a), a, fleet=None, bench=bench, say=said.append)
    assert not [s for s in said if "launch settings" in s]  # the bench took a's
    b = _write(tmp_path / "b.yaml", SWEEP.format(name="b") + "launch: {stop_grace: 2m, env_passthrough: [PATH], retries: 5}\n")
    workflows.submit_sweep(load_sweep(b), b, fleet=None, bench=bench, say=said.append)
    (note,) = [s for s in said if "launch settings" in s]
    assert "stop_grace_s 120.0 (the bench's: 30.0)" in note and "env_passthrough ['PATH'] (the bench's: unset)" in note, note
    assert "retries" not in note.split("not used")[0]  # a run keeps its own retries


def test_a_named_pipe_in_place_of_the_bench_plan_is_an_error_not_a_hang(tmp_path: Path):
    """Guards: a FIFO planted as the bench directory's bench.plan.yaml made `status --bench`,
    `status --sweep` and `submit` wait forever in open() for a writer."""
    env = {**_host(tmp_path), "MIGBENCH_BENCH_DIR": str(tmp_path / "bench")}
    (tmp_path / "bench").mkdir(mode=0o700)
    fifo = tmp_path / "bench" / "bench.plan.yaml"
    os.mkfifo(fifo, 0o600)
    (tmp_path / "a.yaml").write_text(SWEEP.format(name="a"))
    with Unblock(fifo):
        for args in (["status", "--bench"], ["status", "--sweep", "a"], ["status", "--bench", "--watch"], ["submit", "a.yaml", "--timeout", "2"]):
            res = migbench(*args, cwd=tmp_path, env=env, keep_sim=True)
            out = res.stdout + res.stderr
            assert res.returncode == 1 and "bench.plan.yaml" in res.stderr and "named pipe (FIFO), not a regular file" in res.stderr, (args, out)
            assert "Traceback" not in out, out
    assert not (tmp_path / "bench" / "inbox").exists() and not (tmp_path / "bench" / "runs").exists()  # submit wrote nothing


def test_a_named_pipe_in_place_of_a_state_file_is_an_error_not_a_hang(tmp_path: Path):
    """Guards: the state files migbench opens by their names (bindings.json, checkpoint.json) and the
    plan beside a sweep (`run`) waited forever for a writer when a FIFO was planted there; a pipe the
    user names on the command line (`plan /dev/stdin`) is still read."""
    from migbench.errors import MigbenchError
    from migbench.state import _read_json, read_checkpoint

    os.mkfifo(tmp_path / "bindings.json", 0o600)
    with Unblock(tmp_path / "bindings.json"), pytest.raises(MigbenchError, match=r"bindings\.json: it is a named pipe \(FIFO\), not a regular file"):
        _read_json(tmp_path / "bindings.json", "bindings file")
    os.mkfifo(tmp_path / "checkpoint.json", 0o600)
    with Unblock(tmp_path / "checkpoint.json"):
        assert read_checkpoint(tmp_path / "checkpoint.json") is None  # taken as no checkpoint, as an unreadable one is
    env = _host(tmp_path)
    (tmp_path / "a.yaml").write_text(SWEEP.format(name="a"))
    os.mkfifo(tmp_path / "a.plan.yaml", 0o600)
    with Unblock(tmp_path / "a.plan.yaml"):
        res = migbench("run", "a.yaml", cwd=tmp_path, env=env, keep_sim=True)
    assert res.returncode == 1 and "a.plan.yaml" in res.stderr and "not a regular file" in res.stderr, res.stdout + res.stderr
    r, w = os.pipe()
    os.write(w, SWEEP.format(name="p").encode())
    os.close(w)
    res = migbench("plan", f"/dev/fd/{r}", "--fleet", "A100-SXM4-80GB:1", "-o", "p.plan.yaml", cwd=tmp_path, env=env, keep_sim=True)
    os.close(r)
    assert res.returncode == 0 and (tmp_path / "p.plan.yaml").is_file(), res.stdout + res.stderr


def test_submit_names_a_done_directory_that_is_not_one(tmp_path: Path):
    """Guards: with a file (or pipe) in place of the bench's inbox/done/, the bench took each
    submission (its runs were adopted) but could not move it there, and submit said that the
    outcome was unknown and asked whether the disk was full."""
    env = {**_host(tmp_path), "MIGBENCH_BENCH_DIR": str(tmp_path / "bench")}
    (tmp_path / "bench" / "inbox").mkdir(parents=True, mode=0o700)
    (tmp_path / "bench" / "inbox" / "done").write_text("")
    (tmp_path / "a.yaml").write_text(SWEEP.format(name="a"))
    try:
        res = migbench("submit", "a.yaml", "--timeout", "60", cwd=tmp_path, env=env, keep_sim=True)
    finally:
        migbench("stop", str(tmp_path / "bench" / "bench.plan.yaml"), "--now", "--wait", cwd=tmp_path, env=env, keep_sim=True)
    out = res.stdout + res.stderr
    assert res.returncode == 1 and f"could not keep its record in {tmp_path / 'bench' / 'inbox' / 'done'}, which is not a directory" in res.stderr, out
    assert "disk full" not in res.stderr and f"remove {tmp_path / 'bench' / 'inbox' / 'done'}" in res.stderr, out


def test_submit_refuses_an_inbox_another_user_could_write_before_writing_to_it(tmp_path: Path):
    """Guards: with the bench's inbox writable by every user, submit wrote the submission there,
    started the bench (which never takes a submission from such an inbox) and waited its whole
    --timeout (120 s by default), then said the submission 'stays in the inbox and is taken when
    the bench runs', which it never was."""
    env = {**_host(tmp_path), "MIGBENCH_BENCH_DIR": str(tmp_path / "bench")}
    (tmp_path / "bench").mkdir(mode=0o700)
    (tmp_path / "bench" / "inbox").mkdir()
    (tmp_path / "bench" / "inbox").chmod(0o777)
    (tmp_path / "a.yaml").write_text(SWEEP.format(name="a"))
    res = migbench("submit", "a.yaml", "--timeout", "3", cwd=tmp_path, env=env, keep_sim=True)
    out = res.stdout + res.stderr
    assert res.returncode == 1 and f"refusing the inbox {tmp_path / 'bench' / 'inbox'}: the directory" in res.stderr, out
    assert "writable by every user" in res.stderr and "chmod go-w" in res.stderr and "Traceback" not in out, out
    assert list((tmp_path / "bench" / "inbox").iterdir()) == [] and not (tmp_path / "bench" / "runs").exists(), "nothing submitted, no bench started"


def test_submit_refuses_an_inbox_that_is_not_a_directory_before_anything_is_written(tmp_path: Path):
    """Guards: with a file in place of the bench's inbox, submit claimed the sweep's name and made the
    bench plan, then failed: half of a submission was left behind."""
    env = {**_host(tmp_path), "MIGBENCH_BENCH_DIR": str(tmp_path / "bench")}
    (tmp_path / "bench").mkdir(mode=0o700)
    (tmp_path / "bench" / "inbox").write_text("not a directory\n")
    (tmp_path / "a.yaml").write_text(SWEEP.format(name="a"))
    res = migbench("submit", "a.yaml", "--timeout", "3", cwd=tmp_path, env=env, keep_sim=True)
    out = res.stdout + res.stderr
    assert res.returncode == 1 and f"refusing the inbox {tmp_path / 'bench' / 'inbox'}: it is not a directory" in res.stderr, out
    assert "remove it (submit makes it again); nothing was submitted" in res.stderr and "Traceback" not in out, out
    assert sorted(p.name for p in (tmp_path / "bench").iterdir()) == ["inbox"], "no name claimed, no bench plan, no bench started"
