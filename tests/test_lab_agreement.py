"""The lab: subject-verb agreement across a clause ("The cat, which ..., was full")."""

from __future__ import annotations

import numpy as np
import pytest

from rnnkit.cli import main
from rnnkit.lab.agreement import (
    LABELS,
    NUMBER,
    STOI,
    VOCAB,
    AgreementResult,
    agreement_table,
    buckets,
    make_sentences,
    train_agreement,
)


def sentences(seed: int = 0, n: int = 400, max_clause: int = 30, prefix: bool = True):
    rng = np.random.default_rng(seed)
    return make_sentences(rng, np.arange(n) % (max_clause + 1), prefix=prefix)


@pytest.mark.parametrize("prefix", [True, False])
def test_label_is_the_subjects_number_and_lengths_are_as_asked(prefix):
    s = sentences(prefix=prefix)
    T, B = s.ids.shape
    assert s.ids.dtype == np.int64 and s.lengths.max() == T and B == 400
    assert np.array_equal(s.clause, np.arange(B) % 31)
    for b in range(B):
        words = [VOCAB[i] for i in s.ids[: s.lengths[b], b]]
        assert np.all(s.ids[s.lengths[b]:, b] == STOI["<pad>"])
        k = int(s.subject[b])
        assert words[k - 1] == "the" and NUMBER[s.ids[k, b]] == s.labels[b]
        if not prefix:
            assert k == 1
        if s.clause[b] == 0:
            assert len(words) == k + 1                       # the verb follows the subject
        else:
            # subject , which w_1 .. w_L ,   -> exactly L clause words
            assert words[k + 1: k + 3] == [",", "which"] and words[-1] == ","
            assert len(words) - (k + 3) - 1 == s.clause[b]
            assert "which" not in words[k + 3:] and "," not in words[k + 3:-1]
        assert s.text(b).endswith(LABELS[s.labels[b]])
    assert 0.4 < s.labels.mean() < 0.6


def test_attractors_of_the_opposite_number_occur_in_the_clause():
    s = sentences(prefix=False)                  # every attractor is then inside the clause
    long = s.clause >= 10
    assert np.all(s.attractors[s.clause == 0] == 0)
    assert np.mean(s.attractors[long] > 0) > 0.7
    # the last noun before the verb disagrees with the subject about as often as it agrees:
    # "copy the last noun" is no shortcut
    last_noun_wrong = []
    for b in np.flatnonzero(long):
        nouns = [NUMBER[i] for i in s.ids[s.subject[b] + 1: s.lengths[b], b] if i in NUMBER]
        if nouns:
            last_noun_wrong.append(nouns[-1] != s.labels[b])
    assert 0.35 < np.mean(last_noun_wrong) < 0.65


def _last_noun_shortcut(s, b: int) -> int:
    """What "copy the number of the last noun before the verb" predicts for sentence b."""
    return [NUMBER[i] for i in s.ids[: s.lengths[b], b] if i in NUMBER][-1]


def test_every_clause_of_three_words_has_a_noun_so_the_last_noun_is_chance():
    """L <= 2 cannot hold a noun (the last noun is the subject: the shortcut is always right);
    from L = 3 on every clause has an attractor of random number: the shortcut is a coin."""
    rng = np.random.default_rng(7)
    for L in range(0, 41):
        n = 2000 if L >= 3 else 200
        s = make_sentences(rng, np.full(n, L))
        in_clause = [any(i in NUMBER for i in s.ids[s.subject[b] + 1: s.lengths[b], b])
                     for b in range(n)]
        acc = np.mean([_last_noun_shortcut(s, b) == s.labels[b] for b in range(n)])
        if L <= 2:
            assert not any(in_clause) and acc == 1.0, L
        else:
            assert all(in_clause), L
            assert 0.44 < acc < 0.56, (L, acc)
            assert np.array_equal(s.clause, np.full(n, L))        # still exactly L words


def test_the_prefix_puts_nouns_before_the_subject():
    s = sentences(prefix=True)
    assert set(np.unique(s.subject)) == {1, 5, 8}            # 0, 1 or 2 prefix nouns
    assert np.mean(s.subject > 1) > 0.5


def test_same_seed_same_data_other_seed_other_data():
    a, b, c = sentences(seed=3), sentences(seed=3), sentences(seed=4)
    assert np.array_equal(a.ids, b.ids) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.labels, c.labels)


def test_bad_generator_arguments():
    with pytest.raises(TypeError, match="Generator"):
        make_sentences(0, [1, 2])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="clause_lengths"):
        make_sentences(np.random.default_rng(0), [-1, 2])
    with pytest.raises(ValueError, match="cell"):
        train_agreement("transformer")
    with pytest.raises(ValueError, match="steps"):
        train_agreement("rnn", steps=0)


def test_training_learns_short_clauses_beyond_chance():
    r = train_agreement("gru", max_clause=3, steps=150, budget=1500, batch=16, lr=1e-2,
                        eval_per_length=100, log_every=50, seed=0)
    assert isinstance(r, AgreementResult)
    assert r.clause_lengths == [0, 1, 2, 3] and len(r.accuracy) == 4
    assert r.curve.steps == [50, 100, 150] and r.curve.final < r.curve.losses[0]
    assert min(r.accuracy) > 0.9
    again = train_agreement("gru", max_clause=3, steps=150, budget=1500, batch=16, lr=1e-2,
                            eval_per_length=100, log_every=50, seed=0)
    assert again.accuracy == r.accuracy and again.curve.losses == r.curve.losses


def test_forget_bias_reaches_the_gru_update_gate_and_streams_are_per_cell():
    kw = dict(max_clause=4, steps=2, budget=600, batch=4, eval_per_length=4, log_every=1)
    plain, biased = train_agreement("gru", **kw), train_agreement("gru", forget_bias=3.0, **kw)
    assert plain.curve.losses != biased.curve.losses
    rnn_a, rnn_b = train_agreement("rnn", **kw), train_agreement("rnn", forget_bias=3.0, **kw)
    assert rnn_a.curve.losses == rnn_b.curve.losses            # the tanh RNN has no such gate
    with pytest.raises(ValueError, match="too small"):
        train_agreement("lstm", budget=50)
    with pytest.raises(ValueError, match="seed"):
        train_agreement("rnn", seed=-1)


def test_table_rows_are_clause_buckets():
    assert buckets(12) == [(0, 0), (1, 5), (6, 10), (11, 12)]
    r = train_agreement("rnn", max_clause=6, steps=2, budget=300, eval_per_length=4)
    table = agreement_table([r])
    assert table.splitlines()[0].split() == ["clause", "rnn"]
    assert [line.split()[0] for line in table.splitlines()[1:]] == ["0", "1-5", "6"]


def test_lab_agreement_cli(tmp_path, capsys):
    png = tmp_path / "out" / "agreement.png"
    assert main(["lab", "agreement", "--cells", "rnn", "lstm", "--max-clause", "6",
                 "--steps", "3", "--budget", "400", "--batch", "4", "--eval", "5",
                 "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "H=" in out and "parameters" in out and png.exists() and png.stat().st_size > 0
    assert f"\nwrote {png}\n" in out
    table = out[out.index("\nclause ") + 1:].splitlines()
    assert table[0].split() == ["clause", "rnn", "lstm"] and table[2].split()[0] == "1-5"


@pytest.mark.parametrize("bad", [["--steps", "0"], ["--max-clause", "-1"], ["--lr", "0"],
                                 ["--budget", "x"], ["--cells", "tcn"], ["--batch", "-3"],
                                 ["--budget", "10"], ["--seed", "-1"],
                                 ["--budget", "30"]])            # fits a tanh RNN, not a GRU
def test_lab_agreement_bad_arguments(tmp_path, capsys, bad):
    assert main(["lab", "agreement", *bad, "--out", str(tmp_path / "out")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error:") and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []                       # --out not created


@pytest.mark.parametrize("out_dir, message", [("f", "'f' is a file, not a directory"),
                                              ("f/d", "cannot create directory 'f/d'")])
def test_lab_agreement_bad_out_fails_before_any_work(tmp_path, capsys, monkeypatch, out_dir,
                                                     message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "f").write_text("")
    assert main(["lab", "agreement", "--steps", "1", "--max-clause", "2",
                 "--out", out_dir]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and f"argument --out: {message}" in err
    assert [p.name for p in tmp_path.iterdir()] == ["f"]
