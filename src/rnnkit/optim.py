"""Optimizers, gradient clipping and learning-rate schedules, with PyTorch's names and numbers.

    >>> opt = rnnkit.optim.Adam(model, lr=1e-3)
    >>> sched = rnnkit.optim.CosineAnnealingLR(opt, T_max=1000)
    >>> for step in range(1000):
    ...     opt.zero_grad()
    ...     loss = ...                                  # forward, then backward into model.grads
    ...     norm = rnnkit.optim.clip_grad_norm_(model, 1.0)
    ...     opt.step()
    ...     sched.step()

An optimizer holds the live ``(name, param, grad)`` triples of a module and updates the
parameters in place. Each class follows its ``torch.optim`` twin: the same hyper-parameter names
and defaults, the same update rule (eps added outside the square root, Adam's bias correction,
weight decay added to the gradient except in AdamW), and the same state names (``exp_avg``,
``momentum_buffer``, ...), so a run can be checked step for step against PyTorch.

Notation in the docstrings: ``p`` a parameter, ``g`` its gradient, ``t`` the step count after the
increment (1 on the first step), ``d`` the gradient after coupled weight decay,
``d = g + weight_decay * p``. Every operation is elementwise.

A step runs in-place ufuncs on the parameters, on state arrays made once in the parameters'
dtype, and on two scratch buffers shared by all parameters. It first copies the parameters and
state into buffers made once, so that a step whose result is not finite is undone:
``step()`` then returns False and nothing has changed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from .checks import check_scalar

Array = np.ndarray

__all__ = [
    "SGD",
    "Adagrad",
    "Adam",
    "AdamW",
    "CosineAnnealingLR",
    "ExponentialLR",
    "LRScheduler",
    "LinearLR",
    "Optimizer",
    "RMSprop",
    "StepLR",
    "clip_grad_norm_",
    "clip_grad_value_",
]


# ------------------------------------------------------------------------------------------------
# checks at the door
# ------------------------------------------------------------------------------------------------


def _nonneg(h: Mapping[str, Any], *names: str) -> dict[str, float]:
    """``{name: h[name]}`` for hyper-parameters that must be finite numbers >= 0."""
    return {k: check_scalar(h[k], k, float, min_val=0) for k in names}


def _live_triples(params: Any, owner: str) -> list[tuple[str, Array, Array]]:
    """The (name, param, grad) triples of a module: the live arrays, checked once."""
    if not (hasattr(params, "named_parameters") and hasattr(params, "grads")):
        raise TypeError(f"{owner} takes a module (anything with named_parameters() and grads); "
                        f"got {type(params).__name__}. Pass the model itself: "
                        f"{owner}(model, ...).")
    grads = params.grads
    triples: list[tuple[str, Array, Array]] = []
    seen: set[str] = set()
    for name, p in params.named_parameters():
        if name in seen:
            raise ValueError(f"parameter {name!r} appears twice in named_parameters()")
        seen.add(name)
        if not isinstance(p, np.ndarray) or p.dtype not in (np.float32, np.float64):
            raise TypeError(f"parameter {name!r} must be a float32 or float64 NumPy array; got "
                            f"{getattr(p, 'dtype', type(p).__name__)}")
        if not p.flags.writeable:
            raise ValueError(f"parameter {name!r} is read-only; the optimizer updates it in place")
        g = grads.get(name) if isinstance(grads, Mapping) else None
        if not isinstance(g, np.ndarray) or g.shape != p.shape or g.dtype != p.dtype:
            got = "nothing" if g is None else (
                f"{type(g).__name__}" if not isinstance(g, np.ndarray)
                else f"shape {g.shape}, dtype {g.dtype}")
            raise ValueError(f"grads[{name!r}] must be an array of the parameter's shape "
                             f"{p.shape} and dtype {p.dtype}; got {got}")
        triples.append((name, p, g))
    if not triples:
        raise ValueError(f"{owner} got an empty parameter list; the module has no parameters")
    return triples


# ------------------------------------------------------------------------------------------------
# the optimizer base: live triples, per-parameter state, save and load
# ------------------------------------------------------------------------------------------------


class Optimizer:
    """Base class. Subclasses give the hyper-parameters, the state slots and the update rule.

    Attributes
    ----------
    lr : float
        The learning rate, a plain attribute (schedulers change it between steps).
    step_count : int
        Steps taken so far; the ``t`` of the bias corrections.
    state : dict[str, dict[str, ndarray]]
        ``state[param_name][slot]``, e.g. ``state["weight_ih_l0"]["exp_avg"]``; the slot names
        are PyTorch's.
    """

    hyper_names: ClassVar[tuple[str, ...]] = ("lr",)
    lr: float

    def __init__(self, params: Any, hyper: dict[str, Any]) -> None:
        self._triples = _live_triples(params, type(self).__name__)
        self._set_hyper(self._check_hyper(hyper))
        self.step_count = 0
        slots = self._slots(self.hyper)
        self.state: dict[str, dict[str, Array]] = {
            name: {s: self._init_slot(s, p) for s in slots} for name, p, _ in self._triples}
        # two flat scratch buffers per dtype, as long as the largest parameter of that dtype
        sizes: dict[np.dtype, int] = {}
        for _, p, _ in self._triples:
            sizes[p.dtype] = max(sizes.get(p.dtype, 0), p.size)
        self._scratch = {dt: (np.empty(n, dt), np.empty(n, dt)) for dt, n in sizes.items()}
        # every array a step writes (parameters, then state), and where a step first copies them
        self._live = [p for _, p, _ in self._triples] + [
            a for by_slot in self.state.values() for a in by_slot.values()]
        self._saved = [np.empty_like(a) for a in self._live]

    # ---- what a subclass provides ----------------------------------------------------------
    @classmethod
    def _check_hyper(cls, h: Mapping[str, Any]) -> dict[str, Any]:
        """Validate and normalise the hyper-parameters (raises TypeError or ValueError)."""
        raise NotImplementedError

    @classmethod
    def _slots(cls, h: Mapping[str, Any]) -> tuple[str, ...]:
        """Names of the per-parameter state arrays these hyper-parameters need."""
        raise NotImplementedError

    def _init_slot(self, slot: str, p: Array) -> Array:
        return np.zeros_like(p)

    def _update(self, p: Array, g: Array, state: dict[str, Array], s1: Array, s2: Array) -> None:
        """One step for one parameter, in place; ``s1``, ``s2`` are scratch of p's shape."""
        raise NotImplementedError

    # ---- the public API ------------------------------------------------------------------------
    @property
    def hyper(self) -> dict[str, Any]:
        """The hyper-parameters by PyTorch's names, ``lr`` included."""
        return {k: getattr(self, k) for k in self.hyper_names}

    @property
    def param_names(self) -> list[str]:
        return [name for name, _, _ in self._triples]

    def step(self) -> bool:
        """Update every parameter in place from its gradient; ``step_count += 1``.

        Returns True. If the update would leave any parameter or state entry NaN or Inf (a
        gradient that overflows, a learning rate far too large) nothing is applied: every
        parameter, every state array and ``step_count`` stay exactly as they were, and it
        returns False (without a RuntimeWarning); the caller decides what to do.
        """
        for a, saved in zip(self._live, self._saved, strict=True):
            np.copyto(saved, a)
        self.step_count += 1
        with np.errstate(all="ignore"):
            for name, p, g in self._triples:
                a, b = self._scratch[p.dtype]
                self._update(p, g, self.state[name], a[:p.size].reshape(p.shape),
                             b[:p.size].reshape(p.shape))
        if all(np.isfinite(a).all() for a in self._live):
            return True
        for a, saved in zip(self._live, self._saved, strict=True):
            np.copyto(a, saved)
        self.step_count -= 1
        return False

    def zero_grad(self) -> None:
        """Set every gradient to zero, in place (backward adds into them)."""
        for _, _, g in self._triples:
            g.fill(0)

    def state_dict(self) -> tuple[dict[str, Array], dict[str, Any]]:
        """``(tensors, meta)``: copies of the state arrays keyed ``"<param>.<slot>"``, and a
        JSON-serialisable dict with the type name, the hyper-parameters, the step count and the
        parameter names. ``load_state_dict(tensors, meta)`` restores them bit for bit."""
        tensors = {f"{name}.{slot}": a.copy()
                   for name, slots in self.state.items() for slot, a in slots.items()}
        hyper = {k: list(v) if isinstance(v, tuple) else v for k, v in self.hyper.items()}
        meta = {"type": type(self).__name__, "step": self.step_count, "hyper": hyper,
                "params": self.param_names}
        return tensors, meta

    def load_state_dict(self, tensors: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        """Restore a ``state_dict()``: the hyper-parameters (``lr`` included, as PyTorch does),
        the step count and every state array. Everything is checked first (type, parameter
        names, hyper-parameters, keys, shapes, dtypes); on any error nothing has changed."""
        kind = type(self).__name__
        if not isinstance(meta, Mapping) or not isinstance(tensors, Mapping):
            raise TypeError(f"load_state_dict takes (tensors, meta), the two dicts returned by "
                            f"state_dict(); got ({type(tensors).__name__}, "
                            f"{type(meta).__name__})")
        want_keys = {"type", "step", "hyper", "params"}
        if set(meta) != want_keys:
            raise ValueError(f"meta must have exactly the keys {sorted(want_keys)}; got "
                             f"{sorted(map(str, meta))}")
        if meta["type"] != kind:
            raise ValueError(f"this state was saved from {meta['type']!r}; this optimizer is "
                             f"{kind!r}. Build a {meta['type']} to load it.")
        if not isinstance(meta["hyper"], Mapping) or set(meta["hyper"]) != set(self.hyper_names):
            got = sorted(meta["hyper"]) if isinstance(meta["hyper"], Mapping) else meta["hyper"]
            raise ValueError(f"meta['hyper'] must have exactly the keys "
                             f"{sorted(self.hyper_names)}; got {got!r}")
        try:
            step = check_scalar(meta["step"], "meta['step']", int, min_val=0)
            hyper = self._check_hyper(meta["hyper"])
        except (TypeError, ValueError) as e:
            raise ValueError(f"meta is invalid: {e}") from e
        if self._slots(hyper) != self._slots(self.hyper):
            raise ValueError(f"the saved hyper-parameters {meta['hyper']} need the state "
                             f"{list(self._slots(hyper))}, this {kind} has "
                             f"{list(self._slots(self.hyper))}; build it with the saved "
                             "hyper-parameters, then load")
        names = list(meta["params"]) if isinstance(meta["params"], (list, tuple)) else None
        if names is None or sorted(map(str, names)) != sorted(self.param_names):
            got = set(names or [])
            raise ValueError(f"meta['params'] names other parameters: missing "
                             f"{[n for n in self.param_names if n not in got]}, unexpected "
                             f"{[n for n in (names or []) if n not in self.param_names]}. "
                             "Was it saved from another model?")
        own = {f"{name}.{slot}": a for name, slots in self.state.items()
               for slot, a in slots.items()}
        missing = [k for k in own if k not in tensors]
        unexpected = [k for k in tensors if k not in own]
        if missing or unexpected:
            raise ValueError(f"tensors do not match this {kind}'s state: missing {missing}, "
                             f"unexpected {unexpected}")
        staged: list[tuple[Array, Array]] = []
        for key, dst in own.items():
            try:
                src = np.asarray(tensors[key])
            except Exception as e:  # e.g. a torch tensor that requires grad
                raise ValueError(f"tensors[{key!r}] could not be read as an array "
                                 f"({type(tensors[key]).__name__}): {e}") from e
            if src.dtype.kind not in "fiu" or not np.can_cast(src.dtype, dst.dtype,
                                                               casting="same_kind"):
                raise ValueError(f"tensors[{key!r}] has dtype {src.dtype}, which does not cast "
                                 f"to the state's {dst.dtype}")
            if src.shape != dst.shape:
                raise ValueError(f"tensors[{key!r}] has shape {src.shape}; expected "
                                 f"{dst.shape}. Was it saved from a model with other sizes?")
            if not np.isfinite(src).all():
                raise ValueError(f"tensors[{key!r}] contains NaN or Inf; refusing to load a "
                                 "broken optimizer state")
            staged.append((dst, src))
        # all checked: now write
        for dst, src in staged:
            np.copyto(dst, src, casting="same_kind")
        self._set_hyper(hyper)
        self.step_count = step

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyper.items())
        return f"{type(self).__name__}({args}; {len(self._triples)} parameters)"

    # ---- helpers -------------------------------------------------------------------------------
    def _set_hyper(self, h: Mapping[str, Any]) -> None:
        for k in self.hyper_names:
            setattr(self, k, h[k])

    @staticmethod
    def _decayed(p: Array, g: Array, weight_decay: float, out: Array) -> Array:
        """``d = g + weight_decay * p`` (into ``out``), or ``g`` itself when weight_decay is 0.
        The gradient array is never written."""
        if weight_decay == 0:
            return g
        np.multiply(p, weight_decay, out=out)
        out += g
        return out


# ------------------------------------------------------------------------------------------------
# the optimizers
# ------------------------------------------------------------------------------------------------


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, like ``torch.optim.SGD``::

        d = g + weight_decay * p
        if momentum != 0:
            b = d                                           (first step)
            b = momentum * b + (1 - dampening) * d          (later steps)
            d = d + momentum * b    if nesterov else    d = b
        p = p - lr * d

    Parameters
    ----------
    params : Module
        Anything with ``named_parameters()`` and ``grads``; its arrays are updated in place.
    lr : float, default 1e-3
    momentum : float, default 0
    dampening : float, default 0
    weight_decay : float, default 0
        L2 penalty, added to the gradient.
    nesterov : bool, default False
        Needs ``momentum > 0`` and ``dampening == 0``.

    State: ``momentum_buffer`` (b), only when ``momentum != 0``.
    """

    hyper_names = ("lr", "momentum", "dampening", "weight_decay", "nesterov")
    momentum: float
    dampening: float
    weight_decay: float
    nesterov: bool

    def __init__(self, params: Any, lr: float = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum, "dampening": dampening,
                                  "weight_decay": weight_decay, "nesterov": nesterov})

    @classmethod
    def _check_hyper(cls, h: Mapping[str, Any]) -> dict[str, Any]:
        out = {**_nonneg(h, "lr", "momentum"),
               "dampening": check_scalar(h["dampening"], "dampening", float),
               **_nonneg(h, "weight_decay"),
               "nesterov": check_scalar(h["nesterov"], "nesterov", bool)}
        if out["nesterov"] and (out["momentum"] <= 0 or out["dampening"] != 0):
            raise ValueError(f"Nesterov momentum requires a momentum and zero dampening; got "
                             f"momentum={out['momentum']}, dampening={out['dampening']}. Use "
                             "e.g. momentum=0.9, dampening=0, or nesterov=False.")
        return out

    @classmethod
    def _slots(cls, h: Mapping[str, Any]) -> tuple[str, ...]:
        return ("momentum_buffer",) if h["momentum"] != 0 else ()

    def _update(self, p: Array, g: Array, state: dict[str, Array], s1: Array, s2: Array) -> None:
        d = self._decayed(p, g, self.weight_decay, s1)
        if self.momentum != 0:
            b = state["momentum_buffer"]
            if self.step_count == 1:
                np.copyto(b, d)                                   # b = d
            else:
                b *= self.momentum                                # b = momentum b
                np.multiply(d, 1 - self.dampening, out=s2)        #   + (1 - dampening) d
                b += s2
            if self.nesterov:
                np.multiply(b, self.momentum, out=s2)             # d = d + momentum b
                s2 += d
                d = s2
            else:
                d = b
        np.multiply(d, -self.lr, out=s2)                          # p = p - lr d
        p += s2


class Adam(Optimizer):
    """Adam (Kingma & Ba), like ``torch.optim.Adam``::

        d = g + weight_decay * p                        (AdamW instead: p = p (1 - lr wd), d = g)
        m = beta1 * m + (1 - beta1) * d
        v = beta2 * v + (1 - beta2) * d^2
        v_max = max(v_max, v)                           (amsgrad only; then v below is v_max)
        p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    eps is added outside the square root, after the second bias correction, as in PyTorch.

    Parameters
    ----------
    params : Module
        Anything with ``named_parameters()`` and ``grads``; its arrays are updated in place.
    lr : float, default 1e-3
    betas : (float, float), default (0.9, 0.999)
        Each in [0, 1).
    eps : float, default 1e-8
    weight_decay : float, default 0
        L2 penalty, added to the gradient (coupled).
    amsgrad : bool, default False

    State: ``exp_avg`` (m), ``exp_avg_sq`` (v), and ``max_exp_avg_sq`` (v_max) with amsgrad.
    """

    hyper_names = ("lr", "betas", "eps", "weight_decay", "amsgrad")
    decoupled: ClassVar[bool] = False
    betas: tuple[float, float]
    eps: float
    weight_decay: float
    amsgrad: bool

    def __init__(self, params: Any, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps,
                                  "weight_decay": weight_decay, "amsgrad": amsgrad})

    @classmethod
    def _check_hyper(cls, h: Mapping[str, Any]) -> dict[str, Any]:
        betas = h["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair (beta1, beta2), e.g. (0.9, 0.999); got "
                            f"{betas!r}")
        b = tuple(check_scalar(x, f"betas[{i}]", float, min_val=0, max_val=1,
                               include_boundaries="left") for i, x in enumerate(betas))
        return {**_nonneg(h, "lr"), "betas": b, **_nonneg(h, "eps", "weight_decay"),
                "amsgrad": check_scalar(h["amsgrad"], "amsgrad", bool)}

    @classmethod
    def _slots(cls, h: Mapping[str, Any]) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if h["amsgrad"] else ())

    def _update(self, p: Array, g: Array, state: dict[str, Array], s1: Array, s2: Array) -> None:
        t, lr, wd = self.step_count, self.lr, self.weight_decay
        beta1, beta2 = self.betas
        if self.decoupled:
            if wd != 0:
                p *= 1 - lr * wd                                  # p = p (1 - lr wd)
            d = g
        else:
            d = self._decayed(p, g, wd, s1)                       # d = g + wd p
        m, v = state["exp_avg"], state["exp_avg_sq"]
        np.subtract(d, m, out=s2)                                 # m = m + (1 - beta1)(d - m)
        s2 *= 1 - beta1
        m += s2
        v *= beta2                                                # v = beta2 v + (1 - beta2) d^2
        np.multiply(d, d, out=s2)
        s2 *= 1 - beta2
        v += s2
        if self.amsgrad:
            v = np.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
        np.sqrt(v, out=s2)                                        # sqrt(v) / sqrt(1 - beta2^t)
        s2 /= (1 - beta2**t) ** 0.5
        s2 += self.eps                                            #   + eps
        np.divide(m, s2, out=s2)                                  # p = p - lr / (1 - beta1^t)
        s2 *= -(lr / (1 - beta1**t))                              #         * m / denominator
        p += s2


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), like ``torch.optim.AdamW``::

        p = p * (1 - lr * weight_decay)
        then Adam's update with d = g (the decay never enters m or v)

    Same arguments and state as :class:`Adam`, but ``weight_decay`` defaults to 1e-2.
    """

    decoupled = True

    def __init__(self, params: Any, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad)


class RMSprop(Optimizer):
    """RMSprop (Hinton), like ``torch.optim.RMSprop``::

        d = g + weight_decay * p
        s = alpha * s + (1 - alpha) * d^2
        a = alpha * a + (1 - alpha) * d                 (centered only)
        r = sqrt(s - a^2) + eps    if centered else    r = sqrt(s) + eps
        if momentum > 0:
            b = momentum * b + d / r
            p = p - lr * b
        else:
            p = p - lr * d / r

    Parameters
    ----------
    params : Module
        Anything with ``named_parameters()`` and ``grads``; its arrays are updated in place.
    lr : float, default 1e-2
    alpha : float, default 0.99
        Smoothing constant, in [0, 1].
    eps : float, default 1e-8
    weight_decay : float, default 0
    momentum : float, default 0
    centered : bool, default False
        Normalise by an estimate of the gradient's variance instead of its second moment.

    State: ``square_avg`` (s), ``momentum_buffer`` (b) when momentum > 0, ``grad_avg`` (a)
    when centered.
    """

    hyper_names = ("lr", "alpha", "eps", "weight_decay", "momentum", "centered")
    alpha: float
    eps: float
    weight_decay: float
    momentum: float
    centered: bool

    def __init__(self, params: Any, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0,
                 centered: bool = False) -> None:
        super().__init__(params, {"lr": lr, "alpha": alpha, "eps": eps,
                                  "weight_decay": weight_decay, "momentum": momentum,
                                  "centered": centered})

    @classmethod
    def _check_hyper(cls, h: Mapping[str, Any]) -> dict[str, Any]:
        return {**_nonneg(h, "lr"),
                "alpha": check_scalar(h["alpha"], "alpha", float, min_val=0, max_val=1),
                **_nonneg(h, "eps", "weight_decay", "momentum"),
                "centered": check_scalar(h["centered"], "centered", bool)}

    @classmethod
    def _slots(cls, h: Mapping[str, Any]) -> tuple[str, ...]:
        return (("square_avg",) + (("momentum_buffer",) if h["momentum"] > 0 else ())
                + (("grad_avg",) if h["centered"] else ()))

    def _update(self, p: Array, g: Array, state: dict[str, Array], s1: Array, s2: Array) -> None:
        alpha = self.alpha
        d = self._decayed(p, g, self.weight_decay, s1)            # d = g + wd p
        s = state["square_avg"]
        s *= alpha                                                # s = alpha s + (1 - alpha) d^2
        np.multiply(d, d, out=s2)
        s2 *= 1 - alpha
        s += s2
        if self.centered:
            a = state["grad_avg"]
            np.subtract(d, a, out=s2)                             # a = a + (1 - alpha)(d - a)
            s2 *= 1 - alpha
            a += s2
            np.multiply(a, a, out=s2)                             # r = sqrt(s - a^2) + eps
            np.subtract(s, s2, out=s2)
            np.sqrt(s2, out=s2)
        else:
            np.sqrt(s, out=s2)                                    # r = sqrt(s) + eps
        s2 += self.eps
        np.divide(d, s2, out=s2)                                  # d / r
        if self.momentum > 0:
            b = state["momentum_buffer"]
            b *= self.momentum                                    # b = momentum b + d / r
            b += s2
            np.multiply(b, -self.lr, out=s2)                      # p = p - lr b
        else:
            s2 *= -self.lr                                        # p = p - lr d / r
        p += s2


class Adagrad(Optimizer):
    """Adagrad (Duchi et al.), like ``torch.optim.Adagrad``::

        d = g + weight_decay * p
        clr = lr / (1 + (t - 1) * lr_decay)
        s = s + d^2                                     (s starts at initial_accumulator_value)
        p = p - clr * d / (sqrt(s) + eps)

    Parameters
    ----------
    params : Module
        Anything with ``named_parameters()`` and ``grads``; its arrays are updated in place.
    lr : float, default 1e-2
    lr_decay : float, default 0
    weight_decay : float, default 0
    initial_accumulator_value : float, default 0
    eps : float, default 1e-10

    State: ``sum`` (s).
    """

    hyper_names = ("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps")
    lr_decay: float
    weight_decay: float
    initial_accumulator_value: float
    eps: float

    def __init__(self, params: Any, lr: float = 1e-2, lr_decay: float = 0.0,
                 weight_decay: float = 0.0, initial_accumulator_value: float = 0.0,
                 eps: float = 1e-10) -> None:
        super().__init__(params, {"lr": lr, "lr_decay": lr_decay, "weight_decay": weight_decay,
                                  "initial_accumulator_value": initial_accumulator_value,
                                  "eps": eps})

    @classmethod
    def _check_hyper(cls, h: Mapping[str, Any]) -> dict[str, Any]:
        return _nonneg(h, *cls.hyper_names)

    @classmethod
    def _slots(cls, h: Mapping[str, Any]) -> tuple[str, ...]:
        return ("sum",)

    def _init_slot(self, slot: str, p: Array) -> Array:
        return np.full_like(p, self.initial_accumulator_value)

    def _update(self, p: Array, g: Array, state: dict[str, Array], s1: Array, s2: Array) -> None:
        d = self._decayed(p, g, self.weight_decay, s1)            # d = g + wd p
        clr = self.lr / (1 + (self.step_count - 1) * self.lr_decay)
        s = state["sum"]
        np.multiply(d, d, out=s2)                                 # s = s + d^2
        s += s2
        np.sqrt(s, out=s2)                                        # p = p - clr d / (sqrt(s) + eps)
        s2 += self.eps
        np.divide(d, s2, out=s2)
        s2 *= -clr
        p += s2


# ------------------------------------------------------------------------------------------------
# gradient clipping
# ------------------------------------------------------------------------------------------------


def _grad_list(grads: Any, fn: str) -> list[Array]:
    """The gradient arrays of a module, a dict name -> array, a list of arrays or one array."""
    if hasattr(grads, "named_parameters") and hasattr(grads, "grads"):
        grads = grads.grads
    if isinstance(grads, np.ndarray):
        arrays: list[Any] = [grads]
    elif isinstance(grads, Mapping):
        arrays = list(grads.values())
    elif isinstance(grads, (list, tuple)):
        arrays = list(grads)
    else:
        raise TypeError(f"{fn} takes a module, a dict name -> gradient array, or a list of "
                        f"arrays; got {type(grads).__name__}. Pass model or model.grads.")
    for a in arrays:
        if not isinstance(a, np.ndarray) or a.dtype.kind != "f":
            raise TypeError(f"{fn}: every gradient must be a float NumPy array; got "
                            f"{getattr(a, 'dtype', type(a).__name__)}")
    return arrays


def clip_grad_norm_(grads: Any, max_norm: float, norm_type: float = 2.0) -> float:
    """Scale the gradients in place so that their total norm is at most ``max_norm``.

    Like ``torch.nn.utils.clip_grad_norm_``::

        total = || (||g_1||_q, ..., ||g_n||_q) ||_q     (the q-norm of all entries as one vector)
        c = max_norm / (total + 1e-6)
        g_i = c * g_i   for every i, only when c < 1

    Parameters
    ----------
    grads : Module, dict name -> ndarray, or list of ndarrays
        The gradients (a module's ``grads``), changed in place.
    max_norm : float
        Largest allowed total norm, >= 0.
    norm_type : float, default 2.0
        q > 0, or ``inf`` (also ``"inf"``) for the largest absolute entry.

    Returns
    -------
    float
        The total norm before clipping. If it is NaN or Inf nothing is scaled (PyTorch would
        scale by 0 or by NaN): the caller sees the non-finite norm and decides, e.g. to skip
        the step.
    """
    arrays = _grad_list(grads, "clip_grad_norm_")
    max_norm = max_norm if max_norm == math.inf else check_scalar(  # inf: only measure
        max_norm, "max_norm", float, min_val=0)
    q = math.inf if norm_type in (math.inf, "inf") else check_scalar(
        norm_type, "norm_type", float, min_val=0, include_boundaries="neither")
    norms = [np.linalg.norm(np.asarray(a, np.float64).ravel(), q) if a.size else 0.0
             for a in arrays]
    total = float(np.linalg.norm(np.asarray(norms, np.float64), q)) if norms else 0.0
    if not math.isfinite(total):
        return total
    coef = max_norm / (total + 1e-6)
    if coef < 1.0:
        for a in arrays:
            np.multiply(a, coef, out=a)
    return total


def clip_grad_value_(grads: Any, clip_value: float) -> None:
    """Clip every gradient entry to ``[-clip_value, clip_value]``, in place, like
    ``torch.nn.utils.clip_grad_value_``::

        g = min(max(g, -clip_value), clip_value)

    ``grads`` is a module, a dict name -> ndarray or a list of ndarrays; NaN stays NaN.
    """
    arrays = _grad_list(grads, "clip_grad_value_")
    c = check_scalar(clip_value, "clip_value", float, min_val=0)
    for a in arrays:
        np.clip(a, -c, c, out=a)


# ------------------------------------------------------------------------------------------------
# learning-rate schedules
# ------------------------------------------------------------------------------------------------


class LRScheduler:
    """Base class: ``optimizer.lr = get_lr()``, a closed form in ``base_lr`` and ``last_epoch``.

    Building a scheduler records ``base_lr = optimizer.lr``, sets ``last_epoch = 0`` and writes
    the epoch-0 rate; each ``step()`` (call it after ``optimizer.step()``) advances
    ``last_epoch`` by one and writes the new rate. The values are those of the
    ``torch.optim.lr_scheduler`` class of the same name. Being closed forms, the rates do not
    drift, and a rate set by hand is overwritten at the next ``step()``.
    """

    hyper_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, optimizer: Optimizer, hyper: dict[str, Any]) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__} takes an rnnkit optimizer; got "
                            f"{type(optimizer).__name__}")
        for k, v in self._check_hyper(hyper).items():
            setattr(self, k, v)
        self.optimizer = optimizer
        self.base_lr = float(optimizer.lr)
        self.last_epoch = 0
        self.optimizer.lr = self.get_lr()

    @classmethod
    def _check_hyper(cls, h: Mapping[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def get_lr(self) -> float:
        """The rate at ``last_epoch``."""
        raise NotImplementedError

    def get_last_lr(self) -> float:
        return self.get_lr()

    def step(self) -> None:
        self.last_epoch += 1
        self.optimizer.lr = self.get_lr()

    def state_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict: type name, base_lr, last_epoch and the hyper-parameters."""
        return {"type": type(self).__name__, "base_lr": self.base_lr,
                "last_epoch": self.last_epoch,
                **{k: getattr(self, k) for k in self.hyper_names}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a ``state_dict()`` (checked first; on error nothing changes) and write the
        restored rate to the optimizer."""
        kind = type(self).__name__
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be the dict returned by state_dict(); got "
                            f"{type(state).__name__}")
        want = {"type", "base_lr", "last_epoch", *self.hyper_names}
        if set(state) != want:
            raise ValueError(f"{kind} state must have exactly the keys {sorted(want)}; got "
                             f"{sorted(map(str, state))}")
        if state["type"] != kind:
            raise ValueError(f"this state was saved from {state['type']!r}; this scheduler is "
                             f"{kind!r}")
        try:
            hyper = self._check_hyper(state)
            base_lr = check_scalar(state["base_lr"], "base_lr", float, min_val=0)
            last_epoch = check_scalar(state["last_epoch"], "last_epoch", int, min_val=0)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{kind} state is invalid: {e}") from e
        for k, v in hyper.items():
            setattr(self, k, v)
        self.base_lr, self.last_epoch = base_lr, last_epoch
        self.optimizer.lr = self.get_lr()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.hyper_names)
        return f"{type(self).__name__}({args}; last_epoch={self.last_epoch})"


def _gamma(value: Any) -> float:
    return check_scalar(value, "gamma", float, min_val=0, include_boundaries="neither")


class StepLR(LRScheduler):
    """Decay by ``gamma`` every ``step_size`` epochs::

        lr = base_lr * gamma ^ floor(last_epoch / step_size)
    """

    hyper_names = ("step_size", "gamma")
    step_size: int
    gamma: float

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        super().__init__(optimizer, {"step_size": step_size, "gamma": gamma})

    @classmethod
    def _check_hyper(cls, h: Mapping[str, Any]) -> dict[str, Any]:
        return {"step_size": check_scalar(h["step_size"], "step_size", int, min_val=1),
                "gamma": _gamma(h["gamma"])}

    def get_lr(self) -> float:
        return self.base_lr * self.gamma ** (self.last_epoch // self.step_size)


class ExponentialLR(LRScheduler):
    """Decay by ``gamma`` every epoch::

        lr = base_lr * gamma ^ last_epoch
    """

    hyper_names = ("gamma",)
    gamma: float

    def __init__(self, optimizer: Optimizer, gamma: float) -> None:
        super().__init__(optimizer, {"gamma": gamma})

    @classmethod
    def _check_hyper(cls, h: Mapping[str, Any]) -> dict[str, Any]:
        return {"gamma": _gamma(h["gamma"])}

    def get_lr(self) -> float:
        return self.base_lr * self.gamma**self.last_epoch


class CosineAnnealingLR(LRScheduler):
    """Cosine annealing from ``base_lr`` down to ``eta_min`` over ``T_max`` epochs::

        lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * last_epoch / T_max)) / 2

    As in PyTorch the cosine does not stop at ``T_max``: past it the rate climbs back towards
    ``base_lr`` (period ``2 T_max``). Set ``T_max`` to the length of the run.
    """

    hyper_names = ("T_max", "eta_min")
    T_max: int
    eta_min: float

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0) -> None:
        super().__init__(optimizer, {"T_max": T_max, "eta_min": eta_min})

    @classmethod
    def _check_hyper(cls, h: Mapping[str, Any]) -> dict[str, Any]:
        return {"T_max": check_scalar(h["T_max"], "T_max", int, min_val=1),
                **_nonneg(h, "eta_min")}

    def get_lr(self) -> float:
        cos = math.cos(math.pi * self.last_epoch / self.T_max)
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + cos) / 2


class LinearLR(LRScheduler):
    """Linear change of the rate's factor over ``total_iters`` epochs, then constant; with a
    small ``start_factor`` this is the usual linear warm-up::

        lr = base_lr * (start_factor
                        + (end_factor - start_factor) * min(last_epoch, total_iters) / total_iters)

    ``0 < start_factor <= 1``, ``0 <= end_factor <= 1``, as in PyTorch.
    """

    hyper_names = ("start_factor", "end_factor", "total_iters")
    start_factor: float
    end_factor: float
    total_iters: int

    def __init__(self, optimizer: Optimizer, start_factor: float = 1.0 / 3,
                 end_factor: float = 1.0, total_iters: int = 5) -> None:
        super().__init__(optimizer, {"start_factor": start_factor, "end_factor": end_factor,
                                     "total_iters": total_iters})

    @classmethod
    def _check_hyper(cls, h: Mapping[str, Any]) -> dict[str, Any]:
        return {"start_factor": check_scalar(h["start_factor"], "start_factor", float,
                                             min_val=0, max_val=1, include_boundaries="right"),
                "end_factor": check_scalar(h["end_factor"], "end_factor", float, min_val=0,
                                           max_val=1),
                "total_iters": check_scalar(h["total_iters"], "total_iters", int, min_val=1)}

    def get_lr(self) -> float:
        frac = min(self.last_epoch, self.total_iters) / self.total_iters
        return self.base_lr * (self.start_factor + (self.end_factor - self.start_factor) * frac)
