/* rnnkit serve: the page. Vanilla JS, no build step; uPlot (global `uPlot`) draws the line charts.
   Everything that comes from the server is put into the page as text (text nodes), never as
   HTML, and with its control and format characters shown as escapes (printable(), h(),
   setText()). The HTTP API: /api/run, /api/metrics, /api/sample (SSE),
   /api/neurons, /api/neurons/match, /api/gradients. */
(function () {
  "use strict";

  // ------------------------------------------------------------------------------------------
  // small helpers
  // ------------------------------------------------------------------------------------------
  const $ = (id) => document.getElementById(id);
  const LN2 = Math.LN2;
  const TABS = ["training", "sample", "neurons", "gradients"];

  // Text from the server (tokens, texts, samples, labels, paths, error messages) may hold
  // control or format characters: an RTL override (U+202E) reorders what follows it, a
  // zero-width one hides, ESC shows as a box. Every such character (Unicode Cc except newline
  // and tab, Cf, Zl, Zp and lone surrogates) is shown as a visible escape, "\u202e" or
  // "\x1b", as the CLI's `printable` writes it. This is the one place that decides it.
  const UNPRINTABLE = /(?![\n\t])[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Cs}]/u;
  const UNPRINTABLE_ALL = /(?![\n\t])[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Cs}]/gu;

  /** One character as Python's unicode_escape writes it (\r, \x1b, \u202e, \U000e0001). */
  function escapeChar(c) {
    if (c === "\r") return "\\r";
    const cp = c.codePointAt(0);
    const hex = cp.toString(16);
    if (cp < 0x100) return "\\x" + hex.padStart(2, "0");
    if (cp < 0x10000) return "\\u" + hex.padStart(4, "0");
    return "\\U" + hex.padStart(8, "0");
  }

  /** `s` as text with every control/format character escaped (newline and tab kept). */
  function printable(s) {
    s = s === null || s === undefined ? "" : String(s);
    return UNPRINTABLE.test(s) ? s.replace(UNPRINTABLE_ALL, escapeChar) : s;
  }

  /** `s` as DOM nodes: the text, each escape of printable() in a <span class="cc"> that marks
      it as an escape (so that a literal backslash typed in a text looks different). */
  function printableNodes(s) {
    s = s === null || s === undefined ? "" : String(s);
    if (!UNPRINTABLE.test(s)) return document.createTextNode(s);
    const frag = document.createDocumentFragment();
    let last = 0;
    for (const m of s.matchAll(UNPRINTABLE_ALL)) {
      if (m.index > last) frag.appendChild(document.createTextNode(s.slice(last, m.index)));
      const cc = document.createElement("span");
      cc.className = "cc";
      cc.textContent = escapeChar(m[0]);
      frag.appendChild(cc);
      last = m.index + m[0].length;
    }
    if (last < s.length) frag.appendChild(document.createTextNode(s.slice(last)));
    return frag;
  }

  /** Replace what `node` shows by the text `s` (escaped as printable() says). */
  function setText(node, s) {
    clear(node);
    node.appendChild(printableNodes(s));
  }

  /** An element with text children only: h("span", {class: "x", "data-i": 3}, "text", node).
      String children, "text" and "title" are escaped (printable); data-* attributes are kept
      as they are. */
  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    const plain = tag === "option";          // an <option> shows text only, no elements
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === null || v === undefined || v === false) continue;
        if (k === "class") node.className = v;
        else if (k === "text") { if (plain) node.textContent = printable(v); else node.appendChild(printableNodes(v)); }
        else if (k === "style") node.style.cssText = v;
        else if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
        else if (k === "title" || k === "aria-label" || k === "label") node.setAttribute(k, printable(v));
        else node.setAttribute(k, v === true ? "" : String(v));
      }
    }
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      if (typeof c === "string" || typeof c === "number") {
        node.appendChild(plain ? document.createTextNode(printable(c)) : printableNodes(c));
      } else node.appendChild(c);
    }
    return node;
  }

  /** A span of text whose raw form matters (a token, the prime): its text content is the
      server's text exactly when that has no control/format character; otherwise it shows the
      escaped form and `data-raw` keeps the server's text. */
  function rawSpan(attrs, text) {
    const s = h("span", attrs);
    text = text === null || text === undefined ? "" : String(text);
    if (UNPRINTABLE.test(text)) {
      s.setAttribute("data-raw", text);
      s.classList.add("has-cc");
    }
    s.appendChild(printableNodes(text));
    return s;
  }

  /** "token 7" or "tokens 7–11": the tokens a .. b-1. */
  function tokenRange(a, b) {
    return b - a === 1 ? `token ${a}` : `tokens ${a}\u2013${b - 1}`;
  }

  /** "1 token", "2 tokens" (the plural by an added "s" unless given). */
  function plural(n, word, many) {
    const num = isNum(n) ? n.toLocaleString("en-US") : String(n);
    return `${num} ${n === 1 ? word : many || word + "s"}`;
  }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

  function showError(id, message) {
    const box = $(id);
    if (!box) return;
    setText(box, message);
    box.hidden = false;
  }
  function clearError(id) {
    const box = $(id);
    if (box) { box.hidden = true; box.textContent = ""; }
  }

  const isNum = (x) => typeof x === "number" && Number.isFinite(x);

  function fmt(x, digits) {
    return isNum(x) ? x.toFixed(digits === undefined ? 3 : digits) : "—";
  }

  function fmtDuration(s) {
    if (!isNum(s)) return "";
    if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
    if (s < 3600) return `${(s / 60).toFixed(1)} min`;
    return `${(s / 3600).toFixed(2)} h`;
  }

  /** A token as a visible string for tooltips and lists (newline, tab and a lone space as
      marks; control characters are escaped where it is put into the page: h() or setText()). */
  function visible(tok) {
    if (tok === null || tok === undefined) return "";
    return String(tok).replace(/\n/g, "\u21b5").replace(/\t/g, "\u21e5").replace(/^ $/, "\u2423");
  }

  /** Python's round(): halves to even (as numpy's rint in `rnnkit lab neurons`). */
  function roundHalfEven(x) {
    const r = Math.round(x);
    if (Math.abs(x % 1) === 0.5) return 2 * Math.round(x / 2);
    return r;
  }

  class ApiError extends Error {
    constructor(message, status) { super(message); this.status = status; }
  }

  const UNREACHABLE = "Cannot reach the rnnkit server (is `rnnkit serve` still running?).";

  /** Read an error body {"error": "..."} (or say what came instead). */
  async function errorOf(res) {
    let text = "";
    try { text = await res.text(); } catch (e) { text = ""; }
    try {
      const body = JSON.parse(text);
      if (body && typeof body.error === "string" && body.error) return body.error;
    } catch (e) { /* not JSON */ }
    return `The server answered ${res.status}${res.statusText ? " " + res.statusText : ""}.`;
  }

  /** fetch + JSON; throws ApiError with the server's message on any failure. */
  async function api(path, options) {
    let res;
    try {
      res = await fetch(path, Object.assign({ cache: "no-store" }, options || {}));
    } catch (e) {
      if (e && e.name === "AbortError") throw e;
      throw new ApiError(UNREACHABLE, 0);
    }
    if (!res.ok) throw new ApiError(await errorOf(res), res.status);
    let body;
    try { body = await res.json(); } catch (e) {
      throw new ApiError("The server's answer is not valid JSON.", res.status);
    }
    if (body === null || typeof body !== "object") throw new ApiError("The server's answer is not a JSON object.", res.status);
    return body;
  }

  function postJSON(path, obj) {
    return api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(obj) });
  }

  /** An integer from a number input; null if empty; throws a readable Error if not an integer. */
  function intField(id, name, { optional = false } = {}) {
    const raw = $(id).value.trim();
    if (raw === "") {
      if (optional) return null;
      throw new Error(`${name} is empty.`);
    }
    const x = Number(raw);
    if (!Number.isInteger(x)) throw new Error(`${name} must be a whole number, not "${raw}".`);
    return x;
  }
  function numField(id, name) {
    const raw = $(id).value.trim();
    const x = Number(raw);
    if (raw === "" || !Number.isFinite(x)) throw new Error(`${name} must be a number.`);
    return x;
  }

  // tooltips (fixed-position divs)
  function placeTip(tip, x, y) {
    tip.hidden = false;
    const pad = 14;
    const w = tip.offsetWidth, hgt = tip.offsetHeight;
    let left = x + pad, top = y + pad + 4;
    if (left + w > window.innerWidth - 8) left = Math.max(8, x - w - pad);
    if (top + hgt > window.innerHeight - 8) top = Math.max(8, y - hgt - pad);
    tip.style.left = `${left}px`;
    tip.style.top = `${top}px`;
  }
  function hideTip(tip) { tip.hidden = true; }

  // ------------------------------------------------------------------------------------------
  // state shared by the tabs
  // ------------------------------------------------------------------------------------------
  const S = {
    run: null,          // /api/run
    runError: null,
    defaultsApplied: false,
    modelKey: "",       // the model the selects were filled for ("" : none yet)
    ckptKey: "",
    heldKey: undefined,
    unitShown: undefined,
    forcedOwn: { neurons: false, grad: false },   // "your own text" chosen for want of a held-out one
    tab: "training",
  };

  const unitName = () => (S.run && S.run.unit) || "token";
  const lossUnits = () => $("loss-units").value === "bits" ? "bits" : "nats";
  const toUnits = (nats) => (isNum(nats) ? (lossUnits() === "bits" ? nats / LN2 : nats) : null);

  // ------------------------------------------------------------------------------------------
  // tabs
  // ------------------------------------------------------------------------------------------
  function tabFromHash() {
    const name = (location.hash || "").replace(/^#/, "");
    return TABS.includes(name) ? name : "training";
  }

  function selectTab(name) {
    S.tab = name;
    for (const t of TABS) {
      const on = t === name;
      const btn = $(`tab-${t}`);
      btn.setAttribute("aria-selected", on ? "true" : "false");
      btn.tabIndex = on ? 0 : -1;
      $(`panel-${t}`).hidden = !on;
    }
    hideTip($("tok-tip"));
    hideTip($("heat-tip"));
    requestAnimationFrame(resizeCharts);
  }

  function setupTabs() {
    for (const t of TABS) {
      const btn = $(`tab-${t}`);
      btn.addEventListener("click", () => {
        if (location.hash !== `#${t}`) location.hash = t;
        else selectTab(t);
      });
      btn.addEventListener("keydown", (e) => {
        const i = TABS.indexOf(t);
        let j = -1;
        if (e.key === "ArrowRight") j = (i + 1) % TABS.length;
        else if (e.key === "ArrowLeft") j = (i + TABS.length - 1) % TABS.length;
        if (j >= 0) {
          e.preventDefault();
          location.hash = TABS[j];
          $(`tab-${TABS[j]}`).focus();
        }
      });
    }
    window.addEventListener("hashchange", () => selectTab(tabFromHash()));
    selectTab(tabFromHash());
  }

  // ------------------------------------------------------------------------------------------
  // the run: header, defaults, checkpoint state
  // ------------------------------------------------------------------------------------------
  const CELLS = { lstm: "LSTM", gru: "GRU", rnn: "tanh RNN", tanh: "tanh RNN" };
  const KIND_NAMES = { h: "h (hidden state)", c: "c (cell state)" };

  function summaryOf(run) {
    const parts = [];
    const m = run.model || {};
    if (m.num_layers && m.hidden_size) {
      const cell = CELLS[String(m.cell).toLowerCase()] || String(m.cell || "").toUpperCase();
      parts.push(`${m.num_layers} x ${m.hidden_size} ${cell}`);
    }
    if (run.level) parts.push(`${run.level} level`);
    if (run.mode) parts.push(run.mode);
    if (m.vocab_size) parts.push(`vocabulary ${m.vocab_size}`);
    if (run.checkpoint) {
      if (isNum(run.checkpoint.step)) parts.push(`checkpoint step ${run.checkpoint.step}`);
      else parts.push("checkpoint");
      if (isNum(run.checkpoint.val_loss)) parts.push(`val ${fmt(toUnits(run.checkpoint.val_loss), 2)} ${lossUnits()}/${unitName()}`);
    } else {
      parts.push("no checkpoint yet");
    }
    return parts.join(" \u00b7 ");
  }

  /** The header line: follows the run and the units chosen on the Training tab. */
  function renderSummary() {
    const box = $("run-summary");
    if (!S.run) { clear(box); return; }
    setText(box, summaryOf(S.run));
    const cmd = S.run.training && typeof S.run.training.command === "string" ? S.run.training.command : "";
    if (cmd) box.title = printable(cmd);
    else box.removeAttribute("title");
  }

  // what of the run the page has set itself up for; a change re-applies that part
  const modelKeyOf = (run) => (run && run.model ? JSON.stringify([run.model, run.level, run.mode, run.unit, run.kinds]) : "");
  const ckptKeyOf = (run) => (run && run.checkpoint ? JSON.stringify([run.checkpoint.step, run.checkpoint.path, run.checkpoint.val_loss]) : "");

  function applyRun(run) {
    const prevModel = S.modelKey, prevCkpt = S.ckptKey, prevUnit = S.unitShown;
    S.run = run;
    S.runError = null;
    clearError("run-error");
    setText($("run-path"), run.run || "");
    renderSummary();
    const warn = $("run-warning");
    if (run.warning !== undefined && run.warning !== null && run.warning !== "") {
      setText(warn, `warning: ${run.warning}`);
      warn.hidden = false;
    } else { warn.hidden = true; clear(warn); }
    const base = String(run.run || "").replace(/\/+$/, "").split("/").pop();
    document.title = base ? `${printable(base)} · rnnkit serve` : "rnnkit serve";

    // units: the loss select, the chart's axis, the status line and the samples say per what
    const u = unitName();
    S.unitShown = u;
    $("loss-units").options[0].textContent = printable(`nats / ${u}`);
    $("loss-units").options[1].textContent = printable(`bits / ${u}`);
    if (prevUnit !== undefined && prevUnit !== u && TR.loaded) {
      if (charts.loss) makeLossChart();
      renderTraining();
      renderSamples(true);
    }

    const lim = run.limits || {};
    const setMax = (id, v) => { if (isNum(v)) $(id).max = String(v); };
    setMax("length", lim.max_length);
    setMax("beam", lim.max_beam);
    setMax("neurons-length", lim.max_tokens);
    setMax("grad-length", lim.max_span);
    if (isNum(lim.max_prime)) $("prime").maxLength = lim.max_prime;
    if (isNum(lim.max_text_chars)) { $("neurons-text").maxLength = lim.max_text_chars; $("grad-text").maxLength = lim.max_text_chars; }

    // the defaults do not depend on the model: once, into the fields the user has not filled
    if (!S.defaultsApplied) {
      S.defaultsApplied = true;
      const d = run.defaults || {};
      const setVal = (id, v) => { if (v !== null && v !== undefined && $(id).value.trim() === "") $(id).value = String(v); };
      setVal("length", d.length);
      setVal("temperature", d.temperature);
      setVal("seed", d.seed);
      setVal("neurons-length", d.neurons_length);
      setVal("grad-length", d.gradients_length);
      if (d.threshold !== undefined && d.threshold !== null) $("threshold").value = String(d.threshold);
      if (d.pad !== undefined && d.pad !== null) $("pad").value = String(d.pad);
    }

    // the model: layers, states (first time it appears, or when another model is served)
    const mk = modelKeyOf(run);
    if (mk && mk !== prevModel) {
      S.modelKey = mk;
      applyModel(run, !!prevModel);
    } else if (!prevModel) {
      applyModel(run, false);          // no model yet: layer 0, state h
    }
    const hk = JSON.stringify(run.heldout === undefined ? null : run.heldout);
    if (hk !== S.heldKey) {
      S.heldKey = hk;
      applyHeldout(run.heldout);
    }
    const ck = ckptKeyOf(run);
    S.ckptKey = ck;
    if (ck && prevCkpt && ck !== prevCkpt && mk === prevModel) noteNewCheckpoint(run);
    applyCheckpointState();
  }

  /** Fill the layer and state selects for the served model, keeping the user's choice where
      the model still has it. `changed`: another model than the one the page showed. */
  function applyModel(run, changed) {
    const layers = (run.model && run.model.num_layers) || 1;
    const sel = $("neurons-layer");
    const keepLayer = sel.value;
    clear(sel);
    for (let l = 0; l < layers; l++) {
      const note = layers > 1 ? (l === 0 ? " (bottom)" : l === layers - 1 ? " (top)" : "") : "";
      sel.appendChild(h("option", { value: l }, `${l}${note}`));
    }
    sel.value = keepLayer !== "" && Number(keepLayer) < layers ? keepLayer : "0";
    const kinds = Array.isArray(run.kinds) && run.kinds.length ? run.kinds : ["h"];
    const ks = $("neurons-kind");
    const keepKind = ks.value;
    clear(ks);
    for (const k of kinds) ks.appendChild(h("option", { value: k }, KIND_NAMES[k] || String(k)));
    ks.value = kinds.includes(keepKind) ? keepKind : String(kinds[0]);
    if (changed) {
      // what the Neurons and Gradients tabs show belongs to the model served before
      const what = summaryOf(Object.assign({}, run, { checkpoint: null })).replace(/ \u00b7 no checkpoint yet$/, "");
      if (NR.d) {
        NR.d = null; NR.req = null; NR.match = null; NR.query = null; NR.spans = [];
        $("neurons-result").hidden = true;
        for (const id of ["neurons-tokens", "features", "match-units", "matches", "neurons-info", "unit-desc"]) clear($(id));
        $("match-result").hidden = true;
        unitMessage("");
        setText($("neurons-status"), `the served model changed (now ${what}): Run again`);
      }
      if (GR.d) {
        GR.d = null;
        if (charts.grad) { charts.grad.u.destroy(); charts.grad = null; }
        $("grad-result").hidden = true;
        clear($("grad-tokens")); clear($("grad-info")); GR.spans = []; GR.hl = -1;
        setText($("grad-status"), `the served model changed (now ${what}): Run again`);
      }
    }
  }

  /** The held-out source: offered when the run has one, else "your own text" (and back to the
      held-out text once there is one, unless the user has typed a text meanwhile). */
  function applyHeldout(held) {
    held = held && typeof held === "object" ? held : { error: "no checkpoint yet" };
    for (const pre of ["neurons", "grad"]) {
      const radio = $(`${pre}-src-heldout`);
      const own = $(`${pre}-src-own`);
      const text = $(`${pre}-text`);
      const desc = radio.closest(".source-row").querySelector(".heldout-desc");
      if (held.error || !held.source) {
        radio.disabled = true;
        if (!own.checked) { own.checked = true; S.forcedOwn[pre] = true; }
        text.hidden = false;
        setText(desc, `(none: ${held.error || "the run names no held-out text"})`);
      } else {
        radio.disabled = false;
        if (S.forcedOwn[pre] && own.checked && !text.value.trim()) {
          radio.checked = true;
          text.hidden = true;
        }
        S.forcedOwn[pre] = false;
        const n = isNum(held.tokens) ? ` \u00b7 ${plural(held.tokens, "token")}`
          : isNum(held.chars) ? ` \u00b7 ${plural(held.chars, "character")}` : "";
        setText(desc, `held-out text: ${held.source}${n}`);
      }
    }
  }

  /** A newer checkpoint of the same model: results on the tabs came from the one before. */
  function noteNewCheckpoint(run) {
    const step = run.checkpoint && isNum(run.checkpoint.step) ? ` (step ${run.checkpoint.step})` : "";
    if (NR.d && !NR.busy) setText($("neurons-status"), `a newer checkpoint${step} is loaded: Run again to see it`);
    if (GR.d && !$("grad-run").disabled) setText($("grad-status"), `a newer checkpoint${step} is loaded: Run again to see it`);
  }

  function applyCheckpointState() {
    const ready = !!(S.run && S.run.checkpoint);
    for (const t of ["sample", "neurons", "gradients"]) {
      const panel = $(`panel-${t}`);
      const msg = panel.querySelector(".no-ckpt");
      const body = panel.querySelector(".needs-ckpt");
      body.hidden = !ready;
      msg.hidden = ready;
      if (!ready) {
        clear(msg);
        if (S.runError) {
          msg.appendChild(h("strong", null, "Could not load the run"));
          msg.appendChild(h("div", { class: "error" }, S.runError));
        } else if (S.run) {
          msg.appendChild(h("strong", null, "This run has no checkpoint yet"));
          msg.appendChild(h("p", null,
            "rnnkit train saves one at its first evaluation. The Training tab follows the run " +
            "live; this tab works as soon as a checkpoint exists (the page looks for it every " +
            "few seconds)."));
        } else {
          msg.appendChild(h("strong", null, "Loading the run…"));
        }
      }
    }
  }

  // /api/run is read again: every 5 s while there is no checkpoint (or it could not be read),
  // every 15 s after (another model may be served, a warning may come or go), and whenever
  // the metrics log shows a new evaluation or the trainer starting or stopping
  let runRefreshing = false, runAgain = false, runTimer = null;
  async function loadRun(quiet) {
    if (runRefreshing) { runAgain = true; return; }
    runRefreshing = true;
    clearTimeout(runTimer);
    try {
      applyRun(await api("api/run"));
    } catch (e) {
      if (!quiet || !S.run) {
        S.runError = e.message || String(e);
        showError("run-error", `Could not load the run: ${S.runError}`);
        if (!S.run) { clear($("run-path")); applyCheckpointState(); }
      }
    } finally {
      runRefreshing = false;
      if (runAgain) { runAgain = false; loadRun(true); }
      else {
        const waiting = !S.run || !S.run.checkpoint || !!S.runError;
        runTimer = setTimeout(() => loadRun(true), waiting ? 5000 : 15000);
      }
    }
  }

  // ------------------------------------------------------------------------------------------
  // charts (uPlot)
  // ------------------------------------------------------------------------------------------
  const charts = {};   // name -> {u, el, height}

  function chartWidth(el) {
    const w = el.clientWidth || (el.parentElement && el.parentElement.clientWidth) || 0;
    return Math.max(300, w || document.querySelector("main").clientWidth - 80);
  }

  function resizeCharts() {
    for (const c of Object.values(charts)) {
      if (!c || !c.u || !c.el.offsetParent) continue;
      const w = chartWidth(c.el);
      if (Math.abs(w - c.u.width) > 1) c.u.setSize({ width: w, height: c.height });
    }
  }
  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(resizeCharts, 100);
  });

  const AXIS = { stroke: "#6b6f76", grid: { stroke: "#eeede8", width: 1 }, ticks: { stroke: "#e3e2dc", width: 1 }, font: "12px system-ui, sans-serif", labelFont: "13px system-ui, sans-serif" };

  // Log axes: the charts plot log10(value) on a linear scale with their own ticks (uPlot's own
  // log scale snaps to whole decades and fails on very small numbers such as 1e-25).
  const SUP = { "-": "\u207b", 0: "\u2070", 1: "\u00b9", 2: "\u00b2", 3: "\u00b3", 4: "\u2074", 5: "\u2075", 6: "\u2076", 7: "\u2077", 8: "\u2078", 9: "\u2079" };

  /** A tick label for 10^lv: 10⁻³ for a power of ten, else the number. */
  function powerLabel(lv) {
    if (lv === null || lv === undefined || !Number.isFinite(lv)) return "";
    const e = Math.round(lv);
    if (Math.abs(lv - e) < 1e-9) {
      if (e >= 0 && e <= 3) return String(Math.pow(10, e));
      if (e < 0 && e >= -2) return String(+Math.pow(10, e).toFixed(-e));
      return "10" + String(e).split("").map((c) => SUP[c]).join("");
    }
    const v = Math.pow(10, lv);
    return String(+v.toPrecision(2));
  }

  /** Tick positions (log10 values) between min and max. */
  function logSplits(u, axisIdx, min, max) {
    if (!Number.isFinite(min) || !Number.isFinite(max) || max <= min) return [min];
    const span = max - min;
    let out = [];
    if (span > 3) {
      const k = Math.max(1, Math.ceil(span / 8));
      for (let e = Math.ceil(min); e <= Math.floor(max); e++) if (e % k === 0) out.push(e);
    } else {
      const sets = [[1], [1, 2, 5], [1, 2, 3, 5], [1, 1.5, 2, 3, 4, 5, 7], [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 9]];
      for (const ms of sets) {
        const cand = [];
        for (let e = Math.floor(min) - 1; e <= Math.ceil(max); e++) {
          for (const m of ms) {
            const lv = e + Math.log10(m);
            if (lv >= min - 1e-9 && lv <= max + 1e-9) cand.push(lv);
          }
        }
        if (cand.length > 9) break;
        out = cand;
        if (cand.length >= 4) break;
      }
      if (out.length < 2) out = [min, (min + max) / 2, max];
    }
    return out;
  }

  /** The y range of a log10 series: a little padding, whole decades for wide ranges. */
  function logRange(u, min, max) {
    if (!Number.isFinite(min) || !Number.isFinite(max)) return [0, 1];
    if (max - min > 3) return [Math.floor(min), Math.ceil(max)];
    const pad = Math.max(0.02, (max - min) * 0.06);
    return [min - pad, max + pad];
  }

  const log10OrNull = (v) => (isNum(v) && v > 0 ? Math.log10(v) : null);

  // ------------------------------------------------------------------------------------------
  // 1. Training
  // ------------------------------------------------------------------------------------------
  const TR = {
    records: [],
    training: false,
    loaded: false,
    timer: null,
    sampleIdx: -1,       // slider position (index into evals with samples); -1: follow the newest
    samples: [],         // eval records with a sample, oldest first
    samplesKey: "",
  };

  function scheduleMetrics(ms) {
    clearTimeout(TR.timer);
    TR.timer = setTimeout(pollMetrics, ms);
  }

  async function pollMetrics() {
    let q = "";
    if (TR.records.length) {
      const last = TR.records[TR.records.length - 1];
      q = `?since=${TR.records.length}&step=${encodeURIComponent(isNum(last.step) ? last.step : "")}`;
    }
    const wasTraining = TR.training;
    const first = !TR.loaded;           // the page read /api/run just before its first poll
    let newEvals = false;
    try {
      const m = await api(`api/metrics${q}`);
      const recs = Array.isArray(m.records) ? m.records.filter((r) => r && typeof r === "object") : [];
      if (m.reset) TR.records = recs;
      else TR.records = TR.records.concat(recs);
      newEvals = recs.some((r) => "val_loss" in r) || !!m.reset;
      TR.training = !!m.training;
      TR.loaded = true;
      clearError("training-error");
      renderTraining();
    } catch (e) {
      showError("training-error", `Could not read the metrics: ${e.message || e}`);
      if (!TR.loaded) setText($("training-status"), "the metrics log could not be read");
    }
    // a new evaluation may have written a new checkpoint; a finished run may have a last one
    // (and again a little later: the trainer may write the checkpoint after the log's record)
    if (TR.loaded && !first && (newEvals || wasTraining !== TR.training)) {
      loadRun(true);
      setTimeout(() => loadRun(true), 3000);
    }
    // while training: often; a run with no log yet (a trainer may start any moment): every 3 s
    scheduleMetrics(TR.training ? 2000 : TR.records.length ? 10000 : 3000);
  }

  function trainingSeconds() {
    for (let i = TR.records.length - 1; i >= 0; i--) {
      if (isNum(TR.records[i].train_seconds)) return TR.records[i].train_seconds;
    }
    return null;
  }

  function lastStep() {
    for (let i = TR.records.length - 1; i >= 0; i--) {
      if (isNum(TR.records[i].step)) return TR.records[i].step;
    }
    return null;
  }

  function renderStatus() {
    const box = $("training-status");
    clear(box);
    const n = TR.records.length;
    const step = lastStep();
    const secs = trainingSeconds();
    const evals = TR.records.filter((r) => isNum(r.val_loss));
    const best = evals.reduce((b, r) => (b === null || r.val_loss < b ? r.val_loss : b), null);
    const u = `${lossUnits()}/${unitName()}`;
    const parts = [];
    if (TR.training) {
      parts.push("training now");
      if (step !== null) parts.push(`step ${step}`);
      if (secs !== null) parts.push(fmtDuration(secs));
      if (evals.length) parts.push(`last val ${fmt(toUnits(evals[evals.length - 1].val_loss))} ${u}`);
    } else if (n === 0) {
      parts.push(S.run && S.run.kind && S.run.kind !== "run" ? `no metrics log (this is ${S.run.kind === "export" ? "an export" : "a checkpoint"}, not a run directory)` : "no metrics log yet");
    } else {
      parts.push("finished");
      if (step !== null) parts.push(plural(step, "step"));
      if (secs !== null) parts.push(fmtDuration(secs));
      if (best !== null) parts.push(`best val ${fmt(toUnits(best))} ${u}`);
    }
    box.appendChild(h("span", { class: TR.training ? "dot live" : "dot" }));
    box.appendChild(printableNodes(parts.join(" \u00b7 ")));
  }

  function lossData() {
    const rows = new Map();   // step -> [train, val]
    for (const r of TR.records) {
      if (!isNum(r.step)) continue;
      let row = rows.get(r.step);
      if (isNum(r.loss)) { if (!row) rows.set(r.step, row = [null, null]); row[0] = r.loss; }
      if ("val_loss" in r && isNum(r.val_loss)) { if (!row) rows.set(r.step, row = [null, null]); row[1] = r.val_loss; }
    }
    const steps = Array.from(rows.keys()).sort((a, b) => a - b);
    const log = $("loss-scale").value === "log";
    const k = lossUnits() === "bits" ? 1 / LN2 : 1;
    const keep = (v) => (v === null ? null : log ? log10OrNull(v * k) : v * k);
    const train = [], smooth = [], val = [];
    const nTrain = steps.reduce((c, s) => c + (rows.get(s)[0] !== null ? 1 : 0), 0);
    const beta = Math.min(0.99, Math.max(0.6, 1 - 40 / Math.max(1, nTrain)));
    let ema = 0, count = 0;
    for (const s of steps) {
      const [t, v] = rows.get(s);
      train.push(keep(t));
      if (t !== null) {
        ema = beta * ema + (1 - beta) * t;
        count++;
        smooth.push(keep(ema / (1 - Math.pow(beta, count))));
      } else smooth.push(null);
      val.push(keep(v));
    }
    return { data: [steps, train, smooth, val], nTrain, nVal: val.filter((v) => v !== null).length };
  }

  function makeLossChart() {
    const el = $("loss-chart");
    if (typeof uPlot === "undefined") return;
    if (charts.loss) { charts.loss.u.destroy(); charts.loss = null; }
    clear(el);
    const log = $("loss-scale").value === "log";
    const valueFmt = (u, v) => (v === null || v === undefined ? "—" : (log ? Math.pow(10, v) : v).toFixed(3));
    const yAxis = Object.assign({}, AXIS, { label: printable(`loss (${lossUnits()} / ${unitName()}${log ? ", log scale" : ""})`), size: 56, labelSize: 22 });
    if (log) Object.assign(yAxis, { splits: logSplits, values: (u, vals) => vals.map(powerLabel) });
    const opts = {
      width: chartWidth(el),
      height: 340,
      scales: { x: { time: false }, y: log ? { auto: true, range: logRange } : { auto: true } },
      axes: [Object.assign({}, AXIS, { label: "step", labelSize: 22 }), yAxis],
      series: [
        { label: "step", value: (u, v) => (v === null ? "—" : String(v)) },
        { label: "train (per step)", stroke: "rgba(47,95,179,0.30)", width: 1, spanGaps: true, points: { show: false }, value: valueFmt },
        { label: "train (smoothed)", stroke: "#2f5fb3", width: 2, spanGaps: true, points: { show: false }, value: valueFmt },
        { label: "validation", stroke: "#d9412e", width: 2, spanGaps: true, value: valueFmt,
          points: { show: true, size: 7, width: 1.5, stroke: "#d9412e", fill: "#ffffff" } },
      ],
      cursor: { drag: { x: true, y: false }, points: { size: 7 } },
      legend: { live: true },
    };
    const { data } = lossData();
    charts.loss = { u: new uPlot(opts, data, el), el, height: 340, n: data[0].length };
  }

  function renderLossChart() {
    const { data, nTrain, nVal } = lossData();
    const empty = $("loss-empty");
    if (nTrain + nVal === 0) {
      $("loss-chart").hidden = true;
      empty.hidden = false;
      if (!TR.records.length) {
        empty.textContent = S.run && S.run.kind && S.run.kind !== "run"
          ? "There is no metrics log to show: this is not a run directory of rnnkit train."
          : "This run has no metrics log (metrics.jsonl) yet. The chart appears when rnnkit train logs its first step.";
      } else {
        empty.textContent = "The metrics log has no loss values yet.";
      }
      return;
    }
    empty.hidden = true;
    $("loss-chart").hidden = false;
    const c = charts.loss;
    if (!c) { makeLossChart(); return; }
    if (!c.u) return;
    // keep the user's zoom while new points come in
    const xs = c.u.data[0];
    const zoomed = xs && xs.length > 1 && c.u.scales.x && isNum(c.u.scales.x.min) &&
      (c.u.scales.x.min > xs[0] || c.u.scales.x.max < xs[xs.length - 1]);
    c.u.setData(data, !zoomed);
    c.n = data[0].length;
  }

  function sampleLabel(r) {
    return `step ${r.step} \u00b7 val ${fmt(toUnits(r.val_loss))} ${lossUnits()}/${unitName()}`;
  }

  function renderSamples(force) {
    const samples = TR.records.filter((r) => "val_loss" in r && typeof r.sample === "string");
    const key = `${samples.length}:${samples.length ? samples[samples.length - 1].step : ""}:${lossUnits()}:${TR.records.length ? TR.records[0].step : ""}`;
    if (!force && key === TR.samplesKey) return;
    TR.samplesKey = key;
    TR.samples = samples;
    const list = $("samples");
    clear(list);
    const empty = $("samples-empty");
    if (!samples.length) {
      $("sample-viewer").hidden = true;
      empty.hidden = false;
      const evals = TR.records.filter((r) => "val_loss" in r).length;
      empty.textContent = !TR.records.length ? "No samples yet: rnnkit train writes one at each evaluation."
        : evals ? "No samples in this metrics log: its evaluations recorded none (they are written when rnnkit train runs with --sample-length above 0)."
        : "No samples yet: rnnkit train writes one at each evaluation (none has happened yet).";
      return;
    }
    empty.hidden = true;
    $("sample-viewer").hidden = false;
    for (let i = samples.length - 1; i >= 0; i--) {
      const r = samples[i];
      const entry = h("div", { class: "sample", "data-step": r.step, "data-index": i, title: "show this sample above" },
        h("div", { class: "meta" }, h("b", null, `step ${r.step}`), h("span", null, `val ${fmt(toUnits(r.val_loss))} ${lossUnits()}/${unitName()}`)),
        h("pre", null, r.sample));
      entry.addEventListener("click", () => { showSample(i); $("sample-viewer").scrollIntoView({ block: "nearest", behavior: "smooth" }); });
      list.appendChild(entry);
    }
    const slider = $("sample-step");
    slider.min = "0";
    slider.max = String(samples.length - 1);
    showSample(TR.sampleIdx < 0 || TR.sampleIdx >= samples.length ? samples.length - 1 : TR.sampleIdx, true);
  }

  function showSample(i, keepFollow) {
    const samples = TR.samples;
    if (!samples.length) return;
    i = Math.max(0, Math.min(samples.length - 1, i));
    if (!keepFollow) TR.sampleIdx = i === samples.length - 1 ? -1 : i;
    const r = samples[i];
    $("sample-step").value = String(i);
    setText($("sample-step-label"), `${sampleLabel(r)} \u00b7 ${i + 1} of ${samples.length}`);
    const focus = $("sample-focus");
    setText(focus, r.sample);
    focus.setAttribute("data-step", String(r.step));
    for (const e of $("samples").querySelectorAll(".sample")) {
      e.classList.toggle("current", e.getAttribute("data-step") === String(r.step) && Number(e.getAttribute("data-index")) === i);
    }
  }

  function renderTraining() {
    renderStatus();
    renderLossChart();
    renderSamples(false);
  }

  function setupTraining() {
    $("loss-units").addEventListener("change", () => {
      renderSummary();
      if (charts.loss) makeLossChart();
      renderTraining();
      renderSamples(true);
    });
    $("loss-scale").addEventListener("change", () => {
      if (charts.loss) makeLossChart();
      renderTraining();
    });
    $("sample-step").addEventListener("input", () => showSample(Number($("sample-step").value)));
    pollMetrics();
  }

  // ------------------------------------------------------------------------------------------
  // 2. Sample
  // ------------------------------------------------------------------------------------------
  const SM = { ctrl: null, toks: [], count: 0, t0: 0, runId: 0 };

  function surpriseColour(p) {
    if (!isNum(p) || p <= 0) return "rgba(245,158,11,0.55)";
    const bits = -Math.log2(Math.min(1, p));
    const a = Math.min(1, bits / 8) * 0.55;
    return a < 0.02 ? "" : `rgba(245,158,11,${a.toFixed(3)})`;
  }

  function setSampling(on) {
    $("generate").disabled = on;
    $("stop").disabled = !on;
  }

  function sampleStatus(text) { setText($("sample-status"), text); }

  function sampleParams() {
    const p = new URLSearchParams();
    p.set("prime", $("prime").value);
    const add = (key, id) => {
      const v = $(id).value.trim();
      if (v !== "") p.set(key, v);
    };
    add("length", "length");
    add("temperature", "temperature");
    add("top_k", "top-k");
    add("top_p", "top-p");
    add("seed", "seed");
    add("beam", "beam");
    return p;
  }

  async function generate() {
    if (SM.ctrl) SM.ctrl.abort();
    const ctrl = new AbortController();
    SM.ctrl = ctrl;
    const runId = ++SM.runId;
    const out = $("sample-output");
    clear(out);
    out.removeAttribute("data-done");
    out.removeAttribute("data-text");
    clearError("sample-error");
    hideTip($("tok-tip"));
    SM.toks = [];
    SM.count = 0;
    SM.t0 = performance.now();
    const beam = $("beam").value.trim();
    setSampling(true);
    sampleStatus(beam ? `searching with beam width ${beam}…` : "starting…");
    const state = { done: false, failed: false };
    const current = () => SM.runId === runId;
    try {
      let res;
      try {
        res = await fetch(`api/sample?${sampleParams()}`, { signal: ctrl.signal, cache: "no-store" });
      } catch (e) {
        if (e && e.name === "AbortError") throw e;
        throw new ApiError(UNREACHABLE, 0);
      }
      if (!res.ok) throw new ApiError(await errorOf(res), res.status);
      if (!res.body || !res.body.getReader) throw new ApiError("This browser cannot read a streamed answer.", 0);
      const reader = res.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      const sep = /\r\n\r\n|\n\n|\r\r/;
      for (;;) {
        const { value, done } = await reader.read();
        if (!current()) { try { await reader.cancel(); } catch (e) { /* gone */ } return; }
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let m;
        while ((m = sep.exec(buf)) !== null) {
          const block = buf.slice(0, m.index);
          buf = buf.slice(m.index + m[0].length);
          handleEvent(block, state);
        }
        if (state.failed) { try { await reader.cancel(); } catch (e) { /* gone */ } break; }
        if (!state.done) {
          const secs = (performance.now() - SM.t0) / 1000;
          if (SM.count) sampleStatus(`generating… ${plural(SM.count, "token")} \u00b7 ${secs.toFixed(1)} s`);
        }
      }
      buf += dec.decode();
      if (buf.trim() && !state.failed) handleEvent(buf, state);
      if (!state.done && !state.failed) {
        state.failed = true;
        showError("sample-error", "The stream ended before the server said it was done.");
        sampleStatus(`${plural(SM.count, "token")}, incomplete`);
      }
    } catch (e) {
      if (!current()) return;
      if (e && e.name === "AbortError") {
        const secs = (performance.now() - SM.t0) / 1000;
        sampleStatus(`stopped by you \u00b7 ${plural(SM.count, "token")} \u00b7 ${secs.toFixed(1)} s`);
      } else {
        showError("sample-error", e && e.message ? e.message : String(e));
        sampleStatus(SM.count ? `failed after ${plural(SM.count, "token")}` : "failed");
      }
    } finally {
      if (current()) { setSampling(false); SM.ctrl = null; }
    }
  }

  function parseBlock(block) {
    let event = "message";
    const data = [];
    for (const line of block.split(/\r\n|\n|\r/)) {
      if (!line || line.startsWith(":")) continue;
      const i = line.indexOf(":");
      const field = i < 0 ? line : line.slice(0, i);
      let value = i < 0 ? "" : line.slice(i + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") event = value;
      else if (field === "data") data.push(value);
    }
    return { event, data: data.join("\n") };
  }

  function handleEvent(block, state) {
    const { event, data } = parseBlock(block);
    if (!data && event === "message") return;
    let d;
    try { d = JSON.parse(data); } catch (e) {
      state.failed = true;
      showError("sample-error", `The server sent an event that is not JSON (${event}).`);
      return;
    }
    const out = $("sample-output");
    if (event === "start") {
      if (d && typeof d.prime === "string" && d.prime) out.appendChild(rawSpan({ class: "prime", title: "the prime" }, d.prime));
    } else if (event === "token") {
      if (!d || typeof d !== "object") return;
      const i = isNum(d.i) ? d.i : SM.toks.length;
      const text = typeof d.text === "string" ? d.text : typeof d.token === "string" ? d.token : "";
      const span = rawSpan({ class: /\n/.test(text) ? "tok nl" : "tok", "data-i": i, "data-p": isNum(d.p) ? d.p : "", "data-id": isNum(d.id) ? d.id : "" }, text);
      const bg = surpriseColour(d.p);
      if (bg) span.style.backgroundColor = bg;
      SM.toks[i] = d;
      SM.count++;
      out.appendChild(span);
    } else if (event === "done") {
      state.done = true;
      if (d && typeof d.text === "string") out.setAttribute("data-text", d.text);
      out.setAttribute("data-done", "1");
      const n = d && isNum(d.tokens) ? d.tokens : SM.count;
      const secs = d && isNum(d.seconds) ? d.seconds : (performance.now() - SM.t0) / 1000;
      const why = d && d.stopped === "end" ? "stopped at <end>" : d && d.stopped === "length" ? "reached the length" : d && d.stopped ? `stopped: ${d.stopped}` : "";
      const rate = secs > 0 && n ? ` (${Math.round(n / secs)} tokens/s)` : "";
      sampleStatus([plural(n, "token"), `${secs.toFixed(2)} s${rate}`, why].filter(Boolean).join(" \u00b7 "));
    } else if (event === "error") {
      state.failed = true;
      showError("sample-error", d && typeof d.error === "string" ? d.error : "The generation failed.");
      sampleStatus(SM.count ? `failed after ${plural(SM.count, "token")}` : "failed");
    }
  }

  function fmtP(p) {
    if (!isNum(p)) return "—";
    if (p === 0) return "0";
    if (p < 0.001) return p.toExponential(1);
    return p.toFixed(3);
  }

  function tokenTip(tok) {
    const tip = $("tok-tip");
    clear(tip);
    tip.appendChild(h("div", { class: "tt-head" },
      h("span", null, h("span", { class: "tkn" }, visible(tok.token !== undefined ? tok.token : tok.text)),
        isNum(tok.id) ? h("span", { class: "muted" }, `  id ${tok.id}`) : null),
      h("span", { class: "muted" }, `#${tok.i}`)));
    tip.appendChild(h("div", { class: "tt-pq" }, `p ${fmtP(tok.p)} (model)  \u00b7  q ${fmtP(tok.q)} (sampled from)`));
    const top = Array.isArray(tok.top) ? tok.top.slice(0, 5) : [];
    if (top.length) {
      tip.appendChild(h("div", { class: "muted", style: "margin:8px 0 2px" }, "most likely next tokens"));
      for (const alt of top) {
        const p = isNum(alt.p) ? alt.p : 0;
        const chosen = alt.token === tok.token;
        tip.appendChild(h("div", { class: chosen ? "alt chosen" : "alt" },
          h("span", null, h("span", { class: "tkn" }, visible(alt.token))),
          h("div", { class: "bar-bg" }, h("div", { class: "bar-fg", style: `width:${(Math.max(0, Math.min(1, p)) * 100).toFixed(1)}%` })),
          h("span", { class: "num" }, fmtP(alt.p))));
      }
    }
    return tip;
  }

  function setupSample() {
    $("sample-form").addEventListener("submit", (e) => { e.preventDefault(); generate(); });
    $("stop").addEventListener("click", () => { if (SM.ctrl) SM.ctrl.abort(); });
    $("prime").addEventListener("keydown", (e) => {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); generate(); }
    });
    const out = $("sample-output");
    const tip = $("tok-tip");
    out.addEventListener("mousemove", (e) => {
      const span = e.target && e.target.closest ? e.target.closest(".tok") : null;
      if (!span || !out.contains(span)) { hideTip(tip); return; }
      const tok = SM.toks[Number(span.getAttribute("data-i"))];
      if (!tok) { hideTip(tip); return; }
      if (tip.dataset.for !== span.getAttribute("data-i") || tip.hidden) {
        tokenTip(tok);
        tip.dataset.for = span.getAttribute("data-i");
      }
      placeTip(tip, e.clientX, e.clientY);
    });
    out.addEventListener("mouseleave", () => hideTip(tip));
  }

  // ------------------------------------------------------------------------------------------
  // 3. Neurons
  // ------------------------------------------------------------------------------------------
  const HEAT_TOP = 10;       // px above the rows: a strip marking the query span and matches
  const NR = {
    req: null,        // the request the shown data answers
    d: null,          // {T, H, layer, kind, tokens, display, values: Float32Array, scale, ...}
    unit: 0,
    cw: 3, ch: 2,
    base: null,       // offscreen canvas T x H
    spans: [],
    query: null,      // [a, b) typed or selected
    match: null,      // the /api/neurons/match answer
    busy: false,
  };

  function decodeValues(b64, T, H) {
    const bin = atob(b64);
    const n = bin.length;
    if (n !== T * H * 4) throw new Error(`The server sent ${n} bytes of values for T=${T} x H=${H} (expected ${T * H * 4}).`);
    const bytes = new Uint8Array(n);
    for (let i = 0; i < n; i++) bytes[i] = bin.charCodeAt(i);
    const little = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
    if (little) return new Float32Array(bytes.buffer);
    const dv = new DataView(bytes.buffer);
    const out = new Float32Array(T * H);
    for (let i = 0; i < T * H; i++) out[i] = dv.getFloat32(i * 4, true);
    return out;
  }

  function neuronsSource(pre) {
    return $(`${pre}-src-own`).checked ? $(`${pre}-text`).value : null;
  }

  function neuronsRequest() {
    const text = neuronsSource("neurons");
    if (text !== null && !text.trim()) throw new Error("Type or paste some text first (or choose the held-out text).");
    return {
      text,
      start: intField("neurons-start", "The start token"),
      length: intField("neurons-length", "The number of tokens"),
      layer: Number($("neurons-layer").value || 0),
      kind: $("neurons-kind").value || "h",
    };
  }

  async function runNeurons(req, thenUnit) {
    clearError("neurons-error");
    if (!req) {
      try { req = neuronsRequest(); } catch (e) { showError("neurons-error", e.message); return; }
    }
    NR.busy = true;
    $("neurons-run").disabled = true;
    $("neurons-status").textContent = "computing the activations…";
    try {
      const d = await postJSON("api/neurons", req);
      const T = d.T, H = d.H;
      if (!isNum(T) || !isNum(H) || !Array.isArray(d.display) || d.display.length !== T) throw new Error("The server's answer is incomplete (T, H or display).");
      d.values = decodeValues(String(d.values || ""), T, H);
      d.scale = Array.isArray(d.scale) ? d.scale.map((s) => (isNum(s) ? s : 0)) : new Array(H).fill(0);
      NR.req = Object.assign({}, req, { layer: d.layer, kind: d.kind });
      NR.d = d;
      NR.match = null;
      NR.query = null;
      // keep the form in step with what is shown
      if (isNum(d.layer)) $("neurons-layer").value = String(d.layer);
      if (typeof d.kind === "string") $("neurons-kind").value = d.kind;
      const u = isNum(thenUnit) ? thenUnit : NR.unit < H ? NR.unit : 0;
      renderNeurons();
      selectUnit(u);
      $("neurons-status").textContent = "";
    } catch (e) {
      showError("neurons-error", e.message || String(e));
      $("neurons-status").textContent = "";
    } finally {
      NR.busy = false;
      $("neurons-run").disabled = false;
    }
  }

  function renderNeurons() {
    const d = NR.d;
    $("neurons-result").hidden = false;
    const src = NR.req.text === null ? "the held-out text" : "your text";
    const parts = [`${tokenRange(d.start, d.start + d.T)} of ${src} (T = ${d.T})`, `layer ${d.layer}, state ${d.kind}: H = ${plural(d.H, "unit")}`];
    if (isNum(d.unknown) && d.unknown > 0) parts.push(`${plural(d.unknown, "token")} unknown to the model (<unk>)`);
    setText($("neurons-info"), parts.join(" \u00b7 "));
    $("unit").max = String(d.H - 1);

    // text spans, one per token
    const box = $("neurons-tokens");
    clear(box);
    NR.spans = new Array(d.T);
    const frag = document.createDocumentFragment();
    for (let t = 0; t < d.T; t++) {
      const s = rawSpan({ class: "tok", "data-i": t }, d.display[t]);
      NR.spans[t] = s;
      frag.appendChild(s);
    }
    box.appendChild(frag);
    box.scrollTop = 0;

    // heat map base image: one pixel per (token, unit)
    const H = d.H, T = d.T;
    const avail = $("heatmap-scroll").clientWidth || 1000;
    NR.cw = T > 3000 ? 2 : Math.max(3, Math.min(12, Math.floor(avail / T)));
    NR.ch = Math.max(1, Math.min(12, Math.round(384 / H)));
    const base = document.createElement("canvas");
    base.width = T;
    base.height = H;
    const ctx = base.getContext("2d");
    const img = ctx.createImageData(T, H);
    const px = img.data;
    for (let u = 0; u < H; u++) {
      const sc = d.scale[u];
      for (let t = 0; t < T; t++) {
        const v = d.values[t * H + u];
        const x = sc > 0 && Number.isFinite(v) ? Math.max(-1, Math.min(1, v / sc)) : 0;
        const a = Math.abs(x) * 0.85;
        const o = (u * T + t) * 4;
        if (x >= 0) { px[o] = 255 + (220 - 255) * a; px[o + 1] = 255 + (30 - 255) * a; px[o + 2] = 255 + (30 - 255) * a; }
        else { px[o] = 255 + (30 - 255) * a; px[o + 1] = 255 + (80 - 255) * a; px[o + 2] = 255 + (220 - 255) * a; }
        px[o + 3] = 255;
      }
    }
    ctx.putImageData(img, 0, 0);
    NR.base = base;
    const heat = $("heatmap");
    heat.width = T * NR.cw;
    heat.height = HEAT_TOP + H * NR.ch;
    heat.style.width = `${heat.width}px`;
    heat.style.height = `${heat.height}px`;
    $("heatmap-scroll").scrollLeft = 0;

    renderFeatures();
    renderMatch();
    $("span-start").max = String(T - 1);
    $("span-end").max = String(T);
    updateSpanPreview();
  }

  function drawHeat() {
    const d = NR.d;
    if (!d) return;
    const heat = $("heatmap");
    const ctx = heat.getContext("2d");
    const { cw, ch } = NR;
    const W = heat.width;
    ctx.clearRect(0, 0, W, heat.height);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(NR.base, 0, 0, d.T, d.H, 0, HEAT_TOP, d.T * cw, d.H * ch);
    // top strip: matches (amber) and the query span (ink)
    ctx.fillStyle = "#f1f0ea";
    ctx.fillRect(0, 0, W, HEAT_TOP - 3);
    if (NR.match && Array.isArray(NR.match.matches)) {
      ctx.fillStyle = "#e8a317";
      for (const m of NR.match.matches) ctx.fillRect(m.start * cw, 0, Math.max(1, (m.end - m.start) * cw), HEAT_TOP - 3);
    }
    if (NR.query) {
      ctx.fillStyle = "#1f2328";
      ctx.fillRect(NR.query[0] * cw, 0, Math.max(1, (NR.query[1] - NR.query[0]) * cw), HEAT_TOP - 3);
    }
    // rows of the units the span query selected
    const units = NR.match && Array.isArray(NR.match.units) ? NR.match.units : [];
    ctx.lineWidth = 1;
    for (const u of units) {
      if (u < 0 || u >= d.H) continue;
      ctx.strokeStyle = "rgba(232,163,23,0.95)";
      ctx.strokeRect(0.5, HEAT_TOP + u * ch - 0.5, W - 1, ch + 1);
    }
    // the selected unit's row
    const u = NR.unit;
    ctx.strokeStyle = "#1f2328";
    ctx.strokeRect(0.5, HEAT_TOP + u * ch - 1.5, W - 1, ch + 3);
    drawHeatAxis();
  }

  function drawHeatAxis() {
    const d = NR.d;
    const axis = $("heatmap-axis");
    const dpr = window.devicePixelRatio || 1;
    const Wc = 52, Hc = HEAT_TOP + d.H * NR.ch;
    axis.width = Wc * dpr;
    axis.height = Hc * dpr;
    axis.style.width = `${Wc}px`;
    axis.style.height = `${Hc}px`;
    const ctx = axis.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, Wc, Hc);
    ctx.font = "11px system-ui, sans-serif";
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    ctx.fillStyle = "#8a8e95";
    const rowsPerLabel = Math.max(1, Math.ceil(18 / NR.ch));
    const step = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512].find((s) => s >= rowsPerLabel) || 1024;
    for (let u = 0; u < d.H; u += step) {
      if (Math.abs(u - NR.unit) * NR.ch < 12) continue;
      ctx.fillText(String(u), Wc - 8, HEAT_TOP + (u + 0.5) * NR.ch);
    }
    ctx.fillStyle = "#e8a317";
    const units = NR.match && Array.isArray(NR.match.units) ? NR.match.units : [];
    for (const u of units) ctx.fillRect(Wc - 5, HEAT_TOP + u * NR.ch - 1, 5, NR.ch + 2);
    ctx.fillStyle = "#1f2328";
    ctx.font = "600 11px system-ui, sans-serif";
    const y = HEAT_TOP + (NR.unit + 0.5) * NR.ch;
    ctx.fillText(String(NR.unit), Wc - 10, Math.max(8, Math.min(Hc - 6, y)));
    ctx.beginPath();
    ctx.moveTo(Wc - 7, y - 4); ctx.lineTo(Wc - 1, y); ctx.lineTo(Wc - 7, y + 4); ctx.closePath();
    ctx.fill();
  }

  function unitLabel(u) {
    const d = NR.d;
    return d ? `l${d.layer} ${d.kind}[${u}]` : `unit ${u}`;
  }

  function colourText() {
    const d = NR.d;
    const u = NR.unit;
    const H = d.H;
    const sc = d.scale[u];
    for (let t = 0; t < d.T; t++) {
      const v = d.values[t * H + u];
      const s = NR.spans[t];
      s.setAttribute("data-v", String(v));
      // the one colour rule of the API (and of `rnnkit lab neurons`); written as an attribute so
      // that it reads back exactly (the CSSOM would round the alpha to 8 bits)
      const level = sc ? roundHalfEven(v / sc * 8) : 0;
      if (level > 0) s.setAttribute("style", `background-color: rgba(220,30,30,${level / 8 * 0.85})`);
      else if (level < 0) s.setAttribute("style", `background-color: rgba(30,80,220,${-level / 8 * 0.85})`);
      else s.removeAttribute("style");
    }
  }

  function selectUnit(u) {
    const d = NR.d;
    if (!d || !Number.isInteger(u) || u < 0 || u >= d.H) return;
    NR.unit = u;
    if ($("unit").value !== String(u)) $("unit").value = String(u);
    $("unit").classList.remove("invalid");
    unitMessage("");
    colourText();
    drawHeat();
    let lo = Infinity, hi = -Infinity;
    for (let t = 0; t < d.T; t++) { const v = d.values[t * d.H + u]; if (v < lo) lo = v; if (v > hi) hi = v; }
    setText($("unit-desc"), `${unitLabel(u)} \u00b7 from ${fmt(lo, 3)} to ${fmt(hi, 3)} over this text \u00b7 strongest colour at |value| ${fmt(d.scale[u], 3)}`);
    for (const b of document.querySelectorAll("#panel-neurons .unit-link")) {
      b.classList.toggle("current", Number(b.dataset.index) === u && Number(b.dataset.layer) === d.layer && b.dataset.kind === d.kind);
    }
  }

  function unitMessage(text) {
    const box = $("unit-msg");
    if (text) { setText(box, text); box.hidden = false; } else { box.hidden = true; clear(box); }
  }

  /** The unit field: a unit of this block is shown at once; a number outside 0 .. H-1 is
      clamped into it (with a message saying so); an empty or unreadable field keeps showing the
      current unit, says so, and is set back to it when the user leaves it (or presses Enter).
      So the field always ends up holding the unit the text is coloured by. */
  function unitTyped(commit) {
    const d = NR.d;
    const field = $("unit");
    if (!d) return;
    const raw = field.value.trim();
    const x = Number(raw);
    const max = d.H - 1;
    const range = `${unitLabel(0).replace(/\[0\]$/, "")} has units 0\u2013${max}`;
    if (raw !== "" && Number.isFinite(x)) {
      const u = Math.max(0, Math.min(max, Math.round(x)));
      if (u === x) { selectUnit(u); return; }
      field.value = String(u);
      selectUnit(u);
      unitMessage(`there is no unit ${raw}: ${range}; showing unit ${u}`);
      return;
    }
    if (!commit) {
      field.classList.add("invalid");
      unitMessage(`${raw === "" ? "no unit number" : `"${raw}" is not a unit number`}: still showing unit ${NR.unit} (${range})`);
      return;
    }
    field.value = String(NR.unit);
    field.classList.remove("invalid");
    unitMessage("");
  }

  function unitButton(layer, kind, index, label, r, scroll) {
    const b = h("button", { type: "button", class: "unit-link", "data-layer": layer, "data-kind": kind, "data-index": index, title: `colour the text by ${label}` },
      label, isNum(r) ? h("span", { class: "r" }, `${r >= 0 ? "+" : "\u2212"}${Math.abs(r).toFixed(2)}`) : null);
    b.addEventListener("click", () => {
      gotoUnit(layer, kind, index);
      if (scroll) $("neurons-tokens").scrollIntoView({ block: "center", behavior: "smooth" });
    });
    return b;
  }

  function gotoUnit(layer, kind, index) {
    const d = NR.d;
    if (!d || NR.busy) return;
    if (d.layer === layer && d.kind === kind) { selectUnit(index); return; }
    const req = Object.assign({}, NR.req, { layer, kind });
    $("neurons-layer").value = String(layer);
    $("neurons-kind").value = kind;
    runNeurons(req, index);
  }

  function renderFeatures() {
    const body = $("features");
    clear(body);
    const feats = Array.isArray(NR.d.features) ? NR.d.features : [];
    if (!feats.length) {
      body.appendChild(h("tr", null, h("td", { colspan: 5, class: "muted" }, "No features for this text.")));
      return;
    }
    for (const f of feats) {
      const unitsCell = h("td", { class: "units" });
      const units = Array.isArray(f.units) ? f.units : [];
      if (!units.length) unitsCell.appendChild(h("span", { class: "muted" }, "— (the feature never changes here)"));
      for (const u of units) {
        const label = typeof u.label === "string" ? u.label : `l${u.layer} ${u.kind}[${u.index}]`;
        unitsCell.appendChild(unitButton(u.layer, u.kind, u.index, label, u.r, true));
      }
      // the description: its own column on a wide page, under the name on a narrow one (CSS)
      body.appendChild(h("tr", null,
        h("td", { class: "name" }, h("span", { class: "feat-name" }, String(f.name || "")),
          f.description ? h("div", { class: "feat-desc" }, String(f.description)) : null),
        h("td", { class: "num" }, String(f.coverage === undefined || f.coverage === null ? "—" : f.coverage)),
        unitsCell,
        h("td", { class: "num" }, isNum(f.control) ? `|r| ${f.control.toFixed(2)}` : "—"),
        h("td", { class: "desc" }, String(f.description || ""))));
    }
  }

  // span selection -> [a, b)
  function tokenAt(node, offset, isEnd) {
    const box = $("neurons-tokens");
    if (node === box) {
      if (isEnd) { const c = box.childNodes[offset - 1]; return c ? Number(c.getAttribute("data-i")) : null; }
      const c = box.childNodes[offset];
      return c ? Number(c.getAttribute("data-i")) : null;
    }
    const el = node.nodeType === Node.TEXT_NODE ? node.parentElement : node;
    const span = el && el.closest ? el.closest(".tok") : null;
    if (!span || !box.contains(span)) return null;
    const i = Number(span.getAttribute("data-i"));
    // where in the token's own text the boundary is (a token may hold several text nodes: an
    // escaped control character is a child element)
    const r = document.createRange();
    r.selectNodeContents(span);
    r.setEnd(node, offset);
    const before = r.toString().length, len = span.textContent.length;
    if (isEnd && before === 0) return i - 1;
    if (!isEnd && before >= len && len > 0) return i + 1;
    return i;
  }

  function spanFromSelection() {
    const d = NR.d;
    const sel = window.getSelection();
    if (!d || !sel || sel.rangeCount === 0 || sel.isCollapsed) return null;
    const box = $("neurons-tokens");
    const r = sel.getRangeAt(0);
    if (!r.intersectsNode(box)) return null;
    let a = box.contains(r.startContainer) ? tokenAt(r.startContainer, r.startOffset, false) : 0;
    let last = box.contains(r.endContainer) ? tokenAt(r.endContainer, r.endOffset, true) : d.T - 1;
    if (a === null || last === null || Number.isNaN(a) || Number.isNaN(last)) return null;
    a = Math.max(0, a);
    last = Math.min(d.T - 1, last);
    if (last < a) return null;
    return [a, last + 1];
  }

  function setQuery(span) {
    for (const s of $("neurons-tokens").querySelectorAll(".tok.query")) s.classList.remove("query");
    NR.query = span;
    if (span) for (let t = span[0]; t < span[1]; t++) if (NR.spans[t]) NR.spans[t].classList.add("query");
    updateSpanPreview();
    drawHeat();
  }

  function updateSpanPreview() {
    const box = $("span-preview");
    clear(box);
    const d = NR.d;
    if (!d) return;
    if (!NR.query) { setText(box, "No span yet: drag over some tokens in the text above."); return; }
    const [a, b] = NR.query;
    let text = d.display.slice(a, b).join("").replace(/\n/g, "");
    if (text.length > 160) text = text.slice(0, 160) + "…";
    box.appendChild(document.createTextNode(`span: ${tokenRange(a, b)} (${plural(b - a, "token")}) `));
    box.appendChild(h("code", null, text));
  }

  function querySpanFromFields() {
    const d = NR.d;
    if (!d) return null;
    const a = Number($("span-start").value), b = Number($("span-end").value);
    if ($("span-start").value === "" || $("span-end").value === "" || !Number.isInteger(a) || !Number.isInteger(b) || a < 0 || b > d.T || b <= a) return null;
    return [a, b];
  }

  async function findUnits() {
    clearError("match-error");
    const d = NR.d;
    if (!d) return;
    let span, threshold, pad;
    try {
      const a = intField("span-start", "The span start"), b = intField("span-end", "The span end");
      span = [a, b];
      threshold = numField("threshold", "The threshold");
      pad = intField("pad", "The pad");
    } catch (e) { showError("match-error", e.message); return; }
    setQuery(span[0] >= 0 && span[1] <= d.T && span[1] > span[0] ? span : null);
    const body = Object.assign({}, NR.req, { layer: d.layer, kind: d.kind, span, threshold, pad });
    $("find-units").disabled = true;
    $("match-status").textContent = "searching…";
    try {
      const m = await postJSON("api/neurons/match", body);
      if (NR.d !== d) return;   // a new text came meanwhile
      NR.match = m;
      renderMatch();
      const units = Array.isArray(m.units) ? m.units : [];
      if (units.length && !units.includes(NR.unit)) selectUnit(units[0]);
      else drawHeat();
      $("match-status").textContent = "";
    } catch (e) {
      showError("match-error", e.message || String(e));
      $("match-status").textContent = "";
    } finally {
      $("find-units").disabled = false;
    }
  }

  function renderMatch() {
    const d = NR.d;
    for (const s of $("neurons-tokens").querySelectorAll(".tok.matched")) s.classList.remove("matched");
    const m = NR.match;
    const res = $("match-result");
    if (!m) { res.hidden = true; clear($("match-units")); clear($("matches")); return; }
    res.hidden = false;
    const unitsBox = $("match-units");
    clear(unitsBox);
    const units = Array.isArray(m.units) ? m.units : [];
    if (!units.length) {
      unitsBox.appendChild(h("span", null, `none: no ${d.kind} unit of layer ${d.layer} is ≥ ${m.threshold} over the whole span and below it within ${m.pad} token${m.pad === 1 ? "" : "s"} around it. Try a lower threshold, a smaller pad or a shorter span.`));
    }
    for (const u of units) unitsBox.appendChild(unitButton(d.layer, d.kind, u, unitLabel(u), null));
    const list = $("matches");
    clear(list);
    const matches = Array.isArray(m.matches) ? m.matches : [];
    const total = isNum(m.total) ? m.total : matches.length;
    $("matches-summary").textContent = units.length
      ? `${total} place${total === 1 ? "" : "s"} in the text where ${units.length === 1 ? "this unit is" : `all ${units.length} units are`} on${total > matches.length ? ` (the first ${matches.length} listed)` : ""}:`
      : "";
    const clean = (s) => String(s).replace(/\n/g, "");
    for (const mt of matches) {
      const a = mt.start, b = mt.end;
      if (!Number.isInteger(a) || !Number.isInteger(b)) continue;
      for (let t = Math.max(0, a); t < Math.min(d.T, b); t++) NR.spans[t].classList.add("matched");
      const before = clean(d.display.slice(Math.max(0, a - 14), a).join("")).slice(-24);
      let hit = clean(d.display.slice(a, b).join(""));
      if (hit.length > 60) hit = hit.slice(0, 60) + "…";
      const after = clean(d.display.slice(b, b + 14).join("")).slice(0, 24);
      const li = h("li", { class: mt.query ? "match is-query" : "match", "data-start": a, "data-end": b, title: "show it in the text" },
        h("span", { class: "pos" }, (mt.query ? "your span · " : "") + (b - a === 1 ? `${a}` : `${a}\u2013${b - 1}`)),
        h("span", { class: "ctx" }, before), h("span", { class: "hit" }, hit), h("span", { class: "ctx" }, after));
      li.addEventListener("click", () => scrollToTokens(a, b));
      list.appendChild(li);
    }
  }

  function scrollToTokens(a, b) {
    const d = NR.d;
    if (!d || a < 0 || a >= d.T) return;
    const box = $("neurons-tokens");
    const span = NR.spans[a];
    const top = span.getBoundingClientRect().top - box.getBoundingClientRect().top + box.scrollTop;
    box.scrollTo({ top: Math.max(0, top - box.clientHeight / 3), behavior: "smooth" });
    box.scrollIntoView({ block: "nearest", behavior: "smooth" });
    for (let t = a; t < Math.min(b, d.T); t++) {
      const s = NR.spans[t];
      s.classList.remove("flash");
      void s.offsetWidth;
      s.classList.add("flash");
    }
    const sc = $("heatmap-scroll");
    sc.scrollLeft = Math.max(0, a * NR.cw - sc.clientWidth / 3);
  }

  function setupNeurons() {
    $("neurons-form").addEventListener("submit", (e) => { e.preventDefault(); runNeurons(); });
    for (const id of ["neurons-src-heldout", "neurons-src-own"]) {
      $(id).addEventListener("change", () => { $("neurons-text").hidden = !$("neurons-src-own").checked; });
    }
    $("neurons-text").addEventListener("input", () => { $("neurons-src-own").checked = true; });
    for (const id of ["neurons-layer", "neurons-kind"]) {
      $(id).addEventListener("change", () => { if (NR.d && !NR.busy) runNeurons(Object.assign({}, NR.req, { layer: Number($("neurons-layer").value), kind: $("neurons-kind").value })); });
    }
    $("unit").addEventListener("input", () => unitTyped(false));
    $("unit").addEventListener("change", () => unitTyped(true));
    $("unit").addEventListener("blur", () => unitTyped(true));
    $("unit").addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); unitTyped(true); } });
    $("unit-prev").addEventListener("click", () => { if (NR.d) selectUnit((NR.unit + NR.d.H - 1) % NR.d.H); });
    $("unit-next").addEventListener("click", () => { if (NR.d) selectUnit((NR.unit + 1) % NR.d.H); });

    // heat map: hover and click
    const heat = $("heatmap");
    const tip = $("heat-tip");
    const cell = (e) => {
      const d = NR.d;
      if (!d) return null;
      const r = heat.getBoundingClientRect();
      const t = Math.floor((e.clientX - r.left) / NR.cw);
      const u = Math.floor((e.clientY - r.top - HEAT_TOP) / NR.ch);
      if (t < 0 || t >= d.T || u < 0 || u >= d.H) return null;
      return { t, u };
    };
    heat.addEventListener("mousemove", (e) => {
      const c = cell(e);
      if (!c) { hideTip(tip); return; }
      const d = NR.d;
      clear(tip);
      tip.appendChild(h("div", null, h("b", null, unitLabel(c.u)), `  token ${c.t} `, h("span", { class: "tkn" }, visible(d.tokens ? d.tokens[c.t] : d.display[c.t]))));
      tip.appendChild(h("div", { class: "tt-pq" }, `value ${String(d.values[c.t * d.H + c.u])}`));
      placeTip(tip, e.clientX, e.clientY);
    });
    heat.addEventListener("mouseleave", () => hideTip(tip));
    heat.addEventListener("click", (e) => { const c = cell(e); if (c) selectUnit(c.u); });

    // the text: hover shows the value; a mouse selection sets the span
    const box = $("neurons-tokens");
    box.addEventListener("mousemove", (e) => {
      const span = e.target && e.target.closest ? e.target.closest(".tok") : null;
      if (!span || !NR.d) { hideTip(tip); return; }
      const t = Number(span.getAttribute("data-i"));
      const d = NR.d;
      clear(tip);
      tip.appendChild(h("div", null, `token ${t} `, h("span", { class: "tkn" }, visible(d.tokens ? d.tokens[t] : d.display[t]))));
      tip.appendChild(h("div", { class: "tt-pq" }, `${unitLabel(NR.unit)} = ${span.getAttribute("data-v")}`));
      placeTip(tip, e.clientX, e.clientY);
    });
    box.addEventListener("mouseleave", () => hideTip(tip));
    let selPending = false;
    document.addEventListener("selectionchange", () => {
      if (selPending || !NR.d || S.tab !== "neurons") return;
      selPending = true;
      requestAnimationFrame(() => {
        selPending = false;
        const span = spanFromSelection();
        if (!span) return;
        $("span-start").value = String(span[0]);
        $("span-end").value = String(span[1]);
        setQuery(span);
      });
    });
    for (const id of ["span-start", "span-end"]) {
      $(id).addEventListener("input", () => setQuery(querySpanFromFields()));
    }
    $("find-units").addEventListener("click", findUnits);
  }

  // ------------------------------------------------------------------------------------------
  // 4. Gradients
  // ------------------------------------------------------------------------------------------
  const GR = { d: null, spans: [], hl: -1 };
  const MODEL_COLOURS = ["#1f4e9c", "#7b3fb0", "#0f7b6c", "#8a5a00", "#444"];
  const UNTRAINED_COLOURS = { rnn: "#d9412e", gru: "#2e9b4f", lstm: "#e08a00" };

  async function runGradients() {
    clearError("grad-error");
    let req;
    try {
      const text = neuronsSource("grad");
      if (text !== null && !text.trim()) throw new Error("Type or paste some text first (or choose the held-out text).");
      req = { text, start: intField("grad-start", "The start token"), length: intField("grad-length", "The span length") };
    } catch (e) { showError("grad-error", e.message); return; }
    $("grad-run").disabled = true;
    $("grad-status").textContent = "computing the gradients…";
    try {
      const d = await postJSON("api/gradients", req);
      if (!Array.isArray(d.series) || !isNum(d.T)) throw new Error("The server's answer is incomplete (T or series).");
      GR.d = d;
      GR.req = req;
      renderGradients();
      $("grad-status").textContent = "";
    } catch (e) {
      showError("grad-error", e.message || String(e));
      $("grad-status").textContent = "";
    } finally {
      $("grad-run").disabled = false;
    }
  }

  function highlightGradToken(idx) {
    if (GR.hl >= 0 && GR.spans[GR.hl]) GR.spans[GR.hl].classList.remove("hl");
    GR.hl = -1;
    const d = GR.d;
    if (!d || idx === null || idx === undefined || idx < 0) return;
    const t = d.T - 1 - idx;
    if (GR.spans[t]) { GR.spans[t].classList.add("hl"); GR.hl = t; }
  }

  function renderGradients() {
    const d = GR.d;
    $("grad-result").hidden = false;
    const T = isNum(d.T) ? d.T : Array.isArray(d.tokens) ? d.tokens.length : 0;   // what the server used
    const xs = Array.from({ length: T }, (_, i) => i);
    const data = [xs];
    const series = [{ label: "steps back", value: (u, v) => (v === null ? "—" : String(v)) }];
    let mi = 0, any = false;
    for (const s of d.series) {
      const norms = Array.isArray(s.norms) ? s.norms : [];
      const ys = xs.map((i) => { const lv = log10OrNull(norms[i]); if (lv !== null) any = true; return lv; });
      data.push(ys);
      const model = s.kind === "model";
      const colour = model ? MODEL_COLOURS[mi++ % MODEL_COLOURS.length] : UNTRAINED_COLOURS[s.kind] || "#888";
      series.push({
        label: printable(s.label || s.kind || "series"), stroke: colour, width: model ? 2.5 : 1.5,
        dash: model ? undefined : [6, 4], spanGaps: false, points: { show: false },
        value: (u, v) => (v === null || v === undefined ? "—" : Math.pow(10, v).toExponential(2)),
      });
    }
    const el = $("grad-chart");
    if (charts.grad) { charts.grad.u.destroy(); charts.grad = null; }
    clear(el);
    if (typeof uPlot === "undefined") {
      el.appendChild(h("div", { class: "empty" }, "The chart library (static/uPlot.iife.min.js) did not load."));
    } else if (!any) {
      el.appendChild(h("div", { class: "empty" }, "Every gradient norm is 0 (or not a number): nothing to draw on a log axis."));
    } else {
      const opts = {
        width: chartWidth(el),
        height: 360,
        scales: { x: { time: false }, y: { auto: true, range: logRange } },
        axes: [
          Object.assign({}, AXIS, { label: "steps back from the loss (d)", labelSize: 22 }),
          Object.assign({}, AXIS, { label: "\u2016\u2202L/\u2202h\u2016 (log scale)", size: 64, labelSize: 22,
            splits: logSplits, values: (u, vals) => vals.map(powerLabel) }),
        ],
        series,
        cursor: { drag: { x: true, y: false } },
        hooks: { setCursor: [(u) => highlightGradToken(u.cursor.idx)] },
      };
      charts.grad = { u: new uPlot(opts, data, el), el, height: 360 };
    }

    // the span the server used (it may be shorter than the one asked for: a sentence-mode
    // model's span is cut at the line's end, where the model predicts <end>; a text may end)
    const box = $("grad-tokens");
    clear(box);
    GR.spans = [];
    GR.hl = -1;
    const disp = Array.isArray(d.display) ? d.display : Array.isArray(d.tokens) ? d.tokens : [];
    disp.forEach((tok, i) => {
      const back = T - 1 - i;
      const s = rawSpan({ class: "tok", "data-i": i, title: `d = ${plural(back, "step")} back` }, tok);
      GR.spans.push(s);
      box.appendChild(s);
    });
    if (d.target !== undefined && d.target !== null) {
      box.appendChild(h("span", { class: "arrow" }, "\u2192 next:"));
      box.appendChild(h("span", { class: "target", title: "the token the loss is computed on" }, visible(d.target)));
    }
    const req = GR.req || {};
    const src = req.text !== null && req.text !== undefined ? "your text" : "the held-out text";
    const a = isNum(d.start) ? d.start : isNum(req.start) ? req.start : 0;
    const asked = isNum(d.requested) ? d.requested : isNum(req.length) ? req.length : T;
    let why = "";
    if (T < asked) {
      const said = [d.cut, d.reason, d.note].find((x) => typeof x === "string" && x);
      why = said ? `, ${said}`
        : d.target === "<end>" || (S.run && S.run.mode === "sentence") ? ", cut at the line's end"
        : ", the text ends there";
      why += ` \u2014 ${plural(asked, "token")} asked for`;
    }
    setText($("grad-info"), `span: ${tokenRange(a, a + T)} (${plural(T, "token")}${why}) of ${src}. ` +
      `The loss: predicting the next token "${visible(d.target)}" after the last one` +
      (isNum(d.loss) ? ` (cross-entropy ${d.loss.toFixed(3)} nats). ` : ". ") +
      "Hover the chart to see which token is d steps back.");
  }

  function setupGradients() {
    $("grad-form").addEventListener("submit", (e) => { e.preventDefault(); runGradients(); });
    for (const id of ["grad-src-heldout", "grad-src-own"]) {
      $(id).addEventListener("change", () => { $("grad-text").hidden = !$("grad-src-own").checked; });
    }
    $("grad-text").addEventListener("input", () => { $("grad-src-own").checked = true; });
  }

  // ------------------------------------------------------------------------------------------
  // start
  // ------------------------------------------------------------------------------------------
  function start() {
    if (typeof uPlot === "undefined") {
      showError("run-error", "The chart library (static/uPlot.iife.min.js) did not load.");
    }
    setupTabs();
    applyCheckpointState();
    setupSample();
    setupNeurons();
    setupGradients();
    loadRun(false).then(() => setupTraining());
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
