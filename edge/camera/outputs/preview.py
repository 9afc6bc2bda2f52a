"""A small MJPEG preview server: the annotated frames, viewable in a browser
on another computer.

Routes: ``/`` (a page showing the stream, which says when it has stopped),
``/stream.mjpg`` (the frames as ``multipart/x-mixed-replace``, the format
browsers play as motion JPEG), ``/snapshot.jpg`` (the next frame) and
``/status.json`` (frames offered so far, whether the loop has ended). Every
other path is 404. It binds 127.0.0.1 unless told otherwise, and stops with
the camera loop.

Frames are JPEG-encoded only while someone watches (a stream or a snapshot
request is open): with no viewer, :meth:`PreviewServer.publish` counts the
frame and returns, and the loop does not draw the annotation either.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote

import cv2
import numpy as np

from happysad.edge.camera.outputs.base import FrameResult, Output
from happysad.edge.errors import HappysadError

BOUNDARY = b"happysadframe"
#: JPEG quality of the preview (OpenCV's scale 0..100; its default is 95).
JPEG_QUALITY = 80
#: Seconds without a new frame after which the page says the stream stopped.
STALL_S = 3
PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>happysad preview</title>
<style>body{margin:0;background:#111;color:#ddd;font:14px sans-serif;text-align:center}
img{max-width:100%;margin-top:8px}#state{margin-top:4px;color:#8c8}#state.stopped{color:#f77}</style></head>
<body><div>happysad camera preview</div><div id="state">connecting</div>
<img id="stream" src="/stream.mjpg" alt="camera stream">
<script>
const img = document.getElementById("stream"), state = document.getElementById("state");
const base = img.getAttribute("src");
let last = -1, still = 0, down = false;
function say(text, stopped) { state.textContent = text; state.className = stopped ? "stopped" : ""; }
function stopped(why) { down = true; img.style.opacity = 0.35; say("stream stopped: " + why, true); }
img.onerror = () => stopped("the camera is not serving frames");
async function poll() {
  let s;
  try { s = await (await fetch("/status.json" + location.search, {cache: "no-store"})).json(); }
  catch (e) { return stopped("the camera loop has ended"); }
  if (s.closed) return stopped("the camera loop has ended");
  still = s.frames === last ? still + 1 : 0; last = s.frames;
  if (still >= STALL) stopped("no new frame for " + still + " s");
  else {
    if (down) { img.src = base + (base.includes("?") ? "&" : "?") + "t=" + Date.now(); down = false; }
    img.style.opacity = 1; say("live", false);
  }
  setTimeout(poll, 1000);
}
poll();
</script></body></html>
""".replace(b"STALL", str(STALL_S).encode())


def parse_address(text: str) -> tuple[str, int]:
    """Parse ``HOST:PORT``, ``:PORT`` or ``PORT``; the host defaults to 127.0.0.1.

    Raises:
        ValueError: the port is not an integer in 0..65535.
    """
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    value = int(port)
    if not 0 <= value <= 65535:
        raise ValueError(f"port {value} is outside 0..65535")
    return host, value


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``: reachable from this machine only."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Handler(BaseHTTPRequestHandler):
    """Answers the page, the snapshot and the stream of ``server`` (a class
    attribute set by :class:`PreviewServer`)."""

    server_: PreviewServer

    def log_message(self, *args):  # keep the terminal for the loop's own output
        pass

    def _authorized(self) -> bool:
        token = self.server_.token
        if token is None:
            return True
        query = parse_qs(self.path.split("?", 1)[1] if "?" in self.path else "")
        given = (query.get("token") or [""])[0]
        header = self.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            given = header[7:]
        return hmac.compare_digest(given.encode(), token.encode())

    def do_GET(self):
        token = self.server_.token
        path = self.path.split("?", 1)[0]
        if not self._authorized():
            self._send(401, "text/plain", b"token required\n")
        elif path in ("/", "/index.html"):
            page = (
                PAGE
                if token is None
                else PAGE.replace(b'"/stream.mjpg"', f'"/stream.mjpg?token={quote(token)}"'.encode())
            )
            self._send(200, "text/html; charset=utf-8", page)
        elif path == "/snapshot.jpg":
            with self.server_.watching():
                jpeg = self.server_.wait_frame(self.server_.seq, timeout=5.0)[0]
            if jpeg is None:
                self._send(503, "text/plain", b"no frame yet\n")
            else:
                self._send(200, "image/jpeg", jpeg)
        elif path == "/status.json":
            body = json.dumps({"frames": self.server_.frames, "closed": self.server_.closed}).encode()
            self._send(200, "application/json", body)
        elif path == "/stream.mjpg":
            self._stream()
        else:
            self._send(404, "text/plain", b"not found\n")

    def _send(self, code, ctype, body):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _stream(self):
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY.decode()}")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        with self.server_.watching():
            self._send_frames()

    def _send_frames(self):
        seq = self.server_.seq  # the next frame, not one encoded for an earlier viewer
        try:
            while True:
                jpeg, seq = self.server_.wait_frame(seq, timeout=10.0)
                if jpeg is None:
                    return
                self.wfile.write(
                    b"--"
                    + BOUNDARY
                    + b"\r\nContent-Type: image/jpeg\r\n"
                    + f"Content-Length: {len(jpeg)}\r\n\r\n".encode()
                    + jpeg
                    + b"\r\n"
                )
        except (BrokenPipeError, ConnectionResetError):
            return


class PreviewServer:
    """Serve the newest published frame as MJPEG.

    Args:
        host, port: where to listen; port 0 picks a free one (see ``address``).
        token: when given, every request must carry it, as ``?token=...``
            or an ``Authorization: Bearer ...`` header (compared in constant
            time); others get 401. The page's stream link carries it.

    Raises:
        HappysadError: the address cannot be bound.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 8080, token: str | None = None):
        self.token = token
        self._cond = threading.Condition()
        self._jpeg: bytes | None = None
        self._seq = 0
        self._closed = False
        #: Open streams and snapshot requests: frames are encoded only while > 0.
        self.viewers = 0
        #: Frames offered by the loop (encoded or not).
        self.frames = 0

        handler = type("Handler", (_Handler,), {"server_": self})
        try:
            self._httpd = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise HappysadError(
                f"--serve {host}:{port}: cannot listen ({exc.strerror or exc}); pick another port"
            ) from None
        self._httpd.daemon_threads = True
        self.address = self._httpd.server_address[:2]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="preview", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """The page's URL."""
        return f"http://{self.address[0]}:{self.address[1]}/"

    @property
    def seq(self) -> int:
        """Sequence number of the newest encoded frame (0: none yet)."""
        with self._cond:
            return self._seq

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._closed

    @contextlib.contextmanager
    def watching(self):
        """Count a viewer (an open stream or snapshot request) while inside."""
        with self._cond:
            self.viewers += 1
        try:
            yield
        finally:
            with self._cond:
                self.viewers -= 1

    def publish(self, frame: np.ndarray) -> None:
        """Offer a uint8 BGR frame (H, W, 3): JPEG-encoded once, here, when a
        viewer is connected; otherwise only counted (no CPU spent on it)."""
        with self._cond:
            self.frames += 1
            if not self.viewers:
                return
        ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            return
        with self._cond:
            self._jpeg = buf.tobytes()
            self._seq += 1
            self._cond.notify_all()

    def wait_frame(self, after: int, timeout: float) -> tuple[bytes | None, int]:
        """The newest JPEG newer than sequence number ``after`` (None when closed or timed out)."""
        with self._cond:
            self._cond.wait_for(lambda: self._closed or self._seq > after, timeout)
            if self._closed or self._seq <= after:
                return None, after
            return self._jpeg, self._seq

    def close(self) -> None:
        """Stop serving; open streams end."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._httpd.shutdown()
        self._httpd.server_close()


class Preview(Output):
    """The annotated frames on the MJPEG preview page (:class:`edge.camera.outputs.preview.PreviewServer`)."""

    def __init__(self, server):
        self.server = server

    @property
    def shows_frame(self) -> bool:
        """Whether the frame must be annotated for this output: only while
        someone watches (drawing costs CPU too)."""
        return self.server.viewers > 0

    def emit(self, result: FrameResult) -> bool:
        self.server.publish(result.image)
        return False

    def close(self) -> None:
        self.server.close()
