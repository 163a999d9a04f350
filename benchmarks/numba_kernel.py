"""Would a compiled, fused elementwise kernel beat NumPy's ufunc passes? An experiment with numba.

The LSTM step's elementwise work is ~22 NumPy passes forward (see functional.py); oneDNN fuses
them into one. This script writes the forward elementwise part of an LSTM step as ONE numba
loop and times it against the NumPy sequence rnnkit runs, plus the simplest case, a fused
``tanh(a + b)`` over a (64 x 512) block. Two tanh's are tried in the kernels: ``math.tanh``
(libm, scalar) and a rational approximation made only of + * / (vectorizable in principle;
|error| < 4e-7, float32 only).

Not a dependency of rnnkit: ``pip install numba`` first (0.68.1 was tried).

    python benchmarks/numba_kernel.py

Result on this project's machine (2026-11-27, one run on the quiet machine): the fused LSTM
kernel with libm tanh was 13-19x SLOWER than NumPy (1106 vs 84 µs at H=128, 4552 vs 248 at
H=512); with the rational tanh still 2-3x slower (170 vs 84 µs; 704 vs 248); the one-line
``tanh(a + b)`` kernel 5.7x slower (96.7 vs 16.9 µs). NumPy's tanh runs SIMD at ~0.5 ns per
element; numba's loops stay scalar here (~3 ns per element), so fusing the passes does not pay
unless the kernel is vectorized, which numba did not do for these loops on this machine.
"""

from __future__ import annotations

import math
import time

import numpy as np

try:
    from numba import njit
except ImportError:                         # pragma: no cover - an optional experiment
    raise SystemExit("this experiment needs numba: pip install numba") from None

_F = np.float32
A13, A11, A9, A7, A5, A3, A1 = (_F(-2.76076847742355e-16), _F(2.00018790482477e-13),
                                _F(-8.60467152213735e-11), _F(5.12229709037114e-08),
                                _F(1.48572235717979e-05), _F(6.37261928875436e-04),
                                _F(4.89352455891786e-03))
B6, B4, B2, B0 = (_F(1.19825839466702e-06), _F(1.18534705686654e-04), _F(2.26843463243900e-03),
                  _F(4.89352518554385e-03))
LIM = _F(7.90531110763549805)


@njit(fastmath=True, inline="always")
def tanh_rational(x):
    """tanh as a ratio of odd/even polynomials on [-7.9, 7.9] (float32 accuracy)."""
    x = min(max(x, -LIM), LIM)
    x2 = x * x
    p = ((((((A13 * x2 + A11) * x2 + A9) * x2 + A7) * x2 + A5) * x2 + A3) * x2 + A1) * x
    q = ((B6 * x2 + B4) * x2 + B2) * x2 + B0
    return p / q


def make_lstm_kernel(tanh):
    @njit(fastmath=True, boundscheck=False)
    def lstm_forward(a, gx, c, cprev, tanhc, h):
        """a (n, 4H) = h W_hh^T in rnnkit's internal layout (i, f, o halved, g): in place."""
        n, G = a.shape
        H = G // 4
        for b in range(n):
            for j in range(H):
                i = 0.5 * tanh(a[b, j] + gx[b, j]) + 0.5
                f = 0.5 * tanh(a[b, H + j] + gx[b, H + j]) + 0.5
                o = 0.5 * tanh(a[b, 2 * H + j] + gx[b, 2 * H + j]) + 0.5
                g = tanh(a[b, 3 * H + j] + gx[b, 3 * H + j])
                a[b, j], a[b, H + j], a[b, 2 * H + j], a[b, 3 * H + j] = i, f, o, g
                cp = c[b, j]
                cprev[b, j] = cp
                cn = f * cp + i * g
                c[b, j] = cn
                tc = tanh(cn)
                tanhc[b, j] = tc
                h[b, j] = o * tc

    return lstm_forward


def numpy_lstm_forward(a, gx, c, cprev, tanhc, h, tmp):
    """The passes of rnnkit.functional.LSTMMath.step after its matmul."""
    H = h.shape[1]
    a += gx
    np.tanh(a, out=a)
    ifo = a[:, : 3 * H]
    ifo *= 0.5
    ifo += 0.5
    i, f, o, g = a[:, :H], a[:, H: 2 * H], a[:, 2 * H: 3 * H], a[:, 3 * H:]
    cprev[...] = c
    c *= f
    np.multiply(i, g, out=tmp)
    c += tmp
    np.tanh(c, out=tanhc)
    np.multiply(o, tanhc, out=h)


def per_call_us(fn, reps: int = 2000) -> float:
    for _ in range(reps // 10):
        fn()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps * 1e6


def bench_lstm(H: int, kernels: dict, B: int = 64) -> str:
    rng = np.random.default_rng(0)
    a0 = rng.standard_normal((B, 4 * H)).astype(np.float32)
    gx = rng.standard_normal((B, 4 * H)).astype(np.float32)
    c0 = rng.standard_normal((B, H)).astype(np.float32)
    bufs = [a0.copy(), gx, c0.copy()] + [np.empty((B, H), np.float32) for _ in range(3)]
    tmp = np.empty((B, H), np.float32)
    ref = [b.copy() for b in bufs]
    numpy_lstm_forward(*ref, tmp)
    row = [f"H={H:>4}"]
    for name, kernel in kernels.items():
        def call(kernel=kernel) -> None:
            bufs[0][...] = a0                      # the same inputs every call
            bufs[2][...] = c0
            if kernel is None:
                numpy_lstm_forward(*bufs, tmp)
            else:
                kernel(*bufs)

        call()
        err = max(float(np.abs(x - y).max()) for x, y in zip(bufs, ref, strict=True))
        row.append(f"{name} {per_call_us(call):7.1f} (max diff {err:.1e})")
    return " | ".join(row)


def main() -> None:
    kernels = {"numpy": None,
               "numba libm tanh": make_lstm_kernel(njit(inline="always")(lambda x: math.tanh(x))),
               "numba rational tanh": make_lstm_kernel(tanh_rational)}
    print("fused LSTM forward elementwise, B=64, float32, µs per step")
    for H in (128, 256, 512):
        print(bench_lstm(H, kernels))

    @njit(fastmath=True)
    def add_tanh(a, b, out):
        for k in range(a.size):
            out[k] = tanh_rational(a[k] + b[k])

    n = 64 * 512
    rng = np.random.default_rng(1)
    a, b = (rng.standard_normal(n).astype(np.float32) for _ in range(2))
    out = np.empty_like(a)
    add_tanh(a, b, out)

    def numpy_add_tanh() -> None:
        np.add(a, b, out=out)
        np.tanh(out, out=out)

    print(f"tanh(a + b) over {n} float32: numpy {per_call_us(numpy_add_tanh):.1f} µs, "
          f"numba rational {per_call_us(lambda: add_tanh(a, b, out)):.1f} µs")


if __name__ == "__main__":
    main()
