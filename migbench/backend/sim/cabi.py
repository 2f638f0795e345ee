"""The C-ABI plumbing of the simulated libnvidia-ml: pynvml calls C functions through ctypes, so the
simulated ones read ctypes arguments (pointers, buffers, structs) and write results back into them.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

import pynvml

from migbench.backend.sim.errors import INVALID_ARGUMENT, SimError, error_string


def fail(code: int, message: str = "") -> SimError:
    return SimError(code, message or error_string(code))


def as_int(x: Any) -> int:
    v = getattr(x, "value", x)
    if v is None:
        raise fail(INVALID_ARGUMENT, "NULL where a number was expected")
    return int(v)


def target_of(arg: Any) -> Any:
    """The ctypes object an output pointer argument points to: `byref(x)` -> x, `pointer(x)` -> x, an array
    -> itself. NULL -> INVALID_ARGUMENT."""
    if arg is None:
        raise fail(INVALID_ARGUMENT, "NULL output pointer")
    if type(arg).__name__ == "CArgObject":
        return arg._obj
    if isinstance(arg, ctypes._Pointer):
        if not arg:
            raise fail(INVALID_ARGUMENT, "NULL output pointer")
        return arg.contents
    if isinstance(arg, (ctypes.Array, ctypes.Structure, ctypes._SimpleCData)):
        return arg
    raise fail(INVALID_ARGUMENT, f"{type(arg).__name__} is not a pointer")


def address_of(arg: Any) -> int:
    """The address a pointer-like argument points at."""
    if type(arg).__name__ == "CArgObject":
        return ctypes.addressof(arg._obj)
    if isinstance(arg, ctypes._Pointer):
        return ctypes.cast(arg, ctypes.c_void_p).value or 0
    if isinstance(arg, (ctypes.Array, ctypes.Structure)):
        return ctypes.addressof(arg)
    if isinstance(arg, int):
        return arg
    raise fail(INVALID_ARGUMENT, f"{type(arg).__name__} is not a pointer")


def buffer_of(arg: Any, elem: Any, count: int) -> Any:
    """A writable view of `count` elements of type `elem` at the buffer `arg` (an array, byref or pointer).
    A ctypes array that is too small -> INSUFFICIENT_SIZE."""
    if isinstance(arg, ctypes.Array):
        if len(arg) < count:
            raise fail(pynvml.NVML_ERROR_INSUFFICIENT_SIZE, "buffer too small")
        return arg
    if type(arg).__name__ == "CArgObject" and isinstance(arg._obj, ctypes.Array):
        return buffer_of(arg._obj, elem, count)
    addr = address_of(arg)
    if not addr:
        raise fail(INVALID_ARGUMENT, "NULL buffer")
    return (elem * max(count, 1)).from_address(addr)


def set_uint(arg: Any, value: int) -> None:
    target_of(arg).value = int(value)


def set_string(buf: Any, length: Any, text: str) -> None:
    data = text.encode()
    n = as_int(length) if length is not None else None
    if n is not None and len(data) + 1 > n:
        raise fail(pynvml.NVML_ERROR_INSUFFICIENT_SIZE, "string buffer too small")
    tgt = target_of(buf)
    ctypes.memmove(ctypes.addressof(tgt), data + b"\0", len(data) + 1)


def placement_arg(arg: Any) -> Any:
    """`const nvml*Placement_t *placement`: a pointer (byref/pointer) to the struct. A struct passed by
    value (or NULL) is INVALID_ARGUMENT, as the C library would misread it."""
    if arg is None:
        raise fail(INVALID_ARGUMENT, "NULL placement")
    if isinstance(arg, ctypes.Structure):
        raise fail(INVALID_ARGUMENT, "placement passed by value; pass byref(c_nvmlGpuInstancePlacement_t(...))")
    obj = target_of(arg)
    if not isinstance(obj, ctypes.Structure) or [f[0] for f in obj._fields_] != ["start", "size"]:
        raise fail(INVALID_ARGUMENT, "placement is not a placement struct")
    return obj


class CFunction:
    """Stands in for a ctypes foreign function: callable, with settable `restype`/`argtypes`."""

    def __init__(self, name: str, impl: Callable[..., Any]):
        self.__name__ = name
        self._impl = impl
        self.restype: Any = ctypes.c_int
        self.argtypes: Any = None
        self.errcheck: Any = None

    def __call__(self, *args: Any) -> Any:
        return self._impl(*args)

    def __repr__(self) -> str:
        return f"<fake NVML function {self.__name__}>"
