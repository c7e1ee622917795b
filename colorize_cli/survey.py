"""The real-or-colorized perceptual study: build a self-contained study folder, then serve it.

A study shows, per trial, a colorized photo and the real one side by side for a few seconds,
hides them and asks which was real (as in the original project's hand-run study, and the
"colorization Turing test" of Zhang, Isola and Efros 2016). The fooling rate that
`colorize evaluate votes.csv` reports is the share of answers that picked the colorized one.

Folder layout (`build_study`):
    index.html, survey.js, survey.css   the page (package assets, no network, no CDN)
    study.js     trials as the page sees them: opaque image names, no answer key
    key.js       the answer key, loaded by the page only when opened from the file system
    study.json   the full record: settings, source photo and real side of every trial
    images/      PNGs with random names and no metadata, both sides of a trial alike
The server (`serve`) hands out only the page, study.js and the trial images; it never serves
key.js or study.json, and it decides itself which side was real, so a rater cannot look the
answer up. Answers are appended to votes.csv, vigilance answers to vigilance.csv. One server
runs per study (a lock), it answers only requests addressed to this machine's own names for it
(no DNS rebinding), and it bounds its connections in number and idle time.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import random
import re
import secrets
import shutil
import tempfile
import threading
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http import HTTPStatus
from importlib import resources
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
from PIL import Image
from rich.console import Console
from rich.markup import escape

from colorize_cli.errors import UserError
from colorize_cli.files import exclusive_lock, path_text, read_reason, write_error
from colorize_cli.imageio import ImageError, list_images, save_image
from colorize_cli.localserver import MAX_CONNECTIONS, SOCKET_TIMEOUT, BadRequest, LocalHandler, LocalServer
from colorize_cli.pairs import read_pair
from colorize_cli.terminal import plural, skipped

HEADER = ("image", "rater", "choice", "real_side", "response_ms")
VOTES_CSV = "votes.csv"
VIGILANCE_CSV = "vigilance.csv"
SERVE_LOCK = ".serve.lock"  # held by `survey serve`: one server per study (see serve)
ASSETS = ("index.html", "survey.js", "survey.css")
SIDES = ("left", "right")
MAX_NAME = 64
MAX_BODY = 4096
MAX_RESPONSE_MS = 24 * 3600 * 1000  # answer time is unlimited; a day bounds nonsense values
IMAGE_NAME = re.compile(r"images/[0-9a-f]{16}\.png")


@dataclass(frozen=True)
class SurveyConfig:
    """How a study is drawn from the test photos (all recorded in study.json): `colorize survey
    build`'s options (DATA and --out are `build_study`'s own arguments)."""

    model: str | None = None  # a bundled model's name, a run folder or a .safetensors file; None: the default bundled model
    n: int = 24  # scored trials
    exposure: float = 5.0  # seconds both photos are shown
    seed: int = 0  # photo choice, trial order and sides
    practice: int = 0  # trials with feedback before the study, never recorded
    vigilance: int = 0  # obviously wrong colorizations, recorded in vigilance.csv

    def __post_init__(self) -> None:
        if self.n < 1:
            raise UserError(f"--n must be at least 1, not {self.n}")
        if not 0 < self.exposure <= 60:
            raise UserError(f"--exposure must be more than 0 and at most 60 seconds, not {self.exposure}")
        if self.practice < 0 or self.vigilance < 0:
            raise UserError("--practice and --vigilance must not be negative")


@dataclass
class Photo:
    """One A|B test pair: the real colour photo and the gray image the model sees."""

    name: str
    real: Image.Image
    gray: Image.Image


@dataclass(frozen=True)
class ServeConfig:
    """`colorize survey serve`'s options (STUDY is `serve`'s own argument)."""

    port: int = 8000  # on 127.0.0.1; 0: any free one


@dataclass
class BuildReport:
    out: Path
    trials: int
    vigilance: int
    practice: int
    exposure: float
    skipped: list[str] = field(default_factory=list)


@dataclass
class ServeReport:
    votes: Path  # the answer log
    answers: int  # answers it holds


# --- building a study ---------------------------------------------------------------------


def _clean(img: Image.Image) -> Image.Image:
    """A fresh 8-bit RGB image from pixels alone, so no ICC profile, EXIF or text travels along."""
    return Image.fromarray(np.array(img.convert("RGB"), dtype=np.uint8))


def _pick_photos(data: Path, count: int, rng: random.Random, console: Console) -> tuple[list[Photo], list[str]]:
    """`count` usable pairs in seeded random order; unusable files are skipped with a reason."""
    paths = list_images(data)
    if not paths:
        raise UserError(f"{data}: no images found (expected A|B test pairs from `colorize prep`)")
    rng.shuffle(paths)
    photos: list[Photo] = []
    reasons: list[str] = []
    for p in paths:
        if len(photos) == count:
            break
        try:
            real, gray = read_pair(p)
        except ImageError as e:
            reasons.append(str(e))
            skipped(console, str(e))
            continue
        # The name as path_text, the form every file the study writes (study.json, key.js,
        # votes.csv) can hold.
        photos.append(Photo(path_text(p.name), real, gray))
    if len(photos) < count:
        raise UserError(f"{data}: only {len(photos)} usable A|B pairs, the study needs {count} "
                        "(--n plus --practice plus --vigilance)")
    return photos, reasons


def _js(var: str, value: object) -> str:
    return f"window.{var} = {json.dumps(value, indent=1, ensure_ascii=False)};\n"


def build_study(data: str | os.PathLike, out: str | os.PathLike, cfg: SurveyConfig, console: Console) -> BuildReport:
    """Colorize the chosen test photos and write the study folder `out` (which must not exist
    or be empty: a study folder may hold votes, and those are never overwritten)."""
    data, out = Path(data), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out}: already exists and is not an empty folder (it may hold votes); choose another --out")
    rng = random.Random(cfg.seed)
    photos, reasons = _pick_photos(data, cfg.n + cfg.vigilance + cfg.practice, rng, console)
    from colorize_cli.color import hue_flip  # torch loads only once the photos are there
    from colorize_cli.colorizer import Colorizer

    colorizer = Colorizer.load(cfg.model, device="auto")
    tests = photos[:cfg.n]
    checks = photos[cfg.n:cfg.n + cfg.vigilance]
    warm_up = photos[cfg.n + cfg.vigilance:]
    colorized = colorizer.colorize_batch([p.gray for p in tests + warm_up])
    with _study_folder(out) as tmp:
        shown = ([("test", p, f, s) for p, f, s in zip(tests, colorized, _sides(len(tests), rng))]
                 + [("vigilance", p, hue_flip(p.real), s) for p, s in zip(checks, _sides(len(checks), rng))])
        rng.shuffle(shown)
        trials = [{**_trial(tmp, str(i), p, fake, side), "kind": kind} for i, (kind, p, fake, side) in enumerate(shown, 1)]
        practice = [_trial(tmp, f"p{i}", p, f, s) for i, (p, f, s)
                    in enumerate(zip(warm_up, colorized[len(tests):], _sides(len(warm_up), rng)), 1)]
        _write_record(tmp, data, colorizer.source, cfg, trials, practice)
    return BuildReport(out, len(tests), len(checks), len(warm_up), cfg.exposure, reasons)


@contextlib.contextmanager
def _study_folder(out: Path) -> Iterator[Path]:
    """A temporary folder next to `out` (with images/ in it), renamed to `out` once filled: a
    failed build leaves nothing, and a read-only or full disk is one line naming `out`."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as e:
        raise write_error(out, e) from None
    try:
        tmp.chmod(0o755)  # mkdtemp's 0700 would hide the study from a web server or a colleague
        (tmp / "images").mkdir()
        yield tmp
        if out.exists():
            out.rmdir()  # empty, checked by `build_study`
        os.replace(tmp, out)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise write_error(out, e) from None
        raise


def _sides(k: int, rng: random.Random) -> list[str]:
    """Where the real photo goes in k trials, counterbalanced: on each side equally often (one
    more on a random side when k is odd), in random order, so a rater's side bias cannot pass
    for skill or for being fooled."""
    first = rng.randrange(2)
    order = [SIDES[(first + i) % 2] for i in range(k)]
    rng.shuffle(order)
    return order


def _trial(folder: Path, tid: str, photo: Photo, fake: Image.Image, real_side: str) -> dict:
    """One trial's two images, saved under random names, and its record."""
    if fake.size != photo.real.size:  # same size both sides, whatever the model does
        fake = fake.resize(photo.real.size, Image.Resampling.LANCZOS)
    real_rel, fake_rel = _save_image(folder, photo.real), _save_image(folder, fake)
    left, right = (real_rel, fake_rel) if real_side == "left" else (fake_rel, real_rel)
    return {"id": tid, "image": photo.name, "left": left, "right": right, "real_side": real_side}


def _save_image(folder: Path, img: Image.Image) -> str:
    rel = f"images/{secrets.token_hex(8)}.png"
    save_image(_clean(img), folder / rel, format="PNG")
    return rel


def _write_record(folder: Path, data: Path, model: str, cfg: SurveyConfig, trials: list[dict],
                  practice: list[dict]) -> None:
    """study.json (everything), study.js (what the page may see), key.js (the answers) and the page."""
    record = {
        "format": "colorize-survey", "version": 1,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": path_text(data), "model": path_text(model),
        "config": {"n": cfg.n, "exposure": cfg.exposure, "seed": cfg.seed,
                   "practice": cfg.practice, "vigilance": cfg.vigilance},
        "trials": trials, "practice": practice,
    }
    (folder / "study.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    page = {"exposure_ms": round(cfg.exposure * 1000),
            "trials": [{k: t[k] for k in ("id", "left", "right")} for t in trials],
            "practice": practice}
    (folder / "study.js").write_text(_js("STUDY", page), encoding="utf-8")
    key = {t["id"]: {"image": t["image"], "real_side": t["real_side"], "vigilance": t["kind"] == "vigilance"}
           for t in trials}
    (folder / "key.js").write_text(_js("STUDY_KEY", key), encoding="utf-8")
    assets = resources.files("colorize_cli") / "survey_assets"
    for name in ASSETS:
        (folder / name).write_bytes((assets / name).read_bytes())


def render_build(report: BuildReport, console: Console) -> None:
    """What was built, and how to run it."""
    extra = "".join(f", {k} {w}" for k, w in ((report.vigilance, "vigilance"), (report.practice, "practice")) if k)
    console.print(f"built {escape(str(report.out))}: {report.trials} trials{extra}, {report.exposure:g} s exposure"
                  + (f"; {len(report.skipped)} files skipped" if report.skipped else ""), soft_wrap=True)
    console.print(f"run it: colorize survey serve {escape(str(report.out))}   "
                  f"(or open {escape(str(report.out / 'index.html'))} and collect the downloaded CSVs)", soft_wrap=True)


# --- the answer log -----------------------------------------------------------------------


def valid_name(name: object) -> bool:
    """Rater names: letters, digits, marks, space and _ . ' -, starting with a letter, digit
    or _ (so a name can never start a spreadsheet formula), at most 64 characters."""
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME or name != name.strip():
        return False
    first = unicodedata.category(name[0])
    if not (first[0] in "LN" or name[0] == "_"):
        return False
    return all(unicodedata.category(c)[0] in "LMN" or c in " _.'-" for c in name)


class AnswerLog:
    """An append-only CSV with the votes header. Each row is one write() on an O_APPEND file,
    then fsync, under the caller's lock: rows already written survive any later crash, and the
    file is never rewritten."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen: set[tuple[str, str]] = set()  # (image, rater) already recorded
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return
        except IsADirectoryError:
            raise UserError(f"{path}: is a folder, not a votes file") from None
        except OSError as e:
            raise UserError(f"{path}: {read_reason(e)}") from None
        if not raw:
            return
        if not raw.endswith(b"\n"):
            raise UserError(f"{path}: the last line is incomplete (was a write interrupted?); "
                            "remove or complete that line, then serve again")
        try:
            rows = list(csv.reader(io.StringIO(raw.decode("utf-8"))))
        except UnicodeDecodeError as e:
            raise UserError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start}); "
                            "refusing to append to it") from None
        except csv.Error as e:
            raise UserError(f"{path}: not valid CSV ({e}); refusing to append to it") from None
        if tuple(rows[0]) != HEADER:
            raise UserError(f"{path}: header is {','.join(rows[0])!r}, expected {','.join(HEADER)!r}; "
                            "refusing to append to a file of another format")
        self.seen = {(r[0], r[1]) for r in rows[1:] if len(r) >= 2}

    def append(self, row: tuple[str, str, int, str, int]) -> None:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fresh = os.fstat(fd).st_size == 0
            if fresh:
                w.writerow(HEADER)
            w.writerow(row)
            data = buf.getvalue().encode("utf-8")
            while data:
                data = data[os.write(fd, data):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if fresh:  # make the new file's directory entry durable too
            dfd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        self.seen.add((row[0], row[1]))


class ServedStudy:
    """A built study folder as the server sees it: the files it may serve, the answer key,
    and the two answer logs, guarded by one lock so no (image, rater) pair is written twice."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        try:
            record = json.loads((self.folder / "study.json").read_text(encoding="utf-8"))
            trials = record["trials"]
            practice = record["practice"]
            self.key = {t["id"]: (t["image"], t["real_side"], t["kind"] == "vigilance") for t in trials}
            images = [t[s] for t in trials + practice for s in SIDES]
        except FileNotFoundError:
            raise _not_a_study(self.folder) from None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UserError(f"{self.folder / 'study.json'}: unreadable study record ({type(e).__name__}: {e})") from None
        bad = next((rel for rel in images if not IMAGE_NAME.fullmatch(str(rel))), None)
        if bad is not None:
            raise UserError(f"{self.folder / 'study.json'}: {bad!r} is not a trial image name (images/<16 hex digits>.png)")
        # The only URL paths ever answered; everything else is 404, so no path can escape.
        self.files = {f"/{name}": self.folder / name for name in (*ASSETS, "study.js", *images)}
        self.files["/"] = self.folder / "index.html"
        self.lock = threading.Lock()
        self.votes = AnswerLog(self.folder / VOTES_CSV)
        self.checks = AnswerLog(self.folder / VIGILANCE_CSV)

    def answered(self, rater: str) -> list[str]:
        """Trial ids this rater has answered already (a reloaded page resumes after them)."""
        with self.lock:
            return [tid for tid, (image, _, vig) in self.key.items()
                    if (image, rater) in (self.checks if vig else self.votes).seen]

    def record(self, answer: dict) -> tuple[str, str, int, str, int]:
        """Validate one answer and append it; returns the row written. choice is 1 when the
        rater took the colorized photo for the real one."""
        expected = {"trial", "rater", "picked", "response_ms"}
        if set(answer) != expected:
            raise BadRequest(f"an answer has exactly the fields {sorted(expected)}")
        tid, rater, picked, ms = answer["trial"], answer["rater"], answer["picked"], answer["response_ms"]
        if not isinstance(tid, str) or tid not in self.key:
            raise BadRequest("unknown trial")
        if not valid_name(rater):
            raise BadRequest("invalid rater name")
        if picked not in SIDES:
            raise BadRequest("picked must be 'left' or 'right'")
        if isinstance(ms, bool) or not isinstance(ms, int) or not 0 <= ms <= MAX_RESPONSE_MS:
            raise BadRequest("response_ms must be a whole number of milliseconds")
        image, real_side, vigilance = self.key[tid]
        row = (image, rater, int(picked != real_side), real_side, ms)
        log = self.checks if vigilance else self.votes
        with self.lock:
            if (image, rater) in log.seen:
                raise BadRequest("this rater has already answered this trial", HTTPStatus.CONFLICT)
            log.append(row)
        return row


def _not_a_study(folder: Path) -> UserError:
    return UserError(f"{folder}: not a study folder (no study.json; build one with `colorize survey`)")


class _Handler(LocalHandler):
    server: SurveyServer
    server_version = "colorize-survey"

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        path = self.server.study.files.get(unquote(urlsplit(self.path).path))
        if path is None or not path.is_file():
            self._not_found()
            return
        ctype = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".png": "image/png"}[path.suffix]
        self._send(HTTPStatus.OK, path.read_bytes(), ctype)

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        try:
            body = self._read_json()
            route = urlsplit(self.path).path
            if route == "/api/answer":
                row = self.server.study.record(body)
                self.server.notify(f"{row[1]}: {row[0]} recorded")
                self._json(HTTPStatus.OK, {"ok": True})
            elif route == "/api/rater":
                if set(body) != {"rater"} or not valid_name(body["rater"]):
                    raise BadRequest("names are 1-64 letters, digits, spaces or _ . ' - and start with a letter or digit")
                self._json(HTTPStatus.OK, {"answered": self.server.study.answered(body["rater"])})
            else:
                self._not_found()
        except BadRequest as e:
            self._json(e.status, {"error": str(e)})

    def _read_json(self) -> dict:
        if self.headers.get_content_type() != "application/json":
            raise BadRequest("send JSON (Content-Type: application/json)")
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise BadRequest("a Content-Length is required") from None
        if not 0 < length <= MAX_BODY:
            raise BadRequest(f"the body must be 1 to {MAX_BODY} bytes")
        try:
            value = json.loads(self.rfile.read(length).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise BadRequest("the body is not valid JSON") from None
        if not isinstance(value, dict):
            raise BadRequest("the body must be a JSON object")
        return value


class SurveyServer(LocalServer):
    """Serves one study (`localserver.LocalServer`: 127.0.0.1 only, bounded connections)."""

    def __init__(self, study: ServedStudy, port: int, notify: Callable[[str], None] = lambda _: None,
                 socket_timeout: float = SOCKET_TIMEOUT, max_connections: int = MAX_CONNECTIONS) -> None:
        self.study = study
        super().__init__(_Handler, port, notify, socket_timeout, max_connections)


def serve(folder: str | os.PathLike, cfg: ServeConfig, console: Console) -> ServeReport:
    """Serve the study until Ctrl-C, reporting each recorded answer on `console`.

    One server per study folder: two would each accept a rater's answer to the same trial, and
    the duplicate (image, rater) rows would make `colorize evaluate` refuse votes.csv. The lock
    is taken before the answer logs are read, so the set of answered trials is never stale.
    """
    folder = Path(folder)
    if not (folder / "study.json").is_file():
        raise _not_a_study(folder)
    with exclusive_lock(folder, SERVE_LOCK, "`colorize survey serve`"):
        study = ServedStudy(folder)
        _serve(study, cfg.port, lambda m: console.print(escape(m), soft_wrap=True))
    return ServeReport(study.votes.path, len(study.votes.seen))


def _serve(study: ServedStudy, port: int, log: Callable[[str], None]) -> None:
    with SurveyServer(study, port, notify=log) as server:
        log(f"serving {study.folder} at {server.url} (127.0.0.1 only; Ctrl-C stops)")
        log(f"answers go to {study.votes.path}"
            + (f", vigilance answers to {study.checks.path}" if any(v for _, _, v in study.key.values()) else ""))
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()


def render_serve(report: ServeReport, console: Console) -> None:
    console.print(escape(f"stopped; {report.votes} holds {plural(report.answers, 'answer')}"), soft_wrap=True)
