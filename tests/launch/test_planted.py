"""Something other than a regular file where migbench opens a launch's file by its fixed name (a
named pipe, a directory, a link to a device): an error that names it, never a hang."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from migbench.backend.sim.host import init_host
from tests.support.cli import migbench
from tests.support.fifo import Unblock

pytestmark = pytest.mark.slow  # plans and applies: seconds

SWEEP = """
version: 1
name: s
groups:
  - name: w
    command: "true {i}"
    parameters: {i: [0, 1]}
    memory: 9GiB
"""


def _planned(tmp: Path) -> dict[str, str]:
    init_host(tmp / "sim", "A100-SXM4-80GB", 1, mig=True)
    env = {"MIGBENCH_SIM": str(tmp / "sim")}
    (tmp / "s.yaml").write_text(SWEEP)
    res = migbench("plan", "s.yaml", "--fleet", "A100-SXM4-80GB:1", "-o", "s.plan.yaml", cwd=tmp, env=env, keep_sim=True)
    assert res.returncode == 0, res.stdout + res.stderr
    res = migbench("apply", "s.plan.yaml", "--yes", cwd=tmp, env=env, keep_sim=True)
    assert res.returncode == 0 and (tmp / "runs" / "s" / "bindings.json").is_file(), res.stdout + res.stderr
    return env


def test_a_named_pipe_in_place_of_launch_db_is_an_error_not_a_hang(tmp_path: Path):
    """Guards: a FIFO at <state dir>/launch.db made status, report, logs, stop, launch and run wait
    forever in sqlite's open() for a writer (or read it as an empty database)."""
    env = _planned(tmp_path)
    db = tmp_path / "runs" / "s" / "launch.db"
    os.mkfifo(db, 0o600)
    with Unblock(db):
        for args in (
            ["status", "s.plan.yaml"],
            ["report", "s.plan.yaml", "-o", "r.html", "--no-grain"],
            ["logs", "w-0", "s.plan.yaml"],
            ["stop", "s.plan.yaml"],
            ["launch", "s.plan.yaml"],
        ):
            res = migbench(*args, cwd=tmp_path, env=env, keep_sim=True)
            out = res.stdout + res.stderr
            assert res.returncode == 1 and "launch.db: it is a named pipe (FIFO), not a regular file" in res.stderr, (args, out)
            assert "Hint: migbench reads it only from a regular file" in res.stderr and "Traceback" not in out, (args, out)
    assert not (tmp_path / "r.html").exists()


def test_a_directory_in_place_of_launch_db_is_said_as_such(tmp_path: Path):
    """Guards: a directory at <state dir>/launch.db was 'disk I/O error' with a hint to check its
    permissions."""
    env = _planned(tmp_path)
    (tmp_path / "runs" / "s" / "launch.db").mkdir()
    for args in (["status", "s.plan.yaml"], ["launch", "s.plan.yaml"]):
        res = migbench(*args, cwd=tmp_path, env=env, keep_sim=True)
        assert res.returncode == 1 and "launch.db: it is a directory, not a regular file" in res.stderr, (args, res.stdout + res.stderr)


def test_a_named_pipe_or_device_in_place_of_a_runs_log_is_an_error_not_a_hang(tmp_path: Path):
    """Guards: `migbench logs` opened a run's stdout.log/stderr.log by name and read it whole: a FIFO
    there waited forever for a writer, a link to /dev/zero read until memory ran out (internal
    error: MemoryError)."""
    env = _planned(tmp_path)
    res = migbench("launch", "s.plan.yaml", cwd=tmp_path, env=env, keep_sim=True)
    assert res.returncode == 0, res.stdout + res.stderr
    rid = min(p.name for p in (tmp_path / "runs" / "s").glob("w-*"))
    adir = tmp_path / "runs" / "s" / rid / "attempt-1"
    assert migbench("logs", rid, "s.plan.yaml", cwd=tmp_path, env=env, keep_sim=True).returncode == 0
    (adir / "stdout.log").unlink()
    os.mkfifo(adir / "stdout.log", 0o600)
    (adir / "stderr.log").unlink()
    (adir / "stderr.log").symlink_to("/dev/zero")
    with Unblock(adir / "stdout.log"):
        for args, kind in ((["logs", rid, "s.plan.yaml"], "a named pipe (FIFO)"), (["logs", rid, "s.plan.yaml", "--stderr", "-f"], "a device")):
            res = migbench(*args, cwd=tmp_path, env=env, keep_sim=True)
            out = res.stdout + res.stderr
            assert res.returncode == 1 and f"log {adir}" in res.stderr and f"it is {kind}, not a regular file" in res.stderr, (args, out)
            assert "Traceback" not in out and "internal error" not in out, out


def test_a_runs_log_is_copied_a_chunk_at_a_time(tmp_path: Path):
    """Guards: `migbench logs` read a run's whole log into memory before printing it (a training
    run's log of many GiB)."""
    from migbench.fsutil import COPY_CHUNK, copy_tail

    log = tmp_path / "stdout.log"
    with open(log, "wb") as f:
        f.truncate(5 * COPY_CHUNK // 2)
        f.seek(10)
        f.write(b"x")

    class Out:
        def __init__(self) -> None:
            self.sizes: list[int] = []

        def write(self, data: bytes) -> None:
            self.sizes.append(len(data))

        def flush(self) -> None:
            pass

    out = Out()
    assert copy_tail(log, 7, out) == 5 * COPY_CHUNK // 2 - 7
    assert max(out.sizes) <= COPY_CHUNK and sum(out.sizes) == 5 * COPY_CHUNK // 2 - 7, out.sizes


OTHER = 12345  # a uid no one on the test machine uses: "eve"


def _shared_dir(tmp_path: Path) -> Path:
    """`shared/` holding the sweep SWEEP: a directory every user may create files in (sticky, as /tmp)."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # as /tmp: sticky, every user may create files there
    (shared / "s.yaml").write_text(SWEEP)
    return shared


def _shared_sweep(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A simulated host and `_shared_dir`: the environment naming the host, and that directory."""
    init_host(tmp_path / "sim", "A100-SXM4-80GB", 1, mig=True)
    return {"MIGBENCH_SIM": str(tmp_path / "sim")}, _shared_dir(tmp_path)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
@pytest.mark.parametrize("how", ["eve's", "world-writable"])
def test_run_never_launches_a_plan_beside_the_sweep_another_user_could_have_written(tmp_path: Path, how: str):
    """Guards: `run` reused the plan it finds beside the sweep (<sweep dir>/<name>.plan.yaml) when
    its sweep hash matched, whoever wrote it: in a shared sticky directory (as /tmp), another user
    put one there with the sweep's hash and her own commands, and root's `run` launched them."""
    env, shared = _shared_sweep(tmp_path)
    res = migbench("plan", str(shared / "s.yaml"), "--fleet", "A100-SXM4-80GB:1", "-o", str(tmp_path / "made.plan.yaml"), cwd=tmp_path, env=env, keep_sim=True)
    assert res.returncode == 0, res.stdout + res.stderr
    marker = tmp_path / "eve-was-here"
    text = (tmp_path / "made.plan.yaml").read_text()
    evil = text.replace("  argv:\n  - 'true'\n", f"  argv:\n  - touch\n  - {marker}\n", 1)
    assert evil != text, text
    planted = shared / "s.plan.yaml"
    planted.write_text(evil)
    if how == "eve's":
        os.chown(planted, OTHER, OTHER)
    else:
        planted.chmod(0o666)
    res = migbench("run", str(shared / "s.yaml"), "--time-limit", "5", cwd=tmp_path, env=env, keep_sim=True)
    out = res.stdout + res.stderr
    assert res.returncode == 1 and f"refusing the plan file {planted}" in res.stderr, out
    assert ("owned by uid 12345" if how == "eve's" else "writable by every user") in res.stderr and "Traceback" not in out, out
    assert not marker.exists() and not (shared / "runs" / "s" / "launch.db").exists()


def test_a_state_file_too_large_to_be_one_is_refused_not_read_whole(tmp_path: Path):
    """Guards: the state files read by their fixed names (bindings.json, checkpoint.json, a run's
    params.json and exit.json) were read whole into memory whatever their size: one of some GiB made
    status, check and launch end in 'internal error (MemoryError)'."""
    from migbench.fsutil import MAX_RECORD_BYTES, RecordTooLarge, read_regular

    env = _planned(tmp_path)
    bindings = tmp_path / "runs" / "s" / "bindings.json"
    with open(bindings, "r+b") as f:
        f.truncate(MAX_RECORD_BYTES + 1)  # sparse: no space taken
    with pytest.raises(RecordTooLarge, match="too large"):
        read_regular(bindings)
    assert read_regular(bindings, 4) == bindings.read_bytes()[:4]  # a head is still read
    res = migbench("launch", "s.plan.yaml", cwd=tmp_path, env=env, keep_sim=True)
    out = res.stdout + res.stderr
    assert res.returncode == 1 and f"cannot read bindings file {bindings}: it is too large" in res.stderr and "Traceback" not in out, out


def test_a_named_pipe_in_place_of_the_launchers_log_is_an_error_not_a_hang(tmp_path: Path):
    """Guards: `launch --detach` (and `submit`, which starts the bench so) opened <state dir>/
    launcher.log for writing by its name and waited forever for a reader when a FIFO was there."""
    env = _planned(tmp_path)
    log = tmp_path / "runs" / "s" / "launcher.log"
    os.mkfifo(log, 0o600)
    with Unblock(log, writers=True):
        res = migbench("launch", "s.plan.yaml", "--detach", cwd=tmp_path, env=env, keep_sim=True)
    out = res.stdout + res.stderr
    assert res.returncode == 1 and f"cannot write the launcher's log {log}: it is a named pipe (FIFO), not a regular file" in res.stderr, out
    assert "remove it" in res.stderr and "Traceback" not in out, out
    bench = tmp_path / "bench"
    (bench / "runs" / "bench").mkdir(parents=True, mode=0o700)
    os.mkfifo(bench / "runs" / "bench" / "launcher.log", 0o600)
    with Unblock(bench / "runs" / "bench" / "launcher.log", writers=True):
        res = migbench("submit", "s.yaml", "--bench-dir", str(bench), "--timeout", "5", cwd=tmp_path, env=env, keep_sim=True)
    out = res.stdout + res.stderr
    assert res.returncode == 1 and "launcher.log: it is a named pipe (FIFO), not a regular file" in res.stderr and "Traceback" not in out, out
    assert not [p for p in (bench / "inbox").iterdir() if p.is_file()], "the submission is withdrawn: nothing half-done"


def test_a_named_pipe_in_place_of_a_runs_wait_record_is_no_record_not_a_hang(tmp_path: Path):
    """Guards: the launcher (and the shim) read a run's attempt-N/wait.json, the record of how its
    process ended, with a blocking open: a FIFO there stopped the launcher until something wrote
    to it, and what was written was taken as the run's outcome."""
    from migbench.launch.waiter import WAIT_NAME, read_record

    os.mkfifo(tmp_path / WAIT_NAME, 0o600)
    fake = b'{"version": 1, "pid": 1, "exit_code": 0, "signal": null, "ended_at": 1.0, "recorded_by": "waiter"}\n'
    with Unblock(tmp_path / WAIT_NAME, data=fake):
        assert read_record(tmp_path) is None
    (tmp_path / WAIT_NAME).unlink()
    (tmp_path / WAIT_NAME).write_bytes(fake)
    assert read_record(tmp_path) == json.loads(fake)


def _eves_launch_history(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """The planned sweep launched to its end here, then the sweep in `shared/` (sticky, as /tmp) with
    a copy of that launch state (every run succeeded) in `shared/runs/s/`, all of it another user's."""
    import shutil

    env = _planned(tmp_path)
    res = migbench("launch", "s.plan.yaml", cwd=tmp_path, env=env, keep_sim=True)
    assert res.returncode == 0, res.stdout + res.stderr
    shared = _shared_dir(tmp_path)
    (shared / "runs" / "s").mkdir(parents=True)
    shutil.copy(tmp_path / "runs" / "s" / "launch.db", shared / "runs" / "s" / "launch.db")
    for p in (shared / "runs", shared / "runs" / "s", shared / "runs" / "s" / "launch.db"):
        os.chown(p, OTHER, OTHER)
    return env, shared


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_run_never_reads_a_state_directory_another_user_made(tmp_path: Path):
    """Guards: `run` read the sweep's launch state (<sweep dir>/runs/<name>/launch.db) before it
    checked who could change the state directory: with the sweep in a shared sticky directory,
    another user made runs/<name>/ with a launch.db saying every run had succeeded, and root's `run`
    said 'nothing to launch' (or skipped the runs she named) instead of refusing it."""
    env, shared = _eves_launch_history(tmp_path)  # eve's: every run succeeded
    res = migbench("run", str(shared / "s.yaml"), "--time-limit", "5", cwd=tmp_path, env=env, keep_sim=True)
    out = res.stdout + res.stderr
    assert res.returncode == 1 and f"refusing {shared / 'runs' / 's'} as the state directory" in res.stderr, out
    assert "owned by uid 12345" in res.stderr and "nothing to launch" not in out and "Traceback" not in out, out
    assert not (shared / "s.plan.yaml").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_plan_never_sizes_runs_by_measurements_another_user_put_beside_the_sweep(tmp_path: Path):
    """Guards: `plan`, `run` and `submit` take measured memory from the files they find by name
    beside the sweep (<name>.footprints.yaml, runs/<name>/launch.db), whoever wrote them: with the
    sweep in a shared sticky directory, another user's planted measurements sized root's runs."""
    env, shared = _eves_launch_history(tmp_path)
    res = migbench("plan", str(shared / "s.yaml"), "--fleet", "A100-SXM4-80GB:1", "-o", str(tmp_path / "p.plan.yaml"), cwd=tmp_path, env=env, keep_sim=True)
    out = res.stdout + res.stderr
    assert res.returncode == 0 and f"launch history in {shared / 'runs' / 's'} not used: the directory {shared / 'runs'} is owned by uid 12345" in out, out
    assert f"launch history from {shared}" not in out, out
    (shared / "m.yaml").write_text(SWEEP.replace("name: s", "name: m").replace("memory: 9GiB", "memory: {measured: true, fallback: 9GiB}"))
    (shared / "m.footprints.yaml").write_text("kind: migbench-footprints\n")
    os.chown(shared / "m.footprints.yaml", OTHER, OTHER)
    res = migbench("plan", str(shared / "m.yaml"), "--fleet", "A100-SXM4-80GB:1", "-o", str(tmp_path / "m.plan.yaml"), cwd=tmp_path, env=env, keep_sim=True)
    out = res.stdout + res.stderr
    assert res.returncode == 1 and f"refusing the footprints file {shared / 'm.footprints.yaml'}: it is owned by uid 12345" in res.stderr, out
    assert not (tmp_path / "m.plan.yaml").exists() and "Traceback" not in out


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_apply_never_rolls_the_gpus_back_to_a_checkpoint_another_user_wrote(tmp_path: Path):
    """Guards: apply read <state dir>/checkpoint.json before it checked who could change the state
    directory: another user who made runs/<name>/ beside a plan in a shared sticky directory wrote
    a checkpoint of an interrupted apply, root's apply told root to `--rollback`, and the rollback
    re-cut the GPUs to the layout she chose."""
    from migbench.backend.sim.host import SimHost

    env, shared = _shared_sweep(tmp_path)
    res = migbench("plan", str(shared / "s.yaml"), "--fleet", "A100-SXM4-80GB:1", "-o", str(shared / "s.plan.yaml"), cwd=tmp_path, env=env, keep_sim=True)
    assert res.returncode == 0, res.stdout + res.stderr
    before = SimHost(tmp_path / "sim").read().gpus[0].gpu_instances
    ci = [{"profile_id": 0, "size": 1, "start": 0}]
    eves = [{"compute_instances": ci, "placement": f"1g.10gb@{i}", "profile_id": 19, "size": 1} for i in range(7)]
    doc = {"version": 1, "status": "applying", "pid": 1, "plan": "s", "plan_file": str(shared / "s.plan.yaml"), "started_at": 1.0}
    doc["gpus"] = {"0": {"instances": eves, "mig_current": True, "mig_pending": True}}
    cp = shared / "runs" / "s" / "checkpoint.json"
    cp.parent.mkdir(parents=True)
    cp.write_text(json.dumps(doc))
    for p in (shared / "runs", cp.parent, cp):
        os.chown(p, OTHER, OTHER)
    for args in (["apply", str(shared / "s.plan.yaml"), "--rollback"], ["apply", str(shared / "s.plan.yaml"), "--yes"]):
        res = migbench(*args, cwd=tmp_path, env=env, keep_sim=True)
        out = res.stdout + res.stderr
        assert res.returncode == 1 and f"refusing {cp.parent} as the state directory" in res.stderr and "owned by uid 12345" in res.stderr, (args, out)
        assert "--rollback" not in res.stderr, out
    assert SimHost(tmp_path / "sim").read().gpus[0].gpu_instances == before


def test_a_group_writable_footprints_file_of_ones_own_is_still_used(tmp_path: Path):
    """Guards: refusing measurements another user could have written refused a user's own
    footprints file that `profile` wrote under a umask of 002 (mode 0664, the user's own group)."""
    from migbench.footprints.file import Footprints

    init_host(tmp_path / "sim", "A100-SXM4-80GB", 1, mig=True)
    env = {"MIGBENCH_SIM": str(tmp_path / "sim")}
    (tmp_path / "m.yaml").write_text(SWEEP.replace("name: s", "name: m").replace("memory: 9GiB", "memory: {measured: true, fallback: 9GiB}"))
    fp = tmp_path / "m.footprints.yaml"
    Footprints("m", "", []).save(fp)
    fp.chmod(0o664)
    if os.geteuid() == 0:
        os.chown(fp, -1, 4242)  # a group other than root's, as a user's own group would be
    res = migbench("plan", "m.yaml", "--fleet", "A100-SXM4-80GB:1", "-o", "m.plan.yaml", cwd=tmp_path, env=env, keep_sim=True)
    out = res.stdout + res.stderr
    assert res.returncode == 0 and f"footprints from {fp}" in out and "refusing" not in out, out


def test_a_runs_shim_log_is_a_private_state_file(tmp_path: Path):
    """Guards: the launcher opened attempt-N/shim.log with open(..., "ab"): created with the umask's
    mode (0644) where every other state file is 0600 (the shim's own messages there are written
    0600, never through a link), through a planted link, and into a FIFO it waited on."""
    from migbench.launch.procs import spawn_shim

    env = _planned(tmp_path)
    old = os.umask(0o022)
    try:
        res = migbench("launch", "s.plan.yaml", cwd=tmp_path, env=env, keep_sim=True)
    finally:
        os.umask(old)
    assert res.returncode == 0, res.stdout + res.stderr
    logs = sorted((tmp_path / "runs" / "s").glob("w-*/attempt-1/shim.log"))
    assert len(logs) == 2 and all(p.stat().st_mode & 0o777 == 0o600 for p in logs), [oct(p.stat().st_mode) for p in logs]
    adir = tmp_path / "planted"
    adir.mkdir()
    os.mkfifo(adir / "shim.log", 0o600)
    with Unblock(adir / "shim.log", writers=True), pytest.raises(OSError, match="named pipe"):
        spawn_shim(adir)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_the_commands_that_read_a_launch_never_read_a_state_directory_another_user_made(tmp_path: Path):
    """Guards: `status`, `logs`, `report`, `check` and `simulate` read a state directory without the
    ownership check of the commands that write it: with a plan in a shared sticky directory, another
    user's runs/<name>/ was read and trusted: `logs` printed the file her planted stdout.log link
    named (/root/..., a file she cannot read), `status` printed her launch as the plan's, and
    `report` wrote her runs into root's page (and `launch --dry-run` left out the runs she marked
    finished)."""
    env, shared = _eves_launch_history(tmp_path)
    res = migbench("plan", str(shared / "s.yaml"), "--fleet", "A100-SXM4-80GB:1", "-o", str(shared / "s.plan.yaml"), cwd=tmp_path, env=env, keep_sim=True)
    assert res.returncode == 0, res.stdout + res.stderr
    secret = tmp_path / "secret.txt"
    secret.write_text("root's secret\n")
    secret.chmod(0o600)
    rid = min(p.name for p in (tmp_path / "runs" / "s").glob("w-*"))
    adir = shared / "runs" / "s" / rid / "attempt-1"
    adir.mkdir(parents=True)
    (adir / "stdout.log").symlink_to(secret)
    for p in (adir.parent, adir):
        os.chown(p, OTHER, OTHER)
    os.lchown(adir / "stdout.log", OTHER, OTHER)
    sd = shared / "runs" / "s"
    for args in (
        ["status", "s.plan.yaml"],
        ["status", "s.plan.yaml", "--json"],
        ["status"],  # found as ./runs/*/launch.db
        ["logs", rid, "s.plan.yaml"],
        ["report", "s.plan.yaml", "--no-grain"],
        ["check", "s.plan.yaml"],
        ["launch", "s.plan.yaml", "--dry-run"],
    ):
        res = migbench(*args, cwd=shared, env=env, keep_sim=True)
        out = res.stdout + res.stderr
        assert res.returncode == 1 and f"refusing {sd} as the state directory" in res.stderr and "owned by uid 12345" in res.stderr, (args, out)
        assert "secret" not in out and "succeeded" not in res.stdout and "Traceback" not in out, (args, out)
    assert not (shared / "s.report.html").exists()


@pytest.fixture
def no_driver():
    """No simulated library left installed by an earlier in-process command: the host has no driver."""
    import pynvml

    from migbench.backend.sim import fake_nvml

    while isinstance(pynvml.nvmlLib, fake_nvml.FakeNvmlLibrary):
        fake_nvml.uninstall()
    yield
    while isinstance(pynvml.nvmlLib, fake_nvml.FakeNvmlLibrary):
        fake_nvml.uninstall()


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
@pytest.mark.parametrize("how", ["a host", "an empty directory"])
def test_a_simulated_host_another_user_put_beside_the_sweep_is_refused(tmp_path: Path, no_driver: None, how: str):
    """Guards: with no driver and MIGBENCH_SIM unset, `run` used (or created its host inside) the
    <sweep dir>/.migbench-sim it found, and `check`, `status`, `apply` and `launch` adopted the one
    beside the plan, whoever made it: in a shared sticky directory another user's simulated host
    decided what root took for the GPUs (and held its host lock and launch register)."""
    shared = _shared_dir(tmp_path)
    (shared / "s.yaml").write_text(SWEEP.replace("groups:", "fleet: [{gpu: A100-SXM4-80GB, count: 1}]\ngroups:"))
    res = migbench("plan", str(shared / "s.yaml"), "-o", str(shared / "s.plan.yaml"), cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    eves = shared / ".migbench-sim"
    if how == "a host":
        init_host(eves, "A100-SXM4-80GB", 1, mig=True)
    else:
        eves.mkdir()
    for p in (eves, *eves.rglob("*")):
        os.lchown(p, OTHER, OTHER)
    made = sorted(str(p) for p in eves.rglob("*"))
    for args in (["check", "s.plan.yaml"], ["status", "s.plan.yaml"], ["apply", "s.plan.yaml", "--dry-run"], ["run", "s.yaml", "--time-limit", "5"]):
        res = migbench(*args, cwd=shared)
        out = res.stdout + res.stderr
        if how == "an empty directory" and args[0] != "run":
            assert "using the simulated host" not in out, (args, out)  # not a host: never adopted
            continue
        assert res.returncode == 1 and f"refusing the simulated host {eves}" in res.stderr and "owned by uid 12345" in res.stderr, (args, out)
        assert "MIGBENCH_SIM" in res.stderr and "Traceback" not in out, (args, out)
    assert sorted(str(p) for p in eves.rglob("*")) == made and not (shared / "runs").exists()


def test_logs_into_a_reader_that_goes_away_stops_quietly(tmp_path: Path):
    """Guards: `migbench logs RUN | head` ended with 'Error: cannot read the run's log: broken pipe'
    (the write to the closed pipe, said as a read of the log) and exit 1; it stops quietly now,
    with the status of a process a closed pipe ended (141), as `cat` does."""
    import subprocess
    import sys

    env = _planned(tmp_path)
    res = migbench("launch", "s.plan.yaml", cwd=tmp_path, env=env, keep_sim=True)
    assert res.returncode == 0, res.stdout + res.stderr
    rid = min(p.name for p in (tmp_path / "runs" / "s").glob("w-*"))
    (tmp_path / "runs" / "s" / rid / "attempt-1" / "stdout.log").write_bytes((b"x" * 99 + b"\n") * 80000)  # 8 MB: more than a pipe holds
    p = subprocess.Popen(
        [sys.executable, "-m", "migbench", "logs", rid, "s.plan.yaml"], cwd=tmp_path, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert p.stdout is not None and p.stderr is not None
    assert p.stdout.read(100) == b"x" * 99 + b"\n"
    p.stdout.close()
    err = p.stderr.read().decode()
    p.wait(timeout=60)
    assert p.returncode == 141 and err == "", (p.returncode, err)


def test_status_with_state_dir_needs_no_readable_plan_file(tmp_path: Path):
    """The ownership check of the reading commands reads the plan's launch settings (its state
    mode) only when it can: `status PLAN --state-dir DIR` shows DIR's launch when PLAN is gone, as
    it did before that check."""
    env = _planned(tmp_path)
    res = migbench("launch", "s.plan.yaml", cwd=tmp_path, env=env, keep_sim=True)
    assert res.returncode == 0, res.stdout + res.stderr
    res = migbench("status", "gone.plan.yaml", "--state-dir", "runs/s", cwd=tmp_path, env=env, keep_sim=True)
    assert res.returncode == 0 and "2 succeeded" in res.stdout, res.stdout + res.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_an_error_never_writes_a_planted_names_control_characters_raw(tmp_path: Path):
    """Guards: an error or warning that names a path printed its control characters as they are:
    another user's directory named `x\\e[2J...` in a shared directory drove the terminal of whoever
    ran `migbench status` there (the refusal that names it). They are shown as `\\x1b` now."""
    shared = _shared_dir(tmp_path)
    d = shared / "runs" / "x\x1b]0;pwned\x07\x1b[2J"
    d.mkdir(parents=True)
    (d / "launch.db").write_bytes(b"")
    for p in (shared / "runs", d, d / "launch.db"):
        os.chown(p, OTHER, OTHER)
    res = migbench("status", cwd=shared)
    out = res.stdout + res.stderr
    assert res.returncode == 1 and "refusing" in res.stderr and "\x1b" not in out and "\x07" not in out, repr(out)
    assert "x\\x1b]0;pwned\\x07\\x1b[2J as the state directory" in res.stderr, repr(out)
    assert res.stderr.count("\n") == 2, repr(res.stderr)  # Error: and Hint: lines, as before


def _foreign(path: Path, how: str) -> None:
    if how == "eve's":
        os.chown(path, OTHER, OTHER)
    else:
        path.chmod(0o666)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
@pytest.mark.parametrize("how", ["eve's", "world-writable"])
def test_commands_that_run_a_named_sweep_or_plan_refuse_one_another_user_could_have_written(tmp_path: Path, how: str):
    """Guards: `run`, `submit` and `profile` ran the commands of a sweep file they were given, and
    `launch` those of a plan file, whoever could write it: root running a sweep or plan in a shared
    directory (as /tmp) that another user owns, or that every user may write, ran her commands.
    `plan` and `estimate` only read them, and still do."""
    env, shared = _shared_sweep(tmp_path)
    marker = tmp_path / "eve-was-here"
    sweep = shared / "s.yaml"
    sweep.write_text(SWEEP.replace('"true {i}"', f'"touch {marker} {{i}}"'))
    res = migbench("plan", str(sweep), "--fleet", "A100-SXM4-80GB:1", "-o", str(tmp_path / "s.plan.yaml"), cwd=tmp_path, env=env, keep_sim=True)
    assert res.returncode == 0, res.stdout + res.stderr
    plan = shared / "p.plan.yaml"
    plan.write_bytes((tmp_path / "s.plan.yaml").read_bytes())
    _foreign(sweep, how)
    _foreign(plan, how)
    why = "owned by uid 12345" if how == "eve's" else "writable by every user"
    bench = tmp_path / "bench"
    bench.mkdir(mode=0o700)
    for args, what, named in (
        (("run", str(sweep), "--time-limit", "5"), "sweep file", sweep),
        (("submit", str(sweep), "--bench-dir", str(bench)), "sweep file", sweep),
        (("profile", str(sweep)), "sweep file", sweep),
        (("launch", str(plan)), "plan file", plan),
    ):
        res = migbench(*args, cwd=tmp_path, env=env, keep_sim=True)
        out = res.stdout + res.stderr
        assert res.returncode == 1 and f"refusing the {what} {named}: it is {why}" in res.stderr, (args, out)
        assert "copy it to a file of your own" in res.stderr and "Traceback" not in out, (args, out)
    assert not marker.exists() and not list(tmp_path.glob("**/launch.db")) and not list(bench.iterdir())
    for args in (("estimate", str(sweep)), ("plan", str(sweep), "--fleet", "A100-SXM4-80GB:1", "-o", str(tmp_path / "again.plan.yaml"))):
        res = migbench(*args, cwd=tmp_path, env=env, keep_sim=True)
        assert res.returncode == 0, (args, res.stdout + res.stderr)
    mine = tmp_path / "mine.yaml"
    mine.write_bytes(sweep.read_bytes())  # the hint: a copy of one's own runs
    res = migbench("run", str(mine), "--time-limit", "5", cwd=tmp_path, env=env, keep_sim=True)
    assert res.returncode == 0 and marker.exists(), res.stdout + res.stderr
