"""Hand a plan to the engines clusters already run: Slurm, Kubernetes (GPU Operator) and mig-parted.

- `tasks`: the plan as engine-neutral work: one *array* per instance type (GPU model + MIG profile),
  one *task* per group of runs that run together on one instance (`max_runs_per_instance` > 1);
- `slurm_types`: the GRES type names Slurm's NVML autodetection gives MIG devices, a site's own
  names (`--type-map`), and the cluster's (`scontrol show node`) mapped onto the plan;
- `slurm`: the files of `export slurm` (node lines, gres.conf, apply-<node>.sh, submit.sh);
- `slurmctl`: `--check`, `status` and `stop` of an exported sweep through squeue/scontrol/scancel;
- `execute`: `migbench exec`, one array task on the device the engine gave it, with the local
  launcher's per-attempt records (`launch.spec`, `launch.shim`);
- `migparted`: mig-parted configs, its config rules (ported), and where counts lose placements;
- `k8s`: the GPU Operator manifests (mig-parted ConfigMap, node labels, Indexed Jobs) and the
  offline checks the schemas miss.
"""
