"""A throwaway local Slurm cluster for tests: munged + slurmctld + slurmd on 127.0.0.1.

The node(s) advertise GPU GRES of MIG types (``gpu:1g.10gb:4`` ...) without any GPU: each GRES
unit is backed by its own character device made with mknod in the work directory (Slurm only
stat()s them; nothing opens them). Everything (config, munge key, state, spool, logs) lives
under ``workdir``; the daemons run in the foreground as our children, are stopped by PID on exit
(also on exceptions), and every process the cluster spawned (slurmstepd, job tasks) is found by
a marker environment variable and killed, so nothing is left behind.

Needs root and Debian's ``slurm-wlm slurmctld slurmd slurm-client munge`` (see
``.ci/install-slurm``). Tested with Slurm 22.05. Standard library + pytest only.

Usage::

    from tests.support.slurm import local_slurm, slurm_or_skip, slurm_fixture

    with local_slurm({"1g.10gb": 4, "3g.40gb": 1}, workdir=tmp_path) as cluster:
        job = cluster.submit("#!/bin/bash\\nsleep 1\\n", "--gres=gpu:1g.10gb:1")
        cluster.wait_job(job)

    # a fixture (skips, with the reason, when Slurm is missing or won't start;
    # MIGBENCH_REQUIRE_SLURM=1 turns those skips into failures):
    @pytest.fixture
    def slurm(tmp_path):
        yield from slurm_or_skip(tmp_path, {"1g.10gb": 4, "3g.40gb": 1})

    # or the same, made for you:
    slurm = slurm_fixture({"1g.10gb": 4, "3g.40gb": 1})
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

from tests.support import pid_alive

REQUIRED_BINARIES = ("slurmctld", "slurmd", "munged", "sbatch", "squeue", "scontrol", "scancel")
#: set on every daemon and in :attr:`Cluster.env`, so slurmstepd and job processes carry it too
MARKER_VAR = "MIGBENCH_SLURM_TEST_CLUSTER"
#: ``MIGBENCH_REQUIRE_SLURM=1``: the fixture fails instead of skipping (for CI that installed Slurm)
REQUIRE_VAR = "MIGBENCH_REQUIRE_SLURM"

#: job states after which a job no longer changes
TERMINAL_STATES = frozenset(
    {
        "COMPLETED",
        "CANCELLED",
        "FAILED",
        "TIMEOUT",
        "NODE_FAIL",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "OUT_OF_MEMORY",
        "REVOKED",
        "SPECIAL_EXIT",
    }
)

# Distinct existing character devices, used only when mknod is refused (container without
# CAP_MKNOD). gres/gpu needs File= on a character device, distinct within a node.
_FALLBACK_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty", "/dev/ptmx", "/dev/kmsg")
_NVIDIA_MAJOR = 195  # like /dev/nvidiaN; only used by Slurm for cgroup device rules
_CAPS_MAJOR = 511  # /dev/nvidia-caps/* get a dynamic major; any will do here
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes; slurmd puts step sockets in its spool dir

#: backfill every second (default 30 s: a blocked job of one type holds back another type)
DEFAULT_SCHEDULER_PARAMETERS = "bf_interval=1,bf_continue"

T = TypeVar("T")


class SlurmUnavailable(RuntimeError):
    """Slurm cannot run here (missing binaries, not root, no devices for the GRES)."""


class SlurmStartError(RuntimeError):
    """The daemons were started but the cluster did not become usable in time."""


class SlurmCommandError(RuntimeError):
    """A client command (sbatch, squeue, ...) exited non-zero."""

    def __init__(self, argv: Sequence[str], proc: subprocess.CompletedProcess[str]):
        self.argv = list(argv)
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        super().__init__(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}")


def slurm_available() -> tuple[bool, str]:
    """(True, "") when a local test cluster can be started here, else (False, why)."""
    missing = [b for b in REQUIRED_BINARIES if shutil.which(b) is None]
    if missing:
        return False, f"Slurm not installed (missing {', '.join(missing)}; see .ci/install-slurm)"
    if os.geteuid() != 0:
        return False, "a local Slurm test cluster needs root (slurmd runs jobs and makes devices)"
    return True, ""


@dataclass(frozen=True)
class MigDevice:
    """One emulated MIG device (``mig_uuids=True``): what AutoDetect=nvml would report."""

    node: str
    type: str  # the GRES type in slurm.conf (and --gres), e.g. "1g.10gb"
    detected: str  # the name NVML autodetection would give it, e.g. "nvidia_a100_1g.10gb"
    uuid: str  # "MIG-<uuid>": what the job gets in CUDA_VISIBLE_DEVICES
    gpu: int  # the parent GPU (/dev/nvidia<gpu>)
    files: tuple[str, ...]  # parent GPU device + GPU-instance and compute-instance caps


@dataclass
class Cluster:
    """A running local cluster. Use :meth:`run` (or ``env``) for the Slurm clients."""

    workdir: Path
    conf: Path  # slurm.conf; SLURM_CONF in env
    env: dict[str, str]  # environment for the clients (and, via sbatch, the jobs)
    nodes: list[str]
    partition: str
    gres: dict[str, int]  # per node (the first node's, with node_gres)
    devices: dict[str, list[str]]  # node -> the device file(s) backing each GRES unit, in order
    logdir: Path
    pids: dict[str, int] = field(default_factory=dict)  # "slurmctld", "slurmd:<node>", "munged"
    marker: str = ""
    stray_killed: list[int] = field(default_factory=list)  # filled on stop; should stay empty
    loopback_only: bool = True  # False: daemons listen on all addresses (host name not 127.x)
    mig_devices: dict[str, list[MigDevice]] = field(default_factory=dict)  # mig_uuids=True only
    node_gres: dict[str, dict[str, int]] = field(default_factory=dict)  # every node's GRES

    def node_conf(self, node: str) -> Path:
        """The slurm.conf the slurmd of ``node`` reads: a copy of ``conf`` beside its gres.conf."""
        return self.conf.parent / f"node-{node}" / "slurm.conf"

    def mig_by_uuid(self, uuid: str) -> MigDevice:
        """The emulated MIG device a job got as CUDA_VISIBLE_DEVICES=MIG-... (mig_uuids=True)."""
        return next(d for devs in self.mig_devices.values() for d in devs if d.uuid == uuid)

    def run(
        self, argv: Sequence[str], *, check: bool = True, timeout: float = 30.0, input: str | None = None, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a Slurm client (``["sbatch", ...]``) against this cluster; text output."""
        proc = subprocess.run(list(argv), env=self.env, cwd=cwd or self.workdir, input=input, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise SlurmCommandError(argv, proc)
        return proc

    def submit(self, script: str, *sbatch_args: str, cwd: Path | None = None) -> int:
        """sbatch a script (text, starting with #!) with extra args; returns the job id."""
        out = self.run(["sbatch", "--parsable", *sbatch_args], input=script, cwd=cwd).stdout
        return int(out.strip().split(";")[0])

    def job_states(self, job_id: int) -> dict[str, str]:
        """{"<id>" or "<id>_<task>": STATE} for a job (array tasks one by one), finished ones too."""
        out = self.run(["squeue", "-h", "-r", "-t", "all", "-j", str(job_id), "-o", "%i %T"], check=False).stdout
        return dict(line.split(None, 1) for line in out.splitlines() if line.strip())

    def wait_job(self, job_id: int, *, states: frozenset[str] | set[str] = TERMINAL_STATES, count: int = 1, timeout: float = 60.0) -> dict[str, str]:
        """Poll until ``count`` records of the job (array tasks) are all in ``states``."""

        def done() -> dict[str, str] | None:
            st = self.job_states(job_id)
            return st if len(st) >= count and all(s in states for s in st.values()) else None

        return self.wait_for(done, timeout=timeout, what=lambda: f"job {job_id} in {sorted(states)}: {self.job_states(job_id)}")

    def job_info(self, job_id: int) -> dict[str, str]:
        """``scontrol -o show job`` of one job (or array task) as a dict."""
        out = self.run(["scontrol", "-o", "show", "job", str(job_id)]).stdout
        return _parse_kv(out.splitlines()[0]) if out.strip() else {}

    def node_info(self, node: str | None = None) -> dict[str, str]:
        """``scontrol -o -d show node`` of one node as a dict (GresUsed, State, Reason, ...)."""
        out = self.run(["scontrol", "-o", "-d", "show", "node", node or self.nodes[0]]).stdout
        return _parse_kv(out.splitlines()[0]) if out.strip() else {}

    def wait_for(self, probe: Callable[[], T | None], *, timeout: float = 30.0, interval: float = 0.1, what: str | Callable[[], str] = "condition") -> T:
        """Poll ``probe`` until it returns something truthy; TimeoutError (with logs) otherwise."""
        return _poll(probe, timeout=timeout, interval=interval, what=what, logs=self.logs)

    def logs(self, lines: int = 30) -> str:
        """The last lines of every daemon log, for failure messages."""
        return _tail_logs(self.logdir, lines)


# ----------------------------------------------------------------------------------------------
# the context manager


@contextlib.contextmanager
def local_slurm(
    gres: dict[str, int] | None,
    *,
    nodes: list[str] | None = None,
    workdir: Path,
    node_gres: dict[str, dict[str, int]] | None = None,
    cpus: int = 32,
    partition: str = "debug",
    cgroup: bool = False,
    scheduler_parameters: str = DEFAULT_SCHEDULER_PARAMETERS,
    mig_uuids: bool = False,
    nvml_gpu_name: str = "nvidia_a100",
    max_array_size: int | None = None,
    start_timeout: float = 30.0,
    stop_timeout: float = 15.0,
) -> Iterator[Cluster]:
    """Start a local cluster whose every node has GPU GRES ``gres`` ({mig type: count}).

    ``nodes``: node names (default ``["mig0"]``); several run as several slurmd on this machine,
    each with its own port. ``cpus``: CPUs advertised per node (more than the machine has, so that
    GRES, not CPUs, limit concurrency). ``cgroup``: task/cgroup + ConstrainDevices=yes (needs a
    cgroup v1 devices controller). ``mig_uuids``: present the GRES the way AutoDetect=nvml does
    on a MIG node (through Slurm's own ``fake_gpus.conf`` test hook): each unit is a MIG device
    (parent /dev/nvidiaN + two nvidia-caps devices, detected as ``<nvml_gpu_name>_<type>``) and
    jobs get ``CUDA_VISIBLE_DEVICES=MIG-<uuid>`` (see ``Cluster.mig_devices``); otherwise each
    unit is one plain device and jobs get an index. ``max_array_size``: slurm.conf's MaxArraySize
    (left out: Slurm's default). Raises SlurmUnavailable when it cannot run
    here and SlurmStartError (with the daemons' logs) when the nodes are not IDLE in start_timeout.
    ``node_gres``: {node: {type: count}} gives nodes different GRES (a cluster shaped like a plan
    whose nodes have different layouts); ``nodes`` defaults to its keys and ``gres`` may be None.
    """
    ok, why = slurm_available()
    if not ok:
        raise SlurmUnavailable(why)
    nodes = list(nodes or (list(node_gres) if node_gres else ["mig0"]))
    per_node = {n: dict((node_gres or {}).get(n) or gres or {}) for n in nodes}
    for n, g in per_node.items():
        if not g or any(c < 1 for c in g.values()):
            raise ValueError(f"gres of node {n} must map MIG types to counts >= 1: {g!r}")
    gres = per_node[nodes[0]]
    for name in [*nodes, *(t for g in per_node.values() for t in g)]:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
            raise ValueError(f"bad node or GRES type name: {name!r}")
    if len(set(nodes)) != len(nodes):
        raise ValueError(f"duplicate node names: {nodes}")
    # NoInAddrAny/NoCtldInAddrAny make the daemons bind to the address they resolve for their
    # host name, not 127.0.0.1 (slurmd then cannot reach slurmctld): with a host name that is not
    # loopback (usual in containers) listen on all addresses instead; clients still use 127.0.0.1.
    loopback_only, why_not = _hostname_is_loopback()
    if not loopback_only:
        warnings.warn(
            f"local Slurm: {why_not} (not 127.x), so its daemons listen on all "
            "addresses (a per-cluster random munge key guards them); run under "
            "'unshare --uts --net' with 'hostname localhost' to keep them on loopback",
            stacklevel=3,
        )

    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    logdir = workdir / "log"
    etc = workdir / "etc"
    for d in (etc, logdir, workdir / "state", workdir / "munge", workdir / "dev"):
        d.mkdir(exist_ok=True)
    # unix sockets (munge, slurmd's step sockets in its spool dir) need a short path
    longest = len(str(workdir / "run" / "spool" / max(nodes, key=len))) + len(max(nodes, key=len)) + 24
    # (and fake_gpus.conf lines, with three device paths each, are read into 256 bytes)
    own_rundir = longest > _SOCKET_PATH_MAX or mig_uuids
    rundir = Path(tempfile.mkdtemp(prefix="mbs")) if own_rundir else workdir / "run"
    rundir.mkdir(exist_ok=True)
    os.chmod(rundir, 0o755)
    if own_rundir:
        with contextlib.suppress(OSError):
            (workdir / "run").symlink_to(rundir)

    marker = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    env = _clean_env()
    env["SLURM_CONF"] = str(etc / "slurm.conf")
    env[MARKER_VAR] = marker
    procs: dict[str, subprocess.Popen[bytes]] = {}
    cluster = Cluster(
        workdir=workdir,
        conf=etc / "slurm.conf",
        env=env,
        nodes=nodes,
        partition=partition,
        gres=dict(gres),
        devices={},
        logdir=logdir,
        marker=marker,
        loopback_only=loopback_only,
        node_gres=per_node,
    )
    try:
        if mig_uuids:
            cluster.mig_devices = {n: _make_mig_devices(rundir / "d" / n, n, per_node[n], nvml_gpu_name) for n in nodes}
            cluster.devices = {n: [",".join(d.files) for d in devs] for n, devs in cluster.mig_devices.items()}
        else:
            cluster.devices = {n: _make_devices(workdir / "dev" / n, per_node[n]) for n in nodes}
        key = workdir / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        deadline = time.monotonic() + start_timeout
        for attempt in range(3):
            # free ports are picked, then released for the daemons: another process may take
            # one meanwhile; then start again with other ports
            ports = _free_ports(1 + len(nodes))
            _write_configs(
                etc,
                rundir,
                workdir,
                logdir,
                nodes,
                per_node,
                cluster.devices,
                cluster.mig_devices,
                ports,
                cpus=cpus,
                partition=partition,
                cgroup=cgroup,
                loopback_only=loopback_only,
                scheduler_parameters=scheduler_parameters,
                max_array_size=max_array_size,
            )
            try:
                _start_daemons(cluster, procs, rundir, key, deadline)
                break
            except SlurmStartError as e:
                if attempt == 2 or "Address already in use" not in str(e):
                    raise
                _stop(cluster, procs, stop_timeout)
                procs.clear()
        yield cluster
    finally:
        _stop(cluster, procs, stop_timeout)
        if cgroup:
            _remove_cgroup_dirs(nodes)
        if own_rundir:
            shutil.rmtree(rundir, ignore_errors=True)
            with contextlib.suppress(OSError):
                (workdir / "run").unlink()


def _start_daemons(cluster: Cluster, procs: dict[str, subprocess.Popen[bytes]], rundir: Path, key: Path, deadline: float) -> None:
    """munged, slurmctld, the slurmd(s); returns once every node is IDLE (SlurmStartError else)."""
    env, logdir, workdir = cluster.env, cluster.logdir, cluster.workdir
    munge_socket = rundir / "munge.socket"

    def all_idle() -> bool:
        _alive_or_raise(procs, logdir)
        try:
            proc = subprocess.run(["scontrol", "-o", "show", "node"], env=env, capture_output=True, text=True, timeout=max(deadline - time.monotonic(), 1.0))
        except subprocess.TimeoutExpired:
            return False
        if proc.returncode != 0:
            return False  # slurmctld not listening yet
        info = {kv.get("NodeName", ""): kv for kv in map(_parse_kv, proc.stdout.splitlines())}
        for node in cluster.nodes:
            st = info.get(node, {}).get("State", "")
            if "DRAIN" in st or "INVALID" in st or "FAIL" in st:
                raise SlurmStartError(f"node {node} is {st}: {info[node].get('Reason', '')}\n{_tail_logs(logdir)}")
        return all(info.get(n, {}).get("State") == "IDLE" for n in cluster.nodes)

    try:
        # --force: run although the socket's directory is not reachable by everyone (pytest's
        # tmp dirs are 0700); --foreground: it stays our child, stopped by PID
        procs["munged"] = _spawn(
            [
                "munged",
                "--foreground",
                "--force",
                f"--socket={munge_socket}",
                f"--key-file={key}",
                f"--pid-file={rundir / 'munged.pid'}",
                f"--log-file={logdir / 'munged.log'}",
                f"--seed-file={workdir / 'munge' / 'munged.seed'}",
            ],
            env,
            logdir / "munged.out",
        )
        _poll(
            lambda: _alive_or_raise(procs, logdir) and munge_socket.exists(),
            timeout=deadline - time.monotonic(),
            interval=0.02,
            what="munged's socket",
            logs=lambda: _tail_logs(logdir),
        )
        # -D: foreground; -c: start from empty state; -i: ignore errors in (absent) state files
        procs["slurmctld"] = _spawn(["slurmctld", "-D", "-c", "-i", "-f", str(cluster.conf)], env, logdir / "slurmctld.out")
        for node in cluster.nodes:
            (rundir / "spool" / node).mkdir(parents=True, exist_ok=True)
            # -N: this slurmd is that node, whatever the machine's host name (several per machine)
            procs[f"slurmd:{node}"] = _spawn(
                ["slurmd", "-D", "-N", node, "-f", str(cluster.node_conf(node)), "-L", str(logdir / f"slurmd-{node}.log")], env, logdir / f"slurmd-{node}.out"
            )
        cluster.pids = {name: p.pid for name, p in procs.items()}
        _poll(all_idle, timeout=max(deadline - time.monotonic(), 0.5), interval=0.05, what=f"nodes {cluster.nodes} IDLE", logs=lambda: _tail_logs(logdir))
    except TimeoutError as e:
        raise SlurmStartError(str(e)) from None


# ----------------------------------------------------------------------------------------------
# pytest glue


def slurm_or_skip(workdir: Path, gres: dict[str, int] | None = None, *, nodes: list[str] | None = None, **kw: object) -> Iterator[Cluster]:
    """Generator for a fixture: ``yield from slurm_or_skip(tmp_path, {...})``.

    Skips (reason shown with ``pytest -rs``) when Slurm is missing or does not start here;
    with MIGBENCH_REQUIRE_SLURM=1 it fails instead.
    """

    def unavailable(why: str) -> None:
        if os.environ.get(REQUIRE_VAR) == "1":
            pytest.fail(f"Slurm required ({REQUIRE_VAR}=1) but unavailable: {why}", pytrace=False)
        pytest.skip(f"local Slurm unavailable: {why}")

    ok, why = slurm_available()
    if not ok:
        unavailable(why)
    with contextlib.ExitStack() as stack:
        try:
            cluster = stack.enter_context(local_slurm(gres or {"1g.10gb": 4, "3g.40gb": 1}, nodes=nodes, workdir=workdir, **kw))  # type: ignore[arg-type]
        except (SlurmUnavailable, SlurmStartError) as e:
            unavailable(str(e))
        yield cluster


def slurm_fixture(gres: dict[str, int] | None = None, *, nodes: list[str] | None = None, scope: str = "function", **kw: object):  # type: ignore[no-untyped-def]
    """A ready-made fixture: ``slurm = slurm_fixture({"1g.10gb": 4})`` in a test module or conftest."""

    @pytest.fixture(scope=scope)  # type: ignore[call-overload]
    def _slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
        yield from slurm_or_skip(tmp_path_factory.mktemp("slurm"), gres, nodes=nodes, **kw)

    return _slurm


# ----------------------------------------------------------------------------------------------
# internals


def _parse_kv(line: str) -> dict[str, str]:
    """``Key=value Key2=value two ...`` (scontrol -o) -> dict; values may contain spaces."""
    out: dict[str, str] = {}
    for m in re.finditer(r"(?:^|\s)([A-Za-z][A-Za-z0-9_:/.]*)=(.*?)(?=\s+[A-Za-z][A-Za-z0-9_:/.]*=|\s*$)", line):
        out[m.group(1)] = m.group(2)
    return out


def _poll(
    probe: Callable[[], T | None], *, timeout: float, interval: float = 0.1, what: str | Callable[[], str] = "condition", logs: Callable[[], str] | None = None
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() >= deadline:
            desc = what() if callable(what) else what
            raise TimeoutError(f"timed out after {timeout:.1f} s waiting for {desc}" + (f"\n{logs()}" if logs else ""))
        time.sleep(interval)


def _tail_logs(logdir: Path, lines: int = 30) -> str:
    parts = []
    for f in sorted(logdir.glob("*")):
        # a foreground daemon writes its log file and the same lines to stdout (*.out): one of them
        if f.suffix == ".out" and f.with_suffix(".log").exists() and f.with_suffix(".log").stat().st_size:
            continue
        if f.is_file() and f.stat().st_size:
            tail = f.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {f.name} (last {len(tail)} lines)\n" + "\n".join(tail))
    return "\n".join(parts) or f"(no logs in {logdir})"


def _hostname_is_loopback() -> tuple[bool, str]:
    """Whether this host's name resolves to 127.x (the daemons' own address with NoInAddrAny)."""
    host = socket.gethostname()
    try:
        addr = socket.getaddrinfo(host, None, socket.AF_INET)[0][4][0]
    except OSError:
        return False, f"hostname {host!r} does not resolve"
    if not addr.startswith("127."):
        return False, f"hostname {host!r} resolves to {addr}"
    return True, ""


def _clean_env() -> dict[str, str]:
    # a test run inside a Slurm job (or with SBATCH_* defaults) must not leak into our cluster
    prefixes = ("SLURM_", "SBATCH_", "SALLOC_", "SRUN_", "SQUEUE_", "SINFO_", "SCONTROL_", "SCANCEL_")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes) and k != MARKER_VAR}


def _make_devices(devdir: Path, gres: dict[str, int]) -> list[str]:
    """One distinct character device per GRES unit, in gres order."""
    devdir.mkdir(parents=True, exist_ok=True)
    files: list[str] = []
    fallback = iter(d for d in _FALLBACK_DEVICES if Path(d).exists())
    minor = 0
    for count in gres.values():
        for _ in range(count):
            dev = devdir / f"nvidia{minor}"
            try:
                with contextlib.suppress(FileNotFoundError):
                    dev.unlink()
                os.mknod(dev, 0o666 | 0o020000, os.makedev(_NVIDIA_MAJOR, minor))  # S_IFCHR
                files.append(str(dev))
            except OSError:
                nxt = next(fallback, None)
                if nxt is None:
                    raise SlurmUnavailable(
                        f"mknod refused and too few existing character devices for {sum(gres.values())} "
                        f"GRES units (at most {len(_FALLBACK_DEVICES)} without mknod)"
                    ) from None
                files.append(nxt)
            minor += 1
    return files


def _make_mig_devices(devdir: Path, node: str, gres: dict[str, int], gpu_name: str) -> list[MigDevice]:
    """MIG devices for gres, packed onto parent GPUs of 7 slices, as gpu/nvml describes them."""
    devdir.mkdir(parents=True, exist_ok=True)
    (devdir / "nvidia-caps").mkdir(exist_ok=True)
    fallback = iter(d for d in _FALLBACK_DEVICES if Path(d).exists())
    made: list[MigDevice] = []
    gpu, used, cap = 0, 0, 1
    for t, count in gres.items():
        m = re.search(r"(\d+)g\.", t)
        slices = min(int(m.group(1)), 7) if m else 1
        for _ in range(count):
            if used + slices > 7:
                gpu, used = gpu + 1, 0
            used += slices
            paths = [devdir / f"nvidia{gpu}", devdir / "nvidia-caps" / f"nvidia-cap{cap}", devdir / "nvidia-caps" / f"nvidia-cap{cap + 1}"]
            numbers = [(_NVIDIA_MAJOR, gpu), (_CAPS_MAJOR, cap), (_CAPS_MAJOR, cap + 1)]
            try:  # like /dev/nvidiaN and /dev/nvidia-caps/nvidia-capN
                for path, (major, minor) in zip(paths, numbers):
                    if not path.is_char_device():
                        with contextlib.suppress(FileNotFoundError):
                            path.unlink()
                        os.mknod(path, 0o666 | 0o020000, os.makedev(major, minor))
                files = tuple(map(str, paths))
            except OSError:
                nxt = next(fallback, None)
                if nxt is None:
                    raise SlurmUnavailable(f"mknod refused and too few existing character devices for {sum(gres.values())} MIG devices") from None
                files = (nxt,)
            index = len(made)
            uid = uuid.uuid5(uuid.NAMESPACE_URL, f"migbench-test/{node}/{index}")
            made.append(MigDevice(node=node, type=t, detected=f"{gpu_name}_{t}", uuid=f"MIG-{uid}", gpu=gpu, files=files))
            cap += 2
    return made


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _write_configs(
    etc: Path,
    rundir: Path,
    workdir: Path,
    logdir: Path,
    nodes: list[str],
    gres: dict[str, dict[str, int]],
    devices: dict[str, list[str]],
    mig_devices: dict[str, list[MigDevice]],
    ports: list[int],
    *,
    cpus: int,
    partition: str,
    cgroup: bool,
    loopback_only: bool,
    scheduler_parameters: str,
    max_array_size: int | None = None,
) -> None:
    if loopback_only:
        comm_params = "# listen on 127.0.0.1 only (what the host name resolves to), not INADDR_ANY\nCommunicationParameters=NoCtldInAddrAny,NoInAddrAny"
    else:
        comm_params = "# the host name is not loopback: listen on INADDR_ANY (NoInAddrAny would bind its address)"
    node_lines = "\n".join(
        f"NodeName={n} NodeAddr=127.0.0.1 Port={ports[1 + i]} CPUs={cpus} RealMemory=4000 "
        f"Gres={','.join(f'gpu:{t}:{c}' for t, c in gres[n].items())} State=UNKNOWN"
        for i, n in enumerate(nodes)
    )
    slurm_conf = f"""\
# written by tests/support/slurm.py: a throwaway local test cluster
ClusterName=migbench-test
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ports[0]}
{comm_params}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={rundir / "munge.socket"}
StateSaveLocation={workdir / "state"}
SlurmdSpoolDir={rundir / "spool"}/%n
SlurmctldPidFile={rundir / "slurmctld.pid"}
SlurmdPidFile={rundir}/slurmd-%n.pid
SlurmctldLogFile={logdir / "slurmctld.log"}
SlurmdLogFile={logdir}/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig={etc / "plugstack.conf"}
ProctrackType={"proctrack/cgroup" if cgroup else "proctrack/linuxproc"}
TaskPlugin={"task/cgroup" if cgroup else "task/none"}
JobAcctGatherType=jobacct_gather/none
# no slurmdbd (no sacct): finished jobs stay in `squeue -t all` / `scontrol show job` for MinJobAge s
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={logdir / "jobcomp.txt"}
MinJobAge=3600
KillWait=2
InactiveLimit=0
SchedulerType=sched/backfill
SchedulerParameters={scheduler_parameters}
{f"MaxArraySize={max_array_size}" if max_array_size else ""}
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
MpiDefault=none
ReturnToService=2
# accept CPUs={cpus} on a smaller machine: GRES, not CPUs, should limit concurrency
SlurmdParameters=config_overrides
MailProg=/bin/true
{node_lines}
PartitionName={partition} Nodes={",".join(nodes)} Default=YES MaxTime=INFINITE State=UP
"""
    cgroup_conf = (
        f"CgroupPlugin={'cgroup/v1' if cgroup else 'autodetect'}\nConstrainDevices={'yes' if cgroup else 'no'}\nConstrainCores=no\nConstrainRAMSpace=no\n"
    )
    files = {
        "slurm.conf": slurm_conf,
        # read only by the cgroup plugins; written anyway so no system cgroup.conf is picked up
        "cgroup.conf": cgroup_conf,
        "plugstack.conf": "",  # no system SPANK plugins
    }
    # Each slurmd reads its own copy of the configuration (etc/node-<name>/, same slurm.conf):
    # gres.conf and fake_gpus.conf have no per-node sections Slurm would honour for the latter.
    gres_conf: dict[str, list[str]] = {}
    fake_gpus: dict[str, str] = {}
    for n in nodes:
        if mig_devices:
            # Slurm's test hook for GPU autodetection (gres/gpu reads fake_gpus.conf from the
            # slurm.conf directory): type|cpu count|cpu range|links|device files|unique id|flags,
            # one line per device, as gpu/nvml reports a MIG device. A slurm.conf Type matches
            # a detected name when it is a substring of it.
            gres_conf[n] = ["# GPUs from fake_gpus.conf, as AutoDetect=nvml would report them"]
            lines = [f"{d.detected}|{cpus}|0-{cpus - 1}|(null)|{','.join(d.files)}|{d.uuid}|nvidia_gpu_env" for d in mig_devices[n]]
            too_long = [line for line in lines if len(line) > 250]  # slurmd reads 255 bytes a line
            if too_long:
                raise SlurmUnavailable(f"fake_gpus.conf line too long for slurmd: {too_long[0]}")
            fake_gpus[n] = "".join(line + "\n" for line in lines)
        else:
            # gres/gpu needs File= naming distinct character devices: Count= alone is dropped
            # ("Removing file-less GPU") and the node drains; a repeated path kills slurmd.
            units = iter(devices[n])
            gres_conf[n] = [f"NodeName={n} Name=gpu Type={t} File={','.join(next(units) for _ in range(c))}" for t, c in gres[n].items()]
    for d, node_list in [(etc, nodes), *((etc / f"node-{n}", [n]) for n in nodes)]:
        d.mkdir(exist_ok=True)
        lines = [line for n in node_list for line in gres_conf[n]]
        content = {**files, "gres.conf": "AutoDetect=off\n" + "\n".join(lines) + "\n"}
        if len(node_list) == 1 and node_list[0] in fake_gpus and d != etc:
            content["fake_gpus.conf"] = fake_gpus[node_list[0]]
        for name, text in content.items():
            (d / name).write_text(text)
            os.chmod(d / name, 0o644)
        if "fake_gpus.conf" not in content:
            with contextlib.suppress(FileNotFoundError):
                (d / "fake_gpus.conf").unlink()


def _spawn(argv: list[str], env: dict[str, str], out: Path) -> subprocess.Popen[bytes]:
    with out.open("ab") as fh:
        # own session: a Ctrl-C on the test run does not hit the daemons (we stop them ourselves);
        # parent-death signal: they get SIGTERM if the test process dies without stopping them
        return subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_term_on_parent_death
        )


def _term_on_parent_death() -> None:
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _alive_or_raise(procs: dict[str, subprocess.Popen[bytes]], logdir: Path) -> bool:
    for name, p in procs.items():
        if p.poll() is not None:
            raise SlurmStartError(f"{name} exited with status {p.returncode} while starting\n{_tail_logs(logdir)}")
    return True


def _stop(cluster: Cluster, procs: dict[str, subprocess.Popen[bytes]], timeout: float) -> None:
    """Cancel the jobs, stop the daemons by PID, then kill anything left carrying our marker."""
    daemons = {p.pid for p in procs.values()}
    ctld = procs.get("slurmctld")
    if ctld is not None and ctld.poll() is None and any(k.startswith("slurmd:") for k in procs):
        with contextlib.suppress(Exception):

            def queued() -> list[str]:
                return cluster.run(["squeue", "-h", "-o", "%A"], check=False, timeout=10).stdout.split()

            ids = queued()
            if ids:
                cluster.run(["scancel", *sorted(set(ids))], check=False, timeout=10)
                _poll(lambda: not queued(), timeout=min(timeout, 10.0), what="jobs to end")
            # a job leaves the queue when slurmstepd reports it done; let the steps exit too
            # (the daemons' own children, like slurmctld's slurmscriptd, go with the daemons)
            _poll(
                lambda: not [p for p in _find_marked(cluster.marker, daemons) if _ppid(p) not in daemons], timeout=5.0, interval=0.05, what="job steps to exit"
            )
    # slurmd(s) and slurmctld together (each takes a moment to shut down), munged after them
    for group in ([n for n in procs if n != "munged"], ["munged"]):
        live = [procs[n] for n in group if n in procs and procs[n].poll() is None]
        for p in live:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        for p in live:
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                p.wait(timeout=5)
    cluster.stray_killed += _kill_marked(cluster.marker)


def _find_marked(marker: str, exclude: set[int] | frozenset[int] = frozenset()) -> list[int]:
    """PIDs of live processes whose environment has MARKER_VAR=marker (zombies have none)."""
    needle = f"{MARKER_VAR}={marker}".encode()
    skip = {os.getpid(), *exclude}
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) in skip:
            continue
        try:
            if needle in (d / "environ").read_bytes().split(b"\0"):
                found.append(int(d.name))
        except OSError:
            continue
    return found


def _kill_marked(marker: str) -> list[int]:
    """SIGKILL every process carrying our marker (slurmstepd, job tasks left behind)."""
    if not marker:
        return []
    killed: list[int] = []
    for _ in range(5):  # a dying parent may still fork; a few passes
        found = _find_marked(marker)
        if not found:
            break
        for pid in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        killed += found
        with contextlib.suppress(TimeoutError):
            _poll(lambda found=found: not any(pid_alive(p) for p in found), timeout=5, interval=0.05, what=f"killed processes {found} to exit")
    return sorted(set(killed))


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _remove_cgroup_dirs(nodes: list[str]) -> None:
    # task/cgroup (v1) leaves empty /sys/fs/cgroup/<controller>/slurm_<node> trees behind;
    # rmdir removes only empty directories (a busy tree of another cluster stays)
    for d in (p for n in nodes for p in Path("/sys/fs/cgroup").glob(f"*/slurm_{n}")):
        subs = sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        for sub in [*subs, d]:
            with contextlib.suppress(OSError):
                sub.rmdir()
