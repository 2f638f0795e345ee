"""The living bench's pure parts (issue 21): the scheduling pass over a bench plan (`launch.living`)
and the bench's submissions (`launch.bench`)."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from migbench.duration import Demand, DurationModel
from migbench.launch.bench import bench_id, empty_bench, is_bench, merge, submission
from migbench.launch.living import HELD_END_S, Live, Pending, decide, host_now, recut_plan
from migbench.plan import Plan, PlanGpu, PlanInstance, PlanRun
from migbench.planner import FleetSpec, build_fleet
from migbench.planner.recut import GpuNow, Recut, RecutSettings, slot_of
from migbench.sweep.model import LaunchSettings
from migbench.types import Placement

FLEET = build_fleet([FleetSpec("A100-SXM4-80GB", 2)])
MODELS = {g.index: g.model for g in FLEET}
GPUS = [PlanGpu(g.index, g.model.key) for g in FLEET]
ST = RecutSettings()
GIB = 1024


def _bench(layouts: dict[int, list[str]]) -> Plan:
    insts = []
    for gpu, lay in layouts.items():
        for text in lay:
            pl = Placement.parse(text)
            cap = slot_of(GpuNow(gpu, MODELS[gpu]), pl)
            insts.append(PlanInstance(gpu, pl.profile, pl.start, cap.memory_mib, cap.capacity, ()))
    return empty_bench(GPUS, insts, LaunchSettings(), DurationModel())


def _run(rid: str, gib: int = 8, hours: float = 6.0, compute: float = 0.1) -> PlanRun:
    return PlanRun(
        id=rid,
        group="g",
        params={},
        argv=("true",),
        shell=False,
        env={},
        workdir=".",
        memory_mib=gib * GIB,
        memory_source="explicit",
        duration_s=hours * 3600,
        compute=compute,
        max_runs_per_instance=1,
        profiles=None,
        retries=None,
        timeout_s=None,
    )


def test_recut_plan_never_destroys_a_busy_instance_and_refuses_an_illegal_layout():
    plan = _bench({0: ["3g.40gb@4", "4g.40gb@0"], 1: []})
    with pytest.raises(ValueError, match="busy instance"):
        recut_plan(plan, [Recut(0, (Placement.parse("4g.40gb@0"),), (Placement.parse("2g.20gb@0"),))], MODELS, {"0:4g.40gb@0"}, ST)
    with pytest.raises(ValueError, match="not legal"):
        recut_plan(plan, [Recut(1, (), (Placement.parse("7g.80gb@0"), Placement.parse("1g.10gb@0")))], MODELS, set(), ST)
    new = recut_plan(plan, [Recut(1, (), (Placement.parse("7g.80gb@0"),))], MODELS, {"0:4g.40gb@0"}, ST)
    assert [i.key for i in new.instances] == ["0:3g.40gb@4", "0:4g.40gb@0", "1:7g.80gb@0"]  # an untouched GPU as it was
    assert new.instances[2].memory_mib == MODELS[1].profile("7g.80gb").memory_mib and new.instances[2].compute == pytest.approx(1.0)


def test_a_live_runs_expected_end_follows_its_instances_rate():
    plan = _bench({0: ["1g.10gb@0"], 1: []})
    d = Demand("r", 8 * GIB, 3600.0, 1.0)  # compute-bound: a 1g slice gives it 1/7 of a GPU
    g0 = host_now(plan, MODELS, [Live("0:1g.10gb@0", d, 100.0)], ST)[0]
    (lr,) = g0.instances[0].runs
    assert lr.start_s == 100.0 and lr.end_s == pytest.approx(100.0 + 3600.0 * 7, rel=1e-6)


def test_decide_cuts_idle_gpus_for_waiting_runs_and_leaves_a_held_instance_alone():
    plan = _bench({0: ["7g.80gb@0"], 1: []})
    pending = [Pending(_run(f"s{i}").demand(), 0.0) for i in range(6)]
    dec = decide(0.0, plan, MODELS, [], pending, ST, held={"0:7g.80gb@0"})
    assert all(rc.gpu == 1 for rc in dec.recuts) and dec.recuts, dec
    assert {s.gpu for s in dec.starts} == {1} and len(dec.starts) == 6
    gpu0 = host_now(plan, MODELS, [], ST, held={"0:7g.80gb@0"})[0]
    assert gpu0.busy_placements == {Placement.parse("7g.80gb@0")} and gpu0.instances[0].runs[0].end_s == HELD_END_S
    # without the hold, GPU 0's whole-GPU instance is idle: it is the one re-cut for the swarm
    dec2 = decide(0.0, plan, MODELS, [], pending, ST)
    assert [rc.gpu for rc in dec2.recuts] == [0] and Placement.parse("7g.80gb@0") in dec2.recuts[0].destroy
    assert {s.gpu for s in dec2.starts} == {0} and len(dec2.starts) == 6


def test_a_submission_carries_its_sweeps_name_env_and_absolute_workdir(tmp_path: Path):
    runs = [replace(_run("a"), env={"X": "run"}, workdir="sub"), _run("b")]
    sub = submission("sw", "sw.yaml", "sha", GPUS, runs, LaunchSettings(retries=5, env={"X": "launch", "Y": "y"}), tmp_path, DurationModel())
    assert is_bench(sub) and [r.id for r in sub.runs] == ["sw.a", "sw.b"]
    assert sub.runs[0].env == {"X": "run", "Y": "y"} and sub.runs[0].workdir == str(tmp_path / "sub") and sub.runs[1].retries == 5
    sub.save(tmp_path / "s.plan.yaml")
    assert Plan.load(tmp_path / "s.plan.yaml").runs == sub.runs


def test_a_sweep_submitted_again_keeps_what_started_adds_new_runs_and_cancels_removed_ones_not_started(tmp_path: Path):
    bench = _bench({0: [], 1: []})
    first = submission("sw", None, "1", GPUS, [_run("a"), _run("b"), _run("c")], LaunchSettings(), tmp_path, DurationModel())
    other = submission("other", None, "2", GPUS, [_run("a")], LaunchSettings(), tmp_path, DurationModel())
    bench, m = merge(bench, first, {})
    bench, _ = merge(bench, other, {})
    assert m.added == ["sw.a", "sw.b", "sw.c"] and [r.id for r in bench.runs] == ["sw.a", "sw.b", "sw.c", "other.a"]
    again = submission("sw", None, "3", GPUS, [_run("a", gib=9), _run("c", gib=12), _run("d")], LaunchSettings(), tmp_path, DurationModel())
    bench, m = merge(bench, again, {"sw.a": "running", "sw.b": "queued", "sw.c": "queued"})
    assert m.added == [bench_id("sw", "d")] and m.cancelled == ["sw.b"] and m.replaced == ["sw.c"] and m.kept == 1
    by = {r.id: r for r in bench.runs}
    assert set(by) == {"sw.a", "sw.c", "sw.d", "other.a"} and by["sw.a"].memory_mib == 8 * GIB and by["sw.c"].memory_mib == 12 * GIB
    assert "1 started or finished before, kept" in m.summary() and "cancelled" in m.summary()
    _, m = merge(bench, again, {"sw.a": "running"})  # the same again: nothing new, the waiting ones said
    assert m.added == [] and m.cancelled == [] and m.waiting == 2 and "2 unchanged, still waiting" in m.summary()


def test_a_run_removed_from_its_sweep_after_it_started_is_never_started_again(tmp_path: Path):
    """Guards: a run no longer in its sweep that had been started and interrupted counted as
    "started, kept", and the next bench start ran it again."""
    bench = _bench({0: [], 1: []})
    bench, _ = merge(bench, submission("sw", None, "1", GPUS, [_run(x) for x in "abcde"], LaunchSettings(), tmp_path, DurationModel()), {})
    states = {"sw.a": "interrupted", "sw.b": "queued", "sw.c": "running", "sw.d": "succeeded", "sw.e": "queued"}
    bench, m = merge(
        bench, submission("sw", None, "2", GPUS, [_run("x")], LaunchSettings(), tmp_path, DurationModel()), states, {"sw.a", "sw.b", "sw.c", "sw.d"}
    )
    assert m.stopped == ["sw.a", "sw.b"] and m.cancelled == ["sw.e"] and m.withdrawn == ["sw.c"] and m.kept == 1, m
    assert [r.id for r in bench.runs] == ["sw.c", "sw.d", "sw.x"]  # the running one until it ends, the finished one as a record
    assert "2 no longer in the sweep and stopped before they ended, cancelled (not run again)" in m.summary()
    assert "1 no longer in the sweep and running, left to end (not run again)" in m.summary() and "1 started or finished before, kept" in m.summary()


def test_a_sweep_submitted_again_leaves_the_runs_of_a_sweep_whose_name_extends_its_own_alone(tmp_path: Path):
    """Guards: submitting sweep `a` again cancelled the waiting runs of sweep `a.x` (their ids
    `a.x.<run>` start with `a.`)."""
    bench = _bench({0: [], 1: []})
    bench, _ = merge(bench, submission("a", None, "1", GPUS, [_run("w-1")], LaunchSettings(), tmp_path, DurationModel()), {})
    bench, _ = merge(bench, submission("a.x", None, "2", GPUS, [_run("w-1"), _run("w-2")], LaunchSettings(), tmp_path, DurationModel()), {})
    bench, m = merge(bench, submission("a", None, "3", GPUS, [_run("w-1")], LaunchSettings(), tmp_path, DurationModel()), {"a.w-1": "running"})
    assert not m.cancelled and m.kept == 1 and [r.id for r in bench.runs] == ["a.w-1", "a.x.w-1", "a.x.w-2"], m


def test_a_submission_is_taken_out_of_the_inbox_even_when_its_summary_cannot_be_written(tmp_path: Path, monkeypatch):
    """Guards: on a full disk, writing the summary of an adopted submission raised out of the bench
    launcher's loop (it died with a traceback) and left the submission to be adopted again."""
    import errno

    from migbench.launch import bench as bench_mod

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    sub = inbox / "00000000000000000001-a.plan.yaml"
    sub.write_text("x")

    def full(*_a, **_k):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(bench_mod, "write_text_atomic", full)
    bench_mod.mark_adopted(sub, "sweep a submitted: 1 new run(s)")
    assert not sub.exists() and (inbox / "done" / sub.name).exists()
    assert bench_mod.adopted_summary(sub) == "submitted"  # what `submit` prints without the summary


def test_a_submission_the_bench_refused_fails_the_submit_with_the_reason(tmp_path: Path):
    """Guards: when the bench refused a submission (its summary "refused: ..."), submit printed the
    summary as if the sweep had been taken and exited 0."""
    from migbench.errors import MigbenchError
    from migbench.launch import bench as bench_mod
    from migbench.workflows import wait_adopted

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    sub = inbox / "00000000000000000001-a.plan.yaml"
    sub.write_text("x")
    bench_mod.mark_adopted(sub, bench_mod.REFUSED + "run ids a.x do not carry the sweep's name")
    with pytest.raises(MigbenchError) as err:
        wait_adopted(sub, tmp_path / "bench.plan.yaml", 1.0)
    assert "refused" in err.value.message and "do not carry the sweep's name" in err.value.message and err.value.hint, err.value.render()


def test_a_refusal_whose_summary_cannot_be_written_still_fails_the_submit(tmp_path: Path, monkeypatch):
    """Guards: on a full disk the bench refused a submission but could not write its summary, and
    `submit` said "submitted" and exited 0. The refusal is known from the submission's own record
    (a rename); with no record at all the outcome is unknown: an error too."""
    from migbench.errors import MigbenchError
    from migbench.launch import bench as bench_mod
    from migbench.workflows import wait_adopted
    from tests.support.faults import full_disk

    inbox = tmp_path / "inbox"
    (inbox / "done").mkdir(parents=True)
    sub = inbox / "00000000000000000001-a.plan.yaml"
    sub.write_text("x")
    with monkeypatch.context() as m:
        full_disk(m)
        bench_mod.mark_adopted(sub, bench_mod.REFUSED + "run ids a.x do not carry the sweep's name")
    assert not (inbox / "done" / (sub.name + ".txt")).exists()  # the disk was full
    with pytest.raises(MigbenchError) as err:
        wait_adopted(sub, tmp_path / "bench.plan.yaml", 1.0)
    assert "refused" in err.value.message and "could not be written" in err.value.message, err.value.render()
    (inbox / "done" / (sub.name + bench_mod.REFUSED_SUFFIX)).unlink()  # nothing recorded at all (the move failed too)
    with pytest.raises(MigbenchError) as err:
        wait_adopted(sub, tmp_path / "bench.plan.yaml", 1.0)
    assert "unknown" in err.value.message and "submit the sweep again" in str(err.value.hint), err.value.render()


def test_a_sweep_name_is_claimed_by_its_first_file_and_taken_over_only_on_request(tmp_path: Path):
    """Guards: a second file with a sweep's name was taken as that sweep on the bench. The first file
    submitted claims the name; the same file again passes; another is refused (also when the two
    race: the record is created exclusively) unless it takes the name over; a damaged record is
    claimed again."""
    from migbench.errors import MigbenchError
    from migbench.launch.bench import claim_sweep_name, sources_dir

    d = tmp_path / "bench"
    d.mkdir()
    one, two = tmp_path / "one.yaml", tmp_path / "two.yaml"
    claim_sweep_name(d, "a", two, dry=True)  # a dry check claims nothing
    assert not sources_dir(d).exists()
    claim_sweep_name(d, "a", one)
    claim_sweep_name(d, "a", tmp_path / "." / "one.yaml")  # the same file, however it is named
    with pytest.raises(MigbenchError, match="already has a sweep named a"):
        claim_sweep_name(d, "a", two)
    with pytest.raises(MigbenchError, match="already has a sweep named a"):
        claim_sweep_name(d, "a", two, dry=True)
    claim_sweep_name(d, "b", two)  # other names are other sweeps
    claim_sweep_name(d, "a", two, take_over=True)
    claim_sweep_name(d, "a", two)
    with pytest.raises(MigbenchError, match=str(two)):
        claim_sweep_name(d, "a", one)
    (sources_dir(d) / "a.source").write_bytes(b"")  # damaged: claimed again by the next file
    claim_sweep_name(d, "a", one)
    assert (sources_dir(d) / "a.source").read_text().strip() == str(one.resolve())


def test_a_sweep_name_is_claimed_by_its_file_whatever_bytes_its_path_holds(tmp_path: Path):
    """Guards: the record of a sweep name's file was read stripped of white space, so a file whose
    name ends in a space was refused on its own second submit, while another file (its name without
    the space) was taken as that sweep without --replace; a file name that is not UTF-8 made submit
    fail with an internal error."""
    from migbench.errors import MigbenchError
    from migbench.launch.bench import claim_sweep_name

    d = tmp_path / "bench"
    d.mkdir()
    spaced, plain = tmp_path / "sp.yaml ", tmp_path / "sp.yaml"
    claim_sweep_name(d, "a", spaced)
    claim_sweep_name(d, "a", spaced)  # the same file again
    with pytest.raises(MigbenchError, match="already has a sweep named a"):
        claim_sweep_name(d, "a", plain)
    odd = Path(os.fsdecode(bytes(tmp_path / "nu") + b"\xff\n.yaml"))
    claim_sweep_name(d, "b", odd)
    claim_sweep_name(d, "b", odd)
    with pytest.raises(MigbenchError, match="already has a sweep named b"):
        claim_sweep_name(d, "b", plain)
    claim_sweep_name(d, "b", odd, take_over=True)
    claim_sweep_name(d, "b", odd)


def test_a_sweep_name_record_another_user_may_write_is_refused(tmp_path: Path):
    """Bug: the records of which file claimed each sweep name (`sweeps/` in the bench directory)
    were believed wherever they lay: in a `sweeps/` another user may write, that user could claim a
    sweep's name first (its submit refused) or plant a FIFO there. Such a directory is refused."""
    from migbench.errors import MigbenchError
    from migbench.launch.bench import claim_sweep_name, sources_dir

    d = tmp_path / "bench"
    d.mkdir()
    sources_dir(d).mkdir()
    sources_dir(d).chmod(0o777)
    (sources_dir(d) / "a.source").write_text("/elsewhere/theirs.yaml\n")
    for kw in ({}, {"dry": True}, {"take_over": True}):
        with pytest.raises(MigbenchError, match="refusing .*sweeps, where the bench records .* writable by every user"):
            claim_sweep_name(d, "a", tmp_path / "one.yaml", **kw)
    sources_dir(d).chmod(0o700)
    with pytest.raises(MigbenchError, match="already has a sweep named a"):
        claim_sweep_name(d, "a", tmp_path / "one.yaml")


@pytest.mark.parametrize("kind", ["directory", "fifo", "symlink"])
def test_a_sweep_name_record_that_is_not_a_regular_file_is_refused_in_words(tmp_path: Path, kind: str):
    """Bug: a directory at `sweeps/<name>.source` made submit say "3: is a directory" (a file
    descriptor's number), and a FIFO or link there "give the file's name", a name the user never
    gave: each says what the record is and to remove it."""
    import os

    from migbench.errors import MigbenchError
    from migbench.launch.bench import claim_sweep_name, sources_dir

    d = tmp_path / "bench"
    sources_dir(d).mkdir(parents=True)
    rec = sources_dir(d) / "a.source"
    {"directory": rec.mkdir, "fifo": lambda: os.mkfifo(rec), "symlink": lambda: rec.symlink_to(tmp_path / "x")}[kind]()
    for kw in ({}, {"dry": True}, {"take_over": True}):
        with pytest.raises(MigbenchError, match=r"a\.source is not a regular file: the bench records there .* sweep name a") as err:
            claim_sweep_name(d, "a", tmp_path / "one.yaml", **kw)
        assert "remove it" in str(err.value.hint)


def test_of_two_racing_claims_of_a_sweep_name_one_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Bug: a claim created the record empty, then wrote it: a second submit of another file that
    came in between read the empty record as damaged, claimed the name too, and both submits went
    on. Here the second claim runs right after the first one's first exclusive create in sweeps/."""
    import os

    from migbench.errors import MigbenchError
    from migbench.launch import bench
    from migbench.launch.bench import claim_sweep_name, sources_dir

    d = tmp_path / "bench"
    d.mkdir()
    one, two = tmp_path / "one.yaml", tmp_path / "two.yaml"
    real_open, outcome = os.open, {}

    def racing_open(path, flags, *args, **kwargs):
        fd = real_open(path, flags, *args, **kwargs)
        if flags & os.O_EXCL and str(sources_dir(d)) in str(path) and "two" not in outcome:
            outcome["two"] = "pending"
            try:
                claim_sweep_name(d, "a", two)
                outcome["two"] = "claimed"
            except MigbenchError:
                outcome["two"] = "refused"
        return fd

    monkeypatch.setattr(bench.os, "open", racing_open)
    try:
        claim_sweep_name(d, "a", one)
        outcome["one"] = "claimed"
    except MigbenchError:
        outcome["one"] = "refused"
    monkeypatch.undo()
    assert sorted(outcome.values()) == ["claimed", "refused"]
    winner = one if outcome["one"] == "claimed" else two
    assert (sources_dir(d) / "a.source").read_text().strip() == str(winner.resolve())


def test_a_damaged_layouts_entry_of_the_launch_state_is_read_without_its_bad_changes():
    """Guards: a `layouts` meta entry of launch.db holding a change not in the form [t, gpu, text]
    made the bench launcher die at its start with a traceback (`submit` printed it)."""
    from migbench.launch.benchmode import layouts_doc, read_layouts

    doc = json.dumps([[0.0, 0, "7g.80gb@0"], [1, 2], "x", [2.0, "1", "a"], [3.5, 1, "3g.40gb@0"]])
    assert read_layouts(doc) == [[0.0, 0, "7g.80gb@0"], [3.5, 1, "3g.40gb@0"]]
    assert read_layouts('{"a": 1}') == [] and read_layouts("not json") == []
    assert json.loads(layouts_doc(read_layouts(doc), 5.0, {})) == [[0.0, 0, "7g.80gb@0"], [3.5, 1, "3g.40gb@0"]]
