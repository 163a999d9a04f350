"""Train the identical character language model in rnnkit and in PyTorch, side by side.

Both start from the same initial weights (rnnkit's, copied into the PyTorch twin), see the same
batches in the same order (rnnkit's stream batcher), and use the same optimizer settings
(Adam, gradient clipping at global norm 5). They train in alternating blocks of
``--eval-every`` steps in one process, with a pause when switching libraries so their thread
pools do not fight over the cores; each block is timed alone. After every block both are
evaluated on the same held-out text. The script prints both validation curves against steps
and against training time, and the largest relative gap per step.

    python benchmarks/char_lm_vs_torch.py --minutes 10            # the issue's comparison
    python benchmarks/char_lm_vs_torch.py --steps 300 --eval-every 50

Requires the ``torch`` extra (torch==2.13.0).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from rnnkit import optim
from rnnkit.files import write_atomic, write_figure
from rnnkit.layers import softmax_cross_entropy
from rnnkit.models import LanguageModel
from rnnkit.pytorch import to_torch
from rnnkit.train import TrainConfig, evaluate, prepare_data


def detach(h: object) -> object:
    if isinstance(h, tuple):
        return tuple(x.detach() for x in h)
    return None if h is None else h.detach()  # type: ignore[union-attr]


def torch_eval(tm: torch.nn.Module, batches) -> float:
    tm.eval()
    total, count, h = 0.0, 0, None
    with torch.no_grad():
        for b in batches.epoch_batches():
            logits, h = tm(torch.from_numpy(b.x), h)
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), torch.from_numpy(b.y).reshape(-1),
                reduction="sum")
            total += float(loss)
            count += b.y.size
    tm.train()
    return total / count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=None, help="steps per library")
    ap.add_argument("--minutes", type=float, default=None, help="training minutes per library")
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/char_lm_vs_torch.json")
    args = ap.parse_args()
    if args.steps is None and args.minutes is None:
        args.steps = 500
    torch.set_num_threads(args.threads)

    cfg = TrainConfig(seed=args.seed)                # the README's default model and data
    data = prepare_data(cfg)
    mcfg = cfg.model_config(len(data.vocab))
    model = LanguageModel(mcfg, rng=np.random.default_rng(args.seed))
    tm = to_torch(model)                             # the PyTorch twin, rnnkit's weights
    opt = optim.Adam(model, lr=cfg.lr)
    topt = torch.optim.Adam(tm.parameters(), lr=cfg.lr)
    # one batcher per library, both in the same order from the same start
    from rnnkit.text import StreamBatches

    train_np = data.train
    assert isinstance(train_np, StreamBatches)
    train_t = StreamBatches(train_np.ids, cfg.batch_size, cfg.seq_len)

    state = {"np": None, "t": None}

    def np_step() -> float:
        b = next(train_np)
        if b.is_epoch_start:
            state["np"] = None
        logits, hn, cache = model.forward(b.x, state["np"])
        loss, dl, _ = softmax_cross_entropy(logits, b.y)
        model.zero_grad()
        model.backward(dl, cache)
        optim.clip_grad_norm_(model, 5.0)
        opt.step()
        state["np"] = hn
        return loss

    def t_step() -> float:
        b = next(train_t)
        if b.is_epoch_start:
            state["t"] = None
        topt.zero_grad()
        logits, h = tm(torch.from_numpy(b.x), state["t"])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 torch.from_numpy(b.y).reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tm.parameters(), 5.0)
        topt.step()
        state["t"] = detach(h)
        return float(loss.detach())

    rows = []
    seconds = {"np": 0.0, "t": 0.0}
    step = 0
    print(f"model: embedding {mcfg.embedding_dim} -> {mcfg.num_layers} x {mcfg.hidden_size} "
          f"{mcfg.cell.upper()} -> linear {mcfg.vocab_size}; Adam lr {cfg.lr}, clip 5, "
          f"B={cfg.batch_size}, T={cfg.seq_len}, {args.threads} threads; "
          f"torch {torch.__version__}")
    print(f"{'step':>6} {'rnnkit min':>10} {'torch min':>9} {'rnnkit val':>10} "
          f"{'torch val':>9} {'gap':>7} {'speed ratio':>11}")
    while True:
        if args.steps is not None and step >= args.steps:
            break
        if args.minutes is not None and max(seconds.values()) >= 60 * args.minutes:
            break
        n = args.eval_every
        for name, fn in (("np", np_step), ("t", t_step)):
            time.sleep(0.5)                                  # let the other pool go idle
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            seconds[name] += time.perf_counter() - t0
        step += n
        v_np = evaluate(model, data.val)
        v_t = torch_eval(tm, data.val)
        gap = abs(v_np - v_t) / v_t
        rows.append({"step": step, "rnnkit_seconds": seconds["np"], "torch_seconds":
                     seconds["t"], "rnnkit_val": v_np, "torch_val": v_t, "rel_gap": gap})
        print(f"{step:>6} {seconds['np'] / 60:>10.2f} {seconds['t'] / 60:>9.2f} {v_np:>10.4f} "
              f"{v_t:>9.4f} {100 * gap:>6.2f}% {seconds['t'] / seconds['np']:>10.2f}x",
              flush=True)
    worst = max(r["rel_gap"] for r in rows)
    print(f"largest per-step gap between the validation curves: {100 * worst:.2f}% "
          f"(goal < 2 %); rnnkit {step / seconds['np']:.2f} steps/s, torch "
          f"{step / seconds['t']:.2f} steps/s -> speed ratio rnnkit/torch "
          f"{seconds['t'] / seconds['np']:.2f}x")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, json.dumps({"rows": rows, "worst_gap": worst}, indent=1).encode())
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for key, label in (("rnnkit", "rnnkit"), ("torch", "PyTorch 2.13")):
            axes[0].plot([r["step"] for r in rows], [r[f"{key}_val"] for r in rows], "o-",
                         label=label)
            axes[1].plot([r[f"{key}_seconds"] / 60 for r in rows],
                         [r[f"{key}_val"] for r in rows], "o-", label=label)
        axes[0].set_xlabel("step")
        axes[1].set_xlabel("training minutes (2 cores)")
        for ax in axes:
            ax.set_ylabel("validation nats/char")
            ax.grid(alpha=0.3)
            ax.legend()
        fig.tight_layout()
        write_figure(out.with_suffix(".png"), fig)
    except ImportError:
        pass
    if not math.isfinite(worst):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
