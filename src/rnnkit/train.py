"""Training a language model on a text, with checkpoints that lose nothing.

    cfg = TrainConfig(corpus="shakespeare", max_minutes=10)
    summary = Trainer(cfg, out="runs/shakespeare").run()

One step: a batch of token windows -> ``LanguageModel.forward`` -> fused softmax cross-entropy
-> ``backward`` -> global-norm clipping -> optimizer step. In stream mode (char-rnn's) the
hidden state is carried from one window to the next (truncated BPTT) and reset at each epoch;
in sentence mode (the chapter's) each line is one padded sequence with its length.

A checkpoint (``last.safetensors``, and ``best.safetensors`` at the best validation loss) holds
the weights, the optimizer state, the carried hidden state, the vocabulary, both configs, the
data position and every random generator's state, so ``resume=True`` continues exactly: the
losses after resuming equal, bit for bit, those of a run that was never stopped. A step whose
loss or gradient is not finite is skipped and counted and never reaches a checkpoint; too many
in a row stop the run. Ctrl-C (SIGINT) and SIGTERM finish the current step, save, and stop.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import signal
import sys
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from . import checkpoint, optim
from .backends import BACKENDS, distributed, make_engine
from .checks import check_scalar
from .corpora import load_corpus
from .files import printable
from .generate import continuation_text, prime_ids, sample
from .layers import softmax_cross_entropy
from .models import LanguageModel, LMConfig
from .module import eval_mode
from .recurrent import State
from .rundir import FollowerRunDir, RunDir, check_language_model, jsonable
from .text import (
    WORD,
    SentenceBatch,
    SentenceBatches,
    StreamBatch,
    StreamBatches,
    Vocab,
    build_vocab,
    iter_lines,
    specials_for,
    split_ids,
    tokenize,
)

Array = np.ndarray
OPTIMIZERS = {"sgd": optim.SGD, "adam": optim.Adam, "adamw": optim.AdamW,
              "rmsprop": optim.RMSprop, "adagrad": optim.Adagrad}


class TrainingError(RuntimeError):
    """The run cannot go on (e.g. too many non-finite steps in a row); nothing broken saved."""


@dataclass
class TrainConfig:
    """Everything that decides what a run computes (saved in every checkpoint)."""

    corpus: str = "shakespeare"
    level: str = "char"                 # char | word
    mode: str = "stream"                # stream (char-rnn) | sentence (the chapter)
    min_count: int = 1                  # word level: rarer words become <unk>
    val_fraction: float = 0.05          # the last part of the text is held out
    cell: str = "lstm"
    embedding_dim: int = 64
    hidden_size: int = 256
    num_layers: int = 2
    dropout: float = 0.0
    one_hot: bool = False
    seq_len: int = 64
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 2e-3
    weight_decay: float = 0.0
    momentum: float = 0.0               # sgd, rmsprop
    grad_clip: float | None = 5.0       # global L2 norm; None = off
    clip_value: float | None = None     # elementwise; None = off
    lr_decay: float = 1.0               # lr *= lr_decay after every epoch
    max_steps: int | None = None
    max_minutes: float | None = None    # training time (evaluation not counted)
    eval_interval: int = 250
    sample_length: int = 300
    temperature: float = 0.8
    max_bad_steps: int = 10             # non-finite steps in a row before giving up
    seed: int = 0
    dtype: str = "float32"
    backend: str = "numpy"              # numpy | torch (the PyTorch twin; backends.py)
    device: str = "cpu"                 # torch: cpu, cuda, cuda:N

    def __post_init__(self) -> None:
        for name, choices in (("level", ("char", "word")), ("mode", ("stream", "sentence")),
                              ("optimizer", tuple(OPTIMIZERS)), ("backend", BACKENDS)):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {list(choices)}; got "
                                 f"{getattr(self, name)!r}")
        for name in ("min_count", "seq_len", "batch_size", "eval_interval", "max_bad_steps",
                     "max_steps"):
            check_scalar(getattr(self, name), name, int, min_val=1,
                         allow_none=name == "max_steps")
        check_scalar(self.sample_length, "sample_length", int, min_val=0)
        check_scalar(self.seed, "seed", int, min_val=0)
        check_scalar(self.val_fraction, "val_fraction", float, min_val=0, max_val=1,
                     include_boundaries="neither")
        for name in ("lr", "grad_clip", "clip_value", "max_minutes"):
            check_scalar(getattr(self, name), name, float, min_val=0,
                         include_boundaries="right", allow_none=name != "lr")
        check_scalar(self.lr_decay, "lr_decay", float, min_val=0, max_val=1,
                     include_boundaries="right")
        check_scalar(self.temperature, "temperature", float, min_val=0)
        self.model_config()  # validates cell, sizes, dropout, dtype

    def command(self) -> str:
        """The ``rnnkit train`` command that asks for this config: the corpus and each setting
        that differs from the default, as a flag (the flags are these fields' names)."""
        default = TrainConfig()
        words = ["rnnkit", "train", self.corpus]
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "corpus" or v == getattr(default, f.name) or v is None or v is False:
                continue                       # (a clip switched off has no flag: API only)
            words.append("--" + f.name.replace("_", "-"))
            if v is not True:
                words.append(repr(v) if isinstance(v, float) else str(v))
        return shlex.join(words)

    def model_config(self, vocab_size: int = 1) -> LMConfig:
        return LMConfig(vocab_size=vocab_size, cell=self.cell, embedding_dim=self.embedding_dim,
                        hidden_size=self.hidden_size, num_layers=self.num_layers,
                        dropout=self.dropout, one_hot=self.one_hot, dtype=self.dtype)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Any) -> TrainConfig:
        if not isinstance(d, dict):
            raise ValueError("train config must be a JSON object")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"train config has unknown keys {unknown}")
        return cls(**d)


# the settings a resumed run may change: they decide when to stop or report, or which engine
# computes the same numbers, not what is computed
BUDGET_FIELDS = ("max_steps", "max_minutes", "eval_interval", "sample_length", "temperature",
                 "max_bad_steps", "backend", "device")


# ------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------


@dataclass
class Data:
    vocab: Vocab
    train: StreamBatches | SentenceBatches
    val: StreamBatches | SentenceBatches
    text_crc: int
    corpus_source: str
    num_chars: int


def prepare_data(cfg: TrainConfig, vocab: Vocab | None = None) -> Data:
    """Read the corpus, build (or check) the vocabulary, split, and make the batchers."""
    corpus = load_corpus(cfg.corpus)
    text = corpus.text
    crc = zlib.crc32(text.encode("utf-8"))
    specials = specials_for(cfg.level, cfg.mode)
    if cfg.mode == "stream":
        if vocab is None:           # counted without a list of tokens: a corpus may be large
            tokens = text if cfg.level == "char" else (m.group() for m in WORD.finditer(text))
            vocab = build_vocab(tokens, specials=specials, min_count=cfg.min_count,
                                level=cfg.level)
        ids = vocab.encode_text(text)
        train_ids, val_ids = split_ids(ids, cfg.val_fraction)
        need = cfg.batch_size * cfg.seq_len + 1
        if len(train_ids) < need:
            raise ValueError(f"the corpus is too small for --batch-size {cfg.batch_size} and "
                             f"--seq-len {cfg.seq_len}: training needs at least {need} tokens, "
                             f"has {len(train_ids)}. Use smaller values or a longer text.")
        val_b = max(1, min(cfg.batch_size, (len(val_ids) - 1) // cfg.seq_len))
        if len(val_ids) < val_b * cfg.seq_len + 1:
            raise ValueError(f"the validation part ({len(val_ids)} tokens) is shorter than one "
                             f"window of --seq-len {cfg.seq_len}; use a larger --val-fraction "
                             "or a smaller --seq-len")
        train: StreamBatches | SentenceBatches = StreamBatches(train_ids, cfg.batch_size,
                                                               cfg.seq_len)
        val: StreamBatches | SentenceBatches = StreamBatches(val_ids, val_b, cfg.seq_len)
    else:
        if vocab is None:           # counted line by line: no list of every token
            vocab = build_vocab((t for line in iter_lines(text) for t in tokenize(line, cfg.level)),
                                specials=specials, min_count=cfg.min_count, level=cfg.level)
        line_ids = [ids for line in iter_lines(text) if (ids := vocab.encode_text(line)).size]
        train_lines, val_lines = split_ids(line_ids, cfg.val_fraction)
        if not train_lines or not val_lines:
            raise ValueError(f"sentence mode needs lines for both training and validation; the "
                             f"corpus has {len(line_ids)} non-empty lines")
        assert vocab.start_id is not None and vocab.end_id is not None
        train = SentenceBatches(train_lines, cfg.batch_size,
                                np.random.default_rng([cfg.seed, 1]), vocab.start_id,
                                vocab.end_id, max_len=cfg.seq_len, bucket=8)
        val = SentenceBatches(val_lines, cfg.batch_size, None, vocab.start_id, vocab.end_id,
                              shuffle=False, max_len=cfg.seq_len)
    return Data(vocab, train, val, crc, corpus.source, len(text))


def validation_start(text: str, level: str, mode: str, val_fraction: float) -> int:
    """Where the validation part of ``text`` begins, as a character offset, split exactly as
    :func:`rnnkit.train.prepare_data` splits it (:func:`~rnnkit.text.split_ids` holds out the
    last ``val_fraction``):

    * stream mode: of the TOKENS (``tokenize(text, level)``); the offset is that of the first
      validation token, then moved on to the first line that starts inside the validation part
      (when there is one), so the text read begins with a whole line the model never trained on;
    * sentence mode: of the non-empty LINES (``tokenize_lines``); the offset is that of the
      first validation line's first non-blank character.

    ``tokenize(text[offset:], level)`` is then the validation tokens (from that line on).
    """
    if mode == "sentence":      # each non-empty line's first non-blank character
        starts = [m.start() + len(m[0]) - len(m[0].lstrip()) for m in re.finditer(r"[^\n]+", text)
                  if m[0].strip()]
        return int(split_ids(starts, val_fraction)[1][0])
    at: Sequence[int] = range(len(text)) if level == "char" else \
        [m.start() for m in WORD.finditer(text)]
    start = at[int(split_ids(np.arange(len(at)), val_fraction)[1][0])]
    if start > 0 and text[start - 1] != "\n":
        nl = text.find("\n", start)
        if 0 <= nl < len(text) - 1:
            start = nl + 1
    return start


def validation_text(meta: dict[str, Any], level: str) -> tuple[str, str]:
    """The validation part of the checkpoint's corpus (text the model did not train on), split
    as ``rnnkit train`` split it for the checkpoint's mode and level (:func:`validation_start`)."""
    train = meta.get("train")
    if not isinstance(train, dict):
        train = {}
    name = train.get("corpus")
    if not isinstance(name, str):
        raise ValueError("the checkpoint names no corpus; give --text FILE")
    try:
        corpus = load_corpus(name)
    except (ValueError, OSError) as e:
        raise ValueError(f"the checkpoint's corpus {name!r} cannot be loaded ({e}); give "
                         "--text FILE") from None
    text = corpus.text
    crc = meta.get("data_crc")
    if isinstance(crc, int) and zlib.crc32(text.encode("utf-8")) != crc:
        raise ValueError(f"the checkpoint's corpus {name!r} is not the text the model was "
                         "trained on (it changed since): its validation part cannot be found; "
                         "give --text FILE")
    try:
        cfg = TrainConfig.from_json(train)
    except (ValueError, TypeError) as e:
        raise ValueError(f"the checkpoint's training config is unusable ({e}); give --text "
                         "FILE") from None
    vf, mode = cfg.val_fraction, cfg.mode
    try:
        start = validation_start(text, level, mode, vf)
    except ValueError as e:
        raise ValueError(f"the checkpoint's corpus {name!r}: {e}; give --text FILE") from None
    what = "lines" if mode == "sentence" else ("characters" if level == "char" else "tokens")
    return text[start:], (f"corpus {name}, its validation part (the last {vf:.0%} of its "
                          f"{what}, as rnnkit train held it out; unseen in training)")


# ------------------------------------------------------------------------------------------------
# evaluation
# ------------------------------------------------------------------------------------------------


def evaluate(model: LanguageModel, batches: StreamBatches | SentenceBatches,
             max_batches: int | None = None) -> float:
    """Mean cross-entropy (nats per token) over the validation batches, in eval mode; inf
    for a model whose loss or carried state is no longer finite."""
    total, count = 0.0, 0
    state: State | None = None
    with eval_mode(model):
        for k, batch in enumerate(batches.epoch_batches()):
            if max_batches is not None and k >= max_batches:
                break
            if isinstance(batch, SentenceBatch):
                logits, _ = model(batch.x, None, batch.lengths)
                loss, _, n = softmax_cross_entropy(logits, batch.y, batch.mask)
            else:
                assert isinstance(batch, StreamBatch)
                logits, state = model(batch.x, state)
                loss, _, n = softmax_cross_entropy(logits, batch.y)
                if not _finite(state):
                    return math.inf
            total += loss * n
            count += n
            if not math.isfinite(total):           # a diverged model: no need to go on
                return math.inf
    return total / max(count, 1)


def _finite(state: State) -> bool:
    return all(np.isfinite(a).all() for a in (state if isinstance(state, tuple) else (state,)))


def sample_text(model: LanguageModel, vocab: Vocab, length: int, rng: np.random.Generator,
                temperature: float = 0.8) -> str:
    """A sample for the training log, from ``<start>`` or a newline (``generate.prime_ids``)."""
    return continuation_text(vocab, "", sample(model, prime_ids(vocab), length, rng=rng,
                                               temperature=temperature, end_id=vocab.end_id))


# ------------------------------------------------------------------------------------------------
# checkpoints
# ------------------------------------------------------------------------------------------------


@contextmanager
def _interruptible() -> Iterator[list[int]]:
    """SIGINT/SIGTERM set a flag (the step in progress finishes) instead of raising."""
    caught: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        if caught:                      # a second Ctrl-C: stop at once
            raise KeyboardInterrupt
        caught.append(signum)

    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for s in old:
            signal.signal(s, handler)
    except ValueError:                  # not the main thread: no handlers, no flag
        pass
    try:
        yield caught
    finally:
        for s, h in old.items():
            with suppress(ValueError):
                signal.signal(s, h)


# ------------------------------------------------------------------------------------------------
# the trainer
# ------------------------------------------------------------------------------------------------


@dataclass
class Summary:
    step: int
    train_loss: float | None
    val_loss: float | None
    best_val: float | None
    train_seconds: float
    stopped_by: str
    skipped_steps: int
    out: Path


class Trainer:
    """A training run in ``out`` (layout and writes: ``rundir.RunDir``). With
    ``resume=True`` it continues the run saved in ``out``; ``overrides`` may change only the
    budget and reporting settings. The run holds the directory's lock from construction to
    the end of ``run()`` (or ``close()``): a second trainer on it is refused."""

    def __init__(self, cfg: TrainConfig | None, out: str | Path, *, resume: bool = False,
                 overrides: dict[str, Any] | None = None, log: TextIO | None = None,
                 progress: bool = True, before_step: Callable[[int], None] | None = None
                 ) -> None:
        self.out = Path(out)
        self.log = log if log is not None else sys.stdout
        self.progress = progress
        self.before_step = before_step
        self.budget_note = ""
        if not resume and cfg is None:
            raise ValueError("a new run needs a TrainConfig")
        rank, _ = distributed()
        if rank:                  # torchrun: rank 0 alone writes the run directory and prints
            self.log, self.progress = open(os.devnull, "w"), False  # noqa: SIM115
        self.run_dir = RunDir(self.out) if rank == 0 else FollowerRunDir(self.out)
        self.run_dir.acquire()
        try:
            self._setup(cfg, resume, dict(overrides or {}))
        except BaseException:
            self.run_dir.release(undo=True)
            raise

    def _setup(self, cfg: TrainConfig | None, resume: bool, overrides: dict[str, Any]) -> None:
        saved: tuple[dict[str, Array], dict[str, Any]] | None = None
        if resume:
            if not self.run_dir.has_run():
                raise checkpoint.CheckpointError(
                    f"--resume: {self.run_dir.last} does not exist; start without --resume, "
                    "or point --out at the directory of an earlier run")
            saved = checkpoint.load(self.run_dir.last, _expect_resumable)
            self.cfg = self._resumed_config(TrainConfig.from_json(saved[1]["train"]), overrides)
        else:
            assert cfg is not None
            held = [f.name for f in (self.run_dir.last, self.run_dir.best)
                    if f.exists() or f.is_symlink()]
            if held:            # a best alone is still another run's model: never mixed in
                raise FileExistsError(f"{self.out} already holds a run ({', '.join(held)}); use "
                                      "--resume to continue it, or another --out")
            self.cfg = cfg
        cfg = self.cfg
        vocab = Vocab.from_json(saved[1]["vocab"]) if saved else None
        self.data = prepare_data(cfg, vocab)
        if saved and saved[1].get("data_crc") != self.data.text_crc:
            raise checkpoint.CheckpointError(
                f"--resume: the corpus {cfg.corpus!r} is not the text this run was trained on "
                "(its checksum differs); resume with the same text")
        seeds = np.random.SeedSequence(cfg.seed).spawn(3)
        self.model = LanguageModel(cfg.model_config(len(self.data.vocab)),
                                   rng=np.random.default_rng(seeds[0]))
        self.sample_rng = np.random.default_rng(seeds[1])
        kw: dict[str, Any] = {"lr": cfg.lr, "weight_decay": cfg.weight_decay}
        if cfg.optimizer in ("sgd", "rmsprop"):
            kw["momentum"] = cfg.momentum
        self.opt = OPTIMIZERS[cfg.optimizer](self.model, **kw)
        self.sched = optim.ExponentialLR(self.opt, gamma=cfg.lr_decay)
        self.step = 0
        self.train_seconds = 0.0
        self.best_val: float | None = None
        self.best_step: int | None = None
        self.skipped = 0
        self.bad_streak = 0
        self.carry: State | None = None
        self.window: list[float] = []      # train losses since the last evaluation
        self._last_saved = 0
        if saved:
            self._restore(*saved)
        # the engine takes the (restored) weights, optimizer state and carried state; a
        # backend or device that cannot run fails here, before a new run writes anything
        self.engine = make_engine(cfg.backend, self.model, self.opt, cfg, cfg.device)
        self.carry = self.engine.carry_from_numpy(self.carry)
        if not saved:
            self.run_dir.new_log()

    def _resumed_config(self, base: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
        """The saved config with the budget and reporting settings given now. A budget given
        now (--max-steps, --max-minutes) replaces the saved one whole."""
        changed = {k: v for k, v in overrides.items() if k not in BUDGET_FIELDS
                   and getattr(base, k) != v}
        if changed:
            raise ValueError("--resume continues a run exactly, so only "
                             f"{', '.join(BUDGET_FIELDS)} may change; these differ from "
                             "the checkpoint: "
                             + ", ".join(f"--{k.replace('_', '-')} {v!r} (saved "
                                         f"{getattr(base, k)!r})" for k, v in changed.items()))
        d = base.to_json()
        if "max_steps" in overrides or "max_minutes" in overrides:
            d.update(max_steps=None, max_minutes=None)
        d.update({k: v for k, v in overrides.items() if k in BUDGET_FIELDS})
        cfg = TrainConfig(**d)
        self.budget_note = _budget(cfg) + ("" if _budget(cfg) == _budget(base) else
                                           f" (the saved budget was {_budget(base)})")
        return cfg

    def close(self) -> None:
        """Release the run directory (``run()`` does this when it ends)."""
        self.run_dir.release()

    # ---- checkpoint state ---------------------------------------------------------------------
    def _state(self, record: dict[str, Any] | None) -> tuple[dict[str, Array], dict[str, Any]]:
        self.engine.sync()
        tensors = {f"model.{k}": v for k, v in self.model.named_parameters()}
        ot, om = self.opt.state_dict()
        tensors |= {f"optim.{k}": v for k, v in ot.items()}
        carry = self.engine.carry_to_numpy(self.carry)
        if carry is not None:
            parts = carry if isinstance(carry, tuple) else (carry,)
            for name, arr in zip(("h", "c"), parts, strict=False):
                tensors[f"carry.{name}"] = arr
        meta = {
            "kind": "language-model",
            "model": self.model.config.to_json(),
            "vocab": self.data.vocab.to_json(),
            "train": self.cfg.to_json(),
            "corpus_source": self.data.corpus_source,
            "data_crc": self.data.text_crc,
            "step": self.step,
            "epoch": self.data.train.epoch,
            "train_seconds": self.train_seconds,
            "best_val": self.best_val,
            "best_step": self.best_step,
            "record": record,
            "skipped_steps": self.skipped,
            "bad_streak": self.bad_streak,
            "window": self.window,
            "data": self.data.train.state_dict(),
            "rng": {"model": self.model.rng.bit_generator.state,
                    "sample": self.sample_rng.bit_generator.state},
            "optim": om,
            "sched": self.sched.state_dict(),
        }
        return tensors, meta

    def _restore(self, tensors: dict[str, Array], meta: dict[str, Any]) -> None:
        try:
            self.model.load_state_dict({k[6:]: v for k, v in tensors.items()
                                        if k.startswith("model.")}, strict=True)
            self.opt.load_state_dict({k[6:]: v for k, v in tensors.items()
                                      if k.startswith("optim.")}, meta["optim"])
            self.sched.load_state_dict(meta["sched"])
            self.data.train.load_state_dict(meta["data"])
            self.model.rng.bit_generator.state = meta["rng"]["model"]
            self.sample_rng.bit_generator.state = meta["rng"]["sample"]
            self.step = check_scalar(meta["step"], "step", int, min_val=0)
            self.train_seconds = check_scalar(meta["train_seconds"], "train_seconds", float,
                                              min_val=0)
            self.best_val = check_scalar(meta["best_val"], "best_val", float, allow_none=True)
            self.best_step = check_scalar(meta.get("best_step"), "best_step", int, min_val=0,
                                          allow_none=True)
            self.skipped = check_scalar(meta["skipped_steps"], "skipped_steps", int, min_val=0)
            self.bad_streak = check_scalar(meta["bad_streak"], "bad_streak", int, min_val=0)
            self.window = [check_scalar(x, "window", float) for x in meta.get("window", [])]
            record = meta.get("record")
            if record is not None and not isinstance(record, dict):
                raise ValueError(f"its record is a {type(record).__name__}, not a dict")
            if "carry.h" in tensors:
                h = tensors["carry.h"].astype(self.model.dtype)
                self.carry = (h, tensors["carry.c"].astype(self.model.dtype)) \
                    if "carry.c" in tensors else h
        except (KeyError, ValueError, TypeError, OverflowError) as e:
            raise checkpoint.CheckpointError(f"{self.run_dir.last}: cannot resume from it: "
                                             f"{e}") from e
        self._last_saved = self.step
        self.run_dir.reconcile(self.step, record)
        self.run_dir.repair_best()

    def save(self, best: bool = False, record: dict[str, Any] | None = None) -> None:
        if best:
            self.best_step = self.step
        tensors, meta = self._state(record)
        self.run_dir.save(tensors, meta, best=best)
        self._last_saved = self.step

    # ---- the loop -----------------------------------------------------------------------------
    def train_step(self) -> float | None:
        """One optimizer step; returns the loss, or None if the step was skipped."""
        # a non-finite loss, gradient or update is detected and handled below, not warned about
        with np.errstate(all="ignore"):
            return self._train_step()

    def _train_step(self) -> float | None:
        batch = next(self.data.train)
        if isinstance(batch, StreamBatch):
            if batch.is_epoch_start:
                self.carry = None
                if self.step > 0:
                    self.sched.step()
        else:
            assert isinstance(batch, SentenceBatch)
            if batch.index == 0 and self.step > 0:
                self.sched.step()
        loss, hn, ok = self.engine.step(batch, self.carry)
        if not ok:
            self.skipped += 1
            self.bad_streak += 1
            if self.bad_streak >= self.cfg.max_bad_steps:
                raise TrainingError(
                    f"{self.bad_streak} steps in a row had a non-finite loss, state, gradient "
                    f"or update (at step {self.step + 1}); the run stops, and the last checkpoint "
                    f"(step {self._last_saved}) holds the last good weights. Try a lower --lr "
                    "or --grad-clip.")
            self.step += 1
            return None
        self.bad_streak = 0
        if isinstance(self.data.train, StreamBatches):
            self.carry = hn            # truncated BPTT: the next window starts here
        self.step += 1
        return loss

    def run(self) -> Summary:
        """Train until the budget is spent or SIGINT/SIGTERM; then release the directory."""
        try:              # non-finite numbers are found and handled, not warned about
            with np.errstate(all="ignore"):
                return self._run()
        finally:
            self.close()

    def _run(self) -> Summary:
        cfg = self.cfg
        p = self.model.num_parameters()
        print(f"corpus {printable(cfg.corpus, keep='')}: {self.data.num_chars:,} characters, "
              f"vocabulary {len(self.data.vocab)} ({cfg.level}, {cfg.mode} mode) | "
              f"{printable(self.data.corpus_source, keep='')}", file=self.log)
        print(f"model {cfg.num_layers} x {cfg.hidden_size} {cfg.cell.upper()}, {p:,} parameters,"
              f" {cfg.dtype} | {cfg.optimizer} lr {cfg.lr:g} | batch {cfg.batch_size} x "
              f"{cfg.seq_len} | out {printable(self.out, keep='')}", file=self.log)
        if self.step:
            print(f"resuming at step {self.step} ({self.train_seconds / 60:.1f} min trained) "
                  f"under {self.budget_note}", file=self.log)
        bar = _Progress(cfg, self.step, self.train_seconds, self.progress, self.log)
        stopped_by = "max_steps"
        last_loss: float | None = None
        val: float | None = None
        tokens_per_step = cfg.batch_size * cfg.seq_len
        at_once = False
        with _interruptible() as interrupted:
            try:
                while True:
                    if cfg.max_steps is not None and self.step >= cfg.max_steps:
                        stopped_by = "max_steps"
                        break
                    if cfg.max_minutes is not None and \
                            self.train_seconds >= 60 * cfg.max_minutes:
                        stopped_by = "max_minutes"
                        break
                    if self.engine.agree(float(bool(interrupted))):
                        stopped_by = "interrupted"
                        break
                    if self.before_step is not None:
                        self.before_step(self.step)
                    t0 = time.perf_counter()
                    loss = self.train_step()
                    dt = time.perf_counter() - t0
                    # several processes run in step: rank 0's clock decides the time budget
                    self.train_seconds = self.engine.agree(self.train_seconds + dt)
                    if loss is not None:
                        last_loss = loss
                        self.window.append(loss)
                    bar.update(self.step, loss, tokens_per_step / dt, self.train_seconds)
                    self.run_dir.append({"step": self.step, "loss": loss,
                                         "train_seconds": round(self.train_seconds, 4),
                                         "lr": self.opt.lr})
                    if self.step % cfg.eval_interval == 0:
                        val = self._evaluate(bar)
            except KeyboardInterrupt:   # a second Ctrl-C, anywhere: keep the last checkpoint
                stopped_by, at_once = "interrupted", True
            except TrainingError:
                bar.close()
                raise
        if at_once:                                   # the state may be half a step
            bar.close()
            print(f"interrupted twice: stopped at once, nothing saved; "
                  f"{printable(self.run_dir.last)} (step {self._last_saved}) is kept; continue "
                  f"with: rnnkit train --resume --out {printable(self.out)}", file=self.log)
            return Summary(self._last_saved, last_loss, val, self.best_val, self.train_seconds,
                           stopped_by, self.skipped, self.out)
        if self.step != self._last_saved:            # steps since the last checkpoint
            if stopped_by == "interrupted":
                self.run_dir.sync()
                self.save()                           # save at once, no evaluation
            else:
                val = self._evaluate(bar)             # evaluates, samples and saves
        bar.close()
        if stopped_by == "interrupted":
            print(f"interrupted: saved step {self.step} to {printable(self.run_dir.last)}; "
                  f"continue with: rnnkit train --resume --out {printable(self.out)}",
                  file=self.log)
        self.run_dir.plot()
        return Summary(self.step, last_loss, val, self.best_val, self.train_seconds,
                       stopped_by, self.skipped, self.out)

    def _evaluate(self, bar: _Progress) -> float:
        t0 = time.perf_counter()
        self.engine.sync()                            # evaluation and samples run in NumPy
        val = evaluate(self.model, self.data.val)
        best = math.isfinite(val) and (self.best_val is None or val < self.best_val)
        if best:
            self.best_val = val
        text = ""
        if self.cfg.sample_length:
            text = sample_text(self.model, self.data.vocab, self.cfg.sample_length,
                               self.sample_rng, self.cfg.temperature)
        train = float(np.mean(self.window)) if self.window else None
        self.window = []
        record: dict[str, Any] = {"step": self.step, "train_loss": train, "val_loss": val,
                  "val_ppl": math.exp(min(val, 700)), "val_bpc": val / math.log(2),
                  "train_seconds": round(self.train_seconds, 4),
                  "eval_seconds": round(time.perf_counter() - t0, 3),
                  "skipped_steps": self.skipped}
        if self.cfg.sample_length:
            record["sample"] = text             # what rnnkit serve's Training tab shows by step
        record = jsonable(record)
        # the record is durable before the checkpoint it belongs to, and travels inside it
        self.run_dir.append(record, sync=True)
        self.save(best=best, record=record)
        unit = "bits/char" if self.cfg.level == "char" else "bits/word"
        shown = "nan" if train is None else f"{train:.4f}"
        bar.write(f"step {self.step} | train {shown} | val {val:.4f} nats "
                  f"({val / math.log(2):.3f} {unit}, ppl {record['val_ppl']:.2f}) | "
                  f"{self.train_seconds / 60:.1f} min{' | best' if best else ''}"
                  + (f" | {self.skipped} skipped" if self.skipped else ""))
        if text:
            bar.write("-" * 40 + "\n" + printable(text.strip("\n")) + "\n" + "-" * 40)
        return val


def _budget(cfg: TrainConfig) -> str:
    parts = [f"--max-steps {cfg.max_steps}"] if cfg.max_steps is not None else []
    parts += [f"--max-minutes {cfg.max_minutes:g}"] if cfg.max_minutes is not None else []
    return " and ".join(parts) or "no budget (until interrupted)"


def _expect_resumable(meta: dict[str, Any], specs: checkpoint.Specs) -> None:
    """Before a resume reads any tensor: the training config agrees with the model config,
    and every model tensor has the shape that config needs."""
    check_language_model(meta, specs)
    cfg = TrainConfig.from_json(meta.get("train"))
    if cfg.model_config(meta["model"].get("vocab_size", 1)) != LMConfig.from_json(meta["model"]):
        raise ValueError("its training config and model config describe different models")


class _Progress:
    """tqdm progress bar with loss, tokens/s and the remaining budget; plain lines without
    (``--no-progress``)."""

    def __init__(self, cfg: TrainConfig, step: int, seconds: float, enabled: bool,
                 log: TextIO) -> None:
        self.cfg = cfg
        self.log = log
        self.bar: Any = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=cfg.max_steps, initial=step, unit="step",
                            dynamic_ncols=True, file=sys.stderr, leave=False)

    def update(self, step: int, loss: float | None, tok_s: float, seconds: float) -> None:
        if self.bar is None:
            return
        self.bar.update(step - self.bar.n)
        post = {"loss": "skipped" if loss is None else f"{loss:.4f}", "tok/s": f"{tok_s:,.0f}"}
        if self.cfg.max_minutes is not None:
            left = max(0.0, 60 * self.cfg.max_minutes - seconds)
            post["left"] = f"{left / 60:.1f}min"
        self.bar.set_postfix(post, refresh=False)

    def write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.log)
        else:
            print(text, file=self.log, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
