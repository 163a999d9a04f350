"""rnnkit.pytorch: the PyTorch twin of a LanguageModel, to_torch / from_torch / torch_model."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rnnkit.checks import MissingDependency  # noqa: E402
from rnnkit.models import LanguageModel, LMConfig, parameter_shapes  # noqa: E402
from rnnkit.pytorch import from_torch, to_torch, torch_model  # noqa: E402

pytestmark = pytest.mark.torch
nn = torch.nn
V, E, H, T, B = 7, 3, 4, 6, 3
CELLS = [("rnn", "tanh"), ("rnn", "relu"), ("gru", "tanh"), ("lstm", "tanh")]
CELL_IDS = ["rnn_tanh", "rnn_relu", "gru", "lstm"]


def _cfg(cell="lstm", nonlinearity="tanh", one_hot=False, num_layers=2, dtype="float64",
         dropout=0.0) -> LMConfig:
    return LMConfig(vocab_size=V, cell=cell, embedding_dim=E, hidden_size=H,
                    num_layers=num_layers, dropout=dropout, one_hot=one_hot,
                    nonlinearity=nonlinearity, dtype=dtype)


def _ids(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, V, (T, B))


def _states(hn) -> tuple:
    return hn if isinstance(hn, tuple) else (hn,)


def _random_state(cfg: LMConfig, seed: int = 1):
    rng = np.random.default_rng(seed)
    shape = (cfg.num_layers, B, cfg.hidden_size)
    h = rng.standard_normal(shape).astype(cfg.dtype)
    return (h, rng.standard_normal(shape).astype(cfg.dtype)) if cfg.cell == "lstm" else h


def _as_torch(state):
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(torch.from_numpy(s.copy()) for s in state)
    return torch.from_numpy(state.copy())


def _run_torch(tm, ids, hx=None):
    with torch.no_grad():
        logits, hn = tm(torch.from_numpy(ids), _as_torch(hx))
    return logits.numpy(), tuple(s.numpy() for s in _states(hn))


# ------------------------------------------------------------------------------------------------
# to_torch: the same numbers
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_hx", [False, True], ids=["h0_zero", "h0_given"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("one_hot", [False, True], ids=["embedding", "one_hot"])
@pytest.mark.parametrize(("cell", "nonlinearity"), CELLS, ids=CELL_IDS)
def test_to_torch_matches_float64(cell, nonlinearity, one_hot, num_layers, with_hx):
    cfg = _cfg(cell, nonlinearity, one_hot, num_layers)
    m = LanguageModel(cfg, rng=0)
    hx = _random_state(cfg) if with_hx else None
    ids = _ids()
    logits, hn = m(ids, hx)
    tm = to_torch(m)
    tlogits, thn = _run_torch(tm, ids, hx)
    assert tlogits.dtype == np.float64 and tlogits.shape == (T, B, V)
    np.testing.assert_allclose(logits, tlogits, rtol=1e-10, atol=1e-12)
    assert len(thn) == len(_states(hn))
    for a, b in zip(_states(hn), thn, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("one_hot", [False, True], ids=["embedding", "one_hot"])
@pytest.mark.parametrize(("cell", "nonlinearity"), CELLS, ids=CELL_IDS)
def test_to_torch_with_lengths_packs_like_rnnkit(cell, nonlinearity, one_hot):
    """Sentence batches: lengths in any order give rnnkit's logits (zeros into the decoder
    past each length) and each sequence's own final state, in float64 to 1e-10."""
    cfg = _cfg(cell, nonlinearity, one_hot)
    m = LanguageModel(cfg, rng=0)
    ids = _ids()
    lengths = np.array([T, 2, T - 1, 1][:B] + [T] * max(0, B - 4))
    hx = _random_state(cfg)
    logits, hn = m(ids, hx, lengths)
    with torch.no_grad():
        tlogits, thn = to_torch(m)(torch.from_numpy(ids), _as_torch(hx), lengths)
    np.testing.assert_allclose(logits, tlogits.numpy(), rtol=1e-10, atol=1e-12)
    for a, b in zip(_states(hn), _states(thn), strict=True):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("with_hx", [False, True], ids=["h0_zero", "h0_given"])
@pytest.mark.parametrize("one_hot", [False, True], ids=["embedding", "one_hot"])
@pytest.mark.parametrize(("cell", "nonlinearity"), CELLS, ids=CELL_IDS)
def test_to_torch_matches_float32(cell, nonlinearity, one_hot, with_hx):
    cfg = _cfg(cell, nonlinearity, one_hot, num_layers=2, dtype="float32")
    m = LanguageModel(cfg, rng=0)
    hx = _random_state(cfg) if with_hx else None
    ids = _ids()
    logits, hn = m(ids, hx)
    tm = to_torch(m)
    assert all(p.dtype == torch.float32 for p in tm.parameters())
    tlogits, thn = _run_torch(tm, ids, hx)
    assert tlogits.dtype == np.float32
    np.testing.assert_allclose(logits, tlogits, rtol=1e-5, atol=1e-5)
    for a, b in zip(_states(hn), thn, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("one_hot", [False, True], ids=["embedding", "one_hot"])
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_structure_and_state_dict_names(cell, one_hot):
    cfg = _cfg(cell, one_hot=one_hot, dropout=0.25)
    m = LanguageModel(cfg, rng=0)
    tm = to_torch(m)
    assert type(tm).__name__ == "TorchLanguageModel"
    children = [name for name, _ in tm.named_children()]
    assert children == (["rnn", "decoder"] if one_hot else ["embedding", "rnn", "decoder"])
    kind = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[cell]
    assert type(tm.rnn) is kind
    assert (tm.rnn.input_size, tm.rnn.hidden_size, tm.rnn.num_layers) == (V if one_hot else E,
                                                                          H, 2)
    assert tm.rnn.dropout == 0.25 and not tm.rnn.batch_first
    assert (tm.vocab_size, tm.one_hot, tm.cell) == (V, one_hot, cell)
    names = [name for name, _ in parameter_shapes(cfg)]
    assert list(tm.state_dict()) == names
    assert {k: tuple(v.shape) for k, v in tm.state_dict().items()} == dict(parameter_shapes(cfg))
    fresh = torch_model(cfg)
    fresh.load_state_dict({k: torch.from_numpy(v) for k, v in m.state_dict().items()},
                          strict=True)
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, tm.state_dict()[k]), k


def test_relu_rnn_keeps_its_nonlinearity_and_the_class_pickles():
    import pickle

    from rnnkit.pytorch import TorchLanguageModel

    tm = to_torch(LanguageModel(_cfg("rnn", "relu"), rng=0))
    assert tm.rnn.nonlinearity == "relu"
    assert isinstance(tm, TorchLanguageModel)
    again = pickle.loads(pickle.dumps(tm))
    assert type(again) is TorchLanguageModel and again.rnn.nonlinearity == "relu"
    for k, v in again.state_dict().items():
        assert torch.equal(v, tm.state_dict()[k]), k


def test_to_torch_accepts_a_wrapper_and_refuses_other_things():
    m = LanguageModel(_cfg("gru"), rng=0)

    class Loaded:                      # the shape of a loaded-model wrapper: .model
        model = m

    ids = _ids()
    np.testing.assert_array_equal(_run_torch(to_torch(Loaded()), ids)[0],
                                  _run_torch(to_torch(m), ids)[0])
    with pytest.raises(TypeError, match="LanguageModel"):
        to_torch(m.rnn)
    with pytest.raises(TypeError, match="LMConfig"):
        torch_model({"vocab_size": 3})


def test_no_shared_memory():
    m = LanguageModel(_cfg("lstm"), rng=0)
    before = m.state_dict()
    tm = to_torch(m)
    tbefore = {k: v.clone() for k, v in tm.state_dict().items()}
    for _, p in m.named_parameters():             # mutate rnnkit: torch unchanged
        p += 1.0
    for k, v in tm.state_dict().items():
        assert torch.equal(v, tbefore[k]), k
    with torch.no_grad():                         # mutate torch: rnnkit's copy unchanged
        for p in tm.parameters():
            p.mul_(3.0)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k] + 1.0, err_msg=k)
    back = from_torch(tm)                         # and from_torch's model owns its arrays
    snapshot = back.state_dict()
    with torch.no_grad():
        for p in tm.parameters():
            p.zero_()
    for k, v in back.state_dict().items():
        np.testing.assert_array_equal(v, snapshot[k], err_msg=k)


def test_mode_follows():
    m = LanguageModel(_cfg("gru", dropout=0.5), rng=0)
    assert to_torch(m).training
    m.eval()
    tm = to_torch(m)
    assert not tm.training and not any(c.training for c in tm.modules())
    assert not from_torch(tm).training
    assert from_torch(tm.train()).training
    assert m.training is False                     # to_torch does not touch the model


def test_dropout_acts_in_training_mode_only():
    for one_hot, num_layers in ((False, 1), (True, 1), (False, 2)):   # one layer: no warning
        cfg = _cfg("lstm", one_hot=one_hot, num_layers=num_layers, dropout=0.5)
        tm = torch_model(cfg)
        ids = torch.from_numpy(_ids())
        with torch.no_grad():
            a, b = tm(ids)[0], tm(ids)[0]
            tm.eval()
            c, d = tm(ids)[0], tm(ids)[0]
        assert not torch.equal(a, b)
        assert torch.equal(c, d)


def test_to_torch_leaves_torch_global_generator_alone():
    m = LanguageModel(_cfg("lstm"), rng=0)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    to_torch(m)
    assert torch.equal(torch.rand(3), expected)


# ------------------------------------------------------------------------------------------------
# from_torch: the round trip, and torch's own models
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("one_hot", [False, True], ids=["embedding", "one_hot"])
@pytest.mark.parametrize(("cell", "nonlinearity"), CELLS, ids=CELL_IDS)
def test_round_trip_is_exact(cell, nonlinearity, one_hot, dtype):
    cfg = _cfg(cell, nonlinearity, one_hot, dtype=dtype, dropout=0.125)
    m = LanguageModel(cfg, rng=0)
    back = from_torch(to_torch(m))
    assert back.config == cfg
    a, b = m.state_dict(), back.state_dict()
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k


@pytest.mark.parametrize("one_hot", [False, True], ids=["embedding", "one_hot"])
@pytest.mark.parametrize(("cell", "nonlinearity"), CELLS, ids=CELL_IDS)
def test_torch_initialised_model_converts(cell, nonlinearity, one_hot):
    torch.manual_seed(0)
    tm = torch_model(_cfg(cell, nonlinearity, one_hot)).eval()
    m = from_torch(tm, rng=0)
    assert m.config == _cfg(cell, nonlinearity, one_hot) and not m.training
    ids = _ids(2)
    logits, hn = m(ids)
    tlogits, thn = _run_torch(tm, ids)
    np.testing.assert_allclose(logits, tlogits, rtol=1e-10, atol=1e-12)
    for a, b in zip(_states(hn), thn, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


class _Plain(nn.Module):
    """Any module with embedding / rnn / decoder, as in PyTorch's word-language-model example."""

    def __init__(self, embedding=None, rnn=None, decoder=None, **extra):
        super().__init__()
        if embedding is not None:
            self.embedding = embedding
        if rnn is not None:
            self.rnn = rnn
        if decoder is not None:
            self.decoder = decoder
        for k, v in extra.items():
            setattr(self, k, v)


def _plain(**kw):
    parts = {"embedding": nn.Embedding(V, E), "rnn": nn.GRU(E, H, 2, dropout=0.1),
             "decoder": nn.Linear(H, V)}
    parts.update(kw)
    return _Plain(**parts)


def test_from_torch_reads_a_plain_module():
    torch.manual_seed(1)
    tm = _plain(drop=nn.Dropout(0.1)).double().eval()      # a parameter-free extra is fine
    m = from_torch(tm)
    assert m.config == LMConfig(vocab_size=V, cell="gru", embedding_dim=E, hidden_size=H,
                                num_layers=2, dropout=0.1, dtype="float64")
    ids = _ids()
    with torch.no_grad():
        y, _ = tm.rnn(tm.embedding(torch.from_numpy(ids)))
        expected = tm.decoder(y).numpy()
    np.testing.assert_allclose(m(ids)[0], expected, rtol=1e-10, atol=1e-12)
    one_hot = from_torch(_Plain(rnn=nn.RNN(V, H, nonlinearity="relu"), decoder=nn.Linear(H, V)))
    assert one_hot.config.one_hot and one_hot.config.nonlinearity == "relu"
    assert one_hot.config.dtype == "float32"


def _nan_weights():
    tm = _plain()
    with torch.no_grad():
        tm.rnn.weight_hh_l1[0, 0] = float("nan")
    return tm


REFUSED = {
    "not a module": (lambda: object(), TypeError, "torch.nn.Module"),
    "no rnn": (lambda: _Plain(embedding=nn.Embedding(V, E), decoder=nn.Linear(H, V)),
               TypeError, "submodule 'rnn'"),
    "no decoder": (lambda: _Plain(embedding=nn.Embedding(V, E), rnn=nn.GRU(E, H)), TypeError,
                   "submodule 'decoder'"),
    "rnn not recurrent": (lambda: _plain(rnn=nn.Linear(E, H)), TypeError,
                          "nn.RNN, nn.GRU or nn.LSTM"),
    "bidirectional": (lambda: _plain(rnn=nn.GRU(E, H, bidirectional=True)), ValueError,
                      "bidirectional"),
    "batch_first": (lambda: _plain(rnn=nn.GRU(E, H, batch_first=True)), ValueError,
                    "batch_first"),
    "rnn without bias": (lambda: _plain(rnn=nn.GRU(E, H, bias=False)), ValueError, "bias=True"),
    "proj_size": (lambda: _plain(rnn=nn.LSTM(E, H, proj_size=2)), ValueError, "proj_size"),
    "padding_idx": (lambda: _plain(embedding=nn.Embedding(V, E, padding_idx=0)), ValueError,
                    "padding_idx"),
    "max_norm": (lambda: _plain(embedding=nn.Embedding(V, E, max_norm=1.0)), ValueError,
                 "max_norm"),
    "embedding not Embedding": (lambda: _plain(embedding=nn.Linear(V, E)), TypeError,
                                "nn.Embedding"),
    "embedding vocab": (lambda: _plain(embedding=nn.Embedding(V + 1, E)), ValueError,
                        "num_embeddings"),
    "embedding size": (lambda: _plain(embedding=nn.Embedding(V, E + 1)), ValueError,
                       "embedding_dim"),
    "one-hot size": (lambda: _Plain(rnn=nn.GRU(V + 2, H), decoder=nn.Linear(H, V)), ValueError,
                     "one-hot"),
    "decoder not Linear": (lambda: _plain(decoder=nn.Bilinear(H, H, V)), TypeError,
                           "nn.Linear"),
    "decoder size": (lambda: _plain(decoder=nn.Linear(H + 1, V)), ValueError, "in_features"),
    "decoder without bias": (lambda: _plain(decoder=nn.Linear(H, V, bias=False)), ValueError,
                             "decoder must have a bias"),
    "float16": (lambda: _plain().half(), TypeError, "float16"),
    "mixed dtypes": (lambda: _plain(decoder=nn.Linear(H, V).double()), TypeError,
                     "float32 and float64"),
    "extra parameters": (lambda: _plain(norm=nn.LayerNorm(H)), ValueError, "norm.weight"),
    "non-finite": (_nan_weights, ValueError, r"rnn\.weight_hh_l1 too; got NaN or Inf \(first "
                   r"at index \(0, 0\)\)"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_from_torch_refuses(case):
    make, exc, match = REFUSED[case]
    with pytest.raises(exc, match=match):
        from_torch(make())


# ------------------------------------------------------------------------------------------------
# without torch
# ------------------------------------------------------------------------------------------------


def test_missing_torch_says_what_to_install(monkeypatch):
    m = LanguageModel(_cfg("gru"), rng=0)
    tm = to_torch(m)
    monkeypatch.setitem(sys.modules, "torch", None)          # import torch now fails
    for call in (lambda: to_torch(m), lambda: from_torch(tm), lambda: torch_model(m.config)):
        with pytest.raises(MissingDependency, match="pip install 'rnnkit\\[torch\\]'"):
            call()


def test_module_imports_without_torch():
    code = ("import sys; sys.modules['torch'] = None; import rnnkit.pytorch as p; "
            "print(sorted(p.__all__))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "['from_torch', 'to_torch', 'torch_model']"
