"""A run whose command cannot start (not on PATH, not executable, no workdir, a shell's exit 127)
fails at once with the reason in words and is not retried (issue 10, item 6)."""

from __future__ import annotations

import json

import pytest

from migbench.launch.shim import start_failure

NOT_STARTED = """
version: 1
name: nostart
launch: {retries: 3, backoff: 60s, stop_grace: 5, flapping_max: 50}
groups:
  - name: missing
    command: nosuchprog-migbench-test --i {i}
    parameters: {i: [0]}
    memory: 2GiB
  - name: nodir
    command: {toy} --steps 1 --step-seconds 0 --memory 0
    workdir: no-such-dir
    memory: 2GiB
  - name: sh
    shell: true
    command: nosuchprog-migbench-test --i {i}
    parameters: {i: [0]}
    memory: 2GiB
  - name: ok
    command: {toy} --steps 1 --step-seconds 0 --memory 0
    memory: 2GiB
"""


@pytest.mark.slow
def test_a_command_that_cannot_start_is_not_retried(rig):
    """Regression: a missing command was retried with backoff (101 s) and its error showed a bytes repr."""
    r = rig(NOT_STARTED)
    rc, out = r.launch(timeout=50)  # a retry would wait out the 60 s backoff
    assert rc == 1, out
    rows = r.rows()
    by_group = {rid.rsplit("-", 1)[0]: row for rid, row in rows.items()}
    assert by_group["ok"]["state"] == "succeeded"
    for g, says in (("missing", "nosuchprog-migbench-test in"), ("nodir", "cannot enter the workdir"), ("sh", "exit code 127")):
        row = by_group[g]
        assert row["state"] == "failed" and row["attempt"] == 1, (g, row)
        assert says in row["last_error"] and "not retried" in row["last_error"], (g, row["last_error"])
        assert "b'" not in row["last_error"] and 'b"' not in row["last_error"], row["last_error"]
    rid = next(k for k in rows if k.startswith("missing-"))
    doc = json.loads((r.state_dir / rid / "attempt-1" / "exit.json").read_text())
    assert doc["returncode"] == 127 and "command not found on PATH" in doc["exec_error"]


def test_start_failures_are_said_in_words() -> None:
    msg, rc = start_failure(FileNotFoundError(2, "No such file or directory", b"/usr/sbin/x"), "program", "x", "/w")
    assert (msg, rc) == ("migbench: cannot start x in /w: command not found on PATH", 127)
    msg, rc = start_failure(PermissionError(13, "Permission denied", b"./run.sh"), "program", "./run.sh", "/w")
    assert (msg, rc) == ("migbench: cannot start ./run.sh in /w: permission denied", 126)
    msg, rc = start_failure(FileNotFoundError(2, "No such file or directory", "/nope"), "workdir", "x", "/nope")
    assert (msg, rc) == ("migbench: cannot enter the workdir /nope: no such file or directory", 127)
