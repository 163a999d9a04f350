"""The compiled loops behind ``kernels.py``: one numba loop per cell step, forward and backward.

Each is the elementwise work of the matching step in ``functional.py``, in the same order of
float32 operations, with the same inputs and outputs (read them side by side). Each takes
C-contiguous (n, .) arrays; a row's gate blocks are taken as 1-D slices, so the inner loop over
the H units vectorizes. Imported by ``kernels.loops()`` on the first float32 step; compiled on
first call, cached on disk.
"""

from __future__ import annotations

import numba
import numpy as np

Array = np.ndarray

_jit = numba.njit(cache=True, error_model="numpy", nogil=True, fastmath={"contract"})
_inline = numba.njit(inline="always", error_model="numpy", fastmath={"contract"})
F32, F64 = np.float32, np.float64

# tanh(x) = x P(x^2) / Q(x^2) on |x| <= 9.02 (beyond, tanh rounds to +-1 in float32): a
# least-squares rational fit, relative error 1.3e-10 in float64
P0, P1, P2, P3, P4, P5 = (0.9999999999871066, 0.14105792398165887, 0.004434719891060115,
                          4.249959173900054e-05, 1.1246984847928972e-07,
                          3.754830012438457e-11)
Q1, Q2, Q3, Q4, Q5 = (0.4743912570832239, 0.029231806060439968, 0.0005025208993766008,
                      2.6248195753638343e-06, 2.999044803793498e-09)


@_inline
def _tanh(x32: float) -> np.float32:
    x = F64(x32)
    x = F64(9.02) if x > 9.02 else (F64(-9.02) if x < -9.02 else x)   # NaN stays NaN
    t = x * x
    p = ((((P5 * t + P4) * t + P3) * t + P2) * t + P1) * t + P0
    q = ((((Q5 * t + Q4) * t + Q3) * t + Q2) * t + Q1) * t + 1.0
    return F32(x * p / q)


@_jit
def tanh_f32(x: Array, out: Array) -> None:
    """``out = tanh(x)`` over 1-D float32 arrays (for tests of the approximation)."""
    for k in range(x.size):
        out[k] = _tanh(x[k])


# ---- LSTM (internal gate order i, f, o, g; i, f, o pre-activations halved) ---------------
@_jit
def lstm_forward(a: Array, gx: Array, c: Array, h: Array, tanhc: Array, cprev: Array,
                 keep: bool) -> None:
    n, H = h.shape
    for b in range(n):
        ar, gr = a[b], gx[b]
        ai, af, ao, ag = ar[:H], ar[H:2 * H], ar[2 * H:3 * H], ar[3 * H:]
        xi, xf, xo, xg = gr[:H], gr[H:2 * H], gr[2 * H:3 * H], gr[3 * H:]
        cb, hb, tb, pb = c[b], h[b], tanhc[b], cprev[b]
        for j in range(H):
            i = F32(0.5) * _tanh(ai[j] + xi[j]) + F32(0.5)      # sigmoid = (1+tanh(x/2))/2
            f = F32(0.5) * _tanh(af[j] + xf[j]) + F32(0.5)
            o = F32(0.5) * _tanh(ao[j] + xo[j]) + F32(0.5)
            g = _tanh(ag[j] + xg[j])
            ai[j], af[j], ao[j], ag[j] = i, f, o, g
            cp = cb[j]
            if keep:
                pb[j] = cp
            cn = cp * f + i * g                                 # c' = f c + i g
            cb[j] = cn
            tc = _tanh(cn)
            tb[j] = tc
            hb[j] = o * tc                                      # h' = o tanh(c')


@_jit
def lstm_backward(a: Array, tanhc: Array, cprev: Array, dh: Array, dc: Array,
                  dgx: Array) -> None:
    n, H = dh.shape
    for b in range(n):
        ar, dr = a[b], dgx[b]
        ai, af, ao, ag = ar[:H], ar[H:2 * H], ar[2 * H:3 * H], ar[3 * H:]
        di, df, do, dg = dr[:H], dr[H:2 * H], dr[2 * H:3 * H], dr[3 * H:]
        tb, pb, dhb, dcb = tanhc[b], cprev[b], dh[b], dc[b]
        for j in range(H):
            i, f, o, g, tc, d = ai[j], af[j], ao[j], ag[j], tb[j], dhb[j]
            dov = d * tc                                        # do = dh' tanh(c')
            dcv = dcb[j] + (F32(1) - tc * tc) * o * d           # dc' += dh' o (1 - tanh^2)
            di[j] = dcv * g * ((F32(1) - i) * i)                # through the sigmoids
            df[j] = dcv * pb[j] * ((F32(1) - f) * f)
            do[j] = dov * ((F32(1) - o) * o)
            dg[j] = dcv * i * (F32(1) - g * g)                  # through tanh
            dcb[j] = dcv * f                                    # dc = dc' f


# ---- GRU (gate order r, z, n; r, z pre-activations halved) --------------------------------
@_jit
def gru_forward(a: Array, gx: Array, b_hn: Array, has_b_hn: bool, ghn: Array,
                h: Array) -> None:
    n, H = h.shape
    for b in range(n):
        ar, gr = a[b], gx[b]
        a_r, a_z, a_n = ar[:H], ar[H:2 * H], ar[2 * H:]
        x_r, x_z, x_n = gr[:H], gr[H:2 * H], gr[2 * H:]
        gb, hb = ghn[b], h[b]
        for j in range(H):
            gh = a_n[j] + b_hn[j] if has_b_hn else a_n[j]       # h W_hn^T + b_hn
            r = F32(0.5) * _tanh(a_r[j] + x_r[j]) + F32(0.5)
            z = F32(0.5) * _tanh(a_z[j] + x_z[j]) + F32(0.5)
            nn = _tanh(r * gh + x_n[j])                          # n = tanh(.. + r ghn)
            a_r[j], a_z[j], a_n[j], gb[j] = r, z, nn, gh
            hb[j] = (hb[j] - nn) * z + nn                        # h' = n + z (h - n)


@_jit
def gru_backward(a: Array, ghn: Array, hprev: Array, dh: Array, dgx: Array,
                 dgh: Array) -> None:
    n, H = dh.shape
    for b in range(n):
        ar, dr, hr = a[b], dgx[b], dgh[b]
        r_, z_, n_ = ar[:H], ar[H:2 * H], ar[2 * H:]
        dar, daz, dan = dr[:H], dr[H:2 * H], dr[2 * H:]
        hr_r, hr_z, hr_n = hr[:H], hr[H:2 * H], hr[2 * H:]
        gb, pb, dhb = ghn[b], hprev[b], dh[b]
        for j in range(H):
            r, z, nn, d = r_[j], z_[j], n_[j], dhb[j]
            dzv = (pb[j] - nn) * d * ((F32(1) - z) * z)          # dz, through sigmoid
            dnv = (F32(1) - z) * d * (F32(1) - nn * nn)          # dn, through tanh
            drv = dnv * gb[j] * ((F32(1) - r) * r)               # dr, through sigmoid
            dar[j], daz[j], dan[j] = drv, dzv, dnv
            hr_r[j], hr_z[j], hr_n[j] = drv, dzv, dnv * r        # the product sees r ghn
            dhb[j] = d * z                                       # the direct path


# ---- vanilla RNN -----------------------------------------------------------------------
@_jit
def rnn_forward(a: Array, gx: Array, h: Array, relu: bool) -> None:
    n, H = h.shape
    for b in range(n):
        ar, gr, hb = a[b], gx[b], h[b]
        for j in range(H):
            v = ar[j] + gr[j]
            v = (v if v > 0 or v != v else F32(0)) if relu else _tanh(v)
            ar[j] = v
            hb[j] = v


@_jit
def rnn_backward(a: Array, dh: Array, dgx: Array, relu: bool) -> None:
    n, H = dh.shape
    for b in range(n):
        ar, dhb, db = a[b], dh[b], dgx[b]
        for j in range(H):
            h1 = ar[j]
            db[j] = dhb[j] * (F32(1) if h1 > 0 else F32(0)) if relu else \
                dhb[j] * (F32(1) - h1 * h1)


