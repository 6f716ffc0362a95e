"""The headless-Chromium helper the deploy tier's UI test uses (tests/deploy/browser.py), against a page of a
loopback HTTP server: it waits for text a script renders late, fails naming what it missed and what the page
showed, sends the cookie it was given, closes the panel it is asked to close and no other, and its checks
refuse a blank screenshot. Chromium is gone once the context ends. Seconds, so in ``make test-fast`` too."""

from __future__ import annotations

import http.server
import io
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.browser import HEIGHT, WIDTH, check_png, chromium, running_browser, small_png

#: A JavaScript page: its text arrives 1.5 s after load, beside a panel with its own Close button.
PAGE = b"""<!doctype html><html><body style="font-family: sans-serif">
<h1 style="color: #1565c0">A page</h1><div id="late"></div>
<div><b>Helper panel</b> <button aria-label="Close" onclick="this.parentElement.remove()">x</button></div>
<div><button aria-label="Close" onclick="this.parentElement.remove()">x</button> another box</div>
<script>setTimeout(() => { document.getElementById('late').innerText = 'rendered late'; }, 1500);</script>
</body></html>"""


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/cookie":
            body = f"<html><body>cookie: {self.headers.get('Cookie', 'none')}</body></html>".encode()
        else:
            body = PAGE
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:  # quiet
        pass


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    if chromium() is None:
        message = "needs Chromium on PATH (`make services` installs it)"
        if os.environ.get("COLBERT_DEPLOY_REQUIRED") == "1":
            pytest.fail(message)
        pytest.skip(message)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_it_waits_for_late_text_sends_the_cookie_and_closes_one_panel(site: str, tmp_path: Path) -> None:
    with running_browser(tmp_path) as browser:
        text = browser.open(f"{site}/", ["rendered late"], timeout=60)
        assert "Helper panel" in text
        assert browser.close('button[aria-label="Close"]', within="Helper panel")
        text = browser.text()
        assert "Helper panel" not in text and "another box" in text  # the panel's own button, not the other
        assert not browser.close('button[aria-label="Close"]', within="no such panel text")
        png = browser.screenshot()
        browser.set_cookie(site, "_token", "a-jwt")
        assert "cookie: _token=a-jwt" in browser.open(f"{site}/cookie", ["cookie:"], timeout=30)
        process = browser.process
    assert process is not None and process.process is not None and process.process.poll() is not None
    check_png(png)
    small = small_png(png)
    check_png(small)
    assert len(small) < len(png)


def test_a_page_that_never_shows_the_text_fails_with_what_it_showed(site: str, tmp_path: Path) -> None:
    with running_browser(tmp_path) as browser, pytest.raises(AssertionError) as failure:
        browser.open(f"{site}/", ["rendered late", "a login form"], timeout=5)
    message = str(failure.value)
    assert "missing ['a login form']" in message
    assert "rendered late" in message.split("the page's text:")[1]


def test_a_blank_or_wrongly_sized_screenshot_is_refused() -> None:
    from PIL import Image

    def png(size: tuple[int, int]) -> bytes:
        out = io.BytesIO()
        Image.new("RGB", size, "white").save(out, format="PNG")
        return out.getvalue()

    with pytest.raises(AssertionError, match="near-blank"):
        check_png(png((WIDTH, HEIGHT)))
    with pytest.raises(AssertionError):
        check_png(png((WIDTH, HEIGHT // 2)))
