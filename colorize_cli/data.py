"""Training data in memory: a `prep` output or a plain folder of color photos -> uint8 tensors.

Every image is decoded once, at start, into two uint8 tensors per split: color (N, 3, S, S)
and gray (N, 1, S, S). At 256 px that is 256 KiB per photo (600 photos: 157 MB), small enough
to keep whole in RAM or on the GPU, so training never waits for a disk or a decoder.

- A prep output (DATA/train and DATA/test holding 2S x S "A|B" PNGs: color left, gray right)
  is used as it is; pairs of another size than the one asked for are resized (both halves,
  with prep's filter).
- A plain folder of photos is turned into pairs the way `colorize prep` would with its
  defaults: duplicates (same bytes) and grayscale photos skipped, `--fit crop`, and the same
  seeded train/test split (prep.assign_splits on the files' sha256, prep's default test
  fraction and seed), so `prep` then `train` and `train` alone see the same split.
"""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from colorize_cli.errors import UserError
from colorize_cli.imageio import (GRAYSCALE_COLORFULNESS, ImageError, is_grayscale, list_images, open_image,
                                  sha256_or_reason)
from colorize_cli.prep import RESAMPLE, SPLITS, PrepConfig, assign_splits, default_workers, make_pair


@dataclass
class Pairs:
    """One split in memory: color (N, 3, S, S) and gray (N, 1, S, S) uint8, and file names."""

    color: torch.Tensor
    gray: torch.Tensor
    names: list[str]

    def __len__(self) -> int:
        return len(self.names)

    @property
    def nbytes(self) -> int:
        return self.color.nbytes + self.gray.nbytes

    def to(self, device: torch.device | str) -> Pairs:
        return Pairs(self.color.to(device), self.gray.to(device), self.names)


@dataclass
class DataSet:
    train: Pairs
    test: Pairs
    size: int
    source: str  # "prep output" or "photo folder", for the log
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)


def is_prep_output(root: Path) -> bool:
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


def _halves(pair: Image.Image, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A|B pair -> (color (S, S, 3), gray (S, S)) uint8 arrays at `size`."""
    h = pair.height
    color = pair.crop((0, 0, h, h))
    gray = pair.crop((h, 0, 2 * h, h)).convert("L")  # B's three equal channels -> exactly that value
    if h != size:
        color, gray = color.resize((size, size), RESAMPLE), gray.resize((size, size), RESAMPLE)
    return np.asarray(color), np.asarray(gray)


def _read_pair(path: Path, size: int) -> tuple[np.ndarray, np.ndarray] | str:
    """The arrays of one prep pair, or the reason it cannot be used."""
    try:
        pair = open_image(path)
    except ImageError as e:
        return str(e).removeprefix(f"{path}: ")
    if pair.width != 2 * pair.height:
        return f"not an A|B pair ({pair.width}x{pair.height}; expected width = 2 x height)"
    return _halves(pair, size)


def _read_photo(path: Path, size: int, fit: str) -> tuple[np.ndarray, np.ndarray] | str:
    """A photo made into a pair as prep would make it, or the reason prep would skip it."""
    try:
        img = open_image(path)
    except ImageError as e:
        return str(e).removeprefix(f"{path}: ")
    if is_grayscale(img):
        return f"grayscale (colorfulness below {GRAYSCALE_COLORFULNESS:g})"
    return _halves(make_pair(img, size, fit), size)


def _stack(names: list[str], arrays: list[tuple[np.ndarray, np.ndarray]], size: int) -> Pairs:
    if not arrays:
        return Pairs(torch.empty(0, 3, size, size, dtype=torch.uint8),
                     torch.empty(0, 1, size, size, dtype=torch.uint8), [])
    color = torch.from_numpy(np.stack([c for c, _ in arrays])).permute(0, 3, 1, 2).contiguous()
    gray = torch.from_numpy(np.stack([g for _, g in arrays]))[:, None].contiguous()
    return Pairs(color, gray, names)


def load_data(root: str | os.PathLike, size: int, workers: int | None = None) -> DataSet:
    """Decode DATA (a prep output or a photo folder, see the module docstring) into memory."""
    root = Path(root)
    try:
        if not stat.S_ISDIR(os.stat(root).st_mode):
            raise UserError(f"{root}: not a folder (expected a prep output or a folder of photos)")
    except FileNotFoundError:
        raise UserError(f"{root}: no such folder (expected a prep output or a folder of photos)") from None
    except OSError as e:  # a symlink loop, no permission
        raise UserError(f"{root}: cannot read ({e.strerror or e})") from None
    workers = workers or default_workers()
    skipped: list[tuple[str, str]] = []
    by_split: dict[str, list[tuple[str, tuple[np.ndarray, np.ndarray]]]] = {s: [] for s in SPLITS}
    with ThreadPoolExecutor(workers) as pool:
        if is_prep_output(root):
            source = "prep output"
            jobs = [(split, p) for split in SPLITS if (root / split).is_dir() for p in list_images(root / split)]
            results = pool.map(lambda job: _read_pair(job[1], size), jobs)
            for (split, path), result in zip(jobs, results):
                if isinstance(result, str):
                    skipped.append((str(path), result))
                else:
                    by_split[split].append((path.name, result))
        else:
            source = "photo folder"
            prep = PrepConfig()
            paths = list_images(root)
            owner: dict[str, Path] = {}  # one photo per content, the first by name (as prep does)
            for path, (sha, why) in zip(paths, pool.map(sha256_or_reason, paths)):
                if why:
                    skipped.append((str(path), why))
                elif sha in owner:
                    skipped.append((str(path), f"duplicate of {owner[sha]}"))
                else:
                    owner[sha] = path
            results = pool.map(lambda p: _read_photo(p, size, prep.fit), owner.values())
            kept: dict[str, tuple[Path, tuple[np.ndarray, np.ndarray]]] = {}
            for (sha, path), result in zip(owner.items(), results):
                if isinstance(result, str):
                    skipped.append((str(path), result))
                else:
                    kept[sha] = (path, result)
            splits = assign_splits(list(kept), prep.test_fraction, prep.seed)
            for sha, (path, arrays) in kept.items():
                by_split[splits[sha]].append((path.name, arrays))
    train, test = (_stack([n for n, _ in by_split[s]], [a for _, a in by_split[s]], size) for s in SPLITS)
    if not len(train):
        raise UserError(f"{root}: no usable training images ({source})")
    if not len(test):
        raise UserError(f"{root}: no test images, so nothing to measure progress on; "
                        "make a split with `colorize prep --test-fraction 0.2`")
    return DataSet(train, test, size, source, skipped)
