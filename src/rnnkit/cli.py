"""The ``rnnkit`` command line. Every failure prints one ``error: ...`` line and exits 2.

    rnnkit check                    gradient-check every layer and cell in float64
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np


class CLIError(Exception):
    """A user error: printed as ``error: ...`` without a traceback."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise CLIError(f"{self.prog}: {message}")


def cmd_check(args: argparse.Namespace) -> int:
    """Gradient-check every cell in float64 and print one line per configuration."""
    import rnnkit

    builders: dict[str, Callable[..., rnnkit.Module]] = {
        "RNN(tanh)": lambda **kw: rnnkit.RNN(3, 4, nonlinearity="tanh", **kw),
        "RNN(relu)": lambda **kw: rnnkit.RNN(3, 4, nonlinearity="relu", **kw),
        "GRU": lambda **kw: rnnkit.GRU(3, 4, **kw),
        "LSTM": lambda **kw: rnnkit.LSTM(3, 4, **kw),
    }
    rng = np.random.default_rng(args.seed)
    x = rng.standard_normal((5, 3, 3))
    failed = 0
    print(f"{'layer':<10} {'layers':>6} {'dirs':>4} {'lengths':>9}  worst relative error")
    for name, build in builders.items():
        for layers in (1, 2):
            for bi in (False, True):
                for lengths in (None, [5, 2, 4]):
                    m = build(num_layers=layers, bidirectional=bi, dtype=np.float64,
                              rng=args.seed)
                    t0 = time.perf_counter()
                    r = rnnkit.gradcheck(m, x, lengths=lengths)
                    ms = 1000 * (time.perf_counter() - t0)
                    failed += not r.ok
                    print(f"{name:<10} {layers:>6} {2 if bi else 1:>4} "
                          f"{'yes' if lengths else 'no':>9}  {r.worst[1]:.1e} "
                          f"({r.worst[0]}) {'ok' if r.ok else 'FAIL'}  {ms:.0f} ms")
    print("all gradients agree with finite differences" if not failed
          else f"{failed} configurations FAILED")
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="rnnkit", description="Recurrent neural networks in NumPy.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    c = sub.add_parser("check", help="gradient-check every layer and cell (float64)")
    c.add_argument("--seed", type=int, default=0, help="seed of weights and inputs")
    c.set_defaults(func=cmd_check)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        return int(args.func(args))
    except CLIError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
