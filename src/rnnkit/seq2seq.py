"""Encoder-decoder with additive (Bahdanau) attention: the chapter's translation shape.

    src (S, B) -> embedding -> bidirectional GRU/LSTM encoder -> keys k_j (S, B, K)
    final states (forward, reverse) -> bridge -> s_0
    for t: c_t, a_t = attention(s_{t-1}, k)              a_t (B, S), the plotted weights
           s_t = cell([embed(y_{t-1}); c_t], s_{t-1})    GRUCell / LSTMCell (query: its h)
           logits_t = W_out [s_t; c_t] + b_out           (B, V)

Letters: S source steps, T target steps, B batch, E embedding size, H hidden units (each
encoder direction and the decoder), K key size (2H, or H for a unidirectional encoder),
A attention size, V target vocabulary.

Attention (additive, Bahdanau et al. 2015), with the padding of each source masked out::

    u_j = tanh(q W_q^T + k_j W_k^T)          (B, A)    W_q (A, H), W_k (A, K)
    e_j = u_j v                              (B,)      v (A,)
    a   = softmax over the valid j of e      (B, S)    a_j = 0 where j >= src_length
    c   = sum_j a_j k_j                      (B, K)

It depends on the keys' content only, not on positions; ``k_j W_k^T`` is the same at every
decoder step, so the model computes it once per source (``proj_keys``) and projects its
accumulated gradient back once after the time loop.

Training uses teacher forcing: ``tgt_in`` is ``<start> y_1 ... y_n``; the logits at step t
predict ``y_{t+1}`` (``<end>`` last). The decoder's BPTT is written out below, step by step in
reverse, using the single-step cells' own forward/backward (the same gate math as every other
layer). Decoding (``greedy``, ``beam``) runs the same ``_step`` without caches.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import checks as check
from .functional import log_softmax, softmax, valid_mask
from .generate import beam_decode, reorder
from .layers import Embedding, Linear, softmax_cross_entropy
from .module import Module, check_dtype, check_rng
from .recurrent import GRU, LSTM, CellCache, GRUCell, LSTMCell, RecurrentCache, State

Array = np.ndarray


# ------------------------------------------------------------------------------------------------
# attention: forward and backward, pure functions


@dataclass
class AttentionCache:
    query: Array                  # (B, H)
    keys: Array                   # (S, B, K)
    u: Array                      # (S, B, A) tanh(q W_q^T + k W_k^T)
    weights: Array                # (S, B)
    params: Mapping[str, Array]
    projected_here: bool          # True: attention_forward computed k W_k^T itself


def attention_forward(query: Array, keys: Array, mask: Array | None,
                      params: Mapping[str, Array], proj_keys: Array | None = None
                      ) -> tuple[Array, Array, AttentionCache]:
    """Additive attention of one query per row over S keys.

    Parameters
    ----------
    query : (B, H)
    keys : (S, B, K)
    mask : (S, B) bool or None
        True where a key is real; False (padding) gets weight exactly 0. Every row needs at
        least one True.
    params : mapping with ``weight_query`` (A, H), ``weight_key`` (A, K), ``v`` (A,)
    proj_keys : (S, B, A) or None
        ``keys @ weight_key.T`` computed once by the caller; its gradient then comes back as
        ``grads["proj_keys"]`` and projecting it through ``weight_key`` is the caller's job.

    Returns ``(context (B, K), weights (B, S), cache)``.
    """
    w_q, w_k, v = params["weight_query"], params["weight_key"], params["v"]
    here = proj_keys is None
    if proj_keys is None:
        proj_keys = keys @ w_k.T                                 # (S, B, A)
    u = np.tanh(proj_keys + query @ w_q.T)                       # u_j = tanh(q W_q^T + k_j W_k^T)
    e = u @ v                                                    # e_j = u_j v          (S, B)
    if mask is not None:
        e = np.where(mask, e, -np.inf)
    a = softmax(e, axis=0)                                       # over the source steps
    context = np.einsum("sb,sbk->bk", a, keys)                   # c = sum_j a_j k_j
    return context, a.T, AttentionCache(query, keys, u, a, params, here)


def attention_backward(dcontext: Array, dweights: Array | None, cache: AttentionCache
                       ) -> dict[str, Array]:
    """The gradients of :func:`attention_forward`, given dL/dcontext (B, K) and optionally
    dL/dweights (B, S). Returns a dict: ``query`` (B, H), ``keys`` (S, B, K), ``proj_keys``
    (S, B, A), ``weight_query``, ``v``, and ``weight_key`` (zeros unless the forward projected
    the keys itself). ``keys`` includes the path through the projection only in that case."""
    q, k, u, a, p = cache.query, cache.keys, cache.u, cache.weights, cache.params
    # c = sum_j a_j k_j
    dkeys = a[:, :, None] * dcontext[None]                       # dk_j = a_j dc
    da = np.einsum("bk,sbk->sb", dcontext, k)                    # da_j = dc . k_j
    if dweights is not None:
        da += dweights.T
    # a = softmax(e) (masked entries have a_j = 0, so they get de_j = 0)
    de = a * (da - (a * da).sum(axis=0, keepdims=True))          # (S, B)
    # e_j = u_j v
    dv = np.einsum("sb,sba->a", de, u)
    du = de[:, :, None] * p["v"]                                 # (S, B, A)
    # u_j = tanh(q W_q^T + k_j W_k^T)
    dpre = du * (1 - u * u)
    dqp = dpre.sum(axis=0)                                       # (B, A): q W_q^T is in every j
    grads = {"query": dqp @ p["weight_query"], "weight_query": dqp.T @ q, "v": dv,
             "proj_keys": dpre, "weight_key": np.zeros_like(p["weight_key"])}
    if cache.projected_here:
        S, B, A = dpre.shape
        grads["weight_key"] = dpre.reshape(S * B, A).T @ k.reshape(S * B, -1)
        dkeys += dpre @ p["weight_key"]
    grads["keys"] = dkeys
    return grads


class Attention(Module):
    """Parameters of additive attention: ``weight_query`` (A, H), ``weight_key`` (A, K) and
    ``v`` (A,), each U(-1/sqrt(fan_in), 1/sqrt(fan_in)). The math is in the pure functions
    :func:`attention_forward` / :func:`attention_backward`."""

    def __init__(self, query_size: int, key_size: int, attention_size: int,
                 dtype: Any = np.float32, rng: np.random.Generator | int | None = None) -> None:
        super().__init__(dtype)
        rng = check_rng(rng)
        A, Hq, K = attention_size, query_size, key_size
        for name, shape, fan_in in (("weight_query", (A, Hq), Hq), ("weight_key", (A, K), K),
                                    ("v", (A,), A)):
            bound = 1.0 / np.sqrt(fan_in)
            self.register_parameter(name, rng.uniform(-bound, bound, shape).astype(self.dtype))

    @property
    def params(self) -> dict[str, Array]:
        return dict(self._params)

    def add_grads(self, grads: Mapping[str, Array]) -> None:
        """Add ``grads[name]`` into the gradient of each parameter named in ``grads``; other
        keys (``query``, ``keys``, ``proj_keys``) are ignored."""
        for name, g in self._grads.items():
            if name in grads:
                g += grads[name]


# ------------------------------------------------------------------------------------------------
# the model


@dataclass(frozen=True)
class Seq2SeqConfig:
    """The shape of a :class:`Seq2Seq`. ``start_id`` / ``end_id`` are the target's
    ``<start>`` and ``<end>`` ids."""

    src_vocab_size: int
    tgt_vocab_size: int
    start_id: int
    end_id: int
    cell: str = "gru"
    embedding_dim: int = 32
    hidden_size: int = 64
    attention_size: int = 64
    bidirectional: bool = True
    dtype: str = "float32"

    def __post_init__(self) -> None:
        check.positive_int("src_vocab_size", self.src_vocab_size)
        check.positive_int("tgt_vocab_size", self.tgt_vocab_size)
        for name in ("start_id", "end_id"):     # target token ids
            check.check_scalar(getattr(self, name), name, int, min_val=0,
                               max_val=self.tgt_vocab_size, include_boundaries="left")
        if self.cell not in ("gru", "lstm"):
            raise ValueError(f"cell must be 'gru' or 'lstm'; got {self.cell!r}")
        for name in ("embedding_dim", "hidden_size", "attention_size"):
            check.positive_int(name, getattr(self, name))
        check.check_scalar(self.bidirectional, "bidirectional", bool)
        check_dtype(self.dtype)


@dataclass
class Seq2SeqCache:
    """What ``backward`` needs; returned by ``forward``, never kept on the model."""

    src_ids: Array
    tgt_ids: Array
    tgt_valid: Array | None                  # (T, B) True where t < tgt_length
    enc: RecurrentCache
    keys: Array                              # (S, B, K) encoder outputs
    bridge: list[tuple[Array, Array]]        # per bridged state: (Linear input, tanh output)
    steps: list[tuple[AttentionCache, CellCache]] = field(default_factory=list)
    out_in: Array | None = None              # (T, B, H + K): [s_t; c_t]
    weights: Array | None = None             # (T, B, S) attention weights, for plotting


@dataclass
class Translation:
    """One decoded sequence: target ids without ``<end>``, the attention weights of every
    output step including the one that wrote ``<end>`` (rows), over the source's real steps
    (columns), the sum of the log-probabilities of the chosen tokens, and whether ``<end>``
    was reached within ``max_len``."""

    ids: list[int]
    weights: Array
    logprob: float
    finished: bool


class Seq2Seq(Module):
    """Encoder-decoder with additive attention (see the module docstring for the equations).

    Parameters (PyTorch-style names): ``src_embedding.weight`` (V_src, E), ``encoder.*`` (a
    bidirectional :class:`GRU` or :class:`LSTM`, E -> H per direction), ``bridge.weight``
    (H, K) and ``bridge.bias`` (and for the LSTM ``bridge_c.*`` for the cell state):
    ``s_0 = tanh([h_fwd; h_rev] W^T + b)``; ``tgt_embedding.weight`` (V, E);
    ``attention.weight_query`` (A, H), ``attention.weight_key`` (A, K), ``attention.v`` (A,);
    ``decoder.*`` (a :class:`GRUCell` or :class:`LSTMCell`, E + K -> H); ``output.weight``
    (V, H + K), ``output.bias``. K = 2H; with ``bidirectional=False`` in the config the
    encoder runs forward only and K = H (then a key k_j depends on src[:j + 1] alone, the
    same whatever follows: one way to help length generalization).

        logits, cache = model.forward(src, src_lengths, tgt_in, tgt_lengths)
        loss, dlogits = sequence_loss(logits, tgt_out, tgt_lengths)
        model.backward(dlogits, cache)                    # adds into model.grads
        out = model.greedy(src, src_lengths, max_len=30)  # list of Translation
    """

    def __init__(self, config: Seq2SeqConfig, rng: np.random.Generator | int | None = None
                 ) -> None:
        if not isinstance(config, Seq2SeqConfig):
            raise TypeError(f"config must be a Seq2SeqConfig; got {type(config).__name__}")
        super().__init__(config.dtype)
        self.config = config
        self.rng = check_rng(rng)
        E, H, A = config.embedding_dim, config.hidden_size, config.attention_size
        dt, r = self.dtype, self.rng
        lstm = config.cell == "lstm"
        self.src_embedding = Embedding(config.src_vocab_size, E, dt, r)
        K = 2 * H if config.bidirectional else H
        self.encoder = (LSTM if lstm else GRU)(E, H, bidirectional=config.bidirectional,
                                               dtype=dt, rng=r)
        self.bridge = Linear(K, H, dtype=dt, rng=r)
        if lstm:
            self.bridge_c = Linear(K, H, dtype=dt, rng=r)
        self.tgt_embedding = Embedding(config.tgt_vocab_size, E, dt, r)
        self.attention = Attention(H, K, A, dt, r)
        self.decoder = (LSTMCell if lstm else GRUCell)(E + K, H, dtype=dt, rng=r)
        self.output = Linear(H + K, config.tgt_vocab_size, dtype=dt, rng=r)

    def __repr__(self) -> str:
        return f"Seq2Seq({self.config})"

    # ---- the door --------------------------------------------------------------------------
    def _check_src(self, src: Any, src_lengths: Any) -> tuple[Array, Array | None]:
        src = check.ids("src", src, self.config.src_vocab_size)
        if src.ndim != 2 or 0 in src.shape:
            raise ValueError(f"src must have shape (S, B) (time-major token ids); got "
                             f"{src.shape}. For one sequence use src[:, None].")
        return src, check.lengths(src_lengths, *src.shape)

    # ---- the pieces shared by training and decoding --------------------------------------------
    def _encode(self, src: Array, lens: Array | None, keep: bool
                ) -> tuple[Array, Array, State, Array | None, Any]:
        """-> keys (S, B, K), k W_k^T (S, B, A), decoder s_0, mask (S, B) or None, caches."""
        x, emb_ids = self.src_embedding.forward(src)                     # (S, B, E)
        if keep:
            keys, hn, enc = self.encoder.forward(x, None, lens)          # (S, B, K)
        else:
            (keys, hn), enc = self.encoder(x, None, lens), None
        mask = valid_mask(lens, src.shape[0])
        finals = list(hn) if isinstance(hn, tuple) else [hn]             # h_n (and c_n)
        bridges = [self.bridge] + ([self.bridge_c] if len(finals) == 2 else [])
        saved = []
        for lin, f in zip(bridges, finals, strict=True):
            z = np.concatenate(list(f), axis=1)                          # [h_fwd; h_rev] (B, K)
            saved.append((z, np.tanh(lin.forward(z)[0])))                # s_0 = tanh(z W^T + b)
        s0 = [s for _, s in saved]
        state: State = (s0[0], s0[1]) if len(s0) == 2 else s0[0]
        proj_keys = keys @ self.attention.weight_key.T                   # (S, B, A), once
        return keys, proj_keys, state, mask, (emb_ids, enc, saved)

    def _step(self, y_prev: Array, state: State, keys: Array, proj_keys: Array,
              mask: Array | None, keep: bool
              ) -> tuple[Array, State, Array, Array, tuple[AttentionCache, CellCache] | None]:
        """One decoder step from the previous tokens (B,) -> (logits (B, V), state, weights
        (B, S), the output layer's input [s_t; c_t], caches or None)."""
        h = state[0] if isinstance(state, tuple) else state
        ctx, a, acache = attention_forward(h, keys, mask, self.attention.params, proj_keys)
        x = np.concatenate([self.tgt_embedding.weight[y_prev], ctx], axis=1)   # (B, E + K)
        if keep:
            state, ccache = self.decoder.forward(x, state)
        else:
            state, ccache = self.decoder(x, state), None
        h = state[0] if isinstance(state, tuple) else state
        o = np.concatenate([h, ctx], axis=1)                                # [s_t; c_t]
        logits = self.output.forward(o)[0]
        return logits, state, a, o, ((acache, ccache) if ccache is not None else None)

    # ---- training --------------------------------------------------------------------------
    def forward(self, src: Array, src_lengths: Any, tgt_in: Array, tgt_lengths: Any = None
                ) -> tuple[Array, Seq2SeqCache]:
        """Teacher-forced forward: ``logits (T, B, V), cache``.

        src (S, B) and tgt_in (T, B) are time-major token ids; ``src_lengths`` (B,) or None
        (all S steps real); ``tgt_lengths`` (B,) or None: steps t >= length are computed but
        get no gradient in ``backward``.
        """
        src, lens = self._check_src(src, src_lengths)
        tgt_in = check.ids("tgt_in", tgt_in, self.config.tgt_vocab_size)
        if tgt_in.ndim != 2 or tgt_in.shape[0] == 0 or tgt_in.shape[1] != src.shape[1]:
            raise ValueError(f"tgt_in must have shape (T, B) with B = {src.shape[1]} (as src); "
                             f"got {tgt_in.shape}")
        T, B = tgt_in.shape
        tlens = check.lengths(tgt_lengths, T, B)
        keys, proj_keys, state, mask, (emb_ids, enc, saved) = self._encode(src, lens, keep=True)
        S, H = src.shape[0], self.config.hidden_size
        logits = np.empty((T, B, self.config.tgt_vocab_size), self.dtype)
        out_in = np.empty((T, B, H + keys.shape[2]), self.dtype)
        weights = np.empty((T, B, S), self.dtype)
        cache = Seq2SeqCache(emb_ids, tgt_in, valid_mask(tlens, T), enc, keys, saved)
        for t in range(T):
            logits[t], state, weights[t], out_in[t], step_cache = self._step(
                tgt_in[t], state, keys, proj_keys, mask, keep=True)
            assert step_cache is not None
            cache.steps.append(step_cache)
        cache.out_in, cache.weights = out_in, weights
        return logits, cache

    def backward(self, dlogits: Array, cache: Seq2SeqCache) -> None:
        """BPTT through the decoder, the bridge and the encoder; adds into ``grads``."""
        if not isinstance(cache, Seq2SeqCache):
            raise TypeError(f"cache must be the second value returned by Seq2Seq.forward; got "
                            f"{type(cache).__name__}")
        assert cache.out_in is not None
        T, B = cache.tgt_ids.shape
        V, H, E = self.config.tgt_vocab_size, self.config.hidden_size, self.config.embedding_dim
        dlogits = check.array("dlogits", dlogits, self.dtype, f"(T, B, {V})")
        check.shape("dlogits", dlogits, (T, B, V), f"(T, B, {V})", "it has the logits' shape")
        if cache.tgt_valid is not None:
            dlogits = np.where(cache.tgt_valid[:, :, None], dlogits, 0)
        lstm = self.config.cell == "lstm"
        # logits_t = [s_t; c_t] W_out^T + b_out
        dout = self.output.backward(dlogits, cache.out_in)               # (T, B, H + K)
        keys = cache.keys
        dkeys = np.zeros_like(keys)
        dproj = np.zeros((*keys.shape[:2], self.config.attention_size), self.dtype)
        dy_emb = np.empty((T, B, E), self.dtype)
        dh = np.zeros((B, H), self.dtype)                                # dL/ds_t from t + 1
        dc = np.zeros((B, H), self.dtype)                                # (the LSTM's cell)
        for t in reversed(range(T)):
            acache, ccache = cache.steps[t]
            # [s_t; c_t] feeds the output layer
            dh += dout[t, :, :H]
            # s_t = cell([embed(y_{t-1}); c_t], s_{t-1})
            dx, dprev = self.decoder.backward((dh, dc) if lstm else dh, ccache)
            dy_emb[t] = dx[:, :E]
            dctx = dout[t, :, H:] + dx[:, E:]                            # c_t feeds both
            dh, dc = dprev if isinstance(dprev, tuple) else (dprev, dc)
            # c_t, a_t = attention(s_{t-1}, k)
            g = attention_backward(dctx, None, acache)
            self.attention.add_grads(g)
            dkeys += g["keys"]
            dproj += g["proj_keys"]
            dh = dh + g["query"]
        # proj_keys = k W_k^T, computed once in forward: project its gradient once
        S = keys.shape[0]
        self.attention.add_grads({"weight_key": dproj.reshape(S * B, -1).T
                                  @ keys.reshape(S * B, -1)})
        dkeys += dproj @ self.attention.weight_key
        self.tgt_embedding.backward(dy_emb, cache.tgt_ids)
        # s_0 = tanh(z W^T + b), z = [h_fwd; h_rev] of the encoder's final states
        bridges = [self.bridge] + ([self.bridge_c] if lstm else [])
        dfinals = []
        for lin, (z, s), ds in zip(bridges, cache.bridge, [dh, dc][: len(bridges)],
                                   strict=True):
            dz = lin.backward(ds * (1 - s * s), z)                       # (B, K)
            dfinals.append(np.stack(np.split(dz, dz.shape[1] // H, axis=1)))  # (K / H, B, H)
        dhn: State = (dfinals[0], dfinals[1]) if lstm else dfinals[0]
        dx_src, _ = self.encoder.backward(dkeys, dhn, cache.enc)
        assert dx_src is not None
        self.src_embedding.backward(dx_src, cache.src_ids)

    # ---- decoding ----------------------------------------------------------------------------
    def _check_decode(self, src: Any, src_lengths: Any, max_len: Any
                      ) -> tuple[Array, Array | None, int]:
        src, lens = self._check_src(src, src_lengths)
        return src, lens, check.positive_int("max_len", max_len)

    def greedy(self, src: Array, src_lengths: Any = None, max_len: int = 50
               ) -> list[Translation]:
        """The most likely token at every step, all B sequences at once, until each has
        written ``<end>`` or ``max_len`` tokens. Returns one :class:`Translation` per column."""
        src, lens, max_len = self._check_decode(src, src_lengths, max_len)
        S, B = src.shape
        keys, proj_keys, state, mask, _ = self._encode(src, lens, keep=False)
        y = np.full(B, self.config.start_id, np.int64)
        ids = np.empty((max_len, B), np.int64)
        logps = np.empty((max_len, B))
        weights = np.empty((max_len, B, S), self.dtype)
        done = np.zeros(B, bool)
        n = 0
        for t in range(max_len):
            logits, state, weights[t], _, _ = self._step(y, state, keys, proj_keys, mask, False)
            logp = log_softmax(logits.astype(np.float64), axis=-1)
            y = logp.argmax(axis=1)
            ids[t], logps[t] = y, logp[np.arange(B), y]
            n = t + 1
            done |= y == self.config.end_id
            if done.all():
                break
        end, out = self.config.end_id, []
        for b in range(B):
            row = ids[:n, b].tolist()
            finished = end in row
            steps = row.index(end) + 1 if finished else n      # steps taken, <end> included
            Sb = S if lens is None else int(lens[b])
            out.append(Translation(row[: steps - finished], weights[:steps, b, :Sb].copy(),
                                   float(logps[:steps, b].sum()), finished))
        return out

    def beam(self, src: Array, src_lengths: Any = None, width: int = 4, max_len: int = 50, *,
             length_penalty: float = 0.0) -> list[Translation]:
        """Beam search (:func:`rnnkit.generate.beam_decode`), one source at a time with its
        ``width`` hypotheses as a batch; a hypothesis ends at ``<end>``. Ranked by logprob /
        n**length_penalty, n the tokens written, ``<end>`` included; the best per column."""
        src, lens, max_len = self._check_decode(src, src_lengths, max_len)
        width = check.positive_int("width", width)
        return [self._beam_one(src[: (src.shape[0] if lens is None else int(lens[b])), b:b + 1],
                               width, max_len, length_penalty) for b in range(src.shape[1])]

    def _beam_one(self, src: Array, width: int, max_len: int, length_penalty: float
                  ) -> Translation:
        keys, proj_keys, state, _, _ = self._encode(src, None, keep=False)   # (S, 1, K)

        def step(rows: Array, y: Array) -> tuple[Array, Array]:
            nonlocal state
            k, pk = np.repeat(keys, rows.size, axis=1), np.repeat(proj_keys, rows.size, axis=1)
            logits, state, a, _, _ = self._step(y, reorder(state, rows, 0), k, pk, None, False)
            return log_softmax(logits.astype(np.float64), axis=-1), a   # (W, V), (W, S)

        best = beam_decode(step, self.config.start_id, max_len, width, end_id=self.config.end_id,
                           length_penalty=length_penalty)[0]
        assert best.extra is not None
        return Translation(best.ids[: len(best.ids) - best.finished], best.extra, best.logprob,
                           best.finished)


def sequence_loss(logits: Array, targets: Array, lengths: Any = None) -> tuple[float, Array]:
    """Mean cross-entropy over the real target positions (t < length) and its gradient:
    ``loss, dlogits`` with ``dlogits`` zero at padding."""
    T, B = targets.shape
    lens = check.lengths(lengths, T, B)
    loss, dlogits, _ = softmax_cross_entropy(logits, targets, valid_mask(lens, T))
    return loss, dlogits
