"""Export and load: ``rnnkit export``, ``rnnkit.load`` and the folder it writes, checked the way
a user would use it (onnxruntime in a process without rnnkit, PyTorch loading the weights
strictly into a module written from the model card, the CLI on an export folder)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import rnnkit
from conftest import TEXT
from rnnkit import checkpoint, files, pretrained
from rnnkit.cli import build_parser
from rnnkit.pretrained import CARD, CONFIG, FILES, ONNX, VOCAB, WEIGHTS
from rnnkit.train import TrainConfig, Trainer

ort = pytest.importorskip("onnxruntime")
ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "onnx_generate.py"
RNNKIT = [sys.executable, "-m", "rnnkit"]


def cli(*args: str | Path, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*RNNKIT, *map(str, args)], capture_output=True, text=True,
                          timeout=120, **kw)


def one_error_line(r: subprocess.CompletedProcess, *patterns: str) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
    assert "Traceback" not in r.stderr and "Warning" not in r.stderr
    for p in patterns:
        assert re.search(p, r.stderr), (p, r.stderr)
    return r.stderr


# the two kinds of run: characters as one stream (LSTM), words as sentences (GRU, one-hot)
RUNS = {
    "char": {"cell": "lstm", "hidden_size": 32, "embedding_dim": 16, "lr": 0.01,
             "max_steps": 80, "eval_interval": 40},
    "word": {"cell": "gru", "level": "word", "mode": "sentence", "one_hot": True,
             "hidden_size": 24, "lr": 0.01, "max_steps": 60, "eval_interval": 30},
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    corpus = root / "tiny.txt"
    corpus.write_text(TEXT * 60, encoding="utf-8")
    out = {}
    for name, kw in RUNS.items():
        cfg = TrainConfig(corpus=str(corpus), num_layers=2, batch_size=8, seq_len=24,
                          sample_length=0, **kw)
        Trainer(cfg, root / name, progress=False).run()
        out[name] = root / name
    return out


@pytest.fixture(scope="module")
def exports(runs, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("exports")
    out = {}
    for name, run in runs.items():
        r = cli("export", run, root / name)
        assert r.returncode == 0 and r.stderr == "", r.stderr
        assert "model.onnx" in r.stdout
        out[name] = root / name
    return out


# ---- the folder --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(RUNS))
def test_the_export_holds_the_five_files_and_nothing_else(exports, runs, kind):
    folder = exports[kind]
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES)
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]   # no staging
    config = json.loads((folder / CONFIG).read_text())
    m = rnnkit.load(runs[kind])
    assert config["model"] == m.model.config.to_json()
    assert config["tokenizer"]["level"] == RUNS[kind].get("level", "char")
    assert config["tokenizer"]["mode"] == RUNS[kind].get("mode", "stream")
    t = config["training"]
    assert t["steps"] == RUNS[kind]["max_steps"] and t["checkpoint"] == "best"
    assert t["best_val_loss_bits"] == pytest.approx(t["best_val_loss_nats"] / np.log(2))
    assert json.loads((folder / VOCAB).read_text()) == list(m.vocab.itos)
    card = (folder / CARD).read_text()
    assert t["command"] in card and f"{t['best_val_loss_nats']:.4f} nats" in card


def test_the_training_command_in_the_config_asks_for_the_same_config(runs):
    meta = checkpoint.read_meta(runs["word"] / "best.safetensors")
    cfg = TrainConfig.from_json(meta["train"])
    import shlex

    args = build_parser().parse_args(shlex.split(cfg.command())[1:])
    given = {k: v for k, v in vars(args).items() if v is not None and k in cfg.to_json()}
    assert TrainConfig(**{"corpus": args.corpus, **given}) == cfg


@pytest.mark.parametrize("kind", list(RUNS))
def test_weights_file_is_the_size_of_the_weights_alone(exports, runs, kind):
    m = rnnkit.load(runs[kind]).model
    weights = sum(a.nbytes for a in m.state_dict().values())
    run_file = (runs[kind] / "best.safetensors").stat().st_size
    size = (exports[kind] / WEIGHTS).stat().st_size
    assert weights < size < weights + 16_000 < run_file      # header: names, config, vocab


# ---- onnxruntime, in a process without rnnkit ------------------------------------------------


# rnnkit made unimportable: the example must run on onnxruntime and NumPy alone
NO_RNNKIT = ("import sys, runpy; sys.modules['rnnkit'] = None; sys.argv = sys.argv[1:]; "
             "runpy.run_path(sys.argv[0], run_name='__main__')")


@pytest.mark.parametrize("kind", list(RUNS))
@pytest.mark.parametrize("prime", ["", "First"])
def test_greedy_onnx_generation_is_the_text_of_rnnkit_sample(exports, runs, kind, prime):
    ours = cli("sample", runs[kind], "--temperature", "0", "--length", "200", "--prime", prime)
    assert ours.returncode == 0, ours.stderr
    theirs = subprocess.run([sys.executable, "-c", NO_RNNKIT, EXAMPLE, exports[kind],
                             "--length", "200", "--prime", prime], capture_output=True,
                            text=True, timeout=120, cwd=ROOT / "examples")
    assert theirs.returncode == 0, theirs.stderr
    assert theirs.stdout == ours.stdout
    assert len(set(ours.stdout)) > 5                  # a text, not one repeated character


@pytest.mark.parametrize("kind", list(RUNS))
def test_onnx_logits_and_states_equal_rnnkit_for_a_whole_text(exports, kind):
    m = rnnkit.load(exports[kind])
    ids = m.vocab.encode_text(TEXT if kind == "char" else "Speak , speak .")
    ids = np.stack([ids, ids[::-1]], axis=1).astype(np.int64)         # (T, 2)
    logits, hn = m.model(ids)
    sess = ort.InferenceSession(str(exports[kind] / ONNX), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    L, H = m.model.config.num_layers, m.model.config.hidden_size
    feeds = {"tokens": ids} | {n: np.zeros((L, 2, H), np.float32) for n in names[1:]}
    got = sess.run(None, feeds)
    np.testing.assert_allclose(got[0], logits, rtol=1e-5, atol=1e-5)
    for a, b in zip(got[1:], hn if isinstance(hn, tuple) else (hn,), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


# ---- PyTorch ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(RUNS))
def test_model_card_pytorch_code_loads_the_weights_strictly(exports, kind):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    card = (exports[kind] / CARD).read_text()
    code = re.search(r"PyTorch, without rnnkit.*?```python\n(.*?)```", card, re.S).group(1)
    code = code.replace(f'"{exports[kind].name}/', f'"{exports[kind]}/')
    scope: dict = {}
    exec(code, scope)                 # defines the module and loads model.safetensors strictly
    lm = scope["lm"]
    m = rnnkit.load(exports[kind])
    ids = np.arange(12).reshape(6, 2) % m.model.config.vocab_size
    with torch.no_grad():
        logits, _ = lm(torch.from_numpy(ids))
    np.testing.assert_allclose(logits.numpy(), m.model(ids)[0], rtol=1e-5, atol=1e-6)
    twin = rnnkit.to_torch(m)          # rnnkit's own twin takes the same file, no renaming
    twin.load_state_dict(load_file(exports[kind] / WEIGHTS), strict=True)


# ---- rnnkit.load --------------------------------------------------------------------------------


def test_two_lines_load_and_generate_from_every_kind_of_path(runs, exports):
    texts = set()
    for path in (runs["char"], runs["char"] / "best.safetensors", exports["char"],
                 exports["char"] / WEIGHTS, str(exports["char"])):
        m = rnnkit.load(path)
        texts.add(m.generate("First", 60, temperature=0.8, seed=3))
    assert len(texts) == 1
    text = texts.pop()
    assert text.startswith("First") and len(text) > 5
    m = rnnkit.load(exports["char"])
    assert m.generate("First", 60, temperature=0.8, seed=3,
                      num_samples=3)[0] == text          # sample 0 of a batch is the same text
    assert m.config["model"]["cell"] == "lstm" and m.config["onnx"]["dtype"] == "float32"
    assert "LSTM" in repr(m)


def test_generate_beam_and_score(exports):
    m = rnnkit.load(exports["word"])
    samples = m.generate(length=30, temperature=1.0, seed=0, num_samples=4)
    assert isinstance(samples, list) and len(samples) == 4
    assert all("<start>" not in s and "<end>" not in s for s in samples)
    assert isinstance(m.beam("First", 20, width=3), str)
    s = m.score("Speak, speak.\nFirst Citizen:\n")
    assert s.tokens == 3 + 1 + 3 + 1 + 1     # each line: its words and <end>
    assert s.bits_per_token == pytest.approx(s.nats_per_token / np.log(2))
    assert s.perplexity == pytest.approx(np.exp(s.nats_per_token))
    with pytest.raises(ValueError, match="no line"):
        m.score("\n \n")
    with pytest.raises(TypeError, match="prime must be a str"):
        m.generate(5)


def test_score_of_the_cli_is_the_score_of_the_api(exports, tmp_path):
    f = tmp_path / "t.txt"
    f.write_text(TEXT, encoding="utf-8")
    r = cli("score", exports["char"], f)
    assert r.returncode == 0, r.stderr
    s = rnnkit.load(exports["char"]).score(TEXT)
    assert f"{s.nats_per_token:.4f} nats/char" in r.stdout


def test_cli_sample_num_samples_and_info_on_an_export(exports):
    r = cli("sample", exports["char"], "--num-samples", "3", "--length", "20")
    assert r.returncode == 0, r.stderr
    assert [ln for ln in r.stdout.splitlines() if ln.startswith("--- sample")] == \
        [f"--- sample {i} of 3 ---" for i in (1, 2, 3)]
    r = cli("info", exports["word"])
    assert r.returncode == 0, r.stderr
    assert "2 x 24 GRU" in r.stdout and "word level, sentence mode" in r.stdout
    assert "command  rnnkit train" in r.stdout
    r = cli("info", exports["word"], "--json")
    assert json.loads(r.stdout)["format"] == "rnnkit-export"
    one_error_line(cli("sample", exports["char"], "--beam", "3", "--num-samples", "2"),
                   "--num-samples")


def test_torch_round_trip_through_the_top_level_calls(exports):
    pytest.importorskip("torch")
    m = rnnkit.load(exports["char"])
    back = rnnkit.from_torch(rnnkit.to_torch(m), m.vocab)
    assert back.generate("First", 40, seed=1) == m.generate("First", 40, seed=1)


# ---- export: dtype, replacing, refusing ---------------------------------------------------------


def test_float64_export_of_a_float32_run(runs, tmp_path):
    out = rnnkit.export(runs["char"], tmp_path / "e64", dtype="float64")
    m = rnnkit.load(out)
    assert m.model.dtype == np.float64
    assert json.loads((out / CONFIG).read_text())["model"]["dtype"] == "float64"
    ref = rnnkit.load(runs["char"]).model
    ids = np.arange(10)[:, None] % ref.config.vocab_size
    np.testing.assert_allclose(m.model(ids)[0], ref(ids)[0], rtol=1e-5, atol=1e-5)


def test_export_of_last_and_over_an_earlier_export(runs, tmp_path):
    out = tmp_path / "e"
    rnnkit.export(runs["char"], out)
    first = (out / WEIGHTS).read_bytes()
    r = cli("export", runs["word"], out, "--which", "last")    # replaces it in one step
    assert r.returncode == 0, r.stderr
    assert (out / WEIGHTS).read_bytes() != first
    assert rnnkit.load(out).config["training"]["checkpoint"] == "last"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e"]


@pytest.mark.parametrize("target", ["other", "file", "link", "no-parent"])
def test_export_refuses_a_target_it_would_clobber_and_changes_nothing(runs, tmp_path, target):
    out = tmp_path / "out"
    if target == "other":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    elif target == "file":
        out.write_text("mine")
    elif target == "link":
        (tmp_path / "real").mkdir()
        out.symlink_to(tmp_path / "real")
    else:
        out = tmp_path / "missing" / "out"
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    one_error_line(cli("export", runs["char"], out),
                   {"other": "holds other files", "file": "not a folder",
                    "link": "symbolic link", "no-parent": "does not exist"}[target])
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


def test_a_failed_export_leaves_the_earlier_one_and_no_staging_folder(runs, tmp_path,
                                                                      monkeypatch):
    out = rnnkit.export(runs["char"], tmp_path / "e")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real = files.write_atomic

    def full_disk(path, data):
        if Path(path).name == CARD:
            raise files.FileError(f"{path}: could not write (No space left on device)")
        real(path, data)

    monkeypatch.setattr(files, "write_atomic", full_disk)
    with pytest.raises(files.FileError, match="No space"):
        rnnkit.export(runs["word"], out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e"]


def test_staging_folders_of_killed_exports_are_removed(runs, tmp_path):
    import fcntl

    stale = tmp_path / ".e.0123456789abcdef.tmp"              # its process is gone
    stale.mkdir()
    (stale / CONFIG).write_text("{}")
    live = tmp_path / ".e.fedcba9876543210.tmp"               # another export, still running
    live.mkdir()
    fd = os.open(live, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        rnnkit.export(runs["char"], tmp_path / "e")
        assert not stale.exists() and live.exists()
    finally:
        os.close(fd)


def test_concurrent_exports_to_one_folder_all_succeed(runs, tmp_path):
    out = tmp_path / "e"
    procs = [subprocess.Popen([*RNNKIT, "export", str(runs[k]), str(out)],
                              stderr=subprocess.PIPE, text=True)
             for k in ("char", "word", "char")]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read() if p.stderr else ""
        if p.stderr:
            p.stderr.close()
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    rnnkit.load(out)                                  # whole, from one of them
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e"]


@pytest.mark.parametrize("seed", range(2))
def test_an_export_killed_at_any_instant_leaves_the_old_folder_or_the_new(runs, tmp_path,
                                                                          seed):
    out = rnnkit.export(runs["char"], tmp_path / "e")
    old = {p.name: p.read_bytes() for p in out.iterdir()}
    rng = np.random.default_rng(seed)
    for _ in range(4):
        proc = subprocess.Popen([*RNNKIT, "export", str(runs["word"]), str(out)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=float(rng.uniform(0.2, 1.5)))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        now = {p.name: p.read_bytes() for p in out.iterdir()}
        assert now == old or rnnkit.load(out).config["tokenizer"]["level"] == "word"
        assert sorted(now) == sorted(FILES)
    rnnkit.export(runs["char"], out)                  # cleans what the kills left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e"]


def test_export_without_the_onnx_extra_is_one_error_line(runs, tmp_path):
    block = ("import sys; sys.modules['onnx'] = None; from rnnkit.cli import main; "
             "sys.exit(main(sys.argv[1:]))")
    r = subprocess.run([sys.executable, "-c", block, "export", str(runs["char"]),
                        str(tmp_path / "e")], capture_output=True, text=True, timeout=120)
    one_error_line(r, r"pip install 'rnnkit\[onnx\]'")
    assert not (tmp_path / "e").exists()


# ---- a damaged or mixed folder ------------------------------------------------------------------


def _copy(exports, tmp_path, kind="char") -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(exports[kind], dst)
    return dst


def test_a_flipped_byte_in_the_weights_is_caught(exports, tmp_path):
    d = _copy(exports, tmp_path)
    data = bytearray((d / WEIGHTS).read_bytes())
    data[-100] ^= 0x01
    (d / WEIGHTS).write_bytes(bytes(data))
    one_error_line(cli("sample", d), "checksum")


def test_files_from_two_exports_are_refused(exports, tmp_path):
    d = _copy(exports, tmp_path)
    shutil.copy(exports["word"] / VOCAB, d / VOCAB)
    one_error_line(cli("sample", d), "different exports")
    d2 = _copy(exports, tmp_path / "x")
    shutil.copy(exports["word"] / CONFIG, d2 / CONFIG)
    one_error_line(cli("score", d2, d2 / CARD), "different exports")


@pytest.mark.parametrize("damage", ["truncated-json", "not-json", "no-weights", "nan"])
def test_a_damaged_folder_is_one_error_line(exports, tmp_path, damage):
    d = _copy(exports, tmp_path)
    if damage == "truncated-json":
        (d / CONFIG).write_bytes((d / CONFIG).read_bytes()[:40])
    elif damage == "not-json":
        (d / VOCAB).write_text("[NaN]")
    elif damage == "no-weights":
        (d / WEIGHTS).unlink()
    else:
        (d / CONFIG).write_text('{"format": "rnnkit-export", "version": 1e400}')
    one_error_line(cli("sample", d))


def test_a_plain_folder_is_not_mistaken_for_an_export(tmp_path):
    assert not pretrained.is_export(tmp_path)
    (tmp_path / CONFIG).write_text('{"format": "hf"}')
    with pytest.raises(ValueError, match="not an rnnkit export"):
        rnnkit.load(tmp_path)


def test_package_is_typed():
    assert (Path(rnnkit.__file__).parent / "py.typed").is_file()
