"""Checkpoint files that never unpickle and are checked before anything is built from them.

A checkpoint is one standard safetensors file: the tensors, and in the header's
``__metadata__`` two strings, ``rnnkit`` (the caller's metadata as JSON, plus ``format``,
``version`` and ``rnnkit_version``) and ``rnnkit_sha256``, a SHA-256 over that JSON and every
tensor's name, dtype, shape and bytes, so a flipped byte anywhere is caught on load, not
trained on.

``save`` serialises with the safetensors library and writes through ``files.write_atomic``
(unique temporary name, fsync, rename, fsync of the directory): a kill at any instant leaves
the previous checkpoint or the new one. ``load`` reads through the library's ``safe_open``
(no pickle, nothing executed), checks the metadata, lets the caller check every tensor's name,
dtype and shape against the config (``expect``) before one tensor is read or anything is
allocated from the metadata, then reads the tensors and verifies the checksum. Every problem
is a ``CheckpointError`` naming the file, what is wrong and what to do.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy
from safetensors import SafetensorError, safe_open

from .checks import no_json_constant
from .files import FileError, open_regular, write_atomic

FORMAT = "rnnkit-checkpoint"
VERSION = 1
SUFFIX = ".safetensors"

# safetensors dtype code <-> the NumPy dtypes a checkpoint may hold (stored little-endian)
_DTYPES: dict[str, np.dtype] = {
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_CODES = {(dt.kind, dt.itemsize): code for code, dt in _DTYPES.items()}
_RESERVED_NAME = "__metadata__"

# name -> (dtype code, shape), what a checkpoint says of each tensor before it is read
Specs = dict[str, tuple[str, tuple[int, ...]]]


class CheckpointError(ValueError):
    """A checkpoint cannot be written or read. The message names the file and the fix."""


# ---- public API ----------------------------------------------------------------------------


def save(path: str | os.PathLike[str], tensors: Mapping[str, np.ndarray],
         meta: Mapping[str, Any]) -> None:
    """Write ``tensors`` and ``meta`` to ``path`` atomically.

    Parameters
    ----------
    path : str or PathLike
        The checkpoint file; must end in ``.safetensors``. Its directory must exist.
    tensors : mapping of str to ndarray
        Arrays of dtype float32, float64, int64, int32, uint8 or bool, any shape (0-d and
        empty included), any memory layout. Float arrays must be finite.
    meta : mapping of str to JSON values
        dict (str keys), list, str, int (any size), finite float, bool, None. Tuples are
        refused because they would come back as lists. ``format``, ``version`` and
        ``rnnkit_version`` are added.

    Raises
    ------
    CheckpointError
        Invalid input (nothing is written), or an OS error while writing. In every failure
        the previous file at ``path`` is left untouched and no temporary file remains.
    """
    target = Path(path)
    _check_target(target)
    arrays = _check_tensors(target, tensors)
    meta_json = _meta_to_json(target, meta)
    digest = _digest(meta_json, [(n, _code(a), a.shape, a) for n, a in sorted(arrays.items())])
    blob = safetensors.numpy.save(arrays, metadata={"rnnkit": meta_json,
                                                    "rnnkit_sha256": digest})
    try:
        write_atomic(target, blob)
    except FileError as e:
        raise CheckpointError(str(e)) from e


def load(path: str | os.PathLike[str], expect: Callable[[dict[str, Any], Specs], None] | None
         = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a checkpoint written by ``save``; validate everything; return ``(tensors, meta)``.

    ``expect(meta, specs)``, if given, sees the metadata and every tensor's dtype code and
    shape before any tensor is read, and raises ValueError (or TypeError, KeyError) when they
    do not fit what the metadata describes; that becomes a CheckpointError. Tensors come back
    in name order as fresh, writeable, native-byte-order arrays, bit-exact.

    Raises
    ------
    CheckpointError
        Missing file, not a regular file, not an rnnkit checkpoint, truncated, corrupt, not
        what ``expect`` wants, or written by another format version; the message says which
        and what to do.
    """
    p = Path(path)
    with _open(p) as f:
        meta_json, digest, meta = _metadata(p, f)
        specs: Specs = {}
        for name in f.keys():  # noqa: SIM118 (a safe_open handle, not a dict)
            sl = f.get_slice(name)
            code = sl.get_dtype()
            if code not in _DTYPES:
                raise CheckpointError(f"{p}: tensor {name!r} has dtype {code}; rnnkit "
                                      f"checkpoints hold {', '.join(_DTYPES)}")
            specs[name] = (code, tuple(sl.get_shape()))
        if expect is not None:
            try:
                expect(meta, specs)
            except (KeyError, ValueError, TypeError) as e:
                raise CheckpointError(f"{p}: not a usable rnnkit checkpoint: {e}") from e
        try:
            tensors = {name: f.get_tensor(name) for name in sorted(specs)}
        except (SafetensorError, ValueError, MemoryError) as e:
            raise CheckpointError(f"{p}: corrupt tensor data ({e}); {_instead(p)}") from e
    got = _digest(meta_json, [(n, specs[n][0], a.shape, np.ascontiguousarray(a))
                              for n, a in tensors.items()])
    if got != digest:
        raise CheckpointError(f"{p}: corrupt: the checksum does not match (the file was "
                              f"damaged after it was written); {_instead(p)}")
    for name, a in tensors.items():
        if a.dtype == bool and (a.view(np.uint8) > 1).any():
            raise CheckpointError(f"{p}: corrupt: bool tensor {name!r} holds bytes other "
                                  "than 0 and 1")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise CheckpointError(f"{p}: corrupt: tensor {name!r} holds NaN or Inf, which "
                                  f"rnnkit never writes; {_instead(p)}")
        tensors[name] = a.astype(a.dtype.newbyteorder("="), copy=True)
    return tensors, meta


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A checkpoint's metadata, read from its header only (for ``rnnkit info``).

    The header is validated by the library, but the tensor bytes are neither read nor
    checksummed; ``load`` does that.
    """
    p = Path(path)
    with _open(p) as f:
        return _metadata(p, f)[2]


# ---- writing -------------------------------------------------------------------------------


def _check_tensors(path: Path, tensors: Any) -> dict[str, np.ndarray]:
    """Return C-contiguous little-endian copies/views ready for safetensors, or raise."""
    if not isinstance(tensors, Mapping):
        raise CheckpointError(f"{path}: tensors must be a mapping of names to NumPy arrays; got "
                              f"{type(tensors).__name__}")
    out = {}
    for name, a in tensors.items():
        if not isinstance(name, str):
            raise CheckpointError(f"{path}: tensor names must be str; got {type(name).__name__} "
                                  f"{name!r}")
        _check_utf8(path, name, "a tensor name")
        if name == _RESERVED_NAME:
            raise CheckpointError(f"{path}: the tensor name {_RESERVED_NAME!r} is reserved by "
                                  "safetensors; rename the tensor")
        if not isinstance(a, np.ndarray) or isinstance(a, np.ma.MaskedArray):
            raise CheckpointError(f"{path}: tensor {name!r} must be a NumPy array; got "
                                  f"{type(a).__name__}. Convert it with np.asarray(...).")
        key = (a.dtype.kind, a.dtype.itemsize)
        if a.dtype.fields is not None or key not in _CODES:
            raise CheckpointError(f"{path}: tensor {name!r} has dtype {a.dtype}; a checkpoint "
                                  "holds float32, float64, int64, int32, uint8 or bool. Convert "
                                  "it with .astype(...).")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            bad = tuple(int(i) for i in np.argwhere(~np.isfinite(a))[0])
            raise CheckpointError(f"{path}: tensor {name!r} contains NaN or Inf (first at index "
                                  f"{bad}); a non-finite tensor never goes into a checkpoint. "
                                  "Skip this step or restore the last good state.")
        # not np.ascontiguousarray: it turns 0-d arrays into shape (1,)
        out[name] = a.astype(_DTYPES[_CODES[key]], order="C", copy=False)
    return out


def _meta_to_json(path: Path, meta: Any) -> str:
    if not isinstance(meta, Mapping):
        raise CheckpointError(f"{path}: meta must be a dict; got {type(meta).__name__}")
    for key, want in (("format", FORMAT), ("version", VERSION)):
        if key in meta and meta[key] != want:
            raise CheckpointError(f"{path}: meta[{key!r}] is reserved and must be {want!r} (or "
                                  f"absent); got {meta[key]!r}")
    from . import __version__

    full = {**meta, "format": FORMAT, "version": VERSION, "rnnkit_version": __version__}
    _check_json_value(path, full, "meta")
    try:
        return json.dumps(full, ensure_ascii=False, allow_nan=False)
    except ValueError as e:  # e.g. an int past Python's 4300-digit str conversion limit
        raise CheckpointError(f"{path}: meta cannot be written as JSON ({e})") from None


def _check_json_value(path: Path, v: Any, where: str, depth: int = 0) -> None:
    """Refuse anything that would not come back from JSON as the same value and type."""
    if depth > 100:
        raise CheckpointError(f"{path}: {where} is nested more than 100 levels deep (a cycle?)")
    if isinstance(v, str):
        _check_utf8(path, v, where)
        return
    if v is None or isinstance(v, (bool, int)):
        return
    if isinstance(v, float):
        if not math.isfinite(v):
            raise CheckpointError(f"{path}: {where} is {v}; JSON has no NaN or Inf. Store it as "
                                  "a string or None.")
        return
    if isinstance(v, dict):
        for k, x in v.items():
            if not isinstance(k, str):
                raise CheckpointError(f"{path}: {where} has a non-str key {k!r}; JSON keys are "
                                      f"strings, so it would come back as {str(k)!r}. Use "
                                      "str keys.")
            _check_utf8(path, k, f"a key of {where}")
            _check_json_value(path, x, f"{where}[{k!r}]", depth + 1)
        return
    if isinstance(v, list):
        for i, x in enumerate(v):
            _check_json_value(path, x, f"{where}[{i}]", depth + 1)
        return
    if isinstance(v, tuple):
        fix = "pass a list instead"
    elif isinstance(v, (np.integer, np.floating, np.bool_)):
        fix = f"convert it with .item() (it is {type(v).__name__})"
    elif isinstance(v, np.ndarray):
        fix = "store arrays as tensors, or convert small ones with .tolist()"
    else:
        fix = "use only dict, list, str, int, float, bool and None"
    raise CheckpointError(f"{path}: {where} is a {type(v).__name__}, which JSON would not "
                          f"round-trip exactly; {fix}")


def _check_target(path: Path) -> None:
    directory = path.parent
    if not path.name.endswith(SUFFIX) or path.name == SUFFIX:
        raise CheckpointError(f"{path}: a checkpoint file name must end in {SUFFIX!r}, e.g. "
                              f"last{SUFFIX}")
    if not directory.is_dir():
        raise CheckpointError(f"{path}: the directory {directory} does not exist; create it "
                              "first")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory; give a file name like "
                              f"{path / ('last' + SUFFIX)}")


def _check_utf8(path: Path, s: str, where: str) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise CheckpointError(f"{path}: {where} is not valid Unicode (a lone surrogate in "
                              f"{s!r}); fix the string") from None



# ---- reading -------------------------------------------------------------------------------


def _open(p: Path) -> Any:
    """``safe_open`` on a regular file, every failure a CheckpointError."""
    try:
        os.close(open_regular(p, "checkpoint"))
    except FileError as e:
        raise CheckpointError(f"{e} (a training run writes last{SUFFIX} and best{SUFFIX} in "
                              "its output directory)") from None
    try:
        return safe_open(str(p), framework="numpy")
    except (SafetensorError, OSError, ValueError) as e:
        with open(p, "rb") as f:
            head = f.read(8)
        if head[:1] == b"\x80":
            hint = "it looks like a Python pickle, which rnnkit never loads (unpickling runs " \
                "arbitrary code)"
        elif head[:4] == b"PK\x03\x04":
            hint = "it looks like a zip file (a PyTorch .pt?), which rnnkit never unpickles"
        elif len(head) < 8:
            hint = f"it is only {len(head)} bytes long: cut short, or not a checkpoint"
        else:
            hint = f"the safetensors library cannot read it ({e}): cut short or damaged"
        raise CheckpointError(f"{p}: not an rnnkit checkpoint: {hint}; "
                              f"{_instead(p)}") from None


def _metadata(p: Path, f: Any) -> tuple[str, str, dict[str, Any]]:
    meta_json, digest = _rnnkit_metadata(p, f.metadata())
    meta = _strict_json(p, meta_json, "the rnnkit metadata")
    _check_meta(p, meta)
    return meta_json, digest, meta


def _strict_json(path: Path, raw: bytes | str, what: str) -> Any:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        d = dict(pairs)
        if len(d) != len(pairs):
            raise ValueError("duplicate key")
        return d

    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        text.encode("utf-8")  # a str from JSON may still hold a lone surrogate
        return json.loads(text, object_pairs_hook=no_duplicates, parse_constant=no_json_constant)
    except (ValueError, RecursionError) as e:  # Unicode errors and JSONDecodeError included
        raise CheckpointError(f"{path}: corrupt: {what} is not valid UTF-8 JSON ({e}); "
                              f"{_instead(Path(path))}") from None


def _rnnkit_metadata(path: Path, md: Any) -> tuple[str, str]:
    if md is None:
        raise CheckpointError(f"{path}: not an rnnkit checkpoint: a safetensors file without "
                              "rnnkit metadata (written by another program?)")
    if not isinstance(md, dict) or not all(isinstance(v, str) for v in md.values()):
        raise CheckpointError(f"{path}: corrupt header: __metadata__ must map str to str")
    if "rnnkit" not in md:
        raise CheckpointError(f"{path}: not an rnnkit checkpoint: its safetensors metadata has "
                              f"no 'rnnkit' entry (keys: {sorted(md)[:5]})")
    return md["rnnkit"], md.get("rnnkit_sha256", "")


def _check_meta(path: Path, meta: Any) -> None:
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: corrupt: the rnnkit metadata is not a JSON object")
    try:  # JSON escapes can smuggle in lone surrogates, which would fail on printing
        json.dumps(meta, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise CheckpointError(f"{path}: corrupt: the rnnkit metadata holds invalid Unicode (a "
                              "lone surrogate)") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an rnnkit checkpoint (format "
                              f"{meta.get('format')!r}, expected {FORMAT!r})")
    v = meta.get("version")
    if isinstance(v, bool) or not isinstance(v, int):
        raise CheckpointError(f"{path}: corrupt: the checkpoint format version is {v!r}, not "
                              "an int")
    if v > VERSION:
        by = meta.get("rnnkit_version")
        by = f"rnnkit {by}" if isinstance(by, str) else "a newer rnnkit"
        raise CheckpointError(f"{path}: written in checkpoint format version {v} by {by}; this "
                              f"rnnkit reads version {VERSION}. Upgrade to {by} or newer "
                              "(pip install -U rnnkit).")
    if v < VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {v} is older than this "
                              f"rnnkit reads (version {VERSION}); load it with the rnnkit "
                              "that wrote it, or retrain")


def _code(a: np.ndarray) -> str:
    return _CODES[(a.dtype.kind, a.dtype.itemsize)]


def _digest(meta_json: str, tensors: list[tuple[str, str, tuple[int, ...], Any]]) -> str:
    """SHA-256 over the metadata and each (name, dtype, shape, bytes), in name order."""
    h = hashlib.sha256(f"{FORMAT} {VERSION}\n".encode())

    def chunk(b: Any) -> None:
        h.update(memoryview(b).nbytes.to_bytes(8, "little"))
        h.update(b)

    chunk(meta_json.encode("utf-8"))
    for name, code, shape, data in tensors:
        chunk(json.dumps([name, code, list(shape)]).encode("utf-8"))
        chunk(data)
    return h.hexdigest()


def _instead(p: Path) -> str:
    """What to use instead of the damaged checkpoint ``p``: a run's other one, or retrain."""
    other = {f"best{SUFFIX}": f"last{SUFFIX}", f"last{SUFFIX}": f"best{SUFFIX}"}.get(p.name)
    return f"use {other} or retrain" if other else "use another checkpoint of the run or retrain"
