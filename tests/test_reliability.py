"""The command line under hostile conditions: pipes and devices as files, kills at any instant,
torn logs, crafted checkpoints, terminal escapes, absurd numbers, planted links.

Every failure must be one ``error: ...`` line on stderr and exit status 2: no traceback, no
warning, no hang, no huge allocation, nothing written outside the run directory.
"""

from __future__ import annotations

import io
import json
import math
import os
import random
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import TEXT
from rnnkit import checkpoint
from rnnkit.train import TrainConfig, Trainer

SMALL = ["--hidden-size", "16", "--embedding-dim", "8", "--batch-size", "4", "--seq-len",
         "12", "--sample-length", "10", "--no-progress"]
# the flags of the kill test and of the reference run every other test reads from
KILL_FLAGS = [*SMALL, "--eval-interval", "5", "--max-steps", "40", "--dropout", "0.2"]
RNNKIT = [sys.executable, "-m", "rnnkit"]


def rnnkit(*args: str | Path, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*RNNKIT, *map(str, args)], capture_output=True, timeout=timeout,
                          **kw)


def assert_one_error_line(r: subprocess.CompletedProcess, *patterns: str) -> str:
    err = r.stderr.decode("utf-8", "replace") if isinstance(r.stderr, bytes) else r.stderr
    assert r.returncode == 2, f"exit {r.returncode}; stderr: {err!r}"
    assert "Traceback" not in err and "Warning" not in err, err
    assert err.startswith("error: ") and err.endswith("\n") and err.count("\n") == 1, err
    for p in patterns:
        assert re.search(p, err), f"{p!r} not in {err!r}"
    return err


def assert_clean(r: subprocess.CompletedProcess) -> None:
    err = r.stderr.decode("utf-8", "replace") if isinstance(r.stderr, bytes) else r.stderr
    assert r.returncode == 0, f"exit {r.returncode}; stderr: {err!r}"
    assert "Traceback" not in err and "Warning" not in err, err


def records(run: Path, *, strict: bool = True) -> list[dict]:
    """The log's records without the wall-clock keys; with ``strict`` every line must be a
    whole JSON object (no torn or foreign line)."""
    data = (run / "metrics.jsonl").read_bytes()
    if strict:
        assert data == b"" or data.endswith(b"\n"), f"torn last line {data[-80:]!r}"
    out = []
    for line in data.decode("utf-8").splitlines():
        r = json.loads(line)
        assert isinstance(r, dict)
        out.append({k: v for k, v in r.items() if not k.endswith("_seconds")})
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("corpus") / "tiny.txt"
    p.write_text(TEXT * 60, encoding="utf-8")
    return p


@pytest.fixture(scope="module")
def run(tmp_path_factory, corpus) -> Path:
    """An uninterrupted CLI run with ``KILL_FLAGS`` (read only: copy before changing)."""
    out = tmp_path_factory.mktemp("ref") / "run"
    r = rnnkit("train", corpus, "--out", out, *KILL_FLAGS)
    assert_clean(r)
    return out


# ------------------------------------------------------------------------------------------------
# files that are not regular files
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def fifo(tmp_path) -> Path:
    p = tmp_path / "pipe.txt"
    os.mkfifo(p)
    return p


def test_fifo_as_training_corpus(tmp_path, fifo):
    t0 = time.monotonic()
    r = rnnkit("train", fifo, "--out", tmp_path / "out", "--max-steps", "2", *SMALL, timeout=20)
    assert_one_error_line(r, "FIFO")
    assert time.monotonic() - t0 < 20
    assert not (tmp_path / "out" / "last.safetensors").exists()


def test_fifo_as_the_file_to_score(run, fifo):
    r = rnnkit("score", run, fifo, timeout=20)
    assert_one_error_line(r, "FIFO")


def test_dev_zero_as_training_corpus(tmp_path):
    r = rnnkit("train", "/dev/zero", "--out", tmp_path / "out", "--max-steps", "2", *SMALL,
               timeout=20)
    assert_one_error_line(r, "/dev/zero", "device")


# ------------------------------------------------------------------------------------------------
# a kill at any instant
# ------------------------------------------------------------------------------------------------


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def _kill_when_checkpointed(proc: subprocess.Popen, path: Path) -> bool:
    """SIGKILL ``proc`` the instant a new ``path`` appears (busy polling): the moment between
    a checkpoint and whatever a trainer writes after it. False if it ended first."""
    before = _identity(path)
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        now = _identity(path)
        if now is not None and now != before:
            proc.kill()
            return True
    return False


def _last_step(log: Path) -> int:
    try:
        lines = log.read_bytes().split(b"\n")[:-1]
        return int(json.loads(lines[-1])["step"]) if lines else 0
    except (FileNotFoundError, ValueError, KeyError):
        return 0


def _kill_at_step(proc: subprocess.Popen, log: Path, step: int, then: float) -> bool:
    """SIGKILL ``proc`` ``then`` seconds after its log reaches ``step``."""
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if _last_step(log) >= step:
            time.sleep(then)
            if proc.poll() is None:
                proc.kill()
                return True
            return False
        time.sleep(0.0005)
    return False


def test_kill_at_random_instants_then_resume_gives_the_log_of_an_unbroken_run(tmp_path,
                                                                              corpus, run):
    """SIGKILLs at seeded random instants (process start, mid-step, mid-evaluation, mid-write)
    and right after a checkpoint lands, each followed by a resume (or a fresh start where no
    checkpoint was written yet), then a resume to the end: every record of the log, train and
    evaluation, equals that of the unbroken run, in order, once, with no torn line; and the
    checkpoints equal the unbroken run's bit for bit."""
    out = tmp_path / "killed"
    last, log = out / "last.safetensors", out / "metrics.jsonl"
    rng = random.Random(20261201)
    plan = ["checkpoint", "step", "checkpoint", "start", "step", "checkpoint", "step"]
    kills = 0
    for how in plan:
        saved = checkpoint.read_meta(last)["step"] if last.exists() else 0
        cmd = ["train", "--resume", "--out", str(out), "--no-progress"] if saved else \
            ["train", str(corpus), "--out", str(out), *KILL_FLAGS]
        proc = subprocess.Popen([*RNNKIT, *cmd], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        if how == "checkpoint":
            kills += _kill_when_checkpointed(proc, last)
        elif how == "step":                # mid-step, mid-evaluation or mid-write
            kills += _kill_at_step(proc, log, saved + rng.randint(1, 7), rng.uniform(0, 0.01))
        else:                              # while starting, reconciling the log, repairing
            try:
                proc.wait(timeout=rng.uniform(0.2, 0.6))
            except subprocess.TimeoutExpired:
                proc.kill()
                kills += 1
        _, err = proc.communicate(timeout=60)
        assert b"Traceback" not in err, err.decode()
        if proc.returncode == 0:             # it finished before the kill came
            break
        assert proc.returncode == -signal.SIGKILL, err.decode()
        # whatever a kill left, a reader sees only whole records of steps in order, once
        steps = [r["step"] for r in records(out, strict=False) if "loss" in r] \
            if log.exists() else []
        assert steps == list(range(1, len(steps) + 1))
    assert kills >= 5, "the plan must interrupt the run at least five times"
    if last.exists():
        r = rnnkit("train", "--resume", "--out", out, "--no-progress")
    else:
        r = rnnkit("train", corpus, "--out", out, *KILL_FLAGS)
    assert_clean(r)
    want = records(run)
    assert [r["step"] for r in want if "loss" in r] == list(range(1, 41))
    assert [r["step"] for r in want if "val_loss" in r] == list(range(5, 41, 5))
    got = records(out)
    assert got == want
    for name in ("last.safetensors", "best.safetensors"):
        a, ma = checkpoint.load(run / name)
        b, mb = checkpoint.load(out / name)
        for key in ("step", "best_val", "best_step", "epoch", "skipped_steps"):
            assert ma.get(key) == mb.get(key), (name, key)
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    leftovers = [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_torn_log_of_a_run_killed_before_its_first_checkpoint(tmp_path, corpus):
    """A fresh start into the directory works: the torn line never reaches the new log or
    the plot."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.jsonl").write_bytes(
        b'{"step": 1, "loss": 3.52, "train_seconds": 0.01, "lr": 0.002}\n'
        b'{"step": 2, "loss": 3.51, "train_seconds": 0.02, "lr": 0.002}\n'
        b'{"step": 3, "loss": 3.5')
    (out / ".lock").write_bytes(b"999999999\n")            # the dead process's lock file
    stale = out / ".last.safetensors.0123456789abcdef.tmp"  # and its half-written checkpoint
    stale.write_bytes(b"\x00" * 100)
    r = rnnkit("train", corpus, "--out", out, *SMALL, "--eval-interval", "5",
               "--max-steps", "6")
    assert_clean(r)
    assert not stale.exists()
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    recs = records(out)
    assert [x["step"] for x in recs if "loss" in x] == list(range(1, 7))
    assert [x["step"] for x in recs if "val_loss" in x] == [5, 6]


# ------------------------------------------------------------------------------------------------
# crafted checkpoints
# ------------------------------------------------------------------------------------------------


def _limit_address_space() -> None:
    limit = 1_500_000_000
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _peak_rss(args: list[str]) -> tuple[int, bytes, bytes, int]:
    """``(exit status, stdout, stderr, peak RSS in bytes)`` of one command, run with its
    address space limited to 1.5 GB."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    with open(os.devnull, "rb") as null, tempfile.TemporaryFile() as out, \
            tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(args, stdout=out, stderr=err, stdin=null, env=env,
                                preexec_fn=_limit_address_space)
        deadline = time.monotonic() + 120
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                pid, status, ru = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return proc.returncode, out.read(), err.read(), ru.ru_maxrss * 1024


def test_crafted_hidden_size_is_refused_before_any_allocation(tmp_path, run):
    tensors, meta = checkpoint.load(run / "last.safetensors")
    meta["model"]["hidden_size"] = 4000
    meta["train"]["hidden_size"] = 4000
    crafted = tmp_path / "crafted.safetensors"
    checkpoint.save(crafted, tensors, meta)

    # control: the real checkpoint samples fine under the same limit; note its peak memory
    rc, _, err, base_rss = _peak_rss([*RNNKIT, "sample", str(run / "last.safetensors"),
                                      "--length", "20"])
    assert rc == 0, err.decode()

    rc, out, err, rss = _peak_rss([*RNNKIT, "sample", str(crafted), "--length", "20"])
    r = subprocess.CompletedProcess([], rc, out, err)
    e = assert_one_error_line(r, "hidden|shape|tensor")
    assert "memory" not in e.lower(), e
    # 2 x 4000 LSTM weights would be ~800 MB; nothing near that may be touched
    assert rss < base_rss + 100_000_000, (rss, base_rss)

    rc, out, err, rss = _peak_rss([*RNNKIT, "info", str(crafted)])
    assert rc == 0 and b"Traceback" not in err, err.decode()
    assert rss < base_rss + 100_000_000, (rss, base_rss)


# ------------------------------------------------------------------------------------------------
# terminal escapes
# ------------------------------------------------------------------------------------------------


def test_escape_bytes_in_vocabulary_and_corpus_name_never_reach_the_terminal(tmp_path):
    name = "c\x1b]0;pwn\x07.txt"
    corpus = tmp_path / name
    corpus.write_text(("\x1b[31mred\x1b[0m and \x1b[2Jclear\x07 bell\n" * 200), encoding="utf-8")
    out = tmp_path / "run"
    cfg = TrainConfig(corpus=str(corpus), hidden_size=16, embedding_dim=8, num_layers=1,
                      batch_size=4, seq_len=12, eval_interval=5, sample_length=10, max_steps=5)
    Trainer(cfg, out, log=io.StringIO(), progress=False).run()
    meta = checkpoint.read_meta(out / "last.safetensors")
    assert "\x1b" in meta["vocab"]["itos"] and name in meta["train"]["corpus"]

    for args in (["info", out], ["info", out / "last.safetensors"],
                 ["sample", out, "--length", "50"],
                 ["sample", out, "--length", "50", "--temperature", "0"],
                 ["sample", out, "--length", "50", "--beam", "2"],
                 ["score", out, corpus]):
        r = rnnkit(*args)
        assert_clean(r)
        assert b"\x1b" not in r.stdout and b"\x07" not in r.stdout, (args, r.stdout)
        assert b"\x1b" not in r.stderr and b"\x07" not in r.stderr, (args, r.stderr)
        if args[0] == "info":               # shown escaped, not dropped
            assert b"\\x1b" in r.stdout and b"pwn" in r.stdout, r.stdout
    r = rnnkit("sample", out, "--length", "200", "--seed", "1")
    assert b"\\x1b" in r.stdout, r.stdout   # the model does write the token, escaped


def test_escape_bytes_in_error_messages(tmp_path):
    bad = tmp_path / "x\x1b[31m\x07.safetensors"
    bad.write_bytes(b"\x00" * 4)
    r = rnnkit("sample", bad)
    assert_one_error_line(r)
    assert b"\x1b" not in r.stderr and b"\x07" not in r.stderr, r.stderr


# ------------------------------------------------------------------------------------------------
# absurd numbers
# ------------------------------------------------------------------------------------------------


def test_enormous_learning_rate(tmp_path, corpus):
    out = tmp_path / "out"
    r = rnnkit("train", corpus, "--out", out, *SMALL, "--optimizer", "sgd", "--lr", "1e30",
               "--max-steps", "6", "--eval-interval", "3", text=True)
    assert "Warning" not in r.stderr and "Traceback" not in r.stderr, r.stderr
    if r.returncode == 0:
        assert re.search(r"^done: .*\d+ steps skipped", r.stdout, re.M), r.stdout
    else:
        assert_one_error_line(r, "non-finite")
    if (out / "last.safetensors").exists():
        tensors, _ = checkpoint.load(out / "last.safetensors")
        assert all(np.isfinite(v).all() for v in tensors.values())
    for rec in records(out):
        for k, v in rec.items():
            assert not (isinstance(v, float) and not math.isfinite(v)), (k, v)


def test_subnormal_temperature_is_greedy(run):
    greedy = rnnkit("sample", run, "--length", "60", "--temperature", "0")
    tiny = rnnkit("sample", run, "--length", "60", "--temperature", "1e-310")
    assert_clean(greedy)
    assert_clean(tiny)
    assert tiny.stdout == greedy.stdout and tiny.stderr == b"" and greedy.stdout


def test_negative_seed_names_the_flag(tmp_path):
    r = rnnkit("train", "--seed", "-1", "--out", tmp_path / "out")
    assert_one_error_line(r, "--seed")
    assert not (tmp_path / "out").exists()


def test_help_shows_each_default_once():
    r = rnnkit("train", "--help", text=True)
    assert r.returncode == 0 and r.stderr == ""
    entries: list[str] = []
    for line in r.stdout.splitlines():
        if re.match(r"  \S", line):           # an argument's first line
            entries.append(line)
        elif entries and line.startswith("   "):
            entries[-1] += " " + line.strip()
    assert len(entries) > 20
    for entry in entries:
        n = len(re.findall(r"[(\[]default", entry))
        assert n <= 1, entry


# ------------------------------------------------------------------------------------------------
# planted links in the output directory
# ------------------------------------------------------------------------------------------------


def test_training_never_writes_through_a_planted_link(tmp_path, corpus):
    outside = tmp_path / "outside"
    outside.mkdir()
    victims = {"metrics.jsonl": b"precious log\n", "loss.png": b"precious png"}
    out = tmp_path / "out"
    out.mkdir()
    for name, content in victims.items():
        (outside / name).write_bytes(content)
        (out / name).symlink_to(outside / name)
    r = rnnkit("train", corpus, "--out", out, *SMALL, "--eval-interval", "3",
               "--max-steps", "3")
    if r.returncode == 0:
        assert_clean(r)
        for name in victims:
            assert not (out / name).is_symlink(), name
        assert [x["step"] for x in records(out) if "loss" in x] == [1, 2, 3]
    else:
        assert_one_error_line(r, "link")
    for name, content in victims.items():
        assert (outside / name).read_bytes() == content, name
    assert sorted(p.name for p in outside.iterdir()) == sorted(victims)
