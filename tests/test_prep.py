"""`colorize prep` and the split/fit helpers that training reuses."""

from __future__ import annotations

import csv
import hashlib
import os
import re
import struct
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from colorize_cli.cli import main
from colorize_cli.errors import UserError
from colorize_cli.files import path_text
from colorize_cli.imageio import MIN_SIDE, open_image
from colorize_cli.pairs import assign_splits, fit_image, make_pair, n_test_for
from colorize_cli.prep import STAGING

BEACH = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "beach-photos"
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


# --- helpers -----------------------------------------------------------------------------


def noise(w: int, h: int, seed: int) -> Image.Image:
    """A colorful random photo (never judged grayscale); different seeds never collide."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def bands(w: int, h: int, colors: list[tuple[int, int, int]], vertical: bool) -> Image.Image:
    """Equal bands of solid colors, left to right (vertical=True) or top to bottom."""
    a = np.zeros((h, w, 3), np.uint8)
    n = len(colors)
    for i, c in enumerate(colors):
        if vertical:
            a[:, i * w // n:(i + 1) * w // n] = c
        else:
            a[i * h // n:(i + 1) * h // n, :] = c
    return Image.fromarray(a)


def write_png16(path: Path, rgb16: np.ndarray) -> None:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one), built chunk by chunk."""
    h, w, _ = rgb16.shape
    raw = b"".join(b"\x00" + rgb16[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def run(capsys, *args: str) -> tuple[int, str, str]:
    """Run the CLI in-process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def read_rows(dest: Path) -> dict[str, dict[str, str]]:
    """prep.csv keyed by the source's file name."""
    with open(dest / "prep.csv", newline="") as f:
        return {Path(r["source"]).name: r for r in csv.DictReader(f)}


def splits_of(dest: Path) -> dict[str, str]:
    return {name: r["split"] for name, r in read_rows(dest).items() if r["status"] == "kept"}


def halves(path: Path) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(Image.open(path).convert("RGB"))
    s = a.shape[0]
    assert a.shape == (s, 2 * s, 3)
    return a[:, :s], a[:, s:]


def make_photos(folder: Path, n: int, start: int = 0, size: int = MIN_SIDE) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        noise(size, size, i).save(folder / f"p{i:03d}.png")


# --- fit_image / make_pair -----------------------------------------------------------------


def test_make_pair_layout_a_is_fit_image_and_b_is_pillow_luma():
    img = noise(50, 30, 1)
    for fit in ("crop", "pad", "stretch"):
        pair = make_pair(img, 16, fit)
        assert pair.mode == "RGB" and pair.size == (32, 16)
        a = pair.crop((0, 0, 16, 16))
        b = np.asarray(pair.crop((16, 0, 32, 16)))
        assert np.array_equal(np.asarray(a), np.asarray(fit_image(img, 16, fit)))
        luma = np.asarray(a.convert("L"))
        for ch in range(3):
            assert np.array_equal(b[..., ch], luma)


def test_crop_keeps_the_centre_square_of_a_wide_and_a_tall_photo():
    wide = fit_image(bands(300, 100, [RED, GREEN, BLUE], vertical=True), 64, "crop")
    tall = fit_image(bands(100, 300, [RED, GREEN, BLUE], vertical=False), 64, "crop")
    for img in (wide, tall):
        assert img.size == (64, 64)
        assert (np.asarray(img) == GREEN).all()


def test_pad_letterboxes_the_whole_photo_on_black():
    a = np.asarray(fit_image(bands(300, 100, [RED, GREEN, BLUE], vertical=True), 64, "pad"))
    # 300x100 -> 64x21, centred: rows 21..41 hold the photo, the rest is black bars.
    assert (a[:21] == 0).all() and (a[42:] == 0).all()
    content = a[21:42]
    assert tuple(content[10, 3]) == RED and tuple(content[10, 32]) == GREEN and tuple(content[10, 60]) == BLUE
    assert (content.reshape(-1, 3).max(axis=1) > 0).all()  # no bar inside the photo
    tall = np.asarray(fit_image(bands(100, 300, [RED, GREEN, BLUE], vertical=False), 64, "pad"))
    assert (tall[:, :21] == 0).all() and (tall[:, 42:] == 0).all()
    assert tuple(tall[3, 32]) == RED and tuple(tall[60, 32]) == BLUE


def test_stretch_keeps_everything_and_distorts():
    a = np.asarray(fit_image(bands(300, 100, [RED, GREEN, BLUE], vertical=True), 64, "stretch"))
    assert a.shape == (64, 64, 3)
    assert (a == a[0]).all()  # every row the same: only the width was squeezed
    assert tuple(a[0, 5]) == RED and tuple(a[0, 32]) == GREEN and tuple(a[0, 58]) == BLUE


def test_fit_image_converts_other_modes_and_rejects_unknown_fit():
    assert fit_image(Image.new("L", (10, 20), 7), 8, "crop").getpixel((0, 0)) == (7, 7, 7)
    with pytest.raises(UserError, match="unknown fit 'squash'"):
        fit_image(noise(8, 8, 0), 8, "squash")


# --- assign_splits -------------------------------------------------------------------------


def test_split_is_exact():
    for n, frac in [(125, 0.2), (600, 0.2), (7, 0.5), (10, 0.0), (10, 1.0), (1, 0.2)]:
        s = assign_splits([f"k{i}" for i in range(n)], frac, seed=0)
        assert len(s) == n
        assert Counter(s.values())["test"] == n_test_for(n, frac)
    assert Counter(assign_splits([f"k{i}" for i in range(125)], 0.2, 0).values()) == {"train": 100, "test": 25}


def test_rounding_is_half_up_on_the_fraction_as_typed():
    assert n_test_for(125, 0.2) == 25
    assert n_test_for(25, 0.1) == 3  # 2.5 -> 3 (float 0.1 * 25 and round() would give 2)
    assert n_test_for(35, 0.1) == 4
    assert n_test_for(3, 0.2) == 1  # 0.6


def test_split_depends_on_seed_and_keys_only():
    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(50)]
    first = assign_splits(keys, 0.2, seed=3)
    assert assign_splits(list(reversed(keys)), 0.2, seed=3) == first
    assert assign_splits(keys + keys[:5], 0.2, seed=3) == first  # repeated keys count once
    assert assign_splits(keys, 0.2, seed=4) != first


def test_adding_keys_never_moves_old_ones_and_keeps_the_total_exact():
    old = assign_splits([f"k{i}" for i in range(100)], 0.2, seed=0)
    assert Counter(old.values())["test"] == 20
    new = assign_splits([f"k{i}" for i in range(125)], 0.2, seed=0, existing=old)
    assert all(new[k] == side for k, side in old.items())
    assert Counter(new.values()) == {"train": 100, "test": 25}
    # More test photos already than the fraction asks for: every new one goes to train.
    heavy = {f"k{i}": "test" if i < 30 else "train" for i in range(100)}
    more = assign_splits([f"k{i}" for i in range(110)], 0.2, seed=0, existing=heavy)
    assert [more[f"k{i}"] for i in range(100, 110)] == ["train"] * 10


def test_bad_fraction_is_refused():
    with pytest.raises(UserError, match="between 0 and 1"):
        assign_splits(["a"], 1.5, 0)


# --- the command ---------------------------------------------------------------------------


def test_prep_125_photos_gives_exactly_100_train_25_test(tmp_path, capsys):
    make_photos(tmp_path / "src", 125)
    code, out, err = run(capsys, "prep", tmp_path / "src", tmp_path / "ds", "--size", "8", "--workers", "2")
    assert code == 0, err
    assert len(list((tmp_path / "ds/train").glob("*.png"))) == 100
    assert len(list((tmp_path / "ds/test").glob("*.png"))) == 25
    rows = read_rows(tmp_path / "ds")
    assert len(rows) == 125 and {r["status"] for r in rows.values()} == {"kept"}
    r = rows["p007.png"]
    assert r["output"] == f"{r['split']}/p007.png" and r["width"] == "16" and r["height"] == "16"
    assert r["sha256"] == hashlib.sha256((tmp_path / "src/p007.png").read_bytes()).hexdigest()
    assert "pairs written" in out and "100" in out and "25" in out
    # The pair is exactly make_pair of the source.
    a, b = halves(tmp_path / "ds" / r["output"])
    assert np.array_equal(np.hstack([a, b]), np.asarray(make_pair(open_image(tmp_path / "src/p007.png"), 8, "crop")))


def test_split_is_deterministic_for_a_seed(tmp_path, capsys):
    make_photos(tmp_path / "src", 20)
    for dest, seed in [("a", "0"), ("b", "0"), ("c", "1")]:
        assert run(capsys, "prep", tmp_path / "src", tmp_path / dest, "--size", "8", "--seed", seed)[0] == 0
    assert splits_of(tmp_path / "a") == splits_of(tmp_path / "b")
    assert splits_of(tmp_path / "a") != splits_of(tmp_path / "c")
    assert Counter(splits_of(tmp_path / "c").values()) == {"train": 16, "test": 4}


def test_adding_photos_later_keeps_every_old_assignment(tmp_path, capsys):
    make_photos(tmp_path / "src", 100)
    assert run(capsys, "prep", tmp_path / "src", tmp_path / "ds", "--size", "8")[0] == 0
    before = splits_of(tmp_path / "ds")
    assert Counter(before.values()) == {"train": 80, "test": 20}
    make_photos(tmp_path / "src", 25, start=100)
    code, out, err = run(capsys, "prep", tmp_path / "src", tmp_path / "ds", "--size", "8")
    assert code == 0
    assert "100 photos already prepared" in err
    after = splits_of(tmp_path / "ds")
    assert {k: after[k] for k in before} == before
    assert Counter(after.values()) == {"train": 100, "test": 25}
    for name, side in after.items():
        assert (tmp_path / "ds" / side / name).is_file()


def test_rerun_skips_finished_work_and_force_redoes_it(tmp_path, capsys):
    make_photos(tmp_path / "src", 5)
    assert run(capsys, "prep", tmp_path / "src", tmp_path / "ds", "--size", "8")[0] == 0
    outputs = sorted((tmp_path / "ds").glob("t*/*.png"))
    stat = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in outputs}
    split = splits_of(tmp_path / "ds")

    code, out, err = run(capsys, "prep", tmp_path / "src", tmp_path / "ds", "--size", "8")
    assert code == 0 and "5 photos already prepared" in err
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in outputs} == stat

    code, out, err = run(capsys, "prep", tmp_path / "src", tmp_path / "ds", "--size", "8", "--force")
    assert code == 0 and "already prepared" not in err
    assert sorted((tmp_path / "ds").glob("t*/*.png")) == outputs
    assert all(p.stat().st_ino != stat[p][0] for p in outputs)  # rewritten (atomically: new file)
    assert splits_of(tmp_path / "ds") == split  # --force keeps the split
    assert not (tmp_path / "ds" / STAGING).exists()


def test_other_settings_on_an_existing_data_set_need_force(tmp_path, capsys):
    make_photos(tmp_path / "src", 3)
    assert run(capsys, "prep", tmp_path / "src", tmp_path / "ds", "--size", "8")[0] == 0
    code, out, err = run(capsys, "prep", tmp_path / "src", tmp_path / "ds", "--size", "16", "--fit", "pad")
    assert code == 1 and "made with --size 8 --fit crop" in err
    assert run(capsys, "prep", tmp_path / "src", tmp_path / "ds", "--size", "16", "--fit", "pad", "--force")[0] == 0
    assert {Image.open(p).size for p in (tmp_path / "ds").glob("t*/*.png")} == {(32, 16)}


def test_every_format_and_mode_is_read(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    # EXIF orientation 6 (display rotated 90 degrees clockwise): stored red left / blue right,
    # so upright it is 32 wide, 48 high, red on top, blue below.
    exif = Image.Exif()
    exif[0x0112] = 6
    bands(48, 32, [RED, BLUE], vertical=True).save(src / "rotated.jpg", quality=95, exif=exif.tobytes())
    Image.new("CMYK", (40, 30), (0, 255, 255, 0)).save(src / "cmyk.jpg", quality=95)
    noise(40, 30, 2).quantize(64).save(src / "palette.png")
    rgba = np.zeros((30, 40, 4), np.uint8)
    rgba[:, :20] = (200, 30, 30, 255)  # left half opaque red, right half fully transparent
    Image.fromarray(rgba).save(src / "alpha.png")
    la = Image.merge("LA", [Image.new("L", (40, 30), 0), Image.new("L", (40, 30), 255)])
    la.save(src / "la_black.png")  # opaque black gray+alpha: decodes, then is grayscale
    write_png16(src / "deep.png", np.full((30, 40, 3), (0xCC33, 0x1100, 0x22FF), np.uint16))
    frames = [Image.new("RGB", (40, 30), c) for c in (RED, BLUE)]
    frames[0].save(src / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    noise(40, 30, 3).save(src / "lossless.webp", lossless=True)
    noise(40, 30, 4).save(src / "plain.bmp")
    noise(40, 30, 5).save(src / "plain.tiff")

    code, out, err = run(capsys, "prep", src, tmp_path / "ds", "--size", "16", "--fit", "stretch",
                         "--test-fraction", "0")
    assert code == 0, err
    rows = read_rows(tmp_path / "ds")
    assert rows["la_black.png"]["status"].startswith("grayscale")
    kept = {n: r for n, r in rows.items() if r["status"] == "kept"}
    assert len(kept) == 9

    def a_of(name: str) -> np.ndarray:
        return halves(tmp_path / "ds" / kept[name]["output"])[0].astype(int)

    up = a_of("rotated.jpg")
    assert (kept["rotated.jpg"]["width"], kept["rotated.jpg"]["height"]) == ("32", "48")
    assert up[2, 8, 0] > 200 and up[2, 8, 2] < 60  # top is red
    assert up[13, 8, 2] > 200 and up[13, 8, 0] < 60  # bottom is blue
    cmyk = a_of("cmyk.jpg")
    assert (cmyk[..., 0] > 230).all() and (cmyk[..., 1:] < 30).all()
    alpha = a_of("alpha.png")
    assert alpha[8, 2].tolist() == [200, 30, 30] and alpha[8, 13].tolist() == [255, 255, 255]
    assert (a_of("deep.png") == (0xCC, 0x11, 0x22)).all()
    assert (a_of("anim.gif") == RED).all()  # first frame only
    for name in ("palette.png", "lossless.webp", "plain.bmp", "plain.tiff"):
        expected = np.asarray(fit_image(open_image(src / name), 16, "stretch"))
        assert np.array_equal(a_of(name), expected), name


def test_bad_grayscale_and_duplicate_files_are_skipped_with_the_reason(tmp_path, capsys):
    src = tmp_path / "src"
    make_photos(src, 3)
    good = (src / "p000.png").read_bytes()
    (src / "copy.png").write_bytes(good)
    buf = tmp_path / "full.jpg"
    noise(64, 64, 9).save(buf, quality=90)
    (src / "truncated.jpg").write_bytes(buf.read_bytes()[:600])
    (src / "page.jpg").write_text("<html><body>Not found</body></html>")
    Image.fromarray(np.asarray(noise(40, 40, 8).convert("L"))).convert("RGB").save(src / "bw.jpg")
    (src / "notes.txt").write_text("not a photo suffix: never read")

    code, out, err = run(capsys, "prep", src, tmp_path / "ds", "--size", "8")
    assert code == 0
    rows = read_rows(tmp_path / "ds")
    assert "notes.txt" not in rows
    expected = {
        "truncated.jpg": "cannot decode",
        "page.jpg": "not an image (unrecognised data)",
        "bw.jpg": "grayscale (colorfulness below 8)",
        "p000.png": f"duplicate of {src / 'copy.png'}",
    }
    for name, reason in expected.items():
        assert rows[name]["status"].startswith(reason), rows[name]
        assert rows[name]["output"] == "" and rows[name]["split"] == ""
        assert f"skipped {src / name}: {reason}" in err
    assert rows["copy.png"]["status"] == "kept"
    assert sum(r["status"] == "kept" for r in rows.values()) == 3
    assert "skipped: grayscale" in out and "skipped: duplicate" in out


def test_no_usable_photo_is_an_error(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    (tmp_path / "src/a.jpg").write_bytes(b"nope")
    code, out, err = run(capsys, "prep", tmp_path / "src", tmp_path / "ds")
    assert code == 1 and "no usable photos" in err
    code, out, err = run(capsys, "prep", tmp_path / "empty-or-missing", tmp_path / "ds")
    assert code == 1 and "no such file or folder" in err


def test_names_are_unique_and_foreign_files_are_never_overwritten(tmp_path, capsys):
    src, dest = tmp_path / "src", tmp_path / "ds"
    src.mkdir()
    noise(16, 16, 1).save(src / "a.jpg", quality=95)
    noise(16, 16, 2).save(src / "a.png")
    noise(16, 16, 3).save(src / "b c!.png")
    noise(16, 16, 4).save(src / "mine.png")
    (dest / "train").mkdir(parents=True)
    (dest / "test").mkdir()
    (dest / "train/mine.png").write_bytes(b"the user's own file")
    (dest / "test/notes.txt").write_text("also the user's")

    for extra in ([], ["--force"]):
        assert run(capsys, "prep", src, dest, "--size", "8", *extra)[0] == 0
        assert (dest / "train/mine.png").read_bytes() == b"the user's own file"
        assert (dest / "test/notes.txt").read_text() == "also the user's"
    rows = read_rows(dest)
    names = {n: r["output"].split("/")[1] for n, r in rows.items()}
    assert names == {"a.jpg": "a.png", "a.png": "a_png.png", "b c!.png": "b_c.png", "mine.png": "mine_png.png"}
    for r in rows.values():
        assert (dest / r["output"]).is_file()


def test_a_foreign_prep_csv_is_refused_and_left_alone(tmp_path, capsys):
    make_photos(tmp_path / "src", 2)
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds/prep.csv").write_text("name,score\nx,1\n")
    code, out, err = run(capsys, "prep", tmp_path / "src", tmp_path / "ds")
    assert code == 1 and "not a prep.csv written by colorize prep" in err
    assert (tmp_path / "ds/prep.csv").read_text() == "name,score\nx,1\n"


def test_recursive_reads_subfolders_but_never_dest(tmp_path, capsys):
    src = tmp_path / "src"
    make_photos(src, 1)
    make_photos(src / "sub", 1, start=1)
    (src / "sub/p001.png").rename(src / "sub/p000.png")  # same name, other folder, other photo
    assert run(capsys, "prep", src, tmp_path / "flat", "--size", "8")[0] == 0
    assert len(read_rows(tmp_path / "flat")) == 1
    for _ in range(2):  # the second run must not read the pairs written inside SRC
        assert run(capsys, "prep", src, src / "ds", "--size", "8", "-r")[0] == 0
    with open(src / "ds/prep.csv", newline="") as f:
        outputs = sorted(r["output"].split("/")[1] for r in csv.DictReader(f))
    assert outputs == ["p000.png", "sub__p000.png"]


def test_an_interrupted_run_is_picked_up_from_its_staged_pairs(tmp_path, capsys):
    make_photos(tmp_path / "src", 1)
    sha = hashlib.sha256((tmp_path / "src/p000.png").read_bytes()).hexdigest()
    staging = tmp_path / "ds" / STAGING
    staging.mkdir(parents=True)
    left_over = Image.new("RGB", (16, 8), (255, 0, 255))  # what the killed run had made
    left_over.save(staging / f"{sha}-8-crop-16x16.png")
    assert run(capsys, "prep", tmp_path / "src", tmp_path / "ds", "--size", "8")[0] == 0
    out = read_rows(tmp_path / "ds")["p000.png"]["output"]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "ds" / out)), np.asarray(left_over))
    assert not staging.exists()


@pytest.mark.skipif(not BEACH.is_dir(), reason="shared beach photos not present")
def test_beach_photos_subset(tmp_path, capsys):
    src = tmp_path / "beach"
    src.mkdir()
    for p in sorted(BEACH.glob("*.jpg"))[:20]:
        (src / p.name).symlink_to(p.resolve())
    code, out, err = run(capsys, "prep", src, tmp_path / "ds", "--size", "64")
    assert code == 0, err
    rows = read_rows(tmp_path / "ds")
    assert len(rows) == 20 and all(r["status"] == "kept" and r["width"] == "512" for r in rows.values())
    assert Counter(r["split"] for r in rows.values()) == {"train": 16, "test": 4}
    for r in rows.values():
        a, b = halves(tmp_path / "ds" / r["output"])
        assert a.shape == (64, 64, 3)
        assert (b == b[..., :1]).all()
        assert np.array_equal(b[..., 0], np.asarray(Image.fromarray(a).convert("L")))


def test_force_removes_its_own_pair_of_a_photo_now_judged_unusable(tmp_path, capsys, monkeypatch):
    make_photos(tmp_path / "src", 2)
    assert run(capsys, "prep", tmp_path / "src", tmp_path / "ds", "--size", "8")[0] == 0
    old = tmp_path / "ds" / read_rows(tmp_path / "ds")["p000.png"]["output"]
    assert old.is_file()
    # As if the grayscale threshold had changed between versions.
    p000 = np.asarray(noise(16, 16, 0))
    monkeypatch.setattr("colorize_cli.prep.is_grayscale", lambda img: np.array_equal(np.asarray(img), p000))
    assert run(capsys, "prep", tmp_path / "src", tmp_path / "ds", "--size", "8", "--force")[0] == 0
    rows = read_rows(tmp_path / "ds")
    assert rows["p000.png"]["status"].startswith("grayscale") and not old.exists()
    assert rows["p001.png"]["status"] == "kept"


def test_a_file_name_that_is_not_utf8_is_recorded_escaped_and_reruns_work(tmp_path, capsys):
    src, dest = tmp_path / "src", tmp_path / "ds"
    make_photos(src, 1)
    odd = src / os.fsdecode(b"beach\xff.png")  # Latin-1 "beach\xff" from an old camera or zip
    noise(16, 16, 7).save(odd)
    code, out, err = run(capsys, "prep", src, dest, "--size", "8")
    assert code == 0, err
    text = (dest / "prep.csv").read_bytes().decode("utf-8")  # valid UTF-8 throughout
    assert path_text(odd) in text and str(src / "beach\\xff.png") in text
    rows = read_rows(dest)
    assert rows["beach\\xff.png"]["status"] == "kept" and rows["p000.png"]["status"] == "kept"
    pairs = sorted((dest / r["output"]) for r in rows.values())
    stat = {p: p.stat().st_ino for p in pairs}
    code, out, err = run(capsys, "prep", src, dest, "--size", "8")
    assert code == 0, err
    assert "2 photos already prepared" in err
    assert {p: p.stat().st_ino for p in pairs} == stat  # recognised as the same photo, not redone
    assert read_rows(dest) == rows


def test_degenerate_images_are_skipped_with_the_reason(tmp_path, capsys):
    src, dest = tmp_path / "src", tmp_path / "ds"
    make_photos(src, 1)
    for w, h in ((1, 1), (5000, 1), (3, 300)):
        noise(w, h, w).save(src / f"strip_{w}x{h}.png")
    code, out, err = run(capsys, "prep", src, dest, "--size", "8")
    assert code == 0, err
    rows = read_rows(dest)
    for w, h in ((1, 1), (5000, 1), (3, 300)):
        reason = f"{w}x{h} px is too small (both sides must be at least {MIN_SIDE} px)"
        assert rows[f"strip_{w}x{h}.png"]["status"] == reason
        assert rows[f"strip_{w}x{h}.png"]["output"] == ""
        assert f"skipped {src / f'strip_{w}x{h}.png'}: {reason}" in err
    assert re.search(r"skipped: too small\W+3\b", out), out
    assert sorted(p.name for p in (dest / "train").iterdir()) + sorted(p.name for p in (dest / "test").iterdir()) \
        == ["p000.png"]


def test_a_size_past_what_later_stages_read_is_refused_before_anything_is_made(tmp_path, capsys):
    make_photos(tmp_path / "src", 1)
    code, out, err = run(capsys, "prep", tmp_path / "src", tmp_path / "ds", "--size", "100000")
    assert code == 1
    assert err.strip() == ("error: --size 100000 makes pairs of 200000x100000 px, past the decompression-bomb "
                           "limit of 89478485 px that train and survey read pairs under; the largest --size is 6688")
    assert not (tmp_path / "ds").exists()


def test_a_size_that_needs_more_memory_than_is_free_is_refused(tmp_path, capsys, monkeypatch):
    make_photos(tmp_path / "src", 3)
    # 24 bytes per pixel of a half (PAIR_BYTES_PER_PIXEL): 24 * 5000^2 * 2 workers = 1.1 GiB.
    monkeypatch.setattr("colorize_cli.files.available_memory", lambda: 2**30)
    code, out, err = run(capsys, "prep", tmp_path / "src", tmp_path / "ds", "--size", "5000", "--workers", "2")
    assert code == 1
    assert err.strip().endswith("error: prep --size 5000 with 2 workers needs about 1.1 GiB of memory; "
                                "this machine has 1.0 GiB free")
    assert not (tmp_path / "ds").exists()
    code, out, err = run(capsys, "prep", tmp_path / "src", tmp_path / "ds", "--size", "64", "--workers", "2")
    assert code == 0, err


def test_dest_that_is_src_is_refused_and_src_inside_dest_works(tmp_path, capsys):
    make_photos(tmp_path / "photos", 2)
    code, out, err = run(capsys, "prep", tmp_path / "photos", tmp_path / "photos" / ".", "--size", "8")
    assert code == 1
    assert err.strip() == (f"error: {tmp_path / 'photos'}: DEST is the SRC folder itself; the data set needs a "
                           "folder of its own (a new one, or one inside SRC)")
    assert sorted(p.name for p in (tmp_path / "photos").iterdir()) == ["p000.png", "p001.png"]
    # The photos kept inside the data set's folder: only prep's own train/ and test/ are left out.
    make_photos(tmp_path / "ds" / "raw", 2)
    for _ in range(2):
        code, out, err = run(capsys, "prep", tmp_path / "ds" / "raw", tmp_path / "ds", "--size", "8", "-r")
        assert code == 0, err
    assert sorted(read_rows(tmp_path / "ds")) == ["p000.png", "p001.png"]
