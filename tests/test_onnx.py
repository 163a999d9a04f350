"""ONNX export: onnxruntime runs the exported graphs with rnnkit's numbers (float32, 1e-5)."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import rnnkit  # noqa: E402
from rnnkit import GRU, LSTM, RNN, RNNCell  # noqa: E402
from rnnkit.generate import sample  # noqa: E402
from rnnkit.models import LanguageModel, LMConfig  # noqa: E402
from rnnkit.onnx import export, to_onnx  # noqa: E402
from rnnkit.recurrent import RNNBase  # noqa: E402

T, B, D, H = 5, 3, 4, 6
LENGTHS = np.array([5, 2, 4])
CELLS = {"rnn_tanh": (RNN, {"nonlinearity": "tanh"}), "rnn_relu": (RNN, {"nonlinearity": "relu"}),
         "gru": (GRU, {}), "lstm": (LSTM, {})}


def close(got: Any, want: Any) -> None:
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def session(model: Any) -> Any:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def make_layer(cell: str, num_layers: int = 1, bidirectional: bool = False, **kw: Any
               ) -> RNNBase:
    cls, extra = CELLS[cell]
    return cls(D, H, num_layers, bidirectional=bidirectional, rng=7, **extra, **kw)


def inputs(m: RNNBase, T: int, B: int, seed: int = 0) -> tuple[np.ndarray, Any]:
    """Random x (T, B, D) (or (B, T, D) with batch_first) and h0 (or (h0, c0)) in m's dtype."""
    rng = np.random.default_rng(seed)
    shape = (B, T, m.input_size) if m.batch_first else (T, B, m.input_size)
    x = rng.standard_normal(shape).astype(m.dtype)
    LK = m.num_layers * m.num_directions
    h0 = rng.standard_normal((LK, B, m.hidden_size)).astype(m.dtype)
    if isinstance(m, LSTM):
        return x, (h0, rng.standard_normal((LK, B, m.hidden_size)).astype(m.dtype))
    return x, h0


def run_layer(sess: Any, m: RNNBase, x: np.ndarray, hx: Any,
              lengths: np.ndarray | None = None) -> list[np.ndarray]:
    h0, c0 = hx if isinstance(m, LSTM) else (hx, None)
    feed = {"input": x.astype(np.float32), "h0": h0.astype(np.float32)}
    if c0 is not None:
        feed["c0"] = c0.astype(np.float32)
    if lengths is not None:
        feed["sequence_lens"] = lengths.astype(np.int32)
    return list(sess.run(None, feed))


def check_layer(m: RNNBase, sess: Any, T: int, B: int, lengths: np.ndarray | None = None,
                seed: int = 0) -> None:
    x, hx = inputs(m, T, B, seed)
    y, hn = m(x, hx, lengths)
    got = run_layer(sess, m, x, hx, lengths)
    want = [y, *hn] if isinstance(m, LSTM) else [y, hn]
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == np.float32 and g.shape == w.shape
        close(g, w)


# ---- layers ------------------------------------------------------------------------------------

@pytest.mark.parametrize("use_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("cell", list(CELLS))
def test_layer_matches_rnnkit(cell: str, num_layers: int, bidirectional: bool,
                              use_lengths: bool) -> None:
    m = make_layer(cell, num_layers, bidirectional)
    model = to_onnx(m, lengths=use_lengths)
    onnx.checker.check_model(model, full_check=True)
    check_layer(m, session(model), T, B, LENGTHS if use_lengths else None)


@pytest.mark.parametrize("cell", list(CELLS))
def test_export_writes_a_file_that_loads(cell: str, tmp_path: Path) -> None:
    m = make_layer(cell, 2, True)
    path = tmp_path / f"{cell}.onnx"
    export(m, path, lengths=True)
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert model.producer_name == "rnnkit"
    assert model.producer_version == rnnkit.__version__
    assert model.doc_string
    assert model.opset_import[0].version == 17
    names = [i.name for i in model.graph.input]
    assert names == ["input", "h0", *(["c0"] if cell == "lstm" else []), "sequence_lens"]
    check_layer(m, session(model), T, B, LENGTHS)
    assert list(tmp_path.iterdir()) == [path]                 # no temporary file left


def test_one_recurrent_node_per_layer() -> None:
    model = to_onnx(make_layer("gru", 3, True))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("GRU") == 3
    gru = next(n for n in model.graph.node if n.op_type == "GRU")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in gru.attribute}
    assert attrs["linear_before_reset"] == 1
    assert attrs["direction"] == b"bidirectional"
    assert all(i.data_type == onnx.TensorProto.FLOAT for i in model.graph.initializer
               if i.name.startswith(("W", "R", "B")))


@pytest.mark.parametrize("cell", list(CELLS))
def test_dynamic_axes(cell: str) -> None:
    m = make_layer(cell, 2, True)
    sess = session(to_onnx(m, lengths=True))
    check_layer(m, sess, 5, 3, LENGTHS, seed=1)
    check_layer(m, sess, 9, 7, np.array([9, 1, 3, 8, 9, 2, 5]), seed=2)
    sess = session(to_onnx(m))
    check_layer(m, sess, 2, 1, seed=3)
    check_layer(m, sess, 11, 4, seed=4)


@pytest.mark.parametrize("cell", list(CELLS))
def test_batch_first(cell: str) -> None:
    m = make_layer(cell, 2, True, batch_first=True)
    model = to_onnx(m, lengths=True)
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["B", "T", D]
    sess = session(model)
    check_layer(m, sess, T, B, LENGTHS)
    check_layer(m, session(to_onnx(m)), 7, 2)


@pytest.mark.parametrize("use_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_no_bias(cell: str, use_lengths: bool) -> None:
    m = make_layer(cell, 2, True, bias=False)
    check_layer(m, session(to_onnx(m, lengths=use_lengths)), T, B,
                LENGTHS if use_lengths else None)


@pytest.mark.parametrize("cell", list(CELLS))
def test_float64_layer_is_exported_as_float32(cell: str) -> None:
    m = make_layer(cell, 2, True, dtype=np.float64)
    model = to_onnx(m, lengths=True)
    assert {i.data_type for i in model.graph.initializer if i.data_type in (
        onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE)} == {onnx.TensorProto.FLOAT}
    check_layer(m, session(model), T, B, LENGTHS)


@pytest.mark.parametrize("opset", [14, 21])
def test_other_opsets(opset: int) -> None:
    m = make_layer("lstm", 2, True)
    model = to_onnx(m, lengths=True, opset=opset)
    onnx.checker.check_model(model, full_check=True)
    check_layer(m, session(model), T, B, LENGTHS)


# ---- language model ----------------------------------------------------------------------------

V = 11


def make_lm(cell: str, one_hot: bool) -> LanguageModel:
    name, nl = ("rnn", cell[4:]) if cell.startswith("rnn") else (cell, "tanh")
    lm = LanguageModel(LMConfig(V, name, embedding_dim=5, hidden_size=8, num_layers=2,
                                one_hot=one_hot, nonlinearity=nl), rng=3)
    lm.decoder.weight[...] *= 5          # well separated logits: no argmax near-ties
    return lm


def run_lm(sess: Any, lm: LanguageModel, tokens: np.ndarray, state: Any
           ) -> tuple[np.ndarray, Any]:
    lstm = isinstance(lm.rnn, LSTM)
    feed = {"tokens": tokens.astype(np.int64)}
    if lstm:
        feed["h0"], feed["c0"] = state
    else:
        feed["h0"] = state
    out = sess.run(None, feed)
    return out[0], ((out[1], out[2]) if lstm else out[1])


def zero_state(lm: LanguageModel, batch: int) -> Any:
    h = np.zeros((lm.rnn.num_layers, batch, lm.rnn.hidden_size), np.float32)
    return (h, h.copy()) if isinstance(lm.rnn, LSTM) else h


def random_state(lm: LanguageModel, batch: int, rng: np.random.Generator) -> Any:
    shape = (lm.rnn.num_layers, batch, lm.rnn.hidden_size)
    h = rng.standard_normal(shape).astype(np.float32)
    if isinstance(lm.rnn, LSTM):
        return h, rng.standard_normal(shape).astype(np.float32)
    return h


def flat(state: Any) -> list[np.ndarray]:
    return list(state) if isinstance(state, tuple) else [state]


LM_CASES = list(itertools.product(CELLS, [False, True]))
LM_IDS = [f"{c}-{'onehot' if o else 'embedding'}" for c, o in LM_CASES]


@pytest.mark.parametrize(("cell", "one_hot"), LM_CASES, ids=LM_IDS)
def test_language_model(cell: str, one_hot: bool, tmp_path: Path) -> None:
    lm = make_lm(cell, one_hot)
    path = tmp_path / "lm.onnx"
    export(lm, path)
    model = onnx.load(str(path))
    ops = {n.op_type for n in model.graph.node}
    assert ("OneHot" in ops) is one_hot and ("Gather" in ops) is not one_hot
    assert not any(list(i.dims[-2:]) == [V, V] for i in model.graph.initializer)  # no V x V
    sess = session(model)
    rng = np.random.default_rng(5)
    tokens = rng.integers(0, V, (7, 3))
    state = random_state(lm, 3, rng)
    want_logits, want_state = lm(tokens, state)
    logits, got_state = run_lm(sess, lm, tokens, state)
    assert logits.shape == (7, 3, V)
    close(logits, want_logits)
    for g, w in zip(flat(got_state), flat(want_state), strict=True):
        close(g, w)

    # one token at a time, the state fed back: the same as the whole sequence at once
    s = state
    for t in range(tokens.shape[0]):
        step_logits, s = run_lm(sess, lm, tokens[t:t + 1], s)
        close(step_logits[0], logits[t])
    for g, w in zip(flat(s), flat(got_state), strict=True):
        close(g, w)


@pytest.mark.parametrize(("cell", "one_hot"), LM_CASES, ids=LM_IDS)
def test_greedy_generation_matches_sample(cell: str, one_hot: bool) -> None:
    lm = make_lm(cell, one_hot)
    sess = session(to_onnx(lm))
    prime = [1, 4, 2, 7]
    want = sample(lm, prime, 50, rng=np.random.default_rng(0), temperature=0)
    state = zero_state(lm, 1)
    _, state = run_lm(sess, lm, np.array(prime[:-1])[:, None], state)
    token, got = prime[-1], []
    for _ in range(50):
        logits, state = run_lm(sess, lm, np.array([[token]]), state)
        token = int(np.argmax(logits[0, 0]))
        got.append(token)
    assert got == want


# ---- errors ------------------------------------------------------------------------------------

@pytest.mark.parametrize("thing", [object(), "lstm", RNNCell(D, H, rng=0)],
                         ids=["object", "str", "cell"])
def test_rejects_other_objects(thing: Any) -> None:
    with pytest.raises(TypeError, match="RNN, GRU, LSTM or LanguageModel"):
        to_onnx(thing)


def test_language_model_takes_no_lengths() -> None:
    with pytest.raises(ValueError, match="lengths"):
        to_onnx(make_lm("gru", False), lengths=True)


def test_bad_opset() -> None:
    with pytest.raises(ValueError, match="opset"):
        to_onnx(make_layer("rnn_tanh"), opset=7)


def test_import_without_onnx_needs_no_onnx() -> None:
    code = ("import sys; sys.modules['onnx'] = None\n"       # import onnx raises ImportError
            "import rnnkit.onnx, rnnkit.checks\n"
            "from rnnkit import GRU\n"
            "try:\n"
            "    rnnkit.onnx.to_onnx(GRU(2, 3))\n"
            "except rnnkit.checks.MissingDependency as e:\n"
            "    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert "pip install 'rnnkit[onnx]'" in out.stdout
