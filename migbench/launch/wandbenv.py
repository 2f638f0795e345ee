"""What a run needs to find what the W&B agent would have given it: a script written for `wandb
agent` reads its parameters from `wandb.config`, which W&B fills from the YAML files named by
`WANDB_CONFIG_PATHS` (each key `{value: ...}`, under `wandb_version: 1`), and groups, names and
resumes its run from `WANDB_RUN_GROUP`, `WANDB_NAME`, `WANDB_RUN_ID` and `WANDB_RESUME`.

Each run gets, in its environment (a variable the user set, in the launcher's environment,
`launch.env` or the group's `env`, wins and is left alone):

    WANDB_CONFIG_PATHS  <run dir>/wandb-config.yaml: the run's parameters (dotted names nested:
                        `optimizer.lr` is `wandb.config["optimizer"]["lr"]`, as W&B's nested
                        sweep parameters are; Hydra's `+`/`++` prefixes dropped)
    WANDB_RUN_GROUP     the sweep's name
    WANDB_JOB_TYPE      the run's group
    WANDB_NAME          the run id
    WANDB_RUN_ID        the run id and 8 hex digits of the sweep name's sha256 (W&B run ids are
                        per project, two sweeps may share one): the same on every attempt, so
                        with WANDB_RESUME=allow a retried run continues its W&B run
    WANDB_RESUME        allow
    WANDB_TAGS          migbench,<the instance's profile>
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CONFIG_NAME = "wandb-config.yaml"


def wandb_config(params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters as W&B's config: dotted names nested, `+`/`++` dropped (a name that is both a
    leaf and a prefix of another stays flat)."""
    out: dict[str, Any] = {}
    flat: dict[str, Any] = {}
    for name, value in params.items():
        key = str(name).lstrip("+")
        parts = key.split(".")
        node = out
        ok = all(p for p in parts)
        for p in parts[:-1] if ok else []:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                ok = False
                break
            node = nxt
        if ok and parts[-1] not in node:
            node[parts[-1]] = value
        else:
            flat[key] = value
    for k, v in flat.items():
        out.setdefault(k, v)
    return out


def config_text(params: Mapping[str, Any]) -> str:
    """The YAML W&B loads from WANDB_CONFIG_PATHS (wandb_version 1: every key a `{value: ...}`)."""
    import yaml

    doc = {k: {"value": v} for k, v in wandb_config(params).items()}
    return "wandb_version: 1\n" + (yaml.safe_dump(doc, default_flow_style=False, allow_unicode=True, sort_keys=True) if doc else "")


def wandb_env(sweep: str, run_id: str, group: str, run_dir: Path, profile: str, user: Mapping[str, str]) -> dict[str, str]:
    """The W&B variables of one run, less those `user` (every environment the user controls) sets."""
    digest = hashlib.sha256(sweep.encode()).hexdigest()[:8]
    env = {
        "WANDB_CONFIG_PATHS": str(Path(run_dir) / CONFIG_NAME),
        "WANDB_RUN_GROUP": sweep,
        "WANDB_JOB_TYPE": group,
        "WANDB_NAME": run_id,
        "WANDB_RUN_ID": f"{run_id}-{digest}",
        "WANDB_RESUME": "allow",
        "WANDB_TAGS": f"migbench,{profile}" if profile else "migbench",
    }
    return {k: v for k, v in env.items() if k not in user}
