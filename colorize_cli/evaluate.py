"""`colorize evaluate`: how far colorized photos are from the real ones, next to the gray
baseline; or, for a file of votes, the perceptual study's statistics (`votes`).

Two sources of (prediction, truth) pairs:
- `compare_folders(PRED, TRUTH)`: two folders matched by file stem (what `colorize infer`
  wrote next to the originals);
- `evaluate_model(FOLDER, model)`: the model colorizes a folder's gray photos: A|B pair images
  from `colorize prep` (colour A on the left, its gray B on the right, the pix2pix aligned
  layout; the truth is A), or colour photos, each its own truth at full resolution
  (`model_photos` tells the two apart, and refuses a folder of both). With --hints,
  `hintcurve` scores the same photos with simulated colour hints.

Every image is scored with `metrics.score`, and so is the gray baseline (the gray photo
itself, as RGB, against the truth): a colorizer that does not beat gray has learned nothing,
and every number needs that reference to be read.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image, ImageOps
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from colorize_cli import metrics, votes
from colorize_cli.device import Device
from colorize_cli.errors import UserError
from colorize_cli.files import path_text, write_csv_atomic
from colorize_cli.imageio import MIN_SIDE, ImageError, is_grayscale, list_images, open_image, to_gray
from colorize_cli.pairs import RESAMPLE, fit_image, looks_like_pair, read_pair
from colorize_cli.terminal import BASELINE_LEGEND, plural, progress_bar, skipped

if TYPE_CHECKING:
    from colorize_cli.hintcurve import HintCurve

# (key in metrics.score, label, +1 higher is better / -1 lower is better / 0 neither)
METRICS: tuple[tuple[str, str, int], ...] = (
    ("mae", "MAE (RGB 0-1)", -1),
    ("mse", "MSE (RGB 0-1)", -1),
    ("psnr", "PSNR (dB)", +1),
    ("ssim", "SSIM", +1),
    ("ciede2000", "CIEDE2000 (mean)", -1),
    ("colorfulness", "colorfulness", 0),
    ("colorfulness_ratio", "colorfulness / truth", 0),
)
ARROWS = {1: " ↑", -1: " ↓", 0: ""}  # after a metric's label
_FORMATS = {"mae": ".4f", "mse": ".4f", "psnr": ".2f", "ssim": ".4f", "ciede2000": ".2f",
            "colorfulness": ".1f", "colorfulness_truth": ".1f", "colorfulness_ratio": ".2f"}
SCORE_KEYS = tuple(k for k, _, _ in METRICS) + ("colorfulness_truth",)
# Skipped images listed on the terminal; a truth folder much larger than the predictions
# would otherwise print a line for every photo without a prediction.
SHOW_SKIPPED = 10
# What a folder run through the model holds: A|B pairs from `colorize prep`, or colour photos.
Layout = Literal["pairs", "photos"]


@dataclass(frozen=True)
class EvaluateConfig:
    """`colorize evaluate`'s options (TARGET is `run`'s own argument)."""

    truth: Path | None = None  # the real photos: TARGET is a folder of predictions
    model: str | None = None  # a bundled model's name, run folder or checkpoint for a folder of photos; None: the default bundled model
    device: Device = "auto"
    csv: Path | None = None  # per-image scores
    overwrite: bool = False  # let `csv` and `plot` replace a file
    as_json: bool = False  # a machine-readable summary instead of tables
    top: int = 5  # votes: how many of the most fooling images to list
    hints: int | None = None  # score the model given up to this many simulated hints (`hintcurve`)
    seed: int = 0  # where the simulated hints fall
    plot: Path | None = None  # a PNG of the hint curve


@dataclass(frozen=True)
class ImageScore:
    """One image's scores: the model's prediction and the gray baseline, both against the truth."""

    name: str
    width: int
    height: int
    fitted: bool  # the truth was cropped/resized to the prediction's size
    model: dict[str, float]
    gray: dict[str, float]


@dataclass
class Evaluation:
    """The per-image scores of one run, and the images that could not be scored, with why."""

    kind: str  # "folders" or "model": says which of `source`'s keys are set
    source: dict[str, str]
    scores: list[ImageScore] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (image, reason)

    def summary(self) -> dict[str, dict[str, dict[str, float]]]:
        """{"model"|"gray": {"mean"|"median": {metric: value}}}; NaN values are left out of
        both statistics (SSIM of images under 3 px, the ratio when the truth has no colour)."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        for side in ("model", "gray"):
            cols = {k: np.array([getattr(s, side)[k] for s in self.scores], dtype=np.float64) for k in SCORE_KEYS}
            out[side] = {
                "mean": {k: nan_stat(np.nanmean, v) for k, v in cols.items()},
                "median": {k: nan_stat(np.nanmedian, v) for k, v in cols.items()},
            }
        return out

    def to_json(self) -> dict:
        """Machine-readable summary; NaN and infinite values (PSNR of identical images) are null,
        file names that are not UTF-8 have their odd bytes as \\xNN (`files.path_text`)."""
        return metrics.json_safe({
            "kind": self.kind,
            **{k: path_text(v) for k, v in self.source.items()},
            "images": len(self.scores),
            "fitted": sum(s.fitted for s in self.scores),
            "skipped": [{"image": path_text(n), "reason": path_text(r)} for n, r in self.skipped],
            **self.summary(),
        })

    def write_csv(self, path: str | os.PathLike) -> int:
        """One row per scored image: model metrics, then the gray baseline's (`gray_` prefix);
        returns the number of rows."""
        gray_keys = [k for k, _, _ in METRICS]
        write_csv_atomic(path, ["image", "width", "height", "fitted", *SCORE_KEYS, *(f"gray_{k}" for k in gray_keys)],
                         ([path_text(s.name), s.width, s.height, int(s.fitted), *(num(s.model[k]) for k in SCORE_KEYS),
                           *(num(s.gray[k]) for k in gray_keys)] for s in self.scores))
        return len(self.scores)

    def table(self) -> Table:
        """Model next to the gray baseline, mean and median; the better mean is in bold."""
        summ = self.summary()
        title = plural(len(self.scores), "image")
        if self.skipped:
            title += f" ({len(self.skipped)} skipped)"
        t = Table(title=title, title_justify="left")
        t.add_column("metric")
        for head in ("model mean", "model median", "gray mean", "gray median"):
            t.add_column(head, justify="right")
        for key, label, better in METRICS:
            m, g = summ["model"]["mean"][key], summ["gray"]["mean"][key]
            cells = [fmt(key, m), fmt(key, summ["model"]["median"][key]),
                     fmt(key, g), fmt(key, summ["gray"]["median"][key])]
            if better and not (math.isnan(m) or math.isnan(g)) and m != g:
                win = 0 if (m - g) * better > 0 else 2
                cells[win] = f"[bold]{cells[win]}[/bold]"
            t.add_row(label + ARROWS[better], *cells)
        truth = summ["model"]
        t.add_row("colorfulness of truth", fmt("colorfulness", truth["mean"]["colorfulness_truth"]),
                  fmt("colorfulness", truth["median"]["colorfulness_truth"]), "", "")
        return t

    def render(self, out: Console) -> None:
        out.print(self.table())
        if fitted := sum(s.fitted for s in self.scores):
            out.print(f"{fitted} truth image(s) of another size were fitted to the prediction (centre crop, resize).")
        out.print(BASELINE_LEGEND)


def nan_stat(fn: Callable[[np.ndarray], float], v: np.ndarray) -> float:
    """`fn` (np.nanmean, np.nanmedian) of the values; NaN for none or only NaN, without a warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(fn(v)) if v.size else float("nan")


def num(v: float) -> str:
    """A score as a CSV cell."""
    return format(v, ".8g")


def fmt(key: str, v: float) -> str:
    """A score as a table cell."""
    return "-" if math.isnan(v) else format(v, _FORMATS[key])


# --- scoring ---------------------------------------------------------------------------


def fit_to(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The truth at the prediction's size as prep makes it (`--fit crop`: centred crop, then
    Lanczos resize), so original photos can be the truth for predictions made from prep's
    pairs; a non-square size gets the same treatment at that aspect ratio."""
    if img.size == size:
        return img
    if size[0] == size[1]:
        return fit_image(img, size[0], "crop")
    return ImageOps.fit(img, size, method=RESAMPLE)


def score_pair(name: str, pred: Image.Image, truth: Image.Image, gray: Image.Image | None = None) -> ImageScore:
    """Score a prediction and the gray baseline against the truth (fitted to the prediction's
    size if they differ). `gray` is the gray input when known (A|B pairs), else the truth's."""
    fitted = truth.size != pred.size
    truth = fit_to(truth, pred.size)
    if gray is None or gray.size != pred.size:
        gray = to_gray(truth)
    t = metrics.as_rgb01(truth)
    return ImageScore(name=name, width=pred.width, height=pred.height, fitted=fitted,
                      model=metrics.score(metrics.as_rgb01(pred), t), gray=metrics.score(metrics.as_rgb01(gray), t))


def with_progress(items: list, what: str, console: Console) -> Iterator:
    with progress_bar(console, f"[bold]{what}[/bold]", transient=True) as p:
        task = p.add_task(what, total=len(items))
        for item in items:
            yield item
            p.advance(task)


def _by_stem(folder: Path, ev: Evaluation, side: str) -> tuple[dict[str, Path], set[str]]:
    """Images of a folder keyed by file stem, and the stems held by several files (ambiguous:
    reported as skipped here, and not again as missing from the other side)."""
    groups: dict[str, list[Path]] = {}
    for p in list_images(folder):
        groups.setdefault(p.stem, []).append(p)
    unique, ambiguous = {}, set()
    for stem, paths in groups.items():
        if len(paths) > 1:
            ev.skipped.append((stem, f"several {side} files with this name: {', '.join(p.name for p in paths)}"))
            ambiguous.add(stem)
        else:
            unique[stem] = paths[0]
    return unique, ambiguous


def compare_folders(pred_dir: str | os.PathLike, truth_dir: str | os.PathLike, console: Console) -> Evaluation:
    """Score every prediction in `pred_dir` against the truth image with the same file stem."""
    pred_dir, truth_dir = Path(pred_dir), Path(truth_dir)
    for d, what in ((pred_dir, "prediction"), (truth_dir, "truth")):
        if not d.is_dir():
            raise UserError(f"{d}: no such {what} folder")
    ev = Evaluation(kind="folders", source={"predictions": str(pred_dir), "truth": str(truth_dir)})
    (preds, pred_amb), (truths, truth_amb) = _by_stem(pred_dir, ev, "prediction"), _by_stem(truth_dir, ev, "truth")
    if not preds and not pred_amb:
        raise UserError(f"{pred_dir}: no images in this folder")
    for stem in sorted(preds.keys() - truths.keys() - truth_amb):
        ev.skipped.append((stem, f"no truth image named {stem}.* in {truth_dir}"))
    for stem in sorted(truths.keys() - preds.keys() - pred_amb):
        ev.skipped.append((stem, f"no prediction named {stem}.* in {pred_dir}"))
    common = sorted(preds.keys() & truths.keys())
    if not common:
        raise UserError(f"no file names in common between {pred_dir} and {truth_dir} (images are matched by name without suffix)")
    for stem in with_progress(common, "scoring", console):
        try:
            pred, truth = open_image(preds[stem]), open_image(truths[stem])
        except ImageError as e:
            ev.skipped.append((stem, str(e)))
            continue
        ev.scores.append(score_pair(stem, pred, truth))
    return ev


def _stored_size(path: Path) -> tuple[int, int] | None:
    """An image's width and height as its header stores them (nothing decoded); None where the
    header cannot be read (the image is skipped later, with the reason, when it is scored)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a decompression-bomb warning: decided when it is read
            with Image.open(path) as img:
                return img.size
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError):
        return None


def _two_to_one(img: Image.Image) -> Layout | None:
    """What an upright image is: a pair when laid out as one (`pairs.looks_like_pair`) with
    colour on its left (prep makes no pair of a gray photo); None when it is gray all over, as a
    gray photo twice as wide as high and a pair made of one look the same; else a photo."""
    if not looks_like_pair(img):
        return "photos"
    return None if is_grayscale(img.crop((0, 0, img.height, img.height))) else "pairs"


def model_photos(data_dir: Path) -> tuple[list[Path], Layout]:
    """The images of a folder to run through a model, and what they are: A|B pairs
    (`pairs.looks_like_pair`) or colour photos. Every image counts, cheaply: one whose header
    gives neither side twice the other (EXIF may turn it) is a photo unread; only the others are
    decoded to see whether their right half is gray (`_two_to_one`). A folder of both kinds is an
    error naming one of each, as either layout would score the other kind wrongly (a photo's
    right half taken for its gray input, or a pair's halves for one photo). Images that cannot be
    read, or are too small, count for neither (they are skipped with the reason when scored), nor
    does a gray image of 2:1, which is read as the others are."""
    if not data_dir.is_dir():
        raise UserError(f"{data_dir}: no such folder")
    paths = list_images(data_dir)
    if not paths:
        hint = f" (did you mean {data_dir / 'test'}?)" if (data_dir / "test").is_dir() else ""
        raise UserError(f"{data_dir}: no images in this folder{hint}")
    example: dict[Layout, Path] = {}
    for path in paths:
        size = _stored_size(path)
        if size is None or min(size) < MIN_SIDE:
            continue
        w, h = size
        kind: Layout | None = "photos"
        if w == 2 * h or h == 2 * w:
            try:
                kind = _two_to_one(open_image(path))
            except ImageError:
                continue
        if kind is None:
            continue
        example.setdefault(kind, path)
        if len(example) == 2:
            raise UserError(f"{data_dir}: holds both A|B pairs (such as {example['pairs'].name}) and colour photos "
                            f"(such as {example['photos'].name}); give each kind a folder of its own")
    return paths, "photos" if "photos" in example else "pairs"  # nothing readable: all skipped, with reasons


def read_truth(path: Path, layout: Layout) -> tuple[Image.Image, Image.Image]:
    """(truth, gray): a pair's colour and gray halves, or a colour photo and its own gray."""
    if layout == "pairs":
        return read_pair(path)
    photo = open_image(path)
    return photo, to_gray(photo)


def evaluate_model(data_dir: str | os.PathLike, model: str | os.PathLike | None, device: Device,
                   console: Console) -> Evaluation:
    """Colorize the gray photo of every A|B pair or colour photo in `data_dir` and score it
    against the colour one.

    `model`: a bundled model's name, a run folder or a .safetensors checkpoint; None for the default bundled model.
    """
    data_dir = Path(data_dir)
    paths, layout = model_photos(data_dir)
    from colorize_cli.colorizer import Colorizer  # torch loads only once a model is needed

    colorizer = Colorizer.load(model, device=device)
    ev = Evaluation(kind="model", source={"data": str(data_dir), "layout": layout, "checkpoint": colorizer.source})
    batch: list[tuple[str, Image.Image, Image.Image]] = []  # (name, truth, gray)

    def flush() -> None:
        outs = colorizer.colorize_batch([gray for _, _, gray in batch])
        ev.scores.extend(score_pair(name, out, truth, gray) for (name, truth, gray), out in zip(batch, outs))
        batch.clear()

    for path in with_progress(paths, "colorizing", console):
        try:
            truth, gray = read_truth(path, layout)
        except ImageError as e:  # too small ones too: open_image applies imageio.check_dimensions
            ev.skipped.append((path.stem, str(e)))
            continue
        batch.append((path.stem, truth, gray))
        if len(batch) == colorizer.batch_size:
            flush()
    if batch:
        flush()
    return ev


# --- the command -------------------------------------------------------------------------


def check_output(path: Path, option: str, overwrite: bool) -> None:
    """Refuse an output path (--csv, --plot) that would replace a file (without --overwrite) or
    is a folder, before the slow scoring: a checkpoint or photo given by mistake is never lost."""
    if path.is_dir():
        raise UserError(f"{path}: is a folder; {option} needs a file name")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise UserError(f"{path}: exists; not overwritten (use --overwrite to replace it)")


def run(target: Path, cfg: EvaluateConfig, console: Console) -> Evaluation | HintCurve | votes.VoteSummary:
    """A .csv (or .tsv) file is a table of perceptual votes; a folder is scored against
    `cfg.truth` or, without it, run through the model (with `cfg.hints`, as a hint curve).
    Skipped images and notes go to `console`; the per-image scores to `cfg.csv`, the hint
    curve's picture to `cfg.plot`."""
    if target.suffix.lower() in (".csv", ".tsv"):
        if cfg.truth is not None or cfg.model is not None or cfg.csv is not None:
            raise UserError(f"{target}: --truth, --model and --csv apply to image folders, not to a votes file")
        if cfg.hints is not None or cfg.plot is not None:
            raise UserError(f"{target}: --hints and --plot apply to image folders, not to a votes file")
        return votes.VoteSummary.of(votes.read_votes(target))
    if not target.exists():
        raise UserError(f"{target}: no such file or folder")
    if not target.is_dir():
        raise UserError(f"{target}: expected a folder of images or a .csv file of votes")
    if cfg.truth is not None and cfg.model is not None:
        raise UserError("give --truth (compare two folders) or --model (run a model on A|B pairs), not both")
    if cfg.truth is not None and cfg.hints is not None:
        raise UserError("--hints gives a model simulated hints; it does not apply to --truth (finished predictions)")
    if cfg.plot is not None and cfg.hints is None:
        raise UserError("--plot draws the hint curve: give --hints N too")
    if cfg.plot is not None and cfg.plot.suffix.lower() != ".png":
        raise UserError(f"{cfg.plot}: --plot writes a PNG; give a file name ending in .png")
    for path, option in ((cfg.csv, "--csv"), (cfg.plot, "--plot")):
        if path is not None:
            check_output(path, option, cfg.overwrite)
    if cfg.hints is not None:
        from colorize_cli.hintcurve import hint_curve  # torch loads only once a model is needed

        curve = hint_curve(target, cfg.model, cfg.device, cfg.hints, cfg.seed, console)
        _report(curve, cfg, console)
        if cfg.plot is not None:
            curve.plot(cfg.plot)
            console.print(f"hint curve drawn to {escape(path_text(cfg.plot))}", soft_wrap=True)
        return curve
    if cfg.truth is not None:
        ev = compare_folders(target, cfg.truth, console)
    else:
        ev = evaluate_model(target, cfg.model, cfg.device, console)
    _report(ev, cfg, console)
    return ev


def _report(ev: Evaluation | HintCurve, cfg: EvaluateConfig, console: Console) -> None:
    """The skipped images on `console`, an error when none was scored, the rows to `cfg.csv`."""
    for name, reason in ev.skipped[:SHOW_SKIPPED]:
        skipped(console, f"{path_text(name)}: {path_text(reason)}")
    if len(ev.skipped) > SHOW_SKIPPED:
        skipped(console, f"{len(ev.skipped) - SHOW_SKIPPED} more (--json lists them all)")
    if not ev.scores:
        raise UserError("no image could be scored (see the reasons above)")
    if cfg.csv is not None:
        rows = ev.write_csv(cfg.csv)
        console.print(f"per-image scores written to {escape(path_text(cfg.csv))} ({rows} rows)", soft_wrap=True)


def render(result: Evaluation | HintCurve | votes.VoteSummary, cfg: EvaluateConfig, out: Console) -> None:
    """The tables on `out`; with `cfg.as_json` the JSON summary instead, as plain text on stdout."""
    if cfg.as_json:
        summary = result.to_json(cfg.top) if isinstance(result, votes.VoteSummary) else result.to_json()
        print(json.dumps(summary, indent=2, allow_nan=False))
    elif isinstance(result, votes.VoteSummary):
        votes.render(result, cfg.top, out)
    else:
        result.render(out)
