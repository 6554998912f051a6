"""Read a `.pth` checkpoint without executing anything in it.

`torch.load(weights_only=True)` rebuilds only tensors and plain containers. On top of torch's own
allow-list, and only while `safe_torch_load` runs, the globals that real mmdetection 2.x / mmengine
checkpoints reference are mapped to inert stand-ins defined here:

- `mmengine.logging.history_buffer.HistoryBuffer` -> `InertHistoryBuffer` (keeps its pickled state).
- `builtins.getattr` (protocol 2 writes `HistoryBuffer.min` as `getattr(HistoryBuffer, "min")`) ->
  `inert_getattr`, which answers only for our stand-ins and refuses anything else.
- numpy's `dtype`, `ndarray`, `multiarray._reconstruct` and `multiarray.scalar` (`numpy._core.*` and
  numpy 1.x `numpy.core.*`) -> stand-ins that check their arguments and rebuild plain numeric values
  from raw bytes (`np.frombuffer`); nothing of numpy's unpickling code is called.
- `collections.Counter` (MultiStepLR milestones) is on torch's own list.

Any other global is refused, naming it (`posix.system`, `builtins.eval`, ...).
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import torch

from .checkpoint import CheckpointError


class UnsafeCheckpoint(Exception):
    """Raised by a stand-in asked to do something it does not allow; not an UnpicklingError, so
    torch passes it through unchanged."""


class InertHistoryBuffer:
    """Stand-in for `mmengine.logging.history_buffer.HistoryBuffer`: holds its state, runs nothing."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state):
        self.state = state


class InertAttribute:
    """What `getattr(<stand-in>, name)` gives: a record of the name, not a callable."""

    def __init__(self, owner: str, name: str):
        self.owner, self.name = owner, name

    def __repr__(self) -> str:
        return f"<inert {self.owner}.{self.name}>"


class InertDType:
    """Stand-in for a pickled `numpy.dtype`; `numpy()` gives the real dtype for plain numeric types."""

    def __init__(self, spec=None, align=False, copy=True):
        self.spec, self.state = spec, None

    def __setstate__(self, state):
        self.state = state

    def numpy(self) -> np.dtype | None:
        if not isinstance(self.spec, str) or not re.fullmatch(r"[biufcSUV?]\d*|O\d*", self.spec):
            return None
        state = self.state if isinstance(self.state, tuple) else ()
        if len(state) >= 5 and (state[2] is not None or state[3] is not None or state[4] is not None):
            return None  # sub-array or structured dtype: left inert
        dtype = np.dtype(self.spec)
        byteorder = state[1] if len(state) > 1 else "="
        return dtype.newbyteorder(byteorder) if byteorder in ("<", ">") else dtype


class InertArray:
    """Stand-in for a pickled `numpy.ndarray`; `.value` is the rebuilt array (None if left inert)."""

    def __init__(self, *args):
        self.value = None

    def __setstate__(self, state):
        self.state = state
        if not (isinstance(state, tuple) and len(state) == 5 and isinstance(state[2], InertDType)):
            return
        _, shape, dtype, fortran, raw = state
        resolved = dtype.numpy()
        if resolved is None or not (isinstance(shape, tuple) and all(isinstance(n, int) and n >= 0 for n in shape)):
            return
        order = "F" if fortran else "C"
        if resolved.hasobject:  # object arrays pickle their items as a list (already read safely)
            if isinstance(raw, list) and len(raw) == int(np.prod(shape)):
                flat = np.empty(len(raw), dtype=object)
                for i, item in enumerate(raw):
                    flat[i] = item
                self.value = flat.reshape(shape, order=order)
            return
        raw = raw.encode("latin1") if isinstance(raw, str) else raw
        if isinstance(raw, (bytes, bytearray)) and len(raw) == int(np.prod(shape)) * resolved.itemsize:
            self.value = np.frombuffer(raw, dtype=resolved).reshape(shape, order=order).copy()


_STAND_INS = (InertHistoryBuffer, InertDType, InertArray)


def _name_of(obj: object) -> str:
    if isinstance(obj, type) or callable(obj):
        return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"
    return f"a {type(obj).__name__} ({repr(obj)[:60]})"


def inert_getattr(obj: object, name: object) -> InertAttribute:
    """`builtins.getattr` as the unpickler sees it: only on our stand-ins, and it returns a record."""
    owner = obj if isinstance(obj, type) else type(obj)
    if owner not in _STAND_INS or not isinstance(name, str):
        raise UnsafeCheckpoint(f"it calls builtins.getattr({_name_of(obj)}, {name!r}); getattr is only allowed on mmengine HistoryBuffer")
    return InertAttribute(_name_of(obj), name)


def _np_reconstruct(cls: object, shape: object = (0,), typecode: object = b"b") -> InertArray:
    if cls is not InertArray:
        raise UnsafeCheckpoint(f"it calls numpy multiarray._reconstruct on {_name_of(cls)}; only numpy.ndarray is allowed")
    return InertArray()


def _np_scalar(dtype: object, raw: object = None) -> object:
    resolved = dtype.numpy() if isinstance(dtype, InertDType) else None
    if resolved is None:
        raise UnsafeCheckpoint(f"it calls numpy multiarray.scalar on {_name_of(dtype)}; only plain numeric dtypes are allowed")
    if resolved.hasobject:
        return raw  # an object scalar is the (already safely read) object itself
    raw = raw.encode("latin1") if isinstance(raw, str) else raw
    if not isinstance(raw, (bytes, bytearray)) or len(raw) != resolved.itemsize:
        raise UnsafeCheckpoint(f"a numpy {resolved} scalar with malformed data ({type(raw).__name__})")
    return np.frombuffer(raw, dtype=resolved)[0]


_ALLOWED = [
    (InertHistoryBuffer, "mmengine.logging.history_buffer.HistoryBuffer"),
    (inert_getattr, "builtins.getattr"),
    (InertArray, "numpy.ndarray"),
    (InertDType, "numpy.dtype"),
] + [(fn, f"{core}.multiarray.{name}") for core in ("numpy.core", "numpy._core") for fn, name in ((_np_reconstruct, "_reconstruct"), (_np_scalar, "scalar"))]

_GLOBAL_IN_ERROR = re.compile(r"GLOBAL ([A-Za-z_][\w.]*)")
_ALIASES = {"posix": "os", "nt": "os"}  # os.system pickles as posix.system on Linux


def _describe_global(name: str) -> str:
    if "." not in name:  # torch prints builtins.eval as just "eval"
        name = f"builtins.{name}"
    module, _, attr = name.rpartition(".")
    return f"{name} ({_ALIASES[module]}.{attr})" if module in _ALIASES else name


def safe_torch_load(path: Path) -> object:
    """torch.load(weights_only=True) with the inert stand-ins above; raises CheckpointError, never runs code."""
    try:
        with torch.serialization.safe_globals(_ALLOWED):
            return torch.load(path, map_location="cpu", weights_only=True)
    except UnsafeCheckpoint as exc:
        raise CheckpointError(f"{path}: refused: {exc}") from None
    except pickle.UnpicklingError as exc:
        found = _GLOBAL_IN_ERROR.search(str(exc))
        if found is not None:
            raise CheckpointError(f"{path}: refused: it references {_describe_global(found.group(1))}, which loading could execute") from None
        detail = str(exc).split("WeightsUnpickler error:")[-1].split("Check the documentation")[0].strip()
        raise CheckpointError(f"{path}: not a PyTorch checkpoint that can be read safely (its pickle stream: {detail})") from None
    except Exception as exc:  # a truncated file, a zip that is not torch's, random bytes ...
        first_sentence = str(exc).split(". ")[0]
        raise CheckpointError(f"{path}: not a PyTorch checkpoint, or a truncated one ({type(exc).__name__}: {first_sentence})") from None
