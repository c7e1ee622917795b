"""`colorize infer` and the Colorizer API: full-size output with the input's exact luminance,
EXIF orientation, folder mirroring, formats, no overwriting, bad files skipped, run folders."""

from __future__ import annotations

import errno
import io
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from clirun import run_cli
from colorize_cli import files
from colorize_cli.errors import UserError
from colorize_cli.imageio import MIN_SIDE
from colorize_cli.canvas import Geometry
from colorize_cli.bundled import BUNDLED, DEFAULT, WEIGHTS
from colorize_cli.colorizer import Colorizer, Prepared, resolve_model
from colorize_cli.infer import InferConfig
from colorize_cli.checkpoint import save_checkpoint
from colorize_cli.model import ModelConfig, build

CFG = ModelConfig(size=32, width=8)  # depth 4: canvases are multiples of 16 px


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A colour test image: smooth gradients (so resizing is meaningful) plus noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x / max(width - 1, 1), y / max(height - 1, 1), (x + y) / max(width + height - 2, 1)], -1)
    rgb = np.clip(base * 200 + rng.integers(0, 56, (height, width, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(rgb, "RGB")


def luma(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("L"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `colorize train`-style run folder with a tiny generator as best.safetensors."""
    torch.manual_seed(0)
    g, _ = build(CFG)
    with torch.no_grad():  # non-trivial BN statistics, so folding has something to fold
        for m in g.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    run = tmp_path_factory.mktemp("run")
    save_checkpoint(run / "best.safetensors", {"generator." + k: v for k, v in g.state_dict().items()}, CFG,
                    extra={"epoch": 1})
    return run


@pytest.fixture(scope="module")
def tiny(run_dir: Path) -> Colorizer:
    return Colorizer.load(run_dir)


def cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    return run_cli(capsys, *args)


@pytest.mark.parametrize("name", [None, "general", "beach"])
def test_bundled_models_keep_the_inputs_luminance_exactly(name: str | None) -> None:
    img = photo(61, 45)
    colorizer = Colorizer.load(name)
    assert colorizer.source == str(WEIGHTS / f"{name or DEFAULT.name}.safetensors") and DEFAULT.name == "general"
    assert colorizer.cfg.hints and colorizer.cfg.local_hints == (name != "beach")  # beach: from before the reach
    out = colorizer.colorize(img)
    assert out.mode == "RGB" and out.size == img.size
    assert np.array_equal(luma(out), luma(img))


def test_a_bundled_models_name_wins_over_a_folder_of_that_name(tmp_path: Path, run_dir: Path, monkeypatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """`--model beach` is the bundled beach model even where ./beach is a run folder, which
    ./beach names; `colorize models` lists every bundled model with what it was trained on."""
    shutil.copytree(run_dir, tmp_path / "beach")
    monkeypatch.chdir(tmp_path)
    assert resolve_model("beach") == WEIGHTS / "beach.safetensors"
    assert resolve_model("./beach") == Path("beach") / "best.safetensors"
    assert resolve_model(None) == WEIGHTS / "general.safetensors"
    code, out, err = cli(capsys, "models")
    assert code == 0, err
    text = " ".join(out.split())
    for b in BUNDLED:
        assert f"{b.name}{' (default)' if b is DEFAULT else ''}: {b.path}" in text
        assert f"trained on: {' '.join(b.trained_on.split())}" in text and b.script in text
        assert (Path(__file__).parents[1] / b.script).is_file()
    with pytest.raises(UserError, match="nosuch"):  # neither a name nor a file
        Colorizer.load("nosuch")
    photo(40, 30).save(tmp_path / "p.png")  # on the command line too: ./beach is the folder
    code, _, err = cli(capsys, "infer", "p.png", "o.png", "--model", "./beach", "--device", "cpu")
    assert code == 0, err
    assert np.array_equal(np.asarray(Image.open("o.png")), np.asarray(Colorizer.load(run_dir).colorize(photo(40, 30))))


def test_a_missing_bundled_model_is_one_line(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr("colorize_cli.bundled.WEIGHTS", tmp_path)
    with pytest.raises(UserError, match=re.escape(f"the bundled beach model {tmp_path / 'beach.safetensors'} is "
                                                  "missing; reinstall colorize-gan")):
        Colorizer.load("beach")


@pytest.mark.parametrize("size", [(16, 16), (17, 16), (16, 97), (300, 17), (33, 33), (4000, 300)])
def test_output_has_the_inputs_size_and_gray(tiny: Colorizer, size: tuple[int, int]) -> None:
    img = photo(*size)
    out = tiny.colorize(img)
    assert out.size == size
    assert np.array_equal(luma(out), luma(img))


def test_gray_and_rgba_inputs_work_too(tiny: Colorizer) -> None:
    gray = photo(40, 30).convert("L")
    out = tiny.colorize(gray)
    assert out.mode == "RGB" and np.array_equal(luma(out), np.asarray(gray))
    assert tiny.colorize(photo(40, 30).convert("RGBA")).size == (40, 30)


def test_too_small_photos_are_refused_clearly(tiny: Colorizer) -> None:
    with pytest.raises(UserError, match=re.escape(f"17x5 px is too small (both sides must be at least {MIN_SIDE} px)")):
        tiny.colorize(photo(17, 5))


def test_working_canvas_keeps_aspect_and_pads_to_the_unet_step() -> None:
    assert Geometry.fit(4000, 300, 256, 128) == Geometry(h=19, w=256, top=54, left=0, ph=128, pw=256)
    assert Geometry.fit(640, 480, 256, 128) == Geometry(h=192, w=256, top=32, left=0, ph=256, pw=256)
    assert Geometry.fit(16, 16, 256, 128) == Geometry(h=256, w=256, top=0, left=0, ph=256, pw=256)


def test_batches_give_the_same_result_as_one_by_one(tiny: Colorizer) -> None:
    imgs = [photo(50, 40, 1), photo(64, 20, 2), photo(40, 50, 3), photo(48, 38, 4), photo(20, 64, 5)]
    batch = Colorizer(tiny.net, tiny.cfg, tiny.device, batch_size=2).colorize_batch(imgs)
    for img, got in zip(imgs, batch):
        alone = np.asarray(tiny.colorize(img), dtype=int)
        assert got.size == img.size
        assert np.abs(np.asarray(got, dtype=int) - alone).max() <= 1  # float rounding only


def test_float16_checkpoint_loads_as_float32(run_dir: Path, tmp_path: Path) -> None:
    from colorize_cli.checkpoint import load_checkpoint

    tensors, cfg, extra = load_checkpoint(run_dir / "best.safetensors")
    half = tmp_path / "half.safetensors"
    save_checkpoint(half, {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}, cfg, extra)
    c = Colorizer.load(half)
    assert all(p.dtype == torch.float32 for p in c.net.parameters())
    img = photo(30, 20)
    assert np.array_equal(luma(c.colorize(img)), luma(img))


def test_working_size_below_the_models_step_is_an_error(run_dir: Path) -> None:
    with pytest.raises(UserError, match="working size 8 is below this model's minimum of 16 px"):
        Colorizer.load(run_dir, size=8)


# --- the command -----------------------------------------------------------------------


def test_exif_rotated_photo_comes_out_upright(capsys: pytest.CaptureFixture[str], run_dir: Path,
                                              tmp_path: Path) -> None:
    src = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display rotated 90 degrees clockwise
    photo(48, 24).save(src, exif=exif.tobytes(), quality=95)
    code, _, err = cli(capsys, "infer", src, tmp_path / "out", "--model", run_dir, "--device", "cpu")
    assert code == 0, err
    out = Image.open(tmp_path / "out" / "rotated.png")
    upright = ImageOps.exif_transpose(Image.open(src))
    assert out.size == upright.size == (24, 48)
    assert np.array_equal(luma(out), luma(upright))


def test_folder_is_mirrored_as_png_with_recursive(capsys: pytest.CaptureFixture[str], run_dir: Path,
                                                  tmp_path: Path) -> None:
    src = tmp_path / "in"
    (src / "sub" / "deeper").mkdir(parents=True)
    photo(40, 30).save(src / "a.png")
    photo(30, 40).save(src / "sub" / "b.jpg")
    photo(20, 20).save(src / "sub" / "deeper" / "c.webp")
    code, _, err = cli(capsys, "infer", src, tmp_path / "flat", "--model", run_dir)
    assert code == 0, err
    assert sorted(p.relative_to(tmp_path / "flat").as_posix() for p in (tmp_path / "flat").rglob("*.png")) == ["a.png"]
    code, _, err = cli(capsys, "infer", src, tmp_path / "out", "--model", run_dir, "--recursive")
    assert code == 0, err
    assert "colorized 3 of 3 photos" in err
    out = tmp_path / "out"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "a.png", "sub/b.png", "sub/deeper/c.png"]
    for name, size in (("a.png", (40, 30)), ("sub/b.png", (30, 40)), ("sub/deeper/c.png", (20, 20))):
        with Image.open(out / name) as img:
            assert img.format == "PNG" and img.size == size


def test_format_keep_keeps_each_inputs_format(capsys: pytest.CaptureFixture[str], run_dir: Path,
                                              tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    photo(40, 30).save(src / "a.jpg")
    photo(40, 30).save(src / "b.webp")
    photo(40, 30).save(src / "c.tif")
    code, _, err = cli(capsys, "infer", src, tmp_path / "out", "--model", run_dir, "--format", "keep")
    assert code == 0, err
    formats = {p.name: Image.open(p).format for p in (tmp_path / "out").iterdir()}
    assert formats == {"a.jpg": "JPEG", "b.webp": "WEBP", "c.tif": "TIFF"}


def test_nothing_is_overwritten_without_overwrite(capsys: pytest.CaptureFixture[str], run_dir: Path,
                                                  tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    photo(40, 30).save(src / "a.png")
    photo(40, 30, 1).save(src / "b.png")
    (out / "a.png").write_bytes(b"the user's own file")
    code, _, err = cli(capsys, "infer", src, out, "--model", run_dir)
    assert code == 1
    assert f"{out / 'a.png'} exists; not overwritten (use --overwrite to replace it)" in err
    assert (out / "a.png").read_bytes() == b"the user's own file"
    assert (out / "b.png").is_file()  # the rest is still done
    code, _, err = cli(capsys, "infer", src, out, "--model", run_dir, "--overwrite")
    assert code == 0, err
    assert Image.open(out / "a.png").size == (40, 30)


def test_output_never_replaces_an_input(capsys: pytest.CaptureFixture[str], run_dir: Path, tmp_path: Path) -> None:
    photo(40, 30).save(tmp_path / "a.jpg")
    photo(40, 30, 1).save(tmp_path / "a.png")
    before = (tmp_path / "a.png").read_bytes()
    code, _, err = cli(capsys, "infer", tmp_path, tmp_path, "--model", run_dir, "--overwrite")
    assert code == 1
    assert f"{tmp_path / 'a.jpg'}: its output {tmp_path / 'a.png'} would replace another input photo" in err
    assert f"{tmp_path / 'a.png'}: its output {tmp_path / 'a.png'} would replace the input itself" in err
    assert (tmp_path / "a.png").read_bytes() == before


def test_same_name_in_two_formats_is_not_written_twice(capsys: pytest.CaptureFixture[str], run_dir: Path,
                                                       tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    photo(40, 30).save(src / "a.jpg")
    photo(40, 30).save(src / "a.png")
    code, _, err = cli(capsys, "infer", src, tmp_path / "out", "--model", run_dir)
    assert code == 1
    assert "is already written for" in err and "use --format keep" in err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a.png"]


def test_bad_files_are_skipped_with_a_reason_and_the_rest_finish(capsys: pytest.CaptureFixture[str], run_dir: Path,
                                                                  tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    photo(40, 30).save(src / "good1.png")
    photo(30, 40).save(src / "good2.jpg")
    (src / "notes.png").write_text("not an image")
    buf = io.BytesIO()
    photo(64, 64).save(buf, format="JPEG")
    (src / "cut.jpg").write_bytes(buf.getvalue()[:300])
    photo(17, 5).save(src / "tiny.png")
    code, _, err = cli(capsys, "infer", src, tmp_path / "out", "--model", run_dir)
    assert code == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good1.png", "good2.png"]
    assert f"{src / 'notes.png'}: not an image" in err
    assert f"{src / 'cut.jpg'}: cannot decode" in err
    assert f"{src / 'tiny.png'}: 17x5 px is too small" in err
    assert "colorized 2 of 5 photos" in err


def test_a_folder_of_photos_that_all_fail_to_read_leaves_no_output_folder(
        capsys: pytest.CaptureFixture[str], run_dir: Path, tmp_path: Path) -> None:
    """OUT is made when the first photo is ready for the network, not before."""
    src = tmp_path / "in"
    src.mkdir()
    (src / "notes.png").write_text("not an image")
    photo(17, 5).save(src / "tiny.png")
    code, _, err = cli(capsys, "infer", src, tmp_path / "out", "--model", run_dir)
    assert code == 1 and "colorized 0 of 2 photos" in err
    assert not (tmp_path / "out").exists()


def test_side_by_side_layout(capsys: pytest.CaptureFixture[str], run_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    color = photo(40, 30)
    color.save(src / "color.png")
    color.convert("L").save(src / "gray.png")
    code, _, err = cli(capsys, "infer", src, tmp_path / "plain", "--model", run_dir)
    assert code == 0, err
    code, _, err = cli(capsys, "infer", src, tmp_path / "sbs", "--model", run_dir, "--side-by-side")
    assert code == 0, err
    sbs = np.asarray(Image.open(tmp_path / "sbs" / "color.png"))
    assert sbs.shape == (30, 120, 3)  # gray | colorized | original
    gray = luma(color)
    assert np.array_equal(sbs[:, :40], np.repeat(gray[..., None], 3, axis=2))
    assert np.array_equal(sbs[:, 40:80], np.asarray(Image.open(tmp_path / "plain" / "color.png")))
    assert np.array_equal(sbs[:, 80:], np.asarray(color))
    assert Image.open(tmp_path / "sbs" / "gray.png").size == (80, 30)  # no original for a gray input


def test_single_file_to_named_output(capsys: pytest.CaptureFixture[str], run_dir: Path, tmp_path: Path) -> None:
    photo(40, 30).save(tmp_path / "a.png")
    code, _, err = cli(capsys, "infer", tmp_path / "a.png", tmp_path / "result.jpg", "--model", run_dir)
    assert code == 0, err
    with Image.open(tmp_path / "result.jpg") as img:
        assert img.format == "JPEG" and img.size == (40, 30)


def test_model_option_takes_a_run_folder_or_a_file(capsys: pytest.CaptureFixture[str], run_dir: Path,
                                                   tmp_path: Path) -> None:
    photo(40, 30).save(tmp_path / "a.png")
    code, _, err = cli(capsys, "infer", tmp_path / "a.png", tmp_path / "o1", "--model", run_dir / "best.safetensors")
    assert code == 0, err
    empty = tmp_path / "empty-run"
    empty.mkdir()
    code, _, err = cli(capsys, "infer", tmp_path / "a.png", tmp_path / "o2", "--model", empty)
    assert code == 1
    assert f"{empty}: folder has no best.safetensors" in err
    assert not (tmp_path / "o2").exists()


def test_empty_folder_hints_at_recursive(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "in" / "sub").mkdir(parents=True)
    photo(20, 20).save(tmp_path / "in" / "sub" / "a.png")
    code, _, err = cli(capsys, "infer", tmp_path / "in", tmp_path / "out")
    assert code == 1
    assert "no images found" in err and "add --recursive" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_unavailable_device_is_a_clear_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    photo(20, 20).save(tmp_path / "a.png")
    code, _, err = cli(capsys, "infer", tmp_path / "a.png", tmp_path / "out", "--device", "cuda")
    assert code == 1
    assert "--device cuda: torch sees no CUDA GPU" in err


def test_output_folder_inside_input_is_not_read_back(capsys: pytest.CaptureFixture[str], run_dir: Path,
                                                     tmp_path: Path) -> None:
    photo(40, 30).save(tmp_path / "a.jpg")
    for _ in range(2):
        code, _, err = cli(capsys, "infer", tmp_path, tmp_path / "out", "--model", run_dir, "-r", "--overwrite")
        assert code == 0, err
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png")) == ["out/a.png"]


def test_checkpoint_whose_header_length_starts_with_0x80_loads(run_dir: Path, tmp_path: Path) -> None:
    """safetensors begins with its header's length; byte 0x80 there is not a pickle."""
    from colorize_cli.checkpoint import load_checkpoint

    tensors, cfg, _ = load_checkpoint(run_dir / "best.safetensors")
    path = tmp_path / "x.safetensors"
    for n in range(256):  # the header grows 8 bytes at a time as the note grows
        save_checkpoint(path, tensors, cfg, extra={"note": "x" * n})
        if path.read_bytes()[0] == 0x80:
            break
    assert path.read_bytes()[0] == 0x80
    img = photo(30, 20)
    assert np.array_equal(luma(Colorizer.load(path).colorize(img)), luma(img))


def test_a_folder_where_an_output_should_go_skips_only_that_photo(capsys: pytest.CaptureFixture[str],
                                                                   run_dir: Path, tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    photo(40, 30).save(src / "a.png")
    photo(30, 40, 1).save(src / "b.png")
    (out / "a.png").mkdir(parents=True)  # a folder where the output file should go
    code, _, err = cli(capsys, "infer", src, out, "--model", run_dir, "--overwrite", "--batch-size", "1")
    assert code == 1
    assert f"skipped {out / 'a.png'}: cannot write (Is a directory)" in err
    assert "error:" not in err
    assert "colorized 1 of 2 photos" in err
    assert (out / "a.png").is_dir()
    assert Image.open(out / "b.png").size == (30, 40)  # the rest is still done
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]  # no temporary file left behind


def test_an_output_name_of_250_bytes_is_written(capsys: pytest.CaptureFixture[str], run_dir: Path,
                                                tmp_path: Path) -> None:
    """Its temporary name must still fit the file system's 255 bytes."""
    name = "p" * 246 + ".png"
    src = tmp_path / "in"
    src.mkdir()
    photo(40, 30).save(src / name)
    photo(30, 40, 1).save(src / "short.png")
    code, _, err = cli(capsys, "infer", src, tmp_path / "out", "--model", run_dir)
    assert code == 0, err
    assert Image.open(tmp_path / "out" / name).size == (40, 30)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [name, "short.png"]


def test_an_output_folder_that_cannot_be_made_is_one_error_for_the_run(
        capsys: pytest.CaptureFixture[str], run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not the same skip repeated for every photo (as a user other than root meets in a read-only folder)."""
    src, out = tmp_path / "in", tmp_path / "locked" / "out"
    src.mkdir()
    for i in range(3):
        photo(40, 30, i).save(src / f"{i}.png")
    real_mkdir = Path.mkdir

    def denied(self: Path, *args: object, **kwargs: object) -> None:
        if self.is_relative_to(tmp_path / "locked"):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", denied)
    code, _, err = cli(capsys, "infer", src, out, "--model", run_dir)
    assert code == 1
    assert [line for line in err.splitlines() if line.startswith(("error:", "skipped"))] == [
        f"error: {out}: cannot write (Permission denied)"]


def test_a_full_disk_stops_the_batch_at_the_first_failed_write(capsys: pytest.CaptureFixture[str], run_dir: Path,
                                                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unlike a bad output name, a full disk would fail the same way for every later photo."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(3):
        photo(40, 30, i).save(src / f"{i}.png")
    writes: list[Path] = []

    def no_space(path: Path, data: bytes) -> None:
        writes.append(path)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_bytes", no_space)
    code, _, err = cli(capsys, "infer", src, out, "--model", run_dir, "--batch-size", "1")
    assert code == 1
    assert len(writes) == 1
    assert f"error: {out / '0.png'}: cannot write (disk full: No space left on device)" in err
    assert list(out.iterdir()) == []


def test_a_working_size_too_large_for_memory_is_refused_before_any_work(capsys: pytest.CaptureFixture[str],
                                                                        run_dir: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files, "available_memory", lambda: 8 * 2**30)
    photo(40, 30).save(tmp_path / "a.png")
    code, _, err = cli(capsys, "infer", tmp_path / "a.png", tmp_path / "out", "--model", run_dir, "--size", "100000",
                       "--device", "cpu")
    assert code == 1
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert re.fullmatch(r"error: working size 100000 px at batch size 8 needs about \d+\.\d GiB of memory; "
                        r"this machine has 8\.0 GiB free", lines[0]), err
    assert not (tmp_path / "out").exists()


def test_the_memory_estimate_grows_with_the_canvas_and_the_batch(run_dir: Path) -> None:
    """What the check compares: linear in the batch, about linear in the canvas's pixels."""
    from colorize_cli.canvas import activation_bytes

    one = activation_bytes(CFG, 256, 1)
    assert activation_bytes(CFG, 256, 8) == 8 * one
    assert 3.9 * one < activation_bytes(CFG, 512, 1) < 4.1 * one
    assert activation_bytes(CFG, 250, 1) == one  # rounded up to the U-Net's step (16 px) like every canvas


def test_a_nan_checkpoint_is_one_error_line_naming_the_file(capsys: pytest.CaptureFixture[str], run_dir: Path,
                                                            tmp_path: Path) -> None:
    from colorize_cli.checkpoint import load_checkpoint

    tensors, cfg, extra = load_checkpoint(run_dir / "best.safetensors")
    key = next(k for k in sorted(tensors) if k.endswith("weight"))
    tensors[key] = tensors[key].clone()
    tensors[key].view(-1)[0] = float("nan")
    bad = tmp_path / "nan.safetensors"
    save_checkpoint(bad, tensors, cfg, extra)
    photo(40, 30).save(tmp_path / "a.png")
    code, _, err = cli(capsys, "infer", tmp_path / "a.png", tmp_path / "out", "--model", bad)
    assert code == 1
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}: checkpoint holds NaN or infinite weights"), err
    assert not (tmp_path / "out").exists()


def test_a_non_finite_network_output_fails_that_photo_instead_of_writing_gray(
        capsys: pytest.CaptureFixture[str], run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "in"
    src.mkdir()
    photo(64, 16).save(src / "wide.png")  # a 32 x 16 canvas
    photo(32, 32, 1).save(src / "square.png")  # a 32 x 32 one: another network pass
    real = Colorizer.predict

    def overflowing(self: Colorizer, items: list[Prepared]) -> torch.Tensor:
        out = real(self, items).clone()  # an ordinary tensor, not an inference one
        if items[0].work.shape == (16, 32):
            out[0, 0, 3, 5] = float("nan")
        return out

    monkeypatch.setattr(Colorizer, "predict", overflowing)
    code, _, err = cli(capsys, "infer", src, tmp_path / "out", "--model", run_dir)
    assert code == 1
    assert (f"skipped {src / 'wide.png'}: the network's output is not finite (NaN or infinity); "
            "its checkpoint may be damaged") in " ".join(err.split())
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["square.png"]


def test_skip_existing_finishes_an_interrupted_batch(capsys: pytest.CaptureFixture[str], run_dir: Path,
                                                     tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(3):
        photo(40, 30, i).save(src / f"{i}.png")
    out.mkdir()
    (out / "0.png").write_bytes(b"written before the interruption")
    code, _, err = cli(capsys, "infer", src, out, "--model", run_dir, "--skip-existing")
    assert code == 0, err
    assert "colorized 2 of 3 photos" in err and "1 already done (--skip-existing)" in err
    assert (out / "0.png").read_bytes() == b"written before the interruption"  # not recomputed
    assert sorted(p.name for p in out.iterdir()) == ["0.png", "1.png", "2.png"]
    code, _, err = cli(capsys, "infer", src, out, "--model", run_dir, "--skip-existing")
    assert code == 0, err
    assert "colorized 0 of 3 photos" in err and "3 already done (--skip-existing)" in err


def test_skip_existing_still_refuses_a_folder_in_an_outputs_place(capsys: pytest.CaptureFixture[str],
                                                                  run_dir: Path, tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    photo(40, 30).save(src / "a.png")
    (out / "a.png").mkdir(parents=True)
    code, _, err = cli(capsys, "infer", src, out, "--model", run_dir, "--skip-existing")
    assert code == 1
    assert f"{out / 'a.png'} exists; not overwritten" in err


def test_overwrite_and_skip_existing_together_is_a_usage_error(capsys: pytest.CaptureFixture[str], run_dir: Path,
                                                               tmp_path: Path) -> None:
    photo(40, 30).save(tmp_path / "a.png")
    code, _, err = cli(capsys, "infer", tmp_path / "a.png", tmp_path / "out", "--model", run_dir, "--overwrite",
                       "--skip-existing")
    assert code == 2
    assert "--overwrite and --skip-existing exclude each other" in " ".join(err.replace("│", " ").split())
    assert not (tmp_path / "out").exists()
    with pytest.raises(UserError, match="--overwrite and --skip-existing exclude each other"):
        InferConfig(overwrite=True, skip_existing=True)  # the same rule for the Python API


@pytest.mark.parametrize("columns", ["80", "100"])
@pytest.mark.parametrize("command", ["infer", "evaluate", "demo"])
def test_help_has_no_line_holding_a_lone_word(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                              command: str, columns: str) -> None:
    monkeypatch.setenv("COLUMNS", columns)
    code, out, _ = cli(capsys, command, "--help")
    assert code == 0
    words = [line.strip("│ ").split() for line in out.splitlines() if not line.startswith(("╭", "╰"))]
    lone = [w[0] for w in words if len(w) == 1 and not re.fullmatch(r"\[(required|default: \S+)\]", w[0])]
    assert lone == [], out


@pytest.mark.parametrize("command, metavars", [
    ("infer", ["IN", "OUT", "MODEL"]),
    ("evaluate", ["TARGET", "TRUTH", "MODEL", "FILE"]),
    ("demo", ["OUT", "MODEL"]),
])
def test_help_names_arguments_in_capitals(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                          command: str, metavars: list[str]) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    code, out, _ = cli(capsys, command, "--help")
    assert code == 0
    shown = re.findall(r"\b[A-Z][A-Z_]+\b", out)
    assert all(m in shown for m in metavars), out
    assert not [line for line in out.splitlines() if line.startswith("│ --") and "<path>" in line], out
