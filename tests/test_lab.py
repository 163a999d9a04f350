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
