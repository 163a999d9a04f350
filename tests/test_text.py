"""rnnkit.text: reading, tokens, vocabulary, splits, and both batchers (incl. exact resume)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnkit.text import (
    SPECIALS,
    SentenceBatches,
    StreamBatches,
    TextDataError,
    Vocab,
    build_vocab,
    detokenize,
    read_text,
    specials_for,
    split_ids,
    tokenize,
    tokenize_lines,
)

PLAY = """FIRST CITIZEN:
Before we proceed any further, hear me speak.

ALL:
Speak, speak. We'll know't -- 'tis so; o'er the hills (and far away)!
What say you? "Nay," quoth she: [aside] 3.5 pounds & 12s.
"""


def _json(state):
    return json.loads(json.dumps(state))


# ---------------------------------------------------------------------------------------------
# read_text


def _write(tmp_path, data: bytes, name: str = "corpus.txt"):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_read_text_strips_bom_and_normalises_newlines(tmp_path):
    p = _write(tmp_path, b"\xef\xbb\xbfone\r\ntwo\rthree\n\r\nfour")
    assert read_text(p) == "one\ntwo\nthree\n\nfour"
    assert read_text(str(p)) == "one\ntwo\nthree\n\nfour"


def test_read_text_chinese(tmp_path):
    p = _write(tmp_path, "床前明月光，\r\n疑是地上霜。\n".encode())
    assert read_text(p) == "床前明月光，\n疑是地上霜。\n"


def test_read_text_invalid_byte_names_file_offset_and_fix(tmp_path):
    p = _write(tmp_path, b"abc\nd\xe9f\n")            # latin-1 e-acute at byte 5, line 2
    with pytest.raises(TextDataError) as e:
        read_text(p)
    msg = str(e.value)
    assert str(p) in msg
    assert "byte offset 5" in msg and "line 2" in msg and "0xe9" in msg
    assert "iconv" in msg
    assert isinstance(e.value, ValueError)


def test_read_text_invalid_offset_counts_the_bom(tmp_path):
    p = _write(tmp_path, b"\xef\xbb\xbfok\xff")
    with pytest.raises(TextDataError, match="byte offset 5"):
        read_text(p)


def test_read_text_truncated_multibyte_at_end(tmp_path):
    p = _write(tmp_path, "你好".encode()[:-1])
    with pytest.raises(TextDataError, match="byte offset 3"):
        read_text(p)


@pytest.mark.parametrize("data", [b"", b"\xef\xbb\xbf"])
def test_read_text_empty_file(tmp_path, data):
    p = _write(tmp_path, data)
    with pytest.raises(TextDataError, match="empty") as e:
        read_text(p)
    assert str(p) in str(e.value)


def test_read_text_missing_file_and_directory(tmp_path):
    with pytest.raises(TextDataError, match="no such file"):
        read_text(tmp_path / "nope.txt")
    with pytest.raises(TextDataError, match="is a directory"):
        read_text(tmp_path)
    with pytest.raises(TypeError):
        read_text(3)  # type: ignore[arg-type]


def test_read_text_binary_and_utf16(tmp_path):
    with pytest.raises(TextDataError, match="NUL byte at byte offset 2"):
        read_text(_write(tmp_path, b"ab\x00cd"))
    with pytest.raises(TextDataError, match="UTF-16"):
        read_text(_write(tmp_path, "hi".encode("utf-16"), "u16.txt"))


# ---------------------------------------------------------------------------------------------
# tokens


def test_char_tokens_are_code_points():
    assert tokenize("Hi!\n你好", "char") == ["H", "i", "!", "\n", "你", "好"]
    assert detokenize(tokenize("Hi!\n你好", "char"), "char") == "Hi!\n你好"


def test_word_tokens():
    text = "'Tis so, my lord.\nDon't  go--\tnow (quickly)!"
    assert tokenize(text, "word") == [
        "'", "Tis", "so", ",", "my", "lord", ".", "\n", "Don't", "go", "-", "-", "now", "(",
        "quickly", ")", "!"]


def test_word_detokenize_spacing():
    toks = tokenize("Nay , my lord ( good sir ) -- I say : no ! \n Go .", "word")
    assert detokenize(toks, "word") == "Nay, my lord (good sir)--I say: no!\nGo."


def test_word_round_trip_on_typical_text():
    toks = tokenize(PLAY, "word")
    text = detokenize(toks, "word")
    assert tokenize(text, "word") == toks
    assert text.split("\n")[:3] == ["FIRST CITIZEN:", "Before we proceed any further, hear me "
                                    "speak.", ""]


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_word_round_trip_property(text):
    toks = tokenize(text, "word")
    assert tokenize(detokenize(toks, "word"), "word") == toks
    assert all(t == "\n" or not any(c.isspace() for c in t) for t in toks)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_char_round_trip_property(text):
    vocab = build_vocab(text + "x")
    assert vocab.decode(vocab.encode(text)) == text
    assert vocab.encode(text).tolist() == vocab.encode(list(text)).tolist()


def test_tokenize_checks_arguments():
    with pytest.raises(ValueError, match="level must be one of"):
        tokenize("abc", "byte")
    with pytest.raises(TypeError, match="text must be a str"):
        tokenize(b"abc", "char")  # type: ignore[arg-type]


def test_tokenize_lines_skips_empty_lines():
    assert tokenize_lines("  Hi there.\n\n   \nBye\n", "word") == [["Hi", "there", "."], ["Bye"]]
    assert tokenize_lines("ab \n\n c", "char") == [["a", "b"], ["c"]]


# ---------------------------------------------------------------------------------------------
# vocabulary


def test_vocab_is_sorted_and_independent_of_input_order():
    toks = tokenize(PLAY, "char")
    shuffled = toks[:]
    random.Random(0).shuffle(shuffled)
    a, b = build_vocab(toks), build_vocab(shuffled)
    assert a == b and a.itos == b.itos
    assert list(a.itos) == sorted(set(toks))
    assert a.specials == () and a.unk_id is None and a.start_id is None


def test_vocab_specials_first_in_canonical_order():
    v = build_vocab(["b", "a"], specials=("<unk>", "<end>", "<start>"))
    assert v.itos == ("<start>", "<end>", "<unk>", "a", "b")
    assert (v.start_id, v.end_id, v.unk_id) == (0, 1, 2)
    assert len(v) == 5 and "a" in v and v.stoi["b"] == 4


def test_specials_for():
    assert specials_for("char", "stream") == ()
    assert specials_for("char", "sentence") == ("<start>", "<end>")
    assert specials_for("word", "stream") == ("<unk>",)
    assert specials_for("word", "sentence") == SPECIALS
    with pytest.raises(ValueError, match="mode"):
        specials_for("char", "poem")


def test_chinese_char_round_trip():
    text = "床前明月光，疑是地上霜。\n举头望明月，低头思故乡。\n"
    v = build_vocab(tokenize(text, "char"), specials=specials_for("char", "sentence"))
    ids = v.encode(text)
    assert ids.dtype == np.int64 and ids.shape == (len(text),)
    assert v.decode(ids) == text
    assert v.decode(np.concatenate([[v.start_id], ids, [v.end_id]]), skip_specials=True) == text


def test_vocab_json_round_trip():
    v = build_vocab(tokenize(PLAY, "word"), specials=specials_for("word", "sentence"),
                    level="word")
    d = _json(v.to_json())
    assert d["format"] == "rnnkit.vocab" and d["level"] == "word"
    w = Vocab.from_json(d)
    assert w == v and w.itos == v.itos and w.level == "word"
    assert w.decode(w.encode(tokenize("hear me speak", "word"))) == "hear me speak"


@pytest.mark.parametrize(("d", "match"), [
    ([1, 2], "JSON object"),
    ({"format": "rnnkit.vocab", "version": 2, "level": "char", "itos": ["a"]}, "version"),
    ({"format": "rnnkit.vocab", "version": 1, "level": "char", "itos": "ab"}, "list of str"),
    ({"format": "rnnkit.vocab", "version": 1, "level": "char", "itos": ["a", 3]}, "list of str"),
    ({"format": "rnnkit.vocab", "version": 1, "level": "char", "itos": ["a", "b", "a"]},
     "duplicate"),
    ({"format": "rnnkit.vocab", "version": 1, "level": "char", "itos": ["a", "<unk>"]},
     "special tokens must come before"),
    ({"format": "rnnkit.vocab", "version": 1, "level": "char", "itos": ["<end>", "<start>"]},
     "must come first"),
    ({"format": "rnnkit.vocab", "version": 1, "level": "char", "itos": ["ab"]},
     "single characters"),
    ({"format": "rnnkit.vocab", "version": 1, "level": "char", "itos": [""]}, "non-empty"),
    ({"format": "rnnkit.vocab", "version": 1, "level": "byte", "itos": ["a"]}, "level"),
    ({"format": "rnnkit.vocab", "version": 1, "level": "char", "itos": []}, "at least one"),
    ({"format": "rnnkit.vocab", "version": 1, "level": "char", "itos": ["a"], "x": 1},
     "unexpected keys"),
])
def test_vocab_from_json_rejects_malformed(d, match):
    with pytest.raises(ValueError, match=match):
        Vocab.from_json(d)


def test_unknown_tokens_map_to_unk_with_min_count():
    toks = tokenize("the cat and the dog and the end", "word")
    v = build_vocab(toks, specials=specials_for("word", "stream"), min_count=2, level="word")
    assert v.itos == ("<unk>", "and", "the")
    ids = v.encode(tokenize("the bird and the cat", "word"))
    assert ids.tolist() == [2, 0, 1, 2, 0]
    assert v.decode(ids) == "the <unk> and the <unk>"


def test_unknown_tokens_without_unk_are_listed():
    v = build_vocab("abc")
    with pytest.raises(ValueError, match=r"2 character\(s\) not in the vocabulary: 'x', 'z'"):
        v.encode("abxzx")
    with pytest.raises(ValueError, match="not in the vocabulary: 'q'"):
        v.encode(iter(["a", "q"]))


def test_build_vocab_checks():
    with pytest.raises(ValueError, match="include '<unk>'"):
        build_vocab(["a", "b"], min_count=2, level="word")
    with pytest.raises(ValueError, match="distinct names"):
        build_vocab(["a"], specials=("<pad>",))
    with pytest.raises(TypeError, match="specials"):
        build_vocab(["a"], specials="<unk>")
    with pytest.raises(ValueError, match="reserved"):
        build_vocab(["<unk>", "a"], level="word")
    with pytest.raises(ValueError, match="empty"):
        build_vocab([])
    with pytest.raises(ValueError, match="min_count"):
        build_vocab(["a"], min_count=0)


def test_encode_decode_checks():
    v = build_vocab(["a", "b"], level="word")
    with pytest.raises(TypeError, match="not a str"):
        v.encode("a b")
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        v.decode([0, 2])
    with pytest.raises(TypeError, match="integers"):
        v.decode(np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="1-D"):
        v.decode(np.zeros((2, 2), dtype=np.int64))
    assert v.decode([]) == ""


# ---------------------------------------------------------------------------------------------
# split


def test_split_holds_out_the_end():
    ids = np.arange(100)
    train, val = split_ids(ids, 0.05)
    assert train.tolist() == list(range(95)) and val.tolist() == list(range(95, 100))
    lines = [np.array([i]) for i in range(10)]
    train_lines, val_lines = split_ids(lines, 0.2)
    assert [int(a[0]) for a in val_lines] == [8, 9] and len(train_lines) == 8
    train, val = split_ids(ids, 0.0)
    assert len(train) == 100 and len(val) == 0
    assert len(split_ids(np.arange(10), 0.01)[1]) == 1      # at least one when positive


def test_split_checks():
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        split_ids(np.arange(10), 1.0)
    with pytest.raises(ValueError, match="keep any for training"):
        split_ids(np.arange(1), 0.5)
    with pytest.raises(TypeError):
        split_ids("abc", 0.1)  # type: ignore[call-overload]


# ---------------------------------------------------------------------------------------------
# stream mode


def test_stream_shapes_and_targets():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 50, size=1000)
    B, T = 4, 7
    sb = StreamBatches(ids, B, T)
    L = (1000 - 1) // (B * T) * T
    assert len(sb) == L // T == 35 and sb.num_tokens_used == B * L
    xs, ys = [], []
    for i in range(len(sb)):
        batch = next(sb)
        assert batch.x.shape == batch.y.shape == (T, B)
        assert batch.x.dtype == batch.y.dtype == np.int64
        assert batch.x.flags.c_contiguous
        assert batch.is_epoch_start == (i == 0) and batch.index == i and batch.epoch == 0
        xs.append(batch.x)
        ys.append(batch.y)
    X, Y = np.concatenate(xs), np.concatenate(ys)          # (L, B): each column one stream
    for b in range(B):
        np.testing.assert_array_equal(X[:, b], ids[b * L:(b + 1) * L])        # contiguous
        np.testing.assert_array_equal(Y[:, b], ids[b * L + 1:(b + 1) * L + 1])  # next token
    assert sb.epoch == 1 and sb.index == 0
    assert next(sb).is_epoch_start


def test_stream_covers_every_token_once_per_epoch():
    B, T, N = 3, 5, 200
    sb = StreamBatches(np.arange(N), B, T)
    for _ in range(2):
        seen = np.concatenate([next(sb).x.ravel() for _ in range(len(sb))])
        assert sorted(seen.tolist()) == list(range(sb.num_tokens_used))
    # windows carry on: row 0 of window i+1 follows row T-1 of window i in every column
    a, b = sb.window(0)[0], sb.window(1)[0]
    np.testing.assert_array_equal(b[0], a[-1] + 1)


def test_stream_resume_mid_epoch_gives_identical_batches():
    ids = np.random.default_rng(1).integers(0, 30, size=500)
    a = StreamBatches(ids, 4, 6)
    for _ in range(len(a) + 5):                  # into the second epoch
        next(a)
    state = _json(a.state_dict())
    b = StreamBatches(ids.copy(), 4, 6)
    b.load_state_dict(state)
    assert (b.epoch, b.index) == (a.epoch, a.index) == (1, 5)
    for _ in range(2 * len(a)):
        p, q = next(a), next(b)
        np.testing.assert_array_equal(p.x, q.x)
        np.testing.assert_array_equal(p.y, q.y)
        assert (p.epoch, p.index) == (q.epoch, q.index)


def test_stream_epoch_batches_keep_position():
    sb = StreamBatches(np.arange(100), 2, 5)
    next(sb)
    first = list(sb.epoch_batches())
    assert len(first) == len(sb) and first[0].is_epoch_start
    np.testing.assert_array_equal(first[1].x, sb.window(1)[0])
    assert sb.index == 1


def test_stream_state_from_other_data_is_rejected():
    sb = StreamBatches(np.arange(100), 2, 5)
    other = StreamBatches(np.arange(100) % 7, 2, 5).state_dict()
    with pytest.raises(ValueError, match="crc32"):
        sb.load_state_dict(other)
    with pytest.raises(ValueError, match="seq_len"):
        sb.load_state_dict(StreamBatches(np.arange(100), 2, 4).state_dict())
    bad = sb.state_dict() | {"index": len(sb)}
    with pytest.raises(ValueError, match="index"):
        sb.load_state_dict(bad)
    with pytest.raises(ValueError, match="missing"):
        sb.load_state_dict({"epoch": 0})


def test_stream_too_little_data():
    with pytest.raises(ValueError, match=r"4 \* 8 \+ 1 = 33 tokens for one window; got 32"):
        StreamBatches(np.arange(32), 4, 8)
    assert len(StreamBatches(np.arange(33), 4, 8)) == 1


@pytest.mark.parametrize(("kw", "exc"), [
    ({"batch_size": 0}, ValueError), ({"batch_size": 2.0}, TypeError),
    ({"seq_len": True}, TypeError), ({"seq_len": -1}, ValueError),
    ({"ids": np.arange(10.0)}, TypeError), ({"ids": np.zeros((5, 5), dtype=int)}, ValueError),
    ({"ids": np.array([1, -1] * 10)}, ValueError),
])
def test_stream_checks_arguments(kw, exc):
    args = {"ids": np.arange(100), "batch_size": 2, "seq_len": 3} | kw
    with pytest.raises(exc):
        StreamBatches(**args)


def test_stream_copies_its_data():
    ids = np.arange(50)
    sb = StreamBatches(ids, 2, 3)
    ids[:] = 0
    assert next(sb).x[1, 0] == 1


# ---------------------------------------------------------------------------------------------
# sentence mode

START, END, PAD = 0, 1, 2


def _lines(n=23, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(3, 20, size=int(rng.integers(1, 12))) for _ in range(n)]


def test_sentence_batch_layout():
    lines = _lines()
    sb = SentenceBatches(lines, 5, np.random.default_rng(0), START, END, pad_id=PAD)
    assert len(sb) == 5                                    # ceil(23 / 5)
    for _ in range(len(sb)):
        batch = next(sb)
        T, B = batch.x.shape
        assert batch.y.shape == (T, B) and batch.lengths.shape == (B,)
        assert batch.x.dtype == batch.y.dtype == batch.lengths.dtype == np.int64
        assert batch.lengths.max() == T
        for b, i in enumerate(batch.lines.tolist()):
            line, n = lines[i], batch.lengths[b]
            assert n == len(line) + 1
            assert batch.x[0, b] == START
            np.testing.assert_array_equal(batch.x[1:n, b], line)
            np.testing.assert_array_equal(batch.y[:n - 1, b], line)
            assert batch.y[n - 1, b] == END
            np.testing.assert_array_equal(batch.x[1:n, b], batch.y[:n - 1, b])   # shifted
            assert (batch.x[n:, b] == PAD).all() and (batch.y[n:, b] == PAD).all()
        assert (batch.mask.sum(axis=0) == batch.lengths).all()
        assert batch.num_tokens == batch.lengths.sum()
    assert B == 3                                          # the last batch is the remainder


def test_sentence_every_line_once_per_epoch_and_shuffled():
    lines = _lines(40)
    sb = SentenceBatches(lines, 6, np.random.default_rng(3), START, END)
    epochs = []
    for _ in range(2):
        order = np.concatenate([next(sb).lines for _ in range(len(sb))])
        assert sorted(order.tolist()) == list(range(40))
        epochs.append(order.tolist())
    assert epochs[0] != epochs[1] and epochs[0] != list(range(40))


def test_sentence_shuffle_reproducible_with_seed():
    def orders(seed):
        sb = SentenceBatches(_lines(30), 4, np.random.default_rng(seed), START, END, bucket=2)
        return [next(sb).lines.tolist() for _ in range(3 * len(sb))]
    assert orders(7) == orders(7)
    assert orders(7) != orders(8)


def test_sentence_without_shuffle_keeps_file_order():
    sb = SentenceBatches(_lines(10), 4, None, START, END, shuffle=False)
    assert [next(sb).lines.tolist() for _ in range(3)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert next(sb).lines.tolist() == [0, 1, 2, 3] and sb.epoch == 1


def test_sentence_bucketing_reduces_padding():
    lines = _lines(400, seed=5)

    def padding(bucket):
        sb = SentenceBatches(lines, 8, np.random.default_rng(0), START, END, bucket=bucket)
        total = 0
        for _ in range(len(sb)):
            b = next(sb)
            total += b.x.size - b.num_tokens
        return total
    assert padding(10) < padding(0) / 2


@pytest.mark.parametrize("bucket", [0, 3])
@pytest.mark.parametrize("stop", [0, 4, 7, 8, 11])
def test_sentence_resume_is_exact(bucket, stop):
    lines = _lines(45)
    a = SentenceBatches(lines, 6, np.random.default_rng(11), START, END, bucket=bucket)
    for _ in range(stop):
        next(a)
    state = _json(a.state_dict())
    b = SentenceBatches([x.copy() for x in lines], 6, np.random.default_rng(999), START, END,
                        bucket=bucket)
    b.load_state_dict(state)
    for _ in range(3 * len(a)):
        p, q = next(a), next(b)
        assert (p.epoch, p.index) == (q.epoch, q.index)
        np.testing.assert_array_equal(p.lines, q.lines)
        np.testing.assert_array_equal(p.x, q.x)
        np.testing.assert_array_equal(p.y, q.y)
    assert a.rng.bit_generator.state == b.rng.bit_generator.state   # type: ignore[union-attr]


def test_sentence_skips_empty_and_truncates():
    lines = [[3, 4, 5, 6, 7], [], np.array([], dtype=np.int64), [8]]
    sb = SentenceBatches(lines, 4, None, START, END, shuffle=False, max_len=3)
    assert sb.num_skipped == 2 and sb.num_truncated == 1 and len(sb.lines) == 2
    batch = next(sb)
    assert batch.lengths.tolist() == [4, 2]
    assert batch.x[:, 0].tolist() == [START, 3, 4, 5] and batch.y[:, 0].tolist() == [3, 4, 5, END]


def test_sentence_drop_last():
    sb = SentenceBatches(_lines(10), 4, np.random.default_rng(0), START, END, drop_last=True)
    assert len(sb) == 2
    assert all(next(sb).x.shape[1] == 4 for _ in range(6))
    with pytest.raises(ValueError, match="at least 4 non-empty"):
        SentenceBatches(_lines(3), 4, np.random.default_rng(0), START, END, drop_last=True)


def test_sentence_epoch_batches_use_no_randomness():
    rng = np.random.default_rng(0)
    sb = SentenceBatches(_lines(10), 4, rng, START, END)
    before = rng.bit_generator.state
    assert [b.lines.tolist() for b in sb.epoch_batches()] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert rng.bit_generator.state == before and sb.index == 0


@pytest.mark.parametrize(("kw", "exc", "match"), [
    ({"rng": 0}, TypeError, "Generator"),
    ({"rng": None}, ValueError, "needs an rng"),
    ({"end_id": START}, ValueError, "differ"),
    ({"lines_ids": [[3, START, 4]]}, ValueError, "contains start_id"),
    ({"lines_ids": [[], []]}, ValueError, r"got 0 of 2"),
    ({"lines_ids": np.arange(5)}, TypeError, "one 1-D id array per line"),
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"pad_id": -1}, ValueError, "pad_id"),
    ({"max_len": 0}, ValueError, "max_len"),
    ({"lines_ids": [[1.5]]}, TypeError, "integer"),
])
def test_sentence_checks_arguments(kw, exc, match):
    args = {"lines_ids": _lines(5), "batch_size": 2, "rng": np.random.default_rng(0),
            "start_id": START, "end_id": END} | kw
    with pytest.raises(exc, match=match):
        SentenceBatches(**args)


def test_sentence_state_checks():
    sb = SentenceBatches(_lines(10), 4, np.random.default_rng(0), START, END)
    other = SentenceBatches(_lines(10, seed=1), 4, np.random.default_rng(0), START, END)
    with pytest.raises(ValueError, match="different batcher or different data"):
        sb.load_state_dict(other.state_dict())
    state = sb.state_dict()
    with pytest.raises(ValueError, match="rng"):
        sb.load_state_dict(state | {"rng": {"bit_generator": "MT19937"}})
    with pytest.raises(ValueError, match=r"state\['epoch'\] must be an int >= 0; got -1"):
        sb.load_state_dict(state | {"epoch": -1})


def test_end_to_end_word_sentence_mode():
    lines = tokenize_lines(PLAY, "word")
    vocab = build_vocab([t for line in lines for t in line],
                        specials=specials_for("word", "sentence"), level="word")
    ids = [vocab.encode(line) for line in lines]
    sb = SentenceBatches(ids, 2, None, vocab.start_id, vocab.end_id, shuffle=False)
    batch = next(sb)
    first = batch.x[: batch.lengths[0], 0]
    assert vocab.decode(first) == "<start> FIRST CITIZEN:"
    assert vocab.decode(batch.y[: batch.lengths[0], 0], skip_specials=True) == "FIRST CITIZEN:"
