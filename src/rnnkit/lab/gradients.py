"""Vanishing and exploding gradients made visible.

``gradient_norms``: run one long sequence through a single-step cell, take a loss on the LAST
step only, and walk BPTT back by hand with the cell's own backward, recording ||dL/dh_t|| for
every t. A tanh RNN's norms shrink geometrically with the distance from the loss (vanishing);
scale its recurrent weights up and they grow instead (exploding), which clipping the
per-step gradient norm caps; a GRU's or LSTM's gated paths keep them far larger.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import checks
from ..files import write_figure
from ..recurrent import CELLS
from ._common import add_remember_bias, add_seed_and_out, pyplot, write_plot

Array = np.ndarray


@dataclass
class GradientNorms:
    cell: str
    norms: Array            # (T,) ||dL/dh_t||, t = 0 .. T-1 (the loss sits on step T-1)


def gradient_norms(cell: str, T: int = 150, hidden_size: int = 64, input_size: int = 8, *,
                   recurrent_scale: float = 1.0, clip: float | None = None,
                   gate_bias: float = 0.0, seed: int = 0) -> GradientNorms:
    """||dL/dh_t|| for t = 0..T-1 with L = w . h_{T-1} (a random unit w).

    ``recurrent_scale`` multiplies the recurrent weights (``weight_hh``) after the usual
    initialisation; ``clip`` caps the norm of dL/dh_t at every step of the walk back, as
    Graves (2013) clipped the derivatives inside BPTT, so what reaches earlier steps is bounded.
    (Training in rnnkit clips differently, as PyTorch does: ``clip_grad_norm_`` rescales the
    summed parameter gradient once, keeping its direction, which is dominated by the exploding
    far steps.) ``gate_bias`` is added to the bias of the gate that keeps the old state
    (:func:`~rnnkit.lab._common.add_remember_bias`; the tanh RNN has none).
    """
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {sorted(CELLS)}; got {cell!r}")
    checks.check_scalar(T, "T", int, min_val=2)
    rng = np.random.default_rng(seed)
    m: Any = CELLS[cell](input_size, hidden_size, dtype=np.float64, rng=rng)
    m.weight_hh[...] *= recurrent_scale
    add_remember_bias(m, cell, gate_bias)
    x = rng.standard_normal((T, 1, input_size))
    state: Any = None
    caches = []
    for t in range(T):
        state, cache = m.forward(x[t], state)
        caches.append(cache)
    w = rng.standard_normal(hidden_size)
    w /= np.linalg.norm(w)
    norms = np.empty(T)
    dh = w[None, :].copy()                                   # dL/dh_{T-1}
    dc = np.zeros_like(dh)                                   # dL/dc_{T-1}, LSTM only
    for t in reversed(range(T)):
        n = float(np.linalg.norm(dh))
        if clip is not None and n > clip:
            dh *= clip / n
            n = clip
        norms[t] = n
        if cell == "lstm":
            _, (dh, dc) = m.backward((dh, dc), caches[t])
        else:
            _, dh = m.backward(dh, caches[t])
    return GradientNorms(cell, norms)


@dataclass
class ModelGradientNorms:
    """A trained language model's BPTT on real text: ``norms`` (L, T), row l = layer l's
    ||dL/dh_t|| for t = 0 .. T-1, where L = ``loss``, the cross-entropy (nats) of predicting
    ``target`` after the last token."""

    norms: Array
    loss: float
    target: int


def model_gradient_norms(model: Any, ids: Any, target: int) -> ModelGradientNorms:
    """||dL/dh_t|| of every layer of a trained ``LanguageModel`` over the tokens ``ids`` (T,),
    for the loss on the last step only: the cross-entropy of ``target`` (the token that
    follows). A float64 copy of each layer runs rnnkit's one forward and BPTT loop
    (``scan.direction_forward``/``direction_backward``, dropout off); walking back, layer l at
    step t receives dL/dh_t^l from step t+1 of its own layer and from the input of layer l+1 at
    step t, and ``direction_backward`` records the norm of that sum. What
    :func:`gradient_norms` shows for random cells, on the run's model.
    """
    from ..functional import log_softmax
    from ..models import LanguageModel
    from ..scan import OneHot, direction_backward, direction_forward

    if not isinstance(model, LanguageModel):
        raise TypeError(f"model must be a LanguageModel; got {type(model).__name__}")
    cfg, rnn = model.config, model.rnn
    V = cfg.vocab_size
    ids = checks.ids("ids", ids, V)
    if ids.ndim != 1 or ids.size == 0:
        raise ValueError(f"ids must be a non-empty (T,) sequence of token ids; got shape "
                         f"{ids.shape}")
    target = checks.check_scalar(target, "target", int, min_val=0, max_val=V - 1)
    T, L, H = ids.size, rnn.num_layers, rnn.hidden_size
    x: Any = (OneHot(ids[:, None], V) if cfg.one_hot
              else model.embedding.weight.astype(np.float64)[ids][:, None])    # (T, 1, E)
    caches: list[Any] = []
    weights: list[Any] = []
    lstm = rnn.math.has_cell
    for layer in range(L):
        w_ih, w_hh, b_ih, b_hh = (None if a is None else a.astype(np.float64)
                                  for a in rnn.layer_weights(layer))
        assert w_ih is not None and w_hh is not None
        out = np.empty((T, 1, H))
        zero = np.zeros((1, H))
        _, _, cache = direction_forward(rnn.math, x, zero, zero if lstm else None, w_ih, w_hh,
                                        b_ih, b_hh, out=out)
        caches.append(cache)
        weights.append((w_ih, w_hh, b_ih, b_hh))
        x = out
    w_dec = model.decoder.weight.astype(np.float64)                # (V, H)
    b_dec = 0.0 if model.decoder.bias is None else model.decoder.bias.astype(np.float64)
    logp = log_softmax(x[-1, 0] @ w_dec.T + b_dec)
    dlogits = np.exp(logp)
    dlogits[target] -= 1.0                                         # d(-log p_target)/dlogits
    dout: Any = np.zeros((T, 1, H))
    dout[-1, 0] = dlogits @ w_dec
    norms = np.empty((L, T))
    for layer in reversed(range(L)):
        w_ih, w_hh, b_ih, b_hh = weights[layer]
        grads = (np.zeros_like(w_ih), np.zeros_like(w_hh),
                 None if b_ih is None else np.zeros_like(b_ih),
                 None if b_hh is None else np.zeros_like(b_hh))
        zero = np.zeros((1, H))
        dout, _, _ = direction_backward(rnn.math, caches[layer], dout, zero,
                                        zero if lstm else None, grads,
                                        dh_norms=norms[layer])
    return ModelGradientNorms(norms, float(-logp[target]), target)


def gradients_table(results: list[GradientNorms], every: int = 25) -> str:
    """Distance from the loss (T-1-t) down the rows, one column per result."""
    T = len(results[0].norms)
    head = "distance " + "".join(f"{r.cell:>12}" for r in results)
    rows = [head]
    for d in list(range(0, T, every)) + ([T - 1] if (T - 1) % every else []):
        rows.append(f"{d:>8} " + "".join(f"{r.norms[T - 1 - d]:>12.3e}" for r in results))
    return "\n".join(rows)


def plot_gradients(results: list[tuple[str, GradientNorms]], png: str | Path) -> None:
    fig, ax = pyplot().subplots(figsize=(7, 4))
    for label, r in results:
        T = len(r.norms)
        ax.semilogy(np.arange(T)[::-1], r.norms, label=label)
    ax.set_xlabel("distance from the loss (steps back in time)")
    ax.set_ylabel("||dL/dh_t||")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    write_figure(png, fig)


# ---- rnnkit lab gradients ----------------------------------------------------------------


def add_commands(sub: Any) -> None:
    g = sub.add_parser("gradients", help="||dL/dh_t|| over time for RNN, GRU, LSTM")
    g.add_argument("--T", type=checks.int_arg(2), default=150, help="sequence length")
    g.add_argument("--hidden-size", type=checks.positive_int_arg, default=64, help="hidden units")
    g.add_argument("--gate-bias", type=checks.float_arg(0), default=3.0,
                   help="added to the LSTM forget / GRU update gate bias (remember by default)")
    g.add_argument("--scale", type=checks.float_arg(0, include_boundaries="neither"), default=4.0,
                   help="recurrent weight scale of the exploding experiment")
    add_seed_and_out(g, "gradients", "weights and inputs", "the plot, gradients.png",
                     cmd_lab_gradients)


def cmd_lab_gradients(args: Any) -> int:
    """||dL/dh_t|| over t for RNN, GRU and LSTM: vanishing and exploding made visible."""
    kw = {"T": args.T, "hidden_size": args.hidden_size, "seed": args.seed}
    runs = [(c, gradient_norms(c, gate_bias=args.gate_bias, **kw)) for c in ("rnn", "gru", "lstm")]
    print(f"||dL/dh_t|| for a loss on the last of T={args.T} steps (H={args.hidden_size}; GRU and "
          f"LSTM with +{args.gate_bias:g} on the update/forget gate bias):")
    print(gradients_table([r for _, r in runs], every=max(1, args.T // 6)))
    big = []
    for label, clip in ((f"rnn x{args.scale:g}", None), (f"x{args.scale:g} capped", 1.0)):
        r = gradient_norms("rnn", recurrent_scale=args.scale, clip=clip, **kw)
        r.cell = label
        big.append((label, r))
    print(f"\nexploding: tanh RNN with its recurrent weights scaled by {args.scale:g}, as it is "
          "and with ||dL/dh_t|| capped at 1 at every step of BPTT (Graves 2013):")
    print(gradients_table([r for _, r in big], every=max(1, args.T // 6)) + "\n")
    write_plot(lambda png: plot_gradients(runs + big, png), args.out, "gradients.png")
    return 0
