"""The lab's long-range memory tasks: data, baselines, equal budgets, training and the command."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from rnnkit.classify import SequenceClassifier
from rnnkit.cli import main
from rnnkit.lab._common import cell_parameters, hidden_for_budget
from rnnkit.lab.memory import (
    BLANK,
    COPY_LENGTH,
    DELIMITER,
    adding_baseline,
    adding_batch,
    copy_baseline,
    copy_batch,
    memory_table,
    run_memory_task,
)


def test_adding_batch_marks_one_value_in_each_half_and_sums_them():
    rng = np.random.default_rng(0)
    T, B = 30, 200
    x, y = adding_batch(rng, B, T)
    assert x.shape == (T, B, 2) and y.shape == (B,)
    marks = x[:, :, 1]
    assert np.all(marks.sum(axis=0) == 2)
    assert np.all(marks[: T // 2].sum(axis=0) == 1) and np.all(marks[T // 2:].sum(axis=0) == 1)
    np.testing.assert_allclose(y, (x[:, :, 0] * marks).sum(axis=0), rtol=1e-6)
    assert np.all((x[:, :, 0] >= 0) & (x[:, :, 0] < 1))


def test_adding_baseline_is_the_mse_of_predicting_one():
    _, y = adding_batch(np.random.default_rng(1), 200_000, 4, dtype=np.float64)
    assert np.mean((y - 1) ** 2) == pytest.approx(adding_baseline(), rel=0.02)
    assert adding_baseline() == pytest.approx(0.1667, abs=1e-4)


def test_copy_batch_layout():
    T, B = 7, 5
    x, y = copy_batch(np.random.default_rng(2), B, T)
    n = COPY_LENGTH
    assert x.shape == (T + 2 * n, B, 10) and y.shape == (T + 2 * n, B)
    ids = x.argmax(axis=2)
    assert np.all(x.sum(axis=2) == 1)                              # one-hot
    assert np.all((ids[:n] >= 1) & (ids[:n] <= 8))
    assert np.all(ids[n:n + T - 1] == BLANK) and np.all(ids[n + T - 1] == DELIMITER)
    assert np.all(ids[n + T:] == BLANK)
    assert np.all(y[: T + n] == BLANK)
    np.testing.assert_array_equal(y[T + n:], ids[:n])


def test_copy_baseline_is_what_a_memoryless_predictor_scores():
    T = 100
    _, y = copy_batch(np.random.default_rng(3), 64, T)
    L = T + 2 * COPY_LENGTH
    # blanks with certainty for T + 10 steps, then a uniform guess among the 8 symbols
    p = np.zeros((L, 9))
    p[: T + COPY_LENGTH, 0] = 1
    p[T + COPY_LENGTH:, 1:] = 1 / 8
    ce = -np.mean(np.log(p[np.arange(L)[:, None], y]))
    assert ce == pytest.approx(copy_baseline(T), rel=1e-12)
    assert copy_baseline(100) == pytest.approx(10 * math.log(8) / 120)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("D,O,budget", [(2, 1, 17_500), (10, 9, 20_000), (3, 4, 500)])
def test_hidden_for_budget_is_the_largest_hidden_size_within_the_budget(cell, D, O, budget):
    H = hidden_for_budget(cell, D, O, budget)
    assert cell_parameters(cell, D, H, O) <= budget < cell_parameters(cell, D, H + 1, O)
    m = SequenceClassifier(O, input_size=D, hidden_size=H, cell=cell)
    assert m.num_parameters() == cell_parameters(cell, D, H, O)


def test_equal_budget_gives_the_tanh_rnn_about_twice_the_lstm_units():
    h = {c: hidden_for_budget(c, 2, 1, 17_500) for c in ("rnn", "gru", "lstm")}
    assert h["lstm"] == 64 and 1.8 < h["rnn"] / h["lstm"] < 2.2 and h["lstm"] < h["gru"] < h["rnn"]


def test_a_short_adding_problem_is_learned_below_the_baseline():
    res = run_memory_task("adding", 8, cells=["lstm"], budget=2_000, steps=500, eval_every=100,
                          eval_size=200, seed=0)
    c = res.curves[0]
    assert c.steps == [0, 100, 200, 300, 400, 500]
    assert c.final < 0.3 * res.baseline
    assert "lstm" in memory_table(res)


def test_the_adding_baseline_is_measured_on_the_shared_held_out_set():
    res = run_memory_task("adding", 6, cells=["rnn"], budget=200, steps=1, eval_size=5000)
    assert res.baseline == pytest.approx(adding_baseline(), abs=0.01)
    small = run_memory_task("adding", 6, cells=["rnn"], budget=200, steps=1, eval_size=50)
    assert small.baseline != pytest.approx(res.baseline, abs=1e-6)


def test_a_cells_curve_does_not_depend_on_which_cells_run_beside_it():
    kw = dict(budget=400, steps=6, eval_every=3, eval_size=30, seed=3)
    alone = run_memory_task("adding", 5, cells=["gru"], **kw).curves[0].losses
    after = run_memory_task("adding", 5, cells=["rnn", "gru"], **kw).curves[1].losses
    assert alone == after
    other_seed = run_memory_task("adding", 5, cells=["gru"], **{**kw, "seed": 4})
    assert other_seed.curves[0].losses != alone


def test_same_seed_same_curve():
    kw = dict(cells=["rnn"], budget=300, steps=20, eval_every=10, eval_size=20, seed=5)
    a = run_memory_task("copy", 3, **kw)
    b = run_memory_task("copy", 3, **kw)
    assert a.curves[0].losses == b.curves[0].losses
    assert "acc" in memory_table(a)


def test_copy_outputs_never_read_the_future(monkeypatch):
    # the copy task is only a memory task if the output at step t sees inputs up to t: grab the
    # model the lab trains and check that changing a late input leaves earlier outputs alone
    import rnnkit.lab.memory as mem

    made = []
    real = mem.SequenceTagger

    def spy(*a, **kw):
        m = real(*a, **kw)
        made.append(m)
        return m

    monkeypatch.setattr(mem, "SequenceTagger", spy)
    run_memory_task("copy", 4, cells=["gru"], budget=2_000, steps=1, eval_size=3)
    (m,) = made
    x, _ = copy_batch(np.random.default_rng(0), 2, 4)
    y0 = m(x)
    x2 = x.copy()
    x2[15] = np.roll(x2[15], 1, axis=-1)                     # another symbol at step 15
    y1 = m(x2)
    np.testing.assert_array_equal(y0[:15], y1[:15])
    assert not np.allclose(y0[15:], y1[15:])


def test_hidden_for_budget_refuses_a_budget_below_one_unit():
    with pytest.raises(ValueError, match="too small"):
        hidden_for_budget("lstm", 16, 2, 10)


@pytest.mark.parametrize("bad", [dict(task="sum"), dict(cells=["tree"]), dict(T=1),
                                 dict(batch_size=0), dict(eval_every=0), dict(budget=5),
                                 dict(seed=-1)])
def test_bad_settings_raise(bad):
    kw = dict(task="adding", T=10, cells=["rnn"], steps=1, budget=100)
    kw.update(bad)
    with pytest.raises(ValueError):
        run_memory_task(**kw)


@pytest.mark.parametrize("task", ["adding", "copy"])
def test_lab_memory_command(task, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["lab", task, "--T", "5", "--steps", "20", "--eval-every", "10", "--budget",
                 "400"]) == 0
    out = capsys.readouterr().out
    png = Path(f"lab-{task}", f"{task}.png")                 # the default --out
    assert "baseline" in out and "lstm" in out and "gru" in out and (tmp_path / png).exists()
    assert out.endswith(f"wrote {png}\n")


@pytest.mark.parametrize("argv", [["--T", "1"], ["--steps", "0"], ["--cells", "tree"],
                                  ["--lr", "-1"], ["--budget", "5"], ["--budget", "20"],
                                  ["--out", "f"], ["--out", "f/sub"], ["--seed", "-1"]])
def test_lab_memory_command_rejects_bad_arguments(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "f").write_text("")
    assert main(["lab", "adding", "--steps", "1", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error:") and "Traceback" not in captured.err
    assert captured.out == ""                        # rejected before any work or output
    assert [p.name for p in tmp_path.iterdir()] == ["f"]      # and nothing created


def test_adding_sensitivity_is_the_derivative_of_the_prediction_by_each_marked_value():
    from rnnkit.lab.memory import adding_sensitivity

    m = SequenceClassifier(1, input_size=2, hidden_size=5, cell="gru", dtype=np.float64, rng=0)
    x, _ = adding_batch(np.random.default_rng(1), 4, 9, dtype=np.float64)
    got = adding_sensitivity(m, x)
    # central differences on the marked values themselves
    marked = x[:, :, 1] > 0
    first = marked.argmax(axis=0)
    second = 8 - marked[::-1].argmax(axis=0)
    eps, cols = 1e-6, np.arange(4)
    for key, where in (("d_first", first), ("d_second", second)):
        xp, xm = x.copy(), x.copy()
        xp[where, cols, 0] += eps
        xm[where, cols, 0] -= eps
        m.eval()
        fd = (m(xp)[:, 0] - m(xm)[:, 0]) / (2 * eps)
        assert got[key] == pytest.approx(float(fd.mean()), rel=1e-6)
    assert all(np.all(g == 0) for g in m.grads.values())      # leaves no gradient behind


def test_a_trained_adding_model_uses_both_marked_values():
    res = run_memory_task("adding", 8, cells=["lstm"], budget=2_000, steps=500, eval_every=500,
                          eval_size=300, seed=0)
    c = res.curves[0]
    assert 0.7 < c.extra["d_first"] < 1.3 and 0.7 < c.extra["d_second"] < 1.3
    assert "d/dv_a" in memory_table(res)
