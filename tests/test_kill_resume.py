"""Training killed with SIGKILL at random moments loses nothing (issue 8).

`colorize train` runs in a subprocess on tiny data (16 px photos, a width-4 network, many
short epochs, so checkpoints are written every few hundredths of a second) and is killed
with SIGKILL: once the moment its run folder appears (before any checkpoint), then at random
moments. After every kill each *.safetensors in the run folder loads completely, and
`--resume` goes on from the last complete checkpoint; the finished run equals, bit for bit,
one that was never interrupted. A checkpoint for another network is a clear error.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from badfiles import photo

from colorize_cli.cli import main
from colorize_cli.model import ModelConfig, build, load_checkpoint, save_checkpoint

EPOCHS = 60
NET = ["--size", "16", "--width", "4"]
RUN_ARGS = ["--batch-size", "4", "--device", "cpu", "--threads", "1", "--seed", "0", "--checkpoint-every", "0"]
RANDOM_KILLS = 3
TIMEOUT = 120  # seconds any one training process may take


def train_cmd(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "colorize_cli", "train", *map(str, args)]


def cli(*args: str | Path) -> tuple[int, str]:
    """`colorize ARGS` in this process: (exit code, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = int(e.code or 0)
    return code, err.getvalue()


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for i in range(10):
        photo(500 + i, (24, 24)).save(folder / f"p{i}.png")
    return folder


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = TIMEOUT) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"training ended before {path.name} appeared: {proc.communicate()}"
        assert time.monotonic() < end, f"no {path} after {timeout} s"
        time.sleep(0.005)


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(TIMEOUT)


def check_run_folder(run: Path) -> int:
    """Everything a kill can leave is whole: every checkpoint loads, config.json and
    metrics.csv parse, metrics has epochs 1..N once each. Returns the last checkpoint's epoch."""
    for ckpt in run.glob("*.safetensors"):
        tensors, cfg, extra = load_checkpoint(ckpt)  # raises on a partial file
        assert cfg.width == 4 and tensors and "epoch" in extra
    json.loads((run / "config.json").read_text())
    last = load_checkpoint(run / "last.safetensors")[2]["epoch"] if (run / "last.safetensors").exists() else 0
    if (run / "metrics.csv").exists():
        with open(run / "metrics.csv", newline="") as f:
            epochs = [int(r["epoch"]) for r in csv.DictReader(f)]
        assert epochs == list(range(1, len(epochs) + 1))
        assert len(epochs) >= last  # a row is written before its checkpoint
    return last


def resume(run: Path) -> subprocess.Popen:
    return subprocess.Popen(train_cmd("--resume", run), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_new_checkpoint(path: Path, proc: subprocess.Popen, after: int) -> None:
    """Until the training process has saved at least one checkpoint of its own (mtime past
    `after`), so that the kill that follows lands in the middle of training."""
    end = time.monotonic() + TIMEOUT
    while not path.exists() or path.stat().st_mtime_ns == after:
        assert proc.poll() is None, f"training ended before a new checkpoint: {proc.communicate()}"
        assert time.monotonic() < end, f"no new {path} after {TIMEOUT} s"
        time.sleep(0.005)


def test_sigkill_at_random_moments_then_resume_equals_an_uninterrupted_run(photos, tmp_path) -> None:
    ref_run = tmp_path / "reference"
    reference = subprocess.Popen(train_cmd(photos, "--out", ref_run, "--epochs", EPOCHS, *NET, *RUN_ARGS),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    run = tmp_path / "run"
    rng = random.Random(8)

    # 1. Killed the moment the run folder appears: no checkpoint yet, only config.json.
    proc = subprocess.Popen(train_cmd(photos, "--out", run, "--epochs", EPOCHS, *NET, *RUN_ARGS),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(run / "config.json", proc)
    kill(proc)
    assert check_run_folder(run) == 0
    # 2. Killed at random moments, each time after resuming and training a little.
    last = run / "last.safetensors"
    proc, before = resume(run), 0
    kills_after = []
    for _ in range(RANDOM_KILLS):
        wait_for_new_checkpoint(last, proc, before)
        time.sleep(rng.uniform(0.0, 0.3))
        assert proc.poll() is None, "training finished before it could be killed; raise EPOCHS"
        kill(proc)
        done = check_run_folder(run)
        kills_after.append(done)
        proc, before = resume(run), last.stat().st_mtime_ns
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err
    assert f"resuming after epoch {kills_after[-1]}" in err  # the last complete checkpoint
    assert check_run_folder(run) == EPOCHS
    assert kills_after == sorted(set(kills_after)) and kills_after[-1] < EPOCHS  # each resume made progress

    # The interrupted run ends exactly where the uninterrupted one does.
    assert reference.wait(TIMEOUT) == 0, reference.stderr.read()
    ours, _, extra = load_checkpoint(run / "last.safetensors")
    theirs, _, ref_extra = load_checkpoint(ref_run / "last.safetensors")
    assert extra["epoch"] == ref_extra["epoch"] == EPOCHS
    weights = [k for k in theirs if k.startswith(("generator.", "discriminator."))]
    assert weights and all(torch.equal(ours[k], theirs[k]) for k in weights)
    # Kills mid-write can leave atomic_path's temporary files, never a *.safetensors.
    assert all(p.name.startswith(".") and p.name.endswith(".tmp") for p in run.iterdir() if p.suffix == ".tmp")


_WRITER = """
import sys, torch
from colorize_cli.model import ModelConfig, save_checkpoint
cfg = ModelConfig(size=16, width=4)
big = {f"t{i}": torch.full((1 << 20,), float(i)) for i in range(8)}  # 32 MB a file
n = 0
while True:
    n += 1
    save_checkpoint(sys.argv[1], {k: v + n for k, v in big.items()}, cfg, {"n": n})
    print(n, flush=True)
"""


def test_a_checkpoint_write_killed_midway_leaves_the_previous_one(tmp_path) -> None:
    """save_checkpoint rewriting one file in a loop, SIGKILLed at random: the file always
    loads and holds one complete version (all tensors from the same write)."""
    target = tmp_path / "last.safetensors"
    rng = random.Random(3)
    versions = []
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(target)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "1"  # one complete file exists
        time.sleep(rng.uniform(0.0, 0.4))
        kill(proc)
        tensors, cfg, extra = load_checkpoint(target)
        n = extra["n"]
        assert all(float(tensors[f"t{i}"][0]) == i + n and float(tensors[f"t{i}"][-1]) == i + n for i in range(8))
        versions.append(n)
    assert max(versions) > 1  # some kills came after several rewrites


# --- checkpoints for another network ------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(photos, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("finished") / "run"
    r = subprocess.run(train_cmd(photos, "--out", run, "--epochs", "1", *NET, *RUN_ARGS),
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    return run


def _copy(run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


def test_resume_with_another_network_option_is_a_clear_error(finished_run, tmp_path) -> None:
    run = _copy(finished_run, tmp_path)
    code, err = cli("train", "--resume", run, "--epochs", "2", "--width", "8")
    assert code == 1 and "Traceback" not in err and "run with --debug" not in err
    assert err.strip() == (f"error: --width 8 does not match the run's 4 ({run / 'config.json'}): a resumed run keeps "
                           "its network; drop the option or start a new run")


def test_a_checkpoint_that_config_json_does_not_describe_is_a_clear_error(finished_run, tmp_path) -> None:
    run = _copy(finished_run, tmp_path)
    config = json.loads((run / "config.json").read_text())
    config["model"]["width"] = 8
    (run / "config.json").write_text(json.dumps(config))
    code, err = cli("train", "--resume", run, "--epochs", "2")
    assert code == 1 and "Traceback" not in err and "run with --debug" not in err
    line = err.strip()
    assert line.startswith(f"error: {run / 'last.safetensors'} holds a 16 px lab width-4") and "width-8" in line, line


def test_weights_that_do_not_fit_their_own_config_are_a_clear_error(finished_run, tmp_path) -> None:
    """A checkpoint whose metadata says width 4 but whose tensors are a width-8 network
    (a hand-edited or mixed-up file): infer and train --resume say so, no shape traceback."""
    run = _copy(finished_run, tmp_path)
    tensors, cfg, extra = load_checkpoint(run / "last.safetensors")
    g, d = build(ModelConfig(size=16, width=8))
    swapped = {**tensors, **{f"generator.{k}": v for k, v in g.state_dict().items()},
               **{f"discriminator.{k}": v for k, v in d.state_dict().items()}}
    save_checkpoint(run / "last.safetensors", swapped, cfg, extra)
    save_checkpoint(run / "best.safetensors", swapped, cfg, extra)
    photo(1, (24, 24)).save(tmp_path / "in.png")
    for args in (["train", "--resume", run, "--epochs", "2"],
                 ["infer", tmp_path / "in.png", tmp_path / "out.png", "--model", run, "--device", "cpu"]):
        code, err = cli(*args)
        assert code == 1 and "Traceback" not in err and "run with --debug" not in err, err
        assert re.search(r"checkpoint does not match the network its config describes \(shape of \S+ is", err), err
    assert not (tmp_path / "out.png").exists()
