"""rnnkit serve: the HTTP API of rnnkit.server, endpoint by endpoint, without a browser.

Tiny runs are trained once per module; each is served by one Server on a free port of
127.0.0.1 in a daemon thread. Every answer is checked against what the library (or the CLI)
gives for the same request: sampled text, activations (to the float32 bit), span queries,
gradient norms. Then the bad inputs of each endpoint, and what must not bring the server down.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import math
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rnnkit
from conftest import brute_match, brute_select, serving
from rnnkit.checkpoint import read_meta
from rnnkit.cli import main
from rnnkit.files import printable, write_atomic
from rnnkit.generate import prime_ids, sampling_probs, stream
from rnnkit.lab.gradients import gradient_norms, model_gradient_norms
from rnnkit.lab.neurons import (
    encode_text,
    match_spans,
    record_activations,
    select_units,
    text_features,
    top_units,
)
from rnnkit.models import LanguageModel
from rnnkit.rundir import RunDir
from rnnkit.server import CSP, DEFAULTS, LIMITS, STATIC, App, Server
from rnnkit.text import detokenize
from rnnkit.train import validation_text

# quotes, brackets, several lines, blank lines, a few words repeated: enough for a tiny model
TEXT = "".join(
    ("KING:\n" if i % 4 == 0 else "")
    + f'The queen (said {i % 7}) "come here" to [the] lord, and {"good " * (i % 3)}night.\n'
    + ("\n" if i % 4 == 3 else "")
    for i in range(60))
CHAR_TEXT = 'The lord (said 3) "come here" to [the] queen.\nKING:\nand good night.'
WORD_LINE = "The queen said to the lord and good night"      # one line of known words


def _train(tmp: Path, name: str, *extra: str) -> Path:
    src = tmp / "text.txt"
    if not src.exists():
        src.write_text(TEXT, encoding="utf-8")
    out = tmp / name
    assert main(["train", str(src), "--out", str(out), "--max-steps", "6", "--hidden-size", "8",
                 "--embedding-dim", "4", "--batch-size", "2", "--seq-len", "8",
                 "--eval-interval", "3", "--sample-length", "20", "--no-progress",
                 *extra]) == 0
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("serve")
    return {"lstm": _train(tmp, "lstm", "--cell", "lstm", "--num-layers", "2"),
            "word": _train(tmp, "word", "--level", "word", "--mode", "sentence", "--cell",
                           "gru", "--num-layers", "1"),
            "rnn": _train(tmp, "rnn", "--cell", "rnn", "--num-layers", "1"),
            "onehot": _train(tmp, "onehot", "--one-hot", "--cell", "lstm", "--num-layers", "1")}


# ---- serving and asking ------------------------------------------------------------------


@pytest.fixture(scope="module")
def servers(runs):
    with contextlib.ExitStack() as stack:
        yield {name: stack.enter_context(serving(run)) for name, run in runs.items()}


@pytest.fixture(scope="module")
def models(runs):
    out = {}
    for name, run in runs.items():
        tm = rnnkit.load(run)
        tm.model.eval()
        out[name] = tm
    return out


@dataclass
class Reply:
    status: int
    headers: Any
    body: bytes

    def json(self) -> Any:
        assert self.headers["Content-Type"] == "application/json; charset=utf-8"
        return json.loads(self.body)


def port(srv: Server) -> int:
    return srv.server_address[1]


def call(srv: Server, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", port(srv), timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        with conn.getresponse() as r:
            return Reply(r.status, r.headers, r.read())
    finally:
        conn.close()


def get(srv: Server, path: str, **headers: str) -> Reply:
    return call(srv, "GET", path, headers=headers)


def get_json(srv: Server, path: str) -> Any:
    r = get(srv, path)
    assert r.status == 200, r.body
    return r.json()


def post(srv: Server, path: str, obj: Any = None, *, raw: bytes | None = None,
         headers: dict[str, str] | None = None) -> Reply:
    data = raw if raw is not None else json.dumps(obj).encode()
    return call(srv, "POST", path, data, {"Content-Type": "application/json", **(headers or {})})


def post_json(srv: Server, path: str, obj: Any) -> Any:
    r = post(srv, path, obj)
    assert r.status == 200, r.body
    return r.json()


def raw_request(srv: Server, data: bytes, *, shut: bool = True, timeout: float = 10) -> Reply:
    """Bytes as sent, no client library: for headers http.client would add or fix."""
    with socket.create_connection(("127.0.0.1", port(srv)), timeout=timeout) as s:
        s.sendall(data)
        if shut:
            s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return Reply(int(lines[0].split()[1]), headers, body)


def expect_error(r: Reply, status: int, *words: str) -> str:
    assert r.status == status, (r.status, r.body)
    assert r.headers["Content-Type"] == "application/json; charset=utf-8"
    body = json.loads(r.body)
    assert list(body) == ["error"] and isinstance(body["error"], str) and body["error"]
    for w in words:
        assert w.lower() in body["error"].lower(), (w, body["error"])
    return body["error"]


def parse_events(data: bytes) -> list[tuple[str, dict[str, Any]]]:
    text = data.decode("utf-8")
    assert text.endswith("\n\n")
    out = []
    for block in text[:-2].split("\n\n"):
        name = payload = None
        for line in block.split("\n"):
            field, _, value = line.partition(": ")
            if field == "event":
                name = value
            elif field == "data":
                payload = json.loads(value)
            else:
                raise AssertionError(f"not an event line: {line!r}")
        assert name is not None and isinstance(payload, dict)
        out.append((name, payload))
    return out


def sample(srv: Server, **params: Any) -> list[tuple[str, dict[str, Any]]]:
    q = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
    r = get(srv, f"/api/sample?{q}")
    assert r.status == 200, r.body
    assert r.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert r.headers["Content-Security-Policy"] == CSP
    return parse_events(r.body)


def split_events(events):
    names = [e for e, _ in events]
    assert names[0] == "start" and names[-1] == "done", names
    assert set(names[1:-1]) <= {"token"}, names
    return events[0][1], [d for _, d in events[1:-1]], events[-1][1]


def cli_sample(capsys, run: Path, prime: str, length: int, seed: int | None = None,
               temperature: float | None = None, top_k: int | None = None,
               top_p: float | None = None, beam: int | None = None) -> str:
    args = ["sample", str(run), "--prime", prime, "--length", str(length)]
    for flag, v in (("--seed", seed), ("--temperature", temperature), ("--top-k", top_k),
                    ("--top-p", top_p), ("--beam", beam)):
        if v is not None:
            args += [flag, str(v)]
    capsys.readouterr()
    assert main(args) == 0
    return capsys.readouterr().out


def as_printed(text: str) -> str:
    """What ``rnnkit sample`` prints for ``text``."""
    return printable(text + ("" if text.endswith("\n") else "\n"))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = np.exp(z - z.max())
    return z / z.sum()


def best_meta(run: Path) -> dict[str, Any]:
    return read_meta(RunDir(run).newest_best())


def heldout(run: Path, level: str) -> tuple[str, str]:
    return validation_text(best_meta(run), level)


# ---- files, paths, methods ---------------------------------------------------------------


def web_file(name: str) -> bytes:
    return resources.files("rnnkit").joinpath("web", name).read_bytes()


@pytest.mark.parametrize("name", sorted(STATIC))
def test_static_files_with_content_type_and_csp(servers, name):
    srv = servers["lstm"]
    paths = ["/", "/index.html"] if name == "index.html" else [f"/static/{name}"]
    for path in paths:
        r = get(srv, path)
        assert r.status == 200, (path, r.body[:200])
        assert r.headers["Content-Type"] == STATIC[name]
        assert r.headers["Content-Security-Policy"] == CSP
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Cache-Control"] == "no-store"
        assert int(r.headers["Content-Length"]) == len(r.body)
        assert r.body == web_file(name)
        h = call(srv, "HEAD", path)
        assert h.status == 200 and h.body == b""
        assert h.headers["Content-Type"] == STATIC[name]
        assert int(h.headers["Content-Length"]) == len(r.body)


@pytest.mark.parametrize("path", [
    "/static/../server.py", "/static/%2e%2e/server.py", "/static/..%2fserver.py",
    "/static/index.html", "/static/", "/static", "/static/app.css/", "/static/APP.CSS",
    "/static/server.py", "/static/web/app.css", "/static/app.css%00", "/static//etc/passwd",
    "/nope", "/api", "/api/", "/api/run/", "/api/runs", "/API/run", "/index.htm",
    "/api/neurons/match/x", "/../../etc/passwd"])
def test_other_paths_are_404(servers, path):
    srv = servers["lstm"]
    r = get(srv, path)
    expect_error(r, 404)
    assert r.headers["Content-Security-Policy"] == CSP
    if path.startswith("/static/"):
        expect_error(r, 404, "no such file")


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("POST", "/", "GET, HEAD"), ("PUT", "/index.html", "GET, HEAD"),
    ("POST", "/api/run", "GET, HEAD"), ("DELETE", "/api/run", "GET, HEAD"),
    ("PATCH", "/api/metrics", "GET, HEAD"), ("OPTIONS", "/api/metrics", "GET, HEAD"),
    ("POST", "/api/sample", "GET"), ("PUT", "/api/sample", "GET"),
    ("GET", "/api/neurons", "POST"), ("PUT", "/api/neurons", "POST"),
    ("GET", "/api/neurons/match", "POST"), ("DELETE", "/api/gradients", "POST"),
    ("HEAD", "/api/gradients", "POST")])
def test_wrong_methods_are_405_with_allow(servers, method, path, allow):
    r = call(servers["lstm"], method, path, b"{}" if method in ("POST", "PUT") else None,
             {"Content-Type": "application/json"})
    assert r.status == 405
    assert r.headers["Allow"] == allow
    assert r.headers["Content-Security-Policy"] == CSP
    if method != "HEAD":
        expect_error(r, 405, method, allow)


def test_head_of_json_endpoints(servers):
    srv = servers["lstm"]
    for path in ("/api/run", "/api/metrics", "/api/metrics?since=2"):
        g, h = get(srv, path), call(srv, "HEAD", path)
        assert h.status == 200 and h.body == b""
        assert h.headers["Content-Type"] == "application/json; charset=utf-8"
        assert int(h.headers["Content-Length"]) == len(g.body)
    h = call(srv, "HEAD", "/nope")
    assert h.status == 404 and h.body == b""
    assert get(srv, "/favicon.ico").status == 204


def test_head_of_sample_is_consistent_with_allow(servers):
    r = call(servers["lstm"], "HEAD", "/api/sample?length=3")
    if r.status == 405:
        assert "HEAD" not in r.headers["Allow"].split(", ")
    else:
        assert r.status == 200 and r.body == b""


@pytest.mark.parametrize("method", ["TRACE", "BREW"])
def test_unknown_methods_get_a_json_error_with_csp(servers, method):
    srv = servers["lstm"]
    r = raw_request(srv, f"{method} /api/run HTTP/1.0\r\nHost: 127.0.0.1:{port(srv)}\r\n\r\n"
                    .encode())
    assert r.headers.get("Content-Security-Policy") == CSP
    expect_error(r, 405 if r.status == 405 else 501)
    if r.status == 405:
        assert r.headers["Allow"] == "GET, HEAD"


def test_query_too_long_is_414(servers):
    srv = servers["lstm"]
    r = get(srv, "/api/sample?prime=" + "a" * 30_000)
    expect_error(r, 414, "too long")
    assert r.headers["Content-Security-Policy"] == CSP


# ---- GET /api/run ------------------------------------------------------------------------

SHAPES = {"lstm": ("lstm", 2, False, "char", "stream"), "word": ("gru", 1, False, "word",
                                                                   "sentence"),
          "rnn": ("rnn", 1, False, "char", "stream"), "onehot": ("lstm", 1, True, "char",
                                                                    "stream")}


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_api_run(runs, servers, models, name):
    run, tm = runs[name], models[name]
    cell, layers, one_hot, level, mode = SHAPES[name]
    info = get_json(servers[name], "/api/run")
    assert info["run"] == str(run) and info["kind"] == "run" and info["has_metrics"] is True
    assert info["model"] == {"cell": cell, "num_layers": layers, "hidden_size": 8,
                             "embedding_dim": None if one_hot else 4, "one_hot": one_hot,
                             "dtype": "float32", "vocab_size": len(tm.vocab)}
    assert (info["level"], info["mode"], info["unit"]) == (level, mode, level)
    assert info["kinds"] == (["h", "c"] if cell == "lstm" else ["h"])
    meta = best_meta(run)
    assert meta["step"] == 6
    assert info["checkpoint"] == {"step": meta["step"], "val_loss": meta["best_val"],
                                  "path": str(RunDir(run).newest_best())}
    assert info["limits"] == LIMITS
    assert {"max_length", "max_prime", "max_beam", "max_text_chars", "max_tokens",
            "max_span"} <= set(info["limits"])
    assert info["defaults"] == DEFAULTS
    assert {"length", "temperature", "seed", "neurons_length",
            "gradients_length"} <= set(info["defaults"])
    text, source = heldout(run, level)
    assert info["heldout"]["source"] == source and "error" not in info["heldout"]
    # the contract (/tmp/serve_api.md) says "tokens"; the server sends "chars"
    assert info["heldout"].get("chars", info["heldout"].get("tokens")) in (
        len(text), len(encode_text(tm.vocab, text).tokens))


# ---- GET /api/metrics --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["lstm", "word"])
def test_metrics_all_records(runs, servers, name):
    records = RunDir(runs[name]).records()
    got = get_json(servers[name], "/api/metrics")
    assert got == {"total": len(records), "reset": False, "training": False,
                   "records": records}
    evals = [r for r in got["records"] if "val_loss" in r]
    assert [r["step"] for r in evals] == [3, 6]
    assert all(isinstance(r["sample"], str) for r in evals)      # may be "" in sentence mode
    assert any(r["sample"] for r in evals)
    assert len(got["records"]) == 8            # 6 steps + 2 evaluations


def test_metrics_incremental(runs, servers):
    srv, records = servers["lstm"], RunDir(runs["lstm"]).records()
    for since in range(len(records) + 1):
        q = f"since={since}" + (f"&step={records[since - 1]['step']}" if since else "")
        got = get_json(srv, f"/api/metrics?{q}")
        assert got["total"] == len(records) and got["reset"] is False
        assert got["records"] == records[since:]
    # since alone (no step) is trusted; a float step equal to the int matches
    assert get_json(srv, "/api/metrics?since=4")["records"] == records[4:]
    assert get_json(srv, "/api/metrics?since=4&step=3.0")["reset"] is False


@pytest.mark.parametrize("query", ["since=4&step=999", "since=1&step=2",
                                   f"since={9}", "since=100&step=6", "since=9&step=6"])
def test_metrics_reset_gives_all_records(runs, servers, query):
    records = RunDir(runs["lstm"]).records()
    got = get_json(servers["lstm"], f"/api/metrics?{query}")
    assert got == {"total": len(records), "reset": True, "training": False, "records": records}


@pytest.mark.parametrize(("query", "word"), [
    ("since=x", "since"), ("since=-1", "since"), ("since=1.5", "since"), ("step=abc", "step"),
    ("step=nan", "step"), ("since=1&since=2", "since"), ("foo=1", "foo"),
    ("since=1&steps=1", "steps"), ("since=%ff", "query")])
def test_metrics_bad_parameters(servers, query, word):
    expect_error(get(servers["lstm"], f"/api/metrics?{query}"), 400, word)


def test_metrics_live(runs, tmp_path):
    run = tmp_path / "live"
    shutil.copytree(runs["lstm"], run)
    rd = RunDir(run)
    records = rd.records()
    with serving(run) as srv:
        n, last = len(records), records[-1]["step"]
        got = get_json(srv, f"/api/metrics?since={n}&step={last}")
        assert got == {"total": n, "reset": False, "training": False, "records": []}
        rd.append({"step": 7, "loss": 3.5, "train_seconds": 1.0, "lr": 0.002})
        got = get_json(srv, f"/api/metrics?since={n}&step={last}")
        assert got == {"total": n + 1, "reset": False, "training": False,
                       "records": [{"step": 7, "loss": 3.5, "train_seconds": 1.0, "lr": 0.002}]}
        # a torn last line is not a record yet
        with open(rd.metrics, "ab") as f:
            f.write(b'{"step": 8, "lo')
        got = get_json(srv, f"/api/metrics?since={n + 1}&step=7")
        assert got["records"] == [] and got["total"] == n + 1
        # the log replaced by a shorter one (a resume cut it): reset, all records
        kept = records[:3]
        write_atomic(rd.metrics, "".join(json.dumps(r) + "\n" for r in kept).encode())
        got = get_json(srv, f"/api/metrics?since={n + 1}&step=7")
        assert got == {"total": 3, "reset": True, "training": False, "records": kept}
        # replaced by one as long, with other steps: the step tells
        other = [{**r, "step": r["step"] + 100} for r in kept]
        write_atomic(rd.metrics, "".join(json.dumps(r) + "\n" for r in other).encode())
        got = get_json(srv, f"/api/metrics?since=3&step={kept[-1]['step']}")
        assert got == {"total": 3, "reset": True, "training": False, "records": other}
        # a trainer holding the run
        holder = RunDir(run)
        holder.acquire()
        try:
            assert get_json(srv, "/api/metrics")["training"] is True
            assert get_json(srv, "/api/metrics?since=3&step=103")["training"] is True
        finally:
            holder.release()
        assert get_json(srv, "/api/metrics")["training"] is False


# ---- GET /api/sample ---------------------------------------------------------------------

SAMPLES = [
    ("lstm", "", 40, 0, 0.8, None, None),
    ("lstm", "The lord (said", 60, 3, 0.0, None, None),
    ("lstm", "KING:\n", 50, 7, 1.5, 5, None),
    ("lstm", "queen", 50, 11, 0.8, None, 0.9),
    ("lstm", '"come', 30, 2**40, 1.5, 3, 0.5),
    ("rnn", "[the] ", 40, 5, 0.8, None, None),
    ("rnn", "", 25, 1, 0.0, None, None),
    ("onehot", "and good", 40, 1, 1.5, None, 0.95),
    ("word", "The queen", 30, 4, 0.8, None, None),
    ("word", "", 30, 9, 1.5, 10, 0.9),
    ("word", "lord", 20, 2, 0.0, None, None),
]


@pytest.mark.parametrize(("name", "prime", "length", "seed", "temperature", "top_k", "top_p"),
                         SAMPLES)
def test_sample_is_the_cli_text_with_model_probabilities(
        capsys, runs, servers, models, name, prime, length, seed, temperature, top_k, top_p):
    tm = models[name]
    vocab = tm.vocab
    events = sample(servers[name], prime=prime, length=length, seed=seed,
                    temperature=temperature, top_k=top_k, top_p=top_p)
    start, tokens, done = split_events(events)
    assert start == {"prime": prime, "checkpoint_step": 6}
    text = done["text"]
    assert text == tm.generate(prime, length, temperature=temperature, top_k=top_k,
                               top_p=top_p, seed=seed)
    assert as_printed(text) == cli_sample(capsys, runs[name], prime, length, seed,
                                          temperature, top_k, top_p)
    assert prime + "".join(t["text"] for t in tokens) == text
    draws = list(stream(tm.model, prime_ids(vocab, prime), length,
                        rng=np.random.default_rng(seed), temperature=temperature, top_k=top_k,
                        top_p=top_p, end_id=vocab.end_id))
    assert [t["id"] for t in tokens] == [d.id for d in draws]
    assert done["tokens"] == len(tokens) and done["seconds"] >= 0
    ended = vocab.end_id is not None and draws[-1].id == vocab.end_id
    assert done["stopped"] == ("end" if ended else "length")
    assert len(tokens) == length or ended
    for i, (t, d) in enumerate(zip(tokens, draws, strict=True)):
        p = softmax(d.logits)
        assert t["i"] == i and t["token"] == vocab.itos[d.id]
        assert abs(t["p"] - p[d.id]) <= 1e-12
        q = sampling_probs(d.logits, temperature, top_k, top_p)[d.id]
        assert abs(t["q"] - q) <= 1e-12 and 0 < t["q"] <= 1
        if temperature == 0:
            assert t["q"] == 1.0
        top = t["top"]
        assert len(top) == 5
        ps = [e["p"] for e in top]
        assert ps == sorted(ps, reverse=True)
        np.testing.assert_allclose(ps, np.sort(p)[::-1][:5], rtol=0, atol=1e-12)
        for e in top:
            assert abs(e["p"] - p[vocab.stoi[e["token"]]]) <= 1e-12


def test_sentence_mode_stops_at_end(capsys, runs, servers, models):
    tm, srv = models["word"], servers["word"]
    stopped = 0
    for seed in range(6):
        start, tokens, done = split_events(sample(srv, length=300, seed=seed, temperature=1))
        assert start == {"prime": "", "checkpoint_step": 6}
        if done["stopped"] == "end":
            stopped += 1
            assert done["tokens"] == len(tokens) < 300
            assert tokens[-1]["id"] == tm.vocab.end_id and tokens[-1]["text"] == ""
            assert tokens[-1]["token"] == "<end>"
            assert all(t["id"] != tm.vocab.end_id for t in tokens[:-1])
        else:
            assert done["tokens"] == 300
        assert done["text"] == "".join(t["text"] for t in tokens)
        assert as_printed(done["text"]) == cli_sample(capsys, runs["word"], "", 300, seed, 1)
    assert stopped >= 1


@pytest.mark.parametrize(("name", "prime", "length"), [
    ("lstm", "The ", 20), ("lstm", "", 12), ("word", "The queen", 15), ("rnn", "lord", 10)])
def test_sample_beam(capsys, runs, servers, models, name, prime, length):
    tm = models[name]
    start, tokens, done = split_events(sample(servers[name], prime=prime, length=length,
                                              beam=3, seed=5, temperature=1.5))
    assert start == {"prime": prime, "checkpoint_step": 6}
    assert done["text"] == tm.beam(prime, length, 3)
    assert as_printed(done["text"]) == cli_sample(capsys, runs[name], prime, length, beam=3)
    assert prime + "".join(t["text"] for t in tokens) == done["text"]
    assert all(t["q"] == 1 for t in tokens)
    # p: the model's probability of each beam token, replaying prime + beam tokens
    ids = prime_ids(tm.vocab, prime)
    model = tm.model
    state = model(np.array(ids[:-1])[:, None])[1] if len(ids) > 1 else None
    step, cur = model.stepper(), np.array(ids[-1:], dtype=np.int64)
    for t in tokens:
        logits, state = step(cur, state)
        p = softmax(logits[0])
        assert abs(t["p"] - p[t["id"]]) <= 1e-12
        assert abs(t["top"][0]["p"] - p.max()) <= 1e-12
        cur = np.array([t["id"]], dtype=np.int64)
    ended = tm.vocab.end_id is not None and tokens[-1]["id"] == tm.vocab.end_id
    assert done["stopped"] == ("end" if ended else "length")


MAXL, MAXB, MAXP = LIMITS["max_length"], LIMITS["max_beam"], LIMITS["max_prime"]


@pytest.mark.parametrize(("query", "word"), [
    ("length=0", "length"), (f"length={MAXL + 1}", "length"), ("length=abc", "length"),
    ("length=1.5", "length"), ("temperature=-1", "temperature"),
    ("temperature=nan", "temperature"), ("temperature=inf", "temperature"),
    ("temperature=-inf", "temperature"), ("temperature=x", "temperature"),
    ("top_k=0", "top_k"), ("top_k=-3", "top_k"), ("top_p=0", "top_p"), ("top_p=1.5", "top_p"),
    ("top_p=nan", "top_p"), ("seed=-1", "seed"), ("seed=abc", "seed"), ("beam=0", "beam"),
    (f"beam={MAXB + 1}", "beam"), ("prime=%C2%A7", "prime"), ("prime=The%00", "prime"),
    ("prime=" + "a" * (MAXP + 1), "prime"), ("colour=red", "colour"),
    ("length=5&primer=x", "primer"), ("seed=1&seed=2", "seed"), ("prime=a&prime=b", "prime"),
    ("prime=%ff", "query"), ("%ff=1", "query")])
def test_sample_bad_parameters(servers, query, word):
    r = get(servers["lstm"], f"/api/sample?{query}")
    expect_error(r, 400, word)


def test_sample_limits_are_inclusive(servers):
    """max_prime characters and max_beam are allowed (the bounds of the 400s above)."""
    srv = servers["lstm"]
    start, tokens, done = split_events(sample(srv, prime="the " * (MAXP // 4), length=2))
    assert start["prime"] == "the " * (MAXP // 4) and done["tokens"] == len(tokens) == 2
    _, tokens, done = split_events(sample(srv, length=3, beam=MAXB))
    assert done["tokens"] == len(tokens) == 3


def test_sample_word_level_unknown_word_is_unk(capsys, runs, servers, models):
    """A word the model never saw is <unk> (a word-level vocabulary has it), as in the CLI."""
    srv, prime = servers["word"], "The zebra said"
    _, tokens, done = split_events(sample(srv, prime=prime, length=10, seed=1))
    assert prime + "".join(t["text"] for t in tokens) == done["text"]
    assert done["text"] == models["word"].generate(prime, 10, temperature=0.8, seed=1)
    assert as_printed(done["text"]) == cli_sample(capsys, runs["word"], prime, 10, 1, 0.8)


# ---- POST /api/neurons -------------------------------------------------------------------


def decode_values(resp: dict[str, Any]) -> np.ndarray:
    raw = base64.b64decode(resp["values"], validate=True)
    assert len(raw) == resp["T"] * resp["H"] * 4
    return np.frombuffer(raw, dtype="<f4").reshape(resp["T"], resp["H"])


def control_model(tm) -> LanguageModel:
    m = LanguageModel(tm.model.config, rng=0)
    m.eval()
    return m


def check_neurons(resp, tm, text, start, length, layer, kind, source):
    enc = encode_text(tm.vocab, text, start, length)
    acts = record_activations(tm.model, enc)
    block = np.ascontiguousarray(acts.column_block(layer, kind), dtype="<f4")
    T, H = block.shape
    assert (resp["T"], resp["H"], resp["layer"], resp["kind"]) == (T, H, layer, kind)
    assert resp["source"] == source and resp["start"] == start
    assert resp["tokens"] == enc.tokens and resp["unknown"] == enc.unknown
    got = decode_values(resp)
    assert np.array_equal(got.view(np.uint32), block.view(np.uint32))     # bit for bit
    assert resp["scale"] == [float(x) for x in np.abs(block).max(axis=0)]
    shown = "".join(resp["display"])
    assert len(resp["display"]) == T
    assert shown == detokenize(enc.tokens, enc.level).replace("\n", "\u21b5\n")
    if enc.level == "char":
        assert shown == text[start:start + length].replace("\n", "\u21b5\n")
    control = record_activations(control_model(tm), enc)
    found = top_units(acts, text_features(enc.tokens, enc.level), 3, control)
    assert [f["name"] for f in resp["features"]] == [fu.feature.name for fu in found]
    for f, fu in zip(resp["features"], found, strict=True):
        assert f["description"] == fu.feature.description
        assert f["coverage"] == fu.feature.coverage()
        assert [(u["layer"], u["kind"], u["index"], u["label"]) for u in f["units"]] == [
            (u.layer, u.kind, u.index, u.label) for u, _ in fu.units]
        assert [u["r"] for u in f["units"]] == [r if math.isfinite(r) else None
                                                 for _, r in fu.units]
        assert f["control"] == fu.control
    return block


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_neurons_heldout_every_layer_and_kind(runs, servers, models, name):
    tm, srv = models[name], servers[name]
    level = SHAPES[name][3]
    text, source = heldout(runs[name], level)
    start, length = (3, 40) if level == "word" else (5, 150)
    for layer in range(SHAPES[name][1]):
        for kind in (["h", "c"] if SHAPES[name][0] == "lstm" else ["h"]):
            resp = post_json(srv, "/api/neurons", {"text": None, "start": start,
                                                   "length": length, "layer": layer,
                                                   "kind": kind})
            check_neurons(resp, tm, text, start, length, layer, kind, source)
    # the defaults: start 0, the default length (all of this short held-out text), layer 0, h
    resp = post_json(srv, "/api/neurons", {})
    check_neurons(resp, tm, text, 0, DEFAULTS["neurons_length"], 0, "h", source)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_neurons_own_text(servers, models, name):
    tm, srv = models[name], servers[name]
    level = SHAPES[name][3]
    text = TEXT[:400] if level == "word" else CHAR_TEXT
    for layer in range(SHAPES[name][1]):
        for kind in (["h", "c"] if SHAPES[name][0] == "lstm" else ["h"]):
            for start, length in ((0, 1000), (4, 17)):
                resp = post_json(srv, "/api/neurons", {"text": text, "start": start,
                                                       "length": length, "layer": layer,
                                                       "kind": kind})
                check_neurons(resp, tm, text, start, length, layer, kind, "your text")


def test_neurons_word_level_unknown_words(servers, models):
    text = "The zebra said to the okapi\nand good night"
    resp = post_json(servers["word"], "/api/neurons", {"text": text})
    assert resp["unknown"] == 2
    check_neurons(resp, models["word"], text, 0, 1000, 0, "h", "your text")
    text = "The \ud800 queen"                   # a lone surrogate (JSON allows it): <unk> too
    resp = post_json(servers["word"], "/api/neurons", {"text": text})
    assert resp["unknown"] == 1 and resp["tokens"] == ["The", "\ud800", "queen"]
    check_neurons(resp, models["word"], text, 0, 1000, 0, "h", "your text")


BIG = LIMITS["max_body"]


@pytest.mark.parametrize(("name", "body", "words"), [
    ("lstm", {"layer": 2}, ["layer"]), ("lstm", {"layer": -1}, ["layer"]),
    ("lstm", {"layer": "0"}, ["layer"]), ("lstm", {"layer": True}, ["layer"]),
    ("word", {"layer": 1}, ["layer"]), ("word", {"kind": "c"}, ["kind"]),
    ("lstm", {"kind": "x"}, ["kind"]), ("lstm", {"kind": None}, ["kind"]),
    ("lstm", {"kind": ["h"]}, ["kind"]),
    ("lstm", {"start": 10**6}, ["start"]), ("lstm", {"text": "abc", "start": 3}, ["start"]),
    ("lstm", {"start": -1}, ["start"]), ("lstm", {"start": 1.5}, ["start"]),
    ("lstm", {"length": 0}, ["length"]), ("lstm", {"length": LIMITS["max_tokens"] + 1},
                                          ["length"]),
    ("lstm", {"length": "5"}, ["length"]),
    ("lstm", {"text": "The \u00a7 lord"}, ["never saw", "'\u00a7'"]),
    ("rnn", {"text": "caf\u00e9"}, ["never saw"]),
    ("lstm", {"text": 5}, ["text"]), ("lstm", {"text": ["The"]}, ["text"]),
    ("lstm", {"text": ""}, ["text"]), ("lstm", {"text": " \n "}, ["text"]),
    ("lstm", {"text": "a" * (LIMITS["max_text_chars"] + 1)}, ["text"]),
    ("lstm", {"colour": "red"}, ["colour"]), ("lstm", {"text": "The", "span": [0, 1]},
                                              ["span"])])
def test_neurons_bad_fields(servers, name, body, words):
    expect_error(post(servers[name], "/api/neurons", body), 400, *words)


@pytest.mark.parametrize(("raw", "word"), [
    (b"{not json", "JSON"), (b"", "JSON"), (b"[1, 2]", "object"), (b'"text"', "object"),
    (b"null", "object"), (b'{"start": NaN}', "NaN"), (b'{"layer": Infinity}', "Infinity"),
    (b'{"text": "\xff\xfe"}', "JSON"), (b'{"start": 1e400}', "start"),
    (b"[" * 100_000 + b"]" * 100_000, "JSON")])
def test_neurons_bad_bodies(servers, raw, word):
    expect_error(post(servers["lstm"], "/api/neurons", raw=raw), 400, word)


def _head(srv: Server, path: str, *lines: str) -> bytes:
    return ("\r\n".join([f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port(srv)}", *lines])
            + "\r\n\r\n").encode()


def test_neurons_body_framing(servers):
    srv = servers["lstm"]
    r = raw_request(srv, _head(srv, "/api/neurons", "Content-Type: application/json") + b"{}")
    expect_error(r, 411, "Content-Length")
    r = raw_request(srv, _head(srv, "/api/neurons", "Content-Type: application/json",
                               "Transfer-Encoding: chunked") + b"2\r\n{}\r\n0\r\n\r\n")
    expect_error(r, 411, "Content-Length")
    for bad in ("abc", "-1"):
        r = raw_request(srv, _head(srv, "/api/neurons", "Content-Type: application/json",
                                   f"Content-Length: {bad}") + b"{}")
        expect_error(r, 400, "Content-Length")
    # the body ends before its Content-Length
    r = raw_request(srv, _head(srv, "/api/neurons", "Content-Type: application/json",
                               "Content-Length: 100") + b'{"text": "The"}')
    expect_error(r, 400, "ended")
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                  None):
        headers = {} if ctype is None else {"Content-Type": ctype}
        r = call(srv, "POST", "/api/neurons", b"{}", headers)
        expect_error(r, 415, "application/json")
    ok = call(srv, "POST", "/api/neurons", b"{}",
              {"Content-Type": "Application/JSON; charset=utf-8"})
    assert ok.status == 200


def test_neurons_body_too_big_is_refused_unread(servers):
    """Only the headers are sent: the 413 must come without the server waiting for a body."""
    srv = servers["lstm"]
    t0 = time.monotonic()
    r = raw_request(srv, _head(srv, "/api/neurons", "Content-Type: application/json",
                               f"Content-Length: {BIG + 1}"), shut=False, timeout=10)
    assert time.monotonic() - t0 < 5
    expect_error(r, 413, f"{BIG:,}")
    # exactly max_body is read (and is then just bad JSON padding)
    body = b'{"text": "The"}' + b" " * (BIG - 15)
    assert len(body) == BIG
    assert post(srv, "/api/neurons", raw=body).status == 200


# ---- POST /api/neurons/match -------------------------------------------------------------


def _pick_span(block: np.ndarray) -> tuple[int, int, float]:
    """A span and threshold whose selection is not empty and matches more than once."""
    T = block.shape[0]
    for threshold in (0.3, 0.2, 0.1, 0.05, 0.0, -0.1):
        for a in range(1, T - 3):
            for b in (a + 1, a + 2):
                units = brute_select(block, a, b, threshold, 1)
                if units and len(brute_match(block, units, threshold)) > 1:
                    return a, b, threshold
    raise AssertionError("no span with units and several matches")


@pytest.mark.parametrize(("name", "layer", "kind"), [("lstm", 1, "c"), ("lstm", 0, "h"),
                                                     ("word", 0, "h"), ("onehot", 0, "c")])
def test_match(runs, servers, models, name, layer, kind):
    tm, srv = models[name], servers[name]
    text, _ = heldout(runs[name], SHAPES[name][3])
    req = {"text": None, "start": 2, "length": 120, "layer": layer, "kind": kind}
    block = check_neurons(post_json(srv, "/api/neurons", req), tm, text, 2, 120, layer, kind,
                          heldout(runs[name], SHAPES[name][3])[1])
    a, b, threshold = _pick_span(block)
    for pad in (0, 1, 2):
        got = post_json(srv, "/api/neurons/match", {**req, "span": [a, b],
                                                    "threshold": threshold, "pad": pad})
        units = select_units(block, a, b, threshold, pad)
        found = match_spans(block, units, threshold)
        assert got["units"] == units.tolist() == brute_select(block, a, b, threshold, pad)
        assert [(m["start"], m["end"]) for m in got["matches"]] == [
            (m.start, m.end) for m in found] == brute_match(block, units.tolist(), threshold)
        assert got["total"] == len(found)
        assert (got["threshold"], got["pad"], got["span"]) == (threshold, pad, [a, b])
        assert (got["layer"], got["kind"]) == (layer, kind)
        query = [m for m in got["matches"] if m["query"]]
        if pad == 0:                             # a wider pad may leave no unit
            assert units.size
        if units.size:
            assert len(query) == 1 and query[0]["start"] <= a and b <= query[0]["end"]
        else:
            assert got["matches"] == [] and got["total"] == 0
    # the defaults: threshold 0.3, pad 1
    got = post_json(srv, "/api/neurons/match", {**req, "span": [a, b]})
    assert got["units"] == select_units(block, a, b, 0.3, 1).tolist()
    assert (got["threshold"], got["pad"]) == (0.3, 1)


def test_match_own_text_and_no_units(servers, models):
    tm, srv = models["lstm"], servers["lstm"]
    req = {"text": CHAR_TEXT, "layer": 1, "kind": "h"}
    block = record_activations(tm.model, encode_text(tm.vocab, CHAR_TEXT)).column_block(1, "h")
    got = post_json(srv, "/api/neurons/match", {**req, "span": [0, len(CHAR_TEXT)],
                                                "threshold": 5.0})
    assert got == {"units": [], "threshold": 5.0, "pad": 1, "span": [0, len(CHAR_TEXT)],
                   "layer": 1, "kind": "h", "total": 0, "matches": []}
    got = post_json(srv, "/api/neurons/match", {**req, "span": [3, 5], "threshold": -2,
                                                "pad": 0})
    assert got["units"] == list(range(8)) and got["matches"] == [
        {"start": 0, "end": len(CHAR_TEXT), "query": True}]
    got = post_json(srv, "/api/neurons/match", {**req, "span": [3, 5], "threshold": -2,
                                                "pad": 1})
    assert got["units"] == select_units(block, 3, 5, -2, 1).tolist()


@pytest.mark.parametrize(("extra", "word"), [
    ({}, "span"), ({"span": None}, "span"), ({"span": "1,2"}, "span"), ({"span": [1]}, "span"),
    ({"span": [1, 2, 3]}, "span"), ({"span": [1, 2.5]}, "span"), ({"span": [True, 3]}, "span"),
    ({"span": ["1", "2"]}, "span"), ({"span": [5, 3]}, "span"), ({"span": [3, 3]}, "span"),
    ({"span": [0, 41]}, "span"), ({"span": [40, 41]}, "span"), ({"span": [-1, 2]}, "span"),
    ({"span": [1, 2], "threshold": "x"}, "threshold"),
    ({"span": [1, 2], "threshold": None}, "threshold"),
    ({"span": [1, 2], "pad": -1}, "pad"), ({"span": [1, 2], "pad": 101}, "pad"),
    ({"span": [1, 2], "pad": 0.5}, "pad"), ({"span": [1, 2], "layer": 5}, "layer"),
    ({"span": [1, 2], "colour": 1}, "colour"), ({"span": [1, 2], "length": 0}, "length")])
def test_match_bad_fields(servers, extra, word):
    body = {"text": CHAR_TEXT, "length": 40, **extra}
    expect_error(post(servers["lstm"], "/api/neurons/match", body), 400, word)


# ---- POST /api/gradients -----------------------------------------------------------------


def check_gradients(resp, tm, text, start, length):
    enc = encode_text(tm.vocab, text, start, length + 1)
    ids, target = enc.ids[:-1], int(enc.ids[-1])
    r = model_gradient_norms(tm.model, ids, target)
    cfg = tm.model.config
    T, H, L = len(ids), cfg.hidden_size, cfg.num_layers
    assert resp["T"] == T and resp["tokens"] == enc.tokens[:-1]
    assert resp["target"] == enc.tokens[-1] and resp["loss"] == r.loss
    assert "".join(resp["display"]) == detokenize(enc.tokens[:-1], enc.level).replace(
        "\n", "\u21b5\n")
    series = resp["series"]
    assert [s["kind"] for s in series] == ["model"] * L + ["rnn", "gru", "lstm"]
    assert [s["layer"] for s in series[:L]] == list(reversed(range(L)))
    name = {"rnn": "RNN", "gru": "GRU", "lstm": "LSTM"}[cfg.cell]
    assert series[0]["label"].startswith(f"this run's {name}, layer {L - 1}")
    for s in series[:L]:
        assert s["norms"] == r.norms[s["layer"], ::-1].tolist()
        assert len(s["norms"]) == T
    for s in series[L:]:
        g = gradient_norms(s["kind"], T=T, hidden_size=H,
                           gate_bias=0.0 if s["kind"] == "rnn" else 3.0, seed=0)
        assert s["norms"] == g.norms[::-1].tolist()
        assert s["label"].endswith(f"untrained (H={H})")
    return r


@pytest.mark.parametrize("name", ["lstm", "rnn", "onehot"])
def test_gradients_heldout_and_own_text(runs, servers, models, name):
    tm, srv = models[name], servers[name]
    text, _ = heldout(runs[name], "char")
    resp = post_json(srv, "/api/gradients", {"text": None, "start": 5, "length": 30})
    r = check_gradients(resp, tm, text, 5, 30)
    assert resp["T"] == 30 and r.loss > 0
    resp = post_json(srv, "/api/gradients", {"text": CHAR_TEXT, "start": 2, "length": 2})
    check_gradients(resp, tm, CHAR_TEXT, 2, 2)
    # the default length; a span cut short by the end of the text
    resp = post_json(srv, "/api/gradients", {"text": CHAR_TEXT})
    check_gradients(resp, tm, CHAR_TEXT, 0, DEFAULTS["gradients_length"])
    resp = post_json(srv, "/api/gradients", {"text": CHAR_TEXT, "start": 50, "length": 100})
    assert resp["T"] == len(CHAR_TEXT) - 51
    check_gradients(resp, tm, CHAR_TEXT, 50, 100)


def test_gradients_sentence_mode(servers, models):
    tm, srv = models["word"], servers["word"]
    text = "KING:\n" + WORD_LINE + "\nand good night"
    start = 3                                    # the first word of WORD_LINE
    resp = post_json(srv, "/api/gradients", {"text": text, "start": start, "length": 6})
    check_gradients(resp, tm, text, start, 6)
    assert resp["tokens"] == WORD_LINE.split()[:6] and resp["target"] == "and"
    # a span reaching the line's end stops there: the model reads each line from a fresh
    # state and ends it with <end>, so <end> is the target
    end = tm.vocab.end_id
    for length in (9, 12):
        resp = post_json(srv, "/api/gradients", {"text": text, "start": start,
                                                 "length": length})
        ids = tm.vocab.encode(WORD_LINE.split())
        r = model_gradient_norms(tm.model, np.asarray(ids), end)
        assert resp["tokens"] == WORD_LINE.split() and resp["T"] == 9
        assert resp["target"] == "<end>" and resp["loss"] == r.loss
        assert resp["cut"] == (length > 9) and resp["requested"] == length
        assert resp["series"][0]["norms"] == r.norms[0, ::-1].tolist()
    resp = post_json(srv, "/api/gradients", {"text": text, "start": 0, "length": 5})
    assert resp["tokens"] == ["KING", ":"] and resp["target"] == "<end>" and resp["cut"]
    # one token before the line ends is no span
    expect_error(post(srv, "/api/gradients", {"text": text, "start": 1, "length": 5}), 400,
                 "line ends")


@pytest.mark.parametrize(("body", "word"), [
    ({"length": 1}, "length"), ({"length": LIMITS["max_span"] + 1}, "length"),
    ({"length": "10"}, "length"), ({"text": CHAR_TEXT, "start": len(CHAR_TEXT)}, "start"),
    ({"text": CHAR_TEXT, "start": len(CHAR_TEXT) - 1}, "the one after"),
    ({"text": CHAR_TEXT, "start": -1}, "start"), ({"text": "The \u00a7"}, "never saw"),
    ({"text": ""}, "text"), ({"text": 3}, "text"), ({"layer": 0}, "layer"),
    ({"text": "The", "span": [0, 1]}, "span")])
def test_gradients_bad_fields(servers, body, word):
    expect_error(post(servers["lstm"], "/api/gradients", body), 400, word)


def test_gradients_short_text_has_t_norms_or_is_refused(servers):
    r = post(servers["lstm"], "/api/gradients", {"text": "Th", "length": 5})
    if r.status == 400:
        return
    resp = r.json()
    assert all(len(s["norms"]) == resp["T"] for s in resp["series"]), [
        (s["kind"], len(s["norms"])) for s in resp["series"]]


# ---- robustness --------------------------------------------------------------------------


def test_foreign_host_is_refused(servers):
    srv = servers["lstm"]
    p = port(srv)
    for host in (f"evil.example:{p}", "evil.example", f"127.0.0.1:{p + 1}", "127.0.0.1",
                 f"127.0.0.2:{p}", ""):
        for method, path in (("GET", "/"), ("GET", "/api/run"), ("GET", "/api/sample"),
                             ("POST", "/api/neurons"), ("GET", "/static/app.css")):
            r = call(srv, method, path, b"{}" if method == "POST" else None,
                     {"Host": host, "Content-Type": "application/json"})
            expect_error(r, 403, srv.url)
    for host in (f"127.0.0.1:{p}", f"localhost:{p}", f"LOCALHOST:{p}", f"[::1]:{p}"):
        assert call(srv, "GET", "/api/run", headers={"Host": host}).status == 200


def test_cross_site_post_is_refused(servers):
    srv = servers["lstm"]
    p = port(srv)
    for origin in ("http://evil.example", f"http://evil.example:{p}", "null",
                   f"https://127.0.0.1:{p}", f"http://127.0.0.1:{p + 1}", "http://127.0.0.1"):
        for path in ("/api/neurons", "/api/neurons/match", "/api/gradients"):
            r = post(srv, path, {"text": CHAR_TEXT, "span": [0, 2]},
                     headers={"Origin": origin})
            expect_error(r, 403, "cross-site")
    for origin in (f"http://127.0.0.1:{p}", f"http://localhost:{p}"):
        r = post(srv, "/api/neurons", {"text": CHAR_TEXT}, headers={"Origin": origin})
        assert r.status == 200, r.body


def test_internal_error_is_500_and_server_goes_on(servers, monkeypatch, capsys):
    srv = servers["lstm"]

    def boom(self, body):
        raise RuntimeError("boom in neurons")

    monkeypatch.setattr(App, "neurons", boom)
    msg = expect_error(post(srv, "/api/neurons", {}), 500, "RuntimeError", "boom in neurons")
    assert "internal error" in msg
    assert get(srv, "/api/run").status == 200
    monkeypatch.undo()
    assert post(srv, "/api/neurons", {"text": CHAR_TEXT}).status == 200
    assert "RuntimeError" in capsys.readouterr().err


def test_client_leaving_a_stream_leaves_the_server_serving(servers, models):
    srv = servers["lstm"]
    req = (f"GET /api/sample?length={MAXL}&temperature=1 HTTP/1.1\r\n"
           f"Host: 127.0.0.1:{port(srv)}\r\n\r\n").encode()
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", port(srv)), timeout=10) as s:
            s.sendall(req)
            assert s.recv(300).startswith(b"HTTP/1.0 200")
    _, _, done = split_events(sample(srv, length=20, seed=3))
    assert done["text"] == models["lstm"].generate("", 20, temperature=0.8, seed=3)
    assert get(srv, "/api/run").status == 200


def test_failure_mid_stream_is_an_error_event(servers, models, monkeypatch, capsys):
    import rnnkit.generate

    real = rnnkit.generate.stream

    def failing(*args, **kwargs):
        for i, draw in enumerate(real(*args, **kwargs)):
            if i == 2:
                raise RuntimeError("the model broke")
            yield draw

    monkeypatch.setattr(rnnkit.generate, "stream", failing)
    srv = servers["lstm"]
    events = sample(srv, length=10, seed=4)
    assert [e for e, _ in events] == ["start", "token", "token", "error"]
    assert "RuntimeError" in events[-1][1]["error"] and "the model broke" in events[-1][1]["error"]
    assert "the model broke" in capsys.readouterr().err
    monkeypatch.undo()
    _, _, done = split_events(sample(srv, length=10, seed=4))
    assert done["text"] == models["lstm"].generate("", 10, temperature=0.8, seed=4)


def test_concurrent_samples_agree(servers, models):
    srv = servers["lstm"]
    with ThreadPoolExecutor(8) as pool:
        texts = list(pool.map(lambda _: split_events(sample(srv, length=150, seed=42,
                                                            temperature=1.0))[2]["text"],
                              range(8)))
    assert texts == [models["lstm"].generate("", 150, temperature=1.0, seed=42)] * 8


def test_concurrent_mixed_requests(servers, models):
    srv, tm = servers["lstm"], models["lstm"]
    expected = {"sample": tm.generate("The", 60, temperature=0.8, seed=1)}

    def job(i):
        if i % 3 == 0:
            return "sample", split_events(sample(srv, prime="The", length=60, seed=1))[2]["text"]
        if i % 3 == 1:
            return "neurons", post_json(srv, "/api/neurons", {"text": CHAR_TEXT, "layer": 1,
                                                              "kind": "c"})["values"]
        return "gradients", post_json(srv, "/api/gradients", {"text": CHAR_TEXT,
                                                              "length": 20})["loss"]

    with ThreadPoolExecutor(9) as pool:
        results = list(pool.map(job, range(18)))
    for kind, value in results:
        expected.setdefault(kind, value)
        assert value == expected[kind]


@pytest.fixture
def no_checkpoint_run(runs, tmp_path):
    run = tmp_path / "starting"
    run.mkdir()
    records = RunDir(runs["lstm"]).records()[:3]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run, records


def test_no_checkpoint_yet_metrics_work(no_checkpoint_run):
    run, records = no_checkpoint_run
    with serving(run) as srv:
        assert get_json(srv, "/api/metrics") == {"total": 3, "reset": False,
                                                 "training": False, "records": records}


def test_no_checkpoint_yet_api_run(no_checkpoint_run):
    run, _ = no_checkpoint_run
    with serving(run) as srv:
        info = get_json(srv, "/api/run")
        assert info["checkpoint"] is None and info["model"] is None
        assert info["has_metrics"] is True and info["limits"] == LIMITS


def test_no_checkpoint_yet_model_endpoints_are_409(no_checkpoint_run):
    run, _ = no_checkpoint_run
    with serving(run) as srv:
        expect_error(get(srv, "/api/sample?length=5"), 409, "no checkpoint")
        expect_error(post(srv, "/api/neurons", {"text": "The"}), 409, "no checkpoint")
        expect_error(post(srv, "/api/neurons/match", {"text": "The", "span": [0, 1]}), 409,
                     "no checkpoint")
        expect_error(post(srv, "/api/gradients", {"text": "The"}), 409, "no checkpoint")


def test_serve_cli_no_such_run(capsys, tmp_path):
    capsys.readouterr()
    assert main(["serve", str(tmp_path / "no" / "such" / "dir")]) == 2
    cap = capsys.readouterr()
    lines = cap.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "no such" in lines[0]
    assert cap.out == ""
    assert main(["serve", "no/such/dir"]) == 2
    assert capsys.readouterr().err.startswith("error: no/such/dir")


def test_serve_cli_port_in_use(capsys, runs):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        taken = s.getsockname()[1]
        capsys.readouterr()
        assert main(["serve", str(runs["lstm"]), "--port", str(taken)]) == 2
    cap = capsys.readouterr()
    lines = cap.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert f"port {taken}" in lines[0] and "in use" in lines[0]


def test_checkpoint_file_is_served(capsys, runs, models):
    ckpt = RunDir(runs["lstm"]).newest_best()
    with serving(ckpt) as srv:
        info = get_json(srv, "/api/run")
        assert info["kind"] == "checkpoint" and info["has_metrics"] is False
        assert info["checkpoint"]["step"] == 6 and info["checkpoint"]["path"] == str(ckpt)
        assert info["heldout"]["source"] == heldout(runs["lstm"], "char")[1]
        assert get_json(srv, "/api/metrics") == {"total": 0, "reset": False,
                                                 "training": False, "records": []}
        assert get_json(srv, "/api/metrics?since=2")["reset"] is True
        _, _, done = split_events(sample(srv, prime="The", length=30, seed=8))
        assert as_printed(done["text"]) == cli_sample(capsys, ckpt, "The", 30, 8, 0.8)
        resp = post_json(srv, "/api/neurons", {"text": CHAR_TEXT, "layer": 1, "kind": "c"})
        check_neurons(resp, models["lstm"], CHAR_TEXT, 0, 1000, 1, "c", "your text")


# ---- a new best checkpoint ---------------------------------------------------------------


def test_server_picks_up_a_new_best_checkpoint(capsys, runs, tmp_path):
    run = tmp_path / "resumed"
    shutil.copytree(runs["lstm"], run)
    with serving(run) as srv:
        assert get_json(srv, "/api/run")["checkpoint"]["step"] == 6
        _, _, before = split_events(sample(srv, prime="The", length=40, seed=2))
        assert as_printed(before["text"]) == cli_sample(capsys, run, "The", 40, 2, 0.8)
        assert main(["train", "--resume", "--out", str(run), "--max-steps", "9",
                     "--no-progress"]) == 0
        meta = best_meta(run)
        assert meta["step"] == 9                  # the validation loss still falls at step 9
        time.sleep(1.1)
        info = get_json(srv, "/api/run")
        assert info["checkpoint"] == {"step": 9, "val_loss": meta["best_val"],
                                      "path": str(RunDir(run).newest_best())}
        start, _, after = split_events(sample(srv, prime="The", length=40, seed=2))
        assert start["checkpoint_step"] == 9
        assert as_printed(after["text"]) == cli_sample(capsys, run, "The", 40, 2, 0.8)
        assert after["text"] == rnnkit.load(run).generate("The", 40, temperature=0.8, seed=2)
        assert after["text"] != before["text"]
        records = RunDir(run).records()
        assert get_json(srv, "/api/metrics")["records"] == records
        assert [r["step"] for r in records if "val_loss" in r] == [3, 6, 9]


# ---- what an adversarial review found ---------------------------------------------------------


def test_a_non_finite_number_in_the_log_is_skipped_not_a_500(runs, tmp_path):
    run = tmp_path / "nan"
    shutil.copytree(runs["lstm"], run, ignore=shutil.ignore_patterns(".lock"))
    good = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join([good[0], '{"step": 2, "loss": NaN}',
                                                  '{"step": 3, "loss": 1e999}',
                                                  '{"step": 4, "x": [Infinity]}', *good[1:]])
                                       + "\n")
    with serving(run) as srv:
        got = get_json(srv, "/api/metrics")
    assert got["records"] == [json.loads(line) for line in good]


@pytest.mark.parametrize("origin", ["http://[::1", "http://%zz", "http://a b", "\x00"])
def test_an_unreadable_origin_is_refused_not_a_500(servers, origin):
    srv = servers["lstm"]
    body = b'{"length": 5}'
    r = raw_request(srv, b"POST /api/neurons HTTP/1.0\r\nHost: 127.0.0.1:%d\r\n"
                    b"Content-Type: application/json\r\nOrigin: %s\r\nContent-Length: %d\r\n"
                    b"\r\n%s" % (port(srv), origin.encode(), len(body), body))
    expect_error(r, 403)


def test_a_body_shorter_than_its_length_is_a_408(servers, monkeypatch):
    from rnnkit.server import Handler

    monkeypatch.setattr(Handler, "timeout", 1)
    srv = servers["lstm"]
    r = raw_request(srv, b"POST /api/neurons HTTP/1.0\r\nHost: 127.0.0.1:%d\r\n"
                    b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{}"
                    % port(srv), shut=False)
    expect_error(r, 408, "Content-Length")
    assert get(srv, "/api/run").status == 200


@pytest.mark.parametrize("twice", [b"Host: evil.example\r\n", b"Content-Length: 50\r\n"])
def test_a_header_given_twice_is_a_400(servers, twice):
    srv = servers["lstm"]
    body = b'{"length": 5}'
    r = raw_request(srv, b"POST /api/neurons HTTP/1.0\r\nHost: 127.0.0.1:%d\r\n"
                    b"Content-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s"
                    % (port(srv), len(body), twice, body))
    expect_error(r, 400, "more than once")


@pytest.mark.parametrize("value", ["1_0", "%201", "%D9%A1", "9" * 50, "0x10", "1e3", "%2B1"])
def test_integers_in_the_query_are_plain_ascii_digits(servers, value):
    expect_error(get(servers["lstm"], f"/api/metrics?since={value}"), 400, "since")


def test_a_json_integer_of_many_digits_is_a_400(servers):
    r = post(servers["lstm"], "/api/neurons", raw=b'{"start": 1' + b"0" * 100 + b"}")
    expect_error(r, 400, "digits")


def test_a_damaged_best_checkpoint_falls_back_to_last_with_a_warning(runs, tmp_path):
    run = tmp_path / "damaged"
    shutil.copytree(runs["lstm"], run, ignore=shutil.ignore_patterns(".lock"))
    data = bytearray((run / "best.safetensors").read_bytes())
    data[-100:-50] = bytes(50)                       # tensor bytes: the checksum fails
    (run / "best.safetensors").write_bytes(bytes(data))
    with serving(run) as srv:
        info = get_json(srv, "/api/run")
        assert info["checkpoint"]["path"].endswith("last.safetensors")
        assert "checksum" in info["warning"] and "last.safetensors" in info["warning"]
        assert get(srv, "/api/sample?length=5").status == 200
        for f in ("best.safetensors", "last.safetensors"):   # gone: the old model stays
            (run / f).unlink()
        time.sleep(1.1)
        info = get_json(srv, "/api/run")
        assert "gone" in info["warning"] and "showing the model loaded before" in info["warning"]
        assert get(srv, "/api/sample?length=5").status == 200


def test_a_folder_that_is_no_run_says_so(tmp_path):
    (tmp_path / "empty").mkdir()
    with serving(tmp_path / "empty") as srv:
        info = get_json(srv, "/api/run")
        assert info["checkpoint"] is None and "not a run directory" in info["heldout"]["error"]
        expect_error(get(srv, "/api/sample"), 409, "not a run directory")


@pytest.mark.parametrize("content", [b"not a checkpoint", b"\x80\x04pickle", b""])
def test_serve_on_a_file_that_is_no_checkpoint_is_one_error_line(tmp_path, capsys, content):
    f = tmp_path / "x.safetensors"
    f.write_bytes(content)
    assert main(["serve", str(f), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "internal" not in err


def test_serve_refuses_an_empty_host(runs, capsys):
    assert main(["serve", str(runs["lstm"]), "--host", "", "--port", "0"]) == 2
    assert "--host is empty" in capsys.readouterr().err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_stops_cleanly_on_ctrl_c_and_sigterm(runs, sig):
    p = subprocess.Popen([sys.executable, "-m", "rnnkit", "serve", str(runs["lstm"]), "--port",
                          "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert line.startswith("serving ") and "http://127.0.0.1:" in line
        p.send_signal(sig)
        out, err = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 0 and out == "stopped\n" and err == ""
