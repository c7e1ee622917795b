"""Training data in memory: a `prep` output or a plain folder of color photos -> uint8 tensors.

Every image is decoded once, at start, into two uint8 tensors per split: color (N, 3, S, S)
and gray (N, 1, S, S). At 256 px that is 256 KiB per photo (600 photos: 157 MB), small enough
to keep whole in RAM or on the GPU, so training never waits for a disk or a decoder.

Decoding writes each image straight into its slot of one preallocated array (no list of
arrays then a stacked copy, so the peak is the data set's own size), stored pixel-interleaved:
the color tensors are (N, 3, S, S) views with channels_last strides, the layout the networks
run in, so batches need no transposing copy. A data set larger than half the free memory is
decoded into a temporary file instead (memory-mapped; the operating system keeps what fits in
its page cache), still decoded only once.

- A prep output (DATA/train and DATA/test holding 2S x S "A|B" PNGs: color left, gray right)
  is used as it is (`pairs.read_pair`); pairs of another size than the one asked for are
  resized (both halves, with prep's filter). With `crops` (training's random crops), training
  pairs larger than the size asked for keep their own size: crops of them lose no detail.
- A plain folder of photos is turned into pairs the way `colorize prep` would with its
  defaults: duplicates (same bytes) and grayscale photos skipped, `--fit crop`, and the same
  seeded train/test split (pairs.assign_splits on the files' sha256, PrepConfig's default
  test fraction and seed), so `prep` then `train` and `train` alone see the same split. With
  `crops`, the training photos are made at STORE_SCALE times the size asked for.
The test split always comes at the size asked for: the whole photo, as inference sees it.

`hold_out` photos of the training split (at most HOLD_OUT_SHARE of it, chosen by the hash of
their paths in the data set, so the same ones in every run and process) become a validation split, at the
size asked for like the test split: training picks its best epoch and calibrates the chroma
gain on photos it never learns from, and never looks at the test split to decide anything.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from colorize_cli.errors import UserError
from colorize_cli.files import available_memory, ensure_memory, read_reason, sha256_or_reason, usable_cpus
from colorize_cli.imageio import GRAYSCALE_REASON, ImageError, is_grayscale, list_images, open_image
from colorize_cli.pairs import (RESAMPLE, SPLITS, PrepConfig, assign_splits, is_prep_output, native_size, pair_halves,
                                read_pair)

# Where training photos come from, for the errors that find none.
PHOTOS_HINT = ("get photos with `colorize crawl KEYWORD` (then `colorize prep` them), "
               "or use any folder of your own color photos")
STORE_SCALE = 1.25  # with crops, a photo folder's photos are made this much larger than the training size
HOLD_OUT_SHARE = 0.2  # of the training split, at most, held out for validation (480 photos: 96)
# Fewer held-out photos than this judge by chance: then none. Measured at the original project's
# scale (80 training photos, 16 held out), the gain calibrated on the 16 to 0.8 of the truth's
# colourfulness gave 0.90 of it on the test photos and 1.04 on 500 others, and cost 1.3 dB.
HOLD_OUT_MIN = 32


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
    train: Pairs  # at `size`, or larger with crops
    test: Pairs  # at `size`
    size: int
    source: str  # "prep output" or "photo folder", for the log
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    on_disk: bool = False  # decoded into a memory-mapped temporary file (larger than half the free memory)
    groups: list[int] = field(default_factory=list)  # training photos of each data set joined (`join`); []: one
    val: Pairs | None = None  # at `size`: training photos held out (`load_data`'s hold_out); None: none

    def join(self, more: list[DataSet]) -> DataSet:
        """This data set with the training photos of `more` after its own (at this one's stored
        size), and its own test split alone: the others' test photos are never trained on."""
        if not more:
            return self
        store = self.train.color.shape[-1]
        ensure_memory(sum(m.train.nbytes for m in more) + self.train.nbytes, "joining the training photos of DATA and --also")
        parts = [self.train] + [_as_pairs(m.train.color.permute(0, 2, 3, 1).numpy(), m.train.gray[:, 0].numpy(),
                                          m.train.names, store) for m in more]
        train = Pairs(torch.cat([p.color for p in parts]).contiguous(memory_format=torch.channels_last),
                      torch.cat([p.gray for p in parts]), [n for p in parts for n in p.names])
        return DataSet(train, self.test, self.size, self.source, self.skipped + [s for m in more for s in m.skipped],
                       False, [len(p) for p in parts], self.val)  # joined in RAM


def _at_size(color: Image.Image, gray: Image.Image, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A pair's halves -> (color (S, S, 3), gray (S, S)) uint8 arrays at `size`."""
    if color.height != size:
        color, gray = color.resize((size, size), RESAMPLE), gray.resize((size, size), RESAMPLE)
    return np.asarray(color), np.asarray(gray)


def _read_pair(path: Path, size: int) -> tuple[np.ndarray, np.ndarray] | str:
    """The arrays of one prep pair, or the reason it cannot be used."""
    try:
        color, gray = read_pair(path)
    except ImageError as e:
        return str(e).removeprefix(f"{path}: ")
    return _at_size(color, gray, size)


def _read_photo(path: Path, size: int, fit: str) -> tuple[np.ndarray, np.ndarray] | str:
    """A photo made into a pair as prep would make it, or the reason prep would skip it."""
    try:
        img = open_image(path)
    except ImageError as e:
        return str(e).removeprefix(f"{path}: ")
    if is_grayscale(img):
        return GRAYSCALE_REASON
    color, gray = pair_halves(img, size, fit)  # the halves of prep's pair, without making the pair
    return np.asarray(color), np.asarray(gray)


class _Slots:
    """n preallocated images: color (n, S, S, 3) and gray (n, S, S) uint8, in RAM or in a
    memory-mapped temporary file (deleted when the arrays are no longer used)."""

    def __init__(self, n: int, size: int, on_disk: bool) -> None:
        self.on_disk = on_disk
        shapes = ((n, size, size, 3), (n, size, size))
        if on_disk:
            with tempfile.TemporaryFile(prefix="colorize-data-") as f:  # the mapping outlives the file object
                f.truncate(sum(int(np.prod(shp)) for shp in shapes) or 1)
                self.color = np.memmap(f, np.uint8, "r+", 0, shapes[0])
                self.gray = np.memmap(f, np.uint8, "r+", int(np.prod(shapes[0])), shapes[1])
        else:
            self.color, self.gray = np.empty(shapes[0], np.uint8), np.empty(shapes[1], np.uint8)

    def put(self, slot: int, arrays: tuple[np.ndarray, np.ndarray]) -> None:
        self.color[slot], self.gray[slot] = arrays

    def arrange(self, order: list[int]) -> None:
        """Move image order[j] to slot j, in place (each image moves once, along the cycles of
        the permutation), so that each split is a contiguous run of slots."""
        rest = sorted(set(range(len(self.color))) - set(order))
        perm = order + rest
        done = [False] * len(perm)
        for start in range(len(perm)):
            if done[start] or perm[start] == start:
                continue
            held = (self.color[start].copy(), self.gray[start].copy())
            j = start
            while True:
                done[j] = True
                k = perm[j]
                if k == start:
                    self.color[j], self.gray[j] = held
                    break
                self.color[j], self.gray[j] = self.color[k], self.gray[k]
                j = k

    def pairs(self, start: int, stop: int, names: list[str], size: int) -> Pairs:
        """Slots start..stop as Pairs, resized (prep's filter) to `size` if they are not at it."""
        return _as_pairs(self.color[start:stop], self.gray[start:stop], names, size)


def _as_pairs(color: np.ndarray, gray: np.ndarray, names: list[str], size: int) -> Pairs:
    """(N, S, S, 3) and (N, S, S) uint8 arrays as Pairs at `size` (resized with prep's filter
    where S differs); the colour tensor is (N, 3, S, S) with channels_last strides."""
    if len(color) and color.shape[1] != size:
        color = np.stack([np.asarray(Image.fromarray(c).resize((size, size), RESAMPLE)) for c in color])
        gray = np.stack([np.asarray(Image.fromarray(g).resize((size, size), RESAMPLE)) for g in gray])
    return Pairs(torch.from_numpy(color).permute(0, 3, 1, 2), torch.from_numpy(gray)[:, None], names)


def whole_photos(pairs: Pairs, size: int, n: int) -> Pairs:
    """The first `n` photos whole, at `size` (as the test split and inference see a photo)."""
    color = pairs.color[:n].permute(0, 2, 3, 1).cpu().numpy()
    return _as_pairs(color, pairs.gray[:n, 0].cpu().numpy(), pairs.names[:n], size)


class _PrepOutput:
    """A prep output's pairs: the split is the folder each pair is in."""

    source = "prep output"

    def __init__(self, root: Path, size: int) -> None:
        jobs = [(split, p) for split in SPLITS if (root / split).is_dir() for p in list_images(root / split)]
        self.paths, self._splits, self.size = [p for _, p in jobs], [split for split, _ in jobs], size
        self.skipped: list[tuple[str, str]] = []

    def read(self, path: Path) -> tuple[np.ndarray, np.ndarray] | str:
        return _read_pair(path, self.size)

    def splits(self, kept: list[int]) -> dict[int, str]:
        """The split of each kept image (by its index in `paths`)."""
        return {k: self._splits[k] for k in kept}


class _PhotoFolder:
    """A folder of photos, paired and split as `colorize prep` would with PrepConfig's defaults:
    one photo per content (the first by name), the split drawn from the kept photos' hashes."""

    source = "photo folder"

    def __init__(self, root: Path, size: int, pool: ThreadPoolExecutor) -> None:
        self.prep, self.size = PrepConfig(), size
        self.skipped: list[tuple[str, str]] = []
        paths = list_images(root)
        owner: dict[str, Path] = {}
        for path, (sha, why) in zip(paths, pool.map(sha256_or_reason, paths)):
            if why:
                self.skipped.append((str(path), why))
            elif sha in owner:
                self.skipped.append((str(path), f"duplicate of {owner[sha]}"))
            else:
                owner[sha] = path
        self.paths, self._shas = list(owner.values()), list(owner)

    def read(self, path: Path) -> tuple[np.ndarray, np.ndarray] | str:
        return _read_photo(path, self.size, self.prep.fit)

    def splits(self, kept: list[int]) -> dict[int, str]:
        """The split of each kept image (by its index in `paths`)."""
        splits = assign_splits([self._shas[k] for k in kept], self.prep.test_fraction, self.prep.seed)
        return {k: splits[self._shas[k]] for k in kept}


def held_out(names: list[str], wanted: int) -> set[str]:
    """Which training photos (by their paths in the data set, unique) are held out for
    validation: `wanted`, at most HOLD_OUT_SHARE of them and none if that is under HOLD_OUT_MIN,
    those first by the sha256 of their paths (a fixed choice, whatever the order they were
    listed in, on any machine)."""
    n = min(wanted, int(HOLD_OUT_SHARE * len(names)))
    n = n if n >= HOLD_OUT_MIN else 0
    return set(sorted(names, key=lambda name: hashlib.sha256(name.encode()).digest())[:n])


def load_data(root: str | os.PathLike, size: int, workers: int | None = None,
              memory: int | None = None, crops: bool = False, need_test: bool = True, hold_out: int = 0) -> DataSet:
    """Decode DATA (a prep output or a photo folder, see the module docstring) into memory.
    `memory`: bytes the decoded set may take in RAM [default: half of what is free now].
    `crops`: keep the training photos larger than `size` where they are (see the docstring).
    `need_test`: refuse a data set without test photos (not for one that only adds training
    photos, `train --also`; its test photos are left out all the same).
    `hold_out`: training photos to hold out as the validation split (`held_out`)."""
    root = Path(root)
    try:
        if not stat.S_ISDIR(os.stat(root).st_mode):
            raise UserError(f"{root}: not a folder (expected a prep output or a folder of photos)")
    except FileNotFoundError:
        raise UserError(f"{root}: no such folder (expected a prep output or a folder of photos); {PHOTOS_HINT}") from None
    except OSError as e:  # a symlink loop, no permission
        raise UserError(f"{root}: {read_reason(e)}") from None
    prep = is_prep_output(root)
    store = size if not crops else max(size, native_size(root)) if prep else round(size * STORE_SCALE)
    with ThreadPoolExecutor(workers or usable_cpus()) as pool:
        found = _PrepOutput(root, store) if prep else _PhotoFolder(root, store, pool)
        limit = memory if memory is not None else available_memory() // 2
        slots = _Slots(len(found.paths), store, on_disk=len(found.paths) * store * store * 4 > limit)
        skipped, kept = list(found.skipped), []
        for slot, (path, result) in enumerate(zip(found.paths, pool.map(found.read, found.paths))):
            if isinstance(result, str):
                skipped.append((str(path), result))
            else:
                slots.put(slot, result)
                kept.append(slot)
    split_of = found.splits(kept)
    by_split = {s: [k for k in kept if split_of[k] == s] for s in SPLITS}
    keys = {k: found.paths[k].relative_to(root).as_posix() for k in by_split["train"]}
    val_keys = held_out(list(keys.values()), hold_out)
    val_slots = [k for k in by_split["train"] if keys[k] in val_keys]
    train_slots = [k for k in by_split["train"] if keys[k] not in val_keys]
    slots.arrange(train_slots + val_slots + by_split["test"])
    n_train, n_val, n_test = len(train_slots), len(val_slots), len(by_split["test"])
    train = slots.pairs(0, n_train, [found.paths[k].name for k in train_slots], store)
    val = slots.pairs(n_train, n_train + n_val, [found.paths[k].name for k in val_slots], size) if n_val else None
    test = slots.pairs(n_train + n_val, n_train + n_val + n_test, [found.paths[k].name for k in by_split["test"]], size)
    if not len(train):
        raise UserError(f"{root}: no usable training images ({found.source}); {PHOTOS_HINT}")
    if not len(test) and need_test:
        raise UserError(f"{root}: no test images, so nothing to measure progress on; "
                        f"make a split with `colorize prep --test-fraction {PrepConfig.test_fraction:g}`")
    return DataSet(train, test, size, found.source, skipped, slots.on_disk, val=val)
