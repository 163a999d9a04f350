"""The time loop, written once for every cell: one direction of one layer, forward and BPTT.

A direction owns its weights ``w_ih (G*H, D)``, ``w_hh (G*H, H)``, ``b_ih``, ``b_hh`` (each
``(G*H,)`` or None). Variable lengths follow PyTorch's packed sequences: the batch is sorted by
length (longest first) before it gets here, so at time step t the sequences still running are
the first ``batch_sizes[t]`` rows, a contiguous prefix. Rows past their length keep their state
and output zeros. The reverse direction walks t = T-1 ... 0, so each sequence starts at its own
last valid step from its own initial state.

Forward:   gx = x W_ih^T + bias                      one product for all T steps, (T, B, G*H)
           for t: h_t = step(gx_t, h_{t-1})          one product h W_hh^T per step
Backward:  for t reversed: dgates_t = step_back(...)  one product dgates W_hh per step
           dW_ih = dgx^T x, dW_hh = dgh^T h_prev      one product each, over all steps at once
           dx = dgx W_ih
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .functional import CellMath, Prepared, Stash
from .kernels import accelerate

Array = np.ndarray


@dataclass(frozen=True)
class OneHot:
    """Token ids standing for one-hot input vectors: ``x[t, b] = e(ids[t, b])``, of length
    ``size`` (the chapter's word vectors, section 4.1.2.4).

    The input projection of a one-hot vector is a row of ``W_ih^T``, so ``gx[t, b] =
    W_ih^T[ids[t, b]] + bias``: the same numbers as the product, with no (T, B, V) array and
    no product; its gradient is a scatter-add of ``dgx`` into the rows of ``dW_ih^T``. The
    input itself has no gradient.
    """

    ids: Array                    # (T, B) integers in [0, size)
    size: int

    @property
    def shape(self) -> tuple[int, ...]:
        return (*self.ids.shape, self.size)


def scatter_add_rows(ids: Array, rows: Array, num: int) -> Array:
    """``out[v] = sum of rows[k] over k with ids[k] == v``, out (num, G): sort, then sum runs."""
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    out = np.zeros((num, rows.shape[1]), rows.dtype)
    out[sorted_ids[starts]] = np.add.reduceat(rows[order], starts, axis=0)
    return out


@dataclass
class DirectionCache:
    """What one direction's backward needs: its input, its stash, and the step schedule."""

    x: Array | OneHot             # (T, B, D) the input this direction saw
    stash: Stash
    batch_sizes: Array | None     # (T,) rows active per step, or None when all B rows run
    weights: Prepared             # the weights in the internal layout the steps used


def _steps(T: int, reverse: bool) -> range:
    return range(T - 1, -1, -1) if reverse else range(T)


def direction_forward(
    kind: CellMath,
    x: Array | OneHot,
    h0: Array,
    c0: Array | None,
    w_ih: Array,
    w_hh: Array,
    b_ih: Array | None,
    b_hh: Array | None,
    out: Array,
    batch_sizes: Array | None = None,
    reverse: bool = False,
    keep: bool = True,
    c_out: Array | None = None,
) -> tuple[Array, Array | None, DirectionCache | None]:
    """Run one direction over all T steps; write h_t into ``out[t]`` (T, B, H), and the LSTM's
    c_t into ``c_out[t]`` if given.

    Returns ``(h_n, c_n, cache)``; ``cache`` is None when ``keep`` is False (inference: the
    stash then has one slot that every step reuses, so memory does not grow with T).
    """
    T, B, _ = x.shape
    H = w_hh.shape[1]
    dtype = w_hh.dtype
    kind = accelerate(kind, dtype)                   # float32: the fused step (kernels.py)
    p = kind.prepare(w_ih, w_hh, b_ih, b_hh)
    # gx = x W_ih^T + b_ih (+ the parts of b_hh that add to it): all steps in one product
    if isinstance(x, OneHot):
        gx = np.ascontiguousarray(p.w_x.T)[x.ids]                   # one-hot: a row lookup
    else:
        gx = np.matmul(x.reshape(T * B, -1), p.w_x.T).reshape(T, B, -1)  # (T, B, G*H)
    if p.bias is not None:
        gx += p.bias
    padded = batch_sizes is not None
    stash = kind.alloc(T if keep else 1, B, H, dtype, zero=padded and keep)
    stash.keep = keep
    ws = kind.workspace(B, H, dtype)
    h = h0.copy()
    c = c0.copy() if c0 is not None else None
    for t in _steps(T, reverse):
        n = B if batch_sizes is None else int(batch_sizes[t])
        if n == 0:
            continue
        slot = t if keep else 0
        hn = h[:n]
        if keep:                                     # only backward reads h_{t-1}
            stash.hprev[slot, :n] = hn
        kind.step(stash, slot, n, gx[t, :n], hn, None if c is None else c[:n], p, ws)
        out[t, :n] = hn
        if c_out is not None and c is not None:
            c_out[t, :n] = c[:n]
    cache = DirectionCache(x, stash, batch_sizes, p) if keep else None
    return h, c, cache


def direction_backward(
    kind: CellMath,
    cache: DirectionCache,
    dout: Array | None,
    dh_n: Array,
    dc_n: Array | None,
    grads: tuple[Array, Array, Array | None, Array | None],
    reverse: bool = False,
    dh_norms: Array | None = None,
) -> tuple[Array | None, Array, Array | None]:
    """BPTT through one direction. ``dout`` (T, B, H) is dL/dh_t from above (None: zero).

    Adds dW_ih, dW_hh, db_ih, db_hh into ``grads``; returns ``(dx, dh_0, dc_0)`` (dx is None
    for a ``OneHot`` input). ``dh_norms`` (T,), if given, receives ||dL/dh_t|| at every step:
    the whole gradient reaching h_t, from above and from step t+1 (the lab's vanishing plots).
    """
    x, stash, batch_sizes, p = cache.x, cache.stash, cache.batch_sizes, cache.weights
    T, B, D = x.shape
    GH, H = p.w_h_back.shape
    dtype = p.w_h_back.dtype
    kind = accelerate(kind, dtype)
    padded = batch_sizes is not None
    dgx = np.zeros((T, B, GH), dtype) if padded else np.empty((T, B, GH), dtype)
    dgh = (np.zeros_like(dgx) if padded else np.empty_like(dgx)) if kind.split_grad else dgx
    dh = dh_n.copy()
    dc = dc_n.copy() if dc_n is not None else None
    ws = kind.workspace(B, H, dtype)
    for t in _steps(T, not reverse):
        n = B if batch_sizes is None else int(batch_sizes[t])
        if n == 0:
            continue
        dhn = dh[:n]
        if dout is not None:
            dhn += dout[t, :n]
        if dh_norms is not None:
            dh_norms[t] = np.linalg.norm(dhn)
        kind.step_back(stash, t, n, dhn, None if dc is None else dc[:n], p, ws, dgx[t, :n],
                       dgh[t, :n])
    # the parameters are shared by all steps: their gradients are sums over t, one product each
    gW_ih, gW_hh, gb_ih, gb_hh = grads
    dgx2 = dgx.reshape(T * B, GH)
    dgh2 = dgh.reshape(T * B, GH)
    # (rows of dgx are in the internal gate order: p.to_torch_rows puts them back)
    if isinstance(x, OneHot):
        # gx = W_ih^T[ids]:  dW_ih^T[v] = sum of dgx over the steps that read row v
        gW_ih += p.to_torch_rows(scatter_add_rows(x.ids.reshape(-1), dgx2, D).T)
    else:
        gW_ih += p.to_torch_rows(dgx2.T @ x.reshape(T * B, D))     # dW_ih = sum_t dgx_t^T x_t
    gW_hh += p.to_torch_rows(dgh2.T @ stash.hprev.reshape(T * B, H))  # dW_hh = sum dgh^T h_t-1
    if gb_ih is not None:
        gb_ih += p.to_torch_rows(dgx2.sum(axis=0))
    if gb_hh is not None:
        gb_hh += p.to_torch_rows(dgh2.sum(axis=0))
    if isinstance(x, OneHot):
        return None, dh, dc
    dx = (dgx2 @ p.w_x_back).reshape(T, B, D)                      # dx_t = dgx_t W_ih
    return dx, dh, dc
