"""The module base: named parameters, gradients that backward adds into, state dicts.

A module owns arrays, nothing else: no activations, no caches, no step counters. Names and
shapes follow PyTorch, so ``m.state_dict()`` loads into the PyTorch twin with
``load_state_dict(strict=True)`` and back without a transpose.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, NamedTuple

import numpy as np

Array = np.ndarray
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


@contextmanager
def eval_mode(*modules: Module) -> Iterator[None]:
    """Evaluation mode (dropout off) inside the block; each module's mode is restored after,
    whatever happens. The one place rnnkit switches modes for inference."""
    was = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, w in zip(modules, was, strict=True):
            m.train(w)


def check_dtype(dtype: Any) -> np.dtype:
    """Return ``np.dtype(dtype)`` if it is float32 or float64, else raise TypeError."""
    try:
        dt = np.dtype(dtype)
    except TypeError as e:
        raise TypeError(f"dtype must be np.float32 or np.float64; got {dtype!r}") from e
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be np.float32 or np.float64; got {dt}. "
                        "Use float32 for speed or float64 for gradient checks.")
    return dt


def check_rng(rng: Any) -> np.random.Generator:
    """``rng`` may be None (fresh entropy), an int seed, or a ``numpy.random.Generator``."""
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    if isinstance(rng, np.random.Generator):
        return rng
    raise TypeError(f"rng must be a numpy.random.Generator, an int seed or None; got "
                    f"{type(rng).__name__}. Use rng=np.random.default_rng(0).")


class IncompatibleKeys(NamedTuple):
    missing_keys: list[str]
    unexpected_keys: list[str]


class Module:
    """Base class: parameters in registration order, child modules, train/eval mode."""

    def __init__(self, dtype: Any = np.float32) -> None:
        object.__setattr__(self, "_params", {})
        object.__setattr__(self, "_grads", {})
        object.__setattr__(self, "_children", {})
        self.dtype = check_dtype(dtype)
        self.training = True

    # ---- registration ------------------------------------------------------------------
    def register_parameter(self, name: str, value: Array) -> None:
        self._params[name] = value
        self._grads[name] = np.zeros_like(value)

    def __getattr__(self, name: str) -> Any:
        # only called when normal lookup fails: parameters and children read as attributes
        for table in ("_params", "_children"):
            d = self.__dict__.get(table)
            if d is not None and name in d:
                return d[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.__dict__.get("_params", {}):
            raise AttributeError(f"{name} is a parameter; change it in place "
                                 f"(m.{name}[...] = new) or use load_state_dict")
        if isinstance(value, Module):
            self._children[name] = value
            return
        object.__setattr__(self, name, value)

    # ---- parameters and gradients ---------------------------------------------------------
    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Array]]:
        """(name, array) pairs, the live arrays (an optimizer updates them in place)."""
        for name, p in self._params.items():
            yield prefix + name, p
        for cname, child in self._children.items():
            yield from child.named_parameters(prefix + cname + ".")

    def parameters(self) -> list[Array]:
        return [p for _, p in self.named_parameters()]

    @property
    def grads(self) -> dict[str, Array]:
        """name -> gradient array, same keys and shapes as ``state_dict()``. Backward adds
        into these arrays; ``zero_grad()`` clears them."""
        out = dict(self._grads)
        for cname, child in self._children.items():
            out |= {f"{cname}.{k}": g for k, g in child.grads.items()}
        return out

    def zero_grad(self) -> None:
        for g in self.grads.values():
            g.fill(0)

    def num_parameters(self) -> int:
        return sum(p.size for p in self.parameters())

    # ---- modes ------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        """Training mode (dropout active). Returns the module, like PyTorch."""
        self.training = bool(mode)
        for child in self._children.values():
            child.train(mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    # ---- state dicts --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Array]:
        """name -> a copy of each parameter, in PyTorch's order."""
        return {name: p.copy() for name, p in self.named_parameters()}

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True
                        ) -> IncompatibleKeys:
        """Copy arrays (or anything ``np.asarray`` takes, e.g. CPU torch tensors) into the
        parameters, cast to the module's dtype (a value it cannot hold, e.g. 1e300 into
        float32, is refused). Everything is checked before anything is written: on any error
        the module is unchanged."""
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a mapping name -> array; got "
                            f"{type(state_dict).__name__}")
        own = dict(self.named_parameters())
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if strict and (missing or unexpected):
            parts = []
            if missing:
                parts.append(f"missing keys {missing}")
            if unexpected:
                parts.append(f"unexpected keys {unexpected}")
            raise ValueError(f"load_state_dict(strict=True) for {type(self).__name__}: "
                             + "; ".join(parts) + f". Expected exactly {list(own)}; "
                             "pass strict=False to load only the matching keys.")
        staged: list[tuple[Array, Array]] = []
        for name, p in own.items():
            if name not in state_dict:
                continue
            value = state_dict[name]
            try:
                arr = np.asarray(value)
            except Exception as e:  # e.g. a torch tensor that requires grad
                raise TypeError(f"state_dict[{name!r}] could not be read as an array "
                                f"({type(value).__name__}): {e}. Pass NumPy arrays "
                                "(for torch: tensor.detach().numpy()).") from e
            if arr.dtype.kind not in "fiu":
                raise TypeError(f"state_dict[{name!r}] must hold real numbers; got dtype "
                                f"{arr.dtype}")
            if arr.shape != p.shape:
                raise ValueError(f"state_dict[{name!r}] has shape {arr.shape}; expected "
                                 f"{p.shape}. Was it saved from a model with other sizes?")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"state_dict[{name!r}] contains NaN or Inf; refusing to "
                                 "load a broken model")
            with np.errstate(over="ignore"):
                cast = arr.astype(p.dtype)
            if not np.all(np.isfinite(cast)):
                big = arr.flat[np.abs(arr).argmax()]
                raise ValueError(f"state_dict[{name!r}] holds {big:g}, beyond what {p.dtype} "
                                 f"holds (at most {np.finfo(p.dtype).max:g} in magnitude); "
                                 "build the module with dtype=np.float64 to load it")
            staged.append((p, cast))
        for p, arr in staged:
            np.copyto(p, arr)
        return IncompatibleKeys(missing, unexpected)
