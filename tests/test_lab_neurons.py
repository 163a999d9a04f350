"""rnnkit lab neurons: activations, text features, correlations, HTML, PNG and the command."""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import brute_match, brute_select
from rnnkit.cli import main
from rnnkit.lab.neurons import (
    Activations,
    Unit,
    correlations,
    encode_text,
    record_activations,
    render_html,
    render_png,
    text_features,
    top_units,
)
from rnnkit.models import LanguageModel, LMConfig
from rnnkit.rundir import load_language_model as model_from_checkpoint
from rnnkit.text import Vocab, build_vocab, detokenize, tokenize, tokenize_lines
from rnnkit.train import TrainConfig, prepare_data, validation_start

ENGLISH = "".join(
    ("KING:\n" if i % 3 == 0 else "")
    + f'The lord (said {i}) "go now" to [the] king and {"queen" * (i % 4)}.\n'
    + ("\n" if i % 3 == 2 else "")
    for i in range(60))
CHINESE = "".join(f"李白：\n床前明月光（{i}），疑是「地上霜」。\n\n" for i in range(40))
# lines of very different lengths (long ones first, many short ones last) and blank lines: the
# validation part by lines is far from the last 20 % of the characters
SENTENCES = "".join((f"line {i} " + "of the long ones and more words " * 6 if i < 30
                     else f"short {i}") + ("\n\n" if i % 7 == 0 else "\n") for i in range(90))


def _train(tmp_path, name: str, text: str, *extra: str) -> str:
    src = tmp_path / f"{name}.txt"
    src.write_text(text, encoding="utf-8")
    out = tmp_path / name
    assert main(["train", str(src), "--out", str(out), "--max-steps", "3", "--hidden-size", "8",
                 "--embedding-dim", "4", "--batch-size", "2", "--seq-len", "8",
                 "--eval-interval", "3", "--sample-length", "0", "--no-progress",
                 *extra]) == 0
    return str(out)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("neurons")
    return {"char": _train(tmp, "char", ENGLISH, "--num-layers", "2"),
            "word": _train(tmp, "word", ENGLISH, "--level", "word", "--cell", "gru",
                           "--num-layers", "1"),
            "zh": _train(tmp, "zh", CHINESE, "--cell", "rnn"),
            # sentence mode, val fraction 0.2: a character split would start in training lines
            "sentence": _train(tmp, "sentence", SENTENCES, "--mode", "sentence", "--seq-len",
                               "200", "--val-fraction", "0.2", "--cell", "gru")}


# ---- activations ---------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("layers", [1, 2])
def test_activations_are_the_models_own_states(cell, layers):
    """Top-layer h decodes to the model's logits; every layer's h (and c) equals the Stepper's,
    an independent token-at-a-time path; chunking with the state carried changes nothing."""
    V, H = 11, 6
    model = LanguageModel(LMConfig(V, cell=cell, embedding_dim=5, hidden_size=H,
                                   num_layers=layers, dtype="float64"), rng=1)
    vocab = Vocab([chr(97 + i) for i in range(V)])
    text = "".join(chr(97 + i) for i in np.random.default_rng(0).integers(0, V, 40))
    enc = encode_text(vocab, text)
    acts = record_activations(model, enc, chunk=7)
    kinds = 2 if cell == "lstm" else 1
    assert acts.values.shape == (40, layers * kinds * H)
    top = acts.values[:, (layers - 1) * kinds * H:(layers - 1) * kinds * H + H]
    logits, _ = model(enc.ids[:, None])
    dec = model.decoder
    np.testing.assert_allclose(top @ dec.weight.T + dec.bias, logits[:, 0], atol=1e-6)
    step, state = model.stepper(), None
    for t, i in enumerate(enc.ids):
        _, state = step(np.array([i]), state)
        h, c = state if isinstance(state, tuple) else (state, None)
        for layer in range(layers):
            np.testing.assert_allclose(acts.column_block(layer, "h")[t], h[layer, 0], atol=1e-6)
            if c is not None:
                np.testing.assert_allclose(acts.column_block(layer, "c")[t], c[layer, 0],
                                           atol=1e-6)
    assert acts.units[-1] == Unit(layers - 1, "c" if cell == "lstm" else "h", H - 1)


def test_sentence_mode_restarts_each_line_from_start_token():
    vocab = build_vocab(tokenize("ab ba", "char"), specials=("<start>", "<end>"))
    enc = encode_text(vocab, "ab\nba b\na")
    assert enc.ids[2] == vocab.start_id and enc.resets.tolist() == [
        True, False, True, False, False, False, False, True, False]
    model = LanguageModel(LMConfig(len(vocab), cell="gru", hidden_size=4, embedding_dim=3,
                                   dtype="float64"), rng=0)
    acts = record_activations(model, enc)
    alone = record_activations(model, encode_text(vocab, "\nba b"))    # line 2 on its own
    np.testing.assert_allclose(acts.values[2:7], alone.values, atol=1e-12)


def test_unknown_tokens_error_or_unk():
    vocab = Vocab(list("abc"))
    with pytest.raises(ValueError, match=r"never saw: 'x' 'z'"):
        encode_text(vocab, "abxcz")
    wv = build_vocab(["the", "king"], specials=("<unk>",), level="word")
    enc = encode_text(wv, "the queen king")
    assert enc.ids.tolist() == [wv.stoi["the"], wv.unk_id, wv.stoi["king"]]
    assert enc.unknown == 1


# ---- features ------------------------------------------------------------------------------


def _feature(text: str, name: str) -> list[int]:
    f = {f.name: f for f in text_features(list(text))}[name]
    return f.values.astype(int).tolist()


def test_quotes_nest_and_unclosed_ones_end_at_a_blank_line():
    #                        a " b \u201c c \u201d " d
    assert _feature('a"b\u201cc\u201d"d', "quote") == [0, 1, 1, 1, 1, 1, 0, 0]
    assert _feature('"ab\ncd', "quote") == [1, 1, 1, 1, 1, 1]       # a quote spans lines
    assert _feature('"a\n\nb', "quote") == [1, 1, 1, 0, 0]          # ... not paragraphs
    assert _feature("a\u201d b", "quote") == [0, 0, 0, 0]           # a stray closer: ignored
    assert _feature("\u300c\u5730\u300d", "quote") == [1, 1, 0]


def test_brackets_nest_and_stray_closers_are_ignored():
    assert _feature("a(b[c]d)e", "bracket") == [0, 1, 1, 1, 1, 1, 1, 0, 0]
    assert _feature("a)b(c", "bracket") == [0, 0, 0, 1, 1]
    assert _feature("(a[b)c", "bracket") == [1, 1, 1, 1, 0, 0]       # ")" closes past "["
    assert _feature("\uff08\u6708\uff09", "bracket") == [1, 1, 0]


def test_line_features():
    text = "AB:\nab c\n\nx"
    assert _feature(text, "line_pos") == [1, 2, 3, 0, 1, 2, 3, 4, 0, 0, 1]
    assert _feature(text, "newline_next") == [0, 0, 1, 0, 0, 0, 0, 1, 1, 0, 0]
    assert _feature(text, "caps_line") == [1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    assert _feature(text, "word_pos") == [1, 2, 0, 0, 1, 2, 0, 1, 0, 0, 1]
    assert _feature(text, "word_end") == [0, 1, 0, 0, 0, 1, 0, 1, 0, 0, 0]
    assert _feature(text, "para_line") == [0, 0, 0, 1, 1, 1, 1, 1, 2, 0, 0]
    absent = {f.name: f for f in text_features(list("abc"))}
    assert not absent["quote"].present and absent["quote"].coverage() == "absent"


def test_word_level_features_count_words_and_say_so():
    tokens = tokenize("I don't know , my lord .\nGo", "word")
    assert tokens == ["I", "don't", "know", ",", "my", "lord", ".", "\n", "Go"]
    f = {f.name: f for f in text_features(tokens, "word")}
    assert f["word_pos"].values.astype(int).tolist() == [1, 2, 3, 0, 1, 2, 0, 0, 1]
    assert f["word_end"].values.astype(int).tolist() == [0, 0, 1, 0, 0, 1, 0, 0, 0]
    assert "punctuation" in f["word_pos"].description
    assert "punctuation" in f["word_end"].description
    char = {f.name: f for f in text_features(list("ab"))}
    assert "letters" in char["word_pos"].description
    assert "punctuation" not in char["word_pos"].description
    with pytest.raises(ValueError, match="level"):
        text_features(tokens, "byte")


# ---- correlations --------------------------------------------------------------------------


def test_a_planted_unit_ranks_first():
    rng = np.random.default_rng(0)
    tokens = list(ENGLISH[:600])
    feats = {f.name: f for f in text_features(tokens)}
    values = rng.standard_normal((600, 40)).astype(np.float32)
    values[:, 17] = 0.5 * feats["bracket"].values + 0.1 * rng.standard_normal(600)
    values[:, 3] = -0.1 * feats["line_pos"].values + 0.1 * rng.standard_normal(600)
    values[:, 5] = 1.0                                   # a dead unit: r = 0, not NaN
    units = [Unit(i // 20, "h", i % 20) for i in range(40)]
    acts = Activations(tokens, values, units, "char")
    r = correlations(values, feats["bracket"].values)
    assert np.argmax(np.abs(r)) == 17 and r[17] > 0.7 and r[5] == 0
    found = {fu.feature.name: fu for fu in top_units(acts, list(feats.values()), k=2)}
    assert found["bracket"].units[0] == (Unit(0, "h", 17), pytest.approx(r[17]))
    assert found["line_pos"].units[0][0] == Unit(0, "h", 3)
    assert found["line_pos"].units[0][1] < -0.7


# ---- pictures ------------------------------------------------------------------------------


def _toy_acts(text: str) -> Activations:
    tokens = list(text)
    feats = text_features(tokens)
    v = np.stack([f.values for f in feats], axis=1).astype(np.float32)
    v += np.random.default_rng(0).standard_normal(v.shape).astype(np.float32) * 0.1
    return Activations(tokens, v, [Unit(0, "h", i) for i in range(v.shape[1])], "char")


def test_html_escapes_the_text_and_is_self_contained():
    text = 'say "<script>alert(1)</script>" & go\nAB:\n' * 3
    acts = _toy_acts(text)
    page = render_html(acts, top_units(acts, text_features(acts.tokens), k=1))
    assert "<script>" not in page and "&lt;script&gt;" in page and "&amp;" in page
    assert "http" not in page and "src=" not in page
    assert page.count("<h2>") == len(text_features(acts.tokens))


def test_png_is_a_png():
    acts = _toy_acts('(a "b" c)\n' * 30)
    png = render_png(acts, top_units(acts, text_features(acts.tokens), k=1), width=40)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


# ---- the command ---------------------------------------------------------------------------


def _cli(tmp_path, *args: str) -> tuple[int, list[str]]:
    out = tmp_path / "lab"
    html, png = out / "neurons.html", out / "neurons.png"
    code = main(["lab", "neurons", *args, "--out", str(out)])
    return code, sorted(p.name for p in (html, png) if p.exists())


def _table(out: str) -> tuple[str, dict[str, list[str]], dict[str, str]]:
    """The printed table: its header, its rows by feature (the row's fields after the name)
    and the legend's descriptions by feature."""
    lines = out.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith("feature "))
    rows, legend, k = {}, {}, i + 1
    while lines[k]:
        name, *rest = lines[k].split()
        rows[name] = rest
        k += 1
    for line in lines[k + 1:]:
        if not line.startswith("  "):
            break
        name, desc = line.split(None, 1)
        legend[name] = desc
    assert set(rows) == set(legend)
    return lines[i], rows, legend


def _found(row: list[str]) -> bool:
    """A row with units: coverage, then 'lN kind[i] r' per unit (and the untrained column)."""
    return row[0] != "absent" and any(f.startswith(("c[", "h[")) for f in row)


def test_cli_char_run_writes_both_files_and_prints_the_table(runs, tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text(ENGLISH[:900], encoding="utf-8")
    code, files = _cli(tmp_path, runs["char"], "--text", str(text), "--top", "2")
    out = capsys.readouterr().out
    assert code == 0 and files == ["neurons.html", "neurons.png"]
    assert "2 x 8 LSTM" in out and ("l1 c[" in out or "l0 c[" in out)
    head, rows, legend = _table(out)
    assert head.rstrip().endswith("untrained")
    for name in ("quote", "bracket", "line_pos", "newline_next", "caps_line", "word_pos"):
        assert _found(rows[name]), (name, rows[name])
        assert sum(f.startswith(("c[", "h[")) for f in rows[name]) == 2        # --top 2
    assert legend["word_pos"].startswith("letters/digits")                    # char level
    page = (tmp_path / "lab" / "neurons.html").read_text(encoding="utf-8")
    assert "line_pos &mdash; l" in page


def test_cli_features_missing_from_the_text_are_reported_absent(runs, tmp_path, capsys):
    text = tmp_path / "plain.txt"                  # no quotes, no brackets, no all-caps line
    text.write_text("the king and the queen\nwent to the lord\n" * 20, encoding="utf-8")
    code, files = _cli(tmp_path, runs["char"], "--text", str(text))
    out = capsys.readouterr().out
    assert code == 0 and files == ["neurons.html", "neurons.png"]
    _, rows, _ = _table(out)
    for name in ("quote", "bracket", "caps_line"):
        assert rows[name][0] == "absent" and not _found(rows[name]), (name, rows[name])
    for name in ("line_pos", "newline_next", "word_pos", "word_end"):
        assert _found(rows[name]), (name, rows[name])


def test_cli_default_text_is_the_validation_part_of_a_word_stream_model(
        runs, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, files = _cli(tmp_path, runs["word"], "--length", "300")
    out = capsys.readouterr().out
    assert code == 0 and files == ["neurons.html", "neurons.png"]
    assert "validation" in out and "1 x 8 GRU, word level" in out
    _, _, legend = _table(out)
    assert "punctuation" in legend["word_pos"] and "punctuation" in legend["word_end"]
    # stream mode: the last 5 % of the TOKENS (as train.py splits them), from a whole line on
    _, _, meta = model_from_checkpoint(runs["word"])
    corpus = meta["train"]["corpus"]
    text = Path(corpus).read_text(encoding="utf-8")
    tokens = tokenize(text, "word")
    first_val = len(tokens) - round(len(tokens) * 0.05)
    start = validation_start(text, "word", "stream", 0.05)
    rest = tokenize(text[start:], "word")
    assert tokens[len(tokens) - len(rest):] == rest and len(tokens) - len(rest) >= first_val
    assert start == 0 or text[start - 1] == "\n"


def test_cli_default_text_of_a_sentence_model_starts_at_the_first_validation_line(
        runs, tmp_path, capsys):
    _, vocab, meta = model_from_checkpoint(runs["sentence"])
    cfg = TrainConfig.from_json(meta["train"])
    assert cfg.mode == "sentence" and cfg.val_fraction == 0.2
    val = prepare_data(cfg).val                                   # what rnnkit train held out
    first_val_line = vocab.decode(val.lines[0])                  # type: ignore[union-attr]
    text = Path(cfg.corpus).read_text(encoding="utf-8")
    lines = tokenize_lines(text, "char")
    n_val = round(len(lines) * 0.2)
    assert "".join(lines[len(lines) - n_val]) == first_val_line
    # a split by characters would start inside the training lines
    by_chars = text[int(len(text) * 0.8):]
    assert first_val_line not in by_chars.split("\n")[1:2]
    start = validation_start(text, "char", "sentence", 0.2)
    assert text[start:].split("\n")[0] == first_val_line
    code, files = _cli(tmp_path, runs["sentence"], "--length", "400")
    out = capsys.readouterr().out
    assert code == 0 and files == ["neurons.html", "neurons.png"]
    assert "validation part" in out and "lines" in out
    page = (tmp_path / "lab" / "neurons.html").read_text(encoding="utf-8")
    pre = page[page.index("<pre>") + 5:].lstrip("\n")
    shown = "".join(re.sub(r"<[^>]+>", "", pre.split("</pre>")[0]))
    assert html.unescape(shown).startswith(first_val_line)


def test_cli_chinese(runs, tmp_path, capsys):
    code, files = _cli(tmp_path, runs["zh"], "--length", "200")
    out = capsys.readouterr().out
    assert code == 0 and files == ["neurons.html", "neurons.png"]
    _, rows, _ = _table(out)
    assert rows["caps_line"][0] == "absent"                # no cased letters in Chinese
    assert _found(rows["quote"]) and _found(rows["bracket"]) and "2 x 8 RNN" in out


@pytest.mark.parametrize("args, message", [
    (["{run}", "--top", "0"], "expected a positive integer"),
    (["{missing}"], "no such run directory"),
    (["{run}", "--text", "{bad}"], "never saw: '#' '~'"),
    (["{run}", "--text", "{nofile}"], "no such file"),
    (["{run}", "--start", "100000", "--text", "{good}"], "start (in this text of"),
    (["{run}", "--seed", "-1"], "expected an integer >= 0"),
])
def test_cli_errors_write_nothing(runs, tmp_path, capsys, args, message):
    bad, good = tmp_path / "bad.txt", tmp_path / "good.txt"
    bad.write_text("KING:\nthe king ~ # \n", encoding="utf-8")
    good.write_text("the king\n", encoding="utf-8")
    paths = {"run": runs["char"], "missing": str(tmp_path / "nope"), "bad": str(bad),
             "good": str(good), "nofile": str(tmp_path / "none.txt")}
    code, files = _cli(tmp_path, *[a.format(**paths) for a in args])
    err = capsys.readouterr().err
    assert code == 2 and files == []
    assert err.startswith("error: ") and message in err and "Traceback" not in err


# ---- span queries (LSTMVis) and display pieces (rnnkit serve) ---------------------------------

def test_select_and_match_equal_a_brute_force_reading_of_lstmvis():
    from rnnkit.lab.neurons import match_spans, select_units

    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(300):
        T, H = int(rng.integers(3, 30)), int(rng.integers(1, 12))
        # smooth-ish on/off patterns so spans of several tokens exist
        v = np.cumsum(rng.standard_normal((T, H)), axis=0) * 0.3
        a = int(rng.integers(0, T - 1))
        b = int(rng.integers(a + 1, min(T, a + 5) + 1))
        thr, pad = float(rng.uniform(-0.5, 0.5)), int(rng.integers(0, 3))
        units = select_units(v, a, b, thr, pad)
        assert units.tolist() == brute_select(v, a, b, thr, pad)
        got = [(m.start, m.end) for m in match_spans(v, units, thr)]
        assert got == brute_match(v, units.tolist(), thr)
        if units.size:
            hits += 1
            assert any(s <= a and b <= e for s, e in got)          # the query span matches
    assert hits > 30


def test_select_and_match_with_ties_at_the_threshold():
    from rnnkit.lab.neurons import match_spans, select_units

    rng = np.random.default_rng(0)
    nonempty = 0
    for _ in range(400):
        T, H = int(rng.integers(1, 30)), int(rng.integers(1, 7))
        v = np.round(rng.uniform(-1, 1, (T, H)), 1).astype(np.float32)     # ties at threshold
        a = int(rng.integers(0, T))
        b = int(rng.integers(a + 1, T + 1))
        threshold = float(np.round(rng.uniform(-0.8, 0.8), 1))
        pad = int(rng.integers(0, 4))
        units = select_units(v, a, b, threshold, pad)
        assert units.tolist() == brute_select(v, a, b, threshold, pad)
        found = match_spans(v, units, threshold)
        assert [(m.start, m.end) for m in found] == brute_match(v, units.tolist(), threshold)
        nonempty += bool(units.size)
        if units.size:
            assert any(m.start <= a and b <= m.end for m in found)
    assert nonempty > 50


def test_select_and_match_refuse_bad_spans():
    from rnnkit.lab.neurons import match_spans, select_units

    v = np.zeros((5, 3))
    for a, b in ((3, 3), (4, 2), (0, 6), (-1, 2), (5, 6)):
        with pytest.raises(ValueError, match="span"):
            select_units(v, a, b, 0.1)
    with pytest.raises(ValueError, match="pad"):
        select_units(v, 0, 1, 0.1, pad=-1)
    with pytest.raises(ValueError, match="threshold"):
        select_units(v, 0, 1, float("nan"))
    with pytest.raises(ValueError, match="units"):
        match_spans(v, [3], 0.1)
    assert match_spans(v, [], 0.1) == []
    assert [(m.start, m.end, m.length) for m in match_spans(v, [0, 2], 0.0)] == [(0, 5, 5)]


@pytest.mark.parametrize("level", ["char", "word"])
def test_display_pieces_join_to_the_text_the_html_page_shows(level):
    from rnnkit.lab.neurons import display_pieces

    text = 'KING:\nThe lord (said 3) "go now", to [the] king.\nAll:\n'
    toks = tokenize(text, level)
    pieces = display_pieces(toks, level)
    assert len(pieces) == len(toks)
    assert "".join(pieces).replace("\u21b5", "") == (text if level == "char" else
                                                      detokenize(toks, "word"))
    acts = Activations(toks, np.zeros((len(toks), 1), np.float32), [Unit(0, "h", 0)], level)
    page = render_html(acts, top_units(acts, text_features(toks, level)))
    assert html.escape(pieces[1]) in page
