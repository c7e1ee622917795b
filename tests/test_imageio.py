"""Reading photos and writing files: the helpers every command goes through."""

from __future__ import annotations

import io
import os
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from colorize_cli import files
from colorize_cli.errors import UserError
from colorize_cli.files import atomic_path, ensure_memory, exclusive_lock, path_text, write_bytes_atomic
from colorize_cli.imageio import MIN_SIDE, ImageError, open_image


def test_a_float_tiff_in_0_to_1_keeps_its_values(tmp_path: Path) -> None:
    """TIFF SampleFormat=3 photos store 0..1; read as 0..255 they came out black."""
    ramp = np.linspace(0.0, 1.0, 32 * 32, dtype=np.float32).reshape(32, 32)
    Image.fromarray(ramp, mode="F").save(tmp_path / "f.tif")
    got = np.asarray(open_image(tmp_path / "f.tif"))
    want = np.floor(ramp.astype(np.float64) * 255.0 + 0.5).astype(np.uint8)
    assert np.array_equal(got[..., 0], want) and np.array_equal(got[..., 2], want)


def test_a_float_tiff_in_0_to_255_is_not_rescaled(tmp_path: Path) -> None:
    levels = np.arange(32 * 32, dtype=np.float32).reshape(32, 32) % 256
    Image.fromarray(levels, mode="F").save(tmp_path / "f.tif")
    assert np.array_equal(np.asarray(open_image(tmp_path / "f.tif"))[..., 1], levels.astype(np.uint8))


def test_a_float_tiff_with_nan_is_refused(tmp_path: Path) -> None:
    a = np.full((32, 32), 0.5, dtype=np.float32)
    a[3, 3] = np.nan
    Image.fromarray(a, mode="F").save(tmp_path / "nan.tif")
    with pytest.raises(ImageError) as e:
        open_image(tmp_path / "nan.tif")
    assert str(e.value) == f"{tmp_path / 'nan.tif'}: cannot decode (samples that are not finite numbers (NaN or infinity))"


def _jpeg_with_corrupt_exif() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(buf, "JPEG")
    # An Exif block whose first directory promises 5 entries and holds a third of one.
    payload = b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x05\x00\x12\x01\x03\x00"
    segment = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    jpeg = buf.getvalue()
    return jpeg[:2] + segment + jpeg[2:]


def test_corrupt_exif_decodes_without_a_warning(tmp_path: Path) -> None:
    (tmp_path / "exif.jpg").write_bytes(_jpeg_with_corrupt_exif())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        img = open_image(tmp_path / "exif.jpg")
    assert img.size == (32, 32) and caught == []


@pytest.mark.parametrize("size", [(1, 1), (5000, 1), (3, 300), (MIN_SIDE - 1, 64)])
def test_degenerate_images_are_refused_by_the_one_rule(tmp_path: Path, size: tuple[int, int]) -> None:
    path = tmp_path / "tiny.png"
    Image.new("RGB", size, (10, 200, 30)).save(path)
    with pytest.raises(ImageError) as e:
        open_image(path)
    w, h = size
    assert str(e.value) == f"{path}: {w}x{h} px is too small (both sides must be at least {MIN_SIDE} px)"


def test_the_smallest_allowed_image_opens(tmp_path: Path) -> None:
    Image.new("RGB", (MIN_SIDE, 5000), (10, 200, 30)).save(tmp_path / "ok.png")
    assert open_image(tmp_path / "ok.png").size == (MIN_SIDE, 5000)


def test_path_text_escapes_bytes_that_are_not_utf8() -> None:
    name = os.fsdecode(b"beach\xff\xfe caf\xc3\xa9.jpg")
    text = path_text(Path("photos") / name)
    assert text == "photos/beach\\xff\\xfe café.jpg"
    text.encode("utf-8")  # writable to any UTF-8 file


@pytest.mark.parametrize("length", [241, 242, 250, 255])
def test_atomic_writes_work_for_names_up_to_the_file_system_limit(tmp_path: Path, length: int) -> None:
    """The temporary name adds 14 bytes; it is cut so that it never passes 255."""
    name = "é" * ((length - 4) // 2) + "x" * ((length - 4) % 2) + ".png"
    assert len(name.encode()) == length
    write_bytes_atomic(tmp_path / name, b"data")
    assert [p.name for p in tmp_path.iterdir()] == [name]
    assert (tmp_path / name).read_bytes() == b"data"


def test_atomic_path_leaves_the_old_file_when_the_write_fails(tmp_path: Path) -> None:
    target = tmp_path / "keep.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_a_held_lock_refuses_a_second_holder_and_names_the_first(tmp_path: Path) -> None:
    """flock belongs to an open file, so a second open in this same process is a second holder."""
    with exclusive_lock(tmp_path, ".job.lock", "`colorize job`"):
        with pytest.raises(UserError) as e, exclusive_lock(tmp_path, ".job.lock", "`colorize job`"):
            pass
        assert str(e.value).startswith(f"{tmp_path}: `colorize job` is already running here (process {os.getpid()}: ")
        assert str(e.value).endswith("; wait for it to end, or use another folder")
    with exclusive_lock(tmp_path, ".job.lock", "`colorize job`"):  # released: free again
        pass


def test_work_larger_than_free_memory_is_refused_before_allocating(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files, "available_memory", lambda: 3 * 2**30)
    ensure_memory(2 * 2**30, "a small job")
    with pytest.raises(UserError) as e:
        ensure_memory(40.5 * 2**30, "training at width 100000")
    assert str(e.value) == "training at width 100000 needs about 40.5 GiB of memory; this machine has 3.0 GiB free"


def test_available_memory_is_a_plausible_amount() -> None:
    assert 2**24 < files.available_memory() < 2**50
