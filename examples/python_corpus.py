"""Write a character corpus of Python source code taken from this interpreter's own standard
library, for ``rnnkit lab neurons``: code has what Shakespeare lacks, quotes and brackets that
open and close, so the quote and bracket cells of Karpathy et al. (2015) can show up.

    python examples/python_corpus.py pysrc.txt          # ~2 MB from 40 modules
    rnnkit train pysrc.txt --out runs/pysrc --max-minutes 30
    rnnkit lab neurons runs/pysrc --length 12000 \
        --text "$(python examples/python_corpus.py --held-out)"

The held-out text (``fileinput.py``) is not in the corpus. Nothing is downloaded: the files are
the ones installed with Python (the same list on any CPython 3.11).
"""

from __future__ import annotations

import argparse
import sys
import sysconfig
from pathlib import Path

from rnnkit.files import write_atomic

MODULES = (
    "argparse", "ast", "bisect", "calendar", "codecs", "collections/__init__", "configparser",
    "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "enum",
    "fractions", "functools", "gettext", "glob", "heapq", "inspect", "ipaddress", "locale",
    "logging/__init__", "mailbox", "os", "pathlib", "pprint", "random", "shutil", "statistics",
    "string", "subprocess", "tarfile", "textwrap", "threading", "tokenize", "typing", "uuid",
    "zipfile",
)
HELD_OUT = "fileinput"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", nargs="?", help="where to write the corpus")
    p.add_argument("--held-out", action="store_true", help="print the held-out file's path")
    args = p.parse_args(argv)
    lib = Path(sysconfig.get_paths()["stdlib"])
    if args.held_out:
        print(lib / f"{HELD_OUT}.py")
        return 0
    if not args.out:
        p.error("give the output file (or --held-out)")
    missing = [m for m in MODULES if not (lib / f"{m}.py").is_file()]
    if missing:
        print(f"error: not in {lib}: {', '.join(missing)}", file=sys.stderr)
        return 2
    text = "".join((lib / f"{m}.py").read_text(encoding="utf-8") for m in MODULES)
    write_atomic(args.out, text.encode("utf-8"))
    print(f"{args.out}: {len(text):,} characters from {len(MODULES)} modules of {lib}; "
          f"held out: {lib / f'{HELD_OUT}.py'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
