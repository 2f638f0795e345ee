"""Hypothesis strategies for hostile sweep and plan files, shared by the fuzz tests and
`bench/faults.py`: YAML shapes built from the schema's own keys with values that are wrong in type,
range or form, and byte-level mutations of real files. A loader meets each input with a value or an
`InputError`/`MigbenchError`, never another exception (`check_sweep_text`, `check_plan_text`)."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

from migbench.errors import MigbenchError
from migbench.plan import Plan
from migbench.state import state_dir_for
from migbench.sweep import load_sweep_text
from migbench.sweep.schema import (
    DURATION_MODEL_KEYS,
    ESTIMATE_KEYS,
    FLEET_KEYS,
    GROUP_KEYS,
    LAUNCH_KEYS,
    MEMORY_TABLE_KEYS,
    PARAM_KEYS,
    TOP_KEYS,
)
from tests.support import REPO, sweep_files

TRICKY = [
    "",
    " ",
    "~",
    "0",
    "-1",
    "1e309",
    "nan",
    "inf",
    "-inf",
    "0x10",
    "0o17",
    "1_000",
    "2.5GiB",
    "0GiB",
    "-3GiB",
    "1TiB",
    "8h",
    "0s",
    "-5m",
    "1e6d",
    "range(0,10,2)",
    "range(10)",
    "range(0,0)",
    "range(5,1,-1)",
    "a,b",
    ",",
    "{seed}",
    "{x}",
    "{",
    "}",
    "{{",
    "${run_id}",
    "${run_dir}",
    "${args_json_file}",
    "{args}",
    "{program}",
    "{env}",
    "../..",
    "../../etc",
    "/etc/passwd",
    ".",
    "..",
    "a/b",
    "A100-SXM4-80GB",
    "A30",
    "H100-SXM5-80GB",
    "1g.10gb",
    "3g.40gb",
    "7g.80gb",
    "1g.10gb+me",
    "uniform",
    "log_uniform_values",
    "q_normal",
    "grid",
    "random",
    "bayes",
    "sm",
    "slices",
    "0640",
    "0777",
    "LC_*",
    "PATH",
    "python train.py --x {x}",
    "; rm -rf ~ #",
    "$(id)",
    "\x00",
    "\u202e",
    "é",
    "true",
    "no",
    "2001-12-14",
    "1:30",
    "*anchor",
    "&a",
    "!!python/object:os.system",
    "%TAG",
    "- -",
    ": :",
    "? x",
]
ALL_KEYS = sorted(set(TOP_KEYS + GROUP_KEYS + FLEET_KEYS + DURATION_MODEL_KEYS + LAUNCH_KEYS + PARAM_KEYS + MEMORY_TABLE_KEYS + ESTIMATE_KEYS))

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(TRICKY),
)
keys = st.one_of(st.sampled_from(ALL_KEYS), st.text(max_size=8), st.integers(-3, 3), st.booleans(), st.none())
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=5)),
    max_leaves=16,
)


def _mapping(known: tuple[str, ...] | list[str]) -> st.SearchStrategy[dict]:
    return st.dictionaries(st.one_of(st.sampled_from(list(known)), keys), values, max_size=len(known) + 1)


groups = st.fixed_dictionaries(
    {"name": st.one_of(st.sampled_from(["a", "grp", "g-1", "A", "../x", ""]), values), "command": st.one_of(st.sampled_from(TRICKY), values)},
    optional={
        "parameters": st.dictionaries(st.one_of(st.sampled_from(["x", "seed", "lr", "a.b"]), keys), st.one_of(_mapping(PARAM_KEYS), values), max_size=4),
        "memory": st.one_of(
            st.sampled_from(TRICKY), _mapping(MEMORY_TABLE_KEYS + ("estimate",)), st.fixed_dictionaries({"estimate": _mapping(ESTIMATE_KEYS)}), values
        ),
        **{k: values for k in GROUP_KEYS if k not in ("name", "command", "parameters", "memory")},
    },
)
sweep_docs = st.fixed_dictionaries(
    {},
    optional={
        "version": st.one_of(st.just(1), values),
        "name": st.one_of(st.sampled_from(["s", "sweep-1", "../../x", "a/b", ".hidden", ""]), values),
        "fleet": st.one_of(st.lists(_mapping(FLEET_KEYS), max_size=3), values),
        "groups": st.one_of(st.lists(groups, max_size=3), values),
        "defaults": st.one_of(_mapping(GROUP_KEYS), values),
        "launch": st.one_of(_mapping(LAUNCH_KEYS), values),
        "duration_model": st.one_of(_mapping(DURATION_MODEL_KEYS), values),
        **{k: values for k in ("description", "seed", "command", "parameters", "memory", "method", "count")},
    },
)


def _dump(doc: Any) -> str:
    try:
        return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
    except yaml.YAMLError:
        return repr(doc)


@st.composite
def mutated_text(draw: st.DrawFn, base: str) -> str:
    """`base` with a few random edits: a span deleted, replaced or duplicated, YAML punctuation inserted."""
    text = base
    for _ in range(draw(st.integers(1, 4))):
        if not text:
            break
        i = draw(st.integers(0, len(text) - 1))
        j = draw(st.integers(i, min(len(text), i + 40)))
        op = draw(st.sampled_from(["delete", "replace", "duplicate", "insert"]))
        if op == "delete":
            text = text[:i] + text[j:]
        elif op == "replace":
            text = (
                text[:i] + draw(st.one_of(st.sampled_from(TRICKY + [":", "-", "[", "]", "{", "}", "\n", "  ", "#", "'", '"']), st.text(max_size=6))) + text[j:]
            )
        elif op == "duplicate":
            text = text[:j] + text[i:j] + text[j:]
        else:
            text = text[:i] + draw(st.sampled_from(["\n  - ", ": ", "\n", "\t", "[", "{", "*a", "&a ", "!!binary ", "? ", "%YAML 1.1\n"])) + text[i:]
    return text


SWEEP_FILES = sweep_files("sweeps") + [REPO / "examples" / "toy-sweep.yaml"]
sweep_texts = st.one_of(
    sweep_docs.map(_dump),
    st.sampled_from([p.read_text() for p in SWEEP_FILES]).flatmap(mutated_text),
)


def check_sweep_text(text: str) -> str:
    """Load a sweep; 'ok' or 'error' (an InputError/MigbenchError). Anything else propagates."""
    try:
        load_sweep_text(text, file="fuzz.yaml", base_dir=Path(tempfile.gettempdir()))
    except MigbenchError:
        return "error"
    return "ok"


# -- plans ---------------------------------------------------------------------------------------


@st.composite
def mutated_doc(draw: st.DrawFn, base: dict) -> Any:
    """A copy of `base` with values at random paths replaced by fuzz values or deleted."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 5))):
        node: Any = doc
        path = []
        while isinstance(node, (dict, list)) and node and draw(st.booleans()):
            k = draw(st.sampled_from(sorted(node, key=str))) if isinstance(node, dict) else draw(st.integers(0, len(node) - 1))
            path.append((node, k))
            node = node[k]
        if not path:
            if isinstance(doc, dict) and doc:
                del doc[draw(st.sampled_from(sorted(doc, key=str)))]
            continue
        parent, k = path[-1]
        if isinstance(parent, dict) and draw(st.booleans()):
            del parent[k]
        else:
            parent[k] = draw(values)
    return doc


def base_plan_doc() -> dict:
    """A small but complete plan (2 instances, 3 runs, one unplaced), as its file holds it."""
    from migbench.duration import DurationModel
    from migbench.plan import Assignment, PlanGpu, PlanInstance, PlanRun, SolverInfo, Unplaced
    from migbench.sweep.model import LaunchSettings

    runs = [
        PlanRun(
            id=f"g-{i}",
            group="g",
            memory_mib=2048,
            memory_source="",
            argv=("python3", "train.py", "--seed", str(i)),
            shell=False,
            workdir=".",
            env={"TOKEN": "x"},
            params={"seed": i},
            duration_s=60.0,
            compute=0.2,
            max_runs_per_instance=1,
            profiles=None,
            retries=1,
            timeout_s=600.0,
            at=Assignment(0, "3g.40gb", 4 * (i % 2), i // 2, 0.0, 60.0),
        )
        for i in range(3)
    ]
    plan = Plan(
        name="fuzz",
        sweep_file="fuzz.yaml",
        sweep_sha256="0" * 64,
        fleet=[PlanGpu(0, "A100-SXM4-80GB")],
        instances=[PlanInstance(0, "3g.40gb", 0, 40192, 0.43, ("g-0", "g-2")), PlanInstance(0, "3g.40gb", 4, 40192, 0.43, ("g-1",))],
        runs=runs,
        unplaced=[Unplaced("big-0", 100000, "too big")],
        solver=SolverInfo("OPTIMAL", "runs_at_once", 3, 3, 0.0),
        duration_model=DurationModel(),
        launch=LaunchSettings(env_passthrough=("PATH", "LC_*"), state_mode=0o640),
        models={},
    )
    return plan.to_dict()


def plan_texts(base_plan: dict) -> st.SearchStrategy[str]:
    return st.one_of(
        mutated_doc(base_plan).map(_dump),
        st.just(_dump(base_plan)).flatmap(mutated_text),
        values.map(_dump),
    )


def check_plan_text(text: str, where: Path) -> str:
    """Load a plan file and use what `apply`/`launch` read first; 'ok' or 'error'."""
    p = where / "fuzz.plan.yaml"
    p.write_text(text)
    try:
        plan = Plan.load(p)
        state_dir_for(plan)
        plan.to_yaml()
        [r.demand() for r in plan.runs]
        [i.key for i in plan.instances]
    except MigbenchError:
        return "error"
    return "ok"
