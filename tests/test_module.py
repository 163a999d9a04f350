"""The module API: gradients that backward adds into, state dicts of copies, dtypes kept end to
end, no state left on the module between calls, seeds, init bounds, batch_first, and the
property that a padded batch computes exactly what each sequence computes alone.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rnnkit

T, B, D, H = 5, 4, 3, 4
LENGTHS = [3, T, 1, 4]
LAYERS = {
    "rnn_tanh": lambda *a, **kw: rnnkit.RNN(*a, nonlinearity="tanh", **kw),
    "rnn_relu": lambda *a, **kw: rnnkit.RNN(*a, nonlinearity="relu", **kw),
    "gru": rnnkit.GRU,
    "lstm": rnnkit.LSTM,
}
CELLS = {
    "rnn_tanh": lambda *a, **kw: rnnkit.RNNCell(*a, nonlinearity="tanh", **kw),
    "rnn_relu": lambda *a, **kw: rnnkit.RNNCell(*a, nonlinearity="relu", **kw),
    "gru": rnnkit.GRUCell,
    "lstm": rnnkit.LSTMCell,
}


def states(s):
    return s if isinstance(s, tuple) else (s,)


def make(kind, dtype=np.float64, seed=0, **kw):
    kw = {"num_layers": 2, "bidirectional": True, **kw}
    return LAYERS[kind](D, H, dtype=dtype, rng=seed, **kw)


def data(kind, m, seed=1, batch_first=False):
    """x, hx, dy, dhn for module m, in its dtype."""
    rng = np.random.default_rng(seed)
    dt, LK, KH = m.dtype, m.num_layers * m.num_directions, m.num_directions * H

    def arr(*shape):
        return rng.standard_normal(shape).astype(dt)

    def state():
        return (arr(LK, B, H), arr(LK, B, H)) if kind == "lstm" else arr(LK, B, H)

    x = arr(B, T, D) if batch_first else arr(T, B, D)
    dy = arr(B, T, KH) if batch_first else arr(T, B, KH)
    return x, state(), dy, state()


# ------------------------------------------------------------------------------------------------
# grads
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", LAYERS)
@pytest.mark.parametrize("bias", [True, False])
def test_grads_match_state_dict(kind, bias):
    for m in (make(kind, bias=bias), CELLS[kind](D, H, bias=bias, rng=0)):
        sd, grads = m.state_dict(), m.grads
        assert list(grads) == list(sd)
        for k, v in sd.items():
            assert grads[k].shape == v.shape and grads[k].dtype == v.dtype
            assert np.all(grads[k] == 0)
        assert m.num_parameters() == sum(v.size for v in sd.values())
        assert any("bias" in k for k in sd) == bias


@pytest.mark.parametrize("kind", LAYERS)
def test_backward_adds_into_grads_and_zero_grad_clears(kind):
    m = make(kind)
    x, hx, dy, dhn = data(kind, m)
    _, _, cache = m.forward(x, hx, LENGTHS)
    dx1, dhx1 = m.backward(dy, dhn, cache)
    once = {k: g.copy() for k, g in m.grads.items()}
    assert all(np.any(g != 0) for g in once.values())
    dx2, dhx2 = m.backward(dy, dhn, cache)  # the cache can be used again: it is not consumed
    for k, g in m.grads.items():
        np.testing.assert_array_equal(g, 2 * once[k], err_msg=k)
    np.testing.assert_array_equal(dx2, dx1)
    for a, b in zip(states(dhx1), states(dhx2), strict=True):
        np.testing.assert_array_equal(a, b)
    live = m.grads
    m.zero_grad()
    assert all(np.all(g == 0) for g in m.grads.values())
    assert all(live[k] is g for k, g in m.grads.items())  # cleared in place


@pytest.mark.parametrize("kind", CELLS)
def test_cell_backward_adds_into_grads(kind):
    c = CELLS[kind](D, H, dtype=np.float64, rng=0)
    rng = np.random.default_rng(0)
    x, h = rng.standard_normal((B, D)), rng.standard_normal((B, H))
    hx = (h, h + 1) if kind == "lstm" else h
    _, cache = c.forward(x, hx)
    c.backward(hx, cache)
    once = {k: g.copy() for k, g in c.grads.items()}
    c.backward(hx, cache)
    for k, g in c.grads.items():
        np.testing.assert_array_equal(g, 2 * once[k], err_msg=k)
    c.zero_grad()
    assert all(np.all(g == 0) for g in c.grads.values())


# ------------------------------------------------------------------------------------------------
# state dicts
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", LAYERS)
def test_state_dict_returns_copies(kind):
    m = make(kind)
    sd = m.state_dict()
    for v in sd.values():
        v[...] = 123.0
    assert all(np.all(v != 123.0) for v in m.state_dict().values())
    params = dict(m.named_parameters())  # the live arrays, for optimizers
    assert all(not np.shares_memory(params[k], v) for k, v in sd.items())
    m.load_state_dict(sd)
    params["weight_ih_l0"][0, 0] = 7.0  # named_parameters are live: writes show
    assert m.state_dict()["weight_ih_l0"][0, 0] == 7.0


def test_load_state_dict_casts_float32_into_float64():
    m = make("lstm", dtype=np.float64)
    m32 = make("lstm", dtype=np.float32, seed=5)
    m.load_state_dict(m32.state_dict())
    for k, v in m32.state_dict().items():
        got = m.state_dict()[k]
        assert got.dtype == np.float64
        np.testing.assert_array_equal(got, v.astype(np.float64))
    # and the other way, rounding to the nearest float32
    m32.load_state_dict(make("lstm", seed=6).state_dict())
    for k, v in make("lstm", seed=6).state_dict().items():
        assert m32.state_dict()[k].dtype == np.float32
        np.testing.assert_array_equal(m32.state_dict()[k], v.astype(np.float32))


def test_load_state_dict_refuses_values_the_dtype_cannot_hold():
    m32, m64 = make("lstm", dtype=np.float32), make("lstm")
    before = m32.state_dict()
    sd = {k: v + 1 for k, v in m64.state_dict().items()}     # float64, every key changed
    sd["bias_hh_l1_reverse"][2] = -1e300                      # the last key; float32: -inf
    with pytest.raises(ValueError, match=r"state_dict\['bias_hh_l1_reverse'\] holds -1e\+300, "
                                         r"beyond what float32 holds \(at most 3\.40282e\+38"):
        m32.load_state_dict(sd)
    assert all(np.array_equal(v, before[k]) for k, v in m32.state_dict().items())
    m64.load_state_dict(sd)                                   # float64 holds it
    assert m64.bias_hh_l1_reverse[2] == -1e300


def test_load_state_dict_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    m = make("gru")
    sd = {k: torch.from_numpy(v.astype(np.float32)) for k, v in make("gru", seed=9).state_dict()
          .items()}
    m.load_state_dict(sd)
    for k, t in sd.items():
        np.testing.assert_array_equal(m.state_dict()[k], t.numpy().astype(np.float64))


def test_load_state_dict_keeps_the_arrays():
    """Loading writes into the existing arrays: optimizers holding them keep working."""
    m = make("gru")
    before = dict(m.named_parameters())
    m.load_state_dict(make("gru", seed=3).state_dict())
    assert all(before[k] is p for k, p in m.named_parameters())


# ------------------------------------------------------------------------------------------------
# dtypes
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", LAYERS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("lengths", [None, LENGTHS])
def test_dtype_kept_end_to_end(kind, dtype, lengths):
    m = make(kind, dtype=dtype, dropout=0.3)
    x, hx, dy, dhn = data(kind, m)
    y, hn, cache = m.forward(x, hx, lengths)
    dx, dhx = m.backward(dy, dhn, cache)
    y2, hn2 = m(x, hx, lengths)
    for a in (y, dx, y2, *states(hn), *states(dhx), *states(hn2), *m.grads.values(),
              *m.state_dict().values()):
        assert a.dtype == np.dtype(dtype)
    assert all(np.all(np.isfinite(a)) for a in (y, dx, *m.grads.values()))


@pytest.mark.parametrize("kind", CELLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cell_dtype_kept_end_to_end(kind, dtype):
    c = CELLS[kind](D, H, dtype=dtype, rng=0)
    x = np.ones((B, D), dtype)
    out, cache = c.forward(x)
    dx, dhx = c.backward(out, cache)
    for a in (dx, *states(out), *states(dhx), *states(c(x)), *c.grads.values()):
        assert a.dtype == np.dtype(dtype)


# ------------------------------------------------------------------------------------------------
# no state on the module
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", LAYERS)
def test_forward_stores_nothing_on_the_module(kind):
    m = make(kind)
    x, hx, dy, dhn = data(kind, m)
    before = dict(vars(m))
    params = m.state_dict()
    rng_state = m.rng.bit_generator.state
    _, _, cache = m.forward(x, hx, LENGTHS)
    m(x, hx, LENGTHS)
    m.backward(dy, dhn, cache)
    assert vars(m).keys() == before.keys()
    assert all(vars(m)[k] is v for k, v in before.items())  # nothing rebound
    assert list(m._params) == list(params) and list(m._grads) == list(params)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, params[k])
    assert m.rng.bit_generator.state == rng_state  # no dropout: no randomness drawn


@pytest.mark.parametrize("kind", LAYERS)
def test_caches_are_independent(kind):
    """Two forwards, then the two backwards in reverse order: each cache carries its own
    activations, so the result equals doing each pair alone."""
    m = make(kind)
    x1, hx1, dy1, dhn1 = data(kind, m, seed=1)
    x2, hx2, dy2, dhn2 = data(kind, m, seed=2)

    ref = make(kind)
    _, _, c = ref.forward(x1, hx1, LENGTHS)
    dx1_ref, _ = ref.backward(dy1, dhn1, c)
    g1 = {k: g.copy() for k, g in ref.grads.items()}
    ref.zero_grad()
    _, _, c = ref.forward(x2, hx2)
    dx2_ref, _ = ref.backward(dy2, dhn2, c)
    g2 = ref.grads

    _, _, c1 = m.forward(x1, hx1, LENGTHS)
    _, _, c2 = m.forward(x2, hx2)
    dx2, _ = m.backward(dy2, dhn2, c2)
    dx1, _ = m.backward(dy1, dhn1, c1)
    np.testing.assert_array_equal(dx1, dx1_ref)
    np.testing.assert_array_equal(dx2, dx2_ref)
    for k, g in m.grads.items():
        np.testing.assert_allclose(g, g1[k] + g2[k], rtol=1e-13, atol=1e-13, err_msg=k)


@pytest.mark.parametrize("kind", LAYERS)
@pytest.mark.parametrize("lengths", [None, LENGTHS])
def test_call_equals_forward(kind, lengths):
    m = make(kind)
    x, hx, _, _ = data(kind, m)
    y, hn, _ = m.forward(x, hx, lengths)
    y2, hn2 = m(x, hx, lengths)
    np.testing.assert_array_equal(y2, y)
    for a, b in zip(states(hn2), states(hn), strict=True):
        np.testing.assert_array_equal(a, b)


def test_inputs_are_not_mutated():
    m = make("lstm")
    x, hx, dy, dhn = data("lstm", m)
    copies = [a.copy() for a in (x, *hx, dy, *dhn)]
    _, _, cache = m.forward(x, hx, LENGTHS)
    m.backward(dy, dhn, cache)
    for a, b in zip((x, *hx, dy, *dhn), copies, strict=True):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------------------------
# modes, seeds, init
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("m", [make("gru", dropout=0.2), rnnkit.LSTMCell(D, H, rng=0)])
def test_train_eval_return_self_and_toggle(m):
    assert m.training is True
    assert m.eval() is m and m.training is False
    assert m.train() is m and m.training is True
    assert m.train(False) is m and m.training is False


@pytest.mark.parametrize("kind", LAYERS)
def test_same_seed_same_weights(kind):
    a, b = make(kind, seed=4), make(kind, seed=np.random.default_rng(4))
    c = make(kind, seed=5)
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[k], v)
    assert not all(np.array_equal(c.state_dict()[k], v) for k, v in a.state_dict().items())
    ca, cb = CELLS[kind](D, H, rng=4), CELLS[kind](D, H, rng=4)
    for k, v in ca.state_dict().items():
        np.testing.assert_array_equal(cb.state_dict()[k], v)


@pytest.mark.parametrize("kind", LAYERS)
@pytest.mark.parametrize("hidden", [1, 4, 25])
def test_init_bounds(kind, hidden):
    bound = 1 / np.sqrt(hidden)
    mods = [LAYERS[kind](D, hidden, num_layers=2, bidirectional=True, rng=0),
            CELLS[kind](D, hidden, rng=0)]
    for m in mods:
        vals = np.concatenate([v.ravel() for v in m.state_dict().values()])
        assert np.all(np.abs(vals) <= bound)
        if vals.size < 50:
            continue
        assert vals.max() > 0.8 * bound and vals.min() < -0.8 * bound  # uniform, not tiny
        assert abs(vals.mean()) < 0.2 * bound


# ------------------------------------------------------------------------------------------------
# batch_first
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", LAYERS)
@pytest.mark.parametrize("lengths", [None, LENGTHS])
def test_batch_first_is_the_transpose(kind, lengths):
    tm, bf = make(kind), make(kind, batch_first=True)
    x, hx, dy, dhn = data(kind, tm)
    y, hn, c = tm.forward(x, hx, lengths)
    dx, dhx = tm.backward(dy, dhn, c)
    yb, hnb, cb = bf.forward(x.transpose(1, 0, 2), hx, lengths)
    dxb, dhxb = bf.backward(dy.transpose(1, 0, 2), dhn, cb)
    np.testing.assert_array_equal(yb, y.transpose(1, 0, 2))
    np.testing.assert_array_equal(dxb, dx.transpose(1, 0, 2))
    for a, b in [*zip(states(hnb), states(hn), strict=True),
                 *zip(states(dhxb), states(dhx), strict=True)]:
        np.testing.assert_array_equal(a, b)  # states stay (L*K, B, H), as in PyTorch
    for k, g in tm.grads.items():
        np.testing.assert_array_equal(bf.grads[k], g)


# ------------------------------------------------------------------------------------------------
# the property: a padded batch is each sequence alone, truncated to its length
# ------------------------------------------------------------------------------------------------


@st.composite
def cases(draw):
    T_ = draw(st.integers(1, 6))
    B_ = draw(st.integers(1, 4))
    return {
        "kind": draw(st.sampled_from(sorted(LAYERS))),
        "num_layers": draw(st.integers(1, 2)),
        "bidirectional": draw(st.booleans()),
        "T": T_, "B": B_,
        "D": draw(st.integers(1, 3)),
        "H": draw(st.integers(1, 4)),
        "lengths": draw(st.lists(st.integers(1, T_), min_size=B_, max_size=B_)),
        "with_hx": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
    }


@settings(max_examples=60, deadline=None)
@given(cases())
def test_padded_batch_equals_each_sequence_alone(case):
    kind, T_, B_, D_, H_ = case["kind"], case["T"], case["B"], case["D"], case["H"]
    L, K = case["num_layers"], 2 if case["bidirectional"] else 1
    m = LAYERS[kind](D_, H_, num_layers=L, bidirectional=case["bidirectional"],
                     dtype=np.float64, rng=case["seed"])
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((T_, B_, D_))
    dy = rng.standard_normal((T_, B_, K * H_))
    n_states = 2 if kind == "lstm" else 1
    hx = tuple(rng.standard_normal((L * K, B_, H_)) for _ in range(n_states))
    dhn = tuple(rng.standard_normal((L * K, B_, H_)) for _ in range(n_states))

    def pack(s):
        return s if kind == "lstm" else s[0]

    lengths = np.array(case["lengths"])
    hx_arg = pack(hx) if case["with_hx"] else None
    y, hn, cache = m.forward(x, hx_arg, lengths)
    dx, dhx = m.backward(dy, pack(dhn), cache)
    grads = {k: g.copy() for k, g in m.grads.items()}
    m.zero_grad()

    tol = {"rtol": 1e-12, "atol": 1e-12}
    summed = {k: np.zeros_like(g) for k, g in grads.items()}
    for b, n in enumerate(lengths):
        # sequence b alone, cut to its length, with its own slice of every state
        h_b = pack(tuple(h[:, b:b + 1] for h in hx)) if case["with_hx"] else None
        y_b, hn_b, c_b = m.forward(x[:n, b:b + 1], h_b)
        dx_b, dhx_b = m.backward(dy[:n, b:b + 1], pack(tuple(d[:, b:b + 1] for d in dhn)), c_b)
        np.testing.assert_allclose(y[:n, b], y_b[:, 0], **tol)
        assert np.all(y[n:, b] == 0)  # padded outputs are exactly zero
        np.testing.assert_allclose(dx[:n, b], dx_b[:, 0], **tol)
        assert np.all(dx[n:, b] == 0)  # and padded inputs get exactly no gradient
        for s, s_b in [*zip(states(hn), states(hn_b), strict=True),
                       *zip(states(dhx), states(dhx_b), strict=True)]:
            np.testing.assert_allclose(s[:, b], s_b[:, 0], **tol)
        for k, g in m.grads.items():
            summed[k] += g
        m.zero_grad()
    for k, g in grads.items():  # the parameter gradient of a batch is the sum over sequences
        np.testing.assert_allclose(g, summed[k], rtol=1e-11, atol=1e-11, err_msg=k)
