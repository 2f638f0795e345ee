"""OR-Tools' CP-SAT module, imported without pandas.

`ortools.sat.python.cp_model` imports pandas at its top only to accept pandas `Index` and `Series`
arguments (and to name them in type aliases), which the planner never passes. Importing pandas costs
about half a second of CPU, a third of a `migbench plan` command's own start. So while cp_model is
first imported, `pandas` is a stand-in whose `Index` and `Series` no object is an instance of; it is
removed right after, so a later `import pandas` in the same process gets the real one (cp_model then
still treats pandas objects as plain values, which no caller here gives it).

Where pandas is already imported, or an OR-Tools release needs more of it at import, cp_model is
imported as OR-Tools ships it.
"""

from __future__ import annotations

import sys
import types


def _stand_in() -> types.ModuleType:
    mod = types.ModuleType("pandas", "a stand-in while ortools.sat.python.cp_model is imported (migbench.planner.cpsat)")

    class Index:
        pass

    class Series:
        pass

    mod.Index = Index  # type: ignore[attr-defined]
    mod.Series = Series  # type: ignore[attr-defined]
    return mod


def _import() -> types.ModuleType:
    if "ortools.sat.python.cp_model" not in sys.modules and "pandas" not in sys.modules:
        stand_in = _stand_in()
        sys.modules["pandas"] = stand_in
        try:
            from ortools.sat.python import cp_model

            return cp_model
        except Exception:  # it needs more of pandas than the two names: the real import below
            sys.modules.pop("ortools.sat.python.cp_model", None)
        finally:
            if sys.modules.get("pandas") is stand_in:
                del sys.modules["pandas"]
    from ortools.sat.python import cp_model

    return cp_model


cp_model = _import()
