"""rnnkit.datasets: digits and surnames (skipped without scikit-learn / faker), the generated
tagging task, fixed splits, and the error that names the pip extra."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from rnnkit import datasets
from rnnkit.datasets import make_repeat_tagging, repeat_tags, stratified_split

# ------------------------------------------------------------------------------------------------
# digits
# ------------------------------------------------------------------------------------------------


def test_digits_rows_and_pixels():
    pytest.importorskip("sklearn")
    rows = datasets.load_digits_sequences("rows")
    pixels = datasets.load_digits_sequences("pixels", dtype=np.float64)
    assert rows.x_train.shape == (8, 1438, 8) and rows.x_test.shape == (8, 359, 8)
    assert pixels.x_train.shape == (64, 1438, 1) and pixels.x_test.shape == (64, 359, 1)
    assert rows.x_train.dtype == np.float32 and pixels.x_train.dtype == np.float64
    assert rows.y_train.shape == (1438,) and set(rows.y_test.tolist()) == set(range(10))
    # the same images, read two ways: row r of image n is pixels 8r .. 8r+7
    np.testing.assert_allclose(rows.x_test.transpose(1, 0, 2).reshape(359, 64),
                               pixels.x_test[:, :, 0].T, rtol=1e-6)
    # standardized with the training set's statistics
    flat = pixels.x_train[:, :, 0]
    np.testing.assert_allclose(flat.mean(axis=1), 0, atol=1e-12)
    assert np.all((np.abs(flat.std(axis=1) - 1) < 1e-9) | (flat.std(axis=1) == 0))


def test_digits_split_is_fixed_by_the_seed():
    pytest.importorskip("sklearn")
    a, b = datasets.load_digits_sequences(seed=0), datasets.load_digits_sequences(seed=0)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    c = datasets.load_digits_sequences(seed=1)
    assert not np.array_equal(a.y_test, c.y_test)
    with pytest.raises(ValueError, match="mode must be 'rows'"):
        datasets.load_digits_sequences("columns")
    with pytest.raises(ValueError, match=r"test_fraction must be a number in \(0, 1\); got 1.5"):
        datasets.load_digits_sequences(test_fraction=1.5)


def test_stratified_split():
    y = np.repeat(np.arange(3), [10, 5, 2])
    tr, te = stratified_split(y, 0.2, np.random.default_rng(0))
    assert sorted(np.concatenate([tr, te]).tolist()) == list(range(17))
    assert np.bincount(y[te]).tolist() == [2, 1, 1]


# ------------------------------------------------------------------------------------------------
# surnames
# ------------------------------------------------------------------------------------------------


def test_surnames_belong_to_one_language():
    pytest.importorskip("faker")
    by_lang = datasets.surnames_by_language()
    assert set(by_lang) == set(datasets.SURNAME_SOURCES)
    seen: dict[str, str] = {}
    for lang, names in by_lang.items():
        assert len(names) >= 40, lang
        for n in names:
            key = n.casefold()
            assert seen.setdefault(key, lang) == lang, f"{n!r} in {seen[key]} and {lang}"
            assert datasets._latin_name(n), n


def test_surnames_split_encode_and_determinism():
    pytest.importorskip("faker")
    s = datasets.load_surnames(max_per_language=300)
    assert s.num_classes == 14 and len(s.languages) == 14
    assert np.bincount(s.y_train).max() + np.bincount(s.y_test).max() <= 300
    assert set(s.y_test.tolist()) == set(range(14))
    assert not set(s.train_names) & set(s.test_names)
    again = datasets.load_surnames(max_per_language=300)
    assert again.train_names == s.train_names and again.test_names == s.test_names
    np.testing.assert_array_equal(again.y_train, s.y_train)
    assert datasets.load_surnames(max_per_language=300, seed=1).test_names != s.test_names

    ids, lengths = s.encode(["Ab", "Müller-Łoś", "Zz\u2603"])
    assert ids.shape == (10, 3) and lengths.tolist() == [2, 10, 3]
    assert ids[2, 0] == 0                                   # padding
    assert ids[2, 2] == s.vocab.unk_id                      # a snowman is no letter of any name
    assert s.vocab.decode(ids[:2, 0]) == "Ab"

    two = datasets.load_surnames(["Finnish", "Italian"], max_per_language=None)
    assert two.languages == ("Finnish", "Italian") and two.num_classes == 2


def test_surname_errors():
    pytest.importorskip("faker")
    with pytest.raises(ValueError, match="unknown languages"):
        datasets.load_surnames(["Klingon", "English"])
    with pytest.raises(TypeError, match="list of names"):
        datasets.load_surnames("English")
    with pytest.raises(ValueError, match="at least two distinct"):
        datasets.load_surnames(["English"])
    s = datasets.load_surnames(["Finnish", "Italian"], max_per_language=50)
    with pytest.raises(ValueError, match="non-empty str"):
        s.encode(["Ok", ""])
    with pytest.raises(ValueError, match="names is empty"):
        s.encode([])


def test_ngram_baseline_runs():
    pytest.importorskip("sklearn")
    pytest.importorskip("faker")
    s = datasets.load_surnames(["Finnish", "Italian", "Polish"], max_per_language=200)
    acc, C = datasets.ngram_baseline(s.train_names, s.y_train, s.test_names, s.y_test)
    assert 0.8 < acc <= 1.0 and C in (0.1, 0.3, 1.0, 3.0, 10.0)
    acc1, C1 = datasets.ngram_baseline(s.train_names, s.y_train, s.test_names, s.y_test, C=1.0)
    assert C1 == 1.0 and 0.8 < acc1 <= 1.0


def test_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r'pip install "rnnkit\[examples\]"'):
        datasets.load_digits_sequences()
    monkeypatch.setitem(sys.modules, "faker.providers.person", None)
    with pytest.raises(ImportError, match=r"'faker'.*rnnkit\[examples\]"):
        datasets.load_surnames()


# ------------------------------------------------------------------------------------------------
# the generated tagging task
# ------------------------------------------------------------------------------------------------


def test_repeat_tags_by_hand():
    assert repeat_tags(np.array([3, 1, 3, 2, 3, 1])).tolist() == [0, 0, 1, 0, 0, 0]
    assert repeat_tags(np.array([5, 5, 5, 5])).tolist() == [0, 1, 1, 0]
    assert repeat_tags(np.array([7])).tolist() == [0]


def test_repeat_tagging_task():
    t = make_repeat_tagging(200, 100, seed=3)
    assert t.ids_train.shape == (30, 200) and t.tags_test.shape == (30, 100)
    assert t.lengths_train.min() >= 10 and t.lengths_train.max() <= 30
    for b in range(0, 100, 7):
        n = t.lengths_test[b]
        assert t.tags_test[:n, b].tolist() == repeat_tags(t.ids_test[:n, b]).tolist()
        assert not t.ids_test[n:, b].any() and not t.tags_test[n:, b].any()
    assert 0.55 < t.no_context_accuracy < 0.75
    u = make_repeat_tagging(200, 100, seed=3)
    np.testing.assert_array_equal(u.ids_test, t.ids_test)
    with pytest.raises(ValueError, match="min_length must be <= max_length"):
        make_repeat_tagging(min_length=9, max_length=3)
