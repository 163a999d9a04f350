"""What the fused kernels (numba, the ``[fast]`` extra) buy a user of ``rnnkit train``, and
what they cost: steps per second of the default model with the kernels on and off, the time of
the first step with an empty and with a filled JIT cache, and the size of the install.

Each run is a separate ``rnnkit train`` process on the built-in corpus with the default model
(2 x 256 LSTM, B = 64, T = 64), for ``--steps`` optimizer steps and no evaluation; on and off
alternate, ``--rounds`` times each. Steps per second come from the run's own metrics.jsonl
(training time only). The first step's time is its ``train_seconds`` in the log: with a fresh
NUMBA_CACHE_DIR it includes compiling the loops; run again with the same directory, it
loads them.

    python benchmarks/kernels.py                  # 3 rounds x 60 steps (~6 min)
    python benchmarks/kernels.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import _harness as hx


def train(out: Path, steps: int, kernels: bool, cache: Path, extra: list[str]) -> list[dict]:
    env = {**os.environ, "RNNKIT_KERNELS": "1" if kernels else "0",
           "NUMBA_CACHE_DIR": str(cache)}
    cmd = [sys.executable, "-m", "rnnkit", "train", "--out", str(out), "--max-steps",
           str(steps), "--eval-interval", str(10 * steps), "--sample-length", "0",
           "--no-progress", *extra]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {r.stderr}")
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def steps_per_second(records: list[dict], skip: int) -> float:
    """Steps per second of training time, after the first ``skip`` steps (the warm-up)."""
    rows = [r for r in records if "loss" in r]
    a, b = rows[skip - 1], rows[-1]
    return (b["step"] - a["step"]) / (b["train_seconds"] - a["train_seconds"])


def install_size() -> dict[str, float]:
    """MB on disk of numba and llvmlite as installed here."""
    out = {}
    for name in ("numba", "llvmlite"):
        try:
            mod = __import__(name)
        except ImportError:
            continue
        root = Path(mod.__file__).parent
        out[name] = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 1e6
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("extra", nargs="*", help="more rnnkit train flags (after --)")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.rounds = 12, 1
        args.extra = args.extra or ["--hidden-size", "64", "--seq-len", "32"]
    env = hx.environment(1)
    print(f"rnnkit train, default model unless told, {args.steps} steps per run, "
          f"{args.rounds} rounds | {hx.describe(env)}")
    skip = max(2, args.steps // 6)
    speeds: dict[str, list[float]] = {"on": [], "off": []}
    first: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "numba-cache"
        for k in range(args.rounds):
            for mode in ("on", "off"):
                recs = train(Path(tmp) / f"{mode}{k}", args.steps, mode == "on", cache,
                             args.extra)
                speeds[mode].append(steps_per_second(recs, skip))
                if mode == "on" and k == 0:
                    first["cold cache"] = recs[0]["train_seconds"]
                elif mode == "on" and k == 1:
                    first["warm cache"] = recs[0]["train_seconds"]
                elif mode == "off" and k == 0:
                    first["kernels off"] = recs[0]["train_seconds"]
    on, off = statistics.median(speeds["on"]), statistics.median(speeds["off"])
    table = hx.Table(["measure", "value"], width=12)
    table.row(["steps/s, kernels on (median)", f"{on:.3f}"])
    table.row(["steps/s, kernels off (median)", f"{off:.3f}"])
    table.row(["speedup", f"{on / off:.2f}x"])
    for name, sec in first.items():
        table.row([f"first step, {name}", f"{sec:.2f} s"])
    size = install_size()
    for name, mb in size.items():
        table.row([f"installed size of {name}", f"{mb:.0f} MB"])
    hx.write_json("kernels", {"env": env, "args": vars(args), "steps_per_s": speeds,
                              "speedup": on / off, "first_step_s": first,
                              "install_mb": size}, args.quick)


if __name__ == "__main__":
    main()
