"""The ``rnnkit`` command line. Every failure prints one ``error: ...`` line and exits 2
(set RNNKIT_DEBUG=1 for the traceback).

    rnnkit train [CORPUS]           train a text generator (default: shakespeare, 10 minutes)
    rnnkit sample DIR               generate text from a trained run or an export
    rnnkit score DIR FILE           log-likelihood and perplexity of a text under the model
    rnnkit info DIR                 what a checkpoint or an export holds
    rnnkit export DIR OUT           config.json, model.safetensors, vocab.json, model.onnx
    rnnkit serve DIR                a local page: live loss curves, streamed samples, neurons,
                                    gradients (rnnkit.server)
    rnnkit check                    gradient-check every layer and cell in float64
    rnnkit lab EXPERIMENT           why GRU and LSTM exist: gradients, adding, copy, agreement,
                                    neurons (rnnkit.lab; each prints a table and writes its
                                    figures into --out DIR)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np

from .checks import UsageError, float_arg, nonneg_int_arg, positive_int_arg
from .files import printable


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


# ------------------------------------------------------------------------------------------------
# train
# ------------------------------------------------------------------------------------------------

POSITIVE = float_arg(0, include_boundaries="right")       # a number > 0
FRACTION = float_arg(0, 1, include_boundaries="left")     # a number in [0, 1)
TRAIN_FLAGS: dict[str, tuple[Any, str]] = {
    # flag: (type, help)   -- defaults come from TrainConfig (shown in --help)
    "level": (str, "token level: char (Unicode code points) or word"),
    "mode": (str, "stream: contiguous text, state carried across windows (char-rnn); "
                  "sentence: each line wrapped in <start>/<end> (the chapter)"),
    "cell": (str, "recurrent cell: rnn, gru or lstm"),
    "hidden_size": (positive_int_arg, "hidden units per layer"),
    "num_layers": (positive_int_arg, "stacked recurrent layers"),
    "embedding_dim": (positive_int_arg, "size of the token embedding"),
    "one_hot": (None, "feed one-hot vectors instead of an embedding (the chapter's input)"),
    "dropout": (FRACTION, "dropout on embedding, between layers and on the output"),
    "seq_len": (positive_int_arg, "time steps per window (truncated BPTT length)"),
    "batch_size": (positive_int_arg, "sequences per batch"),
    "optimizer": (str, "sgd, adam, adamw, rmsprop or adagrad"),
    "lr": (POSITIVE, "learning rate"),
    "weight_decay": (float_arg(0), "weight decay (L2; decoupled for adamw)"),
    "momentum": (FRACTION, "momentum (sgd, rmsprop)"),
    "grad_clip": (POSITIVE, "clip the global gradient L2 norm to this"),
    "clip_value": (POSITIVE, "also clip each gradient entry to [-v, v]"),
    "lr_decay": (float_arg(0, 1, include_boundaries="right"),
                 "multiply the learning rate by this after every epoch"),
    "val_fraction": (float_arg(0, 1, include_boundaries="neither"),
                     "fraction held out (the end of the text)"),
    "min_count": (positive_int_arg, "word level: words seen fewer times become <unk>"),
    "max_steps": (positive_int_arg, "stop after this many optimizer steps"),
    "max_minutes": (POSITIVE, "stop after this much training time"),
    "eval_interval": (positive_int_arg, "validate, sample and checkpoint every N steps"),
    "sample_length": (nonneg_int_arg, "tokens in the samples printed during training"),
    "temperature": (float_arg(0), "temperature of those samples"),
    "max_bad_steps": (positive_int_arg, "stop after this many non-finite steps in a row"),
    "seed": (nonneg_int_arg, "seed of weights, dropout, data order and samples"),
    "dtype": (str, "float32 (fast) or float64"),
    "backend": (str, "numpy (rnnkit's own layers) or torch (the PyTorch twin: pip install "
                     "'rnnkit[torch]'); --resume may switch it"),
    "device": (str, "torch backend: cpu, cuda or cuda:N"),
}
CHOICES = {"level": ("char", "word"), "mode": ("stream", "sentence"),
           "cell": ("rnn", "gru", "lstm"),
           "optimizer": ("sgd", "adam", "adamw", "rmsprop", "adagrad"),
           "dtype": ("float32", "float64"), "backend": ("numpy", "torch")}
DEFAULT_MINUTES = 10.0


def _add_train(sub: Any) -> None:
    from .train import TrainConfig

    defaults = TrainConfig()
    p = sub.add_parser("train", help="train a text generator and print samples",
                       description="Train a character- or word-level language model. With no "
                       f"flags: Shakespeare, 2 x 256 LSTM, {DEFAULT_MINUTES:g} minutes.")
    p.add_argument("corpus", nargs="?", default=None,
                   help="a built-in corpus (shakespeare, tang) or a UTF-8 text file "
                   "[default: shakespeare]")
    p.add_argument("--out", default=None,
                   help="run directory for checkpoints, metrics.jsonl and loss.png "
                   "[default: runs/<corpus>]")
    p.add_argument("--resume", action="store_true",
                   help="continue the run saved in --out exactly where it stopped")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    for name, (typ, help_) in TRAIN_FLAGS.items():
        flag = "--" + name.replace("_", "-")
        default = getattr(defaults, name)
        if name == "max_minutes":
            help_ += f" [default: {DEFAULT_MINUTES:g} unless --max-steps is given]"
        elif name not in ("one_hot",):
            help_ += f" [default: {default}]"
        if typ is None:
            p.add_argument(flag, action="store_true", default=None, help=help_)
        else:
            p.add_argument(flag, type=typ, default=None, choices=CHOICES.get(name),
                           help=help_)
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from .train import TrainConfig, Trainer

    given = {k: getattr(args, k) for k in TRAIN_FLAGS if getattr(args, k) is not None}
    if args.corpus is not None:
        given["corpus"] = args.corpus
    if args.resume:
        if args.out is None:
            raise UsageError("--resume needs --out DIR, the directory of the run to continue")
        trainer = Trainer(None, args.out, resume=True, overrides=given,
                          progress=not args.no_progress)
    else:
        if "max_minutes" not in given and "max_steps" not in given:
            given["max_minutes"] = DEFAULT_MINUTES
        cfg = TrainConfig(**given)
        out = args.out or os.path.join("runs", Path(cfg.corpus).stem)
        trainer = Trainer(cfg, out, progress=not args.no_progress)
    summary = trainer.run()
    from .backends import distributed

    if distributed()[0]:                 # torchrun: rank 0 reports
        return 130 if summary.stopped_by == "interrupted" else 0
    best = "" if summary.best_val is None else f", best validation {summary.best_val:.4f}"
    skipped = f", {summary.skipped_steps} steps skipped (non-finite)" \
        if summary.skipped_steps else ""
    print(f"done: {summary.step} steps in {summary.train_seconds / 60:.1f} min "
          f"({summary.stopped_by}){best}{skipped}; checkpoints in {printable(summary.out)}")
    if summary.stopped_by == "interrupted":
        return 130
    return 0


# ------------------------------------------------------------------------------------------------
# sample / score / info
# ------------------------------------------------------------------------------------------------


def cmd_sample(args: argparse.Namespace) -> int:
    from .pretrained import load

    if args.beam and args.num_samples != 1:
        raise UsageError("--num-samples draws samples; --beam finds the one most likely text. "
                         "Use one of them")
    m = load(args.run)
    if args.beam:
        texts = [m.beam(args.prime, args.length, args.beam)]
    else:
        out = m.generate(args.prime, args.length, temperature=args.temperature,
                         top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                         num_samples=args.num_samples)
        texts = [out] if isinstance(out, str) else out
    for i, text in enumerate(texts):
        if len(texts) > 1:
            sys.stdout.write(("\n" if i else "") + f"--- sample {i + 1} of {len(texts)} ---\n")
        sys.stdout.write(printable(text + ("\n" if not text.endswith("\n") else "")))
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from .pretrained import load
    from .text import TextDataError, read_text

    m = load(args.run)
    text = read_text(args.file)
    try:
        s = m.score(text)
    except ValueError as e:
        if isinstance(e, TextDataError):
            raise
        raise UsageError(f"{args.file}: {e}") from e
    unit = "char" if m.vocab.level == "char" else "word"
    print(f"{printable(args.file, keep='')}: {s.tokens} {unit}s predicted | log-likelihood "
          f"{s.log_likelihood:.2f} nats | {s.nats_per_token:.4f} nats/{unit} | "
          f"{s.bits_per_token:.4f} bits/{unit} | perplexity {s.perplexity:.3f}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .checks import require
    from .pretrained import FILES, load

    require("onnx", "onnx", "rnnkit export")       # before anything is read or written
    m = load(args.run, which=args.which)
    out = m.export(args.out_dir, dtype=args.dtype)
    sizes = ", ".join(f"{name} {_size((out / name).stat().st_size)}" for name in FILES)
    print(f"exported {printable(m.source, keep='')} to {printable(out, keep='')}: {sizes}")
    return 0


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def cmd_info(args: argparse.Namespace) -> int:
    from . import checkpoint, pretrained
    from .rundir import RunDir

    run = Path(args.run)
    if not run.exists():
        raise UsageError(f"{run}: no such run directory, export folder or checkpoint file")
    if run.is_dir() and (run / pretrained.CONFIG).exists():
        return _info_export(run, args.json)
    rd = RunDir(run)
    files = [run] if not run.is_dir() else [f for f in (rd.last, rd.best) if f.is_file()]
    if not files:
        raise UsageError(f"{run}: no {rd.last.name} or {rd.best.name} here")
    failed = 0
    for f in files:
        try:                    # a damaged last does not hide a good best, nor the reverse
            meta = checkpoint.read_meta(f)
        except checkpoint.CheckpointError as e:
            print(f"error: {printable(e, keep='')}", file=sys.stderr)
            failed += 1
            continue
        if args.json:           # ensure_ascii: every control character comes out escaped
            print(json.dumps(meta, indent=1))
            continue
        if meta.get("kind") == pretrained.KIND:              # an export's model.safetensors
            config = _dict(meta.get("config"))
            itos = _dict(meta.get("vocab")).get("itos", [])
            title = f"{f}: rnnkit export weights v{meta.get('version')}"
        else:
            t = _dict(meta.get("train"))
            config = {"model": meta.get("model"),
                      "tokenizer": {"level": t.get("level"), "mode": t.get("mode")},
                      "training": pretrained.training_summary(meta, f.name)}
            itos = _dict(meta.get("vocab")).get("itos", [])
            title = (f"{f}: rnnkit checkpoint v{meta.get('version')} "
                     f"(rnnkit {meta.get('rnnkit_version')})")
        _print_info(title, config, itos)
    return 2 if failed else 0


def _info_export(folder: Path, as_json: bool) -> int:
    from .pretrained import CONFIG, FILES, VOCAB, _read_json

    config = _read_json(folder / CONFIG)
    if as_json:
        print(json.dumps(config, indent=1))
        return 0
    present = [(n, (folder / n).stat().st_size) for n in FILES if (folder / n).is_file()]
    itos = _read_json(folder / VOCAB) if (folder / VOCAB).is_file() else []
    _print_info(f"{folder}: rnnkit export v{_dict(config).get('version')} ("
                + ", ".join(f"{n} {_size(size)}" for n, size in present) + ")",
                _dict(config), itos)
    return 0


def _print_info(title: str, config: dict[str, Any], itos: Any) -> None:
    """What ``rnnkit info`` shows of a checkpoint or an export (whatever its fields hold)."""
    m, tok, t = (_dict(config.get(k)) for k in ("model", "tokenizer", "training"))
    itos = [s for s in itos if isinstance(s, str)] if isinstance(itos, list) else []
    best = t.get("best_val_loss_nats")
    lines = [
        title,
        f"  model    {m.get('num_layers')} x {m.get('hidden_size')} "
        f"{str(m.get('cell')).upper()}, embedding {m.get('embedding_dim')}"
        f"{' (one-hot)' if m.get('one_hot') else ''}, {m.get('dtype')}",
        f"  data     {t.get('corpus')} ({t.get('corpus_source') or ''}); {tok.get('level')} "
        f"level, {tok.get('mode')} mode; vocabulary {len(itos)}: "
        + "".join(repr(s)[1:-1] if len(s) == 1 else f" {s} " for s in itos[:80])
        + (" ..." if len(itos) > 80 else ""),
        f"  training step {t.get('steps')}, epoch {t.get('epoch')}, "
        f"{_minutes(t.get('train_seconds'))}; {t.get('optimizer')} lr {t.get('lr')}, "
        f"batch {t.get('batch_size')} x {t.get('seq_len')}"]
    if _real(best):
        lines.append(f"  best validation {best:.4f} nats/token ({best / math.log(2):.4f} "
                     f"bits), perplexity {math.exp(min(best, 700)):.3f}")
    if t.get("command"):
        lines.append(f"  command  {t.get('command')}")
    print("\n".join(printable(line, keep="") for line in lines))


def _dict(x: Any) -> dict[str, Any]:
    return x if isinstance(x, dict) else {}


def _minutes(x: Any) -> str:
    return f"{x / 60:.1f} min" if _real(x) else "? min"


def _real(x: Any) -> TypeGuard[float]:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and -1e300 < x < 1e300


# ------------------------------------------------------------------------------------------------
# check
# ------------------------------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    """Gradient-check every cell in float64 and print one line per configuration."""
    import rnnkit

    builders: dict[str, Callable[..., rnnkit.Module]] = {
        "RNN(tanh)": lambda **kw: rnnkit.RNN(3, 4, nonlinearity="tanh", **kw),
        "RNN(relu)": lambda **kw: rnnkit.RNN(3, 4, nonlinearity="relu", **kw),
        "GRU": lambda **kw: rnnkit.GRU(3, 4, **kw),
        "LSTM": lambda **kw: rnnkit.LSTM(3, 4, **kw),
    }
    rng = np.random.default_rng(args.seed)
    x = rng.standard_normal((5, 3, 3))
    failed = 0
    print(f"{'layer':<10} {'layers':>6} {'dirs':>4} {'lengths':>9}  worst relative error")
    for name, build in builders.items():
        for layers in (1, 2):
            for bi in (False, True):
                for lengths in (None, [5, 2, 4]):
                    m = build(num_layers=layers, bidirectional=bi, dtype=np.float64,
                              rng=args.seed)
                    t0 = time.perf_counter()
                    r = rnnkit.gradcheck(m, x, lengths=lengths)
                    ms = 1000 * (time.perf_counter() - t0)
                    failed += not r.ok
                    print(f"{name:<10} {layers:>6} {2 if bi else 1:>4} "
                          f"{'yes' if lengths else 'no':>9}  {r.worst[1]:.1e} "
                          f"({r.worst[0]}) {'ok' if r.ok else 'FAIL'}  {ms:.0f} ms")
    print("all gradients agree with finite differences" if not failed
          else f"{failed} configurations FAILED")
    return 1 if failed else 0


# the modules of rnnkit.lab that add ``rnnkit lab ...`` commands (each has add_commands(sub))
LAB_EXPERIMENTS = ("gradients", "memory", "agreement", "neurons")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="rnnkit", description="Recurrent neural networks in NumPy.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_train(sub)

    s = sub.add_parser("sample", help="generate text from a trained run")
    s.add_argument("run", help="run directory (uses best, else last checkpoint), export "
                   "folder or .safetensors file")
    s.add_argument("--prime", default="", help="text to start from")
    s.add_argument("--length", type=nonneg_int_arg, default=500, help="tokens to generate at most")
    s.add_argument("--temperature", type=float_arg(0), default=0.8,
                   help="0 = greedy; lower is safer, higher more surprising")
    s.add_argument("--top-k", type=positive_int_arg, default=None,
                   help="sample only among the k most likely tokens")
    s.add_argument("--top-p", type=float_arg(0, 1, include_boundaries="right"), default=None,
                   help="sample only among the most likely tokens whose mass reaches p")
    s.add_argument("--beam", type=positive_int_arg, default=None,
                   help="beam search of this width for the most likely continuation")
    s.add_argument("--seed", type=nonneg_int_arg, default=0,
                   help="the same seed gives the same text")
    s.add_argument("--num-samples", type=positive_int_arg, default=1,
                   help="draw this many samples (side by side)")
    s.set_defaults(func=cmd_sample)

    sc = sub.add_parser("score", help="log-likelihood and perplexity of a text")
    sc.add_argument("run", help="run directory, export folder or .safetensors file")
    sc.add_argument("file", help="UTF-8 text file to score")
    sc.set_defaults(func=cmd_score)

    i = sub.add_parser("info", help="what a checkpoint holds")
    i.add_argument("run", help="run directory, export folder or .safetensors file")
    i.add_argument("--json", action="store_true", help="print the whole metadata as JSON")
    i.set_defaults(func=cmd_info)

    e = sub.add_parser("export", help="write a run's model as a folder for rnnkit, PyTorch "
                       "and onnxruntime", description="Write OUT_DIR: config.json, "
                       "model.safetensors (PyTorch state_dict names), vocab.json, model.onnx "
                       "and a README.md model card. An earlier export there is replaced.")
    e.add_argument("run", help="run directory or checkpoint file")
    e.add_argument("out_dir", help="the folder to write (new, empty, or an earlier export)")
    e.add_argument("--which", choices=("best", "last"), default="best",
                   help="which checkpoint of a run directory [default: best]")
    e.add_argument("--dtype", choices=("float32", "float64"), default=None,
                   help="dtype of model.safetensors [default: the model's]; model.onnx is "
                   "float32")
    e.set_defaults(func=cmd_export)

    from .server import add_command as add_serve

    add_serve(sub)

    lab = sub.add_parser("lab", help="experiments: why GRU and LSTM exist")
    labsub = lab.add_subparsers(dest="experiment", metavar="EXPERIMENT", parser_class=_Parser,
                                required=True)
    import importlib

    for name in LAB_EXPERIMENTS:
        importlib.import_module(f"rnnkit.lab.{name}").add_commands(labsub)

    c = sub.add_parser("check", help="gradient-check every layer and cell (float64)")
    c.add_argument("--seed", type=nonneg_int_arg, default=0, help="seed of weights and inputs")
    c.set_defaults(func=cmd_check)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. NumPy's floating-point warnings are off: every path checks its
    numbers itself (non-finite steps skipped and counted, states and weights refused)."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    from .checkpoint import CheckpointError
    from .train import TrainingError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        return int(args.func(args))
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:     # the reader went away (| head): stop quietly, as cat does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as e:
        if os.environ.get("RNNKIT_DEBUG"):
            raise
        if isinstance(e, MemoryError):
            msg = (f"out of memory ({e or 'an array too large'}): the sizes asked for do not fit "
                   "in this machine's memory; use smaller sizes (hidden size, budget, batch, "
                   "length)")
        elif isinstance(e, OSError) and e.filename:
            msg = f"{e.filename}: {e.strerror}"
        elif isinstance(e, (UsageError, CheckpointError, TrainingError, ValueError, TypeError,
                            OSError)):
            msg = str(e)
        else:                   # a bug: still one line; RNNKIT_DEBUG=1 shows the traceback
            msg = f"internal error ({type(e).__name__}: {e}); set RNNKIT_DEBUG=1 for the " \
                "traceback and please report it"
        print(f"error: {printable(msg, keep='')}", file=sys.stderr)
        return 2

if __name__ == "__main__":
    sys.exit(main())
