"""Colorizing photos at their own resolution with a trained generator (`colorize infer`).

The network only ever sees a small working copy of the photo: its long side scaled to the
working size (the model's training size unless `--size` says otherwise), then mirrored out
(reflect padding) to the next multiple of 2**depth, because the U-Net halves the image
`depth` times. Padding instead of stretching keeps every photo at its true aspect ratio,
which is what the network saw in training; reflection continues edges and textures so the
border colours are not pulled toward an artificial frame. The predicted chroma of the
unpadded region is then scaled up to the photo's full size and joined with the photo's own
full-resolution gray (`color.decode_output`, `color.to_uint8_exact`), so all the detail in
the result is the photo's own and its Pillow "L" equals the input's gray exactly.

Photos whose working copies pad to the same shape run through the network together, so a
folder of mixed sizes still runs in full batches.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from colorize_cli.checkpoint import load_generator
from colorize_cli.color import decode_output, encode_input, to_uint8_exact
from colorize_cli.device import autocast_bf16, pick_device
from colorize_cli.errors import UserError
from colorize_cli.files import WriteError, ensure_memory, write_error
from colorize_cli.imageio import (IMAGE_SUFFIXES, ImageError, check_dimensions, is_grayscale, list_images, open_image,
                                  save_image, to_gray)
from colorize_cli.model import ModelConfig, UNet, for_inference

BUNDLED_MODEL = Path(__file__).parent / "weights" / "beach.safetensors"
RUN_CHECKPOINT = "best.safetensors"  # what `colorize train` keeps as a run's best generator
DEFAULT_BATCH = 8
# `activation_bytes` counts the tensors alive at the network's peak; the peak resident memory
# measured on a CPU was 1.1 to 1.4 times that count (widths 8 to 64, canvases of 512 to 2048 px),
# the rest being oneDNN's workspaces and the allocator's slack.
MEMORY_MARGIN = 1.5
# The full-resolution decode works in horizontal strips of about this many pixels: the colour
# conversion's temporaries then stay a few MB each instead of several GB for an 8000 px photo.
STRIP_PIXELS = 1 << 18
# Lossy formats kept by `--format keep` are written near-losslessly. PNG at zlib level 1: on
# colorized photos it writes 4x faster than Pillow's default 6 (15 against 57 ms for 512 x 341)
# and the files come out no larger (341 against 364 KB), as photo noise defeats deeper searches.
SAVE_PARAMS = {"JPEG": {"quality": 95}, "WEBP": {"quality": 95}, "PNG": {"compress_level": 1}}


def resolve_model(path: str | os.PathLike | None) -> Path:
    """None -> the bundled beach model; a folder -> the run's best checkpoint; else the file."""
    if path is None:
        if not BUNDLED_MODEL.is_file():
            raise UserError(f"the bundled model {BUNDLED_MODEL} is missing; reinstall colorize-gan")
        return BUNDLED_MODEL
    path = Path(path)
    if path.is_dir():
        best = path / RUN_CHECKPOINT
        if not best.is_file():
            raise UserError(f"{path}: folder has no {RUN_CHECKPOINT}; give a `colorize train` run folder or a .safetensors file")
        return best
    return path  # load_checkpoint explains a missing or unreadable file


def activation_bytes(cfg: ModelConfig, size: int, batch: int, element_bytes: int = 4) -> int:
    """Memory a network pass over `batch` working copies at working size `size` needs at its peak,
    for the largest canvas that size allows (size x size rounded up to the U-Net's step). Alive at
    the peak: the encoder's outputs still waiting for their skip connection, plus the busiest
    decoder step (its input, and its padded copy and phase outputs, or its output and the
    concatenation). Checked before a photo is scaled up, so a huge --size is refused clearly."""
    step = 2**cfg.depth
    side = -(-size // step) * step
    pixels = side * side
    chans = [cfg.width * min(2**i, 8) for i in range(cfg.depth)]
    skips = [c * pixels // 4 ** (i + 1) for i, c in enumerate(chans)]
    peak = held = sum(skips)
    x = skips.pop()  # the bottleneck is the decoder's first input, not a skip
    held -= x
    for i in range(cfg.depth - 2, -1, -1):
        out = skips[i]  # each decoder step outputs its level's channels at its level's size
        peak = max(peak, held + max(2 * x + out, x + 3 * out))
        held -= skips[i]
        x = 2 * out  # joined with the skip
    out = cfg.out_channels * pixels
    peak = max(peak, 2 * x + out, x + 3 * out)
    return math.ceil((peak + pixels) * batch * element_bytes * MEMORY_MARGIN)  # + pixels: the encoded input


@dataclass(frozen=True)
class Geometry:
    """Where a photo sits in the network input: scaled to h x w at (top, left) of a ph x pw canvas."""

    h: int
    w: int
    top: int
    left: int
    ph: int
    pw: int

    @classmethod
    def fit(cls, width: int, height: int, size: int, step: int) -> "Geometry":
        """Long side scaled to `size` (aspect kept), canvas rounded up to multiples of `step`."""
        scale = size / max(width, height)
        w, h = max(1, round(width * scale)), max(1, round(height * scale))
        pw, ph = -(-w // step) * step, -(-h // step) * step
        return cls(h, w, (ph - h) // 2, (pw - w) // 2, ph, pw)

    @property
    def canvas(self) -> tuple[int, int]:
        return self.ph, self.pw


@dataclass
class Prepared:
    """One photo ready for the network: its full-size gray and its padded working copy."""

    gray: Image.Image  # mode "L", full size
    geometry: Geometry
    work: np.ndarray  # (ph, pw) uint8


class Colorizer:
    """A generator ready for inference (`model.for_inference`, channels_last) that colorizes photos of
    any size. Build it with `Colorizer.load`; `colorize` and `colorize_batch` take PIL images."""

    def __init__(self, net: UNet, cfg: ModelConfig, device: torch.device, size: int | None = None,
                 batch_size: int = DEFAULT_BATCH, source: str = "") -> None:
        self.cfg = cfg
        self.step = 2**cfg.depth
        self.size = cfg.size if size is None else size
        if self.size < self.step:
            raise UserError(f"working size {self.size} is below this model's minimum of {self.step} px "
                            f"(its U-Net halves the image {cfg.depth} times)")
        if batch_size < 1:
            raise UserError(f"batch size must be at least 1, not {batch_size}")
        self.batch_size = batch_size
        self._check_memory(device)
        self.device = device
        self.net = net.eval().to(device, memory_format=torch.channels_last)
        self.source = source

    def _check_memory(self, device: torch.device) -> None:
        """Refuse a working size and batch whose network pass cannot fit where it runs, before any
        photo is scaled up to it (instead of an allocator's error, or the OOM killer, later)."""
        what = f"working size {self.size} px at batch size {self.batch_size}"
        if device.type != "cuda":
            ensure_memory(activation_bytes(self.cfg, self.size, self.batch_size), what)
            return
        need = activation_bytes(self.cfg, self.size, self.batch_size, element_bytes=2)  # bf16 autocast
        free = torch.cuda.mem_get_info(device)[0]
        if need > free:
            raise UserError(f"{what} needs about {need / 2**30:.1f} GiB of GPU memory; "
                            f"{device} has {free / 2**30:.1f} GiB free")

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, device: str = "cpu", size: int | None = None,
             batch_size: int = DEFAULT_BATCH) -> "Colorizer":
        """From a checkpoint file, a `colorize train` run folder, or None for the bundled model.

        Weights stored in float16 are cast to float32 on loading.
        """
        file = resolve_model(path)
        dev = pick_device(device)
        net, cfg = load_generator(file)
        return cls(for_inference(net), cfg, dev, size, batch_size, str(file))

    def prepare(self, img: Image.Image) -> Prepared:
        """Gray the photo and make its padded working copy; too-small photos are refused
        (`imageio.check_dimensions`, which `open_image` has applied to every photo read from a file)."""
        gray = to_gray(img)
        width, height = gray.size
        check_dimensions("image", width, height)
        g = Geometry.fit(width, height, self.size, self.step)
        small = np.asarray(gray.resize((g.w, g.h), Image.Resampling.LANCZOS))
        pad = ((g.top, g.ph - g.h - g.top), (g.left, g.pw - g.w - g.left))
        return Prepared(gray, g, np.pad(small, pad, mode="reflect"))

    @torch.inference_mode()
    def predict(self, works: Sequence[np.ndarray]) -> torch.Tensor:
        """Network output (N, C, ph, pw) on the CPU for working copies of one canvas shape
        (computed in bf16 on a GPU: the chroma it predicts is far coarser than bf16's steps)."""
        x = torch.from_numpy(np.stack(works)).to(self.device).unsqueeze(1).float() / 255
        x = encode_input(x, self.cfg.space).contiguous(memory_format=torch.channels_last)
        with autocast_bf16(self.device.type == "cuda"):
            return self.net(x).float().cpu()

    @torch.inference_mode()
    def finish(self, item: Prepared, out: torch.Tensor) -> Image.Image:
        """Full-size RGB from one network output (C, ph, pw): crop the padding, scale the
        chroma to the photo's size, decode strip by strip against the full-resolution gray. A
        non-finite output (a damaged or diverged network) is refused: it would decode as gray."""
        if not torch.isfinite(out).all():
            raise UserError("the network's output is not finite (NaN or infinity); its checkpoint may be damaged")
        g = item.geometry
        width, height = item.gray.size
        chroma = out[None, :, g.top:g.top + g.h, g.left:g.left + g.w].to(self.device)
        shrink = height < g.h or width < g.w  # a photo smaller than its working copy: filter, not just sample
        chroma = F.interpolate(chroma, size=(height, width), mode="bilinear", align_corners=False, antialias=shrink)
        gray_u8 = np.asarray(item.gray)
        rgb = np.empty((height, width, 3), np.uint8)
        rows = max(1, STRIP_PIXELS // width)
        for y in range(0, height, rows):
            strip_gray = gray_u8[y:y + rows]
            g01 = torch.from_numpy(strip_gray.copy()).to(self.device)[None, None].float() / 255
            strip = decode_output(g01, chroma[:, :, y:y + rows], self.cfg.space)
            rgb[y:y + rows] = to_uint8_exact(strip[0].permute(1, 2, 0).cpu().numpy(), strip_gray)
        return Image.fromarray(rgb, "RGB")

    def colorize(self, img: Image.Image) -> Image.Image:
        """Colorize one photo (color photos are grayed first): RGB of the same size, whose
        Pillow "L" equals the input's exactly."""
        return self.colorize_batch([img])[0]

    def colorize_batch(self, imgs: Sequence[Image.Image]) -> list[Image.Image]:
        """`colorize` for many photos, run through the network in batches of equal canvas shape."""
        items = [self.prepare(img) for img in imgs]
        results: list[Image.Image | None] = [None] * len(items)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, item in enumerate(items):
            groups.setdefault(item.geometry.canvas, []).append(i)
        for idxs in groups.values():
            for start in range(0, len(idxs), self.batch_size):
                chunk = idxs[start:start + self.batch_size]
                outs = self.predict([items[i].work for i in chunk])
                for i, out in zip(chunk, outs):
                    results[i] = self.finish(items[i], out)
        return [r for r in results if r is not None]


def side_by_side(gray: Image.Image, colorized: Image.Image, original: Image.Image | None) -> Image.Image:
    """gray | colorized [| original], each panel at full size, no gaps."""
    panels = [gray.convert("RGB"), colorized] + ([original] if original is not None else [])
    width, height = gray.size
    sheet = Image.new("RGB", (width * len(panels), height))
    for i, panel in enumerate(panels):
        sheet.paste(panel, (i * width, 0))
    return sheet


# --- the command -----------------------------------------------------------------------


OVERWRITE_OR_SKIP = "--overwrite and --skip-existing exclude each other: replace existing outputs, or keep them"


@dataclass(frozen=True)
class InferOptions:
    """`colorize infer` options besides IN and OUT."""

    model: Path | None = None
    size: int | None = None
    recursive: bool = False
    keep_format: bool = False
    overwrite: bool = False
    skip_existing: bool = False
    side_by_side: bool = False
    device: str = "auto"
    batch_size: int = DEFAULT_BATCH

    def __post_init__(self) -> None:
        if self.overwrite and self.skip_existing:
            raise UserError(OVERWRITE_OR_SKIP)


@dataclass(frozen=True)
class Job:
    src: Path
    dst: Path


@dataclass
class Summary:
    """What a run did; `failed` holds (file, reason) for every input without an output, `already`
    counts outputs that existed and were kept (--skip-existing)."""

    done: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)
    already: int = 0
    seconds: float = 0.0


def output_path(rel: Path, out_dir: Path, keep_format: bool) -> Path:
    return out_dir / (rel if keep_format else rel.with_suffix(".png"))


def _real(path: Path) -> Path:
    """The absolute path with links followed; unlike Path.resolve on Python 3.11 it does not
    raise for a symlink loop (a bad input, reported when it is read)."""
    return Path(os.path.realpath(path))


def plan(src: Path, dst: Path, opts: InferOptions) -> list[Job]:
    """Pair every input with its output path. A file IN with an image-suffixed OUT writes
    exactly OUT; otherwise OUT is a folder mirroring IN's names (and subfolders)."""
    if src.is_file():
        if dst.suffix.lower() in IMAGE_SUFFIXES and not dst.is_dir():
            return [Job(src, dst)]
        return [Job(src, output_path(Path(src.name), dst, opts.keep_format))]
    paths = list_images(src, opts.recursive)
    if _real(dst) != _real(src) and _real(dst).is_relative_to(_real(src)):
        # OUT inside IN: never colorize earlier outputs again.
        paths = [p for p in paths if not _real(p).is_relative_to(_real(dst))]
    if not paths:
        nested = not opts.recursive and any(list_images(src, recursive=True))
        hint = " (there are some in subfolders: add --recursive)" if nested else ""
        raise UserError(f"{src}: no images found ({', '.join(sorted(IMAGE_SUFFIXES))}){hint}")
    return [Job(p, output_path(p.relative_to(src), dst, opts.keep_format)) for p in paths]


def screen(jobs: Sequence[Job], overwrite: bool,
           skip_existing: bool = False) -> tuple[list[Job], list[tuple[Path, str]], list[Job]]:
    """Split jobs into those to run, those refused before any work, and those already done.
    Refused: an output that would replace an input photo (even with --overwrite), that exists
    (without --overwrite), or that an earlier input already writes. Done: with --skip-existing,
    an output file that exists (writes are atomic, so it is complete: an interrupted run's)."""
    inputs = {_real(job.src) for job in jobs}
    ok: list[Job] = []
    refused: list[tuple[Path, str]] = []
    done: list[Job] = []
    claimed: dict[Path, Path] = {}
    for job in jobs:
        key = _real(job.dst)
        if key in inputs:
            which = "the input itself" if key == _real(job.src) else "another input photo"
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


def run(src: Path, dst: Path, opts: InferOptions, console: Console | None = None) -> Summary:
    """`colorize infer IN OUT`: colorize every photo, report each one skipped and why, finish
    the rest. Callers exit 1 when `summary.failed` is not empty."""
    console = console or Console(stderr=True, highlight=False)
    started = time.perf_counter()
    jobs, refused, already = screen(plan(src, dst, opts), opts.overwrite, opts.skip_existing)
    summary = Summary(failed=list(refused), already=len(already))
    for _, reason in refused:
        console.print(f"[yellow]skipped[/yellow] {escape(reason)}", soft_wrap=True)
    if jobs:
        colorizer = Colorizer.load(opts.model, opts.device, opts.size, opts.batch_size)
        console.print(f"model {escape(colorizer.source)} on {colorizer.device}, working size {colorizer.size} px",
                      soft_wrap=True)
        _make_output_folder(dst.parent if any(job.dst == dst for job in jobs) else dst)
        _colorize_jobs(colorizer, jobs, opts.side_by_side, summary, console)
    summary.seconds = time.perf_counter() - started
    rate = f", {summary.done / summary.seconds:.2f} photos/s" if summary.done else ""
    kept = f", {summary.already} already done (--skip-existing)" if summary.already else ""
    failed = f", {len(summary.failed)} skipped (reasons above)" if summary.failed else ""
    total = summary.done + summary.already + len(summary.failed)
    console.print(f"colorized {summary.done} of {total} photos into {escape(str(dst))} in {summary.seconds:.1f} s"
                  f"{rate}{kept}{failed}", soft_wrap=True)
    return summary


def _make_output_folder(folder: Path) -> None:
    """OUT itself is made before the first photo: if it cannot be (a read-only place, a file of
    that name), that is one error for the run, not the same skip repeated for every photo."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(folder, e) from None


@dataclass
class _Pending:
    job: Job
    item: Prepared
    original: Image.Image | None  # kept for --side-by-side when the input had colour


def _colorize_jobs(colorizer: Colorizer, jobs: list[Job], with_original: bool, summary: Summary,
                   console: Console) -> None:
    """Stream the jobs: read, bucket by canvas shape, run a bucket when full, write results.
    At most one partial batch per canvas shape is held in memory. An unreadable photo, a
    network output that is not finite, and an output that cannot be written (a folder in its
    place, a bad name) are skipped with the reason; a full disk or a read-only file system
    stops the run (files.WriteError), as it would fail the same way for every later photo."""
    progress = Progress(TextColumn("colorizing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        console=console, transient=True, disable=not console.is_terminal)
    task = progress.add_task("colorizing", total=len(jobs))

    def fail(path: Path, reason: str) -> None:
        summary.failed.append((path, reason))
        console.print(f"[yellow]skipped[/yellow] {escape(reason)}", soft_wrap=True)
        progress.advance(task)

    def out_of_memory(p: _Pending) -> None:
        fail(p.job.src, f"{p.job.src}: out of {colorizer.device} memory (try --batch-size 1, a smaller --size "
                        "or --device cpu)")

    def flush(batch: list[_Pending]) -> None:
        try:
            outs = colorizer.predict([p.item.work for p in batch])
        except torch.cuda.OutOfMemoryError:
            for p in batch:
                out_of_memory(p)
            return
        for p, out in zip(batch, outs):
            try:
                result = colorizer.finish(p.item, out)
                if with_original:
                    result = side_by_side(p.item.gray, result, p.original)
                _save(result, p.job.dst)
            except torch.cuda.OutOfMemoryError:
                out_of_memory(p)
                continue
            except WriteError as e:
                if e.stops_everything:
                    raise
                fail(p.job.src, str(e))
                continue
            except UserError as e:  # finish: the network's output is not finite
                fail(p.job.src, f"{p.job.src}: {e}")
                continue
            summary.done += 1
            progress.advance(task)

    buckets: dict[tuple[int, int], list[_Pending]] = {}
    with progress:
        for job in jobs:
            try:
                img = open_image(job.src)  # too small photos are refused here, naming the file
            except ImageError as e:
                fail(job.src, str(e))
                continue
            item = colorizer.prepare(img)
            original = img if with_original and not is_grayscale(img) else None
            bucket = buckets.setdefault(item.geometry.canvas, [])
            bucket.append(_Pending(job, item, original))
            if len(bucket) == colorizer.batch_size:
                flush(buckets.pop(item.geometry.canvas))
        for bucket in buckets.values():
            flush(bucket)
