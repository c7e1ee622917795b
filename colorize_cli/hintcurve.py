"""`colorize evaluate FOLDER --hints N`: how much colour hints help a model, as the curve of
Zhang et al. (2017, "Real-Time User-Guided Image Colorization", fig. 4): mean scores by the
number of hints, each hint simulated from the true photo, next to two references without a
network, which a model given hints must beat to have learned more than to spread them:
- IDW: every pixel the inverse-distance-weighted mean a*b* of the hints, the very plane the
  network reads (`hints.planes`, planes `hints.IDW`), under the photo's own L*, composed at
  full resolution as the network's output is (`Colorizer.finish`);
- gray: the gray photo itself (IDW without hints).

A photo's hints are drawn once, at uniform random places, by a generator seeded with --seed and
the photo's file name (the same figures on every run, whichever other photos the folder holds);
count k takes the first k of them, so the sets are nested and the curve shows what each extra
hint adds. Each hint is the mean true colour of a patch as wide as HINT_SIDE working pixels, the
patch a given hint covers in the network's input.

Locality (`locality`): where does one hint's colour go? At 1 hint, each pixel's pull toward the
hint's colour (how much nearer to it in a*b* the pixel came than it was without the hint: the
model's automatic output, or gray for IDW), averaged over the pixels whose true colour is that
hint's (within NEAR of it) and over those whose true colour is far from it (FAR or more). A hint
that stays in its region pulls the first and leaves the second; IDW paints the whole photo.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from rich import box
from rich.console import Console
from rich.table import Table

from colorize_cli import chart, metrics
from colorize_cli.colorizer import Colorizer
from colorize_cli.errors import UserError
from colorize_cli.device import Device
from colorize_cli.evaluate import ARROWS, METRICS, fmt, model_photos, nan_stat, num, read_truth, with_progress
from colorize_cli.files import path_text, write_csv_atomic
from colorize_cli.hints import CURVE, HINT_SIDE, IDW, given_planes, truth_hints
from colorize_cli.imageio import ImageError, save_image
from colorize_cli.terminal import plural

# The scores of the curve (metrics.score's keys) and their short labels.
CURVE_METRICS: tuple[tuple[str, str], ...] = (
    ("psnr", "PSNR"), ("ciede2000", "CIEDE2000"), ("ssim", "SSIM"), ("colorfulness_ratio", "colour"),
)
CURVE_KEYS = tuple(k for k, _ in CURVE_METRICS)
BETTER = {k: better for k, _, better in METRICS}  # +1 higher is better, -1 lower, 0 neither
SIDES = ("network", "idw", "gray")
PLOT_LINES = (("network", "network", "#1f77b4"), ("idw", "IDW", "#ff7f0e"), ("gray", "gray", "#999999"))  # side, legend, colour
PANEL = (480, 320)  # each of the plot's two panels (PSNR, CIEDE2000), side by side
HINT_LEGEND = ("net: the model given the hints.  IDW: the hints' inverse-distance-weighted a*b* under the photo's "
               "own L*, no network.  PSNR in dB; colour: colourfulness / the truth's.  "
               "↑/↓: higher/lower is better.")
NEAR, FAR = 10.0, 30.0  # a*b* distance of a pixel's true colour from the hint's: its colour / another colour
LOCALITY_PIXELS = 1 << 20  # pixels a photo's locality is measured on, at most (an even grid of them)
LOCALITY_KEYS = ("near", "far")


def hint_counts(n: int) -> list[int]:
    """The counts the curve reports: hints.CURVE's up to `n`, and `n` itself."""
    return sorted({c for c in CURVE if c <= n} | {n})


def patch_side(long_side: int, working_size: int) -> int:
    """The side, in the photo's pixels, of a patch HINT_SIDE working pixels wide: the nearest
    odd number (at least 1), so the patch is centred on its hint."""
    return 2 * math.floor(HINT_SIDE * long_side / working_size / 2) + 1


def photo_rng(seed: int, file_name: str) -> np.random.Generator:
    """A photo's hint generator, from the seed and the photo's file name alone."""
    digest = hashlib.sha256(path_text(file_name).encode("utf-8")).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "big")])


@dataclass(frozen=True)
class CurveScore:
    """One photo's CURVE_KEYS scores: the gray photo's, and the network's and IDW's at each
    hint count (in `HintCurve.counts`' order)."""

    name: str
    width: int
    height: int
    side: int  # of each hint's patch, in the photo's pixels
    gray: dict[str, float]
    network: list[dict[str, float]]
    idw: list[dict[str, float]]
    # One hint's mean pull toward its colour ("near": pixels whose truth has its colour, "far":
    # pixels of other colours), by side (network, idw); empty where the curve has no 1-hint count.
    locality: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class HintCurve:
    """The per-photo scores of a hint curve, and the photos that could not be scored, with why."""

    source: dict[str, str]  # data, layout, checkpoint
    seed: int
    counts: list[int]
    scores: list[CurveScore] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (image, reason)

    def summary(self) -> dict:
        """Means over the photos (NaN left out): {"gray": {metric: mean}, "curve": [{"hints": k,
        "network": {metric: mean}, "idw": {metric: mean}}, ...]}."""
        located = [s.locality for s in self.scores if s.locality]
        return {"gray": _means([s.gray for s in self.scores]), "curve": [
            {"hints": k, "network": _means([s.network[i] for s in self.scores]),
             "idw": _means([s.idw[i] for s in self.scores])}
            for i, k in enumerate(self.counts)],
            "locality": {side: _means([loc[side] for loc in located], LOCALITY_KEYS) for side in ("network", "idw")}
            if located else {}}

    def to_json(self) -> dict:
        return metrics.json_safe({
            "kind": "hints",
            **{k: path_text(v) for k, v in self.source.items()},
            "seed": self.seed,
            "images": len(self.scores),
            "skipped": [{"image": path_text(n), "reason": path_text(r)} for n, r in self.skipped],
            **self.summary(),
        })

    def write_csv(self, path: str | Path) -> int:
        """One row per photo and hint count; returns the number of rows."""
        head = ["image", "width", "height", "hint_side", "hints",
                *(f"{side}_{k}" for side in SIDES for k in CURVE_KEYS)]
        rows = [[path_text(s.name), s.width, s.height, s.side, k,
                 *(num(scores[k]) for scores in (s.network[i], s.idw[i], s.gray) for k in CURVE_KEYS)]
                for s in self.scores for i, k in enumerate(self.counts)]
        write_csv_atomic(path, head, rows)
        return len(rows)

    def table(self) -> Table:
        """A row per hint count: the network and IDW side by side for each metric, the better in
        bold; the gray photo's scores (IDW's at 0 hints) in the caption."""
        n = len(self.scores)
        photos = plural(n, "A|B pair") if self.source["layout"] == "pairs" else plural(n, "photo")
        title = f"hint curve: {photos}, seed {self.seed}"
        if self.skipped:
            title += f" ({len(self.skipped)} skipped)"
        summ = self.summary()
        gray = summ["gray"]
        caption = "gray photo: " + ", ".join(f"{label} {fmt(key, gray[key])}" for key, label in CURVE_METRICS)
        t = Table(title=title, title_justify="left", caption=caption, caption_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False)
        t.add_column("\nhints", justify="right")
        for key, label in CURVE_METRICS:
            t.add_column(f"{label}{ARROWS[BETTER[key]]}\nnet", justify="right")
            t.add_column("\nIDW", justify="right")
        lines = {key: _lines(summ, key) for key in CURVE_KEYS}
        for i, k in enumerate(self.counts):
            cells = [str(k)]
            for key, _ in CURVE_METRICS:
                net, idw, better = lines[key]["network"][i], lines[key]["idw"][i], BETTER[key]
                pair = [fmt(key, net), fmt(key, idw)]
                if better and not (math.isnan(net) or math.isnan(idw)) and net != idw:
                    win = 0 if (net - idw) * better > 0 else 1
                    pair[win] = f"[bold]{pair[win]}[/bold]"
                cells += pair
            t.add_row(*cells)
        return t

    def render(self, out: Console) -> None:
        out.print(self.table())
        out.print(HINT_LEGEND)
        loc = self.summary()["locality"]
        if loc:
            net, idw = loc["network"], loc["idw"]
            out.print(f"one hint's pull toward its colour (a*b*), where the truth is that colour (within {NEAR:g}) / "
                      f"another ({FAR:g} or more away): net {net['near']:.1f} / {net['far']:.1f}, "
                      f"IDW {idw['near']:.1f} / {idw['far']:.1f}")

    def plot(self, path: Path) -> None:
        """PSNR and CIEDE2000 by number of hints, network, IDW and gray, side by side."""
        pw, ph = PANEL
        img = Image.new("RGB", (2 * pw, ph), "white")
        draw = ImageDraw.Draw(img)
        summ = self.summary()
        for i, (key, title) in enumerate((("psnr", "PSNR, dB (higher is better)"),
                                          ("ciede2000", "CIEDE2000 (lower is better)"))):
            lines = _lines(summ, key)
            series = [(legend, colour, list(zip(self.counts, lines[side]))) for side, legend, colour in PLOT_LINES]
            chart.panel(draw, (i * pw, 0, pw, ph), title, series, "hints", self.counts)
        save_image(img, path)


def _lines(summary: dict, key: str) -> dict[str, list[float]]:
    """The mean of one metric at each hint count, by side (network, idw, gray), from `summary`."""
    curve = summary["curve"]
    return {"network": [row["network"][key] for row in curve], "idw": [row["idw"][key] for row in curve],
            "gray": [summary["gray"][key]] * len(curve)}


def _means(rows: list[dict[str, float]], keys: tuple[str, ...] = CURVE_KEYS) -> dict[str, float]:
    return {k: nan_stat(np.nanmean, np.array([r[k] for r in rows], dtype=np.float64)) for k in keys}


def _scores(rgb01: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    scores = metrics.score(rgb01, truth)
    return {k: scores[k] for k in CURVE_KEYS}


def _ab(rgb01: np.ndarray) -> np.ndarray:
    """CIELAB a*, b* (..., 2) of sRGB in [0, 1] (..., 3)."""
    from skimage.color import rgb2lab

    return rgb2lab(rgb01)[..., 1:]


def locality_grid(height: int, width: int) -> tuple[slice, slice]:
    """The even grid of at most LOCALITY_PIXELS pixels a large photo's locality is measured on."""
    step = max(1, math.ceil(math.sqrt(height * width / LOCALITY_PIXELS)))
    return slice(None, None, step), slice(None, None, step)


def locality(before: np.ndarray, after: np.ndarray, truth: np.ndarray, hint: tuple[int, int, int]) -> dict[str, float]:
    """One hint's mean pull toward its colour (a*b* units: how much nearer to the hint's a*b*
    each pixel came, from `before` to `after`, RGB in [0, 1]), over the pixels whose true colour
    (`truth`) is within NEAR of the hint's ("near") and over those FAR or more from it ("far");
    NaN where a photo has no such pixel."""
    h = _ab(np.array(hint, dtype=np.float64).reshape(1, 1, 3) / 255)[0, 0]
    dist = {name: np.linalg.norm(_ab(img) - h, axis=-1) for name, img in
            (("before", before), ("after", after), ("truth", truth))}
    pull = dist["before"] - dist["after"]
    return {"near": nan_stat(np.mean, pull[dist["truth"] <= NEAR]), "far": nan_stat(np.mean, pull[dist["truth"] >= FAR])}


def check_model(colorizer: Colorizer) -> None:
    """A hint curve needs a model that reads hints, and a Lab one: the IDW baseline is a*b*
    planes put under the photo's own L* the way the network's output is."""
    if colorizer.cfg.space != "lab":  # first: an rgb model never reads hints either (`ModelConfig.hints`)
        raise UserError(f"{colorizer.source}: an rgb model; --hints needs a lab one (its baseline puts the hints' "
                        "a*b* under the photo's own L*)")
    if not colorizer.cfg.hints:
        raise UserError(f"{colorizer.source}: this model was trained without colour hints; --hints needs a "
                        "hint-aware model (any `colorize train` run since hints came)")


def score_photo(colorizer: Colorizer, name: str, truth: Image.Image, gray: Image.Image, counts: list[int],
                rng: np.random.Generator) -> CurveScore:
    """One photo's scores at every hint count: its hints drawn once (the first k for count k),
    the network run on all counts in batches, each output scored as soon as it is made, so only
    one full-resolution output at a time is held."""
    t = metrics.as_rgb01(truth)
    side = patch_side(max(truth.size), colorizer.size)
    full = colorizer.prepare(gray, truth_hints(np.asarray(truth), counts[-1], rng, side))
    items = [replace(full, hints=full.hints[:k]) for k in counts]
    lightness = colorizer.network_input([full])  # one working copy for every count
    network, idw = [], []
    gray01 = metrics.as_rgb01(gray)
    grid = locality_grid(*t.shape[:2])
    kept: dict[tuple[str, int], np.ndarray] = {}  # the 0- and 1-hint outputs on `grid`, for `locality`
    for start in range(0, len(items), colorizer.batch_size):  # one canvas shape: plain chunks
        chunk = items[start:start + colorizer.batch_size]
        for item, out in zip(chunk, colorizer.predict(chunk)):
            baseline = given_planes(item.hints, lightness)[0, IDW]
            for which, scores, made in (("network", network, out), ("idw", idw, baseline)):
                img = metrics.as_rgb01(colorizer.finish(item, made))
                scores.append(_scores(img, t))
                if len(item.hints) <= 1:
                    kept[which, len(item.hints)] = img[grid]
    # Counts start at 0 (hints.CURVE): the automatic output, and gray for IDW, are at hand.
    loc = ({which: locality(kept[which, 0], kept[which, 1], t[grid], full.hints[0][2]) for which in ("network", "idw")}
           if 1 in counts else {})
    return CurveScore(name, truth.width, truth.height, side, _scores(gray01, t), network, idw, loc)


def hint_curve(data_dir: Path, model: str | os.PathLike | None, device: Device, hints: int, seed: int,
               console: Console) -> HintCurve:
    """Score the model given 0 to `hints` simulated hints on every photo of `data_dir` (A|B
    pairs or colour photos, `evaluate.model_photos`), one photo at a time.

    `model`: a bundled model's name, a run folder or a .safetensors checkpoint; None for the default bundled model.
    """
    paths, layout = model_photos(data_dir)
    colorizer = Colorizer.load(model, device=device)
    check_model(colorizer)
    curve = HintCurve(source={"data": str(data_dir), "layout": layout, "checkpoint": colorizer.source},
                      seed=seed, counts=hint_counts(hints))
    for path in with_progress(paths, "hint curve", console):
        try:
            truth, gray = read_truth(path, layout)
        except ImageError as e:
            curve.skipped.append((path.stem, str(e)))
            continue
        curve.scores.append(score_photo(colorizer, path.stem, truth, gray, curve.counts,
                                        photo_rng(seed, path.name)))
    return curve
