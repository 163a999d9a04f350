"""Seq2Seq with additive attention, and the numerals task: gradients, PyTorch parity of the
attention, decoding, and the Chinese numeral converter."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnkit.functional import log_softmax
from rnnkit.gradcheck import check_gradients
from rnnkit.seq2seq import (
    Attention,
    Seq2Seq,
    Seq2SeqConfig,
    attention_backward,
    attention_forward,
    sequence_loss,
)
from rnnkit.tasks import (
    END_ID,
    SRC_VOCAB,
    START_ID,
    TGT_VOCAB,
    NumeralsTask,
    decode_target,
    make_batch,
    sample_numbers,
    source_text,
    to_chinese,
)

S, B, H, K, A = 5, 3, 4, 6, 3
LENS = np.array([5, 2, 4])


def _attention_inputs(seed=0, masked=True):
    rng = np.random.default_rng(seed)
    att = Attention(H, K, A, dtype=np.float64, rng=seed)
    q = rng.standard_normal((B, H))
    k = rng.standard_normal((S, B, K))
    mask = np.arange(S)[:, None] < LENS[None, :] if masked else None
    return att, q, k, mask


# ------------------------------------------------------------------------------------------------
# attention alone
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("masked", [True, False])
@pytest.mark.parametrize("precomputed", [False, True])
def test_attention_gradients(masked, precomputed):
    att, q, k, mask = _attention_inputs(masked=masked)
    p = att.params
    rng = np.random.default_rng(1)
    wc, ww = rng.standard_normal((B, K)), rng.standard_normal((B, S))
    pk = k @ p["weight_key"].T if precomputed else None

    def run():
        proj = k @ p["weight_key"].T if precomputed else None
        c, a, _ = attention_forward(q, k, mask, p, proj)
        return float(np.sum(c * wc) + np.sum(a * ww))

    _, _, cache = attention_forward(q, k, mask, p, pk)
    g = attention_backward(wc, ww, cache)
    if precomputed:                           # the caller projects proj_keys' gradient
        S_, B_, _ = g["proj_keys"].shape
        g["keys"] = g["keys"] + g["proj_keys"] @ p["weight_key"]
        g["weight_key"] = g["proj_keys"].reshape(S_ * B_, -1).T @ k.reshape(S_ * B_, -1)
    arrays = {"query": q, "keys": k, **p}
    r = check_gradients(run, arrays, {n: g[n] for n in arrays})
    assert r.ok, str(r)


def test_attention_mask_gives_zero_weight_and_ignores_padding():
    att, q, k, mask = _attention_inputs()
    c, a, _ = attention_forward(q, k, mask, att.params)
    assert a.shape == (B, S)
    np.testing.assert_allclose(a.sum(axis=1), 1.0)
    assert np.all(a[~mask.T] == 0)
    k2 = k.copy()
    k2[~mask] = 1e6                           # padding content does not matter
    c2, a2, cache = attention_forward(q, k2, mask, att.params)
    np.testing.assert_array_equal(a, a2)
    np.testing.assert_allclose(c, c2)
    g = attention_backward(np.ones((B, K)), None, cache)
    assert np.all(g["keys"][~mask] == 0)


@pytest.mark.torch
def test_attention_matches_torch():
    torch = pytest.importorskip("torch")
    att, q, k, mask = _attention_inputs(seed=3)
    p = att.params
    c, a, cache = attention_forward(q, k, mask, p)
    rng = np.random.default_rng(4)
    wc, ww = rng.standard_normal((B, K)), rng.standard_normal((B, S))
    g = attention_backward(wc, ww, cache)

    tq, tk = torch.tensor(q, requires_grad=True), torch.tensor(k, requires_grad=True)
    tp = {n: torch.tensor(v, requires_grad=True) for n, v in p.items()}
    u = torch.tanh(tk @ tp["weight_key"].T + tq @ tp["weight_query"].T)     # (S, B, A)
    e = (u @ tp["v"]).masked_fill(~torch.tensor(mask), float("-inf"))
    ta = torch.softmax(e, dim=0)                                            # (S, B)
    tc = (ta[:, :, None] * tk).sum(0)
    (tc * torch.tensor(wc)).sum().add((ta.T * torch.tensor(ww)).sum()).backward()
    np.testing.assert_allclose(c, tc.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(a, ta.T.detach().numpy(), rtol=1e-12, atol=1e-12)
    for name, t in [("query", tq), ("keys", tk), *tp.items()]:
        np.testing.assert_allclose(g[name], t.grad.numpy(), rtol=1e-10, atol=1e-12,
                                   err_msg=name)


# ------------------------------------------------------------------------------------------------
# the whole model
# ------------------------------------------------------------------------------------------------

VS, VT, T = 6, 7, 4


def _model(cell="gru", dtype="float64", seed=0, bidirectional=True):
    cfg = Seq2SeqConfig(VS, VT, start_id=1, end_id=2, cell=cell, embedding_dim=3,
                        hidden_size=3, attention_size=2, bidirectional=bidirectional,
                        dtype=dtype)
    return Seq2Seq(cfg, rng=seed)


def _data(padded, seed=0):
    rng = np.random.default_rng(seed)
    src = rng.integers(0, VS, (S, B))
    tgt_in = rng.integers(0, VT, (T, B))
    tgt_out = rng.integers(0, VT, (T, B))
    src_lens = LENS if padded else None
    tgt_lens = np.array([4, 1, 3]) if padded else None
    return src, src_lens, tgt_in, tgt_out, tgt_lens


@pytest.mark.parametrize("cell, bidirectional", [("gru", True), ("lstm", True),
                                                 ("gru", False), ("lstm", False)])
@pytest.mark.parametrize("padded", [False, True])
def test_seq2seq_gradients(cell, bidirectional, padded):
    m = _model(cell, bidirectional=bidirectional)
    # sharper attention than at initialisation: with H = 3 the LSTM's dL/dW_q is ~1e-5 there,
    # and the finite difference's rounding error (~1e-16 * loss / eps) would reach the tolerance
    for name in ("weight_query", "weight_key", "v"):
        getattr(m.attention, name)[...] *= 3
    src, src_lens, tgt_in, tgt_out, tgt_lens = _data(padded)

    def loss() -> float:
        logits, _ = m.forward(src, src_lens, tgt_in, tgt_lens)
        return sequence_loss(logits, tgt_out, tgt_lens)[0]

    logits, cache = m.forward(src, src_lens, tgt_in, tgt_lens)
    _, dlogits = sequence_loss(logits, tgt_out, tgt_lens)
    m.backward(dlogits, cache)
    params = dict(m.named_parameters())
    assert len(params) == (23 if cell == "lstm" else 21) - 4 * (not bidirectional)
    r = check_gradients(loss, params, {k: g.copy() for k, g in m.grads.items()}, eps=1e-4)
    assert r.ok, str(r)
    # every parameter takes part
    assert all(np.any(g != 0) for g in m.grads.values())


def test_padding_does_not_change_real_outputs():
    m = _model()
    src, src_lens, tgt_in, _, tgt_lens = _data(True)
    logits, _ = m.forward(src, src_lens, tgt_in, tgt_lens)
    src2 = src.copy()
    src2[np.arange(S)[:, None] >= src_lens[None, :]] = 0
    logits2, _ = m.forward(src2, src_lens, tgt_in, tgt_lens)
    np.testing.assert_allclose(logits, logits2, rtol=0, atol=0)
    b = 1                                     # column 1 alone, unpadded
    alone, _ = m.forward(src[: src_lens[b], b:b + 1], None, tgt_in[:, b:b + 1])
    np.testing.assert_allclose(alone[:, 0], logits[:, b], atol=1e-12)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_greedy_agrees_with_teacher_forcing_and_beam(cell):
    m = _model(cell, seed=5)
    src, src_lens, *_ = _data(True, seed=2)
    out = m.greedy(src, src_lens, max_len=6)
    assert len(out) == B
    for b, tr in enumerate(out):
        n = len(tr.ids) + tr.finished
        assert tr.weights.shape == (n, src_lens[b])
        np.testing.assert_allclose(tr.weights.sum(axis=1), 1.0, rtol=1e-12)
        # feeding the greedy output back with teacher forcing gives the same argmaxes
        tgt_in = np.array([1, *tr.ids][:n])[:, None]
        logits, cache = m.forward(src[: src_lens[b], b:b + 1], None, tgt_in)
        want = [*tr.ids, 2][:n]
        assert logits[:, 0].argmax(axis=1).tolist() == want
        np.testing.assert_allclose(cache.weights[:, 0], tr.weights, atol=1e-12)
    # a beam of width 1 is greedy search
    beam1 = m.beam(src, src_lens, width=1, max_len=6)
    for g, b1 in zip(out, beam1, strict=True):
        assert g.ids == b1.ids
        assert g.logprob == pytest.approx(b1.logprob)
    # a wider beam finds a hypothesis at least as likely
    for g, bw in zip(out, m.beam(src, src_lens, width=4, max_len=6), strict=True):
        if g.finished:
            assert bw.logprob >= g.logprob - 1e-9


@pytest.mark.parametrize("length_penalty", [0.0, 0.7])
def test_an_unpruned_beam_is_the_exhaustive_best(length_penalty):
    m, L, end = _model("lstm", seed=5), 3, 2
    src = np.array([[3], [1], [4]])
    rest = [v for v in range(VT) if v != end]
    seqs = [(*p, end) for n in range(L) for p in itertools.product(rest, repeat=n)]
    seqs += itertools.product(rest, repeat=L)
    lens = np.array([len(s) for s in seqs])
    tgt_in = np.array([[1, *s[:-1], 0, 0][:L] for s in seqs]).T       # (L, N), padded
    logits, cache = m.forward(np.repeat(src, len(seqs), axis=1), None, tgt_in, lens)
    lp = log_softmax(logits, axis=-1)
    score = [sum(lp[t, i, v] for t, v in enumerate(s)) for i, s in enumerate(seqs)]
    i = int(np.argmax(np.array(score) / lens**length_penalty))
    (tr,) = m.beam(src, None, width=VT**L, max_len=L, length_penalty=length_penalty)
    assert tr.finished == (seqs[i][-1] == end)
    assert tr.ids == list(seqs[i][: lens[i] - tr.finished])
    assert tr.logprob == pytest.approx(score[i], abs=1e-12)
    np.testing.assert_allclose(tr.weights, cache.weights[: lens[i], i], atol=1e-12)


def test_errors():
    m = _model()
    src, src_lens, tgt_in, _, _ = _data(True)
    with pytest.raises(TypeError, match="config must be a Seq2SeqConfig"):
        Seq2Seq({"cell": "gru"})                                   # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cell must be 'gru' or 'lstm'"):
        Seq2SeqConfig(VS, VT, 1, 2, cell="rnn")
    with pytest.raises(ValueError, match=r"end_id must be an int in \[0, 7\); got 7"):
        Seq2SeqConfig(VS, VT, 1, VT)
    with pytest.raises(ValueError, match=r"src must have shape \(S, B\)"):
        m.forward(src[:, 0], None, tgt_in)
    with pytest.raises(ValueError, match=r"tgt_in must have shape \(T, B\) with B = 3"):
        m.forward(src, src_lens, tgt_in[:, :2])
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, T\]"):
        m.forward(src, [6, 1, 1], tgt_in)
    with pytest.raises(ValueError, match=r"src must lie in \[0, 6\)"):
        m.greedy(src + 6)
    with pytest.raises(ValueError, match="max_len must be a positive int"):
        m.greedy(src, src_lens, max_len=0)
    with pytest.raises(ValueError, match="width must be a positive int; got 0"):
        m.beam(src, src_lens, width=0)
    with pytest.raises(TypeError, match="cache must be the second value"):
        m.backward(np.zeros((T, B, VT)), None)                     # type: ignore[arg-type]
    _, cache = m.forward(src, src_lens, tgt_in)
    with pytest.raises(ValueError, match=r"dlogits must have shape"):
        m.backward(np.zeros((T, B, VT + 1)), cache)


def test_a_few_training_steps_lower_the_loss():
    from rnnkit.optim import Adam

    cfg = Seq2SeqConfig(len(SRC_VOCAB), len(TGT_VOCAB), START_ID, END_ID, hidden_size=16,
                        embedding_dim=8, attention_size=8)
    m = Seq2Seq(cfg, rng=0)
    opt = Adam(m, lr=1e-2)
    batch = make_batch([7, 10, 15, 101, 1024, 20005])
    losses = []
    for _ in range(30):
        opt.zero_grad()
        logits, cache = m.forward(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_lengths)
        loss, dlogits = sequence_loss(logits, batch.tgt_out, batch.tgt_lengths)
        m.backward(dlogits, cache)
        opt.step()
        losses.append(loss)
    assert losses[-1] < 0.5 * losses[0]


# ------------------------------------------------------------------------------------------------
# the numerals task
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n, text", [
    (0, "零"), (1, "一"), (2, "二"), (10, "十"), (11, "十一"), (15, "十五"), (20, "二十"),
    (100, "一百"), (101, "一百零一"), (110, "一百一十"), (111, "一百一十一"),
    (1001, "一千零一"), (1010, "一千零一十"), (1024, "一千零二十四"), (1100, "一千一百"),
    (2000, "二千"), (10000, "一万"), (10010, "一万零一十"), (20005, "二万零五"),
    (100000, "十万"), (100010, "十万零一十"), (110000, "十一万"), (1000001, "一百万零一"),
    (1010000, "一百零一万"), (10001000, "一千万一千"), (10000010, "一千万零一十"),
    (12345678, "一千二百三十四万五千六百七十八"), (100000000, "一亿"),
    (100000001, "一亿零一"), (100010000, "一亿零一万"), (110000000, "一亿一千万"),
    (1000000001, "十亿零一"), (1200000000000, "一万二千亿"), (10**12 + 1, "一万亿零一"),
])
def test_to_chinese(n, text):
    assert to_chinese(n) == text


def _reference(n: int) -> str:
    """An independent reading, digit by digit from the left: zero runs become one 零 when a
    nonzero digit follows; 万 / 亿 close a group (reset the zero run) when anything in it, or
    for 亿 anything above it, is nonzero."""
    if n == 0:
        return "零"
    s = str(n)
    out, zero = [], False
    for i, ch in enumerate(s):
        p, d = len(s) - 1 - i, int(ch)
        if d:
            if zero:
                out.append("零")
                zero = False
            if not (d == 1 and p % 4 == 1 and i == 0):
                out.append("零一二三四五六七八九"[d])
            out.append(("", "十", "百", "千")[p % 4])
        elif out:
            zero = True
        if p % 4 == 0 and p:
            unit = "亿" if p == 8 else "万"
            above = s[: i + 1] if p == 8 else s[max(0, i - 3): i + 1]
            if int(above):
                out.append(unit)
                zero = False
    return "".join(out)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 10**16 - 1))
def test_to_chinese_matches_a_digit_by_digit_reading(n):
    assert to_chinese(n) == _reference(n)


def test_to_chinese_errors():
    with pytest.raises(TypeError, match="n must be an int"):
        to_chinese("12")                                           # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"n must be an int in \[0, 1e\+16\); got 10+"):
        to_chinese(10**16)


def test_batches_and_task():
    batch = make_batch([5, 1024])
    assert batch.src[:, 1].tolist() == [*SRC_VOCAB.encode("1024"), END_ID]
    assert batch.src_lengths.tolist() == [2, 5]
    assert TGT_VOCAB.decode(batch.tgt_out[:, 1]) == "一千零二十四"
    assert batch.tgt_in[0].tolist() == [START_ID, START_ID]
    assert batch.tgt_lengths.tolist() == [2, 7]
    np.testing.assert_array_equal(batch.tgt_in[1:, 1], batch.tgt_out[:-1, 1])
    task = NumeralsTask(max_train_digits=4, test_digits=(5, 6), n_test=200, rng=0)
    rng = np.random.default_rng(0)
    train = task.sample(2000, rng)
    assert max(len(str(n)) for n in train) == 4
    assert not set(train) & task.held_out
    assert {len(str(n)) for n in task.test_longer[6]} == {6}
    with pytest.raises(ValueError, match="longer than max_train_digits"):
        NumeralsTask(max_train_digits=6, test_digits=(6,))
    nums = sample_numbers(rng, 500, 3, 3, zero_prob=0.5)
    assert all(100 <= n <= 999 for n in nums)


def test_reversed_and_grouped_presentation():
    assert source_text(123456789) == "123456789"
    assert source_text(123456789, grouped=True) == "1,2345,6789"
    assert source_text(123456789, reverse=True, grouped=True) == "9876,5432,1"
    assert source_text(1234, grouped=True) == "1234"
    batch = make_batch([1024, 20005], reverse=True, grouped=True)
    assert SRC_VOCAB.decode(batch.src[:, 1]) == "5000,2"
    assert TGT_VOCAB.decode(batch.tgt_out[:, 0]) == "四十二零千一"
    assert decode_target(batch.tgt_out[:, 0], reverse=True) == "一千零二十四"
