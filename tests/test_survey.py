"""`colorize survey`: building a study, the answer server, and a full study in headless Chromium."""

from __future__ import annotations

import csv
import http.client
import io
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from clirun import run_cli
from localweb import browser_or_skip, get_with_host, serving
from colorize_cli import color
from colorize_cli.browser import launch
from colorize_cli.cli import main
from colorize_cli.errors import UserError
from colorize_cli.checkpoint import save_checkpoint
from colorize_cli.files import exclusive_lock
from colorize_cli.model import ModelConfig, build
from colorize_cli.survey import (
    HEADER,
    SERVE_LOCK,
    BadRequest,
    ServedStudy,
    SurveyConfig,
    SurveyServer,
    build_study,
    valid_name,
)
from colorize_cli.votes import read_votes

QUIET = Console(quiet=True)
HEADER_LINE = ",".join(HEADER) + "\n"


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A tiny untrained generator checkpoint (32 px, width 8): fast, and enough to colorize."""
    cfg = ModelConfig(size=32, width=8)
    g, _ = build(cfg)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_checkpoint(path, {f"generator.{k}": v for k, v in g.state_dict().items()}, cfg)
    return path


def make_pairs(folder: Path, count: int, size: int = 32) -> Path:
    """`count` A|B pairs like `colorize prep` writes: colour A left, its gray B right."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(count):
        r, g, b = rng.uniform(0.2, 1.0, 3)
        a = np.stack([xx * r * 255 / size, yy * g * 255 / size, (xx + yy) * b * 127 / size], axis=-1)
        color = Image.fromarray(a.astype(np.uint8))
        pair = Image.new("RGB", (2 * size, size))
        pair.paste(color, (0, 0))
        pair.paste(color.convert("L").convert("RGB"), (size, 0))
        pair.save(folder / f"photo_{i:02d}.png")
    return folder


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    return make_pairs(tmp_path_factory.mktemp("data") / "test", 8)


@pytest.fixture(scope="module")
def built(tmp_path_factory, pairs, model) -> Path:
    """A study with 3 scored trials, 1 vigilance and 1 practice trial; copied per test."""
    out = tmp_path_factory.mktemp("built") / "study"
    build_study(pairs, out, SurveyConfig(model=model, n=3, exposure=0.2, seed=1, practice=1, vigilance=1), QUIET)
    return out


@pytest.fixture
def study(built, tmp_path) -> Path:
    return Path(shutil.copytree(built, tmp_path / "study"))


@pytest.fixture
def server(study):
    with serving(SurveyServer(ServedStudy(study), port=0)) as srv:
        yield srv


def record(folder: Path) -> dict:
    return json.loads((folder / "study.json").read_text())


def request(srv: SurveyServer, method: str, path: str, body: bytes | None = None,
            ctype: str = "application/json") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=10)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": ctype} if body is not None else {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def answer(srv: SurveyServer, **fields) -> tuple[int, dict]:
    status, body = request(srv, "POST", "/api/answer", json.dumps(fields).encode())
    return status, json.loads(body)


def png_chunks(path: Path) -> list[bytes]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        chunks.append(data[pos + 4:pos + 8])
        pos += 12 + length
    return chunks


# --- building ---------------------------------------------------------------------------


def test_build_writes_trials_whose_real_side_is_the_real_photo(built, pairs):
    rec = record(built)
    trials = rec["trials"]
    assert [t["id"] for t in trials] == ["1", "2", "3", "4"]
    assert sorted(t["kind"] for t in trials) == ["test", "test", "test", "vigilance"]
    assert [p["id"] for p in rec["practice"]] == ["p1"]
    names = [t["image"] for t in trials + rec["practice"]]
    assert len(set(names)) == 5 and all(n.startswith("photo_") for n in names)
    for t in trials + rec["practice"]:
        pair = np.asarray(Image.open(pairs / t["image"]).convert("RGB"))
        a, b = pair[:, :32], pair[:, 32:, 0]
        real_file = t[t["real_side"]]
        fake_file = t["right" if t["real_side"] == "left" else "left"]
        real, fake = Image.open(built / real_file), Image.open(built / fake_file)
        assert np.array_equal(np.asarray(real), a)
        assert (real.size, real.mode, real.format) == (fake.size, fake.mode, fake.format) == ((32, 32), "RGB", "PNG")
        assert not np.array_equal(np.asarray(fake), a)
        # Both colorizations keep the photo's own gray exactly: only colour differs.
        assert np.array_equal(np.asarray(fake.convert("L")), b)


def test_trial_images_reveal_nothing_through_names_or_metadata(built):
    files = sorted((built / "images").iterdir())
    assert len(files) == 10
    for f in files:
        assert len(f.stem) == 16 and all(c in "0123456789abcdef" for c in f.stem) and f.suffix == ".png"
        assert png_chunks(f)[0] == b"IHDR" and set(png_chunks(f)) == {b"IHDR", b"IDAT", b"IEND"}
    page = (built / "study.js").read_text()
    assert page.startswith("window.STUDY = ")
    study = json.loads(page[len("window.STUDY = "):].rstrip().rstrip(";"))
    assert all(set(t) == {"id", "left", "right"} for t in study["trials"])  # no key, no photo names
    assert study["exposure_ms"] == 200
    key = json.loads((built / "key.js").read_text()[len("window.STUDY_KEY = "):].rstrip().rstrip(";"))
    assert {k: v["real_side"] for k, v in key.items()} == {t["id"]: t["real_side"] for t in record(built)["trials"]}


def test_same_seed_same_study_other_seed_other_order_sides_balanced(pairs, model, tmp_path):
    def plan(seed: int, name: str) -> list[tuple]:
        out = tmp_path / name
        build_study(pairs, out, SurveyConfig(model=model, n=6, exposure=1, seed=seed), QUIET)
        return [(t["image"], t["real_side"]) for t in record(out)["trials"]]

    first = plan(3, "a")
    assert plan(3, "b") == first
    assert plan(4, "c") != first
    for seed in range(5):
        assert sorted(side for _, side in plan(seed, f"s{seed}")) == ["left"] * 3 + ["right"] * 3


def test_vigilance_photo_keeps_luma_but_flips_every_hue():
    a = np.zeros((16, 16, 3), np.uint8)
    a[:8] = (40, 90, 200)  # sky blue
    a[8:] = (60, 160, 60)  # green
    real = Image.fromarray(a)
    flipped = np.asarray(color.hue_flip(real)).astype(int)
    assert np.array_equal(np.asarray(color.hue_flip(real).convert("L")), np.asarray(real.convert("L")))
    top, bottom = flipped[0, 0], flipped[15, 0]
    assert top[0] > top[2]  # blue became orange-ish: red now above blue
    assert bottom[1] < min(bottom[0], bottom[2])  # green became magenta-ish


def test_build_refuses_a_folder_that_holds_files(pairs, model, tmp_path):
    out = tmp_path / "study"
    out.mkdir()
    (out / "votes.csv").write_text(HEADER_LINE + "x,ann,1,left,10\n")
    with pytest.raises(UserError, match="already exists and is not an empty folder"):
        build_study(pairs, out, SurveyConfig(model=model, n=1), QUIET)
    assert (out / "votes.csv").read_text() == HEADER_LINE + "x,ann,1,left,10\n"
    assert list(tmp_path.iterdir()) == [out]  # no temporary folder left behind


def test_unusable_files_are_skipped_with_their_reason(model, tmp_path):
    data = make_pairs(tmp_path / "test", 2)
    Image.new("RGB", (40, 30)).save(data / "not_a_pair.png")
    (data / "broken.jpg").write_bytes(b"not really a jpeg")
    console = Console(file=io.StringIO())
    rep = build_study(data, tmp_path / "s", SurveyConfig(model=model, n=2), console)
    warnings = console.file.getvalue().splitlines()
    assert rep.trials == 2 and len(rep.skipped) == 2
    assert any("not_a_pair.png: not an A|B pair (40x30; expected width = 2 x height)" in w for w in warnings)
    assert any("broken.jpg: not an image" in w for w in warnings)
    with pytest.raises(UserError, match=r"only 2 usable A\|B pairs, the study needs 3"):
        build_study(data, tmp_path / "t", SurveyConfig(model=model, n=2, vigilance=1), QUIET)


def test_config_rejects_nonsense():
    with pytest.raises(UserError, match="--exposure"):
        SurveyConfig(exposure=0)
    with pytest.raises(UserError, match="--n must be at least 1"):
        SurveyConfig(n=0)


def test_cli_both_spellings_build_and_serve_reports_a_non_study(pairs, model, tmp_path, capsys):
    for args, name in ((["survey"], "short"), (["survey", "build"], "long")):
        with pytest.raises(SystemExit) as e:
            main([*args, str(pairs), "--out", str(tmp_path / name), "--model", str(model), "--n", "2", "--exposure", "0.5"])
        assert e.value.code in (0, None)
        assert len(record(tmp_path / name)["trials"]) == 2
    assert f"built {tmp_path / 'long'}: 2 trials, 0.5 s exposure" in capsys.readouterr().err.replace("\n", "")
    with pytest.raises(SystemExit) as e:
        main(["survey", "serve", str(pairs), "--port", "0"])
    assert e.value.code == 1
    assert "not a study folder (no study.json" in capsys.readouterr().err


def test_rater_names():
    assert valid_name("Ann") and valid_name("Zoë O'Neil-Smith") and valid_name("rater_7")
    for bad in ("", " Ann", "Ann ", "=cmd()", "a,b", "x\ny", "A" * 65, 7, None):
        assert not valid_name(bad), bad


# --- the server -------------------------------------------------------------------------


def test_serves_the_page_and_images_only(server, study):
    status, body = request(server, "GET", "/")
    assert status == 200 and b"Real or colorized?" in body
    image = record(study)["trials"][0]["left"]
    status, body = request(server, "GET", "/" + image)
    assert status == 200 and body == (study / image).read_bytes()
    (study / "notes.txt").write_text("private")
    for path in ["/key.js", "/study.json", "/votes.csv", "/images/", "/images", "/notes.txt",
                 "/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/images/..%2f..%2fkey.js",
                 "/images/%2e%2e/study.json", "//etc/passwd", "/..%5c..%5cetc%5cpasswd",
                 "/%252e%252e/etc/passwd", "/" + str(study / "key.js")]:
        status, body = request(server, "GET", path)
        assert status in (403, 404), path
        assert b"root:" not in body and b"STUDY_KEY" not in body and b"private" not in body


def test_answers_are_scored_on_the_server_and_appended(server, study):
    trials = {t["id"]: t for t in record(study)["trials"]}
    scored = next(t for t in trials.values() if t["kind"] == "test")
    check = next(t for t in trials.values() if t["kind"] == "vigilance")
    wrong = "left" if scored["real_side"] == "right" else "right"
    assert answer(server, trial=scored["id"], rater="Ann", picked=wrong, response_ms=900) == (200, {"ok": True})
    assert answer(server, trial=scored["id"], rater="Bo", picked=scored["real_side"], response_ms=0)[0] == 200
    assert answer(server, trial=check["id"], rater="Ann", picked=check["real_side"], response_ms=5)[0] == 200
    status, body = answer(server, trial=scored["id"], rater="Ann", picked=scored["real_side"], response_ms=1)
    assert status == 409 and "already answered" in body["error"]
    img, side = scored["image"], scored["real_side"]
    assert (study / "votes.csv").read_text() == HEADER_LINE + f"{img},Ann,1,{side},900\n{img},Bo,0,{side},0\n"
    assert (study / "vigilance.csv").read_text() == HEADER_LINE + f"{check['image']},Ann,0,{check['real_side']},5\n"
    status, body = request(server, "POST", "/api/rater", json.dumps({"rater": "Ann"}).encode())
    assert status == 200 and sorted(json.loads(body)["answered"]) == sorted([scored["id"], check["id"]])


@pytest.mark.parametrize("body, ctype, message", [
    (b"{not json", "application/json", "not valid JSON"),
    (b"[1, 2]", "application/json", "JSON object"),
    (b'{"trial": "1", "rater": "Ann", "picked": "left", "response_ms": 5}', "text/plain", "send JSON"),
    (b'{"trial": "99", "rater": "Ann", "picked": "left", "response_ms": 5}', "application/json", "unknown trial"),
    (b'{"trial": "p1", "rater": "Ann", "picked": "left", "response_ms": 5}', "application/json", "unknown trial"),
    (b'{"trial": 1, "rater": "Ann", "picked": "left", "response_ms": 5}', "application/json", "unknown trial"),
    (b'{"trial": "1", "rater": "Ann", "picked": "middle", "response_ms": 5}', "application/json", "picked must be"),
    (b'{"trial": "1", "rater": "Ann", "picked": 0, "response_ms": 5}', "application/json", "picked must be"),
    (b'{"trial": "1", "rater": "=HYPERLINK()", "picked": "left", "response_ms": 5}', "application/json", "invalid rater"),
    (b'{"trial": "1", "rater": "Ann", "picked": "left", "response_ms": -1}', "application/json", "response_ms"),
    (b'{"trial": "1", "rater": "Ann", "picked": "left", "response_ms": true}', "application/json", "response_ms"),
    (b'{"trial": "1", "rater": "Ann", "picked": "left", "response_ms": 1.5}', "application/json", "response_ms"),
    (b'{"trial": "1", "rater": "Ann", "picked": "left"}', "application/json", "exactly the fields"),
    (b'{"trial": "1", "rater": "Ann", "picked": "left", "response_ms": 5, "choice": 0}', "application/json", "exactly the fields"),
    (b'{"trial": "1", "rater": "' + b"x" * 5000 + b'"}', "application/json", "the body must be"),
])
def test_malformed_answers_are_rejected_and_nothing_is_written(server, study, body, ctype, message):
    status, reply = request(server, "POST", "/api/answer", body, ctype)
    assert status == 400
    assert message in json.loads(reply)["error"]
    assert not (study / "votes.csv").exists() and not (study / "vigilance.csv").exists()


def test_concurrent_answers_are_all_recorded(server, study):
    scored = [t for t in record(study)["trials"] if t["kind"] == "test"]
    jobs = [(t, f"rater {r}") for r in range(12) for t in scored]
    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(lambda j: answer(server, trial=j[0]["id"], rater=j[1], picked="left", response_ms=7)[0], jobs))
    assert results == [200] * len(jobs)
    lines = (study / "votes.csv").read_text().splitlines(keepends=True)
    assert lines[0] == HEADER_LINE and len(lines) == 1 + len(jobs)
    rows = list(csv.DictReader(lines))
    assert sorted((r["image"], r["rater"]) for r in rows) == sorted((t["image"], r) for t, r in jobs)
    votes = read_votes(study / "votes.csv")
    assert votes.matrix.shape == (3, 12) and not np.isnan(votes.matrix).any()


def test_restarted_server_appends_and_still_refuses_duplicates(study):
    first = next(t for t in record(study)["trials"] if t["kind"] == "test")
    earlier = HEADER_LINE + f"{first['image']},Ann,0,{first['real_side']},12\n"
    (study / "votes.csv").write_text(earlier)
    s = ServedStudy(study)
    with pytest.raises(BadRequest, match="already answered"):
        s.record({"trial": first["id"], "rater": "Ann", "picked": "left", "response_ms": 1})
    s.record({"trial": first["id"], "rater": "Cy", "picked": "left", "response_ms": 1})
    text = (study / "votes.csv").read_text()
    assert text.startswith(earlier) and text.count("\n") == 3


def test_refuses_to_append_to_a_foreign_or_torn_file(study):
    (study / "votes.csv").write_text("image,v1,v2\n1,0,1\n")
    with pytest.raises(UserError, match="refusing to append"):
        ServedStudy(study)
    (study / "votes.csv").write_text(HEADER_LINE + "photo_01.png,Ann,0,le")
    with pytest.raises(UserError, match="last line is incomplete"):
        ServedStudy(study)


def test_a_study_record_cannot_point_the_server_outside_the_folder(study):
    rec = record(study)
    rec["trials"][0]["left"] = "../../etc/passwd"
    (study / "study.json").write_text(json.dumps(rec))
    with pytest.raises(UserError, match="'../../etc/passwd' is not a trial image name"):
        ServedStudy(study)


def test_serve_reports_a_busy_port(server, study):
    with pytest.raises(UserError, match=f"cannot listen on 127.0.0.1:{server.server_address[1]}"):
        SurveyServer(ServedStudy(study), port=server.server_address[1])


# --- a whole study in a real browser ----------------------------------------------------


def _take_study(page, name: str, plan: list[str], practice: int) -> None:
    """Enter the name, do the practice trials, then answer each trial as `plan` says, alternating
    clicks and keys. Checks the photos are shown and then hidden before the question."""
    page.fill("#name", name)
    page.click("#start")
    for _ in range(practice):
        page.click("#show")
        page.click("#pick-left")
        page.wait_for_selector("#feedback-text:has-text('the real photo was on the')")
        page.click("#next")
    for i, side in enumerate(plan):
        page.wait_for_selector("#show", state="visible")
        assert page.locator("#left img").count() == 1  # preloaded, still covered
        if i % 2:
            page.keyboard.press("Space")
        else:
            page.click("#show")
        page.wait_for_selector("#question", state="visible")
        assert page.locator("#stage img").count() == 0  # hidden once the exposure ends
        if i % 2:
            page.keyboard.press("ArrowLeft" if side == "left" else "ArrowRight")
        else:
            page.click(f"#pick-{side}")
    page.wait_for_selector("#done", state="visible")


def _evaluate(path: Path) -> str:
    run = subprocess.run([sys.executable, "-m", "colorize_cli", "evaluate", str(path)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_a_whole_study_in_headless_chromium(server, study, tmp_path):
    sync_api = browser_or_skip()
    rec = record(study)
    trials = rec["trials"]
    plan = ["left", "right", "right", "left"]
    expected = {t["image"]: int(side != t["real_side"]) for t, side in zip(trials, plan)}
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page()
            page.goto(server.url)
            page.fill("#name", "=bad")
            page.click("#start")
            assert "Please enter a name" in page.inner_text("#name-error")
            _take_study(page, "Ann Lee", plan, practice=1)
            assert "Your 4 answers have been saved, Ann Lee" in page.inner_text("#done-text")

            # Opened from the file system: same study, the CSV is offered as a download.
            local = browser.new_page()
            local.goto((study / "index.html").as_uri())
            _take_study(local, "Bo", plan, practice=1)
            links = local.locator("a.download")
            assert links.count() == 2
            saved = {}
            for i in range(2):
                with local.expect_download() as d:
                    links.nth(i).click()
                saved[d.value.suggested_filename] = tmp_path / d.value.suggested_filename
                d.value.save_as(saved[d.value.suggested_filename])
        finally:
            browser.close()

    served = list(csv.DictReader((study / "votes.csv").open()))
    assert [r["rater"] for r in served] == ["Ann Lee"] * 3
    assert {r["image"]: int(r["choice"]) for r in served} == {k: v for k, v in expected.items()
                                                              if k in {t["image"] for t in trials if t["kind"] == "test"}}
    assert all(int(r["response_ms"]) >= 0 for r in served)
    check = next(t for t in trials if t["kind"] == "vigilance")
    (vig,) = list(csv.DictReader((study / "vigilance.csv").open()))
    assert (vig["image"], vig["rater"], int(vig["choice"])) == (check["image"], "Ann Lee", expected[check["image"]])

    assert sorted(saved) == ["vigilance-Bo.csv", "votes-Bo.csv"]
    downloaded = saved["votes-Bo.csv"].read_text()
    assert downloaded.startswith(HEADER_LINE)
    assert [(r["image"], r["choice"]) for r in csv.DictReader(downloaded.splitlines())] == \
        [(r["image"], r["choice"]) for r in served]
    fooled = sum(int(r["choice"]) for r in served)
    assert f"fooling rate: {fooled} of 3 votes" in _evaluate(study / "votes.csv")
    assert f"fooling rate: {fooled} of 3 votes" in _evaluate(saved["votes-Bo.csv"])
    assert (study / "votes.csv").read_text().count("\n") == 4  # the file-mode rater wrote nothing here


def test_no_button_shows_before_the_photos_are_decoded(server, study):
    """The first trial's "Show photos" button was visible while its photos were still loading, and
    a click then was lost (the study hung, and so did this test under load). The photos are held
    back here until the page has been checked."""
    sync_api = browser_or_skip()
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page()
            held, released = [], []

            def hold(route) -> None:
                if released:
                    route.continue_()
                else:
                    held.append(route)

            page.route("**/*.png", hold)
            page.goto(server.url)
            page.fill("#name", "Ann")
            with page.expect_request("**/*.png"):
                page.click("#start")
            page.wait_for_selector("#trial", state="visible")
            assert page.locator("#show").is_hidden() and page.locator("#pick-left").is_hidden()
            released.append(True)
            for route in held:
                route.continue_()
            page.click("#show")
            page.click("#pick-left")
            page.wait_for_selector("#feedback-text:has-text('the real photo was on the')")
        finally:
            browser.close()


# --- one server per study, files it cannot use, and a server that survives the network ----------


def test_a_second_server_on_the_same_study_is_refused(study, capsys, monkeypatch):
    """Two servers would each accept the same rater's answer once: duplicate (image, rater) rows
    that make `colorize evaluate` refuse the whole votes.csv."""
    served = []
    monkeypatch.setattr(SurveyServer, "serve_forever", lambda self, *a, **k: served.append(self))
    with exclusive_lock(study, SERVE_LOCK, "`colorize survey serve`"):
        code, out, err = run_cli(capsys, "survey", "serve", study, "--port", "0")
    assert code == 1 and served == []
    assert err.startswith(f"error: {study}: `colorize survey serve` is already running here "
                          f"(process {os.getpid()}: ")
    assert len(err.strip().splitlines()) == 1
    code, out, err = run_cli(capsys, "survey", "serve", study, "--port", "0")  # free again: it serves
    assert code == 0 and len(served) == 1, err


@pytest.mark.parametrize("kind", ["latin-1", "folder"])
def test_a_votes_file_it_cannot_read_is_one_line(study, capsys, kind):
    if kind == "folder":
        (study / "votes.csv").mkdir()
        reason = "is a folder, not a votes file"
    else:
        (study / "votes.csv").write_bytes((HEADER_LINE + "photo_01.png,Zoë,1,left,10\n").encode("latin-1"))
        reason = "not a UTF-8 text file (invalid continuation byte at byte 56); refusing to append to it"
    code, out, err = run_cli(capsys, "survey", "serve", study, "--port", "0")
    assert code == 1
    assert err == f"error: {study / 'votes.csv'}: {reason}\n"


def test_a_pair_whose_name_is_not_utf8_is_recorded_escaped(model, tmp_path):
    data = make_pairs(tmp_path / "test", 2)
    odd = data / os.fsdecode(b"photo\xff.png")
    (data / "photo_01.png").rename(odd)
    out = tmp_path / "study"
    build_study(data, out, SurveyConfig(model=model, n=2, exposure=1), QUIET)
    names = sorted(t["image"] for t in record(out)["trials"])
    assert names == ["photo\\xff.png", "photo_00.png"]
    assert "photo\\\\xff.png" in (out / "key.js").read_bytes().decode("utf-8")
    s = ServedStudy(out)
    tid = next(t["id"] for t in record(out)["trials"] if t["image"] == "photo\\xff.png")
    s.record({"trial": tid, "rater": "Ann", "picked": "left", "response_ms": 3})
    assert read_votes(out / "votes.csv").images == ["photo\\xff.png"]


@pytest.fixture
def quick_server(study):
    """A server whose idle sockets time out after 0.3 s and that runs at most 2 connections at once;
    `closed` is set each time it has finished with a connection."""
    srv = SurveyServer(ServedStudy(study), port=0, socket_timeout=0.3, max_connections=2)
    srv.closed = threading.Event()
    finish = srv.shutdown_request

    def shutdown_request(request) -> None:
        finish(request)
        srv.closed.set()

    srv.shutdown_request = shutdown_request
    with serving(srv):
        yield srv


def raw_connection(srv: SurveyServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", srv.server_address[1]), timeout=10)
    return sock


def test_a_connection_held_open_is_closed_after_the_timeout(quick_server):
    with raw_connection(quick_server) as sock:
        sock.sendall(f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{quick_server.server_address[1]}\r\n".encode())
        assert sock.recv(1024) == b""  # the server hung up (the 10 s client timeout would raise)


def test_connections_past_the_cap_are_turned_away_at_once(quick_server):
    port = quick_server.server_address[1]
    with raw_connection(quick_server) as a, raw_connection(quick_server) as b, raw_connection(quick_server) as c:
        reply = c.recv(1024)
        assert reply.startswith(b"HTTP/1.1 503 Service Unavailable\r\n") and reply.endswith(b"\r\n\r\nbusy\n")
        for sock in (a, b):  # the two within the cap are served normally
            sock.sendall(f"GET /survey.css HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
            assert sock.recv(1024).startswith(b"HTTP/1.0 200 OK\r\n")


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1:1", "127.0.0.1.evil.example:{port}",
                                  None])
def test_only_requests_for_this_host_are_answered(server, host):
    """DNS rebinding: a page on evil.example whose name now points at 127.0.0.1 must not read
    the study or post votes."""
    port = server.server_address[1]
    status, body = get_with_host(port, "/", None if host is None else host.format(port=port))
    assert status == (400 if host is None else 421)
    assert body == (b"a Host header is required\n" if host is None
                    else f"this server answers only for 127.0.0.1:{port} and localhost:{port}\n".encode())
    for allowed in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}", f"[::1]:{port}"):
        assert get_with_host(port, "/", allowed)[0] == 200, allowed


def test_a_client_that_resets_mid_response_leaves_no_traceback(quick_server, study, capsys):
    image = record(study)["trials"][0]["left"]
    # Far more than the socket buffers hold, so the server is still writing when the reset comes.
    (study / image).write_bytes(np.random.default_rng(0).bytes(32 * 2**20))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", quick_server.server_address[1]))
    sock.sendall(f"GET /{image} HTTP/1.1\r\nHost: 127.0.0.1:{quick_server.server_address[1]}\r\n\r\n".encode())
    assert sock.recv(16).startswith(b"HTTP/1.0 200")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # an RST, as when a tab is closed
    assert quick_server.closed.wait(10)
    out, err = capsys.readouterr()
    assert err == "" and out == ""
