"""The trainer and the command line: checkpoints, exact resume, interrupts, non-finite steps."""

from __future__ import annotations

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

from conftest import TEXT
from rnnkit import checkpoint
from rnnkit.cli import main
from rnnkit.generate import score
from rnnkit.rundir import load_language_model as model_from_checkpoint
from rnnkit.train import TrainConfig, Trainer, TrainingError


def _cfg(corpus: Path, **kw) -> TrainConfig:
    base = {"corpus": str(corpus), "hidden_size": 16, "embedding_dim": 8, "num_layers": 2,
            "batch_size": 4, "seq_len": 12, "eval_interval": 5, "sample_length": 20,
            "max_steps": 12, "dropout": 0.1}
    base.update(kw)
    return TrainConfig(**base)


def _losses(run: Path) -> list[tuple[int, float | None]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


def _quiet(**kw):
    return {"log": io.StringIO(), "progress": False, **kw}


@pytest.mark.parametrize("extra", [
    {},
    {"mode": "sentence", "cell": "gru"},
    {"level": "word", "cell": "rnn", "optimizer": "sgd", "momentum": 0.9, "lr": 0.1},
])
def test_resume_is_bit_exact(tmp_path, corpus, extra):
    Trainer(_cfg(corpus, **extra), tmp_path / "a", **_quiet()).run()
    Trainer(_cfg(corpus, max_steps=7, **extra), tmp_path / "b", **_quiet()).run()
    Trainer(None, tmp_path / "b", resume=True, overrides={"max_steps": 12}, **_quiet()).run()
    a, b = _losses(tmp_path / "a"), _losses(tmp_path / "b")
    assert len(a) == 12 and a == b


def test_interrupt_saves_and_resume_continues_exactly(tmp_path, corpus):
    Trainer(_cfg(corpus), tmp_path / "a", **_quiet()).run()

    def interrupt(step: int) -> None:
        if step == 8:
            os.kill(os.getpid(), signal.SIGINT)

    summary = Trainer(_cfg(corpus), tmp_path / "b", before_step=interrupt, **_quiet()).run()
    assert summary.stopped_by == "interrupted"
    assert checkpoint.read_meta(tmp_path / "b" / "last.safetensors")["step"] == summary.step
    Trainer(None, tmp_path / "b", resume=True, **_quiet()).run()
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b")


def test_non_finite_steps_are_skipped_and_never_saved(tmp_path, corpus):
    holder: dict[str, Trainer] = {}

    def poison(step: int) -> None:
        if step in (2, 3):          # two bad steps, then the weights are fine again
            w = holder["t"].model.decoder.weight
            holder["saved"] = w.copy() if step == 2 else holder["saved"]
            w[0, 0] = np.nan
        elif step == 4:
            holder["t"].model.decoder.weight[...] = holder["saved"]

    t = Trainer(_cfg(corpus), tmp_path / "r", before_step=poison, **_quiet())
    holder["t"] = t
    summary = t.run()
    assert summary.skipped_steps == 2
    losses = dict(_losses(tmp_path / "r"))
    assert losses[3] is None and losses[4] is None and losses[5] is not None
    tensors, _ = checkpoint.load(tmp_path / "r" / "last.safetensors")
    assert all(np.isfinite(v).all() for v in tensors.values())


def test_too_many_bad_steps_stop_the_run(tmp_path, corpus):
    holder: dict[str, Trainer] = {}

    def poison(step: int) -> None:
        if step >= 6:
            holder["t"].model.decoder.weight[0, 0] = np.inf

    t = Trainer(_cfg(corpus, max_bad_steps=3, max_steps=30), tmp_path / "r",
                before_step=poison, **_quiet())
    holder["t"] = t
    with pytest.raises(TrainingError, match="3 steps in a row"):
        t.run()
    model, _, meta = model_from_checkpoint(tmp_path / "r" / "last.safetensors")
    assert meta["step"] == 5
    assert all(np.isfinite(p).all() for p in model.parameters())


def test_resume_refuses_changed_settings_and_other_text(tmp_path, corpus):
    Trainer(_cfg(corpus, max_steps=5), tmp_path / "r", **_quiet()).run()
    with pytest.raises(ValueError, match="--hidden-size 32"):
        Trainer(None, tmp_path / "r", resume=True, overrides={"hidden_size": 32}, **_quiet())
    corpus.write_text(TEXT * 61, encoding="utf-8")
    with pytest.raises(checkpoint.CheckpointError, match="not the text"):
        Trainer(None, tmp_path / "r", resume=True, **_quiet())


# ------------------------------------------------------------------------------------------------
# the command line
# ------------------------------------------------------------------------------------------------

SMALL = ["--hidden-size", "16", "--embedding-dim", "8", "--batch-size", "4", "--seq-len",
         "12", "--eval-interval", "5", "--sample-length", "10", "--no-progress"]


def test_cli_train_sample_score_info(tmp_path, corpus, capsys):
    out = tmp_path / "run"
    assert main(["train", str(corpus), "--out", str(out), "--max-steps", "10", *SMALL]) == 0
    assert {"last.safetensors", "best.safetensors", "metrics.jsonl", "loss.png"} <= \
        {p.name for p in out.iterdir()}
    capsys.readouterr()
    assert main(["sample", str(out), "--prime", "All:", "--length", "40", "--seed", "3"]) == 0
    first = capsys.readouterr().out
    assert main(["sample", str(out), "--prime", "All:", "--length", "40", "--seed", "3"]) == 0
    assert capsys.readouterr().out == first and first.startswith("All:")
    assert main(["sample", str(out), "--beam", "3", "--length", "10"]) == 0
    assert main(["sample", str(out), "--temperature", "0", "--top-k", "3"]) == 0
    assert main(["score", str(out), str(corpus)]) == 0
    assert "perplexity" in capsys.readouterr().out
    assert main(["info", str(out)]) == 0
    assert "2 x 16 LSTM" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "match"), [
    (["train", "--lr", "-1"], "lr"),
    (["train", "--cell", "transformer"], "cell"),
    (["train", "--batch-size", "0"], "batch-size"),
    (["train", "no/such/file.txt", "--max-steps", "1"], "no/such/file.txt"),
    (["train", "--resume"], "--out"),
    (["sample", "no/such/dir"], "no/such/dir"),
    (["sample", "."], "no best.safetensors or last.safetensors"),
    (["info", "no/such/dir"], "no/such/dir"),
    (["bogus"], "invalid choice"),
])
def test_cli_errors_are_one_line(tmp_path, monkeypatch, capsys, argv, match):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and match in err and err.count("\n") == 1
    assert "Traceback" not in err


def test_cli_rejects_bad_files_and_primes(tmp_path, corpus, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"hello\nw\xffrld\n")
    assert main(["train", str(bad), "--out", str(tmp_path / "x"), "--max-steps", "1"]) == 2
    assert "offset 7" in capsys.readouterr().err
    assert not (tmp_path / "x" / "last.safetensors").exists()
    out = tmp_path / "run"
    assert main(["train", str(corpus), "--out", str(out), "--max-steps", "5", *SMALL]) == 0
    capsys.readouterr()
    assert main(["sample", str(out), "--prime", "Zoë"]) == 2
    err = capsys.readouterr().err
    assert "'Z'" in err and "'ë'" in err
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes((out / "last.safetensors").read_bytes()[:500])
    assert main(["sample", str(broken)]) == 2
    assert "error: " in capsys.readouterr().err


def test_kill_at_any_moment_then_resume_matches(tmp_path, corpus):
    """SIGKILL a training process that checkpoints every step; resuming must still give the
    losses of a run that was never stopped."""
    args = [sys.executable, "-m", "rnnkit", "train", str(corpus), "--max-steps", "40", *SMALL,
            "--eval-interval", "1", "--sample-length", "0", "--dropout", "0.2"]
    subprocess.run([*args, "--out", str(tmp_path / "a")], check=True, capture_output=True)
    proc = subprocess.Popen([*args, "--out", str(tmp_path / "b")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not (tmp_path / "b" / "last.safetensors").exists():
        time.sleep(0.02)
    time.sleep(0.3)
    proc.kill()
    proc.wait()
    r = subprocess.run([*args[:3], "train", "--resume", "--out", str(tmp_path / "b"),
                        "--no-progress"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b")


def test_resume_with_a_budget_replaces_the_saved_one_and_says_so(tmp_path, corpus):
    # a run saved with a time budget: --max-steps on resume is the budget, not both
    def stop_at_5(step: int) -> None:
        if step == 5:
            os.kill(os.getpid(), signal.SIGINT)

    Trainer(_cfg(corpus, max_steps=None, max_minutes=10.0), tmp_path / "r",
            **_quiet(before_step=stop_at_5)).run()
    log = io.StringIO()
    s = Trainer(None, tmp_path / "r", resume=True, overrides={"max_steps": 9}, log=log,
                progress=False).run()
    assert s.step == 9 and s.stopped_by == "max_steps"
    assert "under --max-steps 9 (the saved budget was --max-minutes 10)" in log.getvalue()


def test_a_non_finite_update_is_skipped_not_applied(tmp_path, corpus):
    s = Trainer(_cfg(corpus, optimizer="sgd", lr=1e30, grad_clip=None, max_bad_steps=100),
                tmp_path / "r", **_quiet()).run()
    assert s.skipped_steps > 0
    tensors, _ = checkpoint.load(tmp_path / "r" / "last.safetensors")
    assert all(np.isfinite(v).all() for v in tensors.values())


def test_a_second_trainer_on_the_same_directory_is_refused(tmp_path, corpus):
    first = Trainer(_cfg(corpus), tmp_path / "r", **_quiet())
    with pytest.raises(ValueError, match="another rnnkit process"):
        Trainer(_cfg(corpus), tmp_path / "r", **_quiet())
    first.run()                                    # released at the end of the run
    Trainer(None, tmp_path / "r", resume=True, **_quiet()).close()


def test_a_corpus_without_a_newline_trains_and_samples(tmp_path):
    # the training log's samples start from a newline; a text with none must still work
    one = tmp_path / "one.txt"
    one.write_text("abc def ghi " * 400, encoding="utf-8")
    s = Trainer(_cfg(one, max_steps=5), tmp_path / "r", **_quiet()).run()
    assert s.step == 5 and s.best_val is not None


def test_cli_score_of_a_sentence_model_scores_each_line_with_its_markers(tmp_path, corpus,
                                                                         capsys):
    Trainer(_cfg(corpus, mode="sentence", max_steps=5), tmp_path / "r", **_quiet()).run()
    model, vocab, _ = model_from_checkpoint(tmp_path / "r")
    lines = [line.strip() for line in corpus.read_text().splitlines() if line.strip()]
    want = sum(score(model, [vocab.start_id, *vocab.encode(list(line)), vocab.end_id])
               .log_likelihood for line in lines)
    capsys.readouterr()
    assert main(["score", str(tmp_path / "r"), str(corpus)]) == 0
    out = capsys.readouterr().out
    assert f"{sum(len(line) + 1 for line in lines)} chars predicted" in out
    assert f"log-likelihood {want:.2f} nats" in out


@pytest.mark.parametrize("argv", [["sample", "RUN", "--seed", "-1"], ["check", "--seed", "-2"],
                                  ["sample", "RUN", "--top-p", "0"]])
def test_cli_bad_numbers_name_their_flag(tmp_path, argv, capsys):
    argv = [str(tmp_path) if a == "RUN" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and f"argument {argv[-2]}:" in err and err.count("\n") == 1


def _log(run: Path) -> list[dict]:
    """Every record of a run's log without its timings (they differ between runs)."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in rows]


@pytest.mark.parametrize("where", ["between steps", "twice, inside the evaluation's sample",
                                   "twice, inside a step"])
def test_an_interrupted_and_resumed_run_logs_what_an_uninterrupted_one_does(
        tmp_path, corpus, monkeypatch, where):
    import rnnkit.optim
    import rnnkit.train as train_mod

    Trainer(_cfg(corpus, max_steps=16), tmp_path / "a", **_quiet()).run()
    hits = {"n": 0}

    def sigint(*_: object) -> None:
        os.kill(os.getpid(), signal.SIGINT)

    if where == "between steps":
        run = Trainer(_cfg(corpus, max_steps=16), tmp_path / "b", **_quiet(
            before_step=lambda step: sigint() if step == 7 else None))
    else:       # a second Ctrl-C raises wherever the code is: nothing half-done is saved
        target, name = ((train_mod, "sample_text") if "sample" in where
                        else (rnnkit.optim, "clip_grad_norm_"))
        real = getattr(target, name)

        def twice(*a: object, **kw: object) -> object:
            hits["n"] += 1
            if hits["n"] == (2 if "sample" in where else 8):
                sigint()
                sigint()
            return real(*a, **kw)

        monkeypatch.setattr(target, name, twice)
        run = Trainer(_cfg(corpus, max_steps=16), tmp_path / "b", **_quiet())
    assert run.run().stopped_by == "interrupted"
    monkeypatch.undo()
    Trainer(None, tmp_path / "b", resume=True, **_quiet()).run()
    assert _log(tmp_path / "b") == _log(tmp_path / "a")


def test_each_evaluation_record_carries_its_sample(tmp_path, corpus):
    # rnnkit serve's Training tab shows the text improving step by step from these records
    log = io.StringIO()
    Trainer(_cfg(corpus), tmp_path / "a", log=log, progress=False).run()
    Trainer(_cfg(corpus, max_steps=7), tmp_path / "b", **_quiet()).run()
    Trainer(None, tmp_path / "b", resume=True, overrides={"max_steps": 12}, **_quiet()).run()
    evals = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text()
             .splitlines() if "val_loss" in line]
    assert [r["step"] for r in evals] == [5, 10, 12]
    assert all(isinstance(r["sample"], str) and r["sample"] for r in evals)
    assert all(r["sample"].strip("\n") in log.getvalue() for r in evals)   # what was printed
    again = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text()
             .splitlines() if "val_loss" in line]
    # the stop at step 7 evaluated (and sampled) too, so only the samples before it agree
    assert [r["step"] for r in again] == [5, 7, 10, 12]
    assert again[0]["sample"] == evals[0]["sample"]
    assert all(isinstance(r["sample"], str) for r in again)
    Trainer(_cfg(corpus, sample_length=0), tmp_path / "c", **_quiet()).run()
    assert "sample" not in (tmp_path / "c" / "metrics.jsonl").read_text()
