"""The plumbing's two scaling promises, measured: beam search time linear in the generated
length, and corpus memory a small multiple of the corpus size.

    python benchmarks/plumbing.py              # beam 10k / 20k / 40k tokens; 50 MB corpus (~2 min)
    python benchmarks/plumbing.py --quick      # beam 2k / 4k; 5 MB corpus

Beam: ``beam_search`` (width 4, no end token, so every step runs) on a small GRU language model
(V 16, H 16); the time per token should stay flat as the length doubles. Memory: the peak
resident set of a fresh process that runs ``prepare_data`` (read, vocabulary, ids, batchers)
on a generated text of N MB, for stream/char, stream/word and sentence/char; the ratio to N is
what the issue's "well under 10 x N" asks of.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import subprocess
import sys
import tempfile
import time

from rnnkit.generate import beam_search
from rnnkit.models import LanguageModel, LMConfig

WORDS = ["the", "king", "queen", "love", "death", "ROMEO:", "\n", "thou", "art", "é", "—"]


def beam_rows(lengths: list[int]) -> None:
    model = LanguageModel(LMConfig(vocab_size=16, cell="gru", embedding_dim=8, hidden_size=16,
                                   num_layers=1), rng=0)
    print(f"{'tokens':>8} {'seconds':>8} {'us/token':>9}")
    for n in lengths:
        t0 = time.perf_counter()
        beam_search(model, [1], n, width=4)
        dt = time.perf_counter() - t0
        print(f"{n:>8} {dt:>8.2f} {1e6 * dt / n:>9.1f}")


def peak_mb(corpus: str, level: str, mode: str) -> float:
    code = "from rnnkit.train import TrainConfig, prepare_data"
    if corpus:          # without one: the imports alone, the baseline to subtract
        code += f"; prepare_data(TrainConfig(corpus={corpus!r}, level={level!r}, mode={mode!r}))"
    subprocess.run([sys.executable, "-c", code], check=True)
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def memory_rows(megabytes: int) -> None:
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "corpus.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write(" ".join(rng.choice(WORDS) for _ in range(megabytes * 220_000)))
        size = os.path.getsize(path) / 2**20
        base = _child("", "char", "stream")
        print(f"corpus {size:.1f} MB; a process that only imports rnnkit.train: {base:.0f} MB")
        print(f"{'level/mode':<14} {'peak MB':>8} {'(peak - imports) / corpus':>26}")
        for level, mode in (("char", "stream"), ("word", "stream"), ("char", "sentence")):
            peak = _child(path, level, mode)
            print(f"{level + '/' + mode:<14} {peak:>8.0f} {(peak - base) / size:>26.1f}")


def _child(corpus: str, level: str, mode: str) -> float:
    """peak_mb in its own process: RUSAGE_CHILDREN keeps the largest child so far."""
    out = subprocess.run([sys.executable, __file__, "--_peak", corpus, level, mode],
                         check=True, capture_output=True, text=True).stdout
    return float(out)


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--_peak":
        print(peak_mb(*sys.argv[2:]))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    args = p.parse_args()
    beam_rows([2000, 4000] if args.quick else [10_000, 20_000, 40_000])
    memory_rows(5 if args.quick else 50)


if __name__ == "__main__":
    main()
