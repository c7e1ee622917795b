"""`colorize infer`: colorize a photo or a folder of photos at their full resolution.

Every input is paired with its output first (`plan`) and screened (`screen`): an input photo
is never overwritten, an earlier output only when asked. The photos are then streamed through
the inference engine (`colorizer.Colorizer`, loaded only when there is work, so torch loads
only then): read, batched by canvas shape, colorized, written atomically. A photo that cannot
be read, colorized or written is skipped with the reason; the rest finish.

Colour hints (`hints`) come from --hint, for one photo, or from a --hints file naming many
(`hints.match_photos`); each job carries its own. A hint that does not fit its photo stops a
one-photo run with the reason (the command itself is wrong) before OUT is made, and in a folder
skips that photo.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from PIL import Image
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress

from colorize_cli.canvas import DEFAULT_BATCH, batches
from colorize_cli.device import Device
from colorize_cli.errors import UserError, one_line
from colorize_cli.files import WriteError, make_folder, real_path
from colorize_cli.hints import Hint, HintError, match_photos, read_hints_file
from colorize_cli.imageio import IMAGE_SUFFIXES, ImageError, is_grayscale, list_images, open_image, save_image
from colorize_cli.terminal import progress_bar, skipped, warning

if TYPE_CHECKING:
    from colorize_cli.colorizer import Colorizer, Prepared

# Lossy formats kept by `--format keep` are written near-losslessly. PNG at zlib level 1: on
# colorized photos it writes 4x faster than Pillow's default 6 (15 against 57 ms for 512 x 341)
# and the files come out no larger (341 against 364 KB), as photo noise defeats deeper searches.
SAVE_PARAMS = {"JPEG": {"quality": 95}, "WEBP": {"quality": 95}, "PNG": {"compress_level": 1}}
OVERWRITE_OR_SKIP = "--overwrite and --skip-existing exclude each other: replace existing outputs, or keep them"
HINT_OR_HINTS = "--hint and --hints exclude each other: give the hints on the command line or in the file"
HINT_FOR_ONE = "--hint is for one photo; use --hints FILE.json for a folder"
# png: lossless, so the output's luma is exactly the input's gray; keep: the input's own format.
OutputFormat = Literal["png", "keep"]


@dataclass(frozen=True)
class InferConfig:
    """`colorize infer`'s options (IN and OUT are `run`'s own arguments)."""

    model: str | None = None  # a bundled model's name, a run folder or a .safetensors file; None: the default bundled model
    size: int | None = None  # working size; None: the model's training size
    recursive: bool = False
    format: OutputFormat = "png"
    overwrite: bool = False
    skip_existing: bool = False
    side_by_side: bool = False
    device: Device = "auto"
    batch_size: int = DEFAULT_BATCH
    hints: tuple[Hint, ...] = ()  # --hint: for IN when it is one photo
    hints_file: Path | None = None  # --hints: a JSON file of hints for many photos (`hints.read_hints_file`)

    def __post_init__(self) -> None:
        if self.overwrite and self.skip_existing:
            raise UserError(OVERWRITE_OR_SKIP)
        if self.hints and self.hints_file is not None:
            raise UserError(HINT_OR_HINTS)


@dataclass(frozen=True)
class Job:
    src: Path
    dst: Path
    hints: tuple[Hint, ...] = ()  # in the upright photo's coordinates


@dataclass
class InferReport:
    """What a run did; `failed` holds (file, reason) for every input without an output, `already`
    counts outputs that existed and were kept (--skip-existing)."""

    dest: Path
    done: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)
    already: int = 0
    seconds: float = 0.0


def side_by_side(gray: Image.Image, colorized: Image.Image, original: Image.Image | None) -> Image.Image:
    """gray | colorized [| original], each panel at full size, no gaps."""
    panels = [gray.convert("RGB"), colorized] + ([original] if original is not None else [])
    width, height = gray.size
    sheet = Image.new("RGB", (width * len(panels), height))
    for i, panel in enumerate(panels):
        sheet.paste(panel, (i * width, 0))
    return sheet


def output_path(rel: Path, out_dir: Path, fmt: OutputFormat) -> Path:
    return out_dir / (rel if fmt == "keep" else rel.with_suffix(".png"))


def plan(src: Path, dst: Path, cfg: InferConfig) -> list[Job]:
    """Pair every input with its output path. A file IN with an image-suffixed OUT writes
    exactly OUT; otherwise OUT is a folder mirroring IN's names (and subfolders)."""
    if src.is_file():
        if dst.suffix.lower() in IMAGE_SUFFIXES and not dst.is_dir():
            return [Job(src, dst)]
        return [Job(src, output_path(Path(src.name), dst, cfg.format))]
    paths = list_images(src, cfg.recursive)
    out, into = real_path(dst), real_path(src)
    if out != into and out.is_relative_to(into):
        # OUT inside IN: never colorize earlier outputs again.
        paths = [p for p in paths if not real_path(p).is_relative_to(out)]
    if not paths:
        nested = not cfg.recursive and any(list_images(src, recursive=True))
        hint = " (there are some in subfolders: add --recursive)" if nested else ""
        raise UserError(f"{src}: no images found ({', '.join(sorted(IMAGE_SUFFIXES))}){hint}")
    return [Job(p, output_path(p.relative_to(src), dst, cfg.format)) for p in paths]


def give_hints(jobs: list[Job], src: Path, cfg: InferConfig, console: Console) -> list[Job]:
    """The jobs with their hints: --hint's for the one photo IN (`run` refuses them for a
    folder), or each photo's from the --hints file, which names it by its path, its path relative
    to IN or its file name. Names of photos not in IN are a warning (a typo, or a photo left out)."""
    if cfg.hints:
        return [replace(job, hints=cfg.hints) for job in jobs]
    if cfg.hints_file is None:
        return jobs
    table = read_hints_file(cfg.hints_file)
    rels = [Path(job.src.name) if src.is_file() else job.src.relative_to(src) for job in jobs]
    found, unused = match_photos(table, [(job.src, rel) for job, rel in zip(jobs, rels)])
    if unused:
        names = ", ".join(one_line(k) for k in unused)
        warning(console, f"{one_line(str(cfg.hints_file))} names photos that are not in {one_line(str(src))}, "
                         f"their hints unused: {names}")
    return [replace(job, hints=tuple(hs)) for job, hs in zip(jobs, found)]


def screen(jobs: Sequence[Job], overwrite: bool,
           skip_existing: bool = False) -> tuple[list[Job], list[tuple[Path, str]], list[Job]]:
    """Split jobs into those to run, those refused before any work, and those already done.
    Refused: an output that would replace an input photo (even with --overwrite), that exists
    (without --overwrite), or that an earlier input already writes. Done: with --skip-existing,
    an output file that exists (writes are atomic, so it is complete: an interrupted run's)."""
    inputs = {real_path(job.src) for job in jobs}
    ok: list[Job] = []
    refused: list[tuple[Path, str]] = []
    done: list[Job] = []
    claimed: dict[Path, Path] = {}
    for job in jobs:
        key = real_path(job.dst)
        if key in inputs:
            which = "the input itself" if key == real_path(job.src) else "another input photo"
            refused.append((job.src, f"{job.src}: its output {job.dst} would replace {which}; choose another OUT"))
        elif key in claimed:
            refused.append((job.src, f"{job.src}: its output {job.dst} is already written for {claimed[key]} "
                                     "(same name, other format: use --format keep)"))
        elif skip_existing and job.dst.is_file():
            claimed[key] = job.src
            done.append(job)
        elif job.dst.exists() and not overwrite:
            refused.append((job.src, f"{job.src}: {job.dst} exists; not overwritten (use --overwrite to replace it)"))
        else:
            claimed[key] = job.src
            ok.append(job)
    return ok, refused, done


def _save(img: Image.Image, dst: Path) -> None:
    fmt = Image.registered_extensions().get(dst.suffix.lower(), "PNG")
    save_image(img, dst, format=fmt, **SAVE_PARAMS.get(fmt, {}))


def run(src: Path, dst: Path, cfg: InferConfig, console: Console) -> InferReport:
    """Colorize every photo, say which ones are skipped and why, finish the rest. Callers exit 1
    when `report.failed` is not empty."""
    from colorize_cli.colorizer import Colorizer  # torch loads only once there is work

    started = time.perf_counter()
    if cfg.hints and src.is_dir():
        raise UserError(HINT_FOR_ONE)
    jobs = give_hints(plan(src, dst, cfg), src, cfg, console)
    jobs, refused, already = screen(jobs, cfg.overwrite, cfg.skip_existing)
    report = InferReport(dst, failed=list(refused), already=len(already))
    for _, reason in refused:
        skipped(console, reason)
    if jobs:
        colorizer = Colorizer.load(cfg.model, cfg.device, cfg.size, cfg.batch_size)
        if any(job.hints for job in jobs):
            colorizer.require_hints()
        console.print(f"model {escape(colorizer.source)} on {colorizer.device}, working size {colorizer.size} px",
                      soft_wrap=True)
        folder = dst.parent if any(job.dst == dst for job in jobs) else dst
        _colorize_jobs(colorizer, jobs, folder, cfg.side_by_side, src.is_file(), report, console)
    report.seconds = time.perf_counter() - started
    return report


def render(report: InferReport, console: Console) -> None:
    """The run in one line: photos written, kept and skipped, and the speed."""
    rate = f", {report.done / report.seconds:.2f} photos/s" if report.done else ""
    kept = f", {report.already} already done (--skip-existing)" if report.already else ""
    failed = f", {len(report.failed)} skipped (reasons above)" if report.failed else ""
    total = report.done + report.already + len(report.failed)
    console.print(f"colorized {report.done} of {total} photos into {escape(str(report.dest))} in {report.seconds:.1f} s"
                  f"{rate}{kept}{failed}", soft_wrap=True)


@dataclass
class _Pending:
    job: Job
    item: Prepared
    original: Image.Image | None  # kept for --side-by-side when the input had colour


def _colorize_jobs(colorizer: Colorizer, jobs: list[Job], folder: Path, with_original: bool, one_photo: bool,
                   report: InferReport, console: Console) -> None:
    """Stream the jobs: read, batch by canvas shape, run a batch when full, write results into
    `folder` (OUT, or the folder of the one output file). At most one partial batch per canvas
    shape is held in memory."""
    with progress_bar(console, "colorizing", transient=True) as progress:
        writer = _Writer(colorizer, folder, with_original, one_photo, report, console, progress, len(jobs))
        for batch in batches(writer.read(jobs), lambda p: p.item.geometry, colorizer.batch_size):
            writer.write(batch)


class _Writer:
    """Reads photos, colorizes them a batch at a time and writes the results, keeping the tally
    in the report. An unreadable photo, a photo its hints do not fit (unless it is the run's
    one photo: then that is the run's error), a network output that is not finite, and an output
    that cannot be written (a folder in its place, a bad name) are skipped with the reason; a
    full disk or a read-only file system stops the run (files.WriteError), as it would fail the
    same way for every later photo.

    OUT's folder is made once the first photo is read and its hints placed, before the network
    runs: if it cannot be made (a read-only place, a file of that name), that is one error for
    the run, not the same skip for every photo; and a run that stops on its one photo (its hints
    do not fit it) or reads no photo at all leaves no empty folder behind."""

    def __init__(self, colorizer: Colorizer, folder: Path, with_original: bool, one_photo: bool, report: InferReport,
                 console: Console, progress: Progress, total: int) -> None:
        self.colorizer, self.with_original, self.report, self.console = colorizer, with_original, report, console
        self.folder: Path | None = folder  # None once made
        self.one_photo = one_photo
        self.progress, self.task = progress, progress.add_task("colorizing", total=total)

    def read(self, jobs: list[Job]) -> Iterator[_Pending]:
        for job in jobs:
            try:
                img = open_image(job.src)  # too small photos are refused here, naming the file
            except ImageError as e:
                self._fail(job.src, str(e))
                continue
            try:
                item = self.colorizer.prepare(img, job.hints)
            except HintError as e:
                if self.one_photo:
                    raise UserError(f"{job.src}: {e}") from None
                self._fail(job.src, f"{job.src}: {e}")
                continue
            if self.folder is not None:
                make_folder(self.folder)
                self.folder = None
            yield _Pending(job, item, img if self.with_original and not is_grayscale(img) else None)

    def write(self, batch: list[_Pending]) -> None:
        import torch  # loaded with the colorizer already; for its out-of-memory error

        try:
            outs = self.colorizer.predict([p.item for p in batch])
        except torch.cuda.OutOfMemoryError:
            for p in batch:
                self._out_of_memory(p)
            return
        for p, out in zip(batch, outs):
            try:
                result = self.colorizer.finish(p.item, out)
                if self.with_original:
                    result = side_by_side(p.item.gray, result, p.original)
                _save(result, p.job.dst)
            except torch.cuda.OutOfMemoryError:
                self._out_of_memory(p)
                continue
            except WriteError as e:
                if e.stops_everything:
                    raise
                self._fail(p.job.src, str(e))
                continue
            except UserError as e:  # finish: the network's output is not finite
                self._fail(p.job.src, f"{p.job.src}: {e}")
                continue
            self.report.done += 1
            self.progress.advance(self.task)

    def _fail(self, path: Path, reason: str) -> None:
        self.report.failed.append((path, reason))
        skipped(self.console, reason)
        self.progress.advance(self.task)

    def _out_of_memory(self, p: _Pending) -> None:
        self._fail(p.job.src, f"{p.job.src}: out of {self.colorizer.device} memory (try --batch-size 1, a smaller "
                              "--size or --device cpu)")
