"""Models that read a whole sequence: many-to-one classification and many-to-many tagging.

    SequenceClassifier   x -> [embedding] -> stacked RNN / GRU / LSTM -> pool over the valid
                         steps ("last", "mean" or "max") -> linear -> logits (B, C)
    SequenceTagger       x -> [embedding] -> bidirectional RNN -> linear at every step
                         -> logits (T, B, C)

Letters: T time, B batch, D input features, E embedding size, H hidden units, K directions
(1 or 2), L layers, C classes. The input ``x`` is either token ids ``(T, B)`` (the model then
has an ``embedding``) or dense features ``(T, B, D)`` in the model's dtype. ``lengths`` (B,),
in any order, marks the valid steps of each sequence as in PyTorch's packed sequences: padded
steps never reach the output, whatever they hold.

    m = SequenceClassifier(10, input_size=8, hidden_size=64, cell="gru", pooling="mean")
    logits, cache = m.forward(x, lengths)                  # (B, C)
    loss, dlogits = m.loss(logits, labels)                 # mean cross-entropy and its gradient
    m.backward(dlogits, cache)                             # adds into m.grads

Parameters are named like the PyTorch twin (``embedding.weight``, ``rnn.weight_ih_l0``, ...,
``fc.weight``, ``fc.bias``), so ``m.state_dict()`` loads into a ``torch.nn.Module`` with
submodules ``embedding``, ``rnn`` and ``fc``. Training loops live in ``examples/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import checks as check
from .functional import valid_mask
from .layers import Embedding, Linear, dropout_mask, softmax_cross_entropy
from .module import Module, check_rng, eval_mode
from .recurrent import LAYERS, RecurrentCache, RNNBase, State

Array = np.ndarray
POOLINGS = ("last", "mean", "max")


# ------------------------------------------------------------------------------------------------
# pooling over the valid steps: each forward beside its backward


def top_layer_state(hn: State, num_directions: int) -> Array:
    """The top layer's final hidden state, directions side by side: (B, K*H).

    hn (L*K, B, H) (or the LSTM's pair (h_n, c_n), of which h_n is used). With lengths, the
    forward direction's entry is the state at each sequence's own last valid step and the
    reverse direction's is its state after reading t = 0, as in PyTorch.
    """
    h = hn[0] if isinstance(hn, tuple) else hn
    return np.concatenate(list(h[h.shape[0] - num_directions:]), axis=1)


def top_layer_state_backward(dpooled: Array, num_layers: int, num_directions: int,
                             has_cell: bool) -> State:
    """dL/dh_n from dL/dpooled: the top layer's rows get their slices, the rest zeros."""
    K = num_directions
    B, KH = dpooled.shape
    dh = np.zeros((num_layers * K, B, KH // K), dpooled.dtype)
    # pooled[:, d*H:(d+1)*H] = h_n[L*K - K + d]
    dh[-K:] = dpooled.reshape(B, K, KH // K).transpose(1, 0, 2)
    return (dh, np.zeros_like(dh)) if has_cell else dh


def mean_pool(y: Array, lengths: Array | None) -> Array:
    """(T, B, F) -> (B, F): the mean over each sequence's valid steps t < length."""
    if lengths is None:
        return y.mean(axis=0)
    valid = valid_mask(lengths, y.shape[0])                               # (T, B)
    total = np.where(valid[:, :, None], y, y.dtype.type(0)).sum(axis=0)   # (B, F)
    return total / lengths[:, None].astype(y.dtype)


def mean_pool_backward(dpooled: Array, T: int, lengths: Array | None) -> Array:
    """pooled = sum_{t < len} y_t / len:  dy_t = dpooled / len for t < len, else 0."""
    B, F = dpooled.shape
    if lengths is None:
        return np.broadcast_to(dpooled / dpooled.dtype.type(T), (T, B, F)).copy()
    valid = valid_mask(lengths, T)                                       # (T, B)
    scaled = dpooled / lengths[:, None].astype(dpooled.dtype)            # (B, F)
    return np.where(valid[:, :, None], scaled[None], dpooled.dtype.type(0))


def max_pool(y: Array, lengths: Array | None) -> tuple[Array, Array]:
    """(T, B, F) -> (B, F): the max over each sequence's valid steps, and the step it came
    from (B, F); padded steps never win."""
    if lengths is not None:
        y = np.where(valid_mask(lengths, y.shape[0])[:, :, None], y, -np.inf)
    arg = y.argmax(axis=0)                                               # (B, F)
    return np.take_along_axis(y, arg[None], axis=0)[0], arg


def max_pool_backward(dpooled: Array, T: int, arg: Array) -> Array:
    """pooled[b, f] = y[arg[b, f], b, f]:  the gradient goes to that step only."""
    dy = np.zeros((T, *dpooled.shape), dpooled.dtype)
    np.put_along_axis(dy, arg[None], dpooled[None], axis=0)
    return dy


# ------------------------------------------------------------------------------------------------
# the shared front end: embedding or dense features, then a stacked recurrent layer


@dataclass
class EncoderCache:
    ids: Array | None             # the token ids, for the embedding's backward
    in_mask: Array | None         # dropout on the embedding output
    rnn: RecurrentCache


class _SequenceModel(Module):
    """Input checks, embedding and recurrent core shared by the classifier and the tagger."""

    def __init__(self, num_classes: int, *, vocab_size: int | None, embedding_dim: int,
                 input_size: int | None, hidden_size: int, cell: str, num_layers: int,
                 bidirectional: bool, dropout: float, nonlinearity: str, dtype: Any,
                 rng: np.random.Generator | int | None) -> None:
        super().__init__(dtype)
        self.num_classes = check.positive_int("num_classes", num_classes)
        if (vocab_size is None) == (input_size is None):
            raise ValueError("give exactly one of vocab_size (the input is token ids (T, B)) "
                             "and input_size (the input is features (T, B, D)); got "
                             f"vocab_size={vocab_size!r}, input_size={input_size!r}")
        if cell not in LAYERS:
            raise ValueError(f"cell must be one of {sorted(LAYERS)}; got {cell!r}")
        self.cell = cell
        self.rng = check_rng(rng)
        self.dropout = check.probability("dropout", dropout)
        self.vocab_size = None if vocab_size is None else check.positive_int("vocab_size",
                                                                              vocab_size)
        if self.vocab_size is not None:
            self.embedding = Embedding(self.vocab_size, embedding_dim, self.dtype, self.rng)
            self.input_size = self.embedding.embedding_dim
        else:
            self.input_size = check.positive_int("input_size", input_size)
        kw: dict[str, Any] = {"nonlinearity": nonlinearity} if cell == "rnn" else {}
        self.rnn: RNNBase = LAYERS[cell](self.input_size, hidden_size, num_layers,
                                         dropout=self.dropout, bidirectional=bidirectional,
                                         dtype=self.dtype, rng=self.rng, **kw)
        self.fc = Linear(self.rnn.num_directions * self.rnn.hidden_size, self.num_classes,
                         dtype=self.dtype, rng=self.rng)

    def __repr__(self) -> str:
        src = (f"vocab_size={self.vocab_size}, embedding_dim={self.input_size}"
               if self.vocab_size is not None else f"input_size={self.input_size}")
        return (f"{type(self).__name__}({self.num_classes}, {src}, rnn={self.rnn!r}"
                f"{self._extra_repr()})")

    def _extra_repr(self) -> str:
        return ""

    # ---- the door -----------------------------------------------------------------------------
    def _check_input(self, x: Any, lengths: Any) -> tuple[Array, Array | None]:
        """x (T, B) ids or (T, B, D) features, lengths (B,) in [1, T] -> (x, lengths)."""
        if self.vocab_size is not None:
            if isinstance(x, np.ndarray) and x.dtype.kind == "f":
                raise TypeError(f"this model reads token ids (T, B) through its embedding; got "
                                f"a float array of shape {x.shape}. Build it with "
                                "input_size=D (and no vocab_size) to read features (T, B, D).")
            x = check.ids("x", x, self.vocab_size)
            if x.ndim != 2:
                hint = " For one sequence use x[:, None]." if x.ndim == 1 else ""
                raise ValueError(f"x must hold token ids of shape (T, B) (time-major); got "
                                 f"shape {x.shape}.{hint}")
        else:
            D = self.input_size
            x = check.array("x", x, self.dtype, f"(T, B, {D})")
            if x.ndim != 3 or x.shape[2] != D:
                hint = (" For one sequence use x[:, None, :]." if x.ndim == 2 and x.shape[1] == D
                        else f" The last axis holds the {D} input features.")
                raise ValueError(f"x must have shape (T, B, {D}) (time-major); got "
                                 f"{x.shape}.{hint}")
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"x must have at least one time step and one sequence; got shape "
                             f"{x.shape}")
        return x, check.lengths(lengths, x.shape[0], x.shape[1])

    def _check_labels(self, name: str, labels: Any, shape: tuple[int, ...], words: str
                      ) -> Array:
        C = self.num_classes
        if not isinstance(labels, np.ndarray) or labels.dtype == bool or \
                labels.dtype.kind not in "iu":
            got = labels.dtype if isinstance(labels, np.ndarray) else type(labels).__name__
            raise TypeError(f"{name} must be an integer NumPy array of class indices {words}; "
                            f"got {got}. Use np.asarray({name}, dtype=np.int64).")
        if labels.shape != shape:
            raise ValueError(f"{name} must have shape {words} = {shape}, one class per "
                             f"{'step' if len(shape) == 2 else 'sequence'}; got {labels.shape}")
        if labels.size and (labels.min() < 0 or labels.max() >= C):
            bad = np.unique(labels[(labels < 0) | (labels >= C)])[:10].tolist()
            raise ValueError(f"{name} must lie in [0, {C}) (num_classes={C}); got {bad}")
        return labels

    def _check_logits(self, logits: Any, ndim: int) -> Array:
        words = "(B, C)" if ndim == 2 else "(T, B, C)"
        logits = check.array("logits", logits, self.dtype, words)
        if logits.ndim != ndim or logits.shape[-1] != self.num_classes:
            raise ValueError(f"logits must have shape {words} with C={self.num_classes}; got "
                             f"{logits.shape}. Pass the logits returned by forward.")
        return logits

    # ---- the front end ------------------------------------------------------------------------
    def _encode(self, x: Array, lengths: Array | None, keep: bool
                ) -> tuple[Array, State, EncoderCache | None]:
        """x -> (y (T, B, K*H), h_n, cache of the embedding, its dropout and the rnn)."""
        ids = in_mask = None
        if self.vocab_size is not None:
            inp, ids = self.embedding.forward(x)                           # (T, B, E)
            inp, in_mask = self._drop(inp)
        else:
            inp = x
        if keep:
            y, hn, rcache = self.rnn.forward(inp, None, lengths)
            return y, hn, EncoderCache(ids, in_mask, rcache)
        y, hn = self.rnn(inp, None, lengths)
        return y, hn, None

    def _encode_backward(self, dy: Array | None, dhn: State | None, cache: EncoderCache
                         ) -> Array | None:
        dx, _ = self.rnn.backward(dy, dhn, cache.rnn)
        assert dx is not None                       # the input is an array, never a OneHot
        if cache.ids is None:
            return dx
        # inp = embedding[ids] * in_mask
        if cache.in_mask is not None:
            dx = dx * cache.in_mask
        self.embedding.backward(dx, cache.ids)
        return None

    def _drop(self, a: Array) -> tuple[Array, Array | None]:
        if not (self.training and self.dropout > 0):
            return a, None
        mask = dropout_mask(self.rng, a.shape, self.dropout, self.dtype)
        return a * mask, mask


# ------------------------------------------------------------------------------------------------
# many-to-one


@dataclass
class ClassifierCache:
    """What ``SequenceClassifier.backward`` needs; returned by forward, never kept on the model."""

    owner: int
    T: int
    B: int
    encoder: EncoderCache
    lengths: Array | None
    arg: Array | None             # max pooling: the step each pooled feature came from
    mask: Array | None            # dropout on the pooled features
    fc_in: Array                  # (B, K*H), after dropout


class SequenceClassifier(_SequenceModel):
    """Many-to-one: one label per sequence.

        x (T, B) ids -> embedding (T, B, E)          or  x (T, B, D) features
        y, h_n = rnn(x, lengths)                     y (T, B, K*H), h_n (L*K, B, H)
        pooled = pool(y, h_n, lengths)               (B, K*H)
        logits = pooled W^T + b                      (B, C)

    Pooling, always over each sequence's valid steps t < length:

    - ``"last"``: the top layer's final state from h_n: the forward direction at the sequence's
      own last step, and (bidirectional) the reverse direction after reading t = 0;
    - ``"mean"``: ``sum_{t < len} y_t / len``;
    - ``"max"``: the largest ``y_t`` per feature.

    Parameters
    ----------
    num_classes : int
        C.
    vocab_size : int, optional
        Give it for token-id input: the model gets an ``embedding`` (V, E).
    embedding_dim : int, default 32
        E, with ``vocab_size``.
    input_size : int, optional
        D, for dense input (T, B, D) instead of ids. Give exactly one of vocab_size and
        input_size.
    hidden_size, num_layers, bidirectional : as in :class:`rnnkit.RNN`.
    cell : {"rnn", "gru", "lstm"}, default "gru"
    pooling : {"last", "mean", "max"}, default "last"
    dropout : float, default 0
        In training mode: on the embedding output (token input), between recurrent layers
        (as PyTorch's) and on the pooled features.
    nonlinearity : {"tanh", "relu"}
        For cell="rnn".
    dtype : np.float32 or np.float64
    rng : numpy.random.Generator, int seed or None
        Initial weights and dropout masks.
    """

    def __init__(self, num_classes: int, *, vocab_size: int | None = None,
                 embedding_dim: int = 32, input_size: int | None = None, hidden_size: int = 64,
                 cell: str = "gru", num_layers: int = 1, bidirectional: bool = False,
                 pooling: str = "last", dropout: float = 0.0, nonlinearity: str = "tanh",
                 dtype: Any = np.float32, rng: np.random.Generator | int | None = None) -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}; got {pooling!r}")
        super().__init__(num_classes, vocab_size=vocab_size, embedding_dim=embedding_dim,
                         input_size=input_size, hidden_size=hidden_size, cell=cell,
                         num_layers=num_layers, bidirectional=bidirectional, dropout=dropout,
                         nonlinearity=nonlinearity, dtype=dtype, rng=rng)
        self.pooling = pooling

    def _extra_repr(self) -> str:
        return f", pooling={self.pooling!r}"

    def _pool(self, y: Array, hn: State, lengths: Array | None) -> tuple[Array, Array | None]:
        if self.pooling == "last":
            return top_layer_state(hn, self.rnn.num_directions), None
        if self.pooling == "mean":
            return mean_pool(y, lengths), None
        return max_pool(y, lengths)

    def forward(self, x: Array, lengths: Any = None) -> tuple[Array, ClassifierCache]:
        """Training forward: ``logits (B, C), cache``."""
        x, lens = self._check_input(x, lengths)
        y, hn, ecache = self._encode(x, lens, keep=True)
        assert ecache is not None
        pooled, arg = self._pool(y, hn, lens)                                # (B, K*H)
        pooled, mask = self._drop(pooled)
        logits, _ = self.fc.forward(pooled)                                  # (B, C)
        T, B = x.shape[:2]
        return logits, ClassifierCache(id(self), T, B, ecache, lens, arg, mask, pooled)

    def backward(self, dlogits: Array, cache: ClassifierCache) -> Array | None:
        """Adds every parameter's gradient into ``grads``. Returns dL/dx for dense input
        (T, B, D), None for token ids (the embedding's gradient is in ``grads``)."""
        check.cache(cache, ClassifierCache, self,
                    "the second value returned by SequenceClassifier.forward", "model")
        dlogits = self._check_logits(dlogits, 2)
        check.shape("dlogits", dlogits, (cache.B, self.num_classes), "(B, C)",
                    "dlogits is dL/dlogits: it has the shape of the logits.")
        # logits = pooled W^T + b
        dpooled = self.fc.backward(dlogits, cache.fc_in)
        if cache.mask is not None:
            dpooled = dpooled * cache.mask
        r = self.rnn
        dy: Array | None = None
        dhn: State | None = None
        if self.pooling == "last":
            # pooled = [h_n[L*K-K], ..., h_n[L*K-1]]
            dhn = top_layer_state_backward(dpooled, r.num_layers, r.num_directions,
                                           r.math.has_cell)
        elif self.pooling == "mean":
            # pooled = sum_{t < len} y_t / len
            dy = mean_pool_backward(dpooled, cache.T, cache.lengths)
        else:
            # pooled = y[arg]
            assert cache.arg is not None
            dy = max_pool_backward(dpooled, cache.T, cache.arg)
        return self._encode_backward(dy, dhn, cache.encoder)

    def __call__(self, x: Array, lengths: Any = None) -> Array:
        """Inference: logits (B, C); keeps no per-step activations. Dropout follows the
        model's mode (``train()`` / ``eval()``)."""
        x, lens = self._check_input(x, lengths)
        y, hn, _ = self._encode(x, lens, keep=False)
        pooled, _ = self._pool(y, hn, lens)
        pooled, _ = self._drop(pooled)
        return self.fc.forward(pooled)[0]

    def predict(self, x: Array, lengths: Any = None) -> Array:
        """The most likely class of each sequence, (B,) int64, without dropout."""
        with eval_mode(self):
            return np.asarray(self(x, lengths).argmax(axis=-1), dtype=np.int64)

    def loss(self, logits: Array, labels: Array) -> tuple[float, Array]:
        """Mean cross-entropy over the batch and its gradient dL/dlogits (B, C)."""
        logits = self._check_logits(logits, 2)
        labels = self._check_labels("labels", labels, logits.shape[:1], "(B,)")
        loss, dlogits, _ = softmax_cross_entropy(logits, labels)
        return loss, dlogits


# ------------------------------------------------------------------------------------------------
# many-to-many, aligned


@dataclass
class TaggerCache:
    """What ``SequenceTagger.backward`` needs; returned by forward, never kept on the model."""

    owner: int
    T: int
    B: int
    encoder: EncoderCache
    mask: Array | None            # dropout on the recurrent output
    fc_in: Array                  # (T, B, K*H), after dropout


class SequenceTagger(_SequenceModel):
    """Many-to-many, aligned: one label per time step.

        x (T, B) ids -> embedding (T, B, E)          or  x (T, B, D) features
        y = rnn(x, lengths)                          (T, B, K*H), both directions by default
        logits_t = y_t W^T + b                       (T, B, C)

    With ``bidirectional=True`` (the default) each step's label may depend on the whole
    sequence, before and after it. Padded steps (t >= length) get logits from a zero state;
    :meth:`loss` leaves them out and :meth:`predict` marks them -1.

    Parameters are those of :class:`SequenceClassifier` without ``pooling``; ``dropout`` acts
    on the embedding output, between recurrent layers and on the recurrent output.
    """

    def __init__(self, num_classes: int, *, vocab_size: int | None = None,
                 embedding_dim: int = 32, input_size: int | None = None, hidden_size: int = 64,
                 cell: str = "gru", num_layers: int = 1, bidirectional: bool = True,
                 dropout: float = 0.0, nonlinearity: str = "tanh", dtype: Any = np.float32,
                 rng: np.random.Generator | int | None = None) -> None:
        super().__init__(num_classes, vocab_size=vocab_size, embedding_dim=embedding_dim,
                         input_size=input_size, hidden_size=hidden_size, cell=cell,
                         num_layers=num_layers, bidirectional=bidirectional, dropout=dropout,
                         nonlinearity=nonlinearity, dtype=dtype, rng=rng)

    def forward(self, x: Array, lengths: Any = None) -> tuple[Array, TaggerCache]:
        """Training forward: ``logits (T, B, C), cache``."""
        x, lens = self._check_input(x, lengths)
        y, _, ecache = self._encode(x, lens, keep=True)
        assert ecache is not None
        y, mask = self._drop(y)
        logits, _ = self.fc.forward(y)                                       # (T, B, C)
        T, B = x.shape[:2]
        return logits, TaggerCache(id(self), T, B, ecache, mask, y)

    def backward(self, dlogits: Array, cache: TaggerCache) -> Array | None:
        """Adds every parameter's gradient into ``grads``; returns dL/dx for dense input,
        None for token ids."""
        check.cache(cache, TaggerCache, self,
                    "the second value returned by SequenceTagger.forward", "model")
        dlogits = self._check_logits(dlogits, 3)
        check.shape("dlogits", dlogits, (cache.T, cache.B, self.num_classes), "(T, B, C)",
                    "dlogits is dL/dlogits: it has the shape of the logits.")
        # logits_t = y_t W^T + b
        dy = self.fc.backward(dlogits, cache.fc_in)
        if cache.mask is not None:
            dy = dy * cache.mask
        return self._encode_backward(dy, None, cache.encoder)

    def __call__(self, x: Array, lengths: Any = None) -> Array:
        """Inference: logits (T, B, C). Dropout follows the model's mode."""
        x, lens = self._check_input(x, lengths)
        y, _, _ = self._encode(x, lens, keep=False)
        y, _ = self._drop(y)
        return self.fc.forward(y)[0]

    def predict(self, x: Array, lengths: Any = None) -> Array:
        """The most likely tag at every step, (T, B) int64, -1 at padded steps; no dropout."""
        x, lens = self._check_input(x, lengths)
        with eval_mode(self):
            tags = np.asarray(self(x, lens).argmax(axis=-1), dtype=np.int64)
        if lens is not None:
            tags[~valid_mask(lens, x.shape[0])] = -1
        return tags

    def loss(self, logits: Array, tags: Array, lengths: Any = None) -> tuple[float, Array]:
        """Mean cross-entropy over the valid steps (t < length) and its gradient dL/dlogits
        (T, B, C), zero at padded steps. Whatever ``tags`` holds at padded steps is ignored."""
        logits = self._check_logits(logits, 3)
        T, B, _ = logits.shape
        lens = check.lengths(lengths, T, B)
        mask = valid_mask(lens, T)
        if mask is not None and isinstance(tags, np.ndarray) and tags.shape == (T, B) and \
                tags.dtype.kind in "iu":
            tags = np.where(mask, tags, 0)            # padding may hold any placeholder
        tags = self._check_labels("tags", tags, (T, B), "(T, B)")
        loss, dlogits, _ = softmax_cross_entropy(logits, tags, mask)
        return loss, dlogits
