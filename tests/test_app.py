"""`colorize app`: the guided-colorization server (uploads, recolouring with hints, the
downloads, its limits, its Host and origin checks), the command, and the page in headless
Chromium."""

from __future__ import annotations

import base64
import http.client
import io
import json
import queue
import socket
import threading
import webbrowser
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clirun import run_cli
from localweb import browser_or_skip, get_with_host, serving
from colorize_cli.app import MAX_HINTS, MAX_UPLOAD, PREVIEW_QUALITY, AppServer, Session, encode
from colorize_cli.browser import launch, recoloured
from colorize_cli.checkpoint import save_checkpoint
from colorize_cli.colorizer import Colorizer
from colorize_cli.hints import GUESS, Hint, read_hints_file
from colorize_cli.imageio import open_image
from colorize_cli.model import ModelConfig, build

CFG = ModelConfig(size=32, width=8)  # hint-aware, as every new model


def checkpoint(folder: Path, cfg: ModelConfig) -> Path:
    """A tiny untrained generator: fast, and its output does depend on the hints."""
    torch.manual_seed(0)
    g, _ = build(cfg)
    path = folder / "tiny.safetensors"
    save_checkpoint(path, {f"generator.{k}": v for k, v in g.state_dict().items()}, cfg)
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return checkpoint(tmp_path_factory.mktemp("model"), CFG)


@pytest.fixture(scope="module")
def colorizer(model: Path) -> Colorizer:
    return Colorizer.load(model, "cpu")


def picture(width: int, height: int) -> Image.Image:
    """Smooth colour gradients with a little noise, mid-gray on average."""
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([60 + 120 * x / width, 60 + 120 * y / height, 180 - 100 * (x + y) / (width + height)], -1)
    return Image.fromarray(np.clip(rgb + rng.integers(-10, 10, rgb.shape), 0, 255).astype(np.uint8), "RGB")


@pytest.fixture(scope="module")
def rotated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A JPEG stored 64x48 with EXIF orientation 6: upright it is 48x64, and hints are placed upright."""
    path = tmp_path_factory.mktemp("photos") / "turned photo.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    picture(64, 48).save(path, quality=95, exif=exif)
    return path


@pytest.fixture
def server(colorizer: Colorizer):
    with serving(AppServer(Session(colorizer), port=0)) as srv:
        yield srv


def call(srv: AppServer, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, bytes, http.client.HTTPResponse]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read(), resp
    finally:
        conn.close()


def upload(srv: AppServer, data: bytes, name: str = "photo.png") -> tuple[int, dict]:
    status, body, _ = call(srv, "POST", f"/api/photos?name={name.replace(' ', '%20')}", data)
    return status, json.loads(body)


JSON = {"Content-Type": "application/json"}


def hinted(srv: AppServer, pid: str, what: str, hints: list) -> tuple[int, bytes]:
    status, body, _ = call(srv, "POST", f"/api/photos/{pid}/{what}", json.dumps({"hints": hints}).encode(), JSON)
    return status, body


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


HINTS = [{"x": 5, "y": 60, "color": "#ff0000"}, {"x": 40, "y": 3, "color": "#2050c0"}]
AS_HINTS = [Hint(5.0, 60.0, (255, 0, 0)), Hint(40.0, 3.0, (0x20, 0x50, 0xC0))]


# --- the API --------------------------------------------------------------------------------


def test_a_photo_recolours_and_downloads_exactly_what_colorize_gives(server, model, colorizer, rotated, tmp_path,
                                                                     capsys):
    status, meta = upload(server, rotated.read_bytes(), rotated.name)
    assert status == 201 and (meta["name"], meta["width"], meta["height"]) == (rotated.name, 48, 64)
    pid = meta["id"]
    status, gray, resp = call(server, "GET", f"/api/photos/{pid}/gray.jpg")
    assert status == 200 and resp.getheader("Content-Type") == "image/jpeg" and pixels(gray).shape == (64, 48, 3)

    status, png = hinted(server, pid, "colorized.png", HINTS)
    assert status == 200
    photo = open_image(rotated)
    assert np.array_equal(pixels(png), np.asarray(colorizer.colorize(photo, AS_HINTS)))
    status, plain = hinted(server, pid, "colorized.png", [])
    assert np.array_equal(pixels(plain), np.asarray(colorizer.colorize(photo)))
    assert not np.array_equal(pixels(plain), pixels(png))  # the hints reached the network
    status, preview = hinted(server, pid, "colorized.jpg", HINTS)
    assert status == 200 and pixels(preview).shape == (64, 48, 3)
    assert np.abs(pixels(preview).astype(int) - pixels(png)).mean() < 4  # a JPEG of the same

    status, text = hinted(server, pid, "hints.json", HINTS)
    assert status == 200 and json.loads(text) == {rotated.name: HINTS}  # whole pixels stay whole numbers
    (tmp_path / "hints.json").write_bytes(text)
    assert read_hints_file(tmp_path / "hints.json") == {rotated.name: AS_HINTS}
    code, out, err = run_cli(capsys, "infer", rotated, tmp_path / "out.png", "--model", model, "--device", "cpu",
                             "--hints", tmp_path / "hints.json")
    assert code == 0, err
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")), pixels(png))


def test_a_large_photo_is_shown_at_screen_size_and_downloads_at_full_size(colorizer, monkeypatch):
    """Past PREVIEW_SIDE on its long side, the page's before and after are scaled down to it (the
    network's output composed under the smaller gray); the PNG download stays full size and
    exactly what colorize gives."""
    monkeypatch.setattr("colorize_cli.app.PREVIEW_SIDE", 40)
    photo = picture(100, 75)
    with serving(AppServer(Session(colorizer), port=0)) as srv:
        status, meta = upload(srv, encode(photo, "PNG"))
        pid = meta["id"]
        assert status == 201 and (meta["width"], meta["height"]) == (100, 75)  # hints stay in full-size pixels
        _, gray, _ = call(srv, "GET", f"/api/photos/{pid}/gray.jpg")
        status, preview = hinted(srv, pid, "colorized.jpg", HINTS[:1])
        status_png, png = hinted(srv, pid, "colorized.png", HINTS[:1])
    assert pixels(gray).shape == pixels(preview).shape == (30, 40, 3) and status == status_png == 200
    assert np.array_equal(pixels(png), np.asarray(colorizer.colorize(photo, AS_HINTS[:1])))
    small = photo.convert("L").resize((40, 30), Image.Resampling.LANCZOS)
    item = colorizer.prepare(photo, AS_HINTS[:1])
    want = colorizer.finish(replace(item, gray=small), colorizer.predict([item])[0])
    want_jpeg = io.BytesIO()
    want.save(want_jpeg, "JPEG", quality=PREVIEW_QUALITY)
    assert np.array_equal(pixels(preview), pixels(want_jpeg.getvalue()))


def test_the_page_is_served_offline_with_a_strict_policy(server, colorizer):
    status, page, resp = call(server, "GET", "/")
    assert status == 200 and b'src="app.js"' in page and b"http" not in page  # nothing fetched from elsewhere
    assert resp.getheader("Content-Security-Policy") == "default-src 'self'; img-src 'self' blob:"
    for path, ctype in (("/app.js", "text/javascript"), ("/app.css", "text/css")):
        status, body, resp = call(server, "GET", path)
        assert status == 200 and resp.getheader("Content-Type").startswith(ctype) and b"http" not in body
    assert call(server, "GET", "/app.py")[0] == 404
    status, body, _ = call(server, "GET", "/api/info")
    assert json.loads(body) == {"model": colorizer.source, "hints": True, "max_upload": MAX_UPLOAD,
                                "max_hints": MAX_HINTS}


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("kind, reason", [
    ("text", "not an image (unrecognised data)"),
    ("truncated", "cannot decode"),
    ("tiny", "8x8 px is too small"),
    ("bomb", "dimensions past the decompression-bomb limit"),
])
def test_a_bad_upload_is_a_message_and_the_server_goes_on(server, monkeypatch, kind, reason):
    data = {"text": b"hello", "truncated": _png(picture(64, 64))[:300], "tiny": _png(picture(8, 8)),
            "bomb": _png(picture(64, 64))}[kind]
    if kind == "bomb":
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # so a 64x64 photo is "huge"
    status, body = upload(server, data, "bad.png")
    assert status == 422 and body["error"].startswith(f"bad.png: {reason}")
    monkeypatch.undo()
    status, _ = upload(server, _png(picture(40, 30)))
    assert status == 201


def test_an_oversize_upload_is_refused_before_it_is_read(server):
    port = server.server_address[1]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"POST /api/photos?name=big.tif HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                     f"Content-Length: {MAX_UPLOAD + 1}\r\n\r\n".encode())
        reply = b"".join(iter(lambda: sock.recv(4096), b""))  # the server does not wait for the body
    assert reply.startswith(b"HTTP/1.0 413 ")
    assert reply.endswith(f'{{"error": "too large: {MAX_UPLOAD + 1:,} bytes, and this app accepts at most '
                          f'{MAX_UPLOAD:,}"}}'.encode())


def _hint(x: str, y: str = "2") -> bytes:
    return f'{{"hints": [{{"x": {x}, "y": {y}, "color": "#ff0000"}}]}}'.encode()


@pytest.mark.parametrize("body, status, message", [
    (b"{", 400, "the body is not valid JSON"),
    (b'{"hints": "5,5,red"}', 400, 'send {"hints"'),
    (_hint("1.5"), 400, "a hint is"),
    (b'{"hints": [{"x": 1, "y": 2, "color": "red"}]}', 400, "a hint is"),
    (_hint("48"), 400, "hint 48,2,#ff0000 lies outside the 48x64 photo"),
    (json.dumps({"hints": [{"x": 1, "y": 1, "color": "#ffffff"}] * (MAX_HINTS + 1)}).encode(), 400, "at most"),
    # Huge numbers: a float that is infinite, an int past float's range, one past Python's digits limit.
    (_hint("1e400"), 400, "a hint is"),
    (_hint("-1" + "0" * 400, "1" + "0" * 400), 400, "this one lies far outside it"),
    (_hint("1" + "0" * 5000), 400, "the body holds a number too long to read"),
    (_hint("2147483648"), 400, "this one lies far outside it"),
    (b"[" * 30_000 + b"]" * 30_000, 400, "nested too deeply"),
], ids=lambda v: v[:40] if isinstance(v, bytes) else None)
def test_bad_hints_are_refused_with_a_message(server, rotated, body, status, message):
    pid = upload(server, rotated.read_bytes())[1]["id"]
    for what in ("colorized.jpg", "colorized.png", "hints.json"):
        got, reply, _ = call(server, "POST", f"/api/photos/{pid}/{what}", body, JSON)
        assert got == status and message in json.loads(reply)["error"]


@pytest.mark.parametrize("ctype", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_hints_are_taken_only_as_json(server, rotated, ctype):
    """A page of another site can send these types without asking first (no CORS preflight)."""
    pid = upload(server, rotated.read_bytes())[1]["id"]
    body = json.dumps({"hints": HINTS}).encode()
    for what in ("colorized.jpg", "colorized.png", "hints.json"):
        status, reply, _ = call(server, "POST", f"/api/photos/{pid}/{what}", body,
                                {} if ctype is None else {"Content-Type": ctype})
        assert status == 415
        assert json.loads(reply) == {"error": "send the hints as JSON (Content-Type: application/json)"}
    status, _, _ = call(server, "POST", f"/api/photos/{pid}/hints.json", body,
                        {"Content-Type": "application/json; charset=utf-8"})
    assert status == 200


def test_old_photos_are_dropped_past_the_limits(colorizer):
    """A dropped photo is Gone (410), which the page answers by opening it again; any other
    missing thing stays Not Found (404)."""
    for session, kept in ((Session(colorizer, max_photos=2), 2), (Session(colorizer, pixel_budget=2 * 40 * 30), 2),
                          (Session(colorizer, pixel_budget=1), 1)):
        with serving(AppServer(session, port=0)) as srv:
            ids = [upload(srv, _png(picture(40, 30)))[1]["id"] for _ in range(3)]
            statuses = [hinted(srv, pid, "colorized.jpg", [])[0] for pid in ids]
            assert statuses == [410] * (3 - kept) + [200] * kept
            status, body = hinted(srv, ids[0], "colorized.jpg", [])
            assert "open it again" in json.loads(body)["error"]
            assert call(srv, "GET", f"/api/photos/{ids[0]}/gray.jpg")[0] == 410
            assert call(srv, "GET", f"/api/photos/{ids[-1]}/nothing.jpg")[0] == 404


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1:1", None])
def test_only_requests_for_this_host_are_answered(server, host):
    """DNS rebinding: a page on evil.example whose name now points at 127.0.0.1 must not use the app."""
    port = server.server_address[1]
    status = get_with_host(port, "/api/info", None if host is None else host.format(port=port))[0]
    assert status == (400 if host is None else 421)
    assert call(server, "GET", "/api/info")[0] == 200  # addressed to 127.0.0.1:PORT: answered


@pytest.mark.parametrize("headers", [
    {"Origin": "http://evil.example"},
    {"Origin": "null"},  # a sandboxed frame, a file:// page
    {"Origin": "https://127.0.0.1:{port}"},
    {"Origin": "http://127.0.0.1:1"},  # another local server
    {"Origin": "http://localhost:{port}", "Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},  # another port of localhost
])
def test_pages_of_other_sites_cannot_post(server, rotated, headers):
    """Any page the browser shows may send a POST here (a form, fetch with no-cors): the Host is
    right, so only the Origin and Sec-Fetch-Site the browser adds tell the app's page from another."""
    port = server.server_address[1]
    headers = {k: v.format(port=port) for k, v in headers.items()}
    pid = upload(server, rotated.read_bytes())[1]["id"]
    body = json.dumps({"hints": HINTS}).encode()
    for path, data, extra in ((f"/api/photos/{pid}/hints.json", body, JSON),
                              ("/api/photos?name=a.jpg", rotated.read_bytes(), {})):
        status, reply, resp = call(server, "POST", path, data, {**headers, **extra})
        assert status == 403 and resp.getheader("Content-Type") == "application/json"
        message = json.loads(reply)["error"]
        assert "only this server's own pages may send them" in message and "\n" not in message
    assert call(server, "GET", "/api/info", headers=headers)[0] == 200  # reading is not a change


def test_the_apps_own_page_and_other_programs_can_post(server, rotated):
    """The page at any of the names the Host check accepts; a request the user made themselves
    (Sec-Fetch-Site: none); a program other than a browser, which sends neither header."""
    port = server.server_address[1]
    for origin in (f"http://127.0.0.1:{port}", f"http://localhost:{port}", f"http://LOCALHOST:{port}",
                   f"http://[::1]:{port}", None):
        for site in ("same-origin", "none", None):
            headers = {**({"Origin": origin} if origin else {}), **({"Sec-Fetch-Site": site} if site else {})}
            status, reply, _ = call(server, "POST", "/api/photos?name=a.jpg", rotated.read_bytes(), headers)
            assert status == 201, headers
            status, _, _ = call(server, "POST", f"/api/photos/{json.loads(reply)['id']}/hints.json",
                                json.dumps({"hints": HINTS}).encode(), {**headers, **JSON})
            assert status == 200, headers


class WatchedSlots(threading.BoundedSemaphore):
    """AppServer.uploads that reports each upload that has a slot (on `taken`) and each one that
    starts to wait for one (on `waiting`), so that a test can act on them without sleeping."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.taken: queue.Queue[None] = queue.Queue()
        self.waiting: queue.Queue[None] = queue.Queue()

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        if super().acquire(blocking=False):
            self.taken.put(None)
            return True
        self.waiting.put(None)
        if super().acquire(blocking, -1 if timeout is None else timeout):
            self.taken.put(None)
            return True
        return False


def test_at_most_two_uploads_are_in_memory_at_once(colorizer):
    """Two uploads stalled half-way hold both slots: a third waits, its body unread, until one
    of them finishes (or is told to try again after `upload_wait`)."""
    data = _png(picture(40, 30))
    with serving(AppServer(Session(colorizer), port=0)) as srv:
        srv.uploads = WatchedSlots(2)
        port = srv.server_address[1]
        head = (f"POST /api/photos?name=held.png HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode()
        held = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(2)]
        try:
            for sock in held:
                sock.sendall(head + data[:100])
                srv.uploads.taken.get(timeout=30)
            srv.upload_wait = 0  # no slot free: told at once (its body not sent, as it is not read)
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                sock.sendall(head)
                reply = b"".join(iter(lambda: sock.recv(4096), b""))
            assert reply.startswith(b"HTTP/1.0 503 ")
            assert reply.endswith(b'{"error": "busy opening other photos; try again"}')
            srv.uploads.waiting.get(timeout=30)  # that one's attempt
            srv.upload_wait = 60
            third: queue.Queue[tuple[int, dict]] = queue.Queue()
            threading.Thread(target=lambda: third.put(upload(srv, data, "third.png")), daemon=True).start()
            srv.uploads.waiting.get(timeout=30)  # the third waits for a slot...
            assert srv.uploads.taken.empty()
            held[0].sendall(data[100:])  # ...until the first upload is done
            assert b"".join(iter(lambda: held[0].recv(4096), b"")).startswith(b"HTTP/1.0 201 ")
            status, meta = third.get(timeout=30)
            assert status == 201 and meta["name"] == "third.png"
            held[1].sendall(data[100:])
            assert b"".join(iter(lambda: held[1].recv(4096), b"")).startswith(b"HTTP/1.0 201 ")
        finally:
            for sock in held:
                sock.close()
    assert len(srv.session.photos) == 3


def test_a_model_without_hints_colorizes_but_refuses_hints(tmp_path):
    plain = Colorizer.load(checkpoint(tmp_path, ModelConfig(size=32, width=8, hints=False)), "cpu")
    with serving(AppServer(Session(plain), port=0)) as srv:
        assert json.loads(call(srv, "GET", "/api/info")[1])["hints"] is False
        pid = upload(srv, _png(picture(40, 30)))[1]["id"]
        assert hinted(srv, pid, "colorized.png", [])[0] == 200
        status, body = hinted(srv, pid, "colorized.jpg", HINTS[:1])
        assert status == 400 and "was trained without colour hints" in json.loads(body)["error"]


# --- the command ------------------------------------------------------------------------------


def test_the_command_serves_until_ctrl_c_and_opens_the_browser(model, capsys, monkeypatch):
    served, opened = [], []

    def serve_forever(self: AppServer, *args: object, **kwargs: object) -> None:
        served.append(self.url)
        raise KeyboardInterrupt

    monkeypatch.setattr(AppServer, "serve_forever", serve_forever)
    monkeypatch.setattr(webbrowser, "open", opened.append)
    code, out, err = run_cli(capsys, "app", "--model", model, "--device", "cpu")
    assert code == 0 and opened == served and len(served) == 1
    assert f"colorize app at {served[0]} (127.0.0.1 only; Ctrl-C stops)" in err and err.endswith("stopped\n")
    code, out, err = run_cli(capsys, "app", "--model", model, "--device", "cpu", "--no-browser")
    assert code == 0 and len(served) == 2 and len(opened) == 1


def test_a_taken_port_is_one_line(model, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, out, err = run_cli(capsys, "app", "--model", model, "--port", str(port), "--no-browser")
    assert code == 1
    assert err == f"error: cannot listen on 127.0.0.1:{port} (Address already in use); choose another --port\n"


# --- the page in a real browser -----------------------------------------------------------------


class FollowsHints(torch.nn.Module):
    """A stand-in generator that outputs the hints' lightness-aware spread (`hints.GUESS`, which a
    real generator's output is added to where the hints reach) and leaves a photo without hints
    gray: an untrained network moves colours in no particular direction, and the page test
    checks which way they go."""

    def forward(self, x: torch.Tensor, hints: torch.Tensor | None = None) -> torch.Tensor:
        return x.new_zeros(x.shape[0], 2, *x.shape[2:]) if hints is None else hints[:, GUESS].to(x.dtype)


SHOWN_RGB = """() => {
  const img = document.getElementById('color');
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const g = c.getContext('2d');
  g.drawImage(img, 0, 0);
  return [c.width, c.height, Array.from(g.getImageData(0, 0, c.width, c.height).data)];
}"""


def shown(page) -> np.ndarray:  # noqa: ANN001 - Playwright's page
    """The colorized photo as the page shows it, (H, W, 3) uint8."""
    width, height, rgba = page.evaluate(SHOWN_RGB)
    return np.array(rgba, dtype=np.uint8).reshape(height, width, 4)[..., :3]


def mean_rgb(page, x: int, y: int, r: int) -> np.ndarray:  # noqa: ANN001 - Playwright's page
    """The mean colour the page shows over the (2r+1)^2 pixels around (x, y)."""
    return shown(page)[y - r:y + r + 1, x - r:x + r + 1].reshape(-1, 3).mean(0)


def rendered(page, action) -> np.ndarray:  # noqa: ANN001 - Playwright's page
    """Do `action`, wait until the photo has been recoloured after it, and return the mean colour
    of the 5x5 pixels around (40, 60)."""
    recoloured(page, action)
    return mean_rgb(page, 40, 60, 2)


def spot(page, x: int, y: int, size: tuple[int, int] = (160, 120)) -> dict[str, float]:  # noqa: ANN001 - Playwright's page
    """Where pixel (x, y) of the photo (160x120 unless `size` says) is shown, from the frame's top-left corner."""
    box = page.locator("#frame").bounding_box()
    return {"x": (x + 0.5) * box["width"] / size[0], "y": (y + 0.5) * box["height"] / size[1]}


def test_guided_colorization_in_headless_chromium(tmp_path):
    sync_api = browser_or_skip()
    stand_in = Colorizer(FollowsHints(), CFG, torch.device("cpu"), source="follows-hints")
    path = tmp_path / "street.png"
    picture(160, 120).save(path)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a JPEG")
    picture(90, 120).save(tmp_path / "other.png")
    # The server keeps one photo: opening a second drops the first, which the page opens again.
    with serving(AppServer(Session(stand_in, max_photos=1), port=0)) as srv:
        with sync_api.sync_playwright() as p:
            browser = launch(p)
            try:
                page = browser.new_page(accept_downloads=True)
                errors, uploads = [], []
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.on("request", lambda r: uploads.append(r.url) if "/api/photos?" in r.url else None)
                page.goto(srv.url)
                page.wait_for_selector("#model:has-text('follows-hints')")
                page.set_input_files("#file", str(tmp_path / "broken.jpg"))
                page.wait_for_selector("#error:has-text('broken.jpg: not an image')")

                assert np.ptp(rendered(page, lambda: page.set_input_files("#file", str(path)))) < 3  # gray
                chosen = mean_rgb(page, 40, 60, 0)
                # A click adds a hint there, its picker set to the colour the model chose (gray).
                gray = rendered(page, lambda: page.click("#frame", position=spot(page, 40, 60)))
                picked = page.input_value("#hint-color")
                assert np.abs(np.array([int(picked[i:i + 2], 16) for i in (1, 3, 5)]) - chosen).max() <= 1
                assert np.ptp(gray) < 3
                red = rendered(page, lambda: page.fill("#hint-color", "#ff0000"))
                assert red[0] - red[1] > 60 and red[0] - red[2] > 60
                assert np.array_equal(rendered(page, lambda: page.keyboard.press("z")), gray)  # undo
                assert np.array_equal(rendered(page, lambda: page.keyboard.press("y")), red)  # redo

                # Drag the hint elsewhere, add a blue one, and a third that Delete removes again.
                def drag() -> None:
                    box = page.locator("#frame").bounding_box()
                    start, end = spot(page, 40, 60), spot(page, 100, 30)
                    page.mouse.move(box["x"] + start["x"], box["y"] + start["y"])
                    page.mouse.down()
                    page.mouse.move(box["x"] + end["x"], box["y"] + end["y"], steps=4)
                    page.mouse.up()

                rendered(page, drag)
                rendered(page, lambda: page.click("#frame", position=spot(page, 130, 100)))
                rendered(page, lambda: page.fill("#hint-color", "#0000ff"))
                rendered(page, lambda: page.click("#frame", position=spot(page, 10, 10)))
                rendered(page, lambda: page.keyboard.press("Delete"))
                assert page.locator(".hint").count() == 2
                page.keyboard.press("Space")  # before: the gray photo alone
                assert page.is_hidden("#color") and page.is_visible("#before-label")
                page.keyboard.press("Space")
                assert page.is_visible("#color")
                hints = ["100, 30: #ff0000", "130, 100: #0000ff"]
                assert page.locator(".hint").evaluate_all("(ms) => ms.map((m) => m.title)") == hints

                # An undo in the middle of a drag ends the drag and undoes it: later moves change nothing.
                def at(x: int, y: int) -> tuple[float, float]:
                    box, where = page.locator("#frame").bounding_box(), spot(page, x, y)
                    return box["x"] + where["x"], box["y"] + where["y"]

                page.mouse.move(*at(130, 100))
                page.mouse.down()
                rendered(page, lambda: page.mouse.move(*at(60, 60), steps=2))
                rendered(page, lambda: page.keyboard.press("z"))
                page.mouse.move(*at(20, 20), steps=2)
                page.mouse.up()
                assert page.locator(".hint").evaluate_all("(ms) => ms.map((m) => m.title)") == hints
                # So does one while a colour is being picked (input events; no change event yet),
                # and the change event when the picker closes adds no step (the redo is still there).
                pick = "(e, v) => { e.value = v; e.dispatchEvent(new Event('input')); }"
                rendered(page, lambda: page.locator("#hint-color").evaluate(pick, "#00ff00"))
                rendered(page, lambda: page.keyboard.press("z"))
                page.locator("#hint-color").dispatch_event("change")
                rendered(page, lambda: page.keyboard.press("y"))
                assert page.locator(".hint.selected").get_attribute("title") == "130, 100: #00ff00"
                rendered(page, lambda: page.keyboard.press("z"))
                assert page.locator(".hint").evaluate_all("(ms) => ms.map((m) => m.title)") == hints
                # Space on a focused control is the control's: it opens the colour picker, not "before".
                page.focus("#hint-color")
                page.keyboard.press("Space")
                assert page.is_visible("#color") and page.is_hidden("#before-label")
                page.keyboard.press("Escape")

                rendered(page, lambda: page.set_input_files("#file", str(tmp_path / "other.png")))
                rendered(page, lambda: page.click("#photos button >> nth=0"))
                assert page.locator(".hint").count() == 2

                # The server has dropped this photo: both downloads are refused (410) at once, and
                # the page opens the photo again once for the two.
                opened = len(uploads)
                saved = {}
                names = ("street-colorized.png", "street-hints.json")
                with page.expect_download(predicate=lambda d: d.suggested_filename == names[0]) as png, \
                        page.expect_download(predicate=lambda d: d.suggested_filename == names[1]) as text:
                    page.evaluate("(ids) => ids.forEach((id) => document.getElementById(id).click())",
                                  ["download-png", "download-hints"])
                for download in (png.value, text.value):
                    saved[download.suggested_filename] = tmp_path / download.suggested_filename
                    download.save_as(saved[download.suggested_filename])
                assert len(uploads) == opened + 1
                assert page.inner_text("#error") == "" and errors == []
            finally:
                browser.close()

    assert sorted(saved) == ["street-colorized.png", "street-hints.json"]
    (hints,) = read_hints_file(saved["street-hints.json"]).values()
    assert hints == [Hint(100.0, 30.0, (255, 0, 0)), Hint(130.0, 100.0, (0, 0, 255))]
    expected = stand_in.colorize(open_image(path), hints)
    assert np.array_equal(np.asarray(Image.open(saved["street-colorized.png"]).convert("RGB")), np.asarray(expected))


def opened(browser, srv: AppServer, path: Path):  # noqa: ANN001, ANN201 - Playwright's objects
    """A new page of the app at `srv` with the photo at `path` opened and shown colorized."""
    page = browser.new_page()
    page.goto(srv.url)
    page.wait_for_selector("#model:has-text('model')")
    recoloured(page, lambda: page.set_input_files("#file", str(path)))
    return page


class Gradient(torch.nn.Module):
    """A stand-in generator whose colour runs from magenta (a* > 0) on the left to green on the
    right, whatever the hints: where the page reads the model's colour matters."""

    def forward(self, x: torch.Tensor, hints: torch.Tensor | None = None) -> torch.Tensor:
        a = torch.linspace(0.4, -0.4, x.shape[-1], dtype=x.dtype).expand(x.shape[0], 1, *x.shape[2:])
        return torch.cat([a, torch.zeros_like(a)], 1)


def test_the_picker_starts_at_the_models_colour_on_a_photo_shown_scaled_down(tmp_path, monkeypatch):
    """A photo larger than PREVIEW_SIDE is shown scaled down: a click at a pixel of the photo
    starts the picker at the colour shown there, read at that place of the smaller picture."""
    sync_api = browser_or_skip()
    monkeypatch.setattr("colorize_cli.app.PREVIEW_SIDE", 40)
    stand_in = Colorizer(Gradient(), CFG, torch.device("cpu"), source="gradient")
    path = tmp_path / "wide.png"
    Image.new("RGB", (160, 120), (128, 128, 128)).save(path)
    with serving(AppServer(Session(stand_in), port=0)) as srv, sync_api.sync_playwright() as p:
        browser = launch(p)
        try:
            page = opened(browser, srv, path)
            preview = shown(page)
            picked = []
            for x in (10, 150):
                recoloured(page, lambda: page.click("#frame", position=spot(page, x, 60)))
                value = page.input_value("#hint-color")
                picked.append(np.array([int(value[i:i + 2], 16) for i in (1, 3, 5)]))
        finally:
            browser.close()
    assert preview.shape == (30, 40, 3)
    for x, colour in zip((10, 150), picked):
        assert np.abs(colour - preview[15, int((x + 0.5) * 40 / 160)].astype(int)).max() <= 1
    assert picked[0][0] - picked[0][1] > 40 and picked[1][1] - picked[1][0] > 20  # magenta, then green


TANK, HINT_RED = (466, 185), "#c01818"  # the red tank of scikit-image's stereo_motorcycle (741x500)
FLOOR = (slice(400, 475), slice(37, 185))  # the gray concrete floor at its bottom left, 400 px from the tank
FLOOR_CHANGE = 3.0  # mean CIEDE2000: "a few units", below what a person notices side by side


def test_one_hint_colours_its_object_and_leaves_a_distant_region_as_it_was(tmp_path):
    """The bundled general model in the app: a red hint on the motorcycle's tank turns the tank
    red, and the gray floor far from it stays within a few CIEDE2000 of what it was (the beach
    model turned it by 14.5: its hints coloured the whole photo)."""
    from skimage import data
    from skimage.color import deltaE_ciede2000, rgb2lab

    sync_api = browser_or_skip()
    photo = Image.fromarray(data.stereo_motorcycle()[0])
    path = tmp_path / "motorcycle.png"
    photo.save(path)
    with serving(AppServer(Session(Colorizer.load(None, "cpu")), port=0)) as srv, sync_api.sync_playwright() as p:
        browser = launch(p)
        try:
            page = opened(browser, srv, path)
            before = shown(page)
            recoloured(page, lambda: page.click("#frame", position=spot(page, *TANK, photo.size)))
            recoloured(page, lambda: page.fill("#hint-color", HINT_RED))
            after = shown(page)
        finally:
            browser.close()
    lab_before, lab_after = (rgb2lab(img / 255.0) for img in (before, after))
    red = rgb2lab(np.array([[[int(HINT_RED[i:i + 2], 16) for i in (1, 3, 5)]]]) / 255.0)
    tank = (slice(TANK[1] - 5, TANK[1] + 6), slice(TANK[0] - 5, TANK[0] + 6))
    to_red = [float(deltaE_ciede2000(lab[tank], red).mean()) for lab in (lab_before, lab_after)]
    assert to_red[1] < to_red[0] - 10, to_red
    assert float(deltaE_ciede2000(lab_before[FLOOR], lab_after[FLOOR]).mean()) < FLOOR_CHANGE


DROP = """([names, payloads]) => {
  const files = new DataTransfer();
  names.forEach((name, i) => {
    const bytes = Uint8Array.from(atob(payloads[i]), (c) => c.charCodeAt(0));
    files.items.add(new File([bytes], name));
  });
  document.dispatchEvent(new DragEvent('dragover', { dataTransfer: files, bubbles: true, cancelable: true }));
  const shown = document.getElementById('drop').classList.contains('dropping');
  document.dispatchEvent(new DragEvent('drop', { dataTransfer: files, bubbles: true, cancelable: true }));
  return shown;
}"""


def test_photos_dropped_on_the_page_open_like_chosen_ones(server, colorizer, tmp_path):
    """Files dropped anywhere on the page open in order: a good one gets its button and is shown
    colorized as `Colorizer.colorize` makes it; a bad one is a message and no button."""
    sync_api = browser_or_skip()
    photo = picture(120, 90)
    buffer = io.BytesIO()
    photo.save(buffer, "PNG")
    payloads = [base64.b64encode(buffer.getvalue()).decode(), base64.b64encode(b"not an image at all").decode()]
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page()
            page.goto(server.url)
            page.wait_for_selector("#model:has-text('model')")
            highlighted = []
            recoloured(page, lambda: highlighted.append(page.evaluate(DROP, [["beach.png", "notes.jpg"], payloads])))
            assert highlighted == [True]  # the drop zone showed while the files were over it
            assert not page.locator("#drop").evaluate("(e) => e.classList.contains('dropping')")
            page.wait_for_selector("#error:has-text('notes.jpg')")
            assert page.inner_text("#error") == "notes.jpg: not an image (unrecognised data)"
            assert page.locator("#photos button").all_inner_texts() == ["beach.png"]
            on_page = shown(page)
        finally:
            browser.close()
    preview = io.BytesIO()  # the page shows a JPEG of the colorized photo (downloads are PNG)
    colorizer.colorize(photo).save(preview, "JPEG", quality=PREVIEW_QUALITY)
    assert np.array_equal(on_page, np.asarray(Image.open(preview)))  # also its size: 120x90, as dropped
