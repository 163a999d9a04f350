"""rnnkit (NumPy) against onnxruntime running rnnkit's own ONNX export of the same model.

The model is a character language model, vocabulary 65, embedding 64, ``--layers`` (2)
recurrent layers of H units, float32, for each cell. onnxruntime runs the graph
``rnnkit.onnx.to_onnx(model)`` builds (Gather -> one RNN/GRU/LSTM node per layer -> MatMul +
Add), on the CPU execution provider with ``--threads`` intra-op threads and 1 inter-op thread,
in the same process, from the same weights. Two measures:

    generation, B = 1, µs per token: token in, logits out, state carried
        rnnkit: logits, state = step(token, state)                 step = model.stepper()
        ORT:    logits, hn[, cn] = session.run(None, {"tokens": (1, 1), "h0": hn[, "c0": cn]})
    scoring, T = --steps (512) tokens, B in --batch (1, 32), tokens per second = T * B / call
        rnnkit: logits, hn = model(ids)                            eval mode, ids (T, B)
        ORT:    logits, hn[, cn] = session.run(None, {"tokens": ids, "h0": 0[, "c0": 0]})

Before timing, the logits of the first 50 generated tokens (state carried) and the logits and
final states of one scored text are checked to agree within 1e-4 relative. Timing alternates
blocks of calls of each side over several rounds with pauses between them and reports medians
(see _harness.py); ratio = rnnkit throughput / ORT throughput, > 1 means rnnkit is faster.
Where ``rnnkit.kernels`` is in use (numba installed), rnnkit with the kernels off (its NumPy
reference path) joins the rotation as a third side ("reference", "ref ratio"), as in
generation.py. ``--threads`` sets onnxruntime's intra-op threads (NumPy's OpenBLAS keeps its
own default; torch is not used).

    python benchmarks/onnx_export.py                # rnn, gru, lstm x H 256, 512 (~8 min)
    python benchmarks/onnx_export.py --quick        # H 256, T 64, B 1 (~20 s)
"""

from __future__ import annotations

import argparse
import itertools
from typing import Any

import _harness as hx
import numpy as np
import onnxruntime as ort

from rnnkit import kernels
from rnnkit.models import LanguageModel, LMConfig
from rnnkit.onnx import to_onnx
from rnnkit.recurrent import LAYERS

ORT = "onnxruntime"
VOCAB, EMBED = 65, 64


def session(model: LanguageModel, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(to_onnx(model).SerializeToString(), sess_options=opts,
                                providers=["CPUExecutionProvider"])


def zeros_state(model: LanguageModel, B: int) -> dict[str, np.ndarray]:
    cfg = model.config
    h0 = np.zeros((cfg.num_layers, B, cfg.hidden_size), np.float32)
    return {"h0": h0, "c0": h0.copy()} if cfg.cell == "lstm" else {"h0": h0}


def bench_generation(model: LanguageModel, sess: ort.InferenceSession,
                     args: argparse.Namespace) -> dict[str, Any]:
    step = model.stepper()
    with kernels.reference():                    # the reference path runs its own stepper
        ref_step = model.stepper()
    lstm = model.config.cell == "lstm"
    ids = np.random.default_rng(1).integers(0, VOCAB, 1000)
    np_tokens = [np.array([i]) for i in ids]                            # (B,) = (1,)
    ort_tokens = [np.array([[i]], np.int64) for i in ids]               # (T, B) = (1, 1)

    def ort_step(tok: np.ndarray, feed: dict[str, np.ndarray]
                 ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        out = sess.run(None, {"tokens": tok, **feed})
        return out[0][0], ({"h0": out[1], "c0": out[2]} if lstm else {"h0": out[1]})

    # parity over the first 50 tokens, state carried on every side
    diff, state, ref_state, feed = 0.0, None, None, zeros_state(model, 1)
    for k in range(50):
        logits, state = step(np_tokens[k], state)
        ref_logits, ref_state = ref_step(np_tokens[k], ref_state)
        ort_logits, feed = ort_step(ort_tokens[k], feed)
        diff = max(diff, hx.check_close(f"logits at token {k}", logits, ort_logits, 1e-4,
                                        other=ORT),
                   hx.check_close(f"reference logits at token {k}", ref_logits, ort_logits,
                                  1e-4, other=ORT))

    # each call generates one token; the state is carried across calls and blocks
    i = j = 0
    np_state: Any = None
    ort_feed = zeros_state(model, 1)

    def np_call() -> None:
        nonlocal i, np_state
        i = (i + 1) % len(ids)
        _, np_state = step(np_tokens[i], np_state)

    def ort_call() -> None:
        nonlocal j, ort_feed
        j = (j + 1) % len(ids)
        _, ort_feed = ort_step(ort_tokens[j], ort_feed)

    ref = hx.stepping(ref_step, np_tokens) if hx.reference(np_call) is not None else None
    r = hx.compare(np_call, ort_call, rounds=args.rounds, pause=args.pause, block=args.block,
                   other=ORT, reference_fn=ref)
    return {"rnnkit_us_per_token": 1e6 * r["rnnkit"]["median_s"],
            "ort_us_per_token": 1e6 * r[ORT]["median_s"], "ratio": r["ratio"],
            "reference_us_per_token": 1e6 * r["reference"]["median_s"] if ref else None,
            "reference_ratio": r.get("reference_ratio"), "max_abs_diff": diff, "timing": r}


def bench_scoring(model: LanguageModel, sess: ort.InferenceSession, B: int,
                  args: argparse.Namespace) -> dict[str, Any]:
    T = args.steps
    ids = np.random.default_rng(2).integers(0, VOCAB, (T, B)).astype(np.int64)
    feed = {"tokens": ids, **zeros_state(model, B)}
    model.eval()

    # parity: logits of the whole text and the final states
    logits, hn = model(ids)
    out = sess.run(None, feed)
    with kernels.reference():
        ref_logits, ref_hn = model(ids)
    diff = 0.0
    for side, (lg, state) in (("", (logits, hn)), ("reference ", (ref_logits, ref_hn))):
        hc = state if isinstance(state, tuple) else (state,)
        diff = max(diff, hx.check_close(f"{side}logits of the text", lg, out[0], 1e-4,
                                        other=ORT),
                   *(hx.check_close(f"{side}final {n}", a, b, 1e-4, other=ORT)
                     for n, a, b in zip("hc", hc, out[1:], strict=False)))

    def np_call() -> None:
        model(ids)

    def ort_call() -> None:
        sess.run(None, feed)

    r = hx.compare(np_call, ort_call, rounds=args.rounds, pause=args.pause, block=args.block,
                   other=ORT, reference_fn=hx.reference(np_call))
    ref = r.get("reference")
    return {"B": B, "T": T, "rnnkit_tokens_per_s": T * B / r["rnnkit"]["median_s"],
            "ort_tokens_per_s": T * B / r[ORT]["median_s"], "ratio": r["ratio"],
            "reference_tokens_per_s": T * B / ref["median_s"] if ref else None,
            "reference_ratio": r.get("reference_ratio"), "max_abs_diff": diff, "timing": r}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cells", nargs="+", choices=list(LAYERS), default=list(LAYERS))
    ap.add_argument("--hidden", nargs="+", type=int, default=[256, 512])
    ap.add_argument("--layers", type=int, default=2, help="recurrent layers")
    ap.add_argument("--steps", type=int, default=512, help="T of the scored text")
    ap.add_argument("--batch", nargs="+", type=int, default=[1, 32], help="B of scoring")
    hx.add_common_args(ap, rounds=7, block=0.4, pause=0.4)
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.block, args.pause = 2, 0.05, 0.2
        args.hidden, args.steps, args.batch = [256], 64, [1]
    env = hx.environment(args.threads)
    env.update({"onnxruntime": ort.__version__, "ort_intra_op_threads": args.threads,
                "ort_inter_op_threads": 1})
    print(f"rnnkit vs onnxruntime on rnnkit's ONNX export | vocab {VOCAB}, embedding {EMBED}, "
          f"{args.layers} layers, float32 | {hx.describe(env)} | onnxruntime "
          f"{env['onnxruntime']} (CPU EP, {args.threads} intra-op threads, 1 inter-op; torch "
          f"unused) | {args.rounds} rounds, ~{args.block}s blocks, {args.pause}s pauses; "
          "medians; ratio = rnnkit throughput / ORT throughput (> 1: rnnkit faster); "
          "reference: rnnkit with the kernels off")
    table = hx.Table(["cell", "H", "workload", "B", "T", "unit", "rnnkit", "ORT", "ratio",
                      "reference", "ref ratio", "max diff"], width=5)

    def ref(value: float | None, ratio: float | None) -> list[Any]:
        return [value or "-", "-" if ratio is None else f"{ratio:.2f}x"]

    rows = []
    for cell, H in itertools.product(args.cells, args.hidden):
        cfg = LMConfig(vocab_size=VOCAB, cell=cell, embedding_dim=EMBED, hidden_size=H,
                       num_layers=args.layers)
        model = LanguageModel(cfg, rng=0)
        sess = session(model, args.threads)
        g = bench_generation(model, sess, args)
        table.row([cell, H, "generate", 1, 1, "µs/tok", g["rnnkit_us_per_token"],
                   g["ort_us_per_token"], f"{g['ratio']:.2f}x",
                   *ref(g["reference_us_per_token"], g["reference_ratio"]),
                   f"{g['max_abs_diff']:.1e}"])
        scores = []
        for B in args.batch:
            s = bench_scoring(model, sess, B, args)
            scores.append(s)
            table.row([cell, H, "score", B, s["T"], "tok/s", s["rnnkit_tokens_per_s"],
                       s["ort_tokens_per_s"], f"{s['ratio']:.2f}x",
                       *ref(s["reference_tokens_per_s"], s["reference_ratio"]),
                       f"{s['max_abs_diff']:.1e}"])
        rows.append({"cell": cell, "H": H, "num_layers": args.layers, "generation": g,
                     "scoring": scores})
    hx.write_json("onnx_export", {"env": env, "args": vars(args), "rows": rows}, args.quick)


if __name__ == "__main__":
    main()
