"""RNN/GRU/LSTM.states(): every layer's h_t (and the LSTM's c_t) at every step."""

from __future__ import annotations

import numpy as np
import pytest

import rnnkit

CLASSES = {"rnn": rnnkit.RNN, "gru": rnnkit.GRU, "lstm": rnnkit.LSTM}


def one_layer(m, cell: str, layer: int, input_size: int):
    """A 1-layer module holding layer ``layer`` of ``m``'s weights."""
    single = CLASSES[cell](input_size, m.hidden_size, bidirectional=m.num_directions == 2,
                             dtype=np.float64)
    sd = {}
    for k, v in m.state_dict().items():
        if f"_l{layer}" in k:
            sd[k.replace(f"_l{layer}", "_l0")] = v
    single.load_state_dict(sd)
    return single


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("bi", [False, True])
@pytest.mark.parametrize("lengths", [None, [5, 2, 4]])
def test_states_are_each_layers_outputs_and_final_states(cell, bi, lengths):
    rng = np.random.default_rng(0)
    T, B, D, H, L = 5, 3, 4, 6, 2
    K = 2 if bi else 1
    m = CLASSES[cell](D, H, num_layers=L, bidirectional=bi, dtype=np.float64, rng=1)
    x = rng.standard_normal((T, B, D))
    h0 = rng.standard_normal((L * K, B, H))
    hx = (h0, rng.standard_normal((L * K, B, H))) if cell == "lstm" else h0
    hs, cs, hn = m.states(x, hx, lengths)
    assert hs.shape == (T, L * K, B, H)
    assert (cs is None) == (cell != "lstm")
    y, hn_ref = m(x, hx, lengths)
    np.testing.assert_array_equal(np.concatenate(list(hs[:, -K:].transpose(1, 0, 2, 3)), -1), y)
    for a, b in zip(hn if cell == "lstm" else [hn], hn_ref if cell == "lstm" else [hn_ref],
                    strict=True):
        np.testing.assert_array_equal(a, b)
    # layer by layer, with 1-layer modules on the same weights
    inp = x
    for layer in range(L):
        single = one_layer(m, cell, layer, D if layer == 0 else K * H)
        sl = slice(layer * K, (layer + 1) * K)
        sub_hx = (hx[0][sl], hx[1][sl]) if cell == "lstm" else hx[sl]
        y_l, _ = single(inp, sub_hx, lengths)
        np.testing.assert_allclose(np.concatenate(list(hs[:, sl].transpose(1, 0, 2, 3)), -1),
                                   y_l, atol=1e-12)
        inp = y_l
    if cell == "lstm":
        # c_t at each sequence's last valid step (forward direction) is its c_n
        last = np.full(B, T - 1) if lengths is None else np.asarray(lengths) - 1
        for layer in range(L):
            got = cs[last, layer * K, np.arange(B)]
            np.testing.assert_array_equal(got, hn[1][layer * K])


def test_lstm_cell_states_follow_the_cell_step_by_step():
    rng = np.random.default_rng(2)
    T, B, D, H = 6, 2, 3, 4
    m = rnnkit.LSTM(D, H, dtype=np.float64, rng=3)
    cell = rnnkit.LSTMCell(D, H, dtype=np.float64)
    cell.load_state_dict({k[:-3]: v for k, v in m.state_dict().items()})
    x = rng.standard_normal((T, B, D))
    hs, cs, _ = m.states(x)
    state = None
    for t in range(T):
        state = cell(x[t], state)
        np.testing.assert_allclose(hs[t, 0], state[0], atol=1e-13)
        np.testing.assert_allclose(cs[t, 0], state[1], atol=1e-13)


def test_states_run_without_dropout_and_restore_the_mode():
    m = rnnkit.GRU(3, 4, num_layers=2, dropout=0.5, rng=0)
    x = np.random.default_rng(0).standard_normal((4, 2, 3)).astype(np.float32)
    assert m.training
    a, _, _ = m.states(x)
    b, _, _ = m.states(x)
    np.testing.assert_array_equal(a, b)
    assert m.training
    m.eval()
    np.testing.assert_array_equal(m(x)[0], a[:, -1])


def test_states_of_one_unbatched_sequence_and_batch_first():
    m = rnnkit.LSTM(3, 4, num_layers=2, rng=0)
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    hs, cs, _ = m.states(x)
    assert hs.shape == (5, 2, 4) and cs.shape == (5, 2, 4)
    mb = rnnkit.LSTM(3, 4, num_layers=2, rng=0, batch_first=True)
    hs_b, _, _ = mb.states(x[None])                        # (B=1, T, D)
    np.testing.assert_allclose(hs_b[:, :, 0], hs, atol=1e-6)
