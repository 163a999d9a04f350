"""What every rnnkit-vs-PyTorch benchmark shares: alternating timed blocks, medians, the
weight copy into torch, the parity check, the table and the JSON file.

Both libraries run in one process. Their thread pools (OpenBLAS behind NumPy, OpenMP behind
PyTorch) keep spinning for a while after a call, and on 2 cores they fight when the libraries
alternate call by call. So each round runs a block of calls of one library, pauses, then a
block of the other:

    for round in range(rounds):
        for lib in (rnnkit, torch):
            sleep(pause)              # the other library's pool goes idle
            fn()                      # warm-up call (wakes this library's pool, fills caches)
            t0; fn() x n; t1          # the timed block: (t1 - t0) / n seconds per call

and the reported number is the median over rounds of the seconds per call.
"""

from __future__ import annotations

import contextlib
import json
import math
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rnnkit.files import write_atomic

RESULTS = Path(__file__).resolve().parent / "results"


def calibrate(fn: Callable[[], object], target: float, max_calls: int = 10_000) -> int:
    """Calls per timed block so that a block lasts about ``target`` seconds (at least 1)."""
    fn()                                                     # warm-up
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    if dt >= target / 3:
        return max(1, round(target / dt))
    # short calls: time a few more for a steadier estimate
    k = max(3, min(200, int(target / 3 / max(dt, 1e-7))))
    t0 = time.perf_counter()
    for _ in range(k):
        fn()
    dt = (time.perf_counter() - t0) / k
    return int(min(max_calls, max(1, round(target / dt))))


def alternate(fns: dict[str, Callable[[], object]], calls: dict[str, int], rounds: int,
              pause: float) -> dict[str, list[float]]:
    """Seconds per call of each function, one value per round (see the module docstring)."""
    out: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            time.sleep(pause)
            fn()
            n = calls[name]
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            out[name].append((time.perf_counter() - t0) / n)
    return out


def compare(rnnkit_fn: Callable[[], object], torch_fn: Callable[[], object], *, rounds: int,
            pause: float, block: float, other: str = "torch",
            reference_fn: Callable[[], object] | None = None) -> dict[str, Any]:
    """Calibrate both, then alternate; medians and spreads in seconds per call. ``other`` names
    the second side (``torch_fn``) in the result's keys: ``"torch"`` unless told otherwise.
    ``reference_fn`` (rnnkit on its NumPy reference path, kernels off) joins the rotation as a
    third side when given: ``kernel_speedup`` is then its median time over rnnkit's."""
    fns = {"rnnkit": rnnkit_fn, other: torch_fn}
    if reference_fn is not None:
        fns["reference"] = reference_fn
    calls = {}
    for name, fn in fns.items():
        calls[name] = calibrate(fn, block)
        time.sleep(pause)
    times = alternate(fns, calls, rounds, pause)
    res: dict[str, Any] = {"calls_per_block": calls, "rounds": rounds}
    for name, ts in times.items():
        res[name] = {"median_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts),
                     "per_round_s": ts}
    # throughput ratio rnnkit / other = other's time / rnnkit's time: > 1 means rnnkit faster
    res["ratio"] = res[other]["median_s"] / res["rnnkit"]["median_s"]
    if reference_fn is not None:
        res["kernel_speedup"] = res["reference"]["median_s"] / res["rnnkit"]["median_s"]
        res["reference_ratio"] = res[other]["median_s"] / res["reference"]["median_s"]
    return res


def stepping(step: Callable[[Any, Any], tuple[Any, Any]], tokens: Sequence[Any]
             ) -> Callable[[], None]:
    """A call that feeds the next of ``tokens`` (cycling) to ``step(token, state)`` with the
    state carried across calls and blocks: one generated token per call."""
    k, state = 0, None

    def call() -> None:
        nonlocal k, state
        k = (k + 1) % len(tokens)
        _, state = step(tokens[k], state)

    return call


def reference(fn: Callable[[], object]) -> Callable[[], object] | None:
    """``fn`` run on rnnkit's NumPy reference path (``rnnkit.kernels`` off), or None when the
    kernels are not in use here (numba missing, or RNNKIT_KERNELS=0): then there is nothing to
    compare against."""
    from rnnkit import kernels

    if not kernels.enabled or kernels.loops() is None:
        return None

    def run() -> object:
        with kernels.reference():
            return fn()

    return run


def to_torch(state_dict: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """rnnkit's state dict as tensors (copies), for ``torch_module.load_state_dict``."""
    return {k: torch.from_numpy(np.array(v, copy=True)) for k, v in state_dict.items()}


def max_diff(a: Any, b: Any) -> float:
    """Largest absolute difference between a NumPy array and a tensor (or two arrays)."""
    if isinstance(b, torch.Tensor):
        b = b.detach().numpy()
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def check_close(what: str, a: Any, b: Any, tol: float, other: str = "torch") -> float:
    """Raise if rnnkit's and torch's values differ by more than ``tol`` (relative to the
    largest magnitude, at least 1): the comparison would not be apples to apples. ``b`` may be
    a tensor or an array; ``other`` names its side in the message."""
    d = max_diff(a, b)
    scale = max(1.0, float(np.max(np.abs(np.asarray(a, np.float64)))))
    if not d <= tol * scale:
        raise SystemExit(f"parity check failed for {what}: max |rnnkit - {other}| = {d:.3g} "
                         f"> {tol * scale:.3g}; the two sides do not compute the same thing")
    return d


def add_common_args(ap: Any, rounds: int = 5, block: float = 0.4, pause: float = 0.4) -> None:
    ap.add_argument("--quick", action="store_true",
                    help="tiny settings for a smoke test (a few seconds)")
    ap.add_argument("--rounds", type=int, default=rounds, help="alternating rounds per config")
    ap.add_argument("--block", type=float, default=block,
                    help="target seconds of one timed block (sets the calls per block)")
    ap.add_argument("--pause", type=float, default=pause,
                    help="seconds of sleep before each block, so the other pool goes idle")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")


def environment(threads: int) -> dict[str, Any]:
    """What the numbers depend on: versions, the CPU model, NumPy's BLAS, the kernels."""
    import os

    from rnnkit import kernels

    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                   "")
    blas: Any = {}
    with contextlib.suppress(Exception):
        b = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas = f"{b.get('name')} {b.get('version')}"
    numba_version = None
    if kernels.available:
        import numba

        numba_version = numba.__version__
    return {"numpy": np.__version__, "torch": torch.__version__, "torch_threads": threads,
            "cpus": os.cpu_count(), "cpu": cpu or platform.processor(), "blas": blas,
            "machine": platform.machine(), "python": platform.python_version(),
            "numba": numba_version, "kernels": kernels.enabled,
            "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}


def describe(env: dict[str, Any]) -> str:
    """One line for a table's header: CPU, BLAS, the libraries, whether the kernels run."""
    kern = f"kernels on (numba {env['numba']})" if env["kernels"] else "kernels off"
    return (f"{env['cpu']} ({env['cpus']} cpus), {env['blas']} | numpy {env['numpy']}, torch "
            f"{env['torch']} ({env['torch_threads']} threads) | {kern}")


class Table:
    """A table printed row by row as results arrive (columns right-aligned)."""

    def __init__(self, header: Sequence[str], width: int = 9) -> None:
        self.widths = [max(width, len(h)) for h in header]
        print("  ".join(h.rjust(w) for h, w in zip(header, self.widths, strict=True)))
        print("  ".join("-" * w for w in self.widths), flush=True)

    def row(self, values: Sequence[Any]) -> None:
        print("  ".join(_fmt(v).rjust(w) for v, w in zip(values, self.widths, strict=True)),
              flush=True)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.2f}"
    return str(v)


def write_json(name: str, payload: dict[str, Any], quick: bool) -> Path:
    """benchmarks/results/<name>.json (``<name>.quick.json`` for --quick runs, so a smoke test
    never overwrites a real result)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / (f"{name}.quick.json" if quick else f"{name}.json")
    write_atomic(path, (json.dumps(payload, indent=1) + "\n").encode())
    print(f"results written to {path.relative_to(RESULTS.parent.parent)}")
    return path
