"""Start `colorize app` on a photo, give it colour hints in headless Chromium and save a
screenshot of the page (the picture of the app in the README):

    python examples/app_screenshot.py PHOTO OUT.png --model MODEL \\
        --hint 0.25,0.8,#d8b070 --hint 0.5,0.2,#4a90d0 --split 35

Hints are written as `colorize infer --hint` takes them: pixels of the upright photo, or shares
of its width and height. Each is given the way a person would: a click on the photo, then the
colour picker. Needs the playwright package and Debian's /usr/bin/chromium (`./setup.sh --test`).
"""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

from playwright.sync_api import sync_playwright

from colorize_cli.app import AppServer, Session
from colorize_cli.browser import launch, recoloured
from colorize_cli.colorizer import Colorizer
from colorize_cli.hints import parse_hint
from colorize_cli.imageio import open_image

WAIT_MS = 120_000  # for one recolouring: a real model on a CPU, a large photo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("photo", type=Path)
    parser.add_argument("out", type=Path, help="the screenshot, a .png")
    parser.add_argument("--model", help="a bundled model's name, a run folder or a .safetensors file "
                        "(default: the default bundled model)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--hint", action="append", default=[], type=parse_hint, help="X,Y,COLOUR (repeatable)")
    parser.add_argument("--split", type=int, default=0, help="share of the photo shown gray, in percent")
    parser.add_argument("--width", type=int, default=1280, help="browser window width in CSS pixels")
    parser.add_argument("--height", type=int, default=800)
    args = parser.parse_args()

    width, height = open_image(args.photo).size
    server = AppServer(Session(Colorizer.load(args.model, args.device)), port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with sync_playwright() as p:
            browser = launch(p)
            page = browser.new_page(viewport={"width": args.width, "height": args.height})
            page.goto(server.url)
            recoloured(page, lambda: page.set_input_files("#file", str(args.photo)), WAIT_MS)
            for hint in args.hint:
                x, y = hint.place(width, height)
                box = page.locator("#frame").bounding_box()
                at = {"x": (x + 0.5) * box["width"] / width, "y": (y + 0.5) * box["height"] / height}
                recoloured(page, lambda: page.click("#frame", position=at), WAIT_MS)
                recoloured(page, lambda: page.fill("#hint-color", hint.hex), WAIT_MS)
            if args.split:
                page.locator("#split").evaluate("(e, v) => { e.value = v; e.dispatchEvent(new Event('input')); }",
                                                str(args.split))
            page.screenshot(path=str(args.out))
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
