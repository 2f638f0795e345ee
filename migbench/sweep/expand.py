"""Expansion of a group's parameters into points: the grid (Cartesian product in file order, repeats
as the outer loop) and random search (parameters visited in name order, repeated draws redrawn).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
from typing import Any

from migbench.sweep.fields import Ctx
from migbench.sweep.model import Parameter, canonical_json
from migbench.sweep.schema import MAX_RUNS
from migbench.sweep.yamlnodes import MapNode


def grid(ctx: Ctx, g: MapNode, params: list[Parameter], zips: list[tuple[str, ...]], repeats: int) -> list[dict[str, Any]] | None:
    """Cartesian product in the written order; a zip group is one axis at its first member (in
    parameter order). None (with a problem) if the product would exceed MAX_RUNS."""
    by_name = {p.name: p for p in params}
    zip_of = {n: z for z in zips for n in z}
    axes: list[list[list[tuple[str, Any]]]] = []
    placed: set[tuple[str, ...]] = set()
    for p in params:
        z = zip_of.get(p.name)
        if z is None:
            axes.append([[(p.name, v)] for v in p.values or ()])
        elif z not in placed:
            placed.add(z)
            columns = [by_name[n].values or () for n in z]
            axes.append([list(zip(z, row, strict=True)) for row in zip(*columns, strict=True)])
    size = math.prod(len(a) for a in axes) * repeats
    if size > MAX_RUNS:
        ctx.at(g, f"the grid expands to {size} runs (more than {MAX_RUNS})", "use fewer values or method: random")
        return None
    order = [p.name for p in params]
    combos = []
    for choice in itertools.product(*axes):
        d = dict(kv for part in choice for kv in part)
        combos.append({k: d[k] for k in order})
    return combos


def sample_points(ctx: Ctx, g: MapNode, group: str, params: list[Parameter], zips: list[tuple[str, ...]], count: int, seed: int) -> list[dict[str, Any]] | None:
    """`count` distinct samples, deterministic in (sweep seed, group name), independent of file order."""
    digest = hashlib.sha256(f"migbench-random:{seed}:{group}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    by_name = {p.name: p for p in params}
    zip_of = {n: z for z in zips for n in z}
    order = [p.name for p in params]
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    attempts, limit = 0, 100 * count + 100
    while len(out) < count and attempts < limit:
        attempts += 1
        d: dict[str, Any] = {}
        for n in sorted(by_name):
            if n in d:
                continue
            z = zip_of.get(n)
            if z is not None:
                members = sorted(z)
                columns = [by_name[m].values or () for m in members]
                rows = sorted(zip(*columns, strict=True), key=lambda r: canonical_json(list(r)))
                d.update(zip(members, rng.choice(rows), strict=True))
            else:
                d[n] = _sample(rng, by_name[n])
        key = canonical_json(d)
        if key in seen:
            continue
        seen.add(key)
        out.append({k: d[k] for k in order})
    if len(out) < count:
        ctx.at(
            g.entries.get("count") or g.entries.get("run_cap") or g,
            f"random sampling found only {len(out)} distinct points for count: {count}",
            "lower count, or use method: grid to try every combination once",
        )
        return None
    return out


def _sample(rng: random.Random, p: Parameter) -> Any:
    if p.values is not None:
        return rng.choice(sorted(p.values, key=canonical_json))
    a, dist = p.args, p.distribution
    if dist == "int_uniform":
        return rng.randint(int(a["min"]), int(a["max"]))
    if dist in ("uniform", "q_uniform"):
        x = rng.uniform(a["min"], a["max"])
    elif dist in ("log_uniform", "q_log_uniform"):
        x = math.exp(rng.uniform(a["min"], a["max"]))
    elif dist in ("log_uniform_values", "q_log_uniform_values"):
        x = math.exp(rng.uniform(math.log(a["min"]), math.log(a["max"])))
    elif dist in ("normal", "q_normal"):
        x = rng.gauss(a["mu"], a["sigma"])
    else:  # log_normal, q_log_normal
        x = math.exp(rng.gauss(a["mu"], a["sigma"]))
    if dist and dist.startswith("q_"):
        q = a["q"]
        x = round(x / q) * q
        if isinstance(q, int) and all(isinstance(a.get(k, 0), int) for k in ("min", "max", "mu")):
            return int(x)
        return round(x, 12)
    return x
