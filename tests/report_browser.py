"""Open a report the way a reader does: headless Chromium over the DevTools protocol, the network off; read back the DOM and the pixels."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import time
import urllib.request
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--remote-debugging-port=0",
)
# The first screen a reader sees on a laptop; the top of the page the half-scale screenshot keeps.
SCREEN = (1280, 900)
TOP_PX = 2400


# --- a minimal DevTools-protocol client: a WebSocket over a plain socket, JSON messages ---------------------------


class _WebSocket:
    """Just enough of RFC 6455 to talk to Chromium's DevTools endpoint (text frames, no extensions)."""

    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        parts = urlparse(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout_s)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {parts.path} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        self.buf = bytearray()
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, rest = bytes(self.buf).partition(b"\r\n\r\n")
        assert b" 101 " in head.split(b"\r\n")[0], head
        self.buf = bytearray(rest)

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise EOFError("DevTools closed the connection")
        self.buf += chunk

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def send(self, text: str) -> None:
        payload = text.encode()
        n = len(payload)
        header = bytearray([0x81])
        if n < 126:
            header.append(0x80 | n)
        elif n < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes(header) + mask + masked)

    def recv(self) -> str:
        message = b""
        while True:
            b0, b1 = self._take(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._take(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._take(8))[0]
            data = self._take(n)
            opcode = b0 & 0x0F
            if opcode == 0x8:
                raise EOFError("DevTools closed the connection")
            if opcode in (0x9, 0xA):
                continue
            message += data
            if b0 & 0x80:
                return message.decode()


class _DevTools:
    """Calls DevTools methods and keeps every event that arrives meanwhile."""

    def __init__(self, ws: _WebSocket) -> None:
        self.ws, self.next_id, self.events = ws, 0, []
        self.drawn = False

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                assert "error" not in msg, f"{method}: {msg['error']}"
                return msg["result"]
            self.events.append(msg)

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.evaluate(expression):
                return True
            time.sleep(0.2)
        return False


def _devtools_url(log: Path, proc: subprocess.Popen, timeout_s: float = 30.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if "DevTools listening on ws://" in line:
                port = urlparse(line.split("listening on ", 1)[1].strip()).port
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as resp:
                    pages = [t for t in json.load(resp) if t.get("type") == "page"]
                return pages[0]["webSocketDebuggerUrl"]
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError(f"Chromium did not open DevTools: {log.read_text(errors='replace')[-2000:]}")


@contextmanager
def offline_page(html: Path, work: Path, width: int = SCREEN[0], height: int = SCREEN[1]) -> Iterator[_DevTools]:
    """``html`` loaded in headless Chromium with the network emulated off, in a ``width`` × ``height`` window, its plots drawn."""
    log = work / "chromium.log"
    profile = work / "chromium-profile"
    # Chromium keeps its crash reports and dconf settings under the home folder whatever --user-data-dir says:
    # give it one in ``work``, so it never writes to the user's, nor shares one with a browser another test opened.
    home = work / "chromium-home"
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "XDG_CACHE_HOME": str(home / ".cache")}
    assert CHROMIUM is not None
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"], stdout=subprocess.DEVNULL, stderr=err, env=env
        )
    try:
        tools = _DevTools(_WebSocket(_devtools_url(log, proc)))
        for domain in ("Runtime", "Log", "Network", "Page"):
            tools.call(f"{domain}.enable")
        tools.call("Network.emulateNetworkConditions", offline=True, latency=0, downloadThroughput=-1, uploadThroughput=-1)
        tools.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        tools.call("Page.navigate", url=html.resolve().as_uri())
        assert tools.wait_for("document.readyState === 'complete'", 30), "the report did not finish loading"
        tools.drawn = tools.wait_for(
            "document.querySelectorAll('div.plot').length > 0 && "
            "[...document.querySelectorAll('div.plot')].every(d => d.querySelector('svg.main-svg'))",
            30,
        )
        yield tools
        tools.call("Browser.close")
    finally:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def screenshot(tools: _DevTools, x: int, y: int, width: int, height: int, scale: float = 1.0) -> bytes:
    """A PNG of that rectangle of the page (page coordinates, below the window too)."""
    clip = {"x": x, "y": y, "width": width, "height": height, "scale": scale}
    return base64.b64decode(tools.call("Page.captureScreenshot", format="png", captureBeyondViewport=True, clip=clip)["data"])


# Where the blocks a reader looks for first sit on the page (document coordinates, px), and what each plot's legend holds.
_LAYOUT = """JSON.stringify({
    rects: Object.fromEntries([
        ['decision', '#decision'], ['pick', '#decision .decision-card'], ['pick_table', '#decision table.decision'],
        ['pick_plot', '#decision .decision-card .plot svg.main-svg'], ['verdicts', '#decision table.verdicts'],
        ['toc', '#toc'], ['heatmap', '#accuracy .plot'],
    ].map(([k, q]) => {
        const el = document.querySelector(q);
        if (!el) return [k, null];
        const r = el.getBoundingClientRect();
        return [k, {top: r.top + scrollY, left: r.left + scrollX, width: r.width, height: r.height}];
    })),
    legends: Object.fromEntries([...document.querySelectorAll('div.plot')].map(d => [d.id, {
        entries: d.querySelectorAll('g.legend g.traces').length,
        closed: !!d.closest('details:not([open])'),
        section: (d.closest('section') || {}).id,
    }])),
})"""


def open_offline(html: Path, work: Path) -> dict:
    """Open ``html`` in headless Chromium with the network emulated off; return what a user would see.

    Keys: console errors (exceptions, console.error, failed loads, error log entries), every URL the page
    requested, the DOM facts the tests check, where the decision blocks sit (``rects``), each plot's legend
    (``legends``), a PNG of the first screen (``first_screen``, ``SCREEN``) and one of the top of the page
    at half scale (``png``).
    """
    with offline_page(html, work) as tools:
        facts = tools.evaluate("""JSON.stringify({
            sections: [...document.querySelectorAll('main section')].map(s => s.id),
            absent: Object.fromEntries([...document.querySelectorAll('main section')].map(s => [s.id, !!s.querySelector('.absent')])),
            plots: document.querySelectorAll('div.plot').length,
            plotly_plots: document.querySelectorAll('.js-plotly-plot').length,
            svgs: document.querySelectorAll('div.plot svg.main-svg').length,
            banner: (document.getElementById('verdict-banner') || {}).textContent || '',
            simulated_badges: document.querySelectorAll('.badge.b-simulated').length,
            text: document.body.innerText,
            scripts_with_src: document.querySelectorAll('script[src], link[href]').length,
        })""")
        layout = tools.evaluate(_LAYOUT)
        first_screen = base64.b64decode(tools.call("Page.captureScreenshot", format="png")["data"])
        png = screenshot(tools, 0, 0, SCREEN[0], TOP_PX, scale=0.5)
        drawn = tools.drawn
    errors = []
    requests = []
    for event in tools.events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            errors.append(params["exceptionDetails"].get("exception", {}).get("description") or params["exceptionDetails"].get("text"))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            errors.append(params["entry"].get("text"))
        elif method == "Network.loadingFailed":
            errors.append(f"load failed: {params.get('errorText')}")
        elif method == "Network.requestWillBeSent":
            requests.append(params["request"]["url"])
    return {
        "errors": errors,
        "requests": requests,
        "drawn": drawn,
        "png": png,
        "first_screen": first_screen,
        **json.loads(facts),
        **json.loads(layout),
    }


# --- a small PNG reader (8-bit RGB/RGBA, the kind Chromium writes) --------------------------------------------------


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def decode_png(data: bytes) -> tuple[int, int, int, list[bytes]]:
    """(width, height, bytes per pixel, rows of raw pixel bytes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, bytearray(), None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour_type, _, _, interlace = header
    assert depth == 8 and colour_type in (2, 6) and interlace == 0, header
    bpp = 3 if colour_type == 2 else 4
    raw, stride = zlib.decompress(bytes(idat)), width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, row = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 1:
            for i in range(bpp, stride):
                row[i] = (row[i] + row[i - bpp]) & 0xFF
        elif kind == 2:
            row = bytearray((a + b) & 0xFF for a, b in zip(row, prev))
        elif kind == 3:
            for i in range(stride):
                row[i] = (row[i] + ((row[i - bpp] if i >= bpp else 0) + prev[i]) // 2) & 0xFF
        elif kind == 4:
            for i in range(stride):
                left, up_left = (row[i - bpp], prev[i - bpp]) if i >= bpp else (0, 0)
                row[i] = (row[i] + _paeth(left, prev[i], up_left)) & 0xFF
        rows.append(bytes(row))
        prev = row
    return width, height, bpp, rows


@lru_cache(maxsize=4)
def rgb_array(png: bytes) -> np.ndarray:
    """The image as a height × width × RGB array, decoded once however many checks look at it."""
    width, height, bpp, rows = decode_png(png)
    return np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(height, width, bpp)[:, :, :3]


def colour_stats(png: bytes) -> tuple[int, float]:
    """(distinct colours, fraction of pixels that are not near-white)."""
    pixels = rgb_array(png).reshape(-1, 3).astype(np.uint32)
    colours = np.unique(pixels[:, 0] << 16 | pixels[:, 1] << 8 | pixels[:, 2]).size
    return int(colours), float((pixels.min(axis=1) < 240).mean())


def _region(png: bytes, rect: dict) -> np.ndarray:
    """The RGB pixels of ``rect`` (page coordinates of the first screen, clipped to the image), one row per pixel."""
    image = rgb_array(png)
    height, width = image.shape[:2]
    x0, y0 = max(0, int(rect["left"])), max(0, int(rect["top"]))
    x1, y1 = min(width, int(rect["left"] + rect["width"])), min(height, int(rect["top"] + rect["height"]))
    return image[y0:y1, x0:x1].reshape(-1, 3).astype(np.int16)


def ink_share(png: bytes, rect: dict) -> float:
    """Fraction of the pixels in ``rect`` that are not near-white: a block drawn empty reads about 0."""
    pixels = _region(png, rect)
    return float((pixels.min(axis=1) < 240).mean()) if len(pixels) else 0.0


def colour_count(png: bytes, rgb: tuple[int, int, int], rect: dict, tolerance: int = 6) -> int:
    """How many pixels in ``rect`` are within ``tolerance`` of ``rgb`` on every channel."""
    return int((np.abs(_region(png, rect) - np.array(rgb, dtype=np.int16)) <= tolerance).all(axis=1).sum())
