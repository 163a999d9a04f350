"""Input checks at the door: each error says what was expected, what was got, and how to fix it.

TypeError for the wrong kind of thing, ValueError for the wrong value. Nothing here mutates.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Array = np.ndarray


def positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a positive int; got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int; got {value}")
    return int(value)


def probability(name: str, value: Any, *, upper_open: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a number in [0, 1); got {type(value).__name__}")
    v = float(value)
    if not (0.0 <= v < 1.0 if upper_open else 0.0 <= v <= 1.0):
        raise ValueError(f"{name} must be in [0, 1{')' if upper_open else ']'}; got {value}")
    return v


def array(name: str, a: Any, dtype: np.dtype, expected: str) -> Array:
    """``a`` must be an ndarray of the module's float dtype. ``expected`` describes its shape."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array of shape {expected}; got "
                        f"{type(a).__name__}. Convert it with np.asarray({name}, "
                        f"dtype=np.{dtype}).")
    if a.dtype != dtype:
        if a.dtype.kind == "f":
            fix = (f"Use {name}.astype(np.{dtype}), or build the module with "
                   f"dtype=np.{a.dtype}.")
        else:
            fix = f"Use {name}.astype(np.{dtype})."
        raise TypeError(f"{name} must have dtype {dtype} (the module's dtype); got "
                        f"{a.dtype}. {fix}")
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


def lengths(value: Any, T: int, B: int) -> Array | None:
    """``lengths``: None, or B integers in [1, T] in any order. Returns an int64 array."""
    if value is None:
        return None
    arr = np.asarray(value)
    if arr.dtype == bool or arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and arr.size and np.all(arr == np.round(arr)):
            hint = " Use lengths.astype(np.int64)."
        else:
            hint = ""
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
