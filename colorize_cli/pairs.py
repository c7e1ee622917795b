"""The A|B pair data set, the pix2pix "aligned" format: how a photo becomes a pair, how pairs
are split into train and test, and how a pair is read back.

A pair is one image, 2*size wide and size high: the colour photo on the left (A) and its
BT.601 grayscale on the right (B, three equal channels). A data set is a folder holding
train/ and test/ of such pairs. `colorize prep` writes them; train, evaluate and survey read
them through `read_pair`, and train makes them in memory from a plain photo folder with
`pair_halves` and `assign_splits` under PrepConfig's defaults, so both routes give the same data.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Literal, get_args

from PIL import Image

from colorize_cli.errors import UserError
from colorize_cli.files import usable_cpus
from colorize_cli.imageio import ImageError, is_grayscale, list_images, open_image, to_gray

Fit = Literal["crop", "pad", "stretch"]  # how a photo of any shape becomes a square (fit_image)
FITS: tuple[str, ...] = get_args(Fit)
SPLITS = ("train", "test")

# Letterbox fill for --fit pad. Black: its gray is black too, so A and B agree in the bars and
# the model learns nothing from them but "black stays black"; any other color would teach a
# made-up tint.
PAD_FILL = (0, 0, 0)

# Downscaling (and the rare upscaling of a small photo) uses Lanczos: the sharpest of
# Pillow's filters without visible ringing at these factors.
RESAMPLE = Image.Resampling.LANCZOS


@dataclass(frozen=True)
class PrepConfig:
    """How a data set of pairs is made: `colorize prep`'s options; a photo folder given to
    `colorize train` is paired with the defaults."""

    size: int = 256
    fit: Fit = "crop"
    test_fraction: float = 0.2
    seed: int = 0
    workers: int = field(default_factory=usable_cpus)
    force: bool = False
    recursive: bool = False


def fit_image(img: Image.Image, size: int, fit: str) -> Image.Image:
    """Make an RGB size x size image from a photo of any shape.

    crop: the centered square of side min(w, h), resized (nothing is distorted; the edges of
    the long side are lost). pad: the whole photo scaled so its long side is `size`, centered
    on PAD_FILL bars. stretch: resized to a square regardless of shape (the original project's
    behaviour: keeps everything but distorts shapes).
    """
    if size < 1:
        raise UserError(f"size must be at least 1, got {size}")
    rgb = img if img.mode == "RGB" else img.convert("RGB")
    w, h = rgb.size
    if fit == "crop":
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        # Cropped first so the filter sees only the square (a resize `box` would blend in
        # pixels from just outside it at the edges).
        return rgb.crop((left, top, left + side, top + side)).resize((size, size), RESAMPLE)
    if fit == "pad":
        scale = size / max(w, h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        canvas = Image.new("RGB", (size, size), PAD_FILL)
        canvas.paste(rgb.resize((nw, nh), RESAMPLE), ((size - nw) // 2, (size - nh) // 2))
        return canvas
    if fit == "stretch":
        return rgb.resize((size, size), RESAMPLE)
    raise UserError(f"unknown fit {fit!r}: choose one of {', '.join(FITS)}")


def pair_halves(img: Image.Image, size: int, fit: str) -> tuple[Image.Image, Image.Image]:
    """What `make_pair` puts side by side: the fitted color photo (A) and its gray (B, mode "L"),
    exactly what `split_pair` reads back from the pair."""
    a = fit_image(img, size, fit)
    return a, to_gray(a)


def make_pair(img: Image.Image, size: int, fit: str) -> Image.Image:
    """The pix2pix aligned pair: fitted color photo (A) left, its grayscale (B) right."""
    a, b = pair_halves(img, size, fit)
    pair = Image.new("RGB", (2 * size, size))
    pair.paste(a, (0, 0))
    pair.paste(b.convert("RGB"), (size, 0))
    return pair


def n_test_for(n: int, test_fraction: float) -> int:
    """round(n * fraction), computed on the decimal fraction the user typed, halves rounding up."""
    exact = Fraction(str(test_fraction)) * n
    return math.floor(exact + Fraction(1, 2))


def _order(key: str, seed: int) -> str:
    """A seeded pseudo-random rank for a key that does not depend on which other keys exist."""
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def assign_splits(
    keys: list[str], test_fraction: float, seed: int, existing: dict[str, str] | None = None
) -> dict[str, str]:
    """Map every key to "train" or "test".

    Keys already in `existing` keep their side. The new keys are ranked by sha256(seed:key)
    and the first t of them go to test, where t brings the test total as close as possible to
    round(n * test_fraction) for n = all distinct keys (clamped to 0..number of new keys). On a
    fresh start that is exactly round(n * fraction) test photos; adding photos later never
    moves an old one. The result depends only on the set of keys, not their order.
    """
    if not 0.0 <= test_fraction <= 1.0:
        raise UserError(f"test fraction must be between 0 and 1, got {test_fraction}")
    existing = existing or {}
    unique = list(dict.fromkeys(keys))
    result: dict[str, str] = {}
    new: list[str] = []
    for key in unique:
        side = existing.get(key)
        if side is None:
            new.append(key)
        elif side in SPLITS:
            result[key] = side
        else:
            raise ValueError(f"split for {key!r} must be train or test, got {side!r}")
    have_test = sum(1 for side in result.values() if side == "test")
    want_test = min(max(n_test_for(len(unique), test_fraction) - have_test, 0), len(new))
    ranked = sorted(new, key=lambda k: _order(k, seed))
    for i, key in enumerate(ranked):
        result[key] = "test" if i < want_test else "train"
    return result


def split_pair(pair: Image.Image, name: str) -> tuple[Image.Image, Image.Image]:
    """An A|B pair -> (colour A, gray B in mode "L": B's three equal channels, exactly that
    value). Any other shape is an ImageError naming `name`."""
    w, h = pair.size
    if w != 2 * h:
        raise ImageError(f"{name}: not an A|B pair ({w}x{h}; expected width = 2 x height)")
    return pair.crop((0, 0, h, h)), to_gray(pair.crop((h, 0, w, h)))


def read_pair(path: Path) -> tuple[Image.Image, Image.Image]:
    """A pair file as (colour A, gray B); an unusable file is an ImageError naming it. Each half
    is at least MIN_SIDE px, as `open_image` refuses anything smaller."""
    return split_pair(open_image(path), str(path))


def looks_like_pair(img: Image.Image) -> bool:
    """Whether an image is laid out as an A|B pair: twice as wide as high, its right half gray
    (`imageio.is_grayscale`, so a pair saved as JPEG counts too). How `colorize evaluate` tells
    a folder of pairs from a folder of colour photos."""
    w, h = img.size
    return w == 2 * h and is_grayscale(img.crop((h, 0, w, h)))


def is_prep_output(root: Path) -> bool:
    """A folder with train/ in it holds pairs; any other is a folder of photos."""
    return (root / "train").is_dir()


def native_size(root: str | os.PathLike) -> int:
    """The size training uses when none is asked for: a prep output's own, else prep's default."""
    root = Path(root)
    if is_prep_output(root):
        for split in SPLITS:
            for path in list_images(root / split):
                try:
                    with Image.open(path) as img:
                        return img.height
                except OSError:
                    continue
    return PrepConfig().size
