"""`migbench doctor`: what stands between this host and `migbench apply`, read-only, each with its
fix — the driver, each GPU's MIG capability and mode, a pending mode change, the clients holding a
GPU (they block the reset an Ampere mode change needs), the caller's privileges, and instances in
use (apply never destroys them). On the simulated host the same questions are answered by the
simulator (its clients, privileges and VM setting stand for the real host's)."""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from migbench.errors import HardwareError

Level = Literal["ok", "warn", "fail"]

_NVIDIA_DEV = re.compile(r"^/dev/nvidia(\d+)$")


@dataclass(frozen=True)
class Finding:
    level: Level  # ok: fine; warn: in the way of some changes; fail: in the way of apply
    what: str
    fix: str = ""
    gpu: int | None = None


@dataclass
class DoctorReport:
    host: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def blocking(self) -> bool:
        return any(f.level == "fail" for f in self.findings)

    def summary(self) -> str:
        fails = sum(f.level == "fail" for f in self.findings)
        warns = sum(f.level == "warn" for f in self.findings)
        if not fails and not warns:
            return "nothing in the way of `migbench apply`"
        return f"{fails} problem(s) in the way of `migbench apply`, {warns} warning(s)"

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "blocking": self.blocking, "summary": self.summary(), "findings": [asdict(f) for f in self.findings]}


# ---------------------------------------------------------------------------------------------
# Who holds a GPU
# ---------------------------------------------------------------------------------------------


def _proc_holders(proc: Path = Path("/proc")) -> dict[int, list[str]]:
    """Device minor -> `name (PID n)` of every process with `/dev/nvidia<minor>` open (read from
    /proc; processes of other users are visible to root only)."""
    out: dict[int, set[str]] = {}
    me = os.getpid()
    try:
        pids = [int(p.name) for p in proc.iterdir() if p.name.isdigit()]
    except OSError:
        return {}
    for pid in pids:
        if pid == me:
            continue
        try:
            fds = list((proc / str(pid) / "fd").iterdir())
        except OSError:
            continue
        minors = set()
        for fd in fds:
            try:
                m = _NVIDIA_DEV.match(os.readlink(fd))
            except OSError:
                continue
            if m:
                minors.add(int(m.group(1)))
        if minors:
            try:
                name = (proc / str(pid) / "comm").read_text().strip()
            except OSError:
                name = "?"
            for minor in minors:
                out.setdefault(minor, set()).add(f"{name} (PID {pid})")
    return {k: sorted(v) for k, v in out.items()}


def _minor_to_index() -> dict[int, int]:
    """NVML's device minor numbers (`/dev/nvidia<minor>`) -> GPU index; {} where NVML cannot say."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return {int(pynvml.nvmlDeviceGetMinorNumber(pynvml.nvmlDeviceGetHandleByIndex(i))): i for i in range(pynvml.nvmlDeviceGetCount())}
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no driver, or a driver without minor numbers: fall back below
        return {}


def device_holders_by_gpu() -> dict[int, list[str]]:
    """GPU index -> the processes and clients holding it: the simulator's clients under
    MIGBENCH_SIM, else the processes with the GPU's device file open."""
    from migbench.backend.select import simulated_host_facts

    facts = simulated_host_facts()
    if facts is not None:
        return {int(g): list(c) for g, c in facts["clients"].items() if c}
    holders = _proc_holders()
    index = _minor_to_index()
    return {index.get(minor, minor): names for minor, names in holders.items()}


# ---------------------------------------------------------------------------------------------
# The diagnosis
# ---------------------------------------------------------------------------------------------

NO_DRIVER_FIX = (
    "install the NVIDIA datacenter driver for your GPUs (minimum drivers for MIG: docs/mig-facts.md#minimum-drivers); "
    "to try migbench without a GPU: migbench sim init ./sim --gpu A100-SXM4-80GB --count 2 && export MIGBENCH_SIM=$PWD/sim"
)


def diagnose() -> DoctorReport:
    """Read the host (never change it) and list what is in the way of `apply`."""
    from migbench.backend.select import read_host, simulated_host_facts

    facts = simulated_host_facts()
    where = f"simulated host {facts['dir']}" if facts else "this host's NVIDIA driver"
    rep = DoctorReport(where)
    vm = bool(facts and facts["vm"])
    try:
        host = read_host()
    except HardwareError as exc:
        if "Insufficient Permissions" not in exc.message:
            rep.findings.append(Finding("fail", f"no NVIDIA driver answers: {exc.message}", NO_DRIVER_FIX))
            return rep
        rep.findings.append(
            Finding(
                "fail",
                f"the driver answers, but this user may not read the MIG configuration ({exc.message})",
                "on the simulator: migbench sim set --privileged; on a real host: sudo migbench doctor"
                if facts
                else "run it as root: sudo migbench doctor (and sudo migbench apply PLAN)",
            )
        )
    else:
        rep.findings.append(Finding("ok", f"driver {host.driver} answers through NVML, {len(host.gpus)} GPU(s)"))
        if not host.gpus:
            rep.findings.append(Finding("fail", "the driver sees no GPU", "check `nvidia-smi -L` and the driver's kernel log"))
            return rep
        holders = device_holders_by_gpu()
        for g in host.gpus:
            rep.findings.extend(_gpu_findings(g, holders.get(g.index, []), vm))
    if facts is not None:
        privileged = bool(facts["privileged"])
        how = "the simulated caller"
        fix = "on the simulator: migbench sim set --privileged; on a real host: sudo migbench apply PLAN"
    else:
        privileged = os.geteuid() == 0
        how = f"this user (uid {os.geteuid()})"
        fix = "run the changes as root: sudo migbench apply PLAN (reads and `apply --dry-run` work without root)"
    if privileged:
        rep.findings.append(Finding("ok", f"{how} may change MIG configuration (root)"))
    else:
        rep.findings.append(Finding("warn", f"{how} is not root: apply cannot change MIG mode or instances", fix))
    if vm:
        rep.findings.append(
            Finding(
                "warn",
                "VM passthrough: a GPU reset is not supported, so an Ampere MIG mode change waits for a reboot of the VM",
                "enable MIG once and reboot the VM; later plans then only create and destroy instances",
            )
        )
    return rep


def _gpu_findings(g: Any, holders: list[str], vm: bool) -> list[Finding]:
    out: list[Finding] = []
    tag = f"GPU {g.index} ({g.name})"
    if g.mig_current is None:
        out.append(
            Finding("warn", f"{tag} does not support MIG: plans cannot use it", "plan for the MIG-capable GPUs only (the sweep's fleet: or --fleet)", g.index)
        )
        return out
    if g.model is None:
        out.append(
            Finding(
                "warn",
                f"{tag}: migbench does not know this GPU's MIG profiles",
                "teach it: nvidia-smi mig -lgip > lgip.txt; nvidia-smi mig -lgipp > lgipp.txt; migbench catalog import lgip.txt lgipp.txt --name MODEL",
                g.index,
            )
        )
    reset = "reboot the VM (it cannot reset a GPU)" if vm else f"stop what holds the GPU, then: sudo nvidia-smi -i {g.index} --gpu-reset (or reboot)"
    if g.mig_current != g.mig_pending:
        now, then = ("enabled" if g.mig_current else "disabled"), ("enabled" if g.mig_pending else "disabled")
        out.append(Finding("fail", f"{tag}: a MIG mode change is pending (now {now}, {then} after the next GPU reset)", reset, g.index))
    elif not g.mig_current:
        out.append(
            Finding(
                "warn",
                f"{tag}: MIG mode is disabled",
                "`migbench apply PLAN` enables it (as root); on Ampere the change needs a GPU reset, so nothing may hold the GPU then",
                g.index,
            )
        )
    else:
        out.append(Finding("ok", f"{tag}: MIG enabled, {len(g.instances)} GPU instance(s)", gpu=g.index))
    if holders:
        out.append(
            Finding(
                "warn",
                f"{tag} is held by {', '.join(holders)}: a GPU reset (which an Ampere MIG mode change needs) is refused while they hold it",
                "stop them for the change and start them after, e.g. sudo systemctl stop nvidia-persistenced nvidia-dcgm",
                g.index,
            )
        )
    if not g.mig_current and g.processes:
        pids = ", ".join(str(p.pid) for p in g.processes)
        out.append(
            Finding(
                "warn",
                f"{tag}: compute processes run on it (PID {pids}): a MIG mode change is refused while they run",
                "let them finish or stop them before `migbench apply`",
                g.index,
            )
        )
    for gi in g.instances:
        procs = g.processes_of(gi.id)
        if procs:
            pids = ", ".join(str(p.pid) for p in procs)
            out.append(
                Finding(
                    "warn",
                    f"{tag}: instance {gi.placement} (GPU instance {gi.id}) is in use by PID {pids}: apply will not destroy it",
                    "keep it in the plan, or stop those processes (`migbench stop` for a migbench launch)",
                    g.index,
                )
            )
    return out
