"""Launch an applied plan: every run pinned to its MIG device, supervised through a per-run shim.

- `spec`: argv, environment and files of one attempt (shared by dry runs and real starts);
- `store`: the sqlite state (`<state dir>/launch.db`);
- `queue`: the queue policy (the plan's wave order per instance, memory-aware, with lending);
- `prepare`: start order, plan hash, the applied-plan check, the dry run;
- `procs`: process liveness, signalling, the launcher lock;
- `memory`: peak-memory sampling (NVML, in a background thread);
- `options`: what a launch is asked for and how it ends;
- `supervisor`: the launcher process (the loop, starts, stops), made of `journal` (rows and their
  writes), `admission` (queues: what starts now), `children` (live attempts' processes: shims,
  adoption, reaping), `outcomes` (retries, OOM moves, failures), `devices` (host lock, bindings,
  launch register) and `stops` (stop requests, the staged shutdown); `detach` runs it as a daemon;
- `shim`: the per-run wrapper the supervisor starts (`python -m migbench.launch.shim`);
- `status`: the read side (status, logs, stop);
- `history`: the read side of the memory history (each attempt's peak, instance and outcome).

The package imports nothing itself, so the per-run shim (`python -m migbench.launch.shim`) starts
without the launcher's modules.

`python -m migbench.launch PLAN [--state-dir DIR] [--drain] [--no-lend] [--force]` runs the
supervisor in the foreground (what `migbench launch --detach` starts in the background).
"""
