"""`colorize demo`: a bundled model (the default one unless --model says) on scikit-image's own
sample photos, fully offline.

The photos ship inside scikit-image (no download), are grayed, colorized at full size, and
shown three ways: a contact sheet PNG, a self-contained `index.html`, and a metrics table in
the terminal that puts the model next to the gray baseline (the gray photo itself as the
prediction), which is the number every colorizer has to beat.

The output folder may already hold other files: the demo keeps a manifest of what it wrote
(name and SHA-256) and replaces only those files, unchanged since; anything else with one of
its names stops the demo before it writes anything.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from skimage import data

from colorize_cli import metrics
from colorize_cli.bundled import WEIGHTS
from colorize_cli.device import Device
from colorize_cli.errors import UserError
from colorize_cli.files import sha256_file, write_bytes_atomic
from colorize_cli.imageio import save_image, to_gray
from colorize_cli.terminal import BASELINE_LEGEND

# The colour photographs scikit-image bundles in its wheel (the others need a download).
SAMPLES: tuple[tuple[str, Callable[[], np.ndarray]], ...] = (
    ("astronaut", data.astronaut),
    ("chelsea", data.chelsea),
    ("coffee", data.coffee),
    ("rocket", data.rocket),
    ("motorcycle", lambda: data.stereo_motorcycle()[0]),
)
MANIFEST = ".colorize-demo.json"
SHEET = "contact-sheet.png"
PAGE = "index.html"
PANELS = ("gray", "colorized", "original")
ROW_HEIGHT = 180  # contact sheet: every panel scaled to this height
MARGIN, GAP = 16, 8
INK, PAPER, FAINT = (30, 30, 30), (255, 255, 255), (110, 110, 110)
# (metrics.score key, format) for the table and the page
SCORES = (("psnr", ".2f"), ("ssim", ".3f"), ("ciede2000", ".2f"), ("colorfulness_ratio", ".0%"))


@dataclass(frozen=True)
class DemoConfig:
    """`colorize demo`'s options."""

    out: Path = Path("demo")  # of its files, only those the demo wrote are replaced
    size: int | None = None  # working size; None: the model's
    limit: int | None = None  # only the first N sample photos
    device: Device = "auto"
    model: str | None = None  # a bundled model's name, a run folder or a checkpoint; None: the default bundled model


@dataclass
class Sample:
    """One sample photo through the model, with scores for the model and the gray baseline."""

    name: str
    original: Image.Image
    gray: Image.Image
    colorized: Image.Image
    model: dict[str, float]
    baseline: dict[str, float]

    def panels(self) -> tuple[Image.Image, Image.Image, Image.Image]:
        """In the order of PANELS."""
        return self.gray, self.colorized, self.original


def image_name(sample: str, panel: str) -> str:
    return f"images/{sample}-{panel}.png"


def load_samples(limit: int | None) -> list[tuple[str, Image.Image]]:
    return [(name, Image.fromarray(load()).convert("RGB")) for name, load in SAMPLES[:limit]]


# --- the output folder -----------------------------------------------------------------


def check_out(out: Path, names: list[str]) -> dict[str, str]:
    """The manifest of an earlier demo in `out` (or {}); refuses when one of `names` exists
    and is not a file the demo wrote (as recorded, unchanged)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    manifest: dict[str, str] = {}
    if (out / MANIFEST).is_file():
        try:
            manifest = json.loads((out / MANIFEST).read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            manifest = {}  # unreadable: treat every existing file as the user's
    taken = [n for n in names if (out / n).exists()
             and not ((out / n).is_file() and manifest.get(n) == sha256_file(out / n))]
    if taken:
        listed = ", ".join(str(out / n) for n in taken[:3]) + (" ..." if len(taken) > 3 else "")
        raise UserError(f"{out}: {listed} exist(s) and were not written by `colorize demo` (or were changed since); "
                        "nothing was written: move them or choose another --out")
    return manifest


# --- contact sheet and page ------------------------------------------------------------


def caption(s: Sample) -> str:
    m, b = s.model, s.baseline
    return (f"{s.name}  {s.original.width}x{s.original.height}   PSNR {m['psnr']:.1f} dB (gray {b['psnr']:.1f})   "
            f"SSIM {m['ssim']:.3f} ({b['ssim']:.3f})   CIEDE2000 {m['ciede2000']:.1f} ({b['ciede2000']:.1f})   "
            f"colorfulness {m['colorfulness_ratio']:.0%} of the original")


def contact_sheet(samples: list[Sample], title: str) -> Image.Image:
    """Rows of gray | colorized | original at one height, column titles on top, a caption
    with the scores under each row."""
    font = ImageFont.load_default(size=15)
    small = ImageFont.load_default(size=13)
    line = 22
    thumbs = [[img.resize((max(1, round(s.original.width * ROW_HEIGHT / s.original.height)), ROW_HEIGHT),
                          Image.Resampling.LANCZOS) for img in s.panels()] for s in samples]
    col_w = [max(row[c].width for row in thumbs) for c in range(len(PANELS))]
    width = 2 * MARGIN + sum(col_w) + GAP * (len(PANELS) - 1)
    height = 2 * MARGIN + 2 * line + len(samples) * (ROW_HEIGHT + line + GAP)
    sheet = Image.new("RGB", (width, height), PAPER)
    draw = ImageDraw.Draw(sheet)
    draw.text((MARGIN, MARGIN), title, font=font, fill=INK)
    x = MARGIN
    for c, panel in enumerate(PANELS):
        draw.text((x + col_w[c] // 2, MARGIN + line + line // 2), panel, font=font, fill=INK, anchor="mm")
        x += col_w[c] + GAP
    y = MARGIN + 2 * line
    for s, row in zip(samples, thumbs):
        x = MARGIN
        for c, thumb in enumerate(row):
            sheet.paste(thumb, (x + (col_w[c] - thumb.width) // 2, y))
            x += col_w[c] + GAP
        draw.text((MARGIN, y + ROW_HEIGHT + 4), caption(s), font=small, fill=FAINT)
        y += ROW_HEIGHT + line + GAP
    return sheet


def page(samples: list[Sample], title: str) -> str:
    """A self-contained HTML page (inline CSS, relative image links) with the same content."""
    e = html.escape
    rows = "\n".join(
        f"<tr><td>{e(s.name)}</td><td>{s.original.width}x{s.original.height}</td>"
        + "".join(f"<td>{s.model[k]:{f}} / {s.baseline[k]:{f}}</td>" for k, f in SCORES)
        + "</tr>"
        for s in samples)
    figures = "\n".join(
        f'<h2>{e(s.name)}</h2>\n<div class="row">'
        + "".join(f'<figure><a href="{image_name(s.name, p)}"><img src="{image_name(s.name, p)}" alt="{e(s.name)}, {p}">'
                  f"</a><figcaption>{p}</figcaption></figure>" for p in PANELS)
        + f'</div>\n<p class="cap">{e(caption(s))}</p>'
        for s in samples)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 4px 10px; text-align: right; }}
td:first-child {{ text-align: left; }}
.row {{ display: flex; gap: 8px; flex-wrap: wrap; }} figure {{ margin: 0; }}
img {{ height: 256px; display: block; }} figcaption, .cap {{ color: #666; font-size: 0.9em; }}
</style></head><body>
<h1>{e(title)}</h1>
<p>Each photo was turned to gray and colorized by the model; its luminance is the gray photo's,
exactly. Scores: model / gray baseline (the gray photo itself as the prediction).
PSNR and SSIM: higher is better; CIEDE2000: lower is better; colorfulness (Hasler-Suesstrunk):
as a share of the original photo's. <a href="{SHEET}">Contact sheet</a>.</p>
<table><tr><th>photo</th><th>size</th><th>PSNR dB</th><th>SSIM</th><th>CIEDE2000</th><th>colorfulness</th></tr>
{rows}
</table>
{figures}
<p class="cap">Sample photos from scikit-image (<code>skimage.data</code>); see its documentation for their sources.</p>
</body></html>
"""


def table(samples: list[Sample]) -> Table:
    """Two rows per photo, the model's and the gray baseline's, and their means."""
    t = Table()
    for header in ("photo", "", "PSNR dB \u2191", "SSIM \u2191", "CIEDE2000 \u2193", "colorfulness"):
        t.add_column(header, justify="left" if header in ("photo", "") else "right")

    def rows(name: str, model: dict[str, float], baseline: dict[str, float]) -> None:
        t.add_row(name, "model", *(f"{model[k]:{f}}" for k, f in SCORES))
        t.add_row("", "gray", *(f"{baseline[k]:{f}}" for k, f in SCORES), end_section=True)

    for s in samples:
        rows(s.name, s.model, s.baseline)
    def mean(scores: list[dict[str, float]]) -> dict[str, float]:
        return {k: float(np.mean([d[k] for d in scores])) for k, _ in SCORES}

    rows("mean", mean([s.model for s in samples]), mean([s.baseline for s in samples]))
    return t


# --- the command -----------------------------------------------------------------------


@dataclass
class DemoReport:
    samples: list[Sample]
    out: Path
    model: str  # the checkpoint
    device: str
    seconds: float


def run(cfg: DemoConfig) -> DemoReport:
    """Colorize the samples; write OUT/images/*, OUT/contact-sheet.png and OUT/index.html
    (nothing to show while it works: a few photos take seconds)."""
    started = time.perf_counter()
    out = cfg.out
    originals = load_samples(cfg.limit)
    names = [image_name(n, p) for n, _ in originals for p in PANELS] + [SHEET, PAGE]
    manifest = check_out(out, names)
    from colorize_cli.colorizer import Colorizer  # torch loads after the cheap checks

    colorizer = Colorizer.load(cfg.model, device=cfg.device, size=cfg.size)
    grays = [to_gray(img) for _, img in originals]
    colorized = colorizer.colorize_batch(grays)
    samples = []
    for (name, img), gray, col in zip(originals, grays, colorized):
        truth = metrics.as_rgb01(img)
        samples.append(Sample(name, img, gray, col, metrics.score(metrics.as_rgb01(col), truth),
                              metrics.score(metrics.as_rgb01(gray), truth)))
    source = Path(colorizer.source)
    shown = f"bundled {source.stem} model" if source.parent == WEIGHTS else source.name
    title = f"colorize demo: {shown}, working size {colorizer.size} px"
    for s in samples:
        for p, img in zip(PANELS, s.panels()):
            save_image(img, out / image_name(s.name, p))
    save_image(contact_sheet(samples, title), out / SHEET)
    write_bytes_atomic(out / PAGE, page(samples, title).encode())
    manifest.update({n: sha256_file(out / n) for n in names})
    write_bytes_atomic(out / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())
    return DemoReport(samples, out, colorizer.source, str(colorizer.device), time.perf_counter() - started)


def render(report: DemoReport, out: Console, err: Console) -> None:
    """The scores table on `out`; what was written where on `err`."""
    out.print(table(report.samples))
    out.print(f"{BASELINE_LEGEND}\ncolorfulness: Hasler-Suesstrunk, as a share of the original photo's.")
    err.print(f"wrote {escape(str(report.out / PAGE))}, {escape(str(report.out / SHEET))} and "
              f"{3 * len(report.samples)} images in {report.seconds:.1f} s (model {escape(report.model)} on "
              f"{report.device})", soft_wrap=True)
