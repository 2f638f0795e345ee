"""Issue 19 item 12: with `shell: true`, "every value is quoted" holds in every position of the
command. A value that tries to run something (`$(touch pwned)`, backticks, closing quotes, a line
break) never runs, whether the template puts it bare, in single quotes, in double quotes, inside
`$(...)` or in a comment; the contexts no quoting can make safe (backticks, a here-document's body,
right after a backslash) are refused when the sweep is planned."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from migbench import yamlio
from tests.support.cli import migbench

HOSTILE = ["$(touch pwned1)", "`touch pwned2`", '"; touch pwned3; "', "'; touch pwned4; '", "x\ntouch pwned5\n", "a\\", "$HOME ~ *"]

ACCEPTED = {
    "bare": "printf %s {v} > out",
    "single quotes": "printf %s 'v={v}' > out",
    "double quotes": 'printf %s "v={v}" > out',
    "command substitution": "printf %s $(printf %s {v}) > out",
    "double quotes in $()": 'printf %s "$(printf %s "[{v}]")" > out',
    "comment": "printf %s ok > out  # {v}",
}
EXPECT = {
    "bare": "{}",
    "single quotes": "v={}",
    "double quotes": "v={}",
    "double quotes in $()": "[{}]",
    "comment": "ok",
}
REFUSED = {
    "backticks": ("printf %s `printf %s {v}` > out", "inside backticks"),
    "here-document": ("cat > out <<EOF\n{v}\nEOF", "here-document"),
    "quoted here-document": ("cat > out <<'EOF'\n{v}\nEOF", "here-document"),
    "escaped": ("printf %s \\{v} > out", "after a backslash"),
    "escaped in double quotes": ('printf %s "\\{v}" > out', "after a backslash"),
    "arithmetic": ("printf %s $((1 + {v})) > out", "inside $((...))"),
}


def _sweep(command: str) -> str:
    return (
        "version: 1\nname: q\nshell: true\n"
        f"command: {json.dumps(command)}\n"
        f"parameters: {{v: {json.dumps(HOSTILE)}}}\n"
        "memory: 1GiB\nfleet: [{gpu: A30, count: 1}]\n"
    )


@pytest.mark.parametrize("where", list(ACCEPTED))
def test_a_hostile_value_never_runs_and_arrives_as_written(tmp_path, where):
    """Guards issue 19 item 12: `echo "value={a}"` with `$(...)` or backticks in the value executed it."""
    (tmp_path / "s.yaml").write_text(_sweep(ACCEPTED[where]))
    r = migbench("plan", "s.yaml", "-o", "s.plan.yaml", "--no-runs", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    plan = yamlio.load((tmp_path / "s.plan.yaml").read_text())
    runs = plan["runs"]
    assert len(runs) == len(HOSTILE)
    for run in runs:
        work = tmp_path / run["id"]
        work.mkdir()
        argv = run["argv"]
        assert argv[:2] == ["/bin/sh", "-c"]
        p = subprocess.run(argv, cwd=work, capture_output=True, text=True, timeout=30)
        assert not [f.name for f in work.iterdir() if f.name.startswith("pwned")], (where, run["params"], argv[2])
        value = run["params"]["v"]
        if where == "command substitution":  # unquoted $(...) output is split into words by the shell: the words, never run
            assert p.returncode == 0 and (work / "out").exists(), (argv[2], p.stderr)
            continue
        assert p.returncode == 0, (argv[2], p.stderr)
        assert (work / "out").read_text() == EXPECT[where].format(value), (where, value, argv[2])


@pytest.mark.parametrize("where", list(REFUSED))
def test_a_value_where_no_quoting_is_safe_is_refused_when_planned(tmp_path, where):
    """Guards issue 19 item 12: backticks, a here-document, a backslash before the value: refused with the field and a hint."""
    command, why = REFUSED[where]
    (tmp_path / "s.yaml").write_text(_sweep(command))
    r = migbench("plan", "s.yaml", "-o", "s.plan.yaml", "--no-runs", cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "{v} is placed" in r.stderr and why in r.stderr and "s.yaml:4" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not Path(tmp_path / "s.plan.yaml").exists()
