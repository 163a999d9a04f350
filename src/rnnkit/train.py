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

import json
import math
import signal
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from . import checkpoint, optim
from .corpora import load_corpus
from .generate import sample
from .layers import softmax_cross_entropy
from .models import LanguageModel, LMConfig
from .recurrent import State
from .text import (
    SentenceBatch,
    SentenceBatches,
    StreamBatch,
    StreamBatches,
    Vocab,
    build_vocab,
    specials_for,
    split_ids,
    tokenize,
    tokenize_lines,
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

    def __post_init__(self) -> None:
        def pos_int(name: str) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer; got {v!r}")

        if self.level not in ("char", "word"):
            raise ValueError(f"level must be 'char' or 'word'; got {self.level!r}")
        if self.mode not in ("stream", "sentence"):
            raise ValueError(f"mode must be 'stream' or 'sentence'; got {self.mode!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}; got "
                             f"{self.optimizer!r}")
        for name in ("min_count", "seq_len", "batch_size", "eval_interval", "max_bad_steps"):
            pos_int(name)
        if self.max_steps is not None:
            pos_int("max_steps")
        if isinstance(self.sample_length, bool) or not isinstance(self.sample_length, int) \
                or self.sample_length < 0:
            raise ValueError(f"sample_length must be an int >= 0; got {self.sample_length!r}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1); got {self.val_fraction}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number; got {self.lr}")
        for name in ("grad_clip", "clip_value", "max_minutes"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number or None; got {v}")
        if not 0 < self.lr_decay <= 1:
            raise ValueError(f"lr_decay must be in (0, 1]; got {self.lr_decay}")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError(f"temperature must be >= 0; got {self.temperature}")
        self.model_config()  # validates cell, sizes, dropout, dtype

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


# the settings a resumed run may change: they decide when to stop or report, not what is computed
BUDGET_FIELDS = ("max_steps", "max_minutes", "eval_interval", "sample_length", "temperature",
                 "max_bad_steps")


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
        tokens = tokenize(text, cfg.level)
        if vocab is None:
            vocab = build_vocab(tokens, specials=specials, min_count=cfg.min_count,
                                level=cfg.level)
        ids = vocab.encode(tokens)
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
        lines = tokenize_lines(text, cfg.level)
        if vocab is None:
            vocab = build_vocab((t for line in lines for t in line), specials=specials,
                                min_count=cfg.min_count, level=cfg.level)
        line_ids = [vocab.encode(line) for line in lines]
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


# ------------------------------------------------------------------------------------------------
# evaluation
# ------------------------------------------------------------------------------------------------


def evaluate(model: LanguageModel, batches: StreamBatches | SentenceBatches,
             max_batches: int | None = None) -> float:
    """Mean cross-entropy (nats per token) over the validation batches, in eval mode."""
    was = model.training
    model.eval()
    total, count = 0.0, 0
    state: State | None = None
    try:
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
            total += loss * n
            count += n
    finally:
        model.train(was)
    return total / max(count, 1)


def sample_text(model: LanguageModel, vocab: Vocab, prime: str | None, length: int,
                rng: np.random.Generator, temperature: float = 0.8) -> str:
    """A sample for the training log: continue ``prime`` (default: a newline, or <start>)."""
    if vocab.start_id is not None:
        prime_ids = [vocab.start_id]
    else:
        p = prime if prime is not None else "\n"
        toks = tokenize(p, vocab.level) or [vocab.itos[0]]
        prime_ids = [int(i) for i in vocab.encode(toks)]
    out = sample(model, prime_ids, length, rng=rng, temperature=temperature,
                 end_id=vocab.end_id)
    if vocab.end_id is not None and out and out[-1] == vocab.end_id:
        out = out[:-1]
    return vocab.decode(out, skip_specials=True)


# ------------------------------------------------------------------------------------------------
# checkpoints
# ------------------------------------------------------------------------------------------------


def model_from_checkpoint(path: str | Path) -> tuple[LanguageModel, Vocab, dict[str, Any]]:
    """Load a language model for sampling: ``path`` is a run directory (its best, else last
    checkpoint) or a ``.safetensors`` file. Validates config, vocabulary and every shape."""
    p = Path(path)
    if p.is_dir():
        for name in ("best", "last"):
            if (p / f"{name}{checkpoint.SUFFIX}").is_file():
                p = p / f"{name}{checkpoint.SUFFIX}"
                break
        else:
            raise checkpoint.CheckpointError(f"{path}: no best.safetensors or last.safetensors "
                                             "here; is it the --out directory of rnnkit train?")
    tensors, meta = checkpoint.load(p)
    model, vocab = _model_from(p, tensors, meta)
    return model, vocab, meta


def _model_from(path: Path, tensors: dict[str, Array], meta: dict[str, Any]
                ) -> tuple[LanguageModel, Vocab]:
    try:
        if meta.get("kind") != "language-model":
            raise ValueError(f"kind is {meta.get('kind')!r}, not 'language-model'")
        vocab = Vocab.from_json(meta["vocab"])
        mcfg = LMConfig.from_json(meta["model"])
        if mcfg.vocab_size != len(vocab):
            raise ValueError(f"model vocab_size {mcfg.vocab_size} != vocabulary size "
                             f"{len(vocab)}")
        model = LanguageModel(mcfg, rng=0)
        weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        model.load_state_dict(weights, strict=True)
    except (KeyError, ValueError, TypeError) as e:
        raise checkpoint.CheckpointError(f"{path}: not a usable rnnkit language model: {e}") \
            from e
    return model, vocab


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
    """A training run in ``out``: ``metrics.jsonl``, ``last.safetensors``,
    ``best.safetensors``, ``loss.png``. With ``resume=True`` it continues the run saved in
    ``out``; ``overrides`` may change only the budget and reporting settings."""

    def __init__(self, cfg: TrainConfig | None, out: str | Path, *, resume: bool = False,
                 overrides: dict[str, Any] | None = None, log: TextIO | None = None,
                 progress: bool = True, before_step: Callable[[int], None] | None = None
                 ) -> None:
        self.out = Path(out)
        self.log = log if log is not None else sys.stdout
        self.progress = progress
        self.before_step = before_step
        overrides = dict(overrides or {})
        saved: tuple[dict[str, Array], dict[str, Any]] | None = None
        if resume:
            last = self.out / f"last{checkpoint.SUFFIX}"
            if not last.is_file():
                raise checkpoint.CheckpointError(
                    f"--resume: {last} does not exist; start without --resume, or point --out "
                    "at the directory of an earlier run")
            saved = checkpoint.load(last)
            meta = saved[1]
            base = TrainConfig.from_json(meta["train"])
            changed = {k: v for k, v in overrides.items() if k not in BUDGET_FIELDS
                       and getattr(base, k) != v}
            if changed:
                raise ValueError("--resume continues a run exactly, so only "
                                 f"{', '.join(BUDGET_FIELDS)} may change; these differ from "
                                 f"the checkpoint: "
                                 + ", ".join(f"{k}={v!r} (saved {getattr(base, k)!r})"
                                             for k, v in changed.items()))
            d = base.to_json()
            d.update({k: v for k, v in overrides.items() if k in BUDGET_FIELDS})
            self.cfg = TrainConfig(**d)
        else:
            if cfg is None:
                raise ValueError("a new run needs a TrainConfig")
            self.cfg = cfg
            if (self.out / f"last{checkpoint.SUFFIX}").exists():
                raise FileExistsError(f"{self.out} already holds a run (last.safetensors); use "
                                      "--resume to continue it or another --out")
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
        self.skipped = 0
        self.bad_streak = 0
        self.carry: State | None = None
        self._last_saved = 0
        self.ckpt = checkpoint.CheckpointManager(self.out)
        if saved:
            self._restore(*saved)

    # ---- checkpoint state ---------------------------------------------------------------------
    def _state(self) -> tuple[dict[str, Array], dict[str, Any]]:
        tensors = {f"model.{k}": v for k, v in self.model.named_parameters()}
        ot, om = self.opt.state_dict()
        tensors |= {f"optim.{k}": v for k, v in ot.items()}
        if self.carry is not None:
            parts = self.carry if isinstance(self.carry, tuple) else (self.carry,)
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
            "skipped_steps": self.skipped,
            "bad_streak": self.bad_streak,
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
            self.step = int(meta["step"])
            self.train_seconds = float(meta["train_seconds"])
            self.best_val = meta["best_val"]
            self.skipped = int(meta["skipped_steps"])
            self.bad_streak = int(meta["bad_streak"])
            if "carry.h" in tensors:
                h = tensors["carry.h"].astype(self.model.dtype)
                self.carry = (h, tensors["carry.c"].astype(self.model.dtype)) \
                    if "carry.c" in tensors else h
        except (KeyError, ValueError, TypeError) as e:
            raise checkpoint.CheckpointError(f"{self.out / 'last.safetensors'}: cannot resume "
                                             f"from it: {e}") from e
        self._truncate_metrics()

    def _truncate_metrics(self) -> None:
        """Drop metric lines written after the checkpoint (a killed run may have some)."""
        path = self.out / "metrics.jsonl"
        if not path.exists():
            return
        keep = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("step", 0) <= self.step:
                    keep.append(line)
            except json.JSONDecodeError:
                continue
        path.write_text("".join(k + "\n" for k in keep), encoding="utf-8")

    def save(self, best: bool = False) -> None:
        tensors, meta = self._state()
        self.ckpt.save_last(tensors, meta)
        if best:
            self.ckpt.save_best(tensors, meta)

    # ---- the loop -----------------------------------------------------------------------------
    def _write_metrics(self, record: dict[str, Any]) -> None:
        with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def train_step(self) -> float | None:
        """One optimizer step; returns the loss, or None if the step was skipped."""
        # a non-finite loss or gradient is detected and handled below, not warned about
        with np.errstate(all="ignore"):
            return self._train_step()

    def _train_step(self) -> float | None:
        cfg, model = self.cfg, self.model
        batch = next(self.data.train)
        if isinstance(batch, StreamBatch):
            if batch.is_epoch_start:
                self.carry = None
                if self.step > 0:
                    self.sched.step()
            logits, hn, cache = model.forward(batch.x, self.carry)
            loss, dlogits, _ = softmax_cross_entropy(logits, batch.y)
        else:
            assert isinstance(batch, SentenceBatch)
            if batch.index == 0 and self.step > 0:
                self.sched.step()
            logits, hn, cache = model.forward(batch.x, None, batch.lengths)
            loss, dlogits, _ = softmax_cross_entropy(logits, batch.y, batch.mask)
        model.zero_grad()
        ok = math.isfinite(loss)
        if ok:
            model.backward(dlogits, cache)
            if cfg.clip_value is not None:
                optim.clip_grad_value_(model, cfg.clip_value)
            norm = optim.clip_grad_norm_(model, cfg.grad_clip if cfg.grad_clip else math.inf)
            ok = math.isfinite(norm)
        if not ok:
            self.skipped += 1
            self.bad_streak += 1
            model.zero_grad()
            if self.bad_streak >= cfg.max_bad_steps:
                raise TrainingError(
                    f"{self.bad_streak} steps in a row had a non-finite loss or gradient (at "
                    f"step {self.step + 1}); the run stops, and the last checkpoint (step "
                    f"{self._last_saved}) holds the last good weights. Try a lower --lr or "
                    "--grad-clip.")
            self.step += 1
            return None
        self.bad_streak = 0
        self.opt.step()
        if isinstance(self.data.train, StreamBatches):
            self.carry = hn            # truncated BPTT: the next window starts here
        self.step += 1
        return loss

    def run(self) -> Summary:
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        self._last_saved = self.step
        p = self.model.num_parameters()
        print(f"corpus {cfg.corpus}: {self.data.num_chars:,} characters, vocabulary "
              f"{len(self.data.vocab)} ({cfg.level}, {cfg.mode} mode) | {self.data.corpus_source}",
              file=self.log)
        print(f"model {cfg.num_layers} x {cfg.hidden_size} {cfg.cell.upper()}, {p:,} parameters,"
              f" {cfg.dtype} | {cfg.optimizer} lr {cfg.lr:g} | batch {cfg.batch_size} x "
              f"{cfg.seq_len} | out {self.out}", file=self.log)
        if self.step:
            print(f"resuming at step {self.step} ({self.train_seconds / 60:.1f} min trained)",
                  file=self.log)
        bar = _Progress(cfg, self.step, self.train_seconds, self.progress, self.log)
        stopped_by = "max_steps"
        last_loss: float | None = None
        val: float | None = None
        tokens_per_step = cfg.batch_size * cfg.seq_len
        window: list[float] = []
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
                    if interrupted:
                        stopped_by = "interrupted"
                        break
                    if self.before_step is not None:
                        self.before_step(self.step)
                    t0 = time.perf_counter()
                    loss = self.train_step()
                    dt = time.perf_counter() - t0
                    self.train_seconds += dt
                    if loss is not None:
                        last_loss = loss
                        window.append(loss)
                    bar.update(self.step, loss, tokens_per_step / dt, self.train_seconds)
                    self._write_metrics({"step": self.step, "loss": loss,
                                         "train_seconds": round(self.train_seconds, 4),
                                         "lr": self.opt.lr})
                    if self.step % cfg.eval_interval == 0:
                        val = self._evaluate(bar, window)
                        window = []
            except KeyboardInterrupt:
                stopped_by = "interrupted"
            except TrainingError:
                bar.close()
                raise
        if self.step != self._last_saved:            # steps since the last checkpoint
            if stopped_by == "interrupted":
                self.save()                           # save at once, no evaluation
            else:
                val = self._evaluate(bar, window)     # evaluates, samples and saves
        bar.close()
        if stopped_by == "interrupted":
            print(f"interrupted: saved step {self.step} to {self.out / 'last.safetensors'}; "
                  f"continue with: rnnkit train --resume --out {self.out}", file=self.log)
        self._plot()
        return Summary(self.step, last_loss, val, self.best_val, self.train_seconds,
                       stopped_by, self.skipped, self.out)

    def _evaluate(self, bar: _Progress, window: list[float]) -> float:
        t0 = time.perf_counter()
        val = evaluate(self.model, self.data.val)
        best = self.best_val is None or val < self.best_val
        if best:
            self.best_val = val
        text = ""
        if self.cfg.sample_length:
            text = sample_text(self.model, self.data.vocab, None, self.cfg.sample_length,
                               self.sample_rng, self.cfg.temperature)
        self.save(best=best)
        self._last_saved = self.step
        train = float(np.mean(window)) if window else float("nan")
        record = {"step": self.step, "train_loss": train, "val_loss": val,
                  "val_ppl": math.exp(min(val, 700)), "val_bpc": val / math.log(2),
                  "train_seconds": round(self.train_seconds, 4),
                  "eval_seconds": round(time.perf_counter() - t0, 3),
                  "skipped_steps": self.skipped}
        self._write_metrics(record)
        unit = "bits/char" if self.cfg.level == "char" else "bits/word"
        bar.write(f"step {self.step} | train {train:.4f} | val {val:.4f} nats "
                  f"({val / math.log(2):.3f} {unit}, ppl {record['val_ppl']:.2f}) | "
                  f"{self.train_seconds / 60:.1f} min{' | best' if best else ''}"
                  + (f" | {self.skipped} skipped" if self.skipped else ""))
        if text:
            bar.write("-" * 40 + "\n" + text.strip("\n") + "\n" + "-" * 40)
        return val

    def _plot(self) -> None:
        path = self.out / "metrics.jsonl"
        if not path.exists():
            return
        try:
            plot_metrics(path, self.out / "loss.png")
        except ImportError:
            print("(matplotlib is not installed: no loss.png)", file=self.log)


def plot_metrics(metrics: Path, png: Path) -> None:
    """The loss curves of a run (train per step, validation per evaluation) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, losses, vsteps, vloss = [], [], [], []
    for line in metrics.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        if "val_loss" in r:
            vsteps.append(r["step"])
            vloss.append(r["val_loss"])
        elif r.get("loss") is not None:
            steps.append(r["step"])
            losses.append(r["loss"])
    fig, ax = plt.subplots(figsize=(7, 4))
    if steps:
        ax.plot(steps, losses, lw=0.6, alpha=0.6, label="train (per step)")
    if vsteps:
        ax.plot(vsteps, vloss, "o-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats per token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = png.with_name("." + png.name + ".tmp")
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    tmp.replace(png)


class _Progress:
    """tqdm progress bar with loss, tokens/s and the remaining budget; plain lines without."""

    def __init__(self, cfg: TrainConfig, step: int, seconds: float, enabled: bool,
                 log: TextIO) -> None:
        self.cfg = cfg
        self.log = log
        self.bar: Any = None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                total = cfg.max_steps
                self.bar = tqdm(total=total, initial=step, unit="step", dynamic_ncols=True,
                                file=sys.stderr, leave=False)

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
