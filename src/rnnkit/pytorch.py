"""The PyTorch twin of a ``LanguageModel``, one call each way.

    from rnnkit.pytorch import from_torch, to_torch

    tm = to_torch(model)                      # a torch.nn.Module: same weights, same logits
    logits, hn = tm(torch.from_numpy(ids))    # ids (T, B) int64 -> logits (T, B, V)
    model2 = from_torch(tm)                   # back to rnnkit, the config read off the module

The torch module (class ``TorchLanguageModel``) has exactly the submodules ``embedding``
(absent with ``one_hot``), ``rnn`` (``nn.RNN`` / ``nn.GRU`` / ``nn.LSTM``) and ``decoder``, so its
state dict has the same names, order and shapes as rnnkit's. Its forward is rnnkit's:
embedding (or one-hot) -> recurrent layers -> linear, with dropout in training mode on the
embedding output, between recurrent layers and on the last layer's output.

PyTorch is an optional extra (``pip install 'rnnkit[torch]'``): this module imports without
it, and each function imports torch when called (``MissingDependency`` if it is absent).
"""

from __future__ import annotations

import functools
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from . import checks as check
from .models import LanguageModel, LMConfig, parameter_shapes

if TYPE_CHECKING:
    import torch

__all__ = ["from_torch", "to_torch", "torch_model"]

_DTYPES = ("float32", "float64")
_RNN_DROPOUT_WARNING = "dropout option adds dropout after all but last recurrent layer"


def _torch() -> Any:
    return check.require("torch", "torch", "converting to PyTorch")


@functools.cache
def _torch_class() -> type:
    """``TorchLanguageModel``, made once torch is importable (it subclasses ``nn.Module``)."""
    _torch()                              # MissingDependency, with the pip hint, if absent
    import torch
    from torch import nn
    from torch.nn import functional as F

    class TorchLanguageModel(nn.Module):
        """rnnkit's ``LanguageModel`` in PyTorch: ``embedding`` (unless one-hot) -> ``rnn`` ->
        ``decoder``, with PyTorch's own weights initialisation.

            tm = TorchLanguageModel(LMConfig(vocab_size=65, cell="gru"))
            logits, hn = tm(tokens)          # tokens (T, B) int64 -> logits (T, B, V)
        """

        def __init__(self, config: LMConfig) -> None:
            if not isinstance(config, LMConfig):
                raise TypeError(f"config must be an rnnkit LMConfig; got {type(config).__name__}")
            super().__init__()
            V, E, H = config.vocab_size, config.embedding_dim, config.hidden_size
            dtype = getattr(torch, config.dtype)
            self.config = config              # the fields the structure does not show
            self.vocab_size = V
            self.one_hot = config.one_hot
            self.cell = config.cell
            if not config.one_hot:
                self.embedding = nn.Embedding(V, E, dtype=dtype)
            kind = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[config.cell]
            kw: dict[str, Any] = ({"nonlinearity": config.nonlinearity}
                                  if config.cell == "rnn" else {})
            with warnings.catch_warnings():
                # rnnkit also drops out the last layer's output, so dropout with one layer is
                # meaningful here: torch's warning about it does not apply
                warnings.filterwarnings("ignore", _RNN_DROPOUT_WARNING, UserWarning)
                self.rnn = kind(V if config.one_hot else E, H, config.num_layers,
                                dropout=config.dropout, dtype=dtype, **kw)
            self.decoder = nn.Linear(H, V, dtype=dtype)

        def forward(self, tokens: Any, hx: Any = None, lengths: Any = None
                    ) -> tuple[Any, Any]:
            """``tokens`` (T, B) int64 -> ``(logits (T, B, V), hn)``; ``hx``/``hn`` as the
            recurrent layer takes and returns them ((h, c) for the LSTM). ``lengths`` (B,),
            any order: the sequences are packed (``pack_padded_sequence``), so, as in
            rnnkit, steps past a length output zeros before the decoder (its bias there)
            and ``hn`` is each sequence's state at its own last step."""
            p = self.rnn.dropout if self.training else 0.0
            if self.one_hot:
                x = F.one_hot(tokens, self.vocab_size).to(self.decoder.weight.dtype)
            else:
                x = self.embedding(tokens)
                if p > 0:
                    x = F.dropout(x, p, True)
            if lengths is None:
                y, hn = self.rnn(x, hx)
            else:
                from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

                lengths = torch.as_tensor(lengths, dtype=torch.int64).cpu()
                packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
                y, hn = self.rnn(packed, hx)
                y, _ = pad_packed_sequence(y, total_length=tokens.shape[0])
            if p > 0:
                y = F.dropout(y, p, True)
            return self.decoder(y), hn

        def extra_repr(self) -> str:
            return f"cell={self.cell!r}, vocab_size={self.vocab_size}, one_hot={self.one_hot}"

    TorchLanguageModel.__module__ = __name__
    TorchLanguageModel.__qualname__ = "TorchLanguageModel"
    return TorchLanguageModel


def __getattr__(name: str) -> Any:
    # ``rnnkit.pytorch.TorchLanguageModel`` (and pickling a whole module) resolves lazily
    if name == "TorchLanguageModel":
        _torch()
        return _torch_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def torch_model(config: LMConfig) -> torch.nn.Module:
    """A ``TorchLanguageModel`` of ``config``'s shape and dtype, with PyTorch's fresh initial
    weights (drawn from torch's global generator), in training mode.

        tm = torch_model(LMConfig(vocab_size=65, cell="lstm", hidden_size=128))
    """
    _torch()
    if not isinstance(config, LMConfig):
        raise TypeError(f"config must be an rnnkit LMConfig; got {type(config).__name__}")
    module: torch.nn.Module = _torch_class()(config)
    return module


def _language_model(model: Any) -> LanguageModel:
    if isinstance(model, LanguageModel):
        return model
    inner = getattr(model, "model", None)
    if isinstance(inner, LanguageModel):
        return inner
    raise TypeError(f"model must be an rnnkit LanguageModel (or an object whose .model is one); "
                    f"got {type(model).__name__}")


def to_torch(model: Any) -> torch.nn.Module:
    """The PyTorch twin of an rnnkit ``LanguageModel`` (or of an object whose ``.model`` is
    one): a ``TorchLanguageModel`` holding copies of its weights, in its dtype and in its
    train/eval mode. It computes the same logits and final state as ``model(ids, hx)``::

        tm = to_torch(model)
        logits, hn = tm(torch.from_numpy(ids))       # == model(ids) up to rounding

    Nothing is shared: changing either model afterwards leaves the other as it was. Torch's
    global random generator is left as it was too.
    """
    torch = _torch()
    lm = _language_model(model)
    with torch.random.fork_rng(devices=[]):            # the initial weights are overwritten
        tm = torch_model(lm.config)
    state = {name: torch.from_numpy(np.array(p, copy=True)) for name, p in lm.named_parameters()}
    tm.load_state_dict(state, strict=True)
    tm.train(lm.training)
    return tm


def _refuse(what: str, got: str, fix: str) -> str:
    return f"from_torch: {what}; got {got}. {fix}"


def from_torch(module: torch.nn.Module, rng: np.random.Generator | int | None = None
               ) -> LanguageModel:
    """An rnnkit ``LanguageModel`` with copies of a PyTorch module's weights, its config read
    off the module's structure: ``module.rnn`` (``nn.RNN`` with its nonlinearity, ``nn.GRU`` or
    ``nn.LSTM``: cell, hidden size, layers, dropout), ``module.decoder`` (``nn.Linear``:
    vocabulary size) and ``module.embedding`` (``nn.Embedding``: embedding size; without one,
    the input is one-hot). Works for ``to_torch``'s modules and for any ``nn.Module`` with
    those attributes and PyTorch's parameter names. ``rng`` seeds the model's dropout masks.

        model = from_torch(tm)
        logits, hn = model(ids)                     # == tm(torch.from_numpy(ids))

    Refused, with a ValueError or TypeError that says why, before anything is built: layouts
    rnnkit's LanguageModel does not compute (bidirectional, batch_first, no bias, proj_size,
    an embedding with padding_idx, max_norm or scale_grad_by_freq, a decoder without bias,
    extra parameters), parts whose sizes do not fit together, dtypes other than float32 and
    float64, and NaN or Inf in a weight.
    """
    torch = _torch()
    nn = torch.nn
    if not isinstance(module, nn.Module):
        raise TypeError(f"from_torch: module must be a torch.nn.Module; got "
                        f"{type(module).__name__}. For an rnnkit model, use to_torch.")
    parts = dict(module.named_children())
    for name, kind in (("rnn", "an nn.RNN, nn.GRU or nn.LSTM"), ("decoder", "an nn.Linear")):
        if parts.get(name) is None:
            raise TypeError(_refuse(f"the module must have a submodule {name!r} ({kind})",
                                    f"a {type(module).__name__} with submodules "
                                    f"{list(parts)}",
                                    "Name the parts embedding, rnn and decoder, as "
                                    "rnnkit.pytorch.torch_model(config) does."))
    rnn, decoder, emb = parts["rnn"], parts["decoder"], parts.get("embedding")

    # --- the recurrent layers -------------------------------------------------------------
    if isinstance(rnn, nn.LSTM):
        cell = "lstm"
    elif isinstance(rnn, nn.GRU):
        cell = "gru"
    elif isinstance(rnn, nn.RNN):
        cell = "rnn"
    else:
        raise TypeError(_refuse("module.rnn must be an nn.RNN, nn.GRU or nn.LSTM",
                                type(rnn).__name__, "Other recurrent layers have no rnnkit "
                                "equivalent."))
    for flag, bad, fix in (("bidirectional", True, "rnnkit's LanguageModel is unidirectional"),
                           ("batch_first", True, "rnnkit is time-major: rebuild the layer "
                            "with batch_first=False (same weights)"),
                           ("bias", False, "rnnkit's LanguageModel has the recurrent biases: "
                            "rebuild with bias=True and zero biases")):
        if getattr(rnn, flag) == bad:
            raise ValueError(_refuse(f"module.rnn must have {flag}={not bad}",
                                     f"{flag}={bad}", fix + "."))
    if getattr(rnn, "proj_size", 0):
        raise ValueError(_refuse("module.rnn must have proj_size=0", f"proj_size="
                                 f"{rnn.proj_size}", "rnnkit's LSTM has no projection."))
    nonlinearity = getattr(rnn, "nonlinearity", "tanh") if cell == "rnn" else None
    if nonlinearity not in (None, "tanh", "relu"):
        raise ValueError(_refuse("module.rnn's nonlinearity must be 'tanh' or 'relu'",
                                 repr(nonlinearity), "rnnkit has these two."))
    H, L, D = rnn.hidden_size, rnn.num_layers, rnn.input_size

    # --- the decoder -------------------------------------------------------------------------
    if not isinstance(decoder, nn.Linear):
        raise TypeError(_refuse("module.decoder must be an nn.Linear", type(decoder).__name__,
                                "The decoder maps the hidden state to the logits."))
    if decoder.bias is None:
        raise ValueError(_refuse("module.decoder must have a bias", "nn.Linear(bias=False)",
                                 "Rebuild it with bias=True and a zero bias."))
    V = decoder.out_features
    if decoder.in_features != H:
        raise ValueError(_refuse(f"module.decoder's in_features must equal rnn.hidden_size "
                                 f"({H})", f"in_features={decoder.in_features}",
                                 "The decoder reads the last recurrent layer's output."))

    # --- the input: embedding or one-hot ---------------------------------------------------------
    if emb is None:
        if D != V:
            raise ValueError(_refuse(f"without an embedding the input is one-hot, so "
                                     f"rnn.input_size must equal the vocabulary size "
                                     f"(decoder.out_features = {V})", f"input_size={D}",
                                     "Add an nn.Embedding named 'embedding', or fix the sizes."))
    else:
        if not isinstance(emb, nn.Embedding):
            raise TypeError(_refuse("module.embedding must be an nn.Embedding",
                                    type(emb).__name__, "Or leave it out for one-hot input."))
        for attr, off in (("padding_idx", None), ("max_norm", None),
                          ("scale_grad_by_freq", False)):
            if getattr(emb, attr) != off:
                raise ValueError(_refuse(f"module.embedding must have {attr}={off}",
                                         f"{attr}={getattr(emb, attr)}", "rnnkit's "
                                         "Embedding is a plain lookup; rebuild it without "
                                         f"{attr}."))
        if emb.num_embeddings != V:
            raise ValueError(_refuse(f"module.embedding's num_embeddings must equal the "
                                     f"vocabulary size (decoder.out_features = {V})",
                                     f"num_embeddings={emb.num_embeddings}",
                                     "The embedding and the decoder share the vocabulary."))
        if emb.embedding_dim != D:
            raise ValueError(_refuse(f"module.embedding's embedding_dim must equal "
                                     f"rnn.input_size ({D})",
                                     f"embedding_dim={emb.embedding_dim}",
                                     "The embedding feeds the first recurrent layer."))

    # --- dtype and the parameters --------------------------------------------------------------
    state = module.state_dict()
    dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in state.values()})
    if len(dtypes) != 1 or dtypes[0] not in _DTYPES:
        raise TypeError(_refuse("the module's parameters must all be float32 or all float64",
                                " and ".join(dtypes) or "no parameters",
                                "Convert it with module.float() or module.double()."))
    # the fields the structure cannot show (the embedding size of a one-hot model, the
    # nonlinearity of a GRU or LSTM) come from a TorchLanguageModel's config, if any
    base = getattr(module, "config", None)
    hidden: dict[str, Any] = {}
    if isinstance(base, LMConfig):
        hidden = {"embedding_dim": base.embedding_dim, "nonlinearity": base.nonlinearity}
    if emb is not None:
        hidden["embedding_dim"] = D
    if nonlinearity is not None:
        hidden["nonlinearity"] = nonlinearity
    try:
        config = LMConfig(vocab_size=V, cell=cell, hidden_size=H, num_layers=L,
                          dropout=rnn.dropout, one_hot=emb is None, dtype=dtypes[0], **hidden)
    except (TypeError, ValueError) as e:
        raise ValueError(f"from_torch: the module's structure is no rnnkit LanguageModel: "
                         f"{e}") from e
    names = [name for name, _ in parameter_shapes(config)]
    extra = [k for k in state if k not in names]
    if extra:
        raise ValueError(_refuse("the module must hold only the parameters of rnnkit's "
                                 f"LanguageModel ({names})", f"also {extra}",
                                 "Its forward would differ; convert a module without them."))
    for name in names:
        bad = ~torch.isfinite(state[name])
        if bool(bad.any()):
            where = tuple(int(i) for i in bad.nonzero()[0])
            raise ValueError(_refuse(f"every weight must be finite, {name} too",
                                     f"NaN or Inf (first at index {where})",
                                     "Refusing to convert a broken model: fix or retrain it."))
    model = LanguageModel(config, rng=rng)
    model.load_state_dict({k: state[k].detach().cpu().numpy() for k in names}, strict=True)
    model.train(module.training)
    return model
