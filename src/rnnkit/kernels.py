"""Fused float32 cell kernels: an accelerator for the step math of ``functional.py``.

``functional.py`` is the reference, written line by line beside the equations; every step
there is a dozen or more NumPy passes over (B, H)-sized arrays. Here each cell's step forward
and step backward is one compiled loop (numba) over the same arrays, with the same inputs and
outputs, so the time loop in ``scan.py`` calls them through the same protocol::

    kind = kernels.accelerate(kind, dtype)     # the fused twin where it applies, else kind

The matrix products stay NumPy's (BLAS). What the loops compute is what the reference does,
operation by operation in float32, except ``tanh``: NumPy's float32 ``tanh`` is within about
1.4 ulp of the true value; the one here (:func:`_tanh`, a rational approximation evaluated in
float64, then rounded) is within 0.51 ulp of it (measured over 9.6 million float32 values,
99.97 % of them correctly rounded). So an activation may differ from the reference by about
one unit in its last place, and everything computed from it by float32 rounding of that;
the PyTorch parity tests keep their float32 tolerance.

The loops themselves are in ``loops.py``, imported (with numba) on the first float32 step.
Where they apply: float32 arrays, numba installed (the ``[fast]`` extra), and the switch on.
float64 always runs the reference (PyTorch parity to 1e-10). The switch: the environment
variable ``RNNKIT_KERNELS=0`` before import, or ``kernels.enabled = False``, or::

    with kernels.reference():                  # the NumPy path, for debugging and tests
        ...

The kernels run on the calling thread only (plain loops, no numba thread pool beside BLAS's);
numba compiles each on first use and caches the machine code on disk (``cache=True``), so a
second process starts at once.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from .functional import CellMath, GRUMath, LSTMMath, Prepared, RNNMath, Stash

Array = np.ndarray

# numba is imported (and the loops compiled) on the first float32 step, not with rnnkit
available: bool = importlib.util.find_spec("numba") is not None
enabled: bool = available and os.environ.get("RNNKIT_KERNELS", "1") != "0"


@functools.cache
def loops() -> Any:
    """The module of compiled loops (``rnnkit.loops``), or None where numba fails to import."""
    global available, enabled
    try:
        from . import loops as module
    except ImportError:
        available = enabled = False
        return None
    return module


@contextlib.contextmanager
def reference() -> Iterator[None]:
    """Run the NumPy reference path inside the block (kernels off), whatever the switch."""
    global enabled
    before, enabled = enabled, False
    try:
        yield
    finally:
        enabled = before


def accelerate(kind: CellMath, dtype: Any) -> CellMath:
    """The fused twin of ``kind`` for float32 when the kernels are on, else ``kind``."""
    if not (enabled and np.dtype(dtype) == np.float32) or isinstance(kind, _Fused):
        return kind
    if loops() is None:
        return kind
    if isinstance(kind, LSTMMath):
        return _LSTM
    if isinstance(kind, GRUMath):
        return _GRU
    if isinstance(kind, RNNMath):
        return _RNN_TANH if kind.nonlinearity == "tanh" else _RNN_RELU
    return kind


# ---------------------------------------------------------------------------------------------
# the fused twins: functional.py's protocol, each step one loop plus NumPy's matrix product
# ---------------------------------------------------------------------------------------------


class _Fused:
    """Marks a fused twin (``accelerate`` returns it as it is)."""


class FusedLSTMMath(_Fused, LSTMMath):
    """``LSTMMath`` with the elementwise work of a step (forward and backward) fused."""

    def step(self, s: Stash, t: int, n: int, gx: Array, h: Array, c: Array | None,
             p: Prepared, ws: dict[str, Array]) -> None:
        assert c is not None
        a = s.acts[t, :n]
        np.matmul(h, p.w_hT, out=a)
        cprev = s.extra["cprev"][t, :n] if s.keep else ws["h"][:n]   # unused when not keep
        loops().lstm_forward(a, gx, c, h, s.extra["tanhc"][t, :n], cprev, s.keep)

    def step_back(self, s: Stash, t: int, n: int, dh: Array, dc: Array | None,
                  p: Prepared, ws: dict[str, Array], dgx: Array, dgh: Array) -> None:
        assert dc is not None
        loops().lstm_backward(s.acts[t, :n], s.extra["tanhc"][t, :n], s.extra["cprev"][t, :n], dh,
                      dc, dgx)
        np.matmul(dgx, p.w_h_back, out=dh)


class FusedGRUMath(_Fused, GRUMath):
    """``GRUMath`` with the elementwise work of a step (forward and backward) fused."""

    def step(self, s: Stash, t: int, n: int, gx: Array, h: Array, c: Array | None,
             p: Prepared, ws: dict[str, Array]) -> None:
        a = s.acts[t, :n]
        np.matmul(h, p.w_hT, out=a)
        b_hn = p.b_hn if p.b_hn is not None else ws["rz"][0, : h.shape[1]]
        loops().gru_forward(a, gx, b_hn, p.b_hn is not None, s.extra["ghn"][t, :n], h)

    def step_back(self, s: Stash, t: int, n: int, dh: Array, dc: Array | None,
                  p: Prepared, ws: dict[str, Array], dgx: Array, dgh: Array) -> None:
        loops().gru_backward(s.acts[t, :n], s.extra["ghn"][t, :n], s.hprev[t, :n], dh, dgx, dgh)
        tmp = ws["h"][:n]
        np.matmul(dgh, p.w_h_back, out=tmp)
        dh += tmp


class FusedRNNMath(_Fused, RNNMath):
    """``RNNMath`` with the elementwise work of a step (forward and backward) fused. Its
    reference is only two or three passes: below SMALL elements (generation at B = 1) the
    cost of calling the compiled loop exceeds them, and the reference runs."""

    SMALL = 4096

    def step(self, s: Stash, t: int, n: int, gx: Array, h: Array, c: Array | None,
             p: Prepared, ws: dict[str, Array]) -> None:
        if h.size < self.SMALL:
            return RNNMath.step(self, s, t, n, gx, h, c, p, ws)
        a = s.acts[t, :n]
        np.matmul(h, p.w_hT, out=a)
        loops().rnn_forward(a, gx, h, self.nonlinearity == "relu")

    def step_back(self, s: Stash, t: int, n: int, dh: Array, dc: Array | None,
                  p: Prepared, ws: dict[str, Array], dgx: Array, dgh: Array) -> None:
        if dh.size < self.SMALL:
            return RNNMath.step_back(self, s, t, n, dh, dc, p, ws, dgx, dgh)
        loops().rnn_backward(s.acts[t, :n], dh, dgx, self.nonlinearity == "relu")
        np.matmul(dgx, p.w_h_back, out=dh)


_LSTM, _GRU = FusedLSTMMath(), FusedGRUMath()
_RNN_TANH, _RNN_RELU = FusedRNNMath("tanh"), FusedRNNMath("relu")
