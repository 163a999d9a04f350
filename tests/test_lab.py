"""The lab: vanishing and exploding gradients made visible."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rnnkit.cli import main
from rnnkit.lab import gradient_norms


def test_tanh_rnn_vanishes_where_gated_cells_keep_the_gradient():
    T = 120
    rnn = gradient_norms("rnn", T=T, hidden_size=32)
    gru = gradient_norms("gru", T=T, hidden_size=32, gate_bias=3.0)
    lstm = gradient_norms("lstm", T=T, hidden_size=32, gate_bias=3.0)
    assert rnn.norms[-1] == pytest.approx(1.0)
    assert rnn.norms[0] < 1e-15                     # 100+ steps back: gone
    assert gru.norms[0] > 1e-4 and lstm.norms[0] > 1e-4


def test_scaled_rnn_explodes_and_the_per_step_cap_bounds_it():
    big = gradient_norms("rnn", T=100, hidden_size=32, recurrent_scale=4.0)
    capped = gradient_norms("rnn", T=100, hidden_size=32, recurrent_scale=4.0, clip=1.0)
    assert big.norms[0] > 1e3
    # the cap changes nothing until the chain first exceeds it ...
    first = int(np.flatnonzero(big.norms[::-1] > 1.0)[0])          # steps back
    np.testing.assert_allclose(capped.norms[::-1][:first], big.norms[::-1][:first], rtol=1e-12)
    # ... and from there on, as each step back multiplies by more than 1, it sits at the cap
    assert np.all(capped.norms <= 1.0 + 1e-12)
    assert np.median(capped.norms[::-1][first:]) > 0.9


def test_lab_gradients_cli(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "f").write_text("")
    assert main(["lab", "gradients", "--T", "40", "--hidden-size", "8"]) == 0
    out = capsys.readouterr().out
    assert "lstm" in out and "x4 capped" in out
    assert out.endswith(f"wrote {Path('lab-gradients', 'gradients.png')}\n")
    assert (tmp_path / "lab-gradients" / "gradients.png").stat().st_size > 0
    for bad in (["--T", "1"], ["--out", "f"], ["--out", "f/sub"]):
        assert main(["lab", "gradients", *bad]) == 2
        assert capsys.readouterr().out == ""                 # refused before any work
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f", "lab-gradients"]


# ---- a trained model's own gradients (rnnkit serve's Gradients tab) ---------------------------

def _loss_with_h_shifted(model, ids, target, layer, t, delta):
    """The last step's cross-entropy when h_t of ``layer`` is moved by ``delta`` (both where the
    layer above reads it and where the next step of its own layer does): float64 cells."""
    from rnnkit.functional import log_softmax
    from rnnkit.recurrent import CELLS

    cfg, rnn = model.config, model.rnn
    cells = []
    for k in range(cfg.num_layers):
        w_ih, w_hh, b_ih, b_hh = rnn.layer_weights(k)
        kw = {"nonlinearity": cfg.nonlinearity} if cfg.cell == "rnn" else {}
        c = CELLS[cfg.cell](w_ih.shape[1], cfg.hidden_size, dtype=np.float64, rng=0, **kw)
        c.load_state_dict({"weight_ih": w_ih, "weight_hh": w_hh, "bias_ih": b_ih,
                           "bias_hh": b_hh})
        cells.append(c)
    x = (np.eye(cfg.vocab_size)[ids] if cfg.one_hot else model.embedding.weight[ids])
    states = [None] * cfg.num_layers
    for s in range(len(ids)):
        inp = x[s:s + 1]
        for k, c in enumerate(cells):
            st = c(inp, states[k])
            if (k, s) == (layer, t):
                st = (st[0] + delta, st[1]) if isinstance(st, tuple) else st + delta
            states[k] = st
            inp = st[0] if isinstance(st, tuple) else st
    logits = inp[0] @ model.decoder.weight.T + model.decoder.bias
    return float(-log_softmax(logits)[target])


@pytest.mark.parametrize("cell,one_hot", [("rnn", False), ("gru", True), ("lstm", False)])
def test_model_gradient_norms_agree_with_finite_differences(cell, one_hot):
    from rnnkit.lab.gradients import model_gradient_norms
    from rnnkit.models import LanguageModel, LMConfig

    cfg = LMConfig(vocab_size=7, cell=cell, embedding_dim=3, hidden_size=4, num_layers=2,
                   one_hot=one_hot, dtype="float64")
    model = LanguageModel(cfg, rng=3)
    ids, target = np.array([1, 5, 2, 6, 0, 3]), 4
    r = model_gradient_norms(model, ids, target)
    assert r.norms.shape == (2, 6)
    assert abs(r.loss - _loss_with_h_shifted(model, ids, target, 0, 0, 0.0)) < 1e-12
    eps = 1e-6
    for layer in range(2):
        for t in range(6):
            g = np.empty(4)
            for j in range(4):
                d = np.zeros((1, 4))
                d[0, j] = eps
                g[j] = (_loss_with_h_shifted(model, ids, target, layer, t, d)
                        - _loss_with_h_shifted(model, ids, target, layer, t, -d)) / (2 * eps)
            assert abs(np.linalg.norm(g) - r.norms[layer, t]) <= 1e-7 * max(1, r.norms[layer, t])


def test_model_gradient_norms_refuses_bad_input():
    from rnnkit.lab.gradients import model_gradient_norms
    from rnnkit.models import LanguageModel, LMConfig

    model = LanguageModel(LMConfig(vocab_size=5, hidden_size=4, embedding_dim=3), rng=0)
    with pytest.raises(ValueError, match="target"):
        model_gradient_norms(model, np.array([1, 2]), 5)
    with pytest.raises(ValueError):
        model_gradient_norms(model, np.array([], np.int64), 1)
    with pytest.raises(TypeError, match="LanguageModel"):
        model_gradient_norms(object(), np.array([1]), 1)
    r = model_gradient_norms(model, np.array([1, 2, 3]), 0)      # float32 model, float64 walk
    assert r.norms.dtype == np.float64 and np.isfinite(r.norms).all()
