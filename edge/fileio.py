"""Atomic file writes: write to a temporary name in the same folder, then
rename, so an interrupted run never leaves a half-written file under a final
name and never destroys the previous good one.

The one output gate: a path that is a symlink is followed and its target
replaced (the link stays); a FIFO, a character device or a socket is
written directly, never replaced, since the program reading it would be cut
off and the user's pipe destroyed.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from pathlib import Path

from happysad.edge.errors import HappysadError, UsageError


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
    written directly.

    Raises:
        HappysadError: the folder cannot be created or written (read-only,
            full disk); the message names the path.
    """
    path, direct = output_target(path)
    if direct:
        try:
            yield path
        except OSError as exc:
            raise HappysadError(f"{path}: cannot write ({exc.strerror or exc})") from None
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


def copy_file(src: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Copy ``src`` to ``dest`` atomically and durably: written under a
    temporary name in 1 MiB blocks, fsync'd, renamed over ``dest``, the
    folder fsync'd (:func:`atomic_path`).

    Raises:
        OSError: ``src`` cannot be read.
        HappysadError: ``dest`` cannot be written.
    """
    import shutil

    with open(src, "rb") as fin, atomic_path(dest) as tmp, open(tmp, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
        fout.flush()
        os.fsync(fout.fileno())


def write_bytes(path: str | os.PathLike, data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`);
    ``mode``: the file's permission bits, set before any byte is written
    (0o600 for a private key)."""
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


def read_json(path: str | os.PathLike, what: str = "file") -> dict:
    """Read a JSON object, with a one-line error when it is missing or broken.

    Raises:
        HappysadError: missing, unreadable, not JSON or not an object.
    """
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"{path}: no such {what}; check the path") from None
    except OSError as exc:
        raise HappysadError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    except (ValueError, UnicodeDecodeError):
        raise HappysadError(f"{path}: {what} is not valid JSON") from None
    if not isinstance(obj, dict):
        raise HappysadError(f"{path}: {what} is not a JSON object")
    return obj


def file_digest(path: Path) -> tuple[int, str]:
    """(size in bytes, sha256 hex) of a file, read in 1 MiB blocks.

    Raises:
        HappysadError: the file is missing or unreadable.
    """
    import hashlib  # here, not at import: OpenSSL's libcrypto adds 4 MB to every edge process

    h = hashlib.sha256()
    size = 0
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
                size += len(block)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such model file; check the path") from None
    except OSError as exc:
        raise HappysadError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return size, h.hexdigest()
