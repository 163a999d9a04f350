"""Generation from a language model: sampling, beam search, and scoring a text.

All of it runs the model's inference path one token at a time with the recurrent state carried
along, so memory does not grow with the generated length (no training caches). Randomness
comes only from the ``numpy.random.Generator`` passed in: a fixed seed gives identical text.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from .functional import log_softmax
from .models import LanguageModel
from .recurrent import State

Array = np.ndarray


@contextmanager
def eval_mode(model: LanguageModel) -> Iterator[None]:
    """Dropout off inside the block; the previous mode is restored afterwards."""
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def check_sampling(temperature: Any, top_k: Any, top_p: Any, vocab_size: int) -> None:
    """Validate sampling options; errors say the allowed range."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
            or not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy); got "
                         f"{temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int)
                              or top_k < 1):
        raise ValueError(f"top_k must be a positive int (at most the vocabulary size "
                         f"{vocab_size}) or None; got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float))
                              or not 0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1] or None; got {top_p!r}")


def choose_token(logits: Array, rng: np.random.Generator, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None) -> int:
    """Pick the next token id from one row of logits (V,).

    temperature 0 -> argmax. Otherwise logits / temperature, keep the top_k largest, keep the
    smallest set of most likely tokens whose probability reaches top_p, renormalise, draw.
    """
    if temperature == 0:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / temperature
    if top_k is not None and top_k < z.size:
        kth = np.partition(z, -top_k)[-top_k]
        z[z < kth] = -np.inf
    z -= z.max()
    p = np.exp(z)
    p /= p.sum()
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-p, kind="stable")
        cum = np.cumsum(p[order])
        cut = int(np.searchsorted(cum, top_p)) + 1       # tokens needed to reach top_p
        keep = np.zeros_like(p, dtype=bool)
        keep[order[:cut]] = True
        p[~keep] = 0.0
        p /= p.sum()
    cdf = np.cumsum(p)
    return int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), p.size - 1))


def _prime(model: LanguageModel, prime: Sequence[int]) -> tuple[Array, State]:
    ids = np.asarray(prime, dtype=np.int64)
    if ids.ndim != 1 or ids.size == 0:
        raise ValueError("the prime must hold at least one token")
    logits, state = model(ids[:, None])
    return logits[-1, 0], state


def sample(model: LanguageModel, prime: Sequence[int], length: int, *,
           rng: np.random.Generator, temperature: float = 1.0, top_k: int | None = None,
           top_p: float | None = None, end_id: int | None = None) -> list[int]:
    """Continue ``prime`` (token ids) by up to ``length`` tokens; stop after ``end_id``.

    Returns the generated ids (the prime not included; ``end_id`` included if it came).
    """
    check_sampling(temperature, top_k, top_p, model.config.vocab_size)
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise ValueError(f"length must be an int >= 0; got {length!r}")
    out: list[int] = []
    with eval_mode(model):
        logits, state = _prime(model, prime)
        step = model.stepper()
        token = np.empty(1, np.int64)
        for _ in range(length):
            nxt = choose_token(logits, rng, temperature, top_k, top_p)
            out.append(nxt)
            if end_id is not None and nxt == end_id:
                break
            token[0] = nxt
            step_logits, state = step(token, state)
            logits = step_logits[0]
    return out


@dataclass
class Beam:
    ids: list[int]
    logprob: float
    finished: bool = False


def _take(state: State, rows: Array) -> State:
    if isinstance(state, tuple):
        return (state[0][:, rows], state[1][:, rows])
    return state[:, rows]


def beam_search(model: LanguageModel, prime: Sequence[int], length: int, width: int = 5, *,
                end_id: int | None = None, length_penalty: float = 0.0) -> list[Beam]:
    """The most likely continuations of ``prime`` (log-probability under the model), best first.

    ``width`` hypotheses advance together as the rows of one batch. A hypothesis that emits
    ``end_id`` is finished. With ``length_penalty`` a > 0 finished hypotheses are ranked by
    logprob / len**a, which stops the search from favouring short endings.
    """
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"beam width must be a positive int; got {width!r}")
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"length must be a positive int; got {length!r}")
    V = model.config.vocab_size

    def rank(b: Beam) -> float:
        return b.logprob / (max(len(b.ids), 1) ** length_penalty)

    finished: list[Beam] = []
    with eval_mode(model):
        logits, state = _prime(model, prime)
        step = model.stepper()
        logp = log_softmax(logits.astype(np.float64))[None]           # (1, V)
        beams = [Beam([], 0.0)]
        for _ in range(length):
            scores = np.array([b.logprob for b in beams])[:, None] + logp   # (W, V)
            flat = scores.reshape(-1)
            k = min(width, flat.size)
            top = np.argpartition(-flat, k - 1)[:k]
            top = top[np.argsort(-flat[top], kind="stable")]
            new: list[Beam] = []
            parents: list[int] = []
            for j in top:
                parent, tok = divmod(int(j), V)
                b = Beam([*beams[parent].ids, tok], float(flat[j]))
                if end_id is not None and tok == end_id:
                    b.finished = True
                    finished.append(b)
                else:
                    new.append(b)
                    parents.append(parent)
            if not new:
                break
            if finished and len(finished) >= width and \
                    max(rank(f) for f in finished) >= max(b.logprob for b in new):
                break                      # no open hypothesis can beat the finished ones
            beams = new
            state = _take(state, np.array(parents))
            tokens = np.array([b.ids[-1] for b in beams], np.int64)          # (W,)
            step_logits, state = step(tokens, state)
            logp = log_softmax(step_logits.astype(np.float64), axis=-1)     # (W, V)
    pool = finished + [b for b in beams if not b.finished]
    return sorted(pool, key=rank, reverse=True)[:width]


@dataclass
class Score:
    """How well the model predicts a text: total log-likelihood and its per-token forms."""

    log_likelihood: float      # sum of ln p(token_t | tokens before), nats
    tokens: int                # tokens predicted (the first is only conditioned on)

    @property
    def nats_per_token(self) -> float:
        return -self.log_likelihood / max(self.tokens, 1)

    @property
    def perplexity(self) -> float:
        return math.exp(self.nats_per_token)

    @property
    def bits_per_token(self) -> float:
        return self.nats_per_token / math.log(2)


def score(model: LanguageModel, ids: Sequence[int], chunk: int = 512) -> Score:
    """Log-likelihood of ``ids[1:]`` given what precedes each, in chunks of ``chunk`` steps
    with the state carried across, so memory stays bounded for long texts."""
    arr = np.asarray(ids, dtype=np.int64)
    if arr.ndim != 1 or arr.size < 2:
        raise ValueError("scoring needs a text of at least two tokens")
    total = 0.0
    state: State | None = None
    with eval_mode(model):
        for start in range(0, arr.size - 1, chunk):
            x = arr[start:start + chunk]
            y = arr[start + 1:start + 1 + chunk]
            x = x[: y.size]
            logits, state = model(x[:, None], state)
            lp = log_softmax(logits[:, 0].astype(np.float64), axis=-1)
            total += float(lp[np.arange(y.size), y].sum())
    return Score(total, arr.size - 1)
