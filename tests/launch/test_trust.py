"""Issue 19 item 9: root must never run what another user put in a state directory. A state dir
(`--state-dir`, `launch.log_dir`) any of whose directories another user owns or can write is
refused before anything is written; the shim reads `cmd.json` only when no other user could
have written it (directory fd, O_NOFOLLOW, owner and mode checked)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.cli import migbench
from tests.support.race import eve_makes_runs_first, shared_sticky

OTHER = 12345  # a uid no one on the test machine uses: "eve"

QUICK = """
version: 1
name: quick
launch: {retries: 0, backoff: 0, stop_grace: 5, flapping_max: 50}
groups:
  - name: q
    command: {toy} --steps 1 --step-seconds 0.01 --memory 1GiB --i {i}
    parameters: {i: [0, 1]}
    memory: 9GiB
    compute: 0.1
"""

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")


def _evil_dir(tmp: Path) -> Path:
    d = tmp / "eve"
    d.mkdir()
    os.chown(d, OTHER, OTHER)
    return d


@pytest.mark.slow
@needs_root
def test_a_state_dir_below_another_users_directory_is_refused_by_launch(rig):
    """Guards issue 19 item 9: a state dir below a directory eve owns let her swap a run directory
    between the launcher writing cmd.json and root's shim reading it."""
    r = rig(QUICK)
    sd = _evil_dir(r.tmp) / "state"
    res = r.cli("launch", str(r.plan_path), "--state-dir", str(sd))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "refusing" in res.stderr and "owned by uid 12345" in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert not sd.exists(), "nothing is written there"
    assert not r.ledger.exists() or r.ledger.read_text() == "", "no run started"


@pytest.mark.slow
@needs_root
def test_a_state_dir_eve_pre_created_is_refused_by_apply(rig):
    """Guards issue 19 item 9: eve pre-created the state dir (owned by her) before root's apply."""
    r = rig(QUICK)
    sd = _evil_dir(r.tmp)
    res = r.cli("apply", str(r.plan_path), "--state-dir", str(sd), "--yes")
    assert res.returncode == 1 and "refusing" in res.stderr and str(sd) in res.stderr, res.stdout + res.stderr
    assert list(sd.iterdir()) == []


@pytest.mark.slow
def test_a_world_writable_parent_without_the_sticky_bit_is_refused(rig):
    """Guards issue 19 item 9: a log dir under a world-writable directory (anyone can rename the
    run directory away and put hers in its place)."""
    r = rig(QUICK)
    open_dir = r.tmp / "shared"
    open_dir.mkdir()
    os.chmod(open_dir, 0o777)
    res = r.cli("launch", str(r.plan_path), "--state-dir", str(open_dir / "state"))
    assert res.returncode == 1 and "writable by every user" in res.stderr, res.stderr
    from migbench.fsutil import untrusted_reason

    os.chmod(open_dir, 0o1777)  # sticky, as /tmp: others cannot rename what is ours
    assert untrusted_reason(open_dir / "state") is None


def test_a_symlink_on_the_way_must_be_trusted_too(tmp_path):
    """Guards issue 19 item 9: the walk follows symbolic links and checks where they lead."""
    from migbench.fsutil import untrusted_reason

    d = tmp_path / "d"
    d.mkdir()
    os.chmod(d, 0o777)
    (tmp_path / "link").symlink_to(d)
    assert "writable by every user" in (untrusted_reason(tmp_path / "link" / "state") or "")
    os.chmod(d, 0o700)
    assert untrusted_reason(tmp_path / "link" / "state") is None


def _shim(adir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "migbench.launch.shim", str(adir)],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "MIGBENCH_SIM"},
    )


def _attempt(root: Path, pwned: Path) -> Path:
    adir = root / "run" / "attempt-1"
    adir.mkdir(parents=True)
    doc = {"version": 1, "run_id": "run", "attempt": 1, "argv": ["touch", str(pwned)], "env": {}, "workdir": str(root), "mig_uuid": ""}
    (adir / "cmd.json").write_text(json.dumps(doc))
    os.chmod(adir / "cmd.json", 0o600)
    return adir


@needs_root
def test_the_shim_runs_nothing_from_a_directory_another_user_owns(tmp_path):
    """Guards issue 19 item 9 (6/6 reproduced): root's shim executed eve's argv from a cmd.json she put there."""
    pwned = tmp_path / "pwned"
    adir = _attempt(_evil_dir(tmp_path), pwned)
    p = _shim(adir)
    assert p.returncode == 125 and not pwned.exists()
    assert "refusing to run" in (adir / "shim.log").read_text()


@needs_root
def test_the_shim_refuses_a_cmd_json_another_user_owns_or_can_write(tmp_path):
    """Guards issue 19 item 9: a cmd.json of eve's, one anyone can write, or a link, is never run."""
    pwned = tmp_path / "pwned"
    adir = _attempt(tmp_path, pwned)
    os.chown(adir / "cmd.json", OTHER, OTHER)
    assert _shim(adir).returncode == 125 and not pwned.exists()
    os.chown(adir / "cmd.json", 0, 0)
    os.chmod(adir / "cmd.json", 0o666)
    assert _shim(adir).returncode == 125 and not pwned.exists()
    os.chmod(adir / "cmd.json", 0o600)
    (adir / "cmd.json").rename(tmp_path / "elsewhere.json")
    (adir / "cmd.json").symlink_to(tmp_path / "elsewhere.json")
    assert _shim(adir).returncode == 125 and not pwned.exists()
    (adir / "cmd.json").unlink()
    (tmp_path / "elsewhere.json").rename(adir / "cmd.json")
    assert _shim(adir).returncode == 0 and pwned.exists(), "the same cmd.json, ours and private, runs"


@needs_root
def test_under_sudo_the_invoking_users_directories_are_trusted(tmp_path, monkeypatch):
    """Guards the README's promise (issue 19 item 9): `sudo migbench` in the user's own project works;
    another user's directory does not."""
    from migbench.fsutil import untrusted_reason

    d = _evil_dir(tmp_path)
    assert "owned by uid 12345" in (untrusted_reason(d / "state") or "")
    monkeypatch.setenv("SUDO_UID", str(OTHER))
    assert untrusted_reason(d / "state") is None


def test_a_group_writable_directory_passes_only_when_the_state_mode_shares_with_the_group(tmp_path):
    """Guards the README's promise (issue 19 item 9): group write is the team's explicit choice."""
    from migbench import fsutil

    d = tmp_path / "team"
    d.mkdir()
    os.chmod(d, 0o770)
    if os.geteuid() == 0:
        os.chown(d, 0, 4242)  # a group of users (gid 0, root's own group, is trusted)
    saved = fsutil.state_file_mode()
    try:
        fsutil.configure_state_mode(0o600)
        assert "writable by its group" in (fsutil.untrusted_reason(d / "state") or "")
        fsutil.configure_state_mode(0o660)
        assert fsutil.untrusted_reason(d / "state") is None
    finally:
        fsutil.configure_state_mode(saved)


@needs_root
def test_stop_refuses_a_state_dir_another_user_could_have_written(tmp_path):
    """Guards issue 19 item 9: `sudo migbench stop --state-dir` signalled the PID in a launch.db eve could write."""
    sd = _evil_dir(tmp_path)
    r = migbench("stop", "--state-dir", str(sd))
    assert r.returncode == 1 and "refusing" in r.stderr and "owned by uid 12345" in r.stderr, r.stderr


@needs_root
def test_the_refusing_shim_never_writes_through_a_link_she_planted(tmp_path):
    """Guards issue 19 item 9: the shim logged its refusal to `shim.log` in her directory, following
    her link (root appending to a file she chose)."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    adir = _attempt(_evil_dir(tmp_path), tmp_path / "pwned")
    (adir / "shim.log").symlink_to(victim)
    assert _shim(adir).returncode == 125 and victim.read_text() == "precious\n"


@pytest.mark.slow
def test_a_team_state_dir_with_state_mode_0660_launches(rig):
    """Regression: with `launch.state_mode: 0660` and a group-writable team directory, apply accepted
    the state dir but launch refused it ("writable by its group"): its trust check ran before the
    plan's state mode was configured."""
    r = rig(QUICK.replace("flapping_max: 50}", "flapping_max: 50, state_mode: 0660}"))
    team = r.tmp / "team"
    team.mkdir()
    os.chmod(team, 0o2770)
    if os.geteuid() == 0:
        os.chown(team, 0, 4242)  # a group of users, as /srv/team would be
    sd = team / "state"
    res = r.cli("apply", str(r.plan_path), "--state-dir", str(sd), "--yes")
    assert res.returncode == 0, res.stdout + res.stderr
    p = r.start("--state-dir", str(sd), cli=True)  # a process of its own, as a user starts it (no mode set by apply)
    rc, out = p.wait(timeout=120), r.output(p)
    assert rc == 0 and "writable by its group" not in out, out
    assert sorted(r.ledger.read_text().split()[0::3]) == sorted(x.id for x in r.plan.runs)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_a_run_directory_another_user_makes_between_the_check_and_its_creation_is_refused(tmp_path, monkeypatch):
    """Guards: an attempt's directories were checked (the state directory ours alone), then created
    where missing: a state directory made by that mkdir (a new probe directory of `profile`, a task
    of `exec`) in a shared sticky directory, with another user's runs/ made in between, got the
    attempt's cmd.json (what the shim runs) inside her directory."""
    from migbench.errors import MigbenchError
    from migbench.launch import spec as spec_mod

    shared = shared_sticky(tmp_path)
    sd = shared / "runs" / "one.profile"
    eve_makes_runs_first(monkeypatch, spec_mod, shared)
    spec = spec_mod.RunSpec("r-1", 1, "0:7g.80gb@0", "MIG-x", ("true",), {}, str(tmp_path), str(sd / "r-1"), str(sd / "r-1" / "attempt-1"))
    with pytest.raises(MigbenchError, match=r"the directory .*/runs is owned by uid 12345"):
        spec_mod.prepare_attempt(spec)
    assert not (sd / "r-1" / "attempt-1" / "cmd.json").exists()
