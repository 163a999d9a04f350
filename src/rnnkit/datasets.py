"""Data sets for the sequence classifier and tagger. Nothing is downloaded: the real data ship
inside installable packages (``pip install "rnnkit[examples]"`` adds scikit-learn and faker),
and the tagging task is generated.

    digits = load_digits_sequences("rows")     # sklearn's 8x8 digits: T=8 rows of D=8 pixels
    digits = load_digits_sequences("pixels")   # the same images as T=64 pixels of D=1
    names = load_surnames()                    # surnames by language, from faker's locales
    ids, lengths = names.encode(names.test_names)                # (T, B) char ids, (B,)
    task = make_repeat_tagging()               # generated; labels need both sides' context

Arrays are time-major, as the recurrent layers take them: sequences (T, N, D) or ids (T, N),
labels (N,) or (T, N), lengths (N,). Every split is fixed by its ``seed``: the same call gives
the same arrays (for the surnames, with the same faker version, kept in ``faker_version``).
"""

from __future__ import annotations

import importlib
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import checks as check
from .functional import valid_mask
from .text import Vocab, build_vocab

Array = np.ndarray
EXTRA_HINT = 'pip install "rnnkit[examples]"'


def _require(module: str, package: str, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"{what} needs the package {package!r}, which is not installed. "
                          f"Install the examples extra: {EXTRA_HINT} (or pip install "
                          f"{package}).") from e


def stratified_split(labels: Array, test_fraction: float, rng: np.random.Generator
                     ) -> tuple[Array, Array]:
    """Indices (train, test), each sorted: ``round(test_fraction * n_c)`` of every class c (at
    least one when it has two or more members) go to the test set, drawn by ``rng``."""
    train, test = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(idx.size)]
        k = round(test_fraction * idx.size)
        k = min(max(k, 1 if idx.size > 1 else 0), idx.size - 1)
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


# ------------------------------------------------------------------------------------------------
# digits, read row by row or pixel by pixel


@dataclass(frozen=True)
class DigitSequences:
    """scikit-learn's 1,797 handwritten digits (8x8 images, values 0-16) as sequences.

    ``x_train`` (T, N, D), ``y_train`` (N,) in 0..9, same for test. ``mode="rows"``: T=8 steps
    of the D=8 pixels of one row, top to bottom; ``mode="pixels"``: T=64 steps of D=1 pixel,
    row-major. Each of the 64 pixels is standardized with the training set's mean and
    standard deviation (1 where a pixel is constant), the test set with the same numbers.
    """

    x_train: Array
    y_train: Array
    x_test: Array
    y_test: Array
    mode: str
    mean: Array                   # (64,) per-pixel training mean
    std: Array                    # (64,) per-pixel training standard deviation

    @property
    def num_classes(self) -> int:
        return 10


def load_digits_sequences(mode: str = "rows", *, test_fraction: float = 0.2, seed: int = 0,
                          dtype: Any = np.float32) -> DigitSequences:
    """The digits, split by class with ``seed`` (default: 1,438 train, 359 test images).

    Needs scikit-learn, which ships the images (``sklearn.datasets.load_digits``).
    """
    if mode not in ("rows", "pixels"):
        raise ValueError(f"mode must be 'rows' (T=8, D=8) or 'pixels' (T=64, D=1); got "
                         f"{mode!r}")
    test_fraction = check.check_scalar(test_fraction, "test_fraction", float, min_val=0,
                                       max_val=1, include_boundaries="neither")
    datasets = _require("sklearn.datasets", "scikit-learn", "load_digits_sequences")
    bunch = datasets.load_digits()
    images = np.asarray(bunch.data, dtype=np.float64)                  # (N, 64)
    labels = np.asarray(bunch.target, dtype=np.int64)
    tr, te = stratified_split(labels, test_fraction, np.random.default_rng(seed))
    mean = images[tr].mean(axis=0)
    std = images[tr].std(axis=0)
    std[std == 0] = 1.0
    z = (images - mean) / std
    T, D = (8, 8) if mode == "rows" else (64, 1)
    seqs = z.reshape(-1, T, D).transpose(1, 0, 2).astype(dtype)       # (T, N, D)
    return DigitSequences(np.ascontiguousarray(seqs[:, tr]), labels[tr],
                          np.ascontiguousarray(seqs[:, te]), labels[te], mode, mean, std)


# ------------------------------------------------------------------------------------------------
# surnames by language, from the per-locale lists of the PyPI package faker

# language -> (faker locale, attribute of faker.providers.person.<locale>.Provider), ...
SURNAME_SOURCES: dict[str, tuple[tuple[str, str], ...]] = {
    "Czech": (("cs_CZ", "last_names"),),
    "Dutch": (("nl_NL", "last_names"),),
    "English": (("en_US", "last_names"),),
    "Finnish": (("fi_FI", "last_names"),),
    "French": (("fr_FR", "last_names"),),
    "German": (("de_DE", "last_names"),),
    "Hungarian": (("hu_HU", "last_names"),),
    "Irish": (("ga_IE", "last_names"),),
    "Italian": (("it_IT", "last_names"),),
    "Polish": (("pl_PL", "male_last_names"), ("pl_PL", "unisex_last_names")),
    "Portuguese": (("pt_BR", "last_names"), ("pt_PT", "last_names")),
    "Spanish": (("es_ES", "last_names"),),
    "Swedish": (("sv_SE", "last_names"),),
    "Turkish": (("tr_TR", "last_names"),),
}
_NAME_PUNCT = frozenset(" '-")


def _latin_name(name: str) -> bool:
    """Letters of the Latin script (with their diacritics), spaces, apostrophes, hyphens."""
    return bool(name) and all(c in _NAME_PUNCT or (c.isalpha() and "LATIN" in
                                                   unicodedata.name(c, "")) for c in name)


def surnames_by_language(languages: Sequence[str] | None = None) -> dict[str, list[str]]:
    """Each language's surnames as faker lists them, NFC-normalized, Latin script only, and
    only those that belong to exactly one of ``languages`` (compared case-insensitively).
    Sorted, so the result depends only on faker's data."""
    langs = _check_languages(languages)
    person = "faker.providers.person"
    _require(person, "faker", "load_surnames")
    raw: dict[str, set[str]] = {}
    for lang in langs:
        found: set[str] = set()
        for locale, attr in SURNAME_SOURCES[lang]:
            provider = importlib.import_module(f"{person}.{locale}").Provider
            for name in getattr(provider, attr):
                name = unicodedata.normalize("NFC", str(name).strip())
                if _latin_name(name):
                    found.add(name)
        raw[lang] = found
    owners = Counter(key for names in raw.values() for key in {n.casefold() for n in names})
    return {lang: sorted(n for n in raw[lang] if owners[n.casefold()] == 1) for lang in langs}


def _check_languages(languages: Sequence[str] | None) -> tuple[str, ...]:
    if languages is None:
        return tuple(SURNAME_SOURCES)
    if isinstance(languages, str):
        raise TypeError(f"languages must be a list of names; got the str {languages!r}. "
                        f"Write languages=[{languages!r}, ...]")
    langs = tuple(languages)
    unknown = [lang for lang in langs if lang not in SURNAME_SOURCES]
    if unknown:
        raise ValueError(f"unknown languages {unknown}; choose from {sorted(SURNAME_SOURCES)}")
    if len(set(langs)) != len(langs) or len(langs) < 2:
        raise ValueError(f"languages must be at least two distinct names; got {list(langs)}")
    return langs


@dataclass(frozen=True)
class Surnames:
    """Surnames labelled by language, split by class.

    ``train_names`` / ``test_names`` (lists of str) with labels ``y_train`` / ``y_test``
    indexing ``languages``. ``vocab`` holds the training set's characters and ``<unk>``;
    ``encode`` turns names into padded char ids (T, B) and lengths (B,).
    """

    train_names: list[str]
    y_train: Array
    test_names: list[str]
    y_test: Array
    languages: tuple[str, ...]
    vocab: Vocab
    faker_version: str

    @property
    def num_classes(self) -> int:
        return len(self.languages)

    def encode(self, names: Sequence[str]) -> tuple[Array, Array]:
        """Names -> (ids (T, B) int64 padded with 0, lengths (B,)); T is the longest name.
        Characters not in the vocabulary become ``<unk>``."""
        if isinstance(names, str):
            raise TypeError(f"names must be a list of str; got the str {names!r}. Write "
                            f"[{names!r}]")
        if not names:
            raise ValueError("names is empty; pass at least one name")
        if any(not isinstance(n, str) or not n for n in names):
            raise ValueError("every name must be a non-empty str")
        rows = [self.vocab.encode(unicodedata.normalize("NFC", n)) for n in names]
        lengths = np.array([len(r) for r in rows], dtype=np.int64)
        ids = np.zeros((int(lengths.max()), len(rows)), dtype=np.int64)
        for b, r in enumerate(rows):
            ids[:len(r), b] = r
        return ids, lengths


def load_surnames(languages: Sequence[str] | None = None, *, test_fraction: float = 0.2,
                  max_per_language: int | None = None, seed: int = 0) -> Surnames:
    """Surnames of ``languages`` (default: all 14 of ``SURNAME_SOURCES``), split by class.

    With faker 40.63 the 14 languages give 11,991 names (9,593 train, 2,398 test), from 59
    Turkish to 3,834 Polish ones. ``max_per_language`` keeps at most that many of each (a
    fixed random subset drawn with ``seed``), for classes of more even size.

    Needs faker, whose per-locale surname lists are the data.
    """
    test_fraction = check.check_scalar(test_fraction, "test_fraction", float, min_val=0,
                                       max_val=1, include_boundaries="neither")
    if max_per_language is not None:
        max_per_language = check.positive_int("max_per_language", max_per_language)
    by_lang = surnames_by_language(languages)
    rng = np.random.default_rng(seed)
    names: list[str] = []
    labels: list[int] = []
    for c, lang in enumerate(by_lang):
        kept = by_lang[lang]
        if max_per_language is not None and len(kept) > max_per_language:
            pick = np.sort(rng.choice(len(kept), max_per_language, replace=False))
            kept = [kept[i] for i in pick]
        names += kept
        labels += [c] * len(kept)
    y = np.array(labels, dtype=np.int64)
    tr, te = stratified_split(y, test_fraction, rng)
    train_names = [names[i] for i in tr]
    vocab = build_vocab((ch for n in train_names for ch in n), specials=("<unk>",))
    faker = importlib.import_module("faker")
    return Surnames(train_names, y[tr], [names[i] for i in te], y[te], tuple(by_lang), vocab,
                    str(getattr(faker, "VERSION", "unknown")))


def ngram_baseline(train_names: Sequence[str], y_train: Array, test_names: Sequence[str],
                   y_test: Array, *, ngram_range: tuple[int, int] = (1, 3),
                   C: float | None = None, seed: int = 0) -> tuple[float, float]:
    """A linear model on character n-gram counts: scikit-learn's ``CountVectorizer(analyzer=
    "char_wb", ngram_range)`` (n-grams inside each word, padded with a space at both ends)
    and a multinomial ``LogisticRegression(C)``.

    With ``C=None`` the inverse regularization strength is chosen from (0.1, 0.3, 1, 3, 10)
    by accuracy on a stratified 20 % of the training names (drawn with ``seed``), then the
    model is refitted on all of them; the test set is never looked at. Returns
    ``(test accuracy, C)``.
    """
    text = _require("sklearn.feature_extraction.text", "scikit-learn", "ngram_baseline")
    linear = _require("sklearn.linear_model", "scikit-learn", "ngram_baseline")
    names, y = list(train_names), np.asarray(y_train)

    def fit_score(tr_names: list[str], tr_y: Array, te_names: list[str], te_y: Array,
                  c: float) -> float:
        vec = text.CountVectorizer(analyzer="char_wb", ngram_range=ngram_range,
                                   lowercase=False)
        clf = linear.LogisticRegression(C=c, max_iter=1000)
        clf.fit(vec.fit_transform(tr_names), tr_y)
        return float(np.mean(clf.predict(vec.transform(te_names)) == te_y))

    if C is None:
        fit, val = stratified_split(y, 0.2, np.random.default_rng(seed))
        scores = {c: fit_score([names[i] for i in fit], y[fit], [names[i] for i in val],
                               y[val], c) for c in (0.1, 0.3, 1.0, 3.0, 10.0)}
        C = max(scores, key=lambda c: scores[c])
    return fit_score(names, y, list(test_names), np.asarray(y_test), C), C


# ------------------------------------------------------------------------------------------------
# a generated tagging task whose labels need context from both sides


def repeat_tags(seq: Array) -> Array:
    """1 where the symbol also appears somewhere before AND somewhere after, else 0.

    ``seq`` (T,) ints -> (T,) int64. Example: ``[3, 1, 3, 2, 3, 1]`` -> ``[0, 0, 1, 0, 0, 0]``
    (only the middle 3 has a 3 on both sides; the 1s each lack one side).
    """
    seq = np.asarray(seq)
    same = seq[:, None] == seq[None, :]                                  # (T, T)
    before = np.tril(same, k=-1).any(axis=1)
    after = np.triu(same, k=1).any(axis=1)
    return (before & after).astype(np.int64)


@dataclass(frozen=True)
class RepeatTagging:
    """The "inside a repeat" task: random sequences of symbols 0..vocab_size-1, each step
    tagged 1 when its symbol appears both earlier and later in the same sequence.

    A left-to-right reader knows at step t whether the symbol appeared earlier, but not
    whether it comes again: the label needs the right context too, which a bidirectional
    network has. ``ids_*`` and ``tags_*`` are (T, N) padded with 0 past ``lengths_*`` (N,).
    ``no_context_accuracy`` is that of the best prediction from the symbol alone, the most
    frequent tag (symbols are exchangeable), over the test set's valid steps.
    """

    ids_train: Array
    tags_train: Array
    lengths_train: Array
    ids_test: Array
    tags_test: Array
    lengths_test: Array
    vocab_size: int

    @property
    def num_classes(self) -> int:
        return 2

    @property
    def no_context_accuracy(self) -> float:
        ones = float(self.tags_test[valid_mask(self.lengths_test, self.tags_test.shape[0])].mean())
        return max(ones, 1.0 - ones)


def _repeat_sequences(n: int, vocab_size: int, min_length: int, max_length: int,
                      rng: np.random.Generator) -> tuple[Array, Array, Array]:
    lengths = rng.integers(min_length, max_length + 1, n)
    ids = np.zeros((max_length, n), np.int64)
    tags = np.zeros((max_length, n), np.int64)
    for b, length in enumerate(lengths):
        seq = rng.integers(0, vocab_size, length)
        ids[:length, b] = seq
        tags[:length, b] = repeat_tags(seq)
    return ids, tags, lengths.astype(np.int64)


def make_repeat_tagging(num_train: int = 4000, num_test: int = 1000, *, vocab_size: int = 8,
                        min_length: int = 10, max_length: int = 30, seed: int = 0
                        ) -> RepeatTagging:
    """Generate the task (see :class:`RepeatTagging`); symbols uniform, lengths uniform in
    [min_length, max_length].

    With the defaults about 36 % of the steps are tagged 1, so the no-context accuracy is
    about 0.64. Context from one side is not enough either: the best rule that sees the left
    context and is even told the length (tag 1 when the symbol appeared earlier and at least
    6 steps remain, where the chance of another copy passes 1/2) scores about 0.84. The
    whole sequence determines every tag, so a bidirectional network can reach 1.0."""
    num_train = check.positive_int("num_train", num_train)
    num_test = check.positive_int("num_test", num_test)
    vocab_size = check.positive_int("vocab_size", vocab_size)
    min_length = check.positive_int("min_length", min_length)
    max_length = check.positive_int("max_length", max_length)
    if min_length > max_length:
        raise ValueError(f"min_length must be <= max_length; got {min_length} > {max_length}")
    rng = np.random.default_rng(seed)
    train = _repeat_sequences(num_train, vocab_size, min_length, max_length, rng)
    test = _repeat_sequences(num_test, vocab_size, min_length, max_length, rng)
    return RepeatTagging(*train, *test, vocab_size)
