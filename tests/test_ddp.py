"""Training on several processes: DistributedDataParallel over gloo on the CPU."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image
from safetensors.torch import load_file, save_file

from colorize_cli.checkpoint import load_checkpoint
from colorize_cli.pairs import make_pair
from colorize_cli.train import configure, train

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed")


def make_prep(root: Path, n_train: int, n_test: int, size: int = 32) -> Path:
    """A prep-style data set of random colourful photos."""
    for i in range(n_train + n_test):
        split = "train" if i < n_train else "test"
        (root / split).mkdir(parents=True, exist_ok=True)
        img = Image.fromarray(np.random.default_rng(i).integers(0, 256, (size, size, 3), dtype=np.uint8))
        make_pair(img, size, "crop").save(root / split / f"img{i:02d}.png")
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, data: str, out: str, results: str, recipe: dict) -> None:
    """One process as torchrun would start it (same environment variables)."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    cfg = configure(data, out, None, None, {"size": 32, "width": 8, "batch_size": 2, "threads": 1, **recipe})
    result = train(cfg)
    state = {**{f"generator.{k}": v for k, v in result.generator.state_dict().items()},
             **{f"discriminator.{k}": v for k, v in result.discriminator.state_dict().items()}}
    save_file({k: v.contiguous() for k, v in state.items()}, os.path.join(results, f"rank{rank}.safetensors"))


@pytest.mark.parametrize("recipe", [{"epochs": 2}, {"time": 2.0, "gan_weight": 1.0}])
def test_two_gloo_processes_end_with_identical_weights(tmp_path: Path, recipe: dict) -> None:
    """Also with a time budget, where the learning rate follows the clock: the processes take
    the largest of their clocks, so they agree on it, and on when the run ends."""
    data = make_prep(tmp_path / "data", 8, 2)  # 4 photos per process: 2 steps of 2 per epoch
    out, results = tmp_path / "run", tmp_path / "results"
    results.mkdir()
    mp.spawn(_worker, args=(2, free_port(), str(data), str(out), str(results), recipe), nprocs=2, join=True)
    r0, r1 = load_file(results / "rank0.safetensors"), load_file(results / "rank1.safetensors")
    assert r0.keys() == r1.keys() and len(r0) > 50
    assert all(torch.equal(r0[k], r1[k]) for k in r0)  # weights and BatchNorm statistics
    saved, _, extra = load_checkpoint(out / "last.safetensors")
    assert all(torch.equal(saved[k], r0[k]) for k in r0)
    assert extra["world_size"] == 2 and {"rng.cpu.0", "rng.cpu.1"} <= saved.keys()
    # Each process trained on its own shard: the networks moved away from their common start.
    torch.manual_seed(0)
    from colorize_cli.model import ModelConfig, build
    start = build(ModelConfig(size=32, width=8))[0].state_dict()
    assert not torch.equal(start["down.0.conv.weight"], r0["generator.down.0.conv.weight"])
    with open(out / "metrics.csv", newline="") as f:  # written once, by rank 0
        epochs = [int(r["epoch"]) for r in csv.DictReader(f)]
    if "epochs" in recipe:
        assert epochs == [1, 2]
    else:
        assert epochs == sorted(set(epochs)) and extra["seconds"] >= 2 and extra["epoch"] == epochs[-1]


def test_torchrun_runs_the_cli(tmp_path: Path) -> None:
    """The documented command line; only rank 0 logs and writes."""
    data = make_prep(tmp_path / "data", 4, 2)
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "colorize_cli",
         "train", str(data), "--size", "32", "--width", "8", "--epochs", "1", "--batch-size", "1", "--threads", "1",
         "--device", "cpu", "--out", str(out)],
        capture_output=True, text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("epoch 1/1") == 1 and "x 2 processes" in proc.stderr
    assert proc.stdout.count("test PSNR, dB (best: epoch 1)") == 1
    assert sorted(p.name for p in out.iterdir()) == [
        ".train.lock", "best.safetensors", "config.json", "curves.png", "last.safetensors", "metrics.csv", "samples"]
