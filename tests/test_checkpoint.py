"""Checkpoints: bit-exact round trips, refusals that write nothing, malformed files that only
ever raise CheckpointError, and a writer SIGKILLed mid-save that leaves the old or the new file.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import signal
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rnnkit import checkpoint as ck
from rnnkit.checkpoint import (
    FORMAT,
    VERSION,
    CheckpointError,
    load,
    read_meta,
    save,
)
from rnnkit.files import remove_temp_files

DTYPES = [np.float32, np.float64, np.int64, np.int32, np.uint8, np.bool_]


def _example(dtype, shape, seed=0):
    rng = np.random.default_rng(seed)
    x = np.asarray(rng.standard_normal(shape) * 1000)
    if dtype == np.bool_:
        return np.asarray(x > 0)
    if np.dtype(dtype).kind == "f":
        return x.astype(dtype)
    info = np.iinfo(dtype)
    return np.asarray(rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True))


def _small() -> tuple[dict[str, np.ndarray], dict]:
    tensors = {
        "rnn.weight_ih_l0": np.arange(6, dtype=np.float32).reshape(2, 3) / 7,
        "step": np.array(41, dtype=np.int64),
        "mask": np.array([True, False, True]),
        "empty": np.zeros((0, 2), dtype=np.float64),
    }
    meta = {"step": 41, "vocab": ["<unk>", "a", "汉"], "lr": 2e-3, "ok": None}
    return tensors, meta


def _assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(want)
    for k, w in want.items():
        g = got[k]
        assert g.dtype == np.dtype(w.dtype).newbyteorder("="), k
        assert g.shape == w.shape, k
        assert g.tobytes() == np.ascontiguousarray(w, dtype=g.dtype).tobytes(), k


def _listing(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in d.iterdir()}


def _raw(header: dict | bytes, data: bytes = b"") -> bytes:
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    return len(h).to_bytes(8, "little") + h + data


def _rnnkit_header(meta: dict, tensors: dict | None = None) -> dict:
    return {"__metadata__": {"rnnkit": json.dumps(meta), "rnnkit_sha256": "0" * 64},
            **(tensors or {})}


@pytest.fixture
def small_file(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray], dict]:
    tensors, meta = _small()
    path = tmp_path / "last.safetensors"
    save(path, tensors, meta)
    return path, tensors, meta


# ---- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(), (0,), (3, 0, 2), (1,), (5, 4), (2, 3, 4)])
def test_round_trip_is_bit_exact(tmp_path, dtype, shape):
    tensors = {"a": _example(dtype, shape), "b": _example(dtype, shape, seed=1)}
    save(tmp_path / "x.safetensors", tensors, {"n": 1})
    got, meta = load(tmp_path / "x.safetensors")
    _assert_same(got, tensors)
    assert meta == {"n": 1, "format": FORMAT, "version": VERSION,
                    "rnnkit_version": meta["rnnkit_version"]}
    for a in got.values():
        assert a.flags.writeable and a.flags.c_contiguous and a.flags.owndata


def test_round_trip_extreme_floats_and_all_together(tmp_path):
    f32 = np.array([0.0, -0.0, np.finfo(np.float32).max, np.finfo(np.float32).tiny, 1e-45,
                    -np.finfo(np.float32).max], dtype=np.float32)
    tensors = {f"t_{np.dtype(d).name}": _example(d, (3, 2), seed=i) for i, d in enumerate(DTYPES)}
    tensors |= {"f32": f32, "f64": f32.astype(np.float64) / 3, "汉字 name/with.dots": f32[:2]}
    save(tmp_path / "x.safetensors", tensors, {})
    got, _ = load(tmp_path / "x.safetensors")
    _assert_same(got, tensors)
    assert np.signbit(got["f32"][1])


def test_non_contiguous_and_big_endian_inputs(tmp_path):
    a = np.arange(24, dtype=np.float64).reshape(4, 6)
    tensors = {
        "strided": a[:, ::2],  # safetensors.numpy.save alone would write the wrong bytes here
        "transposed": a.T,
        "fortran": np.asfortranarray(a),
        "reversed": a[::-1],
        "big_endian": a.astype(">f8"),
        "big_endian_int": np.arange(5).astype(">i4"),
        "zero_d": np.array(3.5, dtype=np.float32),
        "zero_d_bool": np.array(True),
    }
    save(tmp_path / "x.safetensors", tensors, {})
    got, _ = load(tmp_path / "x.safetensors")
    for k, v in tensors.items():
        assert got[k].shape == v.shape and np.array_equal(got[k], v), k
        assert got[k].dtype.isnative


def test_meta_round_trips_big_ints_and_restores_the_random_stream(tmp_path):
    rng = np.random.default_rng(123)
    rng.standard_normal(7)  # advance, so the state is not the seed's
    meta = {"rng": rng.bit_generator.state, "big": 2**200 + 1, "neg": -(2**127), "f": 0.1,
            "tiny": 5e-324, "nested": {"l": [1, [2, [3.5, "x"]], {}], "t": True},
            "uni": "汉字 ✓", "np_float": np.float64(1.25)}
    save(tmp_path / "x.safetensors", {}, meta)
    _, got = load(tmp_path / "x.safetensors")
    assert {k: got[k] for k in meta} == meta
    assert got["rng"]["state"]["state"] == rng.bit_generator.state["state"]["state"]
    assert type(got["big"]) is int and got["big"] == 2**200 + 1
    restored = np.random.default_rng()
    restored.bit_generator.state = got["rng"]
    assert np.array_equal(restored.random(20), rng.random(20))


def test_the_file_is_standard_safetensors(small_file):
    path, tensors, meta = small_file
    other = safetensors.numpy.load_file(str(path))
    _assert_same(other, tensors)
    with safetensors.safe_open(str(path), framework="np") as f:
        stored = json.loads(f.metadata()["rnnkit"])
    assert stored["step"] == meta["step"] and stored["format"] == FORMAT


def test_read_meta_reads_only_the_header(small_file):
    path, _, meta = small_file
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # a tensor byte: load catches it via the checksum, read_meta never sees it
    path.write_bytes(bytes(data))
    got = read_meta(path)
    assert got["step"] == meta["step"] and got["vocab"] == meta["vocab"]
    with pytest.raises(CheckpointError, match="checksum"):
        load(path)


def test_save_overwrites_and_can_resave_loaded_meta(small_file):
    path, _, _ = small_file
    got, meta = load(path)
    meta["step"] = 42
    save(path, got, meta)  # format/version/rnnkit_version already present: accepted
    assert load(path)[1]["step"] == 42


# ---- refusals: nothing written, nothing touched --------------------------------------------


class _Obj:
    pass


BAD_TENSORS = {
    "nan": ({"w": np.array([1.0, np.nan], dtype=np.float32)}, "NaN or Inf"),
    "inf": ({"w": np.array([[0.0], [-np.inf]])}, r"NaN or Inf \(first at index \(1, 0\)\)"),
    "float16": ({"w": np.zeros(2, dtype=np.float16)}, "dtype float16"),
    "int16": ({"w": np.zeros(2, dtype=np.int16)}, "dtype int16"),
    "complex": ({"w": np.zeros(2, dtype=np.complex64)}, "dtype complex64"),
    "object": ({"w": np.array([None])}, "dtype object"),
    "structured": ({"w": np.zeros(2, dtype=[("a", "<f4")])}, "dtype"),
    "list": ({"w": [1.0, 2.0]}, "must be a NumPy array; got list"),
    "scalar": ({"w": np.float32(1)}, "must be a NumPy array; got float32"),
    "masked": ({"w": np.ma.masked_array([1.0], mask=[True])}, "must be a NumPy array"),
    "name": ({3: np.zeros(1)}, "names must be str"),
    "reserved": ({"__metadata__": np.zeros(1)}, "reserved"),
    "surrogate": ({"w\ud800": np.zeros(1)}, "lone surrogate"),
}
BAD_META = {
    "object": ({"x": _Obj()}, r"meta\['x'\] is a _Obj"),
    "np_int": ({"step": np.int64(3)}, r"\.item\(\)"),
    "tuple": ({"shape": (1, 2)}, "pass a list"),
    "int_key": ({"vocab": {1: "a"}}, "non-str key 1"),
    "nan": ({"loss": float("nan")}, "no NaN or Inf"),
    "array": ({"a": np.zeros(2)}, "tolist"),
    "set": ({"s": {1}}, "is a set"),
    "format": ({"format": "other"}, "reserved"),
    "version": ({"version": 7}, "reserved"),
    "not_a_dict": ([1, 2], "meta must be a dict"),
    "surrogate": ({"s": ["\udc80"]}, "lone surrogate"),
    "surrogate_key": ({"\ud800": 1}, "lone surrogate"),
    "int_too_long": ({"n": 10**5000}, "cannot be written as JSON"),
}


@pytest.mark.parametrize(("tensors", "meta", "msg"), [
    *[pytest.param(t, {}, m, id=f"tensor-{k}") for k, (t, m) in BAD_TENSORS.items()],
    *[pytest.param({"w": np.zeros(2)}, md, m, id=f"meta-{k}") for k, (md, m) in BAD_META.items()],
])
def test_invalid_input_writes_nothing_and_keeps_the_old_file(small_file, tensors, meta, msg):
    path, old_tensors, _ = small_file
    before = _listing(path.parent)
    with pytest.raises(CheckpointError, match=msg) as e:
        save(path, tensors, meta)
    assert str(path) in str(e.value)
    assert _listing(path.parent) == before
    _assert_same(load(path)[0], old_tensors)
    with pytest.raises(CheckpointError):
        save(path.parent / "new.safetensors", tensors, meta)
    assert _listing(path.parent) == before


def test_cyclic_meta_is_refused(tmp_path):
    meta: dict = {}
    meta["self"] = meta
    with pytest.raises(CheckpointError, match="nested more than 100 levels"):
        save(tmp_path / "x.safetensors", {}, meta)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("name", "msg"), [("x.npz", "must end in '.safetensors'"),
                                           ("missing/x.safetensors", "does not exist"),
                                           ("d.safetensors", "is a directory")])
def test_bad_target_paths(tmp_path, name, msg):
    (tmp_path / "d.safetensors").mkdir()
    with pytest.raises(CheckpointError, match=msg):
        save(tmp_path / name, {}, {})


# ---- failures while writing ----------------------------------------------------------------


def test_write_order_is_fsync_rename_fsync_dir(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", Path(a).name)),
                                                     real_replace(a, b))[1])
    save(tmp_path / "x.safetensors", {"w": np.ones(3)}, {})
    assert events[0] == "fsync" and events[2] == "fsync"
    tmp_name = events[1][1]
    assert tmp_name.startswith(".x.safetensors.") and tmp_name.endswith(".tmp")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "x.safetensors").stat().st_mode) == 0o666 & ~umask


@pytest.mark.parametrize(("target", "exc", "raises"), [
    ("replace", OSError(28, "No space left on device"), CheckpointError),
    ("fsync", OSError(5, "Input/output error"), CheckpointError),
    ("fsync", KeyboardInterrupt(), KeyboardInterrupt),  # a second Ctrl-C during the save
])
def test_failure_mid_write_keeps_the_old_file_and_leaves_no_temp(small_file, monkeypatch,
                                                                 target, exc, raises):
    path, old_tensors, old_meta = small_file
    before = _listing(path.parent)

    def fail(*args):
        raise exc

    monkeypatch.setattr(os, target, fail)
    with pytest.raises(raises) as e:
        save(path, {"w": np.ones(3)}, {"step": 99})
    monkeypatch.undo()
    if raises is CheckpointError:
        assert "previous file is untouched" in str(e.value) and str(path) in str(e.value)
    assert _listing(path.parent) == before
    tensors, meta = load(path)
    _assert_same(tensors, old_tensors)
    assert meta["step"] == old_meta["step"]


# ---- malformed files -----------------------------------------------------------------------


class _Touch:
    """Unpickling this creates ``path``: the proof that nobody unpickled it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_a_pickle_renamed_to_safetensors_is_never_unpickled(tmp_path):
    live = tmp_path / "live_marker"
    pickle.loads(pickle.dumps(_Touch(live)))
    assert live.exists(), "the payload must be live for this test to mean anything"
    marker = tmp_path / "marker"
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        path = tmp_path / f"p{protocol}.safetensors"
        path.write_bytes(pickle.dumps({"w": _Touch(marker)}, protocol=protocol))
        with pytest.raises(CheckpointError, match="not an rnnkit checkpoint"):
            load(path)
        with pytest.raises(CheckpointError, match="not an rnnkit checkpoint"):
            read_meta(path)
    assert not marker.exists()


def test_pickle_and_zip_get_a_hint(tmp_path):
    p = tmp_path / "p.safetensors"
    p.write_bytes(pickle.dumps({"w": [1.0] * 100}, protocol=4))
    with pytest.raises(CheckpointError, match="looks like a Python pickle"):
        load(p)
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"w": 1}))
    with pytest.raises(CheckpointError, match="looks like a zip file"):
        load(p)


def _meta_v(**kw):
    return {"format": FORMAT, "version": VERSION, "rnnkit_version": "0.1.0"} | kw


F4 = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}

MALFORMED = {
    "empty": (b"", "0 bytes long"),
    "tiny": (b"\x05\x00", "only 2 bytes"),
    "random": (bytes(random.Random(0).randbytes(4096)), "not an rnnkit checkpoint"),
    "text": (b"hello, this is not a checkpoint\n" * 4, "not an rnnkit checkpoint"),
    "header_len_zero": (b"\x00" * 8 + b"{}", "not an rnnkit checkpoint"),
    "header_len_too_long": (_raw(_rnnkit_header(_meta_v()))[:-3], "truncated"),
    "header_len_huge": ((2**40).to_bytes(8, "little") + b"{}", "not an rnnkit checkpoint"),
    "header_len_short": (b"\x05" + b"\x00" * 7 + b'{"__metadata__": {}}', "not valid UTF-8 JSON"),
    "header_not_json": (_raw({})[:8] + b"{not json", "not valid UTF-8 JSON"),
    "header_not_utf8": (b"\x04" + b"\x00" * 7 + b'{"\xff}', "not valid UTF-8 JSON"),
    "header_list": (b"\x02" + b"\x00" * 7 + b"[]", "no safetensors JSON header"),
    "header_nan": (_raw(b'{"a": NaN}'), "not valid UTF-8 JSON .NaN is not JSON"),
    "deep_json": (_raw(b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
                  "not valid UTF-8 JSON"),
    "duplicate_key": (_raw(b'{"a": 1, "a": 2}'), "duplicate key"),
    "plain_safetensors": (safetensors.numpy.save({"w": np.ones(1)}), "without rnnkit metadata"),
    "other_metadata": (safetensors.numpy.save({}, metadata={"x": "y"}), "no 'rnnkit' entry"),
    "metadata_not_str": (_raw({"__metadata__": {"rnnkit": 1}}), "must map str to str"),
    "meta_not_json": (_raw({"__metadata__": {"rnnkit": "{oops"}}), "rnnkit metadata is not"),
    "meta_not_object": (_raw({"__metadata__": {"rnnkit": "[]"}}), "not a JSON object"),
    "meta_surrogate": (_raw(_rnnkit_header(_meta_v(s="\ud800"))), "lone surrogate"),
    "meta_int_too_long": (_raw({"__metadata__": {"rnnkit": '{"n": ' + "9" * 5000 + "}"}}),
                          "not valid UTF-8 JSON"),
    "wrong_format": (_raw(_rnnkit_header(_meta_v(format="other-format"))),
                     "not an rnnkit checkpoint .format 'other-format'"),
    "no_version": (_raw(_rnnkit_header({"format": FORMAT})), "version is None"),
    "newer_version": (_raw(_rnnkit_header(_meta_v(version=VERSION + 1, rnnkit_version="0.9.0"))),
                      f"version {VERSION + 1} by rnnkit 0.9.0.*Upgrade to rnnkit 0.9.0"),
    "older_version": (_raw(_rnnkit_header(_meta_v(version=VERSION - 1))), "older than"),
    "bad_dtype": (_raw(_rnnkit_header(_meta_v(), {"w": F4 | {"dtype": "F16"}}), b"\0" * 4),
                  "dtype 'F16'"),
    "extra_field": (_raw(_rnnkit_header(_meta_v(), {"w": F4 | {"x": 1}}), b"\0" * 4),
                    "exactly dtype, shape and data_offsets"),
    "negative_shape": (_raw(_rnnkit_header(_meta_v(), {"w": F4 | {"shape": [-1]}}), b"\0" * 4),
                       "non-negative ints"),
    "float_shape": (_raw(_rnnkit_header(_meta_v(), {"w": F4 | {"shape": [1.0]}}), b"\0" * 4),
                    "non-negative ints"),
    "too_many_dims": (_raw(_rnnkit_header(_meta_v(), {"w": F4 | {"shape": [1] * 40}}),
                           b"\0" * 4), "at most 32"),
    "size_mismatch": (_raw(_rnnkit_header(_meta_v(), {"w": F4 | {"shape": [2]}}), b"\0" * 4),
                      "needs 8 bytes"),
    "bad_offsets": (_raw(_rnnkit_header(_meta_v(), {"w": F4 | {"data_offsets": [0]}}),
                         b"\0" * 4), "expected .begin, end."),
    "overlap": (_raw(_rnnkit_header(_meta_v(), {"a": F4, "b": F4 | {"data_offsets": [2, 6]}}),
                     b"\0" * 6), "overlaps"),
    "gap": (_raw(_rnnkit_header(_meta_v(), {"a": F4 | {"data_offsets": [4, 8]}}), b"\0" * 8),
            "leaves a gap"),
    "trailing": (_raw(_rnnkit_header(_meta_v(), {"a": F4}), b"\0" * 9), "5 unexpected bytes"),
    "data_truncated": (_raw(_rnnkit_header(_meta_v(), {"a": F4}), b"\0" * 3),
                       "truncated: expected"),
    "bad_checksum": (_raw(_rnnkit_header(_meta_v(), {"a": F4}), b"\0" * 4), "checksum"),
}

# the safetensors library (safe_open) refuses these before rnnkit looks: its words, ours around
for _name in ("header_len_too_long", "header_len_short", "header_not_json", "header_not_utf8",
              "header_list", "header_nan", "duplicate_key", "metadata_not_str", "trailing",
              "deep_json", "bad_dtype", "extra_field", "negative_shape", "float_shape",
              "too_many_dims", "size_mismatch", "bad_offsets", "overlap", "gap",
              "data_truncated"):
    MALFORMED[_name] = (MALFORMED[_name][0], "not an rnnkit checkpoint|corrupt")
# safe_open reads the metadata of these; load refuses them
for _name in ("too_many_dims", "bad_offsets", "extra_field"):
    MALFORMED[_name] = (MALFORMED[_name][0], "not an rnnkit checkpoint|corrupt|checksum")


@pytest.mark.parametrize("content", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_files_raise_checkpoint_error(tmp_path, content):
    data, msg = content
    path = tmp_path / "bad.safetensors"
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match=msg) as e:
        load(path)
    assert str(e.value).startswith(f"{path}: ")
    if "checksum" not in msg:  # read_meta judges the header alone
        with pytest.raises(CheckpointError, match=msg):
            read_meta(path)


def test_corrupt_values_in_data_bytes(tmp_path):
    # checksum right, but data no rnnkit could have written: load says so instead of training on it
    meta_json = json.dumps(_meta_v())
    for code, raw, msg in [("BOOL", b"\x02", "other than 0 and 1"),
                           ("F32", np.float32(np.nan).tobytes(), "NaN or Inf")]:
        entry = {"dtype": code, "shape": [1], "data_offsets": [0, len(raw)]}
        digest = ck._digest(meta_json, [("w", code, (1,), raw)])
        header = {"__metadata__": {"rnnkit": meta_json, "rnnkit_sha256": digest}, "w": entry}
        path = tmp_path / f"{code}.safetensors"
        path.write_bytes(_raw(header, raw))
        with pytest.raises(CheckpointError, match=msg):
            load(path)


def test_every_prefix_of_a_checkpoint_is_refused(small_file):
    path, _, _ = small_file
    data = path.read_bytes()
    cut = path.parent / "cut.safetensors"
    for n in range(len(data)):
        cut.write_bytes(data[:n])
        with pytest.raises(CheckpointError) as e:
            load(cut)
        assert "not an rnnkit checkpoint" in str(e.value), (n, str(e.value))


def test_every_single_byte_change_is_refused_or_harmless(small_file):
    path, tensors, meta = small_file
    data = path.read_bytes()
    bad = path.parent / "bad.safetensors"
    for i in range(len(data)):
        for new in {data[i] ^ 0x01, data[i] ^ 0x80, ord(" "), ord("9")} - {data[i]}:
            bad.write_bytes(data[:i] + bytes([new]) + data[i + 1:])
            try:
                got, got_meta = load(bad)
            except CheckpointError:
                continue
            # only a JSON-insignificant change (padding space -> other whitespace) may load
            _assert_same(got, tensors)
            assert {k: got_meta[k] for k in meta} == meta


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    tensors, meta = _small()
    save(d / "good.safetensors", tensors, meta)
    return d


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255),
                                st.sampled_from(["set", "insert", "delete"])),
                      min_size=1, max_size=4))
def test_fuzz_mutations_only_ever_raise_checkpoint_error(fuzz_dir, edits):
    tensors, meta = _small()
    data = bytearray((fuzz_dir / "good.safetensors").read_bytes())
    for pos, byte, op in edits:
        i = pos % (len(data) + 1)
        if op == "insert":
            data[i:i] = bytes([byte])
        elif i < len(data):
            if op == "set":
                data[i] = byte
            else:
                del data[i]
    path = fuzz_dir / "mutated.safetensors"
    path.write_bytes(bytes(data))
    try:
        got, got_meta = load(path)
    except CheckpointError:
        return
    _assert_same(got, tensors)
    assert {k: got_meta[k] for k in meta} == meta


@pytest.mark.parametrize("kind", ["missing", "directory", "fifo"])
def test_paths_that_are_not_files(tmp_path, kind):
    path = tmp_path / "x.safetensors"
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        if not hasattr(os, "mkfifo"):
            pytest.skip("no FIFOs on this platform")
        os.mkfifo(path)  # opening it for reading would block forever
    msg = {"missing": "no such file", "directory": "is a directory",
           "fifo": "not a regular file"}[kind]
    for fn in (load, read_meta):
        with pytest.raises(CheckpointError, match=msg):
            fn(path)


# ---- temp files, manager -------------------------------------------------------------------


def test_remove_temp_files_removes_only_stale_writer_temps(tmp_path):
    stale = [tmp_path / ".last.safetensors.0123456789abcdef.tmp",
             tmp_path / ".loss.png.fedcba9876543210.tmp"]
    keep = [tmp_path / "notes.tmp", tmp_path / ".hidden", tmp_path / "last.safetensors",
            tmp_path / ".other.tmp", tmp_path / ".best.safetensors.ff.tmp"]
    for p in stale + keep:
        p.write_bytes(b"x")
    assert remove_temp_files(tmp_path) == sorted(stale)
    assert sorted(tmp_path.iterdir()) == sorted(keep)
    assert remove_temp_files(tmp_path / "missing") == []


# ---- crash safety: SIGKILL during save -----------------------------------------------------

N_BIG = 12_500_000  # float32: a 50 MB tensor

_WRITER = f"""
import os, sys
import numpy as np
from rnnkit.checkpoint import save

path, k, pause = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "pause"
if pause:  # stop inside save, after the temp file is written, before the rename
    real_fsync = os.fsync
    def fsync(fd):
        print("fsync", flush=True)
        sys.stdin.readline()
        real_fsync(fd)
    os.fsync = fsync
w = np.empty({N_BIG}, dtype=np.float32)
print("ready", flush=True)
while True:
    w.fill(k)
    save(path, {{"w": w, "k": np.array(k)}}, {{"k": k}})
    print("saved", k, flush=True)
    k += 1
"""


def _check_content(path: Path, allowed: set[int]) -> int:
    tensors, meta = load(path)
    k = meta["k"]
    assert k in allowed, (k, allowed)
    assert int(tensors["k"]) == k
    w = tensors["w"]
    assert w.shape == (N_BIG,) and w.dtype == np.float32
    assert (w == k).all()
    return k


def _writer(path: Path, k: int, pause: bool) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(k),
                          "pause" if pause else "run"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline() == "ready\n"
    return p


def _kill(p: subprocess.Popen) -> list[int]:
    p.send_signal(signal.SIGKILL)
    out, _ = p.communicate()
    assert p.returncode == -signal.SIGKILL
    return [int(line.split()[1]) for line in out.splitlines() if line.startswith("saved")]


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_during_save_leaves_the_old_or_the_new_checkpoint(tmp_path):
    path = tmp_path / "last.safetensors"
    save(path, {"w": np.zeros(N_BIG, dtype=np.float32), "k": np.array(0)}, {"k": 0})
    current = 0

    # deterministic: killed with the temp file written but not yet renamed -> the old file
    p = _writer(path, 1, pause=True)
    assert p.stdout is not None and p.stdout.readline() == "fsync\n"
    assert _kill(p) == []
    temps = [q for q in tmp_path.iterdir() if q.name.endswith(".tmp")]
    assert len(temps) == 1 and temps[0].name.startswith(".last.safetensors.")
    assert _check_content(path, {0}) == 0
    assert remove_temp_files(tmp_path) == temps

    # random instants
    rng = random.Random(1)
    for trial in range(8):
        first = 1000 * (trial + 1)
        p = _writer(path, first, pause=False)
        time.sleep(rng.uniform(0.0, 0.9))
        saved = _kill(p)
        # the last completed save, the one in flight (renamed but not reported), or the old
        allowed = {current} if not saved else {saved[-1], saved[-1] + 1}
        allowed |= {first} if not saved else set()
        current = _check_content(path, allowed)
        remove_temp_files(tmp_path)
        assert [q.name for q in tmp_path.iterdir()] == ["last.safetensors"]
