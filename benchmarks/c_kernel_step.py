"""The whole LSTM layer training step with the C kernels of c_kernel/lstm_forward.c in place of
the NumPy passes, against rnnkit as it is and PyTorch, in one process.

An experiment, not part of rnnkit: it builds the C file with gcc (``-O3 -ffast-math
-march=native -fopenmp-simd``; glibc's libmvec supplies SIMD ``tanhf``), and gives an
``rnnkit.LSTM`` a cell-math object whose ``step`` / ``step_back`` call the kernels through
ctypes around the same per-step products. Outputs and gradients are checked against the NumPy
path first. Tells whether the lever measured in c_kernel.py survives inside a real step.

    python benchmarks/c_kernel_step.py                  # H 128, 256, 512; B=64, T=64, D=H

Result on this project's machine (2026-11-27, quiet, three runs): rnnkit's step 42.4 -> 29.6,
36.6 -> 32.6, 41.4 -> 31.7 ms at H=128; 103 -> 78, 93 -> 91, 99 -> 92 at H=256; 308 -> 274,
362 -> 351, 398 -> 366 at H=512; against PyTorch 0.59-0.71x, 0.77-1.15x, 0.79-0.84x with the
kernels. A 3-30 % gain; the per-step products are what is left at large H.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import _harness as hx
import numpy as np
import torch
from c_kernel import build

import rnnkit
from rnnkit.functional import LSTMMath


def kernel_math(so: Any) -> LSTMMath:
    """LSTMMath whose elementwise work runs in C (float32, rows contiguous: the layer's case)."""

    class CLSTMMath(LSTMMath):
        def step(self, s: Any, t: int, n: int, gx: Any, h: Any, c: Any, p: Any, ws: Any
                 ) -> None:
            a = s.acts[t, :n]
            np.matmul(h, p.w_hT, out=a)
            so.lstm_fwd(a.ctypes.data, gx.ctypes.data, c.ctypes.data,
                        s.extra["cprev"][t, :n].ctypes.data, s.extra["tanhc"][t, :n].ctypes.data,
                        h.ctypes.data, n, h.shape[1])

        def step_back(self, s: Any, t: int, n: int, dh: Any, dc: Any, p: Any, ws: Any,
                      dgx: Any, dgh: Any) -> None:
            so.lstm_bwd(s.acts[t, :n].ctypes.data, s.extra["tanhc"][t, :n].ctypes.data,
                        s.extra["cprev"][t, :n].ctypes.data, dh.ctypes.data, dc.ctypes.data,
                        dgx.ctypes.data, n, dh.shape[1])
            np.matmul(dgx, p.w_h_back, out=dh)

    return CLSTMMath()


def bench(so: Any, H: int, args: argparse.Namespace, B: int = 64, T: int = 64) -> str:
    m = rnnkit.LSTM(H, H, dtype=np.float32, rng=0)
    mc = rnnkit.LSTM(H, H, dtype=np.float32, rng=0)
    mc.math = kernel_math(so)
    tm = torch.nn.LSTM(H, H)
    tm.load_state_dict(hx.to_torch(m.state_dict()), strict=True)
    x = np.random.default_rng(1).standard_normal((T, B, H)).astype(np.float32)
    dy = np.ones((T, B, H), np.float32)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    dyt = torch.ones(T, B, H)
    # the kernels compute what the NumPy passes compute
    y1, _, c1 = m.forward(x)
    dx1, _ = m.backward(dy, None, c1)
    y2, _, c2 = mc.forward(x)
    dx2, _ = mc.backward(dy, None, c2)
    diff = max(hx.check_close("y", y1, y2, 1e-5), hx.check_close("dx", dx1, dx2, 1e-4),
               hx.check_close("dW_hh", m.grads["weight_hh_l0"], mc.grads["weight_hh_l0"], 1e-3))

    def run(mod: Any) -> Any:
        def call() -> None:
            _, _, cache = mod.forward(x)
            mod.backward(dy, None, cache)
        return call

    def t_train() -> None:
        xt.grad = None
        y, _ = tm(xt)
        y.backward(dyt)

    r_np = hx.compare(run(m), t_train, rounds=args.rounds, pause=args.pause, block=args.block)
    r_c = hx.compare(run(mc), t_train, rounds=args.rounds, pause=args.pause, block=args.block)
    return (f"H={H:>4}: rnnkit {1000 * r_np['rnnkit']['median_s']:7.1f} ms "
            f"({r_np['ratio']:.2f}x) | with C kernels {1000 * r_c['rnnkit']['median_s']:7.1f} ms "
            f"({r_c['ratio']:.2f}x) | torch {1000 * r_np['torch']['median_s']:7.1f} / "
            f"{1000 * r_c['torch']['median_s']:7.1f} ms | max diff {diff:.1e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hidden", nargs="+", type=int, default=[128, 256, 512])
    hx.add_common_args(ap, rounds=5, block=0.4, pause=0.4)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as d:
        so = build(Path(d))
        print("LSTM layer training step (forward + backward, dy = 1), B=64, T=64, D=H, float32;"
              " medians; ratio = torch time / rnnkit time (> 1: rnnkit faster)")
        for H in args.hidden:
            print(bench(so, H, args), flush=True)


if __name__ == "__main__":
    main()
