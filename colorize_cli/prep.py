"""`colorize prep`: a folder of color photos -> a pix2pix "aligned" A|B data set (`pairs`).

Each kept photo becomes one pair PNG (`pairs.make_pair`) in DEST/train or DEST/test.
DEST/prep.csv records every source and what happened to it; it is also the memory that
makes re-runs cheap (finished photos are not decoded again) and the split stable (a photo
never changes sides once assigned, `pairs.assign_splits`).
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
import re
import shutil
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path

from PIL import Image
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from colorize_cli.errors import UserError
from colorize_cli.files import (ensure_memory, make_folder, path_text, read_reason, real_path, sha256_or_reason,
                                write_csv_atomic)
from colorize_cli.imageio import (
    GRAYSCALE_REASON,
    IMAGE_SUFFIXES,
    ImageError,
    is_grayscale,
    list_images,
    open_image,
    save_image,
)
from colorize_cli.pairs import FITS, SPLITS, PrepConfig, assign_splits, make_pair
from colorize_cli.terminal import plural, progress_bar, skipped

# PNG zlib level for the pairs. Measured on the shared beach photos at 256 px: level 1 writes
# 3.3x faster than Pillow's default 6 for files 7.5% larger, and writing PNGs is most of
# prep's time (decoding and resizing are a fifth of it).
PNG_COMPRESS_LEVEL = 1

CSV_NAME = "prep.csv"
CSV_FIELDS = ("source", "output", "split", "sha256", "width", "height", "size", "fit", "status")
KEPT = "kept"
# Pairs made but not yet filed under train/ or test/ (the split needs every photo's verdict
# first). They survive an interrupted run, so running again picks up where it stopped.
STAGING = ".prep-staging"
MAX_STEM = 100
# Peak memory of one worker per pixel of a half (size x size): the fitted color half (3 bytes),
# the pair (6), its gray half (1 + 3), Lanczos' intermediate and the encoded PNG (up to the
# pair's raw size for noisy photos). Measured: 17 bytes at --size 2048 and 4096 on a smooth
# photo, whose PNG is small; 24 leaves room for the noisy ones.
PAIR_BYTES_PER_PIXEL = 24


@dataclass
class Row:
    """One line of prep.csv: a source file and what became of it."""

    source: str
    sha256: str = ""
    status: str = ""
    output: str = ""  # relative to DEST, e.g. "train/beach_1.png"; empty when skipped
    split: str = ""
    width: int | None = None  # upright (EXIF-rotated) size of the source photo
    height: int | None = None
    size: int | None = None
    fit: str = ""


@dataclass
class PrepReport:
    dest: Path
    rows: list[Row]
    made: int  # pairs written this run
    unchanged: int  # pairs that were already there
    skipped: Counter[str]  # kind of reason -> count

    def count(self, split: str) -> int:
        return sum(1 for r in self.rows if r.status == KEPT and r.split == split)


@dataclass
class _Job:
    source: Path
    sha256: str


@dataclass
class _Outcome:
    job: _Job
    status: str
    width: int | None = None
    height: int | None = None
    staged: Path | None = None


def skip_kind(status: str) -> str:
    """The reason without its details, for counting: "duplicate", "grayscale", "not an image",
    "too small" (imageio's "WxH px is too small (...)")."""
    if status.startswith("duplicate of "):
        return "duplicate"
    return re.sub(r"^\d+x\d+ px is ", "", status.split(" (")[0])


def read_csv(path: Path) -> list[Row]:
    """prep.csv as rows; a file of another shape is refused rather than overwritten later."""
    if not path.exists():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if tuple(reader.fieldnames or ()) != CSV_FIELDS:
                raise UserError(f"{path}: not a prep.csv written by colorize prep (columns differ); "
                                "choose another DEST")
            return [
                Row(source=d["source"], sha256=d["sha256"], status=d["status"], output=d["output"],
                    split=d["split"], width=int(d["width"]) if d["width"] else None,
                    height=int(d["height"]) if d["height"] else None,
                    size=int(d["size"]) if d["size"] else None, fit=d["fit"])
                for d in reader
            ]
    except (OSError, UnicodeDecodeError, ValueError, csv.Error) as e:
        raise UserError(f"{path}: cannot read ({e})") from None


def write_csv(path: Path, rows: Iterable[Row]) -> None:
    write_csv_atomic(path, CSV_FIELDS, ([r.source, r.output, r.split, r.sha256, r.width or "", r.height or "",
                                         r.size or "", r.fit, r.status] for r in rows))


def _stem(source: Path, src_root: Path) -> str:
    """A safe file stem from the source's path under SRC: sub/My photo.jpg -> sub__My_photo."""
    try:
        rel = source.relative_to(src_root) if src_root.is_dir() else Path(source.name)
    except ValueError:
        rel = Path(source.name)
    parts = [re.sub(r"[^\w.-]+", "_", p).strip("._-") for p in rel.with_suffix("").parts]
    return "__".join(p for p in parts if p)[:MAX_STEM] or "photo"


def _unique_name(source: Path, src_root: Path, taken: set[str]) -> str:
    """stem.png, else stem_ext.png (a.jpg next to a.png), else stem_ext-2.png, -3, ...

    `taken` holds lower-cased names (safe on case-insensitive disks) and is updated.
    """
    stem = _stem(source, src_root)
    ext = source.suffix.lower().lstrip(".")
    candidates = [stem, f"{stem}_{ext}"] if ext else [stem]
    n = 2
    while True:
        for c in candidates:
            name = f"{c}.png"
            if name.lower() not in taken:
                taken.add(name.lower())
                return name
        candidates = [f"{stem}_{ext}-{n}" if ext else f"{stem}-{n}"]
        n += 1


def _staged_name(sha: str, cfg: PrepConfig, width: int, height: int) -> str:
    return f"{sha}-{cfg.size}-{cfg.fit}-{width}x{height}.png"


def _find_staged(staging: Path, sha: str, cfg: PrepConfig) -> tuple[Path, int, int] | None:
    """A pair left by an interrupted run with the same photo and settings."""
    for p in staging.glob(f"{sha}-{cfg.size}-{cfg.fit}-*.png"):
        m = re.fullmatch(r"(\d+)x(\d+)", p.stem.rsplit("-", 1)[-1])
        if m:
            return p, int(m[1]), int(m[2])
    return None


def _make(job: _Job, staging: Path, cfg: PrepConfig) -> _Outcome:
    """Decode, check and pair one photo, leaving the pair in the staging folder."""
    if not cfg.force and (found := _find_staged(staging, job.sha256, cfg)):
        return _Outcome(job, KEPT, found[1], found[2], found[0])
    try:
        data = job.source.read_bytes()
    except OSError as e:
        return _Outcome(job, read_reason(e))
    if hashlib.sha256(data).hexdigest() != job.sha256:
        return _Outcome(job, "changed while prep was reading it (run again)")
    try:
        img = open_image(data)
    except ImageError as e:
        return _Outcome(job, str(e).removeprefix("<bytes>: "))
    if is_grayscale(img):
        return _Outcome(job, GRAYSCALE_REASON, img.width, img.height)
    staged = staging / _staged_name(job.sha256, cfg, img.width, img.height)
    save_image(make_pair(img, cfg.size, cfg.fit), staged, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return _Outcome(job, KEPT, img.width, img.height, staged)


def _check(cfg: PrepConfig) -> None:
    if cfg.size < 1:
        raise UserError(f"--size must be at least 1, got {cfg.size}")
    # Every later stage reads a pair through open_image, which refuses images past Pillow's
    # decompression-bomb limit: a bigger pair would be made, then be unreadable.
    if 2 * cfg.size**2 > Image.MAX_IMAGE_PIXELS:
        largest = math.isqrt(Image.MAX_IMAGE_PIXELS // 2)
        raise UserError(f"--size {cfg.size} makes pairs of {2 * cfg.size}x{cfg.size} px, past the decompression-bomb "
                        f"limit of {Image.MAX_IMAGE_PIXELS} px that train and survey read pairs under; "
                        f"the largest --size is {largest}")
    if cfg.fit not in FITS:
        raise UserError(f"--fit must be one of {', '.join(FITS)}, got {cfg.fit!r}")
    if not 0.0 <= cfg.test_fraction <= 1.0:
        raise UserError(f"--test-fraction must be between 0 and 1, got {cfg.test_fraction}")
    if cfg.workers < 1:
        raise UserError(f"--workers must be at least 1, got {cfg.workers}")


def _run_jobs(jobs: list[_Job], staging: Path, cfg: PrepConfig, console: Console) -> list[_Outcome]:
    """Make the pairs in parallel threads (Pillow and zlib release the GIL for the heavy parts;
    measured on 2 cores, threads were as fast as processes), with a progress bar. A skipped
    photo is named on screen as soon as it is found."""
    if not jobs:
        return []
    workers = min(cfg.workers, len(jobs))
    ensure_memory(PAIR_BYTES_PER_PIXEL * cfg.size**2 * workers, f"prep --size {cfg.size} with {plural(workers, 'worker')}")
    make_folder(staging)
    results: list[_Outcome] = []
    progress = progress_bar(console, "[bold]prep[/bold]", "kept {task.fields[kept]} · skipped {task.fields[skipped]}")
    pool = ThreadPoolExecutor(workers)
    try:
        with progress:
            task = progress.add_task("prep", total=len(jobs), kept=0, skipped=0)
            futures = [pool.submit(_make, job, staging, cfg) for job in jobs]
            for future in as_completed(futures):
                outcome = future.result()
                results.append(outcome)
                if outcome.status != KEPT:
                    skipped(progress.console, f"{path_text(outcome.job.source)}: {outcome.status}")
                kept = sum(1 for o in results if o.status == KEPT)
                progress.update(task, advance=1, kept=kept, skipped=len(results) - kept)
    except KeyboardInterrupt:
        pool.shutdown(wait=True, cancel_futures=True)
        done = sum(1 for o in results if o.status == KEPT)
        raise UserError(f"interrupted: the {done} pairs made so far are kept in {staging}; "
                        "run the same command again to go on") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return results


@dataclass
class _Before:
    """DEST's prep.csv as the earlier runs left it."""

    rows: list[Row]
    kept: dict[str, Row]  # sha256 -> the row of a photo that was made into a pair
    done: dict[str, Row]  # of those, the ones whose pair is still in DEST

    @classmethod
    def read(cls, dest: Path) -> _Before:
        rows = read_csv(dest / CSV_NAME)
        kept = {r.sha256: r for r in rows if r.status == KEPT}
        return cls(rows, kept, {sha: r for sha, r in kept.items() if r.output and (dest / r.output).is_file()})

    def check_settings(self, dest: Path, cfg: PrepConfig) -> None:
        """One data set, one size and fit: other settings need --force (which remakes every pair)."""
        other = sorted({(r.size or 0, r.fit) for r in self.done.values()} - {(cfg.size, cfg.fit)})
        if other:
            size, fit = other[0]
            raise UserError(f"{dest} holds pairs made with --size {size} --fit {fit}: run with those, add "
                            f"--force to remake them all with --size {cfg.size} --fit {cfg.fit}, or choose another DEST")


def run(src: str | os.PathLike, dest: str | os.PathLike, cfg: PrepConfig, console: Console) -> PrepReport:
    """Turn the photos in `src` into pairs under `dest` (see the module docstring)."""
    _check(cfg)
    src, dest = Path(src), Path(dest)
    sources = _sources(src, dest, cfg.recursive)
    before = _Before.read(dest)
    if not cfg.force:
        before.check_settings(dest, cfg)
    staging = dest / STAGING
    if cfg.force:
        shutil.rmtree(staging, ignore_errors=True)

    with console.status(f"reading {len(sources)} files"), ThreadPoolExecutor(cfg.workers) as pool:
        hashes = dict(zip(sources, pool.map(sha256_or_reason, sources)))
    rows, jobs = _sort_out(hashes, before, cfg.force)
    for row in rows.values():
        if row.status != KEPT:
            skipped(console, f"{row.source}: {row.status}")
    if n_done := sum(r.status == KEPT for r in rows.values()):
        console.print(f"{n_done} photos already prepared: not redone (--force remakes them)")
    # Pairs whose source has gone (or changed) stay in the data set, and so in prep.csv.
    present = {sha for sha, _ in hashes.values() if sha}
    carried = [r for sha, r in before.done.items() if sha not in present]

    outcomes = _run_jobs(jobs, staging, cfg, console)

    moves, stale = _place(outcomes, rows, carried, before, src, dest, cfg)
    final = sorted([*rows.values(), *carried], key=lambda r: r.source)
    _write(dest, final, moves, stale)
    shutil.rmtree(staging, ignore_errors=True)

    skipped_kinds = Counter(skip_kind(r.status) for r in final if r.status != KEPT)
    report = PrepReport(dest, final, made=len(moves), unchanged=len(final) - len(moves) - sum(skipped_kinds.values()),
                        skipped=skipped_kinds)
    if not report.count("train") + report.count("test"):
        raise UserError(f"{src}: no usable photos (see {dest / CSV_NAME} for the reasons)")
    return report


def _sources(src: Path, dest: Path, recursive: bool) -> list[Path]:
    """SRC's photos, less prep's own output (DEST inside SRC with -r); photos kept elsewhere in
    DEST, e.g. DEST/raw, are sources like any other."""
    if dest.exists() and not dest.is_dir():
        raise UserError(f"{dest}: exists and is not a folder")
    for sub in SPLITS:
        if (dest / sub).exists() and not (dest / sub).is_dir():
            raise UserError(f"{dest / sub}: exists and is not a folder")
    dest_abs = real_path(dest)
    if dest_abs == real_path(src):
        raise UserError(f"{dest}: DEST is the SRC folder itself; the data set needs a folder of its own "
                        "(a new one, or one inside SRC)")
    own = [dest_abs / sub for sub in (*SPLITS, STAGING)]
    sources = [p for p in list_images(src, recursive) if not any(real_path(p).is_relative_to(o) for o in own)]
    if not sources:
        raise UserError(f"{src}: no images (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return sources


def _sort_out(hashes: dict[Path, tuple[str, str]], before: _Before, force: bool) -> tuple[dict[Path, Row], list[_Job]]:
    """Rows for the sources settled without decoding them (unreadable, a duplicate, already
    made into a pair), and a job for each of the others.

    One photo per content: the source recorded earlier keeps it, else the first by name.
    """
    groups: dict[str, list[Path]] = {}
    for p, (sha, _) in hashes.items():
        if sha:
            groups.setdefault(sha, []).append(p)
    # prep.csv holds each name as path_text (a name that is not UTF-8 is escaped there), so
    # that is what a name is compared as.
    owners = {
        sha: next((p for p in group if sha in before.kept and path_text(p) == before.kept[sha].source), group[0])
        for sha, group in groups.items()
    }
    rows: dict[Path, Row] = {}
    jobs: list[_Job] = []
    for p, (sha, err) in hashes.items():
        if err:
            rows[p] = Row(path_text(p), status=err)
        elif p != owners[sha]:
            rows[p] = Row(path_text(p), sha256=sha, status=f"duplicate of {path_text(owners[sha])}")
        elif sha in before.done and not force:
            rows[p] = replace(before.done[sha], source=path_text(p))
        else:
            jobs.append(_Job(p, sha))
    return rows, jobs


def _place(outcomes: list[_Outcome], rows: dict[Path, Row], carried: list[Row], before: _Before, src: Path,
           dest: Path, cfg: PrepConfig) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """Record every outcome in `rows`, giving each new pair its split and its name. Returns the
    moves (staged pair, its place in DEST) and the stale pairs: made earlier of photos now
    skipped (possible with --force)."""
    made = sorted((o for o in outcomes if o.status == KEPT), key=lambda o: str(o.job.source))
    stale: list[Path] = []
    for o in outcomes:
        if o.status != KEPT:
            rows[o.job.source] = Row(path_text(o.job.source), sha256=o.job.sha256, status=o.status,
                                     width=o.width, height=o.height)
            if (prev := before.kept.get(o.job.sha256)) and prev.output:
                stale.append(dest / prev.output)
    kept_shas = [r.sha256 for r in rows.values() if r.status == KEPT] + [r.sha256 for r in carried]
    kept_shas += [o.job.sha256 for o in made]
    splits = assign_splits(kept_shas, cfg.test_fraction, cfg.seed, {s: r.split for s, r in before.kept.items()})

    # Output names: a photo keeps its earlier name; a new one gets a name no file in DEST has.
    taken = {r.output.rsplit("/", 1)[-1].lower() for r in before.rows if r.output}
    taken |= {p.name.lower() for sub in SPLITS if (dest / sub).is_dir() for p in (dest / sub).iterdir()}
    moves: list[tuple[Path, Path]] = []
    for o in made:
        prev = before.kept.get(o.job.sha256)
        split = splits[o.job.sha256]
        output = prev.output if prev and prev.output else f"{split}/{_unique_name(o.job.source, src, taken)}"
        rows[o.job.source] = Row(path_text(o.job.source), o.job.sha256, KEPT, output, split,
                                 o.width, o.height, cfg.size, cfg.fit)
        moves.append((o.staged, dest / output))
    return moves, stale


def _write(dest: Path, rows: list[Row], moves: list[tuple[Path, Path]], stale: list[Path]) -> None:
    """prep.csv, then the new pairs into place, then the stale pairs out. The record goes first:
    after a crash between the two, the next run finds the rows without their files and redoes
    them (from the staged pairs) under the same names."""
    for sub in SPLITS:
        make_folder(dest / sub)
    write_csv(dest / CSV_NAME, rows)
    for staged, target in moves:
        os.replace(staged, target)
    for path in stale:  # recorded in prep.csv as prep's own output, so prep may remove it
        path.unlink(missing_ok=True)


def render(report: PrepReport, out: Console) -> None:
    """What prep did, by outcome, and the data set's totals."""
    table = Table(title=f"prep → {escape(path_text(report.dest))}", title_justify="left")
    table.add_column("outcome")
    table.add_column("photos", justify="right")
    table.add_row("pairs written", str(report.made))
    table.add_row("already there", str(report.unchanged))
    for kind, n in sorted(report.skipped.items()):
        table.add_row(f"skipped: {escape(kind)}", str(n))
    table.add_section()
    n_train, n_test = report.count("train"), report.count("test")
    table.add_row(f"data set: {escape(path_text(report.dest / 'train'))}", str(n_train))
    table.add_row(f"data set: {escape(path_text(report.dest / 'test'))}", str(n_test))
    out.print(table)
