"""`colorize app`: guided colorization in the browser, served on 127.0.0.1 (offline).

Open or drop photos; each comes back colorized. A click on the photo puts a colour hint there
(`hints.Hint`), the photo recolours after every change, and the result downloads as a
full-resolution PNG, with its hints as a `colorize infer --hints` file.

Why the work is split this way: decoding a photo and making its working copy
(`Colorizer.prepare`) is done once, when it is opened. A change of hints only places them on
that copy (`Colorizer.place`), runs the network on it (`predict`, a few hundred pixels a side
whatever the photo's size) and composes the result (`finish`) at screen size: under the gray
of at most PREVIEW_SIDE pixels a side made when the photo was opened, since composing and
encoding 12 MP took most of a second, and no screen shows more. The page shows a JPEG of that
(about 10 ms for 1 MP, where a PNG takes 100-400 ms); the PNG is made only for a download, at
full resolution from the same hints, so it equals `colorize infer --hints` exactly.

The page keeps the hints and their undo history; the server keeps the prepared photos, in
memory only (the last MAX_PHOTOS, within PIXEL_BUDGET), and writes nothing to disk. One
network pass at a time (a lock): the CPU does not gain from two, and memory stays bounded.

HTTP API (127.0.0.1 only, to this machine's own names for it, and POSTs only from its own page
or from programs other than a browser: `localserver`, 403 otherwise); errors are
{"error": "one line"} with a 4xx status (503: busy, try again):
    GET  /, /app.js, /app.css            the page (package assets: no CDN, no fonts fetched)
    GET  /api/info                       {"model", "hints": bool, "max_upload", "max_hints"}
    POST /api/photos?name=NAME           the file's bytes -> 201 {"id", "name", "width", "height"};
                                         413 past MAX_UPLOAD (before reading it), 422 not a usable photo
    GET  /api/photos/ID/gray.jpg         the photo in gray, as the network sees it (the "before"), at screen size
    POST /api/photos/ID/colorized.jpg    {"hints": [{"x", "y", "color": "#rrggbb"}, ...]} -> JPEG preview, screen size
    POST /api/photos/ID/colorized.png    the same body -> the full-resolution PNG
    POST /api/photos/ID/hints.json       the same body -> {"NAME": [hints]}, `colorize infer --hints` format
The three hint routes take only Content-Type: application/json (415 otherwise), which a page of
another site cannot send here without a CORS preflight, and the server grants none. Hint
coordinates are whole pixels of the upright photo (EXIF orientation applied), as in
`hints.Hint`. A photo that is not open here (dropped from memory, or opened before the app was
restarted) answers 410 Gone, and the page opens its file again.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import secrets
import threading
import webbrowser
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from http import HTTPStatus
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from PIL import Image
from rich.console import Console
from rich.markup import escape

from colorize_cli.device import Device
from colorize_cli.errors import UserError, one_line
from colorize_cli.hints import Hint, hints_json, parse_color
from colorize_cli.imageio import ImageError, open_image
from colorize_cli.localserver import MAX_CONNECTIONS, SOCKET_TIMEOUT, BadRequest, LocalHandler, LocalServer

if TYPE_CHECKING:
    from colorize_cli.colorizer import Colorizer, Prepared

MAX_UPLOAD = 64 * 2**20  # bytes of one photo file; larger uploads are refused unread (413)
# Uploads read into memory at once (each until its photo is decoded); another waits for one of
# them to finish, at most UPLOAD_WAIT seconds (then 503), its bytes still unread in the socket.
MAX_UPLOADS = 2
UPLOAD_WAIT = 60.0
MAX_JSON = 64 * 2**10  # bytes of a hints request: MAX_HINTS hints fit many times over
MAX_HINTS = 256  # hints on one photo
MAX_COORDINATE = 2**31  # |x|, |y| of a hint past which it is refused before any arithmetic (no photo is that large)
# Photos kept in memory: at most MAX_PHOTOS, and the oldest dropped while their grays (full size and
# screen size) add up to more than PIXEL_BUDGET pixels (one byte each; the newest photo is always kept).
MAX_PHOTOS = 16
PIXEL_BUDGET = 200_000_000
PREVIEW_QUALITY = 90  # JPEG quality of what the page shows; downloads are lossless PNG
PREVIEW_SIDE = 2048  # px on the long side of what the page shows, at most (a 4K screen's width; downloads: full size)
MAX_NAME = 255  # characters of a photo's file name kept
ASSETS = {"/": ("index.html", "text/html; charset=utf-8"), "/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/app.css": ("app.css", "text/css; charset=utf-8")}
PHOTO_ROUTE = re.compile(r"/api/photos/(?P<id>[0-9a-f]{16})/(?P<what>gray\.jpg|colorized\.jpg|colorized\.png|hints\.json)")
COLOR = re.compile(r"#[0-9a-fA-F]{6}")


@dataclass(frozen=True)
class AppConfig:
    """`colorize app`'s options."""

    model: str | None = None  # a bundled model's name, a run folder or a .safetensors file; None: the default bundled model
    device: Device = "auto"
    port: int = 0  # on 127.0.0.1; 0: any free one
    browser: bool = True  # open the page in the default browser


@dataclass
class Photo:
    """An opened photo: its file name (the key of its hints file), its prepared working copy and
    its gray at screen size (`preview_gray`; the full-size gray itself where that is small enough)."""

    name: str
    item: Prepared
    preview: Image.Image

    @property
    def pixels(self) -> int:
        """Bytes of its grays: the full-size one, and the preview where that is another image."""
        grays = (self.item.gray,) if self.preview is self.item.gray else (self.item.gray, self.preview)
        return sum(g.width * g.height for g in grays)


class Session:
    """The photos opened in this run of the app and the colorizer they go through. Decoding and
    network passes take the one lock: one at a time, so memory stays bounded however many
    requests come at once."""

    def __init__(self, colorizer: Colorizer, max_photos: int = MAX_PHOTOS, pixel_budget: int = PIXEL_BUDGET) -> None:
        self.colorizer = colorizer
        self.max_photos = max_photos
        self.pixel_budget = pixel_budget
        self.photos: OrderedDict[str, Photo] = OrderedDict()  # least recently used first
        self.lock = threading.Lock()

    def info(self) -> dict:
        return {"model": self.colorizer.source, "hints": self.colorizer.cfg.hints,
                "max_upload": MAX_UPLOAD, "max_hints": MAX_HINTS}

    def open(self, data: bytes, name: str) -> tuple[str, Photo]:
        """Decode and prepare an uploaded photo; its new id. Older photos are dropped past the
        limits. An unusable file is a BadRequest (422) naming it."""
        with self.lock:
            try:
                img = open_image(data)
            except ImageError as e:  # its message names the source "<bytes>": name the file instead
                raise BadRequest(f"{name}: {str(e).removeprefix('<bytes>: ')}",
                                 HTTPStatus.UNPROCESSABLE_ENTITY) from None
            item = self.colorizer.prepare(img)
            photo = Photo(name, item, preview_gray(item.gray))
            pid = secrets.token_hex(8)
            self.photos[pid] = photo
            while len(self.photos) > 1 and (len(self.photos) > self.max_photos
                                            or sum(p.pixels for p in self.photos.values()) > self.pixel_budget):
                self.photos.popitem(last=False)
        return pid, photo

    def photo(self, pid: str) -> Photo:
        """An opened photo, now the most recently used; 410 Gone once it has been dropped (or
        for an id from before the app was restarted: the page opens the file again either way)."""
        with self.lock:
            if pid not in self.photos:
                raise BadRequest("this photo is no longer open here (the app keeps the most recent ones); "
                                 "open it again", HTTPStatus.GONE)
            self.photos.move_to_end(pid)
            return self.photos[pid]

    def _placed(self, photo: Photo, hints: list[Hint]) -> Prepared:
        try:
            return self.colorizer.place(photo.item, hints)
        except UserError as e:  # a hint outside the photo, or a model without hint inputs
            raise BadRequest(str(e)) from None

    def colorize(self, pid: str, hints: list[Hint], full: bool = True) -> Image.Image:
        """The colorization of an opened photo with these hints: at full resolution what
        `Colorizer.colorize` gives the same photo and hints, pixel for pixel; else (`full` False)
        the same network output composed under its screen-size gray."""
        photo = self.photo(pid)
        item = self._placed(photo, hints)
        with self.lock:
            out = self.colorizer.predict([item])[0]
            return self.colorizer.finish(item if full else replace(item, gray=photo.preview), out)

    def hints_file(self, pid: str, hints: list[Hint]) -> str:
        """The `colorize infer --hints` file for an opened photo and these hints (checked as
        `colorize` would check them)."""
        photo = self.photo(pid)
        self._placed(photo, hints)
        return hints_json({photo.name: hints})


def preview_gray(gray: Image.Image) -> Image.Image:
    """A gray photo scaled down to PREVIEW_SIDE on its long side (itself if no larger)."""
    scale = PREVIEW_SIDE / max(gray.size)
    if scale >= 1:
        return gray
    return gray.resize((max(1, round(gray.width * scale)), max(1, round(gray.height * scale))), Image.Resampling.LANCZOS)


def parse_hints(body: object) -> list[Hint]:
    """The hints of a request body: {"hints": [{"x": int, "y": int, "color": "#rrggbb"}, ...]}."""
    if not isinstance(body, dict) or set(body) != {"hints"} or not isinstance(body["hints"], list):
        raise BadRequest('send {"hints": [{"x": .., "y": .., "color": "#rrggbb"}, ...]}')
    if len(body["hints"]) > MAX_HINTS:
        raise BadRequest(f"at most {MAX_HINTS} hints a photo")
    hints = []
    for item in body["hints"]:
        if not (isinstance(item, dict) and set(item) == {"x", "y", "color"} and type(item["x"]) is int
                and type(item["y"]) is int and isinstance(item["color"], str) and COLOR.fullmatch(item["color"])):
            raise BadRequest('a hint is {"x": whole pixels, "y": whole pixels, "color": "#rrggbb"}')
        if max(abs(item["x"]), abs(item["y"])) >= MAX_COORDINATE:  # float() of a huge int overflows
            raise BadRequest("a hint's x and y are pixels of the photo: this one lies far outside it")
        hints.append(Hint(float(item["x"]), float(item["y"]), parse_color(item["color"])))
    return hints


def parse_json(data: bytes) -> object:
    """A request body's JSON. Not JSON, a number too long for Python to read (past its
    4300-digit limit) or nesting too deep to parse are each a BadRequest, never a server error."""
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadRequest("the body is not valid JSON") from None
    except (ValueError, OverflowError):  # int("9" * 5000) raises ValueError since Python 3.11
        raise BadRequest("the body holds a number too long to read") from None
    except RecursionError:
        raise BadRequest("the body's JSON is nested too deeply") from None


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def photo_name(query: str) -> str:
    """The file name the page gives an upload (?name=...): its last path part, on one line."""
    name = one_line(parse_qs(query).get("name", [""])[0].replace("\\", "/").rsplit("/", 1)[-1])[:MAX_NAME]
    return name or "photo"


class _Handler(LocalHandler):
    server: AppServer
    server_version = "colorize-app"
    csp = "default-src 'self'; img-src 'self' blob:"  # previews arrive as blobs

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        route = urlsplit(self.path).path
        if route in self.server.assets:
            self._send(HTTPStatus.OK, *self.server.assets[route])
        elif route == "/api/info":
            self._json(HTTPStatus.OK, self.server.session.info())
        elif (m := PHOTO_ROUTE.fullmatch(route)) and m["what"] == "gray.jpg":
            try:
                gray = self.server.session.photo(m["id"]).preview
            except BadRequest as e:
                self._json(e.status, {"error": str(e)})
                return
            self._send(HTTPStatus.OK, encode(gray, "JPEG", quality=PREVIEW_QUALITY), "image/jpeg")
        else:
            self._not_found()

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        url = urlsplit(self.path)
        m = PHOTO_ROUTE.fullmatch(url.path)
        try:
            if url.path == "/api/photos":
                pid, photo = self._open(photo_name(url.query))
                self.server.notify(f"opened {photo.name} ({photo.item.gray.width}x{photo.item.gray.height})")
                self._json(HTTPStatus.CREATED, {"id": pid, "name": photo.name, "width": photo.item.gray.width,
                                                "height": photo.item.gray.height})
            elif m and m["what"] != "gray.jpg":
                self._photo_result(m["id"], m["what"])
            else:
                self._not_found()
        except BadRequest as e:
            self._json(e.status, {"error": str(e)})
        except (ConnectionError, TimeoutError):
            raise  # the browser went away: routine (`LocalServer.handle_error`)
        except Exception as e:  # noqa: BLE001 - a bug or a damaged model: said on the page, and the app goes on
            message = f"{type(e).__name__}: {e}" if not isinstance(e, UserError) else str(e)
            self.server.notify(f"failed: {message}")
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": one_line(message)})

    def _photo_result(self, pid: str, what: str) -> None:
        if self.headers.get_content_type() != "application/json":
            self.close_connection = True  # its body is not read
            raise BadRequest('send the hints as JSON (Content-Type: application/json)',
                             HTTPStatus.UNSUPPORTED_MEDIA_TYPE)
        hints = parse_hints(parse_json(self._body(MAX_JSON)))
        if what == "hints.json":
            self._send(HTTPStatus.OK, self.server.session.hints_file(pid, hints).encode(), "application/json")
            return
        img = self.server.session.colorize(pid, hints, full=what == "colorized.png")
        if what == "colorized.png":
            self._send(HTTPStatus.OK, encode(img, "PNG"), "image/png")
        else:
            self._send(HTTPStatus.OK, encode(img, "JPEG", quality=PREVIEW_QUALITY), "image/jpeg")

    def _open(self, name: str) -> tuple[str, Photo]:
        """Read an uploaded photo and open it: at most MAX_UPLOADS at once, so that uploads in
        memory are bounded however many connections send them (`AppServer.uploads`)."""
        length = self._length(MAX_UPLOAD)
        if not self.server.uploads.acquire(timeout=self.server.upload_wait):
            self.close_connection = True  # its body is not read
            raise BadRequest("busy opening other photos; try again", HTTPStatus.SERVICE_UNAVAILABLE)
        try:
            return self.server.session.open(self.rfile.read(length), name)
        finally:
            self.server.uploads.release()

    def _body(self, limit: int) -> bytes:
        return self.rfile.read(self._length(limit))

    def _length(self, limit: int) -> int:
        """The request body's length, refused (413, the body unread and the connection closed)
        past `limit` bytes."""
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise BadRequest("a Content-Length is required", HTTPStatus.LENGTH_REQUIRED) from None
        if length > limit:
            self.close_connection = True
            raise BadRequest(f"too large: {length:,} bytes, and this app accepts at most {limit:,}",
                             HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        if length <= 0:
            raise BadRequest("the body is empty")
        return length


class AppServer(LocalServer):
    """Serves the app for one `Session` (`localserver.LocalServer`: 127.0.0.1 only, bounded connections)."""

    def __init__(self, session: Session, port: int, notify: Callable[[str], None] = lambda _: None,
                 socket_timeout: float = SOCKET_TIMEOUT, max_connections: int = MAX_CONNECTIONS,
                 max_uploads: int = MAX_UPLOADS, upload_wait: float = UPLOAD_WAIT) -> None:
        self.session = session
        self.uploads = threading.BoundedSemaphore(max_uploads)  # uploads being read or decoded
        self.upload_wait = upload_wait
        folder = resources.files("colorize_cli") / "app_assets"
        self.assets = {route: ((folder / name).read_bytes(), ctype) for route, (name, ctype) in ASSETS.items()}
        super().__init__(_Handler, port, notify, socket_timeout, max_connections)


def serve(cfg: AppConfig, console: Console) -> None:
    """Load the model, serve the app until Ctrl-C and open it in the browser (unless told not to)."""
    from colorize_cli.colorizer import Colorizer  # torch loads only when the app runs

    colorizer = Colorizer.load(cfg.model, cfg.device)
    log = lambda m: console.print(escape(m), soft_wrap=True)  # noqa: E731
    with AppServer(Session(colorizer), cfg.port, notify=log) as server:
        log(f"model {colorizer.source} on {colorizer.device}"
            + ("" if colorizer.cfg.hints else "; it takes no colour hints, so photos are colorized automatically only"))
        log(f"colorize app at {server.url} (127.0.0.1 only; Ctrl-C stops)")
        if cfg.browser:
            webbrowser.open(server.url)
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
    log("stopped")
