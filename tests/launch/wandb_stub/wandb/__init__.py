"""A stand-in for the `wandb` package in tests (the real one is large and starts a service even
offline): `init()` fills `config` from the YAML files named by WANDB_CONFIG_PATHS the way W&B's
`config_util.dict_from_config_file` does (an optional `wandb_version: 1`, then every key's
`value`), and takes the run's group, name, id and job type from their WANDB_* variables."""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

import yaml

config: dict[str, Any] = {}


def _load(path: str) -> dict[str, Any]:
    with open(path) as f:
        loaded = yaml.safe_load(f)
    if loaded is None:
        return {}
    version = loaded.pop("wandb_version", None)
    if version is not None and version != 1:
        raise ValueError("Unknown config version")
    return {k: v["value"] for k, v in loaded.items()}


def init(**kwargs: Any) -> SimpleNamespace:
    for path in filter(None, os.environ.get("WANDB_CONFIG_PATHS", "").split(",")):
        config.update(_load(path))
    config.update(kwargs.get("config") or {})
    return SimpleNamespace(
        config=config,
        group=os.environ.get("WANDB_RUN_GROUP"),
        name=os.environ.get("WANDB_NAME"),
        id=os.environ.get("WANDB_RUN_ID"),
        job_type=os.environ.get("WANDB_JOB_TYPE"),
        tags=tuple(filter(None, os.environ.get("WANDB_TAGS", "").split(","))),
        resume=os.environ.get("WANDB_RESUME"),
    )
