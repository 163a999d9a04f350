"""The torch backend: the same trainer on the PyTorch twin, and checkpoints that move between
the backends in both directions with the losses of a run that never switched."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rnnkit.train import TrainConfig, Trainer

torch = pytest.importorskip("torch")

SMALL = {"hidden_size": 16, "embedding_dim": 8, "num_layers": 2, "batch_size": 4,
         "seq_len": 12, "eval_interval": 6, "sample_length": 0, "dtype": "float64",
         "lr": 0.01}


def _losses(run: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


def _train(out: Path, cfg: TrainConfig | None = None, **overrides) -> None:
    with open("/dev/null", "w") as log:
        if cfg is None:
            Trainer(None, out, resume=True, overrides=overrides, progress=False, log=log).run()
        else:
            Trainer(cfg, out, progress=False, log=log).run()


def _close(a: list[tuple[int, float]], b: list[tuple[int, float]], rel: float = 1e-9) -> None:
    assert [s for s, _ in a] == [s for s, _ in b]
    for (s, x), (_, y) in zip(a, b, strict=True):
        assert abs(x - y) <= rel * abs(x), (s, x, y)


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd", "rmsprop", "adagrad"])
def test_switching_backend_at_step_6_keeps_the_losses_of_a_run_that_did_not(tmp_path, corpus,
                                                                             optimizer):
    kw = dict(SMALL, corpus=str(corpus), optimizer=optimizer, max_steps=12,
              momentum=0.9 if optimizer in ("sgd", "rmsprop") else 0.0)
    _train(tmp_path / "numpy", TrainConfig(**kw))
    reference = _losses(tmp_path / "numpy")
    assert len(reference) == 12
    _train(tmp_path / "torch", TrainConfig(**kw, backend="torch"))
    _close(_losses(tmp_path / "torch"), reference)
    for first, then in (("numpy", "torch"), ("torch", "numpy")):
        out = tmp_path / f"{first}-{then}"
        _train(out, TrainConfig(**dict(kw, max_steps=6, backend=first)))
        _train(out, max_steps=12, backend=then)
        _close(_losses(out), reference)


def test_sentence_mode_one_hot_gru_switches_too(tmp_path, corpus):
    kw = dict(SMALL, corpus=str(corpus), mode="sentence", level="word", cell="gru",
              one_hot=True, max_steps=16)
    _train(tmp_path / "numpy", TrainConfig(**kw))
    out = tmp_path / "switched"
    _train(out, TrainConfig(**dict(kw, max_steps=8, backend="torch")))
    _train(out, max_steps=16, backend="numpy")
    _close(_losses(out), _losses(tmp_path / "numpy"))


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_the_torch_guard_undoes_a_step_that_would_make_weights_non_finite(tmp_path, corpus,
                                                                          optimizer):
    cfg = TrainConfig(**dict(SMALL, corpus=str(corpus), optimizer=optimizer, max_steps=3,
                             momentum=0.9 if optimizer == "sgd" else 0.0, backend="torch"))
    with open("/dev/null", "w") as log:
        t = Trainer(cfg, tmp_path / "r", progress=False, log=log)
        try:
            t.train_step()                                      # state exists now
            engine = t.engine
            weights = [p.detach().clone() for p in engine.params]
            state = {k: v.clone() for k, v in engine.topt.state[engine.params[0]].items()}
            for p in engine.params:
                p.grad = torch.full_like(p, float("inf"))
            assert engine._guarded_step() is False
            for p, w in zip(engine.params, weights, strict=True):
                assert torch.equal(p, w)
            for k, v in engine.topt.state[engine.params[0]].items():
                assert torch.equal(v, state[k])
        finally:
            t.close()


RNNKIT = [sys.executable, "-c", "import sys; sys.modules['torch'] = None\n"
          "from rnnkit.cli import main; sys.exit(main(sys.argv[1:]))"]


def _one_error_line(r: subprocess.CompletedProcess, *needles: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
    for n in needles:
        assert n in r.stderr, r.stderr


def test_torch_backend_without_torch_is_one_error_line(tmp_path, corpus):
    r = subprocess.run([*RNNKIT, "train", str(corpus), "--out", str(tmp_path / "r"),
                        "--backend", "torch", "--max-steps", "2"], capture_output=True,
                       text=True, timeout=120)
    _one_error_line(r, "pip install 'rnnkit[torch]'")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("backend", "device", "needle"),
                         [("numpy", "cuda", "needs --backend torch"),
                          ("torch", "tpu:7", "not usable here")])
def test_a_device_it_cannot_use_is_one_error_line(tmp_path, corpus, backend, device, needle):
    r = subprocess.run([sys.executable, "-m", "rnnkit", "train", str(corpus), "--out",
                        str(tmp_path / "r"), "--backend", backend, "--device", device,
                        "--max-steps", "2"], capture_output=True, text=True, timeout=120)
    _one_error_line(r, needle)
    assert not (tmp_path / "r").exists()


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
            "2", "-m", "rnnkit", "train"]


def _flags(kw: dict) -> list[str]:
    out = []
    for k, v in kw.items():
        flag = "--" + k.replace("_", "-")
        out += [flag] if v is True else [] if v is False else [flag, str(v)]
    return out


@pytest.mark.parametrize("mode", ["stream", "sentence"])
def test_two_gloo_processes_give_the_losses_of_one_and_resume_in_one(tmp_path, corpus, mode):
    """torchrun, 2 CPU processes (gloo): the global batch is split between them, rank 0 alone
    writes; the losses equal a one-process run's, and the run resumes in one process with the
    numpy backend."""
    kw = dict(SMALL, max_steps=12, mode=mode)
    if mode == "sentence":
        kw.update(level="word", cell="gru")
    _train(tmp_path / "one", TrainConfig(**kw, corpus=str(corpus)))
    two = tmp_path / "two"
    r = subprocess.run([*TORCHRUN, str(corpus), "--out", str(two), "--backend", "torch",
                        "--no-progress", *_flags(dict(kw, max_steps=6))],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("done: 6 steps") == 1                      # rank 0 alone reports
    _train(two, max_steps=12, backend="numpy")
    _close(_losses(two), _losses(tmp_path / "one"))
    assert sorted(p.name for p in two.iterdir()) == sorted(
        ["best.safetensors", "last.safetensors", "metrics.jsonl", "loss.png", ".lock"])


def test_numpy_backend_under_torchrun_is_one_error_line(tmp_path, corpus):
    r = subprocess.run([*TORCHRUN, str(corpus), "--out", str(tmp_path / "r"), "--max-steps",
                        "2"], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert "error: several processes (torchrun) need --backend torch" in r.stderr
