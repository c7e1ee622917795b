"""A hostile little web server on 127.0.0.1 for the crawl tests, and the images it serves.

Each path maps to a Route: a normal answer, an error status, a 5xx burst, a stall before the
headers, a body trickled slower than any time limit, an endless body, a redirect, or a page
built from the query string (for search-result pages). Every request is logged.

Stalls and trickles are many times the client's time limit, so no test depends on which side
is faster by a hair; they wait on the server's `stopping` event, so that closing the server
ends them at once instead of leaving threads asleep.
"""

from __future__ import annotations

import io
import struct
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import numpy as np
from PIL import Image


def photo(seed: int, size: tuple[int, int] = (96, 72)) -> Image.Image:
    """A smooth, colorful stand-in for a photo; different seeds give unrelated pictures."""
    rng = np.random.default_rng(seed)
    grid = Image.fromarray((rng.random((6, 8, 3)) * 255).astype(np.uint8))
    return grid.resize(size, Image.Resampling.BICUBIC)


def encode(img: Image.Image, fmt: str = "JPEG", **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels: signature, IHDR and IEND, no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    content_type: str = "image/jpeg"
    location: str | None = None  # a redirect
    fail_first: int = 0  # answer 503 this many times first (a 5xx burst)
    stall: float = 0.0  # seconds before the headers
    trickle: float = 0.0  # seconds between 16-byte pieces of the body
    endless: bool = False  # stream bytes until the client hangs up (no Content-Length)
    page: Callable[[str], bytes] | None = None  # body made from the query string
    calls: int = field(default=0, compare=False)
    arrived: threading.Event = field(default_factory=threading.Event, compare=False)  # set on each request


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def log_message(self, format: str, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        route = self.server.routes.get(parts.path)
        with self.server.lock:
            self.server.log.append(self.path)
            if route:
                route.calls += 1
                call = route.calls
                route.arrived.set()
        if route is None:
            self.send_error(404)
            return
        try:
            self._answer(route, call, parts.query)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up on us, as it should

    def _answer(self, r: Route, call: int, query: str) -> None:
        if r.stall and self.server.stopping.wait(r.stall):
            return
        if call <= r.fail_first:
            self.send_error(503)
            return
        if r.location is not None:
            self.send_response(r.status if r.status != 200 else 302)
            self.send_header("Location", r.location)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if r.status != 200:
            self.send_error(r.status)
            return
        body = r.page(query) if r.page else r.body
        self.send_response(200)
        self.send_header("Content-Type", r.content_type)
        if not r.endless:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if r.endless:
            block = bytes(range(256)) * 256
            while True:
                self.wfile.write(block)
        elif r.trickle:
            for i in range(0, len(body), 16):
                self.wfile.write(body[i:i + 16])
                self.wfile.flush()
                if self.server.stopping.wait(r.trickle):
                    return
        else:
            self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, routes: dict[str, Route]):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes = routes
        self.log: list[str] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()  # set when the server closes: stalls and trickles end


class HostileServer:
    """`with HostileServer(routes) as s:` serves routes at s.url(path) until the block ends."""

    def __init__(self, routes: dict[str, Route]):
        self._server = _Server(routes)
        self.routes = routes
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def log(self) -> list[str]:
        with self._server.lock:
            return list(self._server.log)

    def __enter__(self) -> "HostileServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.stopping.set()
        self._server.shutdown()
        self._server.server_close()
