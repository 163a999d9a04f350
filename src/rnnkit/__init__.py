"""rnnkit: recurrent neural networks in NumPy, with hand-written BPTT and PyTorch's numbers.

The package reads as the data flow: ``functional`` (per-step cell math, forward beside
backward) -> ``scan`` (the one time loop and BPTT loop) -> ``recurrent`` (RNN, GRU, LSTM and
their cells) ; ``tutorial`` keeps the textbook chapter's own functions; ``gradcheck`` proves
every backward.
"""

from .gradcheck import GradcheckResult, check_gradients, gradcheck
from .module import Module
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
    "check_gradients",
    "gradcheck",
]
__version__ = "0.1.0"
