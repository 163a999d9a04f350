"""The per-step math of the recurrent cells, each forward beside its backward.

Shapes use letters declared once: T time steps, B batch rows, D input features, H hidden units,
G gate blocks (vanilla RNN 1, GRU 3, LSTM 4). The parameters are PyTorch's:

    RNN   a = x W_ih^T + b_ih + h W_hh^T + b_hh              h' = tanh(a)   (or relu(a))
    GRU   r = sigmoid(x W_ir^T + b_ir + h W_hr^T + b_hr)
          z = sigmoid(x W_iz^T + b_iz + h W_hz^T + b_hz)
          n = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn))
          h' = (1 - z) * n + z * h
    LSTM  i, f, g, o = sigmoid, sigmoid, tanh, sigmoid of (x W_ih^T + b_ih + h W_hh^T + b_hh)
          c' = f * c + i * g
          h' = o * tanh(c')

How a step is computed, for speed (see ``scan.py`` for the loop around it):

* the input projection ``gx = x W_ih^T + bias`` of all T steps is one matrix product made
  before the time loop; a step adds the recurrent product ``h W_hh^T`` (one product for all
  gates, against a contiguous copy of ``W_hh^T``) and applies the nonlinearities in place, in
  buffers the loop preallocated;
* every sigmoid is ``sigmoid(a) = (1 + tanh(a / 2)) / 2`` with the 1/2 folded into the weights
  (``prepare``), and the LSTM's gate blocks are kept internally in the order i, f, o, g, so one
  ``tanh`` call covers all four gates and one multiply-add turns i, f, o into sigmoids;
* backward steps write the gates' gradients for all steps into one array, so that the weight
  gradients are one product each after the loop (rows put back into PyTorch's order there).

Each cell kind is a small stateless object with the same protocol, so one time loop (and one
BPTT loop) drives all of them:

    kind.prepare(w_ih, w_hh, b_ih, b_hh)  -> Prepared weights in the internal layout
    kind.alloc(T, B, H, dtype, zero)      -> Stash: a (T, B, .) array per saved quantity
    kind.workspace(B, H, dtype)           -> scratch buffers reused by every step
    kind.step(s, t, n, gx_t, h, c, p, ws)
        advance the running state h (and c) of the first n rows by one step, in place
        (the loop has already saved h into s.hprev[t])
    kind.step_back(s, t, n, dh, dc, p, ws, dgx, dgh)
        given dL/dh_t (and dL/dc_t) of those rows, write the gradient of the gate
        pre-activations into dgx (as seen by the input projection) and dgh (as seen by the
        recurrent projection; the same array except in the GRU), and replace dh, dc in place
        by dL/dh_{t-1}, dL/dc_{t-1}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import overload

import numpy as np

Array = np.ndarray


# --------------------------------------------------------------------------------------------
# elementwise helpers (keep the dtype)
# --------------------------------------------------------------------------------------------


@overload
def valid_mask(lengths: None, T: int) -> None: ...
@overload
def valid_mask(lengths: Array, T: int) -> Array: ...
def valid_mask(lengths: Array | None, T: int) -> Array | None:
    """(T, B) bool: True where step t < lengths[b], a real step and not padding; None for
    None (every step real). The one place the mask of valid steps is written."""
    if lengths is None:
        return None
    return np.arange(T)[:, None] < np.asarray(lengths)[None, :]


def softmax(logits: Array, axis: int = -1) -> Array:
    """softmax along ``axis``, shifted by the maximum so exp never overflows."""
    shifted = logits - logits.max(axis=axis, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=axis, keepdims=True)
    return shifted


def log_softmax(logits: Array, axis: int = -1) -> Array:
    """log(softmax(logits)) computed stably (log-sum-exp with the maximum shifted out)."""
    shifted = logits - logits.max(axis=axis, keepdims=True)
    shifted -= np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
    return shifted


# --------------------------------------------------------------------------------------------
# weights in the internal layout, the stash, the scratch space
# --------------------------------------------------------------------------------------------


@dataclass
class Prepared:
    """One direction's weights as the steps use them (rows in the kind's internal gate order).

    ``w_x`` (G*H, D) and ``bias`` (G*H,) make ``gx = x w_x^T + bias``; ``w_hT`` (H, G*H),
    contiguous, makes the step's ``h w_hT``. In those three the rows of sigmoid gates are
    halved. ``b_hn`` is the GRU's ``b_hn`` (it cannot fold into gx). For backward,
    ``w_x_back`` (G*H, D) and ``w_h_back`` (G*H, H) are the unscaled rows in the same order.
    ``order`` maps internal rows to PyTorch's (None when they agree).
    """

    w_x: Array
    bias: Array | None
    w_hT: Array
    b_hn: Array | None
    w_x_back: Array
    w_h_back: Array
    order: Array | None = None

    def to_torch_rows(self, a: Array) -> Array:
        """Rows (or entries) of a gradient in internal order -> PyTorch's gate order."""
        if self.order is None:
            return a
        out = np.empty_like(a)
        out[self.order] = a
        return out


def _prepare(w_ih: Array, w_hh: Array, bias: Array | None, order: Array | None,
             half_rows: int, b_hn: Array | None = None) -> Prepared:
    """Permute rows to the internal order and halve the first ``half_rows`` (the sigmoids)."""
    if order is not None:
        w_ih, w_hh = w_ih[order], w_hh[order]
        bias = None if bias is None else bias[order]
    w_x = w_ih.copy()
    w_h = w_hh.copy()
    if half_rows:
        w_x[:half_rows] *= 0.5
        w_h[:half_rows] *= 0.5
        if bias is not None:
            bias = bias.copy()
            bias[:half_rows] *= 0.5
    return Prepared(w_x, bias, np.ascontiguousarray(w_h.T), b_hn, w_ih, w_hh, order)


@dataclass
class Stash:
    """Per-step saved values of one direction of one layer, each an array of shape (T, B, .).

    ``hprev[t]`` is the state a step started from; ``acts[t]`` the gate activations (internal
    gate order); ``extra`` holds kind-specific arrays (the GRU's ``h W_hn^T + b_hn``, the
    LSTM's ``c_{t-1}`` and ``tanh(c_t)``). In inference mode T is 1, every step reuses slot 0
    and ``keep`` is False: what only backward reads (the LSTM's ``c_{t-1}``) is not stored.
    """

    hprev: Array
    acts: Array
    extra: dict[str, Array] = field(default_factory=dict)
    keep: bool = True          # False in inference: nothing only backward reads is written


def _buffer(shape: tuple[int, ...], dtype: np.dtype, zero: bool) -> Array:
    return np.zeros(shape, dtype) if zero else np.empty(shape, dtype)


def _sum_biases(b_ih: Array | None, b_hh: Array | None) -> Array | None:
    if b_ih is None:
        return None if b_hh is None else b_hh.copy()
    return b_ih.copy() if b_hh is None else b_ih + b_hh


# --------------------------------------------------------------------------------------------
# vanilla RNN
# --------------------------------------------------------------------------------------------


class RNNMath:
    """h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh), or relu instead of tanh."""

    gates = 1
    has_cell = False
    split_grad = False  # dgx and dgh are the same array

    def __init__(self, nonlinearity: str = "tanh") -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu'; got {nonlinearity!r}")
        self.nonlinearity = nonlinearity

    def prepare(self, w_ih: Array, w_hh: Array, b_ih: Array | None, b_hh: Array | None
                ) -> Prepared:
        return _prepare(w_ih, w_hh, _sum_biases(b_ih, b_hh), None, 0)

    def alloc(self, T: int, B: int, H: int, dtype: np.dtype, zero: bool) -> Stash:
        # acts holds h' itself: both tanh and relu have derivatives written in terms of h'
        return Stash(_buffer((T, B, H), dtype, zero), _buffer((T, B, H), dtype, zero))

    def workspace(self, B: int, H: int, dtype: np.dtype) -> dict[str, Array]:
        return {}

    def step(self, s: Stash, t: int, n: int, gx: Array, h: Array, c: Array | None,
             p: Prepared, ws: dict[str, Array]) -> None:
        a = s.acts[t, :n]                              # (n, H)
        np.matmul(h, p.w_hT, out=a)                    # a = h W_hh^T
        a += gx                                        #   + x W_ih^T + b_ih + b_hh
        if self.nonlinearity == "tanh":
            np.tanh(a, out=a)                          # h' = tanh(a)
        else:
            np.maximum(a, 0, out=a)                    # h' = relu(a)
        h[...] = a

    def step_back(self, s: Stash, t: int, n: int, dh: Array, dc: Array | None,
                  p: Prepared, ws: dict[str, Array], dgx: Array, dgh: Array) -> None:
        h1 = s.acts[t, :n]
        # h' = tanh(a):  da = dh' * (1 - h'^2)
        if self.nonlinearity == "tanh":
            np.multiply(h1, h1, out=dgx)
            np.subtract(1, dgx, out=dgx)
            dgx *= dh
        # h' = relu(a):  da = dh' * [h' > 0]
        else:
            np.multiply(dh, h1 > 0, out=dgx)
        # a = ... + h W_hh^T:  dh = da W_hh
        np.matmul(dgx, p.w_h_back, out=dh)


# --------------------------------------------------------------------------------------------
# GRU
# --------------------------------------------------------------------------------------------


class GRUMath:
    """PyTorch's GRU: gate order r, z, n; ``b_hn`` sits inside the reset product."""

    gates = 3
    has_cell = False
    split_grad = True  # the n block: dgx = dn_pre, but dgh = dn_pre * r

    def prepare(self, w_ih: Array, w_hh: Array, b_ih: Array | None, b_hh: Array | None
                ) -> Prepared:
        # b_hr and b_hz fold into the input projection; b_hn cannot (it is multiplied by r)
        H = w_hh.shape[1]
        bias, b_hn = b_ih, None
        if b_hh is not None:
            bias = np.zeros_like(b_hh) if b_ih is None else b_ih.copy()
            bias[: 2 * H] += b_hh[: 2 * H]
            b_hn = b_hh[2 * H:].copy()
        return _prepare(w_ih, w_hh, bias, None, 2 * H, b_hn)   # r, z are sigmoids

    def alloc(self, T: int, B: int, H: int, dtype: np.dtype, zero: bool) -> Stash:
        return Stash(_buffer((T, B, H), dtype, zero), _buffer((T, B, 3 * H), dtype, zero),
                     {"ghn": _buffer((T, B, H), dtype, zero)})

    def workspace(self, B: int, H: int, dtype: np.dtype) -> dict[str, Array]:
        return {"h": np.empty((B, H), dtype), "rz": np.empty((B, 2 * H), dtype)}

    def step(self, s: Stash, t: int, n: int, gx: Array, h: Array, c: Array | None,
             p: Prepared, ws: dict[str, Array]) -> None:
        H = h.shape[1]
        a = s.acts[t, :n]                              # (n, 3H): r, z, n
        ghn = s.extra["ghn"][t, :n]                    # (n, H)
        np.matmul(h, p.w_hT, out=a)                    # [h W_hr^T / 2, h W_hz^T / 2, h W_hn^T]
        if p.b_hn is not None:
            np.add(a[:, 2 * H:], p.b_hn, out=ghn)      # ghn = h W_hn^T + b_hn
        else:
            ghn[...] = a[:, 2 * H:]
        rz = a[:, : 2 * H]
        rz += gx[:, : 2 * H]
        np.tanh(rz, out=rz)                            # r, z = sigmoid(...)
        rz *= 0.5                                      #      = (1 + tanh(. / 2)) / 2
        rz += 0.5
        r, z, nn = a[:, :H], a[:, H: 2 * H], a[:, 2 * H:]
        np.multiply(r, ghn, out=nn)                    # r * (h W_hn^T + b_hn)
        nn += gx[:, 2 * H:]
        np.tanh(nn, out=nn)                            # n = tanh(x W_in^T + b_in + r * ghn)
        # h' = (1 - z) * n + z * h  =  n + z * (h - n)
        h -= nn
        h *= z
        h += nn

    def step_back(self, s: Stash, t: int, n: int, dh: Array, dc: Array | None,
                  p: Prepared, ws: dict[str, Array], dgx: Array, dgh: Array) -> None:
        H = dh.shape[1]
        a = s.acts[t, :n]
        r, z, nn = a[:, :H], a[:, H: 2 * H], a[:, 2 * H:]
        ghn = s.extra["ghn"][t, :n]
        hprev = s.hprev[t, :n]
        tmp = ws["h"][:n]
        dar, daz, dan = dgx[:, :H], dgx[:, H: 2 * H], dgx[:, 2 * H:]
        # h' = (1 - z) * n + z * h
        np.subtract(hprev, nn, out=daz)
        daz *= dh                                      # dz = dh' * (h - n)
        np.subtract(1, z, out=dan)
        dan *= dh                                      # dn = dh' * (1 - z)
        dh *= z                                        # dh (direct path) = dh' * z
        # n = tanh(an):  dan = dn * (1 - n^2)
        np.multiply(nn, nn, out=tmp)
        np.subtract(1, tmp, out=tmp)
        dan *= tmp
        # an = x W_in^T + b_in + r * ghn
        np.multiply(dan, ghn, out=dar)                 # dr = dan * ghn
        # r, z = sigmoid(ar), sigmoid(az):  da = d * s * (1 - s)
        rz, drz = a[:, : 2 * H], dgx[:, : 2 * H]
        t2 = ws["rz"][:n]
        np.subtract(1, rz, out=t2)
        t2 *= rz
        drz *= t2
        # the recurrent projection sees r * ghn: its n block gets dan * r
        dgh[:, : 2 * H] = drz
        np.multiply(dan, r, out=dgh[:, 2 * H:])
        # [ar, az, ghn] = h W_hh^T + ...:  dh += dgh W_hh
        np.matmul(dgh, p.w_h_back, out=tmp)
        dh += tmp


# --------------------------------------------------------------------------------------------
# LSTM
# --------------------------------------------------------------------------------------------


class LSTMMath:
    """PyTorch's LSTM: gate order i, f, g, o (internally i, f, o, g: the sigmoids first)."""

    gates = 4
    has_cell = True
    split_grad = False

    def prepare(self, w_ih: Array, w_hh: Array, b_ih: Array | None, b_hh: Array | None
                ) -> Prepared:
        H = w_hh.shape[1]
        order = np.r_[0: 2 * H, 3 * H: 4 * H, 2 * H: 3 * H]   # i, f, o, g
        return _prepare(w_ih, w_hh, _sum_biases(b_ih, b_hh), order, 3 * H)

    def alloc(self, T: int, B: int, H: int, dtype: np.dtype, zero: bool) -> Stash:
        return Stash(_buffer((T, B, H), dtype, zero), _buffer((T, B, 4 * H), dtype, zero),
                     {"cprev": _buffer((T, B, H), dtype, zero),
                      "tanhc": _buffer((T, B, H), dtype, zero)})

    def workspace(self, B: int, H: int, dtype: np.dtype) -> dict[str, Array]:
        return {"h": np.empty((B, H), dtype), "ifo": np.empty((B, 3 * H), dtype)}

    def step(self, s: Stash, t: int, n: int, gx: Array, h: Array, c: Array | None,
             p: Prepared, ws: dict[str, Array]) -> None:
        assert c is not None
        H = h.shape[1]
        a = s.acts[t, :n]                              # (n, 4H): i, f, o, g
        np.matmul(h, p.w_hT, out=a)                    # h W_hh^T      (i, f, o rows halved)
        a += gx                                        #   + x W_ih^T + b_ih + b_hh
        np.tanh(a, out=a)                              # g = tanh(.); tanh(. / 2) for i, f, o
        ifo = a[:, : 3 * H]
        ifo *= 0.5                                     # i, f, o = sigmoid(.)
        ifo += 0.5                                     #         = (1 + tanh(. / 2)) / 2
        i, f, o, g = a[:, :H], a[:, H: 2 * H], a[:, 2 * H: 3 * H], a[:, 3 * H:]
        if s.keep:                                     # only backward reads c_{t-1}
            s.extra["cprev"][t, :n] = c
        # c' = f * c + i * g
        c *= f
        ig = ws["h"][:n]
        np.multiply(i, g, out=ig)
        c += ig
        # h' = o * tanh(c')
        tc = s.extra["tanhc"][t, :n]
        np.tanh(c, out=tc)
        np.multiply(o, tc, out=h)

    def step_back(self, s: Stash, t: int, n: int, dh: Array, dc: Array | None,
                  p: Prepared, ws: dict[str, Array], dgx: Array, dgh: Array) -> None:
        assert dc is not None
        H = dh.shape[1]
        a = s.acts[t, :n]
        i, f, o, g = a[:, :H], a[:, H: 2 * H], a[:, 2 * H: 3 * H], a[:, 3 * H:]
        tc = s.extra["tanhc"][t, :n]
        cprev = s.extra["cprev"][t, :n]
        dai, daf, dao, dag = (dgx[:, :H], dgx[:, H: 2 * H], dgx[:, 2 * H: 3 * H],
                              dgx[:, 3 * H:])
        tmp = ws["h"][:n]
        # h' = o * tanh(c')
        np.multiply(dh, tc, out=dao)                   # do = dh' * tanh(c')
        np.multiply(tc, tc, out=tmp)
        np.subtract(1, tmp, out=tmp)
        tmp *= o
        tmp *= dh
        dc += tmp                                      # dc' += dh' * o * (1 - tanh(c')^2)
        # c' = f * c + i * g
        np.multiply(dc, g, out=dai)                    # di = dc' * g
        np.multiply(dc, cprev, out=daf)                # df = dc' * c
        np.multiply(dc, i, out=dag)                    # dg = dc' * i
        dc *= f                                        # dc = dc' * f
        # i, f, o = sigmoid(.):  da = d * s * (1 - s)
        ifo, difo = a[:, : 3 * H], dgx[:, : 3 * H]
        t3 = ws["ifo"][:n]
        np.subtract(1, ifo, out=t3)
        t3 *= ifo
        difo *= t3
        # g = tanh(.):  da = dg * (1 - g^2)
        np.multiply(g, g, out=tmp)
        np.subtract(1, tmp, out=tmp)
        dag *= tmp
        # gates = ... + h W_hh^T:  dh = dgates W_hh
        np.matmul(dgx, p.w_h_back, out=dh)


CellMath = RNNMath | GRUMath | LSTMMath
