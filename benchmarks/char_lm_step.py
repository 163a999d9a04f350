"""The end-to-end character language model training step, rnnkit against PyTorch.

    ids (T, B) -> embedding 65 -> 64 -> 2 x 256 LSTM -> linear 256 -> 65 -> cross-entropy
               -> backward -> clip the global gradient norm at 5 -> Adam step (lr 2e-3)

B = 64, T = 64, float32, a fixed batch of random ids, zero initial state every step. The torch
model starts from rnnkit's initial weights; before timing, one forward and backward of each is
checked to give the same loss, logits and gradients. Timing alternates blocks of steps of each
library over several rounds with pauses between them, in one process, and reports the medians
in ms/step and tokens/s (see _harness.py).

    python benchmarks/char_lm_step.py               # ~1 min
    python benchmarks/char_lm_step.py --quick       # smoke test: B=16, T=16, 2 rounds
"""

from __future__ import annotations

import argparse

import _harness as hx
import numpy as np
import torch

from rnnkit import optim
from rnnkit.layers import softmax_cross_entropy
from rnnkit.models import LanguageModel, LMConfig
from rnnkit.pytorch import to_torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=64, help="T, characters per sequence")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--lr", type=float, default=2e-3)
    hx.add_common_args(ap, rounds=7, block=1.0, pause=0.5)
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.block, args.pause = 2, 0.1, 0.3
        args.steps, args.batch = 16, 16
    torch.set_num_threads(args.threads)
    env = hx.environment(args.threads)
    T, B = args.steps, args.batch
    cfg = LMConfig(vocab_size=65, cell="lstm", embedding_dim=64, hidden_size=args.hidden,
                   num_layers=args.layers)
    model = LanguageModel(cfg, rng=0)
    tm = to_torch(model)                  # the same model in PyTorch, rnnkit's initial weights
    rng = np.random.default_rng(1)
    ids = rng.integers(0, cfg.vocab_size, (T + 1, B))
    x, y = ids[:-1], ids[1:]
    xt, yt = torch.from_numpy(x.copy()), torch.from_numpy(y.copy()).reshape(-1)

    # parity: one forward + backward of each, before any optimizer step
    logits, _, cache = model.forward(x)
    loss, dlogits, _ = softmax_cross_entropy(logits, y)
    model.zero_grad()
    model.backward(dlogits, cache)
    tlogits, _ = tm(xt)
    tloss = torch.nn.functional.cross_entropy(tlogits.reshape(-1, cfg.vocab_size), yt)
    tloss.backward()
    diff = max(hx.check_close("logits", logits, tlogits, 1e-4),
               hx.check_close("loss", loss, tloss, 1e-5))
    tgrads = dict(tm.named_parameters())
    for name, g in model.grads.items():
        diff = max(diff, hx.check_close(f"grad {name}", g, tgrads[name].grad, 1e-3))
    model.zero_grad()
    tm.zero_grad(set_to_none=True)

    opt = optim.Adam(model, lr=args.lr)
    topt = torch.optim.Adam(tm.parameters(), lr=args.lr)

    def np_step() -> None:
        logits, _, cache = model.forward(x)
        _, dlogits, _ = softmax_cross_entropy(logits, y)
        model.zero_grad()
        model.backward(dlogits, cache)
        optim.clip_grad_norm_(model, 5.0)
        opt.step()

    def t_step() -> None:
        topt.zero_grad()
        logits, _ = tm(xt)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, cfg.vocab_size), yt)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tm.parameters(), 5.0)
        topt.step()

    print(f"char LM training step: embedding {cfg.vocab_size} -> {cfg.embedding_dim} -> "
          f"{cfg.num_layers} x {cfg.hidden_size} LSTM -> linear {cfg.vocab_size} -> "
          f"cross-entropy -> backward -> clip 5 -> Adam, B={B}, T={T}, float32 | "
          f"{hx.describe(env)} | {args.rounds} rounds, ~{args.block}s blocks, {args.pause}s "
          f"pauses; parity max diff {diff:.1e}")
    r = hx.compare(np_step, t_step, rounds=args.rounds, pause=args.pause, block=args.block,
                   reference_fn=hx.reference(np_step))
    table = hx.Table(["library", "ms/step", "tokens/s", "min ms", "max ms"], width=8)
    for name in ("rnnkit", "torch", "reference"):
        if name not in r:
            continue
        t = r[name]
        table.row([name, 1e3 * t["median_s"], T * B / t["median_s"], 1e3 * t["min_s"],
                   1e3 * t["max_s"]])
    print(f"ratio rnnkit/torch (throughput, > 1: rnnkit faster): {r['ratio']:.2f}x  "
          f"(goal >= 1.0x)" + ("" if "reference" not in r else
                              f"; kernels off: {r['reference_ratio']:.2f}x; the kernels' "
                              f"speedup {r['kernel_speedup']:.2f}x"))
    hx.write_json("char_lm_step", {
        "env": env, "args": vars(args), "config": cfg.to_json(), "max_abs_diff": diff,
        "rnnkit_ms_per_step": 1e3 * r["rnnkit"]["median_s"],
        "torch_ms_per_step": 1e3 * r["torch"]["median_s"],
        "rnnkit_tokens_per_s": T * B / r["rnnkit"]["median_s"],
        "torch_tokens_per_s": T * B / r["torch"]["median_s"],
        "ratio": r["ratio"], "reference_ratio": r.get("reference_ratio"),
        "kernel_speedup": r.get("kernel_speedup"), "timing": r}, args.quick)


if __name__ == "__main__":
    main()
