"""The command line in-process, as a user's shell would run it: arguments, environment, working
directory, stdin not a terminal; returns the exit status and both streams."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pynvml

from migbench.backend.select import live_models
from migbench.backend.sim import fake_nvml
from migbench.catalog import default_catalog
from migbench.cli.app import run
from tests.support import REPO

BASE_ENV = {"MIGBENCH_WIDTH": "100", "NO_COLOR": "1", "TERM": "dumb"}


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def migbench(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, keep_sim: bool = False) -> Result:
    """`migbench ARGS` in this process. Without `keep_sim`, MIGBENCH_SIM is unset (no host is seen);
    the user catalogue defaults to a file that does not exist."""
    cwd = Path(cwd or REPO)
    want = dict(BASE_ENV)
    want.setdefault("MIGBENCH_CATALOG", str(cwd / "no-user-catalog.yaml"))
    want.update(env or {})
    saved = {k: os.environ.get(k) for k in [*want, "MIGBENCH_SIM"]}
    lib_before = pynvml.nvmlLib  # a command may point pynvml at a simulated host; a process would end there
    old_cwd = os.getcwd()
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)  # `logs` writes bytes to .buffer
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
    try:
        if not keep_sim and "MIGBENCH_SIM" not in want:
            os.environ.pop("MIGBENCH_SIM", None)
        os.environ.update(want)
        default_catalog.cache_clear()
        live_models.cache_clear()
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            stdin, sys.stdin = sys.stdin, io.StringIO("")
            try:
                code = run(list(args))
            finally:
                sys.stdin = stdin
    finally:
        os.chdir(old_cwd)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        default_catalog.cache_clear()
        live_models.cache_clear()
        while pynvml.nvmlLib is not lib_before and isinstance(pynvml.nvmlLib, fake_nvml.FakeNvmlLibrary):
            fake_nvml.uninstall()
    return Result(code, _text(out), _text(err))


def _text(stream: io.TextIOWrapper) -> str:
    stream.flush()
    raw = stream.buffer
    assert isinstance(raw, io.BytesIO)
    return raw.getvalue().decode("utf-8", errors="replace")
