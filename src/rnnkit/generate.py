"""Decoding: sampling, beam search and scoring a text for the language model, and the one beam
search (:func:`beam_decode`) that the language model and seq2seq both drive with their own step.

All of it runs the model's inference path one token at a time with the recurrent state carried
along, so memory does not grow with the generated length (no training caches). Randomness
comes only from the ``numpy.random.Generator`` passed in: a fixed seed gives identical text.
Letters: W hypotheses in the beam, V vocabulary.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import checks as check
from .checks import check_scalar
from .functional import log_softmax
from .models import LanguageModel
from .module import eval_mode
from .recurrent import State
from .text import Vocab, detokenize, tokenize

Array = np.ndarray


def check_sampling(temperature: Any, top_k: Any, top_p: Any
                   ) -> tuple[float, int | None, float | None]:
    """Validate and return sampling options: temperature >= 0 (0 = greedy), top_k >= 1 or
    None, top_p in (0, 1] or None."""
    return (check_scalar(temperature, "temperature", float, min_val=0),
            check_scalar(top_k, "top_k", int, min_val=1, allow_none=True),
            check_scalar(top_p, "top_p", float, min_val=0, max_val=1,
                         include_boundaries="right", allow_none=True))


def prime_ids(vocab: Vocab, text: str = "") -> list[int]:
    """What generation starts from: ``<start>`` (if the vocabulary has it) and the tokens of
    ``text``; with neither, a newline (or id 0 where the text had none). A character the
    model never saw is an error naming it (a word becomes ``<unk>`` where there is one)."""
    ids = [] if vocab.start_id is None else [vocab.start_id]
    if text:
        toks = tokenize(text, vocab.level)
        unknown = sorted({t for t in toks if t not in vocab.stoi})
        if unknown and (vocab.level == "char" or vocab.unk_id is None):
            raise ValueError(f"the prime has {len(unknown)} token(s) the model never saw: "
                             + " ".join(repr(u) for u in unknown[:30]) + ". Use only those "
                             "of its training text (rnnkit info DIR lists the vocabulary).")
        ids += [int(i) for i in vocab.encode(toks)]
    return ids or [vocab.stoi.get("\n", 0)]


def continuation_text(vocab: Vocab, prime: str, ids: Sequence[int]) -> str:
    """What a user reads: ``prime`` followed by the generated ``ids`` decoded (a final
    ``<end>`` and the markers dropped; at word level a space between the two)."""
    ids = list(ids)
    if ids and vocab.end_id is not None and ids[-1] == vocab.end_id:
        ids = ids[:-1]
    text = vocab.decode(ids, skip_specials=True)
    return prime + (" " if vocab.level == "word" and prime and text else "") + text


def continuation_pieces(vocab: Vocab, prime: str, ids: Iterable[int]) -> Iterator[str]:
    """Each id's share of :func:`continuation_text`, as the ids come: after every id,
    ``prime + "".join(pieces so far) == continuation_text(vocab, prime, ids so far)``. A piece
    needs only the last written token (``detokenize``'s spacing looks one back), so a stream
    of n tokens costs O(n), not the O(n^2) of decoding the whole text each time."""
    drop = {vocab.start_id, vocab.end_id}
    prev: str | None = None                       # the last token written
    for i in ids:
        if i in drop:                             # markers are never written
            yield ""
            continue
        tok = vocab.itos[i]
        if prev is None:
            yield (" " if vocab.level == "word" and prime else "") + tok
        else:
            yield detokenize([prev, tok], vocab.level)[len(prev):]
        prev = tok


def sampling_probs(logits: Array, temperature: float = 1.0, top_k: int | None = None,
                   top_p: float | None = None) -> Array:
    """The distribution (V,) float64 that :func:`choose_token` draws the next token from.

    temperature 0 -> all mass on the argmax. Otherwise (logits - max) / temperature, keep the
    top_k largest, keep the smallest set of most likely tokens whose probability reaches top_p,
    renormalise. A temperature so small that the quotient overflows sends every token below
    the maximum to -inf: greedy, the limit, with ties split evenly among the maxima.
    """
    if temperature == 0:
        p = np.zeros(logits.shape[-1])
        p[int(np.argmax(logits))] = 1.0
        return p
    z = logits.astype(np.float64)
    z -= z.max()                                  # <= 0: the quotient overflows only to -inf
    with np.errstate(over="ignore"):
        z /= temperature
    if top_k is not None and top_k < z.size:
        kth = np.partition(z, -top_k)[-top_k]
        z[z < kth] = -np.inf
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
    return p


def choose_token(logits: Array, rng: np.random.Generator, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None) -> int:
    """Pick the next token id from one row of logits (V,): the argmax at temperature 0, else
    one draw from :func:`sampling_probs` (one ``rng.random()``)."""
    if temperature == 0:
        return int(np.argmax(logits))
    p = sampling_probs(logits, temperature, top_k, top_p)
    cdf = np.cumsum(p)
    return int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), p.size - 1))


def _prime(model: LanguageModel, prime: Sequence[int]) -> tuple[Array, State | None]:
    """-> the prime's last token (1,) and the state after the tokens before it (or None)."""
    ids = np.asarray(prime)
    if ids.ndim != 1 or ids.size == 0:
        raise ValueError("the prime must hold at least one token")
    ids = check.ids("prime", ids, model.config.vocab_size)
    state = model(ids[:-1, None])[1] if ids.size > 1 else None
    return ids[-1:].astype(np.int64), state


def sample(model: LanguageModel, prime: Sequence[int], length: int, *,
           rng: np.random.Generator, temperature: float = 1.0, top_k: int | None = None,
           top_p: float | None = None, end_id: int | None = None) -> list[int]:
    """Continue ``prime`` (token ids) by up to ``length`` tokens; stop after ``end_id``.

    Returns the generated ids (the prime not included; ``end_id`` included if it came).
    """
    return sample_many(model, prime, length, 1, rng=rng, temperature=temperature, top_k=top_k,
                       top_p=top_p, end_id=end_id)[0]


def sample_many(model: LanguageModel, prime: Sequence[int], length: int, num_samples: int, *,
                rng: np.random.Generator, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, end_id: int | None = None) -> list[list[int]]:
    """``num_samples`` continuations of ``prime`` drawn side by side (one batch of rows through
    the model per step). Row 0 draws from ``rng`` itself, so it is the text :func:`sample`
    gives with the same generator; row i > 0 from the i-th generator ``rng.spawn`` makes (an
    independent stream). A row stops after ``end_id``."""
    n = check_scalar(num_samples, "num_samples", int, min_val=1)
    outs: list[list[int]] = [[] for _ in range(n)]
    for _, tokens, drew in _draws(model, prime, length, n, rng, temperature, top_k, top_p,
                                  end_id):
        for i in drew:
            outs[i].append(int(tokens[i]))
    return outs


@dataclass
class Draw:
    """One generated token: its ``id`` and the ``logits`` (V,) it was drawn from."""

    id: int
    logits: Array


def stream(model: LanguageModel, prime: Sequence[int], length: int, *,
           rng: np.random.Generator, temperature: float = 1.0, top_k: int | None = None,
           top_p: float | None = None, end_id: int | None = None) -> Iterator[Draw]:
    """:func:`sample`, one token at a time as it is drawn: the same tokens for the same
    generator (``rnnkit serve`` streams these to the page)."""
    for logits, tokens, _ in _draws(model, prime, length, 1, rng, temperature, top_k, top_p,
                                    end_id):
        yield Draw(int(tokens[0]), logits[0])


def _draws(model: LanguageModel, prime: Sequence[int], length: int, n: int,
           rng: np.random.Generator, temperature: Any, top_k: Any, top_p: Any,
           end_id: int | None) -> Iterator[tuple[Array, Array, Array]]:
    """The one sampling loop: each step yields the logits (n, V), the tokens (n,) and the
    rows that drew a token this step (the rows still open)."""
    temperature, top_k, top_p = check_sampling(temperature, top_k, top_p)
    length = check_scalar(length, "length", int, min_val=0)
    rngs = [rng, *_spawn(rng, n - 1)]
    with eval_mode(model):
        token, state = _prime(model, prime)
        tokens = np.repeat(token, n)
        rows = np.zeros(n, dtype=np.intp)
        state = None if state is None else reorder(state, rows, 1)
        live = np.ones(n, dtype=bool)
        step = model.stepper()
        for _ in range(length):
            logits, state = step(tokens, state)
            drew = np.flatnonzero(live)
            for i in drew:
                tokens[i] = choose_token(logits[i], rngs[i], temperature, top_k, top_p)
                if end_id is not None and tokens[i] == end_id:
                    live[i] = False
            yield logits, tokens, drew
            if not live.any():
                break


def _spawn(rng: np.random.Generator, n: int) -> list[np.random.Generator]:
    if n == 0:
        return []
    try:
        return rng.spawn(n)
    except (TypeError, ValueError):       # a generator made without a SeedSequence
        return [np.random.default_rng(s) for s in rng.integers(0, 2**63, n)]


@dataclass
class Beam:
    """One hypothesis: its ids (``end_id`` last if it came), the sum of their log-probabilities,
    whether it ended with ``end_id``, and ``extra``: what the step returned beside each token's
    log-probabilities, stacked (n, ...) (seq2seq: the attention rows), or None."""

    ids: list[int]
    logprob: float
    finished: bool = False
    extra: Array | None = None


def reorder(state: State, rows: Array, axis: int) -> State:
    """The rows ``rows`` of a recurrent state, h or (h, c), along its batch ``axis``."""
    if isinstance(state, tuple):
        return (state[0].take(rows, axis), state[1].take(rows, axis))
    return state.take(rows, axis)


def _rank(logprob: Any, n: int, length_penalty: float) -> Any:
    """The beam's one ranking rule for hypotheses of n tokens: logprob / n**length_penalty."""
    return logprob / n ** length_penalty


def _best(x: Array, k: int) -> Array:
    """Indices of the k largest of x, largest first; ties in index order, as a stable sort."""
    idx = np.flatnonzero(x >= np.partition(x, -k)[-k]) if k < x.size else np.arange(x.size)
    return idx[np.argsort(-x[idx], kind="stable")[:k]]


def beam_decode(step: Callable[[Array, Array], tuple[Array, Array | None]], start: int,
                length: int, width: int, *, end_id: int | None = None,
                length_penalty: float = 0.0) -> list[Beam]:
    """Beam search with any decoder, given as its ``step``: the ``width`` best hypotheses of
    up to ``length`` tokens, best first.

    ``step(rows, tokens)`` moves the decoder on: row i of its new batch continues row
    ``rows[i]`` (W,) of the batch before (at the first call: of the initial state, one row)
    with token ``tokens[i]`` (W,), ``start`` at the first call. It returns the log-probabilities
    of the next token (W, V) and an array (W, ...) to keep with each token, or None.

    Each step keeps the ``width`` best one-token continuations of the open hypotheses; those
    that end with ``end_id`` are finished and leave the batch. A hypothesis of n tokens ranks
    by logprob / n**length_penalty: at each step, in the result, and to stop early, when
    ``width`` finished ones rank at least as high as any continuation of an open one could.
    Each step keeps only its tokens and backpointers (W,), and the hypotheses are rebuilt
    once at the end: time and memory are linear in ``length``.
    """
    length = check_scalar(length, "length", int, min_val=1)
    width = check_scalar(width, "width", int, min_val=1)
    a = check_scalar(length_penalty, "length_penalty", float)
    trail: list[tuple[Array, Array, Array, Array | None]] = []   # tokens, rows, parents, extra
    done: list[tuple[float, int, int, int, float]] = []   # heap: (rank, -order, t, j, lp)
    rows, tokens = np.zeros(1, np.int64), np.array([start], np.int64)
    logprob, opened = np.zeros(1), np.zeros(1, np.int64)
    for t in range(length):
        logp, extra = step(rows, tokens)
        scores = (logprob[:, None] + logp).reshape(-1)                   # (W * V,)
        top = _best(_rank(scores, t + 1, a), width)
        rows, tokens = np.divmod(top, logp.shape[1])
        trail.append((tokens, rows, opened[rows], extra))
        logprob, ended = scores[top], tokens == end_id
        for j in np.flatnonzero(ended).tolist():
            item = (_rank(logprob[j], t + 1, a), -(t * width + j), t, j, logprob[j])
            (heapq.heappush if len(done) < width else heapq.heappushpop)(done, item)
        opened = np.flatnonzero(~ended)
        rows, tokens, logprob = rows[opened], tokens[opened], logprob[opened]
        # the width best finished vs the best any continuation can reach (logprobs only
        # fall): logprob / length**a for a >= 0, its rank now for a < 0
        if not opened.size or (len(done) == width and done[0][0] >= _rank(
                logprob.max(), length if a >= 0 else t + 1, a)):
            break
    pool = done + [(_rank(lp, t + 1, a), -((t + 1) * width + j), t, j, lp)
                   for j, lp in zip(opened.tolist(), logprob, strict=True)]
    out = []
    for _, _, last, j, lp in sorted(pool, reverse=True)[:width]:
        ids, extras = [], []
        for s in range(last, -1, -1):                     # follow the backpointers home
            toks, rws, parents, extra = trail[s]
            ids.append(int(toks[j]))
            if extra is not None:
                extras.append(extra[rws[j]])
            j = parents[j]
        out.append(Beam(ids[::-1], float(lp), ids[0] == end_id,
                        np.stack(extras[::-1]) if extras else None))
    return out


def beam_search(model: LanguageModel, prime: Sequence[int], length: int, width: int = 5, *,
                end_id: int | None = None, length_penalty: float = 0.0) -> list[Beam]:
    """The ``width`` most likely continuations of ``prime`` (log-probability under the model)
    of up to ``length`` tokens, best first: :func:`beam_decode` with the model's step."""
    with eval_mode(model):
        token, state = _prime(model, prime)
        stepper = model.stepper()

        def step(rows: Array, tokens: Array) -> tuple[Array, None]:
            nonlocal state
            logits, state = stepper(tokens, None if state is None else reorder(state, rows, 1))
            return log_softmax(logits.astype(np.float64), axis=-1), None     # (W, V)

        return beam_decode(step, int(token[0]), length, width, end_id=end_id,
                           length_penalty=length_penalty)


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


def score(model: LanguageModel, ids: Sequence[int] | Array, chunk: int = 512) -> Score:
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
