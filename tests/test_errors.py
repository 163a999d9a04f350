"""Error messages are API: the exception type (TypeError for the wrong kind or dtype, ValueError
for the wrong value or shape), and a message that names what was expected and what was got.
Never an IndexError or a broadcasting error from deep inside. A failed call changes nothing.
Padding content (t >= length) never matters, not even NaN or Inf.
"""

from __future__ import annotations

import re
from contextlib import contextmanager

import numpy as np
import pytest

import rnnkit

T, B, D, H = 5, 4, 3, 4
L, K = 2, 2  # layers, directions
f32, f64 = np.float32, np.float64
LENGTHS = [3, T, 1, 4]


@contextmanager
def raises(exc, *patterns):
    """Exactly ``exc`` (not a subclass, so no IndexError-derived AxisError), with every regex
    pattern found in the message, and no sign of a NumPy internals error."""
    with pytest.raises(exc) as info:
        yield info
    assert type(info.value) is exc, f"{type(info.value).__name__}: {info.value}"
    msg = str(info.value)
    for p in patterns:
        assert re.search(p, msg), f"{p!r} not found in {msg!r}"
    for internal in ("broadcast", "index out of", "too many indices", "operands"):
        assert internal not in msg, msg


def lstm(dtype=f32, **kw):
    return rnnkit.LSTM(D, H, num_layers=L, bidirectional=True, dtype=dtype, rng=0, **kw)


def gru(dtype=f32, **kw):
    return rnnkit.GRU(D, H, num_layers=L, bidirectional=True, dtype=dtype, rng=0, **kw)


def x_(shape=(T, B, D), dtype=f32, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def state(dtype=f32, shape=(L * K, B, H)):
    return np.zeros(shape, dtype)


# ------------------------------------------------------------------------------------------------
# x
# ------------------------------------------------------------------------------------------------


def test_x_1d():
    with raises(ValueError, r"x must have shape \(T, B, 3\)", r"\(T, 3\)", r"got 1-D shape \(5,\)"):
        lstm()(x_((5,)))
    # a 1-D x of D features: say how to make it one step of one sequence
    with raises(ValueError, r"got 1-D shape \(3,\)", re.escape("x[None, :]")):
        lstm()(x_((3,)))


def test_x_1d_hint_is_runnable():
    m = rnnkit.GRU(1, H, rng=0)
    x = x_((T,))
    with raises(ValueError, r"\(T, B, 1\)", r"got 1-D shape \(5,\)", re.escape("x[:, None]")):
        m(x)
    m(x[:, None])  # the hint works


def test_x_4d():
    with raises(ValueError, r"x must have shape \(T, B, 3\)", r"got 4-D shape \(5, 4, 3, 1\)"):
        lstm()(x_((T, B, D, 1)))


def test_x_wrong_features():
    with raises(ValueError, r"\(T, B, 3\)", r"got \(5, 4, 2\)", "input_size=3, got 2"):
        lstm()(x_((T, B, 2)))
    with raises(ValueError, r"\(T, 3\) for one unbatched", r"got \(5, 2\)"):
        lstm()(x_((T, 2)))
    with raises(ValueError, r"\(B, T, 3\)", r"got \(4, 5, 2\)"):
        lstm(batch_first=True)(x_((B, T, 2)))


def test_x_wrong_dtype():
    with raises(TypeError, "x must have dtype float32", "got float64", r"x\.astype\(np\.float32\)",
                r"dtype=np\.float64"):
        lstm()(x_(dtype=f64))
    with raises(TypeError, "x must have dtype float64", "got float32"):
        lstm(f64)(x_(dtype=f32))
    with raises(TypeError, "x must have dtype float32", "got int64"):
        lstm()(np.ones((T, B, D), np.int64))
    with raises(TypeError, "x must have dtype float32", "got bool"):
        lstm()(np.ones((T, B, D), bool))


def test_x_not_an_array():
    with raises(TypeError, "x must be a NumPy array", r"\(T, B, 3\)", "got list", "np.asarray"):
        lstm()(x_().tolist())
    with raises(TypeError, "x must be a NumPy array", "got NoneType"):
        lstm()(None)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_x_not_finite(bad):
    x = x_()
    x[2, 1, 0] = bad
    with raises(ValueError, "x contains NaN or Inf", r"index \(2, 1, 0\)"):
        lstm()(x)


def test_x_not_finite_index_points_into_x_as_given():
    """With lengths the batch is sorted inside, with batch_first transposed, unbatched
    expanded: the reported index must still be the caller's."""
    x = x_()
    x[2, 1, 0] = np.nan  # sequence 1 has length T: a real step
    with raises(ValueError, r"index \(2, 1, 0\)"):
        lstm()(x, lengths=LENGTHS)
    xb = x_((B, T, D))
    xb[1, 2, 0] = np.nan
    with raises(ValueError, r"index \(1, 2, 0\)"):
        lstm(batch_first=True)(xb, lengths=LENGTHS)
    xu = x_((T, D))
    xu[3, 2] = np.inf
    with raises(ValueError, r"index \(3, 2\)"):
        lstm()(xu)


def test_x_empty():
    with raises(ValueError, "at least one time step and one sequence", r"got shape \(0, 4, 3\)"):
        lstm()(x_((0, B, D)))
    with raises(ValueError, "at least one time step and one sequence", r"got shape \(5, 0, 3\)"):
        lstm()(x_((T, 0, D)))
    with raises(ValueError, "at least one time step", r"got shape \(0, 3\)"):
        lstm()(x_((0, D)))


# ------------------------------------------------------------------------------------------------
# hx
# ------------------------------------------------------------------------------------------------


def test_hx_wrong_shape():
    with raises(ValueError, r"h0 must have shape \(num_layers \* num_directions, B, H\)",
                r"\(4, 4, 4\)", r"got \(2, 4, 4\)", "num_layers=2", "num_directions=2"):
        gru()(x_(), state(shape=(2, B, H)))
    with raises(ValueError, "c0 must have shape", r"got \(4, 2, 4\)"):
        lstm()(x_(), (state(), state(shape=(L * K, 2, H))))
    with raises(ValueError, "h0 must have shape", r"\(4, 4\)", r"got \(4, 4, 4\)", "unbatched"):
        gru()(x_((T, D)), state())


def test_hx_wrong_dtype():
    with raises(TypeError, "h0 must have dtype float32", "got float64"):
        gru()(x_(), state(f64))
    with raises(TypeError, "c0 must have dtype float32", "got int64"):
        lstm()(x_(), (state(), np.zeros((L * K, B, H), np.int64)))
    with raises(TypeError, "h0 must be a NumPy array", "got list"):
        lstm()(x_(), (state().tolist(), state()))


def test_hx_pair_given_to_gru():
    with raises(TypeError, "hx of a GRU is one array h0", "got a tuple", "LSTM"):
        gru()(x_(), (state(), state()))
    with raises(TypeError, "hx of a RNN is one array h0", "got a list"):
        rnnkit.RNN(D, H, rng=0)(x_(), [state(shape=(1, B, H))])


def test_hx_single_array_given_to_lstm():
    with raises(TypeError, r"hx of an LSTM must be a pair \(h0, c0\) or None", "got ndarray"):
        lstm()(x_(), state())
    with raises(TypeError, r"pair \(h0, c0\)", "got a tuple of length 3"):
        lstm()(x_(), (state(), state(), state()))


def test_hx_not_finite():
    h = state()
    h[1, 2, 3] = np.nan
    with raises(ValueError, "h0 contains NaN or Inf", r"index \(1, 2, 3\)"):
        gru()(x_(), h)
    with raises(ValueError, "c0 contains NaN or Inf", r"index \(1, 2, 3\)"):
        lstm()(x_(), (state(), h))


# ------------------------------------------------------------------------------------------------
# lengths
# ------------------------------------------------------------------------------------------------


def test_lengths_wrong_shape():
    with raises(ValueError, r"lengths must have shape \(B,\) = \(4,\)", r"got shape \(3,\)"):
        lstm()(x_(), lengths=[1, 2, 3])
    with raises(ValueError, r"\(B,\) = \(4,\)", r"got shape \(1, 4\)"):
        lstm()(x_(), lengths=[[1, 2, 3, 4]])
    with raises(ValueError, r"\(B,\) = \(4,\)", r"got shape \(\)"):
        lstm()(x_(), lengths=3)


def test_lengths_wrong_dtype():
    with raises(TypeError, "lengths must be integers", "got dtype float64",
                r"astype\(np\.int64\)"):
        lstm()(x_(), lengths=np.array([1.0, 2.0, 3.0, 4.0]))
    with raises(TypeError, "lengths must be integers", "got dtype float64"):
        lstm()(x_(), lengths=[1.5, 2, 3, 4])
    with raises(TypeError, "lengths must be integers", "got dtype bool"):
        lstm()(x_(), lengths=[True] * B)


@pytest.mark.parametrize("bad", [0, T + 1, -1])
def test_lengths_out_of_range(bad):
    with raises(ValueError, r"lengths must lie in \[1, T\] = \[1, 5\]", rf"got \[{bad}\]"):
        lstm()(x_(), lengths=[bad, 2, 3, 4])


def test_lengths_with_unbatched_x():
    with raises(ValueError, "lengths needs a batch", re.escape("x[:, None, :]")):
        lstm()(x_((T, D)), lengths=[3])


# ------------------------------------------------------------------------------------------------
# backward: bad arguments raise, and the grads are left as they were
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def trained():
    """An LSTM after one forward/backward (so grads are non-zero), its cache and a snapshot."""
    m = lstm(f64)
    x = x_(dtype=f64)
    y, hn, cache = m.forward(x, lengths=LENGTHS)
    m.backward(np.ones_like(y), None, cache)
    snapshot = {k: g.copy() for k, g in m.grads.items()}
    assert any(np.any(g != 0) for g in snapshot.values())
    return m, y, hn, cache, snapshot


def assert_grads_unchanged(m, snapshot):
    for k, g in m.grads.items():
        np.testing.assert_array_equal(g, snapshot[k], err_msg=k)


def test_backward_dy_wrong_shape(trained):
    m, y, _, cache, snap = trained
    with raises(ValueError, r"dy must have shape \(T, B, 8\) = \(5, 4, 8\)", r"got \(2, 4, 8\)",
                "shape of y"):
        m.backward(y[:2], None, cache)
    with raises(ValueError, "dy must have shape", r"got \(5, 4, 4\)"):
        m.backward(y[..., :4], None, cache)
    assert_grads_unchanged(m, snap)


def test_backward_dy_wrong_dtype(trained):
    m, y, _, cache, snap = trained
    with raises(TypeError, "dy must have dtype float64", "got float32"):
        m.backward(y.astype(f32), None, cache)
    with raises(TypeError, "dy must be a NumPy array", "got list"):
        m.backward(y.tolist(), None, cache)
    assert_grads_unchanged(m, snap)


def test_backward_dy_not_finite(trained):
    m, y, _, cache, snap = trained
    dy = np.ones_like(y)
    dy[0, 2, 5] = np.nan  # sequence 2 has length 1: t = 0 is real
    with raises(ValueError, "dy contains NaN or Inf", r"index \(0, 2, 5\)"):
        m.backward(dy, None, cache)
    assert_grads_unchanged(m, snap)


def test_backward_cache_from_another_module(trained):
    m, y, _, cache, snap = trained
    other = lstm(f64)
    with raises(ValueError, "another module", "this module's own forward"):
        other.backward(y, None, cache)
    assert all(np.all(g == 0) for g in other.grads.values())
    assert_grads_unchanged(m, snap)


@pytest.mark.parametrize("bad", [{}, None, "cache", (1, 2, 3)])
def test_backward_not_a_cache(trained, bad):
    m, y, hn, cache, snap = trained
    with raises(TypeError, r"cache must be the third value returned by LSTM\.forward",
                f"got {type(bad).__name__}"):
        m.backward(y, None, bad)
    # the classic slip: passing the whole forward tuple
    with raises(TypeError, "got tuple"):
        m.backward(y, None, (y, hn, cache))
    assert_grads_unchanged(m, snap)


def test_backward_dhn_wrong(trained):
    m, y, _, cache, snap = trained
    h = state(f64)
    with raises(ValueError, r"dh_n must have shape \(num_layers \* num_directions, B, H\)",
                r"\(4, 4, 4\)", r"got \(1, 4, 4\)"):
        m.backward(y, (h[:1], h), cache)
    with raises(ValueError, "dc_n must have shape", r"got \(4, 4, 3\)"):
        m.backward(y, (h, h[..., :3]), cache)
    with raises(TypeError, r"dhn of an LSTM must be a pair \(dh_n, dc_n\)", "got ndarray"):
        m.backward(y, h, cache)
    with raises(TypeError, "dh_n must have dtype float64", "got float32"):
        m.backward(y, (h.astype(f32), h), cache)
    bad = h.copy()
    bad[3, 0, 1] = np.inf
    with raises(ValueError, "dc_n contains NaN or Inf", r"index \(3, 0, 1\)"):
        m.backward(y, (h, bad), cache)
    assert_grads_unchanged(m, snap)


def test_backward_gru_dhn_pair():
    m = gru(f64)
    y, hn, cache = m.forward(x_(dtype=f64))
    with raises(TypeError, "dhn of a GRU is one array dh_n", "got a tuple"):
        m.backward(y, (hn, hn), cache)
    assert all(np.all(g == 0) for g in m.grads.values())


# ------------------------------------------------------------------------------------------------
# load_state_dict: bad dicts raise, and the module is left as it was
# ------------------------------------------------------------------------------------------------


def _load_fails(m, sd, exc, *patterns):
    before = m.state_dict()
    with raises(exc, *patterns):
        m.load_state_dict(sd)
    after = m.state_dict()
    assert list(after) == list(before)
    for k, v in before.items():
        np.testing.assert_array_equal(after[k], v, err_msg=k)


def _changed(m):
    """Every parameter + 1: if anything were written before the error, it would show."""
    return {k: v + 1 for k, v in m.state_dict().items()}


def test_load_state_dict_missing_keys():
    m = lstm()
    sd = _changed(m)
    del sd["weight_hh_l0"], sd["bias_ih_l1_reverse"]
    _load_fails(m, sd, ValueError, r"missing keys \['weight_hh_l0', 'bias_ih_l1_reverse'\]",
                "Expected exactly", "strict=False")


def test_load_state_dict_extra_keys():
    m = lstm()
    _load_fails(m, {**_changed(m), "weight_ih_l2": np.ones((16, 8))}, ValueError,
                r"unexpected keys \['weight_ih_l2'\]", "Expected exactly")


def test_load_state_dict_wrong_shape():
    m = lstm()
    sd = _changed(m)
    sd["weight_hh_l1_reverse"] = np.ones((12, 4))  # the last key: all others were fine
    _load_fails(m, sd, ValueError, r"state_dict\['weight_hh_l1_reverse'\] has shape \(12, 4\)",
                r"expected \(16, 4\)")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_load_state_dict_not_finite(bad):
    m = lstm()
    sd = _changed(m)
    sd["bias_hh_l1_reverse"][3] = bad
    _load_fails(m, sd, ValueError, r"state_dict\['bias_hh_l1_reverse'\] contains NaN or Inf")


def test_load_state_dict_not_numbers():
    m = lstm()
    sd = _changed(m)
    sd["bias_hh_l1"] = np.array(["a"] * 16)
    _load_fails(m, sd, TypeError, r"state_dict\['bias_hh_l1'\] must hold real numbers",
                "got dtype <U1")
    sd["bias_hh_l1"] = None
    _load_fails(m, sd, TypeError, "real numbers", "got dtype object")


@pytest.mark.parametrize("bad", [[("weight_ih_l0", np.ones((16, 3)))], None, "weights"])
def test_load_state_dict_not_a_mapping(bad):
    _load_fails(lstm(), bad, TypeError, "state_dict must be a mapping name -> array",
                f"got {type(bad).__name__}")


def test_load_state_dict_non_strict_reports_and_loads_the_rest():
    m = lstm()
    sd = _changed(m)
    del sd["weight_ih_l0"]
    sd["extra"] = np.ones(2)
    result = m.load_state_dict(sd, strict=False)
    assert result.missing_keys == ["weight_ih_l0"]
    assert result.unexpected_keys == ["extra"]
    np.testing.assert_array_equal(m.weight_hh_l0, sd["weight_hh_l0"])


# ------------------------------------------------------------------------------------------------
# constructors
# ------------------------------------------------------------------------------------------------


LAYERS = [rnnkit.RNN, rnnkit.GRU, rnnkit.LSTM]
CELLS = [rnnkit.RNNCell, rnnkit.GRUCell, rnnkit.LSTMCell]


@pytest.mark.parametrize("cls", LAYERS + CELLS)
def test_constructor_sizes(cls):
    with raises(ValueError, "hidden_size must be a positive int", "got 0"):
        cls(D, 0)
    with raises(ValueError, "input_size must be a positive int", "got -3"):
        cls(-3, H)
    with raises(TypeError, "hidden_size must be a positive int", "got float 4.0"):
        cls(D, 4.0)


@pytest.mark.parametrize("cls", LAYERS)
def test_constructor_layers_and_dropout(cls):
    with raises(TypeError, "num_layers must be a positive int", "got float 1.5"):
        cls(D, H, num_layers=1.5)
    with raises(TypeError, "num_layers must be a positive int", "got bool"):
        cls(D, H, num_layers=True)
    for p in (1.0, -0.1, float("nan")):
        with raises(ValueError, r"dropout must be a number in \[0, 1\)", f"got {p}"):
            cls(D, H, dropout=p)
    with raises(TypeError, "dropout must be a number", "got str"):
        cls(D, H, dropout="0.5")
    with raises(TypeError, "bidirectional must be True or False", "got str 'yes'"):
        cls(D, H, bidirectional="yes")


@pytest.mark.parametrize("cls", [rnnkit.RNN, rnnkit.RNNCell])
def test_constructor_nonlinearity(cls):
    with raises(ValueError, "nonlinearity must be 'tanh' or 'relu'", "got 'sigmoid'"):
        cls(D, H, nonlinearity="sigmoid")


@pytest.mark.parametrize("cls", LAYERS + CELLS)
@pytest.mark.parametrize("dtype", [np.int32, np.float16, np.complex128])
def test_constructor_dtype(cls, dtype):
    with raises(TypeError, r"dtype must be np\.float32 or np\.float64",
                f"got {np.dtype(dtype)}"):
        cls(D, H, dtype=dtype)


@pytest.mark.parametrize("cls", LAYERS + CELLS)
def test_constructor_rng(cls):
    with raises(TypeError, r"rng must be a numpy\.random\.Generator, an int seed or None",
                "got str", r"default_rng\(0\)"):
        cls(D, H, rng="abc")
    with raises(TypeError, "rng must be", "got RandomState"):
        cls(D, H, rng=np.random.RandomState(0))


# ------------------------------------------------------------------------------------------------
# cells
# ------------------------------------------------------------------------------------------------


def test_cell_bad_inputs():
    c = rnnkit.LSTMCell(D, H, rng=0)
    with raises(ValueError, r"x must have shape \(B, 3\)", r"\(3,\) for one unbatched",
                r"got \(5, 4, 3\)"):
        c(x_())
    with raises(ValueError, r"\(B, 3\)", r"got \(4, 2\)"):
        c(x_((B, 2)))
    with raises(TypeError, "x must have dtype float32", "got float64"):
        c(x_((B, D), f64))
    with raises(ValueError, "empty batch"):
        c(x_((0, D)))
    x = x_((B, D))
    x[1, 2] = np.nan
    with raises(ValueError, "x contains NaN or Inf", r"index \(1, 2\)"):
        c(x)
    with raises(TypeError, r"hx of an LSTMCell must be a pair \(h, c\)", "got ndarray"):
        c(x_((B, D)), state(shape=(B, H)))
    with raises(ValueError, r"h must have shape \(B, 4\) = \(4, 4\)", r"got \(4, 2\)"):
        c(x_((B, D)), (state(shape=(B, 2)), state(shape=(B, H))))
    with raises(TypeError, "hx of a GRUCell is one array", "got a tuple"):
        rnnkit.GRUCell(D, H, rng=0)(x_((B, D)), (state(shape=(B, H)),) * 2)


def test_cell_backward_bad_arguments():
    c = rnnkit.LSTMCell(D, H, dtype=f64, rng=0)
    (h, cc), cache = c.forward(x_((B, D), f64))
    c.backward((np.ones_like(h), None), cache)
    snap = {k: g.copy() for k, g in c.grads.items()}
    other = rnnkit.LSTMCell(D, H, dtype=f64, rng=0)
    with raises(ValueError, "another cell", "own forward"):
        other.backward((h, cc), cache)
    with raises(TypeError, "cache must be the second value returned", "got tuple"):
        c.backward((h, cc), ((h, cc), cache))
    with raises(ValueError, r"dh must have shape \(B, 4\)", r"got \(2, 4\)"):
        c.backward((h[:2], cc), cache)
    with raises(TypeError, "dc must have dtype float64", "got float32"):
        c.backward((h, cc.astype(f32)), cache)
    assert_grads_unchanged(c, snap)
    assert all(np.all(g == 0) for g in other.grads.values())


# ------------------------------------------------------------------------------------------------
# padding content never matters
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("batch_first", [False, True])
def test_padding_content_does_not_matter(cls, batch_first):
    kw = {"num_layers": 2, "bidirectional": True, "dtype": f64, "batch_first": batch_first}
    m = cls(D, H, rng=0, **kw)
    twin = cls(D, H, rng=0, **kw)
    rng = np.random.default_rng(0)
    lengths = np.array(LENGTHS)
    pad = np.arange(T)[:, None] >= lengths[None, :]  # (T, B): padded positions
    if batch_first:
        pad = pad.T
    x = rng.standard_normal((B, T, D) if batch_first else (T, B, D))
    dy = rng.standard_normal((*x.shape[:2], 2 * H))
    x[pad], dy[pad] = 0.0, 0.0
    x_bad, dy_bad = x.copy(), dy.copy()
    x_bad[pad] = rng.choice([np.nan, np.inf, -np.inf, 1e300], size=x_bad[pad].shape)
    dy_bad[pad] = rng.choice([np.nan, np.inf, -np.inf, 1e300], size=dy_bad[pad].shape)
    x_bad0, dy_bad0 = x_bad.copy(), dy_bad.copy()

    y, hn, cache = m.forward(x, lengths=lengths)
    dx, dhx = m.backward(dy, None, cache)
    y2, hn2, cache2 = twin.forward(x_bad, lengths=lengths)
    dx2, dhx2 = twin.backward(dy_bad, None, cache2)

    def states(s):
        return s if isinstance(s, tuple) else (s,)

    for a, b in [(y, y2), (dx, dx2), *zip(states(hn), states(hn2), strict=True),
                 *zip(states(dhx), states(dhx2), strict=True)]:
        assert np.all(np.isfinite(b))
        np.testing.assert_array_equal(b, a)
    for k, g in m.grads.items():
        np.testing.assert_array_equal(twin.grads[k], g, err_msg=k)
    assert np.all(y2[pad] == 0)
    assert np.all(dx2[pad] == 0)  # exactly: padding has no gradient
    np.testing.assert_array_equal(x_bad, x_bad0)  # the caller's arrays are not touched
    np.testing.assert_array_equal(dy_bad, dy_bad0)
