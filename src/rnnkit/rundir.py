"""The run directory: the one module that knows what is in it and writes into it.

    OUT/
      .lock              held (flock) by the one process training in OUT, for its whole life
      last.safetensors   the newest checkpoint: what ``--resume`` continues
      best.safetensors   the checkpoint with the lowest validation loss so far
      metrics.jsonl      one JSON record per line, append-only
      loss.png           the loss curves

What holds after a kill at any instant:

* every file is its old or its new version (``files.write_atomic``; the log grows by whole
  lines, and a torn last line is cut on resume, never parsed);
* no record of a step up to last's step is lost: an evaluation's record is fsynced before the
  checkpoint it belongs to is written, and travels inside that checkpoint too; resuming cuts the
  records after last's step (the resumed run writes them again, the same numbers), so the log
  ends as that of a run never stopped;
* ``best`` is never older than a ``last`` that was a new best: ``last`` is written first, and
  a reader (or resuming) takes ``last`` where ``best`` lags behind it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import stat
from pathlib import Path
from typing import Any

import numpy as np

from . import checkpoint, checks, files
from .checkpoint import SUFFIX, CheckpointError

LAST, BEST = f"last{SUFFIX}", f"best{SUFFIX}"
METRICS, PLOT, LOCK = "metrics.jsonl", "loss.png", ".lock"


class RunDirError(ValueError):
    """The run directory cannot be used as asked; the message says why and what to do."""


class RunDir:
    """One run's directory; ``acquire()`` (or ``with RunDir(out):``) holds it for a trainer."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.last = self.path / LAST
        self.best = self.path / BEST
        self.metrics = self.path / METRICS
        self.plot_path = self.path / PLOT
        self._lock: Any = None
        self._made: list[Path] = []

    # ---- the lock ------------------------------------------------------------------------------
    def acquire(self) -> None:
        """Create the directory if needed and take its lock; a second trainer (or resume) on
        it gets a RunDirError. Removes temporary files a killed writer left."""
        if self._lock is not None:
            return
        self._made = [d for d in (self.path, *self.path.parents) if not d.exists()]
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT | os.O_NONBLOCK
                         | files.NOFOLLOW | files.CLOEXEC, 0o666)
        except OSError as e:
            if os.path.islink(self.path / LOCK):
                raise RunDirError(f"{self.path / LOCK}: is a symbolic link; rnnkit never "
                                  "writes through a link. Remove it and try again") from e
            raise RunDirError(f"{self.path}: cannot use it as a run directory "
                              f"({e.strerror}); choose another --out") from e
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise RunDirError(f"{self.path / LOCK}: is not a regular file; remove it and try "
                              "again")
        f = open(fd, "r+b")  # noqa: SIM115 (held open for the run's whole life)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pid = f.read(32).decode("ascii", "replace").strip()
            f.close()
            who = f" (process {pid})" if pid.isdigit() else ""
            raise RunDirError(f"{self.path}: another rnnkit process{who} is training in this "
                              "run directory; wait for it to finish or stop it, or choose "
                              "another --out") from None
        f.truncate(0)
        f.write(f"{os.getpid()}\n".encode())
        f.flush()
        self._lock = f
        files.remove_temp_files(self.path)
        for q in (self.last, self.best, self.metrics, self.plot_path):
            if q.exists() and not q.is_file() and not q.is_symlink():
                self.release(undo=True)
                raise RunDirError(f"{q}: is not a regular file, so the run cannot write it; "
                                  "remove it or choose another --out")

    def release(self, *, undo: bool = False) -> None:
        """Let the lock go; ``undo``: also remove the directories ``acquire`` made if nothing
        but the lock is in them (a run refused before it wrote anything leaves no trace)."""
        if self._lock is not None:
            self._lock.close()            # closing the descriptor releases the flock
            self._lock = None
            if undo and self._made and [q.name for q in self.path.iterdir()] == [LOCK]:
                (self.path / LOCK).unlink()
                for d in self._made:      # deepest first
                    with contextlib.suppress(OSError):
                        d.rmdir()

    def __enter__(self) -> RunDir:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    # ---- checkpoints ---------------------------------------------------------------------------
    def has_run(self) -> bool:
        return self.last.is_file() or self.last.is_symlink()

    def save(self, tensors: dict[str, np.ndarray], meta: dict[str, Any], *, best: bool) -> None:
        """``last`` (and then ``best``, at a new best). ``meta`` carries ``step`` and
        ``best_step``, by which a reader finds a ``best`` that a kill left behind ``last``."""
        checkpoint.save(self.last, tensors, meta)
        if best:
            checkpoint.save(self.best, tensors, meta)

    def newest_best(self) -> Path:
        """The checkpoint holding the best model: ``best``, or ``last`` where ``last`` is a
        newer best (a kill came between the two writes), or ``last`` alone."""
        has_last, has_best = self.last.is_file(), self.best.is_file()
        if not has_best and not has_last:
            raise RunDirError(f"{self.path}: no {BEST} or {LAST} here; is it the --out "
                              "directory of rnnkit train?")
        if not (has_best and has_last):
            return self.best if has_best else self.last
        best, last = _meta_or_none(self.best), _meta_or_none(self.last)
        if best is None or last is None:     # one is damaged: the other, which load checks
            return self.last if best is None else self.best
        return self.last if _lags(best, last) else self.best

    def repair_best(self) -> None:
        """Make ``best`` a copy of ``last`` where a kill left it behind (call under the lock)."""
        if not self.last.is_file():
            return
        last = checkpoint.read_meta(self.last)
        best = _meta_or_none(self.best) if self.best.is_file() else None
        if _is_best(last) and (best is None or _lags(best, last)):
            files.write_atomic(self.best, files.read_bytes(self.last, "checkpoint"))

    # ---- the metrics log -----------------------------------------------------------------------
    def new_log(self) -> None:
        """An empty log for a new run (a killed earlier attempt may have left lines)."""
        files.write_atomic(self.metrics, b"")

    def append(self, record: dict[str, Any], *, sync: bool = False) -> None:
        """One record as one line; ``sync`` makes it (and all before it) durable now."""
        files.append_line(self.metrics, _dumps(record), sync=sync)

    def sync(self) -> None:
        files.fsync(self.metrics)

    def records(self) -> list[dict[str, Any]]:
        """Every whole record of the log; a torn or foreign line is skipped, never raised."""
        try:
            data = files.read_bytes(self.metrics, "metrics log")
        except files.FileError:
            return []
        return [r for r in map(_parse, data.split(b"\n")[:-1]) if r is not None]

    def reconcile(self, step: int, record: dict[str, Any] | None) -> None:
        """On resume from a checkpoint at ``step``: keep the records up to ``step``, restore
        that checkpoint's evaluation ``record`` if the log lost it, cut everything after
        (records of steps the resumed run does again, a torn line). Atomic."""
        keep = [r for r in self.records() if r["step"] <= step]
        if record is not None and record not in keep:
            keep.append(record)
        data = "".join(_dumps(r) + "\n" for r in keep).encode()
        try:        # rewritten unless it is already exactly this, in a file of its own
            st = os.lstat(self.metrics)
            same = stat.S_ISREG(st.st_mode) and st.st_nlink == 1 and \
                files.read_bytes(self.metrics, "metrics log") == data
        except (OSError, files.FileError):
            same = False
        if not same:
            files.write_atomic(self.metrics, data)

    def trainer(self) -> int | None:
        """The pid of the process training in this directory now, or None. Read without
        taking the lock (a probe must never make a starting trainer fail): the pid the holder
        wrote into ``.lock``, counted only while that process lives and, where the kernel lists
        its locks (Linux ``/proc/locks``), holds a flock on that very file."""
        try:
            fd = os.open(self.path / LOCK, os.O_RDONLY | os.O_NONBLOCK | files.NOFOLLOW
                         | files.CLOEXEC)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            raw = os.read(fd, 32) if stat.S_ISREG(st.st_mode) else b""
        finally:
            os.close(fd)
        text = raw.decode("ascii", "replace").strip()
        if not text.isdigit() or not 0 < int(text) < 2**31:
            return None
        pid = int(text)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except OSError:               # alive, another user's
            pass
        try:
            with open("/proc/locks", "rb") as f:
                table = f.read()
        except OSError:
            return pid
        inode = f":{st.st_ino} ".encode()
        held = any(b"FLOCK" in line and inode in line + b" " for line in table.splitlines())
        return pid if held else None

    # ---- the plot ------------------------------------------------------------------------------
    def plot(self) -> None:
        """``loss.png``: train loss per step and validation loss per evaluation."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        recs = self.records()
        train = [(r["step"], r["loss"]) for r in recs if _num(r.get("loss"))]
        val = [(r["step"], r["val_loss"]) for r in recs if _num(r.get("val_loss"))]
        fig, ax = plt.subplots(figsize=(7, 4))
        if train:
            ax.plot(*zip(*train, strict=True), lw=0.6, alpha=0.6, label="train (per step)")
        if val:
            ax.plot(*zip(*val, strict=True), "o-", label="validation")
        ax.set_xlabel("step")
        ax.set_ylabel("cross-entropy (nats per token)")
        ax.grid(alpha=0.3)
        if train or val:
            ax.legend()
        fig.tight_layout()
        files.write_figure(self.plot_path, fig)


class MetricsTail:
    """Follows a metrics log as a trainer appends to it: each :meth:`read` parses only the
    whole lines added since the last one. A log that was replaced (``new_log``, or a resume's
    ``reconcile``, both ``write_atomic``: a new file) or cut is read again from its start, and
    ``generation`` counts those restarts. A missing log reads as no records."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.records: list[dict[str, Any]] = []
        self.generation = 0
        self._file: tuple[int, int] | None = None
        self._offset = 0
        self._tail = b""                     # the last bytes read: a replaced file differs
        self._skipping = False               # inside a line too long to be a record

    def _restart(self) -> None:
        self.records, self._offset, self._tail, self._skipping = [], 0, b"", False
        self.generation += 1

    def read(self) -> list[dict[str, Any]]:
        """Every whole record of the log now (a torn or foreign line skipped)."""
        try:                                  # the run's own file, never a link out of it
            fd = files.open_regular(self.path, "metrics log", follow=False)
        except files.FileError:
            if self._file is not None:
                self._file = None
                self._restart()
            return self.records
        try:
            st = os.fstat(fd)
            same = self._file == (st.st_dev, st.st_ino) and st.st_size >= self._offset and (
                not self._tail or os.pread(fd, len(self._tail), self._offset - len(self._tail))
                == self._tail)
            if not same:
                self._restart()
                self._file = (st.st_dev, st.st_ino)
            data = os.pread(fd, max(st.st_size - self._offset, 0), self._offset)
        finally:
            os.close(fd)
        if self._skipping:                    # the rest of an over-long line: not a record
            cut = data.find(b"\n") + 1
            skipped = data[:cut] if cut else data
            self._offset += len(skipped)
            self._tail = skipped[-64:] or self._tail
            data = data[len(skipped):]
            self._skipping = not cut
        whole = data[: data.rfind(b"\n") + 1]
        if not whole and len(data) > MAX_RECORD:  # a torn tail this long is never a record
            self._offset += len(data)
            self._tail, self._skipping = data[-64:], True
            return self.records
        if whole:
            self.records.extend(r for r in map(_parse, whole.split(b"\n")[:-1])
                                if r is not None)
            self._offset += len(whole)
            self._tail = whole[-64:]
        return self.records


class FollowerRunDir(RunDir):
    """The run directory as the ranks after the first of a multi-process run see it: they read
    the checkpoint to resume from, and write nothing (rank 0 owns the directory)."""

    def acquire(self) -> None:
        """Nothing to hold: rank 0 holds the lock."""

    def release(self, *, undo: bool = False) -> None:
        """Nothing held."""

    def save(self, tensors: dict[str, np.ndarray], meta: dict[str, Any], *, best: bool) -> None:
        """Rank 0 saves."""

    def repair_best(self) -> None:
        """Rank 0 repairs."""

    def new_log(self) -> None:
        """Rank 0 writes the log."""

    def append(self, record: dict[str, Any], *, sync: bool = False) -> None:
        """Rank 0 writes the log."""

    def sync(self) -> None:
        """Rank 0 writes the log."""

    def reconcile(self, step: int, record: dict[str, Any] | None) -> None:
        """Rank 0 writes the log."""

    def plot(self) -> None:
        """Rank 0 draws."""


def _meta_or_none(path: Path) -> dict[str, Any] | None:
    try:
        return checkpoint.read_meta(path)
    except CheckpointError:
        return None


def _lags(best_meta: dict[str, Any], last_meta: dict[str, Any]) -> bool:
    """Is ``best`` older than a ``last`` that was itself a new best?"""
    b, l_ = best_meta.get("step"), last_meta.get("step")
    return _is_best(last_meta) and isinstance(b, int) and isinstance(l_, int) and b < l_


def _is_best(meta: dict[str, Any]) -> bool:
    return meta.get("best_step") is not None and meta.get("best_step") == meta.get("step")


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and abs(x) < 1e300


def jsonable(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with a non-finite float as None: JSON (and a checkpoint) has no NaN."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v
            for k, v in record.items()}


def _dumps(record: dict[str, Any]) -> str:
    return json.dumps(jsonable(record), allow_nan=False)


MAX_RECORD = 1 << 20          # bytes: a longer line is not a record rnnkit wrote


def _parse(line: bytes) -> dict[str, Any] | None:
    """One record, or None for a torn, foreign or hostile line (NaN, Infinity or a number that
    overflows: JSON has none, and rnnkit never writes them)."""
    if len(line) > MAX_RECORD:
        return None
    try:
        r = json.loads(line, parse_constant=checks.no_json_constant, parse_float=_finite_float)
    except (ValueError, RecursionError):
        return None
    return r if isinstance(r, dict) and _num(r.get("step")) else None


def _finite_float(text: str) -> float:
    x = float(text)
    if not math.isfinite(x):
        raise ValueError(f"{text} overflows")
    return x


def check_language_model(meta: dict[str, Any], specs: checkpoint.Specs) -> tuple[Any, Any]:
    """``(LMConfig, Vocab)`` of a language-model checkpoint, once every ``model.*`` tensor's
    dtype and shape is what that config needs (a ``checkpoint.load`` ``expect``)."""
    from .models import LMConfig, check_parameters
    from .text import Vocab

    if meta.get("kind") != "language-model":
        raise ValueError(f"kind is {meta.get('kind')!r}, not 'language-model'")
    vocab = Vocab.from_json(meta.get("vocab"))
    cfg = LMConfig.from_json(meta.get("model"))
    if cfg.vocab_size != len(vocab):
        raise ValueError(f"model vocab_size {cfg.vocab_size} != vocabulary size {len(vocab)}")
    check_parameters(cfg, specs, "model.")
    return cfg, vocab


def load_language_model(path: str | os.PathLike[str], which: str = "best"
                        ) -> tuple[Any, Any, dict[str, Any]]:
    """``(model, vocab, meta)`` from a run directory (its best model, or with ``which="last"``
    its last) or a checkpoint file.

    Every tensor's name, dtype and shape is checked against the config the checkpoint states
    before the model is built, so a crafted config cannot make rnnkit allocate more than the
    file holds."""
    from .models import LanguageModel

    p = Path(path)
    if not p.exists() and not p.is_symlink():
        raise RunDirError(f"{p}: no such run directory or checkpoint file")
    if which not in ("best", "last"):
        raise ValueError(f"which must be 'best' or 'last'; got {which!r}")
    if p.is_dir():
        p = RunDir(p).newest_best() if which == "best" else RunDir(p).last
    built: dict[str, Any] = {}

    def expect(meta: dict[str, Any], specs: checkpoint.Specs) -> None:
        built["cfg"], built["vocab"] = check_language_model(meta, specs)

    tensors, meta = checkpoint.load(p, expect)
    try:
        model = LanguageModel(built["cfg"], rng=0)
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")},
                              strict=True)
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{p}: not a usable rnnkit language model: {e}") from e
    return model, built["vocab"], meta

