"""The one gate every file the tools read passes: a model, a manifest, a
split, a benchmark report, a key, a signature, a votes table.

A path is opened only after ``stat`` says it is a regular file, and then
non-blocking, with ``fstat`` checked again on the open descriptor: a FIFO
named ``model.tflite`` would block ``open`` until a writer came, and
``read`` until it closed; a device or a socket is no file to read whole
either. Each kind of file has a size cap (:data:`LIMITS`), so a file of
gigabytes under a model's name is refused before a byte is read into
memory. Errors are one line naming the path:

- missing (or a folder on the way is a file): :class:`UsageError`, exit 2,
  ``PATH: no such model file; check the path``;
- not a regular file: ``PATH: not a regular file (a FIFO); give the model
  file itself``, exit 1;
- over the cap: ``PATH: 300 MB is over the 256 MiB limit for a model file``,
  exit 1;
- any other reason the OS gives (no permission, a name too long, a symlink
  loop): ``PATH: cannot read the model file (File name too long)``, exit 1.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import BinaryIO

from happysad.edge.errors import HappysadError, UsageError


@dataclass(frozen=True)
class Kind:
    """A kind of file read: ``what`` names it in messages (``"model file"``);
    ``max_bytes`` is the largest one read."""

    what: str
    max_bytes: int


_KiB, _MiB = 1024, 1024 * 1024
#: Caps per kind, with the reason for each size.
LIMITS = {
    # The happysad models are 0.1-5 MB; 256 MiB is larger than any model a
    # Raspberry Pi-class device runs at camera rates, and bounds the copy
    # read into memory for the signature check and the interpreter.
    "model": Kind("model file", 256 * _MiB),
    # An export's manifest lists four or five files in about 2 kB.
    "manifest": Kind("manifest", 1 * _MiB),
    # The demo run's split.json (12,000 FER+ faces with votes, indented) is
    # 9 MB; 64 MiB holds seven times that, and parses in well under 1 GB.
    "split": Kind("split file", 64 * _MiB),
    # A --json report of happysad-bench keeps every timed run: 1.1 MB for
    # the demo's five models; 64 MiB holds sixty such reports' worth.
    "report": Kind("benchmark report", 64 * _MiB),
    # metrics.json of a training run: its history and figures, tens of kB.
    "metrics": Kind("metrics file", 16 * _MiB),
    # A PEM Ed25519 key is under 200 bytes, a signature file 89 bytes.
    "public key": Kind("public key", 16 * _KiB),
    "private key": Kind("private key", 16 * _KiB),
    "signature": Kind("signature", 16 * _KiB),
    # A --serve-token @FILE holds one line.
    "token": Kind("token file", 16 * _KiB),
    # The FER+ votes table for 35,887 faces is about 2 MB of TSV.
    "votes": Kind("votes table", 64 * _MiB),
}

#: What a file that is not a regular one is, by its ``st_mode``.
_FILE_TYPES = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a folder"),
)


def shown(path: str | os.PathLike) -> str:
    """``path`` as a one-line message may print it: control characters
    and bytes that are not UTF-8 escaped (``\\n``, ``\\xff``)."""
    text = os.fsencode(os.fspath(path)).decode("utf-8", "backslashreplace")
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def file_type(mode: int) -> str:
    """``"a FIFO"``, ``"a socket"``, ``"a folder"``... for an ``st_mode`` that is not a regular file's."""
    return next((name for test, name in _FILE_TYPES if test(mode)), "not a file")


def _kind(kind: str | Kind) -> Kind:
    return kind if isinstance(kind, Kind) else LIMITS[kind]


def _size(n: int) -> str:
    return f"{n / 1e6:.0f} MB" if n >= 1_000_000 else f"{n} bytes"


def _cap(n: int) -> str:
    return f"{n // _MiB} MiB" if n % _MiB == 0 else f"{n // _KiB} KiB"


def _refuse(path, st: os.stat_result, k: Kind) -> None:
    """Raise when ``st`` is not a regular file of at most ``k.max_bytes``."""
    if not stat.S_ISREG(st.st_mode):
        raise HappysadError(f"{shown(path)}: not a regular file ({file_type(st.st_mode)}); give the {k.what} itself")
    if st.st_size > k.max_bytes:
        raise HappysadError(f"{shown(path)}: {_size(st.st_size)} is over the {_cap(k.max_bytes)} limit for a {k.what}")


def _os_error(path, exc: OSError | ValueError, k: Kind) -> HappysadError:
    """The one-line error for an ``OSError`` (or a ``ValueError``: a NUL in the name) of stat or open."""
    if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
        return UsageError(f"{shown(path)}: no such {k.what}; check the path")
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return HappysadError(f"{shown(path)}: cannot read the {k.what} ({reason})")


def check_regular(path: str | os.PathLike, kind: str | Kind) -> int:
    """Check, without opening it, that ``path`` is a regular file within its kind's cap.

    Args:
        kind: a key of :data:`LIMITS` (``"model"``, ``"manifest"``...) or a :class:`Kind`.

    Returns:
        the file's size in bytes.

    Raises:
        UsageError: no such file (exit status 2).
        HappysadError: not a regular file, over the cap, or not readable.
    """
    k = _kind(kind)
    try:
        st = os.stat(path)
    except (OSError, ValueError) as exc:
        raise _os_error(path, exc, k) from None
    _refuse(path, st, k)
    return st.st_size


def open_regular(path: str | os.PathLike, kind: str | Kind) -> BinaryIO:
    """Open a file for reading only if it is a regular file within its kind's cap.

    Checked with ``stat`` before the open and ``fstat`` after it (the open
    is non-blocking, so a FIFO put in its place meanwhile is refused too,
    not waited on).

    Returns:
        the file, open for binary reading (close it, or use ``with``).

    Raises:
        UsageError, HappysadError: as :func:`check_regular`.
    """
    k = _kind(kind)
    check_regular(path, k)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except (OSError, ValueError) as exc:
        raise _os_error(path, exc, k) from None
    fh = os.fdopen(fd, "rb")
    try:
        _refuse(path, os.fstat(fd), k)
    except BaseException:
        fh.close()
        raise
    return fh


def read_regular(path: str | os.PathLike, kind: str | Kind) -> bytes:
    """The whole of a regular file of at most its kind's cap (:func:`open_regular`).

    Returns:
        the file's bytes (possibly empty).

    Raises:
        UsageError: no such file (exit status 2).
        HappysadError: not a regular file, over the cap (also when it grew
            past it while being read), or not readable.
    """
    k = _kind(kind)
    with open_regular(path, k) as fh:
        try:
            data = fh.read(k.max_bytes + 1)
        except OSError as exc:
            raise HappysadError(f"{shown(path)}: cannot read the {k.what} ({exc.strerror or exc})") from None
    if len(data) > k.max_bytes:
        raise HappysadError(f"{shown(path)}: over the {_cap(k.max_bytes)} limit for a {k.what}")
    return data
