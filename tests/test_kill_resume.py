"""Training killed with SIGKILL at random moments loses nothing (issue 8).

`colorize train` runs in a subprocess on tiny data (16 px photos, a width-4 network, short
epochs, a checkpoint after each) and is killed with SIGKILL: once the moment config.json is
written (before any checkpoint), then at moments drawn from a seeded generator among the
points of its writes (the start, the middle and the end of every file it writes). The process
halts at the drawn point and says so on its stdout; the test kills it then, so what a kill
leaves behind does not depend on timing. After every kill each *.safetensors in the run
folder loads completely, and `--resume` goes on from the last complete checkpoint; the
finished run equals, bit for bit, one that was never interrupted. A checkpoint for another
network is a clear error.
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
from pathlib import Path

import pytest
import torch
from badfiles import photo

from colorize_cli.cli import main
from colorize_cli.checkpoint import load_checkpoint, save_checkpoint
from colorize_cli.model import ModelConfig, build

EPOCHS = 24  # enough that no killed process can finish: each halts within a few epochs of its start
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


# `colorize train ARGS` that halts at one point of its writes: it prints "halted at POINT" and
# waits on its stdin (which the test never writes to) until it is killed. The points are the
# start and the end of every file a run writes (config.json, metrics.csv, curves.png,
# samples, checkpoints) and the middle of every checkpoint write (its temporary file cut to
# half, as a kill during the write leaves it). argv[1]: "config" halts once config.json is
# written; a number N at the Nth point counted from the end of this process's first checkpoint;
# a point's name at its first occurrence after that.
_HALTING_TRAIN = """
import os, sys
import safetensors.torch
import colorize_cli.checkpoint as checkpoint
import colorize_cli.runlog as runlog
import colorize_cli.train as train
from colorize_cli.cli import main

spec = sys.argv[1]
seen = {"checkpoints": 0, "points": 0}

def point(name, before_halting=None):
    if spec == "config":
        hit = name == "write_config:end"
    elif seen["checkpoints"]:
        seen["points"] += 1
        hit = seen["points"] == int(spec) if spec.isdigit() else name == spec
    else:
        hit = False
    if hit:
        if before_halting:
            before_halting()
        print("halted at", name, flush=True)
        sys.stdin.read()
        os._exit(3)  # the test ended without killing this process

def hooked(name, write):
    def wrapper(*args, **kwargs):
        point(name + ":start")
        write(*args, **kwargs)
        seen["checkpoints"] += name == "save_checkpoint"
        point(name + ":end")
    return wrapper

for module, name in ((train, "write_config"), (runlog, "write_metrics"), (runlog, "plot_curves"),
                     (runlog, "save_image"), (checkpoint, "save_checkpoint")):
    setattr(module, name, hooked(name, getattr(module, name)))
real_save_file = safetensors.torch.save_file

def save_file(tensors, filename, metadata=None):
    real_save_file(tensors, filename, metadata=metadata)
    point("save_checkpoint:middle", lambda: os.truncate(filename, os.path.getsize(filename) // 2))

safetensors.torch.save_file = save_file
main(["train", *sys.argv[2:]])
"""


def halting_train(spec: str, log: Path, *args: str | Path) -> subprocess.Popen:
    """`colorize train ARGS` halting at the point `spec` (see _HALTING_TRAIN); stderr goes to
    `log` (a pipe nobody reads could fill up and stop the process before it halts)."""
    with open(log, "w") as err:
        return subprocess.Popen([sys.executable, "-c", _HALTING_TRAIN, spec, *map(str, args)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True)


def kill_when_halted(proc: subprocess.Popen, log: Path) -> str:
    """SIGKILL the process once it has halted; the point where it was."""
    line = proc.stdout.readline()
    if not line.startswith("halted at "):
        proc.kill()
        pytest.fail(f"training did not halt (exit code {proc.wait(TIMEOUT)}): {line}{log.read_text()}")
    kill(proc)
    return line.split()[-1]


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


def test_sigkill_at_random_moments_then_resume_equals_an_uninterrupted_run(photos, tmp_path) -> None:
    ref_run = tmp_path / "reference"
    reference = subprocess.Popen(train_cmd(photos, "--out", ref_run, "--epochs", EPOCHS, *NET, *RUN_ARGS),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    run = tmp_path / "run"
    rng = random.Random(8)

    # 1. Killed the moment config.json is written: no checkpoint yet.
    log = tmp_path / "train-0.log"
    assert kill_when_halted(halting_train("config", log, photos, "--out", run, "--epochs", EPOCHS, *NET, *RUN_ARGS),
                            log) == "write_config:end"
    assert check_run_folder(run) == 0
    # 2. Killed halfway through writing a checkpoint, then at seeded random points of the writes,
    # each time after resuming and saving at least one checkpoint of its own (about 12 points an epoch).
    kills_after, points = [], []
    for k, spec in enumerate(["save_checkpoint:middle"] + [str(rng.randint(1, 36)) for _ in range(RANDOM_KILLS)], 1):
        log = tmp_path / f"train-{k}.log"
        points.append(kill_when_halted(halting_train(spec, log, "--resume", run), log))
        kills_after.append(check_run_folder(run))
    assert points[0] == "save_checkpoint:middle"  # a kill left a half-written checkpoint behind
    proc = resume(run)
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


# save_checkpoint rewriting one file, version after version, halting while it writes version
# argv[2] at the point argv[3]: "empty" (the temporary file made, nothing in it), "middle" (the
# temporary file half written), "written" (complete, not yet renamed) or "renamed" (just renamed
# over the file). It prints "halted" and waits to be killed, as _HALTING_TRAIN does.
_WRITER = """
import os, sys, torch
import safetensors.torch
from colorize_cli.checkpoint import save_checkpoint
from colorize_cli.model import ModelConfig

target, version, where = sys.argv[1], int(sys.argv[2]), sys.argv[3]
real_save_file, real_replace = safetensors.torch.save_file, os.replace

def halt(at):
    if n == version and where == at:
        print("halted", flush=True)
        sys.stdin.read()
        os._exit(3)

def save_file(tensors, filename, metadata=None):
    halt("empty")
    real_save_file(tensors, filename, metadata=metadata)
    if n == version and where == "middle":
        os.truncate(filename, os.path.getsize(filename) // 2)
    halt("middle")

def replace(src, dst):
    halt("written")
    real_replace(src, dst)
    halt("renamed")

safetensors.torch.save_file, os.replace = save_file, replace
cfg = ModelConfig(size=16, width=4)
big = {f"t{i}": torch.full((1 << 16,), float(i)) for i in range(8)}
for n in range(1, version + 1):
    save_checkpoint(target, {k: v + n for k, v in big.items()}, cfg, {"n": n})
"""


@pytest.mark.parametrize("where", ["empty", "middle", "written", "renamed"])
def test_a_checkpoint_write_killed_midway_leaves_the_previous_one(tmp_path, where: str) -> None:
    """save_checkpoint rewriting one file, SIGKILLed at each point of a write of a version
    drawn from a seeded generator: the file always loads and holds one complete version (all
    tensors from the same write), the previous one until the rename, and the file's folder
    holds nothing else but the temporary file."""
    target = tmp_path / "last.safetensors"
    version = random.Random(where).randint(2, 5)
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(target), str(version), where],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "halted\n"
    kill(proc)
    tensors, cfg, extra = load_checkpoint(target)
    n = extra["n"]
    assert n == (version if where == "renamed" else version - 1)
    assert all(torch.equal(tensors[f"t{i}"], torch.full((1 << 16,), float(i + n))) for i in range(8))
    left = sorted(p.name for p in tmp_path.iterdir() if p != target)
    assert len(left) == (where != "renamed") and all(p.startswith(".last.safetensors.") and p.endswith(".tmp")
                                                     for p in left)


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
