"""Sampling, beam search and scoring."""

from __future__ import annotations

import itertools
import tracemalloc

import numpy as np
import pytest

from rnnkit.functional import log_softmax
from rnnkit.generate import beam_search, choose_token, sample, score
from rnnkit.models import LanguageModel, LMConfig

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


def test_beam_search_finds_the_exhaustive_best(model):
    model.eval()
    prime, L = [1, 4], 3

    def logprob(cont):
        seq = np.array(prime + list(cont))
        logits, _ = model(seq[:-1, None])
        lp = log_softmax(logits[:, 0], axis=-1)
        return float(sum(lp[len(prime) - 1 + i, t] for i, t in enumerate(cont)))

    best = max(itertools.product(range(V), repeat=L), key=logprob)
    beams = beam_search(model, prime, L, width=V * V)
    assert tuple(beams[0].ids) == best
    assert beams[0].logprob == pytest.approx(logprob(best), abs=1e-9)
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
