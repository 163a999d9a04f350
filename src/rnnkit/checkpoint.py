"""Checkpoint files that lose nothing, survive a crash at any instant, and never unpickle.

One checkpoint is one standard safetensors file, ``<name>.safetensors``::

    8 bytes    N, the header length (little-endian unsigned 64-bit)
    N bytes    JSON header: {"__metadata__": {"rnnkit": META, "rnnkit_sha256": HEX},
                             "<tensor name>": {"dtype": "F32", "shape": [...],
                                               "data_offsets": [begin, end]}, ...}
    the rest   the tensors' bytes, little-endian, C order, back to back

META is the caller's metadata as JSON (config, vocabulary, step, RNG state, ...) plus
``format``, ``version`` and ``rnnkit_version``. HEX is a SHA-256 over META and every tensor's
name, dtype, shape and bytes, so a flipped byte anywhere is caught on load, not trained on.

Because everything is in one file, one ``os.replace`` swaps the whole checkpoint: ``save``
writes a hidden temporary file beside the target, fsyncs it, renames it over the target and
fsyncs the directory. A crash at any instant leaves the previous checkpoint or the new one,
plus at worst a stale ``.<name>.safetensors.<random>.tmp`` that ``cleanup_temp_files`` removes.

``load`` parses the header itself (no pickle, no eval, nothing executed) and checks every
field before it touches tensor bytes; every problem is a ``CheckpointError`` naming the file,
what is wrong and what to do.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import numpy as np
import safetensors.numpy

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
_MAX_HEADER = 100 * 1024 * 1024  # the limit safetensors itself enforces
_MAX_NDIM = 32  # the lowest limit across NumPy 1.x and 2.x
_RESERVED_NAME = "__metadata__"


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
    # Prove the bytes read back before they replace anything: same parser, same checksum.
    _verify(target, _parse(target, blob[:8], lambda n: blob[8:8 + n], len(blob)), blob)
    _write_atomic(target, blob)


def load(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a checkpoint written by ``save``; validate everything; return ``(tensors, meta)``.

    Tensors come back in name order as fresh, writeable, C-contiguous, native-byte-order
    arrays, bit-exact (0-d and empty included). ``meta`` is the dict given to ``save`` plus
    ``format``, ``version`` and ``rnnkit_version``.

    Raises
    ------
    CheckpointError
        Missing file, not a regular file, not an rnnkit checkpoint, truncated, corrupt, or
        written by another format version; the message says which and what to do.
    """
    p = Path(path)
    with _open_regular(p) as f:
        data = f.read()
    header = _parse(p, data[:8], lambda n: data[8:8 + n], len(data))
    _verify(p, header, data)
    buf = memoryview(data)[header.data_start:]
    tensors = {}
    for name, (code, shape, begin, end) in sorted(header.entries.items()):
        dt = _DTYPES[code]
        a = np.frombuffer(buf[begin:end], dtype=dt).reshape(shape)
        tensors[name] = a.astype(dt.newbyteorder("="), copy=True)
    return tensors, header.meta


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Return a checkpoint's metadata, reading only its header (for ``rnnkit info``).

    The header is fully validated, and truncation is caught from the file size, but the
    tensor bytes are neither read nor checksummed; ``load`` does that.
    """
    p = Path(path)
    with _open_regular(p) as f:
        size = os.fstat(f.fileno()).st_size
        return _parse(p, f.read(8), f.read, size).meta


def cleanup_temp_files(directory: str | os.PathLike[str]) -> list[Path]:
    """Remove ``.<name>.safetensors.<random>.tmp`` files a killed ``save`` left behind.

    Only call this when no other process is saving into ``directory``. Returns the removed
    paths, sorted; a missing directory removes nothing.
    """
    d = Path(directory)
    if not d.is_dir():
        return []
    removed = []
    for p in sorted(d.glob(f".*{SUFFIX}.*.tmp")):
        if p.is_file() or p.is_symlink():
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed.append(p)
    return removed


class CheckpointManager:
    """``last.safetensors`` (to resume) and ``best.safetensors`` (lowest validation loss).

    Creates ``directory`` if needed and removes stale temporary files from a killed writer.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CheckpointError(f"{self.directory}: cannot create the checkpoint directory "
                                  f"({e.strerror}); choose another output directory") from e
        self.last = self.directory / f"last{SUFFIX}"
        self.best = self.directory / f"best{SUFFIX}"
        cleanup_temp_files(self.directory)

    def save_last(self, tensors: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> Path:
        save(self.last, tensors, meta)
        return self.last

    def save_best(self, tensors: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> Path:
        save(self.best, tensors, meta)
        return self.best

    def latest(self) -> Path | None:
        """The checkpoint to resume from: ``last``, else ``best``, else None."""
        for p in (self.last, self.best):
            if p.is_file():
                return p
        return None


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


def _write_atomic(path: Path, blob: bytes) -> None:
    directory = path.parent
    tmp = directory / f".{path.name}.{secrets.token_hex(8)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                     0o666)
        with open(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError):
            raise CheckpointError(f"{path}: could not write the checkpoint ({e}); the previous "
                                  "file is untouched. Check free disk space and permissions."
                                  ) from e
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable. If the OS refuses (Windows, some network file systems) the
    file on disk is still the old or the new checkpoint, never a mix, so carry on."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ---- reading -------------------------------------------------------------------------------


class _Header(NamedTuple):
    meta: dict[str, Any]
    digest: str
    meta_json: str
    entries: dict[str, tuple[str, tuple[int, ...], int, int]]  # name -> code, shape, begin, end
    data_start: int


def _open_regular(path: Path) -> BinaryIO:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file; check the path (a training run writes "
                              f"last{SUFFIX} and best{SUFFIX} in its output directory)") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror})") from e
    if stat.S_ISDIR(st.st_mode):
        raise CheckpointError(f"{path}: is a directory; pass the checkpoint file inside it, "
                              f"e.g. {path / ('last' + SUFFIX)}")
    if not stat.S_ISREG(st.st_mode):  # a FIFO or device would block or never end
        raise CheckpointError(f"{path}: not a regular file; pass a .safetensors checkpoint file")
    try:
        return open(path, "rb")  # the caller closes it
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror})") from e


def _parse(path: Path, head: bytes, read: Any, size: int) -> _Header:
    """Validate the header. ``head``: the first 8 bytes; ``read(n)``: the next n bytes;
    ``size``: the file size. Tensor bytes are not read."""
    if size < 8:
        what = "empty (0 bytes)" if size == 0 else f"only {size} bytes long"
        raise CheckpointError(f"{path}: {what}, not an rnnkit checkpoint; the write never "
                              f"completed or the file is not a checkpoint. Use best{SUFFIX} "
                              "or retrain.")
    n = int.from_bytes(head, "little")
    if 0 < n <= min(_MAX_HEADER, size - 8):
        pass
    elif 0 < n <= _MAX_HEADER and size > 8 and read(1) == b"{":
        raise CheckpointError(f"{path}: truncated: the header alone needs {8 + n} bytes, the "
                              f"file has {size} — the file was cut short; use best{SUFFIX} or "
                              "retrain")
    elif head[:1] == b"\x80":
        raise CheckpointError(f"{path}: not an rnnkit checkpoint; it looks like a Python pickle, "
                              "which rnnkit never loads (unpickling runs arbitrary code)")
    elif head[:4] == b"PK\x03\x04":
        raise CheckpointError(f"{path}: not an rnnkit checkpoint; it looks like a zip file (a "
                              "PyTorch .pt?), which rnnkit never unpickles")
    else:
        raise CheckpointError(f"{path}: not an rnnkit checkpoint (no safetensors header: the "
                              f"first 8 bytes give a header length of {n} for a {size}-byte "
                              "file)")
    raw = read(n)
    if len(raw) != n:
        raise CheckpointError(f"{path}: the file changed while it was read; try again")
    if raw[:1] != b"{":
        raise CheckpointError(f"{path}: not an rnnkit checkpoint (no safetensors JSON header)")
    header = _strict_json(path, raw, "the header")
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt header: expected a JSON object")
    meta_json, digest = _rnnkit_metadata(path, header.pop(_RESERVED_NAME, None))
    meta = _strict_json(path, meta_json, "the rnnkit metadata")
    _check_meta(path, meta)

    data_size = size - 8 - n
    entries = {}
    for name, e in header.items():
        entries[name] = _check_entry(path, name, e)
    end = 0
    for name, (_, _, begin, stop) in sorted(entries.items(), key=lambda kv: kv[1][2:]):
        if begin != end:
            what = "overlaps the previous tensor" if begin < end else "leaves a gap before it"
            raise CheckpointError(f"{path}: corrupt header: tensor {name!r} starts at byte "
                                  f"{begin}, which {what} (ends at {end})")
        end = stop
    if end > data_size:
        raise CheckpointError(f"{path}: truncated: expected {8 + n + end} bytes, file has {size} "
                              f"— the file was cut short; use best{SUFFIX} or retrain")
    if end < data_size:
        raise CheckpointError(f"{path}: corrupt: {data_size - end} unexpected bytes after the "
                              f"last tensor; use best{SUFFIX} or retrain")
    return _Header(meta, digest, meta_json, entries, 8 + n)


def _strict_json(path: Path, raw: bytes | str, what: str) -> Any:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        d = dict(pairs)
        if len(d) != len(pairs):
            raise ValueError("duplicate key")
        return d

    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        text.encode("utf-8")  # a str from JSON may still hold a lone surrogate
        return json.loads(text, object_pairs_hook=no_duplicates, parse_constant=no_constant)
    except (ValueError, RecursionError) as e:  # Unicode errors and JSONDecodeError included
        raise CheckpointError(f"{path}: corrupt: {what} is not valid UTF-8 JSON ({e}); use "
                              f"best{SUFFIX} or retrain") from None


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


def _check_entry(path: Path, name: str, e: Any) -> tuple[str, tuple[int, ...], int, int]:
    where = f"{path}: corrupt header: tensor {name!r}"
    if not isinstance(e, dict) or set(e) != {"dtype", "shape", "data_offsets"}:
        raise CheckpointError(f"{where} must have exactly dtype, shape and data_offsets")
    code, shape, offsets = e["dtype"], e["shape"], e["data_offsets"]
    if not isinstance(code, str) or code not in _DTYPES:
        raise CheckpointError(f"{where} has dtype {code!r}; rnnkit checkpoints hold "
                              f"{', '.join(_DTYPES)}")
    if (not isinstance(shape, list) or len(shape) > _MAX_NDIM
            or not all(_is_uint(d) for d in shape)):
        raise CheckpointError(f"{where} has shape {shape!r}; expected a list of at most "
                              f"{_MAX_NDIM} non-negative ints")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(map(_is_uint, offsets)):
        raise CheckpointError(f"{where} has data_offsets {offsets!r}; expected [begin, end]")
    begin, end = offsets
    nbytes = math.prod(shape) * _DTYPES[code].itemsize
    if end - begin != nbytes:
        raise CheckpointError(f"{where}: shape {shape} of {code} needs {nbytes} bytes but "
                              f"data_offsets {offsets} span {end - begin}")
    return code, tuple(shape), begin, end


def _is_uint(x: Any) -> bool:
    return type(x) is int and x >= 0


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


def _verify(path: Path, header: _Header, data: bytes) -> None:
    """Check the SHA-256 and the values no valid checkpoint can hold (NaN, bools not 0/1)."""
    buf = memoryview(data)[header.data_start:]
    items = sorted(header.entries.items())
    got = _digest(header.meta_json, [(n, c, s, buf[b:e]) for n, (c, s, b, e) in items])
    if got != header.digest:
        raise CheckpointError(f"{path}: corrupt: the checksum does not match (the file was "
                              f"damaged after it was written); use best{SUFFIX} or retrain")
    for name, (code, _, begin, end) in items:
        a = np.frombuffer(buf[begin:end], dtype=_DTYPES[code])
        if code == "BOOL" and (a.view(np.uint8) > 1).any():
            raise CheckpointError(f"{path}: corrupt: bool tensor {name!r} holds bytes other "
                                  "than 0 and 1")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise CheckpointError(f"{path}: corrupt: tensor {name!r} holds NaN or Inf, which "
                                  f"rnnkit never writes; use best{SUFFIX} or retrain")
