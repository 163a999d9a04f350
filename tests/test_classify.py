"""SequenceClassifier and SequenceTagger: float64 gradient checks of every backward (pooling,
heads, embedding), PyTorch parity with packed sequences, padding, and error messages."""

from __future__ import annotations

import numpy as np
import pytest

from rnnkit.classify import SequenceClassifier, SequenceTagger
from rnnkit.gradcheck import check_gradients

T, B, D, H, C, V = 5, 3, 2, 3, 4, 6
LENGTHS = np.array([3, 5, 1])        # unsorted, one full-length, one of length 1


def _x(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((T, B, D))


def _ids(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, V, (T, B))


def _gradcheck(m, x, lengths, targets):
    """Central differences of the model's own loss against backward, for every parameter
    and (dense input) x. The model's generator is rewound so dropout masks stay fixed."""
    state = m.rng.bit_generator.state
    tagger = isinstance(m, SequenceTagger)

    def loss_of(logits):
        return m.loss(logits, targets, lengths) if tagger else m.loss(logits, targets)

    def loss() -> float:
        m.rng.bit_generator.state = state
        return loss_of(m.forward(x, lengths)[0])[0]

    m.rng.bit_generator.state = state
    m.zero_grad()
    logits, cache = m.forward(x, lengths)
    _, dlogits = loss_of(logits)
    dx = m.backward(dlogits, cache)
    arrays = dict(m.named_parameters())
    analytic = {k: g.copy() for k, g in m.grads.items()}
    if x.dtype.kind == "f":
        arrays["x"], analytic["x"] = x, dx
    else:
        assert dx is None
    # the mean loss makes some gradients small: eps=1e-5 keeps rounding well below them
    result = check_gradients(loss, arrays, analytic, eps=1e-5)
    assert result.ok, str(result)


# ------------------------------------------------------------------------------------------------
# gradient checks
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_classifier_gradients(pooling, bidirectional, with_lengths):
    m = SequenceClassifier(C, input_size=D, hidden_size=H, num_layers=2, pooling=pooling,
                           bidirectional=bidirectional, dtype=np.float64, rng=0)
    labels = np.array([0, 3, 1])
    _gradcheck(m, _x(), LENGTHS if with_lengths else None, labels)


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
@pytest.mark.parametrize("pooling", ["last", "max"])
def test_classifier_gradients_other_cells_with_embedding(cell, pooling):
    m = SequenceClassifier(C, vocab_size=V, embedding_dim=2, hidden_size=H, cell=cell,
                           bidirectional=True, pooling=pooling, dtype=np.float64, rng=1)
    _gradcheck(m, _ids(), LENGTHS, np.array([2, 0, 3]))


@pytest.mark.parametrize("ids", [False, True])
def test_classifier_gradients_with_dropout(ids):
    # dropout on the embedding output (ids), between the layers and on the pooled vector
    source = {"vocab_size": V, "embedding_dim": 2} if ids else {"input_size": D}
    m = SequenceClassifier(C, **source, hidden_size=H, num_layers=2, dropout=0.4,
                           pooling="mean", bidirectional=True, dtype=np.float64, rng=2)
    _gradcheck(m, _ids(1) if ids else _x(1), LENGTHS, np.array([1, 1, 2]))


@pytest.mark.parametrize("with_lengths", [False, True])
def test_tagger_gradients(with_lengths):
    m = SequenceTagger(C, vocab_size=V, embedding_dim=2, hidden_size=H, num_layers=2,
                       dropout=0.3, dtype=np.float64, rng=3)
    tags = np.random.default_rng(4).integers(0, C, (T, B))
    _gradcheck(m, _ids(2), LENGTHS if with_lengths else None, tags)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_tagger_gradients_dense_input(cell):
    m = SequenceTagger(C, input_size=D, hidden_size=H, cell=cell, dtype=np.float64, rng=5)
    tags = np.random.default_rng(6).integers(0, C, (T, B))
    _gradcheck(m, _x(3), LENGTHS, tags)


# ------------------------------------------------------------------------------------------------
# padding, pooling and prediction
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_padded_batch_equals_each_sequence_alone(pooling, bidirectional):
    m = SequenceClassifier(C, input_size=D, hidden_size=H, num_layers=2, pooling=pooling,
                           bidirectional=bidirectional, dtype=np.float64, rng=0)
    x = _x()
    batch = m(x, LENGTHS)
    for b, n in enumerate(LENGTHS):
        alone = m(np.ascontiguousarray(x[:n, b:b + 1]))
        np.testing.assert_allclose(batch[b], alone[0], rtol=1e-12, atol=1e-13)
    # whatever sits in the padding has no effect, on the logits or the gradients
    junk = x.copy()
    junk[np.arange(T)[:, None] >= LENGTHS[None, :]] = 1e6
    np.testing.assert_array_equal(m(junk, LENGTHS), batch)


def test_mean_and_max_pooling_by_hand():
    y = np.arange(2 * 3 * 2, dtype=np.float64).reshape(3, 2, 2) - 5
    from rnnkit.classify import max_pool, mean_pool
    lens = np.array([2, 3])
    np.testing.assert_allclose(mean_pool(y, lens)[0], y[:2, 0].mean(0))
    np.testing.assert_allclose(mean_pool(y, lens)[1], y[:, 1].mean(0))
    pooled, arg = max_pool(-y, lens)
    np.testing.assert_allclose(pooled[0], (-y[:2, 0]).max(0))
    assert arg.shape == (2, 2) and arg.max() < 3


def test_predict_and_modes():
    m = SequenceClassifier(C, vocab_size=V, hidden_size=H, dropout=0.5, rng=0)
    ids = _ids()
    m.train()
    pred = m.predict(ids, LENGTHS)
    assert pred.shape == (B,) and pred.dtype == np.int64 and m.training
    m.eval()
    np.testing.assert_array_equal(pred, m(ids, LENGTHS).argmax(-1))

    t = SequenceTagger(C, vocab_size=V, hidden_size=H, rng=0)
    tags = t.predict(ids, LENGTHS)
    assert tags.shape == (T, B)
    assert np.all((tags == -1) == (np.arange(T)[:, None] >= LENGTHS[None, :]))
    # predictions can go back into the loss: the -1 padding is ignored
    loss, dlogits = t.loss(t(ids, LENGTHS), tags, LENGTHS)
    assert np.isfinite(loss) and np.all(dlogits[tags == -1] == 0)


def test_parameter_names_and_float32():
    m = SequenceClassifier(C, vocab_size=V, hidden_size=H, bidirectional=True, rng=0)
    names = list(m.state_dict())
    assert names[0] == "embedding.weight" and names[-2:] == ["fc.weight", "fc.bias"]
    assert "rnn.weight_hh_l0_reverse" in names
    logits, cache = m.forward(_ids(), LENGTHS)
    assert logits.dtype == np.float32
    m.backward(np.ones_like(logits), cache)
    assert all(g.dtype == np.float32 for g in m.grads.values())


# ------------------------------------------------------------------------------------------------
# PyTorch parity, packed sequences
# ------------------------------------------------------------------------------------------------


def _torch_twin(torch, m, pooling):
    nn = torch.nn
    r = m.rnn

    class Twin(nn.Module):
        def __init__(self):
            super().__init__()
            if m.vocab_size is not None:
                self.embedding = nn.Embedding(m.vocab_size, m.input_size)
            kind = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[m.cell]
            self.rnn = kind(m.input_size, r.hidden_size, r.num_layers,
                            bidirectional=r.bidirectional)
            self.fc = nn.Linear(r.num_directions * r.hidden_size, m.num_classes)

        def forward(self, x, lengths):
            if m.vocab_size is not None:
                x = self.embedding(x)
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
            out, hn = self.rnn(packed)
            y, _ = nn.utils.rnn.pad_packed_sequence(out, total_length=x.shape[0])
            if pooling is None:                                  # the tagger
                return self.fc(y)
            if pooling == "last":
                h = hn[0] if isinstance(hn, tuple) else hn
                pooled = torch.cat(list(h[-r.num_directions:]), dim=1)
            elif pooling == "mean":
                pooled = y.sum(0) / lengths[:, None].to(y.dtype)
            else:
                valid = torch.arange(x.shape[0])[:, None] < lengths[None, :]
                pooled = y.masked_fill(~valid[:, :, None], float("-inf")).amax(0)
            return self.fc(pooled)

    tm = Twin().double()
    tm.load_state_dict({k: torch.from_numpy(v) for k, v in m.state_dict().items()},
                       strict=True)
    return tm


@pytest.mark.torch
@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_classifier_matches_pytorch(pooling, bidirectional, cell):
    torch = pytest.importorskip("torch")
    m = SequenceClassifier(C, vocab_size=V, embedding_dim=2, hidden_size=H, num_layers=2,
                           cell=cell, pooling=pooling, bidirectional=bidirectional,
                           dtype=np.float64, rng=7)
    tm = _torch_twin(torch, m, pooling)
    ids, labels = _ids(5), np.array([3, 0, 2])
    logits, cache = m.forward(ids, LENGTHS)
    loss, dlogits = m.loss(logits, labels)
    m.backward(dlogits, cache)
    tlogits = tm(torch.from_numpy(ids), torch.from_numpy(LENGTHS))
    tloss = torch.nn.functional.cross_entropy(tlogits, torch.from_numpy(labels))
    tloss.backward()
    np.testing.assert_allclose(logits, tlogits.detach().numpy(), rtol=1e-10, atol=1e-12)
    assert loss == pytest.approx(tloss.item(), rel=1e-12)
    for name, p in tm.named_parameters():
        np.testing.assert_allclose(m.grads[name], p.grad.numpy(), rtol=1e-10, atol=1e-12,
                                   err_msg=name)


@pytest.mark.torch
def test_tagger_matches_pytorch():
    torch = pytest.importorskip("torch")
    m = SequenceTagger(C, vocab_size=V, embedding_dim=2, hidden_size=H, dtype=np.float64,
                       rng=8)
    tm = _torch_twin(torch, m, None)
    ids = _ids(6)
    tags = np.random.default_rng(7).integers(0, C, (T, B))
    logits, cache = m.forward(ids, LENGTHS)
    loss, dlogits = m.loss(logits, tags, LENGTHS)
    m.backward(dlogits, cache)
    tlogits = tm(torch.from_numpy(ids), torch.from_numpy(LENGTHS))
    valid = torch.from_numpy(np.arange(T)[:, None] < LENGTHS[None, :])
    tloss = torch.nn.functional.cross_entropy(tlogits[valid], torch.from_numpy(tags)[valid])
    tloss.backward()
    np.testing.assert_allclose(logits, tlogits.detach().numpy(), rtol=1e-10, atol=1e-12)
    assert loss == pytest.approx(tloss.item(), rel=1e-12)
    for name, p in tm.named_parameters():
        np.testing.assert_allclose(m.grads[name], p.grad.numpy(), rtol=1e-10, atol=1e-12,
                                   err_msg=name)


# ------------------------------------------------------------------------------------------------
# errors at the door
# ------------------------------------------------------------------------------------------------


def test_constructor_errors():
    with pytest.raises(ValueError, match="pooling must be one of"):
        SequenceClassifier(C, input_size=D, pooling="attention")
    with pytest.raises(ValueError, match="cell must be one of"):
        SequenceTagger(C, input_size=D, cell="transformer")
    with pytest.raises(ValueError, match="exactly one of vocab_size"):
        SequenceClassifier(C, input_size=D, vocab_size=V)
    with pytest.raises(ValueError, match="exactly one of vocab_size"):
        SequenceClassifier(C)
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        SequenceClassifier(0, input_size=D)
    with pytest.raises(ValueError, match="dropout"):
        SequenceClassifier(C, input_size=D, dropout=1.0)


def test_input_errors():
    m = SequenceClassifier(C, input_size=D, hidden_size=H, rng=0)
    x = _x().astype(np.float32)
    with pytest.raises(ValueError, match=r"For one sequence use x\[:, None, :\]"):
        m(x[:, 0])
    with pytest.raises(ValueError, match=r"\(T, B, 2\).*got \(5, 3, 3\).*the 2 input features"):
        m(np.zeros((T, B, 3), np.float32))
    with pytest.raises(TypeError, match="dtype float32"):
        m(x.astype(np.float64))
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, T\] = \[1, 5\].*\[6\]"):
        m(x, [3, 6, 1])
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, T\].*\[0\]"):
        m(x, [0, 2, 1])
    with pytest.raises(ValueError, match=r"lengths must have shape \(B,\) = \(3,\)"):
        m(x, [3, 2])
    with pytest.raises(TypeError, match="lengths must be integers"):
        m(x, np.array([3.0, 2.0, 1.0]))
    with pytest.raises(ValueError, match="at least one time step"):
        m(np.zeros((0, B, D), np.float32))

    t = SequenceTagger(C, vocab_size=V, hidden_size=H, rng=0)
    with pytest.raises(TypeError, match="reads token ids"):
        t(x)
    with pytest.raises(ValueError, match=r"For one sequence use x\[:, None\]"):
        t(np.array([1, 2, 3]))
    with pytest.raises(ValueError, match=r"\[0, 6\)"):
        t(np.array([[0], [6]]))


def test_label_and_backward_errors():
    m = SequenceClassifier(C, input_size=D, hidden_size=H, rng=0)
    x = _x().astype(np.float32)
    logits, cache = m.forward(x)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\).*\[4\]"):
        m.loss(logits, np.array([0, 4, 1]))
    with pytest.raises(ValueError, match=r"labels must have shape \(B,\) = \(3,\)"):
        m.loss(logits, np.array([0, 1]))
    with pytest.raises(TypeError, match="integer NumPy array"):
        m.loss(logits, [0, 1, 2])
    with pytest.raises(ValueError, match=r"dlogits must have shape \(B, C\)"):
        m.backward(np.zeros((2, C), np.float32), cache)
    with pytest.raises(TypeError, match="cache must be the second value"):
        m.backward(logits, None)
    other = SequenceClassifier(C, input_size=D, hidden_size=H, rng=0)
    with pytest.raises(ValueError, match="another model"):
        other.backward(logits, cache)

    t = SequenceTagger(C, input_size=D, hidden_size=H, rng=0)
    tl, _ = t.forward(x)
    with pytest.raises(ValueError, match=r"tags must have shape \(T, B\)"):
        t.loss(tl, np.zeros((T, B + 1), np.int64))
    with pytest.raises(ValueError, match=r"logits must have shape \(T, B, C\)"):
        t.loss(tl[0], np.zeros((T, B), np.int64))
    with pytest.raises(ValueError, match="lengths must lie"):
        t.loss(tl, np.zeros((T, B), np.int64), [9, 1, 1])
