"""Generate text from an rnnkit export with onnxruntime and NumPy only (no rnnkit, no PyTorch).

    rnnkit export runs/shakespeare shakespeare-lstm
    python examples/onnx_generate.py shakespeare-lstm --prime "ROMEO:" --length 300

It reads three files of the export: ``model.onnx`` (tokens (T, B) int64 and the initial states
in; logits (T, B, V) and the final states out), ``vocab.json`` (the tokens in id order) and
``config.json`` (how text becomes tokens). The prime runs through the graph in one call; then
each new token goes in alone with the state fed back. With ``--temperature 0`` (the default)
the text is the one ``rnnkit sample DIR --temperature 0`` prints.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import unicodedata
from pathlib import Path

import numpy as np
import onnxruntime as ort


class Tokenizer:
    """Text <-> token ids as rnnkit cuts them: characters, or words by the pattern config.json
    states; in sentence mode a text starts with <start> and ends at <end>."""

    def __init__(self, folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        self.itos: list[str] = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
        self.stoi = {t: i for i, t in enumerate(self.itos)}
        tok = config["tokenizer"]
        self.level = tok["level"]
        self.start = self.stoi.get(tok["start"]) if tok["start"] else None
        self.end = self.stoi.get(tok["end"]) if tok["end"] else None
        self.unk = self.stoi.get(tok["unk"]) if tok["unk"] else None
        if self.level == "word":
            self.word = re.compile(tok["word_pattern"])
            self.no_space_before = set(tok["no_space_before"])
            self.no_space_after = set(tok["no_space_after"])
        self.model = config["model"]

    def encode_prime(self, text: str) -> list[int]:
        ids = [] if self.start is None else [self.start]
        tokens = list(text) if self.level == "char" else self.word.findall(text)
        for t in tokens:
            if t in self.stoi:
                ids.append(self.stoi[t])
            elif self.level == "word" and self.unk is not None:
                ids.append(self.unk)
            else:
                sys.exit(f"error: the prime has a token the model never saw: {t!r}")
        return ids or [self.stoi.get("\n", 0)]

    def decode(self, ids: list[int]) -> str:
        tokens = [self.itos[i] for i in ids if i not in (self.start, self.end)]
        if self.level == "char":
            return "".join(tokens)
        out: list[str] = []
        for prev, tok in zip([None, *tokens], tokens, strict=False):
            if prev is not None and not (tok == "\n" or prev == "\n" or tok in
                                         self.no_space_before or prev in self.no_space_after):
                out.append(" ")
            out.append(tok)
        return "".join(out)


def generate(folder: Path, prime: str, length: int, temperature: float, seed: int) -> str:
    tok = Tokenizer(folder)
    session = ort.InferenceSession(str(folder / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    m = tok.model
    state = {"h0": np.zeros((m["num_layers"], 1, m["hidden_size"]), np.float32)}
    if m["cell"] == "lstm":
        state["c0"] = np.zeros_like(state["h0"])
    rng = np.random.default_rng(seed)
    tokens = np.array(tok.encode_prime(prime), np.int64)[:, None]       # (T, 1)
    out: list[int] = []
    for _ in range(length):
        logits, *final = session.run(None, {"tokens": tokens, **state})
        state = dict(zip(state, final, strict=True))          # hn -> h0, cn -> c0
        z = logits[-1, 0].astype(np.float64)
        if temperature == 0:
            nxt = int(np.argmax(z))
        else:
            p = np.exp((z - z.max()) / temperature)
            nxt = int(rng.choice(p.size, p=p / p.sum()))
        out.append(nxt)
        if nxt == tok.end:
            break
        tokens = np.array([[nxt]], np.int64)
    text = tok.decode(out)
    return prime + (" " if tok.level == "word" and prime and text else "") + text


def printable(text: str) -> str:
    """Control characters (a terminal escape in a vocabulary) shown as escapes, as rnnkit does."""
    return "".join(c if c in "\n\t" or (c.isprintable() and c not in "\u2028\u2029")
                   or unicodedata.category(c) == "Zs" else c.encode("unicode_escape").decode()
                   for c in text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path, help="an rnnkit export folder")
    ap.add_argument("--prime", default="", help="text to start from")
    ap.add_argument("--length", type=int, default=200, help="tokens to generate at most")
    ap.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    text = generate(args.folder, args.prime, args.length, args.temperature, args.seed)
    sys.stdout.write(printable(text if text.endswith("\n") else text + "\n"))


if __name__ == "__main__":
    main()
