"""Finite-difference gradient checks: the first oracle for every hand-written backward.

    >>> m = rnnkit.LSTM(3, 4, num_layers=2, bidirectional=True, dtype=np.float64, rng=0)
    >>> x = np.random.default_rng(0).standard_normal((5, 2, 3))
    >>> print(rnnkit.gradcheck(m, x, lengths=[5, 3]))      # one line per input and parameter

The check builds a scalar loss from random projections of every output,
``L = sum(y * wy) + sum(h_n * wh) (+ sum(c_n * wc))``, runs ``backward`` once for the analytic
gradients, then nudges every element of every input, initial state and parameter by +-eps and
compares the central difference ``(L(+eps) - L(-eps)) / (2 eps)`` with the analytic value.
The error of each array is ``|a - n| / (|a| + |n|)`` in the 2-norm: about 1e-10 for a correct
float64 backward, around 1 for a wrong one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Array = np.ndarray


def numerical_gradient(loss: Callable[[], float], a: Array, eps: float = 1e-6) -> Array:
    """Central-difference gradient of ``loss()`` with respect to the array ``a``.

    ``a`` is nudged in place one element at a time and restored exactly afterwards.
    """
    grad = np.zeros(a.shape, np.float64)
    flat = a.reshape(-1)  # a view: a must be contiguous
    if not np.shares_memory(flat, a):
        raise ValueError("numerical_gradient needs a contiguous array to nudge in place")
    g = grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = loss()
        flat[i] = old - eps
        down = loss()
        flat[i] = old
        g[i] = (up - down) / (2 * eps)
    return grad


def relative_error(analytic: Array, numeric: Array) -> float:
    """``||a - n|| / (||a|| + ||n||)``, and 0 when both are exactly zero."""
    num = float(np.linalg.norm(np.asarray(analytic, np.float64) - numeric))
    den = float(np.linalg.norm(analytic) + np.linalg.norm(numeric))
    return 0.0 if den == 0.0 else num / den


@dataclass
class GradcheckResult:
    """Relative error per checked array; ``ok`` when all are below ``tol``."""

    errors: dict[str, float] = field(default_factory=dict)
    tol: float = 1e-7

    @property
    def ok(self) -> bool:
        return all(e < self.tol for e in self.errors.values())

    @property
    def worst(self) -> tuple[str, float]:
        return max(self.errors.items(), key=lambda kv: kv[1]) if self.errors else ("", 0.0)

    def __str__(self) -> str:
        width = max((len(k) for k in self.errors), default=4)
        lines = [f"{'array':<{width}}  relative error"]
        for name, err in self.errors.items():
            flag = "" if err < self.tol else "   <-- FAIL"
            lines.append(f"{name:<{width}}  {err:.2e}{flag}")
        verdict = "ok" if self.ok else "FAILED"
        lines.append(f"{verdict}: worst {self.worst[0]} {self.worst[1]:.2e} (tol {self.tol:g})")
        return "\n".join(lines)


class GradcheckError(AssertionError):
    pass


def check_gradients(loss: Callable[[], float], arrays: Mapping[str, Array],
                    analytic: Mapping[str, Array], eps: float = 1e-6, tol: float = 1e-7
                    ) -> GradcheckResult:
    """Compare ``analytic[name]`` with the central difference of ``loss()`` for every array.

    The generic core: ``loss`` must recompute the scalar loss from the current contents of
    ``arrays`` (which are nudged in place). Use it for any model with a backward.
    """
    result = GradcheckResult(tol=tol)
    for name, a in arrays.items():
        if a.dtype != np.float64:
            raise TypeError(f"gradient checks need float64 arrays; {name} is {a.dtype}. "
                            "Build the module with dtype=np.float64.")
        result.errors[name] = relative_error(analytic[name], numerical_gradient(loss, a, eps))
    return result


def _as_tuple(state: Any) -> tuple[Array, ...]:
    return tuple(state) if isinstance(state, (tuple, list)) else (state,)


def gradcheck(module: Any, x: Array, hx: Any = None, lengths: Any = None, *,
              eps: float = 1e-6, tol: float = 1e-7, seed: int = 0, params: bool = True,
              raise_on_failure: bool = False) -> GradcheckResult:
    """Check ``module.backward`` against finite differences for x, the initial states and
    (with ``params=True``) every parameter. Works for ``RNN``/``GRU``/``LSTM`` (``lengths``
    allowed) and for the single-step cells. The module must be float64.

    Dropout masks are held fixed by restoring the module's generator before every forward.
    Gradients already in ``module.grads`` are left as they were.
    """
    if getattr(module, "dtype", None) != np.float64:
        raise TypeError(f"gradcheck needs a float64 module; got dtype "
                        f"{getattr(module, 'dtype', None)}. Build it with dtype=np.float64.")
    is_cell = not hasattr(module, "num_layers")
    x = np.array(x, dtype=np.float64, copy=True)
    states = [np.array(s, dtype=np.float64, copy=True) for s in _as_tuple(hx)] \
        if hx is not None else None
    h0 = None if states is None else tuple(states) if len(states) == 2 else states[0]
    args = (x, h0) if is_cell else (x, h0, lengths)
    rng_state = module.rng.bit_generator.state

    def run(keep: bool) -> tuple[list[Array], Any]:
        """The outputs, flat (cell: h' (, c'); layer: y, h_n (, c_n)), and the cache."""
        module.rng.bit_generator.state = rng_state
        if keep:
            *out, cache = module.forward(*args)
        else:
            out, cache = ([module(*args)] if is_cell else list(module(*args))), None
        return [a for o in out for a in _as_tuple(o)], cache

    outs, cache = run(keep=True)
    proj = np.random.default_rng(seed)
    weights = [proj.standard_normal(o.shape) for o in outs]

    def loss() -> float:
        return float(sum(np.sum(o * w) for o, w in zip(run(keep=False)[0], weights,
                                                         strict=True)))

    saved = {k: g.copy() for k, g in module.grads.items()}
    module.zero_grad()
    try:
        if is_cell:
            dstate = weights[0] if len(weights) == 1 else tuple(weights)
            dx, dhx = module.backward(dstate, cache)
        else:
            dhn = weights[1] if len(weights) == 2 else tuple(weights[1:])
            dx, dhx = module.backward(weights[0], dhn, cache)
        analytic: dict[str, Array] = {"x": dx}
        arrays: dict[str, Array] = {"x": x}
        if states is not None:
            names = ["h0", "c0"] if len(states) == 2 else ["h0"]
            for name, s, d in zip(names, states, _as_tuple(dhx), strict=True):
                arrays[name], analytic[name] = s, d
        if params:
            grads = module.grads
            for name, p in module.named_parameters():
                arrays[name], analytic[name] = p, grads[name].copy()
        result = check_gradients(loss, arrays, analytic, eps, tol)
    finally:
        for k, g in module.grads.items():
            g[...] = saved[k]
        module.rng.bit_generator.state = rng_state
    if raise_on_failure and not result.ok:
        raise GradcheckError(str(result))
    return result
