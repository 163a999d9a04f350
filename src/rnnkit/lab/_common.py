"""The lab's shared plumbing: equal parameter budgets, one training loop, curves and plots."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import checks
from ..files import printable, write_figure
from ..optim import Adam, clip_grad_norm_
from ..recurrent import LAYERS

CELL_NAMES = tuple(LAYERS)
GATES = {name: layer.math_class.gates for name, layer in LAYERS.items()}   # G gate blocks


def cell_parameters(cell: str, input_size: int, hidden_size: int, output_size: int = 0) -> int:
    """Parameters of one recurrent layer (PyTorch's two biases) plus a linear head.

    G (H D + H H + 2 H) + (H O + O), with G = 1, 3, 4 gate blocks for RNN, GRU, LSTM.
    """
    G, H = GATES[cell], hidden_size
    return G * (H * input_size + H * H + 2 * H) + (H * output_size + output_size
                                                   if output_size else 0)


def hidden_for_budget(cell: str, input_size: int, output_size: int, budget: int) -> int:
    """The largest hidden size H whose layer + head stays within ``budget`` parameters.

    Comparing cells at equal H flatters the LSTM (4x the weights of a tanh RNN); at equal
    parameters the tanh RNN gets about twice the hidden units, so what is left between them is
    the cell's structure, not its size.
    """
    if cell not in GATES:
        raise ValueError(f"cell must be one of {CELL_NAMES}; got {cell!r}")
    smallest = cell_parameters(cell, input_size, 1, output_size)
    if budget < smallest:
        raise ValueError(f"a budget of {budget:,} parameters is too small for a {cell} of one "
                         f"hidden unit ({smallest:,} parameters with input {input_size} and "
                         f"output {output_size}); give a budget of at least {smallest:,}")
    G, D, O = GATES[cell], input_size, output_size
    # G H^2 + (G (D + 2) + O) H + O - budget = 0
    b = G * (D + 2) + O
    H = int((-b + math.sqrt(b * b + 4 * G * max(budget - O, 0))) / (2 * G))
    while H > 1 and cell_parameters(cell, D, H, O) > budget:
        H -= 1
    while cell_parameters(cell, D, H + 1, O) <= budget:
        H += 1
    return max(H, 1)                       # H = 1 fits: checked above


@dataclass
class Curve:
    """One model's training curve: (step, loss) pairs, plus what it ended with."""

    label: str
    hidden_size: int
    parameters: int
    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def final(self) -> float:
        return self.losses[-1] if self.losses else math.nan

    def best(self) -> float:
        return min(self.losses) if self.losses else math.nan

    def add(self, step: int, loss: float) -> None:
        self.steps.append(step)
        self.losses.append(loss)


def training(model: Any, train_step: Callable[[], float], *, steps: int, lr: float,
             clip: float, every: int) -> Iterator[tuple[int, list[float]]]:
    """Train ``model`` for ``steps`` steps of Adam at ``lr``, the one loop of the lab.

    ``train_step()`` runs forward and backward on a fresh batch and returns its loss; then the
    gradient's global norm is clipped to ``clip`` and Adam steps. Every ``every`` steps and
    after the last, yields (step, the training losses since the previous yield).
    """
    opt = Adam(model, lr=lr)
    model.train()
    window: list[float] = []
    for step in range(1, steps + 1):
        opt.zero_grad()
        window.append(train_step())
        clip_grad_norm_(model, clip)
        opt.step()
        if step % every == 0 or step == steps:
            yield step, window
            window = []


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (files only, no window), imported on demand."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(curves: list[Curve], png: str | Path, *, title: str, ylabel: str,
                baseline: float) -> None:
    """Loss against training step (log scale), one line per cell, the no-memory baseline
    dashed."""
    fig, ax = pyplot().subplots(figsize=(7, 4))
    for c in curves:
        ax.plot(c.steps, c.losses, label=f"{c.label} (H={c.hidden_size}, {c.parameters:,} p)")
    ax.axhline(baseline, color="k", ls="--", lw=1, label=f"no-memory baseline {baseline:.3g}")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    write_figure(png, fig)


def add_remember_bias(rnn: Any, cell: str, value: float) -> None:
    """Add ``value`` to the bias of the gate that keeps the old state, in every layer and
    direction: the LSTM's forget gate f (gate order i, f, g, o) and the GRU's update gate z
    (order r, z, n; z = 1 keeps h). The usual remember-by-default start (Gers et al. 2000,
    Jozefowicz et al. 2015); the tanh RNN has no such gate and is left as it is."""
    if cell not in ("lstm", "gru") or not value:
        return
    H = rnn.hidden_size
    for name, p in rnn.named_parameters():
        if name.startswith("bias_ih"):
            p[H: 2 * H] += value


def add_seed_and_out(p: Any, name: str, seeded: str, files: str, func: Any, **kw: Any) -> None:
    """The options every lab command shares: ``--seed`` (of ``seeded``) and ``--out`` (the
    directory for ``files``, default ``lab-NAME``); then ``func`` runs the command."""
    p.add_argument("--seed", type=checks.nonneg_int_arg, default=0, help=f"seed of {seeded}")
    p.add_argument("--out", type=checks.out_dir_arg, default=f"lab-{name}",
                   help=f"directory for {files} (created if missing)")
    p.set_defaults(func=func, **kw)


def write_plot(plot: Callable[[Path], None], out: Path, name: str) -> None:
    """``plot(out / name)``, ``out`` created if missing, and one line saying where."""
    out.mkdir(parents=True, exist_ok=True)
    plot(out / name)
    print(f"wrote {printable(out / name, keep='')}")


def check_cells(cells: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    bad = [c for c in cells if c not in GATES]
    if bad or not cells:
        raise ValueError(f"cells must be a non-empty list drawn from {CELL_NAMES}; got "
                         f"{list(cells)!r}")
    return tuple(cells)


def fmt(x: float) -> str:
    return "nan" if not np.isfinite(x) else (f"{x:.4f}" if x >= 1e-3 else f"{x:.2e}")
