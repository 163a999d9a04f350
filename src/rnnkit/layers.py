"""The layers around a recurrent core: token embedding, linear output, dropout, and the fused
softmax cross-entropy. Each forward returns a cache; each backward takes it and adds parameter
gradients into ``grads``. Names and shapes are PyTorch's (``weight``, ``bias``).

Letters: N rows (any leading shape), V vocabulary, E embedding size, I/O in and out features.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import checks as check
from .functional import log_softmax
from .module import Module, check_rng

Array = np.ndarray


class Embedding(Module):
    """``out[...] = weight[ids[...]]``; weight (V, E) initialised N(0, 1) as in PyTorch.

    Backward is a scatter-add of the output gradient into the rows that were looked up.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, dtype: Any = np.float32,
                 rng: np.random.Generator | int | None = None) -> None:
        super().__init__(dtype)
        self.num_embeddings = check.positive_int("num_embeddings", num_embeddings)
        self.embedding_dim = check.positive_int("embedding_dim", embedding_dim)
        rng = check_rng(rng)
        self.register_parameter("weight", rng.standard_normal(
            (self.num_embeddings, self.embedding_dim)).astype(self.dtype))

    def forward(self, ids: Array) -> tuple[Array, Array]:
        ids = check.ids("ids", ids, self.num_embeddings)
        return self._params["weight"][ids], ids          # (..., E); the cache is the ids

    def backward(self, dout: Array, ids: Array) -> None:
        # out = weight[ids]:  dweight[v] += sum of dout over positions where ids == v
        np.add.at(self._grads["weight"], ids.reshape(-1),
                  dout.reshape(-1, self.embedding_dim))


class Linear(Module):
    """``y = x W^T + b``; W (O, I), b (O,), both U(-1/sqrt(I), 1/sqrt(I)) as in PyTorch."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 dtype: Any = np.float32, rng: np.random.Generator | int | None = None) -> None:
        super().__init__(dtype)
        self.in_features = check.positive_int("in_features", in_features)
        self.out_features = check.positive_int("out_features", out_features)
        rng = check_rng(rng)
        bound = 1.0 / np.sqrt(self.in_features)
        self.register_parameter("weight", rng.uniform(
            -bound, bound, (self.out_features, self.in_features)).astype(self.dtype))
        if bias:
            self.register_parameter("bias", rng.uniform(
                -bound, bound, (self.out_features,)).astype(self.dtype))

    @property
    def bias(self) -> Array | None:
        """b (O,), the live array; None for a layer made with ``bias=False``."""
        return self._params.get("bias")

    def forward(self, x: Array) -> tuple[Array, Array]:
        y = x @ self._params["weight"].T                 # (..., O)
        if "bias" in self._params:
            y += self._params["bias"]
        return y, x

    def backward(self, dy: Array, x: Array) -> Array:
        dy2 = dy.reshape(-1, self.out_features)
        # y = x W^T + b:  dW = dy^T x,  db = sum dy,  dx = dy W
        self._grads["weight"] += dy2.T @ x.reshape(-1, self.in_features)
        if "bias" in self._grads:
            self._grads["bias"] += dy2.sum(axis=0)
        return dy @ self._params["weight"]


def dropout_mask(rng: np.random.Generator, shape: tuple[int, ...], p: float,
                 dtype: np.dtype) -> Array:
    """Inverted dropout: each entry is 0 with probability p, else 1 / (1 - p)."""
    keep = 1.0 - p
    mask = (rng.random(shape) < keep).astype(dtype)
    mask /= dtype.type(keep)
    return mask


def softmax_cross_entropy(logits: Array, targets: Array, mask: Array | None = None
                          ) -> tuple[float, Array, int]:
    """Mean cross-entropy ``-log softmax(logits)[target]`` over the counted positions, and its
    gradient with respect to the logits, fused: ``(softmax(logits) - onehot(target)) / n``.

    logits (..., V); targets (...) ints; mask (...) bool, False positions are not counted.
    Returns ``(loss, dlogits, n)`` with n the number of counted positions (loss is summed
    over time as in the chapter, then divided by n so the scale does not depend on T * B).
    """
    V = logits.shape[-1]
    flat = logits.reshape(-1, V)
    t = targets.reshape(-1)
    logp = log_softmax(flat, axis=-1)                    # (N, V)
    rows = np.arange(t.size)
    nll = -logp[rows, t]                                 # (N,)
    m = None if mask is None else mask.reshape(-1)
    n = t.size if m is None else int(m.sum())
    loss = float((nll if m is None else nll[m]).sum(dtype=np.float64)) / max(n, 1)
    # d loss / d logits = (softmax - onehot) / n, zero where not counted
    grad = np.exp(logp, out=logp)
    grad[rows, t] -= 1
    if m is not None:
        grad[~m] = 0
    grad /= grad.dtype.type(max(n, 1))
    return loss, grad.reshape(logits.shape), n
