"""Achieved GFLOPS of the LSTM layer training step, rnnkit and PyTorch, against the machine's
measured matrix-product peak.

Peak: ``np.matmul`` of two float32 N x N matrices (2 N^3 flops), best of a few, for N = 2048,
3072 and 4096; the best is the peak the goal refers to. ``torch.mm`` (MKL) is measured the same
way and every rate is also given as a fraction of its best, since on some CPUs it is the
higher of the two.

Then the LSTM layer training step (forward + backward, dy = 1, dx computed) at H = 512, B = 64,
T = 64, D = 512, float32, timed as in layers.py (same process, alternating blocks, pauses,
medians). Only the matrix products are counted, G = 4 gate blocks:

    forward   2 T B D (4H)   input projection  x W_ih^T       (all steps)
            + 2 T B H (4H)   recurrent         h_{t-1} W_hh^T (per step)
    backward  the same two products three ways: dx (dgates W_ih), dh (dgates W_hh), and the
              weight gradients dW_ih (dgates^T x), dW_hh (dgates^T h) -> 2 x forward
    total     3 x forward = 6 T B (D + H) (4H)

(elementwise gate math is not counted: at H = 512 it is under 1 % of the flops).

    python benchmarks/gflops.py                     # ~1 min
    python benchmarks/gflops.py --quick             # H = 128, T = 16, small matrices
"""

from __future__ import annotations

import argparse
import statistics
import time

import _harness as hx
import numpy as np
import torch
from layers import make_pair


def peak_gflops(n: int, repeats: int, lib: str) -> float:
    """Best GFLOPS of an n x n float32 matrix product over ``repeats`` timed products."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(np.float32)
    b = rng.standard_normal((n, n)).astype(np.float32)
    out = np.empty_like(a)
    if lib == "torch":
        at, bt, ot = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(out)

        def mm() -> None:
            torch.mm(at, bt, out=ot)
    else:
        def mm() -> None:
            np.matmul(a, b, out=out)
    mm()                                                      # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        mm()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=64, help="T")
    ap.add_argument("--sizes", nargs="+", type=int, default=[2048, 3072, 4096],
                    help="N of the square matrix products for the peak")
    ap.add_argument("--repeats", type=int, default=5, help="timed products per size (best)")
    hx.add_common_args(ap, rounds=5, block=1.0, pause=0.5)
    args = ap.parse_args()
    if args.quick:
        args.hidden, args.steps, args.sizes, args.repeats = 128, 16, [512, 1024], 3
        args.rounds, args.block, args.pause = 2, 0.1, 0.3
    torch.set_num_threads(args.threads)
    env = hx.environment(args.threads)
    H, B, T = args.hidden, args.batch, args.steps
    D = H

    print(f"matrix-product peak, float32, best of {args.repeats} "
          f"(numpy {env['numpy']}, torch {env['torch']} with {args.threads} threads):")
    peaks: dict[str, dict[int, float]] = {"numpy": {}, "torch": {}}
    table = hx.Table(["N", "np.matmul GFLOPS", "torch.mm GFLOPS"], width=6)
    for n in args.sizes:
        for lib in ("numpy", "torch"):
            time.sleep(args.pause)
            peaks[lib][n] = peak_gflops(n, args.repeats, lib)
        table.row([n, peaks["numpy"][n], peaks["torch"][n]])
    peak = max(peaks["numpy"].values())
    tpeak = max(peaks["torch"].values())
    print(f"peak = {peak:.1f} GFLOPS (np.matmul, best over N; the goal's reference); "
          f"torch.mm best = {tpeak:.1f} GFLOPS")

    m, tm, x, xt = make_pair("lstm", H, T, B)
    dy = np.ones((T, B, H), np.float32)
    dyt = torch.ones(T, B, H)

    def np_train() -> None:
        _, _, cache = m.forward(x)
        m.backward(dy, None, cache)

    def t_train() -> None:
        xt.grad = None
        y, _ = tm(xt)
        y.backward(dyt)

    forward = 2 * T * B * D * 4 * H + 2 * T * B * H * 4 * H
    flops = 3 * forward
    print(f"\nLSTM training step H={H}, B={B}, T={T}, D={D}: flops = 3 x (2 T B D 4H + "
          f"2 T B H 4H) = 6 T B (D + H) 4H = {flops / 1e9:.2f} GFLOP per step "
          f"| {args.rounds} rounds, ~{args.block}s blocks, {args.pause}s pauses; medians")
    time.sleep(args.pause)
    r = hx.compare(np_train, t_train, rounds=args.rounds, pause=args.pause, block=args.block)
    table = hx.Table(["library", "ms/step", "GFLOPS", "% of np peak", "% of torch.mm peak"],
                     width=8)
    out = {}
    for name in ("rnnkit", "torch"):
        s = r[name]["median_s"]
        gf = flops / s / 1e9
        out[name] = {"ms_per_step": 1e3 * s, "gflops": gf, "fraction_of_peak": gf / peak,
                     "fraction_of_torch_mm_peak": gf / tpeak}
        table.row([name, 1e3 * s, gf, f"{100 * gf / peak:.1f} %", f"{100 * gf / tpeak:.1f} %"])
    print(f"ratio rnnkit/torch {r['ratio']:.2f}x; goal: rnnkit >= 80 % of peak")

    # the same matrix products alone, in NumPy, with the step's shapes: what a NumPy
    # implementation that makes these products would take with free gate math (the rest of
    # rnnkit's step is the elementwise work and the Python loop around it)
    rng = np.random.default_rng(2)
    G = 4 * H
    w_ihT = rng.standard_normal((D, G)).astype(np.float32)
    w_hhT = rng.standard_normal((H, G)).astype(np.float32)
    w_hh = np.ascontiguousarray(w_hhT.T)
    w_ih = np.ascontiguousarray(w_ihT.T)
    x2 = x.reshape(T * B, D)
    gx = np.empty((T * B, G), np.float32)
    gh = np.empty((B, G), np.float32)
    dh = np.empty((B, H), np.float32)
    h = rng.standard_normal((T, B, H)).astype(np.float32)
    dg = rng.standard_normal((T, B, G)).astype(np.float32)

    def per_step() -> None:
        for t in range(T):
            np.matmul(h[t], w_hhT, out=gh)                  # recurrent, per step
        for t in range(T):
            np.matmul(dg[t], w_hh, out=dh)                  # dh_{t-1} = dgates W_hh, per step

    def large() -> None:
        np.matmul(x2, w_ihT, out=gx)                        # input projection, all steps
        _ = dg.reshape(T * B, G).T @ x2                     # dW_ih
        _ = dg.reshape(T * B, G).T @ h.reshape(T * B, H)    # dW_hh
        _ = dg.reshape(T * B, G) @ w_ih                     # dx

    def products() -> None:
        large()
        per_step()

    time.sleep(args.pause)
    n = hx.calibrate(products, args.block)
    ts = hx.alternate({"products": products}, {"products": n}, args.rounds, args.pause)
    s = statistics.median(ts["products"])
    parts = {}
    for name, fn, fl in (("per_step", per_step, 2 * 2 * T * B * H * G),
                         ("large", large, 3 * 2 * T * B * D * G + 2 * T * B * H * G)):
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        parts[name] = {"ms": 1e3 * best, "gflop": fl / 1e9, "gflops": fl / best / 1e9}
    print(f"the step's matrix products alone in NumPy (median): {1e3 * s:.1f} ms = "
          f"{flops / s / 1e9:.1f} GFLOPS ({100 * flops / s / 1e9 / peak:.1f} % of np peak)\n"
          f"  {2 * T} per-step products ({B} x {H}) @ ({H} x {G}), {parts['per_step']['gflop']:.1f}"
          f" GFLOP: {parts['per_step']['ms']:.1f} ms = {parts['per_step']['gflops']:.1f} GFLOPS "
          f"(best of 3)\n"
          f"  4 products over all steps (x W_ih^T, dW_ih, dW_hh, dx), "
          f"{parts['large']['gflop']:.1f} GFLOP: {parts['large']['ms']:.1f} ms = "
          f"{parts['large']['gflops']:.1f} GFLOPS (best of 3)")
    out["numpy_products_only"] = {"ms_per_step": 1e3 * s, "gflops": flops / s / 1e9,
                                  "fraction_of_peak": flops / s / 1e9 / peak, **parts}
    hx.write_json("gflops", {
        "env": env, "args": vars(args),
        "peak_gflops": {lib: {str(n): v for n, v in d.items()} for lib, d in peaks.items()},
        "peak": peak, "torch_mm_peak": tpeak, "flop_formula": "3 * (2*T*B*D*4H + 2*T*B*H*4H)",
        "flops_per_step": flops,
        **out, "ratio": r["ratio"], "timing": r}, args.quick)


if __name__ == "__main__":
    main()
