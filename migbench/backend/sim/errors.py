"""The simulated driver's errors: NVML return codes (pynvml's values and texts) and `SimError`."""

from __future__ import annotations

import pynvml

from migbench.errors import HardwareError, MigbenchError

# NVML return codes (pynvml's values).
SUCCESS = pynvml.NVML_SUCCESS
INVALID_ARGUMENT = pynvml.NVML_ERROR_INVALID_ARGUMENT  # 2
NOT_SUPPORTED = pynvml.NVML_ERROR_NOT_SUPPORTED  # 3
NO_PERMISSION = pynvml.NVML_ERROR_NO_PERMISSION  # 4
NOT_FOUND = pynvml.NVML_ERROR_NOT_FOUND  # 6
DRIVER_NOT_LOADED = pynvml.NVML_ERROR_DRIVER_NOT_LOADED  # 9
RESET_REQUIRED = pynvml.NVML_ERROR_RESET_REQUIRED  # 16
IN_USE = pynvml.NVML_ERROR_IN_USE  # 19
MEMORY = pynvml.NVML_ERROR_MEMORY  # 20
INSUFFICIENT_RESOURCES = pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES  # 23

ERROR_NAMES = {
    "INVALID_ARGUMENT": INVALID_ARGUMENT,
    "NOT_SUPPORTED": NOT_SUPPORTED,
    "NO_PERMISSION": NO_PERMISSION,
    "NOT_FOUND": NOT_FOUND,
    "RESET_REQUIRED": RESET_REQUIRED,
    "IN_USE": IN_USE,
    "MEMORY": MEMORY,
    "INSUFFICIENT_RESOURCES": INSUFFICIENT_RESOURCES,
    "UNKNOWN": pynvml.NVML_ERROR_UNKNOWN,
}

# nvmlErrorString() of the simulated library. pynvml's own table for the rest; 19 and 23 are not in it and
# their text is what nvidia-smi prints for them in real pastes (docs/mig-facts.md#errors, docs/mig-facts.md#nvml).
_ERROR_STRINGS = dict(pynvml.NVMLError._errcode_to_string)
_ERROR_STRINGS.update({IN_USE: "In use by another client", INSUFFICIENT_RESOURCES: "Insufficient Resources"})


def error_string(code: int) -> str:
    """The text the simulated `nvmlErrorString(code)` returns (and nvidia-smi prints)."""
    return _ERROR_STRINGS.get(code, "Unknown Error")


class SimError(HardwareError):
    """A simulated driver refusal, carrying the NVML return code (`code`) it maps to."""

    def __init__(self, code: int, message: str, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.code = code

    @property
    def reason(self) -> str:
        """NVML's text for the code, e.g. "Insufficient Resources"."""
        return error_string(self.code)


def parse_error_code(code: int | str) -> int:
    """An NVML error code from an int, "23", "IN_USE" or "NVML_ERROR_IN_USE"."""
    if isinstance(code, int):
        return code
    t = str(code).strip().upper()
    if t.isdigit():
        return int(t)
    t = t.removeprefix("NVML_ERROR_")
    if t in ERROR_NAMES:
        return ERROR_NAMES[t]
    v = getattr(pynvml, f"NVML_ERROR_{t}", None)
    if isinstance(v, int):
        return v
    raise MigbenchError(f"unknown NVML error {code!r}", hint="e.g. " + ", ".join(ERROR_NAMES))
