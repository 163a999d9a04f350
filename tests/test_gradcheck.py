"""Float64 finite-difference checks of every backward: the first oracle (no torch needed).

The grid of the core issue: each cell x {1, 2 layers} x {uni, bi} x {lengths or not} x
{hx given or not}, checking inputs, initial states and every parameter.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import rnnkit
from rnnkit.gradcheck import GradcheckError, numerical_gradient, relative_error
from rnnkit.lab._common import GATES
from rnnkit.recurrent import CELLS as STEP_CELLS
from rnnkit.recurrent import LAYERS

T, B, D, H = 4, 3, 2, 3
CELLS = {
    "rnn_tanh": lambda **kw: rnnkit.RNN(D, H, nonlinearity="tanh", **kw),
    "rnn_relu": lambda **kw: rnnkit.RNN(D, H, nonlinearity="relu", **kw),
    "gru": lambda **kw: rnnkit.GRU(D, H, **kw),
    "lstm": lambda **kw: rnnkit.LSTM(D, H, **kw),
}


def _inputs(cell: str, L: int, K: int, with_hx: bool, seed: int = 1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, B, D))
    if not with_hx:
        return x, None
    h0 = rng.standard_normal((L * K, B, H))
    if cell == "lstm":
        return x, (h0, rng.standard_normal((L * K, B, H)))
    return x, h0


@pytest.mark.parametrize(
    ("cell", "num_layers", "bidirectional", "with_lengths", "with_hx"),
    list(itertools.product(CELLS, [1, 2], [False, True], [False, True], [False, True])),
)
def test_layer_gradients(cell, num_layers, bidirectional, with_lengths, with_hx):
    m = CELLS[cell](num_layers=num_layers, bidirectional=bidirectional, dtype=np.float64,
                    rng=7)
    x, hx = _inputs(cell, num_layers, 2 if bidirectional else 1, with_hx)
    lengths = np.array([2, 4, 1]) if with_lengths else None
    result = rnnkit.gradcheck(m, x, hx, lengths)
    n_params = len(m.state_dict())
    assert len(result.errors) == 1 + (2 if cell == "lstm" else 1) * with_hx + n_params
    assert result.ok, str(result)


@pytest.mark.parametrize("cell", list(CELLS))
def test_dropout_bias_free_and_batch_first(cell):
    m = CELLS[cell](num_layers=3, bidirectional=True, dropout=0.4, bias=False,
                    dtype=np.float64, rng=3, batch_first=True)
    x = np.random.default_rng(0).standard_normal((B, T, D))
    result = rnnkit.gradcheck(m, x, lengths=[4, 1, 3])
    assert result.ok, str(result)


@pytest.mark.parametrize("cls", [rnnkit.RNNCell, rnnkit.GRUCell, rnnkit.LSTMCell])
@pytest.mark.parametrize("unbatched", [False, True])
def test_cell_gradients(cls, unbatched):
    m = cls(D, H, dtype=np.float64, rng=0)
    rng = np.random.default_rng(2)
    shape = (H,) if unbatched else (B, H)
    x = rng.standard_normal((D,) if unbatched else (B, D))
    hx = rng.standard_normal(shape)
    if cls is rnnkit.LSTMCell:
        hx = (hx, rng.standard_normal(shape))
    result = rnnkit.gradcheck(m, x, hx)
    assert result.ok, str(result)


def test_unbatched_sequence():
    m = rnnkit.GRU(D, H, num_layers=2, bidirectional=True, dtype=np.float64, rng=0)
    x = np.random.default_rng(0).standard_normal((T, D))
    assert rnnkit.gradcheck(m, x, np.zeros((4, H))).ok


def test_gradcheck_catches_a_wrong_backward(monkeypatch):
    """The oracle must be able to fail: break the GRU's backward and watch it."""
    from rnnkit import functional

    original = functional.GRUMath.step_back

    def broken(self, s, t, n, dh, dc, p, ws, dgx, dgh):
        original(self, s, t, n, dh, dc, p, ws, dgx, dgh)
        dgx[:, :1] *= 1.01  # a 1 % error in one unit's reset-gate gradient

    monkeypatch.setattr(functional.GRUMath, "step_back", broken)
    m = rnnkit.GRU(D, H, dtype=np.float64, rng=0)
    x = np.random.default_rng(0).standard_normal((T, B, D))
    result = rnnkit.gradcheck(m, x)
    assert not result.ok
    assert "FAIL" in str(result)
    with pytest.raises(GradcheckError):
        rnnkit.gradcheck(m, x, raise_on_failure=True)


def test_gradcheck_leaves_module_alone():
    m = rnnkit.LSTM(D, H, dtype=np.float64, rng=0, dropout=0.5, num_layers=2)
    before = m.state_dict()
    m.grads["weight_hh_l0"][...] = 3.0
    rng_state = m.rng.bit_generator.state
    rnnkit.gradcheck(m, np.random.default_rng(0).standard_normal((T, B, D)))
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    assert np.all(m.grads["weight_hh_l0"] == 3.0)
    assert np.all(m.grads["weight_ih_l0"] == 0.0)
    assert m.rng.bit_generator.state == rng_state


def test_gradcheck_requires_float64():
    with pytest.raises(TypeError, match="float64"):
        rnnkit.gradcheck(rnnkit.RNN(D, H), np.zeros((T, B, D), np.float32))


def test_numerical_gradient_of_a_known_function():
    a = np.array([[1.0, -2.0], [0.5, 3.0]])
    g = numerical_gradient(lambda: float(np.sum(a**3)), a)
    assert relative_error(3 * a**2, g) < 1e-9
    np.testing.assert_array_equal(a, [[1.0, -2.0], [0.5, 3.0]])  # restored exactly


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize(("bidirectional", "with_lengths"), [(False, False), (True, True)])
def test_one_hot_input_equals_dense_one_hot(cell, bidirectional, with_lengths):
    """OneHot ids give the numbers of the dense one-hot input: outputs and every gradient."""
    V = 5
    rng = np.random.default_rng(3)
    ids = rng.integers(0, V, (T, B))
    dense = np.eye(V)[ids]                                             # (T, B, V)
    lengths = np.array([2, 4, 1]) if with_lengths else None
    cls = LAYERS[cell.split("_")[0]]
    kw = {"nonlinearity": cell[4:]} if cell.startswith("rnn") else {}
    a, b = (cls(V, H, num_layers=2, bidirectional=bidirectional, dtype=np.float64, rng=5, **kw)
            for _ in range(2))
    ya, _, ca = a.forward(rnnkit.OneHot(ids, V), lengths=lengths)
    yb, _, cb = b.forward(dense, lengths=lengths)
    np.testing.assert_allclose(ya, yb, rtol=1e-12, atol=1e-13)
    dy = rng.standard_normal(ya.shape)
    dxa, _ = a.backward(dy, None, ca)
    b.backward(dy, None, cb)
    assert dxa is None
    for k in a.grads:
        np.testing.assert_allclose(a.grads[k], b.grads[k], rtol=1e-12, atol=1e-13, err_msg=k)


@pytest.mark.parametrize("name", list(LAYERS))
def test_one_name_table_pairs_each_layer_with_its_cell(name):
    """recurrent.LAYERS and CELLS: one name, one cell math, G gate blocks in both (and in the
    lab's parameter budgets)."""
    layer, cell = LAYERS[name](D, H), STEP_CELLS[name](D, H)
    assert type(layer.math) is type(cell.math) is layer.math_class
    G = layer.math.gates
    assert GATES[name] == G and layer.weight_ih_l0.shape == cell.weight_ih.shape == (G * H, D)
