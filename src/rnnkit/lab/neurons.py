"""What single hidden units of a trained language model track (Karpathy, Johnson and Fei-Fei,
"Visualizing and Understanding Recurrent Networks", 2015), made a command.

Run the model once over a text and keep every unit's value after every token: each layer's h
and, for an LSTM, its cell state c (where Karpathy found his quote and line-length cells).
Compute cheap features of the same text (inside quotes, inside brackets, position in the
line, "a newline comes next", an all-caps speaker line, position in the word) and rank all
units by the |Pearson correlation| of their value with each feature.

A correlation alone says little with a thousand units to choose from, and some features are
mostly the current character (a unit that fires on capitals fires in "ROMEO:"). So the same
text also runs through an untrained model of the same shape: what the random network reaches
is the bar a trained unit has to clear before it counts as learned.

    enc = encode_text(vocab, text)                        # tokens, ids, reset points
    acts = record_activations(model, enc)                 # (T, U) values of U units
    found = top_units(acts, text_features(enc.tokens, enc.level), k=3,
                      control=record_activations(untrained, enc))
    print(neurons_table(found))
    html, png = render_html(acts, found), render_png(acts, found)
"""

from __future__ import annotations

import html as _html
import io
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..checks import UsageError, check_scalar, nonneg_int_arg, positive_int, positive_int_arg
from ..files import printable, write_atomic
from ..models import LanguageModel
from ..text import Vocab, detokenize, tokenize
from ._common import add_seed_and_out, pyplot

Array = np.ndarray

# ---- tokens -> ids -----------------------------------------------------------------------


@dataclass
class EncodedText:
    """A text as the model reads it: ``tokens`` (T,) as written, ``ids`` (T,) as fed, and
    ``resets`` (T,) True where the state restarts from zero before the token."""

    tokens: list[str]
    ids: Array
    resets: Array
    level: str
    unknown: int = 0            # tokens of the text that became <unk>


def encode_text(vocab: Vocab, text: str, start: int = 0, length: int | None = None
                ) -> EncodedText:
    """Tokens ``start .. start+length`` of ``text`` in ``vocab``'s level, ready for the model.

    Tokens the vocabulary lacks become ``<unk>`` when it has one; otherwise a ``ValueError``
    names them. A sentence-mode vocabulary (``<start>``, no newline token) was trained on one
    line at a time from a zero state: each newline is fed as ``<start>`` with the state reset,
    so every line is read as in training.
    """
    if not isinstance(vocab, Vocab):
        raise TypeError(f"vocab must be a Vocab; got {type(vocab).__name__}")
    toks = tokenize(text, vocab.level)
    start = check_scalar(start, f"start (in this text of {len(toks)} tokens)", int, min_val=0,
                         max_val=len(toks), include_boundaries="left")
    toks = toks[start:] if length is None else toks[start: start + length]
    sentence = vocab.start_id is not None and "\n" not in vocab.stoi
    is_nl = np.array([t == "\n" for t in toks], dtype=bool)
    resets = is_nl.copy() if sentence else np.zeros(len(toks), dtype=bool)
    resets[0] = True
    plain = [t for t in toks if not (sentence and t == "\n")]
    unknown = sorted({t for t in plain if t not in vocab.stoi})
    if unknown and vocab.unk_id is None:
        what = "character" if vocab.level == "char" else "token"
        raise ValueError(f"the text has {len(unknown)} {what}(s) the model never saw: "
                         + " ".join(repr(u) for u in unknown[:20])
                         + (" ..." if len(unknown) > 20 else "")
                         + ". Remove them from the text or give a text in the model's "
                         "vocabulary (rnnkit info CKPT lists it).")
    ids = np.empty(len(toks), dtype=np.int64)
    if plain:
        ids[~is_nl if sentence else slice(None)] = vocab.encode(plain)
    if sentence:
        assert vocab.start_id is not None
        ids[is_nl] = vocab.start_id
    n_unk = sum(t not in vocab.stoi for t in plain) if unknown else 0
    return EncodedText(toks, ids, resets, vocab.level, n_unk)


# ---- activations -------------------------------------------------------------------------


@dataclass(frozen=True)
class Unit:
    """One recorded unit: ``layer`` (0 = the bottom, as in ``weight_hh_l0``), ``kind`` ("h",
    or "c" for an LSTM's cell state) and ``index`` (0 .. H-1)."""

    layer: int
    kind: str
    index: int

    @property
    def label(self) -> str:
        return f"l{self.layer} {self.kind}[{self.index}]"


@dataclass
class Activations:
    """``values`` (T, U): unit u's value after reading token t. Columns run layer by layer,
    h then c within a layer, units in index order (``units[u]`` names column u)."""

    tokens: list[str]
    values: Array
    units: list[Unit]
    level: str

    def column(self, unit: Unit) -> Array:
        """(T,) the values of one unit."""
        return self.values[:, self.units.index(unit)]

    def column_block(self, layer: int, kind: str) -> Array:
        """(T, H) every unit of one layer's h or c, in index order."""
        cols = [j for j, u in enumerate(self.units) if u.layer == layer and u.kind == kind]
        if not cols:
            raise ValueError(f"no units of layer {layer} kind {kind!r} were recorded")
        return self.values[:, cols]


def _segments(resets: Array, chunk: int) -> list[tuple[int, int]]:
    """[a, b) pieces of at most ``chunk`` tokens, each reset point starting a new piece."""
    T = len(resets)
    starts = sorted(set(np.flatnonzero(resets).tolist()) | {0})
    out = []
    for a, end in zip(starts, [*starts[1:], T], strict=True):
        out += [(s, min(s + chunk, end)) for s in range(a, end, chunk)]
    return out


def record_activations(model: LanguageModel, enc: EncodedText, chunk: int = 1024
                       ) -> Activations:
    """Every unit's value after every token, from the model's own recurrent forward.

    The text goes through ``model.rnn.states`` (inference, all layers at once) in pieces of
    ``chunk`` tokens, the state carried from piece to piece (and restarted at
    ``enc.resets``), so memory is bounded by the chunk, not the text. The top layer's h is
    exactly the output the decoder reads.
    """
    if not isinstance(model, LanguageModel):
        raise TypeError(f"model must be a LanguageModel; got {type(model).__name__}")
    rnn = model.rnn
    if rnn.num_directions != 1:
        raise ValueError("a language model reads left to right; this one is bidirectional")
    chunk = positive_int("chunk", chunk)
    L, H, T = rnn.num_layers, rnn.hidden_size, len(enc.ids)
    kinds = ("h", "c") if rnn.math.has_cell else ("h",)
    out = np.empty((T, L, len(kinds), H), np.float32)
    state: Any = None
    for a, b in _segments(enc.resets, chunk):
        if enc.resets[a]:
            state = None
        x, _ = model._input(enc.ids[a:b, None])                 # (b-a, 1) ids -> input
        hs, cs, state = rnn.states(x, state)                    # (b-a, L, 1, H) each
        out[a:b, :, 0] = hs[:, :, 0]
        if cs is not None:
            out[a:b, :, 1] = cs[:, :, 0]
    units = [Unit(layer, k, i) for layer in range(L) for k in kinds for i in range(H)]
    return Activations(enc.tokens, out.reshape(T, -1), units, enc.level)


# ---- features of the text ----------------------------------------------------------------


@dataclass
class Feature:
    """One value per token: 0/1 for a yes/no feature (``binary``), else a count."""

    name: str
    description: str
    values: Array               # (T,) float64
    binary: bool

    @property
    def present(self) -> bool:
        """False when the feature never changes over the text: no correlation exists."""
        return bool(len(self.values) > 1 and np.ptp(self.values) > 0)

    def coverage(self) -> str:
        if not self.present:
            return "absent"
        return f"{self.values.mean():.1%}" if self.binary else f"mean {self.values.mean():.1f}"


QUOTE_PAIRS = {'"': '"', "\u201c": "\u201d", "\u300c": "\u300d", "\u300e": "\u300f",
               "\u00ab": "\u00bb"}
BRACKET_PAIRS = {"(": ")", "[": "]", "{": "}", "\uff08": "\uff09", "\u3010": "\u3011",
                 "\u300a": "\u300b", "\u3014": "\u3015"}


def _close(stack: list[str], closer: str) -> None:
    """Pop down to the opener that ``closer`` matches; a closer nothing opened is ignored."""
    if closer in stack:
        while stack.pop() != closer:
            pass


_WORD_TOKEN = re.compile(r"\w")


def text_features(tokens: list[str], level: str = "char") -> list[Feature]:
    """The features every token gets, computed in one pass over the text.

    The value at token t describes the text up to and including t (the state the model has
    after reading it): an opening quote is already inside, a closing one already outside.
    Quotes: ``"`` toggles, curly and CJK pairs nest; brackets ``() [] {}`` and their CJK
    forms nest; a closer that opened nothing is ignored; an unclosed quote or bracket ends
    at a blank line (a new paragraph), so one stray mark cannot cover the rest of the text.
    Single quotes are not quotes here: in English they are mostly apostrophes ('tis, o'er).

    ``word_pos`` and ``word_end`` depend on the ``level`` the tokens are of: at char level a
    run of letters/digits is a word, so they are the position in the word and "a word ends
    here"; at word level every token is a whole word or one punctuation mark, so they are the
    words since the last punctuation mark or newline and "punctuation or a newline comes
    next" (a phrase ends here). The descriptions say which.
    """
    if level not in ("char", "word"):
        raise ValueError(f"level must be 'char' or 'word'; got {level!r}")
    T = len(tokens)
    if level == "char":
        is_word = [tok.isalnum() for tok in tokens]
    else:                                      # a word token: letters, digits, _ and inner '
        is_word = [bool(_WORD_TOKEN.match(tok)) for tok in tokens]
    quote, bracket, line_pos, nl_next, caps, word_pos, word_end, para_line = (
        np.zeros(T) for _ in range(8))
    qs: list[str] = []
    bs: list[str] = []
    pos = run = para = 0
    closers_q = set(QUOTE_PAIRS.values())
    closers_b = set(BRACKET_PAIRS.values())
    for t, tok in enumerate(tokens):
        if tok == "\n":
            if t > 0 and tokens[t - 1] == "\n":       # a blank line: a new paragraph
                qs.clear()
                bs.clear()
                para = -1
            pos = 0
            para += 1
        else:
            pos += 1
            for ch in tok:
                if ch == '"' and qs and qs[-1] == '"':      # " closes the " it is inside
                    qs.pop()
                elif ch in QUOTE_PAIRS:
                    qs.append(QUOTE_PAIRS[ch])
                elif ch in closers_q:
                    _close(qs, ch)
                elif ch in BRACKET_PAIRS:
                    bs.append(BRACKET_PAIRS[ch])
                elif ch in closers_b:
                    _close(bs, ch)
        run = run + 1 if is_word[t] else 0
        quote[t], bracket[t], line_pos[t], word_pos[t] = bool(qs), bool(bs), pos, run
        para_line[t] = para
        nl_next[t] = t + 1 < T and tokens[t + 1] == "\n"
        word_end[t] = run > 0 and t + 1 < T and not is_word[t + 1]
    # all-caps lines: the speaker names of the Shakespeare corpus ("ROMEO:")
    ends = [t for t, tok in enumerate(tokens) if tok == "\n"] + [T]        # [a, b): one line
    for a, b in zip([0] + [e + 1 for e in ends[:-1]], ends, strict=True):
        cased = [c for c in "".join(tokens[a:b]) if c.isalpha() and c.lower() != c.upper()]
        if len(cased) >= 2 and all(c.isupper() for c in cased):
            caps[a:b] = 1
    return [
        Feature("quote", 'inside double quotes ("..." or \u201c...\u201d)', quote, True),
        Feature("bracket", "inside brackets ( ), [ ], { }", bracket, True),
        Feature("line_pos", "tokens since the last newline (position in the line)", line_pos,
                False),
        Feature("newline_next", "the next token is a newline (a line ends here)", nl_next,
                True),
        Feature("caps_line", "in an all-caps line (a speaker's name: ROMEO:)", caps, True),
        Feature("word_pos", "letters/digits since the word began (0 outside words)"
                if level == "char" else "words since the last punctuation mark or newline "
                "(0 on punctuation)", word_pos, False),
        Feature("word_end", "a word ends here (the next token is no letter or digit)"
                if level == "char" else "a word before punctuation or a newline (the next "
                "token is no word)", word_end, True),
        Feature("para_line", "lines since the last blank line (line within a speech)",
                para_line, False),
    ]


# ---- correlations ------------------------------------------------------------------------


def _standardize(values: Array) -> Array:
    """Columns to mean 0 and unit RMS (float64); constant columns become 0."""
    z = values.astype(np.float64)
    z -= z.mean(axis=0)
    sd = np.sqrt((z * z).mean(axis=0))
    np.divide(z, sd, out=z, where=sd > 0)
    z[:, sd == 0] = 0.0
    return z


def correlations(values: Array, feature: Array) -> Array:
    """Pearson r of every column of ``values`` (T, U) with ``feature`` (T,): (U,) in [-1, 1].

    A unit that never changes gets 0; a feature that never changes gives all NaN.
    """
    values, feature = np.asarray(values), np.asarray(feature, dtype=np.float64)
    if values.ndim != 2 or feature.shape != (values.shape[0],):
        raise ValueError(f"values must be (T, U) and feature (T,); got {values.shape} and "
                         f"{feature.shape}")
    return _correlate(_standardize(values), feature)


def _correlate(z: Array, feature: Array) -> Array:
    f = feature - feature.mean()
    sd = np.sqrt((f * f).mean())
    if not sd > 0:
        return np.full(z.shape[1], np.nan)
    return np.clip(z.T @ (f / sd) / len(f), -1.0, 1.0)


@dataclass
class FeatureUnits:
    """A feature and its top units, strongest |r| first (empty when the feature is absent).
    ``control`` is the best |r| any unit of the untrained model reached (None: no control)."""

    feature: Feature
    units: list[tuple[Unit, float]] = field(default_factory=list)
    control: float | None = None


def top_units(acts: Activations, features: list[Feature], k: int = 3,
              control: Activations | None = None) -> list[FeatureUnits]:
    """For each feature, the ``k`` units with the largest |correlation| (r signed)."""
    k = positive_int("k", k)
    z = _standardize(acts.values)
    zc = None if control is None else _standardize(control.values)
    found = []
    for f in features:
        if len(f.values) != len(acts.tokens):
            raise ValueError(f"feature {f.name!r} has {len(f.values)} values for "
                             f"{len(acts.tokens)} tokens")
        if not f.present:
            found.append(FeatureUnits(f))
            continue
        r = _correlate(z, f.values)
        best = np.argsort(-np.abs(r), kind="stable")[:k]
        ctrl = None if zc is None else float(np.abs(_correlate(zc, f.values)).max())
        found.append(FeatureUnits(f, [(acts.units[i], float(r[i])) for i in best], ctrl))
    return found


def neurons_table(found: list[FeatureUnits]) -> str:
    """One row per feature: how common it is, its top units with r, the untrained control."""
    k = max((len(fu.units) for fu in found), default=0)
    has_ctrl = any(fu.control is not None for fu in found)
    head = (f"{'feature':<13} {'coverage':>10}  "
            + f"{'top units by |r| (layer kind[index] r)':<{max(k * 18, 20)}}"
            + ("  untrained" if has_ctrl else ""))
    rows = [head]
    for fu in found:
        if not fu.units:
            rows.append(f"{fu.feature.name:<13} {'absent':>10}  (not in this text)")
            continue
        cells = "".join(f"{u.label:>11} {r:+.2f} " for u, r in fu.units)
        ctrl = f"  {fu.control:9.2f}" if fu.control is not None else ""
        rows.append(f"{fu.feature.name:<13} {fu.feature.coverage():>10}  "
                    f"{cells:<{max(k * 18, 20)}}{ctrl}")
    rows.append("")
    rows += [f"  {fu.feature.name:<13} {fu.feature.description}" for fu in found]
    return "\n".join(rows)


# ---- span queries (LSTMVis) ---------------------------------------------------------------


@dataclass
class SpanMatch:
    """Tokens ``start .. end-1`` where every selected unit is on."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start


def select_units(values: Array, start: int, end: int, threshold: float, pad: int = 1) -> Array:
    """LSTMVis's select query (Strobelt et al., 2017): the units (column indices of ``values``
    (T, H)) that are on (value >= ``threshold``) at every token ``start .. end-1`` and off
    (value < ``threshold``) at the ``pad`` tokens before and the ``pad`` after, where the text
    has them. Sorted by index."""
    v = np.asarray(values)
    if v.ndim != 2:
        raise ValueError(f"values must be (T, H); got shape {v.shape}")
    T = v.shape[0]
    start = check_scalar(start, f"span start (in a text of {T} tokens)", int, min_val=0,
                         max_val=T - 1)
    end = check_scalar(end, f"span end (after start {start}, at most {T})", int,
                       min_val=start + 1, max_val=T)
    threshold = check_scalar(threshold, "threshold", float)
    pad = check_scalar(pad, "pad", int, min_val=0)
    on = (v[start:end] >= threshold).all(axis=0)
    around = np.r_[max(start - pad, 0):start, end:min(end + pad, T)]
    if around.size:
        on &= (v[around] < threshold).all(axis=0)
    return np.flatnonzero(on)


def match_spans(values: Array, units: Array | list[int], threshold: float,
                min_length: int = 1) -> list[SpanMatch]:
    """LSTMVis's match query: every maximal run of tokens where all ``units`` (columns of
    ``values`` (T, H)) are on (>= ``threshold``), at least ``min_length`` long, in text order.
    No units: no matches."""
    v = np.asarray(values)
    idx = np.asarray(units, dtype=np.int64).reshape(-1)
    threshold = check_scalar(threshold, "threshold", float)
    min_length = check_scalar(min_length, "min_length", int, min_val=1)
    if v.ndim != 2 or (idx.size and (idx.min() < 0 or idx.max() >= v.shape[1])):
        raise ValueError(f"units must index the columns of values (T, H) = {v.shape}")
    if idx.size == 0:
        return []
    on = (v[:, idx] >= threshold).all(axis=1)
    edges = np.flatnonzero(np.diff(np.r_[0, on.astype(np.int8), 0]))
    return [SpanMatch(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)
            if b - a >= min_length]


# ---- pictures ----------------------------------------------------------------------------


LEVELS = 8     # colour steps each side of zero


def _scaled(v: Array) -> Array:
    """A unit's values divided by its largest |value|: in [-1, 1] (all zeros stay zeros)."""
    m = float(np.abs(v).max()) if len(v) else 0.0
    return v / m if m > 0 else v


def _levels(v: Array) -> Array:
    """Values -> integers in [-LEVELS, LEVELS], scaled by the largest |value|."""
    return np.rint(_scaled(v) * LEVELS).astype(np.int64)


def _shown(tok: str) -> str:
    return "\u21b5" if tok == "\n" else tok


def display_pieces(tokens: list[str], level: str) -> list[str]:
    """How each token is shown in running text: a newline as "\u21b5" and a line break; at word
    level a leading space wherever rnnkit's ``detokenize`` puts one. Joined, the pieces are
    the text (with the newline marks)."""
    out = []
    for t, tok in enumerate(tokens):
        piece = _shown(tok) + ("\n" if tok == "\n" else "")
        prev = tokens[t - 1] if t else ""
        if level == "word" and t and detokenize([prev, tok], "word") != prev + tok:
            piece = " " + piece                   # the spacing rnnkit's detokenize uses
        out.append(piece)
    return out


def _span(cls: str, text: str) -> str:
    return f'<span class="{cls}">{_html.escape(text)}</span>' if cls else _html.escape(text)


def render_html(acts: Activations, found: list[FeatureUnits], title: str = "rnnkit lab neurons"
                ) -> str:
    """A self-contained HTML page: for each top unit, the text coloured by its value (red
    positive, blue negative, scaled by the unit's largest |value| in the text), positions
    where a yes/no feature holds underlined. Every token is HTML-escaped."""
    css = ["body{font-family:sans-serif;margin:1em 2em}",
           "pre{white-space:pre-wrap;font-family:monospace;line-height:1.5;"
           "border:1px solid #ccc;padding:.5em;max-height:30em;overflow:auto}",
           ".u{text-decoration:underline}"]
    for i in range(1, LEVELS + 1):
        a = i / LEVELS * 0.85
        css.append(f".p{i}{{background:rgba(220,30,30,{a:.3f})}}")
        css.append(f".n{i}{{background:rgba(30,80,220,{a:.3f})}}")
    e = _html.escape
    parts = ["<!DOCTYPE html>", "<html><head><meta charset=\"utf-8\">",
             f"<title>{e(title)}</title><style>{''.join(css)}</style></head><body>",
             f"<h1>{e(title)}</h1>",
             "<p>Each block is one unit: the text coloured by the unit's value after each "
             "token (red positive, blue negative, the strongest colour at the unit's largest "
             "|value| in this text). Underlined: where the feature holds.</p>"]
    pieces = display_pieces(acts.tokens, acts.level)
    for fu in found:
        if not fu.units:
            parts.append(f"<h2>{e(fu.feature.name)}: absent</h2><p>{e(fu.feature.description)}"
                         " never changes in this text.</p>")
            continue
        for unit, r in fu.units:
            v = acts.column(unit)
            lv = _levels(v)
            mark = fu.feature.values > 0 if fu.feature.binary else np.zeros(len(v), bool)
            ctrl = "" if fu.control is None else f"; untrained model's best |r| {fu.control:.2f}"
            parts.append(f"<h2>{e(fu.feature.name)} &mdash; {e(unit.label)}, r = {r:+.2f}</h2>"
                         f"<p>{e(fu.feature.description)}; coverage "
                         f"{e(fu.feature.coverage())}; max |value| "
                         f"{float(np.abs(v).max()):.3g}{e(ctrl)}</p><pre>")
            buf = []
            run_cls, run_text = "", ""
            for t, piece in enumerate(pieces):
                cls = [f"{'p' if lv[t] > 0 else 'n'}{abs(lv[t])}"] if lv[t] else []
                if mark[t]:
                    cls.append("u")
                c = " ".join(cls)
                if t and c != run_cls:                  # one span per run of one colour
                    buf.append(_span(run_cls, run_text))
                    run_text = ""
                run_cls, run_text = c, run_text + piece
            buf.append(_span(run_cls, run_text))
            parts.append("".join(buf) + "</pre>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def pick_stretch(tokens: list[str], found: list[FeatureUnits], width: int) -> int:
    """Where the PNG's window of ``width`` tokens starts: the start of a line whose window
    shows the most yes/no features changing (the earliest on ties)."""
    T = len(tokens)
    shown = [fu.feature.values for fu in found if fu.units and fu.feature.binary]
    if width >= T or not shown:
        return 0
    starts = [0] + [t + 1 for t in range(T - width) if tokens[t] == "\n"]
    best, best_score = 0, (-1, -1)
    for s in starts:
        w = [v[s: s + width] > 0 for v in shown]
        # most features changing, then the most positions on the rarer side of each
        score = (sum(int(0 < m.sum() < width) for m in w),
                 sum(min(int(m.sum()), width - int(m.sum())) for m in w))
        if score > best_score:
            best, best_score = s, score
    return best


def render_png(acts: Activations, found: list[FeatureUnits], width: int = 200,
               panels: int = 2) -> bytes:
    """PNG bytes of a heatmap: the strongest unit of each present feature (rows) over a
    stretch of ``width`` tokens cut into ``panels`` strips, each token written under its
    column, dots where a yes/no feature holds. Values scaled per unit by its largest |value|
    over the whole text. Needs matplotlib (imported here, Agg backend)."""
    import warnings

    plt = pyplot()
    rows = [(fu, *fu.units[0]) for fu in found if fu.units]
    T = len(acts.tokens)
    if not rows:
        raise ValueError("no feature of the list occurs in this text: nothing to plot")
    width = min(width, T)
    s0 = pick_stretch(acts.tokens, found, width)
    per = -(-width // panels)
    panels = -(-width // per)
    grid = np.array([_scaled(acts.column(unit)) for _, unit, _ in rows])      # (R, T)
    R = len(rows)
    word = acts.level == "word"
    fig, axes = plt.subplots(panels, 1, figsize=(min(0.12 * per, 40) + 3.5,
                                                 panels * (0.32 * R + (1.2 if word else 0.6))
                                                 + 0.6), squeeze=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")        # glyphs the font lacks (CJK) draw as boxes
        for p in range(panels):
            ax = axes[p, 0]
            a, b = s0 + p * per, min(s0 + (p + 1) * per, s0 + width)
            ax.imshow(grid[:, a:b], cmap="bwr", vmin=-1, vmax=1, aspect="auto",
                      interpolation="nearest")
            for i, (fu, _, _) in enumerate(rows):
                if fu.feature.binary:
                    on = np.flatnonzero(fu.feature.values[a:b] > 0)
                    ax.scatter(on, np.full(len(on), i - 0.3), s=3, c="k", marker="s")
            ax.set_xticks(np.arange(b - a))
            ax.set_xticklabels(["\u2423" if t == " " else _shown(t) for t in acts.tokens[a:b]],
                               fontsize=7, family="monospace", rotation=90 if word else 0)
            ax.tick_params(axis="x", length=0)
            ax.set_yticks(np.arange(R))
            ax.set_yticklabels([f"{fu.feature.name}: {u.label} r={r:+.2f}"
                                for fu, u, r in rows], fontsize=7)
            ax.set_xlim(-0.5, per - 0.5)
        axes[0, 0].set_title(f"strongest unit per feature, tokens {s0}..{s0 + width - 1} (red "
                             "+, blue -, per-unit scale; dots: feature holds)", fontsize=9)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


# ---- rnnkit lab neurons ------------------------------------------------------------------


def add_commands(sub: Any) -> None:
    n = sub.add_parser("neurons", help="which hidden units of a trained model track quotes, "
                       "brackets, line ends, ...",
                       description="Run a trained language model over a text, record every "
                       "unit (h per layer, and c for an LSTM), and rank the units by their "
                       "correlation with features of the text. Prints a table, writes an HTML "
                       "page of the text coloured by each top unit and a PNG heatmap.")
    n.add_argument("run", help="run directory of rnnkit train or a .safetensors file")
    n.add_argument("--text", default=None, help="UTF-8 text to read [default: the checkpoint's "
                   "validation part of its corpus, split as rnnkit train split it]")
    n.add_argument("--start", type=nonneg_int_arg, default=0,
                   help="skip this many tokens of the text first")
    n.add_argument("--length", type=positive_int_arg, default=4000,
                   help="tokens to read (characters or words, the model's level)")
    n.add_argument("--top", type=positive_int_arg, default=3, help="units shown per feature")
    n.add_argument("--png-tokens", type=positive_int_arg, default=200,
                   help="tokens shown in the heatmap")
    add_seed_and_out(n, "neurons", "the untrained control model",
                     "neurons.html and neurons.png", cmd_lab_neurons)


def cmd_lab_neurons(args: Any) -> int:
    """Which units track which features of the text: table, HTML, PNG."""
    from ..rundir import load_language_model
    from ..text import read_text
    from ..train import validation_text

    out = args.out
    html_path, png_path = out / "neurons.html", out / "neurons.png"
    model, vocab, meta = load_language_model(args.run)
    if args.text is not None:
        text, source = read_text(args.text), args.text
    else:
        text, source = validation_text(meta, vocab.level)
    try:
        enc = encode_text(vocab, text, args.start, args.length)
    except ValueError as e:
        where = f"--text {args.text}" if args.text is not None else source
        raise UsageError(f"{where}: {e}") from None
    acts = record_activations(model, enc)
    control = record_activations(LanguageModel(model.config, rng=args.seed), enc)
    found = top_units(acts, text_features(enc.tokens, enc.level), args.top, control)
    if not any(fu.units for fu in found):
        raise UsageError(f"none of the features occurs in these {len(enc.tokens)} tokens; give a "
                       "longer --length or another --text")
    cfg = model.config
    unit = "char" if vocab.level == "char" else "token"
    page = render_html(acts, found, f"rnnkit lab neurons: {args.run}")
    png = render_png(acts, found, width=args.png_tokens)
    unk = f", {enc.unknown} as <unk>" if enc.unknown else ""
    print(f"{printable(args.run, keep='')}: {cfg.num_layers} x {cfg.hidden_size} "
          f"{cfg.cell.upper()}, {vocab.level} level; {len(acts.units)} units "
          f"({'h and c' if cfg.cell == 'lstm' else 'h'} of every layer)")
    print(f"text: {printable(source, keep='')}, {unit}s {args.start}.."
          f"{args.start + len(enc.tokens) - 1} ({len(enc.tokens)} {unit}s{unk})")
    print("r: Pearson correlation of the unit's value after each token with the feature; "
          "untrained: the best |r| of any unit of an untrained model of the same shape\n")
    print(neurons_table(found))
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(html_path, page.encode("utf-8"))
    write_atomic(png_path, png)
    print(f"\nhtml: {printable(html_path, keep='')}\nplot: {printable(png_path, keep='')}")
    return 0
