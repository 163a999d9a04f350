"""Export to ONNX: an ``RNN``, ``GRU``, ``LSTM`` or ``LanguageModel`` as an ONNX graph that
onnxruntime runs with the numbers rnnkit gives.

    model = rnnkit.onnx.to_onnx(layer)             # an onnx.ModelProto
    rnnkit.onnx.export(lm, "lm.onnx")              # checked, then written atomically

Each recurrent layer becomes one ONNX ``RNN``, ``GRU`` or ``LSTM`` node (direction "forward"
or "bidirectional"); stacked layers are chained, each reading the previous one's output.

The mapping from PyTorch's (and rnnkit's) parameters to ONNX's:

* ``W`` (num_directions, G*H, input) is ``weight_ih``, ``R`` (num_directions, G*H, H) is
  ``weight_hh``, with the gate blocks reordered: ONNX's LSTM stacks i, o, f, c where PyTorch
  stacks i, f, g, o; ONNX's GRU stacks z, r, h where PyTorch stacks r, z, n. The GRU node has
  ``linear_before_reset=1``: PyTorch computes n = tanh(W_in x + b_in + r * (W_hn h + b_hn)),
  ONNX's default puts r inside the product (W_hn (r * h)). The RNN node's activation is Tanh
  or Relu, listed once per direction.
* ``B`` (num_directions, 2*G*H) is ``[bias_ih, bias_hh]`` side by side (each reordered like
  the weights). A layer made with ``bias=False`` gets no ``B`` input (ONNX then adds zeros).
* Variable lengths (``lengths=True``) feed ONNX's ``sequence_lens``: as in rnnkit (and
  PyTorch's packed sequences), steps past a sequence's length output zeros, the final state
  is the one at the sequence's own last step, and the reverse direction starts at each
  sequence's own end.
* Every weight is stored as a float32 initializer and every float input and output is
  float32: onnxruntime implements RNN, GRU and LSTM only for float32 (a float64 RNN node has
  no kernel and fails to load; float64 GRU and LSTM nodes load but fail when run, "does not
  support double yet"), so a float64 module is exported with its weights cast to float32 and
  agrees with itself to float32 precision.

A layer's graph: inputs ``input`` (T, B, input_size), or (B, T, input_size) with
``batch_first``; ``h0`` (L*D, B, H); ``c0`` for the LSTM; with ``lengths=True``
``sequence_lens`` (B,) int32. Outputs ``output`` (T, B, D*H) (or (B, T, D*H)), ``hn``
(L*D, B, H), ``cn`` for the LSTM. A language model's graph: inputs ``tokens`` (T, B) int64,
``h0`` (L, B, H), ``c0`` for the LSTM; outputs ``logits`` (T, B, V), ``hn``, ``cn``; the
embedding is a Gather (a one-hot model: ONNX's OneHot), the decoder a MatMul and an Add, and
there is no dropout (inference). T and B are dynamic, so one graph scores a whole text and
also steps one token at a time with the state fed back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from . import __version__
from . import checks as check
from .files import Path_, write_atomic
from .models import LanguageModel
from .recurrent import GRU, LSTM, RNN, RNNBase

if TYPE_CHECKING:
    import onnx

Array = np.ndarray

MIN_OPSET = 14
# PyTorch's gate blocks, in ONNX's order: LSTM i,f,g,o -> i,o,f,c; GRU r,z,n -> z,r,h
_GATE_ORDER = {"LSTM": (0, 3, 1, 2), "GRU": (1, 0, 2), "RNN": (0,)}
_ACCEPTED = "an rnnkit RNN, GRU, LSTM or LanguageModel"


def _onnx() -> Any:
    return check.require("onnx", "onnx", "exporting to ONNX")


def _op_type(m: RNNBase) -> str:
    if isinstance(m, LSTM):
        return "LSTM"
    if isinstance(m, GRU):
        return "GRU"
    if isinstance(m, RNN):
        return "RNN"
    raise TypeError(f"to_onnx exports {_ACCEPTED}; got a {type(m).__name__}")


def _reorder(a: Array, op: str, H: int) -> Array:
    """PyTorch's gate blocks (G*H, ...) of ``a`` in ONNX's order, as float32."""
    blocks = [a[g * H:(g + 1) * H] for g in _GATE_ORDER[op]]
    return np.concatenate(blocks, axis=0).astype(np.float32)


@dataclass
class _Graph:
    """Nodes and initializers being collected, with fresh names on demand."""

    onnx: Any
    nodes: list[Any] = field(default_factory=list)
    inits: list[Any] = field(default_factory=list)
    used: set[str] = field(default_factory=set)

    def name(self, base: str) -> str:
        n, k = base, 0
        while n in self.used:
            k += 1
            n = f"{base}_{k}"
        self.used.add(n)
        return n

    def const(self, base: str, value: Array) -> str:
        n = self.name(base)
        self.inits.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(value), n))
        return n

    def node(self, op: str, inputs: list[str], outputs: list[str], **attrs: Any) -> list[str]:
        self.nodes.append(self.onnx.helper.make_node(op, inputs, outputs,
                                                     name=self.name(f"{op}_node"), **attrs))
        return outputs


def _layers(g: _Graph, m: RNNBase, x: str, h0: str, c0: str | None, lens: str | None,
            y_out: str, hn_out: str, cn_out: str | None) -> None:
    """The stacked layers of ``m``: input ``x`` (T, B, input_size), states ``h0``/``c0``
    (L*D, B, H) and optional ``lens`` (B,) int32 -> ``y_out`` (T, B, D*H), ``hn_out``,
    ``cn_out`` (L*D, B, H). Each name is a graph value."""
    op, L, D, H = _op_type(m), m.num_layers, m.num_directions, m.hidden_size
    attrs: dict[str, Any] = {"hidden_size": H,
                             "direction": "bidirectional" if D == 2 else "forward"}
    if op == "GRU":
        attrs["linear_before_reset"] = 1
    elif op == "RNN":
        attrs["activations"] = ["Relu" if m.nonlinearity == "relu" else "Tanh"] * D
    hs: list[str] = []
    cs: list[str] = []
    inp = x
    for layer in range(L):
        ws = [m.layer_weights(layer, d) for d in range(D)]
        W = g.const(f"W_l{layer}", np.stack([_reorder(w[0], op, H) for w in ws]))
        R = g.const(f"R_l{layer}", np.stack([_reorder(w[1], op, H) for w in ws]))
        B = ""
        if m.bias:
            B = g.const(f"B_l{layer}", np.stack([
                np.concatenate([_reorder(b_ih, op, H), _reorder(b_hh, op, H)])
                for _, _, b_ih, b_hh in ws if b_ih is not None and b_hh is not None]))
        if L == 1:
            h_l, c_l = h0, c0
        else:
            start = g.const(f"start_l{layer}", np.array([layer * D], np.int64))
            end = g.const(f"end_l{layer}", np.array([(layer + 1) * D], np.int64))
            axis0 = g.const(f"axis0_l{layer}", np.array([0], np.int64))
            h_l = g.node("Slice", [h0, start, end, axis0], [g.name(f"h0_l{layer}")])[0]
            c_l = (None if c0 is None else
                   g.node("Slice", [c0, start, end, axis0], [g.name(f"c0_l{layer}")])[0])
        ins = [inp, W, R, B, lens or "", h_l]
        if op == "LSTM":
            assert c_l is not None
            ins.append(c_l)
        last = layer == L - 1
        y = g.name(f"Y_l{layer}")                                     # (T, D, B, H)
        yh = hn_out if L == 1 else g.name(f"Y_h_l{layer}")
        outs = [y, yh]
        if op == "LSTM":
            assert cn_out is not None
            yc = cn_out if L == 1 else g.name(f"Y_c_l{layer}")
            outs.append(yc)
            cs.append(yc)
        hs.append(yh)
        g.node(op, ins, outs, **attrs)
        yt = g.node("Transpose", [y], [g.name(f"Y_tbdh_l{layer}")], perm=[0, 2, 1, 3])[0]
        shape = g.const(f"shape_l{layer}", np.array([0, 0, -1], np.int64))
        inp = g.node("Reshape", [yt, shape],
                     [y_out if last else g.name(f"out_l{layer}")])[0]  # (T, B, D*H)
    if L > 1:
        g.node("Concat", hs, [hn_out], axis=0)
        if cn_out is not None:
            g.node("Concat", cs, [cn_out], axis=0)


def _layer_model(onnx: Any, m: RNNBase, lengths: bool, opset: int) -> Any:
    h = onnx.helper
    f32 = onnx.TensorProto.FLOAT
    g = _Graph(onnx)
    g.used |= {"input", "h0", "c0", "sequence_lens", "output", "hn", "cn"}
    lstm = isinstance(m, LSTM)
    D, H, LD = m.num_directions, m.hidden_size, m.num_layers * m.num_directions
    x_dims: list[Any] = ["B", "T"] if m.batch_first else ["T", "B"]
    inputs = [h.make_tensor_value_info("input", f32, [*x_dims, m.input_size]),
              h.make_tensor_value_info("h0", f32, [LD, "B", H])]
    outputs = [h.make_tensor_value_info("output", f32, [*x_dims, D * H]),
               h.make_tensor_value_info("hn", f32, [LD, "B", H])]
    if lstm:
        inputs.append(h.make_tensor_value_info("c0", f32, [LD, "B", H]))
        outputs.append(h.make_tensor_value_info("cn", f32, [LD, "B", H]))
    if lengths:
        inputs.append(h.make_tensor_value_info("sequence_lens", onnx.TensorProto.INT32, ["B"]))
    x, y = "input", "output"
    if m.batch_first:
        x = g.node("Transpose", ["input"], [g.name("input_tbd")], perm=[1, 0, 2])[0]
        y = g.name("output_tbd")
    _layers(g, m, x, "h0", "c0" if lstm else None, "sequence_lens" if lengths else None,
            y, "hn", "cn" if lstm else None)
    if m.batch_first:
        g.node("Transpose", [y], ["output"], perm=[1, 0, 2])
    doc = (f"rnnkit {type(m).__name__}: {m!r}, exported with its weights as float32. "
           f"Inputs: input {'(B, T, D)' if m.batch_first else '(T, B, D)'}, h0 (L*K, B, H)"
           + (", c0" if lstm else "") + (", sequence_lens (B,) int32" if lengths else "")
           + ". Outputs: output, hn" + (", cn" if lstm else "") + ".")
    return _finish(onnx, g, inputs, outputs, type(m).__name__, doc, opset)


def _lm_model(onnx: Any, lm: LanguageModel, opset: int) -> Any:
    h = onnx.helper
    f32 = onnx.TensorProto.FLOAT
    cfg = lm.config
    rnn = lm.rnn
    lstm = isinstance(rnn, LSTM)
    V, H, L = cfg.vocab_size, rnn.hidden_size, rnn.num_layers
    g = _Graph(onnx)
    g.used |= {"tokens", "h0", "c0", "logits", "hn", "cn"}
    inputs = [h.make_tensor_value_info("tokens", onnx.TensorProto.INT64, ["T", "B"]),
              h.make_tensor_value_info("h0", f32, [L, "B", H])]
    outputs = [h.make_tensor_value_info("logits", f32, ["T", "B", V]),
               h.make_tensor_value_info("hn", f32, [L, "B", H])]
    if lstm:
        inputs.append(h.make_tensor_value_info("c0", f32, [L, "B", H]))
        outputs.append(h.make_tensor_value_info("cn", f32, [L, "B", H]))
    if cfg.one_hot:
        depth = g.const("depth", np.array(V, np.int64))
        values = g.const("onehot_values", np.array([0.0, 1.0], np.float32))
        x = g.node("OneHot", ["tokens", depth, values], [g.name("onehot")], axis=-1)[0]
    else:
        emb = g.const("embedding.weight", lm.embedding.weight.astype(np.float32))
        x = g.node("Gather", [emb, "tokens"], [g.name("embedded")], axis=0)[0]
    y = g.name("rnn_output")                                           # (T, B, H)
    _layers(g, rnn, x, "h0", "c0" if lstm else None, None, y, "hn", "cn" if lstm else None)
    wT = g.const("decoder.weight_T", np.ascontiguousarray(lm.decoder.weight.T, np.float32))
    bias = lm.decoder.bias
    if bias is None:
        g.node("MatMul", [y, wT], ["logits"])
    else:
        prod = g.node("MatMul", [y, wT], [g.name("decoded")])[0]
        g.node("Add", [prod, g.const("decoder.bias", bias.astype(np.float32))], ["logits"])
    doc = (f"rnnkit LanguageModel {cfg}, exported with its weights as float32. Inputs: tokens "
           "(T, B) int64, h0 (L, B, H)" + (", c0" if lstm else "") + ". Outputs: logits "
           "(T, B, V), hn" + (", cn" if lstm else "") + ". No dropout (inference).")
    return _finish(onnx, g, inputs, outputs, "LanguageModel", doc, opset)


def _finish(onnx: Any, g: _Graph, inputs: list[Any], outputs: list[Any], name: str, doc: str,
            opset: int) -> Any:
    h = onnx.helper
    graph = h.make_graph(g.nodes, f"rnnkit_{name}", inputs, outputs, initializer=g.inits,
                         doc_string=doc)
    opsets = [h.make_opsetid("", opset)]
    # the oldest IR version that carries this opset: what every onnxruntime release accepts
    model = h.make_model(graph, opset_imports=opsets, producer_name="rnnkit",
                         producer_version=__version__, doc_string=doc,
                         ir_version=h.find_min_ir_version_for(opsets))
    return model


def to_onnx(module: Any, *, lengths: bool = False, opset: int = 17) -> onnx.ModelProto:
    """``module`` (an rnnkit ``RNN``, ``GRU``, ``LSTM`` or ``LanguageModel``) as an ONNX model.

    Any number of layers, uni- or bidirectional, with or without bias, ``batch_first`` or
    not. ``lengths=True`` adds the input ``sequence_lens`` (B,) int32 to a layer's graph (not
    a language model's: ValueError). ``opset``: the ONNX operator set, 14 up to the installed
    onnx's newest. Weights are stored as float32 (onnxruntime runs these operators only in
    float32); see the module docstring for the inputs, outputs and the gate mapping.
    """
    lengths = check.check_scalar(lengths, "lengths", bool)
    if not isinstance(module, (LanguageModel, RNN, GRU, LSTM)):
        raise TypeError(f"to_onnx exports {_ACCEPTED}; got a {type(module).__name__}"
                        + (" (a single-step cell: export the layer instead)"
                           if type(module).__name__.endswith("Cell") else ""))
    onnx = _onnx()
    newest = int(onnx.defs.onnx_opset_version())
    opset = check.check_scalar(opset, "opset", int)
    if not MIN_OPSET <= opset <= newest:
        raise ValueError(f"opset must lie in [{MIN_OPSET}, {newest}] (the installed onnx "
                         f"{onnx.__version__} knows up to {newest}); got {opset}")
    if isinstance(module, LanguageModel):
        if lengths:
            raise ValueError("lengths=True is for a single RNN, GRU or LSTM layer; a "
                             "LanguageModel's graph takes whole token sequences (T, B)")
        if module.rnn.num_directions != 1:
            raise ValueError("a LanguageModel with a bidirectional recurrent layer cannot be "
                             "exported")
        return _lm_model(onnx, module, opset)
    return _layer_model(onnx, module, lengths, opset)


def export(module: Any, path: Path_, *, lengths: bool = False, opset: int = 17
           ) -> onnx.ModelProto:
    """:func:`to_onnx`, checked by ``onnx.checker.check_model(full_check=True)``, then written
    to ``path`` atomically; returns the model."""
    model = to_onnx(module, lengths=lengths, opset=opset)
    _onnx().checker.check_model(model, full_check=True)
    write_atomic(path, model.SerializeToString())
    return model
