"""rnnkit.tutorial: the chapter's printed numbers, parity with the main API, gradient checks.

Everything here is NumPy only (no torch). Oracles, in order: the numbers the chapter prints,
float64 central differences, the main API (rnnkit.RNN/GRU/LSTM and their cells) on the same
weights, and properties of softmax and the loss.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import rnnkit
from rnnkit import tutorial as tu
from rnnkit.gradcheck import numerical_gradient, relative_error

KINDS = ("rnn", "gru", "lstm")
KEYS = {"rnn": tu.RNN_KEYS, "gru": tu.GRU_KEYS, "lstm": tu.LSTM_KEYS}
LAYERS = {"rnn": rnnkit.RNN, "gru": rnnkit.GRU, "lstm": rnnkit.LSTM}
CELLS = {"rnn": rnnkit.RNNCell, "gru": rnnkit.GRUCell, "lstm": rnnkit.LSTMCell}


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


# the package's own finite-difference helpers (central differences, norm-relative error)
rel_error = relative_error


def numeric_grad(f: Callable[[], float], a: np.ndarray) -> np.ndarray:
    return numerical_gradient(f, a, eps=1e-5)   # 1e-5: the smallest error for these sizes


def make_params(kind: str, n_x: int, n_s: int, n_y: int, rng: np.random.Generator,
                dtype: type = np.float64) -> dict[str, np.ndarray]:
    shapes = {"U": (n_s, n_x), "W": (n_s, n_s), "b": (n_s, 1)}
    p = {k: (0.6 * rng.standard_normal(shapes[k[0]])).astype(dtype) for k in KEYS[kind]}
    p["V"] = rng.standard_normal((n_y, n_s)).astype(dtype)
    p["by"] = rng.standard_normal((n_y, 1)).astype(dtype)
    return p


def run_forward(kind: str, x: np.ndarray, s0: np.ndarray, p: dict[str, np.ndarray],
                c0: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, list]:
    """(s, y, c or None, caches) for any kind."""
    if kind == "lstm":
        s, y, c, caches = tu.lstm_forward(x, s0, p, c0)
        return s, y, c, caches
    s, y, caches = (tu.rnn_forward if kind == "rnn" else tu.gru_forward)(x, s0, p)
    return s, y, None, caches


def run_backward(kind: str, ds: np.ndarray, caches: list, dc_last: np.ndarray | None = None
                 ) -> dict[str, np.ndarray]:
    if kind == "lstm":
        return tu.lstm_backward(ds, caches, dc_last)
    return (tu.rnn_backward if kind == "rnn" else tu.gru_backward)(ds, caches)


def cell_step(kind: str, x_t: np.ndarray, s_prev: np.ndarray, c_prev: np.ndarray,
              p: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None, tuple]:
    """(s_next, c_next or None, cache) for any kind."""
    if kind == "lstm":
        s_next, c_next, _, cache = tu.lstm_cell_forward(x_t, s_prev, c_prev, p)
        return s_next, c_next, cache
    f = tu.rnn_cell_forward if kind == "rnn" else tu.gru_cell_forward
    s_next, _, cache = f(x_t, s_prev, p)
    return s_next, None, cache


def one_hot(rng: np.random.Generator, n_y: int, m: int, T: int) -> np.ndarray:
    y = np.zeros((n_y, m, T))
    labels = rng.integers(0, n_y, size=(m, T))
    for j in range(m):
        for t in range(T):
            y[labels[j, t], j, t] = 1.0
    return y


# --------------------------------------------------------------------------------------------
# 1. the chapter's examples
# --------------------------------------------------------------------------------------------

# the chapter's printout of rnn_backward's gradients (end of section 4.1.4.3)
CHAPTER_DX = np.array([
    [6.07961714e-02, 6.51523342e-02, 1.35284158e-02, -4.17389120e-01],
    [-1.87655227e-01, 1.88161638e-01, 2.76636979e-02, 5.88910236e-01],
    [-2.10309856e-01, 1.17512701e-01, -1.81722854e-05, 1.33762936e+00],
])[:, None, :]                                                        # (3, 1, 4)
CHAPTER_DS0 = np.array([[-0.04446273], [-0.48089235], [-0.20806299], [0.05651028],
                        [0.24527145]])
CHAPTER_DU = np.array([
    [-7.75341202e-02, 1.14056089e-03, -1.39468435e-01],
    [-3.76126305e-01, -2.71092586e-01, -7.68534819e-01],
    [-2.27890773e-01, -4.52402940e-01, -5.62591790e-02],
    [3.67591208e-02, 1.45958528e-01, 1.47219164e-02],
    [-1.16043009e+00, -8.51763028e-01, -1.44090680e+00],
])
CHAPTER_DW = np.array([
    [0.04560171, 0.04695379, 0.0257273, -0.02726464, 0.05504417],
    [0.37031535, 0.3703334, 0.38913814, -0.39608747, 0.36938758],
    [0.21223499, 0.3431846, 0.22255773, -0.35298064, 0.21136843],
    [-0.06210387, -0.06084794, -0.06470341, 0.06497274, -0.03480747],
    [0.78119033, 0.74650186, 0.34013264, -0.31155225, 0.6784628],
])
CHAPTER_DBA = np.array([[0.02851001], [0.39449393], [0.35633039], [-0.06492795],
                        [0.33991813]])


def chapter_sequence_example() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """The chapter's seeding for rnn_forward / rnn_backward: note W is drawn before U."""
    np.random.seed(1)  # noqa: NPY002 - the chapter's own seeding, reproduced exactly
    x = np.random.randn(3, 1, 4)  # noqa: NPY002
    s0 = np.random.randn(5, 1)  # noqa: NPY002
    W = np.random.randn(5, 5)  # noqa: NPY002
    U = np.random.randn(5, 3)  # noqa: NPY002
    V = np.random.randn(3, 5)  # noqa: NPY002
    ba = np.random.randn(5, 1)  # noqa: NPY002
    by = np.random.randn(3, 1)  # noqa: NPY002
    return x, s0, {"U": U, "W": W, "V": V, "ba": ba, "by": by}


def test_chapter_backward_example_reproduces_every_printed_number() -> None:
    x, s0, parameters = chapter_sequence_example()
    _, _, caches = tu.rnn_forward(x, s0, parameters)
    ds = np.random.randn(5, 1, 4)  # noqa: NPY002 - drawn right after, as in the chapter
    gradients = tu.rnn_backward(ds, caches)
    assert set(gradients) == {"dx", "ds0", "dU", "dW", "dba"}
    # printed as %.8e (9 significant digits): relative rounding error <= 5e-9
    np.testing.assert_allclose(gradients["dx"], CHAPTER_DX, rtol=1e-8, atol=0)
    np.testing.assert_allclose(gradients["dU"], CHAPTER_DU, rtol=1e-8, atol=0)
    # printed with 8 decimals: absolute rounding error <= 5e-9
    np.testing.assert_allclose(gradients["ds0"], CHAPTER_DS0, rtol=0, atol=6e-9)
    np.testing.assert_allclose(gradients["dW"], CHAPTER_DW, rtol=0, atol=6e-9)
    np.testing.assert_allclose(gradients["dba"], CHAPTER_DBA, rtol=0, atol=6e-9)
    # the quoted digest values, too
    np.testing.assert_allclose(gradients["dx"][:, 0, 3], [-0.41738912, 0.58891024, 1.33762936],
                               rtol=0, atol=6e-9)


def test_chapter_cell_forward_example() -> None:
    # the cell example draws U before W; its printed values are lost, so shapes and formula
    np.random.seed(1)  # noqa: NPY002
    x_t = np.random.randn(3, 1)  # noqa: NPY002
    s_prev = np.random.randn(5, 1)  # noqa: NPY002
    U = np.random.randn(5, 3)  # noqa: NPY002
    W = np.random.randn(5, 5)  # noqa: NPY002
    V = np.random.randn(3, 5)  # noqa: NPY002
    ba = np.random.randn(5, 1)  # noqa: NPY002
    by = np.random.randn(3, 1)  # noqa: NPY002
    parameters = {"U": U, "W": W, "V": V, "ba": ba, "by": by}
    s_next, out_pred, cache = tu.rnn_cell_forward(x_t, s_prev, parameters)
    assert s_next.shape == (5, 1)
    assert out_pred.shape == (3, 1)
    np.testing.assert_array_equal(s_next, np.tanh(np.dot(U, x_t) + np.dot(W, s_prev) + ba))
    logits = np.dot(V, s_next) + by
    np.testing.assert_allclose(out_pred, np.exp(logits) / np.exp(logits).sum(), rtol=1e-15)
    assert cache[0] is s_next and cache[1] is s_prev and cache[2] is x_t
    assert cache[3] is parameters


def test_chapter_sequence_forward_example_is_the_cell_step_by_step() -> None:
    x, s0, parameters = chapter_sequence_example()
    s, y, caches = tu.rnn_forward(x, s0, parameters)
    assert s.shape == (5, 1, 4)
    assert y.shape == (3, 1, 4)
    assert len(caches) == 4
    s_prev = s0
    for t in range(4):
        s_next, out_pred, _ = tu.rnn_cell_forward(x[:, :, t], s_prev, parameters)
        np.testing.assert_array_equal(s[:, :, t], s_next)
        np.testing.assert_array_equal(y[:, :, t], out_pred)
        np.testing.assert_array_equal(caches[t][1], s_prev)
        s_prev = s_next


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_gru_lstm_sequence_forward_is_the_cell_step_by_step(kind: str) -> None:
    rng = np.random.default_rng(3)
    p = make_params(kind, 3, 4, 5, rng)
    x, s0, c0 = rng.standard_normal((3, 2, 5)), rng.standard_normal((4, 2)), None
    if kind == "lstm":
        c0 = rng.standard_normal((4, 2))
    s, y, c, _ = run_forward(kind, x, s0, p, c0)
    assert s.shape == (4, 2, 5) and y.shape == (5, 2, 5)
    s_prev, c_prev = s0, (c0 if c0 is not None else np.zeros_like(s0))
    for t in range(5):
        s_next, c_next, _ = cell_step(kind, x[:, :, t], s_prev, c_prev, p)
        np.testing.assert_array_equal(s[:, :, t], s_next)
        np.testing.assert_array_equal(y[:, :, t], tu.softmax(p["V"] @ s_next + p["by"]))
        if c is not None:
            assert c_next is not None
            np.testing.assert_array_equal(c[:, :, t], c_next)
            c_prev = c_next
        s_prev = s_next


def test_lstm_forward_c0_defaults_to_zeros() -> None:
    rng = np.random.default_rng(4)
    p = make_params("lstm", 3, 4, 2, rng)
    x, s0 = rng.standard_normal((3, 2, 3)), rng.standard_normal((4, 2))
    a = tu.lstm_forward(x, s0, p)
    b = tu.lstm_forward(x, s0, p, np.zeros((4, 2)))
    for u, v in zip(a[:3], b[:3], strict=True):
        np.testing.assert_array_equal(u, v)


# --------------------------------------------------------------------------------------------
# 2. the same numbers as the main API
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("m", [1, 3])
@pytest.mark.parametrize("kind", KINDS)
def test_sequence_matches_main_api(kind: str, m: int) -> None:
    rng = np.random.default_rng(10 + m)
    n_x, n_s, n_y, T = 3, 4, 5, 6
    p = make_params(kind, n_x, n_s, n_y, rng)
    x = rng.standard_normal((n_x, m, T))
    s0 = rng.standard_normal((n_s, m))
    c0 = rng.standard_normal((n_s, m)) if kind == "lstm" else None
    s, _, c, caches = run_forward(kind, x, s0, p, c0)

    layer = LAYERS[kind](n_x, n_s, dtype=np.float64)
    layer.load_state_dict(tu.to_rnnkit(p, kind))
    hx = (s0.T[None], c0.T[None]) if c0 is not None else s0.T[None]
    out, hn, cache = layer.forward(x.transpose(2, 1, 0), hx)   # (T, B, D) <-> (n_x, m, T)
    np.testing.assert_allclose(out.transpose(2, 1, 0), s, rtol=0, atol=1e-12)
    if c is not None:
        np.testing.assert_allclose(hn[0][0].T, s[:, :, -1], rtol=0, atol=1e-12)
        np.testing.assert_allclose(hn[1][0].T, c[:, :, -1], rtol=0, atol=1e-12)
    else:
        np.testing.assert_allclose(hn[0].T, s[:, :, -1], rtol=0, atol=1e-12)

    # backward: dL/dy from above plus dL/dh_n (and dL/dc_n) at the end
    ds = rng.standard_normal((n_s, m, T))
    dh_last = rng.standard_normal((n_s, m))
    dc_last = rng.standard_normal((n_s, m)) if kind == "lstm" else None
    ds_total = ds.copy()
    ds_total[:, :, -1] += dh_last                 # the tutorial has one ds per step
    g = run_backward(kind, ds_total, caches, dc_last)
    dhn = (dh_last.T[None], dc_last.T[None]) if dc_last is not None else dh_last.T[None]
    dx, dhx = layer.backward(ds.transpose(2, 1, 0), dhn, cache)
    np.testing.assert_allclose(dx.transpose(2, 1, 0), g["dx"], rtol=0, atol=1e-12)
    if kind == "lstm":
        np.testing.assert_allclose(dhx[0][0].T, g["ds0"], rtol=0, atol=1e-12)
        np.testing.assert_allclose(dhx[1][0].T, g["dc0"], rtol=0, atol=1e-12)
    else:
        np.testing.assert_allclose(dhx[0].T, g["ds0"], rtol=0, atol=1e-12)
    mapped = tu.gradients_to_rnnkit(g, kind)
    assert set(mapped) == set(layer.grads)
    for name, value in layer.grads.items():
        np.testing.assert_allclose(mapped[name], value, rtol=0, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("kind", KINDS)
def test_cell_matches_main_api_cell(kind: str) -> None:
    rng = np.random.default_rng(20)
    n_x, n_s, m = 3, 4, 2
    p = make_params(kind, n_x, n_s, 2, rng)
    x_t, s_prev, c_prev = (rng.standard_normal((n_x, m)), rng.standard_normal((n_s, m)),
                           rng.standard_normal((n_s, m)))
    s_next, c_next, cache = cell_step(kind, x_t, s_prev, c_prev, p)
    cell = CELLS[kind](n_x, n_s, dtype=np.float64)
    cell.load_state_dict(tu.to_rnnkit(p, kind, cell=True))
    hx = (s_prev.T, c_prev.T) if kind == "lstm" else s_prev.T
    state, ccache = cell.forward(x_t.T, hx)
    ds_next, dc_next = rng.standard_normal((n_s, m)), rng.standard_normal((n_s, m))
    if kind == "lstm":
        assert c_next is not None
        np.testing.assert_allclose(state[0].T, s_next, rtol=0, atol=1e-12)
        np.testing.assert_allclose(state[1].T, c_next, rtol=0, atol=1e-12)
        g = tu.lstm_cell_backward(ds_next, dc_next, cache)
        dx, (dh, dc) = cell.backward((ds_next.T, dc_next.T), ccache)
        np.testing.assert_allclose(dc.T, g["dc_prev"], rtol=0, atol=1e-12)
    else:
        np.testing.assert_allclose(state.T, s_next, rtol=0, atol=1e-12)
        g = (tu.rnn_cell_backward if kind == "rnn" else tu.gru_cell_backward)(ds_next, cache)
        dx, dh = cell.backward(ds_next.T, ccache)
    np.testing.assert_allclose(dx.T, g["dx_t"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(dh.T, g["ds_prev"], rtol=0, atol=1e-12)
    mapped = tu.gradients_to_rnnkit(g, kind, cell=True)
    for name, value in cell.grads.items():
        np.testing.assert_allclose(mapped[name], value, rtol=0, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("kind", KINDS)
def test_from_rnnkit_runs_the_module_with_both_biases(kind: str) -> None:
    # a freshly initialised module has nonzero bias_hh: the merge b = b_ih + b_hh must be exact
    layer = LAYERS[kind](3, 4, dtype=np.float64, rng=7)
    rng = np.random.default_rng(8)
    V, by = rng.standard_normal((2, 4)), rng.standard_normal((2, 1))
    p = tu.from_rnnkit(layer, V=V, by=by)
    assert set(p) == {*KEYS[kind], "V", "by"}
    x, s0 = rng.standard_normal((3, 2, 5)), rng.standard_normal((4, 2))
    s, _, _, _ = run_forward(kind, x, s0, p, np.zeros((4, 2)) if kind == "lstm" else None)
    hx = (s0.T[None], np.zeros((1, 2, 4))) if kind == "lstm" else s0.T[None]
    out, _ = layer(x.transpose(2, 1, 0), hx)
    np.testing.assert_allclose(out.transpose(2, 1, 0), s, rtol=0, atol=1e-12)
    # the same from the state_dict, and from a cell
    q = tu.from_rnnkit(layer.state_dict(), kind)
    for k in KEYS[kind]:
        np.testing.assert_array_equal(p[k], q[k])
    cell = CELLS[kind](3, 4, dtype=np.float64, rng=7)
    r = tu.from_rnnkit(cell)
    assert set(r) == set(KEYS[kind])


@pytest.mark.parametrize("kind", KINDS)
def test_to_and_from_rnnkit_round_trip(kind: str) -> None:
    p = make_params(kind, 3, 4, 2, np.random.default_rng(9))
    sd = tu.to_rnnkit(p, kind)
    G = {"rnn": 1, "gru": 3, "lstm": 4}[kind]
    assert {k: v.shape for k, v in sd.items()} == {
        "weight_ih_l0": (G * 4, 3), "weight_hh_l0": (G * 4, 4), "bias_ih_l0": (G * 4,),
        "bias_hh_l0": (G * 4,)}
    if kind != "gru":
        np.testing.assert_array_equal(sd["bias_hh_l0"], 0)
    back = tu.from_rnnkit(sd, kind)
    assert set(back) == set(KEYS[kind])
    for k in KEYS[kind]:
        np.testing.assert_array_equal(back[k], p[k])


def test_from_rnnkit_without_bias_gives_zero_biases() -> None:
    layer = rnnkit.GRU(3, 4, bias=False, dtype=np.float64, rng=0)
    p = tu.from_rnnkit(layer)
    for k in ("br", "bz", "bn_x", "bn_s"):
        np.testing.assert_array_equal(p[k], np.zeros((4, 1)))


def test_from_rnnkit_refuses_what_the_tutorial_cannot_express() -> None:
    with pytest.raises(ValueError, match="one layer, one direction"):
        tu.from_rnnkit(rnnkit.LSTM(3, 4, num_layers=2))
    with pytest.raises(ValueError, match="one layer, one direction"):
        tu.from_rnnkit(rnnkit.GRU(3, 4, bidirectional=True))
    with pytest.raises(ValueError, match="tanh"):
        tu.from_rnnkit(rnnkit.RNN(3, 4, nonlinearity="relu"))
    with pytest.raises(ValueError, match="needs kind"):
        tu.from_rnnkit(rnnkit.GRU(3, 4).state_dict())
    with pytest.raises(ValueError, match="kind='gru' but the module is a LSTM"):
        tu.from_rnnkit(rnnkit.LSTM(3, 4), "gru")
    with pytest.raises(ValueError, match="kind must be one of"):
        tu.to_rnnkit({}, "transformer")
    with pytest.raises(ValueError, match="missing"):
        tu.to_rnnkit({"U": np.zeros((4, 3))}, "rnn")


# --------------------------------------------------------------------------------------------
# 3. gradient checks (float64 central differences)
# --------------------------------------------------------------------------------------------

TOL = 1e-7


@pytest.mark.parametrize("kind", KINDS)
def test_cell_backward_gradcheck(kind: str) -> None:
    rng = np.random.default_rng(30)
    n_x, n_s, m = 3, 4, 2
    p = make_params(kind, n_x, n_s, 2, rng)
    x_t, s_prev, c_prev = (rng.standard_normal((n_x, m)), rng.standard_normal((n_s, m)),
                           rng.standard_normal((n_s, m)))
    ds_next, dc_next = rng.standard_normal((n_s, m)), rng.standard_normal((n_s, m))

    def loss() -> float:
        s_next, c_next, _ = cell_step(kind, x_t, s_prev, c_prev, p)
        value = np.sum(ds_next * s_next)
        if c_next is not None:
            value += np.sum(dc_next * c_next)
        return float(value)

    _, _, cache = cell_step(kind, x_t, s_prev, c_prev, p)
    if kind == "lstm":
        g = tu.lstm_cell_backward(ds_next, dc_next, cache)
        assert rel_error(g["dc_prev"], numeric_grad(loss, c_prev)) < TOL
    else:
        g = (tu.rnn_cell_backward if kind == "rnn" else tu.gru_cell_backward)(ds_next, cache)
    expected = {"dx_t", "ds_prev", *("d" + k for k in KEYS[kind])}
    assert set(g) == expected | ({"dc_prev"} if kind == "lstm" else set())
    assert rel_error(g["dx_t"], numeric_grad(loss, x_t)) < TOL
    assert rel_error(g["ds_prev"], numeric_grad(loss, s_prev)) < TOL
    for k in KEYS[kind]:
        assert g["d" + k].shape == p[k].shape
        assert rel_error(g["d" + k], numeric_grad(loss, p[k])) < TOL, k


@pytest.mark.parametrize("kind", KINDS)
def test_sequence_backward_gradcheck(kind: str) -> None:
    rng = np.random.default_rng(31)
    n_x, n_s, m, T = 3, 4, 2, 5
    p = make_params(kind, n_x, n_s, 2, rng)
    x, s0, c0 = (rng.standard_normal((n_x, m, T)), rng.standard_normal((n_s, m)),
                 rng.standard_normal((n_s, m)))
    ds, dc_last = rng.standard_normal((n_s, m, T)), rng.standard_normal((n_s, m))

    def loss() -> float:
        s, _, c, _ = run_forward(kind, x, s0, p, c0 if kind == "lstm" else None)
        value = np.sum(ds * s)
        if c is not None:
            value += np.sum(dc_last * c[:, :, -1])
        return float(value)

    _, _, _, caches = run_forward(kind, x, s0, p, c0 if kind == "lstm" else None)
    g = run_backward(kind, ds, caches, dc_last if kind == "lstm" else None)
    expected = {"dx", "ds0", *("d" + k for k in KEYS[kind])}
    assert set(g) == expected | ({"dc0"} if kind == "lstm" else set())
    if kind == "lstm":
        assert rel_error(g["dc0"], numeric_grad(loss, c0)) < TOL
    assert rel_error(g["dx"], numeric_grad(loss, x)) < TOL
    assert rel_error(g["ds0"], numeric_grad(loss, s0)) < TOL
    for k in KEYS[kind]:
        assert rel_error(g["d" + k], numeric_grad(loss, p[k])) < TOL, k


@pytest.mark.parametrize("kind", KINDS)
def test_cross_entropy_backward_gradcheck(kind: str) -> None:
    # the whole chain: forward -> softmax -> cross-entropy -> back through the output layer
    rng = np.random.default_rng(32)
    n_x, n_s, n_y, m, T = 3, 4, 5, 2, 4
    p = make_params(kind, n_x, n_s, n_y, rng)
    x, s0 = rng.standard_normal((n_x, m, T)), rng.standard_normal((n_s, m))
    y_true = one_hot(rng, n_y, m, T)
    y_true[:, 1, 2] = 0.0                        # a masked (padding) step contributes nothing

    def loss() -> float:
        return tu.cross_entropy(run_forward(kind, x, s0, p)[1], y_true)

    _, y_pred, _, caches = run_forward(kind, x, s0, p)
    out = tu.cross_entropy_backward(y_pred, y_true, caches)
    assert set(out) == {"dV", "dby", "ds"} and out["ds"].shape == (n_s, m, T)
    assert rel_error(out["dV"], numeric_grad(loss, p["V"])) < TOL
    assert rel_error(out["dby"], numeric_grad(loss, p["by"])) < TOL
    g = run_backward(kind, out["ds"], caches)
    assert rel_error(g["dx"], numeric_grad(loss, x)) < TOL
    assert rel_error(g["ds0"], numeric_grad(loss, s0)) < TOL
    for k in KEYS[kind]:
        assert rel_error(g["d" + k], numeric_grad(loss, p[k])) < TOL, k


def test_rnn_loss_and_gradients_gradcheck() -> None:
    rng = np.random.default_rng(33)
    p = make_params("rnn", 3, 4, 5, rng)
    x, s0 = rng.standard_normal((3, 2, 4)), rng.standard_normal((4, 2))
    y_true = one_hot(rng, 5, 2, 4)
    loss, g = tu.rnn_loss_and_gradients(x, y_true, s0, p)
    assert loss == tu.cross_entropy(tu.rnn_forward(x, s0, p)[1], y_true)
    assert set(g) == {"dx", "ds0", "dU", "dW", "dba", "dV", "dby"}

    def f() -> float:
        return tu.rnn_loss_and_gradients(x, y_true, s0, p)[0]

    for k in p:
        assert rel_error(g["d" + k], numeric_grad(f, p[k])) < TOL, k
    assert rel_error(g["dx"], numeric_grad(f, x)) < TOL
    assert rel_error(g["ds0"], numeric_grad(f, s0)) < TOL


# --------------------------------------------------------------------------------------------
# 4. softmax, cross-entropy, dtypes, and the errors at the door
# --------------------------------------------------------------------------------------------


def test_softmax_columns_sum_to_one_and_large_logits_do_not_overflow() -> None:
    x = np.array([[1.0, 1000.0, -1000.0], [2.0, 1001.0, -999.0], [3.0, 999.0, -1001.0]])
    p = tu.softmax(x)                            # overflow would raise (warnings are errors)
    assert np.all(np.isfinite(p)) and np.all(p >= 0)
    np.testing.assert_allclose(p.sum(axis=0), 1.0, rtol=1e-15)
    # shifting a column by a constant changes nothing
    np.testing.assert_allclose(p[:, 1], tu.softmax(np.array([[0.0], [1.0], [-1.0]]))[:, 0],
                               rtol=1e-15)
    np.testing.assert_allclose(p[:, 2], p[:, 1], rtol=1e-15)
    np.testing.assert_allclose(tu.softmax(x + 1e4), p, rtol=1e-12)
    np.testing.assert_allclose(p[:, 0], np.exp([1, 2, 3]) / np.exp([1, 2, 3]).sum(), rtol=1e-15)


@settings(max_examples=50, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 4)),
              elements=st.floats(-1e4, 1e4)))
def test_softmax_property(x: np.ndarray) -> None:
    p = tu.softmax(x)
    assert p.shape == x.shape
    assert np.all(np.isfinite(p)) and np.all(p >= 0) and np.all(p <= 1)
    np.testing.assert_allclose(p.sum(axis=0), 1.0, rtol=1e-12)
    # monotone: a larger logit never gets a smaller probability
    order = np.argsort(x, axis=0)
    assert np.all(np.diff(np.take_along_axis(p, order, axis=0), axis=0) >= 0)


def test_cross_entropy_values() -> None:
    rng = np.random.default_rng(40)
    y_true = one_hot(rng, 4, 3, 5)
    assert tu.cross_entropy(y_true.copy(), y_true) == 0.0       # perfect: 0, no 0*log 0 NaN
    uniform = np.full((4, 3, 5), 0.25)
    np.testing.assert_allclose(tu.cross_entropy(uniform, y_true), 15 * np.log(4), rtol=1e-14)
    logits = rng.standard_normal((4, 3, 5))
    y_pred = np.stack([tu.softmax(logits[:, :, t]) for t in range(5)], axis=2)
    manual = -sum(np.log(y_pred[:, j, t] @ y_true[:, j, t]) for j in range(3) for t in range(5))
    np.testing.assert_allclose(tu.cross_entropy(y_pred, y_true), manual, rtol=1e-13)
    with pytest.raises(ValueError, match="same shape"):
        tu.cross_entropy(y_pred, y_true[:, :, :2])


@pytest.mark.parametrize("kind", KINDS)
def test_float32_in_float32_out(kind: str) -> None:
    rng = np.random.default_rng(50)
    p = make_params(kind, 3, 4, 5, rng, dtype=np.float32)
    x = rng.standard_normal((3, 2, 4)).astype(np.float32)
    s0 = rng.standard_normal((4, 2)).astype(np.float32)
    s, y, c, caches = run_forward(kind, x, s0, p)
    assert s.dtype == y.dtype == np.float32
    assert c is None or c.dtype == np.float32
    out = tu.cross_entropy_backward(y, one_hot(rng, 5, 2, 4).astype(np.float32), caches)
    assert {v.dtype for v in out.values()} == {np.dtype(np.float32)}
    g = run_backward(kind, out["ds"], caches)
    assert {v.dtype for v in g.values()} == {np.dtype(np.float32)}


def test_errors_say_what_was_expected() -> None:
    rng = np.random.default_rng(60)
    p = make_params("rnn", 3, 4, 2, rng)
    s0 = np.zeros((4, 2))
    with pytest.raises(ValueError, match=r"x\[:, None, :\]"):
        tu.rnn_forward(np.zeros((3, 5)), s0, p)
    with pytest.raises(ValueError, match=r"s0 must have shape \(n_s, m\) = \(4, 2\)"):
        tu.rnn_forward(np.zeros((3, 2, 5)), np.zeros((4, 1)), p)
    with pytest.raises(ValueError, match="missing \\['by'\\]"):
        tu.rnn_forward(np.zeros((3, 2, 5)), s0, {k: v for k, v in p.items() if k != "by"})
    with pytest.raises(TypeError, match="x must be a NumPy array"):
        tu.rnn_forward([[[0.0]]], s0, p)  # type: ignore[arg-type]
    _, _, caches = tu.rnn_forward(np.zeros((3, 2, 5)), s0, p)
    with pytest.raises(ValueError, match=r"ds must have shape \(n_s, m, T\) = \(4, 2, 5\)"):
        tu.rnn_backward(np.zeros((4, 2, 4)), caches)
    q = make_params("lstm", 3, 4, 2, rng)
    _, _, _, lcaches = tu.lstm_forward(np.zeros((3, 2, 5)), s0, q)
    with pytest.raises(ValueError, match="dc_last must be"):
        tu.lstm_backward(np.zeros((4, 2, 5)), lcaches, np.zeros((4, 1)))
    with pytest.raises(ValueError, match="c0 must be"):
        tu.lstm_forward(np.zeros((3, 2, 5)), s0, q, np.zeros((4, 1)))
