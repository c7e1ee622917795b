"""HTTP GET with hard limits, for a crawler of the open web (`colorize crawl`).

Libraries such as `requests` read whole bodies into memory, apply their timeout to each socket
read (a server trickling one byte a second never times out) and follow many redirects. Here
every fetch has a hard wall-clock deadline (a watchdog shuts the socket), a byte cap checked
while reading, http/https only (redirects to any other scheme are refused, at most
MAX_REDIRECTS hops), and a few retries for answers that may succeed a moment later.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import socket
import threading
import time
from dataclasses import dataclass
from urllib.parse import quote, urljoin, urlsplit

MAX_REDIRECTS = 5
# Connection errors that mean this machine has no route at all, rather than a server that said no.
NO_ROUTE = frozenset({errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN})
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"


@dataclass(frozen=True)
class Limits:
    """What one fetch may cost."""

    timeout: float = 20.0  # seconds per download, redirects and retries included
    max_bytes: int = 20 * 2**20
    retries: int = 2  # extra tries after a 5xx/429 answer or a dropped connection
    retry_wait: float = 0.5  # seconds before the first extra try, doubling after


class FetchError(Exception):
    """No body within the limits; `detail` says why. `network`: no server was reached at all
    (the name did not resolve, or there is no route)."""

    def __init__(self, detail: str, retry: bool = False, network: bool = False):
        super().__init__(detail)
        self.detail, self.retry, self.network = detail, retry, network


class FetchTimeout(FetchError):
    """No complete answer before the deadline."""


class TooManyBytes(FetchError):
    """The body is (or is announced as) larger than allowed."""


def request_target(url: str) -> tuple[str, str, int | None, str]:
    """(scheme, ASCII host, port, path?query) of an http(s) URL; FetchError otherwise."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
        host = (parts.hostname or "").encode("idna").decode("ascii")
    except (ValueError, UnicodeError) as e:
        raise FetchError(f"bad URL ({e})") from None
    if parts.scheme not in ("http", "https") or not host:
        raise FetchError("not an http(s) URL")
    safe = "/%:@!$&'()*+,;=-._~"
    target = quote(parts.path or "/", safe=safe) + ("?" + quote(parts.query, safe=safe + "?") if parts.query else "")
    return parts.scheme, host, port, target


def _watch(sock: socket.socket, deadline: float, done: threading.Event, stop: threading.Event) -> None:
    """Watchdog thread: at the deadline, or when the caller stops (Ctrl-C), shut the socket so
    that the blocked read in the downloading thread fails at once."""
    while not done.wait(min(0.25, max(0.0, deadline - time.monotonic()))):
        if stop.is_set() or time.monotonic() >= deadline:
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the plain-socket method, also under TLS
            return


def _read_body(resp: http.client.HTTPResponse, max_bytes: int, deadline: float) -> bytes:
    """A 200 answer's body, refused as soon as it is known to be larger than max_bytes."""
    declared = resp.getheader("Content-Length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise TooManyBytes(f"{int(declared)} bytes announced, limit {max_bytes}")
    body = bytearray()
    while chunk := resp.read1(1 << 16):
        body += chunk
        if len(body) > max_bytes:
            raise TooManyBytes(f"more than {max_bytes} bytes")
    if time.monotonic() >= deadline:  # the watchdog's shutdown reads as end of data
        raise FetchTimeout("time limit reached")
    return bytes(body)


def _redirect(url: str, resp: http.client.HTTPResponse) -> str:
    """Where a redirect answer points, if that is an http(s) URL."""
    location = resp.getheader("Location")
    if not location:
        raise FetchError(f"HTTP {resp.status} redirect without a Location")
    new = urljoin(url, location.strip())
    if (scheme := urlsplit(new).scheme) not in ("http", "https"):
        raise FetchError(f"redirect to {scheme or 'a non-http'}: URL refused")
    return new


def _connection_error(e: Exception, host: str, port: int, deadline: float, stop: threading.Event) -> FetchError:
    """The FetchError that a failed connection, request or read stands for."""
    if stop.is_set():
        return FetchError("interrupted")
    if isinstance(e, TimeoutError) or time.monotonic() >= deadline:
        return FetchTimeout("time limit reached")
    if isinstance(e, socket.gaierror):
        return FetchError(f"cannot resolve {host} ({e.strerror})", network=True)
    if isinstance(e, OSError) and e.errno in NO_ROUTE:
        return FetchError(f"cannot reach {host} ({e.strerror})", network=True)
    if isinstance(e, ConnectionRefusedError):
        return FetchError(f"connection refused by {host}:{port}")
    dropped = isinstance(e, (ConnectionResetError, http.client.RemoteDisconnected))
    return FetchError(f"{type(e).__name__}: {e}".rstrip(": "), retry=dropped)


def _get_once(url: str, max_bytes: int, deadline: float, headers: dict[str, str], stop: threading.Event) -> bytes:
    """One attempt. Redirects are followed here, not by a library, so that every hop is checked."""
    for _ in range(MAX_REDIRECTS + 1):
        scheme, host, port, target = request_target(url)
        left = deadline - time.monotonic()
        if left <= 0:
            raise FetchTimeout("time limit reached")
        conn_cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
        conn = conn_cls(host, port, timeout=left)
        done = threading.Event()
        try:
            conn.connect()
            threading.Thread(target=_watch, args=(conn.sock, deadline, done, stop), daemon=True).start()
            conn.request("GET", target, headers=headers)
            resp = conn.getresponse()
            if resp.status in (301, 302, 303, 307, 308):
                url = _redirect(url, resp)
                continue
            if resp.status != 200:
                raise FetchError(f"HTTP {resp.status} {resp.reason}".strip(), retry=resp.status >= 500 or resp.status == 429)
            return _read_body(resp, max_bytes, deadline)
        except (OSError, http.client.HTTPException, ValueError) as e:
            raise _connection_error(e, host, conn.port, deadline, stop) from None
        finally:
            done.set()
            conn.close()
    raise FetchError(f"more than {MAX_REDIRECTS} redirects")


def fetch(url: str, limits: Limits, max_bytes: int | None = None, referer: str | None = None,
          stop: threading.Event | None = None) -> bytes:
    """GET url within limits.timeout seconds in all and max_bytes (default limits.max_bytes);
    FetchError (FetchTimeout, TooManyBytes) else.

    5xx/429 answers and dropped connections are retried (limits.retries) while time is left.
    Setting `stop` ends the download early (FetchError).
    """
    stop = stop or threading.Event()
    deadline = time.monotonic() + limits.timeout
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", "Accept": "*/*"}
    if referer:
        headers["Referer"] = referer
    for attempt in range(limits.retries + 1):
        try:
            return _get_once(url, limits.max_bytes if max_bytes is None else max_bytes, deadline, headers, stop)
        except FetchTimeout:
            raise FetchTimeout(f"no complete answer within {limits.timeout:g} s") from None
        except FetchError as e:
            pause = limits.retry_wait * 2**attempt
            if not e.retry or attempt == limits.retries or time.monotonic() + pause >= deadline:
                raise
            if stop.wait(pause):
                raise FetchError("interrupted") from None
    raise AssertionError("unreachable")
