"""Reading any photo a user may have into clean 8-bit RGB, and writing files atomically.

Every stage reads images through `open_image` so that EXIF rotation, CMYK, palettes,
transparency, 16-bit data and decompression bombs are handled once, the same way, with an
`ImageError` whose message says what is wrong with which file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from colorize_cli.errors import UserError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})

# Hasler-Suesstrunk colorfulness (0-255 scale) below which a photo counts as grayscale.
# Their scale calls 0 "not colourful" and 15 "slightly colourful". Measured here: a
# black-and-white photo saved as an RGB JPEG scores 0.0; the dullest of the 600 shared beach
# photos 10.2 and of the 152 landscapes 8.7. A strongly toned (sepia) print scores like a
# colour photo and is not caught by this measure.
GRAYSCALE_COLORFULNESS = 8.0

# One rule for degenerate images in every command: a photo whose short side is under this holds
# too little scene for a colour guess (1x1 icons, 5000x1 strips), and blown up into a pair it is
# one smeared pixel row.
MIN_SIDE = 16

# Longest file name (bytes) most file systems allow (ext4, XFS, btrfs, APFS, NTFS in UTF-16 units).
NAME_MAX = 255


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
    Pillow's decompression-bomb limit, zero size.
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
        raise ImageError(f"{name}: cannot read ({e.strerror or e})") from None  # a symlink loop, an I/O error
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


def colorfulness(rgb: np.ndarray) -> float:
    """Hasler and Suesstrunk (2003) colorfulness of an RGB array, on the 0-255 scale."""
    a = rgb.astype(np.float64)
    if a.max() <= 1.0 and rgb.dtype != np.uint8:
        a = a * 255.0
    rg = a[..., 0] - a[..., 1]
    yb = 0.5 * (a[..., 0] + a[..., 1]) - a[..., 2]
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def is_grayscale(img: Image.Image) -> bool:
    """True for black-and-white or nearly so (see GRAYSCALE_COLORFULNESS); judged on a thumbnail."""
    thumb = img.copy()
    thumb.thumbnail((128, 128))
    return colorfulness(np.asarray(thumb.convert("RGB"))) < GRAYSCALE_COLORFULNESS


def path_text(path: str | os.PathLike) -> str:
    """A path as text that any UTF-8 file (CSV, JSON, HTML) can hold: bytes of a file name that
    are not valid UTF-8 (os.fsdecode keeps them as lone surrogates) appear as \\xNN escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def available_memory() -> int:
    """Bytes of RAM a new allocation can get without swapping (Linux: MemAvailable), or the
    physical memory where that is not known."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def ensure_memory(needed: float, what: str) -> None:
    """Refuse, before allocating, work whose estimated memory exceeds what the machine has free:
    a clear message instead of the OOM killer or a raw allocator error."""
    free = available_memory()
    if needed > free:
        raise UserError(f"{what} needs about {needed / 2**30:.1f} GiB of memory; "
                        f"this machine has {free / 2**30:.1f} GiB free")


@contextlib.contextmanager
def exclusive_lock(folder: Path, name: str, what: str) -> Iterator[None]:
    """Hold FOLDER/NAME exclusively while `what` runs, or refuse at once, saying which process has it.

    An flock dies with its process, so a crash never leaves a stale lock; the holder's PID and
    command line are written into the file so that the refusal can name them.
    """
    lock = folder / name
    try:
        f = open(lock, "a+", encoding="utf-8")
    except OSError as e:
        raise UserError(f"{folder}: cannot write here ({e.strerror or e})") from None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = " ".join(f.read().split())[:200] or "another process"
            raise UserError(f"{folder}: {what} is already running here ({holder}); "
                            f"wait for it to end, or use another folder") from None
        f.seek(0)
        f.truncate()
        f.write(f"process {os.getpid()}: {path_text(' '.join(sys.argv))}\n")
        f.flush()
        yield


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class WriteError(UserError):
    """An output that cannot be written (read-only folder, disk full, ...): the message names
    the file and the reason. Not an OSError on purpose: a batch skips the one file, except when
    `stops_everything` says every later write would fail the same way."""

    def __init__(self, message: str, errno_: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno_

    @property
    def stops_everything(self) -> bool:
        """A full disk or a read-only file system: going on would fail the same way on every file."""
        return self.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def write_error(path: str | os.PathLike, e: OSError) -> WriteError:
    """The one wording of a failed write; a full disk says so in plain words."""
    reason = e.strerror or str(e)
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        reason = f"disk full: {reason}"
    return WriteError(f"{path}: cannot write ({reason})", e.errno)


def sha256_or_reason(path: str | os.PathLike) -> tuple[str, str]:
    """(sha256, "") or ("", why the file cannot be read): batch jobs skip it with that reason."""
    try:
        return sha256_file(path), ""
    except OSError as e:
        return "", f"cannot read ({e.strerror or e})"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it is renamed over `path`.

    A crash, Ctrl-C or full disk leaves the old file (or nothing) in place, never half a file.
    Any OSError on the way (making the folder, writing, renaming) becomes a WriteError naming
    `path`, after the temporary file is removed.
    """
    path = Path(path)
    # mkstemp adds 8 random characters and ".tmp" to ".NAME."; the name is cut so that the
    # whole temporary name stays within NAME_MAX bytes, even when NAME itself nearly fills it.
    stem = os.fsdecode(os.fsencode(path.name)[:NAME_MAX - 14])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise write_error(path, e) from None
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp makes the file owner-only (0600); give it the permissions a normal write would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise write_error(path, e) from None
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


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
