"""Tokens per second of the char-LM training step through ``rnnkit train``'s two engines: the
numpy backend (rnnkit's layers, fused kernels where numba is installed) and the torch backend
(the PyTorch twin with torch.optim) on the CPU, and on CUDA when a GPU is present.

The step is what the trainer runs (``backends.NumpyEngine.step`` / ``TorchEngine.step``):
forward, cross-entropy, backward, clipping at 5, Adam, on a stream batch of B x T = 64
characters with the carried state, for the default model (vocabulary 65, embedding 64, 2 LSTM
layers of H units, float32). The engines start from the same weights; the first step's losses
are checked to agree. Numpy and torch CPU alternate in one process (see _harness.py); CUDA is
timed on its own (synchronised) after them. ``--processes 2`` adds the torch backend in two
CPU processes: ``torchrun --standalone --nproc-per-node 2 -m rnnkit train --backend torch``
on the built-in corpus for ``--train-steps`` steps, tokens/s from its metrics.jsonl (after
the first two steps), the global batch B split between the processes.

    python benchmarks/backends.py                   # H {256, 512, 1024} x B {64, 256}
    python benchmarks/backends.py --processes 2     # and two torchrun processes (CPU)
    python benchmarks/backends.py --quick           # H 128, B 16, T 16
"""

from __future__ import annotations

import argparse
import itertools
import time

import _harness as hx
import numpy as np
import torch

from rnnkit import optim
from rnnkit.backends import NumpyEngine, TorchEngine
from rnnkit.models import LanguageModel, LMConfig
from rnnkit.text import StreamBatch
from rnnkit.train import TrainConfig


def engines(H: int, device: str) -> tuple[NumpyEngine, TorchEngine]:
    cfg = TrainConfig(hidden_size=H)
    mc = LMConfig(vocab_size=65, cell="lstm", embedding_dim=64, hidden_size=H, num_layers=2)
    out = []
    for kind in ("numpy", "torch"):
        model = LanguageModel(mc, rng=0)
        opt = optim.Adam(model, lr=cfg.lr)
        out.append(NumpyEngine(model, opt, cfg) if kind == "numpy"
                   else TorchEngine(model, opt, cfg, device))
    return out[0], out[1]  # type: ignore[return-value]


def batch(B: int, T: int) -> StreamBatch:
    ids = np.random.default_rng(1).integers(0, 65, (T + 1, B))
    return StreamBatch(ids[:-1], ids[1:], 0, 1)


def measure(H: int, B: int, args: argparse.Namespace, cuda: bool) -> dict:
    b = batch(B, args.steps)
    npe, te = engines(H, "cpu")
    loss_np, _, _ = npe.step(b, None)
    loss_t, _, _ = te.step(b, None)
    diff = abs(loss_np - loss_t)
    if diff > 1e-4 * abs(loss_np):
        raise SystemExit(f"the engines disagree on the first loss: {loss_np} vs {loss_t}")
    carry: dict[str, object] = {"np": None, "t": None}

    def np_step() -> None:
        _, carry["np"], _ = npe.step(b, carry["np"])      # type: ignore[arg-type]

    def t_step() -> None:
        _, carry["t"], _ = te.step(b, carry["t"])

    r = hx.compare(np_step, t_step, rounds=args.rounds, pause=args.pause, block=args.block)
    tok = B * args.steps
    row = {"H": H, "B": B, "numpy_tokens_per_s": tok / r["rnnkit"]["median_s"],
           "torch_cpu_tokens_per_s": tok / r["torch"]["median_s"],
           "ratio": r["rnnkit"]["median_s"] / r["torch"]["median_s"],
           "first_loss_diff": diff, "timing": r, "cuda_tokens_per_s": None}
    if cuda:                       # timed alone, synchronised
        _, tg = engines(H, "cuda")
        state = None
        for _ in range(3):
            _, state, _ = tg.step(b, state)
        torch.cuda.synchronize()
        times = []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            for _ in range(10):
                _, state, _ = tg.step(b, state)
            torch.cuda.synchronize()
            times.append((time.perf_counter() - t0) / 10)
        row["cuda_tokens_per_s"] = tok / sorted(times)[len(times) // 2]
    return row


def two_processes(H: int, B: int, T: int, steps: int) -> float:
    """Tokens/s of ``rnnkit train --backend torch`` in two torchrun processes."""
    import json
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
               "2", "-m", "rnnkit", "train", "--out", str(out), "--backend", "torch",
               "--hidden-size", str(H), "--batch-size", str(B), "--seq-len", str(T),
               "--max-steps", str(steps), "--eval-interval", str(10 * steps),
               "--sample-length", "0", "--no-progress"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
        if r.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed: {r.stderr[-2000:]}")
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        rows = [x for x in rows if "loss" in x]
        a, b = rows[1], rows[-1]
        return (b["step"] - a["step"]) * B * T / (b["train_seconds"] - a["train_seconds"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hidden", nargs="+", type=int, default=[256, 512, 1024])
    ap.add_argument("--batch", nargs="+", type=int, default=[64, 256])
    ap.add_argument("--steps", type=int, default=64, help="T")
    ap.add_argument("--processes", type=int, choices=(1, 2), default=1,
                    help="2: also the torch backend in two torchrun CPU processes")
    ap.add_argument("--train-steps", type=int, default=8, help="steps of each 2-process run")
    hx.add_common_args(ap, rounds=5, block=1.0, pause=0.5)
    args = ap.parse_args()
    if args.quick:
        args.hidden, args.batch, args.steps = [128], [16], 16
        args.rounds, args.block, args.pause = 2, 0.1, 0.3
    torch.set_num_threads(args.threads)
    env = hx.environment(args.threads)
    cuda = torch.cuda.is_available()
    env["cuda"] = torch.cuda.get_device_name(0) if cuda else None
    print(f"char-LM training step through rnnkit train's engines, 2 x H LSTM, T={args.steps} | "
          f"{hx.describe(env)} | CUDA: {env['cuda'] or 'none'} | {args.rounds} rounds; tokens/s "
          "(medians); ratio = torch CPU / numpy")
    table = hx.Table(["H", "B", "numpy tok/s", "torch cpu tok/s", "ratio", "torch 2 procs",
                      "cuda tok/s", "first loss diff"], width=6)
    rows = []
    for H, B in itertools.product(args.hidden, args.batch):
        row = measure(H, B, args, cuda)
        row["torch_2_processes_tokens_per_s"] = (
            two_processes(H, B, args.steps, args.train_steps) if args.processes == 2 else None)
        rows.append(row)
        table.row([H, B, row["numpy_tokens_per_s"], row["torch_cpu_tokens_per_s"],
                   f"{row['ratio']:.2f}x", row["torch_2_processes_tokens_per_s"] or "-",
                   row["cuda_tokens_per_s"] or "-", f"{row['first_loss_diff']:.1e}"])
    hx.write_json("backends", {"env": env, "args": vars(args), "rows": rows}, args.quick)


if __name__ == "__main__":
    main()
