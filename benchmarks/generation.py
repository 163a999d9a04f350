"""Single-sequence generation latency, rnnkit against PyTorch: µs per token at B = 1.

The per-token work of generation, token in, logits out, state carried:

    rnnkit: logits, state = step(token, state)            with step = model.stepper()
    torch:  with torch.no_grad():
                y, h = rnn(embedding(token).view(1, 1, E), h); logits = decoder(y[0])

for a language model with vocabulary 65, embedding 64 and 1 recurrent layer of H units, for each
cell. Both start from the same weights (rnnkit's) and read the same token sequence; the logits of
the first tokens are checked to agree. Timing alternates blocks of tokens of each library over
several rounds with pauses between them, in one process, and reports medians (see
_harness.py). Sampling is left out on both sides: it is the same small cost whichever library
made the logits.

    python benchmarks/generation.py                 # rnn, gru, lstm x H 256, 512 (~1 min)
    python benchmarks/generation.py --quick
"""

from __future__ import annotations

import argparse
import itertools

import _harness as hx
import numpy as np
import torch

from rnnkit import kernels
from rnnkit.models import LanguageModel, LMConfig
from rnnkit.pytorch import to_torch
from rnnkit.recurrent import LAYERS


def bench(cell: str, H: int, args: argparse.Namespace) -> dict:
    cfg = LMConfig(vocab_size=65, cell=cell, embedding_dim=64, hidden_size=H, num_layers=1)
    model = LanguageModel(cfg, rng=0)
    tm = to_torch(model).eval()           # the PyTorch twin, rnnkit's weights
    step = model.stepper()
    E = cfg.embedding_dim
    ids = np.random.default_rng(1).integers(0, cfg.vocab_size, 1000)
    np_tokens = [np.array([i]) for i in ids]                   # (B,) = (1,)
    t_tokens = [torch.tensor([int(i)]) for i in ids]

    def t_step(tok: torch.Tensor, h: object) -> tuple[torch.Tensor, object]:
        y, h = tm.rnn(tm.embedding(tok).view(1, 1, E), h)
        return tm.decoder(y[0]), h

    # parity over the first 50 tokens, state carried
    diff, state, h = 0.0, None, None
    with torch.no_grad():
        for k in range(50):
            logits, state = step(np_tokens[k], state)
            tlogits, h = t_step(t_tokens[k], h)
            diff = max(diff, hx.check_close(f"logits at token {k}", logits, tlogits, 1e-4))

    # each call generates one token; the state is carried across calls and blocks
    i = j = 0
    np_state, t_state = None, None

    def np_call() -> None:
        nonlocal i, np_state
        i = (i + 1) % len(ids)
        _, np_state = step(np_tokens[i], np_state)

    def t_call() -> None:
        nonlocal j, t_state
        j = (j + 1) % len(ids)
        with torch.no_grad():
            _, t_state = t_step(t_tokens[j], t_state)

    ref = hx.reference(np_call)
    if ref is not None:                  # the reference path runs its own stepper
        with kernels.reference():
            ref = hx.stepping(model.stepper(), np_tokens)
    r = hx.compare(np_call, t_call, rounds=args.rounds, pause=args.pause, block=args.block,
                   reference_fn=ref)
    return {"cell": cell, "H": H, "rnnkit_us_per_token": 1e6 * r["rnnkit"]["median_s"],
            "torch_us_per_token": 1e6 * r["torch"]["median_s"], "speedup": r["ratio"],
            "reference_us_per_token": 1e6 * r["reference"]["median_s"] if ref else None,
            "reference_speedup": r.get("reference_ratio"), "max_abs_diff": diff, "timing": r}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cells", nargs="+", choices=list(LAYERS), default=list(LAYERS))
    ap.add_argument("--hidden", nargs="+", type=int, default=[256, 512])
    hx.add_common_args(ap, rounds=7, block=0.4, pause=0.4)
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.block, args.pause = 2, 0.05, 0.3
        args.hidden = [256]
    torch.set_num_threads(args.threads)
    env = hx.environment(args.threads)
    print(f"generation latency, B=1, vocab 65, embedding 64, 1 layer, float32 | "
          f"{hx.describe(env)}, no_grad | {args.rounds} rounds, ~{args.block}s blocks, "
          f"{args.pause}s pauses; medians; speedup = torch µs / rnnkit µs (goal >= 4x); "
          "reference: rnnkit with the kernels off")
    table = hx.Table(["cell", "H", "rnnkit µs/tok", "torch µs/tok", "speedup", "reference µs",
                      "ref speedup", "max diff"], width=5)
    rows = []
    for cell, H in itertools.product(args.cells, args.hidden):
        r = bench(cell, H, args)
        rows.append(r)
        rs = r["reference_speedup"]
        table.row([cell, H, r["rnnkit_us_per_token"], r["torch_us_per_token"],
                   f"{r['speedup']:.2f}x", r["reference_us_per_token"] or "-",
                   "-" if rs is None else f"{rs:.2f}x", f"{r['max_abs_diff']:.1e}"])
    hx.write_json("generation", {"env": env, "args": vars(args), "rows": rows}, args.quick)


if __name__ == "__main__":
    main()
