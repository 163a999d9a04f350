"""rnnkit serve end to end in a real browser: Debian's chromium driven by Playwright.

What a new user does on each tab, checked against the library: the streamed sample equals
``rnnkit sample``'s text for the seed; a unit clicked in the heat map colours the text exactly as
the model's activations from ``rnn.states()`` say; a span selected with the mouse gives the units
and matches of ``select_units``/``match_spans``; each tab is screenshotted.

Screenshots go to ``$RNNKIT_SCREENSHOTS`` (default: a pytest temporary folder, printed). The
README's pictures come from this test run on a real run directory:

    RNNKIT_SERVE_RUN=runs/shakespeare RNNKIT_SCREENSHOTS=docs \\
        python -m pytest -q tests/test_serve_browser.py

``.ci/run`` installs chromium and Playwright, so these tests cannot skip there.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import serving
from rnnkit.cli import main
from rnnkit.files import printable

CHROMIUM = "/usr/bin/chromium"
playwright_api = pytest.importorskip("playwright.sync_api",
                                     reason="pip install -e '.[browser]' (Playwright)")
if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium", allow_module_level=True)

TEXT = "".join(
    ("KING:\n" if i % 3 == 0 else "")
    + f'The lord (said {i}) "go now" to [the] king and {"queen" * (i % 4)}.\n'
    + ("\n" if i % 3 == 2 else "")
    # characters a page must show escaped, never obey: a bidi override and an ANSI escape
    + ("say \u202eevil\u202c and \x1b[31mred\n" if i % 10 == 5 else "")
    for i in range(80))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    given = os.environ.get("RNNKIT_SERVE_RUN")
    if given:
        return Path(given)
    tmp = tmp_path_factory.mktemp("browser")
    src = tmp / "text.txt"
    src.write_text(TEXT, encoding="utf-8")
    out = tmp / "run"
    assert main(["train", str(src), "--out", str(out), "--max-steps", "40", "--hidden-size",
                 "24", "--embedding-dim", "8", "--batch-size", "4", "--seq-len", "16",
                 "--eval-interval", "10", "--sample-length", "60", "--no-progress",
                 "--val-fraction", "0.2"]) == 0
    return out


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    d = Path(os.environ.get("RNNKIT_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="module")
def server(run):
    with serving(run) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield b
        b.close()


@pytest.fixture
def problems() -> list[str]:
    """What the page reported as errors; a test that provokes one removes it."""
    return []


@pytest.fixture
def page(browser, server, problems):
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = ctx.new_page()
    pg.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    pg.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
          if m.type in ("error", "warning") else None)
    requests: list[str] = []
    pg.on("request", lambda r: requests.append(r.url))
    pg.goto(server.url)
    pg.wait_for_selector("#tab-training")
    yield pg
    ctx.close()
    assert not problems, problems
    foreign = [u for u in requests if not u.startswith(server.url)]
    assert not foreign, f"the page asked for something outside its server: {foreign}"


def _tab(page, name: str) -> None:
    page.click(f"#tab-{name}")
    page.wait_for_selector(f"#panel-{name}", state="visible")


def _shot(page, shots: Path, name: str) -> None:
    page.wait_for_timeout(300)               # let charts finish drawing
    page.screenshot(path=str(shots / f"serve-{name}.png"))


def _model(run: Path):
    import rnnkit

    return rnnkit.load(run)


# ---- Training -----------------------------------------------------------------------------

def test_training_tab_shows_the_curves_and_every_evaluation_sample(page, run, shots):
    from rnnkit.rundir import RunDir

    evals = [r for r in RunDir(run).records() if "val_loss" in r and r.get("sample")]
    _tab(page, "training")
    page.wait_for_selector("#loss-chart canvas")
    page.wait_for_function(
        f"() => document.querySelectorAll('#samples .sample').length == {len(evals)}")
    steps = page.eval_on_selector_all("#samples .sample", "els => els.map(e => +e.dataset.step)")
    assert sorted(steps) == [r["step"] for r in evals]
    newest = page.inner_text(f"#samples .sample[data-step='{evals[-1]['step']}'] pre")
    assert newest.strip("\n") == evals[-1]["sample"].strip("\n")
    page.select_option("#loss-units", "bits")
    page.select_option("#loss-scale", "log")
    _shot(page, shots, "training")


# ---- Sample -----------------------------------------------------------------------------

@pytest.mark.parametrize("prime,seed,temperature", [("KING", 3, "0.8"), ("", 11, "1.2")])
def test_the_streamed_sample_is_rnnkit_samples_text(page, run, shots, capsys, prime, seed,
                                                    temperature):
    _tab(page, "sample")
    page.fill("#prime", prime)
    page.fill("#length", "120")
    page.fill("#temperature", temperature)
    page.fill("#seed", str(seed))
    page.click("#generate")
    page.wait_for_selector("#sample-output[data-done='1']", timeout=30000)
    capsys.readouterr()
    assert main(["sample", str(run), "--prime", prime, "--length", "120", "--seed", str(seed),
                 "--temperature", temperature]) == 0
    cli = capsys.readouterr().out
    done = page.get_attribute("#sample-output", "data-text")
    assert printable(done + ("" if done.endswith("\n") else "\n")) == cli
    # what the page shows, token by token, is the same text
    pieces = page.eval_on_selector_all(
        "#sample-output .tok", "els => els.map(e => e.dataset.raw ?? e.textContent)")
    shown = page.inner_text("#sample-output .prime") if prime else ""
    assert (shown + "".join(pieces)).replace("\u21b5", "") == done
    # hover: the token's probability and the five most likely, as the model gives them
    tm = _model(run)
    from rnnkit.generate import prime_ids, stream

    draws = list(stream(tm.model, prime_ids(tm.vocab, prime), 120,
                        rng=np.random.default_rng(seed), temperature=float(temperature),
                        end_id=tm.vocab.end_id))
    i = 5
    z = draws[i].logits.astype(np.float64)
    p = np.exp(z - z.max())
    p /= p.sum()
    assert abs(float(page.get_attribute(f"#sample-output .tok[data-i='{i}']", "data-p"))
               - p[draws[i].id]) < 1e-9
    page.hover(f"#sample-output .tok[data-i='{i}']")
    page.wait_for_selector("#tok-tip", state="visible")
    tip = page.inner_text("#tok-tip")
    best = tm.vocab.itos[int(np.argmax(p))]
    assert f"{p.max():.3f}"[:4] in tip or f"{100 * p.max():.1f}" in tip, tip
    assert best.strip() == "" or best in tip
    if seed == 3:
        _shot(page, shots, "sample")


def test_a_bad_sample_request_shows_the_servers_message(page, problems):
    _tab(page, "sample")
    page.fill("#prime", "\u2603")                      # a character the model never saw
    page.click("#generate")
    page.wait_for_selector("#sample-error:not(:empty)")
    assert "never saw" in page.inner_text("#sample-error")
    page.fill("#prime", "")
    page.fill("#length", "0")
    page.click("#generate")
    page.wait_for_function("() => document.querySelector('#sample-error').textContent"
                           ".includes('length')")
    # chromium logs each 400 it received; nothing else may be in the console
    assert problems == ["console error: Failed to load resource: the server responded with a "
                        "status of 400 (Bad Request)"] * 2
    problems.clear()


# ---- Neurons -----------------------------------------------------------------------------

def _rgba(css: str) -> tuple[float, ...]:
    nums = [float(x) for x in re.findall(r"[\d.]+", css)]
    return tuple(nums) if len(nums) == 4 else (*nums, 1.0) if nums else (0, 0, 0, 0)


def _check_colours(page, values: np.ndarray) -> None:
    """Each token's background is the unit's colour step: red (220,30,30) or blue (30,80,220)
    with alpha |level|/8*0.85, level = round(v / max|v| * 8); none at level 0."""
    got = page.eval_on_selector_all(
        "#neurons-tokens .tok",
        "els => els.map(e => [+e.dataset.i, +e.dataset.v, getComputedStyle(e).backgroundColor])")
    assert len(got) == len(values)
    scale = float(np.abs(values).max())
    for i, v, bg in got:
        assert abs(v - values[i]) <= 1e-6 * max(1.0, abs(values[i])), (i, v, values[i])
        level = int(np.rint(values[i] / scale * 8)) if scale > 0 else 0
        r, g, b, a = _rgba(bg)
        if level == 0:
            assert a == 0, (i, bg)
        else:
            assert (r, g, b) == ((220, 30, 30) if level > 0 else (30, 80, 220)), (i, bg)
            assert abs(a - abs(level) / 8 * 0.85) < 0.01, (i, level, bg)


def _activations(run: Path, length: int, layer: int, kind: str) -> tuple[list[str], np.ndarray]:
    """The held-out text's first ``length`` tokens through the model's own ``rnn.states``."""
    from rnnkit import checkpoint
    from rnnkit.lab.neurons import encode_text
    from rnnkit.rundir import RunDir
    from rnnkit.train import validation_text

    tm = _model(run)
    meta = checkpoint.read_meta(RunDir(run).newest_best())
    text, _ = validation_text(meta, tm.vocab.level)
    enc = encode_text(tm.vocab, text, 0, length)
    assert not enc.resets[1:].any()                      # a stream-mode run: one pass
    x, _ = tm.model._input(enc.ids[:, None])
    hs, cs, _ = tm.model.rnn.states(x)
    block = (hs if kind == "h" else cs)[:, layer, 0, :]   # (T, H)
    return enc.tokens, block


def test_clicking_a_unit_colours_the_text_by_its_activations(page, run, shots):
    _tab(page, "neurons")
    length = 300
    page.fill("#neurons-length", str(length))
    layers = page.eval_on_selector_all("#neurons-layer option", "els => els.map(e => e.value)")
    layer = int(layers[-1])
    page.select_option("#neurons-layer", str(layer))
    page.select_option("#neurons-kind", "c")
    page.click("#neurons-run")
    page.wait_for_function(
        f"() => document.querySelectorAll('#neurons-tokens .tok').length == {length}")
    _, block = _activations(run, length, layer, "c")
    H = block.shape[1]
    # click the heat map's row of one unit: the canvas maps rows top to bottom, unit 0 first
    box = page.locator("#heatmap").bounding_box()
    rows = page.eval_on_selector("#heatmap", "c => [c.height, c.clientHeight]")
    assert rows[0] > 0
    for _ in range(2):
        page.mouse.click(box["x"] + box["width"] * 0.3,
                         box["y"] + box["height"] * (0.5 + 0.3 * _) * 0.9)
        unit = int(page.input_value("#unit"))
        assert 0 <= unit < H
        _check_colours(page, block[:, unit])
    # the number field picks a unit too
    page.fill("#unit", str(H - 1))
    page.press("#unit", "Enter")
    page.wait_for_timeout(200)
    _check_colours(page, block[:, H - 1])
    _shot(page, shots, "neurons-heatmap")


def test_a_span_selected_with_the_mouse_finds_lstmvis_units_and_matches(page, run, shots):
    from rnnkit.lab.neurons import match_spans, select_units

    length, layer = 400, 0
    tokens, block = _activations(run, length, layer, "h")
    found = None
    for thr in (0.5, 0.3, 0.2, 0.1, 0.05):
        for w in (3, 2, 4):
            for a in range(5, length - w - 5):
                units = select_units(block, a, a + w, thr, 1)
                if units.size and tokens[a] != "\n" and tokens[a + w - 1] != "\n":
                    found = (thr, a, a + w, units)
                    break
            if found:
                break
        if found:
            break
    assert found is not None, "no span with a unit on across it in this model"
    thr, a, b, units = found
    _tab(page, "neurons")
    page.fill("#neurons-length", str(length))
    page.select_option("#neurons-layer", str(layer))
    page.select_option("#neurons-kind", "h")
    page.click("#neurons-run")
    page.wait_for_function(
        f"() => document.querySelectorAll('#neurons-tokens .tok').length == {length}")
    page.fill("#threshold", str(thr))
    page.fill("#pad", "1")
    first = page.locator(f"#neurons-tokens .tok[data-i='{a}']")
    last = page.locator(f"#neurons-tokens .tok[data-i='{b - 1}']")
    first.scroll_into_view_if_needed()
    fb, lb = first.bounding_box(), last.bounding_box()
    page.mouse.move(fb["x"] + 1, fb["y"] + fb["height"] / 2)
    page.mouse.down()
    page.mouse.move(lb["x"] + lb["width"] - 1, lb["y"] + lb["height"] / 2, steps=5)
    page.mouse.up()
    page.wait_for_function(f"() => document.querySelector('#span-start').value == '{a}' && "
                           f"document.querySelector('#span-end').value == '{b}'")
    page.click("#find-units")
    page.wait_for_selector("#matches .match")
    shown_units = page.eval_on_selector_all(
        "#match-units .unit-link", "els => els.map(e => [+e.dataset.layer, e.dataset.kind, "
        "+e.dataset.index])")
    assert shown_units == [[layer, "h", u] for u in units.tolist()]
    want = [(m.start, m.end) for m in match_spans(block, units, thr)][:200]
    got = page.eval_on_selector_all("#matches .match",
                                    "els => els.map(e => [+e.dataset.start, +e.dataset.end])")
    assert [tuple(x) for x in got] == want
    # the matched tokens are marked in the text, the query span among them
    marked = page.eval_on_selector_all("#neurons-tokens .tok.matched",
                                       "els => els.map(e => +e.dataset.i)")
    assert set(marked) == {t for s, e in want for t in range(s, e)}
    assert set(range(a, b)) == set(page.eval_on_selector_all(
        "#neurons-tokens .tok.query", "els => els.map(e => +e.dataset.i)"))
    page.locator("#match-units").scroll_into_view_if_needed()
    page.evaluate("() => window.scrollBy(0, -200)")
    _shot(page, shots, "neurons-match")
    flagged = page.eval_on_selector_all("#matches .match.is-query",
                                        "els => els.map(e => [+e.dataset.start, +e.dataset.end])")
    assert [tuple(x) for x in flagged] == [(s, e) for s, e in want if s <= a and b <= e]


def test_the_feature_table_lists_the_libraries_top_units_and_a_click_shows_one(page, run,
                                                                              shots):
    from rnnkit import checkpoint
    from rnnkit.lab.neurons import encode_text, record_activations, text_features, top_units
    from rnnkit.models import LanguageModel
    from rnnkit.rundir import RunDir
    from rnnkit.train import validation_text

    _tab(page, "neurons")
    page.fill("#neurons-length", "300")
    page.click("#neurons-run")
    page.wait_for_function(
        "() => document.querySelectorAll('#neurons-tokens .tok').length == 300")
    tm = _model(run)
    text, _ = validation_text(checkpoint.read_meta(RunDir(run).newest_best()), tm.vocab.level)
    enc = encode_text(tm.vocab, text, 0, 300)
    found = top_units(record_activations(tm.model, enc), text_features(enc.tokens, enc.level), 3,
                      record_activations(LanguageModel(tm.model.config, rng=0), enc))
    table = page.inner_text("#features")
    for fu in found:
        assert fu.feature.name in table
        for u, r in fu.units:
            assert u.label in table and f"{r:+.2f}" in table.replace("\u2212", "-")
    # a unit of the table, clicked, colours the text: the strongest unit of a present feature
    # (the line-position one where the text has lines of different lengths)
    fu = next((f for f in found if f.feature.name == "line_pos" and f.units),
              next(f for f in found if f.units))
    unit = fu.units[0][0]
    page.locator("#features tr", has_text=fu.feature.name).locator(".unit-link").first.click()
    page.wait_for_function(f"() => document.querySelector('#unit').value == '{unit.index}'")
    assert page.input_value("#neurons-layer") == str(unit.layer)
    assert page.input_value("#neurons-kind") == unit.kind
    page.wait_for_function(
        "() => document.querySelectorAll('#neurons-tokens .tok').length == 300")
    _, block = _activations(run, 300, unit.layer, unit.kind)
    _check_colours(page, block[:, unit.index])
    page.locator("#neurons-tokens").scroll_into_view_if_needed()
    page.evaluate("() => window.scrollBy(0, -120)")
    _shot(page, shots, "neurons")


# ---- Gradients -----------------------------------------------------------------------------

def test_gradients_tab_plots_the_model_beside_untrained_cells(page, shots):
    _tab(page, "gradients")
    page.fill("#grad-length", "60")
    page.click("#grad-run")
    page.wait_for_selector("#grad-chart canvas", timeout=30000)
    legend = page.inner_text("#panel-gradients")
    for name in ("this run's", "tanh RNN", "GRU", "LSTM"):
        assert name in legend
    _shot(page, shots, "gradients")


def test_the_training_tab_follows_a_run_as_it_trains(browser, run, tmp_path, problems):
    """A trainer appending to the log (the lock held, as rnnkit train holds it): the page shows
    "training", then the new evaluation's curve point and sample without a reload."""
    from rnnkit.rundir import RunDir

    live = tmp_path / "live"
    shutil.copytree(run, live, ignore=shutil.ignore_patterns(".lock"))
    rd = RunDir(live)
    rd.acquire()
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    with contextlib.ExitStack() as stack:
        stack.callback(rd.release)
        stack.callback(ctx.close)
        srv = stack.enter_context(serving(live))
        pg = ctx.new_page()
        pg.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        pg.goto(srv.url)
        pg.wait_for_function("() => /training now/.test("
                             "document.querySelector('#training-status').textContent)")
        before = pg.eval_on_selector_all("#samples .sample", "els => els.length")
        last = rd.records()[-1]["step"]
        for s in range(last + 1, last + 4):
            rd.append({"step": s, "loss": 1.5, "train_seconds": 1.0 * s, "lr": 0.002})
        rd.append({"step": last + 3, "train_loss": 1.5, "val_loss": 1.4, "val_ppl": 4.06,
                   "val_bpc": 2.02, "train_seconds": 1.0, "eval_seconds": 0.1,
                   "skipped_steps": 0, "sample": "A line <b>written</b> live"})
        pg.wait_for_function(f"() => document.querySelectorAll('#samples .sample').length == "
                             f"{before + 1}", timeout=15000)
        newest = pg.locator(f"#samples .sample[data-step='{last + 3}'] pre")
        assert newest.inner_text() == "A line <b>written</b> live"        # shown as text
        assert str(last + 3) in pg.inner_text("#training-status")
    assert not problems, problems


def test_control_characters_from_the_run_are_shown_escaped(page, run):
    """A bidi override or an ANSI escape in the text is shown as an escape (as the CLI's
    ``printable``), never obeyed; the raw token stays in ``data-raw``."""
    if os.environ.get("RNNKIT_SERVE_RUN"):
        pytest.skip("needs the test's own run, whose text holds these characters")
    _tab(page, "neurons")
    page.check("#neurons-src-own")
    page.fill("#neurons-text", "say \u202eevil\u202c and \x1b[31mred\n")
    page.click("#neurons-run")
    page.wait_for_selector("#neurons-tokens .tok[data-raw]")
    raw = page.eval_on_selector_all("#neurons-tokens .tok[data-raw]",
                                    "els => els.map(e => [e.dataset.raw, e.textContent])")
    assert [r for r, _ in raw] == ["\u202e", "\u202c", "\x1b"]
    assert [shown for _, shown in raw] == [printable(r, keep="") for r, _ in raw]
    text = page.inner_text("#neurons-tokens")
    assert "\u202e" not in text and "\x1b" not in text and "\\u202e" in text


def test_a_page_opened_before_the_first_checkpoint_picks_the_model_up(browser, run, tmp_path,
                                                                      problems):
    if os.environ.get("RNNKIT_SERVE_RUN"):
        pytest.skip("copies the test's own run")
    live = tmp_path / "starting"
    live.mkdir()
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    with contextlib.ExitStack() as stack:
        stack.callback(ctx.close)
        srv = stack.enter_context(serving(live))
        pg = ctx.new_page()
        pg.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        pg.goto(srv.url)
        pg.wait_for_selector("#tab-training")
        _tab(pg, "neurons")
        # the trainer writes its log, then its first checkpoint (as rnnkit train does)
        shutil.copy(run / "metrics.jsonl", live / "metrics.jsonl")
        shutil.copy(run / "best.safetensors", live / "best.safetensors.tmp")
        os.replace(live / "best.safetensors.tmp", live / "best.safetensors")
        pg.wait_for_function("() => document.querySelectorAll('#neurons-kind option').length "
                             "== 2", timeout=20000)
        layers = pg.eval_on_selector_all("#neurons-layer option", "els => els.map(e => e.value)")
        assert layers == ["0", "1"]
        assert "LSTM" in pg.inner_text("#run-summary")
        pg.fill("#neurons-length", "50")
        pg.click("#neurons-run")
        pg.wait_for_function("() => document.querySelectorAll('#neurons-tokens .tok').length "
                             "== 50")
    problems[:] = [p for p in problems if "409" not in p]    # "no checkpoint yet" answers
    assert not problems, problems
