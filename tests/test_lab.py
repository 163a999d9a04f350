"""The lab: vanishing and exploding gradients made visible."""

from __future__ import annotations

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


def test_scaled_rnn_explodes_and_clipping_caps_it():
    big = gradient_norms("rnn", T=100, hidden_size=32, recurrent_scale=4.0)
    clipped = gradient_norms("rnn", T=100, hidden_size=32, recurrent_scale=4.0, clip=1.0)
    assert big.norms[0] > 1e3
    assert np.all(clipped.norms <= 1.0 + 1e-12)


def test_lab_gradients_cli(tmp_path, capsys):
    png = tmp_path / "g.png"
    assert main(["lab", "gradients", "--T", "40", "--hidden-size", "8", "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "lstm" in out and "rnn+clip" in out and png.exists()
    assert main(["lab", "gradients", "--T", "0"]) == 2
