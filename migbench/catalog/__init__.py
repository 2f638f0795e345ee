"""The GPU catalogue: models, MIG profiles, legal placements and layouts (`model`), the built-in and
user catalogue files (`store`), and profile tables read from nvidia-smi text or NVML (`importer`).

Sourced facts behind `data/catalog.yaml` are in `docs/mig-facts.md`.
"""

from migbench.catalog.importer import (
    ProfileRow,
    min_mib_printing_as,
    model_from_rows,
    parse_lgip,
    parse_lgipp,
    rows_from_text,
)
from migbench.catalog.model import (
    DriverVersion,
    Engines,
    GpuModel,
    Profile,
    Rule,
    compute_slices_of,
    driver_str,
    parse_driver,
    profile_order,
)
from migbench.catalog.store import Catalog, default_catalog, model_from_spec, save_user_model, spec_from_model, user_catalog_path
from migbench.types import Layout, Placement, layout_key

__all__ = [
    "Catalog",
    "DriverVersion",
    "Engines",
    "GpuModel",
    "Layout",
    "Placement",
    "Profile",
    "ProfileRow",
    "Rule",
    "compute_slices_of",
    "default_catalog",
    "driver_str",
    "layout_key",
    "min_mib_printing_as",
    "model_from_rows",
    "model_from_spec",
    "parse_driver",
    "parse_lgip",
    "parse_lgipp",
    "profile_order",
    "rows_from_text",
    "save_user_model",
    "spec_from_model",
    "user_catalog_path",
]
