"""Load and validate a sweep file (schema version 1) into typed, expanded runs. Strict, one pass.

A sweep is dozens of variants of one training job. The file names the parameters (W&B forms, Hydra
shorthand strings, or plain lists), the command template, and what each run needs (memory, and
optionally duration, compute share, allowed MIG profiles). `load_sweep` returns a `Sweep` whose
`runs` are fully resolved: argv, environment, memory footprint in MiB, and a stable id.

Everything wrong with the file is reported at once: `InputError.problems` holds one `Problem` per
mistake, each with the file, the 1-based line of the offending key or value, the field path
(`groups[0].memory`, `fleet[1].gpu`, `parameters.lr` in the single-group form) and a hint.

Decisions worth knowing:

* **Rendering a value into a command** uses Python's `str()`: ints as `8`, floats in their shortest
  round-trip form (`0.1`, `1e-05`, `3.0`), booleans as `True`/`False` (Hydra's override grammar and
  W&B's `${args}` read these too), null as `None`. Floats drawn by `method: random` are not rounded,
  except `q_*` distributions, whose results are rounded to 12 decimals to drop float noise.
* **No value ever reaches a shell** unless the group says `shell: true`. A string command is split
  with `shlex.split` *before* substitution, so each `{param}` lands inside exactly one argv element.
  With `shell: true` the command must be one string; every substituted value is `shlex.quote`d, and
  `${NAME}` that is not a migbench macro is left for the shell.
* **Macros**: `${program}`, `${args}` (`--name=value`, sorted by name), `${args_no_hyphens}`
  (`name=value`), `${args_no_boolean_flags}` (`--name` for true, nothing for false), `${args_json}`
  (one JSON argument), `${env}` (`/usr/bin/env`) and `${interpreter}` (`python`) as in W&B. The
  list-producing ones must stand alone as one argument. `${run_id}`, `${run_dir}` and `${attempt}` are
  left verbatim for the launcher. `${args_json_file}` is refused.
* **YAML numbers**: `1e-5` is read as a float (YAML 1.2), not as the string PyYAML's YAML 1.1 makes it.
* **Expansion order**: grid is the Cartesian product in the order parameters are written (the first
  varies slowest; a zip group is one axis at its first member), then repeated `repeats` times (the
  repeat index is the outer loop, as Ray's `num_samples`). `Run.index` is the position in the whole
  sweep. Random sampling visits parameters in *name* order and draws from values sorted by their
  canonical JSON, so reordering the file changes neither the ids nor the samples; a sample that
  repeats an earlier one is redrawn (a bounded number of times), and raising `count` keeps the
  earlier samples.
* **defaults** are merged under each group: the group's value wins; `env` and `parameters` merge key
  by key (defaults' parameters come first in the expansion order).
* `memory` tables compare keys and values by their string forms (`8` matches `"8"`); a table's
  `memory_source` is `table:<param>=<value>` whether the entry or the table's `default` applied.
* An estimate's `memory_parts` are each rounded up to a MiB; `memory_mib` is the estimate's total
  (ceil of the exact sum), so the parts may add up to a few MiB more than `memory_mib`.
* `workdir` is resolved against the sweep file's directory but not required to exist here (the plan
  may be made on another machine than the launch).
* A key set to null (`run_cap: null`, `fleet: ~`) counts as not given, as in W&B files.
* Hydra shorthand: a string parameter holding a comma is a list whose items are read as YAML scalars
  (`"8,16"` gives ints); `range(start, stop[, step])` (ints or floats) and `choice(a, b)` are
  understood, Hydra's other sweep functions are refused. `{value: "a,b"}` is the literal string.
* With `shell: true`, do not put a `{param}` inside quotes in the template: the value arrives already
  quoted (`--note {note}`, not `--note "{note}"`).
* A duplicate value in a list is reported at the value; a random draw that repeats a point is redrawn
  (at most 100 × count tries). A group or sweep that would expand to more than `MAX_RUNS` is refused.

Modules: `schema` (keys, names, limits), `model` (the declared `Sweep`, `Group`, `Run`), `yamlnodes`
(YAML with locations, problems), `fields` (typed field readers), `templates` (command templates),
`parameters`, `expand` (grid and random points), `memory`, `group` (one group), `load` (the file).
"""

from migbench.sweep.load import load_fleet_file, load_sweep, load_sweep_text
from migbench.sweep.model import (
    ExplicitMemory,
    FleetEntry,
    Group,
    LaunchSettings,
    MeasuredMemory,
    MemoryEstimate,
    MemorySpec,
    MemoryTable,
    Parameter,
    Run,
    Sweep,
    render_value,
    run_id,
)
from migbench.sweep.schema import DISTRIBUTIONS, MAX_RUNS

__all__ = [
    "DISTRIBUTIONS",
    "MAX_RUNS",
    "ExplicitMemory",
    "FleetEntry",
    "Group",
    "LaunchSettings",
    "MeasuredMemory",
    "MemoryEstimate",
    "MemorySpec",
    "MemoryTable",
    "Parameter",
    "Run",
    "Sweep",
    "load_fleet_file",
    "load_sweep",
    "load_sweep_text",
    "render_value",
    "run_id",
]
