"""Models built from the core layers. ``LanguageModel``: the chapter's sequence generator.

    tokens (T, B) -> embedding (or one-hot) -> stacked RNN / GRU / LSTM -> linear -> logits

Its parameters are named like the equivalent PyTorch model (``embedding.weight``,
``rnn.weight_ih_l0``, ..., ``decoder.weight``, ``decoder.bias``), so its state dict loads into
that model and gives the same logits. Forward and backward are written once and shared by
training, evaluation and generation.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from . import checks as check
from .kernels import accelerate
from .layers import Embedding, Linear, dropout_mask
from .module import Module, check_dtype, check_rng
from .recurrent import LAYERS, RecurrentCache, RNNBase, State
from .scan import OneHot

Array = np.ndarray


@dataclass(frozen=True)
class LMConfig:
    """The shape of a language model; stored in every checkpoint as JSON."""

    vocab_size: int
    cell: str = "lstm"
    embedding_dim: int = 64
    hidden_size: int = 256
    num_layers: int = 2
    dropout: float = 0.0
    one_hot: bool = False        # the chapter's one-hot input instead of an embedding
    nonlinearity: str = "tanh"   # for cell="rnn"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        check.positive_int("vocab_size", self.vocab_size)
        if self.cell not in LAYERS:
            raise ValueError(f"cell must be one of {sorted(LAYERS)}; got {self.cell!r}")
        check.positive_int("embedding_dim", self.embedding_dim)
        check.positive_int("hidden_size", self.hidden_size)
        check.positive_int("num_layers", self.num_layers)
        check.probability("dropout", self.dropout)
        if self.nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu'; got {self.nonlinearity!r}")
        check_dtype(self.dtype)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Any) -> LMConfig:
        if not isinstance(d, dict):
            raise ValueError(f"model config must be a JSON object; got {type(d).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"model config has unknown keys {unknown}; expected {sorted(names)}")
        if "vocab_size" not in d:
            raise ValueError("model config lacks vocab_size")
        try:
            return cls(**d)
        except TypeError as e:
            raise ValueError(f"bad model config: {e}") from e


@dataclass
class LMCache:
    ids: Array
    emb: Array | None             # embedding cache (the ids) or None for one-hot
    in_mask: Array | None         # dropout on the recurrent input
    rnn: RecurrentCache
    out_mask: Array | None        # dropout on the recurrent output
    dec_in: Array                 # decoder input (after dropout)


class LanguageModel(Module):
    """Token ids (T, B) -> logits (T, B, V) over the next token, with the recurrent state.

    Dropout (training mode only) acts as in PyTorch's word-language-model example: on the
    embedding output, between recurrent layers, and on the last layer's output. With
    ``one_hot=True`` the input is the chapter's one-hot vectors, passed as ``OneHot`` token
    ids (the first layer's input projection is a row lookup), with no input dropout.
    """

    def __init__(self, config: LMConfig, rng: np.random.Generator | int | None = None) -> None:
        if not isinstance(config, LMConfig):
            raise TypeError(f"config must be an LMConfig; got {type(config).__name__}")
        super().__init__(config.dtype)
        self.config = config
        self.rng = check_rng(rng)
        V, E, H = config.vocab_size, config.embedding_dim, config.hidden_size
        if not config.one_hot:
            self.embedding = Embedding(V, E, self.dtype, self.rng)
        cls = LAYERS[config.cell]
        kw: dict[str, Any] = {"nonlinearity": config.nonlinearity} if config.cell == "rnn" else {}
        self.rnn: RNNBase = cls(V if config.one_hot else E, H, config.num_layers,
                                dropout=config.dropout, dtype=self.dtype, rng=self.rng, **kw)
        self.decoder = Linear(H, V, dtype=self.dtype, rng=self.rng)

    def __repr__(self) -> str:
        return f"LanguageModel({self.config})"

    # the recurrent layer draws its dropout masks from the same generator as the model
    def _input(self, ids: Array) -> tuple[Array | OneHot, Array | None]:
        if self.config.one_hot:
            return OneHot(ids, self.config.vocab_size), None   # no (T, B, V) array is built
        return self.embedding.forward(ids)

    def _check(self, ids: Any) -> Array:
        ids = check.ids("ids", ids, self.config.vocab_size)
        if ids.ndim != 2 or ids.shape[0] == 0 or ids.shape[1] == 0:
            raise ValueError(f"ids must have shape (T, B) (time-major); got {ids.shape}. "
                             "For one sequence use ids[:, None].")
        return ids

    def forward(self, ids: Array, hx: State | None = None, lengths: Any = None
                ) -> tuple[Array, State, LMCache]:
        """Training forward: ``logits, hn, cache``."""
        ids = self._check(ids)
        x, emb = self._input(ids)
        p = self.config.dropout if self.training else 0.0
        in_mask = out_mask = None
        if p > 0 and not isinstance(x, OneHot):
            in_mask = dropout_mask(self.rng, x.shape, p, self.dtype)
            x = x * in_mask
        y, hn, rcache = self.rnn.forward(x, hx, lengths)
        if p > 0:
            out_mask = dropout_mask(self.rng, y.shape, p, self.dtype)
            y = y * out_mask
        logits, _ = self.decoder.forward(y)
        return logits, hn, LMCache(ids, emb, in_mask, rcache, out_mask, y)

    def __call__(self, ids: Array, hx: State | None = None, lengths: Any = None
                 ) -> tuple[Array, State]:
        """Inference: ``logits, hn``; keeps no per-step activations (memory flat in T)."""
        ids = self._check(ids)
        x, _ = self._input(ids)
        p = self.config.dropout if self.training else 0.0
        if p > 0 and not isinstance(x, OneHot):
            x = x * dropout_mask(self.rng, x.shape, p, self.dtype)
        y, hn = self.rnn(x, hx, lengths)
        if p > 0:
            y = y * dropout_mask(self.rng, y.shape, p, self.dtype)
        logits, _ = self.decoder.forward(y)
        return logits, hn

    def backward(self, dlogits: Array, cache: LMCache, dhn: State | None = None) -> State:
        """Adds every parameter's gradient into ``grads``; returns dL/dhx."""
        if not isinstance(cache, LMCache):
            raise TypeError("cache must be the third value returned by LanguageModel.forward")
        dy = self.decoder.backward(dlogits, cache.dec_in)
        if cache.out_mask is not None:
            dy *= cache.out_mask
        dx, dhx = self.rnn.backward(dy, dhn, cache.rnn)
        if dx is not None:                            # embedding input (one-hot has none)
            if cache.in_mask is not None:
                dx *= cache.in_mask
            assert cache.emb is not None
            self.embedding.backward(dx, cache.emb)
        return dhx

    def stepper(self) -> Stepper:
        """A token-at-a-time inference engine over a snapshot of the current weights."""
        return Stepper(self)


class Stepper:
    """Token-at-a-time inference for generation, with the weights prepared once.

        step = model.stepper()
        logits, state = step(tokens, state)        # tokens (B,) ints; logits (B, V)

    It runs the same cell math as training (``kind.step``) on a snapshot of the weights taken
    when it is made; make a new one after the weights change. The first layer's input
    projection is a row lookup in a (V, G*H) table, ``(E W_ih^T + b)[token]`` (or
    ``(W_ih^T + b)[token]`` for one-hot input): exact, and no product per token. Eval mode:
    no dropout. Memory does not grow with the number of steps.
    """

    def __init__(self, model: LanguageModel) -> None:
        rnn = model.rnn
        if rnn.num_directions != 1:
            raise ValueError("a Stepper needs a unidirectional model")
        self.kind = accelerate(rnn.math, model.dtype)         # float32: the fused step
        self.num_layers = rnn.num_layers
        self.hidden_size = rnn.hidden_size
        self.vocab_size = model.config.vocab_size
        self.dtype = model.dtype
        self.layers = [rnn.math.prepare(*rnn.layer_weights(k)) for k in range(rnn.num_layers)]
        p0 = self.layers[0]
        table = p0.w_x.T if model.config.one_hot else model.embedding.weight @ p0.w_x.T
        self.table = np.ascontiguousarray(table + (p0.bias if p0.bias is not None else 0))
        self.dec_wT = np.ascontiguousarray(model.decoder.weight.T)          # (H, V)
        self.dec_b = model.decoder.bias
        self._stash: dict[int, Any] = {}

    def _buffers(self, B: int) -> Any:
        if B not in self._stash:
            H = self.hidden_size
            stash = self.kind.alloc(1, B, H, self.dtype, False)
            stash.keep = False                             # inference: no backward follows
            self._stash[B] = (stash, self.kind.workspace(B, H, self.dtype))
        return self._stash[B]

    def __call__(self, tokens: Array, state: State | None = None) -> tuple[Array, State]:
        tokens = check.ids("tokens", np.asarray(tokens), self.vocab_size)
        if tokens.ndim != 1:
            raise ValueError(f"tokens must have shape (B,); got {tokens.shape}")
        B, H, L = tokens.shape[0], self.hidden_size, self.num_layers
        if state is None:
            h = np.zeros((L, B, H), self.dtype)
            c = np.zeros((L, B, H), self.dtype) if self.kind.has_cell else None
        elif isinstance(state, tuple):
            h, c = state[0].copy(), state[1].copy()
        else:
            h, c = state.copy(), None
        stash, ws = self._buffers(B)
        gx = self.table[tokens]                                  # (B, G*H): the lookup
        for layer, p in enumerate(self.layers):
            if layer:
                gx = h[layer - 1] @ p.w_x.T                       # (B, G*H)
                if p.bias is not None:
                    gx += p.bias
            self.kind.step(stash, 0, B, gx, h[layer], None if c is None else c[layer], p, ws)
        logits = h[L - 1] @ self.dec_wT
        if self.dec_b is not None:
            logits += self.dec_b
        return logits, ((h, c) if c is not None else h)


def parameter_shapes(config: LMConfig) -> Iterator[tuple[str, tuple[int, ...]]]:
    """``(name, shape)`` of every parameter of ``LanguageModel(config)``, in its order, one at
    a time and without allocating: a checkpoint's tensors are checked against them before the
    model is built, and a config claiming far more than the file holds fails at once."""
    V, E, H, L = config.vocab_size, config.embedding_dim, config.hidden_size, config.num_layers
    G = LAYERS[config.cell].math_class.gates * H
    if not config.one_hot:
        yield "embedding.weight", (V, E)
    for k in range(L):
        yield f"rnn.weight_ih_l{k}", (G, H if k else (V if config.one_hot else E))
        yield f"rnn.weight_hh_l{k}", (G, H)
        yield f"rnn.bias_ih_l{k}", (G,)
        yield f"rnn.bias_hh_l{k}", (G,)
    yield "decoder.weight", (V, H)
    yield "decoder.bias", (V,)


def check_parameters(config: LMConfig, specs: dict[str, tuple[str, tuple[int, ...]]],
                     prefix: str = "") -> None:
    """Raise ValueError unless ``specs`` (a file's ``name -> (dtype code, shape)``, read before
    any tensor is) holds exactly the parameters of ``LanguageModel(config)`` under ``prefix``,
    each of the config's dtype and the shape it needs; names without ``prefix`` are ignored.
    Stops at the first tensor missing, so a config claiming more than the file holds fails
    at once and nothing is allocated from it."""
    code = "F32" if config.dtype == "float32" else "F64"
    count = 0
    for name, shape in parameter_shapes(config):
        got = specs.get(prefix + name)
        if got != (code, shape):
            raise ValueError(f"tensor '{prefix}{name}' should be {code} {shape} for the model its "
                             f"config describes; the file has "
                             f"{'none' if got is None else f'{got[0]} {got[1]}'}")
        count += 1
    extra = sum(n.startswith(prefix) for n in specs) - count
    if extra:
        raise ValueError(f"the file holds {extra} model tensor(s) its config does not describe")
