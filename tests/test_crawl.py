"""`colorize crawl` against a hostile server on 127.0.0.1 (offline): every filter, every bad
answer, the manifest, top-ups, the Bing code path through icrawler's real parser."""

from __future__ import annotations

import csv
import hashlib
import html
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from crawl_server import HostileServer, Route, encode, photo, png_header
from typer.main import get_command

from colorize_cli import crawl
from colorize_cli.cli import app, main
from colorize_cli.errors import UserError
from colorize_cli.files import exclusive_lock
from colorize_cli.imageio import open_image

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "beach-photos"
FAST = ["--min-size", "64", "--timeout", "3", "--max-bytes", "64K"]


def cli(capsys, *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = e.code or 0
    out, err = capsys.readouterr()
    return code, out, err


def manifest(folder: Path) -> list[dict[str, str]]:
    with open(folder / "manifest.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


GOOD = {i: encode(photo(i)) for i in range(1, 10)}
TRUNCATED = encode(photo(12))


def hostile_routes() -> dict[str, Route]:
    return {
        **{f"/good{i}.jpg": Route(GOOD[i]) for i in range(1, 10)},
        "/dup.jpg": Route(GOOD[1]),
        "/near.jpg": Route(encode(photo(2).resize((88, 66)), quality=60)),
        "/gray.jpg": Route(encode(photo(10).convert("L").convert("RGB"))),
        "/tiny.jpg": Route(encode(photo(11, (40, 30)))),
        "/mislabeled.jpg": Route(encode(photo(16, (80, 96))), content_type="text/html"),
        "/page.jpg": Route(b"<!DOCTYPE html><html><body>Sorry, not found</body></html>"),
        "/truncated.jpg": Route(TRUNCATED[: len(TRUNCATED) // 2]),
        "/bomb.png": Route(png_header(20000, 10000), content_type="image/png"),
        "/bomb-warn.png": Route(png_header(10000, 10000), content_type="image/png"),
        "/missing.jpg": Route(status=404),
        "/broken.jpg": Route(status=500),
        "/burst.jpg": Route(encode(photo(6)), fail_first=2),
        "/stall.jpg": Route(encode(photo(13)), stall=6),
        "/trickle.jpg": Route(encode(photo(14)), trickle=0.5),
        "/endless.jpg": Route(endless=True, content_type="text/plain"),
        "/huge.jpg": Route(encode(photo(15)) + b"\0" * 70000),
        "/to-ftp.jpg": Route(location="ftp://127.0.0.1/good1.jpg"),
        "/to-file.jpg": Route(location="file:///etc/passwd"),
        "/loop.jpg": Route(location="/loop.jpg"),
    }


# URL path (or whole URL) -> expected status; the pairs below decide by arrival order.
EXPECTED = {
    "/good3.jpg": "kept", "/good4.jpg": "kept", "/to-other-host.jpg": "kept", "/burst.jpg": "kept",
    "/mislabeled.jpg": "kept",
    "/gray.jpg": "grayscale", "/tiny.jpg": "too-small", "/page.jpg": "not-decodable",
    "/truncated.jpg": "not-decodable", "/bomb.png": "too-many-pixels", "/bomb-warn.png": "too-many-pixels",
    "/missing.jpg": "download-failed", "/broken.jpg": "download-failed", "/to-ftp.jpg": "download-failed",
    "/to-file.jpg": "download-failed", "/loop.jpg": "download-failed", "/stall.jpg": "timeout",
    "/trickle.jpg": "timeout", "/endless.jpg": "too-many-bytes", "/huge.jpg": "too-many-bytes",
}
PAIRS = {("/good1.jpg", "/dup.jpg"): "duplicate", ("/good2.jpg", "/near.jpg"): "near-duplicate"}


@pytest.fixture
def server():
    routes = hostile_routes()
    with HostileServer(routes) as s:
        routes["/to-other-host.jpg"] = Route(location=f"http://localhost:{s.port}/good5.jpg")
        yield s


def url_list(server: HostileServer, tmp_path: Path, paths: list[str], extra: list[str] = ()) -> Path:
    f = tmp_path / "urls.txt"
    lines = ["# beach photos", "", *(server.url(p) for p in paths), *extra]
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return f


def test_urls_engine_end_to_end_with_top_up(server, tmp_path, capsys):
    out = tmp_path / "raw"
    port = closed_port()
    refused = f"http://127.0.0.1:{port}/gone.jpg"
    first = [p for pair in PAIRS for p in pair] + list(EXPECTED)
    urls = url_list(server, tmp_path, first, ["ftp://127.0.0.1/x.jpg", refused])

    code, stdout, err = cli(capsys, "crawl", "Beach Day!", "-n", "10", "--urls", str(urls), "--out", str(out), *FAST)

    assert code == 0, err
    folder = out / "beach-day"
    rows = manifest(folder)
    by_path = {r["url"].removeprefix(server.url("")): r for r in rows}
    assert len(rows) == len(first) + 2
    for path, status in EXPECTED.items():
        assert by_path[path]["status"] == status, (path, by_path[path])
    for pair, loser in PAIRS.items():
        assert sorted(by_path[p]["status"] for p in pair) == sorted(["kept", loser])
        kept, other = sorted(pair, key=lambda p: by_path[p]["status"] != "kept")
        assert by_path[other]["detail"].startswith(
            f"same bytes as {by_path[kept]['file']}" if loser == "duplicate" else f"looks like {by_path[kept]['file']}")
    assert by_path["ftp://127.0.0.1/x.jpg"]["detail"] == "not an http(s) URL"
    assert by_path[refused]["status"] == "download-failed"
    assert by_path[refused]["detail"] == f"connection refused by 127.0.0.1:{port}"
    assert by_path["/missing.jpg"]["detail"].startswith("HTTP 404")
    assert by_path["/broken.jpg"]["detail"].startswith("HTTP 500")
    assert by_path["/to-ftp.jpg"]["detail"] == "redirect to ftp: URL refused"
    assert by_path["/to-file.jpg"]["detail"] == "redirect to file: URL refused"
    assert by_path["/loop.jpg"]["detail"] == "more than 5 redirects"
    assert by_path["/page.jpg"]["detail"].startswith("not an image (HTML")
    assert by_path["/stall.jpg"]["detail"] == by_path["/trickle.jpg"]["detail"] == "no complete answer within 3 s"
    assert all(r["engine"] == "urls" for r in rows)
    # 5xx: retried twice; the burst of two 503s then succeeds. Redirects: at most 5 followed.
    assert server.routes["/broken.jpg"].calls == 3 and server.routes["/burst.jpg"].calls == 3
    assert server.routes["/loop.jpg"].calls == 6

    # Kept files: numbered by us, the server's bytes unchanged, the manifest's sha256 and size.
    kept = [r for r in rows if r["status"] == "kept"]
    assert sorted(r["file"] for r in kept) == [f"{i:06d}.jpg" for i in range(1, 8)]
    served = {"/to-other-host.jpg": GOOD[5], "/burst.jpg": server.routes["/burst.jpg"].body}
    for r in kept:
        path = r["url"].removeprefix(server.url(""))
        data = (folder / r["file"]).read_bytes()
        assert data == served.get(path, server.routes[path].body)
        assert r["sha256"] == hashlib.sha256(data).hexdigest()
        size = {"/near.jpg": ("88", "66"), "/mislabeled.jpg": ("80", "96")}.get(path, ("96", "72"))
        assert (r["width"], r["height"]) == size
        assert len(r["phash"]) == 16
    assert sorted(p.name for p in folder.iterdir()) == [".crawl.lock", *sorted(r["file"] for r in kept), "manifest.csv"]

    # Counts by reason in the summary, and the shortfall with what to do next.
    counts = {"kept": 7, "download-failed": 7, "timeout": 2, "too-many-bytes": 2, "not-decodable": 2,
              "too-many-pixels": 2, "too-small": 1, "grayscale": 1, "duplicate": 1, "near-duplicate": 1}
    for status, n in counts.items():
        assert re.search(rf"\b{status}\W+{n}\b", stdout), (status, stdout)
    assert re.search(r"usable images in folder\W+7 of 10", stdout)
    assert "warning: only 7 of 10 usable images" in " ".join(err.split())
    assert "add URLs to the list" in err

    # Top-up: more URLs, a bigger N. Known URLs are not fetched again, nothing is renumbered.
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.glob("0*.jpg")}
    calls = {p: r.calls for p, r in server.routes.items()}
    urls = url_list(server, tmp_path, first + ["/good7.jpg", "/good8.jpg", "/good9.jpg"])

    code, stdout, err = cli(capsys, "crawl", "Beach Day!", "-n", "9", "--urls", str(urls), "--out", str(out), *FAST)

    assert code == 0, err
    assert "warning" not in err
    assert {p: r.calls for p, r in server.routes.items()} == calls | {"/good7.jpg": 1, "/good8.jpg": 1}
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.glob("0*.jpg") if p.name in before} == before
    rows2 = manifest(folder)
    assert rows2[: len(rows)] == rows
    new = rows2[len(rows):]
    assert sorted(r["file"] for r in new) == ["000008.jpg", "000009.jpg"]  # numbered in arrival order
    assert sorted((r["url"], r["status"]) for r in new) == [(server.url(f"/good{i}.jpg"), "kept") for i in (7, 8)]
    assert re.search(r"already in manifest\W+24\b", stdout)
    assert re.search(r"usable images in folder\W+9 of 9", stdout)

    # Already full: nothing is fetched at all.
    n_requests = len(server.log)
    code, stdout, err = cli(capsys, "crawl", "Beach Day!", "-n", "5", "--urls", str(urls), "--out", str(out), *FAST)
    assert code == 0 and len(server.log) == n_requests
    assert "9 usable images already in" in err and "nothing to download" in err

    # A kept photo the user deleted: marked removed, replaced under a new number.
    (folder / "000003.jpg").unlink()
    code, stdout, err = cli(capsys, "crawl", "Beach Day!", "-n", "9", "--urls", str(urls), "--out", str(out), *FAST)
    assert code == 0, err
    rows3 = {r["file"]: r for r in manifest(folder)}
    assert rows3["000003.jpg"]["status"] == "removed"
    assert rows3["000010.jpg"]["url"] == server.url("/good9.jpg")
    assert len(list(folder.glob("0*.jpg"))) == 9


def test_only_bad_urls_exit_1_with_reasons(server, tmp_path, capsys):
    urls = url_list(server, tmp_path, ["/missing.jpg", "/page.jpg", "/gray.jpg"])
    code, stdout, err = cli(capsys, "crawl", "junk", "--urls", str(urls), "--out", str(tmp_path / "raw"), *FAST)
    assert code == 1
    assert re.search(r"usable images in folder\W+0 of 125", stdout)
    [line] = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert line.startswith("error: no usable images for 'junk': none of the 3 URLs from urls was usable")
    assert str(tmp_path / "raw" / "junk" / "manifest.csv") in line
    statuses = {r["url"]: r["status"] for r in manifest(tmp_path / "raw" / "junk")}
    assert statuses == {server.url("/missing.jpg"): "download-failed", server.url("/page.jpg"): "not-decodable",
                        server.url("/gray.jpg"): "grayscale"}


def test_empty_url_list_says_so(tmp_path, capsys):
    urls = tmp_path / "urls.txt"
    urls.write_text("# nothing yet\n")
    code, _, err = cli(capsys, "crawl", "beach", "--urls", str(urls), "--out", str(tmp_path / "raw"))
    assert code == 1
    assert f"urls gave no image URLs ({urls} lists 0 URLs); add URLs to the list" in " ".join(err.split())


# --- Bing: a local page in Bing's result format, read by icrawler's own BingParser -----------


def bing_page(urls: list[str]) -> bytes:
    """The shape of https://www.bing.com/images/async results: div.imgpt > a[m=JSON with murl]."""
    items = "".join(
        f'<div class="imgpt"><a class="iusc" href="/images/search?view=detailV2" '
        f'm="{html.escape(json.dumps({"sid": "", "murl": u, "turl": u + "?th"}, separators=(",", ":")))}">'
        f'<img class="mimg" src="{html.escape(u)}?th"></a></div>' for u in urls)
    return f'<!DOCTYPE html><html><body><ul class="dgControl_list"><li>{items}</li></ul></body></html>'.encode()


def test_bing_end_to_end_through_icrawler_parser(server, tmp_path, capsys, monkeypatch):
    first_page = [server.url(p) for p in ("/good1.jpg", "/good2.jpg", "/gray.jpg", "/good3.jpg")]
    later_page = [server.url(p) for p in ("/good3.jpg", "/good4.jpg", "/tiny.jpg")]
    pages = lambda query: bing_page(first_page if parse_qs(query)["first"] == ["0"] else later_page)  # noqa: E731
    server.routes["/images/async"] = Route(page=pages, content_type="text/html; charset=utf-8")
    monkeypatch.setattr(crawl, "BING_URL", server.url("/images/async"))
    out = tmp_path / "raw"

    code, stdout, err = cli(capsys, "crawl", "beach sunset", "-n", "10", "--license", "cc", "--out", str(out), *FAST)

    assert code == 0, err
    asked = [q for q in server.log if q.startswith("/images/async")]
    assert [parse_qs(q.split("?", 1)[1])["first"] for q in asked] == [["0"], ["20"], ["40"], ["60"]]
    assert "q=beach+sunset&" in asked[0]
    assert "&qft=+filterui:photo-photo+filterui:color2-color+filterui:licenseType-Any" in asked[0]
    rows = manifest(out / "beach-sunset")
    assert sorted((r["url"].removeprefix(server.url("")), r["status"], r["engine"]) for r in rows) == [
        ("/good1.jpg", "kept", "bing"), ("/good2.jpg", "kept", "bing"), ("/good3.jpg", "kept", "bing"),
        ("/good4.jpg", "kept", "bing"), ("/gray.jpg", "grayscale", "bing"), ("/tiny.jpg", "too-small", "bing")]
    assert sorted(p.name for p in (out / "beach-sunset").glob("0*")) == [f"{i:06d}.jpg" for i in range(1, 5)]
    msg = " ".join(err.split())
    assert "warning: only 4 of 10 usable images" in msg
    assert "(no more results after 4 result pages); try --engine baidu to top up the same folder" in msg


def baidu_page(urls: list[str]) -> bytes:
    """The shape of Baidu's acjson results: {"data": [{"hoverURL": ...}, ..., {}]}."""
    return json.dumps({"data": [{"hoverURL": u, "thumbURL": u + "?th"} for u in urls] + [{}]}).encode()


def google_page(urls: list[str]) -> bytes:
    """Image URLs inside a script block, where icrawler's GoogleParser looks for them."""
    data = json.dumps([[1, [u, 96, 72]] for u in urls])
    return f"<html><script>AF_initDataCallback({{data: {data}}});</script></html>".encode()


@pytest.mark.parametrize(("engine", "endpoint", "page", "query"), [
    ("baidu", "BAIDU_URL", baidu_page, ["word=beach", "pn=0", "rn=30", "lm=7"]),
    ("google", "GOOGLE_URL", google_page, ["q=beach", "start=0", "tbm=isch", "tbs=itp%3Aphoto%2Cic%3Acolor"]),
])
def test_other_engines_pages_read_by_icrawler_parsers(server, tmp_path, capsys, monkeypatch,
                                                      engine, endpoint, page, query):
    urls = [server.url(p) for p in ("/gray.jpg", "/good1.jpg", "/good2.jpg", "/good3.jpg")]
    server.routes["/search"] = Route(page=lambda q: page(urls), content_type="text/html")
    monkeypatch.setattr(crawl, endpoint, server.url("/search"))
    code, _, err = cli(capsys, "crawl", "beach", "-n", "2", "--engine", engine, "--out", str(tmp_path), *FAST)
    assert code == 0, err
    assert all(part in server.log[0] for part in query), server.log[0]
    rows = manifest(tmp_path / "beach")
    assert sorted(r["status"] for r in rows) == ["grayscale", "kept", "kept"]
    assert {r["engine"] for r in rows} == {engine}
    assert server.routes["/good3.jpg"].calls == 0  # two were enough: nothing more is downloaded


@pytest.mark.parametrize(("answer", "why"), [
    (Route(page=lambda q: bing_page([]), content_type="text/html"),
     "bing gave no image URLs (no more results after 2 result pages)"),
    (Route(status=503), "bing gave no image URLs (result page 1 failed: HTTP 503"),
])
def test_bing_with_nothing_suggests_another_engine(server, tmp_path, capsys, monkeypatch, answer, why):
    server.routes["/images/async"] = answer
    monkeypatch.setattr(crawl, "BING_URL", server.url("/images/async"))
    code, _, err = cli(capsys, "crawl", "nothing", "--out", str(tmp_path / "raw"), *FAST)
    assert code == 1
    [line] = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert line.startswith(f"error: no usable images for 'nothing': {why}")
    assert line.endswith("try --engine baidu to top up the same folder")


def test_ctrl_c_keeps_what_was_kept_and_does_not_wait_for_stalled_downloads(tmp_path):
    """SIGINT while three downloads stall (their limit: 300 s): the kept photo and its manifest row
    stay, nothing half-written is left, and the process ends instead of sitting out the stalls."""
    stalled = {f"/{c}.jpg": Route(GOOD[i], stall=300) for i, c in enumerate("abc", 2)}
    routes = {"/good1.jpg": Route(GOOD[1]), **stalled}
    with HostileServer(routes) as server:
        urls = url_list(server, tmp_path, ["/good1.jpg", "/a.jpg", "/b.jpg", "/c.jpg"])
        # 3 threads, 4 wanted: good1, a and b at once; c is asked for only once good1 is kept,
        # that is after 000001.jpg and the manifest listing it have been written.
        cmd = [sys.executable, "-m", "colorize_cli", "crawl", "beach", "-n", "4", "--threads", "3", "--urls", str(urls),
               "--out", str(tmp_path), "--min-size", "64", "--timeout", "300"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        folder = tmp_path / "beach"
        try:
            assert routes["/c.jpg"].arrived.wait(120)
            proc.send_signal(signal.SIGINT)
            code = proc.wait(timeout=60)
        finally:
            proc.kill()
    assert code != 0
    rows = manifest(folder)
    assert [(r["file"], r["url"], r["status"]) for r in rows] == [("000001.jpg", server.url("/good1.jpg"), "kept")]
    assert sorted(p.name for p in folder.iterdir()) == [".crawl.lock", "000001.jpg", "manifest.csv"]


# --- options, manifests and folders that are wrong ------------------------------------------


@pytest.mark.parametrize(("args", "message"), [
    (["--engine", "urls"], "--engine urls needs --urls FILE"),
    (["--urls", "no-such-list.txt"], "no-such-list.txt: no such file"),
    (["--engine", "bing", "--urls", "list.txt"], "--urls is only used with --engine urls, not --engine bing"),
    (["--engine", "google", "--license", "public-domain"],
     "--license public-domain is not available with --engine google"),
    (["--engine", "baidu", "--license", "cc"], "--license cc is not available with --engine baidu"),
    (["--engine", "flickr"], "--engine flickr needs an API key"),
    (["--max-bytes", "lots"], "'lots': not a size"),
])
def test_option_errors_are_one_line_and_write_nothing(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.delenv("FLICKR_APIKEY", raising=False)
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(capsys, "crawl", "beach", "--out", "raw", *args)
    assert code == 1
    assert err.startswith("error: ") and message in " ".join(err.split())
    assert not (tmp_path / "raw").exists()


def test_keyword_without_letters(tmp_path, capsys):
    code, _, err = cli(capsys, "crawl", "!!!", "--out", str(tmp_path))
    assert code == 1 and "the keyword needs at least one letter or digit" in err


def test_foreign_manifest_is_refused_untouched(tmp_path, capsys):
    folder = tmp_path / "beach"
    folder.mkdir()
    (folder / "manifest.csv").write_text("name,size\na.jpg,3\n")
    urls = tmp_path / "u.txt"
    urls.write_text("http://127.0.0.1:9/a.jpg\n")
    code, _, err = cli(capsys, "crawl", "beach", "--urls", str(urls), "--out", str(tmp_path))
    assert code == 1
    assert "manifest.csv: not a colorize crawl manifest (missing columns: file, url, engine" in " ".join(err.split())
    assert (folder / "manifest.csv").read_text() == "name,size\na.jpg,3\n"


def test_second_crawl_into_the_same_folder_is_refused_naming_the_first(tmp_path, capsys):
    folder = tmp_path / "beach"
    folder.mkdir()
    urls = tmp_path / "u.txt"
    urls.write_text("http://127.0.0.1:9/a.jpg\n")
    with exclusive_lock(folder, ".crawl.lock", "`colorize crawl`"):
        code, _, err = cli(capsys, "crawl", "beach", "--urls", str(urls), "--out", str(tmp_path))
    assert code == 1
    assert " ".join(err.split()).startswith(
        f"error: {folder}: `colorize crawl` is already running here (process {os.getpid()}: ")
    assert not (folder / "manifest.csv").exists()


# --- the pieces -------------------------------------------------------------------------------


@pytest.mark.parametrize(("keyword", "slug"), [
    ("beach", "beach"), ("Beach Day!", "beach-day"), ("  sunset / sea_shore ", "sunset-sea-shore"),
    ("plage été", "plage-été"), ("../../etc", "etc"), ("-rf", "rf"),
])
def test_slugify(keyword, slug):
    assert crawl.slugify(keyword) == slug


@pytest.mark.parametrize(("text", "size"), [
    ("20M", 20 * 2**20), ("500k", 500 * 1024), ("1G", 2**30), ("4096", 4096), ("64KiB", 65536)])
def test_parse_size(text, size):
    assert crawl.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "0", "-5", "20 MB please", "1.5M"])
def test_parse_size_refuses(text):
    with pytest.raises(UserError, match="not a size"):
        crawl.parse_size(text)


def test_phash_matches_copies_not_other_photos():
    a, b = crawl.phash(photo(1)), crawl.phash(photo(2))
    smaller = crawl.phash(open_image(encode(photo(1).resize((60, 45)), quality=50)))
    assert (a ^ smaller).bit_count() <= crawl.PHASH_NEAR < (a ^ b).bit_count()
    assert a < 2**63


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared beach photos not present")
def test_phash_keeps_distinct_real_photos_apart():
    """The documented threshold: no two of the shared beach photos count as near duplicates."""
    hashes = [crawl.phash(open_image(p)) for p in sorted(SHARED.glob("*.jpg"))[:150]]
    closest = min((a ^ b).bit_count() for i, a in enumerate(hashes) for b in hashes[i + 1:])
    assert closest > crawl.PHASH_NEAR


# --- no network -----------------------------------------------------------------------------


@pytest.fixture
def offline(monkeypatch):
    """As on a machine with no network: every name but 127.0.0.1's fails to resolve (a patched
    resolver; the engines point at .invalid hosts too, which never resolve anywhere)."""
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host in ("127.0.0.1", b"127.0.0.1"):
            return real(host, *args, **kwargs)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    for name, host in (("BING_URL", "bing"), ("BAIDU_URL", "baidu"), ("GOOGLE_URL", "google"), ("FLICKR_URL", "flickr")):
        monkeypatch.setattr(crawl, name, f"https://{host}.invalid/search")


@pytest.mark.parametrize("engine", ["bing", "baidu"])
def test_no_network_says_so_and_leaves_nothing_behind(offline, tmp_path, capsys, engine):
    out = tmp_path / "raw"
    code, stdout, err = cli(capsys, "crawl", "beach", "--engine", engine, "--out", str(out), *FAST)
    assert code == 1
    others = ", ".join(f"{e}.invalid" for e in ("bing", "baidu", "google", "flickr") if e != engine)
    [line] = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert line == (f"error: no network: cannot resolve {engine}.invalid (Temporary failure in name resolution), "
                    f"nor reach any other engine ({others}); check the internet connection, then run again")
    assert "try --engine" not in err
    assert list(tmp_path.iterdir()) == []  # no folder, no empty manifest, no lock file


def test_no_network_with_a_url_list_records_nothing_so_a_later_run_tries_again(offline, tmp_path, capsys):
    urls = tmp_path / "urls.txt"
    urls.write_text("https://a.example/1.jpg\nhttps://b.example/2.jpg\n")
    folder = tmp_path / "raw" / "beach"
    folder.mkdir(parents=True)
    (folder / "mine.txt").write_text("the user's")
    code, stdout, err = cli(capsys, "crawl", "beach", "--urls", str(urls), "--out", str(tmp_path / "raw"), *FAST)
    assert code == 1
    [line] = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert line == ("error: no network: none of the 2 URLs could be reached (cannot resolve a.example (Temporary "
                    "failure in name resolution)); nothing was recorded: check the internet connection, then run again")
    assert sorted(p.name for p in folder.iterdir()) == [".crawl.lock", "mine.txt"]  # a folder it did not make


def test_an_unresolvable_host_among_reachable_ones_is_recorded(offline, server, tmp_path, capsys):
    urls = url_list(server, tmp_path, ["/good1.jpg"], ["https://gone.invalid/x.jpg"])
    code, stdout, err = cli(capsys, "crawl", "beach", "--urls", str(urls), "--out", str(tmp_path / "raw"), *FAST)
    assert code == 0, err
    rows = {r["url"]: (r["status"], r["detail"]) for r in manifest(tmp_path / "raw" / "beach")}
    assert rows == {server.url("/good1.jpg"): ("kept", ""),
                    "https://gone.invalid/x.jpg": ("download-failed",
                                                   "cannot resolve gone.invalid (Temporary failure in name resolution)")}


def test_an_engine_with_no_results_leaves_no_empty_manifest(server, tmp_path, capsys, monkeypatch):
    server.routes["/images/async"] = Route(page=lambda q: bing_page([]), content_type="text/html")
    monkeypatch.setattr(crawl, "BING_URL", server.url("/images/async"))
    code, _, err = cli(capsys, "crawl", "nothing", "--out", str(tmp_path / "raw"), *FAST)
    assert code == 1 and "bing gave no image URLs" in err
    assert list(tmp_path.iterdir()) == []
    # A folder that was there already stays, with what it held; still no empty manifest.
    (tmp_path / "raw" / "nothing").mkdir(parents=True)
    code, _, err = cli(capsys, "crawl", "nothing", "--out", str(tmp_path / "raw"), *FAST)
    assert code == 1
    assert [p.name for p in (tmp_path / "raw" / "nothing").iterdir()] == [".crawl.lock"]


# --- the help of every command (crawl, prep, survey and the top level are rendered here) ---------


HELP_PAGES = [(), ("crawl",), ("prep",), ("survey",), ("survey", "build"), ("survey", "serve"), ("train",),
              ("infer",), ("evaluate",), ("demo",)]


def render_help(capsys, monkeypatch, columns: int, *command: str) -> list[str]:
    monkeypatch.setenv("COLUMNS", str(columns))
    code, out, err = cli(capsys, *command, "--help")
    assert code == 0, err
    return out.splitlines()


def early_breaks(lines: list[str]) -> list[str]:
    """Lines of prose that end before the width although the next line's first word would have
    fitted: a line break from the source, not from wrapping. Looked for in the description
    (outside the panels) and in the Commands panel's second column; an aligned table (a line
    that ends with ':', rows with runs of spaces) is meant to keep its lines."""
    width = max(len(ln) for ln in lines)
    faults = []

    def check(column: list[str | None], room: int) -> None:
        for a, b in zip(column, column[1:]):
            if a and b and not a.endswith(":") and "  " not in b.strip() and len(a) + 1 + len(b.split()[0]) < room:
                faults.append(f"{a!r} + {b.split()[0]!r}")

    check([None if ln.startswith(("╭", "│", "╰")) else ln[1:].rstrip() for ln in lines], width - 2)
    if any(ln.startswith("╭─ Commands") for ln in lines):
        start = next(i for i, ln in enumerate(lines) if ln.startswith("╭─ Commands")) + 1
        rows = [ln[2:-2] for ln in lines[start:] if ln.startswith("│")]
        offset = len(rows[0]) - len(rows[0].split(maxsplit=1)[1])
        descriptions: list[str | None] = []
        for row in rows:
            if row[:offset].strip():  # a new command: its description is a new paragraph
                descriptions.append(None)
            descriptions.append(row[offset:].rstrip())
        check(descriptions, len(rows[0]) - offset - 1)
    return faults


@pytest.mark.parametrize("columns", [80, 100])
@pytest.mark.parametrize("command", HELP_PAGES, ids=lambda c: " ".join(c) or "colorize")
def test_help_has_no_line_broken_early(capsys, monkeypatch, command, columns):
    assert early_breaks(render_help(capsys, monkeypatch, columns, *command)) == []


def test_the_top_level_help_names_every_command(capsys, monkeypatch):
    lines = render_help(capsys, monkeypatch, 80)
    names = sorted(get_command(app).commands)
    assert names == ["app", "crawl", "demo", "evaluate", "infer", "models", "prep", "survey", "train"]
    summary = " ".join(ln.strip() for ln in lines[: next(i for i, ln in enumerate(lines) if ln.startswith("╭"))])
    listed = [ln.split()[1] for ln in lines[next(i for i, ln in enumerate(lines) if ln.startswith("╭─ Commands")):]
              if re.match(r"│ \w", ln)]
    assert sorted(listed) == names
    for name in names:
        assert re.search(rf"\b{name}\b", summary.removeprefix("Usage: colorize [OPTIONS] COMMAND [ARGS]...")), name


@pytest.mark.parametrize(("command", "arguments"), [
    (("crawl",), ["KEYWORD"]), (("prep",), ["SRC", "DEST"]), (("survey", "build"), ["DATA"]),
    (("survey", "serve"), ["STUDY"])])
def test_arguments_are_named_in_capitals_like_the_help_text_names_them(capsys, monkeypatch, command, arguments):
    lines = render_help(capsys, monkeypatch, 80, *command)
    assert lines[1].split() == ["Usage:", "colorize", *command, "[OPTIONS]", *(f"{{{a}}}" for a in arguments)]
    panel = [ln.split()[2] for ln in lines if re.match(r"│ \*\s+[A-Za-z]", ln)]
    assert panel == arguments


def test_crawl_help_names_the_default_engine(capsys, monkeypatch):
    text = " ".join(" ".join(ln.strip("│ ") for ln in render_help(capsys, monkeypatch, 200, "crawl")).split())
    assert "Where the image URLs come from: bing, baidu, google, flickr or urls [default: bing, or urls when " \
           "--urls is given]." in text
    assert not re.search(r"\w \.(\s|$)", text)  # no sentence ends in " ." (markup that ate a [...])
