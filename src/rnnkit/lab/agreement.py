"""Subject-verb agreement across a clause: the chapter's "The cat, which ..., was full" as data.

Each sentence is a subject, a relative clause of L words, and then the place where the verb
goes; the label is the verb, ``was`` (0) for a singular subject or ``were`` (1) for a plural
one::

    L = 0:   the cat                                          -> was
    L = 4:   the cats , which already chased the dog ,        -> were
    L = 9:   the dog , which ate near the mice and often saw the birds ,   -> was

The clause is built from chunks until it holds exactly L words: a past-tense verb (``ate``,
``saw``, ... : no number to agree with), an adverb, ``and``, an object ``the NOUN`` or a
prepositional phrase ``near the NOUN``. Its nouns are ATTRACTORS: drawn from the same nouns as
the subjects (plus a few inanimate ones), singular or plural with probability 1/2 each,
independently of the subject. Every clause of L >= 3 words holds at least one of them (a clause
the grammar builds without a noun is drawn again), so the shortcut "copy the number of the last
noun" is right half the time at every L >= 3. A clause of L <= 2 words cannot hold a noun
(``VERB``, ``ADV VERB``, ``VERB ADV``): there the last noun IS the subject and the shortcut is
100 % right. At every L >= 1 the network must carry the subject's number from the subject
itself (time step 1, 5 or 8, after a prefix of 0, 1 or 2 nouns) across the whole clause (L + 3
steps to the verb); from L = 3 on it must also ignore the nouns it reads on the way.

A recurrent classifier reads the tokens and predicts the verb from its last hidden state, every
cell with the same number of parameters (:func:`rnnkit.lab._common.hidden_for_budget`).

What we measured (``rnnkit lab agreement``, 2000 steps of 32 sentences, Adam 3e-3): GRU and
LSTM are right on 100 % of the test sentences at every length up to 40. The tanh RNN does not
fade gradually with L: past a few words its accuracy is flat, at chance for seeds 0 and 1 and
about 0.83 at every L for seed 2 (seed 0 is at chance already at L = 1-2, where the last-noun
shortcut would do). When it builds a "latch" (recurrent weights past spectral radius 1: a
bistable state that holds one bit at any length) it is right at EVERY length: with clauses up
to 20 words, or at lr 1e-3 for 4000 steps (seed 0), 100 % everywhere. Without the nouns before
the subject (``prefix=False``) the subject is always the first noun; the RNN latches it for
seeds 1 and 2 (100 % up to 40) but not for seed 0. The gates make the memory easy to FIND.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import checks
from ..classify import SequenceClassifier
from ..files import write_figure
from ._common import (
    CELL_NAMES,
    Curve,
    add_remember_bias,
    add_seed_and_out,
    cell_parameters,
    check_cells,
    hidden_for_budget,
    pyplot,
    training,
    write_plot,
)

Array = np.ndarray

# ---- the vocabulary ------------------------------------------------------------------------

# (singular, plural) pairs; the animate ones can be subjects, all of them attractors
ANIMATE = (("cat", "cats"), ("dog", "dogs"), ("bird", "birds"), ("mouse", "mice"),
           ("child", "children"), ("teacher", "teachers"), ("farmer", "farmers"),
           ("horse", "horses"), ("fox", "foxes"), ("girl", "girls"))
INANIMATE = (("tree", "trees"), ("box", "boxes"), ("garden", "gardens"), ("house", "houses"))
VERBS = ("ate", "saw", "chased", "liked", "followed", "watched", "found", "met")
ADVERBS = ("already", "often", "never", "quickly", "slowly")
LATE_ADVERBS = ("often", "quickly", "slowly", "again")          # may close a verb phrase
PREPOSITIONS = ("near", "behind", "with", "under")
LABELS = ("was", "were")

PAD = "<pad>"
VOCAB: tuple[str, ...] = (PAD, "the", ",", "which", "and",
                          *(s for s, _ in ANIMATE + INANIMATE),
                          *(p for _, p in ANIMATE + INANIMATE),
                          *VERBS, *ADVERBS, "again", *PREPOSITIONS)
STOI = {w: i for i, w in enumerate(VOCAB)}
_NOUNS = ANIMATE + INANIMATE
# ids of each noun by number: _NOUN_IDS[n][k] is noun k in number n (0 singular, 1 plural)
_NOUN_IDS = np.array([[STOI[pair[n]] for pair in _NOUNS] for n in (0, 1)])
_SUBJECT_IDS = _NOUN_IDS[:, :len(ANIMATE)]
_VERB_IDS = np.array([STOI[w] for w in VERBS])
_ADVERB_IDS = np.array([STOI[w] for w in ADVERBS])
_LATE_IDS = np.array([STOI[w] for w in LATE_ADVERBS])
_PREP_IDS = np.array([STOI[w] for w in PREPOSITIONS])
_THE, _COMMA, _WHICH, _AND = STOI["the"], STOI[","], STOI["which"], STOI["and"]
NUMBER = {STOI[pair[n]]: n for pair in _NOUNS for n in (0, 1)}   # noun id -> 0/1


@dataclass
class Sentences:
    """A padded, time-major batch of agreement sentences.

    ids (T, B) int64, token ids padded with 0 (``<pad>``) after each sentence's end;
    lengths (B,) tokens per sentence: prefix + 2 for L = 0, prefix + L + 5 otherwise;
    labels (B,) 0 = was, 1 = were (the subject's number); clause (B,) L in words;
    attractors (B,) how many nouns (prefix and clause) have the number opposite to the
    subject's; subject (B,) the subject's time step.
    """

    ids: Array
    lengths: Array
    labels: Array
    clause: Array
    attractors: Array
    subject: Array

    def text(self, b: int) -> str:
        """Sentence b as words, with its verb: ``the cats , which saw the dog , were``."""
        words = [VOCAB[i] for i in self.ids[: self.lengths[b], b]]
        return " ".join([*words, LABELS[self.labels[b]]])


def _clause(rng: np.random.Generator, L: int) -> list[int]:
    """Exactly L word ids of a small grammar of verb phrases joined by "and".

    Start: ``[ADV] VERB``; then, until L words, any move that fits and leaves a length that
    can still be filled: ``ADV`` (a trailing adverb), ``the NOUN`` (right after a verb),
    ``PREP the NOUN``, ``and [ADV] VERB``. After a trailing adverb only ``and [ADV] VERB`` may
    follow. Each noun's number is a coin flip, independent of the subject. For L >= 3 a clause
    without a noun is drawn again (at L = 3, 1 in 4 draws has one).
    """
    for _ in range(1000):
        out = _clause_draw(rng, L)
        if L < 3 or any(w in NUMBER for w in out):
            return out
    raise RuntimeError(f"no clause of {L} words with a noun in 1000 draws")   # p < 0.75^1000


def _clause_draw(rng: np.random.Generator, L: int) -> list[int]:
    """One draw of the grammar of :func:`_clause`, with or without a noun."""

    def noun() -> list[int]:
        return [_THE, int(_NOUN_IDS[rng.integers(2), rng.integers(len(_NOUNS))])]

    def word(ids: Array) -> int:
        return int(ids[rng.integers(len(ids))])

    out = [word(_ADVERB_IDS), word(_VERB_IDS)] if L >= 2 and rng.integers(2) else \
        [word(_VERB_IDS)]
    state = "verb"                                     # verb | object | adverb
    while len(out) < L:
        left = L - len(out)
        # (words, next state); a move into "adverb" must leave 0 or >= 2 words
        moves = [(2, "verb"), (3, "verb")]             # and VERB, and ADV VERB
        if state != "adverb":
            moves += [(1, "adverb"), (3, "object")]    # ADV, PREP the NOUN
            if state == "verb":
                moves.append((2, "object"))            # the NOUN
        moves = [(n, st) for n, st in moves if n <= left and
                 not (st == "adverb" and left - n == 1)]
        n, nxt = moves[rng.integers(len(moves))]
        if nxt == "verb":
            out += [_AND, *([word(_ADVERB_IDS)] if n == 3 else []), word(_VERB_IDS)]
        elif nxt == "adverb":
            out.append(word(_LATE_IDS))
        else:
            out += ([word(_PREP_IDS)] if n == 3 else []) + noun()
        state = nxt
    return out


def _prefix(rng: np.random.Generator) -> list[int]:
    """0, 1 or 2 nouns before the subject (each with probability 1/3): nothing,
    ``PREP the NOUN ,`` or ``PREP the NOUN and the NOUN ,``; each noun's number a coin flip."""
    k = int(rng.integers(3))
    if k == 0:
        return []
    nouns = [int(_NOUN_IDS[rng.integers(2), rng.integers(len(_NOUNS))]) for _ in range(k)]
    words = [int(_PREP_IDS[rng.integers(len(_PREP_IDS))]), _THE, nouns[0]]
    if k == 2:
        words += [_AND, _THE, nouns[1]]
    return [*words, _COMMA]


def make_sentences(rng: np.random.Generator, clause_lengths: Any, *, prefix: bool = True
                   ) -> Sentences:
    """One sentence per entry of ``clause_lengths`` (ints >= 0), all words drawn from ``rng``.

    Sentence with clause length L::

        [PREFIX] the SUBJECT                          (L = 0)
        [PREFIX] the SUBJECT , which w_1 ... w_L ,    (L > 0: the verb is L + 3 steps away)

    Singular and plural subjects are equally likely. With ``prefix`` (the default) a third of
    the sentences open with nothing, a third with ``near the NOUN ,`` and a third with
    ``near the NOUN and the NOUN ,`` (any preposition, nouns of random number), so the subject
    is not always the first noun: without it, "latch the first noun you read and hold it" solves
    the task at every length, a shortcut a tanh RNN finds (see the module's notes).
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator; got {type(rng).__name__}. "
                        "Use np.random.default_rng(seed).")
    L = np.asarray(clause_lengths)
    if L.ndim != 1 or L.size == 0 or L.dtype.kind not in "iu" or L.min() < 0:
        raise ValueError(f"clause_lengths must be a non-empty 1-d array of ints >= 0; got "
                         f"{clause_lengths!r}")
    B = L.size
    labels = rng.integers(2, size=B).astype(np.int64)
    attractors = np.zeros(B, np.int64)
    subject = np.zeros(B, np.int64)
    sentences = []
    for b in range(B):
        words = _prefix(rng) if prefix else []
        subject[b] = len(words) + 1
        words += [_THE, int(_SUBJECT_IDS[labels[b], rng.integers(len(ANIMATE))])]
        if L[b] > 0:
            words += [_COMMA, _WHICH, *_clause(rng, int(L[b])), _COMMA]
        attractors[b] = sum(NUMBER.get(w, labels[b]) != labels[b] for w in words)
        sentences.append(words)
    lengths = np.array([len(w) for w in sentences], np.int64)
    ids = np.zeros((int(lengths.max()), B), np.int64)                 # (T, B), 0 = <pad>
    for b, words in enumerate(sentences):
        ids[: len(words), b] = words
    return Sentences(ids, lengths, labels, L.astype(np.int64), attractors, subject)


# ---- training and evaluation ---------------------------------------------------------------


@dataclass
class AgreementResult:
    """One cell's run: its training curve (loss per logged step) and held-out accuracy at
    every clause length 0..max_clause."""

    cell: str
    hidden_size: int
    parameters: int                  # recurrent layer + head (what the budget counts)
    total_parameters: int            # with the embedding (the same for every cell)
    curve: Curve
    clause_lengths: list[int] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def bucket_accuracy(self, lo: int, hi: int) -> float:
        """Mean accuracy over clause lengths lo..hi (each length weighs the same)."""
        acc = [a for L, a in zip(self.clause_lengths, self.accuracy, strict=True)
               if lo <= L <= hi]
        return float(np.mean(acc)) if acc else float("nan")


def evaluate(model: SequenceClassifier, rng: np.random.Generator, max_clause: int,
             per_length: int = 200, *, prefix: bool = True) -> list[float]:
    """Accuracy on ``per_length`` fresh sentences at each clause length 0..max_clause."""
    acc = []
    for L in range(max_clause + 1):
        s = make_sentences(rng, np.full(per_length, L), prefix=prefix)
        acc.append(float(np.mean(model.predict(s.ids, s.lengths) == s.labels)))
    return acc


# the named random streams of a run, [seed, STREAM] (see train_agreement)
TRAIN_STREAM, TEST_STREAM, EXAMPLE_STREAM = 100, 200, 300


def check_agreement_settings(cells: list[str] | tuple[str, ...], *, max_clause: int = 40,
                             steps: int = 2000, budget: int = 6000, batch: int = 32,
                             embedding_dim: int = 16, eval_per_length: int = 200,
                             log_every: int = 100, seed: int = 0) -> tuple[str, ...]:
    """Validate the settings of :func:`train_agreement` for every cell of ``cells`` (the budget
    must fit one hidden unit of each) before any training; returns the cells."""
    cells = check_cells(tuple(cells))
    for name, v in (("max_clause", max_clause), ("steps", steps), ("budget", budget),
                    ("batch", batch), ("embedding_dim", embedding_dim),
                    ("eval_per_length", eval_per_length), ("log_every", log_every),
                    ("seed", seed)):
        checks.check_scalar(v, name, int, min_val=0 if name in ("max_clause", "seed") else 1)
    for cell in cells:
        hidden_for_budget(cell, embedding_dim, 2, budget)      # raises if not one unit fits
    return cells


def train_agreement(cell: str, *, max_clause: int = 40, steps: int = 2000,
                    budget: int = 6000, batch: int = 32, lr: float = 3e-3,
                    embedding_dim: int = 16, clip: float = 1.0, forget_bias: float = 0.0,
                    prefix: bool = True, seed: int = 0, eval_per_length: int = 200,
                    log_every: int = 100) -> AgreementResult:
    """Train one ``SequenceClassifier(cell, pooling="last")`` on clauses of uniformly random
    length in [0, max_clause], then measure held-out accuracy per clause length.

    The hidden size is the largest whose recurrent layer + linear head fit ``budget``
    parameters (a ``ValueError`` if not even one unit fits), so the cells differ in structure,
    not size. Adam at ``lr``, the gradient's global norm clipped to ``clip``. ``forget_bias``
    is added to the bias of the gate that keeps the old state, the LSTM's forget gate and the
    GRU's update gate (:func:`~rnnkit.lab._common.add_remember_bias`, Gers et al.'s
    remember-by-default; the tanh RNN has none); 0 keeps PyTorch's initialisation.

    Random streams, all named by ``seed`` (``np.random.default_rng([seed, ...])``): the
    weights by ``[seed, cell index, 0]`` (cell index in ``CELL_NAMES``); the training
    sentences by ``[seed, 100]`` and the test sentences by ``[seed, 200]``, the same for every
    cell, so every cell trains on the same sentences and is scored on the same test set. The
    streams are independent: no seed's test set is another seed's training data.
    ``prefix`` as in :func:`make_sentences`.
    """
    if cell not in CELL_NAMES:
        raise ValueError(f"cell must be one of {CELL_NAMES}; got {cell!r}")
    check_agreement_settings([cell], max_clause=max_clause, steps=steps, budget=budget,
                             batch=batch, embedding_dim=embedding_dim,
                             eval_per_length=eval_per_length, log_every=log_every, seed=seed)
    H = hidden_for_budget(cell, embedding_dim, 2, budget)
    model = SequenceClassifier(2, vocab_size=len(VOCAB), embedding_dim=embedding_dim,
                               hidden_size=H, cell=cell, pooling="last",
                               rng=np.random.default_rng([seed, CELL_NAMES.index(cell), 0]))
    add_remember_bias(model.rnn, cell, forget_bias)
    data_rng = np.random.default_rng([seed, TRAIN_STREAM])
    test_rng = np.random.default_rng([seed, TEST_STREAM])
    curve = Curve(cell, H, cell_parameters(cell, embedding_dim, H, 2))

    def train_step() -> float:
        s = make_sentences(data_rng, data_rng.integers(max_clause + 1, size=batch),
                           prefix=prefix)
        logits, cache = model.forward(s.ids, s.lengths)
        loss, dlogits = model.loss(logits, s.labels)
        model.backward(dlogits, cache)
        return loss

    t0 = time.perf_counter()
    for step, window in training(model, train_step, steps=steps, lr=lr, clip=clip,
                                 every=log_every):
        curve.add(step, float(np.mean(window)))
    curve.seconds = time.perf_counter() - t0
    acc = evaluate(model, test_rng, max_clause, eval_per_length, prefix=prefix)
    return AgreementResult(cell, H, curve.parameters, model.num_parameters(), curve,
                           list(range(max_clause + 1)), acc, time.perf_counter() - t0)


def buckets(max_clause: int, width: int = 5) -> list[tuple[int, int]]:
    """Clause-length buckets for the table: 0 alone (no clause), then 1-5, 6-10, ..."""
    return [(0, 0)] + [(lo, min(lo + width - 1, max_clause))
                       for lo in range(1, max_clause + 1, width)]


def agreement_table(results: list[AgreementResult], width: int = 5) -> str:
    """Rows: clause-length buckets; columns: cells; entries: held-out accuracy."""
    max_clause = max(r.clause_lengths[-1] for r in results)
    rows = ["clause " + "".join(f"{r.cell:>8}" for r in results)]
    for lo, hi in buckets(max_clause, width):
        name = f"{lo}" if lo == hi else f"{lo}-{hi}"
        rows.append(f"{name:>6} " + "".join(f"{r.bucket_accuracy(lo, hi):>8.3f}"
                                           for r in results))
    return "\n".join(rows)


def plot_agreement(results: list[AgreementResult], png: str | Path, title: str = "") -> None:
    """Held-out accuracy against clause length, one line per cell; chance (0.5) dashed."""
    fig, ax = pyplot().subplots(figsize=(7, 4))
    styles = ["-", "--", ":"]                  # gated cells often overlap at 100 %: keep
    for k, r in enumerate(results):            # every line visible
        ax.plot(r.clause_lengths, r.accuracy, marker="ox^"[k % 3], ms=3, ls=styles[k % 3],
                label=f"{r.cell} (H={r.hidden_size}, {r.parameters:,} p)")
    ax.axhline(0.5, color="k", ls="--", lw=1, label="chance 0.5")
    ax.set_ylim(0.3, 1.02)
    ax.set_xlabel("clause length L (words between 'which' and ',')")
    ax.set_ylabel("held-out accuracy (was / were)")
    ax.set_title(title or "subject-verb agreement across a clause")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    write_figure(png, fig)


# ---- rnnkit lab agreement ------------------------------------------------------------------


def add_commands(sub: Any) -> None:
    a = sub.add_parser("agreement", help="was/were after a long clause: RNN vs GRU vs LSTM")
    a.add_argument("--cells", nargs="+", choices=CELL_NAMES, default=list(CELL_NAMES),
                   help="cells to train, each with the same parameter budget")
    a.add_argument("--max-clause", type=checks.nonneg_int_arg, default=40,
                   help="longest clause in words (training and test lengths 0..max)")
    a.add_argument("--steps", type=checks.positive_int_arg, default=2000,
                   help="training steps per cell")
    a.add_argument("--budget", type=checks.positive_int_arg, default=6000,
                   help="parameters of recurrent layer + head, the same for every cell")
    a.add_argument("--batch", type=checks.positive_int_arg, default=32,
                   help="sentences per step")
    a.add_argument("--lr", type=checks.float_arg(0, include_boundaries="neither"), default=3e-3,
                   help="Adam's lr")
    a.add_argument("--embedding-dim", type=checks.positive_int_arg, default=16,
                   help="word embedding size")
    a.add_argument("--forget-bias", type=checks.float_arg(), default=0.0,
                   help="added to the LSTM forget / GRU update gate bias at initialisation")
    a.add_argument("--no-prefix", dest="prefix", action="store_false",
                   help="no nouns before the subject (it is then always the first noun)")
    a.add_argument("--eval", type=checks.positive_int_arg, default=200, dest="eval_per_length",
                   help="held-out sentences per clause length")
    add_seed_and_out(a, "agreement", "weights and sentences", "the plot, agreement.png",
                     cmd_lab_agreement)


def cmd_lab_agreement(args: Any) -> int:
    """Train each cell at the same budget, print accuracy per clause length, write the PNG.

    Everything (the output directory, every cell's budget, the other settings) is checked
    before anything is printed: a bad setting prints one ``error: ...`` line and nothing else."""
    kw = {"max_clause": args.max_clause, "steps": args.steps, "budget": args.budget,
          "batch": args.batch, "embedding_dim": args.embedding_dim,
          "eval_per_length": args.eval_per_length, "seed": args.seed}
    cells = check_agreement_settings(args.cells, **kw)
    start = time.perf_counter()
    example = make_sentences(np.random.default_rng([args.seed, EXAMPLE_STREAM]),
                             [min(args.max_clause, 6)], prefix=args.prefix)
    print(f"agreement: was / were after a clause of L = 0..{args.max_clause} words, e.g. "
          f"'{example.text(0)}'")
    print(f"{args.steps} steps x {args.batch} sentences per cell | adam lr {args.lr:g}, clip 1 | "
          f"budget {args.budget:,} parameters (recurrent layer + head) | embedding "
          f"{args.embedding_dim} | prefix {'on' if args.prefix else 'off'} | forget bias "
          f"{args.forget_bias:g} | seed {args.seed}")
    results = []
    for cell in cells:
        r = train_agreement(cell, lr=args.lr, forget_bias=args.forget_bias, prefix=args.prefix,
                            **kw)
        print(f"{cell:>4}: H={r.hidden_size}, {r.parameters:,} parameters "
              f"({r.total_parameters:,} with the embedding) | final train loss "
              f"{r.curve.final:.4f} | {r.seconds:.1f} s", flush=True)
        results.append(r)
    print(f"\nheld-out accuracy by clause length ({args.eval_per_length} sentences per length; "
          "chance 0.5):")
    print(agreement_table(results) + "\n")
    write_plot(lambda png: plot_agreement(results, png), args.out, "agreement.png")
    print(f"total {time.perf_counter() - start:.0f} s")
    return 0
