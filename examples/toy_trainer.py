#!/usr/bin/env python3
"""A CPU-only stand-in for a training run, for trying `migbench run` / `launch` without a GPU.

    python3 toy_trainer.py --steps 20 --step-seconds 0.5 --memory 2.5GiB --lr 0.001

It behaves like a well-mannered training script under migbench:

- prints one progress line per step;
- allocates what its parameters say: `--memory 2.5GiB` is its fixed part (weights, optimizer
  states, CUDA context) and `--per-token 1MiB` with `--batch N` (or `--batch-size N`) and
  `--seq-len S` adds activations of per-token x N x S (S defaults to 1, so `--per-token` with
  `--batch` alone is per sample). Under the simulated driver (MIGBENCH_SIM set and
  CUDA_VISIBLE_DEVICES a MIG uuid) it attaches its own PID to the MIG device with the fixed part
  at start and the whole footprint from the first step on (as a caching allocator keeps what the
  first step reserved), so NVML and `migbench status` see it; when the device has no room it
  prints torch's `torch.OutOfMemoryError: CUDA out of memory. Tried to allocate ...` to stderr
  and exits 1;
- `--spike 2GiB [--spike-seconds 0.1] [--spike-hold-file PATH]`: a transient allocation on top of
  the footprint during the first step, released after that long (a workspace freed again), and not
  before PATH exists when it is given (a test that must see the spike, whatever the machine's
  speed), for peak-sampling tests;
- MIGBENCH_REPORT_MEMORY=<file> (set by `migbench profile`): writes its own peak there as JSON,
  `{"peak_mib": N, "source": ...}`, whenever the peak grows and at exit, as a real run would write
  `torch.cuda.max_memory_reserved()`; MIGBENCH_PROBE_STEPS=N: stops after N steps (exit 0);
- `--compute U`: the share of a whole GPU it keeps busy (0 < U <= 1). On a MIG device under the
  simulated driver, its step time is `--step-seconds` x max(1, U / s), s the device's SM share as
  the simulated NVML reports it, as the duration model says a run of compute U runs there
  (`migbench profile --speed` measures U back from its progress lines);
- `--hang-at STEP`: from that step on, ignores SIGTERM and never ends (a hung run, for tests);
- `--hold-file PATH`: after its first step, holds its whole footprint until PATH exists (for tests
  that must see a run mid-way, whatever the machine's speed);
- writes `checkpoint.json` in MIGBENCH_RUN_DIR after every step (atomically) and, when
  MIGBENCH_RESUME=1, resumes from it (`resumed from step N`);
- SIGTERM: saves a checkpoint and exits 143 (ignored once training has finished);
- `--crash-at STEP` raises an exception there (traceback, exit 1); `--oom-at STEP` prints the CUDA
  OOM message there and exits 1; `--fail-attempts K` makes the crash (at `--crash-at`, default
  step 1) happen only while MIGBENCH_ATTEMPT <= K, for retry tests;
- on success appends `<run id> <attempt> done` to the file named by TOY_LEDGER (O_APPEND), so
  tests can count completions;
- records what it was started with (argv, pinning variables, PID, cwd) in
  `MIGBENCH_RUN_DIR/toy-attempt-<n>.json`;
- accepts any extra `--key value` (or `--key=value`) arguments: a sweep's hyperparameters. A value
  is taken verbatim, even one that starts with `-`.

Standard library plus migbench (units, and the simulated attach; without migbench importable it
runs without attaching).
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from pathlib import Path

KNOWN = {
    "steps",
    "step-seconds",
    "seconds",
    "memory",
    "per-token",
    "batch",
    "batch-size",
    "seq-len",
    "spike",
    "spike-seconds",
    "crash-at",
    "oom-at",
    "fail-attempts",
    "hang-at",
    "hold-file",
    "spike-hold-file",
    "compute",
}


def _migbench() -> bool:
    """Make `migbench` importable (from this checkout when it is not installed). False if it is not."""
    try:
        import migbench  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        try:
            import migbench  # noqa: F401,F811
        except ImportError:
            return False
    return True


def parse_args(argv: list[str]) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """`--key value` / `--key=value` pairs: (known options, every pair in order)."""
    opts: dict[str, str] = {}
    pairs: list[tuple[str, str]] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if not a.startswith("--") or len(a) == 2:
            pairs.append(("", a))
            i += 1
            continue
        if "=" in a:
            key, value = a[2:].split("=", 1)
            i += 1
        elif i + 1 < len(argv):
            key, value = a[2:], argv[i + 1]
            i += 2
        else:
            key, value = a[2:], ""
            i += 1
        pairs.append((key, value))
        if key in KNOWN:
            opts[key] = value
    return opts, pairs


def parse_mib(text: str) -> int:
    """`2.5GiB`, `800MiB`, `4GB` -> MiB, rounded up (migbench's units); a bare number is MiB."""
    if text.strip().isdigit():
        return int(text)
    if not _migbench():
        raise SystemExit("toy_trainer: --memory needs migbench importable (or a plain number of MiB)")
    from migbench.units import parse_memory_mib

    try:
        return parse_memory_mib(text)
    except ValueError as exc:
        raise SystemExit(f"toy_trainer: --memory {text!r}: {exc}") from None


def write_json_atomic(path: Path, doc: object) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def oom_exit(wanted_mib: int, detail: str) -> None:
    """Print what torch prints on a CUDA OOM (with the simulated device's numbers when known); exit 1."""
    free = re.search(r"(\d+) MiB free of (\d+) MiB", detail)
    where = ""
    if free:
        where = f" GPU 0 has a total capacity of {int(free.group(2)) / 1024:.2f} GiB of which {int(free.group(1)) / 1024:.2f} GiB is free."
    print("Traceback (most recent call last):", file=sys.stderr)
    print('  File "toy_trainer.py", line 1, in <module>', file=sys.stderr)
    print(
        f"torch.OutOfMemoryError: CUDA out of memory. Tried to allocate {wanted_mib / 1024:.2f} GiB.{where} "
        "If reserved but unallocated memory is large try setting "
        "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.",
        file=sys.stderr,
        flush=True,
    )
    sys.exit(1)


def footprint_mib(opts: dict[str, str]) -> tuple[int, int]:
    """(fixed part, whole footprint) in MiB from `--memory`, `--per-token`, `--batch`, `--seq-len`."""
    fixed = parse_mib(opts["memory"]) if opts.get("memory") else 0
    if not opts.get("per-token"):
        return fixed, fixed
    per_token = parse_mib_float(opts["per-token"])
    batch = int(opts.get("batch") or opts.get("batch-size") or 1)
    seq_len = int(opts.get("seq-len") or 1)
    return fixed, fixed + int(-(-per_token * batch * seq_len // 1))


def parse_mib_float(text: str) -> float:
    """`0.5MiB`, `64KiB`, `2` (MiB): a per-token size, which may be a fraction of a MiB."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]i?B)?\s*", text)
    if not m:
        raise SystemExit(f"toy_trainer: --per-token {text!r}: expected a size such as 0.5MiB or 64KiB")
    scale = {None: 1.0, "KiB": 1 / 1024, "KB": 1 / 1024, "MiB": 1.0, "MB": 1.0, "GiB": 1024.0, "GB": 1024.0, "TiB": 1024.0**2, "TB": 1024.0**2}
    return float(m.group(1)) * scale[m.group(2)]


class Report:
    """The run's own view of its peak, written to MIGBENCH_REPORT_MEMORY (when set) atomically."""

    def __init__(self) -> None:
        self.path = os.environ.get("MIGBENCH_REPORT_MEMORY")
        self.peak = 0

    def saw(self, mib: int) -> None:
        if mib > self.peak:
            self.peak = mib
            self.write()

    def write(self) -> None:
        if self.path:
            try:
                write_json_atomic(Path(self.path), {"peak_mib": self.peak, "source": "toy_trainer: the memory it attached"})
            except OSError as exc:
                print(f"toy_trainer: cannot write {self.path}: {exc}", file=sys.stderr)


def compute_slowdown(opts: dict[str, str]) -> float:
    """How much slower a step is on this MIG device for a run of `--compute U`: max(1, U / share), the
    device's SM share read through the (simulated) NVML; 1 without `--compute` or a known share."""
    if not opts.get("compute"):
        return 1.0
    want = float(opts["compute"])
    if not 0 < want <= 1:
        raise SystemExit(f"toy_trainer: --compute {opts['compute']!r}: expected a share in (0, 1]")
    dev = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    if not os.environ.get("MIGBENCH_SIM") or not dev.startswith("MIG-") or not _migbench():
        return 1.0
    from migbench.backend.select import instance_compute_share

    share = instance_compute_share(dev)
    return max(1.0, want / share) if share else 1.0


def attach(memory_mib: int) -> None:
    """Declare this process's footprint on its simulated MIG device (under MIGBENCH_SIM only)."""
    sim = os.environ.get("MIGBENCH_SIM")
    dev = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    if not sim or not dev.startswith("MIG-"):
        return
    try:
        if not _migbench():
            raise ImportError("no module named migbench")
        from migbench.backend.sim.host import MEMORY, SimError, SimHost
    except ImportError as exc:
        print(f"toy_trainer: cannot attach to the simulated host ({exc}); running without", file=sys.stderr)
        return
    try:
        SimHost(sim).attach(dev, os.getpid(), memory_mib, name="toy_trainer")
    except SimError as exc:
        if exc.code == MEMORY:
            oom_exit(memory_mib, str(exc))
        print(f"RuntimeError: CUDA error: invalid device ordinal ({exc})", file=sys.stderr, flush=True)
        sys.exit(1)


def main(argv: list[str] | None = None) -> int:
    opts, pairs = parse_args(sys.argv[1:] if argv is None else argv)
    steps = int(opts.get("steps", "10"))
    if os.environ.get("MIGBENCH_PROBE_STEPS", "").isdigit():
        steps = min(steps, int(os.environ["MIGBENCH_PROBE_STEPS"]))
    if "seconds" in opts:
        step_s = float(opts["seconds"]) / max(1, steps)
    else:
        step_s = float(opts.get("step-seconds", "0.5"))
    step_s *= compute_slowdown(opts)
    fixed_mib, memory_mib = footprint_mib(opts)
    spike_mib = parse_mib(opts["spike"]) if opts.get("spike") else 0
    spike_s = float(opts.get("spike-seconds") or 0.1)
    hang_at = int(opts["hang-at"]) if opts.get("hang-at") else None
    hold_file = opts.get("hold-file") or None
    spike_hold = opts.get("spike-hold-file") or None
    crash_at = int(opts["crash-at"]) if opts.get("crash-at") else None
    oom_at = int(opts["oom-at"]) if opts.get("oom-at") else None
    fail_attempts = int(opts["fail-attempts"]) if opts.get("fail-attempts") else None
    if fail_attempts is not None and crash_at is None:
        crash_at = 1

    run_id = os.environ.get("MIGBENCH_RUN_ID", "toy")
    attempt = int(os.environ.get("MIGBENCH_ATTEMPT", "1") or 1)
    run_dir = Path(os.environ.get("MIGBENCH_RUN_DIR") or ".")
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt = run_dir / "checkpoint.json"
    write_json_atomic(
        run_dir / f"toy-attempt-{attempt}.json",
        {
            "argv": sys.argv[1:] if argv is None else argv,
            "pairs": pairs,
            "pid": os.getpid(),
            "cwd": os.getcwd(),
            "env": {k: v for k, v in sorted(os.environ.items()) if k.startswith(("MIGBENCH_", "CUDA_"))},
        },
    )

    state = {"step": 0, "finished": False}
    if os.environ.get("MIGBENCH_RESUME") == "1" and ckpt.exists():
        state["step"] = int(json.loads(ckpt.read_text()).get("step", 0))
        print(f"resumed from step {state['step']}", flush=True)

    report = Report()

    def on_term(signum: int, _frame: object) -> None:
        if state["finished"]:
            return
        report.write()
        write_json_atomic(ckpt, {"step": state["step"], "run_id": run_id})
        print(f"received signal {signum}; checkpoint at step {state['step']}", flush=True)
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    attach(fixed_mib)
    report.saw(fixed_mib)
    print(
        f"toy_trainer {run_id} attempt {attempt}: {steps} steps of {step_s:g} s, {memory_mib} MiB on {os.environ.get('CUDA_VISIBLE_DEVICES', '(no device)')}",
        flush=True,
    )
    first = True
    for step in range(state["step"] + 1, steps + 1):
        if hang_at is not None and step >= hang_at:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            print(f"hanging at step {step}", flush=True)
            while True:
                time.sleep(3600)
        slept = 0.0
        if first:
            first = False
            if spike_mib:
                attach(memory_mib + spike_mib)
                report.saw(memory_mib + spike_mib)
                time.sleep(spike_s)
                slept = spike_s
                while spike_hold is not None and not os.path.exists(spike_hold):
                    time.sleep(0.02)
            if spike_mib or memory_mib != fixed_mib:
                attach(memory_mib)
                report.saw(memory_mib)
        time.sleep(max(0.0, step_s - slept))
        if hold_file is not None:
            while not os.path.exists(hold_file):
                time.sleep(0.02)
            hold_file = None
        if crash_at is not None and step == crash_at and (fail_attempts is None or attempt <= fail_attempts):
            raise RuntimeError(f"toy crash at step {step} (attempt {attempt})")
        if oom_at is not None and step == oom_at:
            oom_exit(memory_mib or 1024, "")
        loss = 2.5 * 0.9**step
        state["step"] = step
        write_json_atomic(ckpt, {"step": step, "run_id": run_id})
        print(f"step {step}/{steps} loss {loss:.4f}", flush=True)
    state["finished"] = True
    report.write()
    ledger = os.environ.get("TOY_LEDGER")
    if ledger:
        fd = os.open(ledger, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, f"{run_id} {attempt} done\n".encode())
        finally:
            os.close(fd)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
