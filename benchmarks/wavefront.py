"""Would running a stack's layers as a wavefront in two threads beat one thread + 2-thread BLAS?

An experiment for the 2-layer LSTM of the char-LM (T=64, B=64, H=256, D=64, float32, forward
+ backward with dy = 1). The sequence is cut into chunks of --chunk steps; layer 0 runs chunk
k+1 while layer 1 runs chunk k (and backward the other way round), each in its own Python
thread with a one-thread BLAS (NumPy releases the GIL inside products and ufunc loops), so
both cores work during the elementwise passes that otherwise leave one idle. Built from
rnnkit's own scan functions (one direction_forward / direction_backward per chunk, the state
carried), checked against the module's output and gradients first.

Needs threadpoolctl (`pip install threadpoolctl`; not a dependency of rnnkit) to limit BLAS to
one thread inside the wavefront.

    python benchmarks/wavefront.py --chunk 8 16 32

Result on this project's machine (2026-11-27, quiet, medians of 15 calls, one run, two rounds
per chunk size): the module 162-182 ms; the same chunks run one after the other 197-216 ms
(smaller products, per-chunk weight gradients and weight preparation); the wavefront 177-243 ms:
0.75-0.96x of the module. Two one-thread products side by side are not faster than one
two-thread product after another, and chunking costs more than the idle core gives back, so
this lever is not taken.
"""

from __future__ import annotations

import argparse
import queue
import threading
import time
from typing import Any

import numpy as np

import rnnkit
from rnnkit.functional import LSTMMath
from rnnkit.scan import direction_backward, direction_forward

try:
    from threadpoolctl import threadpool_limits
except ImportError:                         # pragma: no cover - an optional experiment
    raise SystemExit("this experiment needs threadpoolctl: pip install threadpoolctl") from None

T, B, H, D = 64, 64, 256, 64


def chunked(m: rnnkit.LSTM, x: np.ndarray, dy: np.ndarray, chunk: int, parallel: bool
            ) -> tuple[np.ndarray, list[Any]]:
    """Forward + backward of the 2-layer stack chunk by chunk; in two threads if parallel."""
    kind = LSTMMath()
    weights = [m._weights(layer) for layer in range(2)]
    grads = [tuple(None if w is None else np.zeros_like(w) for w in weights[layer])
             for layer in range(2)]
    n = T // chunk
    caches: list[list[Any]] = [[None] * n for _ in range(2)]
    outs = [np.empty((T, B, H), np.float32) for _ in range(2)]

    def forward(layer: int, inq: Any, outq: Any) -> None:
        h = np.zeros((B, H), np.float32)
        c = np.zeros((B, H), np.float32)
        for k in range(n):
            sl = slice(k * chunk, (k + 1) * chunk)
            xin = x[sl] if layer == 0 else inq.get()
            h, c, caches[layer][k] = direction_forward(kind, xin, h, c, *weights[layer],
                                                       out=outs[layer][sl])
            if outq is not None:
                outq.put(outs[layer][sl])

    def backward(layer: int, inq: Any, outq: Any) -> None:
        dh = np.zeros((B, H), np.float32)
        dc = np.zeros((B, H), np.float32)
        for k in reversed(range(n)):
            dout = dy[k * chunk: (k + 1) * chunk] if layer == 1 else inq.get()
            dx, dh, dc = direction_backward(kind, caches[layer][k], dout, dh, dc, grads[layer])
            if outq is not None:
                outq.put(dx)

    q_fwd: queue.Queue[Any] = queue.Queue()
    q_bwd: queue.Queue[Any] = queue.Queue()
    if parallel:
        with threadpool_limits(1, user_api="blas"):
            t = threading.Thread(target=forward, args=(0, None, q_fwd))
            t.start()
            forward(1, q_fwd, None)
            t.join()
            t = threading.Thread(target=backward, args=(1, None, q_bwd))
            t.start()
            backward(0, q_bwd, None)
            t.join()
    else:
        forward(0, None, q_fwd)
        forward(1, q_fwd, None)
        backward(1, None, q_bwd)
        backward(0, q_bwd, None)
    return outs[1], grads


def median_ms(fn: Any, calls: int = 15) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chunk", nargs="+", type=int, default=[8, 16, 32])
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    m = rnnkit.LSTM(D, H, num_layers=2, rng=0)
    x = rng.standard_normal((T, B, D)).astype(np.float32)
    dy = np.ones((T, B, H), np.float32)
    y, _, cache = m.forward(x)
    m.backward(dy, None, cache)
    y2, grads = chunked(m, x, dy, args.chunk[0], parallel=True)
    print(f"check: max |y diff| {np.abs(y - y2).max():.1e}, max |dW_hh_l0 diff| "
          f"{np.abs(m.grads['weight_hh_l0'] - grads[0][1]).max():.1e}")

    def module() -> None:
        _, _, cache = m.forward(x)
        m.backward(dy, None, cache)

    print(f"2-layer LSTM T={T} B={B} H={H} D={D}, forward + backward, median ms")
    for chunk in args.chunk:
        if T % chunk:
            raise SystemExit(f"--chunk must divide T={T}; got {chunk}")
        for _ in range(args.rounds):
            a = median_ms(module)
            time.sleep(0.3)
            b = median_ms(lambda c=chunk: chunked(m, x, dy, c, parallel=False))
            time.sleep(0.3)
            w = median_ms(lambda c=chunk: chunked(m, x, dy, c, parallel=True))
            time.sleep(0.3)
            print(f"chunk {chunk:>3}: module {a:6.1f} | chunks in turn {b:6.1f} | wavefront "
                  f"{w:6.1f} | wavefront / module speed {a / w:.2f}x")


if __name__ == "__main__":
    main()
