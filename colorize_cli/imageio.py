"""Reading any photo a user may have into clean 8-bit RGB, and saving images; with them the
rules every command applies to a photo: which files are images (`list_images`), which are too
small (`check_dimensions`) and which are grayscale (`is_grayscale`).

Every stage reads images through `open_image` so that EXIF rotation, CMYK, palettes,
transparency, 16-bit data and decompression bombs are handled once, the same way, with an
`ImageError` whose message says what is wrong with which file. `save_image` writes through
`files.write_bytes_atomic`.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from colorize_cli.errors import UserError
from colorize_cli.files import read_reason, write_bytes_atomic
from colorize_cli.metrics import colorfulness

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})

# Hasler-Suesstrunk colorfulness (0-255 scale) below which a photo counts as grayscale.
# Their scale calls 0 "not colourful" and 15 "slightly colourful". Measured here: a
# black-and-white photo saved as an RGB JPEG scores 0.0; the dullest of the 600 shared beach
# photos 10.2 and of the 152 landscapes 8.7. A strongly toned (sepia) print scores like a
# colour photo and is not caught by this measure.
GRAYSCALE_COLORFULNESS = 8.0
# Why prep, and train on a photo folder, skip such a photo (the same words in both).
GRAYSCALE_REASON = f"grayscale (colorfulness below {GRAYSCALE_COLORFULNESS:g})"

# One rule for degenerate images in every command: a photo whose short side is under this holds
# too little scene for a colour guess (1x1 icons, 5000x1 strips), and blown up into a pair it is
# one smeared pixel row.
MIN_SIDE = 16


class ImageError(UserError):
    """A file that cannot be used as a photo; the message names the file and the reason."""


def _flatten(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB: alpha composited on white, 16-bit and float scaled to 8-bit."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        if not np.isfinite(a).all():
            raise ValueError("samples that are not finite numbers (NaN or infinity)")
        top = _full_scale(img.mode, float(a.max(initial=0.0)))
        return Image.fromarray(np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV, RGBX ...


def _full_scale(mode: str, peak: float) -> float:
    """The sample value that means white. Floating-point photos (mode "F") are stored in 0..1 by
    convention (TIFF SampleFormat=3, scientific cameras); integer ones in 0..255 or 0..65535."""
    if mode.startswith("I;16") or peak > 255:
        return 65535.0
    if mode == "F" and peak <= 1.0:
        return 1.0
    return 255.0


def open_image(source: str | os.PathLike | bytes) -> Image.Image:
    """Fully decode an image file (or its bytes) into an upright 8-bit RGB image.

    Raises ImageError for anything unusable: not an image, truncated data, dimensions past
    Pillow's decompression-bomb limit, a side under MIN_SIDE px (`check_dimensions`).
    """
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # "Corrupt EXIF data" and friends: the pixels are fine, and the warning would print
            # two lines with a site-packages path in the middle of a command's output.
            warnings.simplefilter("ignore", UserWarning)
            with Image.open(stream) as img:
                img.seek(0)  # first frame of an animation
                img.load()  # decode everything now: truncation shows up here, not later
                img = ImageOps.exif_transpose(img) or img
                rgb = _flatten(img)
    except FileNotFoundError:
        raise ImageError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{name}: is a directory, not an image") from None
    except PermissionError:
        raise ImageError(f"{name}: permission denied") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{name}: dimensions past the decompression-bomb limit ({e})") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image (unrecognised data)") from None
    except OSError as e:  # after UnidentifiedImageError, which is one
        if e.errno is None:  # Pillow's decoders raise errno-less OSErrors for bad data
            raise ImageError(f"{name}: cannot decode ({e})") from None
        raise ImageError(f"{name}: {read_reason(e)}") from None  # a symlink loop, an I/O error
    except (SyntaxError, ValueError, EOFError) as e:
        raise ImageError(f"{name}: cannot decode ({e})") from None
    check_dimensions(name, rgb.width, rgb.height)
    return rgb


def check_dimensions(name: str, width: int, height: int) -> None:
    """The one rule for degenerate images (see MIN_SIDE), raised as an ImageError naming `name`."""
    if min(width, height) < MIN_SIDE:
        raise ImageError(f"{name}: {width}x{height} px is too small (both sides must be at least {MIN_SIDE} px)")


def to_gray(img: Image.Image) -> Image.Image:
    """ITU-R BT.601 luma, exactly what Pillow's mode "L" computes."""
    return img.convert("L")


def is_grayscale(img: Image.Image) -> bool:
    """True for black-and-white or nearly so (see GRAYSCALE_COLORFULNESS); judged on a thumbnail."""
    thumb = img.copy()
    thumb.thumbnail((128, 128))
    return colorfulness(np.asarray(thumb.convert("RGB"))) < GRAYSCALE_COLORFULNESS


def save_image(img: Image.Image, path: str | os.PathLike, format: str | None = None, **params) -> None:
    """Save atomically; the format follows the suffix unless given."""
    path = Path(path)
    fmt = format or Image.registered_extensions().get(path.suffix.lower(), "PNG")
    if fmt == "JPEG" and img.mode not in ("RGB", "L"):
        img = img.convert("RGB")
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    write_bytes_atomic(path, buf.getvalue())


def list_images(root: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Image files under a folder (by suffix, hidden files skipped), sorted; a file is itself.

    A link with an image suffix that leads nowhere (broken, or a loop) is listed too, so that
    the command reading it names it with the reason instead of passing over it in silence.
    """
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        if root.is_symlink():
            raise UserError(f"{root}: a symbolic link that leads nowhere (broken, or a loop)")
        raise UserError(f"{root}: no such file or folder")
    pattern = "**/*" if recursive else "*"
    return sorted(
        p for p in root.glob(pattern)
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
        and (p.is_file() or (p.is_symlink() and not p.exists()))
    )
