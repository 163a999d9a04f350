"""The per-step math of the recurrent cells, each forward beside its backward.

Shapes use letters declared once: T time steps, B batch rows, D input features, H hidden units,
G gate blocks (vanilla RNN 1, GRU 3, LSTM 4). Gate blocks are laid out as PyTorch lays them out:

    RNN   a = x W_ih^T + b_ih + h W_hh^T + b_hh              h' = tanh(a)   (or relu(a))
    GRU   r = sigmoid(x W_ir^T + b_ir + h W_hr^T + b_hr)
          z = sigmoid(x W_iz^T + b_iz + h W_hz^T + b_hz)
          n = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn))
          h' = (1 - z) * n + z * h
    LSTM  i, f, g, o = sigmoid, sigmoid, tanh, sigmoid of (x W_ih^T + b_ih + h W_hh^T + b_hh)
          c' = f * c + i * g
          h' = o * tanh(c')

The input projection ``gx = x W_ih^T + bias`` of all time steps is computed before the time
loop, in one matrix product (see ``scan.py``); a step here only adds the recurrent product
``h W_hh^T`` (one product for all gates) and applies the nonlinearities, in place, into
buffers the loop preallocated. A *stash* holds what the backward step needs, one slice per step.

Each cell kind is a small stateless object with the same protocol, so one time loop (and one
BPTT loop) drives all of them:

    kind.alloc(T, B, H, dtype, zero)  -> Stash with a (T, B, .) array per saved quantity
    kind.input_bias(b_ih, b_hh)       -> the bias folded into gx (or None)
    kind.step(s, t, n, gx_t, h, c, w_hh, b_hh)
        advance the running state h (and c) of the first n rows by one step, in place
        (the loop has already saved h into s.hprev[t])
    kind.step_back(s, t, n, dh, dc, w_hh, dgx, dgh)
        given dL/dh_t (and dL/dc_t) of those rows, write the gradient of the gate
        pre-activations into dgx (as seen by the input projection) and dgh (as seen by the
        recurrent projection; the same array except in the GRU), and replace dh, dc in place
        by dL/dh_{t-1}, dL/dc_{t-1}
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

Array = np.ndarray


# --------------------------------------------------------------------------------------------
# elementwise helpers (all in place, keep the dtype)
# --------------------------------------------------------------------------------------------


def sigmoid_(a: Array) -> Array:
    """sigmoid(a) = (1 + tanh(a / 2)) / 2, in place. Exact and free of overflow for any a."""
    a *= 0.5
    np.tanh(a, out=a)
    a *= 0.5
    a += 0.5
    return a


def sigmoid(a: Array) -> Array:
    """sigmoid(a) = 1 / (1 + exp(-a)), computed without overflow; returns a new array."""
    return sigmoid_(np.array(a, copy=True))


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
# the stash: what a step saves for its backward
# --------------------------------------------------------------------------------------------


@dataclass
class Stash:
    """Per-step saved values of one direction of one layer, each an array of shape (T, B, .).

    ``hprev[t]`` is the state a step started from; ``acts[t]`` the gate activations;
    ``extra`` holds kind-specific arrays (the GRU's ``h W_hn^T + b_hn``, the LSTM's ``c_{t-1}``
    and ``tanh(c_t)``). In inference mode T is 1 and every step reuses slot 0.
    """

    hprev: Array
    acts: Array
    extra: dict[str, Array] = field(default_factory=dict)


def _buffer(shape: tuple[int, ...], dtype: np.dtype, zero: bool) -> Array:
    return np.zeros(shape, dtype) if zero else np.empty(shape, dtype)


# --------------------------------------------------------------------------------------------
# vanilla RNN
# --------------------------------------------------------------------------------------------


class RNNMath:
    """h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh), or relu instead of tanh."""

    gates = 1
    has_cell = False
    split_grad = False  # dgx and dgh are the same array

    def __init__(self, nonlinearity: str = "tanh") -> None:
        self.nonlinearity = nonlinearity

    def alloc(self, T: int, B: int, H: int, dtype: np.dtype, zero: bool) -> Stash:
        # acts holds h' itself: both tanh and relu have derivatives written in terms of h'
        return Stash(_buffer((T, B, H), dtype, zero), _buffer((T, B, H), dtype, zero))

    def input_bias(self, b_ih: Array | None, b_hh: Array | None) -> Array | None:
        return _sum_biases(b_ih, b_hh)

    def step(self, s: Stash, t: int, n: int, gx: Array, h: Array, c: Array | None,
             w_hh: Array, b_hh: Array | None) -> None:
        a = s.acts[t, :n]                              # (n, H)
        np.matmul(h, w_hh.T, out=a)                    # a = h W_hh^T
        a += gx                                        #   + x W_ih^T + b_ih + b_hh
        if self.nonlinearity == "tanh":
            np.tanh(a, out=a)                          # h' = tanh(a)
        else:
            np.maximum(a, 0, out=a)                    # h' = relu(a)
        h[...] = a

    def step_back(self, s: Stash, t: int, n: int, dh: Array, dc: Array | None,
                  w_hh: Array, dgx: Array, dgh: Array) -> None:
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
        np.matmul(dgx, w_hh, out=dh)


# --------------------------------------------------------------------------------------------
# GRU
# --------------------------------------------------------------------------------------------


class GRUMath:
    """PyTorch's GRU: gate order r, z, n; ``b_hn`` sits inside the reset product."""

    gates = 3
    has_cell = False
    split_grad = True  # the n block: dgx = dn_pre, but dgh = dn_pre * r

    def alloc(self, T: int, B: int, H: int, dtype: np.dtype, zero: bool) -> Stash:
        return Stash(_buffer((T, B, H), dtype, zero), _buffer((T, B, 3 * H), dtype, zero),
                     {"ghn": _buffer((T, B, H), dtype, zero)})

    def input_bias(self, b_ih: Array | None, b_hh: Array | None) -> Array | None:
        # b_hr and b_hz fold into the input projection; b_hn cannot (it is multiplied by r)
        if b_hh is None:
            return None if b_ih is None else b_ih.copy()
        H = b_hh.shape[0] // 3
        bias = np.zeros_like(b_hh) if b_ih is None else b_ih.copy()
        bias[: 2 * H] += b_hh[: 2 * H]
        return bias

    def step(self, s: Stash, t: int, n: int, gx: Array, h: Array, c: Array | None,
             w_hh: Array, b_hh: Array | None) -> None:
        H = h.shape[1]
        a = s.acts[t, :n]                              # (n, 3H): r, z, n
        ghn = s.extra["ghn"][t, :n]                    # (n, H)
        np.matmul(h, w_hh.T, out=a)                    # [h W_hr^T, h W_hz^T, h W_hn^T]
        ghn[...] = a[:, 2 * H:]
        if b_hh is not None:
            ghn += b_hh[2 * H:]                        # ghn = h W_hn^T + b_hn
        rz = a[:, : 2 * H]
        rz += gx[:, : 2 * H]
        sigmoid_(rz)                                   # r, z = sigmoid(...)
        r, z, nn = a[:, :H], a[:, H: 2 * H], a[:, 2 * H:]
        np.multiply(r, ghn, out=nn)                    # r * (h W_hn^T + b_hn)
        nn += gx[:, 2 * H:]
        np.tanh(nn, out=nn)                            # n = tanh(x W_in^T + b_in + r * ghn)
        # h' = (1 - z) * n + z * h  =  n + z * (h - n)
        h -= nn
        h *= z
        h += nn

    def step_back(self, s: Stash, t: int, n: int, dh: Array, dc: Array | None,
                  w_hh: Array, dgx: Array, dgh: Array) -> None:
        H = dh.shape[1]
        a = s.acts[t, :n]
        r, z, nn = a[:, :H], a[:, H: 2 * H], a[:, 2 * H:]
        ghn = s.extra["ghn"][t, :n]
        hprev = s.hprev[t, :n]
        dar, daz, dan = dgx[:, :H], dgx[:, H: 2 * H], dgx[:, 2 * H:]
        # h' = (1 - z) * n + z * h
        np.subtract(hprev, nn, out=daz)
        daz *= dh                                      # dz = dh' * (h - n)
        np.subtract(1, z, out=dan)
        dan *= dh                                      # dn = dh' * (1 - z)
        dh *= z                                        # dh (direct path) = dh' * z
        # n = tanh(an)
        dan *= 1 - nn * nn                             # dan = dn * (1 - n^2)
        # an = x W_in^T + b_in + r * ghn
        np.multiply(dan, ghn, out=dar)                 # dr = dan * ghn
        # r, z = sigmoid(ar), sigmoid(az)
        dar *= r * (1 - r)
        daz *= z * (1 - z)
        # the recurrent projection sees r * ghn: its n block gets dan * r
        dgh[:, : 2 * H] = dgx[:, : 2 * H]
        np.multiply(dan, r, out=dgh[:, 2 * H:])
        # [ar, az, ghn] = h W_hh^T + ...:  dh += dgh W_hh
        dh += dgh @ w_hh


# --------------------------------------------------------------------------------------------
# LSTM
# --------------------------------------------------------------------------------------------


class LSTMMath:
    """PyTorch's LSTM: gate order i, f, g, o."""

    gates = 4
    has_cell = True
    split_grad = False

    def alloc(self, T: int, B: int, H: int, dtype: np.dtype, zero: bool) -> Stash:
        return Stash(_buffer((T, B, H), dtype, zero), _buffer((T, B, 4 * H), dtype, zero),
                     {"cprev": _buffer((T, B, H), dtype, zero),
                      "tanhc": _buffer((T, B, H), dtype, zero)})

    def input_bias(self, b_ih: Array | None, b_hh: Array | None) -> Array | None:
        return _sum_biases(b_ih, b_hh)

    def step(self, s: Stash, t: int, n: int, gx: Array, h: Array, c: Array | None,
             w_hh: Array, b_hh: Array | None) -> None:
        assert c is not None
        H = h.shape[1]
        a = s.acts[t, :n]                              # (n, 4H): i, f, g, o
        np.matmul(h, w_hh.T, out=a)                    # h W_hh^T
        a += gx                                        #   + x W_ih^T + b_ih + b_hh
        sigmoid_(a[:, : 2 * H])                        # i, f
        np.tanh(a[:, 2 * H: 3 * H], out=a[:, 2 * H: 3 * H])  # g
        sigmoid_(a[:, 3 * H:])                         # o
        i, f, g, o = a[:, :H], a[:, H: 2 * H], a[:, 2 * H: 3 * H], a[:, 3 * H:]
        s.extra["cprev"][t, :n] = c
        # c' = f * c + i * g
        c *= f
        c += i * g
        # h' = o * tanh(c')
        tc = s.extra["tanhc"][t, :n]
        np.tanh(c, out=tc)
        np.multiply(o, tc, out=h)

    def step_back(self, s: Stash, t: int, n: int, dh: Array, dc: Array | None,
                  w_hh: Array, dgx: Array, dgh: Array) -> None:
        assert dc is not None
        H = dh.shape[1]
        a = s.acts[t, :n]
        i, f, g, o = a[:, :H], a[:, H: 2 * H], a[:, 2 * H: 3 * H], a[:, 3 * H:]
        tc = s.extra["tanhc"][t, :n]
        cprev = s.extra["cprev"][t, :n]
        dai, daf, dag, dao = (dgx[:, :H], dgx[:, H: 2 * H], dgx[:, 2 * H: 3 * H],
                              dgx[:, 3 * H:])
        # h' = o * tanh(c')
        np.multiply(dh, tc, out=dao)                   # do = dh' * tanh(c')
        dh *= o
        dh *= 1 - tc * tc
        dc += dh                                       # dc' += dh' * o * (1 - tanh(c')^2)
        # c' = f * c + i * g
        np.multiply(dc, g, out=dai)                    # di = dc' * g
        np.multiply(dc, cprev, out=daf)                # df = dc' * c
        np.multiply(dc, i, out=dag)                    # dg = dc' * i
        dc *= f                                        # dc = dc' * f
        # i, f, o = sigmoid(.), g = tanh(.)
        dai *= i * (1 - i)
        daf *= f * (1 - f)
        dag *= 1 - g * g
        dao *= o * (1 - o)
        # gates = ... + h W_hh^T:  dh = dgates W_hh
        np.matmul(dgx, w_hh, out=dh)


def _sum_biases(b_ih: Array | None, b_hh: Array | None) -> Array | None:
    if b_ih is None:
        return None if b_hh is None else b_hh.copy()
    return b_ih.copy() if b_hh is None else b_ih + b_hh


CellMath = RNNMath | GRUMath | LSTMMath
