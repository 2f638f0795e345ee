"""migbench: plan, apply and launch research sweeps on NVIDIA MIG instances."""

__version__ = "0.1.0"
