"""Sampling, beam search and scoring."""

from __future__ import annotations

import itertools
import tracemalloc

import numpy as np
import pytest

from rnnkit.functional import log_softmax
from rnnkit.generate import beam_search, choose_token, sample, score
from rnnkit.models import LanguageModel, LMConfig
from rnnkit.module import eval_mode

V = 6


@pytest.fixture
def model() -> LanguageModel:
    cfg = LMConfig(vocab_size=V, cell="gru", embedding_dim=4, hidden_size=8, num_layers=2,
                   dropout=0.5, dtype="float64")
    return LanguageModel(cfg, rng=0)


def test_fixed_seed_gives_identical_text(model):
    a = sample(model, [1, 2], 50, rng=np.random.default_rng(5))
    b = sample(model, [1, 2], 50, rng=np.random.default_rng(5))
    c = sample(model, [1, 2], 50, rng=np.random.default_rng(6))
    assert a == b and a != c and len(a) == 50
    assert model.training  # mode restored


def test_greedy_is_argmax_of_the_full_forward(model):
    out = sample(model, [3], 10, rng=np.random.default_rng(0), temperature=0)
    model.eval()
    seq = [3]
    for tok in out:
        logits, _ = model(np.array(seq)[:, None])
        assert tok == int(np.argmax(logits[-1, 0]))
        seq.append(tok)


def test_stops_at_end_marker(model):
    out = sample(model, [0], 500, rng=np.random.default_rng(1), end_id=2)
    assert out[-1] == 2 and 2 not in out[:-1]


def test_top_k_and_top_p_restrict_the_choice():
    logits = np.log(np.array([0.5, 0.3, 0.1, 0.06, 0.04]))
    rng = np.random.default_rng(0)
    assert {choose_token(logits, rng, 1.0, top_k=2) for _ in range(300)} == {0, 1}
    assert {choose_token(logits, rng, 1.0, top_p=0.75) for _ in range(300)} == {0, 1}
    assert {choose_token(logits, rng, 1.0, top_p=0.85) for _ in range(300)} == {0, 1, 2}
    draws = [choose_token(logits, rng, 1.0) for _ in range(4000)]
    freq = np.bincount(draws, minlength=5) / 4000
    np.testing.assert_allclose(freq, [0.5, 0.3, 0.1, 0.06, 0.04], atol=0.03)


@pytest.mark.parametrize(("kw", "match"), [
    ({"temperature": -1}, "temperature"), ({"temperature": float("nan")}, "temperature"),
    ({"top_k": 0}, "top_k"), ({"top_p": 0}, "top_p"), ({"top_p": 1.5}, "top_p"),
])
def test_bad_sampling_options(model, kw, match):
    with pytest.raises(ValueError, match=match):
        sample(model, [1], 5, rng=np.random.default_rng(0), **kw)


def test_memory_is_flat_in_generated_length(model):
    def peak(n: int) -> int:
        tracemalloc.start()
        sample(model, [1], n, rng=np.random.default_rng(0))
        _, p = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return p

    assert peak(2000) < 1.5 * peak(200) + 50_000


def _logprob(model, prime, cont) -> float:
    """ln p(cont | prime) from the model's full forward (eval mode)."""
    with eval_mode(model):
        logits, _ = model(np.array([*prime, *cont][:-1])[:, None])
    lp = log_softmax(logits[:, 0], axis=-1)
    return float(sum(lp[len(prime) - 1 + i, t] for i, t in enumerate(cont)))


def _chain(P: np.ndarray) -> LanguageModel:
    """The Markov chain P[last token, next token] as a LanguageModel: one-hot input, one tanh
    layer with no recurrence, h = tanh(1) e_token, logits = W h = ln P[token]."""
    n = P.shape[0]
    m = LanguageModel(LMConfig(n, cell="rnn", hidden_size=n, num_layers=1, one_hot=True,
                               dtype="float64"), rng=0)
    sd = {k: np.zeros_like(v) for k, v in m.state_dict().items()}
    sd["rnn.weight_ih_l0"] = np.eye(n)
    sd["decoder.weight"] = np.log(P).T / np.tanh(1.0)
    m.load_state_dict(sd)
    return m


def test_beam_keeps_finished_hypotheses():
    # 0 ends. From 1: 0 (.5), 2 (.3); from 2: 0 (.9). Width 2 finishes [0], then [2, 0] beside
    # the open [2, 1]; the expanded prefix [2] is no hypothesis (it used to displace [2, 0])
    P = np.array([[0.2, 0.4, 0.4], [0.5, 0.2, 0.3], [0.9, 0.05, 0.05]])
    beams = beam_search(_chain(P), [1], 5, width=2, end_id=0)
    assert [(b.ids, b.finished) for b in beams] == [([0], True), ([2, 0], True)]
    np.testing.assert_allclose([b.logprob for b in beams], np.log([0.5, 0.3 * 0.9]))
    # ranked by logprob / n: [2, 0] (ln .27 / 2 = -0.65) before [0] (ln .5 = -0.69)
    beams = beam_search(_chain(P), [1], 5, width=2, end_id=0, length_penalty=1.0)
    assert [b.ids for b in beams] == [[2, 0], [0]]


def test_beam_returns_only_complete_hypotheses(model):
    beams = beam_search(model, [1], 6, width=3, end_id=0)
    assert len(beams) == 3
    for b in beams:
        assert b.finished == (b.ids[-1] == 0) and (b.finished or len(b.ids) == 6)
        assert b.logprob == pytest.approx(_logprob(model, [1], b.ids), abs=1e-9)


@pytest.mark.parametrize("length_penalty", [0.0, 0.7])
def test_an_unpruned_beam_ranks_every_sequence(model, length_penalty):
    # every sequence of the search: ended by 0 within 3 tokens, or 3 tokens without a 0
    L, rest = 3, range(1, V)
    seqs = [(*p, 0) for n in range(L) for p in itertools.product(rest, repeat=n)]
    seqs += itertools.product(rest, repeat=L)
    ranked = sorted(seqs, key=lambda s: -_logprob(model, [2], s) / len(s) ** length_penalty)
    beams = beam_search(model, [2], L, width=V**L, end_id=0, length_penalty=length_penalty)
    assert [tuple(b.ids) for b in beams] == ranked
    assert model.training


def test_a_tiny_temperature_is_greedy():
    rng = np.random.default_rng(0)
    logits = np.array([0.3, 2.0, -1.0, 2.0 - 1e-6, -np.inf])
    for t in (1e-300, 1e-310, 5e-324):        # the limit t -> 0 (logits / t may overflow)
        assert {choose_token(logits, rng, t) for _ in range(20)} == {1}
        assert {choose_token(logits.astype(np.float32), rng, t, top_p=0.5)
                for _ in range(20)} == {1}
        tied = np.array([1.0, 3.0, -2.0, 3.0])
        assert {choose_token(tied, rng, t, top_k=3) for _ in range(60)} == {1, 3}


@pytest.mark.parametrize(("kw", "err", "match"), [
    ({"width": 0}, ValueError, "width must be a positive int; got 0"),
    ({"width": 2.0}, TypeError, "width must be a positive int; got float"),
    ({"length": 0}, ValueError, "length must be a positive int; got 0"),
    ({"length_penalty": float("inf")}, ValueError, "length_penalty must be a number"),
])
def test_bad_beam_options(model, kw, err, match):
    with pytest.raises(err, match=match):
        beam_search(model, [1], **{"length": 3, **kw})


def test_beam_search_finds_the_exhaustive_best(model):
    prime, L = [1, 4], 3
    best = max(itertools.product(range(V), repeat=L), key=lambda c: _logprob(model, prime, c))
    beams = beam_search(model, prime, L, width=V * V)
    assert tuple(beams[0].ids) == best
    assert beams[0].logprob == pytest.approx(_logprob(model, prime, best), abs=1e-9)
    assert [b.logprob for b in beams] == sorted((b.logprob for b in beams), reverse=True)


def test_score_matches_the_direct_sum(model):
    ids = list(np.random.default_rng(0).integers(0, V, 40))
    s = score(model, ids, chunk=7)
    model.eval()
    logits, _ = model(np.array(ids[:-1])[:, None])
    lp = log_softmax(logits[:, 0], axis=-1)
    direct = float(lp[np.arange(39), ids[1:]].sum())
    assert s.log_likelihood == pytest.approx(direct, rel=1e-12)
    assert s.tokens == 39
    assert s.perplexity == pytest.approx(np.exp(-direct / 39))


# ---- streaming (rnnkit serve) ----------------------------------------------------------------

@pytest.mark.parametrize("kw", [{}, {"temperature": 0}, {"temperature": 0.7, "top_k": 3},
                                {"temperature": 1.3, "top_p": 0.6}])
def test_stream_gives_the_tokens_of_sample_one_at_a_time(model, kw):
    from rnnkit.generate import sampling_probs, stream

    want = sample(model, [1, 2], 40, rng=np.random.default_rng(9), end_id=4, **kw)
    draws = list(stream(model, [1, 2], 40, rng=np.random.default_rng(9), end_id=4, **kw))
    assert [d.id for d in draws] == want
    model.eval()
    seq = [1, 2]
    for d in draws:                              # each draw carries the logits it came from
        logits, _ = model(np.array(seq)[:, None])
        np.testing.assert_allclose(d.logits, logits[-1, 0], rtol=1e-12, atol=1e-12)
        p = sampling_probs(d.logits, kw.get("temperature", 1.0), kw.get("top_k"),
                           kw.get("top_p"))
        assert p[d.id] > 0 and abs(p.sum() - 1) < 1e-12
        seq.append(d.id)


def test_sampling_probs_is_the_distribution_choose_token_draws_from():
    from rnnkit.generate import sampling_probs

    logits = np.array([2.0, 1.0, 0.5, -1.0, 3.0])
    p = sampling_probs(logits, 0.5, top_k=3, top_p=None)
    assert (p[[3, 2]] == 0).all() and abs(p.sum() - 1) < 1e-15
    rng = np.random.default_rng(0)
    counts = np.bincount([choose_token(logits, rng, 0.5, 3) for _ in range(20000)], minlength=5)
    np.testing.assert_allclose(counts / 20000, p, atol=0.012)
    np.testing.assert_array_equal(sampling_probs(logits, 0), np.eye(5)[4])
    q = sampling_probs(logits, 1.0, top_p=0.5)                   # the smallest set reaching 0.5
    assert np.count_nonzero(q) == 1 and q[4] == 1.0


@pytest.mark.parametrize("level", ["char", "word"])
@pytest.mark.parametrize("prime", ["", "KING:"])
def test_continuation_pieces_build_continuation_text_token_by_token(level, prime):
    from rnnkit.generate import continuation_pieces, continuation_text
    from rnnkit.text import build_vocab, tokenize

    text = 'The lord (said 3) "go now" - to [the] king\'s end, and ( so ) on.\n\nAll: yes!'
    vocab = build_vocab(tokenize(text, level), specials=("<start>", "<end>", "<unk>"),
                        level=level)
    rng = np.random.default_rng(0)
    for _ in range(30):
        ids = rng.integers(0, len(vocab), int(rng.integers(0, 40))).tolist()
        shown = prime
        for k, piece in enumerate(continuation_pieces(vocab, prime, ids)):
            shown += piece
            assert shown == continuation_text(vocab, prime, ids[:k + 1])
