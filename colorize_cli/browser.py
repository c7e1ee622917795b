"""Driving the local web pages (`colorize app`, `colorize survey serve`) in Debian's headless
Chromium through Playwright: what the tests and examples/app_screenshot.py share. Neither
Playwright nor Chromium is a dependency of the package; whoever calls these has both.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package (`./setup.sh --test` installs it)
# Headless, and nothing that reaches out to the network by itself (the machine may be offline).
CHROMIUM_ARGS = ("--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync")
FRAME = "document.getElementById('frame')"


def launch(playwright: Any) -> Any:  # noqa: ANN401 - Playwright's objects, not imported here
    """Debian's Chromium, headless, from a started `sync_playwright()`: a Browser."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS))


def recoloured(page: Any, action: Callable[[], object], timeout_ms: float = 30_000) -> None:  # noqa: ANN401
    """Do `action` on the page of `colorize app` and wait until it shows the photo recoloured
    after it (the frame counts its renders in data-renders, and is 'ready' once no request runs)."""
    before = int(page.get_attribute("#frame", "data-renders"))
    action()
    page.wait_for_function(f"(n) => {FRAME}.dataset.renders > n && {FRAME}.dataset.state === 'ready'",
                           arg=before, timeout=timeout_ms)
