"""Will each group's command start on this machine? A missing workdir, a program not on PATH or a
script that is not there is said when the sweep is planned, not found by a run that fails (and is
not retried: exit 127). Warnings only: a plan may be made on another machine than the launch."""

from __future__ import annotations

import functools
import os
import re
import shutil
from pathlib import Path

from migbench.sweep.model import Run, Sweep

_PYTHON = re.compile(r"python[0-9.]*")


def start_problems(sweep: Sweep) -> list[str]:
    """One line per (group, problem): the workdir, the program, a Python script, as the first run of
    the group that shows it would meet them."""
    out: list[str] = []
    seen: set[tuple[str, str]] = set()
    _dir_problem.cache_clear()  # the file system is read afresh for each sweep, once per distinct path
    _program.cache_clear()
    _is_file.cache_clear()
    for run in sweep.runs:
        for problem in _problems(run):
            if (run.group, problem) not in seen:
                seen.add((run.group, problem))
                effect = "would fail at once" if problem.startswith("script") else "would fail to start (exit 127, not retried)"
                out.append(f"group {run.group}: {problem}; its runs {effect}")
    return out


@functools.lru_cache(maxsize=4096)
def _dir_problem(workdir: str) -> str | None:
    wd = Path(workdir)
    if wd.is_dir():
        return None
    return f"workdir {workdir} does not exist" if not wd.exists() else f"workdir {workdir} is not a directory"


@functools.lru_cache(maxsize=4096)
def _is_file(path: Path) -> bool:
    return path.is_file()


def _problems(run: Run) -> list[str]:
    wd = Path(run.workdir)
    bad_dir = _dir_problem(run.workdir)
    if bad_dir:
        return [bad_dir]
    if run.shell or not run.argv or "${" in run.argv[0]:
        return []
    path = run.env.get("PATH", os.environ.get("PATH", os.defpath))
    argv = list(run.argv)
    problem = _program(argv[0], wd, path)
    if problem or Path(argv[0]).name != "env":
        return [problem] if problem else _script(argv, wd)
    rest = [a for a in argv[1:] if not a.startswith("-") and "=" not in a]  # /usr/bin/env [-i] [VAR=x] PROGRAM ...
    if not rest or "${" in rest[0]:
        return []
    problem = _program(rest[0], wd, path)
    return [problem] if problem else _script(argv[argv.index(rest[0]) :], wd)


@functools.lru_cache(maxsize=4096)
def _program(name: str, wd: Path, path: str) -> str | None:
    if "/" in name:
        p = Path(name) if os.path.isabs(name) else wd / name
        if not p.exists():
            return f"program {name} does not exist" + ("" if os.path.isabs(name) else f" in {wd}")
        if p.is_dir() or not os.access(p, os.X_OK):
            return f"program {name} is not an executable file"
        return None
    if shutil.which(name, path=path) is None:
        return f"command {name!r} is not found on PATH"
    return None


def _script(argv: list[str], wd: Path) -> list[str]:
    """`python [-u] train.py ...`: the script is a file in the workdir."""
    if not _PYTHON.fullmatch(Path(argv[0]).name):
        return []
    for a in argv[1:]:
        if a in ("-m", "-c") or "${" in a:
            return []
        if a.startswith("-"):
            continue
        if a.endswith(".py") and not _is_file(Path(a) if os.path.isabs(a) else wd / a):
            return [f"script {a} does not exist in {wd}"]
        return []
    return []
