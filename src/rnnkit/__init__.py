"""rnnkit: recurrent neural networks in NumPy, with hand-written BPTT and PyTorch's numbers."""

from .module import Module
from .recurrent import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell

__all__ = ["GRU", "LSTM", "RNN", "GRUCell", "LSTMCell", "Module", "RNNCell"]
__version__ = "0.1.0"
