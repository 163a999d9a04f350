"""Generated tasks for the sequence models. ``numerals``: Arabic numerals to Chinese numerals.

    to_chinese(1024)   -> "一千零二十四"
    to_chinese(20005)  -> "二万零五"
    task = NumeralsTask(max_train_digits=6, test_digits=(7, 8), rng=0)
    batch = make_batch(task.sample(64, rng))          # time-major (S, B) / (T, B) int64 ids

The convention (the everyday written numerals, 小写, as in print; not the anti-fraud 大写 of
banking):

* digits 零一二三四五六七八九, units 十 百 千 inside a group of four digits, and the group
  units 万 (10^4) and 亿 (10^8), each after a count that is itself a number:
  ``12345678 -> 一千二百三十四万五千六百七十八``, ``1200000000000 -> 一万二千亿``;
* 二 everywhere, never 两 (两 is idiomatic in speech before 百/千/万/亿, but the choice of it
  varies by speaker and region, while 二 is always correct in writing): ``2000 -> 二千``;
* 十 without 一 only at the very start of the number: ``10 -> 十``, ``15 -> 十五``,
  ``100000 -> 十万``; elsewhere 一十: ``110 -> 一百一十``, ``1010 -> 一千零一十``;
* zeros: trailing zeros of the number and of a group are silent; every run of zeros between
  two nonzero digits is one 零, also across a group boundary: ``101 -> 一百零一``,
  ``1001 -> 一千零一``, ``100010 -> 十万零一十``, ``10001000 -> 一千万一千`` (no gap: the low
  group starts at its 千), ``100000001 -> 一亿零一``, ``100000000 -> 一亿``; ``0 -> 零``.

Vocabularies are character level with ``<pad>`` (id 0), ``<start>`` (1) and ``<end>`` (2)
first. A source is the digits followed by ``<end>``; a target is fed to the decoder as
``<start> y_1 ... y_n`` and predicted as ``y_1 ... y_n <end>``. Two options change how the
sequences are presented (never what is asked): ``reverse`` reads both sides from the least
significant end, and ``grouped`` puts a comma between the source's groups of four digits.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import checks as check
from .functional import valid_mask
from .module import check_rng

Array = np.ndarray

DIGITS = "零一二三四五六七八九"
SMALL_UNITS = ("", "十", "百", "千")                 # inside a group of four digits
MAX_NUMBER = 10**16 - 1


def _group(v: int, at_start: bool) -> str:
    """A group 1 <= v <= 9999 without its group unit. Zero runs inside become one 零; trailing
    zeros are silent; ``at_start`` drops the 一 of a leading 一十 (``十五``, not ``一十五``)."""
    out: list[str] = []
    gap = False                                    # zeros since the last nonzero digit
    for pos in range(3, -1, -1):
        d = v // 10**pos % 10
        if d == 0:
            gap = bool(out)
            continue
        if gap:
            out.append("零")
            gap = False
        if not (d == 1 and pos == 1 and at_start and not out):
            out.append(DIGITS[d])
        out.append(SMALL_UNITS[pos])
    return "".join(out)


def _read(n: int, at_start: bool) -> str:
    """1 <= n < 10**16: the part above 10^8 (or 10^4) is itself a number, read with 亿 (万)."""
    for unit, size in (("亿", 10**8), ("万", 10**4)):
        if n >= size:
            high, low = divmod(n, size)
            out = _read(high, at_start) + unit
            if low:
                if low < size // 10:                # the low part starts with zeros: a gap
                    out += "零"
                out += _read(low, at_start=False)
            return out
    return _group(n, at_start)


def to_chinese(n: int) -> str:
    """The Chinese numeral of ``0 <= n < 10**16`` in the convention of the module docstring."""
    n = check.check_scalar(n, "n", int, min_val=0, max_val=MAX_NUMBER + 1,
                           include_boundaries="left")
    return DIGITS[0] if n == 0 else _read(n, at_start=True)


# ------------------------------------------------------------------------------------------------
# vocabularies

SPECIALS = ("<pad>", "<start>", "<end>")
PAD_ID, START_ID, END_ID = 0, 1, 2


@dataclass(frozen=True)
class CharVocab:
    """Characters <-> ids: ``<pad>`` 0, ``<start>`` 1, ``<end>`` 2, then the characters."""

    chars: str

    @property
    def itos(self) -> tuple[str, ...]:
        return SPECIALS + tuple(self.chars)

    def __len__(self) -> int:
        return len(SPECIALS) + len(self.chars)

    def encode(self, text: str) -> list[int]:
        """Characters -> ids (no specials added)."""
        ids = []
        for ch in text:
            i = self.chars.find(ch)
            if i < 0 or len(ch) != 1:
                raise ValueError(f"{ch!r} is not in the vocabulary {self.chars!r}")
            ids.append(i + len(SPECIALS))
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text, up to the first ``<end>``; ``<pad>`` and ``<start>`` are skipped."""
        out = []
        for i in ids:
            i = int(i)
            if i == END_ID:
                break
            if i >= len(SPECIALS):
                out.append(self.chars[i - len(SPECIALS)])
        return "".join(out)


SRC_VOCAB = CharVocab("0123456789,")
TGT_VOCAB = CharVocab(DIGITS + "十百千万亿")


# ------------------------------------------------------------------------------------------------
# numbers and batches


def sample_numbers(rng: np.random.Generator, count: int, min_digits: int, max_digits: int,
                   zero_prob: float = 0.1) -> list[int]:
    """``count`` numbers with a digit count drawn uniformly from [min_digits, max_digits]; the
    leading digit is 1-9, every other digit is 0 with probability ``zero_prob`` and else 1-9
    (``zero_prob=0.1`` is the uniform distribution over numbers of that many digits; more
    makes the zero rules, which uniform numbers rarely exercise, common)."""
    check.check_scalar(min_digits, "min_digits", int, min_val=1, max_val=16)
    check.check_scalar(max_digits, "max_digits", int, min_val=min_digits, max_val=16)
    n_digits = rng.integers(min_digits, max_digits + 1, size=count)
    out = []
    for nd in n_digits.tolist():
        digits = rng.integers(1, 10, size=nd)
        zero = rng.random(nd) < zero_prob
        zero[0] = False
        digits[zero] = 0
        out.append(int("".join(map(str, digits.tolist()))))
    return out


@dataclass
class Batch:
    """One batch, time-major. ``src`` (S, B) digits then ``<end>``, padded with ``<pad>``;
    ``tgt_in`` (T, B) ``<start> y...``; ``tgt_out`` (T, B) ``y... <end>``; lengths (B,)."""

    numbers: list[int]
    src: Array
    src_lengths: Array
    tgt_in: Array
    tgt_out: Array
    tgt_lengths: Array

    @property
    def tgt_mask(self) -> Array:
        """(T, B) True where a target position counts."""
        return valid_mask(self.tgt_lengths, self.tgt_out.shape[0])


def source_text(n: int, reverse: bool = False, grouped: bool = False) -> str:
    """The source string of ``n``: its digits, with ``grouped`` a comma between groups of four
    from the right (``12345678 -> "1234,5678"``, the grouping that 万 and 亿 follow), and
    with ``reverse`` read from the least significant end (``"8765,4321"``)."""
    text = str(int(n))
    if grouped:
        head = len(text) % 4 or 4
        text = ",".join([text[:head]] + [text[i:i + 4] for i in range(head, len(text), 4)])
    return _order(text, reverse)


def encode_sources(numbers: Sequence[int], reverse: bool = False, grouped: bool = False
                   ) -> tuple[Array, Array]:
    """Numbers -> ``(src (S, B), src_lengths (B,))``: :func:`source_text`, then ``<end>``."""
    rows = [[*SRC_VOCAB.encode(source_text(n, reverse, grouped)), END_ID] for n in numbers]
    return _pad(rows)


def _order(text: str, reverse: bool) -> str:
    return text[::-1] if reverse else text


def decode_target(ids: Iterable[int], reverse: bool = False) -> str:
    """Target ids -> the Chinese numeral (read back in normal order if it was reversed)."""
    return _order(TGT_VOCAB.decode(ids), reverse)


def _pad(rows: list[list[int]]) -> tuple[Array, Array]:
    lengths = np.array([len(r) for r in rows], np.int64)
    out = np.full((int(lengths.max()), len(rows)), PAD_ID, np.int64)
    for b, r in enumerate(rows):
        out[: len(r), b] = r
    return out, lengths


def make_batch(numbers: Sequence[int], reverse: bool = False, grouped: bool = False) -> Batch:
    """The batch for ``numbers``. ``reverse``: both sides read from the least significant end
    (``1024 -> "4201"`` and ``"四十二零千一"``), so that the group units come at the same
    distance from the start of every sequence, whatever its length."""
    if not len(numbers):
        raise ValueError("make_batch needs at least one number")
    src, src_lengths = encode_sources(numbers, reverse, grouped)
    targets = [TGT_VOCAB.encode(_order(to_chinese(n), reverse)) for n in numbers]
    tgt_in, tgt_lengths = _pad([[START_ID, *t] for t in targets])
    tgt_out, _ = _pad([[*t, END_ID] for t in targets])
    return Batch(list(numbers), src, src_lengths, tgt_in, tgt_out, tgt_lengths)


class NumeralsTask:
    """Training numbers with up to ``max_train_digits`` (N) digits; a held-out test set of
    N-2 to N digits (never drawn for training) and one of each longer length in
    ``test_digits``. Test numbers are uniform (``zero_prob=0.1``); training numbers have more
    zeros (``zero_prob``), which is a choice of training distribution, not of test lengths.

    The longer test lengths stay inside the highest group unit training has seen (with 6
    digits, 万: 7 and 8 digits read 一百二十三万... and 一千二百三十四万...), since a model
    cannot write a character it has never been shown (亿 first appears with 9 digits).
    """

    def __init__(self, max_train_digits: int = 6, test_digits: Sequence[int] = (7, 8),
                 n_test: int = 1000, zero_prob: float = 0.3, rng: Any = 0) -> None:
        check.check_scalar(max_train_digits, "max_train_digits", int, min_val=1, max_val=15)
        bad = [d for d in test_digits if not max_train_digits < d <= 16]
        if bad:
            raise ValueError(f"test_digits must be longer than max_train_digits="
                             f"{max_train_digits} (and at most 16); got {bad}")
        rng = check_rng(rng)
        self.max_train_digits = max_train_digits
        self.test_digits = tuple(test_digits)
        self.zero_prob = zero_prob
        self.test_in = sorted(set(sample_numbers(rng, n_test, max(1, max_train_digits - 2),
                                                 max_train_digits)))
        self.held_out = set(self.test_in)
        self.test_longer = {d: sorted(set(sample_numbers(rng, n_test, d, d)))
                            for d in self.test_digits}

    def sample(self, count: int, rng: np.random.Generator) -> list[int]:
        """``count`` training numbers (a held-out number is drawn again)."""
        out: list[int] = []
        while len(out) < count:
            out += [n for n in sample_numbers(rng, count - len(out), 1, self.max_train_digits,
                                              self.zero_prob) if n not in self.held_out]
        return out
