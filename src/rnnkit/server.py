"""``rnnkit serve RUN``: one local page to watch a run learn and look inside its model.

    rnnkit serve runs/shakespeare              # http://127.0.0.1:8000/
    rnnkit serve runs/shakespeare --port 0     # any free port (the URL is printed)

Tabs: Training (the metrics log's curves, live while a trainer writes it, and the sample of each
evaluation), Sample (tokens streamed as they are drawn, each with its probability and the top
five), Neurons (a heat map of every unit over a text, the text coloured by one unit, LSTMVis's
select-and-match span query, the feature correlations of ``rnnkit lab neurons``), Gradients
(||dL/dh_t|| over the steps back, the run's model beside untrained cells of its size).

Why the standard library's ``http.server`` and not a framework: the page is one user's local
viewer with a handful of endpoints; ``ThreadingHTTPServer`` streams server-sent events, runs
requests side by side and needs no dependency, while Flask or Starlette + uvicorn would add
four to six packages for routing that fits in one table (:data:`ROUTES`). What a framework
would give for free is done here once: each request is validated before any work (a bad one
is a 400 whose message says what was expected and what came), bodies and texts are capped, an
unknown path is a 404, and a request that fails leaves the server serving.

Safety: binds 127.0.0.1 unless ``--host`` says otherwise; answers only requests whose ``Host``
is the address it serves (a web page elsewhere cannot reach it through DNS rebinding) and
refuses cross-site POSTs; serves only the fixed files of :data:`STATIC` and the run it was
given (no path from a request ever reaches the file system); every response carries a
Content-Security-Policy that allows nothing outside this origin. The page writes nothing: it
reads the run directory (never taking the trainer's lock) and runs the model in NumPy.

The API (JSON unless said; errors ``{"error": "..."}``):

    GET  /api/run                  the model, its checkpoint, limits, defaults
    GET  /api/metrics?since=N&step=S   metrics-log records after the first N
    GET  /api/sample?prime=&length=&temperature=&top_k=&top_p=&seed=&beam=
                                   text/event-stream: start, token (id, text, p, q, top 5), done
    POST /api/neurons              {text, start, length, layer, kind}: activations (float32,
                                   base64), display pieces, per-unit scale, feature table
    POST /api/neurons/match        ... + {span, threshold, pad}: units on across the span and
                                   off around it, and every run of tokens where they are all on
    POST /api/gradients            {text, start, length}: ||dL/dh_t|| per layer and for
                                   untrained RNN, GRU, LSTM cells of the same size
"""

from __future__ import annotations

import base64
import collections
import contextlib
import hashlib
import http.server
import ipaddress
import itertools
import json
import math
import os
import re
import signal
import socket
import sys
import threading
import time
import traceback
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from . import checkpoint
from .checks import UsageError, check_scalar, no_json_constant
from .files import printable

LIMITS = {
    "max_length": 2000,          # tokens one sample may generate
    "max_prime": 2000,           # characters of a prime
    "max_beam": 16,              # beam width
    "max_text_chars": 200_000,   # characters of a text sent for the Neurons or Gradients tab
    "max_tokens": 4000,          # tokens the Neurons tab reads at once
    "max_span": 400,             # tokens of a Gradients span
    "max_body": 1_000_000,       # bytes of a request body
}
DEFAULTS: dict[str, Any] = {"length": 300, "temperature": 0.8, "seed": 0, "neurons_length": 1000,
            "gradients_length": 100, "threshold": 0.3, "pad": 1}
MAX_MATCHES = 200
GATE_BIAS = 3.0                  # the untrained GRU/LSTM of the Gradients tab, as rnnkit lab

# the files the page is made of: name -> content type (nothing else is ever served)
STATIC = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "uPlot.min.css": "text/css; charset=utf-8",
    "LICENSE-uPlot.txt": "text/plain; charset=utf-8",
}
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
       "frame-ancestors 'none'; form-action 'self'")


class HTTPError(Exception):
    """A request the server answers with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def bad(message: str) -> HTTPError:
    return HTTPError(400, message)


# ---- the run as the page sees it --------------------------------------------------------------


@dataclass
class Loaded:
    """One checkpoint's model, read once per version of the file."""

    key: tuple[int, ...]
    text_model: Any                   # pretrained.TextModel
    meta: dict[str, Any]              # the checkpoint's metadata (a run's; {} for an export)
    path: Path


class RunView:
    """The run directory (or checkpoint, or export folder) behind the page: its metrics log,
    its newest best model (loaded again when a trainer writes a better one) and its held-out
    text. Safe to use from many request threads."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        from .pretrained import is_export
        from .rundir import MetricsTail, RunDir

        self.path = Path(path)
        if not self.path.exists():
            raise UsageError(f"{self.path}: no such run directory, checkpoint or export folder; "
                             "give the --out directory of rnnkit train")
        if self.path.is_dir():
            self.kind = "export" if is_export(self.path) else "run"
        elif self.path.is_file():
            self.kind = "checkpoint"
        else:
            raise UsageError(f"{self.path}: not a directory or a regular file; give a run "
                             "directory, a checkpoint or an export folder")
        self.rundir = RunDir(self.path) if self.kind == "run" else None
        self.tail = MetricsTail(self.rundir.metrics) if self.rundir else None
        self._lock = threading.Lock()
        self._loaded: Loaded | None = None
        self.warning: str | None = None       # what the page should know (a damaged checkpoint)
        self._checked = 0.0
        self._heldout: dict[Any, Any] = {}
        self._untrained: dict[Any, Any] = {}
        self._cache: collections.OrderedDict[Any, Any] = collections.OrderedDict()

    # -- the model ------------------------------------------------------------------------------
    def checkpoint_path(self) -> Path | None:
        """The checkpoint the page shows: a run's newest best, an export's weights, the file
        given; None while a run has none."""
        from .rundir import RunDirError

        if self.rundir is None:
            from .pretrained import WEIGHTS

            return self.path / WEIGHTS if self.kind == "export" else self.path
        try:
            return self.rundir.newest_best()
        except RunDirError:                   # neither best nor last yet
            return None

    def _missing(self) -> str:
        """Why there is no model to show, in words a user can act on."""
        if not self.path.is_dir():
            return (f"{self.path} is gone (deleted or renamed while the page was open); "
                    "serve the run again where it is now")
        if self.rundir is not None and not self.rundir.metrics.exists() and \
                not (self.path / ".lock").exists():
            return (f"{self.path} holds no checkpoint and no metrics.jsonl: it is not a run "
                    "directory of rnnkit train (yet). Serve the --out directory of a run; a run "
                    "started here later is picked up as it writes")
        return (f"{self.path} has no checkpoint yet: the first one is written at the first "
                "evaluation (--eval-interval steps); the Training tab shows the run meanwhile")

    def loaded(self, *, required: bool = True) -> Loaded | None:
        """The current model; at most once a second it looks whether the checkpoint changed."""
        with self._lock:
            now = time.monotonic()
            if self._loaded is not None and now - self._checked < 1.0:
                return self._loaded
            self._checked = now
            p = self.checkpoint_path()
            try:
                st = None if p is None else os.stat(p)
            except OSError:
                st = None
            if st is None:
                if self._loaded is not None:
                    self.warning = (f"{p or self.path}: the checkpoint is gone; showing the "
                                    f"model loaded before ({self._step(self._loaded)})")
                elif required:
                    raise HTTPError(409, self._missing())
                return self._loaded
            key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            if self._loaded is None or self._loaded.key != key:
                assert p is not None
                self._loaded = self._load(p, key)
            return self._loaded

    @staticmethod
    def _step(loaded: Loaded) -> str:
        step = loaded.meta.get("step")
        return f"step {step}" if isinstance(step, int) else loaded.path.name

    def _load(self, p: Path, key: tuple[int, ...]) -> Loaded:
        """Load ``p``; in a run whose best checkpoint is damaged, its last one (the model
        moves on, with a warning); else keep what was loaded before, with a warning."""
        from . import pretrained

        tries = [p]
        if self.rundir is not None:
            tries.append(self.rundir.last if p == self.rundir.best else self.rundir.best)
        errors = []
        for q in tries:
            try:
                if not q.is_file():
                    raise ValueError(f"{q}: is not a regular file")
                m = pretrained.load(self.path if self.kind == "export" else q)
                meta = {} if self.kind == "export" else checkpoint.read_meta(q)
            except Exception as e:        # damaged, replaced while read, not a model
                errors.append(str(e))
                continue
            m.model.eval()                # once: eval_mode() in every request changes nothing
            self.warning = None if q == p else (f"{errors[0]}; showing {q.name} instead")
            return Loaded(key, m, meta, q)
        if self._loaded is not None:
            self.warning = (f"{errors[0]}; showing the model loaded before "
                            f"({self._step(self._loaded)})")
            return Loaded(key, self._loaded.text_model, self._loaded.meta, self._loaded.path)
        raise HTTPError(409, f"the model cannot be loaded: {errors[0]}")

    # -- texts ----------------------------------------------------------------------------------
    def heldout(self, loaded: Loaded) -> tuple[str, str]:
        """The run's held-out text and its description (as ``rnnkit lab neurons`` reads it)."""
        from .train import validation_text

        train = loaded.meta.get("train") if isinstance(loaded.meta.get("train"), dict) else {}
        key = (json.dumps(train, sort_keys=True, default=str), loaded.meta.get("data_crc"))
        with self._lock:
            got = self._heldout.get(key)
        if got is None:                       # read outside the lock: metrics polls go on
            try:
                got = validation_text(loaded.meta, loaded.text_model.vocab.level)
            except (ValueError, OSError) as e:
                got = str(e).replace("give --text FILE", "give your own text")
            with self._lock:
                self._heldout = {key: got}
        if isinstance(got, str):
            raise bad(f"this run has no held-out text to show: {got}")
        return got

    def untrained(self, loaded: Loaded) -> Any:
        from .models import LanguageModel

        cfg = loaded.text_model.model.config
        with self._lock:
            if cfg not in self._untrained:
                m = LanguageModel(cfg, rng=0)
                m.eval()
                self._untrained = {cfg: m}
            return self._untrained[cfg]

    def cached(self, key: Any, make: Callable[[], Any]) -> Any:
        """A small LRU of recent results (the activations of a text for its layer switches
        and span queries; the untrained cells' gradient norms)."""
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        value = make()
        with self._lock:
            self._cache[key] = value
            while len(self._cache) > 8:
                self._cache.popitem(last=False)
        return value


# ---- validation of what a request sends ---------------------------------------------------------


def _field(body: dict[str, Any], name: str, kind: Any, default: Any = None, **bounds: Any) -> Any:
    """``body[name]`` checked by :func:`checks.check_scalar`; a problem is a 400."""
    x = body.get(name, default)
    try:
        return check_scalar(x, name, kind, **bounds)
    except (TypeError, ValueError) as e:
        raise bad(str(e)) from None


def _number(query: dict[str, str], name: str, kind: type, default: Any, **bounds: Any) -> Any:
    """A query parameter as an int or float ("" or absent: ``default``)."""
    raw = query.get(name, "")
    if raw == "":
        return default
    pattern = _INT if kind is int else _FLOAT
    if len(raw) > 40 or not pattern.fullmatch(raw):
        raise bad(f"{name} must be {'an integer' if kind is int else 'a number'} written with "
                  f"ASCII digits (at most 40 characters); got {raw[:40]!r}")
    try:
        return check_scalar(int(raw) if kind is int else float(raw), name, kind, **bounds)
    except (TypeError, ValueError) as e:
        raise bad(str(e)) from None


_INT = re.compile(r"-?[0-9]+")
_FLOAT = re.compile(r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


def _text_field(body: dict[str, Any]) -> str | None:
    text = body.get("text")
    if text is None:
        return None
    if not isinstance(text, str):
        raise bad(f"text must be a string or null (the run's held-out text); got "
                  f"{type(text).__name__}")
    if len(text) > LIMITS["max_text_chars"]:
        raise bad(f"text has {len(text):,} characters; at most {LIMITS['max_text_chars']:,} "
                  "are read: send a shorter text")
    if not text.strip():
        raise bad("text is empty; send some text, or null for the run's held-out text")
    return text


def _only(body: dict[str, Any], allowed: tuple[str, ...]) -> None:
    extra = sorted(set(body) - set(allowed))
    if extra:
        raise bad(f"unknown field(s) {', '.join(map(repr, extra[:5]))}; the fields are "
                  + ", ".join(allowed))


def _finite(x: Any) -> Any:
    """Floats (or lists of them) for JSON: NaN and infinities as None."""
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    return x


# ---- the endpoints ------------------------------------------------------------------------------


class App:
    """The endpoints, each a method taking the parsed request; :class:`Handler` routes."""

    def __init__(self, view: RunView) -> None:
        self.view = view

    # -- GET /api/run ---------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        view = self.view
        problem = None
        try:
            loaded = view.loaded(required=False)
        except HTTPError as e:                 # a damaged model: the Training tab still works
            loaded, problem = None, str(e)
        out: dict[str, Any] = {"run": str(view.path), "kind": view.kind,
                               "warning": problem or view.warning,
                               "has_metrics": bool(view.rundir and view.rundir.metrics.is_file()),
                               "limits": LIMITS, "defaults": DEFAULTS, "checkpoint": None,
                               "model": None, "level": None, "mode": None, "unit": None,
                               "kinds": [], "heldout": None, "training": None}
        if loaded is None:
            out["heldout"] = {"error": problem or view._missing()}
            return out
        tm = loaded.text_model
        cfg = tm.model.config
        training = tm.config.get("training", {})
        out.update(
            model={"cell": cfg.cell, "num_layers": cfg.num_layers, "hidden_size": cfg.hidden_size,
                   "embedding_dim": None if cfg.one_hot else cfg.embedding_dim,
                   "one_hot": cfg.one_hot, "dtype": cfg.dtype, "vocab_size": cfg.vocab_size},
            level=tm.vocab.level, mode=tm.mode, unit="char" if tm.vocab.level == "char" else "word",
            kinds=["h", "c"] if cfg.cell == "lstm" else ["h"],
            checkpoint={"step": loaded.meta.get("step", training.get("steps")),
                        "val_loss": _finite(loaded.meta.get("best_val",
                                                            training.get("best_val_loss_nats"))),
                        "path": str(loaded.path)},
            training=_finite_dict(training))
        try:
            text, source = view.heldout(loaded)
            out["heldout"] = {"source": source, "chars": len(text)}
        except HTTPError as e:
            out["heldout"] = {"error": str(e)}
        return out

    # -- GET /api/metrics -----------------------------------------------------------------------
    def metrics(self, query: dict[str, str]) -> dict[str, Any]:
        since = _number(query, "since", int, 0, min_val=0)
        step = _number(query, "step", float, None)
        tail = self.view.tail
        if tail is None:
            return {"total": 0, "reset": since > 0, "training": False, "records": []}
        with self.view._lock:
            records = list(tail.read())
        reset = since > len(records) or (since > 0 and step is not None
                                         and records[since - 1].get("step") != step)
        start = 0 if reset else since
        assert self.view.rundir is not None
        return {"total": len(records), "reset": reset,
                "training": self.view.rundir.trainer() is not None,
                "records": records[start:]}

    # -- GET /api/sample ------------------------------------------------------------------------
    def sample(self, query: dict[str, str]) -> Iterator[tuple[str, dict[str, Any]]]:
        """Validates everything, then returns the stream of events (a generator)."""
        from .generate import (
            beam_search,
            check_sampling,
            continuation_pieces,
            continuation_text,
            prime_ids,
            sampling_probs,
            stream,
        )

        prime = query.get("prime", "")
        if len(prime) > LIMITS["max_prime"]:
            raise bad(f"prime has {len(prime):,} characters; at most {LIMITS['max_prime']:,}")
        length = _number(query, "length", int, DEFAULTS["length"], min_val=1,
                         max_val=LIMITS["max_length"])
        temperature = _number(query, "temperature", float, DEFAULTS["temperature"], min_val=0,
                              max_val=100)
        top_k = _number(query, "top_k", int, None, min_val=1)
        top_p = _number(query, "top_p", float, None, min_val=0, max_val=1,
                        include_boundaries="right")
        seed = _number(query, "seed", int, DEFAULTS["seed"], min_val=0)
        beam = _number(query, "beam", int, None, min_val=1, max_val=LIMITS["max_beam"])
        check_sampling(temperature, top_k, top_p)
        loaded = self.view.loaded()
        assert loaded is not None
        tm = loaded.text_model
        vocab, model = tm.vocab, tm.model
        try:
            start_ids = prime_ids(vocab, prime)
        except ValueError as e:
            raise bad(f"prime: {e}") from None
        step = loaded.meta.get("step", tm.config.get("training", {}).get("steps"))

        def events() -> Iterator[tuple[str, dict[str, Any]]]:
            t0 = time.perf_counter()
            yield "start", {"prime": prime, "checkpoint_step": step}
            ids: list[int] = []
            if beam:
                best = beam_search(model, start_ids, length, beam, end_id=vocab.end_id)[0]
                draws = _rescore(model, start_ids, best.ids)
            else:
                draws = ((d.id, d.logits) for d in stream(
                    model, start_ids, length, rng=np.random.default_rng(seed),
                    temperature=temperature, top_k=top_k, top_p=top_p, end_id=vocab.end_id))
            stopped = "length"
            draws, tokens = itertools.tee(draws)
            pieces = continuation_pieces(vocab, prime, (tok for tok, _ in tokens))
            for i, ((tok, logits), piece) in enumerate(zip(draws, pieces, strict=True)):
                ids.append(tok)
                p = _softmax(logits)
                top = np.argsort(-p, kind="stable")[:5]
                q = 1.0 if beam else float(sampling_probs(logits, temperature, top_k,
                                                          top_p)[tok])
                yield "token", {"i": i, "id": tok, "token": vocab.itos[tok], "text": piece,
                                "p": float(p[tok]), "q": q,
                                "top": [{"token": vocab.itos[j], "p": float(p[j])} for j in top]}
                if vocab.end_id is not None and tok == vocab.end_id:
                    stopped = "end"
            yield "done", {"text": continuation_text(vocab, prime, ids), "tokens": len(ids),
                           "stopped": stopped, "seconds": round(time.perf_counter() - t0, 3)}

        return events()

    # -- POST /api/neurons ----------------------------------------------------------------------
    TEXT_FIELDS = ("text", "start", "length", "layer", "kind")

    def _activations(self, body: dict[str, Any], default_length: int) -> tuple[Any, ...]:
        """The text of the request read by the model: (loaded, enc, acts, found, source)."""
        from .lab.neurons import encode_text, record_activations, text_features, top_units

        loaded = self.view.loaded()
        assert loaded is not None
        text = _text_field(body)
        start = _field(body, "start", int, 0, min_val=0)
        length = _field(body, "length", int, default_length, min_val=1,
                        max_val=LIMITS["max_tokens"])
        if text is None:
            text, source = self.view.heldout(loaded)
        else:
            source = "your text"
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()

        def make() -> tuple[Any, ...]:
            try:
                enc = encode_text(loaded.text_model.vocab, text, start, length)
            except ValueError as e:
                raise bad(str(e)) from None
            acts = record_activations(loaded.text_model.model, enc)
            control = record_activations(self.view.untrained(loaded), enc)
            found = top_units(acts, text_features(enc.tokens, enc.level), 3, control)
            return enc, acts, found

        enc, acts, found = self.view.cached(("acts", loaded.key, digest, start, length), make)
        return loaded, enc, acts, found, source

    def _block(self, loaded: Loaded, acts: Any, body: dict[str, Any]) -> tuple[int, str, Any]:
        cfg = loaded.text_model.model.config
        layer = _field(body, "layer", int, 0, min_val=0, max_val=cfg.num_layers - 1)
        kinds = ("h", "c") if cfg.cell == "lstm" else ("h",)
        kind = body.get("kind", "h")
        if kind not in kinds:
            raise bad(f"kind must be {' or '.join(map(repr, kinds))} for this "
                      f"{cfg.cell.upper()}; got {str(kind)[:20]!r}")
        return layer, kind, acts.column_block(layer, kind)

    def neurons(self, body: dict[str, Any]) -> dict[str, Any]:
        from .lab.neurons import display_pieces

        _only(body, self.TEXT_FIELDS)
        loaded, enc, acts, found, source = self._activations(body, DEFAULTS["neurons_length"])
        layer, kind, block = self._block(loaded, acts, body)
        block = np.ascontiguousarray(block, dtype="<f4")
        T, H = block.shape
        return {"source": source, "start": body.get("start", 0), "T": T, "H": H,
                "layer": layer, "kind": kind, "tokens": enc.tokens,
                "display": display_pieces(enc.tokens, enc.level),
                "values": base64.b64encode(block.tobytes()).decode("ascii"),
                "scale": [float(x) for x in np.abs(block).max(axis=0)],
                "unknown": enc.unknown,
                "features": [{"name": fu.feature.name, "description": fu.feature.description,
                              "coverage": fu.feature.coverage(), "binary": fu.feature.binary,
                              "units": [{"layer": u.layer, "kind": u.kind, "index": u.index,
                                         "label": u.label, "r": _finite(r)}
                                        for u, r in fu.units],
                              "control": _finite(fu.control)} for fu in found]}

    # -- POST /api/neurons/match ----------------------------------------------------------------
    def match(self, body: dict[str, Any]) -> dict[str, Any]:
        from .lab.neurons import match_spans, select_units

        _only(body, (*self.TEXT_FIELDS, "span", "threshold", "pad"))
        span = body.get("span")
        if not (isinstance(span, list) and len(span) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) for v in span)):
            raise bad(f"span must be [start, end]: two integers, tokens start .. end-1; got "
                      f"{json.dumps(span)[:40]}")
        threshold = _field(body, "threshold", float, DEFAULTS["threshold"])
        pad = _field(body, "pad", int, DEFAULTS["pad"], min_val=0, max_val=100)
        loaded, _enc, acts, _, _ = self._activations(body, DEFAULTS["neurons_length"])
        layer, kind, block = self._block(loaded, acts, body)
        try:
            units = select_units(block, span[0], span[1], threshold, pad)
        except (TypeError, ValueError) as e:
            raise bad(str(e)) from None
        found = match_spans(block, units, threshold)
        a, b = span
        return {"units": units.tolist(), "threshold": threshold, "pad": pad, "span": span,
                "layer": layer, "kind": kind, "total": len(found),
                "matches": [{"start": m.start, "end": m.end,
                             "query": m.start <= a and b <= m.end}
                            for m in found[:MAX_MATCHES]]}

    # -- POST /api/gradients --------------------------------------------------------------------
    def gradients(self, body: dict[str, Any]) -> dict[str, Any]:
        from .lab.gradients import gradient_norms, model_gradient_norms
        from .lab.neurons import display_pieces, encode_text

        _only(body, ("text", "start", "length"))
        loaded = self.view.loaded()
        assert loaded is not None
        text = _text_field(body)
        start = _field(body, "start", int, 0, min_val=0)
        length = _field(body, "length", int, DEFAULTS["gradients_length"], min_val=2,
                        max_val=LIMITS["max_span"])
        if text is None:
            text, _ = self.view.heldout(loaded)
        tm = loaded.text_model
        try:
            enc = encode_text(tm.vocab, text, start, length + 1)       # the span + its target
        except ValueError as e:
            raise bad(str(e)) from None
        breaks = np.flatnonzero(enc.resets[1:]) + 1
        if breaks.size and tm.vocab.end_id is not None:
            # a sentence-mode model reads each line from a fresh state and ends it with <end>:
            # the span stops at its line's end, the target is <end>
            n = int(breaks[0])
            ids, target, target_tok = enc.ids[:n], tm.vocab.end_id, tm.vocab.itos[tm.vocab.end_id]
        else:
            n = len(enc.ids) - 1
            ids, target, target_tok = enc.ids[:-1], int(enc.ids[-1]), enc.tokens[-1]
        if n < 2:
            raise bad(f"from token {start} the text has {n} token(s) before "
                      + ("its line ends" if breaks.size else "it ends")
                      + "; a span needs two tokens and the one after them: choose another start")
        r = model_gradient_norms(tm.model, ids, target)
        cfg = tm.model.config
        T, H = len(ids), cfg.hidden_size
        name = {"rnn": "RNN", "gru": "GRU", "lstm": "LSTM"}[cfg.cell]
        series = [{"label": f"this run's {name}, layer {layer}"
                   + (" (top)" if layer == cfg.num_layers - 1 and cfg.num_layers > 1 else ""),
                   "kind": "model", "layer": layer,
                   "norms": _finite(r.norms[layer, ::-1].tolist())}
                  for layer in reversed(range(cfg.num_layers))]
        for cell, label in (("rnn", "tanh RNN"), ("gru", "GRU"), ("lstm", "LSTM")):
            # the untrained cells do not depend on the text: one walk per cell and size
            def walk(c: str = cell) -> Any:
                g = gradient_norms(c, T=T, hidden_size=H,
                                   gate_bias=GATE_BIAS if c != "rnn" else 0.0, seed=0)
                return _finite(g.norms[::-1].tolist())

            norms = self.view.cached(("untrained", cell, T, H), walk)
            series.append({"label": f"{label}, untrained (H={H})", "kind": cell,
                           "norms": norms})
        return {"tokens": enc.tokens[:n], "display": display_pieces(enc.tokens[:n], enc.level),
                "T": T, "requested": length, "cut": n < length, "target": target_tok,
                "loss": _finite(r.loss), "series": series}


def _finite_dict(d: dict[str, Any]) -> dict[str, Any]:
    return {k: _finite(v) for k, v in d.items()}


def _softmax(logits: Any) -> Any:
    z = logits.astype(np.float64)
    z = np.exp(z - z.max())
    return z / z.sum()


def _rescore(model: Any, prime: list[int], ids: list[int]) -> Iterator[tuple[int, Any]]:
    """Each token of ``ids`` (a finished beam) with the logits the model had before it."""
    from .generate import _prime
    from .module import eval_mode

    with eval_mode(model):
        token, state = _prime(model, prime)
        step = model.stepper()
        tokens = token
        for tok in ids:
            logits, state = step(tokens, state)
            yield tok, logits[0]
            tokens = np.array([tok], dtype=np.int64)


# ---- HTTP ----------------------------------------------------------------------------------------


def _static(name: str) -> bytes:
    return resources.files("rnnkit").joinpath("web", name).read_bytes()


class Handler(http.server.BaseHTTPRequestHandler):
    server: Server
    server_version = "rnnkit"
    sys_version = ""
    protocol_version = "HTTP/1.0"           # one response per connection; a stream ends with it
    timeout = 60                            # a client that sends nothing frees its thread

    def log_message(self, format: str, *args: Any) -> None:   # quiet: the page is the log
        pass

    # -- answering ------------------------------------------------------------------------------
    def _headers(self, status: int, ctype: str, length: int | None = None,
                 extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Frame-Options", "DENY")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()

    def _send(self, status: int, ctype: str, data: bytes,
              extra: dict[str, str] | None = None) -> None:
        self._headers(status, ctype, len(data), extra)
        if self.command != "HEAD":
            self.wfile.write(data)

    def _json(self, obj: Any, status: int = 200) -> None:
        data = json.dumps(obj, allow_nan=False, separators=(",", ":")).encode()
        self._send(status, "application/json; charset=utf-8", data)

    def _error(self, status: int, message: str, extra: dict[str, str] | None = None) -> None:
        data = json.dumps({"error": message}).encode()
        self._send(status, "application/json; charset=utf-8", data, extra)

    # -- checks every request passes ------------------------------------------------------------
    def _host_ok(self) -> bool:
        host = self.headers.get("Host", "")
        return host.lower() in self.server.hosts or self.server.any_host

    def _origin_ok(self) -> bool:
        origin = self.headers.get("Origin")
        if origin is None:
            return True
        try:
            parsed = urllib.parse.urlsplit(origin)
        except ValueError:
            return False
        return parsed.scheme == "http" and parsed.netloc.lower() in self.server.hosts | (
            {self.headers.get("Host", "").lower()} if self.server.any_host else set())

    def _route(self, method: str) -> None:
        try:
            for name in ("Host", "Content-Length", "Content-Type", "Origin"):
                if len(self.headers.get_all(name, [])) > 1:
                    raise bad(f"the {name} header is given more than once; give it once")
            if not self._host_ok():
                raise HTTPError(403, "this server answers only requests for "
                                f"{self.server.url}; open that address")
            url = urllib.parse.urlsplit(self.path)
            path = url.path
            if method in ("GET", "HEAD"):
                if path == "/" or path == "/index.html":
                    return self._send(200, STATIC["index.html"], _static("index.html"))
                if path.startswith("/static/"):
                    name = path[len("/static/"):]
                    if name not in STATIC or name == "index.html":
                        raise HTTPError(404, f"no such file: {name[:80]!r}")
                    return self._send(200, STATIC[name], _static(name))
                if path == "/favicon.ico":
                    return self._send(204, "text/plain", b"")
            query = self._query(url.query)
            app = self.server.app
            if path == "/api/run" and method in ("GET", "HEAD"):
                return self._json(app.run())
            if path == "/api/metrics" and method in ("GET", "HEAD"):
                self._allow(query, ("since", "step"))
                return self._json(app.metrics(query))
            if path == "/api/sample" and method == "GET":
                self._allow(query, ("prime", "length", "temperature", "top_k", "top_p", "seed",
                                    "beam"))
                return self._stream(app.sample(query))
            posts: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
                "/api/neurons": app.neurons, "/api/neurons/match": app.match,
                "/api/gradients": app.gradients}
            if path in posts and method == "POST":
                if not self._origin_ok():
                    raise HTTPError(403, "cross-site requests are refused")
                return self._json(posts[path](self._body()))
            known = {"/", "/index.html", "/api/run", "/api/metrics", "/api/sample", *posts}
            if path in known:
                allow = "POST" if path in posts else "GET" if path == "/api/sample" \
                    else "GET, HEAD"
                return self._error(405, f"{printable(method, keep='')} is not allowed on {path}; "
                                   f"use {allow}",
                                   {"Allow": allow})
            raise HTTPError(404, f"no such page or endpoint: {printable(path[:80], keep='')}")
        except HTTPError as e:
            self._error(e.status, e.args[0])
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as e:                   # a bug: say so, log it, keep serving
            print(f"rnnkit serve: internal error on {method} {printable(self.path[:200], keep='')}"
                  f": {type(e).__name__}: {printable(e, keep='')}", file=sys.stderr)
            if os.environ.get("RNNKIT_DEBUG"):
                traceback.print_exc()
            with contextlib.suppress(OSError):
                self._error(500, f"internal error ({type(e).__name__}: {e}); the server goes "
                            "on; set RNNKIT_DEBUG=1 for the traceback and please report it")

    def _query(self, raw: str) -> dict[str, str]:
        if len(raw) > 3 * LIMITS["max_prime"] * 4 + 1000:
            raise HTTPError(414, "the query string is too long")
        try:
            pairs = urllib.parse.parse_qsl(raw, keep_blank_values=True, strict_parsing=False,
                                           errors="strict", max_num_fields=32)
        except (ValueError, UnicodeDecodeError) as e:
            raise bad(f"the query string cannot be read ({e})") from None
        out: dict[str, str] = {}
        for k, v in pairs:
            if k in out:
                raise bad(f"parameter {k!r} is given twice; give it once")
            out[k] = v
        return out

    @staticmethod
    def _allow(query: dict[str, str], names: tuple[str, ...]) -> None:
        extra = sorted(set(query) - set(names))
        if extra:
            raise bad(f"unknown parameter(s) {', '.join(repr(e[:30]) for e in extra[:5])}; the "
                      "parameters are " + ", ".join(names))

    def _body(self) -> dict[str, Any]:
        if self.headers.get("Transfer-Encoding"):
            raise HTTPError(411, "send the body with a Content-Length, not chunked")
        raw_len = self.headers.get("Content-Length")
        if raw_len is None:
            raise HTTPError(411, "a POST needs a Content-Length header and a JSON body")
        try:
            n = int(raw_len)
        except ValueError:
            raise bad(f"Content-Length must be a number; got {raw_len[:20]!r}") from None
        if n < 0:
            raise bad("Content-Length must not be negative")
        if n > LIMITS["max_body"]:
            raise HTTPError(413, f"the body has {n:,} bytes; at most {LIMITS['max_body']:,} "
                            "are read: send a shorter text")
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise HTTPError(415, f"the body must be JSON (Content-Type: application/json); got "
                            f"{ctype[:40] or 'none'!r}")
        try:
            data = self.rfile.read(n)
        except TimeoutError:
            raise HTTPError(408, f"the body did not arrive: {n} bytes announced by "
                            "Content-Length, fewer sent") from None
        if len(data) != n:
            raise bad(f"the body ended after {len(data)} of {n} bytes")
        try:
            body = json.loads(data.decode("utf-8"), parse_constant=no_json_constant,
                              parse_int=_small_int)
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise bad(f"the body is not valid JSON ({str(e)[:120]})") from None
        if not isinstance(body, dict):
            raise bad(f"the body must be a JSON object; got {type(body).__name__}")
        return body

    def _stream(self, events: Iterator[tuple[str, dict[str, Any]]]) -> None:
        """Server-sent events. Every check ran before (a bad request is a 400 with no stream);
        a failure mid-stream ends it with an ``error`` event."""
        first = next(events)
        self._headers(200, "text/event-stream; charset=utf-8", None,
                      {"X-Accel-Buffering": "no"})
        try:
            for event in _chain(first, events):
                self._event(*event)
        except (BrokenPipeError, ConnectionResetError):
            return                                  # the page went away: stop generating
        except Exception as e:
            print(f"rnnkit serve: error while streaming: {type(e).__name__}: "
                  f"{printable(e, keep='')}", file=sys.stderr)
            with contextlib.suppress(OSError):
                self._event("error", {"error": f"{type(e).__name__}: {e}"})

    def _event(self, name: str, data: dict[str, Any]) -> None:
        payload = json.dumps(_finite_dict(data), allow_nan=False, separators=(",", ":"))
        self.wfile.write(f"event: {name}\ndata: {payload}\n\n".encode())
        self.wfile.flush()

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        """What the standard library answers itself (a method with no handler, a request line
        too long, a malformed request) as JSON with the same headers as everything else."""
        self.close_connection = True
        if not str(getattr(self, "request_version", "")).startswith("HTTP/1."):
            self.request_version = "HTTP/1.0"      # answer with a status line and headers
        if code == 501 and self.command and self.path:      # a method with no do_ handler
            return self._route(self.command[:20])           # 405 with the path's Allow, or 404
        with contextlib.suppress(OSError):
            self._error(code, message or http.HTTPStatus(code).phrase)

    def do_GET(self) -> None:
        self._route("GET")

    def do_HEAD(self) -> None:
        self._route("HEAD")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PUT(self) -> None:
        self._route("PUT")

    def do_DELETE(self) -> None:
        self._route("DELETE")

    def do_PATCH(self) -> None:
        self._route("PATCH")

    def do_OPTIONS(self) -> None:
        self._route("OPTIONS")


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest


def _small_int(text: str) -> int:
    if len(text.lstrip("-")) > 40:
        raise ValueError(f"an integer of {len(text.lstrip('-'))} digits (at most 40 are read)")
    return int(text)


class Server(http.server.ThreadingHTTPServer):
    """The HTTP server of one run: ``url``, and the ``Host`` values it answers."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(self, view: RunView, host: str = "127.0.0.1", port: int = 8000) -> None:
        self.app = App(view)
        if not host.strip():
            raise UsageError("--host is empty; give an address such as 127.0.0.1 (this machine "
                             "only) or 0.0.0.0 (every interface)")
        try:
            self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
            super().__init__((host, port), Handler)
        except (OSError, UnicodeError) as e:
            raise UsageError(_bind_error(host, port, e)) from None
        bound, port = str(self.server_address[0]), int(self.server_address[1])
        self.loopback = _is_loopback(bound)
        wildcard = bound in ("0.0.0.0", "::")
        # what to open: this machine's loopback address when listening everywhere
        shown = ("127.0.0.1" if bound == "0.0.0.0" else "[::1]" if bound == "::"
                 else f"[{bound}]" if ":" in bound else bound)
        self.url = f"http://{shown}:{port}/"
        self.hosts = {f"{shown}:{port}".lower(), f"localhost:{port}", f"127.0.0.1:{port}",
                      f"[::1]:{port}"}
        # reachable from other machines under names this server cannot know: no Host check
        self.any_host = not self.loopback or wildcard

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError,
                                          TimeoutError)):
            return                                 # the client left: nothing to report
        print(f"rnnkit serve: a connection from {client_address[0]} failed: "
              f"{printable(sys.exc_info()[1], keep='')}", file=sys.stderr)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return host == "localhost"


def _bind_error(host: str, port: int, e: Exception) -> str:
    import errno

    if not isinstance(e, OSError):
        return f"cannot listen on {host!r}: not an address ({e}); give --host 127.0.0.1"
    if e.errno == errno.EADDRINUSE:
        return (f"port {port} on {host} is in use (another server?); give another --port, or "
                "--port 0 for any free one")
    if e.errno in (errno.EACCES, errno.EPERM):
        return f"port {port} needs privileges this user lacks; give a --port of 1024 or more"
    if isinstance(e, socket.gaierror) or e.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {host!r}: no such address here; give --host 127.0.0.1"
    return f"cannot listen on {host}:{port} ({e.strerror or e})"


def serve(run: str | os.PathLike[str], host: str = "127.0.0.1", port: int = 8000, *,
          ready: Callable[[Server], None] | None = None) -> None:
    """Serve ``run`` until interrupted; ``ready(server)`` is called once it listens."""
    view = RunView(run)
    if view.kind != "run":               # a damaged checkpoint or export: an error now
        try:
            view.loaded()
        except HTTPError as e:
            raise UsageError(str(e).replace("the model cannot be loaded: ", "")) from None
    server = Server(view, host, port)
    try:
        if ready is not None:
            ready(server)
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()


def add_command(sub: Any) -> None:
    from .checks import int_arg

    s = sub.add_parser("serve", help="a local page: live loss curves, streamed samples, neurons "
                       "and gradients of a run",
                       description="Serve one run's page on this machine: Training (live loss "
                       "curves and the samples by step), Sample (streamed tokens with their "
                       "probabilities), Neurons (heat map, text coloured by a unit, span "
                       "queries) and Gradients. Works offline; stop with Ctrl-C.")
    s.add_argument("run", help="run directory of rnnkit train (or a checkpoint, or an export)")
    s.add_argument("--port", type=int_arg(0, 65535), default=8000,
                   help="port to listen on; 0 picks a free one [default: 8000]")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to listen on [default: 127.0.0.1, this machine only]; "
                   "0.0.0.0 lets other machines in, with no password")
    s.set_defaults(func=cmd_serve)


def cmd_serve(args: Any) -> int:
    def ready(server: Server) -> None:
        note = "" if server.loopback else (
            f"\nwarning: listening on {printable(args.host, keep='')}: anyone who can reach "
            "this machine can open the page (there is no password)")
        print(f"serving {printable(args.run, keep='')} at {server.url} (Ctrl-C to stop){note}",
              flush=True)

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)      # kill/systemd stop: as Ctrl-C
    try:
        serve(args.run, args.host, args.port, ready=ready)
    except KeyboardInterrupt:
        print("stopped", flush=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0
