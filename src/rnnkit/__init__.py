"""rnnkit: recurrent neural networks in NumPy, with hand-written BPTT and PyTorch's numbers.

The package reads as the data flow: ``functional`` (per-step cell math, forward beside
backward) -> ``scan`` (the one time loop and BPTT loop) -> ``recurrent`` (RNN, GRU, LSTM and
their cells) ; ``tutorial`` keeps the textbook chapter's own functions; ``gradcheck`` proves
every backward. ``load`` / ``export`` (``pretrained``) take a trained model anywhere:

    m = rnnkit.load("runs/shakespeare")
    print(m.generate("ROMEO:", 300, temperature=0.8))
"""

import os
from pathlib import Path

from .gradcheck import GradcheckResult, check_gradients, gradcheck
from .module import Module
from .pretrained import TextModel, from_torch, load
from .pytorch import to_torch
from .recurrent import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell
from .scan import OneHot

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "GRUCell",
    "GradcheckResult",
    "LSTMCell",
    "Module",
    "OneHot",
    "RNNCell",
    "TextModel",
    "check_gradients",
    "export",
    "from_torch",
    "gradcheck",
    "load",
    "to_torch",
]
__version__ = "0.1.0"


def export(source: str | os.PathLike[str] | TextModel, out_dir: str | os.PathLike[str], *,
           which: str = "best", dtype: str | None = None) -> Path:
    """``rnnkit export``: the model at ``source`` (a run directory, a checkpoint, an export or
    a loaded ``TextModel``) written to ``out_dir`` as config.json, model.safetensors,
    vocab.json, model.onnx and a README.md model card (``TextModel.export``)."""
    m = source if isinstance(source, TextModel) else load(source, which=which)
    return m.export(out_dir, dtype=dtype)
