"""Writing the camera's records into a FIFO or device (``--log``, ``--record``,
the JSON lines on a piped stdout) without a reader ever stalling the loop.

The behaviour chosen for a writer nobody reads: the loop goes on without
that output. A FIFO with no reader at the start (or whose reader went away)
is said once on stderr, and opened again at most every :data:`RETRY_S`
seconds, when a record is due; a new reader gets the output's preamble
(the CSV header) first. A full pipe is waited on at most :data:`WAIT_S`
(a slow reader paces the loop, as a file would); a reader that took
nothing in that time has the records that do not fit dropped whole, never
a part of one, and counted, as the MQTT queue does, with no more waiting
until it reads again. The counts are in the camera's summary and its
Prometheus metrics (``happysad_output_dropped``).
"""

from __future__ import annotations

import logging
import os
import select
import stat
import time

from happysad.edge.errors import HappysadError
from happysad.edge.fileio import NoReader, open_direct, write_direct

_log = logging.getLogger(__name__)

#: Least time between two tries to open a FIFO that had no reader, seconds.
RETRY_S = 2.0
#: Most time a record waits for a full pipe's reader to make room, seconds:
#: a slow reader paces the loop as a file would (a live capture keeps only
#: the newest frame meanwhile); one that took nothing in that time has the
#: records dropped without waiting until it takes one again.
WAIT_S = 0.5
#: Most time the end of a run waits for a reader to take the rest of a record begun, seconds.
FINISH_S = 0.5


class PipeWriter:
    """Whole records into a FIFO or device, through a non-blocking descriptor.

    Args:
        path: the FIFO or device; None with ``fd`` (then never reopened).
        flag: how the output is named in messages (``--log``).
        what: what a record is, for messages (``rows``).
        preamble: bytes written first on each open (a CSV header).
        fd: a descriptor already open with ``O_NONBLOCK`` (a piped stdout).
        end_on_epipe: a reader gone raises :class:`BrokenPipeError` (the
            stdout of ``camera | head``: the run ends, as it always did)
            instead of waiting for a new reader.
        clock: monotonic seconds (tests pass a fake one).

    Attributes:
        dropped: records not written (no reader, a full pipe, a write error).

    Raises:
        HappysadError: ``path`` cannot be opened for another reason than
            having no reader (permissions): the output cannot work at all.
    """

    def __init__(self, path, flag: str, what: str, preamble: bytes = b"", fd=None, end_on_epipe=False, clock=None):
        self.path, self.flag, self.what, self.preamble = path, flag, what, preamble
        self.end_on_epipe = end_on_epipe
        self.clock = clock or time.monotonic
        self.dropped = 0
        self.fd = fd
        self._pending = b""  # the rest of a record the pipe took only part of: written first
        self._pending_count = 0  # what that record counts for (0: the preamble)
        self._said: set[str] = set()
        self._next_open = 0.0
        self._stuck = False  # the reader took nothing in the last wait: no waiting until it takes a byte
        if fd is None:
            self._open()

    def _say(self, key: str, message: str) -> None:
        """One warning per kind of trouble per run: a pipe filling every few
        frames must not fill the log in its place."""
        if key not in self._said:
            self._said.add(key)
            _log.warning("%s: %s", self.flag, message)

    def _open(self) -> None:
        """Open the FIFO; with no reader, say so once and try again in :data:`RETRY_S`."""
        self._next_open = self.clock() + RETRY_S
        try:
            self.fd = open_direct(self.path)
        except NoReader:
            self._say(
                "reader",
                f"no process reads {self.path}; {self.what} are dropped (counted) until one opens it "
                f"(tried every {RETRY_S:g} s), the camera goes on",
            )
            return
        if "reader" in self._said or "gone" in self._said:
            _log.warning("%s: a reader opened %s; writing", self.flag, self.path)
        self._pending, self._pending_count, self._stuck = self.preamble, 0, False

    def write(self, record: bytes, count: int = 1) -> bool:
        """Write ``record``, or drop it and add ``count`` to :attr:`dropped`;
        waits at most :data:`WAIT_S`. True when written (or begun: its rest
        goes first next time; still cut at :meth:`close`, it is counted)."""
        if self.fd is None and self.path is not None and self.clock() >= self._next_open:
            try:
                self._open()
            except HappysadError:  # the path changed under the run (permissions): keep trying
                self.fd = None
        if self.fd is not None and self._flush_pending():
            n = self._write(record)
            if n > 0:
                self._pending, self._pending_count = record[n:], count
                return True
        self.dropped += count
        return False

    def _flush_pending(self) -> bool:
        """Write what is pending; True when nothing is left pending."""
        if self._pending:
            n = self._write(self._pending)
            if n > 0:
                self._pending = self._pending[n:]
        return not self._pending

    def _write(self, data: bytes) -> int:
        """Bytes of ``data`` written, waiting up to :data:`WAIT_S` for room
        (not while the pipe is stuck: it took nothing in the last wait);
        0 when the pipe took none, -1 on an error (said once)."""
        view, done = memoryview(data), 0
        while done < len(data):
            try:
                done += os.write(self.fd, view[done:])
                self._stuck = False
            except BlockingIOError:
                if self._stuck or not _room(self.fd, WAIT_S):
                    self._stuck = True
                    self._say("full", f"the reader took nothing for {WAIT_S:g} s; {self.what} are dropped and counted")
                    return done
            except BrokenPipeError:
                if self.end_on_epipe:
                    raise
                self._close()
                self._say("gone", f"the reader of {self.path} went away; {self.what} are dropped until one opens it")
                return -1
            except OSError as exc:
                self._say("error", f"cannot write ({exc.strerror or exc}); {self.what} are lost, the camera goes on")
                return -1
        return done

    def _close(self) -> None:
        if self.fd is not None and self.path is not None:
            os.close(self.fd)
            self.fd = None
        self._next_open = self.clock() + RETRY_S

    def close(self) -> None:
        """Finish a record begun (waiting at most :data:`FINISH_S` for the
        reader), then let go of the descriptor (the reader sees the end)."""
        if self.fd is not None and self._pending:
            try:
                write_direct(self.fd, self._pending, FINISH_S)
            except OSError:  # the reader does not read: its last record stays cut, and is counted
                self.dropped += self._pending_count
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _room(fd: int, wait_s: float) -> bool:
    """Whether the pipe behind ``fd`` has room for a write within ``wait_s`` seconds."""
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return bool(poller.poll(wait_s * 1e3))


def nonblocking_stdout(stream):
    """A :class:`PipeWriter` on ``stream``'s pipe (a FIFO or an anonymous
    pipe), through an open file description of its own with ``O_NONBLOCK``
    (Linux's ``/proc/self/fd``: stderr, often the same pipe, stays
    blocking), or None: not a pipe, or no such reopening here (the stream
    is then written as it is)."""
    try:
        fileno = stream.fileno()
        if not stat.S_ISFIFO(os.fstat(fileno).st_mode):
            return None
        stream.flush()
        fd = os.open(f"/proc/self/fd/{fileno}", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, AttributeError, ValueError):
        return None
    return PipeWriter(None, "--headless", "JSON lines", fd=fd, end_on_epipe=True)
