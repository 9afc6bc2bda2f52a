"""The MJPEG preview is a page people open in a browser: opened in headless
Chromium (Debian's ``chromium``, which .ci/run installs), driven over the
DevTools protocol. Skipped where Chromium is absent."""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import threading
import urllib.parse
import urllib.request

import cv2
import numpy as np
import pytest

from happysad.edge.camera.outputs.preview import STALL_S, PreviewServer

from helpers import wait_until

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
TOKEN = "s3cret token/+"


class Browser:
    """One headless Chromium page, driven over the DevTools protocol."""

    def __init__(self, profile):
        from websockets.sync.client import connect

        self.proc = subprocess.Popen(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--remote-debugging-port=0",
                "--window-size=480,400",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = profile / "DevToolsActivePort"
        wait_until(lambda: port_file.is_file() and port_file.read_text().count("\n") >= 1, 60, "Chromium to start")
        port = int(port_file.read_text().split()[0])
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
        page = next(t for t in targets if t["type"] == "page")
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=30)
        self.ids = itertools.count(1)

    def call(self, method: str, **params) -> dict:
        n = next(self.ids)
        self.ws.send(json.dumps({"id": n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == n:
                assert "error" not in msg, msg
                return msg["result"]

    def js(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def shot(self, rect: dict) -> np.ndarray:
        """The page's pixels inside ``rect`` (CSS pixels), BGR uint8."""
        clip = {**{k: rect[k] for k in ("x", "y", "width", "height")}, "scale": 1}
        png = base64.b64decode(self.call("Page.captureScreenshot", format="png", clip=clip)["data"])
        return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)

    def close(self):
        self.ws.close()
        self.proc.terminate()
        self.proc.wait(timeout=30)


class Camera:
    """Frames offered to the server the way the camera loop offers them:
    a bright square that moves every frame, about 15 a second."""

    def __init__(self, server: PreviewServer):
        self.server, self.running, self.n = server, threading.Event(), 0
        self.running.set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.wait(1 / 15):
            if self.running.is_set():
                frame = np.full((120, 160, 3), 60, np.uint8)
                x = (self.n * 7) % 120
                cv2.rectangle(frame, (x, 30), (x + 40, 90), (255, 255, 255), cv2.FILLED)
                self.server.publish(frame)
                self.n += 1


def state(browser) -> str:
    """What the page says about the stream."""
    return browser.js("document.getElementById('state').textContent")


@pytest.fixture
def browser(tmp_path):
    b = Browser(tmp_path / "profile")
    yield b
    b.close()


def test_the_page_shows_live_frames_then_says_when_the_stream_stopped(browser):
    server = PreviewServer("127.0.0.1", 0, token=TOKEN)
    camera = Camera(server)
    try:
        # No viewer yet: frames are counted, not encoded.
        wait_until(lambda: server.frames > 5, 30, "frames to be offered")
        assert server.seq == 0

        query = urllib.parse.urlencode({"token": TOKEN})
        browser.call("Page.enable")
        browser.call("Page.navigate", url=f"{server.url}?{query}")
        wait_until(
            lambda: browser.js("document.getElementById('state').textContent") == "live", 30, "the page to go live"
        )
        rect = wait_until(
            lambda: browser.js(
                "(() => { const i = document.getElementById('stream'); const r = i.getBoundingClientRect();"
                " return i.naturalWidth ? {x: r.x, y: r.y, width: r.width, height: r.height} : null; })()"
            ),
            30,
            "the stream to show a frame",
        )
        assert (rect["width"], rect["height"]) == (160, 120)
        first = browser.shot(rect)
        assert first.std() > 20, "the image area is blank"

        def changed():
            shot = browser.shot(rect)
            return [shot] if np.abs(shot.astype(int) - first).mean() > 2 else None

        (second,) = wait_until(changed, 30, "the picture to change")
        assert second.std() > 20
        assert server.viewers >= 1 and server.seq > 0  # encoded while watched

        camera.running.clear()  # the camera stalls
        wait_until(
            lambda: "stream stopped: no new frame" in state(browser), 30 + STALL_S, "the page to say the stream stalled"
        )
        camera.running.set()  # and comes back
        wait_until(lambda: state(browser) == "live", 30, "live again")
    finally:
        camera.stop.set()
        camera.thread.join()
        server.close()
    wait_until(
        lambda: (
            browser.js("document.getElementById('state').textContent") == "stream stopped: the camera loop has ended"
        ),
        30,
        "the page to say the loop ended",
    )


def test_the_page_without_its_token_is_refused(browser):
    server = PreviewServer("127.0.0.1", 0, token=TOKEN)
    try:
        browser.call("Page.enable")
        browser.call("Page.navigate", url=server.url)
        wait_until(lambda: browser.js("document.body && document.body.innerText") == "token required\n", 30, "401")
        assert server.viewers == 0
    finally:
        server.close()
