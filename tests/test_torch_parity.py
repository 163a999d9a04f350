"""PyTorch parity: the second oracle. Every layer and cell against its ``torch.nn`` twin loaded
with the same weights: outputs, final states, input and state gradients, and every parameter
gradient, in float64 (to 1e-10) and float32 (to 5e-5). Also state dicts both ways, and dropout.

The loss of every comparison is ``sum(y * dy) + sum(h_n * dh_n) (+ sum(c_n * dc_n))`` with
random ``dy`` and ``dh_n``, so ``backward(dy, dhn)`` is exactly its gradient.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import rnnkit

torch = pytest.importorskip("torch")
pack_padded_sequence = torch.nn.utils.rnn.pack_padded_sequence
pad_packed_sequence = torch.nn.utils.rnn.pad_packed_sequence

pytestmark = pytest.mark.torch

T, B, D, H = 5, 4, 3, 4
LENGTHS = [3, T, 1, 4]  # unsorted, one full-length, one of length 1
TOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 5e-5}

# kind -> (rnnkit layer, torch layer, rnnkit cell, torch cell, extra constructor arguments)
KINDS = {
    "rnn_tanh": (rnnkit.RNN, torch.nn.RNN, rnnkit.RNNCell, torch.nn.RNNCell,
                 {"nonlinearity": "tanh"}),
    "rnn_relu": (rnnkit.RNN, torch.nn.RNN, rnnkit.RNNCell, torch.nn.RNNCell,
                 {"nonlinearity": "relu"}),
    "gru": (rnnkit.GRU, torch.nn.GRU, rnnkit.GRUCell, torch.nn.GRUCell, {}),
    "lstm": (rnnkit.LSTM, torch.nn.LSTM, rnnkit.LSTMCell, torch.nn.LSTMCell, {}),
}


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


def close(actual, expected, dtype, what=""):
    tol = TOL[np.dtype(dtype)]
    assert actual.dtype == np.dtype(dtype), f"{what}: dtype {actual.dtype}, want {dtype}"
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol, err_msg=what)


def close_states(ours, theirs, dtype, names=("h", "c")):
    """Compare a state (or an (h, c) pair) with a tuple of arrays or tensors."""
    ours, theirs = as_tuple(ours), as_tuple(theirs)
    assert len(ours) == len(theirs)
    for name, a, b in zip(names, ours, theirs, strict=False):
        close(a, b.detach().numpy() if isinstance(b, torch.Tensor) else b, dtype, name)


def torch_dtype(dtype):
    return torch.float64 if np.dtype(dtype) == np.float64 else torch.float32


def twin(m, kind, **kw):
    """The torch layer with ``m``'s weights, in ``m``'s dtype."""
    tm = KINDS[kind][1](D, H, **KINDS[kind][4], **kw).to(torch_dtype(m.dtype))
    tm.load_state_dict({k: torch.from_numpy(v) for k, v in m.state_dict().items()}, strict=True)
    return tm


def make_pair(kind, dtype=np.float64, seed=0, **kw):
    m = KINDS[kind][0](D, H, **KINDS[kind][4], dtype=dtype, rng=seed, **kw)
    return m, twin(m, kind, **kw)


def random_state(rng, kind, shape, dtype):
    h = rng.standard_normal(shape).astype(dtype)
    if kind == "lstm":
        return h, rng.standard_normal(shape).astype(dtype)
    return h


def as_tuple(state):
    return state if isinstance(state, tuple) else (state,)


def torch_leaf(a):
    return torch.tensor(a, requires_grad=True)


def run_torch(tm, kind, x, hx, lengths, dy, dhn, batch_first=False):
    """Forward and backward through the torch twin; every result as NumPy.

    When ``hx`` is None the twin gets explicit zero states, so dh0 (dc0) exist to compare with
    (zeros are what None means)."""
    xt = torch_leaf(x)
    state_shape = dhn[0].shape if kind == "lstm" else dhn.shape
    if hx is None:
        zeros = np.zeros(state_shape, x.dtype)
        hx = (zeros, zeros.copy()) if kind == "lstm" else zeros
    hxt = tuple(torch_leaf(h) for h in as_tuple(hx))
    arg = hxt if kind == "lstm" else hxt[0]
    if lengths is None:
        yt, hnt = tm(xt, arg)
    else:
        packed = pack_padded_sequence(xt, torch.tensor(lengths), batch_first=batch_first,
                                      enforce_sorted=False)
        out, hnt = tm(packed, arg)
        yt, _ = pad_packed_sequence(out, batch_first=batch_first, total_length=x.shape[
            1 if batch_first else 0])
    loss = (yt * torch.from_numpy(dy)).sum()
    for h, dh in zip(as_tuple(hnt), as_tuple(dhn), strict=True):
        loss = loss + (h * torch.from_numpy(dh)).sum()
    loss.backward()
    grads = {name: p.grad.numpy() for name, p in tm.named_parameters()}
    return (yt.detach().numpy(), tuple(h.detach().numpy() for h in as_tuple(hnt)),
            xt.grad.numpy(), tuple(h.grad.numpy() for h in hxt), grads)


def check_layer(kind, *, num_layers=1, bidirectional=False, lengths=None, with_hx=False,
                bias=True, batch_first=False, unbatched=False, dtype=np.float64, seed=0):
    kw = {"num_layers": num_layers, "bidirectional": bidirectional, "bias": bias,
          "batch_first": batch_first}
    m, tm = make_pair(kind, dtype, seed, **kw)
    rng = np.random.default_rng(seed + 100)
    K = 2 if bidirectional else 1
    if unbatched:
        x_shape, y_shape, s_shape = (T, D), (T, K * H), (num_layers * K, H)
    else:
        x_shape = (B, T, D) if batch_first else (T, B, D)
        y_shape = (B, T, K * H) if batch_first else (T, B, K * H)
        s_shape = (num_layers * K, B, H)
    x = rng.standard_normal(x_shape).astype(dtype)
    hx = random_state(rng, kind, s_shape, dtype) if with_hx else None
    dy = rng.standard_normal(y_shape).astype(dtype)
    dhn = random_state(rng, kind, s_shape, dtype)

    y, hn, cache = m.forward(x, hx, lengths)
    dx, dhx = m.backward(dy, dhn, cache)
    ty, thn, tdx, tdhx, tgrads = run_torch(tm, kind, x, hx, lengths, dy, dhn, batch_first)

    close(y, ty, dtype, "y")
    close_states(hn, thn, dtype, ("h_n", "c_n"))
    close(dx, tdx, dtype, "dx")
    close_states(dhx, tdhx, dtype, ("dh0", "dc0"))
    assert list(m.grads) == list(tgrads)
    for name, g in m.grads.items():
        close(g, tgrads[name], dtype, f"grad {name}")
    # inference gives the same numbers as training
    y2, hn2 = m(x, hx, lengths)
    np.testing.assert_array_equal(y2, y)
    for a, b in zip(as_tuple(hn2), as_tuple(hn), strict=True):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------------------------
# layers: the full grid in float64, variants on subsets
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "num_layers", "bidirectional", "lengths", "with_hx"),
    list(itertools.product(KINDS, [1, 2], [False, True], [None, LENGTHS], [False, True])),
)
def test_layer_float64(kind, num_layers, bidirectional, lengths, with_hx):
    check_layer(kind, num_layers=num_layers, bidirectional=bidirectional, lengths=lengths,
                with_hx=with_hx)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("lengths", [None, LENGTHS])
def test_layer_without_bias(kind, lengths):
    check_layer(kind, num_layers=2, bidirectional=True, lengths=lengths, with_hx=True,
                bias=False)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("lengths", [None, LENGTHS])
def test_layer_batch_first(kind, lengths):
    check_layer(kind, num_layers=2, bidirectional=True, lengths=lengths, with_hx=True,
                batch_first=True)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("with_hx", "batch_first"), [(False, False), (True, False),
                                                      (True, True)])
def test_layer_unbatched(kind, with_hx, batch_first):
    # torch ignores batch_first for a 2-D (T, D) input; so must we
    check_layer(kind, num_layers=2, bidirectional=True, with_hx=with_hx,
                batch_first=batch_first, unbatched=True)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("num_layers", "bidirectional", "lengths", "with_hx"),
    [(1, False, None, False), (2, True, LENGTHS, True)],
)
def test_layer_float32(kind, num_layers, bidirectional, lengths, with_hx):
    check_layer(kind, num_layers=num_layers, bidirectional=bidirectional, lengths=lengths,
                with_hx=with_hx, dtype=np.float32)


def test_lengths_all_full_equals_no_lengths():
    m, _ = make_pair("lstm", num_layers=2, bidirectional=True)
    x = np.random.default_rng(0).standard_normal((T, B, D))
    y, (h, c) = m(x)
    y2, (h2, c2) = m(x, lengths=[T] * B)
    for a, b in ((y, y2), (h, h2), (c, c2)):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------------------------
# state dicts
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_state_dict_round_trip_through_torch(kind, bias, dtype):
    kw = {"num_layers": 2, "bidirectional": True, "bias": bias}
    m, tm = make_pair(kind, dtype, seed=3, **kw)
    tsd = tm.state_dict()
    assert list(m.state_dict()) == list(tsd)  # same names, same order
    for k, v in m.state_dict().items():
        assert tuple(tsd[k].shape) == v.shape
    fresh = KINDS[kind][0](D, H, **KINDS[kind][4], dtype=dtype, rng=99, **kw)
    fresh.load_state_dict(tsd, strict=True)  # torch tensors straight in
    back = fresh.state_dict()
    assert list(back) == list(tsd)
    for k, v in m.state_dict().items():
        assert back[k].dtype == np.dtype(dtype)
        assert np.array_equal(back[k], v), k
    # and via plain NumPy arrays
    fresh2 = KINDS[kind][0](D, H, **KINDS[kind][4], dtype=dtype, rng=98, **kw)
    fresh2.load_state_dict({k: t.numpy() for k, t in tsd.items()})
    for k, v in m.state_dict().items():
        assert np.array_equal(fresh2.state_dict()[k], v), k


@pytest.mark.parametrize("kind", KINDS)
def test_torch_initialised_model_loads_into_rnnkit(kind):
    torch.manual_seed(0)
    kw = {"num_layers": 2, "bidirectional": True}
    tm = KINDS[kind][1](D, H, **KINDS[kind][4], **kw).double()
    m = KINDS[kind][0](D, H, **KINDS[kind][4], dtype=np.float64, rng=1, **kw)
    m.load_state_dict(tm.state_dict())
    for k, t in tm.state_dict().items():
        assert np.array_equal(m.state_dict()[k], t.numpy()), k
    x = np.random.default_rng(0).standard_normal((T, B, D))
    y, hn = m(x, lengths=LENGTHS)
    packed = pack_padded_sequence(torch.from_numpy(x), torch.tensor(LENGTHS),
                                  enforce_sorted=False)
    with torch.no_grad():
        out, thn = tm(packed)
    ty, _ = pad_packed_sequence(out, total_length=T)
    close(y, ty.numpy(), np.float64, "y")
    close_states(hn, thn, np.float64, ("h_n", "c_n"))


# ------------------------------------------------------------------------------------------------
# cells
# ------------------------------------------------------------------------------------------------


CELL_GRID = [(u, h, b, np.float64) for u, h, b in itertools.product([False, True], repeat=3)]
CELL_GRID += [(u, True, True, np.float32) for u in (False, True)]  # float32 on a subset


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("unbatched", "with_hx", "bias", "dtype"), CELL_GRID)
def test_cell(kind, unbatched, with_hx, bias, dtype):
    _, _, cell_cls, tcell_cls, extra = KINDS[kind]
    cell = cell_cls(D, H, bias=bias, **extra, dtype=dtype, rng=5)
    tcell = tcell_cls(D, H, bias=bias, **extra).to(torch_dtype(dtype))
    tcell.load_state_dict({k: torch.from_numpy(v) for k, v in cell.state_dict().items()})
    assert list(cell.state_dict()) == list(tcell.state_dict())
    rng = np.random.default_rng(6)
    x_shape, s_shape = ((D,), (H,)) if unbatched else ((B, D), (B, H))
    x = rng.standard_normal(x_shape).astype(dtype)
    hx = random_state(rng, kind, s_shape, dtype) if with_hx else None
    dh1 = random_state(rng, kind, s_shape, dtype)

    out, cache = cell.forward(x, hx)
    dx, dhx = cell.backward(dh1, cache)

    if hx is None:  # the twin gets explicit zeros, so that dh (dc) exist to compare with
        zeros = np.zeros(s_shape, dtype)
        hx_t = (zeros, zeros.copy()) if kind == "lstm" else zeros
    else:
        hx_t = hx
    xt = torch_leaf(x)
    hxt = tuple(torch_leaf(h) for h in as_tuple(hx_t))
    tout = tcell(xt, hxt if kind == "lstm" else hxt[0])
    loss = sum((a * torch.from_numpy(b)).sum()
               for a, b in zip(as_tuple(tout), as_tuple(dh1), strict=True))
    loss.backward()

    close_states(out, tout, dtype, ("h1", "c1"))
    close(dx, xt.grad.numpy(), dtype, "dx")
    close_states(dhx, tuple(h.grad for h in hxt), dtype, ("dh", "dc"))
    for name, p in tcell.named_parameters():
        close(cell.grads[name], p.grad.numpy(), dtype, f"grad {name}")
    # inference equals training forward
    for a, b in zip(as_tuple(cell(x, hx)), as_tuple(out), strict=True):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------------------------
# dropout
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_dropout_eval_mode_equals_torch_eval(kind):
    kw = {"num_layers": 3, "bidirectional": True, "dropout": 0.5}
    m, tm = make_pair(kind, **kw)
    assert m.eval() is m and tm.eval() is tm
    x = np.random.default_rng(0).standard_normal((T, B, D))
    y, hn = m(x)
    with torch.no_grad():
        ty, thn = tm(torch.from_numpy(x))
    close(y, ty.numpy(), np.float64, "y")
    close_states(hn, thn, np.float64, ("h_n", "c_n"))
    # and backward in eval mode matches torch too (no dropout anywhere)
    check_eval = make_pair(kind, **kw)[0].eval()
    rng = np.random.default_rng(1)
    dy = rng.standard_normal(y.shape)
    dhn = random_state(rng, kind, as_tuple(hn)[0].shape, np.float64)
    y, hn, cache = check_eval.forward(x)
    dx, _ = check_eval.backward(dy, dhn, cache)
    _, _, tdx, _, tgrads = run_torch(tm, kind, x, None, None, dy, dhn)
    close(dx, tdx, np.float64, "dx")
    for name, g in check_eval.grads.items():
        close(g, tgrads[name], np.float64, f"grad {name}")


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_dropout_mask_statistics(p):
    m = rnnkit.GRU(D, H, num_layers=3, bidirectional=True, dropout=p, dtype=np.float64, rng=0)
    x = np.random.default_rng(0).standard_normal((60, 50, D))
    _, _, cache = m.forward(x)
    assert cache.layers[-1].mask is None  # no dropout after the last layer
    masks = np.stack([lc.mask for lc in cache.layers[:-1]])
    assert masks.shape == (2, 60, 50, 2 * H)
    scale = 1.0 / (1.0 - p)
    assert set(np.unique(masks)) <= {0.0, scale}
    dropped = np.mean(masks == 0)  # 48,000 draws: standard error < 0.0025
    assert abs(dropped - p) < 0.02
    assert abs(masks.mean() - 1.0) < 0.05  # inverted dropout keeps the expectation
    # training outputs are random, eval outputs are not
    y1, _ = m(x[:, :4])
    y2, _ = m(x[:, :4])
    assert not np.array_equal(y1, y2)
    m.eval()
    np.testing.assert_array_equal(m(x[:, :4])[0], m(x[:, :4])[0])
    # the same generator state gives the same masks
    m.train()
    m.rng = np.random.default_rng(7)
    y3, _ = m(x[:, :4])
    m.rng = np.random.default_rng(7)
    np.testing.assert_array_equal(m(x[:, :4])[0], y3)


def _fixed_mask_loss(m, seed, x, hx, lengths, dy, dhn):
    m.rng = np.random.default_rng(seed)  # the same dropout masks on every call
    y, hn = m(x, hx, lengths)
    out = float(np.sum(y * dy))
    for h, dh in zip(as_tuple(hn), as_tuple(dhn), strict=True):
        out += float(np.sum(h * dh))
    return out


def _central_difference(f, a, idx, eps=1e-6):
    old = a[idx]
    a[idx] = old + eps
    plus = f()
    a[idx] = old - eps
    minus = f()
    a[idx] = old
    return (plus - minus) / (2 * eps)


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_dropout_train_gradient(kind):
    """2 layers with dropout in training mode: backward is the gradient for the mask it drew.

    Checked twice: against finite differences with the mask held fixed (re-seeded
    generator), and against two one-layer torch layers with that same mask in between."""
    seed, p = 11, 0.4
    m = KINDS[kind][0](D, H, num_layers=2, bidirectional=True, dropout=p, dtype=np.float64,
                       rng=2)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((T, B, D))
    hx = random_state(rng, kind, (4, B, H), np.float64)
    dy = rng.standard_normal((T, B, 2 * H))
    dhn = random_state(rng, kind, (4, B, H), np.float64)

    m.rng = np.random.default_rng(seed)
    y, hn, cache = m.forward(x, hx, LENGTHS)
    dx, dhx = m.backward(dy, dhn, cache)
    assert cache.layers[0].mask is not None and np.any(cache.layers[0].mask == 0)

    def f():
        return _fixed_mask_loss(m, seed, x, hx, LENGTHS, dy, dhn)

    probes = [(x, dx, [(0, 0, 0), (2, 1, 2), (0, 2, 1), (4, 1, 0)])]
    probes += [(a, da, [(0, 1, 0), (1, 3, 2), (3, 2, 3)])
               for a, da in zip(as_tuple(hx), as_tuple(dhx), strict=True)]
    params = dict(m.named_parameters())
    pr = np.random.default_rng(4)
    for name, g in m.grads.items():
        a = params[name]
        probes.append((a, g, [tuple(int(pr.integers(s)) for s in a.shape) for _ in range(3)]))
    for a, da, idxs in probes:
        for idx in idxs:
            num = _central_difference(f, a, idx)
            assert abs(num - da[idx]) <= 1e-7 * max(1.0, abs(num)), (idx, num, da[idx])

    # the same numbers from torch: layer 0 -> the mask rnnkit drew -> layer 1
    mask = np.empty_like(cache.layers[0].mask)
    mask[:, cache.perm] = cache.layers[0].mask  # the cache keeps it in length-sorted order
    sd = m.state_dict()
    t0, t1 = (KINDS[kind][1](d_in, H, bidirectional=True).double() for d_in in (D, 2 * H))
    t0.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items() if "_l0" in k})
    t1.load_state_dict({k.replace("_l1", "_l0"): torch.from_numpy(v)
                        for k, v in sd.items() if "_l1" in k})
    xt = torch_leaf(x)
    hxt = [torch_leaf(h) for h in as_tuple(hx)]
    lens = torch.tensor(LENGTHS)

    def run(tm, inp, states):
        out, hn = tm(pack_padded_sequence(inp, lens, enforce_sorted=False),
                     tuple(states) if kind == "lstm" else states[0])
        return pad_packed_sequence(out, total_length=T)[0], as_tuple(hn)

    y0, hn0 = run(t0, xt, [h[:2] for h in hxt])
    y1, hn1 = run(t1, y0 * torch.from_numpy(mask), [h[2:] for h in hxt])
    close(y, y1.detach().numpy(), np.float64, "y")
    loss = (y1 * torch.from_numpy(dy)).sum()
    for ours, a, b, dh in zip(as_tuple(hn), hn0, hn1, as_tuple(dhn), strict=True):
        theirs = torch.cat([a, b])  # layer 0's two directions, then layer 1's
        close(ours, theirs.detach().numpy(), np.float64, "h_n")
        loss = loss + (theirs * torch.from_numpy(dh)).sum()
    loss.backward()
    close(dx, xt.grad.numpy(), np.float64, "dx")
    close_states(dhx, tuple(h.grad for h in hxt), np.float64, ("dh0", "dc0"))
    for tm, layer in ((t0, "_l0"), (t1, "_l1")):
        for name, prm in tm.named_parameters():
            close(m.grads[name.replace("_l0", layer)], prm.grad.numpy(), np.float64, name)
