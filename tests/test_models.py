"""LanguageModel and the layers around the recurrent core: gradients and PyTorch parity."""

from __future__ import annotations

import numpy as np
import pytest

from rnnkit.gradcheck import check_gradients
from rnnkit.layers import Embedding, Linear, softmax_cross_entropy
from rnnkit.models import LanguageModel, LMConfig

V = 7


def _lm(cell: str, one_hot: bool = False, dropout: float = 0.0) -> LanguageModel:
    cfg = LMConfig(vocab_size=V, cell=cell, embedding_dim=3, hidden_size=4, num_layers=2,
                   dropout=dropout, one_hot=one_hot, dtype="float64")
    return LanguageModel(cfg, rng=0)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("one_hot", [False, True])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_language_model_gradients(cell, one_hot, with_lengths):
    m = _lm(cell, one_hot, dropout=0.3)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, V, (5, 3))
    tgt = rng.integers(0, V, (5, 3))
    lengths = np.array([5, 2, 4]) if with_lengths else None
    mask = (np.arange(5)[:, None] < lengths[None, :]) if with_lengths else None
    state = m.rng.bit_generator.state

    def loss() -> float:
        m.rng.bit_generator.state = state
        logits, _ = m(ids, lengths=lengths)
        return softmax_cross_entropy(logits, tgt, mask)[0]

    m.rng.bit_generator.state = state
    logits, _, cache = m.forward(ids, lengths=lengths)
    _, dlogits, _ = softmax_cross_entropy(logits, tgt, mask)
    m.backward(dlogits, cache)
    params = dict(m.named_parameters())
    # the mean loss makes the recurrent weights' gradients small (~1e-3): a larger step keeps
    # the finite difference's rounding error (~1e-16 * loss / eps) well below them
    result = check_gradients(loss, params, {k: g.copy() for k, g in m.grads.items()}, eps=1e-5)
    assert result.ok, str(result)


def test_cross_entropy_gradient_and_mask():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((4, 3, V)) * 3
    tgt = rng.integers(0, V, (4, 3))
    mask = rng.random((4, 3)) < 0.7
    _, grad, n = softmax_cross_entropy(logits, tgt, mask)
    assert n == mask.sum()
    r = check_gradients(lambda: softmax_cross_entropy(logits, tgt, mask)[0],
                        {"logits": logits}, {"logits": grad})
    assert r.ok, str(r)
    assert np.all(grad[~mask] == 0)


def test_cross_entropy_is_stable_for_huge_logits():
    logits = np.array([[1e4, -1e4, 0.0]], np.float32)
    loss, grad, _ = softmax_cross_entropy(logits, np.array([1]))
    assert np.isfinite(loss) and np.isfinite(grad).all()
    assert loss == pytest.approx(2e4, rel=1e-6)


def test_embedding_and_linear_gradients():
    rng = np.random.default_rng(2)
    emb = Embedding(V, 3, dtype=np.float64, rng=0)
    lin = Linear(3, 2, dtype=np.float64, rng=0)
    ids = rng.integers(0, V, (4, 5))
    w = rng.standard_normal((4, 5, 2))

    def loss() -> float:
        return float(np.sum(lin.forward(emb.forward(ids)[0])[0] * w))

    e, ec = emb.forward(ids)
    _, lc = lin.forward(e)
    emb.backward(lin.backward(w, lc), ec)
    arrays = {"emb": emb.weight, "lin.w": lin.weight, "lin.b": lin.bias}
    grads = {"emb": emb.grads["weight"], "lin.w": lin.grads["weight"],
             "lin.b": lin.grads["bias"]}
    assert check_gradients(loss, arrays, grads).ok


def test_bad_ids_are_refused():
    m = _lm("gru")
    with pytest.raises(ValueError, match=r"\[0, 7\)"):
        m(np.array([[0, 7]]))
    with pytest.raises(TypeError, match="integer"):
        m(np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"\(T, B\)"):
        m(np.array([1, 2, 3]))


def test_config_round_trip_and_validation():
    cfg = LMConfig(vocab_size=30, cell="gru", hidden_size=8)
    assert LMConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="cell"):
        LMConfig(vocab_size=3, cell="transformer")
    with pytest.raises(ValueError, match="unknown keys"):
        LMConfig.from_json({"vocab_size": 3, "heads": 4})


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("one_hot", [False, True])
def test_language_model_matches_pytorch(cell, one_hot):
    torch = pytest.importorskip("torch")
    from rnnkit.pytorch import to_torch

    m = _lm(cell, one_hot)
    tm = to_torch(m)                       # the PyTorch twin, float64, with m's weights
    rng = np.random.default_rng(3)
    ids, tgt = rng.integers(0, V, (6, 4)), rng.integers(0, V, (6, 4))
    logits, _, cache = m.forward(ids)
    loss, dlogits, _ = softmax_cross_entropy(logits, tgt)
    m.backward(dlogits, cache)
    tlogits, _ = tm(torch.from_numpy(ids))
    tloss = torch.nn.functional.cross_entropy(tlogits.reshape(-1, V),
                                              torch.from_numpy(tgt).reshape(-1))
    tloss.backward()
    np.testing.assert_allclose(logits, tlogits.detach().numpy(), rtol=1e-10, atol=1e-12)
    assert loss == pytest.approx(tloss.item(), rel=1e-12)
    assert [name for name, _ in tm.named_parameters()] == list(m.grads)
    for name, p in tm.named_parameters():
        np.testing.assert_allclose(m.grads[name], p.grad.numpy(), rtol=1e-10, atol=1e-12,
                                   err_msg=name)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("one_hot", [False, True])
def test_stepper_equals_the_full_forward(cell, one_hot):
    m = _lm(cell, one_hot, dropout=0.5)
    m.eval()
    ids = np.random.default_rng(4).integers(0, V, (9, 3))
    full, hn = m(ids)
    step = m.stepper()
    state = None
    for t in range(9):
        logits, state = step(ids[t], state)
        np.testing.assert_allclose(logits, full[t], rtol=1e-12, atol=1e-13)
    for a, b in zip(state if isinstance(state, tuple) else (state,),
                    hn if isinstance(hn, tuple) else (hn,), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


def test_weights_are_read_through_public_accessors():
    from rnnkit.recurrent import GRU

    g = GRU(3, 4, num_layers=2, bidirectional=True, dtype=np.float64, rng=0)
    w_ih, _, _, b_hh = g.layer_weights(1, 1)
    assert w_ih is g.weight_ih_l1_reverse and b_hh is g.bias_hh_l1_reverse
    assert g.layer_weights(0)[1] is g.weight_hh_l0
    assert GRU(3, 4, bias=False).layer_weights(0)[2:] == (None, None)
    lin = Linear(3, 2)
    assert lin.bias is dict(lin.named_parameters())["bias"]
    assert Linear(3, 2, bias=False).bias is None


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("one_hot", [False, True])
def test_parameter_shapes_are_the_built_models(cell, one_hot):
    from rnnkit.models import parameter_shapes

    cfg = LMConfig(vocab_size=7, cell=cell, num_layers=3, hidden_size=5, embedding_dim=3,
                   one_hot=one_hot)
    assert list(parameter_shapes(cfg)) == [(k, v.shape) for k, v in
                                           LanguageModel(cfg, rng=0).named_parameters()]
