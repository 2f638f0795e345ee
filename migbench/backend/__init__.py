"""Hardware behind one protocol (`base`): NVML for reading (`nvml`), nvidia-smi for changing
(`smi` argv builders and parsers, `smi_writer`), and the simulated driver (`sim`).

`select` chooses between the host's driver and the simulated one (`MIGBENCH_SIM`); everything else
in migbench reaches hardware through it. Only this package imports pynvml.
"""
