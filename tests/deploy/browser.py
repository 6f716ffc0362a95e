"""Headless Chromium driven over the DevTools protocol: open a page of a loopback server, wait until its text
shows what the caller expects, take a screenshot.

The MLflow and Airflow UIs are JavaScript applications: the page's HTML holds no data, so "the page loaded" is
not enough. :meth:`Browser.open` polls the rendered text (``document.body.innerText``) until every expected
string is on the page, and fails with the text it saw (a login form, an error banner) when time is up.

Chromium runs under the stage runner's supervisor, like every deploy-tier service (it ends with the process
that started it), in its own process group and a throwaway profile. It reaches loopback only: every host name
other than 127.0.0.1 resolves to nothing, and its background traffic (updates, sync, metrics) is off. It runs
without its sandbox (``--no-sandbox``), which refuses to start as root; it only ever opens pages of the tier's
own servers.
"""

from __future__ import annotations

import base64
import contextlib
import io
import itertools
import json
import os
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

from tests.deploy.deploy_platform import HOST, Process, ServiceFailed, tail, wait_until

BINARIES = ("chromium", "chromium-browser", "google-chrome")
WIDTH, HEIGHT = 1400, 900
#: Clicks the element matching a selector whose nearest ancestor holding a text is the smallest (a panel's own
#: close button, not another one on the page); true when it found one.
CLICK_WITHIN = """(selector, within) => {
    let best = null, bestSize = Infinity;
    for (const element of document.querySelectorAll(selector)) {
        let box = element;
        while (box && !(box.innerText || '').includes(within)) box = box.parentElement;
        const size = box ? box.innerText.length : Infinity;
        if (size < bestSize) { best = element; bestSize = size; }
    }
    if (best) { window.__colbertClicked = best; best.click(); }
    return best !== null;
}"""


def chromium() -> str | None:
    """The Chromium binary on PATH (Debian's package installs ``chromium``), or None."""
    return next(filter(None, (shutil.which(name) for name in BINARIES)), None)


class Browser:
    """One headless Chromium with one page; use :func:`running_browser`."""

    def __init__(self, root: Path, width: int = WIDTH, height: int = HEIGHT) -> None:
        self.root, self.width, self.height = root, width, height
        self.profile = root / "chromium-profile"
        self.process: Process | None = None
        self.socket: ClientConnection | None = None
        self._ids = itertools.count(1)

    def start(self, timeout: float = 60.0) -> Browser:
        binary = chromium()
        if binary is None:
            raise ServiceFailed(f"chromium: none of {', '.join(BINARIES)} on PATH (`make services`)")
        argv = [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",  # a container's /dev/shm is small
            "--remote-debugging-address=" + HOST,
            "--remote-debugging-port=0",  # the OS picks; Chromium writes it to DevToolsActivePort
            f"--user-data-dir={self.profile}",
            f"--window-size={self.width},{self.height}",
            f"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE {HOST}",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--no-default-browser-check",
            "--hide-scrollbars",
            "about:blank",
        ]
        self.process = Process(
            "chromium", argv, dict(os.environ), self.root / "chromium.log", self.root
        ).start()
        port_file = self.profile / "DevToolsActivePort"

        def port() -> int | None:
            self.process.check_alive()  # type: ignore[union-attr]
            with contextlib.suppress(OSError, ValueError, IndexError):
                return int(port_file.read_text().splitlines()[0])
            return None

        debug_port = wait_until("Chromium's DevTools port", port, timeout, interval=0.2)
        with urllib.request.urlopen(f"http://{HOST}:{debug_port}/json/list", timeout=10) as response:
            pages = [target for target in json.load(response) if target["type"] == "page"]
        if not pages:
            raise ServiceFailed(f"chromium: no page target; end of its log:\n{tail(self.process.log)}")
        self.socket = connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=timeout)
        self.call("Page.enable")
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=self.width,
            height=self.height,
            deviceScaleFactor=1,
            mobile=False,
        )
        return self

    def call(self, method: str, timeout: float = 60.0, **params: Any) -> dict[str, Any]:
        """One DevTools command; its result (events that arrive meanwhile are dropped)."""
        assert self.socket is not None, "start() first"
        request_id = next(self._ids)
        self.socket.send(json.dumps({"id": request_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self.socket.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") != request_id:
                continue
            if "error" in message:
                raise RuntimeError(f"DevTools {method}: {message['error']}")
            return message.get("result", {})

    def set_cookie(self, url: str, name: str, value: str) -> None:
        """A cookie for ``url``'s host, as the server would have set it after a login."""
        result = self.call("Network.setCookie", url=url, name=name, value=value, httpOnly=True, path="/")
        if not result.get("success", True):
            raise RuntimeError(f"DevTools refused the {name} cookie for {url}")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"JavaScript {expression[:80]!r}: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    def text(self) -> str:
        """The page's rendered text."""
        return str(self.evaluate("document.body ? document.body.innerText : ''") or "")

    def close(self, selector: str, within: str, timeout: float = 30.0) -> bool:
        """Click the ``selector`` button nearest to the text ``within`` (a panel's close button), then wait
        until it has left the page; False when there was none."""
        if not self.evaluate(f"({CLICK_WITHIN})({json.dumps(selector)}, {json.dumps(within)})"):
            return False
        gone = "!window.__colbertClicked.isConnected"
        wait_until(f"{selector} near {within!r} gone", lambda: self.evaluate(gone), timeout, interval=0.5)
        return True

    def open(self, url: str, expect: list[str], timeout: float = 120.0) -> str:
        """Navigate to ``url`` and wait until every string of ``expect`` is in the page's text; that text."""
        self.call("Page.navigate", url=url)
        seen = [""]

        def shows_all() -> str | None:
            seen[0] = self.text()
            return seen[0] if all(item in seen[0] for item in expect) else None

        try:
            return wait_until(f"{url} showing {expect}", shows_all, timeout, interval=1.0)
        except TimeoutError as error:
            missing = [item for item in expect if item not in seen[0]]
            raise AssertionError(f"{error}; missing {missing}; the page's text:\n{seen[0][:3000]}") from None

    def screenshot(self) -> bytes:
        """The viewport as PNG bytes."""
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=False)["data"]
        return base64.b64decode(data)

    def stop(self) -> None:
        if self.socket is not None:
            with contextlib.suppress(Exception):
                self.socket.close()
        if self.process is not None:
            self.process.stop()


@contextlib.contextmanager
def running_browser(root: Path | None = None) -> Iterator[Browser]:
    """A started :class:`Browser` in ``root`` (default: a temporary folder, removed after)."""
    owned = root is None
    folder = Path(tempfile.mkdtemp(prefix="colbert-chromium-")) if root is None else root
    browser = Browser(folder)
    try:
        yield browser.start()
    finally:
        browser.stop()
        if owned:
            shutil.rmtree(folder, ignore_errors=True)


def check_png(png: bytes, width: int = WIDTH, height: int = HEIGHT, min_colours: int = 16) -> None:
    """Fail unless ``png`` is a ``width`` x ``height`` image of at least ``min_colours`` colours (a page that
    rendered, not a blank one)."""
    from PIL import Image

    image = Image.open(io.BytesIO(png))
    assert image.size == (width, height), image.size
    colours = image.convert("RGB").getcolors(maxcolors=min_colours)
    assert colours is None, f"a near-blank screenshot: {len(colours)} colours"


def small_png(png: bytes, colours: int = 256) -> bytes:
    """``png`` as an optimised palette PNG (UI screenshots are flat colours: a fraction of the size)."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    image = image.quantize(colors=colours, method=Image.Quantize.MEDIANCUT)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()
