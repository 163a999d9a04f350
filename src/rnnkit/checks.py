"""Input checks at the door: each error says what was expected, what was got, and how to fix it.

TypeError for the wrong kind of thing, ValueError for the wrong value. Nothing here mutates.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

Array = np.ndarray


class UsageError(Exception):
    """A user error on the command line: printed as ``error: ...`` without a traceback."""


class MissingDependency(UsageError, ImportError):
    """An optional extra is not installed; the message names the ``pip install`` that fixes it."""


def require(module: str, extra: str, purpose: str) -> Any:
    """Import an optional dependency, or raise MissingDependency saying what to install::

        onnx = require("onnx", "onnx", "exporting to ONNX")
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependency(f"{purpose} needs the {module.split('.')[0]} package, which is "
                                f"not installed: pip install 'rnnkit[{extra}]'") from e


_BOUNDS = {"both": ("[", "]"), "left": ("[", ")"), "right": ("(", "]"), "neither": ("(", ")")}


def no_json_constant(name: str) -> Any:
    """``json.loads(..., parse_constant=no_json_constant)``: NaN and Infinity are not JSON;
    a reader of rnnkit's files and requests refuses them."""
    raise ValueError(f"{name} is not JSON")


def check_scalar(x: Any, name: str, target_type: type | tuple[type, ...], *,
                 min_val: float | None = None, max_val: float | None = None,
                 include_boundaries: str = "both", allow_none: bool = False) -> Any:
    """Validate a scalar argument, as scikit-learn's ``check_scalar``; return it (an int as
    ``int``, a float as ``float``; NumPy scalars accepted).

    ``target_type`` int or float (float accepts ints), or bool for a flag (True or False
    only); bools are never numbers here. The bounds are inclusive or not by
    ``include_boundaries``: both, left, right or neither. Floats must be finite. Errors name
    ``name``: TypeError for the wrong kind, ValueError for a value out of range.
    """
    if x is None and allow_none:
        return None
    types = target_type if isinstance(target_type, tuple) else (target_type,)
    ok: tuple[type, ...] = ()
    if int in types:
        ok += (int, np.integer)
    if float in types:
        ok += (int, float, np.integer, np.floating)
    ok += tuple(t for t in types if t not in (int, float))
    ok += (np.bool_,) if bool in types else ()
    kind = describe(target_type, min_val, max_val, include_boundaries) \
        + (" or None" if allow_none else "")
    if (isinstance(x, (bool, np.bool_)) and bool not in types) or not isinstance(x, ok):
        raise TypeError(f"{name} must be {kind}; got {type(x).__name__} {x!r}")
    if isinstance(x, (np.integer, np.floating, np.bool_)):
        x = x.item()
    if float in types and int not in types:
        x = float(x) if not isinstance(x, int) or abs(x) < 2**1023 else math.inf
    if isinstance(x, float) and not math.isfinite(x):
        raise ValueError(f"{name} must be {kind} (finite); got {x}")
    lo_ok = min_val is None or (x >= min_val if include_boundaries in ("both", "left")
                                else x > min_val)
    hi_ok = max_val is None or (x <= max_val if include_boundaries in ("both", "right")
                                else x < max_val)
    if not (lo_ok and hi_ok):
        raise ValueError(f"{name} must be {kind}; got {x!r}")
    return x


def describe(target_type: type | tuple[type, ...], min_val: float | None = None,
             max_val: float | None = None, include_boundaries: str = "both") -> str:
    """What ``check_scalar`` wants, in words: "a positive int", "a number in (0, 1]"."""
    types = target_type if isinstance(target_type, tuple) else (target_type,)
    noun = "an int" if int in types and float not in types else "a number"
    if float not in types and int not in types:
        noun = " or ".join("True or False" if t is bool else t.__name__ for t in types)
    if max_val is None and min_val is not None:
        strict = include_boundaries in ("right", "neither")
        if min_val == 0 or (min_val == 1 and noun == "an int" and not strict):
            if strict or min_val == 1:
                return "a positive int" if noun == "an int" else "a positive number"
            return f"{noun} >= 0"
        return f"{noun} {'>' if strict else '>='} {min_val:g}"
    if min_val is None and max_val is None:
        return noun
    return f"{noun} in {interval(min_val, max_val, include_boundaries)}"


def interval(min_val: float | None, max_val: float | None, include_boundaries: str = "both"
             ) -> str:
    """``[1, inf)``, ``(0, 1]``, ...: the range ``check_scalar`` allows, as it says it."""
    left, right = _BOUNDS[include_boundaries]
    lo = "-inf" if min_val is None else f"{min_val:g}"
    hi = "inf" if max_val is None else f"{max_val:g}"
    return f"{'(' if min_val is None else left}{lo}, {hi}{')' if max_val is None else right}"


def int_arg(min_val: int | None = None, max_val: int | None = None) -> Callable[[str], int]:
    """An argparse ``type``: an integer in [min_val, max_val]. argparse names the flag."""
    return _arg(int, "an integer", min_val, max_val, "both")


def float_arg(min_val: float | None = None, max_val: float | None = None,
              include_boundaries: str = "both") -> Callable[[str], float]:
    """An argparse ``type``: a finite number in the given range. argparse names the flag."""
    return _arg(float, "a number", min_val, max_val, include_boundaries)


def _arg(kind: type, noun: str, min_val: float | None, max_val: float | None,
         include_boundaries: str) -> Callable[[str], Any]:
    def parse(s: str) -> Any:
        try:
            return check_scalar(kind(s), "value", kind, min_val=min_val, max_val=max_val,
                                include_boundaries=include_boundaries)
        except (ValueError, TypeError):
            want = describe(kind, min_val, max_val, include_boundaries)
            want = noun if want in ("an int", "a number") else want.replace(" int", " integer")
            raise argparse.ArgumentTypeError(f"expected {want}, got {s!r}") from None

    return parse


def positive_int(name: str, value: Any) -> int:
    return int(check_scalar(value, name, int, min_val=1))


def probability(name: str, value: Any, *, upper_open: bool = True) -> float:
    """A number in [0, 1) (or [0, 1] with ``upper_open=False``)."""
    return float(check_scalar(value, name, float, min_val=0, max_val=1,
                              include_boundaries="left" if upper_open else "both"))


positive_int_arg = int_arg(1)
nonneg_int_arg = int_arg(0)


def out_dir_arg(s: str) -> Path:
    """An argparse ``type``: a directory to write into, existing or creatable (its nearest
    existing ancestor is a writable directory), never a file. Nothing is created here."""
    p = Path(s)
    near = next((a for a in (p, *p.parents) if a.exists()), Path("."))
    if not near.is_dir():
        raise argparse.ArgumentTypeError(
            f"{s!r} is a file, not a directory" if near == p else
            f"cannot create directory {s!r}: {str(near)!r} is a file")
    if not os.access(near, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot write into {s!r}: {str(near)!r} is not "
                                         "writable; give another directory")
    return p


def array(name: str, a: Any, dtype: np.dtype, expected: str) -> Array:
    """``a`` must be an ndarray of the module's float dtype. ``expected`` describes its shape."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array of shape {expected}; got "
                        f"{type(a).__name__}. Convert it with np.asarray({name}, "
                        f"dtype=np.{dtype}).")
    if a.dtype != dtype:
        other = f", or build the module with dtype=np.{a.dtype}" if a.dtype.kind == "f" else ""
        raise TypeError(f"{name} must have dtype {dtype} (the module's dtype); got "
                        f"{a.dtype}. Use {name}.astype(np.{dtype}){other}.")
    return a


def shape(name: str, a: Array, want: tuple[int, ...], expected: str, hint: str = "") -> None:
    if a.shape != want:
        raise ValueError(f"{name} must have shape {expected} = {want}; got {a.shape}."
                         + (f" {hint}" if hint else ""))


def finite(name: str, a: Array, valid: Array | None = None) -> None:
    """No NaN or Inf in ``a`` where ``valid`` (broadcastable to ``a``; None: everywhere) is
    True. Pass ``a`` as the caller gave it, so the index in the message points into it."""
    bad = ~np.isfinite(a)
    if valid is not None:
        bad &= valid
    if bad.any():
        bad = np.argwhere(bad)[0]
        raise ValueError(f"{name} contains NaN or Inf (first at index {tuple(int(i) for i in bad)}"
                         f"); check the data or the previous layer's output")


def ids(name: str, ids: Any, vocab_size: int) -> Array:
    """Token ids: an integer array with every value in [0, vocab_size)."""
    if not isinstance(ids, np.ndarray):
        raise TypeError(f"{name} must be a NumPy integer array of token ids; got "
                        f"{type(ids).__name__}. Use np.asarray({name}, dtype=np.int64).")
    if ids.dtype == bool or ids.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer token ids; got dtype {ids.dtype}")
    if ids.size <= 4:                       # generation feeds one token at a time: skip
        ok = all(0 <= v < vocab_size for v in ids.flat)   # two reductions' call overhead
    else:
        ok = not ids.size or (ids.min() >= 0 and ids.max() < vocab_size)
    if not ok:
        bad = ids[(ids < 0) | (ids >= vocab_size)]
        raise ValueError(f"{name} must lie in [0, {vocab_size}) (the vocabulary size); got "
                         f"{np.unique(bad)[:10].tolist()}")
    return ids


def lengths(value: Any, T: int, B: int) -> Array | None:
    """``lengths``: None, or B integers in [1, T] in any order. Returns an int64 array."""
    if value is None:
        return None
    arr = np.asarray(value)
    if arr.dtype == bool or arr.dtype.kind not in "iu":
        whole = arr.dtype.kind == "f" and arr.size and np.all(arr == np.round(arr))
        hint = " Use lengths.astype(np.int64)." if whole else ""
        raise TypeError(f"lengths must be integers, one per sequence; got dtype {arr.dtype}."
                        + hint)
    if arr.shape != (B,):
        raise ValueError(f"lengths must have shape (B,) = ({B},), one length per sequence in "
                         f"the batch; got shape {arr.shape}")
    if arr.min() < 1 or arr.max() > T:
        bad = arr[(arr < 1) | (arr > T)]
        raise ValueError(f"lengths must lie in [1, T] = [1, {T}] (x has T={T} time steps); got "
                         f"{bad.tolist()}. Pad x to the longest sequence, and drop empty ones.")
    return arr.astype(np.int64)


def cache(value: Any, kind: type, owner: object, made_by: str, noun: str) -> None:
    """A backward's cache: of type ``kind`` (``made_by`` says where it comes from), and made
    by ``owner``'s own forward (caches record ``id(owner)``); ``noun`` names the owner."""
    if not isinstance(value, kind):
        raise TypeError(f"cache must be {made_by}; got {type(value).__name__}")
    if getattr(value, "owner", None) != id(owner):
        raise ValueError(f"this cache was made by another {noun}'s forward; pass the cache "
                         f"from this {noun}'s own forward call")
