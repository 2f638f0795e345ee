"""Fixtures shared by several test files, and where test files live."""

from __future__ import annotations

import compileall
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from migbench.backend.sim import fake_nvml

_SHM = "/dev/shm"


def pytest_configure(config: pytest.Config) -> None:
    """Test files go to memory (tmpfs) where the machine has it: the simulated driver and the
    launcher's state write thousands of small files, and on a journalling disk every rename waits
    for the disk. Set MIGBENCH_TEST_ON_DISK=1 (or --basetemp) to test on the disk instead."""
    if config.option.basetemp is None and not os.environ.get("MIGBENCH_TEST_ON_DISK") and os.access(_SHM, os.W_OK):
        config.option.basetemp = tempfile.mkdtemp(prefix="migbench-tests-", dir=_SHM)
        config._migbench_shm = config.option.basetemp  # type: ignore[attr-defined]
    if not hasattr(config, "workerinput"):
        _compile_the_package()


def _compile_the_package() -> None:
    """The suite starts about a thousand Python processes (launchers, shims, runs, the simulated
    nvidia-smi, CLI commands). Where PYTHONDONTWRITEBYTECODE is set, as on some CI images, none of
    them writes migbench's bytecode, so each compiled every module it imported from source again:
    about a quarter of a second of CPU per process. The package is compiled once here, into its
    `__pycache__` directories as an import would (ignored by git; a module changed later is compiled
    again, as always). A tree that cannot be written is left as it is."""
    compileall.compile_dir(Path(__file__).resolve().parents[1] / "migbench", quiet=2)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Every plan made by a test (in this process or a subprocess) gets the budget its time limit
    gives, with the hard stop moved far out of the way: beside busy loops the short limits the tests
    use reached it, and the plans then differed. Tests of the hard stop itself set it back to 1."""
    os.environ.setdefault("MIGBENCH_DEADLINE_SLACK", "1000")


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto` (the default in pyproject.toml): two workers per core for the whole suite, one per
    core for `-m "not slow"`. A third of the whole suite's wall time is tests waiting on real
    processes (the launcher, its shims and runs, Slurm daemons); a second worker per core fills it.
    Tests wait on states, not on time, so the load does not change their outcome."""
    cores = os.cpu_count() or 1
    if "not slow" in (config.option.markexpr or ""):
        return cores  # the quick loop has no such waits: a second worker per core only adds its start-up
    return min(16, 2 * cores)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`@pytest.mark.gpu` tests read a real NVIDIA GPU (read-only): they run only with MIGBENCH_TEST_GPU=1."""
    if os.environ.get("MIGBENCH_TEST_GPU") == "1":
        return
    skip = pytest.mark.skip(reason="needs a real NVIDIA GPU with MIG; set MIGBENCH_TEST_GPU=1 on such a host")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def pytest_unconfigure(config: pytest.Config) -> None:
    base = getattr(config, "_migbench_shm", None)
    if base:
        shutil.rmtree(base, ignore_errors=True)


_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@pytest.fixture(autouse=True)
def _no_signal_state_leaks_out_of_a_test():
    """Each test starts with the worker's signal state as it found it: its blocked signals and its
    SIGINT, SIGTERM and SIGHUP dispositions (Python's handler where the kernel sees it). A test that
    left SIGINT blocked or ignored made later tests' subprocesses (which inherit both) deaf to it,
    and a solve by a plain CP-SAT solver left the kernel's default action in place of Python's."""
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, set())
    handlers = {s: signal.getsignal(s) for s in _SIGNALS}
    yield
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    for s, h in handlers.items():
        if h is not None:
            signal.signal(s, h)  # also where Python's record is right but the kernel's is not


@pytest.fixture(autouse=True)
def _no_simulated_nvml_leaks_out_of_a_test():
    """Each test starts with pynvml as it found it: a simulated NVML installed by one test (a reader
    opened under MIGBENCH_SIM) must not make the next test see a driver."""
    depth = len(fake_nvml._saved)
    yield
    while len(fake_nvml._saved) > depth:
        fake_nvml.uninstall()


@pytest.fixture
def sleeper():
    """Spawn real `sleep 60` processes (to attach to simulated devices); killed afterwards."""
    procs: list[subprocess.Popen] = []

    def spawn() -> subprocess.Popen:
        p = subprocess.Popen(["sleep", "60"])
        procs.append(p)
        return p

    yield spawn
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


@pytest.fixture
def rig(tmp_path, monkeypatch):
    """`rig(sweep_text, **kw)`: a simulated host, a planned and applied sweep, ready to launch."""
    from tests.support.launchkit import make_rig

    made = []

    def make(sweep: str, **kw):  # type: ignore[no-untyped-def]
        r = make_rig(tmp_path, monkeypatch, sweep, **kw)
        made.append(r)
        return r

    yield make
    for r in made:
        r.cleanup()
    fake_nvml.uninstall()


@pytest.fixture(autouse=True)
def _state_mode_as_a_fresh_process_has_it():
    """Each test starts with the state file mode a fresh process has (0600): a test whose plan or
    environment set another mode (0660 for a team) must not make later tests write files that way."""
    from migbench import fsutil

    fsutil.configure_state_mode(None)
    yield
    fsutil.configure_state_mode(None)
