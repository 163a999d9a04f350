"""The fused float32 kernels (``rnnkit.kernels``) against the NumPy reference they accelerate."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import rnnkit
from rnnkit import functional as F
from rnnkit import kernels
from rnnkit.models import LanguageModel, LMConfig

pytestmark = pytest.mark.skipif(not kernels.available, reason="numba is not installed")

CELLS = {
    "rnn_tanh": lambda **kw: rnnkit.RNN(6, 8, nonlinearity="tanh", **kw),
    "rnn_relu": lambda **kw: rnnkit.RNN(6, 8, nonlinearity="relu", **kw),
    "gru": lambda **kw: rnnkit.GRU(6, 8, **kw),
    "lstm": lambda **kw: rnnkit.LSTM(6, 8, **kw),
}
ULP1 = float(np.spacing(np.float32(1)))          # 1.19e-7: one unit in the last place at 1


@pytest.fixture(autouse=True)
def _small_rnn_steps_fused(monkeypatch):
    """These tests use small layers: make the RNN run its loops at any size (by default it
    runs the reference below FusedRNNMath.SMALL elements, where calling a loop costs more)."""
    monkeypatch.setattr(kernels.FusedRNNMath, "SMALL", 0)


def _float32_sample(rng: np.random.Generator) -> np.ndarray:
    return np.concatenate([
        np.linspace(-12, 12, 400_001, dtype=np.float32),
        (rng.standard_normal(400_000) * 3).astype(np.float32),
        np.float32(10.0) ** np.linspace(-38, 1.2, 100_001).astype(np.float32),
        -np.float32(10.0) ** np.linspace(-38, 1.2, 100_001).astype(np.float32),
        np.array([0.0, -0.0, 9.0, 9.02, 9.03, 20.0, 1e30, -1e30], np.float32)])


def test_tanh_is_within_half_an_ulp_of_the_true_value():
    x = _float32_sample(np.random.default_rng(0))
    out = np.empty_like(x)
    kernels.loops().tanh_f32(x, out)
    exact = np.tanh(x.astype(np.float64))
    ulps = np.abs(out - exact) / np.spacing(np.abs(exact.astype(np.float32))).astype(np.float64)
    assert ulps.max() <= 0.51                              # the bound kernels.py states
    assert np.mean(out == exact.astype(np.float32)) > 0.999    # nearly all correctly rounded
    assert np.signbit(out[x == 0]).tolist() == np.signbit(x[x == 0]).tolist()   # -0.0 kept


def test_tanh_keeps_nan_and_saturates_infinities():
    out = np.empty(3, np.float32)
    kernels.loops().tanh_f32(np.array([np.nan, np.inf, -np.inf], np.float32), out)
    assert np.isnan(out[0]) and out[1] == 1 and out[2] == -1


def test_accelerate_applies_to_float32_only_and_obeys_the_switch():
    for math in (F.RNNMath("tanh"), F.RNNMath("relu"), F.GRUMath(), F.LSTMMath()):
        fused = kernels.accelerate(math, np.float32)
        assert fused is not math and type(math) in type(fused).__mro__
        assert kernels.accelerate(math, np.float64) is math
        assert kernels.accelerate(fused, np.float32) is fused
        with kernels.reference():
            assert kernels.accelerate(math, np.float32) is math
        assert kernels.accelerate(math, np.float32) is fused
    assert kernels.accelerate(F.RNNMath("relu"), np.float32).nonlinearity == "relu"


def _run(m, x, hx, lengths, dy, dhn):
    m.zero_grad()
    y, hn, cache = m.forward(x, hx, lengths)
    dx, dhx = m.backward(dy, dhn, cache)
    return y, hn, dx, dhx, {k: v.copy() for k, v in m.grads.items()}


def _flat(state):
    return list(state) if isinstance(state, tuple) else [state]


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("lengths", [None, [7, 2, 5, 7]])
def test_fused_layer_equals_the_reference_within_float32_rounding(cell, num_layers,
                                                                   bidirectional, lengths):
    rng = np.random.default_rng(1)
    m = CELLS[cell](num_layers=num_layers, bidirectional=bidirectional, rng=2)
    K = num_layers * (2 if bidirectional else 1)
    x = rng.standard_normal((7, 4, 6)).astype(np.float32)
    h0 = rng.standard_normal((K, 4, 8)).astype(np.float32)
    hx = (h0, rng.standard_normal((K, 4, 8)).astype(np.float32)) if cell == "lstm" else h0
    y_ref, *_ = m(x, hx, lengths)
    dy = rng.standard_normal(y_ref.shape).astype(np.float32)
    dhn = tuple(rng.standard_normal(s.shape).astype(np.float32) for s in _flat(hx))
    dhn = dhn if cell == "lstm" else dhn[0]
    fused = _run(m, x, hx, lengths, dy, dhn)
    with kernels.reference():
        ref = _run(m, x, hx, lengths, dy, dhn)
    # activations differ by at most about one ulp (tanh); what follows by float32 rounding
    np.testing.assert_allclose(fused[0], ref[0], rtol=0, atol=4 * ULP1)
    for a, b in zip(_flat(fused[1]), _flat(ref[1]), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=8 * ULP1)
    np.testing.assert_allclose(fused[2], ref[2], rtol=1e-5, atol=1e-5)
    for a, b in zip(_flat(fused[3]), _flat(ref[3]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    for name in ref[4]:
        np.testing.assert_allclose(fused[4][name], ref[4][name], rtol=1e-5, atol=1e-5,
                                   err_msg=name)
    if cell == "rnn_relu":              # no tanh anywhere: bit for bit
        np.testing.assert_array_equal(fused[0], ref[0])


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_generation_step_uses_the_fused_step_and_agrees(cell):
    if cell == "rnn":
        kernels.FusedRNNMath.SMALL = 4096      # as by default: B = 1 takes the reference

    m = LanguageModel(LMConfig(vocab_size=11, cell=cell, embedding_dim=5, hidden_size=16,
                               num_layers=2), rng=0)
    assert isinstance(m.stepper().kind, kernels._Fused)
    ids = np.random.default_rng(3).integers(0, 11, (12, 3))
    full, _ = m(ids)
    with kernels.reference():
        assert not isinstance(m.stepper().kind, kernels._Fused)
        ref, _ = m(ids)
    np.testing.assert_allclose(full, ref, rtol=0, atol=2e-6)
    step, state = m.stepper(), None
    for t in range(ids.shape[0]):
        logits, state = step(ids[t], state)
        np.testing.assert_allclose(logits, ref[t], rtol=0, atol=2e-6)


@pytest.mark.parametrize("kind", [F.RNNMath("tanh"), F.RNNMath("relu"), F.GRUMath(),
                                  F.LSTMMath()])
def test_a_nan_in_a_step_comes_out_as_nan_as_in_the_reference(kind):
    """A NaN must never be clamped into a number: the trainer's non-finite guard relies on
    it (a NaN from overflowing weights is detected, the step skipped)."""
    B, H, G = 2, 4, kind.gates
    rng = np.random.default_rng(0)
    p = kind.prepare(*(rng.standard_normal(s).astype(np.float32)
                       for s in ((G * H, H), (G * H, H), (G * H,), (G * H,))))
    gx = rng.standard_normal((B, G * H)).astype(np.float32)
    gx[0, :] = np.nan
    outs = []
    for k in (kernels.accelerate(kind, np.float32), kind):
        s = k.alloc(1, B, H, np.float32, False)
        h = np.zeros((B, H), np.float32)
        c = np.zeros((B, H), np.float32) if kind.has_cell else None
        k.step(s, 0, B, gx, h, c, p, k.workspace(B, H, np.float32))
        outs.append(h)
    np.testing.assert_array_equal(np.isnan(outs[0]), np.isnan(outs[1]))
    assert np.isnan(outs[0][0]).all() and np.isfinite(outs[0][1]).all()


def test_float64_runs_the_reference_bit_for_bit():
    m = rnnkit.GRU(6, 8, num_layers=2, dtype=np.float64, rng=0)
    x = np.random.default_rng(0).standard_normal((5, 3, 6))
    y = _run(m, x, None, None, np.ones((5, 3, 8)), None)
    with kernels.reference():
        y_ref = _run(m, x, None, None, np.ones((5, 3, 8)), None)
    np.testing.assert_array_equal(y[0], y_ref[0])
    for name in y_ref[4]:
        np.testing.assert_array_equal(y[4][name], y_ref[4][name])


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **env})


def test_environment_variable_forces_the_reference():
    r = _python("from rnnkit import kernels; print(kernels.enabled, kernels.available)",
                RNNKIT_KERNELS="0")
    assert r.stdout.split() == ["False", "True"], r.stderr


def test_without_numba_everything_runs_on_the_reference():
    r = _python("import sys; sys.modules['numba'] = None\n"
                "import numpy as np, rnnkit\n"
                "from rnnkit import kernels\n"
                "m = rnnkit.LSTM(3, 4, rng=0)\n"
                "y, hn, cache = m.forward(np.ones((2, 1, 3), np.float32))\n"
                "m.backward(np.ones_like(y), None, cache)\n"
                "print(kernels.available, kernels.enabled, "
                "kernels.accelerate(m.math, np.float32) is m.math)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "False", "True"]
