"""The simulated NVIDIA driver: a stateful host on disk, a fake libnvidia-ml for pynvml, and an
nvidia-smi that prints the real text. A product feature (try migbench, CI dry-runs), not a test mock."""
