"""What a training run shows and writes besides its checkpoints: the console's progress bars
and epoch lines (Reporter), and, kept by rank 0 in the run folder (RunLog), metrics.csv (one
row per epoch), curves.png and samples/epoch_NNN.png; at the end, the summary table.

Pictures are drawn with Pillow, so no plotting library is needed, and saved at zlib level 1
(FAST_PNG): 3x faster than Pillow's 6 for ~10% more bytes, which matters when a GPU epoch takes
a second.
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from colorize_cli import chart
from colorize_cli.data import Pairs
from colorize_cli.errors import UserError
from colorize_cli.files import write_csv_atomic
from colorize_cli.imageio import save_image
from colorize_cli.model import UNet
from colorize_cli.scoring import colorize_test

console = Console(stderr=True, highlight=False)

SAMPLES = 6  # test photos in each samples/epoch_NNN.png
FAST_PNG = 1  # zlib level of the pictures written every epoch


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


# --- the console -------------------------------------------------------------------------


class Reporter:
    """Epoch and step bars (a terminal only) with losses, images/s and ETA, and one line per
    epoch (always). Losses are read from the device only every `every` seconds."""

    def __init__(self, enabled: bool, every: float = 1.0) -> None:
        self.enabled, self.every = enabled, every
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console,
            disable=not (enabled and console.is_terminal),
        )
        self.last_read = 0.0

    def start(self, epochs: int | None, done: int, steps: int, images_per_step: int, gan: bool = True) -> None:
        """`epochs` None: a time budget ends the run, so the epoch bar has no total. `gan`: whether
        the losses shown include the discriminator's (else L1 alone is trained)."""
        self.steps, self.epochs, self.images_per_step, self.gan = steps, epochs, images_per_step, gan
        self.progress.start()
        self.epoch_bar = self.progress.add_task("epochs", total=epochs, completed=done, info="")
        self.step_bar = self.progress.add_task("steps", total=steps, info="")

    def epoch_start(self, epoch: int, step: int) -> None:
        self.t0, self.step0 = time.perf_counter(), step
        self.progress.update(self.step_bar, description=f"epoch {epoch + 1}", completed=step, info="")

    def step(self, epoch: int, step: int, sums: torch.Tensor) -> None:
        """After `step` steps of `epoch` (0-based); `sums` holds the loss totals over those steps."""
        self.progress.update(self.step_bar, completed=step)
        now = time.perf_counter()
        if not self.progress.disable and now - self.last_read > self.every:
            self.last_read = now
            per_step = (now - self.t0) / max(step - self.step0, 1)
            rate = self.images_per_step / per_step
            left = (self.steps - step) * per_step
            self.progress.update(self.step_bar, info=f"{self._losses(*(sums / step).tolist())}  {rate:.1f} img/s  "
                                                     f"ETA {_hms(left)}")
            if self.epochs is not None:
                rest = left + (self.epochs - epoch - 1) * self.steps * per_step
                self.progress.update(self.epoch_bar, info=f"ETA {_hms(rest)} (training steps only)")

    def epoch_end(self, row: dict, best: bool) -> None:
        self.progress.update(self.epoch_bar, completed=int(row["epoch"]))
        if self.enabled:
            of = f"/{self.epochs}" if self.epochs is not None else f" ({_hms(row['train_seconds'])} trained)"
            self.progress.console.print(
                f"epoch {row['epoch']}{of}  {self._losses(row['d_loss'], row['g_adv'], row['g_l1'])}  "
                f"| test PSNR {row['test_psnr']:.2f} SSIM {row['test_ssim']:.3f} CIEDE2000 {row['test_ciede2000']:.2f} "
                f"colour {row['test_colorfulness']:.2f}  "
                f"(gray {row['gray_psnr']:.2f} {row['gray_ssim']:.3f} {row['gray_ciede2000']:.2f})  "
                + (f"| validation CIEDE2000 {row['val_ciede2000']:.2f}  " if math.isfinite(row["val_ciede2000"]) else "") +
                f"| {row['images_per_s']:.1f} img/s {row['seconds']:.1f} s" + ("  [green]best[/green]" if best else ""),
                soft_wrap=True)

    def _losses(self, d: float, adv: float, l1: float) -> str:
        return f"D {d:.3f}  G {adv:.3f} + L1 {l1:.4f}" if self.gan else f"L1 {l1:.4f}"

    def close(self) -> None:
        self.progress.stop()


# --- the run folder's record -------------------------------------------------------------

SCORES = ("l1", "psnr", "ssim", "ciede2000", "colorfulness")  # scoring._scores's keys
# Columns runs from before the selection score and the time budget did not write: NaN when read back.
# The validation photos' columns: NaN also in a run without them (--val-photos 0).
VAL_FIELDS = ("val_ciede2000", "val_colorfulness", "val_score")
ADDED_FIELDS = ("test_ciede2000", "test_colorfulness", "test_score", "chroma_gain", "gray_ciede2000",
                "gray_colorfulness", "train_seconds", *VAL_FIELDS)
CSV_FIELDS = ("epoch", "lr", "d_loss", "g_adv", "g_l1", *(f"test_{k}" for k in SCORES), "test_score", *VAL_FIELDS,
              "chroma_gain",
              *(f"gray_{k}" for k in SCORES), "seconds", "train_seconds", "images_per_s")


class RunLog:
    """The epochs' rows (metrics.csv's, read back on a resume), the files drawn from them, and
    the gray baseline's test scores every row shows next to the model's."""

    def __init__(self, out: Path, rows: list[dict], gray: dict[str, float]) -> None:
        self.out, self.rows, self.gray = out, rows, gray

    def save_sample(self, epoch: int, sheet: Image.Image) -> None:
        save_image(sheet, self.out / "samples" / f"epoch_{epoch:03d}.png", compress_level=FAST_PNG)

    def add(self, row: dict) -> None:
        """The row first: a kill between it and the epoch's checkpoint leaves a row that resume drops."""
        self.rows.append(row)
        write_metrics(self.out / "metrics.csv", self.rows)
        plot_curves(self.rows, self.out / "curves.png")

    def test_scores(self, epoch: int) -> dict[str, float]:
        """The test scores of `epoch` ({} when it has no row)."""
        row = next((r for r in self.rows if int(r["epoch"]) == epoch), None)
        return {k: float(row[f"test_{k}"]) for k in SCORES} if row else {}


def read_metrics(path: Path, upto: int) -> list[dict]:
    """The rows of epochs 1..upto (a row written after the checkpoint it belongs to is dropped).
    Every column must be there and hold numbers, the rows are plotted and written back; only
    ADDED_FIELDS may be missing (a run from before them), and read as NaN."""
    if not path.is_file():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in CSV_FIELDS if c not in (reader.fieldnames or ()) and c not in ADDED_FIELDS]
            if missing:
                raise ValueError(f"no {missing[0]} column")
            rows = []
            for row in reader:
                row = {**dict.fromkeys(ADDED_FIELDS, "nan"), **row}
                if _check_row(row, reader.line_num) <= upto:
                    rows.append(row)
    except UnicodeDecodeError:
        reason = "not UTF-8 text"
    except (csv.Error, ValueError) as e:
        reason = str(e)
    else:
        return rows
    raise UserError(f"{path}: not a metrics table of colorize train ({reason}); delete it to go on without the "
                    "past epochs' rows")


def _check_row(row: dict, line: int) -> int:
    """A metrics row's epoch, once every value has been found to be a number (ValueError if not)."""
    for key in CSV_FIELDS:
        kind, parse = ("a whole number", int) if key == "epoch" else ("a number", float)
        try:
            parse(row[key])
        except (TypeError, ValueError):
            raise ValueError(f"line {line}: {key} {row[key]!r} is not {kind}") from None
    return int(row["epoch"])


def write_metrics(path: Path, rows: list[dict]) -> None:
    cells = ([row[key] for key in CSV_FIELDS] for row in rows)
    write_csv_atomic(path, CSV_FIELDS, ([f"{v:.6g}" if isinstance(v, float) else v for v in line] for line in cells))


# --- pictures ----------------------------------------------------------------------------


def sample_sheet(g: UNet, test: Pairs, space: str, device: torch.device) -> Image.Image:
    """Rows of gray | generated | real for the first SAMPLES test photos."""
    n = min(SAMPLES, len(test))
    made = colorize_test(g, test.gray[:n].to(device), space)
    s = test.color.shape[-1]
    sheet = Image.new("RGB", (3 * s, n * s))
    for i in range(n):
        sheet.paste(Image.fromarray(test.gray[i, 0].cpu().numpy()).convert("RGB"), (0, i * s))
        sheet.paste(Image.fromarray(made[i]), (s, i * s))
        sheet.paste(Image.fromarray(test.color[i].permute(1, 2, 0).cpu().numpy()), (2 * s, i * s))
    return sheet


CURVES = [  # panel title, then (legend, metrics.csv column, colour) per line
    ("GAN losses", [("D", "d_loss", "#d62728"), ("G adversarial", "g_adv", "#1f77b4")]),
    ("train L1 (network units)", [("G L1", "g_l1", "#2ca02c")]),
    ("learning rate", [("lr", "lr", "#7f7f7f")]),
    ("test CIEDE2000 (lower is better)", [("model", "test_ciede2000", "#1f77b4"), ("gray", "gray_ciede2000", "#999999")]),
    ("test PSNR, dB", [("model", "test_psnr", "#1f77b4"), ("gray", "gray_psnr", "#999999")]),
    ("test SSIM", [("model", "test_ssim", "#1f77b4"), ("gray", "gray_ssim", "#999999")]),
    ("colourfulness / truth's", [("model", "test_colorfulness", "#1f77b4")]),
    ("selection score (lower is better)", [("validation", "val_score", "#9467bd"), ("test", "test_score", "#1f77b4")]),
    ("test L1", [("model", "test_l1", "#1f77b4"), ("gray", "gray_l1", "#999999")]),
]


def plot_curves(rows: list[dict], path: Path) -> None:
    """The CURVES panels in a 3 x 3 grid, by epoch (`rows` holds at least one)."""
    pw, ph = 380, 250
    img = Image.new("RGB", (3 * pw, 3 * ph), "white")
    draw = ImageDraw.Draw(img)
    epochs = [int(r["epoch"]) for r in rows]
    ends = (epochs[0], max(epochs[-1], epochs[0] + 1))
    for k, (title, series) in enumerate(CURVES):
        lines = [(label, color, [(e, float(r[key])) for e, r in zip(epochs, rows)]) for label, key, color in series]
        chart.panel(draw, ((k % 3) * pw, (k // 3) * ph, pw, ph), title, lines, "epoch", ends)
    save_image(img, path, compress_level=FAST_PNG)


# --- the end -----------------------------------------------------------------------------


@dataclass
class RunSummary:
    """What the summary table shows of a session."""

    out: Path
    epochs_done: int  # complete epochs
    best_epoch: int
    best: dict[str, float]  # test scores of the best epoch
    gray: dict[str, float]  # the gray baseline's
    seconds: float
    images_per_s: float  # training steps only (no evaluation, no checkpoints)


def summary_table(r: RunSummary) -> Table:
    """The run at a glance: time, speed, and the best epoch's test scores next to gray's."""
    table = Table(title=f"train → {escape(str(r.out))}", title_justify="left")
    table.add_column("")
    table.add_column("model", justify="right")
    table.add_column("gray", justify="right")
    table.add_row("epochs done", str(r.epochs_done), "")
    table.add_row("time this session", _hms(r.seconds), "")
    table.add_row("training speed (steps only)", f"{r.images_per_s:.1f} img/s", "")
    if r.best:
        table.add_section()
        table.add_row(f"test PSNR, dB (best: epoch {r.best_epoch})", f"{r.best['psnr']:.2f}", f"{r.gray['psnr']:.2f}")
        table.add_row("test SSIM", f"{r.best['ssim']:.4f}", f"{r.gray['ssim']:.4f}")
        table.add_row("test CIEDE2000", f"{r.best['ciede2000']:.2f}", f"{r.gray['ciede2000']:.2f}")
        table.add_row("colourfulness / truth's", f"{r.best['colorfulness']:.2f}", f"{r.gray['colorfulness']:.2f}")
        table.add_row("test L1", f"{r.best['l1']:.4f}", f"{r.gray['l1']:.4f}")
    return table
