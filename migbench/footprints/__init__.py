"""Each run's memory footprint: measured (`migbench profile`), learned from launches, and planned on.

- `file`: the footprints file (versioned YAML: per run id and parameter set, the peak, how it was
  measured, GPU model, profile, driver, date, probe duration);
- `fit`: runs never measured, predicted from the measured runs of their group;
- `resolve`: the sweep's memory from footprints, the launch history (`migbench.launch.history`),
  fits and OOM lower bounds, in a stated order, with a headroom;
- `accuracy`: declared vs analytic vs measured vs history (`migbench estimate --accuracy`);
- `select`, `slots`, `probe`: `migbench profile` (which runs, on which MIG instances, measured how).

Above `migbench.launch` in the layers: it reads the launch history and starts probes with the
launcher's shim; the CLI and `workflows` call it.
"""

from migbench.footprints.file import FOOTPRINTS_KIND, FOOTPRINTS_VERSION, Footprints, Measurement, load_footprints
from migbench.footprints.fit import Fit, fit_group
from migbench.footprints.resolve import (
    DEFAULT_HEADROOM,
    Resolution,
    ResolvedMemory,
    Sources,
    default_footprints_path,
    default_history_dirs,
    gather_sources,
    resolve,
)

__all__ = [
    "DEFAULT_HEADROOM",
    "FOOTPRINTS_KIND",
    "FOOTPRINTS_VERSION",
    "Fit",
    "Footprints",
    "Measurement",
    "Resolution",
    "ResolvedMemory",
    "Sources",
    "default_footprints_path",
    "default_history_dirs",
    "fit_group",
    "gather_sources",
    "load_footprints",
    "resolve",
]
