"""What computes a training step: NumPy (rnnkit's own layers) or PyTorch (its twin, on the CPU
or a GPU). The trainer (``train.py``) is one; it asks its engine for three things:

    loss, hn, ok = engine.step(batch, carry)   forward, loss, backward, clipping, optimizer
                                               step (ok False: non-finite, nothing applied)
    engine.sync()                              the NumPy model and optimizer hold the current
                                               weights and state (before evaluating, sampling
                                               and saving: the checkpoint is the same for both)
    engine.load()                              the engine takes them from the NumPy objects
                                               (after a resume, from either backend)

plus ``carry_to_numpy``/``carry_from_numpy`` for the hidden state carried across windows. The
NumPy model and optimizer stay the format of the checkpoint: the torch optimizer's state maps
one to one onto rnnkit's (the same slot names, ``exp_avg`` ..., and the step count).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import checks as check
from . import optim
from .layers import softmax_cross_entropy
from .models import LanguageModel
from .recurrent import State
from .text import SentenceBatch, StreamBatch

BACKENDS = ("numpy", "torch")


def distributed() -> tuple[int, int]:
    """``(rank, world_size)`` of a process ``torchrun`` started (RANK, WORLD_SIZE in the
    environment); ``(0, 1)`` for a plain process."""
    import os

    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0, 1
    return (rank, world) if world > 1 else (0, 1)


def _finite(state: State) -> bool:
    return all(np.isfinite(a).all() for a in (state if isinstance(state, tuple) else (state,)))


class NumpyEngine:
    """rnnkit's own forward and hand-written backward, in place on the NumPy model."""

    name = "numpy"

    def __init__(self, model: LanguageModel, opt: optim.Optimizer, cfg: Any) -> None:
        self.model, self.opt, self.cfg = model, opt, cfg

    def step(self, batch: StreamBatch | SentenceBatch, carry: State | None
             ) -> tuple[float, State | None, bool]:
        model, cfg = self.model, self.cfg
        if isinstance(batch, StreamBatch):
            logits, hn, cache = model.forward(batch.x, carry)
            loss, dlogits, _ = softmax_cross_entropy(logits, batch.y)
        else:
            logits, hn, cache = model.forward(batch.x, None, batch.lengths)
            loss, dlogits, _ = softmax_cross_entropy(logits, batch.y, batch.mask)
        model.zero_grad()
        ok = math.isfinite(loss) and _finite(hn)
        if ok:
            model.backward(dlogits, cache)
            if cfg.clip_value is not None:
                optim.clip_grad_value_(model, cfg.clip_value)
            norm = optim.clip_grad_norm_(model, cfg.grad_clip if cfg.grad_clip else math.inf)
            # a step whose update would make a weight non-finite is not applied
            ok = math.isfinite(norm) and self.opt.step() is not False
        if not ok:
            model.zero_grad()
        return loss, hn, ok

    rank, world = 0, 1

    def agree(self, x: float) -> float:
        """The value every process uses (rank 0's); one process: ``x``."""
        return x

    def sync(self) -> None:
        """Nothing to do: the NumPy objects are the engine."""

    def load(self) -> None:
        """Nothing to do."""

    def carry_to_numpy(self, carry: Any) -> State | None:
        return carry

    def carry_from_numpy(self, carry: State | None) -> Any:
        return carry


class TorchEngine:
    """The PyTorch twin (``rnnkit.pytorch``) with the ``torch.optim`` optimizer of the same
    name and hyper-parameters, the same clipping and the same non-finite guard."""

    name = "torch"

    def __init__(self, model: LanguageModel, opt: optim.Optimizer, cfg: Any,
                 device: str = "cpu") -> None:
        self.torch = torch = check.require("torch", "torch", "--backend torch")
        from .pytorch import to_torch

        try:
            self.device = torch.device(device)
            torch.empty(0, device=self.device)
        except (RuntimeError, ValueError, AssertionError) as e:
            raise ValueError(f"--device {device!r} is not usable here ({e}); use cpu, or "
                             "cuda / cuda:N on a machine with a GPU") from None
        self.model, self.opt, self.cfg = model, opt, cfg
        self.rank, self.world = distributed()
        if self.world > 1:
            import torch.distributed as dist

            if cfg.batch_size % self.world:
                raise ValueError(f"--batch-size {cfg.batch_size} must be a multiple of the "
                                 f"{self.world} processes: each takes an equal share")
            if self.device.type == "cuda" and self.device.index is None:
                self.device = torch.device("cuda", int(__import__("os").environ.get(
                    "LOCAL_RANK", "0")))
            if not dist.is_initialized():
                dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
            self.dist = dist
        self.tm = to_torch(model).to(self.device)
        self.names = [n for n, _ in self.tm.named_parameters()]
        self.params = [p for _, p in self.tm.named_parameters()]
        hyper = {k: tuple(v) if isinstance(v, list) else v for k, v in opt.hyper.items()}
        kind = type(opt).__name__
        self.topt = getattr(torch.optim, kind)(self.params, **hyper)
        self.load()
        self.net: Any = self.tm
        if self.world > 1:        # gradients averaged over the processes in backward
            from torch.nn.parallel import DistributedDataParallel

            self.net = DistributedDataParallel(self.tm)

    def _cols(self, B: int) -> slice:
        """This process's share of the batch columns (streams, or lines)."""
        k = B // self.world
        return slice(self.rank * k, (self.rank + 1) * k)

    def _sum(self, *xs: float) -> list[float]:
        """Each of ``xs`` summed over the processes (one all-reduce)."""
        if self.world == 1:
            return list(xs)
        t = self.torch.tensor(xs, dtype=self.torch.float64)
        self.dist.all_reduce(t)
        return t.tolist()

    def agree(self, x: float) -> float:
        """Rank 0's value in every process (a clock, a stop flag): they stay in step."""
        if self.world == 1:
            return x
        t = self.torch.tensor([x], dtype=self.torch.float64)
        self.dist.broadcast(t, 0)
        return float(t[0])

    # ---- one step -------------------------------------------------------------------------
    def step(self, batch: StreamBatch | SentenceBatch, carry: Any) -> tuple[float, Any, bool]:
        torch, cfg = self.torch, self.cfg
        for g in self.topt.param_groups:            # the schedule lives in the NumPy optimizer
            g["lr"] = self.opt.lr
        self.tm.train(self.model.training)
        x = torch.from_numpy(np.ascontiguousarray(batch.x, dtype=np.int64)).to(self.device)
        y = torch.from_numpy(np.ascontiguousarray(batch.y, dtype=np.int64)).to(self.device)
        V = self.model.config.vocab_size
        cols = self._cols(x.shape[1])
        x, y = x[:, cols], y[:, cols]
        if isinstance(batch, StreamBatch):
            logits, hn = self.net(x, carry)
            local = torch.nn.functional.cross_entropy(logits.reshape(-1, V), y.reshape(-1),
                                                      reduction="sum")
            n = float(y.numel())
        else:
            logits, hn = self.net(x, None, batch.lengths[cols])
            mask = torch.from_numpy(np.ascontiguousarray(batch.mask[:, cols])).to(self.device)
            local = torch.nn.functional.cross_entropy(logits[mask], y[mask], reduction="sum")
            n = float(mask.sum())
        states = hn if isinstance(hn, tuple) else (hn,)
        bad = float(not all(bool(torch.isfinite(s).all()) for s in states))
        # one reduction for the batch's token count, loss sum and non-finite states
        total, loss_sum, bad = self._sum(n, float(local.detach()), bad)
        # the mean over the whole batch; DDP averages the processes' gradients, hence * world
        loss_t = local * (self.world / total)
        self.topt.zero_grad(set_to_none=False)
        loss = loss_sum / total
        ok = math.isfinite(loss) and bad == 0
        if ok:
            loss_t.backward()
            if cfg.clip_value is not None:
                torch.nn.utils.clip_grad_value_(self.params, cfg.clip_value)
            norm = torch.nn.utils.clip_grad_norm_(
                self.params, cfg.grad_clip if cfg.grad_clip else math.inf)
            ok = math.isfinite(float(norm)) and self._guarded_step()
            if ok:
                self.opt.step_count += 1          # the count the checkpoint keeps
        self.topt.zero_grad(set_to_none=False)
        hn = tuple(s.detach() for s in hn) if isinstance(hn, tuple) else hn.detach()
        return loss, hn, ok

    def _guarded_step(self) -> bool:
        """``topt.step()``, undone where it would leave a weight or state entry non-finite."""
        torch = self.torch
        with torch.no_grad():
            saved = [p.detach().clone() for p in self.params]
            saved_state = {p: {k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()}
                           for p, s in self.topt.state.items()}
            self.topt.step()
            if all(bool(torch.isfinite(p).all()) for p in self.params):
                return True
            for p, s in zip(self.params, saved, strict=True):
                p.copy_(s)
            self.topt.state.clear()
            self.topt.state.update(saved_state)
        return False

    # ---- the NumPy objects: the checkpoint's format -----------------------------------------
    def sync(self) -> None:
        """The NumPy model's weights and optimizer state from the torch ones."""
        named = dict(self.tm.named_parameters())
        for name, arr in self.model.named_parameters():
            np.copyto(arr, named[name].detach().cpu().numpy())
        for name, p in zip(self.names, self.params, strict=True):
            state = self.topt.state.get(p, {})
            for slot, arr in self.opt.state[name].items():
                if slot in state and state[slot] is not None:
                    np.copyto(arr, state[slot].detach().cpu().numpy())

    def load(self) -> None:
        """The torch weights and optimizer state from the NumPy ones."""
        torch = self.torch
        named = dict(self.tm.named_parameters())
        with torch.no_grad():
            for name, arr in self.model.named_parameters():
                named[name].copy_(torch.from_numpy(np.array(arr, copy=True)))
        self.topt.state.clear()
        n = self.opt.step_count
        if n == 0:
            return
        step_dtype = torch.get_default_dtype()
        for name, p in zip(self.names, self.params, strict=True):
            state: dict[str, Any] = {}
            if type(self.opt).__name__ != "SGD":
                state["step"] = torch.tensor(float(n), dtype=step_dtype)
            for slot, arr in self.opt.state[name].items():
                state[slot] = torch.from_numpy(np.array(arr, copy=True)).to(self.device)
            if state:
                self.topt.state[p] = state

    def carry_to_numpy(self, carry: Any) -> State | None:
        """The whole batch's carried state (every process's columns, gathered)."""
        if carry is None:
            return None
        parts = carry if isinstance(carry, tuple) else (carry,)
        out = []
        for c in parts:
            c = c.detach()
            if self.world > 1:
                pieces = [self.torch.empty_like(c) for _ in range(self.world)]
                self.dist.all_gather(pieces, c.contiguous())
                c = self.torch.cat(pieces, dim=1)
            out.append(c.cpu().numpy().copy())
        return (out[0], out[1]) if isinstance(carry, tuple) else out[0]

    def carry_from_numpy(self, carry: State | None) -> Any:
        """This process's columns of a saved carried state."""
        if carry is None:
            return None
        torch = self.torch
        parts = carry if isinstance(carry, tuple) else (carry,)
        out = [torch.from_numpy(np.array(c[:, self._cols(c.shape[1])], copy=True)).to(
            self.device) for c in parts]
        return (out[0], out[1]) if isinstance(carry, tuple) else out[0]


def make_engine(backend: str, model: LanguageModel, opt: optim.Optimizer, cfg: Any,
                device: str = "cpu") -> NumpyEngine | TorchEngine:
    if backend == "numpy":
        if device != "cpu":
            raise ValueError(f"--device {device!r} needs --backend torch; the numpy backend "
                             "runs on the CPU")
        if distributed()[1] > 1:
            raise ValueError("several processes (torchrun) need --backend torch; the numpy "
                             "backend runs in one")
        return NumpyEngine(model, opt, cfg)
    if backend == "torch":
        return TorchEngine(model, opt, cfg, device)
    raise ValueError(f"backend must be one of {list(BACKENDS)}; got {backend!r}")
