"""Headless Chromium, driven over the DevTools protocol (CDP), for tests and benchmarks that look at a page.

Chromium starts with ``--remote-debugging-port=0`` and prints the browser's websocket address on stderr; the
driver opens a page target on that one websocket (flattened sessions) and reads console errors, the size of each
``svg[data-chart]`` and a full-page screenshot. No websocket library is installed, so the client here is the
minimal RFC 6455 one CDP needs: one connection to 127.0.0.1, text frames, no extensions.

    result = load_page("http://127.0.0.1:8080/", screenshot=tmp_path / "page.png")
    assert not result.console_errors
"""
from __future__ import annotations

import base64
import json
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

CHARTS_JS = """JSON.stringify(Array.from(document.querySelectorAll('svg[data-chart]')).map(function (s) {
  var r = s.getBoundingClientRect();
  return {name: s.getAttribute('data-chart'), width: r.width, height: r.height,
          drawn: s.querySelectorAll('rect,line,polyline,polygon,path,circle,ellipse,text').length};
}))"""


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def require_chromium() -> None:
    """Skip a browser test where chromium is missing, except in CI (which installs it): there, fail."""
    if chromium_binary() is None:
        import pytest

        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (apt-get install chromium): CI must run the browser test")
        pytest.skip("chromium is not installed")


@dataclass
class PageResult:
    title: str
    console_errors: list[str]
    chart_sizes: dict[str, tuple[float, float]]  # data-chart name -> (width, height) in CSS pixels
    chart_elements: dict[str, int]  # data-chart name -> drawn elements inside it
    screenshot: Path | None = None
    values: dict[str, Any] = field(default_factory=dict)  # the answers to load_page's `evaluate`


class WebSocket:
    """A blocking RFC 6455 client: enough for a local DevTools endpoint."""

    def __init__(self, url: str, timeout_s: float = 30):
        parts = urlparse(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout_s)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
                          .encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"websocket handshake refused: {head[:200]!r}")

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("the browser closed the DevTools connection")
        self.buffer += chunk

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self._fill()
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        header = bytes([0x80 | opcode])
        header += bytes([0x80 | n]) if n < 126 else (bytes([0x80 | 126]) + struct.pack("!H", n) if n < 1 << 16
                                                      else bytes([0x80 | 127]) + struct.pack("!Q", n))
        mask = os.urandom(4)  # a client must mask every frame
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def send(self, text: str) -> None:
        self._send_frame(0x1, text.encode())

    def pending(self) -> bool:
        return bool(self.buffer) or bool(select.select([self.sock], [], [], 0)[0])

    def receive(self, timeout_s: float) -> str:
        self.sock.settimeout(timeout_s)
        message = b""
        while True:
            first, second = self._read(2)
            n = second & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read(8))[0]
            mask = self._read(4) if second & 0x80 else b""
            payload = self._read(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            opcode = first & 0x0F
            if opcode == 0x8:
                raise ConnectionError("the browser closed the DevTools connection")
            if opcode == 0x9:
                self._send_frame(0xA, payload)
                continue
            if opcode in (0x0, 0x1, 0x2):
                message += payload
                if first & 0x80:
                    return message.decode()

    def close(self) -> None:
        try:
            self._send_frame(0x8, b"")
        except OSError:
            pass
        self.sock.close()


class DevTools:
    """One page target of a browser, commands answered in order; events are kept for whoever waits."""

    def __init__(self, browser_url: str):
        self.ws = WebSocket(browser_url)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []
        self.session: str | None = None
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]

    def call(self, method: str, params: dict[str, Any] | None = None, timeout_s: float = 30) -> dict[str, Any]:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if self.session:
            message["sessionId"] = self.session
        self.ws.send(json.dumps(message))
        deadline = time.monotonic() + timeout_s
        while True:
            answer = json.loads(self.ws.receive(max(deadline - time.monotonic(), 0.01)))
            if answer.get("id") == self.next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            if "method" in answer:
                self.events.append(answer)

    def wait_for(self, event: str, timeout_s: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            for index, seen in enumerate(self.events):
                if seen["method"] == event:
                    return self.events.pop(index)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {event} after {timeout_s} s")
            self.events.append(json.loads(self.ws.receive(remaining)))

    def drain(self) -> None:
        """Take in the events already sent (console messages that arrived after the last answer)."""
        while self.ws.pending():
            self.events.append(json.loads(self.ws.receive(5)))

    def evaluate(self, expression: str, timeout_s: float = 30) -> Any:
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True}, timeout_s)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def console_errors(self) -> list[str]:
        self.drain()
        errors = []
        for event in self.events:
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                errors.append("console: " + " ".join(str(a.get("value", a.get("description", "")))
                                                     for a in params.get("args", [])))
            elif method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                errors.append(f"exception: {details.get('exception', {}).get('description') or details.get('text')}")
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                entry = params["entry"]
                errors.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".strip())
        return errors

    def screenshot(self, path: Path) -> None:
        size = self.call("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        data = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data["data"]))

    def close(self) -> None:
        self.ws.close()


def start_chromium(profile: Path, timeout_s: float = 30) -> tuple[subprocess.Popen, str]:
    binary = chromium_binary()
    if binary is None:
        raise FileNotFoundError("chromium is not installed (neither chromium nor chromium-browser is on PATH)")
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--no-first-run", "--no-default-browser-check",
               "--disable-dev-shm-usage", "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank"]
    # Own session: chromium's zygote, renderer and GPU processes all die with the group.
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, start_new_session=True)
    deadline, seen = time.monotonic() + timeout_s, b""
    while time.monotonic() < deadline:
        if not select.select([process.stderr], [], [], 0.2)[0]:
            if process.poll() is not None:
                break
            continue
        chunk = os.read(process.stderr.fileno(), 65536)
        if not chunk:
            break
        seen += chunk
        found = re.search(rb"DevTools listening on (ws://\S+)", seen)
        if found:
            return process, found.group(1).decode()
    stop_chromium(process)
    raise RuntimeError(f"chromium gave no DevTools address in {timeout_s} s:\n{seen.decode(errors='replace')[-2000:]}")


def stop_chromium(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=10)
    if process.stderr:
        process.stderr.close()


def load_page(url: str, screenshot: Path | None = None, width: int = 1280, height: int = 900,
              on_load: Callable[[], None] | None = None, wait_for: str | None = None, wait_s: float = 10,
              evaluate: dict[str, str] | None = None) -> PageResult:
    """Open url in a fresh headless Chromium; after the load event (then on_load(), then, if given, once the JS
    expression wait_for is true), read the page. Chromium and its profile are removed whatever happens."""
    profile = Path(tempfile.mkdtemp(prefix="continual-chromium-"))
    process = None
    tools = None
    try:
        process, browser_url = start_chromium(profile)
        tools = DevTools(browser_url)
        for domain in ("Page", "Runtime", "Log"):
            tools.call(f"{domain}.enable")
        tools.call("Emulation.setDeviceMetricsOverride",
                   {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        tools.call("Page.navigate", {"url": url})
        tools.wait_for("Page.loadEventFired")
        if on_load is not None:
            on_load()
        if wait_for is not None:
            deadline = time.monotonic() + wait_s
            while not tools.evaluate(wait_for):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"still false after {wait_s} s: {wait_for}")
                time.sleep(0.2)
        charts = json.loads(tools.evaluate(CHARTS_JS))
        values = {name: tools.evaluate(expression) for name, expression in (evaluate or {}).items()}
        if screenshot is not None:
            tools.screenshot(screenshot)
        return PageResult(title=tools.evaluate("document.title"), console_errors=tools.console_errors(),
                          chart_sizes={c["name"]: (c["width"], c["height"]) for c in charts},
                          chart_elements={c["name"]: c["drawn"] for c in charts}, screenshot=screenshot,
                          values=values)
    finally:
        if tools is not None:
            tools.close()
        if process is not None:
            stop_chromium(process)
        shutil.rmtree(profile, ignore_errors=True)
