"""Atomic file writes: write to a temporary name in the same folder, then
rename, so an interrupted run never leaves a half-written file under a final
name and never destroys the previous good one.

The one output gate: a path that is a symlink is followed and its target
replaced (the link stays); a FIFO, a character device or a socket is
written directly, never replaced, since the program reading it would be cut
off and the user's pipe destroyed. Written directly, it is opened with
``O_NONBLOCK`` (:func:`open_direct`): a FIFO that no process reads within
:data:`DIRECT_STALL_S` seconds is one line (:class:`NoReader`), never an
open that waits for a reader forever, and a reader that takes no byte for
that long ends the write with one line (:func:`write_direct`). (The camera's
outputs wait for nothing: :mod:`edge.camera.outputs.pipe`.)
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import stat
from pathlib import Path

from happysad.edge.errors import HappysadError
from happysad.edge.reading import open_regular, shown


def output_target(path: str | os.PathLike) -> tuple[Path, bool]:
    """Where an output really goes: (path to write, whether to write it directly).

    A symlink resolves to its target (which is then replaced atomically, the
    link kept); an existing FIFO, character or block device, or socket is
    written directly (True); anything else, a regular file or a new path,
    is replaced through a temporary name (False).
    """
    path = Path(path)
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    try:
        mode = os.stat(target).st_mode
    except OSError:
        return target, False
    return target, not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


#: How long a direct write (:func:`write_direct`) waits for its reader to
#: take more bytes before it gives up, seconds.
DIRECT_STALL_S = 5.0


class NoReader(HappysadError):
    """A FIFO that no process has open for reading (or a socket, which
    cannot be opened as a file): writing to it would wait forever."""


def open_direct(path: str | os.PathLike, wait_s: float = 0.0) -> int:
    """A raw write descriptor on a FIFO or device, opened with ``O_NONBLOCK``
    (and kept so: its writes never block either); a FIFO with no reader is
    tried again every 50 ms for up to ``wait_s`` seconds (a reader started
    beside the writer, as in ``tool --json FIFO & cat FIFO``).

    Raises:
        NoReader: a FIFO no process reads (or a socket); the message names the path.
        HappysadError: any other failure to open (permissions, a vanished path).
    """
    import time

    deadline = time.monotonic() + wait_s
    while True:
        try:
            return os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise HappysadError(f"{path}: cannot open for writing ({exc.strerror or exc})") from None
        if time.monotonic() >= deadline:
            raise NoReader(f"{path}: no process reads this FIFO (or it is a socket); start its reader first")
        time.sleep(0.05)


def write_direct(fd: int, data: bytes, stall_s: float = DIRECT_STALL_S) -> None:
    """Write all of ``data`` to a non-blocking ``fd`` (:func:`open_direct`),
    waiting at most ``stall_s`` seconds at a time for the reader to make room.

    Raises:
        TimeoutError: the reader took no byte for ``stall_s`` seconds.
        OSError: the write failed (EPIPE: the reader went away; ENOSPC).
    """
    view = memoryview(data)
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            if not poller.poll(stall_s * 1e3):
                raise TimeoutError(errno.ETIMEDOUT, f"the reader took no byte for {stall_s:g} s") from None


def report_path(path: str | os.PathLike) -> str:
    """``path`` as a report written for others shows it, never a machine's
    absolute path: as given when relative, relative to the working folder
    when inside it, else its last two parts (``demo/split.json``)."""
    path = Path(path)
    if not path.is_absolute():
        return path.as_posix()
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return Path(*path.parts[-2:]).as_posix()


def temp_name(path: Path) -> Path:
    """The temporary name next to ``path`` that :func:`atomic_path` writes
    first: hidden, with the process id, keeping the suffix (some writers,
    such as Keras and OpenCV's VideoWriter, pick the format from it)."""
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path next to ``path``; rename it to ``path`` on success.

    The temporary name keeps the suffix (some writers, such as Keras, pick
    the format from it). On an exception the temporary file is removed and
    ``path`` is left as it was. Through :func:`output_target`: a symlink's
    target is replaced, and a FIFO or device is yielded as it is, to be
    written directly, once :func:`open_direct` found a reader (waiting up
    to :data:`DIRECT_STALL_S` s; its descriptor held open meanwhile, so the
    reader sees no end of file before the caller's own open).

    Raises:
        NoReader: a FIFO no process reads within :data:`DIRECT_STALL_S` s.
        HappysadError: the folder cannot be created or written (read-only,
            full disk); the message names the path.
    """
    path, direct = output_target(path)
    if direct:
        probe = open_direct(path, DIRECT_STALL_S)
        try:
            yield path
        except OSError as exc:
            raise HappysadError(f"{path}: cannot write ({exc.strerror or exc})") from None
        finally:
            os.close(probe)
        return
    tmp = temp_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        raise HappysadError(f"{path}: cannot write ({exc.strerror or exc}); check free space and permissions") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename into it) to disk, so that after a
    power loss the new name is there; a file system that cannot sync a
    folder is let be."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def copy_file(src: str | os.PathLike, dest: str | os.PathLike, kind: str = "model") -> None:
    """Copy ``src`` to ``dest`` atomically and durably: written under a
    temporary name in 1 MiB blocks, fsync'd, renamed over ``dest``, the
    folder fsync'd (:func:`atomic_path`). ``src`` is opened through the
    read gate (:func:`edge.reading.open_regular` with ``kind``'s size cap):
    a FIFO swapped in is refused, never waited on.

    Raises:
        UsageError: ``src`` does not exist.
        HappysadError: ``src`` is not a regular file, is over the cap or
            cannot be read; ``dest`` cannot be written.
    """
    import shutil

    with open_regular(src, kind) as fin, atomic_path(dest) as tmp, open(tmp, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
        fout.flush()
        os.fsync(fout.fileno())


def write_bytes(path: str | os.PathLike, data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`);
    ``mode``: the file's permission bits, set before any byte is written
    (0o600 for a private key). A FIFO or device is written directly and
    never waits long (:func:`open_direct`, :func:`write_direct`); ``mode``
    leaves it as it is.

    Raises:
        NoReader: a FIFO no process reads within :data:`DIRECT_STALL_S` s.
        HappysadError: the file cannot be written, or a FIFO's reader took
            no byte for :data:`DIRECT_STALL_S` seconds (what it took stays taken).
    """
    target, direct = output_target(path)
    if direct:
        fd = open_direct(target, DIRECT_STALL_S)
        try:
            write_direct(fd, data)
        except OSError as exc:
            raise HappysadError(f"{target}: cannot write ({exc.strerror or exc})") from None
        finally:
            os.close(fd)
        return
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            if mode is not None:
                os.fchmod(fh.fileno(), mode)
            fh.write(data)
            fh.flush()
            if stat.S_ISREG(os.fstat(fh.fileno()).st_mode):  # a pipe or device cannot be synced
                os.fsync(fh.fileno())


def write_json(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as indented UTF-8 JSON to ``path`` atomically."""
    write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def file_digest(path: str | os.PathLike, kind: str = "model") -> tuple[int, str]:
    """(size in bytes, sha256 hex) of a file, read in 1 MiB blocks through
    the regular-file gate (:func:`edge.reading.open_regular`: a FIFO, a
    device or a folder is refused, never waited on).

    Args:
        kind: the file's kind in :data:`edge.reading.LIMITS`, for its size cap and messages.

    Raises:
        UsageError: the file is missing (exit status 2).
        HappysadError: not a regular file, over the kind's cap, or unreadable.
    """
    import hashlib  # here, not at import: OpenSSL's libcrypto adds 4 MB to every edge process

    h = hashlib.sha256()
    size = 0
    with open_regular(path, kind) as fh:
        try:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
                size += len(block)
        except OSError as exc:
            raise HappysadError(f"{shown(path)}: cannot read ({exc.strerror or exc})") from None
    return size, h.hexdigest()
