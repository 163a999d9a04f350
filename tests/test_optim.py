"""Optimizers, gradient clipping and learning-rate schedules.

PyTorch is the oracle for the numbers: every optimizer and hyper-parameter combination runs 10
steps beside its ``torch.optim`` twin on the same random gradients, and parameters and state
must agree to 1e-12 in float64; clipping and schedules are compared the same way. The tests
marked ``torch`` are skipped when PyTorch is absent; the rest (state-dict round trips that
resume bit for bit, in-place updates, dtypes, properties, errors as API) always run.
"""

from __future__ import annotations

import importlib.util
import io
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rnnkit
from rnnkit import optim

_no_torch = importlib.util.find_spec("torch") is None


def needs_torch(test):
    """A PyTorch parity test: marked ``torch`` and skipped (only) when torch is absent."""
    test = pytest.mark.skipif(_no_torch, reason="PyTorch not installed")(test)
    return pytest.mark.torch(test)

TOL = 1e-12
STEPS = 10

# (optimizer class, hyper-parameters): the combinations every parity and round-trip test runs
CONFIGS = [
    (optim.SGD, {"lr": 0.1}),
    (optim.SGD, {"lr": 0.1, "weight_decay": 0.1}),
    (optim.SGD, {"lr": 0.1, "momentum": 0.9}),
    (optim.SGD, {"lr": 0.1, "momentum": 0.9, "dampening": 0.3}),
    (optim.SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
    (optim.SGD, {"lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 0.05}),
    (optim.Adam, {}),
    (optim.Adam, {"lr": 0.01, "amsgrad": True}),
    (optim.Adam, {"lr": 0.01, "weight_decay": 0.1}),
    (optim.Adam, {"lr": 0.02, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.05,
                  "amsgrad": True}),
    (optim.AdamW, {"lr": 0.01}),
    (optim.AdamW, {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True}),
    (optim.RMSprop, {}),
    (optim.RMSprop, {"lr": 0.01, "centered": True}),
    (optim.RMSprop, {"lr": 0.01, "momentum": 0.9}),
    (optim.RMSprop, {"lr": 0.01, "alpha": 0.9, "momentum": 0.5, "centered": True,
                     "weight_decay": 0.1, "eps": 1e-6}),
    (optim.Adagrad, {}),
    (optim.Adagrad, {"lr": 0.1, "lr_decay": 0.1}),
    (optim.Adagrad, {"lr": 0.1, "lr_decay": 0.05, "weight_decay": 0.1,
                     "initial_accumulator_value": 0.1, "eps": 1e-6}),
]
CONFIG_IDS = [cls.__name__ + "-" + "-".join(f"{k}={v}" for k, v in kw.items())
              for cls, kw in CONFIGS]


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


def make_model(dtype=np.float64, seed=0):
    return rnnkit.LSTM(3, 4, dtype=dtype, rng=seed)


def grad_stream(model, steps, seed=1):
    """``steps`` dicts name -> random gradient, the same sequence for every caller."""
    rng = np.random.default_rng(seed)
    return [{name: rng.standard_normal(p.shape).astype(p.dtype)
             for name, p in model.named_parameters()} for _ in range(steps)]


def run(model, opt, grads):
    for gs in grads:
        for name, g in model.grads.items():
            g[...] = gs[name]
        opt.step()


def snapshot(model, opt):
    tensors, meta = opt.state_dict()
    return model.state_dict(), tensors, json.loads(json.dumps(meta))


def assert_same(a, b):
    """Bit-exact equality of two (params, tensors, meta) snapshots."""
    for x, y in zip(a[:2], b[:2], strict=True):
        assert x.keys() == y.keys()
        for k in x:
            assert x[k].dtype == y[k].dtype, k
            assert np.array_equal(x[k], y[k]), k
    assert a[2] == b[2]


class Bag:
    """A module-like object that is not an rnnkit Module: named_parameters() and grads."""

    def __init__(self, **arrays):
        self._p = arrays
        self.grads = {k: np.zeros_like(v) for k, v in arrays.items()}

    def named_parameters(self):
        yield from self._p.items()


@pytest.fixture
def torch():
    return pytest.importorskip("torch")  # imported only where a parity test asks for it


# ------------------------------------------------------------------------------------------------
# optimizers: PyTorch parity
# ------------------------------------------------------------------------------------------------


@needs_torch
@pytest.mark.parametrize(("cls", "kw"), CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_optimizer_matches_torch(torch, cls, kw, dtype):
    tol = TOL if dtype == np.float64 else 2e-6
    m = make_model(dtype)
    tparams = {name: torch.tensor(p.copy(), requires_grad=True)
               for name, p in m.named_parameters()}
    opt = cls(m, **kw)
    topt = getattr(torch.optim, cls.__name__)(list(tparams.values()), **kw)
    for gs in grad_stream(m, STEPS):
        for name, g in m.grads.items():
            g[...] = gs[name]
            tparams[name].grad = torch.from_numpy(gs[name].copy())
        opt.step()
        topt.step()
    for name, p in m.named_parameters():
        assert p.dtype == dtype
        np.testing.assert_allclose(p, tparams[name].detach().numpy(), rtol=tol, atol=tol,
                                   err_msg=name)
        tstate = topt.state[tparams[name]]
        slots = {k for k, v in tstate.items() if k != "step" and v is not None}
        assert set(opt.state[name]) == slots, name
        for slot, a in opt.state[name].items():
            assert a.dtype == dtype
            np.testing.assert_allclose(a, tstate[slot].numpy(), rtol=tol, atol=tol,
                                       err_msg=f"{name}.{slot}")
        if "step" in tstate:
            assert opt.step_count == int(tstate["step"]) == STEPS


@needs_torch
@pytest.mark.parametrize(("cls", "kw"), [
    (optim.SGD, {}), (optim.Adam, {}), (optim.AdamW, {}), (optim.RMSprop, {}),
    (optim.Adagrad, {})])
def test_defaults_match_torch(torch, cls, kw):
    import inspect

    ours = inspect.signature(cls).parameters
    theirs = inspect.signature(getattr(torch.optim, cls.__name__)).parameters
    for name in cls.hyper_names:
        assert ours[name].default == theirs[name].default, f"{cls.__name__}.{name}"


# ------------------------------------------------------------------------------------------------
# optimizers: behaviour without torch
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("cls", "kw"), CONFIGS, ids=CONFIG_IDS)
def test_state_dict_round_trip_resumes_bit_for_bit(cls, kw):
    grads = grad_stream(make_model(), STEPS)
    m = make_model()
    opt = cls(m, **kw)
    run(m, opt, grads)
    uninterrupted = snapshot(m, opt)

    m1 = make_model()
    opt1 = cls(m1, **kw)
    run(m1, opt1, grads[:5])
    tensors, meta = opt1.state_dict()
    buf = io.BytesIO()                                  # through a checkpoint file and JSON
    np.savez(buf, **tensors)
    buf.seek(0)
    with np.load(buf) as f:
        tensors = {k: f[k] for k in f.files}
    meta = json.loads(json.dumps(meta))

    m2 = make_model(seed=7)
    m2.load_state_dict(m1.state_dict())
    opt2 = cls(m2, **kw)
    opt2.load_state_dict(tensors, meta)
    assert opt2.step_count == 5
    run(m2, opt2, grads[5:])
    assert_same(snapshot(m2, opt2), uninterrupted)


def test_load_state_dict_restores_hyper_parameters():
    m = make_model()
    opt = optim.Adam(m, lr=0.05, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.1)
    run(m, opt, grad_stream(m, 2))
    tensors, meta = opt.state_dict()
    fresh = optim.Adam(make_model())
    fresh.load_state_dict(tensors, json.loads(json.dumps(meta)))
    assert fresh.hyper == opt.hyper
    assert fresh.betas == (0.8, 0.9)
    assert fresh.step_count == 2


@pytest.mark.parametrize(("cls", "kw"), CONFIGS, ids=CONFIG_IDS)
def test_step_is_in_place_and_keeps_float32(cls, kw):
    m = make_model(np.float32)
    opt = cls(m, **kw)
    params = {name: p for name, p in m.named_parameters()}
    before = {name: p.copy() for name, p in params.items()}
    grads = grad_stream(m, 3)
    run(m, opt, grads)
    state_ids = {(n, s): id(a) for n, slots in opt.state.items() for s, a in slots.items()}
    run(m, opt, grads)
    for name, p in m.named_parameters():
        assert p is params[name]
        assert p.dtype == np.float32
        assert not np.array_equal(p, before[name]), f"{name} was not updated"
        assert np.array_equal(m.grads[name], grads[-1][name]), "the gradient was written"
    for n, slots in opt.state.items():
        for s, a in slots.items():
            assert a.dtype == np.float32
            assert id(a) == state_ids[(n, s)]


@pytest.mark.parametrize(("cls", "kw"), CONFIGS, ids=CONFIG_IDS)
def test_lr_zero_freezes_the_parameters(cls, kw):
    m = make_model()
    opt = cls(m, **kw)
    run(m, opt, grad_stream(m, 2))
    frozen = m.state_dict()
    opt.lr = 0.0                                        # a plain attribute, as schedulers set it
    run(m, opt, grad_stream(m, 2, seed=5))
    for name, p in m.named_parameters():
        assert np.array_equal(p, frozen[name]), name


def test_plain_sgd_is_p_minus_lr_g():
    m = make_model()
    opt = optim.SGD(m, lr=0.5)
    (grads,) = grad_stream(m, 1)
    want = {name: p - 0.5 * grads[name] for name, p in m.named_parameters()}
    run(m, opt, [grads])
    for name, p in m.named_parameters():
        assert np.array_equal(p, want[name])


@pytest.mark.parametrize(("cls", "kw", "g"), [
    (optim.SGD, {"lr": 1e30}, 1e10),                    # p - 1e40 overflows float32
    (optim.SGD, {"lr": 0.1, "momentum": 0.9}, np.nan),
    (optim.Adam, {}, np.inf),                           # m / sqrt(v) = inf / inf = NaN
    (optim.Adam, {"amsgrad": True}, 1e20),              # only the state overflows: v = inf
    (optim.RMSprop, {"centered": True}, -np.inf),
])
def test_a_non_finite_step_is_refused_and_changes_nothing(cls, kw, g):
    good = grad_stream(make_model(np.float32), 2)
    bad = {**good[1], "weight_hh_l0": good[1]["weight_hh_l0"].copy()}
    bad["weight_hh_l0"][3, 2] = g
    m, twin_m = make_model(np.float32), make_model(np.float32)
    opt, twin = cls(m, **kw), cls(twin_m, **kw)
    run(twin_m, twin, good)                             # never sees the bad gradient

    def step(grads):
        for name, a in m.grads.items():
            a[...] = grads[name]
        return opt.step()

    assert step(good[0]) is True
    before = snapshot(m, opt)
    assert step(bad) is False                           # and no RuntimeWarning (-W error)
    assert_same(snapshot(m, opt), before)               # parameters, state, step count
    assert step(good[1]) is True
    assert_same(snapshot(m, opt), snapshot(twin_m, twin))


def test_first_adam_step_moves_each_entry_by_about_lr():
    m = make_model()
    opt = optim.Adam(m, lr=1e-3)
    before = m.state_dict()
    (grads,) = grad_stream(m, 1)
    run(m, opt, [grads])
    for name, p in m.named_parameters():
        # m_hat = g, v_hat = g^2: the step is lr * g / (|g| + eps), about lr * sign(g)
        g = grads[name]
        np.testing.assert_allclose(before[name] - p, 1e-3 * g / (np.abs(g) + 1e-8), rtol=1e-9)


def test_zero_grad_and_duck_typed_modules():
    bag = Bag(w=np.ones((2, 3)), b=np.zeros(3))
    opt = optim.SGD(bag, lr=1.0, momentum=0.9)
    assert opt.param_names == ["w", "b"]
    bag.grads["w"][...] = 2.0
    bag.grads["b"][...] = -1.0
    opt.step()
    assert np.array_equal(bag._p["w"], -np.ones((2, 3)))
    assert np.array_equal(bag._p["b"], np.ones(3))
    opt.zero_grad()
    assert all(not g.any() for g in bag.grads.values())
    assert "SGD(lr=1.0" in repr(opt)


# ------------------------------------------------------------------------------------------------
# optimizers: errors as API
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("make", "exc", "match"), [
    (lambda m: optim.Adam(m, lr=-1.0), ValueError, r"lr must be a number >= 0; got -1\.0"),
    (lambda m: optim.SGD(m, lr=float("nan")), ValueError, r"lr must be .*finite.*; got nan"),
    (lambda m: optim.Adam(m, lr="0.1"), TypeError, "lr must be a number >= 0; got str '0.1'"),
    (lambda m: optim.Adam(m, betas=(1.0, 0.999)), ValueError,
     r"betas\[0\] must be a number in \[0, 1\); got 1\.0"),
    (lambda m: optim.Adam(m, betas=(0.9, -0.1)), ValueError,
     r"betas\[1\] must be a number in \[0, 1\); got -0\.1"),
    (lambda m: optim.Adam(m, betas=0.9), TypeError, r"betas must be a pair"),
    (lambda m: optim.AdamW(m, eps=-1e-8), ValueError, "eps must be a number >= 0; got -1e-08"),
    (lambda m: optim.Adam(m, weight_decay=-0.1), ValueError, "weight_decay must be a number >= 0"),
    (lambda m: optim.Adam(m, amsgrad=1), TypeError, "amsgrad must be True or False"),
    (lambda m: optim.SGD(m, momentum=-0.9), ValueError, "momentum must be a number >= 0; got -0.9"),
    (lambda m: optim.SGD(m, nesterov=True), ValueError,
     "Nesterov momentum requires a momentum and zero dampening"),
    (lambda m: optim.SGD(m, momentum=0.9, dampening=0.1, nesterov=True), ValueError,
     "Nesterov momentum requires a momentum and zero dampening"),
    (lambda m: optim.RMSprop(m, alpha=-0.1), ValueError, r"alpha must be a number in \[0, 1\]"),
    (lambda m: optim.RMSprop(m, momentum=-1), ValueError, "momentum must be a number >= 0; got -1"),
    (lambda m: optim.Adagrad(m, lr_decay=-1), ValueError, "lr_decay must be a number >= 0"),
    (lambda m: optim.Adagrad(m, initial_accumulator_value=-1), ValueError,
     "initial_accumulator_value must be a number >= 0"),
    (lambda m: optim.Adam(list(m.parameters())), TypeError, r"takes a module .* Pass the model"),
    (lambda m: optim.Adam(Bag()), ValueError, "empty parameter list"),
    (lambda m: optim.Adam(Bag(w=np.zeros(3, np.int64))), TypeError, "float32 or float64"),
])
def test_constructor_errors(make, exc, match):
    with pytest.raises(exc, match=match):
        make(make_model())


def test_mismatched_grad_is_refused():
    bag = Bag(w=np.zeros((2, 3)))
    bag.grads["w"] = np.zeros(3)
    with pytest.raises(ValueError, match=r"grads\['w'\] must be an array of the parameter's "
                                         r"shape \(2, 3\)"):
        optim.SGD(bag)


def _corrupt(what, tensors, meta):
    last = list(tensors)[-1]
    if what == "missing":
        del tensors[last]
    elif what == "unexpected":
        tensors["weight_ih_l0.bogus"] = np.zeros(1)
    elif what == "misshaped":
        tensors[last] = tensors[last][:-1]
    elif what == "complex":
        tensors[last] = tensors[last].astype(np.complex128)
    elif what == "nan":
        tensors[last] = np.full_like(tensors[last], np.nan)
    elif what == "type":
        meta["type"] = "AdamW"
    elif what == "hyper":
        meta["hyper"]["lr"] = -1.0
    elif what == "hyper_keys":
        del meta["hyper"]["eps"]
    elif what == "slots":
        meta["hyper"]["amsgrad"] = True
    elif what == "params":
        meta["params"] = [*meta["params"][:-1], "fc.weight"]
    elif what == "step":
        meta["step"] = -1
    return tensors, meta


@pytest.mark.parametrize("what", ["missing", "unexpected", "misshaped", "complex", "nan",
                                  "type", "hyper", "hyper_keys", "slots", "params", "step"])
def test_bad_load_state_dict_leaves_state_unchanged(what):
    m = make_model()
    opt = optim.Adam(m, lr=0.01)
    run(m, opt, grad_stream(m, 2))
    before = snapshot(m, opt)

    other_m = make_model()
    other = optim.Adam(other_m, lr=0.03)
    run(other_m, other, grad_stream(other_m, 4, seed=9))
    tensors, meta = other.state_dict()
    tensors, meta = _corrupt(what, tensors, json.loads(json.dumps(meta)))
    with pytest.raises(ValueError):
        opt.load_state_dict(tensors, meta)
    assert_same(snapshot(m, opt), before)
    assert opt.lr == 0.01


def test_load_state_dict_messages():
    m = make_model()
    opt = optim.Adam(m)
    tensors, meta = opt.state_dict()
    del tensors["bias_hh_l0.exp_avg_sq"]
    with pytest.raises(ValueError, match=r"missing \['bias_hh_l0.exp_avg_sq'\]"):
        opt.load_state_dict(tensors, meta)
    tensors, meta = opt.state_dict()
    tensors["bias_hh_l0.exp_avg"] = np.zeros(3)
    with pytest.raises(ValueError, match=r"has shape \(3,\); expected \(16,\)"):
        opt.load_state_dict(tensors, meta)
    with pytest.raises(ValueError, match="saved from 'Adam'; this optimizer is 'SGD'"):
        optim.SGD(m).load_state_dict(*opt.state_dict())
    with pytest.raises(TypeError, match=r"load_state_dict takes \(tensors, meta\)"):
        opt.load_state_dict(opt.state_dict(), {})


# ------------------------------------------------------------------------------------------------
# gradient clipping
# ------------------------------------------------------------------------------------------------


@needs_torch
@pytest.mark.parametrize("norm_type", [2.0, 1.0, float("inf"), 3.0])
@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_clip_grad_norm_matches_torch(torch, norm_type, max_norm):
    m = make_model()
    (grads,) = grad_stream(m, 1)
    for name, g in m.grads.items():
        g[...] = grads[name]
    tgrads = [torch.tensor(g.copy()) for g in grads.values()]
    tparams = [torch.zeros_like(g, requires_grad=True) for g in tgrads]
    for p, g in zip(tparams, tgrads, strict=True):
        p.grad = g
    total = optim.clip_grad_norm_(m, max_norm, norm_type)
    ttotal = torch.nn.utils.clip_grad_norm_(tparams, max_norm, norm_type)
    assert isinstance(total, float)
    assert total == pytest.approx(float(ttotal), rel=TOL)
    for (name, g), tp in zip(m.grads.items(), tparams, strict=True):
        np.testing.assert_allclose(g, tp.grad.numpy(), rtol=TOL, atol=TOL, err_msg=name)
    if max_norm > total:
        for name, g in m.grads.items():
            assert np.array_equal(g, grads[name])       # no clipping: untouched


@needs_torch
@pytest.mark.parametrize("clip_value", [0.0, 0.3, 10.0])
def test_clip_grad_value_matches_torch(torch, clip_value):
    m = make_model()
    (grads,) = grad_stream(m, 1)
    tgrads = {name: torch.tensor(g.copy()) for name, g in grads.items()}
    tparams = []
    for g in tgrads.values():
        p = torch.zeros_like(g, requires_grad=True)
        p.grad = g
        tparams.append(p)
    optim.clip_grad_value_(grads, clip_value)
    torch.nn.utils.clip_grad_value_(tparams, clip_value)
    for name, g in grads.items():
        assert np.array_equal(g, tgrads[name].numpy()), name


def test_clip_grad_norm_takes_dicts_lists_and_arrays():
    a, b = np.array([3.0, 0.0]), np.array([[0.0], [4.0]])
    assert optim.clip_grad_norm_({"a": a, "b": b}, 10.0) == pytest.approx(5.0)
    assert optim.clip_grad_norm_([a, b], 1.0, norm_type="inf") == 4.0
    np.testing.assert_allclose(np.concatenate([a, b.ravel()]),
                               np.array([3, 0, 0, 4]) / (4 + 1e-6))
    assert optim.clip_grad_norm_([], 1.0) == 0.0
    f32 = np.ones(4, np.float32)
    optim.clip_grad_norm_(f32, 1.0)
    assert f32.dtype == np.float32
    np.testing.assert_allclose(f32, 0.5, rtol=1e-5)


@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_clip_grad_norm_leaves_non_finite_gradients_to_the_caller(bad):
    g = {"a": np.array([1.0, bad]), "b": np.array([100.0])}
    before = {k: v.copy() for k, v in g.items()}
    total = optim.clip_grad_norm_(g, 1.0)
    assert not math.isfinite(total)
    assert math.isnan(total) == math.isnan(bad)
    for k in g:
        np.testing.assert_array_equal(g[k], before[k])


def test_clip_errors():
    with pytest.raises(TypeError, match="takes a module, a dict"):
        optim.clip_grad_norm_(3.0, 1.0)
    with pytest.raises(TypeError, match="float NumPy array"):
        optim.clip_grad_norm_([np.arange(3)], 1.0)
    with pytest.raises(ValueError, match="max_norm must be a number >= 0; got -1"):
        optim.clip_grad_norm_([np.ones(3)], -1)
    with pytest.raises(ValueError, match="norm_type must be a positive number; got 0"):
        optim.clip_grad_norm_([np.ones(3)], 1.0, norm_type=0)
    with pytest.raises(ValueError, match=r"clip_value must be a number >= 0; got -0\.5"):
        optim.clip_grad_value_([np.ones(3)], -0.5)


finite = st.integers(-10**6, 10**6).map(lambda i: i / 1000)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(finite, min_size=1, max_size=6), min_size=1, max_size=4),
       st.floats(1e-3, 10.0), st.sampled_from([1.0, 2.0, float("inf")]))
def test_clip_grad_norm_property(values, max_norm, q):
    grads = [np.array(v) for v in values]
    before = [g.copy() for g in grads]
    total = optim.clip_grad_norm_(grads, max_norm, q)
    flat = np.concatenate(before)
    assert total == pytest.approx(float(np.linalg.norm(flat, q)), rel=1e-12)
    assert float(np.linalg.norm(np.concatenate(grads), q)) <= max_norm * (1 + 1e-12)
    scale = min(1.0, max_norm / (total + 1e-6))
    for g, b in zip(grads, before, strict=True):
        np.testing.assert_allclose(g, b * scale, rtol=1e-12, atol=0)


@settings(max_examples=50, deadline=None)
@given(st.lists(finite, min_size=1, max_size=20), st.floats(0.0, 100.0))
def test_clip_grad_value_property(values, c):
    g = np.array(values)
    before = g.copy()
    optim.clip_grad_value_({"g": g}, c)
    assert np.all(np.abs(g) <= c)
    inside = np.abs(before) <= c
    assert np.array_equal(g[inside], before[inside])
    assert np.array_equal(np.abs(g[~inside]), np.full((~inside).sum(), c))


# ------------------------------------------------------------------------------------------------
# learning-rate schedules
# ------------------------------------------------------------------------------------------------

SCHEDULES = [
    ("StepLR", {"step_size": 7, "gamma": 0.5}),
    ("StepLR", {"step_size": 3}),
    ("ExponentialLR", {"gamma": 0.9}),
    ("CosineAnnealingLR", {"T_max": 10}),
    ("CosineAnnealingLR", {"T_max": 12, "eta_min": 0.01}),
    ("LinearLR", {}),
    ("LinearLR", {"start_factor": 0.1, "total_iters": 8}),
    ("LinearLR", {"start_factor": 0.5, "end_factor": 0.2, "total_iters": 4}),
]
SCHEDULE_IDS = [name + "-" + "-".join(f"{k}={v}" for k, v in kw.items()) for name, kw in SCHEDULES]


def lrs(sched, opt, steps):
    out = [opt.lr]
    for _ in range(steps):
        sched.step()
        out.append(opt.lr)
    return out


@needs_torch
@pytest.mark.parametrize(("name", "kw"), SCHEDULES, ids=SCHEDULE_IDS)
def test_schedule_matches_torch(torch, name, kw):
    opt = optim.SGD(make_model(), lr=0.1)
    ours = lrs(getattr(optim, name)(opt, **kw), opt, 30)
    p = torch.zeros(1, requires_grad=True)
    topt = torch.optim.SGD([p], lr=0.1)
    tsched = getattr(torch.optim.lr_scheduler, name)(topt, **kw)
    theirs = [topt.param_groups[0]["lr"]]
    for _ in range(30):
        topt.step()
        tsched.step()
        theirs.append(topt.param_groups[0]["lr"])
    np.testing.assert_allclose(ours, theirs, rtol=TOL, atol=1e-15)


@pytest.mark.parametrize(("name", "kw"), SCHEDULES, ids=SCHEDULE_IDS)
def test_schedule_state_dict_round_trip(name, kw):
    opt = optim.Adam(make_model(), lr=0.1)
    sched = getattr(optim, name)(opt, **kw)
    lrs(sched, opt, 7)
    state = json.loads(json.dumps(sched.state_dict()))
    want = lrs(sched, opt, 10)

    opt2 = optim.Adam(make_model(), lr=0.5)             # another rate: the state restores it
    sched2 = getattr(optim, name)(opt2, **kw)
    sched2.load_state_dict(state)
    assert opt2.lr == want[0]
    assert lrs(sched2, opt2, 10) == want


def test_schedule_closed_forms():
    opt = optim.SGD(make_model(), lr=1.0)
    assert lrs(optim.StepLR(opt, 2, gamma=0.5), opt, 4) == [1.0, 1.0, 0.5, 0.5, 0.25]
    opt.lr = 1.0
    cos = lrs(optim.CosineAnnealingLR(opt, T_max=4, eta_min=0.1), opt, 4)
    assert cos[0] == 1.0
    assert cos[-1] == pytest.approx(0.1)
    assert cos == sorted(cos, reverse=True)
    opt.lr = 1.0
    warm = optim.LinearLR(opt, start_factor=0.25, total_iters=3)
    assert opt.lr == 0.25                               # the epoch-0 rate is set at once
    assert lrs(warm, opt, 4)[1:] == [0.5, 0.75, 1.0, 1.0]
    assert warm.get_last_lr() == 1.0


@pytest.mark.parametrize(("make", "exc", "match"), [
    (lambda o: optim.StepLR(o, 0), ValueError, "step_size must be a positive int; got 0"),
    (lambda o: optim.StepLR(o, 2.5), TypeError, "step_size must be a positive int; got float 2.5"),
    (lambda o: optim.ExponentialLR(o, 0.0), ValueError, "gamma must be a positive number; got 0.0"),
    (lambda o: optim.CosineAnnealingLR(o, 0), ValueError, "T_max must be a positive int; got 0"),
    (lambda o: optim.CosineAnnealingLR(o, 5, eta_min=-1), ValueError, "eta_min must be a number"),
    (lambda o: optim.LinearLR(o, start_factor=0), ValueError,
     r"start_factor must be a number in \(0, 1\]; got 0"),
    (lambda o: optim.LinearLR(o, end_factor=1.5), ValueError,
     r"end_factor must be a number in \[0, 1\]; got 1\.5"),
    (lambda o: optim.StepLR(object(), 2), TypeError, "takes an rnnkit optimizer"),
])
def test_schedule_errors(make, exc, match):
    with pytest.raises(exc, match=match):
        make(optim.SGD(make_model(), lr=0.1))


def test_bad_schedule_state_is_refused_whole():
    opt = optim.SGD(make_model(), lr=0.1)
    sched = optim.StepLR(opt, 3)
    lrs(sched, opt, 4)
    before = (sched.state_dict(), opt.lr)
    for bad in ({**sched.state_dict(), "type": "ExponentialLR"},
                {**sched.state_dict(), "gamma": -1.0},
                {**sched.state_dict(), "last_epoch": -2},
                {k: v for k, v in sched.state_dict().items() if k != "base_lr"}):
        with pytest.raises(ValueError):
            sched.load_state_dict(bad)
        assert (sched.state_dict(), opt.lr) == before
