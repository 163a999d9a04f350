"""Every file rnnkit reads from a user or writes, and every string it prints from one.

* ``write_atomic`` is the one writer: a temporary file with a unique name is created beside
  the target with ``O_CREAT | O_EXCL | O_NOFOLLOW`` (so a planted file or symbolic link is
  never written through), written, fsynced, renamed over the target, and the directory
  fsynced. A kill at any instant leaves the old file or the new one, never a mix.
* ``append_line`` appends one whole line to a log (never through a link); on a failed
  write (a full disk) the file is cut back to where it was, so no torn line is left.
* ``read_bytes`` reads only regular files: a FIFO, a device or a directory is refused before
  any read, so ``/dev/zero`` or a pipe cannot hang or exhaust memory.
* ``staged_dir`` builds a whole folder (an export) under a hidden name beside its target and
  publishes it with one rename (or an atomic exchange with the folder it replaces): a reader
  sees the old folder or the new one, never a mix, and a kill leaves at most a hidden folder
  that the next call removes.
* ``printable`` escapes control characters, so text from a checkpoint, a vocabulary or a
  corpus cannot drive the terminal.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import io
import os
import re
import secrets
import shutil
import stat
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

Path_ = str | os.PathLike[str]
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class FileError(ValueError):
    """A file cannot be read or written as asked; the message names it and the fix."""


_TEMP = re.compile(r"\..+\.[0-9a-f]{16}\.tmp")      # .<name>.<random>.tmp: write_atomic's


def write_atomic(path: Path_, data: bytes) -> None:
    """Replace ``path`` by ``data`` atomically and durably, never through a symbolic link.

    A symbolic link at ``path`` itself is replaced by the new file (the rename acts on the
    link, not on what it points to). Raises FileError (nothing changed, no temporary file
    left) if the directory is missing or not writable or the disk is full.
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(8)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW | CLOEXEC, 0o666)
    except OSError as e:
        raise FileError(f"{target}: cannot write ({e.strerror}); check that the directory "
                        "exists and is writable") from e
    try:
        with open(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError):
            raise FileError(f"{target}: could not write ({e.strerror}); the previous file is "
                            "untouched. Check free disk space and permissions.") from e
        raise
    fsync(target.parent)


def fsync(path: Path_) -> None:
    """Flush a file or a directory (a rename in it) to disk (it writes nothing). Where the
    OS refuses (some file systems) the file is still the old or the new one, so carry on."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_figure(path: Path_, fig: Any) -> None:
    """A matplotlib figure as PNG, written atomically; the figure is closed."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=110)
    finally:
        plt.close(fig)
    write_atomic(path, buf.getvalue())


def remove_temp_files(directory: Path_) -> list[Path]:
    """Remove the temporary files a killed ``write_atomic`` left in ``directory``. Only call
    this while no other process writes there (the run directory's lock holder)."""
    d = Path(directory)
    removed = []
    with contextlib.suppress(OSError):
        for p in sorted(d.iterdir()):
            if _TEMP.fullmatch(p.name) and not p.is_dir():
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                    removed.append(p)
    return removed


_STAGED = re.compile(r"\.(.+)\.[0-9a-f]{16}\.(tmp|old)")    # staged_dir's folders
_RENAME_EXCHANGE = 2


@contextlib.contextmanager
def staged_dir(target: Path_, *, replaceable: Callable[[Path], bool]) -> Iterator[Path]:
    """Build a folder, then publish it as ``target`` in one step::

        with staged_dir(out, replaceable=is_export) as tmp:
            write_atomic(tmp / "config.json", ...)          # every file of the folder

    The folder is made beside ``target`` under a hidden, locked name. When the block ends
    without an exception it becomes ``target``: by a rename where ``target`` is missing or an
    empty folder, by an atomic exchange (Linux ``renameat2``) where ``target`` is a folder that
    ``replaceable`` accepts, and the old contents are then removed. On an exception the
    staged folder is removed and ``target`` is untouched. A symbolic link, a file, or a
    folder that ``replaceable`` refuses at ``target`` is a FileError before anything is
    written; ``target``'s parent must exist. Folders left by killed calls (no live process
    holds their lock) are removed first.
    """
    target = Path(target)
    parent = target.parent
    _check_publishable(target, replaceable)
    if not parent.is_dir():
        raise FileError(f"{target}: its parent folder {parent} does not exist; create it first")
    stage = parent / f".{target.name}.{secrets.token_hex(8)}.tmp"
    try:
        with _locked(parent):        # no other call is between its mkdir and its flock now
            _remove_stale(parent, target.name)
            os.mkdir(stage, 0o777)
            fd = os.open(stage, os.O_RDONLY | os.O_DIRECTORY | NOFOLLOW | CLOEXEC)
            fcntl.flock(fd, fcntl.LOCK_EX)            # in use while this call lives
    except OSError as e:
        raise FileError(f"{target}: cannot create a folder beside it ({e.strerror}); check "
                        "that its parent folder is writable") from e
    try:
        yield stage
        os.fsync(fd)
        _publish(stage, target, replaceable)
    except BaseException as e:
        with contextlib.suppress(OSError):
            shutil.rmtree(stage)
        if isinstance(e, OSError) and not isinstance(e, FileError):
            raise FileError(f"{target}: could not write ({e.strerror}); it is as it was "
                            "before. Check free disk space and permissions.") from e
        raise
    finally:
        os.close(fd)


def _check_publishable(target: Path, replaceable: Callable[[Path], bool]) -> None:
    if target.is_symlink():
        raise FileError(f"{target}: is a symbolic link; rnnkit never writes through a link. "
                        "Give the path of a real folder")
    if target.exists():
        if not target.is_dir():
            raise FileError(f"{target}: exists and is not a folder; choose another name")
        if any(target.iterdir()) and not replaceable(target):
            raise FileError(f"{target}: a folder that holds other files; give a new folder "
                            "name (or an earlier export, which is replaced)")


def _publish(stage: Path, target: Path, replaceable: Callable[[Path], bool]) -> None:
    try:
        os.rename(stage, target)            # target missing or an empty folder
    except OSError as e:
        if e.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            raise
        _check_publishable(target, replaceable)   # it may have changed since we began
        if not _exchange(stage, target):
            old = target.with_name(f".{target.name}.{secrets.token_hex(8)}.old")
            os.rename(target, old)
            os.rename(stage, target)
            stage = old
        shutil.rmtree(stage, ignore_errors=True)   # now the old contents
    fsync(target.parent)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """An exclusive ``flock`` on a directory, held for a few system calls."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _remove_stale(parent: Path, name: str) -> None:
    """Remove the staged folders of ``name`` that killed calls left: those no live call holds
    the lock of (call with ``parent`` locked, so none is between its mkdir and its lock)."""
    with contextlib.suppress(OSError):
        for p in parent.iterdir():
            m = _STAGED.fullmatch(p.name)
            if not m or m.group(1) != name or p.is_symlink() or not p.is_dir():
                continue
            with contextlib.suppress(OSError):
                fd = os.open(p, os.O_RDONLY | os.O_DIRECTORY | NOFOLLOW | CLOEXEC)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    shutil.rmtree(p)
                finally:
                    os.close(fd)


def append_line(path: Path_, line: str, *, sync: bool = False) -> None:
    """Append ``line`` + newline to ``path`` as one whole record, never through a link.

    If the write fails part-way (a full disk) the file is cut back to its old length, so a
    reader never meets a torn line, and FileError says what happened.
    """
    p = Path(path)
    data = (line + "\n").encode("utf-8")
    try:            # O_NONBLOCK: a FIFO planted here must not block the open
        fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | NOFOLLOW
                     | CLOEXEC, 0o666)
    except OSError as e:
        raise FileError(_link_or(p, e, "cannot append to it")) from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileError(f"{p}: is not a regular file; remove it and try again")
        start = st.st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if sync:
                os.fsync(fd)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            raise FileError(f"{p}: could not append ({e.strerror}); the file is as it was "
                            "before. Check free disk space.") from e
    finally:
        os.close(fd)


def _link_or(p: Path, e: OSError, what: str) -> str:
    if os.path.islink(p):
        return (f"{p}: is a symbolic link; rnnkit never writes through a link. Remove it "
                "(it is not part of a run) and try again")
    if p.exists() and not p.is_file():
        return f"{p}: is not a regular file; remove it and try again"
    return f"{p}: {what} ({e.strerror})"


def open_regular(path: Path_, what: str = "file", *, follow: bool = True) -> int:
    """A read descriptor on ``path`` if it is a regular file; anything else (missing, a
    directory, a FIFO, a device; with ``follow=False`` a symbolic link) is a FileError naming
    ``what`` before a byte is read."""
    p = Path(path)
    try:  # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat then refuses it
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | CLOEXEC | (0 if follow else NOFOLLOW))
    except FileNotFoundError:
        raise FileError(f"{p}: no such file; check the path of the {what}") from None
    except OSError as e:
        if not follow and os.path.islink(p):
            raise FileError(f"{p}: is a symbolic link; the {what} is read only as a file of "
                            "its own") from None
        raise FileError(f"{p}: cannot read the {what} ({e.strerror})") from e
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO (pipe)" if stat.S_ISFIFO(
            mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "special"
        raise FileError(f"{p}: is {kind}, not a regular file; give the path of a {what}")
    os.set_blocking(fd, True)
    return fd


def read_bytes(path: Path_, what: str = "file") -> bytes:
    """The bytes of a regular file (``open_regular``)."""
    with open(open_regular(path, what), "rb") as f:
        return f.read()


_KEEP = frozenset("\n\t")


def printable(s: Any, *, keep: frozenset[str] | str = _KEEP) -> str:
    """``s`` as text with every control or format character (ANSI escapes, bidi overrides,
    C1 codes, lone surrogates) shown as a ``\\x..``/``\\u....`` escape. ``keep``: characters
    left as they are (default newline and tab; "" for one-line output)."""
    s = str(s)
    if s.isprintable() and not any(c in s for c in "\u2028\u2029"):
        return s
    return "".join(c if c in keep or (c.isprintable() and c not in "\u2028\u2029")
                   or unicodedata.category(c) == "Zs" else c.encode("unicode_escape").decode()
                   for c in s)

