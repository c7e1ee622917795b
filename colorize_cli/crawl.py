"""`colorize crawl`: search an image engine and keep N usable color photos of a keyword.

Design: icrawler 0.6.10 supplies what changes when the engines change, namely the query
filter codes (its Feeders' `get_filter`) and the result-page parsers (BingParser,
BaiduParser, GoogleParser, FlickrParser). The fetching is ours (`fetch`), for pages and images
alike, because icrawler's downloader cannot give the guarantees a crawler of the open web
needs: no byte limit, a timeout per socket read rather than per download, up to 30
redirects, file extensions taken from the URL, and downloads counted rather than images
that pass our filters. Saved names are our own numbers plus an extension from the decoded
format.

Each URL is downloaded and judged in a worker thread; the main thread alone decides
duplicates, numbers and writes kept files, and writes `manifest.csv` atomically, so a crash
or Ctrl-C leaves every kept file listed and nothing half-written.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import logging
import re
import signal
import socket
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, urlencode, urlsplit

import numpy as np
from PIL import Image, UnidentifiedImageError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from colorize_cli.errors import UserError
from colorize_cli.fetch import FetchError, FetchTimeout, Limits, TooManyBytes, fetch, request_target
from colorize_cli.files import exclusive_lock, write_bytes_atomic, write_csv_atomic
from colorize_cli.imageio import GRAYSCALE_COLORFULNESS, ImageError, is_grayscale, open_image
from colorize_cli.terminal import plural, progress_bar, warning

# Search endpoints (module constants so that tests can point them at a local server).
BING_URL = "https://www.bing.com/images/async"
BAIDU_URL = "https://image.baidu.com/search/acjson"
GOOGLE_URL = "https://www.google.com/search"
FLICKR_URL = "https://api.flickr.com/services/rest/"

MAX_PAGE_BYTES = 10 * 2**20
RESULT_LIMIT = 1000  # Bing, Baidu and Google serve no results past the first 1000
DRY_PAGES = 2  # consecutive result pages with no new URL: the engine has run dry

# pHash: 63 sign bits of the lowest 8x8 DCT frequencies (DC left out) of a 32x32 gray
# thumbnail against their median. Two photos whose hashes differ in <= PHASH_NEAR bits are
# near duplicates. Measured on the 752 shared beach and landscape photos (282,376 pairs): no
# two distinct photos within 8 bits (the closest pair differs in 10); every half-size or JPEG
# quality-40 copy within 4; a 20% brighter copy within 8 for 99% of them, a 3% crop for 89%.
PHASH_NEAR = 8

MANIFEST = "manifest.csv"
LOCK = ".crawl.lock"  # one crawl per folder at a time (files.exclusive_lock)
PROBE_TIMEOUT = 5.0  # seconds to connect to another engine before calling the network down
SAVE_EVERY = 2.0  # seconds: the manifest is written at least this often while rejects come in
COLUMNS = ("file", "url", "engine", "width", "height", "sha256", "status", "detail", "phash")
# Pillow format -> suffix of the saved file (MPO: a camera JPEG with extra frames).
SAVED_FORMATS = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp",
                 "TIFF": ".tif"}
# icrawler's parsers log their complaints; ours become counts and notes in the report instead.
_ICRAWLER_LOG = logging.getLogger("colorize_cli.crawl.icrawler")
_ICRAWLER_LOG.addHandler(logging.NullHandler())
_ICRAWLER_LOG.propagate = False


class Engine(str, Enum):
    BING = "bing"
    BAIDU = "baidu"
    GOOGLE = "google"
    FLICKR = "flickr"
    URLS = "urls"


class License(str, Enum):
    """Usage rights asked of the engine; each engine spells them its own way (see _license_filter)."""

    ANY = "any"
    CC = "cc"
    PUBLIC_DOMAIN = "public-domain"
    COMMERCIAL = "commercial"
    COMMERCIAL_MODIFY = "commercial-modify"


class Status(str, Enum):
    """The `status` column of the manifest: kept, or why a URL was rejected."""

    KEPT = "kept"
    FAILED = "download-failed"  # HTTP error, refused connection, bad redirect, not an http(s) URL
    TIMEOUT = "timeout"
    TOO_MANY_BYTES = "too-many-bytes"
    NOT_DECODABLE = "not-decodable"  # truncated, not an image, HTML served as .jpg
    TOO_MANY_PIXELS = "too-many-pixels"  # past Pillow's decompression-bomb limit
    TOO_SMALL = "too-small"
    GRAYSCALE = "grayscale"
    DUPLICATE = "duplicate"
    NEAR_DUPLICATE = "near-duplicate"
    REMOVED = "removed"  # kept once, then deleted from the folder by the user


@dataclass(frozen=True)
class CrawlConfig:
    """`colorize crawl`'s options (the keyword is `run`'s own argument)."""

    num: int = 125  # usable images wanted in the folder
    out: Path = Path("data/raw")
    engine: Engine = Engine.BING  # the command line picks Engine.URLS instead when given a URL list
    urls_file: Path | None = None
    min_size: int = 256
    threads: int = 4
    license: License = License.ANY
    photos_only: bool = True
    limits: Limits = Limits()
    flickr_key: str | None = None


@dataclass
class CrawlReport:
    folder: Path
    engine: Engine
    wanted: int
    kept_before: int
    counts: Counter = field(default_factory=Counter)  # Status -> URLs judged this run
    offered: int = 0  # distinct URLs the engine offered this run
    known: int = 0  # of those, already in the manifest (not downloaded again)
    stop: str = ""  # why the engine stopped offering URLs, when it did
    no_network: str = ""  # "no network: ...", when no server could be reached at all

    @property
    def kept_total(self) -> int:
        return self.kept_before + self.counts[Status.KEPT]

    @property
    def rejected(self) -> int:
        return self.counts.total() - self.counts[Status.KEPT]


def slugify(keyword: str) -> str:
    """Folder name for a keyword: lowercase words joined by '-', never empty, '.' or '..'."""
    slug = re.sub(r"[\W_]+", "-", keyword.strip().lower())[:80].strip("-")
    if not slug:
        raise UserError(f"{keyword!r}: the keyword needs at least one letter or digit (it names the folder)")
    return slug


def parse_size(text: str | int) -> int:
    """'20M' -> 20 MiB; plain numbers are bytes; K, M and G are binary multiples."""
    m = re.fullmatch(r"\s*(\d+)\s*([kmg]?)i?b?\s*", str(text), re.IGNORECASE)
    if not m or int(m.group(1)) == 0:
        raise UserError(f"{text!r}: not a size (examples: 500K, 20M, 1G, 1048576)")
    return int(m.group(1)) * 1024 ** " kmg".index(m.group(2).lower() or " ")


def format_size(n: int) -> str:
    """The shortest text parse_size reads back as n bytes: 20971520 -> '20M'."""
    exponent = next(e for e in (3, 2, 1, 0) if n % 1024**e == 0)
    return f"{n // 1024**exponent}{' KMG'[exponent].strip()}"


# ---------------------------------------------------------------------------------------
# Judging one download


_N = 32
_DCT = np.sqrt(2.0 / _N) * np.cos(np.pi * (2 * np.arange(_N)[None, :] + 1) * np.arange(_N)[:, None] / (2 * _N))


def phash(img: Image.Image) -> int:
    """63-bit perceptual hash (see PHASH_NEAR); robust to resizing and recompression."""
    gray = np.asarray(img.convert("L").resize((_N, _N), Image.Resampling.LANCZOS, reducing_gap=3.0), dtype=np.float64)
    ac = (_DCT @ gray @ _DCT.T)[:8, :8].ravel()[1:]
    return int("".join("1" if b else "0" for b in ac > np.median(ac)), 2)


@dataclass
class Judged:
    """One URL's outcome; `data` is set only when it passed every per-image filter."""

    url: str
    status: Status
    detail: str = ""
    data: bytes | None = None
    suffix: str = ""
    width: int = 0
    height: int = 0
    sha256: str = ""
    phash: int | None = None
    network: bool = False  # its server was never reached (FetchError.network)


def _fetch_status(e: FetchError) -> Status:
    """The manifest's name for a failed download."""
    if isinstance(e, FetchTimeout):
        return Status.TIMEOUT
    if isinstance(e, TooManyBytes):
        return Status.TOO_MANY_BYTES
    return Status.FAILED


def judge(url: str, cfg: CrawlConfig, stop: threading.Event) -> Judged:
    """Download url and apply every filter that needs only this image (worker threads)."""
    try:
        data = fetch(url, cfg.limits, stop=stop)
    except FetchError as e:
        return Judged(url, _fetch_status(e), e.detail, network=e.network)
    sha = hashlib.sha256(data).hexdigest()
    try:
        with warnings.catch_warnings():  # the explicit pixel check below decides, not the warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as head:
                fmt, (w, h) = head.format, head.size
    except Image.DecompressionBombError as e:
        return Judged(url, Status.TOO_MANY_PIXELS, str(e).split(",")[0], sha256=sha)
    except UnidentifiedImageError:
        kind = "HTML" if data.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html")) else "data"
        return Judged(url, Status.NOT_DECODABLE, f"not an image ({kind}, {len(data)} bytes)", sha256=sha)
    except Exception as e:  # noqa: BLE001 - hostile bytes can break any image plugin; skip them
        return Judged(url, Status.NOT_DECODABLE, f"{type(e).__name__}: {e}", sha256=sha)
    limit = Image.MAX_IMAGE_PIXELS
    if limit and w * h > limit:
        return Judged(url, Status.TOO_MANY_PIXELS, f"{w}x{h} is past Pillow's decompression-bomb limit of "
                      f"{limit} pixels", width=w, height=h, sha256=sha)
    if fmt not in SAVED_FORMATS:
        return Judged(url, Status.NOT_DECODABLE, f"{fmt} is not a photo format colorize reads", sha256=sha)
    if min(w, h) < cfg.min_size:
        return Judged(url, Status.TOO_SMALL, f"{w}x{h}, short side under {cfg.min_size}", width=w, height=h, sha256=sha)
    try:
        rgb = open_image(data)
    except ImageError as e:
        return Judged(url, Status.NOT_DECODABLE, str(e).removeprefix("<bytes>: "), width=w, height=h, sha256=sha)
    except Exception as e:  # noqa: BLE001 - as above
        return Judged(url, Status.NOT_DECODABLE, f"{type(e).__name__}: {e}", width=w, height=h, sha256=sha)
    w, h = rgb.size  # upright (EXIF rotation applied)
    if is_grayscale(rgb):
        return Judged(url, Status.GRAYSCALE, f"colorfulness under {GRAYSCALE_COLORFULNESS:g}",
                      width=w, height=h, sha256=sha)
    return Judged(url, Status.KEPT, data=data, suffix=SAVED_FORMATS[fmt], width=w, height=h, sha256=sha,
                  phash=phash(rgb))


# ---------------------------------------------------------------------------------------
# Where URLs come from


@dataclass
class _Page:
    """The one attribute icrawler's parsers read from a `requests` response."""

    content: bytes


class _Session:
    """Stands in for the `requests` session FlickrParser uses for its per-photo calls."""

    def __init__(self, limits: Limits):
        self.limits = limits

    def get(self, url: str, **_: Any) -> _Page:
        return _Page(fetch(url, self.limits, MAX_PAGE_BYTES))


_BING_LICENSE = {License.CC: "creativecommons", License.PUBLIC_DOMAIN: "publicdomain",
                 License.COMMERCIAL: "commercial", License.COMMERCIAL_MODIFY: "commercial,modify"}
_GOOGLE_LICENSE = {License.CC: "noncommercial", License.COMMERCIAL: "commercial",
                   License.COMMERCIAL_MODIFY: "commercial,modify"}
# Flickr license ids: 1-6 CC BY variants, 7 no known copyright restrictions, 8 US Government
# work, 9 CC0, 10 Public Domain Mark.
_FLICKR_LICENSE = {License.CC: "1,2,3,4,5,6,9,10", License.PUBLIC_DOMAIN: "7,8,9,10",
                   License.COMMERCIAL: "4,5,6,7,8,9,10", License.COMMERCIAL_MODIFY: "4,5,7,8,9,10"}
FLICKR_SIZES = ["large", "large 1600", "medium 800", "large 2048", "original", "medium 640", "medium"]


def _license_filter(cfg: CrawlConfig, table: dict[License, str]) -> dict[str, str]:
    if cfg.license is License.ANY:
        return {}
    if cfg.license not in table:
        raise UserError(f"--license {cfg.license.value} is not available with --engine {cfg.engine.value}")
    return {"license": table[cfg.license]}


def _color_photos(cfg: CrawlConfig, licenses: dict[License, str]) -> dict[str, str]:
    """Bing's and Google's own filters: color images only, photos only (unless --any-type), the license."""
    return ({"type": "photo"} if cfg.photos_only else {}) | {"color": "color"} | _license_filter(cfg, licenses)


def _search(keyword: str, cfg: CrawlConfig) -> tuple[Any, Iterator[str], dict[str, Any]]:
    """(icrawler parser, result-page URLs, extra parse() arguments) for a search engine."""
    # icrawler (requests, bs4, lxml) is imported only when a search engine is used.
    from icrawler.builtin.baidu import BaiduFeeder, BaiduParser
    from icrawler.builtin.bing import BingFeeder, BingParser
    from icrawler.builtin.flickr import FlickrParser
    from icrawler.builtin.google import GoogleFeeder, GoogleParser
    from icrawler.utils import Signal

    kw = keyword.strip()
    session = _Session(cfg.limits)
    if cfg.engine is Engine.BING:
        qft = BingFeeder(1, Signal(), session).get_filter().apply(_color_photos(cfg, _BING_LICENSE))
        pages = (f"{BING_URL}?q={quote_plus(kw)}&first={i}&qft={qft}" for i in range(0, RESULT_LIMIT, 20))
        return BingParser(1, Signal(), session), pages, {}
    if cfg.engine is Engine.BAIDU:
        _license_filter(cfg, {})
        wanted = {"type": "static"} if cfg.photos_only else {}  # Baidu has no "photo" type; this drops animations
        extra = BaiduFeeder(1, Signal(), session).get_filter().apply(wanted, sep="&")
        pages = (f"{BAIDU_URL}?tn=resultjson_com&ipn=rj&word={quote(kw)}&pn={i}&rn=30" + (f"&{extra}" if extra else "")
                 for i in range(0, RESULT_LIMIT, 30))
        return BaiduParser(1, Signal(), session), pages, {}
    if cfg.engine is Engine.GOOGLE:
        tbs = GoogleFeeder(1, Signal(), session).get_filter().apply(_color_photos(cfg, _GOOGLE_LICENSE), sep=",")
        pages = (GOOGLE_URL + "?" + urlencode({"q": kw, "ijn": i // 100, "start": i, "tbs": tbs, "tbm": "isch"})
                 for i in range(0, RESULT_LIMIT, 100))
        return GoogleParser(1, Signal(), session), pages, {}
    if cfg.engine is Engine.FLICKR:
        if not cfg.flickr_key:
            raise UserError("--engine flickr needs an API key: pass --flickr-key or set FLICKR_APIKEY "
                            "(free at https://www.flickr.com/services/api/misc.api_keys.html)")
        params = {"method": "flickr.photos.search", "api_key": cfg.flickr_key, "format": "json", "nojsoncallback": 1,
                  "text": kw, "sort": "relevance", "per_page": 100, **_license_filter(cfg, _FLICKR_LICENSE)}
        if cfg.photos_only:
            params["content_type"] = 1
        pages = (FLICKR_URL + "?" + urlencode(params | {"page": p}) for p in range(1, 41))  # Flickr stops at 4000
        return FlickrParser(1, Signal(), session), pages, {"apikey": cfg.flickr_key, "size_preference": FLICKR_SIZES}
    raise AssertionError(cfg.engine)


def read_url_list(path: Path) -> list[str]:
    """One URL a line; blank lines and lines starting with '#' are skipped."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file (--urls wants a text file with one image URL a line)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read the URL list ({e})") from None
    return [s for line in text.splitlines() if (s := line.strip()) and not s.startswith("#")]


class Source:
    """Image URLs from the engine, each once, fetched page by page only as they are needed.

    After iteration `stop` says why the engine stopped offering URLs, and `unreached` is the
    reason when that was a result page whose server could not be reached at all.
    """

    def __init__(self, keyword: str, cfg: CrawlConfig):
        self.cfg = cfg
        self.stop = ""
        self.unreached = ""
        if cfg.engine is Engine.URLS:
            if cfg.urls_file is None:
                raise UserError("--engine urls needs --urls FILE (one image URL a line)")
            self._urls = read_url_list(cfg.urls_file)
        else:
            if cfg.urls_file is not None:
                raise UserError(f"--urls is only used with --engine urls, not --engine {cfg.engine.value}")
            self._parser, self._pages, self._parse_args = _search(keyword, cfg)
            self._parser.logger = _ICRAWLER_LOG

    def __iter__(self) -> Iterator[str]:
        seen: set[str] = set()
        if self.cfg.engine is Engine.URLS:
            yield from _unseen(self._urls, seen)
            self.stop = f"{self.cfg.urls_file} lists {plural(len(seen), 'URL')}"
            return
        dry = pages = 0
        for page_url in self._pages:
            new = 0
            try:
                for url in _unseen(self._results(page_url), seen):
                    new += 1
                    yield url
            except FetchError as e:
                self.stop = f"result page {pages + 1} failed: {e.detail}"
                self.unreached = e.detail if e.network else ""
                return
            except Exception as e:  # noqa: BLE001 - a changed page format breaks the parser in any way
                self.stop = f"result page {pages + 1} could not be parsed ({type(e).__name__}: {e})"
                return
            pages += 1
            dry = 0 if new else dry + 1
            if dry >= DRY_PAGES:
                break
        self.stop = f"no more results after {plural(pages, 'result page')}"

    def _results(self, page_url: str) -> Iterator[str]:
        """The image URLs on one result page, as the parser finds them (lazily: Flickr's parser
        makes a call per photo)."""
        referer = "{0.scheme}://{0.netloc}".format(urlsplit(page_url))
        page = _Page(fetch(page_url, self.cfg.limits, MAX_PAGE_BYTES, referer=referer))
        for task in self._parser.parse(page, **self._parse_args) or ():
            url = task.get("file_url") if isinstance(task, dict) else None
            if isinstance(url, str):
                yield url


def _unseen(urls: Iterable[str], seen: set[str]) -> Iterator[str]:
    """The URLs not in `seen`, each once (added to `seen` as they pass)."""
    for url in urls:
        if url not in seen:
            seen.add(url)
            yield url


# ---------------------------------------------------------------------------------------
# The folder: manifest, kept files, numbering


def _hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


class Folder:
    """OUT/<slug>/ and its manifest (one row per URL ever tried, in the order they were judged)."""

    def __init__(self, path: Path):
        self.path = path
        self.manifest = path / MANIFEST
        self.rows: dict[str, dict[str, str]] = _read_manifest(self.manifest)  # URL -> row
        self.seen_sha: dict[str, str] = {}  # sha256 -> file, for kept and removed files
        self.seen_hash: list[tuple[int, str]] = []  # (pHash, file)
        self.kept = 0
        self.next_number = 1
        self._load()

    def _load(self) -> None:
        """Kept files, their hashes and the next free number, from the rows and the folder."""
        numbers = [int(m.group(1)) for p in self.path.iterdir() if (m := re.fullmatch(r"(\d{6})\.\w+", p.name))]
        for row in self.rows.values():
            if row["status"] in (Status.KEPT.value, Status.REMOVED.value):
                if row["status"] == Status.KEPT.value and not (self.path / row["file"]).is_file():
                    row["status"], row["detail"] = Status.REMOVED.value, "file deleted from the folder after the crawl"
                self.kept += row["status"] == Status.KEPT.value
                self.seen_sha[row["sha256"]] = row["file"]
                with contextlib.suppress(ValueError):
                    self.seen_hash.append((int(row["phash"], 16), row["file"]))
            if m := re.fullmatch(r"(\d{6})\.\w+", row["file"]):
                numbers.append(int(m.group(1)))
        self.next_number = max(numbers, default=0) + 1

    def is_known(self, url: str) -> bool:
        """A URL in the manifest is never fetched again, whatever its outcome was."""
        return url in self.rows

    def record(self, j: Judged, engine: Engine) -> Judged:
        """Final verdict (duplicates need every earlier image), the kept file, the row."""
        if j.status is Status.KEPT:
            assert j.data is not None and j.phash is not None
            if j.sha256 in self.seen_sha:
                j.status, j.detail = Status.DUPLICATE, f"same bytes as {self.seen_sha[j.sha256]}"
            elif near := [(d, f) for h, f in self.seen_hash if (d := _hamming(h, j.phash)) <= PHASH_NEAR]:
                d, f = min(near)
                j.status, j.detail = Status.NEAR_DUPLICATE, f"looks like {f} (pHash distance {d})"
        name = ""
        if j.status is Status.KEPT:
            name = self._save(j.data, j.suffix)
            self.kept += 1
            self.seen_sha[j.sha256] = name
            self.seen_hash.append((j.phash, name))
        self.rows[j.url] = {
            "file": name, "url": j.url, "engine": engine.value,
            "width": str(j.width or ""), "height": str(j.height or ""), "sha256": j.sha256,
            "status": j.status.value, "detail": j.detail,
            "phash": f"{j.phash:016x}" if j.phash is not None else "",
        }
        j.data = None
        return j

    def _save(self, data: bytes, suffix: str) -> str:
        """Write under the next free number: existing files are never renumbered or overwritten."""
        while any(self.path.glob(f"{self.next_number:06d}.*")):
            self.next_number += 1
        name = f"{self.next_number:06d}{suffix}"
        write_bytes_atomic(self.path / name, data)
        self.next_number += 1
        return name

    def save(self) -> None:
        """Write the manifest; a folder where nothing was ever tried gets none (not an empty one)."""
        if not self.rows and not self.manifest.exists():
            return
        write_csv_atomic(self.manifest, COLUMNS, ([row[c] for c in COLUMNS] for row in self.rows.values()))


def _read_manifest(manifest: Path) -> dict[str, dict[str, str]]:
    """The manifest's rows by URL ({} before the first crawl); a file of another shape is refused."""
    if not manifest.exists():
        return {}
    try:
        with open(manifest, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise UserError(f"{manifest}: not a colorize crawl manifest (missing columns: {', '.join(missing)})")
            return {row["url"]: {c: row[c] or "" for c in COLUMNS} for row in reader}
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{manifest}: cannot read the manifest ({e})") from None


# ---------------------------------------------------------------------------------------
# The crawl


def run(keyword: str, cfg: CrawlConfig, console: Console) -> CrawlReport:
    """Top OUT/<slug>/ up to cfg.num kept images; progress goes to `console`.

    Folders this run makes and leaves empty (nothing tried, or no network) are removed again,
    lock file included, so that a failed first run leaves nothing behind.
    """
    path = cfg.out / slugify(keyword)
    source = Source(keyword, cfg)  # option errors surface before anything is made or written
    with _folder_removed_if_left_empty(path) as made, exclusive_lock(path, LOCK, "`colorize crawl`"):
        try:
            return _crawl(keyword, path, source, cfg, console)
        finally:  # still holding the lock: no other crawl can be starting in the folder
            if made:
                _remove_lone_lock(path)


@contextlib.contextmanager
def _folder_removed_if_left_empty(path: Path) -> Iterator[bool]:
    """Make `path` and its missing parents; on the way out remove those of them left empty.
    Yields whether `path` itself was made here."""
    made = [p for p in (path, *path.parents) if not p.exists()]  # deepest first
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{path}: cannot create the folder ({e.strerror or e})") from None
    try:
        yield bool(made)
    finally:
        for folder in made:
            with contextlib.suppress(OSError):  # not empty: kept
                folder.rmdir()


def _remove_lone_lock(path: Path) -> None:
    """The lock file of a folder that holds nothing else (so that the folder can go too)."""
    with contextlib.suppress(OSError):
        if [p.name for p in path.iterdir()] == [LOCK]:
            (path / LOCK).unlink()


def _crawl(keyword: str, path: Path, source: Source, cfg: CrawlConfig, console: Console) -> CrawlReport:
    folder = Folder(path)
    report = CrawlReport(path, cfg.engine, cfg.num, folder.kept)
    if folder.kept >= cfg.num:
        folder.save()
        return report
    keeper = _Keeper(folder, report)
    pool = ThreadPoolExecutor(cfg.threads, thread_name_prefix="crawl")
    stop = threading.Event()  # set by Ctrl-C and on the way out: downloads still in flight end at once
    try:
        with progress_bar(console, "{task.description}", "kept, {task.fields[rejected]} rejected",
                          elapsed=True) as progress:
            bar = progress.add_task(f"{escape(keyword)} ({cfg.engine.value})", total=cfg.num,
                                    completed=folder.kept, rejected=0)
            with _ctrl_c_sets(stop):
                for done in _judging(_new_urls(source, folder, report), cfg, folder, pool, stop):
                    keeper.take(fut.result() for fut in done)
                    progress.update(bar, completed=folder.kept, rejected=report.rejected)
    finally:
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)
        folder.save()
    report.stop = source.stop
    report.no_network = _no_network(keeper.unreached, source, report)
    return report


@contextlib.contextmanager
def _ctrl_c_sets(stop: threading.Event) -> Iterator[None]:
    """A first Ctrl-C sets `stop`, and `_judging` raises KeyboardInterrupt at its next wait. Raised
    at any moment instead, it could land inside `concurrent.futures.wait` while that holds the
    futures' locks: the downloads could then never finish and the process would hang at exit.
    A second Ctrl-C interrupts at once. Only the main thread can catch signals, and a crawl
    started with Ctrl-C ignored (a shell's background job) keeps ignoring it."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        yield
        return

    def ask(signum: int, frame: object) -> None:
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, ask)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


WAIT_STEP = 0.25  # seconds between looks at the Ctrl-C flag while downloads are in flight


def _new_urls(source: Source, folder: Folder, report: CrawlReport) -> Iterator[str]:
    """The engine's URLs that are not in the manifest yet; counts those offered and those known."""
    for url in source:
        report.offered += 1
        if folder.is_known(url):
            report.known += 1
        else:
            yield url


def _judging(urls: Iterator[str], cfg: CrawlConfig, folder: Folder, pool: ThreadPoolExecutor,
             stop: threading.Event) -> Iterator[set[Future[Judged]]]:
    """Judge URLs in the worker threads, yielding the downloads as they finish. Never more in
    flight than images still missing (read after each yield): none is wasted."""
    pending: set[Future[Judged]] = set()
    while True:
        while len(pending) < min(cfg.threads, cfg.num - folder.kept) and (url := next(urls, None)) is not None:
            pending.add(pool.submit(judge, url, cfg, stop))
        if not pending:
            return
        done, pending = wait(pending, timeout=WAIT_STEP, return_when=FIRST_COMPLETED)
        if stop.is_set():
            raise KeyboardInterrupt
        if done:
            yield done


class _Keeper:
    """Records verdicts in the folder and the report.

    URLs whose server could not be reached are held back until some URL's server is: if none
    ever is, the network is down, and recording them would mark good URLs as tried for good.
    A search engine's URLs come from a result page it served, so its network is known to work.
    """

    def __init__(self, folder: Folder, report: CrawlReport) -> None:
        self.folder, self.report = folder, report
        self.reached = report.engine is not Engine.URLS
        self.unreached: list[Judged] = []
        self.last_save = time.monotonic()

    def take(self, judged: Iterable[Judged]) -> None:
        for j in judged:
            if j.network and not self.reached:
                self.unreached.append(j)
                continue
            self.reached = True
            for held in [*self.unreached, j]:
                self._record(held)
            self.unreached.clear()

    def _record(self, j: Judged) -> None:
        """The verdict into the manifest; saved at once for a kept file, else now and then."""
        j = self.folder.record(j, self.report.engine)
        self.report.counts[j.status] += 1
        if j.status is Status.KEPT or time.monotonic() - self.last_save > SAVE_EVERY:
            self.folder.save()
            self.last_save = time.monotonic()


def _no_network(unreached: list[Judged], source: Source, report: CrawlReport) -> str:
    """"no network: ..." when no server could be reached at all, else ""."""
    if unreached:
        first = min(unreached, key=lambda j: j.url)
        return (f"no network: none of the {len(unreached)} URLs could be reached ({first.detail}); "
                "nothing was recorded: check the internet connection, then run again")
    if source.unreached and not report.offered:
        others = [_host(url) for engine, url in _endpoints().items() if engine is not report.engine]
        with ThreadPoolExecutor(len(others)) as probes:
            if not any(probes.map(_answers, others)):
                return (f"no network: {source.unreached}, nor reach any other engine "
                        f"({', '.join(host for host, _ in others)}); "
                        "check the internet connection, then run again")
    return ""


def _endpoints() -> dict[Engine, str]:
    """Each search engine's endpoint, read when asked (tests point them elsewhere)."""
    return {Engine.BING: BING_URL, Engine.BAIDU: BAIDU_URL, Engine.GOOGLE: GOOGLE_URL, Engine.FLICKR: FLICKR_URL}


def _host(url: str) -> tuple[str, int]:
    scheme, host, port, _ = request_target(url)
    return host, port or (443 if scheme == "https" else 80)


def _answers(address: tuple[str, int]) -> bool:
    """Whether a TCP connection to (host, port) can be made: the network works as far as there."""
    try:
        socket.create_connection(address, timeout=PROBE_TIMEOUT).close()
    except OSError:
        return False
    return True


# ---------------------------------------------------------------------------------------
# Reporting


def other_engine(engine: Engine) -> str:
    """A different engine worth trying when this one fell short."""
    return "baidu" if engine is Engine.BING else "bing"


def _hint(report: CrawlReport) -> str:
    if report.engine is Engine.URLS:
        return "add URLs to the list"
    return f"try --engine {other_engine(report.engine)} to top up the same folder"


def shortfall(report: CrawlReport) -> str | None:
    """Why the folder holds fewer than N usable images and what to try next; None if it is full."""
    if report.kept_total >= report.wanted:
        return None
    if report.no_network:
        return report.no_network
    engine = report.engine.value
    tried = report.counts.total()
    if report.offered == 0:
        why = f"{engine} gave no image URLs ({report.stop})"
    elif tried == 0:
        why = f"{engine} offered only URLs already in the manifest ({report.known})"
    elif report.kept_total == 0:
        why = (f"none of the {tried} URLs from {engine} was usable "
               f"({report.stop}; reasons in {report.folder / MANIFEST})")
    else:
        why = f"only {report.kept_total} of {report.wanted} usable images in {report.folder} ({report.stop})"
    return f"{why}; {_hint(report)}"


def render(report: CrawlReport, out: Console, err: Console) -> None:
    """Summary table on `out`; a shortfall (when some images were kept) as a warning on `err`."""
    if report.kept_before >= report.wanted:
        err.print(f"{report.kept_before} usable images already in {escape(str(report.folder))}; "
                  "nothing to download (raise -n to top up).", soft_wrap=True)
        return
    if report.no_network:  # nothing was tried: a table of zeros says nothing
        if report.kept_total:
            warning(err, report.no_network)
        return
    out.print(_table(report))
    if report.kept_total and (msg := shortfall(report)):
        warning(err, msg)


def _table(report: CrawlReport) -> Table:
    table = Table(title=f"colorize crawl: {escape(str(report.folder))}", title_justify="left")
    table.add_column("result")
    table.add_column("URLs", justify="right")
    for status in Status:
        if report.counts[status] or status is Status.KEPT:
            table.add_row(status.value, str(report.counts[status]))
    if report.known:
        table.add_row("already in manifest", str(report.known), style="dim")
    table.add_row("usable images in folder", f"{report.kept_total} of {report.wanted}", style="bold")
    return table
