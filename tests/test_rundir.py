"""The run directory: atomic writes never through a link, whole-line appends, one trainer per
directory, a metrics log that a kill cannot tear or duplicate, and a best model never lost."""

from __future__ import annotations

import errno
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rnnkit import checkpoint
from rnnkit.files import FileError, append_line, write_atomic
from rnnkit.rundir import RunDir, RunDirError, load_language_model
from rnnkit.train import TrainConfig, Trainer


def _cfg(corpus: Path, **kw) -> TrainConfig:
    base = {"corpus": str(corpus), "hidden_size": 16, "embedding_dim": 8, "num_layers": 2,
            "batch_size": 4, "seq_len": 12, "eval_interval": 5, "sample_length": 10,
            "max_steps": 10}
    base.update(kw)
    return TrainConfig(**base)


def _quiet(**kw):
    return {"log": io.StringIO(), "progress": False, **kw}


def _lines(path: Path) -> list[dict]:
    """Every line of a log, each required to be a whole JSON object."""
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), f"torn last line: {data[-80:]!r}"
    return [json.loads(line) for line in data.decode("utf-8").splitlines()]


# ------------------------------------------------------------------------------------------------
# write_atomic / append_line
# ------------------------------------------------------------------------------------------------


def test_write_atomic_replaces_a_planted_link_and_never_writes_through_it(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "precious.txt"
    victim.write_bytes(b"precious\n")
    run = tmp_path / "run"
    run.mkdir()
    target = run / "metrics.jsonl"
    target.symlink_to(victim)

    write_atomic(target, b"new contents\n")

    assert not target.is_symlink() and target.is_file()
    assert target.read_bytes() == b"new contents\n"
    assert victim.read_bytes() == b"precious\n"
    assert sorted(p.name for p in run.iterdir()) == ["metrics.jsonl"]   # no temporary left


def test_write_atomic_ignores_links_planted_at_likely_temporary_names(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    run = tmp_path / "run"
    run.mkdir()
    target = run / "last.safetensors"
    target.write_bytes(b"old")
    planted = {}
    for name in ("last.safetensors.tmp", ".last.safetensors.tmp", "last.tmp", ".last.tmp",
                 "last.safetensors~", ".last.safetensors.swp", "last.safetensors.part",
                 ".last.safetensors.0.tmp", "tmp", ".tmp"):
        victim = outside / f"victim-{len(planted)}"
        victim.write_bytes(b"precious " + name.encode())
        (run / name).symlink_to(victim)
        planted[name] = victim

    for k in range(20):                           # many writes: the names never collide
        write_atomic(target, f"new {k}".encode())
        assert target.read_bytes() == f"new {k}".encode()
        assert not target.is_symlink()

    for name, victim in planted.items():
        assert victim.read_bytes() == b"precious " + name.encode(), name
        assert (run / name).is_symlink(), name   # nothing of anyone else's is touched
    assert sorted(p.name for p in run.iterdir()) == sorted([*planted, "last.safetensors"])


def test_append_line_refuses_a_symlinked_log(tmp_path):
    victim = tmp_path / "precious.txt"
    victim.write_bytes(b"precious\n")
    log = tmp_path / "metrics.jsonl"
    log.symlink_to(victim)
    with pytest.raises(FileError, match="symbolic link"):
        append_line(log, '{"step": 1}')
    assert victim.read_bytes() == b"precious\n"
    assert log.is_symlink()


def test_append_line_refuses_a_dangling_symlinked_log(tmp_path):
    """A link to a file that does not exist yet must not create that file either."""
    victim = tmp_path / "would-be-created.txt"
    log = tmp_path / "metrics.jsonl"
    log.symlink_to(victim)
    with pytest.raises(FileError, match="symbolic link"):
        append_line(log, '{"step": 1}')
    assert not victim.exists()


@pytest.mark.parametrize("before", [b"", b'{"step": 1, "loss": 3.5}\n'])
def test_append_line_on_a_full_disk_leaves_no_torn_line(tmp_path, monkeypatch, before):
    log = tmp_path / "metrics.jsonl"
    log.write_bytes(before)
    real_write = os.write
    line = json.dumps({"step": 2, "loss": 3.25, "pad": "x" * 200})

    def half_then_enospc(fd, data):
        b = bytes(data)
        if b"pad" not in b:                # somebody else's write (pytest, ...): untouched
            return real_write(fd, data)
        real_write(fd, b[: len(b) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as m:
        m.setattr(os, "write", half_then_enospc)
        with pytest.raises(FileError):
            append_line(log, line)
    assert log.read_bytes() == before

    append_line(log, line)                 # and the next append is a whole line after it
    assert log.read_bytes() == before + line.encode() + b"\n"


def test_append_line_on_a_short_write_then_enospc_leaves_no_torn_line(tmp_path, monkeypatch):
    """The first write succeeds but only in part (as on a nearly full disk), the next fails."""
    log = tmp_path / "metrics.jsonl"
    before = b'{"step": 1, "loss": 3.5}\n'
    log.write_bytes(before)
    real_write = os.write
    calls = []

    def short_then_enospc(fd, data):
        b = bytes(data)
        if b"pad" not in b and not calls:
            return real_write(fd, data)
        calls.append(len(b))
        if len(calls) == 1:
            return real_write(fd, b[: len(b) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as m:
        m.setattr(os, "write", short_then_enospc)
        with pytest.raises(FileError):
            append_line(log, json.dumps({"step": 2, "pad": "y" * 100}))
    assert log.read_bytes() == before


# ------------------------------------------------------------------------------------------------
# the lock
# ------------------------------------------------------------------------------------------------


def test_lock_refuses_a_second_holder_until_released(tmp_path):
    first, second = RunDir(tmp_path / "run"), RunDir(tmp_path / "run")
    first.acquire()
    try:
        with pytest.raises(RunDirError, match="another rnnkit process"):
            second.acquire()
        with pytest.raises(RunDirError, match="another rnnkit process"):
            RunDir(tmp_path / "run").acquire()      # a third, still refused
    finally:
        first.release()
    second.acquire()
    try:
        with pytest.raises(RunDirError, match="another rnnkit process"):
            first.acquire()
    finally:
        second.release()
    with RunDir(tmp_path / "run"):
        pass


def test_a_second_trainer_on_the_same_out_is_refused(tmp_path, corpus):
    out = tmp_path / "run"
    t1 = Trainer(_cfg(corpus), out, **_quiet())
    try:
        with pytest.raises(RunDirError, match="another rnnkit process"):
            Trainer(_cfg(corpus), out, **_quiet())
        with pytest.raises(RunDirError, match="another rnnkit process"):
            Trainer(_cfg(corpus, max_steps=20), out, **_quiet())
    except BaseException:
        t1.close()
        raise
    t1.run()                               # the refused trainers did not disturb the first
    steps = [r["step"] for r in _lines(out / "metrics.jsonl") if "loss" in r]
    assert steps == list(range(1, 11))
    # released at the end of run(): the directory can be resumed now
    t3 = Trainer(None, out, resume=True, overrides={"max_steps": 12}, **_quiet())
    t3.run()
    steps = [r["step"] for r in _lines(out / "metrics.jsonl") if "loss" in r]
    assert steps == list(range(1, 13))


SMALL = ["--hidden-size", "16", "--embedding-dim", "8", "--batch-size", "4", "--seq-len",
         "12", "--sample-length", "0", "--no-progress"]


def test_two_train_processes_on_the_same_out(tmp_path, corpus):
    out = tmp_path / "run"
    # no checkpoint until the end, so only the lock can refuse the second process
    args = [sys.executable, "-m", "rnnkit", "train", str(corpus), "--out", str(out), *SMALL,
            "--eval-interval", "1000000", "--max-steps", "1000000"]
    first = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    try:
        deadline = time.time() + 60
        metrics = out / "metrics.jsonl"
        while time.time() < deadline and first.poll() is None and \
                (not metrics.is_file() or metrics.stat().st_size < 200):
            time.sleep(0.02)
        assert first.poll() is None, first.communicate()[1]
        second = subprocess.run(args, capture_output=True, text=True, timeout=60)
        resumed = subprocess.run([*args[:4], "--resume", "--out", str(out), "--no-progress"],
                                 capture_output=True, text=True, timeout=60)
        assert first.poll() is None, "the first run was disturbed"
    finally:
        first.send_signal(signal.SIGINT)   # finishes its step, saves, stops
        _, err1 = first.communicate(timeout=60)
    for r in (second, resumed):
        assert r.returncode == 2, (r.stdout, r.stderr)
        assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
        assert "another rnnkit process" in r.stderr
        assert "Traceback" not in r.stderr
    assert first.returncode == 130, err1
    recs = _lines(out / "metrics.jsonl")
    steps = [r["step"] for r in recs if "loss" in r]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) > 1
    last = checkpoint.read_meta(out / "last.safetensors")
    assert last["step"] == steps[-1]


# ------------------------------------------------------------------------------------------------
# the metrics log
# ------------------------------------------------------------------------------------------------


def _rec(step: int, **kw) -> dict:
    return {"step": step, "loss": 3.0 - step / 100, "lr": 0.002, **kw}


def _write_log(rd: RunDir, recs: list[dict], torn: bytes = b"") -> None:
    rd.path.mkdir(parents=True, exist_ok=True)
    rd.metrics.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in recs) + torn)


def test_records_skip_a_torn_last_line(tmp_path):
    rd = RunDir(tmp_path / "run")
    recs = [_rec(1), _rec(2), _rec(3)]
    _write_log(rd, recs, torn=b'{"step": 4, "loss": 2.9')
    assert rd.records() == recs
    _write_log(rd, recs, torn=b'{"step": 4, "loss": 2.96, "lr": 0.002}')  # whole but no \n
    assert rd.records() == recs
    assert RunDir(tmp_path / "nothing").records() == []


def test_reconcile_keeps_up_to_the_checkpoint_and_cuts_the_rest(tmp_path):
    rd = RunDir(tmp_path / "run")
    ev = _rec(5, val_loss=2.5)
    recs = [_rec(k) for k in range(1, 6)] + [ev] + [_rec(k) for k in range(6, 9)]
    _write_log(rd, recs, torn=b'{"step": 9, "lo')
    rd.reconcile(5, ev)
    assert _lines(rd.metrics) == recs[:6]
    rd.reconcile(5, ev)                    # again: nothing changes
    assert _lines(rd.metrics) == recs[:6]


def test_reconcile_restores_a_lost_eval_record(tmp_path):
    rd = RunDir(tmp_path / "run")
    ev = {"step": 5, "train_loss": 2.75, "val_loss": 2.5, "val_ppl": 12.18, "skipped_steps": 0}
    # killed after the checkpoint at step 5 was written, but the log lost its eval record
    # and got later lines (a file system that kept the later appends but not the earlier one
    # is not possible, but a log copied back from a backup is)
    _write_log(rd, [_rec(k) for k in range(1, 6)], torn=b'{"step": 6, "loss"')
    rd.reconcile(5, ev)
    assert _lines(rd.metrics) == [*[_rec(k) for k in range(1, 6)], ev]
    # a log that is missing altogether comes back with the record
    rd.metrics.unlink()
    rd.reconcile(5, ev)
    assert _lines(rd.metrics) == [ev]


def test_reconcile_replaces_the_file_and_never_truncates_it_in_place(tmp_path):
    rd = RunDir(tmp_path / "run")
    ev = _rec(5, val_loss=2.5)
    recs = [_rec(k) for k in range(1, 6)] + [ev] + [_rec(k) for k in range(6, 9)]
    _write_log(rd, recs, torn=b'{"step": 9, "lo')
    before = rd.metrics.read_bytes()
    with open(rd.metrics, "rb") as old:    # a reader (or a kill) sees the old file whole
        ino = os.fstat(old.fileno()).st_ino
        rd.reconcile(5, ev)
        assert old.read() == before
        assert os.fstat(old.fileno()).st_size == len(before)
    assert os.stat(rd.metrics).st_ino != ino
    assert _lines(rd.metrics) == recs[:6]
    assert sorted(p.name for p in rd.path.iterdir()) == ["metrics.jsonl"]


def test_reconcile_replaces_a_symlinked_log_without_writing_through_it(tmp_path):
    victim = tmp_path / "precious.txt"
    content = b"".join(json.dumps(_rec(k)).encode() + b"\n" for k in range(1, 9))
    victim.write_bytes(content)
    rd = RunDir(tmp_path / "run")
    rd.path.mkdir()
    rd.metrics.symlink_to(victim)
    rd.reconcile(3, None)
    assert victim.read_bytes() == content
    assert not rd.metrics.is_symlink()
    assert _lines(rd.metrics) == [_rec(k) for k in range(1, 4)]


# ------------------------------------------------------------------------------------------------
# best and last
# ------------------------------------------------------------------------------------------------


def test_a_best_left_behind_last_is_found_and_repaired(tmp_path, corpus):
    out = tmp_path / "run"
    older: dict[str, bytes] = {}

    def keep_first_best(step: int) -> None:
        if step == 6:
            older["best"] = (out / "best.safetensors").read_bytes()

    Trainer(_cfg(corpus, lr=0.01), out, before_step=keep_first_best, **_quiet()).run()
    last_meta = checkpoint.read_meta(out / "last.safetensors")
    assert last_meta["step"] == 10 and last_meta["best_step"] == 10, \
        "precondition: the second evaluation must be a new best"
    # a kill between writing last and best: best is still the one of step 5
    (out / "best.safetensors").write_bytes(older["best"])
    assert checkpoint.read_meta(out / "best.safetensors")["step"] == 5

    rd = RunDir(out)
    assert rd.newest_best() == rd.last
    model, _, meta = load_language_model(out)
    assert meta["step"] == 10
    last_tensors, _ = checkpoint.load(out / "last.safetensors")
    for name, p in model.named_parameters():
        np.testing.assert_array_equal(p, last_tensors[f"model.{name}"])

    # resuming (under the lock) repairs best
    Trainer(None, out, resume=True, **_quiet()).close()
    assert (out / "best.safetensors").read_bytes() == (out / "last.safetensors").read_bytes()
    assert rd.newest_best() == rd.best


def test_a_best_ahead_of_a_non_best_last_is_kept(tmp_path, corpus):
    """The reverse case: last is newer but not a new best; best is the best model."""
    out = tmp_path / "run"
    Trainer(_cfg(corpus, lr=0.01), out, **_quiet()).run()
    t, m = checkpoint.load(out / "last.safetensors")
    m = {**m, "step": 15, "best_step": 10}
    checkpoint.save(out / "last.safetensors", t, m)
    best_bytes = (out / "best.safetensors").read_bytes()
    assert RunDir(out).newest_best() == out / "best.safetensors"
    assert load_language_model(out)[2]["step"] == 10
    Trainer(None, out, resume=True, overrides={"max_steps": 15}, **_quiet()).close()
    assert (out / "best.safetensors").read_bytes() == best_bytes


@pytest.mark.parametrize("change", [{"num_layers": 10**8}, {"hidden_size": 4000},
                                    {"one_hot": True}, {"cell": "gru"}])
def test_a_config_that_does_not_fit_the_tensors_is_refused_before_building(tmp_path, corpus,
                                                                         change):
    Trainer(_cfg(corpus), tmp_path / "r", **_quiet()).run()
    tensors, meta = checkpoint.load(tmp_path / "r" / "last.safetensors")
    meta = {k: v for k, v in meta.items() if k not in ("format", "version", "rnnkit_version")}
    meta["model"] = {**meta["model"], **change}
    checkpoint.save(tmp_path / "evil.safetensors", tensors, meta)
    t0 = time.perf_counter()
    with pytest.raises(checkpoint.CheckpointError, match="not a usable rnnkit checkpoint"):
        load_language_model(tmp_path / "evil.safetensors")
    assert time.perf_counter() - t0 < 5        # nothing sized by the claimed config was made


@pytest.mark.parametrize("name", [".lock", "metrics.jsonl", "last.safetensors", "loss.png"])
def test_a_fifo_planted_in_the_run_directory_is_refused_not_waited_on(tmp_path, corpus, name):
    out = tmp_path / "r"
    out.mkdir()
    os.mkfifo(out / name)
    with pytest.raises(RunDirError, match="not a regular file"):
        Trainer(_cfg(corpus), out, **_quiet())
    (out / name).unlink()
    with RunDir(out):                  # the lock was released on the way out
        pass


def test_append_line_refuses_a_fifo_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "log")
    with pytest.raises(FileError, match="not a regular file"):
        append_line(tmp_path / "log", "{}")


@pytest.mark.parametrize("line", [b"[" * 200_000, b'{"step": 1' + b"0" * 400 + b"}",
                                  b'{"step": 1e999}', b"\xff\xfe garbage"])
def test_hostile_log_lines_are_skipped_not_raised(tmp_path, line):
    rd = RunDir(tmp_path)
    _write_log(rd, [_rec(1), _rec(2)])
    with open(rd.metrics, "ab") as f:
        f.write(line + b"\n")
    assert [r["step"] for r in rd.records()] == [1, 2]
    rd.reconcile(2, None)
    assert [r["step"] for r in _lines(rd.metrics)] == [1, 2]
    rd.plot()


def test_reconcile_never_appends_through_a_hard_link(tmp_path, corpus):
    Trainer(_cfg(corpus), tmp_path / "r", **_quiet()).run()
    outside = tmp_path / "important.log"
    os.link(tmp_path / "r" / "metrics.jsonl", outside)
    before = outside.read_bytes()
    Trainer(None, tmp_path / "r", resume=True, overrides={"max_steps": 14},
            **_quiet()).run()
    assert outside.read_bytes() == before
    assert os.stat(tmp_path / "r" / "metrics.jsonl").st_nlink == 1


@pytest.mark.parametrize("broken", ["best", "last"])
def test_one_damaged_checkpoint_does_not_hide_the_other(tmp_path, corpus, broken):
    Trainer(_cfg(corpus), tmp_path / "r", **_quiet()).run()
    path = tmp_path / "r" / f"{broken}.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    load_language_model(tmp_path / "r")                   # the other one
    if broken == "best":                                  # last is a new best: best restored
        Trainer(None, tmp_path / "r", resume=True, overrides={"max_steps": 14},
                **_quiet()).run()
        checkpoint.load(path)


def test_a_refused_run_leaves_no_directory_behind(tmp_path, corpus):
    with pytest.raises(ValueError):
        Trainer(_cfg(tmp_path / "missing.txt"), tmp_path / "a" / "b", **_quiet())
    with pytest.raises(ValueError):
        Trainer(None, tmp_path / "c", resume=True, **_quiet())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.txt"]


@pytest.mark.parametrize("change", [{"train_seconds": 10**400}, {"best_val": "x"},
                                    {"best_step": "zz"}, {"record": [1, 2]},
                                    {"window": ["a"]}, {"train": {"lr": 10**400}}])
def test_a_resume_from_crafted_state_is_one_checkpoint_error(tmp_path, corpus, change):
    Trainer(_cfg(corpus), tmp_path / "r", **_quiet()).run()
    last = tmp_path / "r" / "last.safetensors"
    tensors, meta = checkpoint.load(last)
    meta = {k: v for k, v in meta.items() if k not in ("format", "version", "rnnkit_version")}
    if "train" in change:
        change = {"train": {**meta["train"], **change["train"]}}
    checkpoint.save(last, tensors, {**meta, **change})
    with pytest.raises(checkpoint.CheckpointError, match=r"cannot resume|not a usable"):
        Trainer(None, tmp_path / "r", resume=True, **_quiet())


def test_a_new_run_is_refused_where_another_run_left_a_best(tmp_path, corpus):
    Trainer(_cfg(corpus), tmp_path / "r", **_quiet()).run()
    (tmp_path / "r" / "last.safetensors").unlink()
    with pytest.raises(FileExistsError, match=r"best\.safetensors"):
        Trainer(_cfg(corpus), tmp_path / "r", **_quiet())


# ---- reading a log as it grows (rnnkit serve) ----------------------------------------------------

def test_metrics_tail_reads_only_whole_new_lines_and_restarts_on_a_replaced_log(tmp_path):
    from rnnkit.rundir import MetricsTail

    rd = RunDir(tmp_path)
    tail = MetricsTail(rd.metrics)
    assert tail.read() == [] and tail.generation == 0            # no log yet
    rd.new_log()
    for s in (1, 2):
        rd.append({"step": s, "loss": 1.0 / s})
    assert [r["step"] for r in tail.read()] == [1, 2]
    gen = tail.generation
    with open(rd.metrics, "ab") as f:                # a writer caught in the middle of a line
        f.write(b'{"step": 3, "lo')
    assert [r["step"] for r in tail.read()] == [1, 2]
    with open(rd.metrics, "ab") as f:
        f.write(b'ss": 0.3}\nnot json\n{"step": 4}\n')
    assert [r["step"] for r in tail.read()] == [1, 2, 3, 4] and tail.generation == gen
    assert tail.read() == rd.records()
    rd.reconcile(2, None)                            # a resume cuts the log: a new file
    assert [r["step"] for r in tail.read()] == [1, 2] and tail.generation == gen + 1
    rd.append({"step": 3, "loss": 9.0})
    assert tail.read()[-1] == {"step": 3, "loss": 9.0}
    # the same inode rewritten in place to other bytes of at least the old length
    data = rd.metrics.read_bytes()
    with open(rd.metrics, "r+b") as f:
        f.write(data.replace(b"9.0", b"7.0"))
    assert tail.read()[-1] == {"step": 3, "loss": 7.0}
    rd.metrics.unlink()
    assert tail.read() == []


def test_trainer_is_the_live_holder_of_the_lock_and_probing_never_takes_it(tmp_path):
    rd = RunDir(tmp_path / "run")
    assert rd.trainer() is None                      # no directory, no lock file
    rd.acquire()
    try:
        assert rd.trainer() == os.getpid()
        other = RunDir(tmp_path / "run")
        for _ in range(50):                           # probing never blocks a starting trainer
            assert other.trainer() == os.getpid()
    finally:
        rd.release()
    assert rd.trainer() is None                      # released: the pid in the file is stale
    rd2 = RunDir(tmp_path / "run")
    rd2.acquire()
    rd2.release()
    (tmp_path / "run" / ".lock").write_text("999999999\n")
    assert RunDir(tmp_path / "run").trainer() is None
    (tmp_path / "run" / ".lock").write_text("garbage")
    assert RunDir(tmp_path / "run").trainer() is None


def test_metrics_tail_skips_hostile_lines_and_never_follows_a_link(tmp_path):
    from rnnkit.rundir import MAX_RECORD, MetricsTail

    rd = RunDir(tmp_path)
    rd.new_log()
    tail = MetricsTail(rd.metrics)
    with open(rd.metrics, "ab") as f:
        f.write(b'{"step": 1, "loss": NaN}\n{"step": 2, "loss": 1e999}\n'
                b'{"step": 3, "loss": Infinity}\n{"step": 4, "loss": 0.5}\n')
    assert tail.read() == [{"step": 4, "loss": 0.5}] == rd.records()
    with open(rd.metrics, "ab") as f:                # a torn tail longer than any record
        f.write(b'{"step": 5, "x": "' + b"y" * (MAX_RECORD + 10))
    assert [r["step"] for r in tail.read()] == [4]
    with open(rd.metrics, "ab") as f:
        f.write(b'"}\n{"step": 6}\n')
    assert [r["step"] for r in tail.read()] == [4, 6]
    assert [r["step"] for r in rd.records()] == [4, 6]
    outside = tmp_path / "outside.jsonl"
    outside.write_text('{"step": 1, "secret": "outside"}\n')
    rd.metrics.unlink()
    rd.metrics.symlink_to(outside)
    assert MetricsTail(rd.metrics).read() == []
