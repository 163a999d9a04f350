"""Layer throughput, rnnkit against PyTorch: training step and inference of RNN(tanh), GRU and
LSTM layers (1 layer, input size D = H, float32), in tokens/s (T*B tokens per call).

    training step   rnnkit: y, hn, cache = m.forward(x); m.backward(dy, None, cache)  (dy = 1)
                    torch:  y, hn = tm(x); y.backward(dy)   (x.requires_grad: dx is computed too)
    inference       rnnkit: y, hn = m(x)       torch: with torch.no_grad(): y, hn = tm(x)

Both layers hold the same weights (rnnkit's, copied into torch); before timing, y, dx and
dW_hh are checked to agree. Timing alternates blocks of calls of each library over several
rounds with pauses between them, in one process, and reports medians (see _harness.py).

    python benchmarks/layers.py                      # H 128/256/512, B=64, T=64 (~3 min)
    python benchmarks/layers.py --all                # H x B {32, 64} x T {64, 128} (~12 min)
    python benchmarks/layers.py --cells lstm --hidden 512 --batch 32 64 --steps 64
    python benchmarks/layers.py --quick              # H=128, B=32, T=64, 2 rounds
"""

from __future__ import annotations

import argparse
import itertools

import _harness as hx
import numpy as np
import torch

from rnnkit.recurrent import LAYERS


def make_pair(cell: str, H: int, T: int, B: int, seed: int = 0):
    """The rnnkit layer, its torch twin with the same weights, and the inputs of both."""
    ours = LAYERS[cell]
    theirs = getattr(torch.nn, ours.__name__)                  # the twin has the same name
    m = ours(H, H, 1, dtype=np.float32, rng=seed)
    tm = theirs(H, H, 1)
    tm.load_state_dict(hx.to_torch(m.state_dict()), strict=True)
    x = np.random.default_rng(seed + 1).standard_normal((T, B, H)).astype(np.float32)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    return m, tm, x, xt


def parity(m, tm, x: np.ndarray, xt: torch.Tensor) -> float:
    """Forward and backward agree to float32 precision; returns the largest difference."""
    y, _, cache = m.forward(x)
    dx, _ = m.backward(np.ones_like(y), None, cache)
    yt, _ = tm(xt)
    yt.backward(torch.ones_like(yt))
    d = max(hx.check_close("y", y, yt, 1e-4), hx.check_close("dx", dx, xt.grad, 1e-3),
            hx.check_close("dW_hh", m.grads["weight_hh_l0"], tm.weight_hh_l0.grad, 1e-3))
    m.zero_grad()
    tm.zero_grad(set_to_none=True)
    xt.grad = None
    return d


def bench(cell: str, H: int, B: int, T: int, args: argparse.Namespace) -> list[dict]:
    m, tm, x, xt = make_pair(cell, H, T, B)
    diff = parity(m, tm, x, xt)
    dy = np.ones((T, B, H), np.float32)
    dyt = torch.ones(T, B, H)

    def np_train() -> None:
        _, _, cache = m.forward(x)
        m.backward(dy, None, cache)

    def t_train() -> None:
        xt.grad = None                        # a fresh dx each call, as rnnkit returns one
        y, _ = tm(xt)
        y.backward(dyt)

    def np_infer() -> None:
        m(x)

    xi = xt.detach()

    def t_infer() -> None:
        with torch.no_grad():
            tm(xi)

    rows = []
    for mode, f_np, f_t in (("train", np_train, t_train), ("infer", np_infer, t_infer)):
        if mode not in args.modes:
            continue
        r = hx.compare(f_np, f_t, rounds=args.rounds, pause=args.pause, block=args.block,
                       reference_fn=hx.reference(f_np))
        tok = T * B
        rows.append({"cell": cell, "mode": mode, "H": H, "B": B, "T": T,
                     "rnnkit_tokens_per_s": tok / r["rnnkit"]["median_s"],
                     "torch_tokens_per_s": tok / r["torch"]["median_s"],
                     "ratio": r["ratio"], "max_abs_diff": diff, "timing": r,
                     "reference_ratio": r.get("reference_ratio"),
                     "kernel_speedup": r.get("kernel_speedup")})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cells", nargs="+", choices=list(LAYERS), default=list(LAYERS))
    ap.add_argument("--hidden", nargs="+", type=int, default=None, help="H (default 128 256 512)")
    ap.add_argument("--batch", nargs="+", type=int, default=None, help="B (default 64)")
    ap.add_argument("--steps", nargs="+", type=int, default=None, help="T (default 64)")
    ap.add_argument("--modes", nargs="+", choices=["train", "infer"], default=["train", "infer"])
    ap.add_argument("--all", action="store_true", help="the full grid: B {32, 64} x T {64, 128}")
    hx.add_common_args(ap)
    args = ap.parse_args()
    if args.quick:
        args.hidden, args.batch, args.steps = args.hidden or [128], args.batch or [32], \
            args.steps or [64]
        args.rounds, args.block, args.pause = 2, 0.1, 0.3
    args.hidden = args.hidden or [128, 256, 512]
    args.batch = args.batch or ([32, 64] if args.all else [64])
    args.steps = args.steps or ([64, 128] if args.all else [64])
    torch.set_num_threads(args.threads)
    env = hx.environment(args.threads)
    print(f"layers: 1 layer, D = H, float32 | {hx.describe(env)} | {args.rounds} rounds, "
          f"~{args.block}s blocks, {args.pause}s pauses; medians; ratio = rnnkit/torch "
          "throughput (> 1: rnnkit faster); ref ratio: the same with the kernels off; kernels: "
          "their speedup")
    header = ["cell", "mode", "H", "B", "T", "rnnkit tok/s", "torch tok/s", "ratio",
              "ref ratio", "kernels", "max diff"]
    table = hx.Table(header, width=5)
    rows: list[dict] = []
    for cell, H, B, T in itertools.product(args.cells, args.hidden, args.batch, args.steps):
        for r in bench(cell, H, B, T, args):
            rows.append(r)
            table.row([r["cell"], r["mode"], H, B, T, r["rnnkit_tokens_per_s"],
                       r["torch_tokens_per_s"], f"{r['ratio']:.2f}x", _x(r["reference_ratio"]),
                       _x(r["kernel_speedup"]), f"{r['max_abs_diff']:.1e}"])
    hx.write_json("layers", {"env": env, "args": vars(args), "rows": rows}, args.quick)


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


if __name__ == "__main__":
    main()
