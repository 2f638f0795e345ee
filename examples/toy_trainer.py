#!/usr/bin/env python3
"""A CPU-only stand-in for a training run, for trying `migbench run` / `launch` without a GPU.

    python3 toy_trainer.py --steps 20 --step-seconds 0.5 --memory 2.5GiB --lr 0.001

It behaves like a well-mannered training script under migbench:

- prints one progress line per step;
- `--memory 2.5GiB`: its device footprint. Under the simulated driver (MIGBENCH_SIM set and
  CUDA_VISIBLE_DEVICES a MIG uuid) it attaches its own PID with that footprint to the MIG device,
  so NVML and `migbench status` see it; when the device has no room it prints torch's
  `torch.OutOfMemoryError: CUDA out of memory. Tried to allocate ...` to stderr and exits 1;
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

KNOWN = {"steps", "step-seconds", "seconds", "memory", "crash-at", "oom-at", "fail-attempts"}


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
        where = (f" GPU 0 has a total capacity of {int(free.group(2)) / 1024:.2f} GiB of which "
                 f"{int(free.group(1)) / 1024:.2f} GiB is free.")
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
    if "seconds" in opts:
        step_s = float(opts["seconds"]) / max(1, steps)
    else:
        step_s = float(opts.get("step-seconds", "0.5"))
    memory_mib = parse_mib(opts["memory"]) if opts.get("memory") else 0
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

    def on_term(signum: int, _frame: object) -> None:
        if state["finished"]:
            return
        write_json_atomic(ckpt, {"step": state["step"], "run_id": run_id})
        print(f"received signal {signum}; checkpoint at step {state['step']}", flush=True)
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    attach(memory_mib)
    print(f"toy_trainer {run_id} attempt {attempt}: {steps} steps of {step_s:g} s, {memory_mib} MiB on "
          f"{os.environ.get('CUDA_VISIBLE_DEVICES', '(no device)')}", flush=True)
    for step in range(state["step"] + 1, steps + 1):
        time.sleep(step_s)
        if crash_at is not None and step == crash_at and (fail_attempts is None or attempt <= fail_attempts):
            raise RuntimeError(f"toy crash at step {step} (attempt {attempt})")
        if oom_at is not None and step == oom_at:
            oom_exit(memory_mib or 1024, "")
        loss = 2.5 * 0.9**step
        state["step"] = step
        write_json_atomic(ckpt, {"step": step, "run_id": run_id})
        print(f"step {step}/{steps} loss {loss:.4f}", flush=True)
    state["finished"] = True
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
