"""`migbench doctor --capture DIR`: save what a host's nvidia-smi and NVML say, read-only, so CI can
rebuild that host in the simulator (`migbench sim init --from DIR`) and dry-run `apply` against it.

The directory holds one text file per command (the text as nvidia-smi printed it, stdout then
stderr), `nvml.json` (the NVML reads: driver, GPUs, MIG mode, the profile table with exact memory sizes,
instances, MIG devices, and the processes holding each GPU's device file) and `capture.json` (commands, exit statuses, migbench's
version). Every command is a listing: nothing on the host changes.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migbench.errors import HardwareError, InputError, MigbenchError, os_reason
from migbench.fsutil import write_text_atomic

CAPTURE_FILES: dict[str, tuple[str, ...]] = {
    "nvidia-smi-q.txt": ("-q",),
    "nvidia-smi-L.txt": ("-L",),
    "mig-lgi.txt": ("mig", "-lgi"),
    "mig-lci.txt": ("mig", "-lci"),
    "mig-lgip.txt": ("mig", "-lgip"),
    "mig-lgipp.txt": ("mig", "-lgipp"),
}
"""File name -> nvidia-smi arguments, for every text a capture holds."""
NVML_FILE = "nvml.json"
MANIFEST_FILE = "capture.json"
CAPTURE_VERSION = 1


@dataclass
class Captured:
    """What `capture_host` wrote (file names, in order) and what the user should know."""

    dir: Path
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _run_smi(argv: tuple[str, ...]) -> tuple[int, str]:
    """nvidia-smi ARGV on this host (the simulated one under MIGBENCH_SIM): (exit status, text)."""
    from migbench.backend.select import sim_dir, simulated_nvidia_smi

    if sim_dir() is not None:
        out, err = io.StringIO(), io.StringIO()
        rc = simulated_nvidia_smi(list(argv), stdout=out, stderr=err)
        return rc, out.getvalue() + err.getvalue()
    exe = shutil.which("nvidia-smi")
    if exe is None:
        raise HardwareError(
            "nvidia-smi is not on this host's PATH: there is no NVIDIA driver to capture",
            hint="run `migbench doctor --capture DIR` on the GPU host, or set MIGBENCH_SIM to capture a simulated one",
        )
    try:
        p = subprocess.run([exe, *argv], capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 255, f"migbench: nvidia-smi {' '.join(argv)} did not finish: {exc}\n"
    return p.returncode, p.stdout + p.stderr


def nvml_doc(holders: dict[int, list[str]] | None = None) -> dict[str, Any]:
    """The NVML reads of this host as plain JSON (what `nvml.json` holds); `holders` are the
    processes holding each GPU's device file (`doctor.device_holders`)."""
    from migbench.backend.select import read_host

    host = read_host()
    gpus = []
    for g in host.gpus:
        gpus.append(
            {
                "index": g.index,
                "name": g.name,
                "uuid": g.uuid,
                "bus_id": g.bus_id,
                "pci_device_id": g.pci_device_id,
                "mig_current": g.mig_current,
                "mig_pending": g.mig_pending,
                "model": g.model_key,
                "instances": [
                    {
                        "gi": gi.id,
                        "profile": gi.placement.profile,
                        "start": gi.placement.start,
                        "compute_instances": [{"ci": c.id} for c in gi.compute_instances],
                    }
                    for gi in g.instances
                ],
                "devices": [
                    {"uuid": d.uuid, "gi": d.gi_id, "ci": d.ci_id, "memory_total_mib": d.memory_total_mib, "processes": [p.pid for p in d.processes]}
                    for d in g.devices
                ],
                "processes": [p.pid for p in g.processes],
                "clients": sorted((holders or {}).get(g.index, [])),
                "profiles": [  # the live table, memory exact (-lgip prints it to 0.01 GiB only)
                    {
                        "name": p.name,
                        "id": p.id,
                        "compute_slices": p.compute_slices,
                        "memory_slices": p.memory_slices,
                        "max_count": p.max_count,
                        "starts": list(p.starts),
                        "memory_mib": p.memory_mib,
                        "engines": {k: v for k, v in vars(p.engines).items() if v is not None},
                    }
                    for p in (g.model.profiles if g.model is not None and g.mig_current else ())
                ],
            }
        )
    return {"driver": host.driver, "simulated": host.simulated, "gpus": gpus}


def capture_host(directory: str | os.PathLike[str]) -> Captured:
    """Write this host's nvidia-smi listings and NVML reads into `directory` (created). Read-only
    on the host. A listing that fails (e.g. `-lgi` without root) is kept with its error text and
    noted; no driver at all is an error."""
    from migbench import __version__
    from migbench.backend.doctor import device_holders_by_gpu
    from migbench.backend.select import sim_dir

    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise InputError(f"{d} is not a directory", hint="give a directory for the capture files")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create {d}: {os_reason(exc)}", hint="give a writable directory") from None
    out = Captured(d)
    commands = []
    for name, argv in CAPTURE_FILES.items():
        rc, text = _run_smi(argv)
        commands.append({"file": name, "argv": ["nvidia-smi", *argv], "exit_status": rc})
        if rc != 0:
            first = (text.strip().splitlines() or ["(no output)"])[0]
            out.notes.append(f"nvidia-smi {' '.join(argv)} exited {rc}: {first}")
        _write(d / name, text)
        out.files.append(name)
    try:
        doc = nvml_doc(device_holders_by_gpu())
    except MigbenchError as exc:
        doc = {"error": exc.message}
        out.notes.append(f"NVML could not be read: {exc.message}")
    _write(d / NVML_FILE, json.dumps(doc, indent=2) + "\n")
    out.files.append(NVML_FILE)
    manifest = {
        "version": CAPTURE_VERSION,
        "migbench": __version__,
        "captured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "simulated": sim_dir() is not None,
        "uid": os.geteuid(),
        "commands": commands,
    }
    _write(d / MANIFEST_FILE, json.dumps(manifest, indent=2) + "\n")
    out.files.append(MANIFEST_FILE)
    if any("Insufficient Permissions" in n or "permission" in n.lower() for n in out.notes):
        out.notes.append("listing GPU instances needs root: run `sudo migbench doctor --capture DIR` for a complete capture")
    return out


def _write(path: Path, text: str) -> None:
    try:
        write_text_atomic(path, text)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {os_reason(exc)}", hint="give a writable directory") from None
