"""Open a page in headless Chromium (Debian's ``chromium``) and report what it drew and fetched.

Chromium is driven over the DevTools protocol through ``--remote-debugging-pipe`` (JSON
messages ending in a NUL byte on file descriptors 3 and 4: no port, no extra library). Every
request the page makes is recorded from ``Network.requestWillBeSent``; in case a page tries
anyway, nothing can leave: every host name resolves to nothing (``--host-resolver-rules``) and
the proxy is a closed loopback port. `render` returns, per ``svg[data-chart]``, its size on the
page and how many bars (``rect``) have a non-empty box, and the URLs requested.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-pipe",
    "--proxy-server=127.0.0.1:9",
    "--host-resolver-rules=MAP * ~NOTFOUND",
)
_CHARTS_JS = """JSON.stringify([...document.querySelectorAll('svg[data-chart]')].map(s => {
  const b = s.getBoundingClientRect();
  const bars = [...s.querySelectorAll('rect')].filter(e => {
    const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0; }).length;
  return {name: s.dataset.chart, width: b.width, height: b.height, bars: bars};
}))"""


@dataclass
class Rendered:
    charts: list[dict[str, Any]]
    requests: list[str]  # every URL the page requested, itself included
    title: str


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise AssertionError("chromium is not installed: run `make install` (Debian `chromium`)")
    return path


class _Pipe:
    def __init__(self, write_fd: int, read_fd: int) -> None:
        self.w = os.fdopen(write_fd, "wb", buffering=0)
        self.r = os.fdopen(read_fd, "rb", buffering=0)
        self.buf = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> int:
        self.next_id += 1
        msg: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.w.write(json.dumps(msg).encode() + b"\0")
        return self.next_id

    def _read_one(self) -> dict[str, Any]:
        while b"\0" not in self.buf:
            chunk = self.r.read(1 << 16)
            if not chunk:
                raise AssertionError("chromium closed the DevTools pipe")
            self.buf += chunk
        raw, self.buf = self.buf.split(b"\0", 1)
        return json.loads(raw)  # type: ignore[no-any-return]

    def call(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        wanted = self.send(method, params, session)
        while True:
            msg = self._read_one()
            if msg.get("id") == wanted:
                if "error" in msg:
                    raise AssertionError(f"{method}: {msg['error']}")
                return msg.get("result", {})  # type: ignore[no-any-return]
            self.events.append(msg)

    def wait_event(self, method: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == method for e in self.events):
            if time.monotonic() > deadline:
                raise AssertionError(f"no {method} within {timeout} s")
            self.events.append(self._read_one())


def render(page: Path, *, settle_s: float = 0.5, timeout: float = 60.0) -> Rendered:
    """Load `page` (a local file) and report its charts and requests."""
    profile = tempfile.mkdtemp(prefix="greenmon-chromium-")
    to_chrome_r, to_chrome_w = os.pipe()
    from_chrome_r, from_chrome_w = os.pipe()

    def fds() -> None:  # in the child: the pipe ends Chromium expects on 3 and 4
        a, b = os.dup(to_chrome_r), os.dup(from_chrome_w)
        os.dup2(a, 3)
        os.dup2(b, 4)

    proc = subprocess.Popen(
        [chromium(), *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        preexec_fn=fds,
        close_fds=False,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(to_chrome_r)
    os.close(from_chrome_w)
    pipe = _Pipe(to_chrome_w, from_chrome_r)
    try:
        target = pipe.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        pipe.call("Network.enable", {}, session)
        pipe.call("Page.enable", {}, session)
        pipe.call("Page.navigate", {"url": page.resolve().as_uri()}, session)
        pipe.wait_event("Page.loadEventFired", timeout)
        time.sleep(settle_s)  # late requests (images, fonts) are sent by now
        charts = pipe.call(
            "Runtime.evaluate", {"expression": _CHARTS_JS, "returnByValue": True}, session
        )["result"]["value"]
        title = pipe.call(
            "Runtime.evaluate", {"expression": "document.title", "returnByValue": True}, session
        )["result"]["value"]
        requests = [
            e["params"]["request"]["url"]
            for e in pipe.events
            if e.get("method") == "Network.requestWillBeSent"
        ]
        pipe.send("Browser.close")
        return Rendered(charts=json.loads(charts), requests=requests, title=title)
    finally:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(page: Path, out: Path, *, width: int = 1200, height: int = 2600) -> None:
    """A PNG of the top `height` pixels of `page` (for the README)."""
    profile = tempfile.mkdtemp(prefix="greenmon-chromium-")
    try:
        subprocess.run(
            [chromium(), *FLAGS[:8], f"--user-data-dir={profile}", "--hide-scrollbars",
             f"--window-size={width},{height}", f"--screenshot={out}", page.resolve().as_uri()],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
    finally:
        shutil.rmtree(profile, ignore_errors=True)
