"""Launch an applied plan: every run pinned to its MIG device, supervised through a per-run shim.

- `spec`: argv, environment and files of one attempt (shared by dry runs and real starts);
- `store`: the sqlite state (`<state dir>/launch.db`);
- `queue`: the queue policy (the plan's wave order per instance, memory-aware, with lending);
- `prepare`: start order, plan hash, the applied-plan check, the dry run;
- `procs`: process liveness, signalling, the launcher lock;
- `memory`: peak-memory sampling (NVML, in a background thread);
- `supervisor`: the launcher process (starts, adopts, retries, stops);
- `status`: the read side (status, logs, stop).

`python -m migbench.launch PLAN [--state-dir DIR] [--drain] [--no-lend] [--force]` runs the
supervisor in the foreground (what `migbench launch --detach` starts in the background).
"""

from migbench.launch.prepare import dry_run, preflight, start_order
from migbench.launch.spec import RunSpec, build_spec
from migbench.launch.supervisor import (
    EXIT_FAILED,
    EXIT_FLAPPING,
    EXIT_INTERRUPTED,
    EXIT_OK,
    Detached,
    LaunchOptions,
    LaunchResult,
    detach,
    launch,
)

__all__ = [
    "EXIT_FAILED",
    "EXIT_FLAPPING",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "Detached",
    "LaunchOptions",
    "LaunchResult",
    "RunSpec",
    "build_spec",
    "detach",
    "dry_run",
    "launch",
    "preflight",
    "start_order",
]
