"""Recurrent layers with PyTorch's semantics and names: ``RNN``, ``GRU``, ``LSTM``, and the
single-step cells ``RNNCell``, ``GRUCell``, ``LSTMCell``.

Shapes: T time steps, B batch, D input features, H hidden units, L layers, K directions (1 or 2).

    y, hn = m(x, hx=None, lengths=None)                  # inference
    y, hn, cache = m.forward(x, hx=None, lengths=None)   # training: the cache holds everything
    dx, dhx = m.backward(dy, dhn, cache)                 # backward ADDS into m.grads

    x      (T, B, D)          time-major; (T, D) for one unbatched sequence; or
                              OneHot(ids (T, B), D): one-hot vectors given by their ids
    hx     (L*K, B, H)        h0, or (h0, c0) for the LSTM; None means zeros
    y      (T, B, K*H)        the last layer's h_t, forward and reverse halves side by side
    hn     (L*K, B, H)        each layer's and direction's final state (or (h_n, c_n))
    lengths (B,)              optional, any order: steps past a sequence's length output zeros
                              and keep its state, as PyTorch's packed sequences do

Parameters, per layer l and direction (suffix ``_reverse`` for the backward direction):
``weight_ih_l{l}`` (G*H, D or K*H), ``weight_hh_l{l}`` (G*H, H), ``bias_ih_l{l}``, ``bias_hh_l{l}``
(G*H,), with G = 1 (RNN), 3 (GRU: r, z, n) or 4 (LSTM: i, f, g, o), all initialised
U(-1/sqrt(H), 1/sqrt(H)) from the module's ``numpy.random.Generator``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import checks as check
from .functional import CellMath, GRUMath, LSTMMath, RNNMath, valid_mask
from .layers import dropout_mask
from .module import Module, check_rng, eval_mode
from .scan import DirectionCache, OneHot, direction_backward, direction_forward

Array = np.ndarray
State = Array | tuple[Array, Array]
Weights = tuple[Array, Array, Array | None, Array | None]     # (w_ih, w_hh, b_ih, b_hh)


@dataclass
class LayerCache:
    directions: list[DirectionCache]
    mask: Array | None            # dropout mask applied to this layer's output, (T, B, K*H)


@dataclass
class RecurrentCache:
    """Everything ``backward`` needs; returned by ``forward``, never stored on the module."""

    owner: int                    # id() of the module that made it
    T: int
    B: int
    perm: Array | None            # batch order sorted by length (longest first), or None
    batch_sizes: Array | None     # (T,) rows still running at each step, or None
    valid: Array | None           # (T, B) True where t < length (sorted order), or None
    unbatched: bool
    layers: list[LayerCache] = field(default_factory=list)


def _unsort(a: Array, perm: Array) -> Array:
    """Undo the length sort along the batch axis (axis 1)."""
    out = np.empty_like(a)
    out[:, perm] = a
    return out


def _suffix(layer: int, direction: int) -> str:
    """PyTorch's parameter-name suffix: ``_l0``, ``_l1_reverse``, ..."""
    return f"_l{layer}" + ("_reverse" if direction else "")


def _register(m: RNNBase | _CellBase, sfx: str, d_in: int) -> None:
    """Make one direction's ``weight_ih{sfx}`` (G*H, d_in), ``weight_hh{sfx}`` (G*H, H) and,
    with ``m.bias``, ``bias_ih{sfx}``, ``bias_hh{sfx}`` (G*H,), all U(-1/sqrt(H), 1/sqrt(H))."""
    G, H = m.math.gates, m.hidden_size
    bound = 1.0 / np.sqrt(H)
    shapes: dict[str, tuple[int, ...]] = {f"weight_ih{sfx}": (G * H, d_in),
                                          f"weight_hh{sfx}": (G * H, H)}
    if m.bias:
        shapes |= {f"bias_ih{sfx}": (G * H,), f"bias_hh{sfx}": (G * H,)}
    for name, shp in shapes.items():
        m.register_parameter(name, m.rng.uniform(-bound, bound, size=shp).astype(m.dtype))


def _pick(table: dict[str, Array], sfx: str = "") -> Weights:
    """``(w_ih, w_hh, b_ih, b_hh)`` of one direction from ``table`` (the parameters or the
    gradients); the biases are None for a module without ``bias``."""
    return (table[f"weight_ih{sfx}"], table[f"weight_hh{sfx}"], table.get(f"bias_ih{sfx}"),
            table.get(f"bias_hh{sfx}"))


def _split_state(m: RNNBase | _CellBase, hx: Any, arg: str, names: tuple[str, str],
                 shape: tuple[int, ...], unbatched: bool) -> tuple[Array, Array | None]:
    """``hx`` (or a gradient such as ``dhn``): None, an array, or for the LSTM and LSTMCell a
    pair of them. Each array is checked by ``m._check_state``; each one missing (None) is zeros
    of ``shape``, (L*K, B, H) or (B, H). Returns ``(h, c)``, c None without a cell state."""
    B = shape[-2]
    h = c = None
    if hx is not None and m.math.has_cell:
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            got = (f"a {type(hx).__name__} of length {len(hx)}"
                   if isinstance(hx, (tuple, list)) else type(hx).__name__)
            raise TypeError(f"{arg} of an {type(m).__name__} must be a pair ({names[0]}, "
                            f"{names[1]}) or None; got {got}")
        h = None if hx[0] is None else m._check_state(names[0], hx[0], B, unbatched)
        c = None if hx[1] is None else m._check_state(names[1], hx[1], B, unbatched)
    elif hx is not None:
        if isinstance(hx, (tuple, list)):
            raise TypeError(f"{arg} of a {type(m).__name__} is one array {names[0]}; got a "
                            f"{type(hx).__name__} (pairs (h, c) are for the LSTM)")
        h = m._check_state(names[0], hx, B, unbatched)
    if h is None:
        h = np.zeros(shape, m.dtype)
    if c is None and m.math.has_cell:
        c = np.zeros(shape, m.dtype)
    return h, c


class RNNBase(Module):
    """Shared by RNN, GRU and LSTM: parameters, input checks, layers, directions, lengths."""

    mode = "RNN_TANH"
    math_class: type[CellMath] = RNNMath     # the per-step math; its ``gates`` is G

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, dropout: float = 0.0,
                 bidirectional: bool = False, dtype: Any = np.float32,
                 rng: np.random.Generator | int | None = None, *,
                 batch_first: bool = False) -> None:
        super().__init__(dtype)
        self.input_size = check.positive_int("input_size", input_size)
        self.hidden_size = check.positive_int("hidden_size", hidden_size)
        self.num_layers = check.positive_int("num_layers", num_layers)
        self.bias: bool = check.check_scalar(bias, "bias", bool)
        self.bidirectional: bool = check.check_scalar(bidirectional, "bidirectional", bool)
        self.batch_first: bool = check.check_scalar(batch_first, "batch_first", bool)
        self.dropout = check.probability("dropout", dropout)
        self.rng = check_rng(rng)
        self.math: CellMath = self._make_math(nonlinearity)
        self.nonlinearity = nonlinearity
        self.num_directions = 2 if self.bidirectional else 1
        for layer in range(self.num_layers):
            for direction in range(self.num_directions):
                d_in = self.input_size if layer == 0 else self.hidden_size * self.num_directions
                _register(self, _suffix(layer, direction), d_in)

    def _make_math(self, nonlinearity: str) -> CellMath:
        return self.math_class()

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        if not self.bias:
            s += ", bias=False"
        return s + f", dtype={self.dtype}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    def layer_weights(self, layer: int, direction: int = 0) -> Weights:
        """``(weight_ih, weight_hh, bias_ih, bias_hh)`` of one layer and direction (1: the
        reverse one); the biases are None without ``bias``. The live arrays, not copies."""
        return _pick(self._params, _suffix(layer, direction))

    # ---- the door -----------------------------------------------------------------------------
    def _check_onehot(self, x: OneHot) -> tuple[OneHot, bool]:
        D = self.input_size
        if x.size != D:
            raise ValueError(f"OneHot size must equal input_size={D}; got {x.size}")
        ids = check.ids("OneHot ids", x.ids, D)
        if ids.ndim != 2 or 0 in ids.shape:
            want = "(B, T)" if self.batch_first else "(T, B)"
            raise ValueError(f"OneHot ids must have shape {want} with T, B >= 1; got "
                             f"{ids.shape}")
        return OneHot(ids.T if self.batch_first else ids, D), False

    def _check_x(self, x: Any) -> tuple[Array | OneHot, bool]:
        if isinstance(x, OneHot):
            return self._check_onehot(x)
        D = self.input_size
        x_words = f"(B, T, {D})" if self.batch_first else f"(T, B, {D})"
        x = check.array("x", x, self.dtype, x_words)
        given = x.shape
        if x.ndim == 2:
            if x.shape[1] != D:
                raise ValueError(f"x must have shape {x_words}, or (T, {D}) for one unbatched "
                                 f"sequence; got {x.shape}. The last axis holds the {D} input "
                                 "features.")
            x = x[:, None, :]
            unbatched = True
        elif x.ndim == 3:
            if x.shape[2] != D:
                raise ValueError(f"x must have shape {x_words}; got {x.shape}. The last axis "
                                 f"holds the input features: input_size={D}, got "
                                 f"{x.shape[2]}.")
            if self.batch_first:
                x = x.transpose(1, 0, 2)
            unbatched = False
        else:
            hint = ""
            if x.ndim == 1 and D == 1:
                hint = " For one sequence of T scalar inputs use x[:, None] (shape (T, 1))."
            elif x.ndim == 1 and x.shape[0] == D:
                hint = f" For one step of one sequence use x[None, :] (shape (1, {D}))."
            raise ValueError(f"x must have shape {x_words} (or (T, {D}) for one unbatched "
                             f"sequence); got {x.ndim}-D shape {x.shape}.{hint}")
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"x must have at least one time step and one sequence; got shape "
                             f"{given}")
        return x, unbatched

    def _check_state(self, name: str, h: Any, B: int, unbatched: bool) -> Array:
        LK, H = self.num_layers * self.num_directions, self.hidden_size
        want = (LK, H) if unbatched else (LK, B, H)
        words = ("(num_layers * num_directions, H)" if unbatched
                 else "(num_layers * num_directions, B, H)")
        h = check.array(name, h, self.dtype, words)
        check.shape(name, h, want, words,
                    f"x is one unbatched sequence (T, D), so {name} has no batch axis."
                    if unbatched else f"num_layers={self.num_layers}, num_directions="
                    f"{self.num_directions}, B={B}, hidden_size={H}.")
        check.finite(name, h)
        return h[:, None, :] if unbatched else h

    # ---- forward ------------------------------------------------------------------------------
    def __call__(self, x: Array | OneHot, hx: State | None = None, lengths: Any = None
                 ) -> tuple[Array, State]:
        """Inference: ``y, hn = m(x, hx, lengths)``. Keeps no per-step activations."""
        y, hn, _ = self._forward(x, hx, lengths, keep=False)
        return y, hn

    def forward(self, x: Array | OneHot, hx: State | None = None, lengths: Any = None
                ) -> tuple[Array, State, RecurrentCache]:
        """Training: ``y, hn, cache = m.forward(x, hx, lengths)``; pass cache to backward."""
        y, hn, cache = self._forward(x, hx, lengths, keep=True)
        assert cache is not None
        return y, hn, cache

    def states(self, x: Array | OneHot, hx: State | None = None, lengths: Any = None
               ) -> tuple[Array, Array | None, State]:
        """Every layer's state at every step: ``hs, cs, hn = m.states(x, hx, lengths)``.

        ``hs`` (T, L*K, B, H) holds h_t of each layer and direction, indexed like ``h_n``
        (layer * K + direction), time-major even with ``batch_first`` ((T, L*K, H) for one
        unbatched sequence); ``cs`` the LSTM's c_t the same way (None for RNN and GRU);
        ``hn`` is what ``m(x, hx, lengths)`` returns as the final state. The reverse direction's
        h_t is its state after reading step t (it reads T-1 down to 0). Padded steps
        (t >= length) hold zeros, as the outputs do. Runs in inference mode (no dropout, no
        cache), whatever the module's mode; for watching a network's memory, e.g. which units
        count characters (``rnnkit lab neurons``). ``hs[:, -K:]`` are the output ``y``'s halves.
        """
        record: list[tuple[Array, Array | None]] = []
        with eval_mode(self):
            _, hn, _ = self._forward(x, hx, lengths, keep=False, record=record)
        hs = np.stack([h for h, _ in record], axis=1)
        c_list = [c for _, c in record if c is not None]
        cs = np.stack(c_list, axis=1) if c_list else None
        return hs, cs, hn

    def _forward(self, x: Any, hx: Any, lengths: Any, keep: bool,
                 record: list[tuple[Array, Array | None]] | None = None
                 ) -> tuple[Array, State, RecurrentCache | None]:
        x_given = x
        x, unbatched = self._check_x(x)
        T, B, _ = x.shape
        if unbatched and lengths is not None:
            raise ValueError("lengths needs a batch: x of shape (T, D) is one sequence of length "
                             "T; use x[:, None, :] with lengths of shape (1,)")
        lens = check.lengths(lengths, T, B)
        # NaN/Inf only matter where t < length; the index in the message points into x as given
        if not isinstance(x, OneHot):
            check.finite("x", x_given,
                         None if lens is None else self._valid_as_given(valid_mask(lens, T)))
        L, K, H = self.num_layers, self.num_directions, self.hidden_size
        h0, c0 = _split_state(self, hx, "hx", ("h0", "c0"), (L * K, B, H), unbatched)

        perm = batch_sizes = valid = None
        if lens is not None and lens.min() < T:
            # sort longest first: the rows still running at step t are then a prefix
            perm = np.argsort(-lens, kind="stable")
            valid = valid_mask(lens[perm], T)                        # (T, B)
            batch_sizes = valid.sum(axis=1)                          # (T,)
            if isinstance(x, OneHot):
                ids = x.ids[:, perm]                                 # a copy
                ids[~valid] = 0                                      # padding has no effect
                x = OneHot(ids, x.size)
            else:
                x = x[:, perm]                                       # a copy
                x[~valid] = 0                                        # padding has no effect
            h0 = h0[:, perm]
            c0 = c0[:, perm] if c0 is not None else None

        cache = RecurrentCache(id(self), T, B, perm, batch_sizes, valid, unbatched)
        h_n = np.empty((L * K, B, H), self.dtype)
        c_n = np.empty((L * K, B, H), self.dtype) if c0 is not None else None
        inp: Array | OneHot = x
        for layer in range(L):
            alloc = np.zeros if valid is not None else np.empty
            y = alloc((T, B, K * H), self.dtype)
            dcaches = []
            for d in range(K):
                idx = layer * K + d
                c_out = None
                if record is not None and c0 is not None:
                    c_out = np.zeros((T, B, H), self.dtype)
                hN, cN, dcache = direction_forward(
                    self.math, inp, h0[idx], None if c0 is None else c0[idx],
                    *self.layer_weights(layer, d), out=y[:, :, d * H:(d + 1) * H],
                    batch_sizes=batch_sizes, reverse=d == 1, keep=keep, c_out=c_out)
                if record is not None:
                    record.append((y[:, :, d * H:(d + 1) * H], c_out))
                h_n[idx] = hN
                if c_n is not None:
                    c_n[idx] = cN
                if dcache is not None:
                    dcaches.append(dcache)
            mask = None
            if self.training and self.dropout > 0 and layer < L - 1:
                # inverted dropout between layers, drawn in the caller's batch order
                mask = dropout_mask(self.rng, (T, B, K * H), self.dropout, self.dtype)
                if perm is not None:
                    mask = mask[:, perm]
                inp = y * mask
            else:
                inp = y
            cache.layers.append(LayerCache(dcaches, mask))
        assert isinstance(inp, np.ndarray)           # the last layer's output
        y_out, hn_out, cn_out = inp, h_n, c_n
        if perm is not None:
            y_out, hn_out = _unsort(inp, perm), _unsort(h_n, perm)
            cn_out = None if c_n is None else _unsort(c_n, perm)
        if record is not None:                      # states(): the caller's batch order
            if perm is not None:
                record[:] = [(_unsort(h, perm), None if c is None else _unsort(c, perm))
                             for h, c in record]
            if unbatched:
                record[:] = [(h[:, 0], None if c is None else c[:, 0]) for h, c in record]
        y_out, hn_out, cn_out = self._to_caller(y_out, hn_out, cn_out, unbatched)
        hn: State = (hn_out, cn_out) if cn_out is not None else hn_out
        return y_out, hn, cache if keep else None

    def _valid_as_given(self, valid: Array) -> Array:
        """(T, B) mask in the caller's batch order -> broadcastable to x or y as given."""
        return (valid.T if self.batch_first else valid)[:, :, None]

    def _to_caller(self, y: Array, h: Array, c: Array | None, unbatched: bool
                   ) -> tuple[Array, Array, Array | None]:
        if unbatched:
            return y[:, 0], h[:, 0], None if c is None else c[:, 0]
        if self.batch_first:
            y = y.transpose(1, 0, 2)
        return y, h, c

    # ---- backward -----------------------------------------------------------------------------
    def backward(self, dy: Array | None, dhn: State | None, cache: RecurrentCache
                 ) -> tuple[Array | None, State]:
        """BPTT. ``dy`` is dL/dy (shape of y, or None for zero), ``dhn`` dL/dh_n (or the pair
        (dL/dh_n, dL/dc_n) for the LSTM; None for zero). Adds every parameter's gradient
        into ``m.grads`` and returns ``(dx, dhx)`` with dhx = dh0, or (dh0, dc0); dx is None
        when the input was a ``OneHot``."""
        check.cache(cache, RecurrentCache, self,
                    f"the third value returned by {type(self).__name__}.forward(...)", "module")
        T, B, unbatched = cache.T, cache.B, cache.unbatched
        L, K, H = self.num_layers, self.num_directions, self.hidden_size
        KH = K * H
        if dy is None:
            dy_s = None
        else:
            words = (f"(T, {KH})" if unbatched else
                     (f"(B, T, {KH})" if self.batch_first else f"(T, B, {KH})"))
            dy = check.array("dy", dy, self.dtype, words)
            want = ((T, KH) if unbatched else (B, T, KH) if self.batch_first else (T, B, KH))
            check.shape("dy", dy, want, words, "dy is dL/dy: it has the shape of y.")
            valid = (None if cache.perm is None or cache.valid is None
                     else _unsort(cache.valid, cache.perm))       # the caller's batch order
            check.finite("dy", dy, None if valid is None else self._valid_as_given(valid))
            dy_s = dy[:, None] if unbatched else dy.transpose(1, 0, 2) if self.batch_first \
                else dy
            if cache.perm is not None and cache.valid is not None:
                dy_s = dy_s[:, cache.perm]                        # a copy
                dy_s[~cache.valid] = 0                            # padding has no effect
        dh_n, dc_n = _split_state(self, dhn, "dhn", ("dh_n", "dc_n"), (L * K, B, H), unbatched)
        if cache.perm is not None:
            dh_n = dh_n[:, cache.perm]
            dc_n = None if dc_n is None else dc_n[:, cache.perm]

        dh0 = np.empty((L * K, B, H), self.dtype)
        dc0 = np.empty((L * K, B, H), self.dtype) if self.math.has_cell else None
        dout = dy_s
        dx_layer: Array | None = None
        for layer in reversed(range(L)):
            lc = cache.layers[layer]
            dx_layer = None
            for d in range(K):
                idx = layer * K + d
                dx, dh0_d, dc0_d = direction_backward(
                    self.math, lc.directions[d],
                    None if dout is None else dout[:, :, d * H:(d + 1) * H],
                    dh_n[idx], None if dc_n is None else dc_n[idx],
                    _pick(self._grads, _suffix(layer, d)), reverse=d == 1)
                dh0[idx] = dh0_d
                if dc0 is not None:
                    dc0[idx] = dc0_d
                if dx is not None:
                    dx_layer = dx if dx_layer is None else dx_layer + dx
            if layer > 0:
                assert dx_layer is not None
                prev_mask = cache.layers[layer - 1].mask
                dout = dx_layer if prev_mask is None else dx_layer * prev_mask
        if cache.perm is not None:
            dh0 = _unsort(dh0, cache.perm)
            dc0 = None if dc0 is None else _unsort(dc0, cache.perm)
            dx_layer = None if dx_layer is None else _unsort(dx_layer, cache.perm)
        if dx_layer is None:                         # OneHot input (never unbatched): no dx
            return None, ((dh0, dc0) if dc0 is not None else dh0)
        dx_out, dh0, dc0 = self._to_caller(dx_layer, dh0, dc0, unbatched)
        return dx_out, ((dh0, dc0) if dc0 is not None else dh0)


class RNN(RNNBase):
    """Elman RNN: ``h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)`` (or relu).

    Parameters
    ----------
    input_size, hidden_size : int
        D and H.
    num_layers : int
        Stacked layers; layer l > 0 reads layer l-1's output (both directions).
    nonlinearity : {"tanh", "relu"}
    bias : bool
        With False there are no ``bias_*`` parameters.
    dropout : float
        Dropout on the outputs of every layer but the last, in training mode only.
    bidirectional : bool
    dtype : np.float32 or np.float64
    rng : numpy.random.Generator, int seed or None
        Source of the initial weights and of dropout masks.
    batch_first : bool, keyword-only
        x and y are (B, T, .) instead of (T, B, .); states stay (L*K, B, H), as in PyTorch.
    """

    def _make_math(self, nonlinearity: str) -> CellMath:
        math = RNNMath(nonlinearity)                 # raises ValueError for another name
        self.mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"
        return math

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s + (", nonlinearity='relu'" if self.nonlinearity == "relu" else "")


class _Gated(RNNBase):
    """GRU and LSTM: the arguments of :class:`RNN` without ``nonlinearity``."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, dropout: float = 0.0, bidirectional: bool = False,
                 dtype: Any = np.float32, rng: np.random.Generator | int | None = None, *,
                 batch_first: bool = False) -> None:
        super().__init__(input_size, hidden_size, num_layers, "tanh", bias, dropout,
                         bidirectional, dtype, rng, batch_first=batch_first)


class GRU(_Gated):
    """GRU, PyTorch's formulation (gate order r, z, n; ``b_hn`` inside the reset product)::

        r_t = sigmoid(x_t W_ir^T + b_ir + h_{t-1} W_hr^T + b_hr)
        z_t = sigmoid(x_t W_iz^T + b_iz + h_{t-1} W_hz^T + b_hz)
        n_t = tanh(x_t W_in^T + b_in + r_t * (h_{t-1} W_hn^T + b_hn))
        h_t = (1 - z_t) * n_t + z_t * h_{t-1}

    Same arguments as :class:`RNN`, without ``nonlinearity``.
    """

    mode = "GRU"
    math_class = GRUMath


class LSTM(_Gated):
    """LSTM, PyTorch's formulation (gate order i, f, g, o; two biases per gate block)::

        i_t = sigmoid(x_t W_ii^T + b_ii + h_{t-1} W_hi^T + b_hi)
        f_t = sigmoid(x_t W_if^T + b_if + h_{t-1} W_hf^T + b_hf)
        g_t = tanh(x_t W_ig^T + b_ig + h_{t-1} W_hg^T + b_hg)
        o_t = sigmoid(x_t W_io^T + b_io + h_{t-1} W_ho^T + b_ho)
        c_t = f_t * c_{t-1} + i_t * g_t
        h_t = o_t * tanh(c_t)

    ``hx`` and ``hn`` are pairs ``(h, c)``. Same arguments as :class:`GRU`.
    """

    mode = "LSTM"
    math_class = LSTMMath


# ------------------------------------------------------------------------------------------------
# single-step cells: one time step of the same math, through the same loop with T = 1
# ------------------------------------------------------------------------------------------------


@dataclass
class CellCache:
    owner: int
    direction: DirectionCache
    unbatched: bool


class _CellBase(Module):
    math: CellMath                # the per-step math; stateless, so all GRUCells share one

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 dtype: Any = np.float32, rng: np.random.Generator | int | None = None) -> None:
        super().__init__(dtype)
        self.input_size = check.positive_int("input_size", input_size)
        self.hidden_size = check.positive_int("hidden_size", hidden_size)
        self.bias: bool = check.check_scalar(bias, "bias", bool)
        self.rng = check_rng(rng)
        _register(self, "", self.input_size)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.input_size}, {self.hidden_size}"
                f"{'' if self.bias else ', bias=False'}, dtype={self.dtype})")

    def _check_state(self, name: str, h: Any, B: int, unbatched: bool) -> Array:
        H = self.hidden_size
        want = (H,) if unbatched else (B, H)
        words = f"({H},)" if unbatched else f"(B, {H})"
        h = check.array(name, h, self.dtype, words)
        check.shape(name, h, want, words)
        check.finite(name, h)
        return h[None] if unbatched else h

    def __call__(self, x: Array, hx: State | None = None) -> State:
        """``h' = cell(x, h)`` (``(h', c') = cell(x, (h, c))`` for the LSTMCell)."""
        return self._forward(x, hx, keep=False)[0]

    def forward(self, x: Array, hx: State | None = None) -> tuple[State, CellCache]:
        out, cache = self._forward(x, hx, keep=True)
        assert cache is not None
        return out, cache

    def _forward(self, x: Any, hx: Any, keep: bool) -> tuple[State, CellCache | None]:
        D = self.input_size
        x = check.array("x", x, self.dtype, f"(B, {D})")
        if x.ndim not in (1, 2) or x.shape[-1] != D:
            raise ValueError(f"x must have shape (B, {D}), or ({D},) for one unbatched "
                             f"sample; got {x.shape}")
        unbatched = x.ndim == 1
        x2 = x[None] if unbatched else x
        B = x2.shape[0]
        if B == 0:
            raise ValueError("x has an empty batch (B = 0)")
        check.finite("x", x)
        h, c = _split_state(self, hx, "hx", ("h", "c"), (B, self.hidden_size), unbatched)
        out = np.empty((1, B, self.hidden_size), self.dtype)
        h1, c1, dcache = direction_forward(self.math, x2[None], h, c, *_pick(self._params), out=out,
                                           keep=keep)
        if unbatched:
            h1, c1 = h1[0], (None if c1 is None else c1[0])
        state: State = (h1, c1) if c1 is not None else h1
        return state, (CellCache(id(self), dcache, unbatched) if dcache is not None else None)

    def backward(self, dhx_next: State | None, cache: CellCache) -> tuple[Array, State]:
        """``dx, dh = cell.backward(dh', cache)`` (``dx, (dh, dc) = cell.backward((dh', dc'),
        cache)`` for the LSTMCell). Adds into ``cell.grads``."""
        check.cache(cache, CellCache, self, "the second value returned by this cell's forward()",
                    "cell")
        B = cache.direction.x.shape[1]
        dh, dc = _split_state(self, dhx_next, "dhx", ("dh", "dc"), (B, self.hidden_size),
                              cache.unbatched)
        dx, dh0, dc0 = direction_backward(self.math, cache.direction, None, dh, dc,
                                          _pick(self._grads))
        assert dx is not None
        dx = dx[0]
        if cache.unbatched:
            dx, dh0, dc0 = dx[0], dh0[0], (None if dc0 is None else dc0[0])
        return dx, ((dh0, dc0) if dc0 is not None else dh0)


class RNNCell(_CellBase):
    """One step of :class:`RNN`: ``h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh)``."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 nonlinearity: str = "tanh", dtype: Any = np.float32,
                 rng: np.random.Generator | int | None = None) -> None:
        self.math = RNNMath(nonlinearity)
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, bias, dtype, rng)


class GRUCell(_CellBase):
    """One step of :class:`GRU` (gate order r, z, n)."""

    math = GRUMath()


class LSTMCell(_CellBase):
    """One step of :class:`LSTM` (gate order i, f, g, o); state is the pair (h, c)."""

    math = LSTMMath()


# the one table of cell names: every module that picks a layer or a cell by name imports it
LAYERS: dict[str, type[RNNBase]] = {"rnn": RNN, "gru": GRU, "lstm": LSTM}
CELLS = {"rnn": RNNCell, "gru": GRUCell, "lstm": LSTMCell}
