"""What several test files share: a small Shakespeare-like text to train on."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
        "All:\nSpeak, speak.\n\nFirst Citizen:\nYou are all resolved rather to die than "
        "to famish?\n\n")


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """``TEXT`` 60 times in ``tmp_path / "tiny.txt"``: enough for a few tiny training steps."""
    p = tmp_path / "tiny.txt"
    p.write_text(TEXT * 60, encoding="utf-8")
    return p


# LSTMVis's select and match queries read literally (rnnkit.lab.neurons and rnnkit serve test
# select_units/match_spans against these)
def brute_select(v: np.ndarray, a: int, b: int, threshold: float, pad: int) -> list[int]:
    T, H = v.shape
    out = []
    for u in range(H):
        on = all(v[t, u] >= threshold for t in range(a, b))
        off = all(v[t, u] < threshold for t in [*range(max(a - pad, 0), a),
                                                 *range(b, min(b + pad, T))])
        if on and off:
            out.append(u)
    return out


def brute_match(v: np.ndarray, units: list[int], threshold: float) -> list[tuple[int, int]]:
    if not units:
        return []
    out, start = [], None
    for t in range(v.shape[0] + 1):
        on = t < v.shape[0] and all(v[t, u] >= threshold for u in units)
        if on and start is None:
            start = t
        elif not on and start is not None:
            out.append((start, t))
            start = None
    return out


@contextlib.contextmanager
def serving(run: Path) -> Iterator[Any]:
    """``rnnkit serve run`` on a free port in a thread, for the length of a ``with``."""
    from rnnkit.server import RunView, Server

    srv = Server(RunView(run), "127.0.0.1", 0)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(5)
