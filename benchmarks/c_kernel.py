"""How much would a compiled, vectorized fused kernel buy? The LSTM step's forward elementwise
work in C (benchmarks/c_kernel/lstm_forward.c), against the NumPy passes rnnkit runs.

The C loops are built with ``gcc -O3 -ffast-math -march=native -fopenmp-simd``: glibc's vector
math library (libmvec, glibc >= 2.35) supplies SIMD ``tanhf`` (8 and 16 lanes), which numba's
loops did not get (``numba_kernel.py``). Compiled at run time into a temporary directory and
called through ctypes; needs gcc. Not part of rnnkit: an upper bound for the lever.

    python benchmarks/c_kernel.py

Result on this project's machine (2026-11-27, quiet, one run; each call also resets two input
arrays, the same cost on both sides): H=128 64.9 vs 33.0 µs (2.0x), H=256 116.3 vs 58.6
(2.0x), H=512 252.2 vs 147.7 (1.7x); max difference 2.4e-7. Inside a whole training step
the gain is smaller (c_kernel_step.py: 3-30 %).
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

SOURCE = Path(__file__).with_name("c_kernel") / "lstm_forward.c"


def build(tmp: Path) -> Any:
    if shutil.which("gcc") is None:
        raise SystemExit("this experiment needs gcc")
    lib = tmp / "lstm_forward.so"
    subprocess.run(["gcc", "-O3", "-ffast-math", "-march=native", "-fopenmp-simd", "-shared",
                    "-fPIC", "-o", str(lib), str(SOURCE), "-lm"], check=True)
    so = ctypes.CDLL(str(lib))
    for fn in (so.lstm_fwd, so.lstm_bwd):
        fn.argtypes = [ctypes.c_void_p] * 6 + [ctypes.c_long] * 2
    return so


def numpy_forward(a: Any, gx: Any, c: Any, cprev: Any, tanhc: Any, h: Any, tmp: Any) -> None:
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


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        so = build(Path(d))

        def c_forward(a: Any, gx: Any, c: Any, cprev: Any, tanhc: Any, h: Any, tmp: Any) -> None:
            so.lstm_fwd(a.ctypes.data, gx.ctypes.data, c.ctypes.data, cprev.ctypes.data,
                        tanhc.ctypes.data, h.ctypes.data, a.shape[0], h.shape[1])

        B = 64
        print("LSTM forward elementwise, B=64, float32, µs per step (reset of inputs included)")
        for H in (128, 256, 512):
            rng = np.random.default_rng(0)
            a0 = rng.standard_normal((B, 4 * H)).astype(np.float32)
            gx = rng.standard_normal((B, 4 * H)).astype(np.float32)
            c0 = rng.standard_normal((B, H)).astype(np.float32)
            us, outs = {}, {}
            for name, fn in (("numpy", numpy_forward), ("C", c_forward)):
                bufs = [a0.copy(), gx, c0.copy()] + [np.empty((B, H), np.float32)
                                                     for _ in range(4)]

                def call(fn: Any = fn, bufs: list[Any] = bufs, a0: Any = a0, c0: Any = c0
                         ) -> None:
                    bufs[0][...] = a0
                    bufs[2][...] = c0
                    fn(*bufs)

                call()
                outs[name] = [b.copy() for b in bufs[:6]]
                for _ in range(300):
                    call()
                t = time.perf_counter()
                for _ in range(3000):
                    call()
                us[name] = (time.perf_counter() - t) / 3000 * 1e6
            diff = max(float(np.abs(x - y).max())
                       for x, y in zip(outs["numpy"], outs["C"], strict=True))
            print(f"H={H:>4}: numpy {us['numpy']:7.1f} | C {us['C']:7.1f} | "
                  f"{us['numpy'] / us['C']:.1f}x | max diff {diff:.1e}")


if __name__ == "__main__":
    main()
