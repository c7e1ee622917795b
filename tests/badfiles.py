"""The bad-input corpus for the reliability tests: files a user (or the web) may hand any command.

`make_corpus(folder)` writes every case of CASES into a folder and returns {case id: path}.
Each case is either broken (no command can use it: zero bytes, truncated, text or HTML named
.jpg, decompression-bomb dimensions) or merely odd (a valid photo in an unusual form: 16-bit,
CMYK, palette with transparency, animated, EXIF-rotated, an awkward name, extreme shapes).

Every valid photo here is 64 x 32 once upright, twice as wide as high, so it is at the same
time a photo (prep, train, infer, crawl) and an A|B pair (evaluate --model, survey). The two
EXIF-rotated files are stored 32 x 64: a command that ignored the orientation tag would see
a shape that is not a pair, so the pair commands notice a missing rotation too.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

W, H = 64, 32  # every valid photo, upright


def photo(seed: int, size: tuple[int, int] = (W, H)) -> Image.Image:
    """A smooth, strongly coloured stand-in for a photo (never judged grayscale); different
    seeds give unrelated pictures (no near-duplicates for crawl)."""
    rng = np.random.default_rng(seed)
    grid = Image.fromarray((rng.random((4, 6, 3)) * 255).astype(np.uint8))
    return grid.resize(size, Image.Resampling.BICUBIC)


def encode(img: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png16(rgb16: np.ndarray) -> bytes:
    """A 16-bit-per-channel PNG (colour when (H, W, 3), gray when (H, W)); Pillow cannot
    write 16-bit colour, so it is built chunk by chunk."""
    h, w = rgb16.shape[:2]
    colour_type = 2 if rgb16.ndim == 3 else 0
    raw = b"".join(b"\x00" + rgb16[y].astype(">u2").tobytes() for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b"")


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (no pixel data follows)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IEND", b"")


def exif_rotated(orientation: int, seed: int) -> bytes:
    """A JPEG stored H x W (portrait) whose EXIF orientation (6 or 8) makes it W x H upright."""
    upright = photo(seed)
    # Store the pixels so that applying the tag gives `upright` back.
    stored = upright.transpose(Image.Transpose.ROTATE_90 if orientation == 6 else Image.Transpose.ROTATE_270)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(stored, "JPEG", quality=95, exif=exif.tobytes())


def cmyk_jpeg(seed: int) -> bytes:
    return encode(photo(seed).convert("CMYK"), "JPEG", quality=95)


def palette_with_transparency(seed: int) -> bytes:
    img = photo(seed).quantize(16)
    return encode(img, "PNG", transparency=0)


def animated_gif(seed: int) -> bytes:
    frames = [photo(seed + k).quantize(64) for k in range(3)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def truncated(data: bytes, keep: float = 0.6) -> bytes:
    return data[: int(len(data) * keep)]


def rgb16(seed: int) -> bytes:
    a = np.asarray(photo(seed), dtype=np.uint16) * 257
    return png16(a)


def gray16(seed: int) -> bytes:
    a = np.asarray(photo(seed).convert("L"), dtype=np.uint16) * 257
    return png16(a)


def strip(width: int, height: int, seed: int) -> bytes:
    """A colourful image of any shape (1x1, 10000x10)."""
    rng = np.random.default_rng(seed)
    a = np.zeros((height, width, 3), np.uint8)
    a[...] = (rng.integers(0, 256, 3) // 2 + np.array([128, 0, 0])).astype(np.uint8)
    a[..., 1] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    return encode(Image.fromarray(a), "PNG")


@dataclass(frozen=True)
class Case:
    """One corpus file: its name and bytes, and what commands should make of it.

    `broken`: no command can use it; the reason any command gives must match `reason`
    (a regular expression, searched case-insensitively in the line naming the file).
    Otherwise the file is a usable photo, unless a command's own rule says otherwise (see
    the tests' per-command tables: a 1x1 image is too small to colorize, for instance).
    """

    name: str
    make: Callable[[], bytes]
    broken: bool = False
    reason: str = ""


GOOD = 4  # plain good photos in every corpus, so every batch has output

CASES: dict[str, Case] = {
    "zero-byte": Case("zero-byte.jpg", lambda: b"", True, r"not an image|empty|unrecognised|not-decodable"),
    "truncated-jpeg": Case("truncated-jpeg.jpg", lambda: truncated(encode(photo(11), "JPEG", quality=95)), True,
                           r"truncated|cannot decode|not-decodable"),
    "truncated-png": Case("truncated-png.png", lambda: truncated(encode(photo(12), "PNG")), True,
                          r"truncated|cannot decode|not-decodable"),
    "text-as-jpg": Case("notes.jpg", lambda: b"shopping list: milk, eggs\n" * 20, True, r"not an image|not-decodable"),
    "html-as-jpg": Case("page.jpg", lambda: b"<!DOCTYPE html><html><body><p>Not found</p></body></html>\n", True,
                        r"not an image|not-decodable"),
    "bomb-dimensions": Case("bomb.png", lambda: png_claiming(40_000, 40_000), True,
                            r"decompression.bomb|too-many-pixels"),
    "1x1": Case("one-pixel.png", lambda: strip(1, 1, 13)),
    "10000x10": Case("strip-10000x10.png", lambda: strip(10_000, 10, 14)),
    "16-bit-rgb-png": Case("deep-rgb16.png", lambda: rgb16(15)),
    "16-bit-gray-png": Case("deep-gray16.png", lambda: gray16(16)),
    "cmyk-jpeg": Case("cmyk.jpg", lambda: cmyk_jpeg(17)),
    "palette-transparency": Case("palette-alpha.png", lambda: palette_with_transparency(18)),
    "animated-gif": Case("animated.gif", lambda: animated_gif(19)),
    "exif-orientation-6": Case("exif-6.jpg", lambda: exif_rotated(6, 22)),
    "exif-orientation-8": Case("exif-8.jpg", lambda: exif_rotated(8, 23)),
    "name-with-spaces": Case("my holiday photo.jpg", lambda: encode(photo(24), "JPEG", quality=95)),
    "name-unicode": Case("plage-été-海滩.jpg", lambda: encode(photo(25), "JPEG", quality=95)),
    "name-leading-dash": Case("-rf.jpg", lambda: encode(photo(26), "JPEG", quality=95)),
}

BROKEN = tuple(k for k, c in CASES.items() if c.broken)
ODD = tuple(k for k, c in CASES.items() if not c.broken)


def good_names() -> list[str]:
    return [f"good-{i}.{'png' if i % 2 else 'jpg'}" for i in range(1, GOOD + 1)]


def good_photo(i: int) -> Image.Image:
    return photo(100 + i)


def make_corpus(folder: Path, *, good: bool = True) -> dict[str, Path]:
    """Write every case (and, with `good`, GOOD plain photos named good-N) into `folder`;
    returns {case id: path} (good photos under their file names)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for key, case in CASES.items():
        paths[key] = folder / case.name
        paths[key].write_bytes(case.make())
    if good:
        for i, name in enumerate(good_names(), 1):
            paths[name] = folder / name
            fmt = "PNG" if name.endswith(".png") else "JPEG"
            paths[name].write_bytes(encode(good_photo(i), fmt, **({"quality": 95} if fmt == "JPEG" else {})))
    return paths


def symlink_loop(folder: Path, name: str = "loop.jpg") -> Path:
    """A symbolic link that points at itself (opening it fails with ELOOP)."""
    link = folder / name
    link.symlink_to(name)
    return link
