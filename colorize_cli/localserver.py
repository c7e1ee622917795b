"""The local web servers' common ground (`colorize survey serve`, `colorize app`): listen on
127.0.0.1 only, answer only requests addressed to this machine's own names for the server (no
DNS rebinding), take changes (POST) only from the server's own pages (no cross-site requests),
bound the connections in number and idle time, stay quiet about routine disconnects, and send
every response with the same defensive headers.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from colorize_cli.errors import UserError, one_line

# An idle or stalled connection is closed after SOCKET_TIMEOUT seconds, and at most
# MAX_CONNECTIONS are handled at once (one thread each); a browser opens about six per host.
SOCKET_TIMEOUT = 30.0
MAX_CONNECTIONS = 32
BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nConnection: close\r\n\r\nbusy\n"
# The names a browser on this machine uses for the server; any other Host header is a page on
# another site whose name was pointed at 127.0.0.1 (DNS rebinding), and is refused.
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")
# Methods that only read; any other one changes something and must come from the server's own
# pages (`LocalHandler.parse_request`).
SAFE_METHODS = ("GET", "HEAD")
TEXT = "text/plain; charset=utf-8"


class BadRequest(Exception):
    """A malformed or unacceptable request; the message goes back to the page."""

    def __init__(self, message: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST) -> None:
        super().__init__(message)
        self.status = status


class LocalHandler(BaseHTTPRequestHandler):
    """A request handler that checks the Host header, and for a request that changes something
    where it comes from, before any method runs; silent in the log (servers report what matters
    themselves)."""

    server: LocalServer
    sys_version = ""
    csp = "default-src 'self'"  # no inline script, nothing from elsewhere

    def setup(self) -> None:
        self.timeout = self.server.socket_timeout  # StreamRequestHandler applies it to the socket
        super().setup()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        """Quiet: the server reports what matters itself, not every request."""

    def parse_request(self) -> bool:
        """The stdlib's parsing, then the Host check (DNS rebinding) and, for a method that
        changes something, the origin check (`cross_site`) before any method runs."""
        if not super().parse_request():
            return False
        host = self.headers.get("Host")
        if host is None:
            self._send(HTTPStatus.BAD_REQUEST, b"a Host header is required\n", TEXT)
            return False
        if host.lower() not in self.server.hosts:
            port = self.server.server_address[1]
            self._send(HTTPStatus.MISDIRECTED_REQUEST,
                       f"this server answers only for 127.0.0.1:{port} and localhost:{port}\n".encode(), TEXT)
            return False
        if self.command not in SAFE_METHODS and (refusal := self.cross_site()):
            self.close_connection = True  # its body is not read
            self._json(HTTPStatus.FORBIDDEN, {"error": refusal})
            return False
        return True

    def cross_site(self) -> str | None:
        """Why this request is from a page of another site, or None. A browser names the page
        that sends a request in Origin (always on a POST) and, in Sec-Fetch-Site, how it relates
        to the server; a program other than a browser sends neither, and is trusted as any
        program on this machine is. Only the server's own origins (those the Host check accepts)
        and a request the user made themselves (Sec-Fetch-Site: none) are taken."""
        own = "only this server's own pages may send them"
        origin = self.headers.get("Origin")
        if origin is not None and origin.lower().removeprefix("http://") not in self.server.hosts:
            return f"requests from {one_line(origin)[:100]} are not accepted: {own}"
        site = self.headers.get("Sec-Fetch-Site")
        if site is not None and site.lower() not in ("same-origin", "none"):
            return f"requests from other sites are not accepted: {own}"
        return None

    def _send(self, status: HTTPStatus, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", self.csp)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: HTTPStatus, value: object) -> None:
        self._send(status, json.dumps(value).encode(), "application/json")

    def _not_found(self) -> None:
        self._send(HTTPStatus.NOT_FOUND, b"not found\n", TEXT)


class LocalServer(ThreadingHTTPServer):
    """Serves on 127.0.0.1 only, to this machine's own names for it: each connection on its own
    thread, at most `max_connections` at once, each closed after `socket_timeout` idle seconds.
    A browser that goes away mid-request is not an error."""

    daemon_threads = True

    def __init__(self, handler: type[LocalHandler], port: int, notify: Callable[[str], None] = lambda _: None,
                 socket_timeout: float = SOCKET_TIMEOUT, max_connections: int = MAX_CONNECTIONS) -> None:
        self.notify = notify
        self.socket_timeout = socket_timeout
        self._slots = threading.BoundedSemaphore(max_connections)
        try:
            super().__init__(("127.0.0.1", port), handler)
        except OSError as e:
            raise UserError(f"cannot listen on 127.0.0.1:{port} ({e.strerror}); choose another --port") from None
        bound = self.server_address[1]
        self.hosts = frozenset(f"{h}:{bound}" for h in LOCAL_HOSTS) | (frozenset(LOCAL_HOSTS) if bound == 80 else frozenset())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"

    def process_request(self, request, client_address) -> None:  # noqa: ANN001 - stdlib signature
        """A thread for the connection if a slot is free; else a short 503 from this thread."""
        if not self._slots.acquire(blocking=False):
            with contextlib.suppress(OSError):
                request.sendall(BUSY)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:  # noqa: ANN001 - stdlib signature
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address) -> None:  # noqa: ANN001 - stdlib signature
        """A dropped or timed-out connection is routine (a closed tab, a sleeping laptop): silent.
        Anything else is one line, not the stdlib's traceback."""
        error = sys.exc_info()[1]
        if not isinstance(error, (ConnectionError, TimeoutError)):
            self.notify(f"a request from {client_address[0]} failed: {type(error).__name__}: {error}")
