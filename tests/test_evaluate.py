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
    g, _ = build(cfg)
    path = tmp_path / "tiny.safetensors"
    save_checkpoint(path, {"generator." + k: v for k, v in g.state_dict().items()}, cfg)
    return path


def pair(path: Path, color: Image.Image) -> None:
    """The prep layout: colour A left, its gray B (three equal channels) right."""
    s = color.height
    img = Image.new("RGB", (2 * s, s))
    img.paste(color, (0, 0))
    img.paste(to_gray(color).convert("RGB"), (s, 0))
    img.save(path)


def test_model_on_pairs(tmp_path, tiny_model, capsys):
    from colorize_cli.colorizer import Colorizer

    test = tmp_path / "data" / "test"
    test.mkdir(parents=True)
    rng = np.random.default_rng(1)
    colors = {f"p{i}": Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for i in range(3)}
    for name, img in colors.items():
        pair(test / f"{name}.png", img)
    solid(test / "single.png", TRUTH_RGB, (40, 32))  # not an A|B pair
    solid(test / "small.png", TRUTH_RGB, (24, 12))  # a pair, too small for the model
    code, out, err = cli(["evaluate", str(test), "--model", str(tiny_model), "--device", "cpu",
                          "--csv", str(tmp_path / "s.csv"), "--json"], capsys)
    assert code == 0, err
    r = json.loads(out)
    assert (r["kind"], r["images"], r["data"], r["checkpoint"]) == ("model", 3, str(test), str(tiny_model))
    reasons = {s["image"]: s["reason"] for s in r["skipped"]}
    assert reasons["single"] == f"{test / 'single.png'}: not an A|B pair (40x32; expected width = 2 x height)"
    assert "too small" in reasons["small"]
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
