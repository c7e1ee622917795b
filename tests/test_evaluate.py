"""`colorize evaluate PRED --truth TRUTH` and `colorize evaluate DATA/test --model M`: numbers
on synthetic images where they are known exactly, the gray baseline, skips, CSV and JSON."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clirun import run_cli
from colorize_cli.imageio import to_gray
from colorize_cli.metrics import score
from colorize_cli.checkpoint import save_checkpoint
from colorize_cli.model import ModelConfig, build
from colorize_cli.pairs import fit_image

BEACH = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "beach-photos"

# A constant truth (102, 51, 0) and predictions offset by +51 or +102 levels in every channel:
# 51/255 = 0.2 exactly, so MAE 0.2, MSE 0.04, PSNR 10 log10(1/0.04) = 13.979 dB (and 0.4,
# 0.16, 7.959 dB).
TRUTH_RGB = (102, 51, 0)
# Pillow's L of the truth: (19595*102 + 38470*51 + 7471*0 + 32768) >> 16 = 3993428 >> 16 = 60,
# so the gray baseline is (60, 60, 60): |diff| = 42, 9, 60 levels.
GRAY_MAE = (42 + 9 + 60) / (3 * 255)
GRAY_MSE = (42**2 + 9**2 + 60**2) / (3 * 255**2)
# Hasler-Suesstrunk of a constant: 0.3 * hypot(R - G, (R + G) / 2 - B); same for the truth and
# the +51 prediction: rg = 51, yb = 76.5.
CF = 0.3 * math.hypot(51, 76.5)


def ssim_constant(p: tuple[int, ...], t: tuple[int, ...]) -> float:
    """SSIM of two constant images: no variance, so only the luminance term remains,
    (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1) with C1 = (0.01 * 1)^2, averaged over channels."""
    c1 = 1e-4
    return float(np.mean([(2 * a * b / 255**2 + c1) / ((a / 255) ** 2 + (b / 255) ** 2 + c1) for a, b in zip(p, t)]))


def cli(args: list[str], capsys) -> tuple[int, str, str]:
    return run_cli(capsys, *args)


def solid(path: Path, rgb: tuple[int, int, int], size: tuple[int, int] = (32, 32)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(path)


def offset(rgb: tuple[int, int, int], d: int) -> tuple[int, int, int]:
    return tuple(c + d for c in rgb)  # type: ignore[return-value]


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """Three predictions: identical (`same`), +51 (`off1`) and +102 levels (`off2`)."""
    pred, truth = tmp_path / "pred", tmp_path / "truth"
    for name, d in (("same", 0), ("off1", 51), ("off2", 102)):
        solid(truth / f"{name}.png", TRUTH_RGB)
        solid(pred / f"{name}.png", offset(TRUTH_RGB, d))
    return pred, truth


def test_constant_offset_exact_and_gray_baseline(tmp_path, capsys):
    solid(tmp_path / "truth" / "x.png", TRUTH_RGB)
    solid(tmp_path / "pred" / "x.png", offset(TRUTH_RGB, 51))
    code, out, err = cli(["evaluate", str(tmp_path / "pred"), "--truth", str(tmp_path / "truth"), "--json"], capsys)
    assert code == 0, err
    r = json.loads(out)
    m, g = r["model"]["mean"], r["gray"]["mean"]
    assert (r["kind"], r["images"], r["fitted"], r["skipped"]) == ("folders", 1, 0, [])
    assert m["mae"] == pytest.approx(0.2, abs=1e-12)
    assert m["mse"] == pytest.approx(0.04, abs=1e-12)
    assert m["psnr"] == pytest.approx(10 * math.log10(25), abs=1e-9)
    assert m["ssim"] == pytest.approx(ssim_constant(offset(TRUTH_RGB, 51), TRUTH_RGB), abs=1e-9)
    assert m["colorfulness"] == pytest.approx(CF) and m["colorfulness_truth"] == pytest.approx(CF)
    assert m["colorfulness_ratio"] == pytest.approx(1.0)
    assert m["ciede2000"] > 2.3  # a visible difference (its exact value is scikit-image's business)
    # The gray baseline: (60, 60, 60) against the truth.
    assert g["mae"] == pytest.approx(GRAY_MAE, abs=1e-12)
    assert g["mse"] == pytest.approx(GRAY_MSE, abs=1e-12)
    assert g["psnr"] == pytest.approx(-10 * math.log10(GRAY_MSE), abs=1e-9)
    assert g["ssim"] == pytest.approx(ssim_constant((60, 60, 60), TRUTH_RGB), abs=1e-9)
    assert (g["colorfulness"], g["colorfulness_ratio"]) == (0.0, 0.0)
    assert g["colorfulness_truth"] == pytest.approx(CF)


def test_mean_median_identical_images_and_json_keys(folders, capsys):
    pred, truth = folders
    code, out, _ = cli(["evaluate", str(pred), "--truth", str(truth), "--json"], capsys)
    assert code == 0
    r = json.loads(out)
    assert set(r) == {"kind", "predictions", "truth", "images", "fitted", "skipped", "model", "gray"}
    assert set(r["model"]) == set(r["gray"]) == {"mean", "median"}
    assert set(r["model"]["mean"]) == {"mae", "mse", "psnr", "ssim", "ciede2000", "colorfulness",
                                       "colorfulness_ratio", "colorfulness_truth"}
    mean, median = r["model"]["mean"], r["model"]["median"]
    assert mean["mae"] == pytest.approx(0.2) and median["mae"] == pytest.approx(0.2)  # 0, 0.2, 0.4
    assert mean["mse"] == pytest.approx(0.2 / 3) and median["mse"] == pytest.approx(0.04)  # 0, 0.04, 0.16
    # The identical image's PSNR is infinite: so is the mean (null in JSON); the median is finite.
    assert mean["psnr"] is None and median["psnr"] == pytest.approx(10 * math.log10(25))
    # Every image has the same truth, so the gray baseline is the same three times.
    assert r["gray"]["median"]["mae"] == pytest.approx(GRAY_MAE)


def test_table_output(folders, capsys):
    pred, truth = folders
    code, out, _ = cli(["evaluate", str(pred), "--truth", str(truth)], capsys)
    assert code == 0
    lines = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:6]] for line in out.splitlines()
             if line.startswith("│")}
    assert lines["MAE (RGB 0-1) ↓"] == ["0.2000", "0.2000", f"{GRAY_MAE:.4f}", f"{GRAY_MAE:.4f}"]
    assert lines["MSE (RGB 0-1) ↓"] == ["0.0667", "0.0400", f"{GRAY_MSE:.4f}", f"{GRAY_MSE:.4f}"]
    assert lines["PSNR (dB) ↑"] == ["inf", "13.98", "15.54", "15.54"]
    assert lines["colorfulness of truth"][:2] == [f"{CF:.1f}"] * 2
    assert out.startswith("3 images")
    assert "gray: the gray photo itself as the prediction" in out


def test_csv_rows(folders, tmp_path, capsys):
    pred, truth = folders
    out_csv = tmp_path / "reports" / "scores.csv"
    code, _, err = cli(["evaluate", str(pred), "--truth", str(truth), "--csv", str(out_csv)], capsys)
    assert code == 0
    assert "per-image scores written to" in err and "(3 rows)" in err
    with open(out_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["image", "width", "height", "fitted", "mae", "mse", "psnr", "ssim", "ciede2000",
                             "colorfulness", "colorfulness_ratio", "colorfulness_truth", "gray_mae", "gray_mse",
                             "gray_psnr", "gray_ssim", "gray_ciede2000", "gray_colorfulness", "gray_colorfulness_ratio"]
    by = {r["image"]: r for r in rows}
    assert sorted(by) == ["off1", "off2", "same"]
    assert (by["off2"]["width"], by["off2"]["height"], by["off2"]["fitted"]) == ("32", "32", "0")
    assert float(by["off2"]["mae"]) == pytest.approx(0.4, abs=1e-8)
    assert float(by["off2"]["mse"]) == pytest.approx(0.16, abs=1e-8)
    assert (by["same"]["mae"], by["same"]["psnr"], by["same"]["ciede2000"]) == ("0", "inf", "0")
    assert float(by["same"]["gray_mae"]) == pytest.approx(GRAY_MAE, abs=1e-8)
    assert [p.name for p in out_csv.parent.iterdir()] == ["scores.csv"]  # no temporary file left


def test_truth_of_another_size_is_fitted_like_prep(tmp_path, capsys):
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (30, 44, 3), dtype=np.uint8))
    photo.save(tmp_path / "orig.png")
    (tmp_path / "truth").mkdir()
    photo.save(tmp_path / "truth" / "p.png")
    (tmp_path / "pred").mkdir()
    fit_image(photo, 16, "crop").save(tmp_path / "pred" / "p.png")  # what prep makes of it
    solid(tmp_path / "truth" / "c.png", TRUTH_RGB, (48, 64))
    solid(tmp_path / "pred" / "c.png", offset(TRUTH_RGB, 51))
    code, out, _ = cli(["evaluate", str(tmp_path / "pred"), "--truth", str(tmp_path / "truth"), "--csv",
                        str(tmp_path / "s.csv"), "--json"], capsys)
    assert code == 0
    assert json.loads(out)["fitted"] == 2
    with open(tmp_path / "s.csv", newline="") as f:
        by = {r["image"]: r for r in csv.DictReader(f)}
    assert (by["p"]["fitted"], by["p"]["width"], by["p"]["mae"], by["p"]["psnr"]) == ("1", "16", "0", "inf")
    assert float(by["c"]["mae"]) == pytest.approx(0.2, abs=1e-8)


def test_unmatched_unreadable_and_ambiguous_files_are_skipped(folders, capsys):
    pred, truth = folders
    solid(pred / "only_pred.png", TRUTH_RGB)
    solid(truth / "only_truth.png", TRUTH_RGB)
    (pred / "broken.png").write_bytes(b"not a png at all")
    solid(truth / "broken.png", TRUTH_RGB)
    solid(pred / "twice.png", TRUTH_RGB)
    solid(pred / "twice.jpg", TRUTH_RGB)
    solid(truth / "twice.png", TRUTH_RGB)
    code, out, err = cli(["evaluate", str(pred), "--truth", str(truth), "--json"], capsys)
    assert code == 0
    r = json.loads(out)
    assert r["images"] == 3
    reasons = {s["image"]: s["reason"] for s in r["skipped"]}
    assert sorted(reasons) == ["broken", "only_pred", "only_truth", "twice"]
    assert reasons["only_pred"] == f"no truth image named only_pred.* in {truth}"
    assert reasons["only_truth"] == f"no prediction named only_truth.* in {pred}"
    assert reasons["broken"] == f"{pred / 'broken.png'}: not an image (unrecognised data)"
    assert reasons["twice"] == "several prediction files with this name: twice.jpg, twice.png"
    flat = " ".join(err.split())
    assert f"skipped broken: {pred / 'broken.png'}: not an image" in flat
    assert "skipped only_truth: no prediction named" in flat


@pytest.mark.parametrize("case, message", [
    ("nothing_in_common", "no file names in common between"),
    ("no_truth_folder", "missing: no such truth folder"),
    ("empty_pred", "pred: no images in this folder"),
    ("both_options", "give --truth (compare two folders) or --model (run a model on A|B pairs), not both"),
    ("missing_target", "nowhere: no such file or folder"),
    ("image_target", "x.png: expected a folder of images or a .csv file of votes"),
    ("all_unreadable", "no image could be scored (see the reasons above)"),
])
def test_errors(tmp_path, capsys, case, message):
    pred, truth = tmp_path / "pred", tmp_path / "truth"
    pred.mkdir()
    truth.mkdir()
    args = ["evaluate", str(pred), "--truth", str(truth)]
    if case != "empty_pred":
        solid(pred / "x.png", TRUTH_RGB)
    if case == "nothing_in_common":
        solid(truth / "y.png", TRUTH_RGB)
    elif case == "no_truth_folder":
        args[-1] = str(tmp_path / "missing")
    elif case == "both_options":
        args += ["--model", str(tmp_path / "m.safetensors")]
    elif case == "missing_target":
        args[1] = str(tmp_path / "nowhere")
    elif case == "image_target":
        args[1] = str(pred / "x.png")
    elif case == "all_unreadable":
        (truth / "x.png").write_bytes(b"")
    code, out, err = cli(args, capsys)
    assert code == 1
    assert message in " ".join(err.split()), err
    assert "Traceback" not in err


@pytest.mark.skipif(not BEACH.is_dir(), reason="shared beach photos not present")
def test_real_photos_gray_prediction_equals_baseline(tmp_path, capsys):
    """Predicting the gray photo itself must score exactly like the gray baseline."""
    photos = sorted(BEACH.glob("*.jpg"))[:2]
    (tmp_path / "pred").mkdir()
    for p in photos:
        to_gray(Image.open(p)).convert("RGB").save(tmp_path / "pred" / f"{p.stem}.png")
    code, out, _ = cli(["evaluate", str(tmp_path / "pred"), "--truth", str(BEACH), "--csv", str(tmp_path / "s.csv"),
                        "--json"], capsys)
    assert code == 0
    r = json.loads(out)
    assert r["images"] == 2
    assert len(r["skipped"]) == len(list(BEACH.glob("*.jpg"))) - 2  # every other truth photo: no prediction
    assert r["model"] == r["gray"]
    assert r["model"]["mean"]["colorfulness_truth"] > 8  # colour photos
    assert r["model"]["mean"]["psnr"] < 40  # gray is not the photo


# --- DATA/test --model M: A|B pairs run through a model ------------------------------------


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    cfg = ModelConfig(size=32, width=8)
    torch.manual_seed(0)
    g, _ = build(cfg)
    path = tmp_path / "tiny.safetensors"
    save_checkpoint(path, {"generator." + k: v for k, v in g.state_dict().items()}, cfg)
    return path


@pytest.fixture
def one_per_pass(monkeypatch) -> None:
    """Every Colorizer the commands load runs one photo per network pass, so that figures from
    two runs that batch photos differently compare exactly.

    Why not a tolerance: a photo's output can depend on what shares its batch, by float rounding
    (kernels and summation orders are chosen by the batch's shape, and bf16 autocast on GPUs and
    bf16 CPUs keeps 3 significant digits), and a change of 1e-6 can carry an output value across
    an 8-bit rounding edge. One value of the N = 3 H W of a photo moved by one level d = 1/255,
    from an error e (|e| <= 1) to e +- d, changes the squared-error sum by 2 |e| d + d^2 <= 0.0079,
    so MSE by at most 0.0079 / N (2.6e-6 for 32 x 32) and PSNR = -10 log10(MSE) by at most
    (10 / ln 10) 0.0079 / (N MSE) dB: 4e-4 dB, 2.5e-5 of its value, at the untrained model's MSE
    near 0.03 (15 dB), for each value that moves. How many move is bounded by nothing the test
    controls, so a tolerance the maths justifies is a loose one (1e-9 is not one), and SSIM and
    CIEDE2000 would need bounds of their own. Alone in its pass a photo takes one path in every
    run: the figures are equal, not near."""
    from colorize_cli.colorizer import Colorizer

    load = Colorizer.load.__func__
    monkeypatch.setattr(Colorizer, "load", classmethod(
        lambda cls, path=None, device="cpu", size=None, batch_size=1: load(cls, path, device, size, 1)))


def pair(path: Path, color: Image.Image) -> None:
    """The prep layout: colour A left, its gray B (three equal channels) right."""
    s = color.height
    img = Image.new("RGB", (2 * s, s))
    img.paste(color, (0, 0))
    img.paste(to_gray(color).convert("RGB"), (s, 0))
    img.save(path)


def test_model_on_pairs(tmp_path, tiny_model, capsys, one_per_pass):
    from colorize_cli.colorizer import Colorizer

    test = tmp_path / "data" / "test"
    test.mkdir(parents=True)
    rng = np.random.default_rng(1)
    colors = {f"p{i}": Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for i in range(3)}
    for name, img in colors.items():
        pair(test / f"{name}.png", img)
    solid(test / "small.png", TRUTH_RGB, (24, 12))  # a pair, too small for the model
    (test / "broken.png").write_bytes(b"not a png")
    code, out, err = cli(["evaluate", str(test), "--model", str(tiny_model), "--device", "cpu",
                          "--csv", str(tmp_path / "s.csv"), "--json"], capsys)
    assert code == 0, err
    r = json.loads(out)
    assert (r["kind"], r["images"], r["data"], r["checkpoint"]) == ("model", 3, str(test), str(tiny_model))
    reasons = {s["image"]: s["reason"] for s in r["skipped"]}
    assert "too small" in reasons["small"] and "not an image" in reasons["broken"]
    # The model row is exactly what the Python API gives for the gray half, scored against A.
    colorizer = Colorizer.load(tiny_model, device="cpu")
    with open(tmp_path / "s.csv", newline="") as f:
        rows = {row["image"]: row for row in csv.DictReader(f)}
    for name, img in colors.items():
        gray = to_gray(img)
        truth = np.asarray(img, dtype=np.float64) / 255
        expect = score(np.asarray(colorizer.colorize(gray.convert("RGB")), dtype=np.float64) / 255, truth)
        expect_gray = score(np.asarray(gray.convert("RGB"), dtype=np.float64) / 255, truth)
        for k in ("mae", "mse", "psnr", "ciede2000", "colorfulness"):
            assert float(rows[name][k]) == pytest.approx(expect[k], rel=1e-6), (name, k)
            assert float(rows[name][f"gray_{k}"]) == pytest.approx(expect_gray[k], rel=1e-6), (name, k)


def colourful(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_every_image_decides_pairs_or_photos_and_only_two_to_one_ones_are_decoded(tmp_path, monkeypatch):
    """A photo is known by its header (neither side twice the other); an image of 2:1 either
    way (EXIF may stand it up) is decoded, and is a pair when its upright right half is gray."""
    from colorize_cli import evaluate

    opened: list[str] = []
    open_image = evaluate.open_image
    monkeypatch.setattr(evaluate, "open_image", lambda path: (opened.append(Path(path).name), open_image(path))[1])
    pairs, photos = tmp_path / "pairs", tmp_path / "photos"
    for folder in (pairs, photos):
        folder.mkdir()
    pair(pairs / "a.png", colourful(32, 32))
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise: stored standing, 32 x 64
    sideways = pairs / "b.jpg"
    Image.open(pairs / "a.png").transpose(Image.Transpose.ROTATE_90).save(sideways, exif=exif.tobytes(), quality=95)
    (pairs / "c.png").write_bytes(b"not a png")  # unreadable: decides nothing, skipped when scored
    colourful(8, 30).save(pairs / "d.png")  # too small: the same
    for folder in (pairs, photos):  # gray all over: a gray photo, or a pair of one; decides nothing
        colourful(64, 32).convert("L").save(folder / "gray.png")
    assert evaluate.model_photos(pairs) == (sorted(pairs.iterdir()), "pairs")
    assert opened == ["a.png", "b.jpg", "gray.png"]
    opened.clear()
    colourful(40, 30).save(photos / "p.png")
    colourful(64, 32).save(photos / "wide.png")  # 2:1, colour on the right too: a panorama
    assert evaluate.model_photos(photos) == (sorted(photos.iterdir()), "photos")
    assert opened == ["gray.png", "wide.png"]


@pytest.mark.parametrize("case", ["photo_among_pairs", "panorama_among_pairs", "pair_among_photos"])
def test_a_folder_mixing_pairs_and_photos_is_refused(tmp_path, capsys, case):
    """Either layout would score the other kind wrongly: one line naming one of each, before
    any model loads (the bundled one here: it would be the slow part)."""
    data = tmp_path / "data"
    data.mkdir()
    if case == "pair_among_photos":
        for i in range(3):
            colourful(40, 30, i).save(data / f"p{i}.png")
        pair(data / "x.png", colourful(32, 32))
        want = "A|B pairs (such as x.png) and colour photos (such as p0.png)"
    else:
        for i in range(3):
            pair(data / f"p{i}.png", colourful(32, 32, i))
        size = (40, 30) if case == "photo_among_pairs" else (64, 32)
        colourful(*size).save(data / "x.png")
        want = "A|B pairs (such as p0.png) and colour photos (such as x.png)"
    for extra in ([], ["--hints", "2"]):
        code, out, err = cli(["evaluate", str(data), "--device", "cpu", *extra], capsys)
        assert (code, out) == (1, "")
        assert err == f"error: {data}: holds both {want}; give each kind a folder of its own\n"


def test_model_errors(tmp_path, tiny_model, capsys):
    data = tmp_path / "data"
    (data / "test").mkdir(parents=True)
    code, _, err = cli(["evaluate", str(data), "--model", str(tiny_model)], capsys)
    assert code == 1 and f"no images in this folder (did you mean {data / 'test'}?)" in " ".join(err.split())
    pair(data / "test" / "a.png", Image.new("RGB", (32, 32), TRUTH_RGB))
    code, _, err = cli(["evaluate", str(data / "test"), "--model", str(tmp_path)], capsys)
    assert code == 1 and "folder has no best.safetensors" in err
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x80\x04 pickled")
    code, _, err = cli(["evaluate", str(data / "test"), "--model", str(bad)], capsys)
    assert code == 1 and "only safetensors checkpoints are loaded" in err


@pytest.mark.parametrize("n, h, w", [(4, 40, 56), (3, 6, 9), (2, 4, 4), (2, 2, 2)])
def test_batch_scores_equal_the_per_image_metrics(n: int, h: int, w: int) -> None:
    """Training scores its test split with metrics.batch_scores (torch, on the GPU it trains
    on); the figures must be those `colorize evaluate` gives image by image, inf and NaN alike."""
    import torch

    from colorize_cli.metrics import batch_scores, mae, psnr, ssim

    rng = np.random.default_rng(h * w)
    truth = rng.integers(0, 256, (n, h, w, 3)).astype(np.uint8)
    pred = np.clip(truth.astype(int) + rng.integers(-40, 40, truth.shape), 0, 255).astype(np.uint8)
    for identical in ([], [0]):  # one identical pair: its PSNR is inf, and so is the mean
        pred[identical] = truth[identical]
        per_image = [(mae(p / 255, t / 255), psnr(p / 255, t / 255), ssim(p / 255, t / 255)) for p, t in zip(pred, truth)]
        expected = [float(np.mean(c)) for c in zip(*per_image)]
        got = batch_scores(*(torch.from_numpy(a).permute(0, 3, 1, 2).double() / 255 for a in (pred, truth)))
        for key, want in zip(("l1", "psnr", "ssim"), expected):
            if math.isnan(want) or math.isinf(want):
                assert math.isnan(got[key]) == math.isnan(want) and math.isinf(got[key]) == math.isinf(want)
            else:
                assert got[key] == pytest.approx(want, rel=1e-12, abs=1e-12)


def test_batch_colour_scores_equal_the_per_image_ones() -> None:
    """Training picks its best epoch on metrics.batch_ciede2000 and batch_colorfulness (torch);
    they must give what `colorize evaluate` reports (scikit-image's CIEDE2000, `colorfulness`).
    Colourfulness is the same float64 formula: equal to rounding. CIEDE2000 goes through our
    CIELAB conversion, whose white point differs from scikit-image's by under 0.01 in each of
    L*, a*, b*; CIEDE2000's weights (S_L, S_C, S_H >= 1) make it change by at most about
    sqrt(3) x (1 + |R_T|) <= 3.5 per unit of Lab in both colours, so the means agree within 0.07."""
    import torch

    from colorize_cli.metrics import batch_ciede2000, batch_colorfulness, ciede2000, colorfulness

    rng = np.random.default_rng(5)
    truth = rng.integers(0, 256, (4, 24, 20, 3)).astype(np.uint8)
    pred = np.clip(truth.astype(int) + rng.integers(-60, 60, truth.shape), 0, 255).astype(np.uint8)
    pred[1] = truth[1].mean(-1, keepdims=True).round().astype(np.uint8)  # a gray prediction: no hue at all
    pred[2, :, :10] = truth[2, :, :10]  # identical pixels: a difference of 0
    t, p = (torch.from_numpy(a).permute(0, 3, 1, 2).double() / 255 for a in (truth, pred))
    want = [ciede2000(a / 255, b / 255) for a, b in zip(pred, truth)]
    assert batch_ciede2000(p, t).tolist() == pytest.approx(want, abs=0.07)
    assert batch_ciede2000(t, t).tolist() == [0.0] * 4
    assert batch_colorfulness(p).tolist() == pytest.approx([colorfulness(a) for a in pred], rel=1e-12)


def test_selection_score_never_rewards_gray() -> None:
    """The best epoch is the lowest selection score: CIEDE2000 alone for a model at least
    COLORFUL_ENOUGH times as colourful as the truth, counted up in proportion below that, and
    infinite for the gray photo, however low its CIEDE2000."""
    from colorize_cli.scoring import COLORFUL_ENOUGH, selection_score

    assert selection_score({"ciede2000": 9.0, "colorfulness": 1.1}) == 9.0
    assert selection_score({"ciede2000": 9.0, "colorfulness": COLORFUL_ENOUGH}) == 9.0
    assert selection_score({"ciede2000": 8.0, "colorfulness": COLORFUL_ENOUGH / 2}) == 16.0
    assert selection_score({"ciede2000": 5.0, "colorfulness": 0.0}) == math.inf
    assert selection_score({"ciede2000": 5.0, "colorfulness": float("nan")}) == 5.0  # a truth without colour


# --- outputs that must not destroy anything, odd files -------------------------------------


def test_csv_never_replaces_an_existing_file_and_says_so_before_scoring(tmp_path, tiny_model, capsys, monkeypatch):
    """`evaluate DATA/test --model RUN --csv RUN/best.safetensors` once replaced the checkpoint."""
    from colorize_cli import evaluate

    test = tmp_path / "data" / "test"
    test.mkdir(parents=True)
    pair(test / "a.png", Image.new("RGB", (32, 32), TRUTH_RGB))
    before = tiny_model.read_bytes()
    real = evaluate.evaluate_model

    def scoring(*args, **kwargs):
        raise AssertionError("scoring started before the --csv file was checked")

    monkeypatch.setattr(evaluate, "evaluate_model", scoring)
    code, _, err = cli(["evaluate", str(test), "--model", str(tiny_model), "--device", "cpu",
                        "--csv", str(tiny_model)], capsys)
    assert code == 1
    assert f"error: {tiny_model}: exists; not overwritten (use --overwrite to replace it)" in " ".join(err.split())
    assert tiny_model.read_bytes() == before
    monkeypatch.setattr(evaluate, "evaluate_model", real)
    scores = tmp_path / "scores.csv"
    scores.write_text("an earlier run\n")
    code, _, err = cli(["evaluate", str(test), "--model", str(tiny_model), "--device", "cpu",
                        "--csv", str(scores), "--overwrite"], capsys)
    assert code == 0, err
    with open(scores, newline="") as f:
        assert [r["image"] for r in csv.DictReader(f)] == ["a"]


def test_csv_that_is_a_folder_is_refused_before_scoring(folders, tmp_path, capsys):
    pred, truth = folders
    (tmp_path / "scores.csv").mkdir()
    code, _, err = cli(["evaluate", str(pred), "--truth", str(truth), "--csv", str(tmp_path / "scores.csv"),
                        "--overwrite"], capsys)
    assert code == 1
    assert f"error: {tmp_path / 'scores.csv'}: is a folder; --csv needs a file name" in " ".join(err.split())


@pytest.mark.parametrize("side", ["truth", "pred"])
def test_a_degenerate_truth_or_prediction_is_skipped_not_fitted(folders, capsys, side):
    pred, truth = folders
    solid((truth if side == "truth" else pred) / "strip.png", TRUTH_RGB, (5000, 1))
    solid((pred if side == "truth" else truth) / "strip.png", TRUTH_RGB)
    code, out, _ = cli(["evaluate", str(pred), "--truth", str(truth), "--json"], capsys)
    assert code == 0
    r = json.loads(out)
    assert (r["images"], r["fitted"]) == (3, 0)
    bad = (truth if side == "truth" else pred) / "strip.png"
    assert r["skipped"] == [{"image": "strip",
                             "reason": f"{bad}: 5000x1 px is too small (both sides must be at least 16 px)"}]


def test_non_utf8_file_names_survive_in_csv_and_json(tmp_path, capsys):
    pred, truth = tmp_path / os.fsdecode(b"pred\xff"), tmp_path / "truth"
    solid(pred / os.fsdecode(b"bad\xff.png"), offset(TRUTH_RGB, 51))
    solid(truth / os.fsdecode(b"bad\xff.png"), TRUTH_RGB)
    solid(pred / os.fsdecode(b"only\xfe.png"), TRUTH_RGB)
    code, out, err = cli(["evaluate", str(pred), "--truth", str(truth), "--csv", str(tmp_path / "s.csv"), "--json"],
                         capsys)
    assert code == 0, err
    r = json.loads(out)
    assert r["predictions"] == str(tmp_path / "pred\\xff")
    assert r["skipped"] == [{"image": "only\\xfe", "reason": f"no truth image named only\\xfe.* in {truth}"}]
    with open(tmp_path / "s.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [row["image"] for row in rows] == ["bad\\xff"]
    assert float(rows[0]["mae"]) == pytest.approx(0.2, abs=1e-8)


# --- --hints N: the hint curve ----------------------------------------------------------


def tiny_checkpoint(path: Path, **kw) -> Path:
    """An untrained generator, the same weights on every run."""
    cfg = ModelConfig(size=32, width=8, **kw)
    torch.manual_seed(0)
    g, _ = build(cfg)
    save_checkpoint(path, {"generator." + k: v for k, v in g.state_dict().items()}, cfg)
    return path


def smooth(rng: np.random.Generator, h: int, w: int) -> Image.Image:
    """A colour photo with regions: a few random colours blended over the frame."""
    corners = rng.integers(0, 256, (2, 2, 3)).astype(np.float64)
    fy, fx = np.linspace(0, 1, h)[:, None, None], np.linspace(0, 1, w)[None, :, None]
    img = (corners[0, 0] * (1 - fy) * (1 - fx) + corners[0, 1] * (1 - fy) * fx
           + corners[1, 0] * fy * (1 - fx) + corners[1, 1] * fy * fx)
    return Image.fromarray(np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def curve_data(tmp_path_factory) -> dict[str, Path]:
    """A hint-aware tiny model, three A|B pairs, three colour photos (one unreadable file too)."""
    root = tmp_path_factory.mktemp("curve")
    rng = np.random.default_rng(7)
    (root / "pairs").mkdir()
    for i in range(3):
        pair(root / "pairs" / f"p{i}.png", smooth(rng, 32, 32))
    (root / "photos").mkdir()
    for i, (h, w) in enumerate(((40, 48), (48, 36), (36, 36))):
        smooth(rng, h, w).save(root / "photos" / f"q{i}.png")
    (root / "photos" / "zz_broken.png").write_bytes(b"not a png")
    return {"model": tiny_checkpoint(root / "hints.safetensors"), "pairs": root / "pairs", "photos": root / "photos"}


def curve(args: list[str], capsys) -> dict:
    code, out, err = cli(["evaluate", *map(str, args), "--device", "cpu", "--json"], capsys)
    assert code == 0, err
    return json.loads(out)


def test_hint_counts_and_patch_side() -> None:
    from colorize_cli.hintcurve import hint_counts, patch_side
    from colorize_cli.hints import CURVE

    assert hint_counts(3) == [0, 1, 2, 3]
    assert hint_counts(20) == list(CURVE) == [0, 1, 2, 5, 10, 20]
    assert hint_counts(7) == [0, 1, 2, 5, 7] and hint_counts(1) == [0, 1]
    assert hint_counts(50) == [0, 1, 2, 5, 10, 20, 50]
    # HINT_SIDE (3) working pixels in the photo's pixels, odd: 256 px pairs at 192 px: 4 -> 5.
    assert [patch_side(256, 192), patch_side(192, 192), patch_side(16, 192), patch_side(4000, 256)] == [5, 3, 1, 47]


def test_hint_curve_on_pairs_starts_at_plain_evaluate_and_gray(curve_data, capsys, one_per_pass):
    """With 0 hints the network is the plain evaluate's model and IDW is the gray photo, exactly
    (`one_per_pass`: the curve batches a photo's hint counts together, plain evaluate photos)."""
    r = curve([curve_data["pairs"], "--model", curve_data["model"], "--hints", 3], capsys)
    plain = curve([curve_data["pairs"], "--model", curve_data["model"]], capsys)
    assert (r["kind"], r["layout"], r["images"], r["seed"], r["skipped"]) == ("hints", "pairs", 3, 0, [])
    assert (plain["layout"], r["checkpoint"]) == ("pairs", str(curve_data["model"]))
    assert [row["hints"] for row in r["curve"]] == [0, 1, 2, 3]
    zero = r["curve"][0]
    keys = ("psnr", "ssim", "ciede2000", "colorfulness_ratio")
    for k in keys:
        assert zero["network"][k] == plain["model"]["mean"][k], k
        assert zero["idw"][k] == r["gray"][k] == pytest.approx(plain["gray"]["mean"][k], rel=1e-12), k
    assert r["gray"]["colorfulness_ratio"] == 0.0
    assert all(row["idw"]["colorfulness_ratio"] > 0 for row in r["curve"][1:])  # hints bring colour


def test_hint_curve_idw_reproduces_a_flat_colour(tmp_path, curve_data, capsys):
    for i in range(2):
        pair(tmp_path / f"flat{i}.png", Image.new("RGB", (32, 32), (200, 90, 40)))
    r = curve([tmp_path, "--model", curve_data["model"], "--hints", 5], capsys)
    assert r["gray"]["psnr"] < 20
    for row in r["curve"][1:]:  # one hint already gives the colour everywhere (to 8-bit rounding)
        assert row["idw"]["psnr"] is None or row["idw"]["psnr"] > 40, row
        assert row["idw"]["ciede2000"] < 1


def test_hint_curve_is_seeded_and_nested(curve_data, capsys, monkeypatch):
    from colorize_cli.colorizer import Colorizer

    given: list[tuple] = []
    predict = Colorizer.predict
    monkeypatch.setattr(Colorizer, "predict", lambda self, items: (given.extend(i.hints for i in items),
                                                                    predict(self, items))[1])
    args = [curve_data["pairs"], "--model", curve_data["model"], "--hints", 5]
    first, again, other = curve(args, capsys), curve(args, capsys), curve([*args, "--seed", 1], capsys)
    assert first == again
    assert other["seed"] == 1 and other["curve"][0] == first["curve"][0]  # no hints: nothing to draw
    assert other["curve"][1:] != first["curve"][1:]
    assert len(given) == 3 * 3 * 4  # 3 runs, 3 pairs, counts 0, 1, 2, 5
    for run in range(9):  # each photo's hints for count k are the first k of its five
        photo = given[4 * run:4 * run + 4]
        assert [len(h) for h in photo] == [0, 1, 2, 5]
        assert all(photo[-1][:len(h)] == h for h in photo)


def test_hint_curve_on_colour_photos_at_full_resolution(curve_data, tmp_path, capsys, one_per_pass):
    from colorize_cli.colorizer import Colorizer

    out_csv = tmp_path / "curve.csv"
    r = curve([curve_data["photos"], "--model", curve_data["model"], "--hints", 2, "--csv", out_csv], capsys)
    plain = curve([curve_data["photos"], "--model", curve_data["model"]], capsys)
    assert (r["layout"], r["images"], plain["layout"], plain["images"]) == ("photos", 3, "photos", 3)
    assert [s["image"] for s in r["skipped"]] == [s["image"] for s in plain["skipped"]] == ["zz_broken"]
    for k in ("psnr", "ssim", "ciede2000"):
        assert r["curve"][0]["network"][k] == plain["model"]["mean"][k], k
    with open(out_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(row["image"], row["hints"]) for row in rows] == [(f"q{i}", str(k)) for i in range(3) for k in (0, 1, 2)]
    assert (rows[0]["width"], rows[0]["height"], rows[0]["hint_side"]) == ("48", "40", "5")  # 3 * 48 / 32 -> 5
    # Each photo is its own truth at full resolution: the plain model row is the API's colorize of it.
    colorizer = Colorizer.load(curve_data["model"], device="cpu")
    photo = Image.open(curve_data["photos"] / "q0.png").convert("RGB")
    want = score(np.asarray(colorizer.colorize(photo), dtype=np.float64) / 255, np.asarray(photo, dtype=np.float64) / 255)
    assert float(rows[0]["network_psnr"]) == pytest.approx(want["psnr"], rel=1e-7)  # the CSV's 8 digits


def test_locality_is_the_pull_toward_the_hint_where_the_truth_has_its_colour_and_where_not() -> None:
    """A photo half red, half blue, and a red hint: pixels that came from gray to the hint's
    colour were pulled by the whole distance |a*b*| of the red; those left as they were, not at all."""
    from skimage.color import rgb2lab

    from colorize_cli.hintcurve import locality, locality_grid

    assert locality_grid(3000, 4000) == (slice(None, None, 4),) * 2  # 12 MP: every 4th pixel, 750 x 1000
    assert locality_grid(768, 1024) == (slice(None, None, 1),) * 2

    red, blue = (200, 40, 40), (40, 60, 200)
    truth = np.zeros((8, 10, 3))
    truth[:, :5], truth[:, 5:] = np.array(red) / 255, np.array(blue) / 255
    gray = np.full_like(truth, 0.5)
    red_ab = np.hypot(*(rgb2lab(np.array([[red]]) / 255) - rgb2lab(gray[:1, :1]))[0, 0, 1:])  # gray's a*b*: ~1e-4
    local = np.where(np.arange(10)[None, :, None] < 5, np.array(red) / 255, gray)
    assert locality(gray, local, truth, red) == pytest.approx({"near": red_ab, "far": 0.0}, abs=1e-9)
    everywhere = np.broadcast_to(np.array(red) / 255, truth.shape)  # what IDW does with one hint
    assert locality(gray, everywhere, truth, red) == pytest.approx({"near": red_ab, "far": red_ab}, abs=1e-9)
    far_only = locality(gray, local, truth, (20, 200, 20))  # a green hint: no pixel's truth is green
    assert math.isnan(far_only["near"]) and far_only["far"] < 0  # the red moved away from green


def test_hint_curve_reports_one_hints_locality_next_to_idw(curve_data, capsys):
    """IDW with one hint paints the photo: its pull is as large where the truth has another colour
    as where it has the hint's. The JSON, and the line under the table, carry both sides."""
    r = curve([curve_data["pairs"], "--model", curve_data["model"], "--hints", 2], capsys)
    loc = r["locality"]
    assert set(loc) == {"network", "idw"} and set(loc["idw"]) == {"near", "far"}
    assert loc["idw"]["far"] > 0 and all(v is None or math.isfinite(v) for side in loc.values() for v in side.values())
    code, out, err = cli(["evaluate", str(curve_data["pairs"]), "--model", str(curve_data["model"]), "--hints", "2",
                          "--device", "cpu"], capsys)
    assert code == 0, err
    line = " ".join(out.split())
    assert "one hint's pull toward its colour (a*b*), where the truth is that colour (within 10) / another (30 or more " \
           f"away): net {loc['network']['near']:.1f} / {loc['network']['far']:.1f}" in line


def test_hint_curve_table_and_plot(curve_data, tmp_path, capsys):
    from colorize_cli.hintcurve import PANEL

    plot = tmp_path / "curve.png"
    args = ["evaluate", curve_data["pairs"], "--model", curve_data["model"], "--hints", 2, "--plot", plot]
    code, out, err = cli([*map(str, args)], capsys)
    assert code == 0, err
    assert out.startswith("hint curve: 3 A|B pairs, seed 0")
    assert [line.split()[0] for line in out.splitlines() if line.split()[:1] and line.split()[0].isdigit()] == ["0", "1", "2"]
    assert "gray photo: PSNR" in out and "IDW: the hints' inverse-distance-weighted a*b*" in " ".join(out.split())
    assert f"hint curve drawn to {plot}" in " ".join(err.split())
    with Image.open(plot) as img:
        assert (img.format, img.size) == ("PNG", (2 * PANEL[0], PANEL[1]))
    before = plot.read_bytes()
    code, _, err = cli([*map(str, args)], capsys)
    assert code == 1 and f"{plot}: exists; not overwritten (use --overwrite to replace it)" in " ".join(err.split())
    assert plot.read_bytes() == before
    code, _, err = cli([*map(str, args), "--overwrite"], capsys)
    assert code == 0, err
    assert [p.name for p in tmp_path.iterdir()] == ["curve.png"]  # no temporary file left


@pytest.mark.parametrize("case, message", [
    ("no_hint_inputs", "this model was trained without colour hints; --hints needs a hint-aware model"),
    ("rgb_model", "an rgb model; --hints needs a lab one"),
    ("plot_without_hints", "--plot draws the hint curve: give --hints N too"),
    ("plot_not_png", "curve.jpg: --plot writes a PNG; give a file name ending in .png"),
    ("with_truth", "--hints gives a model simulated hints; it does not apply to --truth"),
    ("votes", "votes.csv: --hints and --plot apply to image folders, not to a votes file"),
    ("zero", "Invalid value for '--hints'"),
])
def test_hint_curve_errors(curve_data, tmp_path, capsys, case, message):
    args = ["evaluate", curve_data["pairs"], "--model", curve_data["model"], "--hints", "2"]
    if case == "no_hint_inputs":
        args[3] = tiny_checkpoint(tmp_path / "auto.safetensors", hints=False)
    elif case == "rgb_model":
        args[3] = tiny_checkpoint(tmp_path / "rgb.safetensors", space="rgb")
    elif case == "plot_without_hints":
        args = args[:4] + ["--plot", tmp_path / "curve.png"]
    elif case == "plot_not_png":
        args += ["--plot", tmp_path / "curve.jpg"]
    elif case == "with_truth":
        args = ["evaluate", curve_data["pairs"], "--truth", curve_data["pairs"], "--hints", "2"]
    elif case == "votes":
        (tmp_path / "votes.csv").write_text("image,answer\n")
        args[1] = tmp_path / "votes.csv"
        args[2:4] = []
    elif case == "zero":
        args[-1] = "0"
    code, _, err = cli([*map(str, args)], capsys)
    assert code != 0
    assert message in " ".join(err.split()), err
    assert "Traceback" not in err
    if case in ("no_hint_inputs", "rgb_model"):
        assert len([line for line in err.splitlines() if line.strip()]) == 1
