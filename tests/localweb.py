"""What the tests of the local web servers share (`colorize survey serve`, `colorize app`):
running a server on a thread, and Debian's headless Chromium driven by Playwright
(`colorize_cli.browser`, which examples/app_screenshot.py uses too)."""

from __future__ import annotations

import contextlib
import http.client
import os
import threading
from collections.abc import Iterator
from types import ModuleType
from typing import TypeVar

import pytest

from colorize_cli.browser import CHROMIUM
from colorize_cli.localserver import LocalServer

Server = TypeVar("Server", bound=LocalServer)


def get_with_host(port: int, path: str, host: str | None) -> tuple[int, bytes]:
    """GET `path` from 127.0.0.1:`port` with this Host header (None: no Host header at all), as
    a page on another name that resolves to 127.0.0.1 would send it: (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        if host is None:
            conn.putrequest("GET", path, skip_host=True)
            conn.endheaders()
        else:
            conn.request("GET", path, headers={"Host": host})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@contextlib.contextmanager
def serving(srv: Server) -> Iterator[Server]:
    """Run `srv` on a thread inside the `with` block, then stop it and free its port, however
    the block ends."""
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)


def browser_or_skip() -> ModuleType:
    """Playwright's sync API, or a skip saying what is missing. In CI, where `./setup.sh --test`
    installs both, a missing one fails the test instead of hiding it."""
    missing = None
    if not CHROMIUM.exists():
        missing = f"no {CHROMIUM} (`./setup.sh --test` installs Debian's chromium when run as root)"
    try:
        from playwright import sync_api
    except ImportError:
        missing = missing or "the playwright package is not installed (`pip install -e .[test]`)"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser test, but: {missing}")
        pytest.skip(missing)
    return sync_api
