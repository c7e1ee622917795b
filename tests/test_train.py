"""`colorize train`: data loading, the run folder, learning, exact resume, Ctrl-C, options."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from colorize_cli import files, metrics
from colorize_cli.checkpoint import load_checkpoint, load_generator, save_checkpoint
from colorize_cli.cli import main
from colorize_cli.color import decode_output, encode_input, to_uint8_exact
from colorize_cli.data import Pairs, held_out, load_data
from colorize_cli.device import autocast_bf16
from colorize_cli.errors import UserError
from colorize_cli.files import exclusive_lock
from colorize_cli.model import MAX_GAIN, ModelConfig, UNet
from colorize_cli.pairs import RESAMPLE, make_pair, native_size, read_pair
from colorize_cli.processes import Dist
from colorize_cli.runlog import ADDED_FIELDS, CSV_FIELDS, Reporter
from colorize_cli.scoring import (COLORFUL_ENOUGH, MARGIN_SE, Pick, _colorize_all, calibrate_gain, colorfulness_stats,
                                  evaluate_photos, selection_score)
from colorize_cli.terminal import format_duration, parse_duration
from colorize_cli.train import (SEED_RECIPE, Nets, Order, TrainConfig, check_memory, configure, epoch_order, get_batch,
                                lr_factor, lr_factor_at, read_config, train, training_memory)

# A beach palette: colours a gray photo cannot tell apart by itself, muted enough for CIELAB.
PALETTE = [(200, 80, 60), (60, 140, 200), (90, 160, 70), (220, 200, 120)]


def photo(seed: int, w: int = 40, h: int = 36) -> Image.Image:
    """A colourful photo: four palette blocks in a seed-dependent order, plus mild noise."""
    rng = np.random.default_rng(seed)
    a = np.zeros((h, w, 3), np.int16)
    order = rng.permutation(4)
    for q, (ys, xs) in enumerate([(slice(0, h // 2), slice(0, w // 2)), (slice(0, h // 2), slice(w // 2, w)),
                                  (slice(h // 2, h), slice(0, w // 2)), (slice(h // 2, h), slice(w // 2, w))]):
        a[ys, xs] = PALETTE[order[q]]
    a += rng.integers(-12, 13, a.shape, dtype=np.int16)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def make_prep(root: Path, n_train: int, n_test: int, size: int = 32) -> Path:
    """A prep-style data set: root/train and root/test holding A|B pairs."""
    for i in range(n_train + n_test):
        split = "train" if i < n_train else "test"
        (root / split).mkdir(parents=True, exist_ok=True)
        make_pair(photo(i), size, "crop").save(root / split / f"img{i:02d}.png")
    return root


def cli(*args: str) -> int:
    """Run `colorize ARGS` in this process; its exit code."""
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    return e.value.code or 0


def tensors_of(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)[0]


def assert_same_state(a: Path, b: Path) -> None:
    """Bit-identical networks, optimizer moments and random generator states."""
    ta, tb = tensors_of(a), tensors_of(b)
    assert ta.keys() == tb.keys()
    assert any(k.startswith("optimizer_g.") for k in ta) and any(k.startswith("rng.cpu.") for k in ta)
    different = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not different, different[:5]


def rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


TINY = ("--size", "32", "--width", "8", "--batch-size", "2", "--threads", "1")  # 1 thread: tiny nets, shared CPUs


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """8 training pairs (4 steps of 2 per epoch) and 2 test pairs at 32 px."""
    return make_prep(tmp_path_factory.mktemp("data"), 8, 2)


@pytest.fixture(scope="module")
def straight(data: Path, tmp_path_factory) -> Path:
    """A 2-epoch run in one go: the reference the resumed runs must equal bit for bit."""
    run = tmp_path_factory.mktemp("runs") / "straight"
    assert cli("train", data, *TINY, "--epochs", "2", "--out", run) == 0
    return run


# --- data --------------------------------------------------------------------------------


def test_prep_output_is_loaded_and_resized(tmp_path: Path) -> None:
    root = make_prep(tmp_path / "d", 3, 2, size=48)
    (root / "train" / "notes.png").write_text("not an image")
    Image.new("RGB", (48, 48), (10, 200, 30)).save(root / "train" / "square.png")
    assert native_size(root) == 48
    ds = load_data(root, 32)
    assert ds.source == "prep output" and ds.size == 32
    assert ds.train.color.shape == (3, 3, 32, 32) and ds.train.gray.shape == (3, 1, 32, 32)
    assert ds.train.color.dtype == torch.uint8 and ds.test.names == ["img03.png", "img04.png"]
    assert sorted((Path(p).name, why.split(" (")[0]) for p, why in ds.skipped) == [
        ("notes.png", "not an image"), ("square.png", "not an A|B pair")]
    pair = Image.open(root / "train" / "img00.png")
    gray = pair.crop((48, 0, 96, 48)).convert("L").resize((32, 32), Image.Resampling.LANCZOS)
    assert np.array_equal(ds.train.gray[0, 0].numpy(), np.asarray(gray))
    same = load_data(root, 48)  # its own size: the pixels as prep wrote them
    assert np.array_equal(same.train.color[1].permute(1, 2, 0).numpy(),
                          np.asarray(Image.open(root / "train" / "img01.png"))[:, :48])


@pytest.mark.parametrize("kind", ["prep output", "photo folder"])
def test_data_larger_than_memory_is_decoded_into_a_file_with_the_same_pixels(tmp_path: Path, kind: str) -> None:
    """`memory` below the set's size: the same tensors, names and skips, memory-mapped from a
    temporary file; bad files in the middle leave no hole. The color tensors are channels_last
    views, the layout the networks run in."""
    if kind == "prep output":
        root = make_prep(tmp_path / "d", 5, 3)
        (root / "train" / "img02.png").write_text("not an image")
    else:
        root = tmp_path / "photos"
        root.mkdir()
        for i in range(9):
            photo(40 + i).save(root / f"p{i}.png")
        (root / "p4.png").write_bytes(b"\x89PNG broken")
    in_ram, on_disk = load_data(root, 32), load_data(root, 32, memory=0)
    assert not in_ram.on_disk and on_disk.on_disk
    assert in_ram.skipped == on_disk.skipped and len(in_ram.skipped) == 1
    for a, b in ((in_ram.train, on_disk.train), (in_ram.test, on_disk.test)):
        assert a.names == b.names and torch.equal(a.color, b.color) and torch.equal(a.gray, b.gray)
        assert a.color.is_contiguous(memory_format=torch.channels_last) and a.color.shape[1] == 3
    assert len(in_ram.train) + len(in_ram.test) == (7 if kind == "prep output" else 8)
    for split, pairs in (("train", on_disk.train), ("test", on_disk.test)):  # every image sits with its own name
        for i, name in enumerate(pairs.names):
            if kind == "prep output":
                pair = Image.open(root / split / name)
                color, gray = np.asarray(pair)[:, :32], np.asarray(pair.crop((32, 0, 64, 32)).convert("L"))
            else:
                made = make_pair(Image.open(root / name), 32, "crop")
                color, gray = np.asarray(made)[:, :32], np.asarray(made.crop((32, 0, 64, 32)).convert("L"))
            assert np.array_equal(pairs.color[i].permute(1, 2, 0).numpy(), color)
            assert np.array_equal(pairs.gray[i, 0].numpy(), gray)


def test_photo_folder_is_split_as_prep_would(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(10):
        photo(i).save(photos / f"p{i}.png")
    (photos / "p9_copy.png").write_bytes((photos / "p9.png").read_bytes())
    Image.new("RGB", (40, 40), (90, 90, 90)).save(photos / "gray.png")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    ds = load_data(photos, 32)
    assert ds.source == "photo folder"
    reasons = {Path(p).name: why for p, why in ds.skipped}
    assert reasons.keys() == {"p9_copy.png", "gray.png", "broken.jpg"}
    assert reasons["p9_copy.png"] == f"duplicate of {photos / 'p9.png'}" and reasons["gray.png"].startswith("grayscale")
    assert len(ds.train) == 8 and len(ds.test) == 2  # prep's default test fraction, 0.2
    # The very split and pixels `colorize prep` makes with its defaults.
    assert cli("prep", photos, tmp_path / "prepped", "--size", "32") == 0
    prepped = load_data(tmp_path / "prepped", 32)
    for ours, theirs in ((ds.train, prepped.train), (ds.test, prepped.test)):
        assert sorted(ours.names) == sorted(theirs.names)
        for i, name in enumerate(ours.names):
            j = theirs.names.index(name)
            assert torch.equal(ours.color[i], theirs.color[j]) and torch.equal(ours.gray[i], theirs.gray[j])


def test_unusable_data_is_a_clear_error(tmp_path: Path, capsys) -> None:
    assert cli("train", tmp_path / "missing", "--out", tmp_path / "r") == 1
    assert f"{tmp_path / 'missing'}: no such folder" in capsys.readouterr().err
    root = make_prep(tmp_path / "d", 3, 0)
    assert cli("train", root, *TINY, "--out", tmp_path / "r") == 1
    assert "no test images, so nothing to measure progress on" in capsys.readouterr().err
    assert cli("train", root, "--size", "40", "--out", tmp_path / "r") == 1
    assert "image size 40 must be a positive multiple of 16 for a 4-level U-Net" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


# --- a run and its files -----------------------------------------------------------------


def test_run_folder(straight: Path, data: Path) -> None:
    cfg = json.loads((straight / "config.json").read_text())
    assert cfg["model"] == {"size": 32, "width": 8, "space": "lab", "depth": 4, "dropout": 0.5,
                            "dropout_blocks": 3, "d_layers": 4, "hints": True, "local_hints": True}
    assert (cfg["epochs"], cfg["batch_size"], cfg["optimizer"], cfg["lr"], cfg["gan_loss"], cfg["l1_weight"]) == \
        (2, 2, "adam", 2e-4, "lsgan", 100.0)
    table = rows(straight)
    assert [r["epoch"] for r in table] == ["1", "2"]
    assert [float(r["lr"]) for r in table] == [2e-4, 1e-4]  # constant for half the epochs, then down
    assert list(table[0]) == ["epoch", "lr", "d_loss", "g_adv", "g_l1", "test_l1", "test_psnr", "test_ssim",
                              "test_ciede2000", "test_colorfulness", "test_score", "val_ciede2000", "val_colorfulness",
                              "val_score", "chroma_gain", "gray_l1", "gray_psnr", "gray_ssim",
                              "gray_ciede2000", "gray_colorfulness", "seconds", "train_seconds", "images_per_s"]
    for name in ("epoch_001.png", "epoch_002.png"):
        assert Image.open(straight / "samples" / name).size == (3 * 32, 2 * 32)  # gray | generated | real, 2 test photos
    assert Image.open(straight / "curves.png").size == (1140, 750)
    extra = load_checkpoint(straight / "last.safetensors")[2]
    assert (extra["epoch"], extra["step"]) == (2, 0)
    assert str(extra["best_epoch"]) in [r["epoch"] for r in table]  # which one: scoring.Pick (tested alone)
    assert load_checkpoint(straight / "best.safetensors")[2]["epoch"] == extra["best_epoch"]
    for r in table:
        scores = {k: float(r[f"test_{k}"]) for k in ("ciede2000", "colorfulness")}
        assert float(r["test_score"]) == pytest.approx(selection_score(scores), rel=1e-5)  # 6 digits in the CSV
    assert sorted(p.name for p in straight.iterdir()) == [
        ".train.lock", "best.safetensors", "config.json", "curves.png", "last.safetensors", "metrics.csv", "samples"]

    # The figures are what a user gets: best.safetensors through decode_output and 8-bit output
    # (in bf16 where this CPU does bf16 natively, as training and `colorize infer` both do).
    g, mcfg = load_generator(straight / "best.safetensors")
    best = next(r for r in table if r["epoch"] == str(extra["best_epoch"]))
    made_all, truths, grays = [], [], []
    for path in sorted((data / "test").iterdir()):
        pair = np.asarray(Image.open(path).convert("RGB"))
        truth, gray = pair[:, :32] / 255.0, pair[:, 32:, 0]
        gray01 = torch.from_numpy(gray.astype(np.float32) / 255)[None, None]
        with torch.no_grad(), autocast_bf16(torch.device("cpu")):
            out = g(encode_input(gray01, mcfg.space)).float()
        rgb = decode_output(gray01, out, mcfg.space)
        made_all.append(to_uint8_exact(rgb[0].permute(1, 2, 0).numpy(), gray) / 255.0)
        truths.append(truth)
        grays.append(np.repeat(gray[..., None] / 255.0, 3, axis=2))
    for key, fn in (("l1", metrics.mae), ("ciede2000", metrics.ciede2000)):
        # CSV rows keep 6 significant digits; CIEDE2000's own white point differs (test_evaluate).
        # Under bf16 the kernels oneDNN picks for a batch of 16 and for one photo may round a few
        # 8-bit values the other way: each moves the mean L1 of 2 x 32 x 32 x 3 values by 6.4e-7.
        tol = 2e-6 + 8 / 255 / 6144 if key == "l1" else 0.07
        assert float(best[f"test_{key}"]) == pytest.approx(np.mean([fn(m, t) for m, t in zip(made_all, truths)]), abs=tol)
        assert float(best[f"gray_{key}"]) == pytest.approx(np.mean([fn(m, t) for m, t in zip(grays, truths)]), abs=tol)
    colour = np.mean([metrics.colorfulness(m) for m in made_all]) / np.mean([metrics.colorfulness(t) for t in truths])
    assert float(best["test_colorfulness"]) == pytest.approx(colour, rel=1e-4)  # the same few values flipped


def test_learning_happens(tmp_path: Path) -> None:
    """4 photos, 120 steps (batch 2, 60 epochs): the L1 error on them falls at least 30% below the
    gray photos' own (measured: 77%), and the training L1 loss to under half its first value."""
    root = make_prep(tmp_path / "d", 4, 0)
    (root / "test").mkdir()
    for p in (root / "train").iterdir():
        (root / "test" / p.name).write_bytes(p.read_bytes())
    assert cli("train", root, *TINY, "--epochs", "60", "--lr", "2e-3", "--out", tmp_path / "r") == 0
    table = rows(tmp_path / "r")
    assert float(table[-1]["test_l1"]) < 0.7 * float(table[-1]["gray_l1"])
    assert float(table[-1]["g_l1"]) < 0.5 * float(table[0]["g_l1"])


# --- resume and Ctrl-C -------------------------------------------------------------------


def test_resume_at_an_epoch_boundary_is_exact(data: Path, straight: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert cli("train", data, *TINY, "--epochs", "1", "--out", run) == 0
    assert cli("train", "--resume", run, "--epochs", "2") == 0
    assert_same_state(run / "last.safetensors", straight / "last.safetensors")
    ours, theirs = rows(run), rows(straight)
    assert [r["epoch"] for r in ours] == ["1", "2"]
    for key in ("lr", "d_loss", "g_adv", "g_l1", "test_l1", "test_psnr", "test_ssim"):
        assert [r[key] for r in ours] == [r[key] for r in theirs]


class _CtrlCAt(Reporter):
    """Presses Ctrl-C (a real SIGINT to this process) after a given step of a given epoch."""

    def __init__(self, epoch: int, step: int) -> None:
        super().__init__(enabled=False)
        self.at = (epoch, step)

    def step(self, epoch: int, step: int, sums: torch.Tensor) -> None:
        if (epoch, step) == self.at:
            os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_mid_epoch_then_resume_is_exact(data: Path, straight: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    cfg = configure(str(data), str(run), None, None, {"size": 32, "width": 8, "batch_size": 2, "epochs": 2, "threads": 1})
    result = train(cfg, reporter=_CtrlCAt(epoch=1, step=2))  # 0-based epoch 1: the second
    assert result.interrupted and (result.epochs_done, result.stopped_at) == (1, 2)
    assert "stopping after this step" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back
    extra = load_checkpoint(run / "last.safetensors")[2]
    assert (extra["epoch"], extra["step"]) == (1, 2)
    assert cli("train", "--resume", run) == 0
    assert "resuming after epoch 1, step 2" in capsys.readouterr().err
    assert_same_state(run / "last.safetensors", straight / "last.safetensors")
    assert [r["g_l1"] for r in rows(run)] == [r["g_l1"] for r in rows(straight)]


class _SeesCheckpoints(Reporter):
    """Notes, at each epoch's end (before that epoch's checkpoint), which epoch last.safetensors holds."""

    def __init__(self, run: Path) -> None:
        super().__init__(enabled=False)
        self.run, self.seen = run, []

    def epoch_end(self, row: dict, best: bool) -> None:
        last = self.run / "last.safetensors"
        self.seen.append(load_checkpoint(last)[2]["epoch"] if last.exists() else 0)


@pytest.mark.parametrize("every, seen", [(0, [0, 1, 2]), (3600, [0, 0, 0])])
def test_checkpoints_are_written_at_most_every_n_seconds(data: Path, tmp_path: Path, every: float,
                                                         seen: list[int]) -> None:
    """--checkpoint-every 0 writes after every epoch; a long interval only at the end, where the
    best epoch's state (kept in memory meanwhile) goes to best.safetensors."""
    run = tmp_path / "run"
    cfg = configure(str(data), str(run), None, None, {"size": 32, "width": 8, "batch_size": 2, "epochs": 3,
                                                      "threads": 1, "checkpoint_every": every})
    reporter = _SeesCheckpoints(run)
    result = train(cfg, reporter=reporter)
    assert reporter.seen == seen
    last = load_checkpoint(run / "last.safetensors")[2]
    best = load_checkpoint(run / "best.safetensors")[2]
    assert last["epoch"] == 3 and best["epoch"] == last["best_epoch"] == result.best_epoch
    assert [r["epoch"] for r in rows(run)] == ["1", "2", "3"]


def test_checkpoint_interval_must_not_be_negative(data: Path, tmp_path: Path, capsys) -> None:
    assert cli("train", data, *TINY, "--checkpoint-every", "-1", "--out", tmp_path / "r") == 2
    assert "--checkpoint-every" in capsys.readouterr().err


def test_ctrl_c_in_a_real_process(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "colorize_cli", "train", str(data), *TINY, "--epochs", "1000",
                             "--out", str(run)], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "200"})
    try:
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("epoch 1/1000"):
                break
        proc.send_signal(signal.SIGINT)
        err = "".join(lines) + proc.communicate(timeout=120)[1]
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "stopping after this step" in err and f"Go on with: colorize train --resume {run}" in err
    tensors, _, extra = load_checkpoint(run / "last.safetensors")
    done = extra["epoch"]
    assert done >= 1 and "generator.down.0.conv.weight" in tensors
    assert [int(r["epoch"]) for r in rows(run)] == list(range(1, done + 1))
    assert cli("train", "--resume", run, "--epochs", str(done + 1)) == 0
    assert [int(r["epoch"]) for r in rows(run)] == list(range(1, done + 2))


def test_resume_refuses_another_network_or_recipe(straight: Path, capsys) -> None:
    assert cli("train", "--resume", straight, "--width", "16", "--epochs", "3") == 1
    assert (f"--width 16 does not match the run's 8 ({straight / 'config.json'}): a resumed run keeps its network"
            in capsys.readouterr().err)
    assert cli("train", "--resume", straight, "--gan-loss", "vanilla", "--epochs", "3") == 1
    assert "a resumed run keeps its recipe" in capsys.readouterr().err
    assert cli("train", "--resume", straight, "--no-hints", "--epochs", "3") == 1  # its generator reads hints
    assert "a resumed run keeps its network" in capsys.readouterr().err
    assert cli("train", "--resume", straight) == 1
    assert "has finished its 2 epochs; give --epochs N (more than 2) to train on" in capsys.readouterr().err
    assert cli("train", straight.parent / "nothing-here", "--resume", straight.parent) == 1
    assert "not a training run (no config.json)" in capsys.readouterr().err


def test_checkpoint_not_matching_its_config_is_refused(straight: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "copy"
    run.mkdir()
    (run / "last.safetensors").write_bytes((straight / "last.safetensors").read_bytes())
    cfg = json.loads((straight / "config.json").read_text())
    cfg["model"]["width"] = 16
    cfg["epochs"] = 3
    (run / "config.json").write_text(json.dumps(cfg))
    assert cli("train", "--resume", run) == 1
    assert ("last.safetensors holds a 32 px lab width-8 depth-4 network, but "
            f"{run / 'config.json'} asks for a 32 px lab width-16 depth-4 one") in capsys.readouterr().err


def test_a_run_folder_is_never_overwritten(straight: Path, data: Path, capsys) -> None:
    before = (straight / "last.safetensors").read_bytes()
    assert cli("train", data, *TINY, "--epochs", "1", "--out", straight) == 1
    assert f"{straight} already holds a run: continue it with --resume {straight}" in capsys.readouterr().err
    assert (straight / "last.safetensors").read_bytes() == before


def test_patience_stops_when_the_selection_score_stalls(tmp_path: Path, capsys) -> None:
    """Gray test photos (no colour to match, so the selection score is CIEDE2000 alone): the
    untrained network's near-gray output is the best it will do (epochs 2 and 3 are clearly worse
    on both photos), so with --patience 2 the run stops after epoch 3, keeping epoch 1 as
    best.safetensors."""
    root = make_prep(tmp_path / "d", 8, 2)
    for p in (root / "test").iterdir():
        pair = Image.open(p)
        pair.paste(pair.crop((32, 0, 64, 32)), (0, 0))  # A := B, a gray photo
        pair.save(p)
    run = tmp_path / "run"
    assert cli("train", root, *TINY, "--epochs", "12", "--patience", "2", "--out", run) == 0
    table = rows(run)
    assert [r["epoch"] for r in table] == ["1", "2", "3"]
    assert float(table[0]["test_score"]) < min(float(table[1]["test_score"]), float(table[2]["test_score"]))
    assert table[0]["test_score"] == table[0]["test_ciede2000"] and table[0]["test_colorfulness"] == "nan"
    assert table[0]["gray_l1"] == "0" and table[0]["gray_psnr"] == "inf"
    assert "early stop: no new best epoch for 2 epochs (best: epoch 1)" in capsys.readouterr().err
    assert load_checkpoint(run / "best.safetensors")[2]["epoch"] == 1
    assert load_checkpoint(run / "last.safetensors")[2]["epoch"] == 3


# --- options -----------------------------------------------------------------------------


def test_seed_preset_and_explicit_options(data: Path, tmp_path: Path) -> None:
    cfg = configure(str(data), str(tmp_path / "a"), None, "seed", {})
    assert (cfg.model.space, cfg.batch_size, cfg.gan_loss, cfg.l1_weight, cfg.epochs) == ("rgb", 1, "lsgan", 100.0, 200)
    assert SEED_RECIPE == {"space": "rgb", "batch_size": 1, "gan_loss": "lsgan", "gan_weight": 1.0, "l1_weight": 100.0,
                           "epochs": 200, "width": 64, "chroma_gain": False, "hints": False, "val_photos": 0}
    assert (cfg.optimizer, cfg.lr, cfg.beta1, cfg.model.width, cfg.model.size, cfg.preset) == ("adam", 2e-4, 0.5, 64, 32, "seed")
    assert not cfg.model.hints  # the original generator reads the gray photo alone
    assert cfg.time == 0  # the preset's epochs, on any device
    mine = configure(str(data), str(tmp_path / "b"), None, "seed", {"epochs": 1, "space": "lab", "optimizer": "sgd"})
    assert (mine.epochs, mine.model.space, mine.batch_size, mine.lr) == (1, "lab", 1, 0.01)  # given options win
    plain = configure(str(data), None, None, None, {"device": "cpu"})
    assert (plain.model.space, plain.batch_size, plain.time, plain.model.width, plain.model.size, plain.crop_min) == \
        ("lab", 16, 600, 32, 32, 0.5)  # 192 px, but never above the data's own 32 px
    assert plain.model.hints and not configure(str(data), None, None, None, {"device": "cpu", "hints": False}).model.hints
    big = configure(str(make_prep(tmp_path / "big", 1, 1, size=256)), None, None, None, {"device": "cpu"})
    assert big.model.size == 192
    assert Path(plain.out).parent == Path("runs")
    by_epochs = configure(str(data), None, None, None, {"device": "cpu", "epochs": 3})
    assert (by_epochs.epochs, by_epochs.time, by_epochs.model.width) == (3, 0, 32)  # --epochs: no time budget


def test_a_gpu_gets_the_full_recipe_by_default(data: Path, monkeypatch) -> None:
    """Without a GPU here, the device check is made to answer CUDA: no time budget, 200 epochs
    of the width-64 network."""
    import colorize_cli.train as train_module

    monkeypatch.setattr(train_module, "pick_device", lambda name: torch.device("cuda"))
    cfg = configure(str(data), None, None, None, {})
    assert (cfg.time, cfg.epochs, cfg.model.width, cfg.model.size) == (0, 200, 64, 32)  # the data's own size


def test_seed_preset_trains_rgb_with_batch_one(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "seed"
    assert cli("train", data, "--preset", "seed", "--size", "32", "--width", "8", "--epochs", "1", "--threads", "1",
               "--gan-loss", "vanilla", "--out", run) == 0
    cfg = read_config(run)
    assert (cfg.preset, cfg.model.space, cfg.batch_size, cfg.gan_loss) == ("seed", "rgb", 1, "vanilla")
    assert load_checkpoint(run / "last.safetensors")[1].space == "rgb"
    assert float(rows(run)[0]["test_l1"]) > 0


def test_learning_rate_schedule() -> None:
    assert [lr_factor(e, 4) for e in range(4)] == pytest.approx([1.0, 1.0, 2 / 3, 1 / 3], abs=1e-12)
    assert [lr_factor(e, 1) for e in range(1)] == [1.0]
    assert [round(lr_factor(e, 200), 4) for e in (0, 99, 100, 199)] == [1.0, 1.0, 0.9901, 0.0099]


def test_bad_options(data: Path, tmp_path: Path, capsys) -> None:
    if not torch.cuda.is_available():
        assert cli("train", data, "--device", "cuda", "--size", "32", "--out", tmp_path / "r") == 1
        assert "--device cuda: torch sees no CUDA GPU here (use --device cpu or auto)" in capsys.readouterr().err
    with pytest.raises(UserError, match="--lr must be positive"):
        configure(str(data), str(tmp_path / "r"), None, None, {"lr": 0.0})
    with pytest.raises(UserError, match="give DATA"):
        configure(None, None, None, None, {})


# --- the run folder is the user's: never overwritten, never shared ----------------------


def _contents(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative name -> bytes), to prove that nothing changed."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_new_run_goes_only_into_a_new_or_empty_folder(data: Path, tmp_path: Path, capsys) -> None:
    """A folder of the user's own files (named like a run's, but no config.json) is left alone."""
    mine = tmp_path / "mine"
    (mine / "samples").mkdir(parents=True)
    for name in ("best.safetensors", "metrics.csv", "curves.png", "samples/epoch_001.png"):
        (mine / name).write_text(f"the user's own {name}\n")
    before = _contents(mine)
    assert cli("train", data, *TINY, "--epochs", "1", "--out", mine) == 1
    err = capsys.readouterr().err
    assert err == (f"error: {mine}: holds other files (best.safetensors, curves.png, metrics.csv, …) and no run "
                   "(no config.json); a new run starts only in a new or empty folder: choose another --out\n")
    assert _contents(mine) == before
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli("train", data, *TINY, "--epochs", "1", "--out", empty) == 0
    assert (empty / "last.safetensors").is_file()


def test_resume_without_a_checkpoint_never_starts_over_on_the_runs_files(straight: Path, tmp_path: Path,
                                                                         capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    (run / "last.safetensors").unlink()
    before = _contents(run)
    assert cli("train", "--resume", run, "--epochs", "3") == 1
    assert capsys.readouterr().err == (
        f"error: {run}: no last.safetensors to resume from, and starting over would replace its best.safetensors, "
        "curves.png, metrics.csv, samples; start a new run in another folder (--out), or delete those to start "
        "this one over\n")
    assert _contents(run) == before
    # Stopped before its first checkpoint with nothing else written: starting over loses nothing.
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_bytes((straight / "config.json").read_bytes())
    assert cli("train", "--resume", bare, "--epochs", "1") == 0
    assert f"{bare} has no checkpoint yet: starting the run from its first epoch" in capsys.readouterr().err
    assert load_checkpoint(bare / "last.safetensors")[2]["epoch"] == 1


def test_a_run_folder_in_use_is_refused_naming_the_process(straight: Path, data: Path, tmp_path: Path,
                                                           capsys) -> None:
    """The lock is held here (flock is per open file, so this process counts as another
    `colorize train`); the lock file left behind afterwards neither blocks nor counts as a file."""
    busy = f"`colorize train` is already running here (process {os.getpid()}: "
    new = tmp_path / "new"
    new.mkdir()
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    before = _contents(run)
    for folder, args in ((new, (data, *TINY, "--epochs", "1", "--out", new)), (run, ("--resume", run, "--epochs", "3"))):
        with exclusive_lock(folder, ".train.lock", "`colorize train`"):
            assert cli("train", *args) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error: {folder}: {busy}") and err.endswith("wait for it to end, or use another folder\n")
    assert [p.name for p in new.iterdir()] == [".train.lock"]
    assert _contents(run) == before
    assert cli("train", data, *TINY, "--epochs", "1", "--out", new) == 0
    assert cli("train", "--resume", run, "--epochs", "3") == 0
    assert [r["epoch"] for r in rows(run)] == ["1", "2", "3"]


@pytest.mark.parametrize("damage", ["truncated", "nan"])
def test_resume_refuses_a_corrupt_best_checkpoint(straight: Path, tmp_path: Path, capsys, damage: str) -> None:
    """A damaged best.safetensors (cut short, or holding NaN weights) stops the resume (exit 1,
    nothing changed); deleted, it is remade from the next epoch."""
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    best = run / "best.safetensors"
    if damage == "truncated":
        best.write_bytes(best.read_bytes()[: best.stat().st_size // 2])
        reason = "not a valid safetensors checkpoint ("
    else:
        tensors, mcfg, extra = load_checkpoint(best)
        tensors["generator.out.conv.weight"][0, 0, 0, 0] = float("nan")
        save_checkpoint(best, tensors, mcfg, extra)
        reason = "checkpoint holds NaN or infinite weights (generator.out.conv.weight)"
    before = _contents(run)
    assert cli("train", "--resume", run, "--epochs", "3") == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {best}: {reason}")
    assert err.endswith(f"; delete {best} to have it remade from the next epoch, then --resume again\n")
    assert _contents(run) == before
    best.unlink()
    assert cli("train", "--resume", run, "--epochs", "3") == 0
    assert load_checkpoint(best)[2]["epoch"] == 3


HEADER = ",".join(CSV_FIELDS).encode() + b"\n"


@pytest.mark.parametrize("text, reason", [
    (b"\xff\xfe\x00garbage\x00", "not UTF-8 text"),
    (b"when,what\n1,2\n", "no epoch column"),
    (HEADER + b"1" + b",0.5" * (len(CSV_FIELDS) - 1) + b"\none" + b",0.5" * (len(CSV_FIELDS) - 1) + b"\n",
     "line 3: epoch 'one' is not a whole number"),
    (HEADER + b"1,2e-4,0.5\n", "line 2: g_adv None is not a number"),
])
def test_resume_with_a_garbage_metrics_table_is_a_one_line_error(straight: Path, tmp_path: Path, capsys,
                                                                  text: bytes, reason: str) -> None:
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    (run / "metrics.csv").write_bytes(text)
    assert cli("train", "--resume", run, "--epochs", "3") == 1
    assert capsys.readouterr().err == (f"error: {run / 'metrics.csv'}: not a metrics table of colorize train "
                                       f"({reason}); delete it to go on without the past epochs' rows\n")


@pytest.mark.parametrize("change, reason", [
    ({"colour": "red"}, "config has unknown keys: ['colour']"),
    ({"batch_size": 0}, "--batch-size must be at least 1, got 0"),
    ({"epochs": "ten"}, "epochs must be a whole number, not 'ten'"),
])
def test_a_bad_config_json_names_the_file(straight: Path, tmp_path: Path, capsys, change: dict, reason: str) -> None:
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**cfg, **change}))
    assert cli("train", "--resume", run) == 1
    assert capsys.readouterr().err == f"error: {run / 'config.json'}: {reason}\n"


# --- runs that go wrong ------------------------------------------------------------------


def test_a_network_too_large_for_the_memory_is_refused_before_it_is_built(data: Path, tmp_path: Path,
                                                                        monkeypatch, capsys) -> None:
    assert cli("train", data, *TINY, "--width", "100000", "--out", tmp_path / "r") == 1
    err = capsys.readouterr().err
    assert re.fullmatch(r"error: training a width-100000 network at 32 px \(batch size 2, adam\) needs about "
                        r"\d+\.\d GiB of memory; this machine has \d+\.\d GiB free\n", err), err
    assert not (tmp_path / "r").exists()
    # The original recipe's size fits in a few GiB: 33.0 M parameters x 16 bytes (weights,
    # gradients, Adam's two moments) and about 1.4 GiB of activations (measured peak: 2.07 GiB).
    need = training_memory(configure(str(data), str(tmp_path / "r"), None, None,
                                     {"size": 256, "width": 64, "batch_size": 16}))
    assert 1.8 * 2**30 < need < 2.1 * 2**30
    monkeypatch.setattr(files, "available_memory", lambda: 3 * 2**30)
    check_memory(configure(str(data), str(tmp_path / "r"), None, None, {"size": 256, "width": 64, "batch_size": 16}),
                 torch.device("cpu"))


def test_a_diverging_run_stops_without_saving_a_nan_model(data: Path, tmp_path: Path, capsys) -> None:
    """--lr 1e30: with the GAN, D's first update already makes G's adversarial loss NaN in step 1;
    with L1 alone, G's first update makes step 2's L1 loss NaN."""
    for gan, step in (("1", 1), ("0", 2)):
        run = tmp_path / f"r{gan}"
        assert cli("train", data, *TINY, "--lr", "1e30", "--gan-weight", gan, "--epochs", "2", "--checkpoint-every", "0",
                   "--out", run) == 1
        assert capsys.readouterr().err.endswith(
            f"error: training diverged in epoch 1 at step {step} (a loss became NaN or infinite); no checkpoint was "
            "saved: start a new run with a smaller --lr than 1e+30\n")
        assert sorted(p.name for p in run.iterdir()) == [".train.lock", "config.json"]


def test_a_run_that_diverges_later_keeps_its_last_finite_checkpoints(data: Path, tmp_path: Path, monkeypatch) -> None:
    """G's weights turned NaN after step 2 of epoch 2 (the 6th step): the losses of step 3 are
    NaN; last.safetensors and best.safetensors keep epoch 1."""
    real_step, calls = Nets.train_step, []

    def poisoned(nets: Nets, gray: torch.Tensor, color: torch.Tensor) -> torch.Tensor:
        losses = real_step(nets, gray, color)
        calls.append(1)
        if len(calls) == 6:
            with torch.no_grad():
                next(nets.g.parameters()).fill_(float("nan"))
        return losses

    monkeypatch.setattr(Nets, "train_step", poisoned)
    run = tmp_path / "r"
    cfg = configure(str(data), str(run), None, None, {"size": 32, "width": 8, "batch_size": 2, "epochs": 3,
                                                      "threads": 1, "checkpoint_every": 0})
    with pytest.raises(UserError) as e:
        train(cfg)
    assert str(e.value) == (f"training diverged in epoch 2 at step 3 (a loss became NaN or infinite); "
                            f"{run / 'last.safetensors'} holds the last finite state (epoch 1): start a new run "
                            "with a smaller --lr than 0.0002")
    for name in ("last.safetensors", "best.safetensors"):
        tensors, _, extra = load_checkpoint(run / name)
        assert extra["epoch"] == 1 and all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())
    assert [r["epoch"] for r in rows(run)] == ["1"]


# --- data and usage ----------------------------------------------------------------------


def test_degenerate_photos_are_skipped_with_the_one_rule(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(5):
        photo(i).save(photos / f"p{i}.png")
    rng = np.random.default_rng(0)
    for w, h in ((1, 1), (5000, 1), (3, 300)):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(photos / f"strip{w}x{h}.png")
    ds = load_data(photos, 32)
    assert sorted((Path(p).name, why) for p, why in ds.skipped) == [
        (f"strip{w}x{h}.png", f"{w}x{h} px is too small (both sides must be at least 16 px)")
        for w, h in ((1, 1), (3, 300), (5000, 1))]
    assert len(ds.train) + len(ds.test) == 5


HINT = ("; get photos with `colorize crawl KEYWORD` (then `colorize prep` them), "
        "or use any folder of your own color photos")


def test_no_photos_says_where_photos_come_from(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    assert cli("train", tmp_path / "missing", "--out", tmp_path / "r") == 1
    assert capsys.readouterr().err == (f"error: {tmp_path / 'missing'}: no such folder (expected a prep output or "
                                       f"a folder of photos){HINT}\n")
    assert cli("train", tmp_path / "empty", "--out", tmp_path / "r") == 1
    assert capsys.readouterr().err == f"error: {tmp_path / 'empty'}: no usable training images (photo folder){HINT}\n"
    assert not (tmp_path / "r").exists()


def test_train_without_data_is_a_usage_error(capsys) -> None:
    assert cli("train") == 2
    words = " ".join(capsys.readouterr().err.replace("│", " ").split())  # rich boxes and wraps usage errors
    assert "Invalid value for 'DATA': give DATA (a prep output or a folder of photos), or --resume RUN" in words


def test_counts_of_one_are_singular(tmp_path: Path, capsys) -> None:
    root = make_prep(tmp_path / "d", 8, 1)
    run = tmp_path / "r"
    assert cli("train", root, *TINY, "--epochs", "1", "--out", run) == 0
    assert f"{root} (prep output): 8 train, 1 test photo at 32 px" in capsys.readouterr().err
    assert cli("train", "--resume", run) == 1
    assert capsys.readouterr().err == f"error: {run} has finished its 1 epoch; give --epochs N (more than 1) to train on\n"


# --- the recipe: time budget, random crops, L1 alone, chroma gain --------------------------


def test_durations_read_and_written() -> None:
    assert [parse_duration(t) for t in ("90s", "10m", "1h30m", "1.5h", "600", " 2H ")] == [90, 600, 5400, 5400, 600, 7200]
    assert [format_duration(s) for s in (600, 5400, 75, 0, 3600.4)] == ["10m", "1h30m", "1m15s", "0s", "1h"]
    for bad in ("", "m", "10x", "-5", "1h-2m", "ten"):
        with pytest.raises(ValueError, match="is not a duration"):
            parse_duration(bad)


@pytest.mark.parametrize("args, code, message", [
    (["--time", "soon"], 2, "'soon' is not a duration (e.g. 90s, 10m, 1h30m)"),
    (["--gan-weight", "-1"], 2, "'--gan-weight'"),  # click's range message
    (["--crop-min", "0"], 1, "error: --crop-min must be above 0 and at most 1, got 0.0"),
    (["--mix", "1"], 1, "error: --mix shares the epochs between DATA and the data sets given with --also; give --also too"),
    (["--also", "/no/such/folder"], 1, "error: --also /no/such/folder: no such folder"),
])
def test_bad_recipe_options_are_one_line_errors(data: Path, tmp_path: Path, capsys, args: list[str], code: int,
                                                message: str) -> None:
    assert cli("train", data, "--out", tmp_path / "r", *args) == code
    assert message in " ".join(capsys.readouterr().err.replace("│", " ").split())
    assert not (tmp_path / "r").exists()


def test_lr_follows_the_clock_like_the_epoch_rule() -> None:
    """Constant for the first half of the time, then a straight line to 0 at its end."""
    assert [lr_factor_at(p) for p in (0.0, 0.25, 0.5, 0.75, 0.9, 1.0, 1.2)] == \
        pytest.approx([1.0, 1.0, 1.0, 0.5, 0.2, 0.0, 0.0], abs=1e-12)


def test_a_time_budget_ends_the_run_and_resume_spends_the_rest(data: Path, tmp_path: Path, capsys) -> None:
    """--time: the run stops at the first step past its budget (scored every EVAL_SHARE of it and
    at the end); the checkpoints count the seconds spent; a resume with a larger budget goes on
    from there, one with the same budget is refused. Only orderings of times are asserted."""
    run = tmp_path / "run"
    assert cli("train", data, *TINY, "--time", "3s", "--out", run) == 0
    table = rows(run)
    spent = [float(r["train_seconds"]) for r in table]
    extra = load_checkpoint(run / "last.safetensors")[2]
    assert spent == sorted(spent) and spent[-1] <= extra["seconds"] and extra["seconds"] >= 3
    lrs = [float(r["lr"]) for r in table]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] < 2e-4  # past half the time: falling
    assert extra["epoch"] == int(table[-1]["epoch"])  # the last epoch is scored
    assert read_config(run).time == 3
    capsys.readouterr()
    assert cli("train", "--resume", run) == 1
    assert capsys.readouterr().err == f"error: {run} has used its time (3s); give --time T (more than that) to train on\n"
    before = load_checkpoint(run / "last.safetensors")[0]
    assert cli("train", "--resume", run, "--time", "5s") == 0
    tensors, _, extra = load_checkpoint(run / "last.safetensors")
    assert extra["seconds"] >= 5 and int(rows(run)[-1]["epoch"]) > int(table[-1]["epoch"])
    assert not torch.equal(tensors["generator.out.conv.weight"], before["generator.out.conv.weight"])  # it trained on
    assert cli("train", "--resume", run, "--epochs", str(extra["epoch"] + 1)) == 0  # --epochs alone: no budget
    assert read_config(run).time == 0 and load_checkpoint(run / "last.safetensors")[2]["epoch"] == extra["epoch"] + 1


def test_epoch_crops_are_seeded_and_inside_the_photo() -> None:
    one = epoch_order(50, 0, 3, Dist(), 40, 0.5)
    again = epoch_order(50, 0, 3, Dist(), 40, 0.5)
    assert all(torch.equal(a, b) for a, b in ((one.index, again.index), (one.flip, again.flip), (one.crop, again.crop)))
    side, top, left = one.crop.unbind(1)
    assert side.min() >= 20 and side.max() <= 40 and side.unique().numel() > 5  # shares of [0.5, 1] of 40 px
    assert (top >= 0).all() and (left >= 0).all() and (top + side <= 40).all() and (left + side <= 40).all()
    assert not torch.equal(epoch_order(50, 0, 4, Dist(), 40, 0.5).crop, one.crop)  # another epoch, other crops
    whole = epoch_order(50, 0, 3, Dist(), 40, 1.0).crop
    assert whole.tolist() == [[40, 0, 0]] * 50


def test_a_batch_is_each_photos_crop_scaled_and_flipped() -> None:
    g = torch.Generator().manual_seed(0)
    color = torch.randint(0, 256, (3, 3, 40, 40), generator=g, dtype=torch.uint8)
    pairs = Pairs(color, color[:, :1].clone(), ["a", "b", "c"])
    order = Order(torch.tensor([2, 0, 1]), torch.tensor([False, True, False]),
                  torch.tensor([[40, 0, 0], [32, 0, 0], [20, 10, 15]]))
    gray, rgb = get_batch(pairs, order, 32, torch.device("cpu"), channels_last=False)
    assert gray.shape == (3, 1, 32, 32) and rgb.shape == (3, 3, 32, 32)
    assert torch.equal(rgb[1], color[0, :, :32, :32].flip(-1).float() / 255)  # a 32 px crop: no scaling, flipped
    expect = F.interpolate(color[2:3].float() / 255, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
    assert torch.allclose(rgb[0], expect[0].clamp(0, 1), atol=1e-6)  # the whole photo, shrunk
    crop = color[1:2, :, 10:30, 15:35].float() / 255
    assert torch.allclose(rgb[2], F.interpolate(crop, size=(32, 32), mode="bilinear", align_corners=False)[0], atol=1e-6)
    assert torch.equal(gray[:, 0], rgb[:, 0])  # the gray half is cropped with its colour photo


def test_training_keeps_larger_photos_for_crops_and_tests_at_the_training_size(tmp_path: Path) -> None:
    root = make_prep(tmp_path / "d", 4, 2, size=48)
    data = load_data(root, 32, crops=True)
    assert data.train.color.shape == (4, 3, 48, 48) and data.test.color.shape == (2, 3, 32, 32)
    assert load_data(root, 32).train.color.shape == (4, 3, 32, 32)  # without crops, as before
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(6):
        photo(40 + i, 60, 50).save(photos / f"p{i}.png")
    folder = load_data(photos, 32, crops=True)
    assert folder.train.color.shape[-1] == 40 and folder.test.color.shape[-1] == 32  # 1.25 x the training size


def test_l1_alone_never_steps_the_discriminator(data: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(data=str(data), out=str(tmp_path), model=ModelConfig(size=32, width=8))
    assert cfg.gan_weight == 0
    nets = Nets(cfg, torch.device("cpu"))
    before = {k: v.clone() for k, v in nets.d.state_dict().items()}
    g_before = [p.clone() for p in nets.g.parameters()]
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    losses = nets.train_step(x, x.expand(-1, 3, -1, -1).contiguous())
    assert losses[0] == 0 and losses[1] == 0 and losses[2] > 0
    assert all(torch.equal(before[k], v) for k, v in nets.d.state_dict().items())
    assert any(not torch.equal(a, b) for a, b in zip(g_before, nets.g.parameters()))


def test_the_chroma_gain_is_calibrated_and_travels_with_the_best_checkpoint(straight: Path, tmp_path: Path) -> None:
    """Each scored epoch's gain is in metrics.csv; best.safetensors holds its epoch's gain and
    load_generator puts it on the network (1 where a file has none; a damaged value is refused)."""
    table = rows(straight)
    extra = load_checkpoint(straight / "best.safetensors")[2]
    best = next(r for r in table if r["epoch"] == str(extra["best_epoch"]))
    assert extra["chroma_gain"] == pytest.approx(float(best["chroma_gain"]), rel=1e-5) and extra["chroma_gain"] >= 1
    g, _ = load_generator(straight / "best.safetensors")
    assert g.chroma_gain == extra["chroma_gain"]
    tensors, mcfg, extra = load_checkpoint(straight / "best.safetensors")
    for gain, ok in ((None, True), (2.5, True), (0, False), ("2", False), (9.0, False)):
        path = tmp_path / f"g{gain}.safetensors"
        save_checkpoint(path, tensors, mcfg, {k: v for k, v in extra.items() if k != "chroma_gain"} |
                        ({} if gain is None else {"chroma_gain": gain}))
        if ok:
            assert load_generator(path)[0].chroma_gain == (gain or 1.0)
        else:
            with pytest.raises(UserError, match=r"chroma_gain .* is not a number in \(0, 4\]"):
                load_generator(path)


def pale_network() -> tuple[UNet, torch.Tensor]:
    """A seeded untrained generator in eval mode, its output scaled up 3 times, and six test
    photos at its size (6, 3, 32, 32) uint8: its colours come out at about half of theirs."""
    torch.manual_seed(9)
    g = UNet(ModelConfig(size=32, width=8))
    with torch.no_grad():
        g.out.conv.weight.mul_(3)
    g.eval()
    return g, torch.from_numpy(np.stack([np.asarray(photo(i).resize((32, 32))) for i in range(6)])).permute(0, 3, 1, 2)


def test_calibration_raises_the_colourfulness_to_the_truths(tmp_path: Path) -> None:
    """A seeded network whose colours are paler than its photos' (measured 0.5 of theirs) comes
    out at COLORFUL_ENOUGH (0.8) times their colourfulness once calibrated (at 0.7 when that is
    the target): colourfulness is not quite proportional to the gain (8-bit rounding, gamut
    clipping), which the second, measured step corrects to within 5%. Gray truths leave it at
    gain 1; the gain never goes below 1."""
    g, color = pale_network()
    photos = Pairs(color.contiguous(), color[:, :1].contiguous(), [str(i) for i in range(6)])
    cpu = torch.device("cpu")
    pale = colorfulness_stats(g, photos, "lab", cpu)[0]
    gain = calibrate_gain(g, photos, "lab", cpu)
    assert g.chroma_gain == gain
    assert pale < 0.6 and gain > 1 and colorfulness_stats(g, photos, "lab", cpu)[0] == pytest.approx(0.8, abs=0.04)
    with torch.no_grad():
        g.out.conv.weight.mul_(10)  # now more colourful than enough: left as it is
    assert calibrate_gain(g, photos, "lab", cpu) == 1.0
    with torch.no_grad():
        g.out.conv.weight.div_(10)
    calibrate_gain(g, photos, "lab", cpu, target=0.7)  # a lower aim: less gain
    assert 1 < g.chroma_gain < gain and colorfulness_stats(g, photos, "lab", cpu)[0] == pytest.approx(0.7, abs=0.035)
    gray = Pairs(color[:, :1].expand(-1, 3, -1, -1).contiguous(), color[:, :1].contiguous(), photos.names)
    assert calibrate_gain(g, gray, "lab", cpu) == 1.0


def test_calibration_on_held_out_photos_keeps_a_margin_for_their_sampling_error() -> None:
    """With margin=MARGIN_SE the gain aims so that the colourfulness ratio less MARGIN_SE of its
    standard errors (the delta method's, for a ratio of means) reaches COLORFUL_ENOUGH, within
    the 5% of the measured step; never beyond the truth's own colourfulness. The truths here are
    the test photos partly desaturated, so their colourfulness varies from photo to photo as real
    photos' does (0.06 to 0.2 standard error), where the network's guesses from the same grays do
    not; a single photo has no standard error, hence no margin."""
    g, color = pale_network()
    luma = (color.double() * torch.tensor([0.299, 0.587, 0.114], dtype=torch.double).view(1, 3, 1, 1)).sum(1, keepdim=True)
    cpu = torch.device("cpu")

    def photos(saturation: list[float]) -> Pairs:
        share = torch.tensor(saturation, dtype=torch.double).view(-1, 1, 1, 1)
        faded = (luma + share * (color.double() - luma)).round().clamp(0, 255).to(torch.uint8)
        return Pairs(faded.contiguous(), color[:, :1].contiguous(), [str(i) for i in range(6)])

    def calibrated(pairs: Pairs, margin: float) -> tuple[float, float]:
        calibrate_gain(g, pairs, "lab", cpu, margin)
        return colorfulness_stats(g, pairs, "lab", cpu)

    some = photos([1, 0.6, 1, 0.8, 1, 0.7])
    assert calibrated(some, 0.0)[0] == pytest.approx(COLORFUL_ENOUGH, abs=0.04)
    ratio, se = calibrated(some, MARGIN_SE)
    assert ratio - MARGIN_SE * se == pytest.approx(COLORFUL_ENOUGH, abs=0.04) and ratio > COLORFUL_ENOUGH + 0.1
    made = _colorize_all(g, some, "lab", cpu).permute(0, 2, 3, 1).double().numpy() / 255
    m = np.array([metrics.colorfulness(im) for im in made])
    t = np.array([metrics.colorfulness(im) for im in some.color.permute(0, 2, 3, 1).double().numpy() / 255])
    assert ratio == pytest.approx(m.mean() / t.mean(), rel=1e-4)  # float32 torch against float64 numpy
    assert se == pytest.approx(np.std(m - ratio * t, ddof=1) / np.sqrt(6) / t.mean(), rel=1e-3)
    assert calibrated(photos([1, 0.3, 1, 0.5, 1, 0.2]), MARGIN_SE)[0] == pytest.approx(1.0, abs=0.04)  # the cap
    one = Pairs(some.color[:1], some.gray[:1], some.names[:1])
    assert calibrate_gain(g, one, "lab", cpu, MARGIN_SE) == calibrate_gain(g, one, "lab", cpu)


def test_a_mix_draws_each_data_sets_share_of_every_epoch() -> None:
    """Groups of 10, 30 and 4 photos mixed 2:1:1: an epoch of 44 takes 22, 11 and 11 photos;
    each data set's photos come once before any comes twice (the 4 repeat, the 30 do not)."""
    order = epoch_order(44, 0, 1, Dist(), 40, 0.5, [10, 30, 4], [2, 1, 1]).index
    counts = [((order >= lo) & (order < hi)).sum().item() for lo, hi in ((0, 10), (10, 40), (40, 44))]
    assert counts == [22, 11, 11]
    per_photo = torch.bincount(order, minlength=44)
    assert set(per_photo[:10].tolist()) == {2, 3} and set(per_photo[10:40].tolist()) <= {0, 1}
    assert set(per_photo[40:].tolist()) <= {2, 3} and per_photo[40:].sum() == 11
    assert torch.equal(order, epoch_order(44, 0, 1, Dist(), 40, 0.5, [10, 30, 4], [2, 1, 1]).index)


def test_also_trains_on_more_photos_but_scores_on_datas_test_split(data: Path, tmp_path: Path, capsys) -> None:
    more = make_prep(tmp_path / "more", 6, 3, size=48)
    run = tmp_path / "run"
    assert cli("train", data, "--also", more, "--mix", "3,1", *TINY, "--epochs", "1", "--out", run) == 0
    err = capsys.readouterr().err
    assert f"{data} (prep output) (8 photos, 75%) + {more} (6 photos, 25%): 14 train, 2 test photos at 32 px" in err
    cfg = read_config(run)
    assert (cfg.also, cfg.mix) == ([str(more)], [3.0, 1.0])
    assert cli("train", data, "--also", more, "--mix", "1,1,1", *TINY, "--out", tmp_path / "r2") == 1
    assert "error: --mix needs 2 shares of 0 or more (DATA's, then each --also's), not all 0; got 1,1,1" in \
        capsys.readouterr().err


def test_validation_photos_are_a_fixed_fifth_at_most_of_the_training_split(tmp_path: Path) -> None:
    """200 training pairs: 40 held out (a fifth, under the 64 asked for), always the same 40 (the
    first by the sha256 of their paths, whatever the order they are listed in), whole, at the
    training size, and no longer trained on. Fewer than 32 would judge by chance: 159 pairs
    (31 at most) hold none."""
    root = make_prep(tmp_path / "d", 200, 2, size=48)
    data = load_data(root, 32, hold_out=64)
    held = [11, 19, 25, 36, 37, 48, 61, 82, 84, 91, 93, 98, 103, 108, 110, 112, 113, 120, 121, 123, 126, 127, 130,
            136, 148, 151, 152, 158, 162, 164, 166, 181, 187, 188, 190, 191, 192, 195, 196, 199]
    assert sorted(data.val.names) == sorted(f"img{i:02d}.png" for i in held)
    assert len(data.train) == 160 and not set(data.train.names) & set(data.val.names)
    assert data.test.names == ["img200.png", "img201.png"]
    paths = [f"train/img{i:02d}.png" for i in range(200)]
    assert held_out(paths[::-1], 64) == held_out(paths, 64) and len(held_out(paths, 32)) == 32
    for i, name in enumerate(data.val.names):
        color, gray = (h.resize((32, 32), RESAMPLE) for h in read_pair(root / "train" / name))
        assert np.array_equal(data.val.color[i].permute(1, 2, 0).numpy(), np.asarray(color))
        assert np.array_equal(data.val.gray[i, 0].numpy(), np.asarray(gray))
    assert load_data(root, 32).val is None
    assert held_out(paths[:159], 64) == set()


def test_validation_photos_pick_the_best_epoch_and_calibrate_the_gain(tmp_path: Path, capsys, monkeypatch) -> None:
    """With held-out photos the gain is calibrated on them (at every scoring, with a margin), and their
    per-photo shares of the selection score go to scoring.Pick, which names the best epoch; the
    test split only reports. --val-photos 0: the test split picks, and training photos calibrate."""
    calibrated_on: list[tuple[list[str], float, float]] = []
    scored: list[tuple[list[str], dict, torch.Tensor]] = []

    def spy_gain(g: UNet, photos: Pairs, space: str, device: torch.device, margin: float, target: float) -> float:
        calibrated_on.append((photos.names, margin, target))
        return calibrate_gain(g, photos, space, device, margin, target)

    def spy_scores(g: UNet, photos: Pairs, space: str, device: torch.device, enough: float) -> tuple[dict, torch.Tensor]:
        scored.append((photos.names, *evaluate_photos(g, photos, space, device, enough)))
        return scored[-1][1:]

    def replayed_pick(names: list[str], enough: float = COLORFUL_ENOUGH) -> int:
        pick, best = Pick(), 0
        for epoch, (_, scores, shares) in enumerate((c for c in scored if c[0] == names), 1):
            if pick.scored(selection_score(scores, enough), shares, first=best == 0):
                best = epoch
        return best

    monkeypatch.setattr("colorize_cli.train.calibrate_gain", spy_gain)
    monkeypatch.setattr("colorize_cli.train.evaluate_photos", spy_scores)
    root = make_prep(tmp_path / "d", 160, 2)
    run = tmp_path / "run"
    assert cli("train", root, *TINY, "--batch-size", "16", "--epochs", "3", "--out", run) == 0
    assert "128 train, 32 validation, 2 test photos at 32 px" in capsys.readouterr().err
    val = load_data(root, 32, hold_out=64).val.names
    assert calibrated_on == [(val, MARGIN_SE, COLORFUL_ENOUGH)] * 3  # held out: a margin for their sampling error
    assert [c[0] for c in scored] == [["img160.png", "img161.png"], val] * 3
    assert load_checkpoint(run / "best.safetensors")[2]["epoch"] == replayed_pick(val)
    for r in rows(run):  # metrics.csv keeps 6 significant digits: 3 values rounded by 5e-6 of themselves at most
        assert float(r["val_score"]) == pytest.approx(selection_score(
            {"ciede2000": float(r["val_ciede2000"]), "colorfulness": float(r["val_colorfulness"])}), rel=1.6e-5)
    scored.clear()
    plain = tmp_path / "plain"
    assert cli("train", root, *TINY, "--batch-size", "16", "--epochs", "3", "--val-photos", "0", "--colorfulness", "0.5",
               "--out", plain) == 0
    assert "160 train, 2 test photos" in capsys.readouterr().err
    assert {r["val_score"] for r in rows(plain)} == {"nan"}
    # CALIBRATION_PHOTOS training photos, aimed at --colorfulness
    assert calibrated_on[3:] == [(load_data(root, 32).train.names[:64], 0.0, 0.5)] * 3
    assert read_config(plain).colorfulness == 0.5
    assert load_checkpoint(plain / "best.safetensors")[2]["epoch"] == replayed_pick(["img160.png", "img161.png"], 0.5)
    for r in rows(plain):  # the test split's score charges paleness below 0.5 of the truth's colourfulness
        assert float(r["test_score"]) == pytest.approx(selection_score(
            {"ciede2000": float(r["test_ciede2000"]), "colorfulness": float(r["test_colorfulness"])}, 0.5), rel=1.6e-5)
    assert cli("train", root, *TINY, "--colorfulness", "1.5", "--out", tmp_path / "r") == 1
    assert "error: --colorfulness must be above 0 and at most 1, got 1.5" in capsys.readouterr().err
    assert cli("train", root, *TINY, "--val-photos", "31", "--out", tmp_path / "r") == 1
    assert "error: --val-photos must be 0 or at least 32 (fewer would judge by chance), got 31" in \
        capsys.readouterr().err


def test_the_best_epoch_is_the_latest_not_clearly_worse_than_the_lowest() -> None:
    """Per-photo shares of 4 photos: a later epoch a little worse (mean +0.05, within twice the
    standard error of the differences) takes over; one worse on every photo (+1.05, standard
    error 0.05) does not; a lower score always does, and becomes what later ones are held to,
    so a decline of 0.15 that would pass against the last pick is caught against it. Without
    shares to pair (before, other photos, one photo) the lower score wins; a gray (infinite)
    score loses to any finite one and never wins after the first scoring."""
    pick = Pick()
    t = torch.tensor
    assert pick.scored(10.0, t([10.0, 10, 10, 10], dtype=torch.float64), first=True)
    assert pick.scored(10.05, t([10.5, 9.5, 10.6, 9.6], dtype=torch.float64), first=False)
    assert (pick.lowest, pick.shares.tolist()) == (10.0, [10.0] * 4)
    assert not pick.scored(11.05, t([11.0, 11, 11, 11.2], dtype=torch.float64), first=False)
    assert pick.scored(9.0, t([9.0, 9, 9, 9], dtype=torch.float64), first=False) and pick.lowest == 9.0
    assert pick.scored(9.06, t([9.12, 8.94, 9.15, 9.03], dtype=torch.float64), first=False)  # +0.06 ± 0.05
    # +0.15 on every photo: caught against the lowest; against the last pick it is +0.09 ± 0.048, which would pass
    assert not pick.scored(9.1525, t([9.15, 9.15, 9.15, 9.16], dtype=torch.float64), first=False)
    assert Pick(9.0, None).scored(9.5, t([9.5, 9.5]), first=False) is False
    assert Pick(9.0, t([9.0, 9.0])).scored(8.9, t([8.9, 8.9, 8.9]), first=False) is True
    assert Pick(9.0, t([9.0])).scored(9.01, t([9.01]), first=False) is False
    gray = Pick()
    assert gray.scored(math.inf, t([math.inf] * 2), first=True)
    assert gray.scored(12.0, t([12.0, 12.0]), first=False) and gray.lowest == 12.0
    assert not gray.scored(math.inf, t([math.inf] * 2), first=False)


def test_a_run_from_before_the_new_recipe_resumes_with_its_own(straight: Path, tmp_path: Path, capsys) -> None:
    """A run folder as runs wrote them before the time budget and the selection score: no
    gan_weight, chroma_gain, crop_min in config.json (every run trained the GAN on whole photos
    without a gain), no CIEDE2000 or score columns in metrics.csv, a best_l1 and schedulers in
    the checkpoint. It resumes with its own recipe; the old rows read back as NaN."""
    old = tmp_path / "old"
    shutil.copytree(straight, old, ignore=shutil.ignore_patterns(".train.lock"))
    cfg = json.loads((old / "config.json").read_text())
    for key in ("gan_weight", "chroma_gain", "crop_min", "also", "mix", "time", "val_photos"):
        cfg.pop(key)
    (old / "config.json").write_text(json.dumps(cfg))
    old_fields = [f for f in CSV_FIELDS if f not in ADDED_FIELDS]
    table = rows(old)
    with open(old / "metrics.csv", "w", newline="") as f:
        f.write(",".join(old_fields) + "\n" + "".join(",".join(r[k] for k in old_fields) + "\n" for r in table))
    for name in ("last.safetensors", "best.safetensors"):
        tensors, mcfg, extra = load_checkpoint(old / name)
        extra = {k: v for k, v in extra.items() if k not in ("seconds", "best_score", "chroma_gain")}
        save_checkpoint(old / name, tensors, mcfg, extra | {"best_l1": 0.2, "scheduler_g": {}, "scheduler_d": {}})
    back = read_config(old)
    assert (back.gan_weight, back.chroma_gain, back.crop_min, back.also, back.mix, back.time, back.val_photos) == \
        (1.0, False, 1.0, [], [], 0, 0)
    assert cli("train", "--resume", old, "--epochs", "3") == 0
    after = rows(old)
    assert [r["epoch"] for r in after] == ["1", "2", "3"]
    assert after[0]["test_score"] == "nan" and after[2]["test_score"] != "nan"
    assert float(after[2]["d_loss"]) > 0 and after[2]["chroma_gain"] == "1"  # the GAN, without a gain
    assert load_checkpoint(old / "best.safetensors")[2]["epoch"] == 3  # nothing to beat: the first scored epoch
    cfg["mix"] = "2,1"
    (old / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match=r"config.json: mix must be a list of numbers, not '2,1'"):
        read_config(old)


def test_help_names_the_defaults_of_a_cpu_and_a_gpu(capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    assert cli("train", "--help") == 0
    words = " ".join(capsys.readouterr().out.replace("│", " ").split())
    for text in ("[default on a CPU unless --epochs is given: 10m;", "[default: 64 on a GPU, 32 on a CPU]",
                 "[default: 200 on a GPU;", "[default: 0.5]", "no discriminator [default: 0]",
                 "GAN weight 1, lsgan + 100 x L1, 200 epochs, no chroma gain"):
        assert text in words


def test_a_budget_spent_as_an_epoch_begins_ends_with_the_last_epoch_scored(data: Path, tmp_path: Path,
                                                                           monkeypatch) -> None:
    """A clock that moves 1 s per reading (one before each step, one after each epoch; 4 steps
    an epoch), a 10.5 s budget and scoring only at its end: epoch 2 ends at 10 s, unscored; the
    first reading of epoch 3 is past the budget, so epoch 3 never starts and epoch 2 is scored
    and saved as the run's last and best."""
    import colorize_cli.train as train_module

    def tick(clock: train_module.Clock) -> float:
        clock.run.seconds += 1.0
        return clock.run.seconds

    monkeypatch.setattr(train_module.Clock, "tick", tick)
    monkeypatch.setattr(train_module, "EVAL_SHARE", 10.0)  # never due before the budget is spent
    run = tmp_path / "run"
    assert cli("train", data, *TINY, "--time", "10.5s", "--checkpoint-every", "0", "--out", run) == 0
    assert [r["epoch"] for r in rows(run)] == ["2"] and rows(run)[0]["train_seconds"] == "12"  # read at its scoring
    last, best = (load_checkpoint(run / name)[2] for name in ("last.safetensors", "best.safetensors"))
    assert (last["epoch"], last["step"], best["epoch"]) == (2, 0, 2)
