"""`colorize evaluate`: how far colorized photos are from the real ones, next to the gray
baseline; or, for a file of votes, the perceptual study's statistics (`votes`).

Two sources of (prediction, truth) pairs:
- `compare_folders(PRED, TRUTH)`: two folders matched by file stem (what `colorize infer`
  wrote next to the originals);
- `evaluate_model(DATA/test, model)`: A|B pair images from `colorize prep` (colour A on the
  left, its gray B on the right, the pix2pix aligned layout), B colorized by the model.

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

import numpy as np
from PIL import Image, ImageOps
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from colorize_cli import metrics, votes
from colorize_cli.device import Device
from colorize_cli.errors import UserError
from colorize_cli.files import path_text, write_csv_atomic
from colorize_cli.imageio import ImageError, list_images, open_image, to_gray
from colorize_cli.pairs import RESAMPLE, fit_image, read_pair
from colorize_cli.terminal import BASELINE_LEGEND, plural, progress_bar, skipped

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
_FORMATS = {"mae": ".4f", "mse": ".4f", "psnr": ".2f", "ssim": ".4f", "ciede2000": ".2f",
            "colorfulness": ".1f", "colorfulness_truth": ".1f", "colorfulness_ratio": ".2f"}
SCORE_KEYS = tuple(k for k, _, _ in METRICS) + ("colorfulness_truth",)
# Skipped images listed on the terminal; a truth folder much larger than the predictions
# would otherwise print a line for every photo without a prediction.
SHOW_SKIPPED = 10


@dataclass(frozen=True)
class EvaluateConfig:
    """`colorize evaluate`'s options (TARGET is `run`'s own argument)."""

    truth: Path | None = None  # the real photos: TARGET is a folder of predictions
    model: Path | None = None  # run folder or checkpoint for A|B pairs; None: the bundled model
    device: Device = "auto"
    csv: Path | None = None  # per-image scores
    overwrite: bool = False  # let `csv` replace a file
    as_json: bool = False  # a machine-readable summary instead of tables
    top: int = 5  # votes: how many of the most fooling images to list


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
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column is NaN, no warning
                out[side] = {
                    "mean": {k: _nan_stat(np.nanmean, v) for k, v in cols.items()},
                    "median": {k: _nan_stat(np.nanmedian, v) for k, v in cols.items()},
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

    def write_csv(self, path: str | os.PathLike) -> None:
        """One row per scored image: model metrics, then the gray baseline's (`gray_` prefix)."""
        gray_keys = [k for k, _, _ in METRICS]
        write_csv_atomic(path, ["image", "width", "height", "fitted", *SCORE_KEYS, *(f"gray_{k}" for k in gray_keys)],
                         ([path_text(s.name), s.width, s.height, int(s.fitted), *(_num(s.model[k]) for k in SCORE_KEYS),
                           *(_num(s.gray[k]) for k in gray_keys)] for s in self.scores))

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
            cells = [_fmt(key, m), _fmt(key, summ["model"]["median"][key]),
                     _fmt(key, g), _fmt(key, summ["gray"]["median"][key])]
            if better and not (math.isnan(m) or math.isnan(g)) and m != g:
                win = 0 if (m - g) * better > 0 else 2
                cells[win] = f"[bold]{cells[win]}[/bold]"
            arrow = {1: " ↑", -1: " ↓", 0: ""}[better]
            t.add_row(label + arrow, *cells)
        truth = summ["model"]
        t.add_row("colorfulness of truth", _fmt("colorfulness", truth["mean"]["colorfulness_truth"]),
                  _fmt("colorfulness", truth["median"]["colorfulness_truth"]), "", "")
        return t


def _nan_stat(fn: Callable[[np.ndarray], float], v: np.ndarray) -> float:
    return float(fn(v)) if v.size else float("nan")


def _num(v: float) -> str:
    return format(v, ".8g")


def _fmt(key: str, v: float) -> str:
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


def _with_progress(items: list, what: str, console: Console) -> Iterator:
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
    for stem in _with_progress(common, "scoring", console):
        try:
            pred, truth = open_image(preds[stem]), open_image(truths[stem])
        except ImageError as e:
            ev.skipped.append((stem, str(e)))
            continue
        ev.scores.append(score_pair(stem, pred, truth))
    return ev


def evaluate_model(data_dir: str | os.PathLike, model: str | os.PathLike | None, device: Device,
                   console: Console) -> Evaluation:
    """Colorize the gray half of every A|B pair in `data_dir` and score it against the colour half.

    `model`: a run folder or .safetensors checkpoint; None for the bundled model.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise UserError(f"{data_dir}: no such folder")
    paths = list_images(data_dir)
    if not paths:
        hint = f" (did you mean {data_dir / 'test'}?)" if (data_dir / "test").is_dir() else ""
        raise UserError(f"{data_dir}: no images in this folder{hint}")
    from colorize_cli.colorizer import Colorizer  # torch loads only once a model is needed

    colorizer = Colorizer.load(model, device=device)
    ev = Evaluation(kind="model", source={"data": str(data_dir), "checkpoint": colorizer.source})
    batch: list[tuple[str, Image.Image, Image.Image]] = []  # (name, truth, gray)

    def flush() -> None:
        outs = colorizer.colorize_batch([gray for _, _, gray in batch])
        ev.scores.extend(score_pair(name, out, truth, gray) for (name, truth, gray), out in zip(batch, outs))
        batch.clear()

    for path in _with_progress(paths, "colorizing", console):
        try:
            truth, gray = read_pair(path)
        except ImageError as e:  # too small pairs too: open_image applies imageio.check_dimensions
            ev.skipped.append((path.stem, str(e)))
            continue
        batch.append((path.stem, truth, gray))
        if len(batch) == colorizer.batch_size:
            flush()
    if batch:
        flush()
    return ev


# --- the command -------------------------------------------------------------------------


def check_csv(path: Path, overwrite: bool) -> None:
    """Refuse a --csv path that would replace a file (without --overwrite) or is a folder, before
    the slow scoring: a checkpoint or photo given as --csv by mistake is never lost."""
    if path.is_dir():
        raise UserError(f"{path}: is a folder; --csv needs a file name")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise UserError(f"{path}: exists; not overwritten (use --overwrite to replace it)")


def run(target: Path, cfg: EvaluateConfig, console: Console) -> Evaluation | votes.VoteSummary:
    """A .csv (or .tsv) file is a table of perceptual votes; a folder is scored against
    `cfg.truth` or, without it, taken as A|B pairs and run through the model. Skipped images
    and notes go to `console`; the per-image scores to `cfg.csv`."""
    if target.suffix.lower() in (".csv", ".tsv"):
        if cfg.truth is not None or cfg.model is not None or cfg.csv is not None:
            raise UserError(f"{target}: --truth, --model and --csv apply to image folders, not to a votes file")
        return votes.VoteSummary.of(votes.read_votes(target))
    if not target.exists():
        raise UserError(f"{target}: no such file or folder")
    if not target.is_dir():
        raise UserError(f"{target}: expected a folder of images or a .csv file of votes")
    if cfg.truth is not None and cfg.model is not None:
        raise UserError("give --truth (compare two folders) or --model (run a model on A|B pairs), not both")
    if cfg.csv is not None:
        check_csv(cfg.csv, cfg.overwrite)
    if cfg.truth is not None:
        ev = compare_folders(target, cfg.truth, console)
    else:
        ev = evaluate_model(target, cfg.model, cfg.device, console)
    for name, reason in ev.skipped[:SHOW_SKIPPED]:
        skipped(console, f"{path_text(name)}: {path_text(reason)}")
    if len(ev.skipped) > SHOW_SKIPPED:
        skipped(console, f"{len(ev.skipped) - SHOW_SKIPPED} more (--json lists them all)")
    if not ev.scores:
        raise UserError("no image could be scored (see the reasons above)")
    if cfg.csv is not None:
        ev.write_csv(cfg.csv)
        console.print(f"per-image scores written to {escape(path_text(cfg.csv))} ({len(ev.scores)} rows)", soft_wrap=True)
    return ev


def render(result: Evaluation | votes.VoteSummary, cfg: EvaluateConfig, out: Console) -> None:
    """The tables on `out`; with `cfg.as_json` the JSON summary instead, as plain text on stdout."""
    if cfg.as_json:
        summary = result.to_json(cfg.top) if isinstance(result, votes.VoteSummary) else result.to_json()
        print(json.dumps(summary, indent=2, allow_nan=False))
    elif isinstance(result, votes.VoteSummary):
        votes.render(result, cfg.top, out)
    else:
        out.print(result.table())
        if fitted := sum(s.fitted for s in result.scores):
            out.print(f"{fitted} truth image(s) of another size were fitted to the prediction (centre crop, resize).")
        out.print(BASELINE_LEGEND)
