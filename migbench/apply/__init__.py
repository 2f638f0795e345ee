"""`migbench apply` and `migbench check`: reconcile the GPUs to a plan (`reconcile`) from a pure
difference of host and plan (`diff`)."""

from migbench.apply.diff import GpuDiff, Step, StepKind, check_host_matches_models, diff_gpu, target_gpus, verify
from migbench.apply.reconcile import ApplyReport, HostLock, apply_plan

__all__ = [
    "ApplyReport",
    "GpuDiff",
    "HostLock",
    "Step",
    "StepKind",
    "apply_plan",
    "check_host_matches_models",
    "diff_gpu",
    "target_gpus",
    "verify",
]
