"""The long-range memory tasks of the literature: the adding problem and the copy task.

Both ask a network to carry something across T time steps, with nothing in between that helps;
a model that cannot carry it is stuck at a known no-memory baseline. Every cell gets the same
parameter budget (:func:`~rnnkit.lab._common.hidden_for_budget`), so a tanh RNN has about twice
the hidden units of an LSTM and what separates them is the cell, not its size.

**Adding problem** (Hochreiter & Schmidhuber 1997, in the form of Le et al. 2015 and Arjovsky
et al. 2016). Each step t carries two numbers: a value ``v_t ~ U[0, 1]`` and a marker ``m_t``.
Exactly two markers are 1, one at a uniform step of the first half and one of the second half;
the target is the sum of the two marked values, read off the last state (many-to-one
regression, mean squared error). Predicting the mean, 1, whatever the input scores
``Var(v_a + v_b) = 2/12 = 1/6 ≈ 0.167``; that is the bar to get under.

**Copy task** (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016). Symbols 1..8, blank 0,
delimiter 9. The input is 10 random symbols, T-1 blanks, the delimiter, then 10 blanks
(T + 20 steps, fed one-hot as in the chapter); the output is blank for T + 10 steps, then the
10 symbols. Loss: cross-entropy averaged over all T + 20 steps. The best model without memory
outputs blanks and then a uniform guess among 8 symbols: ``10 ln 8 / (T + 20)`` (0.173 for
T = 100).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import checks
from ..classify import SequenceClassifier, SequenceTagger
from ..module import eval_mode
from ._common import (
    CELL_NAMES,
    Curve,
    add_remember_bias,
    add_seed_and_out,
    cell_parameters,
    check_cells,
    fmt,
    hidden_for_budget,
    plot_curves,
    training,
    write_plot,
)

Array = np.ndarray

COPY_SYMBOLS = 8           # symbols 1..8
COPY_LENGTH = 10           # symbols to remember
BLANK, DELIMITER = 0, 9
COPY_VOCAB = 10            # input alphabet: blank, 8 symbols, delimiter
COPY_CLASSES = 9           # output alphabet: blank and the 8 symbols

# ---- the data ----------------------------------------------------------------------------------


def adding_batch(rng: np.random.Generator, batch_size: int, T: int,
                 dtype: Any = np.float32) -> tuple[Array, Array]:
    """``x (T, B, 2)`` (value, marker) and the target ``y (B,)`` = the sum of the two marked
    values; one marker in steps [0, T//2), the other in [T//2, T)."""
    if T < 2:
        raise ValueError(f"the adding problem needs T >= 2 (one marker in each half); got {T}")
    B = batch_size
    x = np.zeros((T, B, 2), dtype=dtype)
    x[:, :, 0] = rng.random((T, B))
    half = T // 2
    a = rng.integers(0, half, size=B)
    b = rng.integers(half, T, size=B)
    cols = np.arange(B)
    x[a, cols, 1] = 1
    x[b, cols, 1] = 1
    y = (x[a, cols, 0] + x[b, cols, 0]).astype(dtype)
    return x, y


def adding_baseline() -> float:
    """MSE of always predicting 1 (the mean of the sum): Var(U + U) = 1/6."""
    return 1 / 6


def copy_batch(rng: np.random.Generator, batch_size: int, T: int,
               dtype: Any = np.float32) -> tuple[Array, Array]:
    """One-hot inputs ``x (T + 20, B, 10)`` and targets ``y (T + 20, B)`` (class ids 0..8)."""
    if T < 1:
        raise ValueError(f"the copy task needs T >= 1 (T - 1 blanks, then the delimiter); got {T}")
    B, n = batch_size, COPY_LENGTH
    L = T + 2 * n
    sym = rng.integers(1, COPY_SYMBOLS + 1, size=(n, B))
    ids = np.full((L, B), BLANK, dtype=np.int64)
    ids[:n] = sym
    ids[n + T - 1] = DELIMITER
    y = np.full((L, B), BLANK, dtype=np.int64)
    y[L - n:] = sym
    x = np.zeros((L, B, COPY_VOCAB), dtype=dtype)
    np.put_along_axis(x, ids[:, :, None], 1, axis=2)
    return x, y


def copy_baseline(T: int) -> float:
    """Cross-entropy per step of the best memoryless model: 10 ln 8 / (T + 20)."""
    return COPY_LENGTH * math.log(COPY_SYMBOLS) / (T + 2 * COPY_LENGTH)


BATCHES = {"adding": adding_batch, "copy": copy_batch}
SIZES = {"adding": (2, 1), "copy": (COPY_VOCAB, COPY_CLASSES)}       # (D, O) of each task

# ---- training ----------------------------------------------------------------------------------


@dataclass
class MemoryResult:
    task: str
    T: int
    baseline: float
    curves: list[Curve]


def _train(task: str, cell: str, T: int, budget: int, steps: int, batch_size: int, lr: float,
           clip: float, eval_every: int, forget_bias: float, seed: int,
           held_out: tuple[Array, Array], progress: Callable[[str], None] | None) -> Curve:
    D, O = SIZES[task]
    H = hidden_for_budget(cell, D, O, budget)
    # each cell's own streams, named by (seed, cell): the same whichever cells run beside it
    weights = np.random.default_rng([seed, CELL_NAMES.index(cell), 0])
    data = np.random.default_rng([seed, CELL_NAMES.index(cell), 1])
    model: SequenceClassifier | SequenceTagger
    if task == "adding":
        model = SequenceClassifier(1, input_size=D, hidden_size=H, cell=cell, pooling="last",
                                   rng=weights)
    else:
        model = SequenceTagger(O, input_size=D, hidden_size=H, cell=cell, bidirectional=False,
                               rng=weights)
    add_remember_bias(model.rnn, cell, forget_bias)
    x_eval, y_eval = held_out
    curve = Curve(cell, H, model.num_parameters())

    def evaluate() -> float:
        with eval_mode(model):
            out = model(x_eval)
        if task == "adding":
            return float(np.mean((out[:, 0].astype(np.float64) - y_eval) ** 2))
        return float(model.loss(out, y_eval)[0])

    def train_step() -> float:
        x, y = BATCHES[task](data, batch_size, T)
        out, cache = model.forward(x)
        if task == "adding":                          # mean squared error and its gradient
            err = out[:, 0] - y
            loss = float(np.mean(err**2))
            dout = ((2 / batch_size) * err[:, None]).astype(out.dtype)
        else:
            loss, dout = model.loss(out, y)
        model.backward(dout, cache)                                    # type: ignore[arg-type]
        return loss

    t0 = time.perf_counter()
    curve.add(0, evaluate())
    for step, _ in training(model, train_step, steps=steps, lr=lr, clip=clip, every=eval_every):
        curve.add(step, evaluate())
        if progress is not None:
            progress(f"  {cell:<4} step {step:>5}  held-out {fmt(curve.losses[-1])}  "
                     f"{time.perf_counter() - t0:5.0f} s")
    curve.seconds = time.perf_counter() - t0
    if isinstance(model, SequenceClassifier):                  # the adding problem
        curve.extra.update(adding_sensitivity(model, x_eval))
    else:                                                      # predict() runs in eval mode
        n = COPY_LENGTH
        curve.extra["symbol_accuracy"] = float(np.mean(model.predict(x_eval)[-n:] == y_eval[-n:]))
    return curve


def adding_sensitivity(model: SequenceClassifier, x: Array) -> dict[str, float]:
    """How much the trained prediction moves with each marked value: the mean of
    d(prediction)/d(v_t) at the first and at the second marked step (ideal: 1 and 1, since the
    target is v_a + v_b), by one backward pass of d(prediction) = 1 to the inputs.

    A model that carried nothing across the sequence has ~0 for the first marker (50-100 steps
    before the end); this is the vanishing gradient seen from the trained model's side.
    """
    with eval_mode(model):
        out, cache = model.forward(x)
        dx = model.backward(np.ones_like(out), cache)          # (T, N, 2): d pred_n / d x_t
    model.zero_grad()
    assert dx is not None
    marked = x[:, :, 1] > 0                                        # (T, N), two per column
    first = marked.argmax(axis=0)
    second = x.shape[0] - 1 - marked[::-1].argmax(axis=0)
    cols = np.arange(x.shape[1])
    return {"d_first": float(dx[first, cols, 0].mean()),
            "d_second": float(dx[second, cols, 0].mean())}


def check_memory_settings(task: str, T: int, cells: tuple[str, ...] | list[str],
                          budget: int | None, steps: int | None, batch_size: int = 64,
                          eval_every: int = 100, eval_size: int = 2000
                          ) -> tuple[tuple[str, ...], int, int]:
    """Validate the settings of :func:`run_memory_task`; returns (cells, budget, steps)."""
    if task not in ("adding", "copy"):
        raise ValueError(f"task must be 'adding' or 'copy'; got {task!r}")
    cells = check_cells(tuple(cells))
    budget = (17_500 if task == "adding" else 20_000) if budget is None else budget
    steps = 3000 if steps is None else steps
    for name, v, low in (("T", T, 1 if task == "copy" else 2), ("budget", budget, 1),
                         ("steps", steps, 1), ("batch_size", batch_size, 1),
                         ("eval_every", eval_every, 1), ("eval_size", eval_size, 1)):
        checks.check_scalar(v, name, int, min_val=low)
    D, O = SIZES[task]
    smallest = max(cell_parameters(c, D, 1, O) for c in cells)
    if budget < smallest:
        raise ValueError(f"budget={budget} parameters is too small: with one hidden unit the "
                         f"{task} models of {list(cells)} need up to {smallest}. Give a budget of "
                         f"at least {smallest} (the defaults are 17,500 and 20,000).")
    return cells, budget, steps


def run_memory_task(task: str, T: int = 100, *, cells: tuple[str, ...] | list[str] = CELL_NAMES,
                    budget: int | None = None, steps: int | None = None, batch_size: int = 64,
                    lr: float = 3e-3, clip: float = 1.0, eval_every: int = 100,
                    eval_size: int = 2000, forget_bias: float = 1.0, seed: int = 0,
                    progress: Callable[[str], None] | None = None) -> MemoryResult:
    """Train each cell on ``task`` ("adding" or "copy") with one parameter budget.

    Each cell's weights and training data come from its own streams, named by ``(seed, cell)``:
    the same seed gives the same curve for a cell whichever cells run beside it. Every
    ``eval_every`` steps the loss on ONE held-out set of ``eval_size`` sequences, shared by all
    cells, is recorded; the adding baseline is what predicting 1 scores on that same set (a
    500-sequence set alone moves it by +-0.01 around 1/6). ``forget_bias`` is added to the bias
    of the gate that keeps the old state (LSTM forget gate, GRU update gate) -- the usual
    remember-by-default start.
    """
    cells, budget, steps = check_memory_settings(task, T, cells, budget, steps, batch_size,
                                                 eval_every, eval_size)
    checks.check_scalar(seed, "seed", int, min_val=0)
    # one held-out set for every cell, so their losses are comparable with each other and
    # with the baseline measured on that same set
    held_out = BATCHES[task](np.random.default_rng([seed, len(CELL_NAMES)]), eval_size, T)
    if task == "adding":
        # what predicting 1 (the mean of the sum) scores on THIS set; 1/6 in expectation
        base = float(np.mean((held_out[1].astype(np.float64) - 1) ** 2))
    else:
        base = copy_baseline(T)                       # exact on any sample
    curves = [_train(task, c, T, budget, steps, batch_size, lr, clip, eval_every, forget_bias,
                     seed, held_out, progress) for c in cells]
    return MemoryResult(task, T, base, curves)


def memory_table(result: MemoryResult, rows: int = 8) -> str:
    """Held-out loss at a few steps (rows) for each cell (columns), then final and best."""
    curves = result.curves
    steps = curves[0].steps
    pick = sorted({steps[round(i * (len(steps) - 1) / max(rows - 1, 1))] for i in range(rows)})
    head = f"{'step':>7} " + "".join(f"{c.label:>11}" for c in curves)
    out = [head]
    for s in pick:
        i = steps.index(s)
        out.append(f"{s:>7} " + "".join(f"{fmt(c.losses[i]):>11}" for c in curves))
    out.append(f"{'best':>7} " + "".join(f"{fmt(c.best()):>11}" for c in curves))
    if result.task == "copy":
        out.append(f"{'acc':>7} " + "".join(f"{c.extra['symbol_accuracy']:>11.3f}"
                                             for c in curves))
    else:                                  # d(prediction)/d(marked value): ideal 1 and 1
        out.append(f"{'d/dv_a':>7} " + "".join(f"{c.extra['d_first']:>11.3f}" for c in curves))
        out.append(f"{'d/dv_b':>7} " + "".join(f"{c.extra['d_second']:>11.3f}" for c in curves))
    out.append(f"{'params':>7} " + "".join(f"{c.parameters:>11,}" for c in curves))
    out.append(f"{'H':>7} " + "".join(f"{c.hidden_size:>11}" for c in curves))
    out.append(f"{'seconds':>7} " + "".join(f"{c.seconds:>11.0f}" for c in curves))
    return "\n".join(out)


# ---- rnnkit lab adding / copy ------------------------------------------------------------------


def add_commands(sub: Any) -> None:
    positive = checks.float_arg(0, include_boundaries="neither")
    for task in ("adding", "copy"):
        what = ("the adding problem: the sum of two marked numbers among T" if task == "adding"
                else "the copy task: recall 10 symbols after T blanks")
        p = sub.add_parser(task, help=what)
        p.add_argument("--T", type=checks.int_arg(2 if task == "adding" else 1), default=100,
                       help="time steps to remember across")
        p.add_argument("--cells", nargs="+", choices=CELL_NAMES, default=list(CELL_NAMES),
                       help="which cells to train")
        p.add_argument("--steps", type=checks.positive_int_arg, default=3000,
                       help="training steps")
        p.add_argument("--budget", type=checks.int_arg(10),
                       default=17_500 if task == "adding" else 20_000,
                       help="parameters per model (sets each cell's hidden size)")
        p.add_argument("--batch", type=checks.positive_int_arg, default=64,
                       help="sequences per step")
        p.add_argument("--lr", type=positive, default=3e-3, help="Adam learning rate")
        p.add_argument("--clip", type=positive, default=1.0, help="gradient norm clipping")
        p.add_argument("--forget-bias", type=checks.float_arg(), default=1.0,
                       help="added to the LSTM forget / GRU update gate bias")
        p.add_argument("--eval-every", type=checks.positive_int_arg, default=100,
                       help="steps between held-out evaluations")
        add_seed_and_out(p, task, "weights and data", f"the plot, {task}.png", cmd_lab_memory,
                         task=task)


def cmd_lab_memory(args: Any) -> int:
    task = args.task
    check_memory_settings(task, args.T, args.cells, args.budget, args.steps, args.batch,
                          args.eval_every)
    what = ("adding problem (MSE; predicting 1 scores 1/6 = 0.167 in expectation)"
            if task == "adding" else
            f"copy task (cross-entropy per step; the memoryless baseline is 10 ln 8 / (T+20) = "
            f"{copy_baseline(args.T):.4f})")
    print(f"{what}, T={args.T}: {args.steps} steps of batch {args.batch}, Adam lr {args.lr:g}, "
          f"clip {args.clip:g}, budget {args.budget:,} parameters per model")
    res = run_memory_task(task, args.T, cells=args.cells, budget=args.budget, steps=args.steps,
                          batch_size=args.batch, lr=args.lr, clip=args.clip,
                          eval_every=args.eval_every, forget_bias=args.forget_bias,
                          seed=args.seed, progress=lambda s: print(s, flush=True))
    base = res.baseline
    print(f"\nheld-out {'MSE' if task == 'adding' else 'cross-entropy'} on one set of 2000 "
          f"sequences (no-memory baseline on it: {base:.4f}):")
    print(memory_table(res))
    for c in res.curves:
        r = c.final / base
        verdict = ("solved: far below the no-memory baseline" if r < 0.1 else
                   "below the baseline: it remembers part of it" if r < 0.95 else
                   "at (or above) the no-memory baseline: nothing carried across T")
        print(f"{c.label}: final {fmt(c.final)} = {r:.3f} x baseline, {verdict}")
    name = "adding problem" if task == "adding" else "copy task"
    write_plot(lambda png: plot_curves(
        res.curves, png, title=f"{name}, T={args.T}, equal parameter budgets",
        ylabel="held-out MSE" if task == "adding" else "held-out cross-entropy",
        baseline=base), args.out, f"{task}.png")
    return 0


__all__ = [
    "MemoryResult",
    "adding_baseline",
    "adding_batch",
    "check_memory_settings",
    "copy_baseline",
    "copy_batch",
    "memory_table",
    "run_memory_task",
]
