"""A trained text generator in two lines, and the folder that takes it anywhere.

    m = rnnkit.load("runs/shakespeare")            # a run directory, a checkpoint, an export
    print(m.generate("ROMEO:", 300, temperature=0.8))
    m.export("shakespeare-lstm")                   # or: rnnkit export runs/shakespeare OUT

An export is a folder in the layout PyTorch and Hugging Face users know:

    config.json         architecture, tokenizer (level, mode, markers), training summary
    model.safetensors   the weights only, under the PyTorch twin's state_dict names
                        (``safetensors.torch.load_file`` + ``load_state_dict(strict=True)``)
    vocab.json          the tokens in id order
    model.onnx          the whole model as one graph of ONNX's own LSTM/GRU/RNN operators
    README.md           a model card: data, steps, loss, the command, how to load it

``model.safetensors`` also carries the config and vocabulary in its header with a SHA-256 over
everything (``rnnkit.checkpoint``), so a damaged file or a folder mixing two exports is caught
on load. The folder is built beside its target and published in one step
(``files.staged_dir``): a reader never sees half an export.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from . import checkpoint, files
from .checkpoint import CheckpointError
from .checks import no_json_constant
from .generate import Score, beam_search, continuation_text, prime_ids, sample_many, score
from .models import LanguageModel, LMConfig, check_parameters
from .module import check_rng
from .text import _NO_SPACE_AFTER, _NO_SPACE_BEFORE, WORD, Vocab, iter_lines

FORMAT = "rnnkit-export"
VERSION = 1
KIND = "language-model-export"            # the ``kind`` in model.safetensors' metadata
CONFIG, WEIGHTS, VOCAB, ONNX, CARD = ("config.json", "model.safetensors", "vocab.json",
                                      "model.onnx", "README.md")
FILES = (CONFIG, WEIGHTS, VOCAB, ONNX, CARD)


class TextModel:
    """A language model with its vocabulary: text in, text out.

    ``model`` (the :class:`~rnnkit.models.LanguageModel`), ``vocab``, ``config`` (what an
    export's ``config.json`` holds: ``model``, ``tokenizer``, ``training``) and ``source`` (the
    path it was loaded from, or None). Made by :func:`load`, or from a model and a vocabulary.
    """

    def __init__(self, model: LanguageModel, vocab: Vocab, config: dict[str, Any] | None = None,
                 source: str | None = None) -> None:
        if not isinstance(model, LanguageModel):
            raise TypeError(f"model must be an rnnkit LanguageModel; got {type(model).__name__}")
        if not isinstance(vocab, Vocab):
            raise TypeError(f"vocab must be an rnnkit.text.Vocab; got {type(vocab).__name__}")
        if model.config.vocab_size != len(vocab):
            raise ValueError(f"the model predicts {model.config.vocab_size} tokens but the "
                             f"vocabulary has {len(vocab)}; pair it with its own vocabulary")
        self.model = model
        self.vocab = vocab
        config = config or {}
        self.config = describe(model.config, vocab, config.get("training", {}))
        self.config |= {k: v for k, v in config.items() if k not in self.config}   # "onnx"
        self.source = source

    def __repr__(self) -> str:
        c = self.model.config
        return (f"TextModel({c.num_layers} x {c.hidden_size} {c.cell.upper()}, "
                f"{self.vocab.level} level, {len(self.vocab)} tokens"
                + (f", from {self.source!r})" if self.source else ")"))

    @property
    def mode(self) -> str:
        """``"sentence"`` (each text wrapped in ``<start>``/``<end>``) or ``"stream"``."""
        return "stream" if self.vocab.start_id is None else "sentence"

    # ---- text out -------------------------------------------------------------------------
    def generate(self, prime: str = "", length: int = 200, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None,
                 seed: int | np.random.Generator | None = None,
                 num_samples: int = 1) -> Any:
        """``prime`` continued by up to ``length`` tokens: a str, or with ``num_samples`` > 1
        a list of that many (drawn side by side). ``temperature`` 0 is greedy; ``top_k`` and
        ``top_p`` restrict the draw; the same ``seed`` gives the same text (None: fresh).
        In sentence mode generation starts at ``<start>`` and stops at ``<end>``."""
        prime = _text_arg("prime", prime)
        outs = sample_many(self.model, prime_ids(self.vocab, prime), length, num_samples,
                           rng=_seed(seed), temperature=temperature, top_k=top_k,
                           top_p=top_p, end_id=self.vocab.end_id)
        texts = [continuation_text(self.vocab, prime, out) for out in outs]
        return texts[0] if num_samples == 1 else texts

    def beam(self, prime: str = "", length: int = 200, width: int = 5,
             length_penalty: float = 0.0) -> str:
        """The most likely continuation of ``prime`` that a beam of ``width`` finds."""
        prime = _text_arg("prime", prime)
        best = beam_search(self.model, prime_ids(self.vocab, prime), length, width,
                           end_id=self.vocab.end_id, length_penalty=length_penalty)[0]
        return continuation_text(self.vocab, prime, best.ids)

    def score(self, text: str) -> Score:
        """How well the model predicts ``text``: ``log_likelihood`` (nats), ``tokens``,
        ``nats_per_token``, ``bits_per_token``, ``perplexity``. Stream mode scores the text
        as one stream; sentence mode scores each line as ``<start> ... <end>``."""
        text = _text_arg("text", text)
        if self.mode == "stream":            # no token list: the text may be large
            return score(self.model, self.vocab.encode_text(text))
        v = self.vocab
        assert v.start_id is not None and v.end_id is not None
        parts = [score(self.model, np.r_[v.start_id, v.encode_text(line), v.end_id])
                 for line in iter_lines(text)]
        if not parts:
            raise ValueError("no line with text to score")
        return Score(sum(p.log_likelihood for p in parts), sum(p.tokens for p in parts))

    # ---- elsewhere ------------------------------------------------------------------------
    def to_torch(self) -> Any:
        """The PyTorch twin (``rnnkit.pytorch.to_torch``)."""
        from .pytorch import to_torch

        return to_torch(self.model)

    def export(self, out_dir: str | os.PathLike[str], *, dtype: str | None = None) -> Path:
        """Write the export folder (see the module docstring); returns its path. ``dtype``:
        of ``model.safetensors`` (default: the model's); ``model.onnx`` is float32, the one
        type onnxruntime runs these operators in. An earlier export at ``out_dir`` is
        replaced in one step; any other non-empty folder there is an error."""
        from . import onnx

        dtype = self.model.config.dtype if dtype is None else dtype
        if dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64'; got {dtype!r}")
        onnx.to_onnx(self.model)                         # needs the [onnx] extra: ask first
        tensors = {k: v.astype(dtype) for k, v in self.model.state_dict().items()}
        big = [k for k, v in tensors.items() if not np.isfinite(v).all()]
        if big:
            raise ValueError(f"the weights {big[:3]} do not fit in {dtype}; export with "
                             "dtype float64")
        config = describe(LMConfig(**{**self.model.config.to_json(), "dtype": dtype}),
                          self.vocab, self.config.get("training", {}))
        out = Path(out_dir)
        with files.staged_dir(out, replaceable=is_export) as tmp:
            graph = onnx.export(self.model, tmp / ONNX)            # checked by onnx.checker
            config["onnx"] = {"file": ONNX, "dtype": "float32", "opset": _opset(graph),
                              "inputs": [i.name for i in graph.graph.input],
                              "outputs": [o.name for o in graph.graph.output]}
            files.write_atomic(tmp / CONFIG, _json(config))
            files.write_atomic(tmp / VOCAB, _json(list(self.vocab.itos)))
            checkpoint.save(tmp / WEIGHTS, tensors, {"kind": KIND, "config": config,
                                                     "vocab": self.vocab.to_json()})
            files.write_atomic(tmp / CARD, model_card(config, out.name).encode())
        return out


def _seed(seed: Any) -> np.random.Generator:
    if isinstance(seed, np.random.Generator) or seed is None:
        return check_rng(seed)
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise TypeError(f"seed must be an int >= 0, a numpy.random.Generator or None (fresh "
                        f"randomness); got {seed!r}")
    return np.random.default_rng(int(seed))


def _text_arg(name: str, x: Any) -> str:
    if not isinstance(x, str):
        raise TypeError(f"{name} must be a str; got {type(x).__name__}")
    return x


def _opset(graph: Any) -> int:
    return int(next(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")))


def _json(x: Any) -> bytes:
    return (json.dumps(x, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode()


# ---- the config -----------------------------------------------------------------------------


def describe(cfg: LMConfig, vocab: Vocab, training: dict[str, Any]) -> dict[str, Any]:
    """``config.json``: what the model is, how text becomes tokens, how it was trained."""
    return {
        "format": FORMAT, "version": VERSION,
        "architecture": "LanguageModel",
        "model": cfg.to_json(),
        "tokenizer": {
            "level": vocab.level,
            "mode": "stream" if vocab.start_id is None else "sentence",
            "start": "<start>" if vocab.start_id is not None else None,
            "end": "<end>" if vocab.end_id is not None else None,
            "unk": "<unk>" if vocab.unk_id is not None else None,
            # how rnnkit.text cuts and joins words, for readers without rnnkit
            **({"word_pattern": WORD.pattern, "no_space_before": "".join(sorted(
                _NO_SPACE_BEFORE)), "no_space_after": "".join(sorted(_NO_SPACE_AFTER))}
               if vocab.level == "word" else {}),
        },
        "training": dict(training),
    }


def training_summary(meta: dict[str, Any], which: str) -> dict[str, Any]:
    """The ``training`` part of the config, from a run's checkpoint metadata."""
    from .train import TrainConfig

    t: dict[str, Any] = meta["train"] if isinstance(meta.get("train"), dict) else {}
    try:
        command = TrainConfig.from_json(t).command() if t else None
    except (TypeError, ValueError):
        command = None
    best = meta.get("best_val")
    best = best if isinstance(best, (int, float)) and math.isfinite(best) else None
    return {
        "corpus": t.get("corpus"), "corpus_source": meta.get("corpus_source"),
        "checkpoint": which, "steps": meta.get("step"), "epoch": meta.get("epoch"),
        "train_seconds": meta.get("train_seconds"),
        "best_val_loss_nats": best,
        "best_val_loss_bits": None if best is None else best / math.log(2),
        "best_step": meta.get("best_step"),
        "optimizer": t.get("optimizer"), "lr": t.get("lr"),
        "batch_size": t.get("batch_size"), "seq_len": t.get("seq_len"),
        "command": command,
    }


def is_export(folder: Path) -> bool:
    """Does ``folder`` hold an rnnkit export (its ``config.json`` says so)?"""
    try:
        return _read_json(folder / CONFIG).get("format") == FORMAT
    except (files.FileError, ValueError):
        return False


def _read_json(path: Path) -> Any:
    raw = files.read_bytes(path, "JSON file")
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=no_json_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ValueError(f"{path}: not valid JSON ({e}); export the model again") from None



# ---- loading --------------------------------------------------------------------------------


def load(path: str | os.PathLike[str], *, which: str = "best") -> TextModel:
    """The model at ``path``: a run directory (its best checkpoint, or ``which="last"``), a
    checkpoint file, an export folder, or an export's ``model.safetensors``. Everything is
    checked before a model is built; a problem is an error that names the file and the fix."""
    from .rundir import load_language_model

    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or a path (a run directory, a checkpoint or an "
                        f"export folder); got {type(path).__name__}")
    p = Path(path)
    if p.is_dir() and (p / CONFIG).exists():
        return _load_export(p)
    if p.is_file() and not p.is_dir():
        meta = checkpoint.read_meta(p)
        if meta.get("kind") == KIND:
            model, vocab, config = _load_weights(p)
            return TextModel(model, vocab, config, str(p))
    model, vocab, meta = load_language_model(p, which)
    return TextModel(model, vocab, {"training": training_summary(meta, which)}, str(p))


def _load_weights(path: Path) -> tuple[LanguageModel, Vocab, dict[str, Any]]:
    built: dict[str, Any] = {}

    def expect(meta: dict[str, Any], specs: checkpoint.Specs) -> None:
        if meta.get("kind") != KIND:
            raise ValueError(f"kind is {meta.get('kind')!r}, not {KIND!r}")
        config = meta.get("config")
        if not isinstance(config, dict):
            raise ValueError("its metadata lacks the config")
        cfg = LMConfig.from_json(config.get("model"))
        vocab = Vocab.from_json(meta.get("vocab"))
        if cfg.vocab_size != len(vocab):
            raise ValueError(f"model vocab_size {cfg.vocab_size} != vocabulary size "
                             f"{len(vocab)}")
        check_parameters(cfg, specs)
        built.update(cfg=cfg, vocab=vocab, config=config)

    tensors, _ = checkpoint.load(path, expect)
    model = LanguageModel(built["cfg"], rng=0)
    try:
        model.load_state_dict(tensors, strict=True)
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: not a usable rnnkit model: {e}") from e
    return model, built["vocab"], built["config"]


def _load_export(folder: Path) -> TextModel:
    config = _read_json(folder / CONFIG)
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ValueError(f"{folder / CONFIG}: not an rnnkit export config (format "
                         f"{FORMAT!r} expected)")
    if config.get("version") != VERSION:
        raise ValueError(f"{folder / CONFIG}: export version {config.get('version')!r}; this "
                         f"rnnkit reads version {VERSION}. Upgrade rnnkit or export again")
    model, vocab, stored = _load_weights(folder / WEIGHTS)
    itos = _read_json(folder / VOCAB)
    for what, here, there in (("model", config.get("model"), stored.get("model")),
                              ("tokenizer", config.get("tokenizer"), stored.get("tokenizer"))):
        if here != there:
            raise ValueError(f"{folder}: {CONFIG}'s {what} differs from the one {WEIGHTS} was "
                             "exported with; the files come from different exports. Export "
                             "the model again")
    if itos != list(vocab.itos):
        raise ValueError(f"{folder}: {VOCAB} differs from the vocabulary {WEIGHTS} was exported "
                         "with; the files come from different exports. Export the model again")
    return TextModel(model, vocab, config, str(folder))


def from_torch(module: Any, vocab: Vocab) -> TextModel:
    """A PyTorch language model (``rnnkit.to_torch``'s, or any with ``embedding``, ``rnn`` and
    ``decoder``) and its vocabulary, back as a :class:`TextModel` (``rnnkit.pytorch``)."""
    from .pytorch import from_torch as convert

    return TextModel(convert(module), vocab)


# ---- the model card -------------------------------------------------------------------------


def model_card(config: dict[str, Any], name: str) -> str:
    """The export's README.md."""
    m, tok, t = config["model"], config["tokenizer"], config.get("training", {})
    unit = "character" if tok["level"] == "char" else "word"

    def val(x: Any, fmt: str = "{}") -> str:
        return "unknown" if x is None else fmt.format(x)

    seconds = t.get("train_seconds")
    minutes = ("unknown" if not isinstance(seconds, (int, float)) else f"{seconds:.0f} s"
               if seconds < 120 else f"{seconds / 60:.1f} min")
    rnn_args = f"{m['vocab_size'] if m['one_hot'] else m['embedding_dim']}, {m['hidden_size']}"
    rnn_args += f", {m['num_layers']}" if m["num_layers"] != 1 else ""
    rnn_args += ", nonlinearity='relu'" if m["cell"] == "rnn" and m["nonlinearity"] == "relu" \
        else ""
    source = f" ({t['corpus_source']})" if t.get("corpus_source") else ""
    lines = [
        f"# {name}: a {unit}-level {m['cell'].upper()} language model",
        "",
        f"{m['num_layers']} x {m['hidden_size']} {m['cell'].upper()}, "
        + ("one-hot input" if m["one_hot"] else f"embedding {m['embedding_dim']}")
        + f", {m['vocab_size']} tokens ({tok['level']} level, {tok['mode']} mode), "
        f"weights in {m['dtype']}. Trained with rnnkit.",
        "",
        "## Training",
        "",
        "| | |", "|---|---|",
        f"| corpus | {val(t.get('corpus'))}{source} |",
        f"| steps | {val(t.get('steps'))} (checkpoint: {val(t.get('checkpoint'))}) |",
        f"| training time | {minutes} |",
        f"| best validation loss | {val(t.get('best_val_loss_nats'), '{:.4f}')} nats / "
        f"{val(t.get('best_val_loss_bits'), '{:.4f}')} bits per {unit} "
        f"(step {val(t.get('best_step'))}) |",
        "",
        "Command:",
        "",
        "```sh",
        val(t.get("command")),
        "```",
        "",
        "## Files",
        "",
        f"- `{CONFIG}`: architecture, tokenizer and this training summary",
        f"- `{WEIGHTS}`: the weights, under the PyTorch model's state_dict names",
        f"- `{VOCAB}`: the tokens in id order",
        f"- `{ONNX}`: the whole model (float32), inputs `tokens` (T, B) int64 and the "
        "initial states, outputs `logits` (T, B, V) and the final states",
        "",
        "## Use it",
        "",
        "rnnkit:",
        "",
        "```python",
        "import rnnkit",
        f'm = rnnkit.load("{name}")',
        'print(m.generate("", 300, temperature=0.8))',
        "```",
        "",
        "PyTorch, without rnnkit (`model.safetensors` holds this module's state_dict):",
        "",
        "```python",
        "import torch, safetensors.torch",
        "",
        "class LanguageModel(torch.nn.Module):",
        "    def __init__(self):",
        "        super().__init__()",
        *([] if m["one_hot"] else
          [f"        self.embedding = torch.nn.Embedding({m['vocab_size']}, "
           f"{m['embedding_dim']})"]),
        f"        self.rnn = torch.nn.{m['cell'].upper()}({rnn_args})",
        f"        self.decoder = torch.nn.Linear({m['hidden_size']}, {m['vocab_size']})",
        "",
        "    def forward(self, tokens, state=None):         # tokens: (T, B) int64 ids",
        ("        x = torch.nn.functional.one_hot(tokens, "
         f"{m['vocab_size']}).to(self.decoder.weight.dtype)" if m["one_hot"] else
         "        x = self.embedding(tokens)"),
        "        y, state = self.rnn(x, state)",
        "        return self.decoder(y), state",
        "",
        "lm = LanguageModel()" + (".double()" if m["dtype"] == "float64" else ""),
        f'lm.load_state_dict(safetensors.torch.load_file("{name}/{WEIGHTS}"), strict=True)',
        "```",
        "",
        f'or, with rnnkit: `lm = rnnkit.to_torch(rnnkit.load("{name}"))`.',
        "",
        "onnxruntime, without rnnkit (see rnnkit's `examples/onnx_generate.py`):",
        "",
        "```python",
        "import numpy as np, onnxruntime as ort",
        f'session = ort.InferenceSession("{name}/{ONNX}")',
        f"h0 = np.zeros(({m['num_layers']}, 1, {m['hidden_size']}), np.float32)",
        'feeds = {"tokens": np.array([[0]], np.int64), "h0": h0'
        + (', "c0": h0' if m["cell"] == "lstm" else "") + "}",
        "logits, *state = session.run(None, feeds)",
        "```",
        "",
    ]
    return "\n".join(files.printable(line) for line in lines)
