"""Peak memory of one LSTM layer training step (forward + backward) at T = 1000, rnnkit against
PyTorch (B = 32, H = D = 256, 1 layer, float32, dy = 1, dx computed).

Each measurement runs in a fresh subprocess (``--worker rnnkit|torch --method rss|alloc``) that
imports its library, builds the layer and the inputs, runs one short warm-up step (T = 8: thread
pools, kernels and gradient buffers exist before the baseline), and then measures the one
T = 1000 step. Two methods, each in its own process:

    rss    the resident set size: the peak (VmHWM, reset to the current size just before the step
           by writing 5 to /proc/self/clear_refs) minus the size just before the step (VmRSS).
           Counts everything the process touches, in both libraries alike.
    alloc  the allocators' own accounting of live bytes during the step, peak minus start:
           tracemalloc for rnnkit (NumPy reports every array buffer to it), the torch profiler's
           memory events (profile_memory=True; a running sum of allocations and frees) for torch.
           Page-exact and free of allocator caching, but blind to memory a library takes
           outside its allocator (for torch, e.g. oneDNN scratch space).

The ratio is rnnkit / torch (<= 1 means rnnkit needs no more memory than PyTorch).

    python benchmarks/memory.py                 # 4 subprocesses, ~30 s
    python benchmarks/memory.py --quick         # T = 100
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

MB = 1e6


def _status(field: str) -> int:
    """A field of /proc/self/status in bytes (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where not permitted."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def worker(lib: str, method: str, T: int, B: int, H: int) -> dict:
    import numpy as np

    rng = np.random.default_rng(1)
    x = rng.standard_normal((T, B, H)).astype(np.float32)
    x_small = x[:8].copy()
    if lib == "rnnkit":
        import rnnkit

        m = rnnkit.LSTM(H, H, 1, dtype=np.float32, rng=0)
        dy = np.ones((T, B, H), np.float32)

        def step(x_: object, dy_: object) -> None:
            _, _, cache = m.forward(x_)
            m.backward(dy_, None, cache)

        inputs = (x, dy)
        warm = (x_small, dy[:8])
    else:
        import torch

        torch.set_num_threads(2)
        tm = torch.nn.LSTM(H, H, 1)
        xt = torch.from_numpy(x).requires_grad_(True)
        xs = torch.from_numpy(x_small).requires_grad_(True)
        dyt = torch.ones(T, B, H)

        def step(x_: object, dy_: object) -> None:
            x_.grad = None                                   # type: ignore[attr-defined]
            y, _ = tm(x_)
            y.backward(dy_)

        inputs = (xt, dyt)
        warm = (xs, dyt[:8])
    step(*warm)                                              # pools, kernels, .grad buffers
    time.sleep(0.2)
    out: dict = {"lib": lib, "method": method, "T": T, "B": B, "H": H}
    if method == "rss":
        out["hwm_reset"] = _reset_peak()
        base = _status("VmRSS")
        maxrss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        step(*inputs)
        if out["hwm_reset"]:
            out["peak_bytes"] = _status("VmHWM") - base
        else:                                                # fallback: lower bound
            out["peak_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - \
                max(base, maxrss0)
        out["baseline_rss_bytes"] = base
    elif lib == "rnnkit":
        import tracemalloc

        tracemalloc.start()
        step(*inputs)
        cur, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        out["peak_bytes"], out["live_after_bytes"] = peak, cur
    else:
        import torch
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            step(*inputs)
        events = sorted((e.start_ns(), e.nbytes())
                        for e in prof.profiler.kineto_results.events()
                        if e.name() == "[memory]" and str(e.device_type()).endswith("CPU"))
        live = peak = 0
        for _, n in events:
            live += n
            peak = max(peak, live)
        out["peak_bytes"], out["live_after_bytes"] = peak, live
        out["memory_events"] = len(events)
    return out


def run_worker(lib: str, method: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", lib, "--method", method, "--T", str(args.T),
           "--B", str(args.B), "--H", str(args.H)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"worker {lib}/{method} failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", choices=["rnnkit", "torch"], help=argparse.SUPPRESS)
    ap.add_argument("--method", choices=["rss", "alloc"], default="rss", help=argparse.SUPPRESS)
    ap.add_argument("--T", type=int, default=1000)
    ap.add_argument("--B", type=int, default=32)
    ap.add_argument("--H", type=int, default=256)
    ap.add_argument("--quick", action="store_true", help="T = 100")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.method, args.T, args.B, args.H)))
        return
    if args.quick:
        args.T = 100
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _harness as hx

    T, B, H = args.T, args.B, args.H
    y_mb = T * B * H * 4 / MB
    print(f"peak memory of one LSTM training step, T={T}, B={B}, H=D={H}, 1 layer, float32 "
          f"(forward + backward, dx computed); one fresh subprocess per number; "
          f"y alone is T*B*H*4 = {y_mb:.1f} MB")
    results: dict = {}
    table = hx.Table(["method", "rnnkit MB", "torch MB", "ratio", "rnnkit / y", "torch / y"],
                     width=9)
    for method in ("rss", "alloc"):
        r = {lib: run_worker(lib, method, args) for lib in ("rnnkit", "torch")}
        results[method] = r
        a, b = r["rnnkit"]["peak_bytes"], r["torch"]["peak_bytes"]
        table.row([method, a / MB, b / MB, f"{a / b:.2f}", f"{a / MB / y_mb:.1f}x",
                   f"{b / MB / y_mb:.1f}x"])
    if not all(r["hwm_reset"] for r in results["rss"].values()):
        print("note: /proc/self/clear_refs was not writable; rss is ru_maxrss minus the larger "
              "of the baseline RSS and the earlier high-water mark (a lower bound)")
    print("rss: peak resident set during the step minus the resident set just before it\n"
          "alloc: tracemalloc peak (rnnkit/NumPy) and torch profiler memory events (torch), "
          "peak live bytes during the step\n"
          "ratio = rnnkit / torch (goal <= 1)")
    hx.write_json("memory", {"env": hx.environment(2), "T": T, "B": B, "H": H,
                             "y_megabytes": y_mb, "results": results,
                             "ratio_rss": results["rss"]["rnnkit"]["peak_bytes"]
                             / results["rss"]["torch"]["peak_bytes"],
                             "ratio_alloc": results["alloc"]["rnnkit"]["peak_bytes"]
                             / results["alloc"]["torch"]["peak_bytes"]}, args.quick)


if __name__ == "__main__":
    main()
