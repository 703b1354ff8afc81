"""HTML report: built by the CLI from a folder of real runs, opened in headless Chromium with the network off."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.request
import zlib
from pathlib import Path
from urllib.parse import urlparse

import pytest
from typer.testing import CliRunner

from conftest import DIGITS_CONTRACT, run_cli
from edgeproof.cli import app
from edgeproof.errors import RecordError
from edgeproof.report import build_report, collect

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SECTION_IDS = ("verdicts", "latency", "pareto", "accuracy", "placement", "thermal", "gate", "bom", "change-record", "sources")
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
WINDOW = (1400, 2400)


def _parallel(home: Path, *commands: tuple[tuple[str, ...], tuple[int, ...]]) -> None:
    """Run CLI commands side by side (they do not depend on each other); each must exit with one of its codes."""
    env = {**os.environ, "EDGEPROOF_HOME": str(home)}
    procs = [
        (
            args,
            ok,
            subprocess.Popen(
                [sys.executable, "-m", "edgeproof.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
            ),
        )
        for args, ok in commands
    ]
    for args, ok, proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode in ok, f"edgeproof {' '.join(args)} exited {proc.returncode}: {err[-2000:]}"


# The test contract: fp32 only (optimize then builds one variant, not seven) and latency budgets roomy enough that a
# busy shared host does not make the gate refuse its own baseline; timings are not what this file tests.
_TEST_CONTRACT_LINES = {"precisions =": 'precisions = ["fp32"]', "p95_ms =": 'p95_ms = "50 ms"', "p99_ms =": 'p99_ms = "100 ms"'}


def _test_contract(folder: Path) -> Path:
    """A copy of the digits contract with its model and data beside it, changed as ``_TEST_CONTRACT_LINES`` says."""
    folder.mkdir(parents=True)
    for name in ("model.onnx", "dataset.py"):
        shutil.copy(DIGITS_CONTRACT.parent / name, folder / name)
    lines = DIGITS_CONTRACT.read_text().splitlines()
    for prefix, line in _TEST_CONTRACT_LINES.items():
        hits = [i for i, text in enumerate(lines) if text.startswith(prefix)]
        assert len(hits) == 1, f"the digits contract no longer has one line starting {prefix!r}"
        lines[hits[0]] = line
    path = folder / "edgeproof.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A folder like `make demo` leaves: profile, check, optimize, simulate (with a soak), gate, BOMs, signature, change record."""
    work = tmp_path_factory.mktemp("report")
    out, home, keys = work / "out", work / "home", work / "keys"
    contract = _test_contract(work / "contract")
    model, toml = str(contract.parent / "model.onnx"), str(contract)
    quick = ("--sessions", "2", "--samples", "60", "--time-budget", "5")
    # check, optimize and gate exit 1 on a contract failure, 3 when they cannot decide: a finding, not a crash
    done, finding = (0,), (0, 1, 3)
    # Measurements run one at a time (a gate refuses a baseline that misses its own contract on a crowded CPU).
    _parallel(home, (("profile", model, "--json", str(out / "host.profile.json"), *quick), done))
    _parallel(home, (("check", model, "--contract", toml, "--json", str(out / "host.run.json"), *quick), finding))
    _parallel(home, (("gate", "--contract", toml, "--measure", model, model, "--pairs", "2", "--out", str(out / "gate")), finding))
    _parallel(
        home,
        (
            (
                "optimize",
                model,
                "--contract",
                toml,
                "--threads",
                "1",
                "--opt-levels",
                "all",
                "--targets",
                "host,coral-usb-rpi5",
                "--sessions",
                "1",
                "--samples",
                "40",
                "--time-budget",
                "60",
                "--out",
                str(out / "optimize"),
            ),
            finding,
        ),
    )
    release, baseline = out / "bom" / "release.bom.json", out / "bom" / "baseline.bom.json"
    # The rest only reads files and simulates, so it may share the cores.
    _parallel(
        home,
        (
            (
                "simulate",
                model,
                "--target",
                "raspberry-pi-5",
                "--soak",
                "5m",
                "--ambient",
                "45",
                "--json",
                str(out / "sim" / "rpi5.soak.run.json"),
            ),
            done,
        ),
        (("simulate", model, "--target", "coral-usb-rpi5", "--precision", "int8", "--json", str(out / "sim" / "coral.run.json")), done),
        (("keygen", "-o", str(keys)), done),
        (
            (
                "bom",
                "build",
                "--run",
                str(out / "gate" / "candidate.run.json"),
                "--verdict",
                str(out / "host.run.verdict.json"),
                "--contract",
                toml,
                "--model",
                model,
                "-o",
                str(release),
            ),
            done,
        ),
        (
            ("bom", "build", "--run", str(out / "gate" / "baseline.run.json"), "--contract", toml, "--model", model, "-o", str(baseline)),
            done,
        ),
    )
    _parallel(
        home,
        (("bom", "sign", str(release), "--key", str(next(k for k in keys.glob("*.pem") if not k.name.endswith(".pub.pem")))), done),
        (
            (
                "change-record",
                "--from",
                str(baseline),
                "--to",
                str(release),
                "--why",
                "same model re-measured <script>alert(1)</script>",
                "-o",
                str(out / "change-record"),
            ),
            done,
        ),
    )
    result = run_cli("report", str(out), "-o", str(work / "report.html"), env={"EDGEPROOF_HOME": str(home)})
    assert result.returncode == 0, result.stderr
    return {"out": out, "html": work / "report.html", "stdout": result.stdout, "work": work}


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


def open_offline(html: Path, work: Path) -> dict:
    """Open ``html`` in headless Chromium with the network emulated off; return what a user would see.

    Keys: console errors (exceptions, console.error, failed loads, error log entries), every URL the page
    requested, the DOM facts the test checks, and a PNG screenshot of the top of the page.
    """
    log = work / "chromium.log"
    profile = work / "chromium-profile"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"], stdout=subprocess.DEVNULL, stderr=err
        )
    try:
        tools = _DevTools(_WebSocket(_devtools_url(log, proc)))
        for domain in ("Runtime", "Log", "Network", "Page"):
            tools.call(f"{domain}.enable")
        tools.call("Network.emulateNetworkConditions", offline=True, latency=0, downloadThroughput=-1, uploadThroughput=-1)
        tools.call("Emulation.setDeviceMetricsOverride", width=WINDOW[0], height=900, deviceScaleFactor=1, mobile=False)
        tools.call("Page.navigate", url=html.resolve().as_uri())
        assert tools.wait_for("document.readyState === 'complete'", 30), "the report did not finish loading"
        drawn = tools.wait_for(
            "document.querySelectorAll('div.plot').length > 0 && "
            "[...document.querySelectorAll('div.plot')].every(d => d.querySelector('svg.main-svg'))",
            30,
        )
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
        png = base64.b64decode(
            tools.call(
                "Page.captureScreenshot",
                format="png",
                captureBeyondViewport=True,
                clip={"x": 0, "y": 0, "width": WINDOW[0], "height": WINDOW[1], "scale": 0.5},
            )["data"]
        )
        tools.call("Browser.close")
    finally:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
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
    return {"errors": errors, "requests": requests, "drawn": drawn, "png": png, **json.loads(facts)}


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


def colour_stats(png: bytes) -> tuple[int, float]:
    """(distinct colours, fraction of pixels that are not near-white)."""
    width, height, bpp, rows = decode_png(png)
    colours, ink = set(), 0
    for row in rows:
        for x in range(0, width * bpp, bpp):
            px = row[x : x + 3]
            colours.add(px)
            ink += min(px) < 240
    return len(colours), ink / (width * height)


# --- tests ---------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_writes_one_self_contained_file_and_prints_its_path(demo):
    html = demo["html"].read_text()
    assert str(demo["html"].resolve()) in demo["stdout"].replace("\n", "")
    assert html.count("plotly.js v") == 1 and "Plotly.newPlot" in html
    # plotly.js itself mentions URLs (its logo link, map attributions); the page around it must fetch nothing
    start = html.index("plotly.js v")
    ours = html[:start] + html[html.index("</script>", start) :]
    for marker in ('src="http', "src='http", 'href="http', "@import", "url(http", "fonts.googleapis"):
        assert marker not in ours, marker
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


@pytest.mark.slow
def test_report_reads_every_record_kind_by_content(demo):
    inputs = collect(demo["out"])
    kinds = {kind for _, kind in inputs.read}
    assert kinds == {"run record", "contract verdict", "gate result", "search result", "CycloneDX BOM", "BOM signature", "change record"}
    assert not inputs.skipped, inputs.skipped
    html = demo["html"].read_text()
    # the soak is simulated, so its section and figures say so; the host has no power meter, so energy reads unavailable
    thermal = html.split('<section id="thermal">', 1)[1].split("</section>", 1)[0]
    assert "b-simulated" in thermal and "[simulated]" in thermal and "throttle trip" in thermal
    verdicts = html.split('<section id="verdicts">', 1)[1].split("</section>", 1)[0]
    energy_row = verdicts.split("budgets.energy_mj_per_inference", 1)[1].split("</tr>", 1)[0]
    assert "unavailable" in energy_row and "0 mJ" not in energy_row


@pytest.mark.slow
def test_report_renders_in_headless_chromium_offline(demo):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (the Makefile's test target installs it: apt-get install -y chromium)")
    seen = open_offline(demo["html"], demo["work"])
    assert seen["errors"] == [], seen["errors"]
    assert all(url.startswith(("file:", "data:", "about:", "blob:")) for url in seen["requests"]), seen["requests"]
    assert seen["scripts_with_src"] == 0
    assert list(seen["sections"]) == list(SECTION_IDS)
    assert not any(seen["absent"].values()), seen["absent"]
    assert seen["drawn"] and seen["plots"] >= 8 and seen["svgs"] >= seen["plots"] and seen["plotly_plots"] == seen["plots"]
    assert seen["banner"].startswith("Release gate: ")
    assert seen["simulated_badges"] >= 5
    colours, ink = colour_stats(seen["png"])
    (demo["work"] / "report-top.png").write_bytes(seen["png"])
    assert colours > 50 and ink > 0.05, (colours, ink)


@pytest.mark.slow
def test_absent_sections_say_so(tmp_path, demo):
    """A folder with a single profile run: every other section states it is absent, nothing is invented."""
    (tmp_path / "out").mkdir()
    shutil.copy(demo["out"] / "host.profile.json", tmp_path / "out" / "run.json")
    path = build_report(tmp_path / "out", tmp_path / "r.html")
    html = path.read_text()
    for section, words in (
        ("pareto", "No optimize run in this folder"),
        ("thermal", "No soak ran in this folder"),
        ("gate", "No gate ran in this folder"),
        ("verdicts", "No contract verdict in this folder"),
        ("bom", "No BOM in this folder"),
        ("change-record", "No change record in this folder"),
        ("accuracy", "No evaluation in this folder"),
    ):
        body = html.split(f'<section id="{section}">', 1)[1].split("</section>", 1)[0]
        assert words in body and "Plotly.newPlot" not in body, section
    assert 'id="plot-latency-cdf"' in html and 'id="plot-placement"' in html
    assert "No verdict in this folder" in html


def test_bad_folder_is_one_line_exit_2(tmp_path):
    (tmp_path / "junk.json").write_text('{"schema_version": "edgeproof.run/1", "kind": "measured"}')
    (tmp_path / "notes.json").write_text("[1, 2]")
    with pytest.raises(RecordError, match="no edgeproof records found"):
        build_report(tmp_path, tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()
    result = CliRunner().invoke(app, ["report", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "no such folder" in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_unreadable_record_is_listed_not_fatal(tmp_path, demo):
    out = tmp_path / "out"
    shutil.copytree(demo["out"] / "gate", out)
    (out / "broken.run.json").write_text('{"schema_version": "edgeproof.run/1", "kind": "measured"}')
    html = build_report(out, tmp_path / "r.html").read_text()
    sources = html.split('<section id="sources">', 1)[1]
    assert "broken.run.json" in sources and "Not read" in sources


@pytest.mark.slow
def test_bom_changed_after_signing_is_flagged(tmp_path, demo):
    out = tmp_path / "out"
    shutil.copytree(demo["out"] / "bom", out)
    bom = out / "release.bom.json"
    doc = json.loads(bom.read_text())
    doc["metadata"]["component"]["name"] += "-edited"
    bom.write_text(json.dumps(doc, sort_keys=True, separators=(",", ":")))
    section = build_report(out, tmp_path / "r.html").read_text().split('<section id="bom">', 1)[1].split("</section>", 1)[0]
    assert "the BOM changed after it was signed" in section
    assert section.count("the signature's digest is this BOM's bytes") == 0


def test_release_written_by_version_1_renders(tmp_path):
    """BOMs, a signature and a change record written before they were typed: the release sections still show them."""
    shutil.copytree(Path(__file__).parent / "data" / "release_v1", tmp_path / "out")
    inputs = collect(tmp_path / "out")
    assert not inputs.skipped, inputs.skipped
    assert {kind for _, kind in inputs.read} == {"CycloneDX BOM", "BOM signature", "change record"}
    html = build_report(tmp_path / "out", tmp_path / "r.html").read_text()
    bom = html.split('<section id="bom">', 1)[1].split("</section>", 1)[0]
    assert bom.count("the signature's digest is this BOM's bytes") == 1 and "Recipe: no recipe (the model as given)" in bom
    change = html.split('<section id="change-record">', 1)[1].split("</section>", 1)[0]
    assert "int8 to meet the energy budget" in change and "no recipe (the model as given)" in change
    assert "Rollback path" in change and "a.bom.json.sig" in change
    assert change.count('<span class="over">yes</span>') == 5  # the five figures the /1 record bolded
