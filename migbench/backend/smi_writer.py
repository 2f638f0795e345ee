"""Changing MIG state the way operators do: nvidia-smi subprocesses, every command logged.

GPU instances are created through NVML's `nvmlDeviceCreateGpuInstanceWithPlacement`, because the
`-cgi <profile>:<start>` placement syntax of nvidia-smi is not verified against NVIDIA's own help
text (docs/mig-facts.md#smi-formats); the log records the call with the nvidia-smi line it stands for.
Set `MIGBENCH_CGI=smi` to create them with `nvidia-smi mig -cgi <id>:<start>` instead.

With `dry_run`, nothing runs: each step is logged with the exact argv it would execute.
On the simulated host the same code runs a real subprocess of the simulated nvidia-smi.
"""

from __future__ import annotations

import ctypes
import os
import re
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import pynvml

from migbench.backend import smi
from migbench.backend.base import CommandRecord, ModeOutcome
from migbench.errors import HardwareError, MigbenchError


class SmiWriter:
    """The Writer protocol over nvidia-smi (+ NVML for placed GPU-instance creation)."""

    def __init__(
        self,
        *,
        dry_run: bool = False,
        smi_cmd: Sequence[str] = ("nvidia-smi",),
        env: dict[str, str] | None = None,
        privileges: Callable[[], None] | None = None,
        runner: Callable[[list[str]], tuple[int, str]] | None = None,
    ):
        self.dry_run = dry_run
        self.smi_cmd = list(smi_cmd)
        self.env = env
        self.privileges = privileges
        self.log: list[CommandRecord] = []
        self.cgi_via = os.environ.get("MIGBENCH_CGI", "nvml")
        # `runner(argv) -> (rc, output)` replaces the subprocess; only the exhaustive tests use it,
        # to run the simulated nvidia-smi in-process (same argv, same parsing, no interpreter start).
        self.runner = runner

    # -- running -------------------------------------------------------------------------------
    def _run(self, argv: list[str], note: str = "") -> CommandRecord:
        """Run one nvidia-smi command line (argv[0] == 'nvidia-smi'); raise on failure."""
        rec = CommandRecord(list(argv), "nvidia-smi", note)
        self.log.append(rec)
        if self.dry_run:
            return rec
        if self.runner is not None:
            rec.rc, rec.output = self.runner(list(argv))
            return rec
        real = self.smi_cmd + argv[1:]
        env = None
        if self.env:
            env = dict(os.environ)
            env.update(self.env)
        try:
            # its own session: a Ctrl-C at the terminal reaches apply, which stops between commands,
            # never this command half-way
            proc = subprocess.run(real, capture_output=True, text=True, env=env, timeout=300, start_new_session=True)
        except FileNotFoundError as exc:
            raise HardwareError(
                f"{argv[0]} was not found", hint="install the NVIDIA driver utilities, or try the simulated driver (`migbench sim init`)"
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise HardwareError(f"`{rec.line()}` did not finish within 300 s") from exc
        rec.rc = proc.returncode
        rec.output = (proc.stdout + proc.stderr).strip()
        return rec

    def _checked(self, argv: list[str], what: str, note: str = "") -> CommandRecord:
        rec = self._run(argv, note)
        if not self.dry_run and rec.rc != 0:
            raise HardwareError(f"{what} failed: {_last_reason(rec.output)}", hint=f"the command was `{rec.line()}`; it printed:\n{rec.output}")
        if not self.dry_run and smi.output_has_failure(rec.output):
            raise HardwareError(f"{what} failed: {_last_reason(rec.output)}", hint=f"the command was `{rec.line()}`")
        return rec

    # -- the Writer protocol -------------------------------------------------------------------
    def check_privileges(self) -> None:
        """MIG changes need root (or the mig/config capability). Checked before anything changes."""
        if self.privileges is not None:  # the simulated driver says whether the caller is root
            self.privileges()
            return
        if os.geteuid() == 0:
            return
        cap = Path("/proc/driver/nvidia/capabilities/mig/config")
        if cap.exists() and os.access(cap, os.R_OK):
            return
        raise MigbenchError(
            "changing MIG configuration needs root privileges (or read access to /proc/driver/nvidia/capabilities/mig/config)",
            hint="re-run with sudo, e.g. `sudo migbench apply plan.yaml`",
        )

    def set_mig_mode(self, gpu: int, enabled: bool) -> ModeOutcome:
        argv = smi.set_mig_mode_argv(gpu, enabled)
        rec = self._run(argv)
        if self.dry_run:
            return ModeOutcome(True, False, "", "")
        out = smi.parse_mig_mode_output(rec.output)
        if rec.rc != 0 and not out.pending:
            raise HardwareError(f"GPU {gpu}: `{rec.line()}` failed: {_last_reason(rec.output)}", hint=f"it printed:\n{rec.output}")
        return ModeOutcome(applied=out.applied, pending=out.pending, reason=out.reason or "", output=rec.output)

    def reset_gpu(self, gpu: int) -> None:
        self._checked(smi.gpu_reset_argv(gpu), f"GPU {gpu}: reset")

    def create_gpu_instance(self, gpu: int, profile_id: int, start: int, size: int) -> int | None:
        if self.cgi_via == "smi":
            rec = self._checked(
                smi.create_gpu_instances_argv(gpu, [f"{profile_id}:{start}"], default_ci=False), f"GPU {gpu}: create GPU instance {profile_id}@{start}"
            )
            if self.dry_run:
                return None
            created = smi.parse_create_lines(rec.output)
            return created.gpu_instances[0] if created.gpu_instances else None
        equiv = smi.create_gpu_instances_argv(gpu, [f"{profile_id}:{start}"], default_ci=False)
        rec = CommandRecord(
            ["nvml", "nvmlDeviceCreateGpuInstanceWithPlacement", f"gpu={gpu}", f"profile={profile_id}", f"start={start}", f"size={size}"],
            "nvml",
            "nvidia-smi equivalent: " + " ".join(equiv),
        )
        self.log.append(rec)
        if self.dry_run:
            return None
        try:
            pynvml.nvmlInit()  # reference-counted; paired with the shutdown below
            try:
                h = pynvml.nvmlDeviceGetHandleByIndex(gpu)
                placement = pynvml.c_nvmlGpuInstancePlacement_t(start, size)
                gi = pynvml.nvmlDeviceCreateGpuInstanceWithPlacement(h, profile_id, ctypes.byref(placement))
                info = pynvml.nvmlGpuInstanceGetInfo(gi)
            finally:
                pynvml.nvmlShutdown()
        except pynvml.NVMLError as exc:
            rec.rc = exc.value
            rec.output = str(exc)
            raise HardwareError(
                f"GPU {gpu}: creating GPU instance profile {profile_id} at {start} failed: {exc}",
                hint="another instance may occupy those memory slices, or the profile is at its maximum",
            ) from exc
        rec.rc = 0
        rec.output = f"GPU instance ID {info.id}"
        return int(info.id)

    def create_compute_instance(self, gpu: int, gi_id: int | str, profile_id: int | None = None) -> int | None:
        """`nvidia-smi mig -i G -gi N -cci [profile]`: the default (full) compute instance unless a
        CI profile id is given. `gi_id` may be a placeholder string in a dry run."""
        ids = None if profile_id is None else [profile_id]
        rec = self._checked(smi.create_ci_argv(gpu, gi_id, ids), f"GPU {gpu}: create compute instance in GI {gi_id}")
        if self.dry_run:
            return None
        created = smi.parse_create_lines(rec.output)
        return created.compute_instances[0] if created.compute_instances else None

    def destroy_compute_instance(self, gpu: int, gi_id: int, ci_id: int) -> None:
        self._checked(smi.destroy_ci_argv(gpu, gi_id, ci_id), f"GPU {gpu}: destroy compute instance {ci_id} of GI {gi_id}")

    def destroy_gpu_instance(self, gpu: int, gi_id: int) -> None:
        self._checked(smi.destroy_gi_argv(gpu, gi_id), f"GPU {gpu}: destroy GPU instance {gi_id}")

    def destroy_all_instances(self, gpu: int) -> None:
        """Every compute instance, then every GPU instance of one GPU, in two commands
        (`nvidia-smi mig -i G -dci`, then `-dgi`: without ids they take all of them,
        docs/mig-facts.md#smi-formats, `-dci`/`-dgi`). The caller has checked that they may all go."""
        self._checked(smi.destroy_ci_argv(gpu), f"GPU {gpu}: destroy every compute instance")
        self._checked(smi.destroy_gi_argv(gpu), f"GPU {gpu}: destroy every GPU instance")


def _last_reason(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        m = re.search(r":\s*([A-Z][A-Za-z ]+)$", ln)
        if m:
            return m.group(1)
    return lines[-1] if lines else "no output"
