"""Text data for language models: read a corpus, cut it into tokens, number them, split, batch.

Shapes: N tokens in a stream, T time steps, B batch; batches are time-major ``(T, B)`` int64,
as the recurrent layers take them.

    text = read_text("input.txt")                        # UTF-8, BOM and CRLF handled
    tokens = tokenize(text, "char")                      # or "word"
    vocab = build_vocab(tokens, specials=specials_for("char", "stream"))
    ids = vocab.encode(tokens)                           # (N,) int64
    train, val = split_ids(ids, 0.05)                    # the last 5 % is validation

    batches = StreamBatches(train, batch_size=64, seq_len=64)       # char-rnn's stream mode
    batch = next(batches)          # batch.x, batch.y (T, B); y[t] is the token after x[t]
    if batch.is_epoch_start: ...   # reset the hidden state; otherwise carry it on

    lines = [vocab.encode(l) for l in tokenize_lines(text, "char")]  # the chapter's sentence mode
    batches = SentenceBatches(lines, 32, rng, vocab.start_id, vocab.end_id)
    batch = next(batches)          # x, y (T, B) padded; batch.lengths (B,)

Special tokens, present only where used (``specials_for``): char stream mode has none;
sentence mode adds ``<start>`` and ``<end>``; word level adds ``<unk>``, which takes the tokens
seen fewer than ``min_count`` times and, when encoding, any token not in the vocabulary.

Both batchers are endless iterators over epochs whose ``state_dict()`` (plain JSON) restores,
with ``load_state_dict``, exactly the batch that would have come next.
"""

from __future__ import annotations

import copy
import math
import os
import re
import types
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, overload

import numpy as np

from . import checks as check
from .files import FileError, read_bytes
from .functional import valid_mask

__all__ = [
    "LEVELS",
    "SPECIALS",
    "SentenceBatch",
    "SentenceBatches",
    "StreamBatch",
    "StreamBatches",
    "TextDataError",
    "Vocab",
    "build_vocab",
    "detokenize",
    "read_text",
    "specials_for",
    "split_ids",
    "tokenize",
    "tokenize_lines",
]

Array = np.ndarray
LEVELS = ("char", "word")
MODES = ("stream", "sentence")
SPECIALS = ("<start>", "<end>", "<unk>")      # their order in every vocabulary that has them
VOCAB_FORMAT = "rnnkit.vocab"
VOCAB_VERSION = 1


class TextDataError(ValueError):
    """A corpus that cannot be used: missing, empty, not UTF-8, or not installed."""


# ---------------------------------------------------------------------------------------------
# reading

_BOM = b"\xef\xbb\xbf"
NL = b"\n"


def read_text(path: str | os.PathLike[str]) -> str:
    """The text of a UTF-8 file, with newlines made ``"\\n"``.

    Strict UTF-8: a byte-order mark is dropped, CRLF and lone CR become LF. Raises
    ``TextDataError`` (a ``ValueError``) naming the file when it is missing, a directory,
    unreadable, empty, binary (NUL bytes), or not valid UTF-8 (with the byte offset and line of
    the first bad byte, and how to re-encode it).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike; got {type(path).__name__}")
    p = os.fspath(path)
    try:
        data = read_bytes(p, "text file")
    except FileError as e:
        raise TextDataError(str(e)) from None
    skip = len(_BOM) if data.startswith(_BOM) else 0
    if len(data) == skip:
        raise TextDataError(f"{p}: the file is empty; give a UTF-8 text file with some text")
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise TextDataError(f"{p}: looks like UTF-16 (it starts with a UTF-16 byte-order mark), "
                            f"not UTF-8. Re-encode it: iconv -f UTF-16 -t UTF-8 {p} > "
                            f"{p}.utf8")
    nul = data.find(b"\x00")
    if nul >= 0:
        raise TextDataError(f"{p}: contains a NUL byte at byte offset {nul} (line "
                            f"{data.count(NL, 0, nul) + 1}); this looks like a binary file, "
                            f"not UTF-8 text")
    try:
        text = data[skip:].decode("utf-8", errors="strict")
    except UnicodeDecodeError as e:
        offset = skip + e.start
        raise TextDataError(
            f"{p}: not valid UTF-8: byte 0x{data[offset]:02x} at byte offset {offset} (line "
            f"{data.count(NL, 0, offset) + 1}) cannot be decoded. Re-encode the file as "
            f"UTF-8, e.g. iconv -f LATIN1 -t UTF-8 {p} > {p}.utf8 (with the file's real "
            f"encoding in place of LATIN1; `file -i {p}` may name it)") from None
    del data
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


# ---------------------------------------------------------------------------------------------
# tokens

# word level: a word (letters, digits, _, inner apostrophes: don't, o'er), a newline, or any
# other single non-space character (punctuation). Other whitespace separates and is dropped.
WORD = re.compile(r"\w+(?:'\w+)*|\n|[^\w\s]")
_NO_SPACE_BEFORE = frozenset(",.;:!?')]}-")
_NO_SPACE_AFTER = frozenset("([{-")


def _check_level(level: Any) -> str:
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}; got {level!r}")
    return str(level)


def tokenize(text: str, level: str) -> list[str]:
    """Cut ``text`` into tokens.

    ``"char"``: one token per Unicode code point (so Chinese, accents, emoji all work),
    whitespace and newlines included: ``"Hi!\\n"`` -> ``["H", "i", "!", "\\n"]``.

    ``"word"``: a word is a run of letters, digits and ``_`` with inner apostrophes
    (``don't``, ``o'er``: regex ``\\w+(?:'\\w+)*``); every other non-space character
    (punctuation) is a token of its own; ``"\\n"`` is kept as a token so line structure
    survives; spaces and tabs are dropped. ``"'Tis so, my lord.\\n"`` ->
    ``["'", "Tis", "so", ",", "my", "lord", ".", "\\n"]``. Words keep their case. A run of
    CJK characters counts as one word: use ``"char"`` for Chinese.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str; got {type(text).__name__}")
    if _check_level(level) == "char":
        return list(text)
    return WORD.findall(text)


def detokenize(tokens: Iterable[str], level: str) -> str:
    """Join tokens back into text; the inverse of :func:`tokenize` up to spacing.

    ``"char"``: ``"".join(tokens)``, exact. ``"word"``: tokens joined with single spaces, except
    no space before ``, . ; : ! ? ' ) ] } -``, none after ``( [ { -``, and none around
    ``"\\n"``. So ``tokenize(detokenize(t, "word"), "word") == t`` for any ``t`` that
    :func:`tokenize` made, though the text itself may differ in spacing (``"'Tis"`` comes back
    as ``"' Tis"``).
    """
    if _check_level(level) == "char":
        return "".join(tokens)
    out: list[str] = []
    prev: str | None = None
    for tok in tokens:
        if prev is not None and not (tok == "\n" or prev == "\n" or tok in _NO_SPACE_BEFORE
                                     or prev in _NO_SPACE_AFTER):
            out.append(" ")
        out.append(tok)
        prev = tok
    return "".join(out)


def tokenize_lines(text: str, level: str) -> list[list[str]]:
    """Sentence mode's units: each line of ``text``, stripped, tokenized; empty lines skipped."""
    _check_level(level)
    if not isinstance(text, str):
        raise TypeError(f"text must be a str; got {type(text).__name__}")
    return [toks for line in iter_lines(text) if (toks := tokenize(line, level))]


def iter_lines(text: str) -> Iterator[str]:
    """The stripped, non-empty lines of ``text``, one at a time (no list of all lines)."""
    start, n = 0, len(text)
    while start <= n:
        end = text.find("\n", start)
        end = n if end < 0 else end
        if line := text[start:end].strip():
            yield line
        start = end + 1


# ---------------------------------------------------------------------------------------------
# vocabulary


def specials_for(level: str, mode: str) -> tuple[str, ...]:
    """The special tokens a vocabulary needs: ``<start>``/``<end>`` in sentence mode, ``<unk>``
    at word level; none for char level in stream mode."""
    _check_level(level)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
    markers = ("<start>", "<end>") if mode == "sentence" else ()
    return markers + (("<unk>",) if level == "word" else ())       # in the order of SPECIALS


class Vocab:
    """Tokens <-> ids in a fixed order: the specials first (``<start>``, ``<end>``, ``<unk>``,
    those present), then the tokens sorted by code point (``build_vocab`` makes that order).

    ``itos`` (tuple, id -> token), ``stoi`` (read-only mapping, token -> id), ``len(vocab)``,
    ``start_id`` / ``end_id`` / ``unk_id`` (``None`` when absent), ``level`` (how ``decode``
    joins tokens). ``to_json()`` / ``Vocab.from_json(d)`` save it with a model.
    """

    def __init__(self, itos: Sequence[str], level: str = "char") -> None:
        self.level = _check_level(level)
        if isinstance(itos, str) or not isinstance(itos, Sequence):
            raise TypeError(f"itos must be a list of str tokens; got {type(itos).__name__}")
        bad = [t for t in itos if not isinstance(t, str) or not t]
        if bad:
            raise TypeError(f"every token must be a non-empty str; got {bad[:5]!r}")
        if not itos:
            raise ValueError("a vocabulary needs at least one token; got none")
        dup = sorted(t for t, c in Counter(itos).items() if c > 1)
        if dup:
            raise ValueError(f"duplicate tokens in the vocabulary: {dup[:20]!r}")
        n_special = next((i for i, t in enumerate(itos) if t not in SPECIALS), len(itos))
        head = tuple(itos[:n_special])
        if head != tuple(s for s in SPECIALS if s in head):
            raise ValueError(f"special tokens must come first in the order {SPECIALS}; got "
                             f"{head!r}")
        late = [t for t in itos[n_special:] if t in SPECIALS]
        if late:
            raise ValueError(f"special tokens must come before all others; {late!r} comes "
                             f"after {itos[n_special]!r}")
        if self.level == "char":
            long = [t for t in itos[n_special:] if len(t) != 1]
            if long:
                raise ValueError(f"a char-level vocabulary holds single characters; got "
                                 f"{long[:5]!r}. Use level='word' for word tokens.")
        elif any(t != "\n" and any(c.isspace() for c in t) for t in itos[n_special:]):
            raise ValueError("word tokens hold no whitespace (except the token '\\n')")
        self.itos: tuple[str, ...] = tuple(itos)
        self.stoi: Mapping[str, int] = types.MappingProxyType(
            {t: i for i, t in enumerate(self.itos)})
        self.specials: tuple[str, ...] = head
        self.start_id = self.stoi.get("<start>")
        self.end_id = self.stoi.get("<end>")
        self.unk_id = self.stoi.get("<unk>")
        plain = self.itos[n_special:]
        # char level, tokens sorted by code point: encode a whole str with one searchsorted
        self._codepoints: Array | None = None
        if self.level == "char" and plain and list(plain) == sorted(plain):
            self._codepoints = np.array([ord(t) for t in plain], dtype=np.int64)
        self._first_plain = n_special

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: object) -> bool:
        return token in self.stoi

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocab):
            return NotImplemented
        return self.level == other.level and self.itos == other.itos

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        shown = ", ".join(repr(t) for t in self.itos[:8])
        more = ", ..." if len(self) > 8 else ""
        return f"Vocab({len(self)} tokens, level={self.level!r}: {shown}{more})"

    def encode(self, tokens: Iterable[str]) -> Array:
        """Tokens -> ids, an ``(N,)`` int64 array. A char-level vocab also takes a str.

        Tokens not in the vocabulary become ``<unk>`` when it has one; otherwise a
        ``ValueError`` lists them.
        """
        if isinstance(tokens, str):
            if self.level == "word":
                raise TypeError("a word-level vocabulary encodes a list of tokens, not a str; "
                                "use vocab.encode(tokenize(text, 'word'))")
            if self._codepoints is not None:
                return self._encode_str(tokens)
        toks = tokens if isinstance(tokens, (str, list, tuple)) else list(tokens)
        ids = np.fromiter((self.stoi.get(t, -1) for t in toks), dtype=np.int64, count=len(toks))
        if (ids < 0).any():
            unknown = sorted({t for t in toks if t not in self.stoi})
            ids = self._unknown(ids, ids < 0, unknown)
        return ids

    def _encode_str(self, text: str) -> Array:
        assert self._codepoints is not None
        cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        cps = cps.astype(np.int64)
        pos = np.searchsorted(self._codepoints, cps).clip(max=len(self._codepoints) - 1)
        bad = self._codepoints[pos] != cps
        ids = pos + self._first_plain
        if bad.any():
            unknown = sorted({chr(c) for c in cps[bad].tolist()})
            ids = self._unknown(ids, bad, unknown)
        return ids

    def encode_text(self, text: str, chunk: int = 1 << 20) -> Array:
        """A whole text -> ids in the smallest unsigned dtype that holds ``len(self)``, with
        no list of tokens and no int64 copy of the text in memory (a corpus of N characters
        takes about N to 4 N bytes here), read-only so batchers keep it without a copy. Same
        ids as ``encode(tokenize(text, level))``."""
        dtype = np.min_scalar_type(max(len(self) - 1, 0))
        if self.level == "word":
            stoi, unk = self.stoi, -1 if self.unk_id is None else self.unk_id
            ids = np.fromiter((stoi.get(m.group(), unk) for m in WORD.finditer(text)),
                              dtype=np.int64 if unk < 0 else dtype)
            if unk < 0 and (ids < 0).any():
                self.encode(WORD.findall(text))               # raises, naming the tokens
            ids = ids.astype(dtype, copy=False)
            ids.flags.writeable = False
            return ids
        out = np.empty(len(text), dtype)
        for start in range(0, len(text), chunk):
            out[start:start + chunk] = self.encode(text[start:start + chunk])
        out.flags.writeable = False
        return out

    def _unknown(self, ids: Array, bad: Array, unknown: list[str]) -> Array:
        if self.unk_id is not None:
            ids[bad] = self.unk_id
            return ids
        shown = ", ".join(repr(t) for t in unknown[:20])
        more = f" and {len(unknown) - 20} more" if len(unknown) > 20 else ""
        what = "character" if self.level == "char" else "token"
        raise ValueError(f"{len(unknown)} {what}(s) not in the vocabulary: {shown}{more}. "
                         f"Remove them from the text, or build the vocabulary from text that "
                         f"has them (or with '<unk>').")

    def decode(self, ids: Any, *, skip_specials: bool = False) -> str:
        """Ids (any 1-D integers) -> text, joined as the vocabulary's level does
        (:func:`detokenize`). ``skip_specials`` drops ``<start>`` and ``<end>``; ``<unk>`` is
        always written as ``<unk>``."""
        arr = np.asarray(ids)
        if arr.size and (arr.dtype == bool or arr.dtype.kind not in "iu"):
            raise TypeError(f"ids must be integers; got dtype {arr.dtype}")
        if arr.ndim != 1:
            raise ValueError(f"ids must be 1-D (one sequence); got shape {arr.shape}. For a "
                             f"(T, B) batch decode each column: ids[:, b]")
        out_of_range = arr[(arr < 0) | (arr >= len(self))] if arr.size else arr
        if out_of_range.size:
            raise ValueError(f"ids must lie in [0, {len(self)}) for this vocabulary of "
                             f"{len(self)} tokens; got {sorted(set(out_of_range.tolist()))[:10]}")
        drop = {self.start_id, self.end_id} if skip_specials else set()
        return detokenize((self.itos[i] for i in arr.tolist() if i not in drop), self.level)

    def to_json(self) -> dict[str, Any]:
        """A plain dict for ``json.dump``: format, version, level and the tokens in id order."""
        return {"format": VOCAB_FORMAT, "version": VOCAB_VERSION, "level": self.level,
                "itos": list(self.itos)}

    @classmethod
    def from_json(cls, d: Any) -> Vocab:
        """The inverse of :meth:`to_json`. Anything malformed raises ``ValueError``."""
        if not isinstance(d, dict):
            raise ValueError(f"a vocabulary must be a JSON object; got {type(d).__name__}")
        if d.get("format") != VOCAB_FORMAT or d.get("version") != VOCAB_VERSION:
            raise ValueError(f"not a vocabulary of format {VOCAB_FORMAT!r} version "
                             f"{VOCAB_VERSION}; got format {d.get('format')!r} version "
                             f"{d.get('version')!r}")
        extra = sorted(set(d) - {"format", "version", "level", "itos"})
        if extra:
            raise ValueError(f"unexpected keys in the vocabulary: {extra}")
        itos = d.get("itos")
        if not isinstance(itos, list) or not all(isinstance(t, str) for t in itos):
            raise ValueError("vocabulary 'itos' must be a list of str tokens")
        try:
            return cls(itos, level=d.get("level"))   # type: ignore[arg-type]
        except TypeError as e:
            raise ValueError(str(e)) from None


def build_vocab(tokens: Iterable[str], *, specials: Iterable[str] = (), min_count: int = 1,
                level: str = "char") -> Vocab:
    """The vocabulary of ``tokens``: ``specials`` first (in the order of ``SPECIALS``), then
    every token seen at least ``min_count`` times, sorted by code point. The result depends
    only on the set of tokens kept, not on their order. ``min_count > 1`` needs ``<unk>`` in
    ``specials`` to take the rare tokens."""
    _check_level(level)
    min_count = check.positive_int("min_count", min_count)
    if isinstance(specials, str):
        raise TypeError(f"specials must be a tuple of names from {SPECIALS}; got the str "
                        f"{specials!r}. Write specials=({specials!r},)")
    specials = list(specials)
    unknown = [s for s in specials if s not in SPECIALS]
    if unknown or len(set(specials)) != len(specials):
        raise ValueError(f"specials must be distinct names from {SPECIALS}; got {specials!r}")
    if min_count > 1 and "<unk>" not in specials:
        raise ValueError(f"min_count={min_count} maps rare tokens to '<unk>', so specials must "
                         f"include '<unk>'; got {tuple(specials)!r}")
    counts = Counter(tokens)
    reserved = sorted(set(counts) & set(SPECIALS))
    if reserved:
        raise ValueError(f"the tokens include {reserved!r}, reserved for special markers")
    if not counts:
        raise ValueError("no tokens to build a vocabulary from: the text is empty")
    kept = sorted(t for t, c in counts.items() if c >= min_count)
    return Vocab([s for s in SPECIALS if s in specials] + kept, level=level)


# ---------------------------------------------------------------------------------------------
# train / validation split

S = TypeVar("S")


@overload
def split_ids(ids: Array, val_fraction: float) -> tuple[Array, Array]: ...
@overload
def split_ids(ids: list[S], val_fraction: float) -> tuple[list[S], list[S]]: ...


def split_ids(ids: Any, val_fraction: float) -> tuple[Any, Any]:
    """``(train, val)``: the last ``val_fraction`` of ``ids`` is validation, as char-rnn holds
    out the end of the text. ``ids`` is the token stream (1-D array) or, in sentence mode, the
    list of encoded lines (then whole lines are held out). ``val_fraction`` in [0, 1); when
    positive the validation part has at least one element and so does the training part."""
    if not isinstance(ids, (np.ndarray, list)):
        raise TypeError(f"ids must be a 1-D array of token ids or a list of lines; got "
                        f"{type(ids).__name__}")
    f = check.probability("val_fraction", val_fraction)
    n = len(ids)
    n_val = max(1, round(n * f)) if f > 0 else 0
    if n - n_val < 1:
        raise ValueError(f"cannot hold out {f:g} of {n} element(s) and keep any for training; "
                         f"give more text or a smaller val_fraction")
    return ids[: n - n_val], ids[n - n_val:]


# ---------------------------------------------------------------------------------------------
# batching


def _id_array(name: str, ids: Any) -> Array:
    arr = np.asarray(ids)
    if arr.size and (arr.dtype == bool or arr.dtype.kind not in "iu"):
        raise TypeError(f"{name} must hold integer token ids; got dtype {arr.dtype}. Encode "
                        f"the tokens with vocab.encode(...)")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (N,); got shape {arr.shape}")
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name} must hold non-negative token ids; got {int(arr.min())}")
    if not arr.flags.writeable and arr.dtype.kind in "iu":
        return arr                            # read-only: nobody changes it through us
    # our own copy (the caller may change theirs), in the caller's integer dtype
    out = np.array(arr, dtype=arr.dtype if arr.size else np.int64)
    out.flags.writeable = False
    return out


def _check_state(state: Any, expected: dict[str, Any], n_batches: int) -> tuple[int, int]:
    """Check a batcher state against this batcher: what differs, and epoch/index in range."""
    if not isinstance(state, Mapping):
        raise ValueError(f"state must be a dict from state_dict(); got {type(state).__name__}")
    missing = sorted((set(expected) | {"epoch", "index"}) - set(state))
    if missing:
        raise ValueError(f"batcher state is missing {missing}")
    differ = [f"{k}: state has {state[k]!r}, this batcher {v!r}" for k, v in expected.items()
              if state[k] != v]
    if differ:
        raise ValueError("the state is from a different batcher or different data ("
                         + "; ".join(differ) + "); resume with the same data and settings")
    try:                        # a saved state is data: a wrong kind is a ValueError too
        epoch, index = (check.check_scalar(state[k], f"state[{k!r}]", int, min_val=0)
                        for k in ("epoch", "index"))
    except TypeError as e:
        raise ValueError(str(e)) from None
    if index >= n_batches:
        raise ValueError(f"state['index'] must be < {n_batches} (batches per epoch); got {index}")
    return epoch, index


@dataclass(frozen=True)
class StreamBatch:
    """One window of stream mode: ``x`` inputs and ``y`` targets, ``(T, B)`` int64, where
    ``y[t, b]`` is the token after ``x[t, b]``. Column b continues where column b of the
    previous window stopped, unless ``is_epoch_start`` (then start from a zero state)."""

    x: Array
    y: Array
    epoch: int
    index: int

    @property
    def is_epoch_start(self) -> bool:
        return self.index == 0


class _Position:
    """Where a batcher is: ``epoch`` and ``index`` (within the epoch) of the next batch."""

    _epoch: int
    _index: int

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def index(self) -> int:
        return self._index


class StreamBatches(_Position):
    """char-rnn's stream mode (truncated BPTT): ``B`` contiguous streams, cut into windows of
    ``seq_len`` steps, served in order, epoch after epoch.

    The first ``B * L + 1`` ids are used, ``L = seq_len * (len(batches))`` the largest
    multiple of ``seq_len`` with ``B * L + 1 <= N`` (the rest is dropped): stream b is
    ``ids[b*L : (b+1)*L]`` with targets one step ahead. Window i holds steps
    ``[i*T, (i+1)*T)`` of every stream, so the hidden state after window i is the right start
    for window i+1; ``batch.is_epoch_start`` says when to reset it. Each epoch feeds every used
    token once as input. No randomness.

    ``next(batches)`` -> :class:`StreamBatch` (endless; ``len(batches)`` windows per epoch);
    ``batches.epoch_batches()`` one pass from the start for evaluation, not moving the position;
    ``state_dict()`` / ``load_state_dict()`` save and restore the position (plain JSON).
    """

    def __init__(self, ids: Any, batch_size: int, seq_len: int) -> None:
        self.batch_size = B = check.positive_int("batch_size", batch_size)
        self.seq_len = T = check.positive_int("seq_len", seq_len)
        self.ids = _id_array("ids", ids)
        n = len(self.ids)
        need = B * T + 1
        if n < need:
            raise ValueError(f"stream mode needs at least batch_size * seq_len + 1 = {B} * {T} "
                             f"+ 1 = {need} tokens for one window; got {n}. Use a smaller "
                             f"batch_size or seq_len, or more text.")
        self.num_windows = (n - 1) // (B * T)
        L = self.num_windows * T
        self._x = self.ids[: B * L].reshape(B, L)          # stream b: row b
        self._y = self.ids[1: B * L + 1].reshape(B, L)
        self.num_tokens_used = B * L
        self._epoch = self._index = 0
        self._crc: int | None = None

    def __len__(self) -> int:
        return self.num_windows

    def window(self, i: int) -> tuple[Array, Array]:
        """Window ``i``'s ``(x, y)``, each ``(T, B)`` int64, without moving the position."""
        i = check.check_scalar(i, "window index", int)
        if not 0 <= i < self.num_windows:
            raise IndexError(f"window index must be in [0, {self.num_windows}); got {i}")
        T = self.seq_len
        sl = slice(i * T, (i + 1) * T)
        return (self._x[:, sl].T.astype(np.int64, order="C"),
                self._y[:, sl].T.astype(np.int64, order="C"))

    def __iter__(self) -> StreamBatches:
        return self

    def __next__(self) -> StreamBatch:
        x, y = self.window(self._index)
        batch = StreamBatch(x, y, self._epoch, self._index)
        self._index += 1
        if self._index == self.num_windows:
            self._epoch, self._index = self._epoch + 1, 0
        return batch

    def epoch_batches(self) -> Iterator[StreamBatch]:
        """Every window once, in order, as epoch 0 (for evaluation); the position is kept."""
        for i in range(self.num_windows):
            yield StreamBatch(*self.window(i), 0, i)

    def _fingerprint(self) -> int:
        if self._crc is None:
            crc = 0     # of the ids as int64, whatever dtype holds them
            for start in range(0, len(self.ids), 1 << 20):
                crc = zlib.crc32(self.ids[start:start + (1 << 20)].astype("<i8").data, crc)
            self._crc = crc
        return self._crc

    def _identity(self) -> dict[str, Any]:
        return {"mode": "stream", "batch_size": self.batch_size, "seq_len": self.seq_len,
                "num_tokens": len(self.ids), "crc32": self._fingerprint()}

    def state_dict(self) -> dict[str, Any]:
        """The position of the next batch (and what identifies the data), as plain JSON."""
        return {**self._identity(), "epoch": self._epoch, "index": self._index}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state``: the next batch is the one that came after it was saved.
        Raises ``ValueError`` if it belongs to other data or settings."""
        self._epoch, self._index = _check_state(state, self._identity(), self.num_windows)


@dataclass(frozen=True)
class SentenceBatch:
    """One batch of sentence mode, time-major and padded.

    ``x`` ``(T, B)``: ``<start>`` then the line's tokens; ``y`` ``(T, B)``: the line's tokens
    then ``<end>`` (so ``y[t] == x[t + 1]`` inside a line, and the end marker is learned);
    ``lengths`` ``(B,)``: the steps of each column that are real, ``len(line) + 1``; steps
    ``t >= lengths[b]`` hold ``pad_id`` in both and must not count in the loss (``mask``).
    ``lines``: the indices of the lines in the batch (into the kept lines).
    """

    x: Array
    y: Array
    lengths: Array
    epoch: int
    index: int
    lines: Array

    @property
    def mask(self) -> Array:
        """``(T, B)`` bool: True on the real steps, ``t < lengths[b]``."""
        return valid_mask(self.lengths, self.x.shape[0])

    @property
    def num_tokens(self) -> int:
        """The real (unpadded) steps in the batch."""
        return int(self.lengths.sum())


class SentenceBatches(_Position):
    """The chapter's sentence mode: each line is a sequence ``<start> w1 .. wn <end>``; a batch
    pads B of them to the longest (time-major) and gives their lengths.

    ``lines_ids``: one 1-D int array (or list) per line, without the markers. Empty lines are
    skipped (``num_skipped``); with ``max_len`` a line keeps only its first ``max_len`` tokens
    (``num_truncated``), so inputs have at most ``max_len + 1`` steps.

    Each epoch the lines are shuffled with ``rng`` (``shuffle=True``) and cut into batches of
    ``batch_size`` (the last one smaller, unless ``drop_last``). ``bucket=k > 0`` groups lines
    of similar length to cut padding: the epoch's order is cut into pools of ``k * batch_size``
    lines, each pool sorted by length and cut into batches, and the batch order shuffled.

    Randomness comes only from ``rng``, drawn once at the start of each epoch; give the batcher
    a Generator of its own (e.g. ``np.random.default_rng(seed)``) so that the state saved by
    ``state_dict()`` (position and the generator's state at the start of the current epoch)
    makes ``load_state_dict`` resume exactly. ``rng`` may be ``None`` only with
    ``shuffle=False``.
    """

    def __init__(self, lines_ids: Sequence[Any], batch_size: int,
                 rng: np.random.Generator | None, start_id: int, end_id: int, pad_id: int = 0,
                 shuffle: bool = True, *, bucket: int = 0, max_len: int | None = None,
                 drop_last: bool = False) -> None:
        self.batch_size = B = check.positive_int("batch_size", batch_size)
        if rng is not None and not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator; got {type(rng).__name__}. "
                            f"Use rng=np.random.default_rng(seed).")
        self.shuffle = check.check_scalar(shuffle, "shuffle", bool)
        if rng is None and self.shuffle:
            raise ValueError("shuffle=True needs an rng; pass rng=np.random.default_rng(seed) "
                             "or shuffle=False")
        self.rng = rng
        self.start_id = check.check_scalar(start_id, "start_id", int, min_val=0)
        self.end_id = check.check_scalar(end_id, "end_id", int, min_val=0)
        self.pad_id = check.check_scalar(pad_id, "pad_id", int, min_val=0)
        if self.start_id == self.end_id:
            raise ValueError(f"start_id and end_id must differ; both are {self.start_id}")
        self.bucket = check.check_scalar(bucket, "bucket", int, min_val=0)
        self.max_len = check.check_scalar(max_len, "max_len", int, min_val=1, allow_none=True)
        self.drop_last = bool(drop_last)
        if isinstance(lines_ids, (str, np.ndarray)) or not isinstance(lines_ids, Sequence):
            raise TypeError(f"lines_ids must be a list with one 1-D id array per line; got "
                            f"{type(lines_ids).__name__}")
        lines: list[Array] = []
        self.num_skipped = self.num_truncated = 0
        for k, line in enumerate(lines_ids):
            arr = _id_array(f"lines_ids[{k}]", line)
            if not arr.size:
                self.num_skipped += 1
                continue
            if ((arr == self.start_id) | (arr == self.end_id)).any():
                raise ValueError(f"lines_ids[{k}] contains start_id or end_id; give the plain "
                                 f"token ids, the batcher adds the markers")
            if self.max_len is not None and arr.size > self.max_len:
                arr = arr[: self.max_len]
                self.num_truncated += 1
            lines.append(arr)
        need = B if self.drop_last else 1
        if len(lines) < need:
            raise ValueError(f"sentence mode needs at least {need} non-empty line(s) "
                             f"{'(batch_size, with drop_last)' if self.drop_last else ''}; got "
                             f"{len(lines)} of {len(lines_ids)}. Give more text or a smaller "
                             f"batch_size.")
        self.lines = lines
        self.line_lengths = np.array([a.size for a in lines], dtype=np.int64)
        self.num_batches = len(lines) // B if self.drop_last else math.ceil(len(lines) / B)
        self._epoch = self._index = 0
        self._plan: list[Array] | None = None       # this epoch's batches, drawn lazily
        self._epoch_rng_state: dict[str, Any] | None = None
        self._crc: int | None = None

    def __len__(self) -> int:
        return self.num_batches

    def _draw_plan(self, rng: np.random.Generator | None) -> list[Array]:
        n, B = len(self.lines), self.batch_size
        order = rng.permutation(n) if rng is not None else np.arange(n)
        if self.bucket:
            pool = self.bucket * B
            order = np.concatenate([
                chunk[np.argsort(self.line_lengths[chunk], kind="stable")]
                for chunk in (order[s: s + pool] for s in range(0, n, pool))])
        batches = [order[s: s + B] for s in range(0, n, B)]
        if self.drop_last and len(batches[-1]) < B:
            batches.pop()
        if self.bucket and rng is not None:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def _epoch_plan(self) -> list[Array]:
        """This epoch's batches, drawn now; keeps the rng state they start from (``state_dict``)."""
        rng = self.rng if self.shuffle else None
        self._epoch_rng_state = (None if rng is None
                                 else dict(copy.deepcopy(rng.bit_generator.state)))
        return self._draw_plan(rng)

    def _batch(self, idx: Array, epoch: int, index: int) -> SentenceBatch:
        lengths = self.line_lengths[idx] + 1
        T, b = int(lengths.max()), len(idx)
        x = np.full((T, b), self.pad_id, dtype=np.int64)
        y = np.full((T, b), self.pad_id, dtype=np.int64)
        x[0] = self.start_id
        for j, i in enumerate(idx.tolist()):
            line = self.lines[i]
            n = line.size
            x[1: n + 1, j] = line
            y[:n, j] = line
            y[n, j] = self.end_id
        return SentenceBatch(x, y, lengths, epoch, index, idx.copy())

    def __iter__(self) -> SentenceBatches:
        return self

    def __next__(self) -> SentenceBatch:
        if self._plan is None:
            self._plan = self._epoch_plan()
        batch = self._batch(self._plan[self._index], self._epoch, self._index)
        self._index += 1
        if self._index == len(self._plan):
            self._epoch, self._index, self._plan = self._epoch + 1, 0, None
        return batch

    def epoch_batches(self) -> Iterator[SentenceBatch]:
        """Every line once, in order (bucketed if ``bucket``, never shuffled), as epoch 0: for
        evaluation. Uses no randomness and keeps the position."""
        for i, idx in enumerate(self._draw_plan(None)):
            yield self._batch(idx, 0, i)

    def _fingerprint(self) -> int:
        if self._crc is None:
            crc = zlib.crc32(self.line_lengths.data)
            for line in self.lines:
                crc = zlib.crc32(line.astype("<i8").data, crc)  # as int64, any dtype
            self._crc = crc
        return self._crc

    def _identity(self) -> dict[str, Any]:
        return {"mode": "sentence", "batch_size": self.batch_size, "num_lines": len(self.lines),
                "shuffle": self.shuffle, "bucket": self.bucket, "drop_last": self.drop_last,
                "start_id": self.start_id, "end_id": self.end_id, "pad_id": self.pad_id,
                "crc32": self._fingerprint()}

    def state_dict(self) -> dict[str, Any]:
        """The position of the next batch and, when shuffling, the rng state at the start of
        the current epoch (plain JSON: ints, strs, lists, dicts)."""
        state: dict[str, Any] = {**self._identity(), "epoch": self._epoch, "index": self._index}
        if self.shuffle:
            assert self.rng is not None
            state["rng"] = _to_json(self._epoch_rng_state if self._plan is not None
                                    else self.rng.bit_generator.state)
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state``: the same epoch order, and the batch that came next. Sets
        ``rng`` to the saved state (then draws the current epoch's order from it). Raises
        ``ValueError`` if the state belongs to other data or settings."""
        epoch, index = _check_state(state, self._identity(), self.num_batches)
        if self.shuffle:
            assert self.rng is not None
            saved = state.get("rng")
            if not isinstance(saved, dict):
                raise ValueError("state['rng'] must be the generator state saved by state_dict()")
            want = type(self.rng.bit_generator).__name__
            if saved.get("bit_generator") != want:
                raise ValueError(f"state['rng'] is a {saved.get('bit_generator')!r} state; this "
                                 f"batcher's rng is a {want}")
            try:
                self.rng.bit_generator.state = copy.deepcopy(saved)
            except (TypeError, ValueError, KeyError) as e:
                raise ValueError(f"state['rng'] is not a valid {want} state: {e}") from None
        self._epoch, self._index, self._plan = epoch, index, None
        if index > 0:       # mid-epoch: redraw this epoch's order from its saved start state
            self._plan = self._epoch_plan()


def _to_json(obj: Any) -> Any:
    """A bit-generator state as plain JSON (arrays -> lists, numpy ints -> int)."""
    if isinstance(obj, dict):
        return {k: _to_json(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.integer):
        return int(obj)
    return copy.deepcopy(obj)
