"""The chapter's NumPy RNN, exactly, in the chapter's column layout; then GRU and LSTM alike.

This module is the book's code (section 4.1.4.3: ``rnn_cell_forward``, ``rnn_forward``,
``rnn_cell_backward``, ``rnn_backward``), cleaned up (any batch size m, no debug print, the
dtype of the inputs kept) and completed with what the chapter leaves implicit: the softmax, the
cross-entropy loss of section 4.1.2.6 and its gradient, and GRU and LSTM cells in the same style.
A learner can put the book and this file side by side.

Layout: one column per example. Letters used in every shape:

    n_x  input features        n_s  hidden units        n_y  output classes (vocabulary)
    m    batch (the chapter has m = 1)                  T    time steps

    x      (n_x, m, T)   x[:, :, t] is the input at step t
    s      (n_s, m, T)   hidden states s_1 ... s_T;  s0 (n_s, m) is the initial state
    y      (n_y, m, T)   softmax outputs ŷ_1 ... ŷ_T
    caches list of T per-step caches; every cache starts (s_next, s_prev, x_t, parameters, ...)

The cells (``U*`` multiplies the input x, ``W*`` the state s; biases are columns (n_s, 1)):

    RNN   s' = tanh(U x + W s + ba)
    GRU   r  = sigmoid(Ur x + Wr s + br)
          z  = sigmoid(Uz x + Wz s + bz)
          n  = tanh(Un x + bn_x + r * (Wn s + bn_s))
          s' = (1 - z) * n + z * s
    LSTM  i  = sigmoid(Ui x + Wi s + bi)       f = sigmoid(Uf x + Wf s + bf)
          g  = tanh(Ug x + Wg s + bg)          o = sigmoid(Uo x + Wo s + bo)
          c' = f * c + i * g
          s' = o * tanh(c')
    all   ŷ  = softmax(V s' + by)              V (n_y, n_s), by (n_y, 1)

Every forward computes the output layer ŷ, as the chapter's RNN does, so every parameter dict
holds ``V`` and ``by``. The backward functions take ``ds``, the gradient of the loss with respect
to each step's state coming from above (the output layer's share, see
``cross_entropy_backward``), and return the gradients of the recurrent parameters only; ``dV``
and ``dby`` come from ``cross_entropy_backward``.

Mapping onto the main API (``rnnkit.RNN/GRU/LSTM``, one layer, one direction; ``to_rnnkit`` and
``from_rnnkit`` do it). Weights map without a transpose; the data is transposed, the column
layout ``x (n_x, m, T)`` being ``x.transpose(2, 1, 0)`` of rnnkit's time-major ``(T, B, D)``:

    RNN   weight_ih_l0 = U                      weight_hh_l0 = W
          bias_ih_l0   = ba                     bias_hh_l0   = 0        (back: ba = b_ih + b_hh)
    GRU   weight_ih_l0 = vstack([Ur, Uz, Un])   weight_hh_l0 = vstack([Wr, Wz, Wn])
          bias_ih_l0   = [br, bz, bn_x]         bias_hh_l0   = [0, 0, bn_s]
          (back: br = b_ir + b_hr, bz = b_iz + b_hz; b_hn stays apart: it is multiplied by r)
    LSTM  weight_ih_l0 = vstack([Ui, Uf, Ug, Uo])   weight_hh_l0 = vstack([Wi, Wf, Wg, Wo])
          bias_ih_l0   = [bi, bf, bg, bo]           bias_hh_l0   = 0    (back: b = b_ih + b_hh)

Gradient keys are the parameter names with a ``d`` in front (``dU``, ``dbn_s``, ...). Where one
tutorial bias stands for the sum b_ih + b_hh, its gradient is the gradient of both
(``gradients_to_rnnkit``). ``V`` and ``by`` have no counterpart in the recurrent layers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .module import Module
from .recurrent import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell

Array = np.ndarray
Params = Mapping[str, Array]
RNNCache = tuple[Array, Array, Array, Params]
GRUCache = tuple[Array, Array, Array, Params, tuple[Array, Array, Array, Array]]
LSTMCache = tuple[Array, Array, Array, Params, tuple[Array, ...]]

__all__ = [
    "GRU_KEYS",
    "LSTM_KEYS",
    "OUTPUT_KEYS",
    "RNN_KEYS",
    "cross_entropy",
    "cross_entropy_backward",
    "from_rnnkit",
    "gradients_to_rnnkit",
    "gru_backward",
    "gru_cell_backward",
    "gru_cell_forward",
    "gru_forward",
    "lstm_backward",
    "lstm_cell_backward",
    "lstm_cell_forward",
    "lstm_forward",
    "rnn_backward",
    "rnn_cell_backward",
    "rnn_cell_forward",
    "rnn_forward",
    "rnn_loss_and_gradients",
    "sigmoid",
    "softmax",
    "to_rnnkit",
]

RNN_KEYS = ("U", "W", "ba")
GRU_KEYS = ("Ur", "Wr", "br", "Uz", "Wz", "bz", "Un", "Wn", "bn_x", "bn_s")
LSTM_KEYS = ("Ui", "Wi", "bi", "Uf", "Wf", "bf", "Ug", "Wg", "bg", "Uo", "Wo", "bo")
OUTPUT_KEYS = ("V", "by")


# --------------------------------------------------------------------------------------------
# activations and the input checks of the sequence functions
# --------------------------------------------------------------------------------------------


def softmax(x: Array) -> Array:
    """Column-wise softmax: ``softmax(x)[:, j] = exp(x[:, j]) / sum_k exp(x[k, j])``.

    The column maximum is subtracted first, so exp never overflows (the result is unchanged).

    Parameters
    ----------
    x : array (n_y, m)
        Logits, one column per example.

    Returns
    -------
    array (n_y, m)
        Probabilities; each column sums to 1.
    """
    e = np.exp(x - np.max(x, axis=0, keepdims=True))
    return e / np.sum(e, axis=0, keepdims=True)


def sigmoid(x: Array) -> Array:
    """``sigmoid(x) = 1 / (1 + exp(-x)) = (1 + tanh(x / 2)) / 2``; the second form never
    overflows for any x (it is the form the main API uses)."""
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _check_sequence(x: Any, s0: Any, parameters: Any, keys: tuple[str, ...]) -> None:
    """x (n_x, m, T), s0 (n_s, m), and a parameter dict holding ``keys``: say what is wrong."""
    if not isinstance(parameters, Mapping):
        raise TypeError(f"parameters must be a dict name -> array; got {type(parameters).__name__}")
    missing = [k for k in (*keys, *OUTPUT_KEYS) if k not in parameters]
    if missing:
        raise ValueError(f"parameters is missing {missing}; expected the keys "
                         f"{[*keys, *OUTPUT_KEYS]}")
    for name, a in (("x", x), ("s0", s0)):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{name} must be a NumPy array; got {type(a).__name__}")
    if x.ndim != 3:
        hint = " For one sequence of one example use x[:, None, :]." if x.ndim == 2 else ""
        raise ValueError(f"x must have shape (n_x, m, T): features, batch, time; got "
                         f"{x.ndim}-D shape {x.shape}.{hint}")
    n_s = parameters[keys[1]].shape[0]       # a W block is (n_s, n_s)
    if s0.shape != (n_s, x.shape[1]):
        raise ValueError(f"s0 must have shape (n_s, m) = ({n_s}, {x.shape[1]}); got {s0.shape}")


def _check_ds(ds: Any, caches: list[Any]) -> None:
    if not caches:
        raise ValueError("caches is empty: the forward pass ran no time step (T = 0)")
    if not isinstance(ds, np.ndarray) or ds.ndim != 3:
        raise ValueError(f"ds must be a NumPy array of shape (n_s, m, T); got "
                         f"{getattr(ds, 'shape', type(ds).__name__)}")
    if ds.shape[2] != len(caches) or ds.shape[:2] != caches[0][0].shape:
        n_s, m = caches[0][0].shape
        raise ValueError(f"ds must have shape (n_s, m, T) = ({n_s}, {m}, {len(caches)}), one "
                         f"gradient per hidden state of the forward pass; got {ds.shape}")


# --------------------------------------------------------------------------------------------
# the chapter's RNN
# --------------------------------------------------------------------------------------------


def rnn_cell_forward(x_t: Array, s_prev: Array, parameters: Params
                     ) -> tuple[Array, Array, RNNCache]:
    """One step of the RNN (chapter 4.1.2.2)::

        s_next   = tanh(U x_t + W s_prev + ba)
        out_pred = softmax(V s_next + by)

    Parameters
    ----------
    x_t : array (n_x, m)
        Input at this step.
    s_prev : array (n_s, m)
        Previous hidden state.
    parameters : dict
        ``U (n_s, n_x)``, ``W (n_s, n_s)``, ``V (n_y, n_s)``, ``ba (n_s, 1)``, ``by (n_y, 1)``.

    Returns
    -------
    s_next : array (n_s, m)
    out_pred : array (n_y, m)
    cache : tuple
        ``(s_next, s_prev, x_t, parameters)``, for ``rnn_cell_backward``.
    """
    U, W, V = parameters["U"], parameters["W"], parameters["V"]
    ba, by = parameters["ba"], parameters["by"]
    s_next = np.tanh(U @ x_t + W @ s_prev + ba)
    out_pred = softmax(V @ s_next + by)
    cache = (s_next, s_prev, x_t, parameters)
    return s_next, out_pred, cache


def rnn_forward(x: Array, s0: Array, parameters: Params
                ) -> tuple[Array, Array, list[RNNCache]]:
    """The RNN over a whole sequence: ``rnn_cell_forward`` for t = 1 ... T, from ``s0``.

    Parameters
    ----------
    x : array (n_x, m, T)
    s0 : array (n_s, m)
    parameters : dict
        As for ``rnn_cell_forward``.

    Returns
    -------
    s : array (n_s, m, T)
        Every step's hidden state.
    y : array (n_y, m, T)
        Every step's softmax output.
    caches : list of T caches
    """
    _check_sequence(x, s0, parameters, RNN_KEYS)
    _, m, T = x.shape
    n_y, n_s = parameters["V"].shape
    dtype = np.result_type(x, s0, *parameters.values())
    s = np.zeros((n_s, m, T), dtype)
    y = np.zeros((n_y, m, T), dtype)
    caches = []
    s_next = s0
    for t in range(T):
        s_next, out_pred, cache = rnn_cell_forward(x[:, :, t], s_next, parameters)
        s[:, :, t] = s_next
        y[:, :, t] = out_pred
        caches.append(cache)
    return s, y, caches


def rnn_cell_backward(ds_next: Array, cache: RNNCache) -> dict[str, Array]:
    """Backward through one RNN step (the output layer excluded).

    Parameters
    ----------
    ds_next : array (n_s, m)
        dE/ds_next: the gradient of the loss with respect to this step's state.
    cache : tuple
        From ``rnn_cell_forward``.

    Returns
    -------
    dict
        ``dx_t (n_x, m)``, ``ds_prev (n_s, m)``, ``dU (n_s, n_x)``, ``dW (n_s, n_s)``,
        ``dba (n_s, 1)``.
    """
    s_next, s_prev, x_t, parameters = cache
    U, W = parameters["U"], parameters["W"]
    # s_next = tanh(a):  da = ds_next * (1 - s_next^2)
    dtanh = (1 - s_next**2) * ds_next
    # a = U x_t + W s_prev + ba
    dx_t = U.T @ dtanh
    dU = dtanh @ x_t.T
    ds_prev = W.T @ dtanh
    dW = dtanh @ s_prev.T
    dba = np.sum(dtanh, axis=1, keepdims=True)
    return {"dx_t": dx_t, "ds_prev": ds_prev, "dU": dU, "dW": dW, "dba": dba}


def rnn_backward(ds: Array, caches: list[RNNCache]) -> dict[str, Array]:
    """Backpropagation through time (chapter 4.1.2.7) for ``rnn_forward``.

    At step t the state receives ``ds[:, :, t]`` from above plus ``ds_prev`` from step t + 1;
    the parameters are shared by all steps, so their gradients are summed over t.

    Parameters
    ----------
    ds : array (n_s, m, T)
        dE/ds_t from above (the output layer), for every step.
    caches : list of T caches
        From ``rnn_forward``.

    Returns
    -------
    dict
        ``dx (n_x, m, T)``, ``ds0 (n_s, m)``, ``dU (n_s, n_x)``, ``dW (n_s, n_s)``,
        ``dba (n_s, 1)``.
    """
    _check_ds(ds, caches)
    _, s0, x_1, parameters = caches[0]
    n_s, m, T = ds.shape
    n_x = x_1.shape[0]
    dtype = np.result_type(ds, x_1, s0, *parameters.values())
    dx = np.zeros((n_x, m, T), dtype)
    dU = np.zeros((n_s, n_x), dtype)
    dW = np.zeros((n_s, n_s), dtype)
    dba = np.zeros((n_s, 1), dtype)
    ds_prevt = np.zeros((n_s, m), dtype)
    for t in reversed(range(T)):
        gradients = rnn_cell_backward(ds[:, :, t] + ds_prevt, caches[t])
        dx[:, :, t] = gradients["dx_t"]
        ds_prevt = gradients["ds_prev"]
        dU += gradients["dU"]
        dW += gradients["dW"]
        dba += gradients["dba"]
    return {"dx": dx, "ds0": ds_prevt, "dU": dU, "dW": dW, "dba": dba}


# --------------------------------------------------------------------------------------------
# the loss (chapter 4.1.2.6) and the output layer's backward
# --------------------------------------------------------------------------------------------


def cross_entropy(y_pred: Array, y_true: Array) -> float:
    """Cross-entropy summed over time and batch: ``E = -sum_t sum_j y_t log(ŷ_t)``.

    Parameters
    ----------
    y_pred : array (n_y, m, T)
        Softmax outputs ŷ (``y`` of a forward function).
    y_true : array (n_y, m, T)
        One-hot targets y (a column of zeros masks out that example at that step).

    Returns
    -------
    float
        E. Terms with y = 0 contribute 0 even where ŷ = 0 (0 log 0 = 0).
    """
    if y_pred.shape != y_true.shape:
        raise ValueError(f"y_pred and y_true must have the same shape (n_y, m, T); got "
                         f"{y_pred.shape} and {y_true.shape}")
    hit = y_true != 0
    return float(-np.sum(y_true[hit] * np.log(y_pred[hit])))


def cross_entropy_backward(y_pred: Array, y_true: Array, caches: list[Any]
                           ) -> dict[str, Array]:
    """Gradients of ``cross_entropy(y_pred, y_true)`` through the output layer.

    Works with the caches of ``rnn_forward``, ``gru_forward`` and ``lstm_forward`` alike: it
    needs only each step's state s_t (``cache[0]``) and ``V`` (``cache[3]["V"]``)::

        ŷ_t = softmax(o_t),  o_t = V s_t + by,  E = -sum_t y_t log ŷ_t
        do_t = ŷ_t - y_t                        (y_t one-hot; in general ŷ_t sum(y_t) - y_t)
        dV = sum_t do_t s_t^T,   dby = sum_t do_t (summed over the batch),   ds_t = V^T do_t

    Parameters
    ----------
    y_pred : array (n_y, m, T)
    y_true : array (n_y, m, T)
    caches : list of T caches from a forward function

    Returns
    -------
    dict
        ``dV (n_y, n_s)``, ``dby (n_y, 1)``, ``ds (n_s, m, T)`` — pass ``ds`` to the backward
        function of the same cell.
    """
    if y_pred.shape != y_true.shape or y_pred.ndim != 3 or y_pred.shape[2] != len(caches):
        raise ValueError(f"y_pred and y_true must both have shape (n_y, m, T) with T = "
                         f"{len(caches)} (the number of caches); got {y_pred.shape} and "
                         f"{y_true.shape}")
    V = caches[0][3]["V"]
    n_y, m, T = y_pred.shape
    dtype = np.result_type(y_pred, y_true, V)
    dV = np.zeros(V.shape, dtype)
    dby = np.zeros((n_y, 1), dtype)
    ds = np.zeros((V.shape[1], m, T), dtype)
    for t in range(T):
        s_t = caches[t][0]
        # ŷ_t = softmax(o_t), E_t = -y_t log ŷ_t:  do_t = ŷ_t sum(y_t) - y_t  (= ŷ_t - y_t)
        do = y_pred[:, :, t] * np.sum(y_true[:, :, t], axis=0, keepdims=True) - y_true[:, :, t]
        # o_t = V s_t + by
        dV += do @ s_t.T
        dby += np.sum(do, axis=1, keepdims=True)
        ds[:, :, t] = V.T @ do
    return {"dV": dV, "dby": dby, "ds": ds}


def rnn_loss_and_gradients(x: Array, y_true: Array, s0: Array, parameters: Params
                           ) -> tuple[float, dict[str, Array]]:
    """Forward, loss and BPTT in one call: the chain a training step runs.

    ``rnn_forward -> cross_entropy -> cross_entropy_backward -> rnn_backward``.

    Returns
    -------
    loss : float
    gradients : dict
        ``dU, dW, dba, dV, dby`` (one per parameter) and ``dx (n_x, m, T)``, ``ds0 (n_s, m)``.
    """
    _, y_pred, caches = rnn_forward(x, s0, parameters)
    loss = cross_entropy(y_pred, y_true)
    out = cross_entropy_backward(y_pred, y_true, caches)
    gradients = rnn_backward(out["ds"], caches)
    gradients["dV"], gradients["dby"] = out["dV"], out["dby"]
    return loss, gradients


# --------------------------------------------------------------------------------------------
# the loops of rnn_forward and rnn_backward, written once for the GRU and the LSTM
# --------------------------------------------------------------------------------------------


def _forward_loop(cell: Callable[..., tuple[Any, ...]], x: Array,
                  state0: tuple[Array | None, ...], parameters: Params
                  ) -> tuple[list[Array], Array, list[Any]]:
    """rnn_forward's loop over a state ``(s,)`` or ``(s, c)`` (None: zeros); returns its steps."""
    _, m, T = x.shape
    n_y, n_s = parameters["V"].shape
    dtype = np.result_type(x, state0[0], *parameters.values())
    states = [np.zeros((n_s, m, T), dtype) for _ in state0]
    y = np.zeros((n_y, m, T), dtype)
    caches = []
    state = [np.zeros((n_s, m), dtype) if a is None else a for a in state0]
    for t in range(T):
        *state, out_pred, cache = cell(x[:, :, t], *state, parameters)   # (*state', ŷ, cache)
        for seq, a in zip(states, state, strict=True):
            seq[:, :, t] = a
        y[:, :, t] = out_pred
        caches.append(cache)
    return states, y, caches


def _backward_loop(cell_backward: Callable[..., dict[str, Array]], keys: tuple[str, ...],
                   ds: Array, caches: list[Any], dlast: tuple[Array | None, ...]
                   ) -> dict[str, Array]:
    """rnn_backward's loop over a state ``(s,)`` or ``(s, c)``; ``dlast``: the gradients
    reaching the last state from beyond step T, ``(None,)`` or ``(None, dc_last)`` (None: 0)."""
    _, s0, x_1, parameters, _ = caches[0]
    n_s, m, T = ds.shape
    dtype = np.result_type(ds, x_1, s0, *parameters.values())
    dx = np.zeros((x_1.shape[0], m, T), dtype)
    grads = {"d" + k: np.zeros(parameters[k].shape, dtype) for k in keys}
    dstate = [np.zeros((n_s, m), dtype) if d is None else d for d in dlast]
    for t in reversed(range(T)):
        gradients = cell_backward(ds[:, :, t] + dstate[0], *dstate[1:], caches[t])
        dx[:, :, t] = gradients["dx_t"]
        dstate = [gradients[k] for k in ("ds_prev", "dc_prev")[:len(dstate)]]
        for k in grads:
            grads[k] += gradients[k]
    return {"dx": dx, **dict(zip(("ds0", "dc0"), dstate, strict=False)), **grads}


# --------------------------------------------------------------------------------------------
# GRU
# --------------------------------------------------------------------------------------------


def gru_cell_forward(x_t: Array, s_prev: Array, parameters: Params
                     ) -> tuple[Array, Array, GRUCache]:
    """One step of the GRU (PyTorch's formulation; gates r reset, z update, n new)::

        r        = sigmoid(Ur x_t + Wr s_prev + br)
        z        = sigmoid(Uz x_t + Wz s_prev + bz)
        n        = tanh(Un x_t + bn_x + r * (Wn s_prev + bn_s))
        s_next   = (1 - z) * n + z * s_prev
        out_pred = softmax(V s_next + by)

    z near 1 keeps the old state: the update gate that carries "cat" until "was" (4.1.4.2).

    Parameters
    ----------
    x_t : array (n_x, m)
    s_prev : array (n_s, m)
    parameters : dict
        ``Ur, Uz, Un (n_s, n_x)``; ``Wr, Wz, Wn (n_s, n_s)``; ``br, bz, bn_x, bn_s (n_s, 1)``;
        ``V (n_y, n_s)``, ``by (n_y, 1)``.

    Returns
    -------
    s_next : array (n_s, m)
    out_pred : array (n_y, m)
    cache : tuple
        ``(s_next, s_prev, x_t, parameters, (r, z, n, sn))`` with ``sn = Wn s_prev + bn_s``.
    """
    p = parameters
    r = sigmoid(p["Ur"] @ x_t + p["Wr"] @ s_prev + p["br"])
    z = sigmoid(p["Uz"] @ x_t + p["Wz"] @ s_prev + p["bz"])
    sn = p["Wn"] @ s_prev + p["bn_s"]
    n = np.tanh(p["Un"] @ x_t + p["bn_x"] + r * sn)
    s_next = (1 - z) * n + z * s_prev
    out_pred = softmax(p["V"] @ s_next + p["by"])
    cache = (s_next, s_prev, x_t, parameters, (r, z, n, sn))
    return s_next, out_pred, cache


def gru_forward(x: Array, s0: Array, parameters: Params
                ) -> tuple[Array, Array, list[GRUCache]]:
    """The GRU over a whole sequence: the loop of ``rnn_forward``, with ``gru_cell_forward``.

    Parameters
    ----------
    x : array (n_x, m, T)
    s0 : array (n_s, m)
    parameters : dict
        As for ``gru_cell_forward``.

    Returns
    -------
    s : array (n_s, m, T)
    y : array (n_y, m, T)
    caches : list of T caches
    """
    _check_sequence(x, s0, parameters, GRU_KEYS)
    [s], y, caches = _forward_loop(gru_cell_forward, x, (s0,), parameters)
    return s, y, caches


def gru_cell_backward(ds_next: Array, cache: GRUCache) -> dict[str, Array]:
    """Backward through one GRU step (the output layer excluded).

    Parameters
    ----------
    ds_next : array (n_s, m)
        dE/ds_next.
    cache : tuple
        From ``gru_cell_forward``.

    Returns
    -------
    dict
        ``dx_t (n_x, m)``, ``ds_prev (n_s, m)``, and ``dUr, dUz, dUn (n_s, n_x)``,
        ``dWr, dWz, dWn (n_s, n_s)``, ``dbr, dbz, dbn_x, dbn_s (n_s, 1)``.
    """
    _, s_prev, x_t, p, (r, z, n, sn) = cache
    # s_next = (1 - z) * n + z * s_prev
    dn = ds_next * (1 - z)
    dz = ds_next * (s_prev - n)
    ds_prev = ds_next * z
    # n = tanh(Un x_t + bn_x + r * sn)
    dan = dn * (1 - n**2)
    dx_t = p["Un"].T @ dan
    dUn = dan @ x_t.T
    dbn_x = np.sum(dan, axis=1, keepdims=True)
    dr = dan * sn
    dsn = dan * r
    # sn = Wn s_prev + bn_s
    ds_prev = ds_prev + p["Wn"].T @ dsn
    dWn = dsn @ s_prev.T
    dbn_s = np.sum(dsn, axis=1, keepdims=True)
    # z = sigmoid(Uz x_t + Wz s_prev + bz)
    daz = dz * z * (1 - z)
    dx_t = dx_t + p["Uz"].T @ daz
    ds_prev = ds_prev + p["Wz"].T @ daz
    dUz = daz @ x_t.T
    dWz = daz @ s_prev.T
    dbz = np.sum(daz, axis=1, keepdims=True)
    # r = sigmoid(Ur x_t + Wr s_prev + br)
    dar = dr * r * (1 - r)
    dx_t = dx_t + p["Ur"].T @ dar
    ds_prev = ds_prev + p["Wr"].T @ dar
    dUr = dar @ x_t.T
    dWr = dar @ s_prev.T
    dbr = np.sum(dar, axis=1, keepdims=True)
    return {"dx_t": dx_t, "ds_prev": ds_prev,
            "dUr": dUr, "dWr": dWr, "dbr": dbr, "dUz": dUz, "dWz": dWz, "dbz": dbz,
            "dUn": dUn, "dWn": dWn, "dbn_x": dbn_x, "dbn_s": dbn_s}


def gru_backward(ds: Array, caches: list[GRUCache]) -> dict[str, Array]:
    """BPTT for ``gru_forward``: the loop of ``rnn_backward``, with ``gru_cell_backward``.

    Parameters
    ----------
    ds : array (n_s, m, T)
        dE/ds_t from above, for every step.
    caches : list of T caches
        From ``gru_forward``.

    Returns
    -------
    dict
        ``dx (n_x, m, T)``, ``ds0 (n_s, m)``, and a ``d`` + name entry for each GRU parameter
        (``dUr ... dbn_s``), summed over the steps.
    """
    _check_ds(ds, caches)
    return _backward_loop(gru_cell_backward, GRU_KEYS, ds, caches, (None,))


# --------------------------------------------------------------------------------------------
# LSTM
# --------------------------------------------------------------------------------------------


def lstm_cell_forward(x_t: Array, s_prev: Array, c_prev: Array, parameters: Params
                      ) -> tuple[Array, Array, Array, LSTMCache]:
    """One step of the LSTM (PyTorch's formulation; gates i input, f forget, g, o output)::

        i        = sigmoid(Ui x_t + Wi s_prev + bi)
        f        = sigmoid(Uf x_t + Wf s_prev + bf)
        g        = tanh(Ug x_t + Wg s_prev + bg)
        o        = sigmoid(Uo x_t + Wo s_prev + bo)
        c_next   = f * c_prev + i * g
        s_next   = o * tanh(c_next)
        out_pred = softmax(V s_next + by)

    Parameters
    ----------
    x_t : array (n_x, m)
    s_prev : array (n_s, m)
    c_prev : array (n_s, m)
        Previous cell state.
    parameters : dict
        ``Ui, Uf, Ug, Uo (n_s, n_x)``; ``Wi, Wf, Wg, Wo (n_s, n_s)``;
        ``bi, bf, bg, bo (n_s, 1)``; ``V (n_y, n_s)``, ``by (n_y, 1)``.

    Returns
    -------
    s_next : array (n_s, m)
    c_next : array (n_s, m)
    out_pred : array (n_y, m)
    cache : tuple
        ``(s_next, s_prev, x_t, parameters, (c_next, c_prev, i, f, g, o, tanh(c_next)))``.
    """
    p = parameters
    i = sigmoid(p["Ui"] @ x_t + p["Wi"] @ s_prev + p["bi"])
    f = sigmoid(p["Uf"] @ x_t + p["Wf"] @ s_prev + p["bf"])
    g = np.tanh(p["Ug"] @ x_t + p["Wg"] @ s_prev + p["bg"])
    o = sigmoid(p["Uo"] @ x_t + p["Wo"] @ s_prev + p["bo"])
    c_next = f * c_prev + i * g
    tanh_c = np.tanh(c_next)
    s_next = o * tanh_c
    out_pred = softmax(p["V"] @ s_next + p["by"])
    cache = (s_next, s_prev, x_t, parameters, (c_next, c_prev, i, f, g, o, tanh_c))
    return s_next, c_next, out_pred, cache


def lstm_forward(x: Array, s0: Array, parameters: Params, c0: Array | None = None
                 ) -> tuple[Array, Array, Array, list[LSTMCache]]:
    """The LSTM over a whole sequence: the loop of ``rnn_forward``, with ``lstm_cell_forward``.

    Parameters
    ----------
    x : array (n_x, m, T)
    s0 : array (n_s, m)
    parameters : dict
        As for ``lstm_cell_forward``.
    c0 : array (n_s, m), optional
        Initial cell state; zeros by default.

    Returns
    -------
    s : array (n_s, m, T)
    y : array (n_y, m, T)
    c : array (n_s, m, T)
        Every step's cell state.
    caches : list of T caches
    """
    _check_sequence(x, s0, parameters, LSTM_KEYS)
    if c0 is not None and (not isinstance(c0, np.ndarray) or c0.shape != s0.shape):
        raise ValueError(f"c0 must be a NumPy array of shape (n_s, m) = {s0.shape}, like s0; "
                         f"got {getattr(c0, 'shape', type(c0).__name__)}")
    [s, c], y, caches = _forward_loop(lstm_cell_forward, x, (s0, c0), parameters)
    return s, y, c, caches


def lstm_cell_backward(ds_next: Array, dc_next: Array, cache: LSTMCache) -> dict[str, Array]:
    """Backward through one LSTM step (the output layer excluded).

    Parameters
    ----------
    ds_next : array (n_s, m)
        dE/ds_next.
    dc_next : array (n_s, m)
        dE/dc_next through the cell-state path (from step t + 1, or from outside at the end).
    cache : tuple
        From ``lstm_cell_forward``.

    Returns
    -------
    dict
        ``dx_t (n_x, m)``, ``ds_prev (n_s, m)``, ``dc_prev (n_s, m)``, and ``dU*``
        ``(n_s, n_x)``, ``dW* (n_s, n_s)``, ``db* (n_s, 1)`` for * in i, f, g, o.
    """
    _, s_prev, x_t, p, (_, c_prev, i, f, g, o, tanh_c) = cache
    # s_next = o * tanh(c_next)
    do = ds_next * tanh_c
    dc = dc_next + ds_next * o * (1 - tanh_c**2)
    # c_next = f * c_prev + i * g
    di = dc * g
    df = dc * c_prev
    dg = dc * i
    dc_prev = dc * f
    # i, f, o = sigmoid(a*),  g = tanh(ag)
    da = {"i": di * i * (1 - i), "f": df * f * (1 - f), "g": dg * (1 - g**2),
          "o": do * o * (1 - o)}
    # a* = U* x_t + W* s_prev + b*
    grads: dict[str, Array] = {}
    dx_t = np.zeros_like(x_t, dtype=np.result_type(x_t, ds_next, p["Ui"]))
    ds_prev = np.zeros_like(ds_next, dtype=np.result_type(s_prev, ds_next, p["Wi"]))
    for k, da_k in da.items():
        grads["dU" + k] = da_k @ x_t.T
        grads["dW" + k] = da_k @ s_prev.T
        grads["db" + k] = np.sum(da_k, axis=1, keepdims=True)
        dx_t += p["U" + k].T @ da_k
        ds_prev += p["W" + k].T @ da_k
    return {"dx_t": dx_t, "ds_prev": ds_prev, "dc_prev": dc_prev,
            **{k: grads[k] for k in ("d" + name for name in LSTM_KEYS)}}


def lstm_backward(ds: Array, caches: list[LSTMCache], dc_last: Array | None = None
                  ) -> dict[str, Array]:
    """BPTT for ``lstm_forward``: the loop of ``rnn_backward``, with ``lstm_cell_backward``.

    Parameters
    ----------
    ds : array (n_s, m, T)
        dE/ds_t from above, for every step.
    caches : list of T caches
        From ``lstm_forward``.
    dc_last : array (n_s, m), optional
        dE/dc_T from outside (when the final cell state is used); zeros by default.

    Returns
    -------
    dict
        ``dx (n_x, m, T)``, ``ds0 (n_s, m)``, ``dc0 (n_s, m)``, and a ``d`` + name entry for
        each LSTM parameter (``dUi ... dbo``), summed over the steps.
    """
    _check_ds(ds, caches)
    n_s, m, _ = ds.shape
    if dc_last is not None and (not isinstance(dc_last, np.ndarray)
                                or dc_last.shape != (n_s, m)):
        raise ValueError(f"dc_last must be a NumPy array of shape (n_s, m) = ({n_s}, {m}); "
                         f"got {getattr(dc_last, 'shape', type(dc_last).__name__)}")
    return _backward_loop(lstm_cell_backward, LSTM_KEYS, ds, caches, (None, dc_last))


# --------------------------------------------------------------------------------------------
# to and from the main API (rnnkit.RNN / GRU / LSTM, one layer, one direction)
# --------------------------------------------------------------------------------------------

# per kind: (U names, W names, bias names, the name of the bias kept apart on the hidden side)
_GATES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...],
                        tuple[str | None, ...]]] = {
    "rnn": (("U",), ("W",), ("ba",), (None,)),
    "gru": (("Ur", "Uz", "Un"), ("Wr", "Wz", "Wn"), ("br", "bz", "bn_x"),
            (None, None, "bn_s")),
    "lstm": (("Ui", "Uf", "Ug", "Uo"), ("Wi", "Wf", "Wg", "Wo"), ("bi", "bf", "bg", "bo"),
             (None, None, None, None)),
}


def _kind(kind: Any) -> str:
    if kind not in _GATES:
        raise ValueError(f"kind must be one of {list(_GATES)}; got {kind!r}")
    return str(kind)


def _stack(table: Params, kind: str, prefix: str, cell: bool, grads: bool) -> dict[str, Array]:
    Us, Ws, bs, bhs = _GATES[_kind(kind)]
    names = [prefix + k for k in (*Us, *Ws, *bs, *(bh for bh in bhs if bh))]
    missing = [k for k in names if k not in table]
    if missing:
        what = "gradients" if grads else "parameters"
        raise ValueError(f"the {kind} {what} are missing {missing}; expected {names}")
    sfx = "" if cell else "_l0"
    w_ih = np.vstack([table[prefix + k] for k in Us])
    w_hh = np.vstack([table[prefix + k] for k in Ws])
    b_ih = np.concatenate([table[prefix + k].reshape(-1) for k in bs])
    b_hh = []
    for b, bh in zip(bs, bhs, strict=True):
        if bh is not None:                       # kept apart: the GRU's bn_s
            b_hh.append(table[prefix + bh].reshape(-1))
        elif grads:                              # merged b = b_ih + b_hh: db_hh = db
            b_hh.append(table[prefix + b].reshape(-1))
        else:                                    # merged b: b_ih = b, b_hh = 0
            b_hh.append(np.zeros_like(table[prefix + b].reshape(-1)))
    return {f"weight_ih{sfx}": w_ih, f"weight_hh{sfx}": w_hh, f"bias_ih{sfx}": b_ih,
            f"bias_hh{sfx}": np.concatenate(b_hh)}


def to_rnnkit(parameters: Params, kind: str, *, cell: bool = False) -> dict[str, Array]:
    """A tutorial parameter dict as the state_dict of a one-layer rnnkit RNN, GRU or LSTM.

    ``m = rnnkit.GRU(n_x, n_s, dtype=np.float64); m.load_state_dict(to_rnnkit(p, "gru"))``.
    The mapping is in the module docstring; ``V`` and ``by`` are ignored (the recurrent layers
    have no output layer).

    Parameters
    ----------
    parameters : dict
        Tutorial parameters of the given kind.
    kind : {"rnn", "gru", "lstm"}
    cell : bool
        Name the keys for ``RNNCell/GRUCell/LSTMCell`` (``weight_ih``) instead of the layers
        (``weight_ih_l0``).

    Returns
    -------
    dict
        ``weight_ih_l0 (G*n_s, n_x)``, ``weight_hh_l0 (G*n_s, n_s)``, ``bias_ih_l0 (G*n_s,)``,
        ``bias_hh_l0 (G*n_s,)``; G = 1, 3, 4.
    """
    return _stack(parameters, kind, "", cell, grads=False)


def gradients_to_rnnkit(gradients: Params, kind: str, *, cell: bool = False
                        ) -> dict[str, Array]:
    """Tutorial gradients (``dU``, ``dWr``, ...) under the keys of rnnkit's ``m.grads``.

    A merged bias (``ba``; the GRU's ``br, bz``; all LSTM biases) enters the cell as
    b_ih + b_hh, so its gradient is the gradient of both ``bias_ih`` and ``bias_hh``.
    """
    return _stack(gradients, kind, "d", cell, grads=True)


def from_rnnkit(state: Module | Mapping[str, Any], kind: str | None = None, *,
                V: Array | None = None, by: Array | None = None) -> dict[str, Array]:
    """A tutorial parameter dict from a one-layer, one-direction rnnkit RNN/GRU/LSTM (or cell).

    Parameters
    ----------
    state : rnnkit module or state_dict
        ``rnnkit.RNN`` (tanh), ``GRU``, ``LSTM`` or their cells, or a state_dict of one.
    kind : {"rnn", "gru", "lstm"}, optional
        Needed for a state_dict; read from the type of a module.
    V, by : arrays (n_y, n_s) and (n_y, 1), optional
        The output layer, added to the dict when given (the forward functions need it).

    Returns
    -------
    dict
        The tutorial parameters (copies; ``b = b_ih + b_hh`` where the tutorial has one bias).
        Missing biases (``bias=False``) become zeros.
    """
    if isinstance(state, Module):
        if isinstance(state, (RNN, GRU, LSTM)) and (state.num_layers != 1
                                                   or state.bidirectional):
            raise ValueError(f"the tutorial functions are one layer, one direction; got "
                             f"{state!r}")
        if isinstance(state, (RNN, RNNCell)) and state.nonlinearity != "tanh":
            raise ValueError("the tutorial RNN uses tanh; got an rnnkit RNN with "
                             f"nonlinearity={state.nonlinearity!r}")
        found = ("rnn" if isinstance(state, (RNN, RNNCell)) else
                 "gru" if isinstance(state, (GRU, GRUCell)) else
                 "lstm" if isinstance(state, (LSTM, LSTMCell)) else None)
        if found is None:
            raise TypeError(f"state must be an rnnkit RNN, GRU, LSTM (or cell) or a state_dict; "
                            f"got {type(state).__name__}")
        if kind is not None and _kind(kind) != found:
            raise ValueError(f"kind={kind!r} but the module is a {type(state).__name__}")
        kind, table = found, state.state_dict()
    elif isinstance(state, Mapping):
        if kind is None:
            raise ValueError('from_rnnkit(state_dict) needs kind="rnn", "gru" or "lstm"')
        table = dict(state)
    else:
        raise TypeError(f"state must be an rnnkit module or a state_dict; got "
                        f"{type(state).__name__}")
    Us, Ws, bs, bhs = _GATES[_kind(kind)]
    sfx = "_l0" if "weight_ih_l0" in table else ""
    extra = [k for k in table if k not in {f"{w}{sfx}" for w in ("weight_ih", "weight_hh",
                                                                   "bias_ih", "bias_hh")}]
    if extra or f"weight_ih{sfx}" not in table or f"weight_hh{sfx}" not in table:
        raise ValueError(f"expected the state of one layer, one direction (weight_ih_l0, "
                         f"weight_hh_l0, bias_ih_l0, bias_hh_l0); got keys {list(table)}")
    w_ih, w_hh = np.asarray(table[f"weight_ih{sfx}"]), np.asarray(table[f"weight_hh{sfx}"])
    n_s = w_hh.shape[1]
    G = len(Us)
    if w_hh.shape != (G * n_s, n_s) or w_ih.shape[0] != G * n_s:
        raise ValueError(f"a {kind} with {n_s} hidden units has weight_hh of shape "
                         f"({G * n_s}, {n_s}) and weight_ih of {G * n_s} rows; got "
                         f"{w_hh.shape} and {w_ih.shape}")
    zeros = np.zeros(G * n_s, w_hh.dtype)
    b_ih = np.asarray(table.get(f"bias_ih{sfx}", zeros))
    b_hh = np.asarray(table.get(f"bias_hh{sfx}", zeros))
    out: dict[str, Array] = {}
    for j, (u, w, b, bh) in enumerate(zip(Us, Ws, bs, bhs, strict=True)):
        rows = slice(j * n_s, (j + 1) * n_s)
        out[u] = w_ih[rows].copy()
        out[w] = w_hh[rows].copy()
        if bh is None:
            out[b] = (b_ih[rows] + b_hh[rows]).reshape(n_s, 1)
        else:
            out[b] = b_ih[rows].reshape(n_s, 1).copy()
            out[bh] = b_hh[rows].reshape(n_s, 1).copy()
    if V is not None:
        out["V"] = V
    if by is not None:
        out["by"] = by
    return out
