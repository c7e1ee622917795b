"""`colorize train`: the pix2pix conditional GAN training loop, on a CPU, one GPU or many.

One step (Isola et al. 2017, as the original project trained it):
1. G colors a batch of gray photos: fake = G(gray).
2. D learns to answer 1 on every patch of a real pair and 0 on every patch of a fake one:
   loss_D = 0.5 * (gan(D(gray, real), 1) + gan(D(gray, fake), 0)).
3. G learns to make D answer 1 and to stay near the truth:
   loss_G = gan_weight * gan(D(gray, fake), 1) + l1_weight * mean|fake - real|   (in [-1, 1] units).
gan() is least squares, (logit - target)^2 ("lsgan", the original project's), or the logistic
loss on logits ("vanilla", the pix2pix paper's). With gan_weight 0 (the default recipe, which
measured better than any adversarial weight tried; see the README) step 2 is skipped and G
learns from L1 alone.

Each photo of a batch is a random crop of a training photo (its side a random share in
[crop_min, 1] of the photo's, so objects are seen at many scales), scaled to the training size
and flipped at random. The learning rate is constant for the first half of the epochs (with
--time: of the time), then falls linearly towards 0. After each epoch (with --time: every
EVAL_SHARE of it) G's chroma gain is calibrated (scoring.calibrate_gain) and G is scored: on
the validation photos held out of DATA's training split (--val-photos), whose selection scores
pick the best epoch (scoring.Pick), and on the test split, which only reports. A
score that picks among epochs is flattered on the photos it picked on, and a gain calibrated on
photos the network has learnt comes out too weak on new ones; held-out photos answer both.

A run folder (RUN, `--out`) holds config.json (every setting), metrics.csv (one row per
scoring), samples/epoch_NNN.png (gray | generated | real for the same test photos), curves.png
(all written by runlog.py), last.safetensors and best.safetensors (the best epoch, with its
chroma gain), written at most every 30 s (--checkpoint-every) and always at the end or a stop.
Both checkpoints carry everything `--resume` needs to go on bit for bit (checkpoint.py).

Many processes (`torchrun --nproc-per-node=N -m colorize_cli train DATA`): each takes its own
shard of every epoch's shuffled order (what DistributedSampler does), gradients are averaged
by DistributedDataParallel (NCCL on GPUs, gloo on CPUs), and only rank 0 writes files or logs
(processes.py). --batch-size is per process, so the global batch is N times it.
"""

from __future__ import annotations

import json
import math
import os
import time
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from datetime import datetime
from pathlib import Path
from typing import get_args

import torch
import torch.nn as nn
import torch.nn.functional as F
from rich.markup import escape

from colorize_cli.checkpoint import Checkpointer, RunState, State, load_checkpoint, load_state, load_training
from colorize_cli.choices import GanLoss, Optimizer
from colorize_cli.color import encode_input, encode_target
from colorize_cli.data import HOLD_OUT_MIN, DataSet, Pairs, load_data, whole_photos
from colorize_cli.device import Device, autocast_bf16, ensure_gpu_memory, native_bf16, pick_device
from colorize_cli.errors import UserError
from colorize_cli.files import atomic_path, ensure_memory, exclusive_lock, make_folder, read_reason
from colorize_cli.hints import simulate
from colorize_cli.model import ModelConfig, PatchGAN, UNet, build
from colorize_cli.pairs import PrepConfig, native_size
from colorize_cli.processes import Dist, StopFlag, catch_stop, cpu_threads, start_processes
from colorize_cli.runlog import Reporter, RunLog, RunSummary, console, read_metrics, sample_sheet
from colorize_cli.scoring import COLORFUL_ENOUGH, MARGIN_SE, Pick, calibrate_gain, evaluate_photos, gray_baseline, selection_score
from colorize_cli.terminal import format_duration, plural, skipped

# The original project's recipe (its report): RGB in and out as its Keras model had, one photo
# per step, least-squares adversarial loss plus 100 x L1, 200 epochs. Options given with
# `--preset seed` win over these. The rest stays as for any run (TrainConfig's Adam settings,
# the learning-rate decay); the report's text also names SGD, at SGD_LR: add `--optimizer sgd`.
SEED_RECIPE = {"space": "rgb", "batch_size": 1, "gan_loss": "lsgan", "gan_weight": 1.0, "l1_weight": 100.0,
               "epochs": 200, "width": 64, "chroma_gain": False, "hints": False, "val_photos": 0}
SGD_LR = 0.01  # --optimizer sgd's learning rate unless --lr is given: the original report's
# Settings a resumed run may change; any other option given with --resume must equal the run's.
RESUME_MAY_CHANGE = ("data", "also", "mix", "epochs", "time", "patience", "device", "threads", "compile", "checkpoint_every")
# A CPU's defaults where they differ from TrainConfig's and ModelConfig's (the GPU recipe): a
# narrower network at 192 px (chroma is smooth; on the beach photos 192 px beat 256 px at the
# same time budget, 23.19 against 23.03 dB), and a time budget instead of epochs, so that
# `colorize train DATA` on a laptop gives in minutes the best model those minutes allow.
# Options given win; --epochs without --time turns the time budget off; --preset seed is the
# original recipe wherever it runs.
CPU_DEFAULTS = {"time": 600.0, "width": 32, "size": 192}
# What a run started before these settings existed trained with: a resumed old run keeps its recipe.
BEFORE_RECIPE = {"gan_weight": 1.0, "chroma_gain": False, "crop_min": 1.0, "val_photos": 0}
MODEL_OPTIONS = ("size", "width", "space", "hints")
LOCK = ".train.lock"  # in the run folder, held while a `colorize train` works there
RUN_OUTPUTS = ("best.safetensors", "curves.png", "metrics.csv", "samples")  # what starting a run over replaces
NO_DATA = "give DATA (a prep output or a folder of photos), or --resume RUN"


@dataclass
class TrainConfig:
    """Everything a run needs; RUN/config.json is this, as JSON."""

    data: str  # its test split scores the run
    out: str
    model: ModelConfig = field(default_factory=ModelConfig)
    also: list[str] = field(default_factory=list)  # more data sets to train on (their test photos never)
    mix: list[float] = field(default_factory=list)  # share of data, then of each `also`, in every epoch; []: by size
    epochs: int = 200  # the seed's; not used when `time` is set
    time: float = 0.0  # seconds of training, evaluations included; the schedule follows the clock. 0: --epochs
    crop_min: float = 0.5  # random crops: each side a uniform share in [crop_min, 1] of the stored photo's
    batch_size: int = 16  # per process
    optimizer: Optimizer = "adam"
    lr: float = 2e-4  # Adam's (with --optimizer sgd: SGD_LR)
    beta1: float = 0.5  # Adam's; pix2pix's 0.5 instead of 0.9 keeps the GAN game steadier
    beta2: float = 0.999
    gan_loss: GanLoss = "lsgan"
    gan_weight: float = 0.0  # of the adversarial loss; 0: L1 alone, no discriminator steps (see the README)
    l1_weight: float = 100.0
    chroma_gain: bool = True  # calibrate the generator's chroma gain at each scoring
    # The share of the truth's colourfulness the gain aims at and below which the selection score
    # charges: 0.8 for beach photos, whose colours are predictable; everyday photos' are far less
    # so, and each step of gain past what the network is sure of costs colour error there.
    colorfulness: float = COLORFUL_ENOUGH
    # DATA's training photos held out (at most data.HOLD_OUT_SHARE of them, none where that is
    # under HOLD_OUT_MIN): they pick the best epoch and calibrate the gain. 0: the test split
    # picks, training photos calibrate.
    val_photos: int = 64
    seed: int = 0
    patience: int = 0  # stop after this many epochs without a new best epoch (scoring.Pick); 0: never
    sync_bn: bool = False  # SyncBatchNorm across processes (CUDA only)
    preset: str | None = None
    device: Device = "auto"
    threads: int = 0  # CPU threads per process; 0: the CPUs this process may use / processes per machine
    compile: bool = False  # torch.compile the networks
    checkpoint_every: float = 30.0  # seconds between checkpoint writes (always at the end); 0: every epoch

    def to_dict(self) -> dict:
        return {**asdict(self), "model": self.model.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        if set(d) - known:
            raise UserError(f"config has unknown keys: {sorted(set(d) - known)}")
        return cls(**{**BEFORE_RECIPE, **d, "model": ModelConfig.from_dict(d["model"])})


def help_defaults() -> dict[str, object]:
    """The defaults `colorize train --help` names, by option: TrainConfig's and ModelConfig's
    fields, except --size, whose default for a photo folder is prep's; SGD's learning rate, the
    seed preset's recipe and a CPU's defaults."""
    return {**{f.name: f.default for cls in (ModelConfig, TrainConfig) for f in fields(cls) if f.default is not MISSING},
            "size": PrepConfig.size, "sgd_lr": SGD_LR, "preset": SEED_RECIPE,
            "cpu_time": format_duration(CPU_DEFAULTS["time"]), "cpu_width": CPU_DEFAULTS["width"],
            "cpu_size": CPU_DEFAULTS["size"]}


def check_config(cfg: TrainConfig) -> None:
    for name, value, low in (("epochs", cfg.epochs, 1), ("batch-size", cfg.batch_size, 1),
                             ("patience", cfg.patience, 0), ("threads", cfg.threads, 0), ("val-photos", cfg.val_photos, 0)):
        if value < low:
            raise UserError(f"--{name} must be at least {low}, got {value}")
    if 0 < cfg.val_photos < HOLD_OUT_MIN:
        raise UserError(f"--val-photos must be 0 or at least {HOLD_OUT_MIN} (fewer would judge by chance), "
                        f"got {cfg.val_photos}")
    if not cfg.time >= 0 or math.isinf(cfg.time):
        raise UserError(f"--time must be a duration of 0 or more, got {cfg.time} s")
    if cfg.mix and not cfg.also:
        raise UserError("--mix shares the epochs between DATA and the data sets given with --also; give --also too")
    if cfg.mix and (len(cfg.mix) != 1 + len(cfg.also) or not all(0 <= w < math.inf for w in cfg.mix)
                    or not sum(cfg.mix) > 0):
        raise UserError(f"--mix needs {1 + len(cfg.also)} shares of 0 or more (DATA's, then each --also's), "
                        f"not all 0; got {','.join(f'{w:g}' for w in cfg.mix)}")
    for more in cfg.also:
        if not os.path.isdir(more):
            raise UserError(f"--also {more}: no such folder (expected a prep output or a folder of photos)")
    if not 0 < cfg.crop_min <= 1:
        raise UserError(f"--crop-min must be above 0 and at most 1, got {cfg.crop_min}")
    if not 0 < cfg.colorfulness <= 1:
        raise UserError(f"--colorfulness must be above 0 and at most 1, got {cfg.colorfulness}")
    if not cfg.checkpoint_every >= 0:
        raise UserError(f"--checkpoint-every must be 0 or more seconds, got {cfg.checkpoint_every}")
    if not cfg.lr > 0 or not cfg.l1_weight >= 0 or not cfg.gan_weight >= 0:
        raise UserError("--lr must be positive, --l1-weight and --gan-weight not negative")
    if cfg.optimizer not in get_args(Optimizer) or cfg.gan_loss not in get_args(GanLoss):
        raise UserError(f"unknown optimizer {cfg.optimizer!r} or GAN loss {cfg.gan_loss!r}")


def _default_out() -> Path:
    base = Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
    out, n = base, 2
    while out.exists():
        out, n = base.with_name(f"{base.name}-{n}"), n + 1
    return out


def configure(data: str | None, out: str | None, resume: str | None, preset: str | None,
              given: dict) -> TrainConfig:
    """The run's config from the options the user gave (`given`: only those, by field name).

    A new run: defaults, then the preset's settings, then the options given (they win).
    --resume RUN: RUN/config.json; the options in RESUME_MAY_CHANGE replace its values, any
    other option must agree with it (a different network or recipe is a new run, not a resume).
    """
    if resume is None:
        if data is None:
            raise UserError(NO_DATA)
        opts = {**(SEED_RECIPE if preset else {}), **given}
        if not preset and pick_device(opts.get("device", "auto")).type == "cpu":
            cpu = {k: v for k, v in CPU_DEFAULTS.items() if not (k == "time" and "epochs" in opts)}
            if "size" not in opts:  # never larger than the data's own photos
                cpu["size"] = min(CPU_DEFAULTS["size"], native_size(data))
            opts = {**cpu, **opts}
        model = {key: opts.pop(key) for key in MODEL_OPTIONS if key in opts}
        if "size" not in model:
            model["size"] = native_size(data)
        if opts.get("optimizer") == "sgd":
            opts.setdefault("lr", SGD_LR)
        opts["also"] = [os.path.abspath(a) for a in opts.get("also", [])]
        cfg = TrainConfig(data=os.path.abspath(data), out=str(out or _default_out()), model=ModelConfig(**model),
                          preset=preset, **opts)
        check_config(cfg)
        return cfg
    run = Path(resume)
    cfg = read_config(run)
    if out is not None and os.path.realpath(out) != os.path.realpath(run):
        raise UserError(f"--resume {run} continues in {run}; leave out --out (or give the same folder)")
    if preset not in (None, cfg.preset):
        raise UserError(f"{run} was not started with --preset {preset}; a resumed run keeps its recipe")
    changes = {"data": os.path.abspath(data)} if data is not None else {}
    if "epochs" in given and "time" not in given:  # as for a new run: --epochs alone ends the time budget
        given = {**given, "time": 0.0}
    if "also" in given:
        given = {**given, "also": [os.path.abspath(a) for a in given["also"]]}
    for key, value in given.items():
        current = getattr(cfg.model if key in MODEL_OPTIONS else cfg, key)
        if key in RESUME_MAY_CHANGE:
            changes[key] = value
        elif value != current:
            what = "network" if key in MODEL_OPTIONS else "recipe"
            raise UserError(f"--{key.replace('_', '-')} {value} does not match the run's {current} "
                            f"({run / 'config.json'}): a resumed run keeps its {what}; drop the option or start a new run")
    cfg = replace(cfg, out=str(run), **changes)
    check_config(cfg)
    return cfg


def read_config(run: Path) -> TrainConfig:
    """RUN/config.json, checked as the options are: any problem is an error naming the file."""
    path = run / "config.json"
    if not path.is_file():
        raise UserError(f"{run}: not a training run (no config.json)")
    try:
        cfg = TrainConfig.from_dict(json.loads(path.read_text()))
        _check_types(cfg)
        check_config(cfg)
    except (ValueError, TypeError, KeyError) as e:
        raise UserError(f"{path}: unreadable ({e})") from None
    except UserError as e:
        raise UserError(f"{path}: {e}") from None
    return cfg


_KINDS = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}


def _check_types(cfg: TrainConfig) -> None:
    """Each setting with a default has the default's type (a whole number does for a number):
    the options guarantee that, a hand-edited config.json does not."""
    for f in fields(cfg):
        if f.default is MISSING or f.default is None:  # data, out, model, preset: checked where they are used
            continue
        value, kind = getattr(cfg, f.name), type(f.default)
        if not (type(value) is kind or (kind is float and type(value) is int)):
            raise UserError(f"{f.name} must be {_KINDS[kind]}, not {value!r}")
    for name, kinds, what in (("also", (str,), "a list of folders"), ("mix", (int, float), "a list of numbers")):
        value = getattr(cfg, name)
        if type(value) is not list or not all(type(v) in kinds for v in value):
            raise UserError(f"{name} must be {what}, not {value!r}")


def write_config(cfg: TrainConfig) -> None:
    with atomic_path(Path(cfg.out) / "config.json") as tmp:
        tmp.write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")


# --- the run folder ----------------------------------------------------------------------


def check_new_run_folder(out: Path) -> None:
    """A new run starts only in a new or empty folder (an earlier attempt's lock file aside),
    so that nothing the user keeps there is replaced by the run's files."""
    if (out / "config.json").exists():
        raise UserError(f"{out} already holds a run: continue it with --resume {out}, or choose another --out")
    try:
        names = sorted(p.name for p in out.iterdir() if p.name != LOCK)
    except FileNotFoundError:
        return
    except NotADirectoryError:
        raise UserError(f"{out}: not a folder; choose another --out") from None
    except OSError as e:
        raise UserError(f"{out}: {read_reason(e)}") from None
    if names:
        shown = ", ".join(names[:3]) + (", …" if len(names) > 3 else "")
        raise UserError(f"{out}: holds other files ({shown}) and no run (no config.json); a new run starts only "
                        "in a new or empty folder: choose another --out")


def check_best(path: Path, mcfg: ModelConfig) -> None:
    """A resumed run's best.safetensors, if there is one, must load as the run's generator
    (load_checkpoint and load_state refuse damaged files and NaN weights); a damaged one would
    otherwise stay the run's result while the run reports success."""
    if not path.exists():
        return
    try:
        tensors, cfg, _ = load_checkpoint(path)
        if cfg != mcfg:
            raise UserError(f"{path}: holds a {_describe(cfg)} network, the run trains a {_describe(mcfg)} one")
        load_state(UNet(mcfg), tensors, "generator", path)
    except UserError as e:
        raise UserError(f"{e}; delete {path} to have it remade from the next epoch, then --resume again") from None


def _lock(out: Path) -> AbstractContextManager[None]:
    """Held while this `colorize train` works in the run folder: a second one there is refused."""
    return exclusive_lock(out, LOCK, "`colorize train`")


def _describe(m: ModelConfig) -> str:
    return f"{m.size} px {m.space} width-{m.width} depth-{m.depth}"


def open_run(cfg: TrainConfig, resume: bool, d: Dist, device: torch.device, held: ExitStack) -> State | None:
    """What can be checked before the data are read and the networks built: the folder (a
    resumed run's is locked now, a new run's once it exists), the checkpoint to go on from and
    whether the network fits. That checkpoint, or None: the run starts at its first epoch."""
    out, mcfg = Path(cfg.out), cfg.model
    if cfg.sync_bn and d.on and device.type != "cuda":
        raise UserError("--sync-bn needs CUDA GPUs (NCCL); gloo on CPUs cannot synchronise BatchNorm")
    if d.main:
        if resume:
            held.enter_context(_lock(out))
        else:
            check_new_run_folder(out)
    checkpoint = None
    if resume and not (out / "last.safetensors").exists():
        # Stopped (or killed) before its first checkpoint; config.json is written first. Starting
        # over is a resume from epoch 0, unless it would replace files the run already wrote.
        made = [name for name in RUN_OUTPUTS if (out / name).exists()]
        if made:
            raise UserError(f"{out}: no last.safetensors to resume from, and starting over would replace its "
                            f"{', '.join(made)}; start a new run in another folder (--out), or delete those to "
                            "start this one over")
        if d.main:
            console.print(f"{escape(str(out))} has no checkpoint yet: starting the run from its first epoch",
                          soft_wrap=True)
    elif resume:
        tensors, ckpt_cfg, extra = load_checkpoint(out / "last.safetensors")
        if ckpt_cfg != mcfg:
            raise UserError(f"{out / 'last.safetensors'} holds a {_describe(ckpt_cfg)} network, but "
                            f"{out / 'config.json'} asks for a {_describe(mcfg)} one")
        if cfg.time and extra.get("seconds", 0.0) >= cfg.time:
            raise UserError(f"{out} has used its time ({format_duration(cfg.time)}); give --time T (more than that) "
                            "to train on")
        if not cfg.time and extra["epoch"] >= cfg.epochs:
            raise UserError(f"{out} has finished its {plural(extra['epoch'], 'epoch')}; give --epochs N (more than "
                            f"{extra['epoch']}) to train on")
        checkpoint = (tensors, extra)
    check_memory(cfg, device, d)
    if checkpoint:
        check_best(out / "best.safetensors", mcfg)
    return checkpoint


def begin_run(cfg: TrainConfig, resume: bool, d: Dist, data: DataSet, nets: Nets, run: RunState,
              held: ExitStack) -> dict[str, float]:
    """Rank 0 makes the run folder (a new run's is locked now that the data are read), writes
    config.json and says what the run trains; the gray baseline's test scores ({} elsewhere)."""
    if not d.main:
        return {}
    out, mcfg = Path(cfg.out), cfg.model
    make_folder(out)
    if not resume:
        held.enter_context(_lock(out))
        check_new_run_folder(out)  # again, under the lock: another run may have begun here meanwhile
    write_config(cfg)
    gray = gray_baseline(data.test)
    on_device = data.train.color.device.type == nets.device.type
    console.print(
        f"{escape(cfg.data)} ({data.source}){_also(cfg, data)}: {len(data.train)} train, "
        f"{f'{len(data.val)} validation, ' if data.val else ''}{plural(len(data.test), 'test photo')} at "
        f"{mcfg.size} px{'' if on_device else ' (kept in CPU memory)'}"
        f"{' (decoded into a temporary file: more than half the free memory)' if data.on_disk else ''} · "
        f"{mcfg.space} U-Net width {mcfg.width}, "
        f"{sum(p.numel() for p in nets.g.parameters()) / 1e6:.2f} M parameters · {nets.device}"
        f"{f' x {d.world} processes' if d.on else ''} · run folder {escape(str(out))}", soft_wrap=True)
    if resume:
        console.print(f"resuming after epoch {run.epoch}" + (f", step {run.step}" if run.step else ""))
    return gray


def _also(cfg: TrainConfig, data: DataSet) -> str:
    """' + OTHER (N photos, share S), ...' for the data sets trained on besides DATA."""
    if not cfg.also:
        return ""
    shares = cfg.mix or [n / sum(data.groups) for n in data.groups]
    parts = [f"{escape(a)} ({n} photos, {w / sum(shares):.0%})" for a, n, w in zip(cfg.also, data.groups[1:], shares[1:])]
    return f" ({data.groups[0]} photos, {shares[0] / sum(shares):.0%}) + " + " + ".join(parts)


# --- memory ------------------------------------------------------------------------------


def _parameters(mcfg: ModelConfig) -> int:
    """Parameters of G and D together, counted on networks built on the "meta" device (shapes
    only: nothing is allocated, whatever the width)."""
    with torch.device("meta"):
        nets = (UNet(mcfg), PatchGAN(mcfg))
    return sum(p.numel() for net in nets for p in net.parameters())


def training_memory(cfg: TrainConfig, amp: bool = False, ddp: bool = False) -> int:
    """Bytes one process holds at the peak of a training step, from the shapes alone.

    - Parameters of both networks, 4 bytes each (fp32), as many again for their gradients and,
      with Adam, twice as many for its two moments: 16 bytes a parameter (plain SGD: 8).
      DistributedDataParallel (`ddp`) keeps one more copy of the gradients in its buckets.
    - What the backward pass needs kept, per photo of the batch: about 3 values per output value
      of each U-Net block (the convolution's output, kept by BatchNorm; the activation's output;
      the padded or concatenated copy the next convolution keeps) and 2 per PatchGAN block
      (no concatenation), whose 3 passes in a step (real and fake for D, fake for G) are all kept
      until their backward. 4 bytes a value; 2 under bf16 autocast (`amp`, device.native_bf16).
    Not counted: the backward pass's passing buffers and the allocator's slack, so this is a
    floor of the peak (width 64, 256 px, batch 16 on a CPU: 1.94 GiB estimated, 2.07 GiB
    measured), and the decoded photos, which load_data keeps within half the free memory.
    """
    m, s = cfg.model, cfg.model.size
    params = _parameters(m)
    per_param = 4 * (2 + (2 if cfg.optimizer == "adam" else 0) + (1 if ddp else 0))
    widths = m.widths(max(m.depth, m.d_layers))  # channels per level, as UNet/PatchGAN
    encoder = sum(widths[i] * (s >> (i + 1)) ** 2 for i in range(m.depth))
    decoder = sum(widths[i] * (s >> (i + 1)) ** 2 for i in range(m.depth - 1)) + m.out_channels * s * s
    patchgan = sum(widths[i] * (s >> (i + 1)) ** 2 for i in range(m.d_layers)) + (s >> m.d_layers) ** 2
    values = 3 * (encoder + decoder) + 3 * 2 * patchgan
    return params * per_param + cfg.batch_size * values * (2 if amp else 4)


def check_memory(cfg: TrainConfig, device: torch.device, d: Dist = Dist()) -> None:
    """Refuse, before anything is built, a network and batch that cannot fit where they would
    train (each process checks its own share): a clear error instead of the allocator's."""
    m, cuda = cfg.model, device.type == "cuda"
    what = f"training a width-{m.width} network at {m.size} px (batch size {cfg.batch_size}, {cfg.optimizer})"
    need = training_memory(cfg, amp=native_bf16(device), ddp=d.on)
    if cuda:
        ensure_gpu_memory(need, what, device)
        need = 4 * _parameters(m)  # the networks are built in RAM, then moved
    ensure_memory(need, what)


# --- the data ----------------------------------------------------------------------------


def read_data(cfg: TrainConfig, d: Dist, device: torch.device) -> DataSet:
    """DATA and each --also decoded and joined (rank 0 shows a spinner, then the files it
    skipped), moved to a GPU unless it would take half its free memory or more (Apple's MPS
    keeps them in CPU memory: torch before 2.7 has no antialiased resize there, `get_batch`)."""
    with console.status(f"reading {', '.join([cfg.data, *cfg.also])}") if d.main else nullcontext():
        crops = cfg.crop_min < 1  # a run from before random crops trains on the pixels it did
        data = load_data(cfg.data, cfg.model.size, crops=crops, hold_out=cfg.val_photos).join(
            [load_data(more, cfg.model.size, crops=crops, need_test=False) for more in cfg.also])
    if d.main:
        for path, reason in data.skipped:
            skipped(console, f"{path}: {reason}")
    if device.type == "cuda" and data.train.nbytes + data.test.nbytes < 0.5 * torch.cuda.mem_get_info(device)[0]:
        data = replace(data, train=data.train.to(device), test=data.test.to(device),
                       val=data.val and data.val.to(device))
    return data


@dataclass
class Order:
    """One epoch's batches for this process: which photos, flipped or not, and the crop of each:
    (side, top, left) in the stored photo's pixels."""

    index: torch.Tensor
    flip: torch.Tensor
    crop: torch.Tensor  # (n, 3) long

    def batches(self, size: int) -> list[Order]:
        return [Order(*parts) for parts in zip(*(t.split(size) for t in (self.index, self.flip, self.crop)))]


def epoch_order(n: int, seed: int, epoch: int, d: Dist, stored: int, crop_min: float,
                groups: list[int] | None = None, mix: list[float] | None = None) -> Order:
    """This process's photos, flips and crops for `epoch` (0-based).

    The shuffle, flips and crops come from a generator seeded by (seed, epoch) alone, so they
    are the same in every process and after a resume. An epoch is n photos: each once, or with
    `mix` (shares of the data sets whose photos `groups` counts, in order) round(share x n)
    from each, every photo of a data set once before any twice. A crop's side is a uniform
    share in [crop_min, 1] of the `stored` photo's side (scale jitter), its place uniform.
    Like DistributedSampler, the order is padded with its own start to a multiple of the
    process count and dealt out round robin.
    """
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    if mix:
        starts = [sum(groups[:k]) for k in range(len(groups))]
        picks = [start + torch.randperm(size, generator=g).repeat(math.ceil(share / sum(mix) * n / size) + 1)
                 [: round(share / sum(mix) * n)] for start, size, share in zip(starts, groups, mix) if size]
        pool = torch.cat(picks)
        n = len(pool)
        order = pool[torch.randperm(n, generator=g)]
    else:
        order = torch.randperm(n, generator=g)
    flip = torch.rand(n, generator=g) < 0.5
    share = crop_min + (1 - crop_min) * torch.rand(n, generator=g, dtype=torch.float64)
    side = (share * stored).round().long().clamp(1, stored)
    top, left = ((torch.rand(2, n, generator=g, dtype=torch.float64) * (stored - side + 1)).long())
    per = math.ceil(n / d.world)
    take = torch.arange(n).repeat(math.ceil(per * d.world / n))[: per * d.world][d.rank :: d.world]
    return Order(order[take], flip[take], torch.stack([side, top, left], 1)[take])


def get_batch(data: Pairs, batch: Order, size: int, device: torch.device,
              channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(gray, color) in [0, 1] on `device`: each photo's crop scaled to size x size (bilinear,
    antialiased when shrinking, as Pillow filters), then flipped where the order says. The
    scaling runs where the photos are kept (`read_data`), the batch then moves to `device`."""
    grays, colors = [], []
    for i, flip, (side, top, left) in zip(batch.index.tolist(), batch.flip.tolist(), batch.crop.tolist()):
        pair = torch.cat([data.color[i], data.gray[i]])[:, top:top + side, left:left + side]
        pair = pair[None].float() / 255
        if side != size:
            pair = F.interpolate(pair, size=(size, size), mode="bilinear", align_corners=False,
                                 antialias=side > size).clamp(0, 1)
        if flip:
            pair = pair.flip(-1)
        colors.append(pair[:, :3])
        grays.append(pair[:, 3:])
    color, gray = torch.cat(colors).to(device, non_blocking=True), torch.cat(grays).to(device, non_blocking=True)
    if channels_last:
        color, gray = color.contiguous(memory_format=torch.channels_last), gray.contiguous(memory_format=torch.channels_last)
    return gray, color


# --- the networks and one step -----------------------------------------------------------


def gan_loss(logits: torch.Tensor, real: bool, kind: str) -> torch.Tensor:
    """Every patch's score against the target 1 (real) or 0 (fake)."""
    target = torch.full_like(logits, 1.0 if real else 0.0)
    if kind == "lsgan":
        return F.mse_loss(logits, target)
    return F.binary_cross_entropy_with_logits(logits, target)


def lr_factor(epoch: int, epochs: int) -> float:
    """1 for the first half of the epochs, then a straight line down towards 0 (pix2pix's rule)."""
    keep = (epochs + 1) // 2
    return 1.0 - max(0, epoch + 1 - keep) / (epochs - keep + 1)


def lr_factor_at(progress: float) -> float:
    """pix2pix's rule on a time budget: 1 for its first half, then a straight line to 0 at its end."""
    return min(1.0, max(0.0, 2.0 * (1.0 - progress)))


class Nets:
    """The two networks, their optimizers and learning rates, and one training step, set up for
    a device.

    Fast paths (see the README's performance section for what each is worth):
    - channels_last memory on every device: oneDNN (CPU) and cuDNN (GPU) run NHWC convolutions
      fastest, and the batches are made NHWC once in `get_batch`.
    - bf16 autocast (the losses in fp32) on GPUs and on CPUs that do bf16 natively
      (`device.native_bf16`); CUDA: fused Adam (one kernel per step instead of several per
      parameter).
    - Losses stay on the device; nothing here reads a value back to the host, so the GPU is
      never made to wait. The caller reads them at its own log interval.
    - `--compile` (opt-in): torch.compile of both networks.
    Under torchrun the training forms are wrapped in DistributedDataParallel.
    """

    def __init__(self, cfg: TrainConfig, device: torch.device, d: Dist = Dist()) -> None:
        mcfg, cuda = cfg.model, device.type == "cuda"
        torch.manual_seed(cfg.seed)  # the same initial weights in every process...
        g, dnet = build(mcfg)
        torch.manual_seed(cfg.seed + 1 + d.rank)  # ...then a dropout stream per process
        if cfg.sync_bn and d.on:
            g, dnet = nn.SyncBatchNorm.convert_sync_batchnorm(g), nn.SyncBatchNorm.convert_sync_batchnorm(dnet)
        self.device, self.channels_last = device, device.type in ("cpu", "cuda")
        memory = torch.channels_last if self.channels_last else torch.contiguous_format
        self.g, self.d = g.to(device, memory_format=memory), dnet.to(device, memory_format=memory)
        self.opt_g, self.opt_d = self._optimizer(cfg, self.g, cuda), self._optimizer(cfg, self.d, cuda)
        self.lr = cfg.lr
        self.space, self.gan_loss, self.gan_weight, self.l1_weight = mcfg.space, cfg.gan_loss, cfg.gan_weight, cfg.l1_weight
        self.hints = mcfg.hints
        # Training forms: DDP averages gradients; torch.compile (opt-in) fuses kernels. The plain
        # D (`d_plain`) scores G's output in G's step, where D's own gradients are not wanted.
        self.g_train, self.d_train, self.d_plain = self.g, self.d, self.d
        if d.on:
            ids = [device.index] if cuda else None
            self.g_train = nn.parallel.DistributedDataParallel(self.g, ids)
            self.d_train = nn.parallel.DistributedDataParallel(self.d, ids)
        if cfg.compile:
            self.g_train, self.d_train, self.d_plain = (torch.compile(m) for m in (self.g_train, self.d_train, self.d))

    @staticmethod
    def _optimizer(cfg: TrainConfig, net: nn.Module, cuda: bool) -> torch.optim.Optimizer:
        if cfg.optimizer == "adam":
            return torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=cuda or None)
        return torch.optim.SGD(net.parameters(), lr=cfg.lr)

    def set_lr(self, factor: float) -> None:
        """Both optimizers' learning rate: --lr times `factor` (the schedule's)."""
        for opt in (self.opt_g, self.opt_d):
            for group in opt.param_groups:
                group["lr"] = self.lr * factor

    @property
    def current_lr(self) -> float:
        return self.opt_g.param_groups[0]["lr"]

    def train_step(self, gray01: torch.Tensor, color01: torch.Tensor) -> torch.Tensor:
        """One D step then one G step on a batch; returns (d_loss, g_adv, g_l1) on the device.
        With gan_weight 0, G's step alone on its L1 loss (the losses of D are then 0)."""
        x, y = encode_input(gray01, self.space), encode_target(color01, self.space)
        hints = None
        if self.hints:  # simulated users' colour hints, many photos none (hints come with lab)
            hints = simulate(y, x)
            hints = hints.contiguous(memory_format=torch.channels_last) if self.channels_last else hints
        with autocast_bf16(self.device):
            fake = self.g_train(x, hints)
        l1 = (fake.float() - y).abs().mean()
        if not self.gan_weight:
            self.opt_g.zero_grad(set_to_none=True)
            (self.l1_weight * l1).backward()
            self.opt_g.step()
            zero = torch.zeros((), device=l1.device)
            return torch.stack([zero, zero, l1.detach()])
        # D: real pairs -> 1, fake pairs -> 0, on every patch.
        self.d.requires_grad_(True)
        with autocast_bf16(self.device):
            real_logits, fake_logits = self.d_train(x, y), self.d_train(x, fake.detach())
        d_loss = 0.5 * (gan_loss(real_logits.float(), True, self.gan_loss) + gan_loss(fake_logits.float(), False, self.gan_loss))
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt_d.step()
        # G: make D answer 1, and stay near the truth.
        self.d.requires_grad_(False)
        with autocast_bf16(self.device):
            fake_logits = self.d_plain(x, fake)
        adv = gan_loss(fake_logits.float(), True, self.gan_loss)
        self.opt_g.zero_grad(set_to_none=True)
        (self.gan_weight * adv + self.l1_weight * l1).backward()
        self.opt_g.step()
        return torch.stack([d_loss, adv, l1]).detach()


# --- the run -----------------------------------------------------------------------------


@dataclass
class TrainResult(RunSummary):
    main: bool  # rank 0, the process that reports
    interrupted: bool
    stopped_at: int  # step of the unfinished epoch where an interrupted run stopped
    generator: UNet  # the trained networks (train mode), as this process holds them
    discriminator: PatchGAN


def train(cfg: TrainConfig, resume: bool = False, reporter: Reporter | None = None) -> TrainResult:
    """Train (or, with `resume`, go on training) the run `cfg` describes; see the module docstring."""
    d, device = start_processes(cfg.device)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(cpu_threads(cfg.threads, d))
        with ExitStack() as held:  # the run folder's lock, from when it is taken
            result = _train(cfg, resume, d, device, reporter or Reporter(enabled=d.main), held)
        d.barrier()  # rank 0 may still be writing; leave the process group together
        return result
    finally:
        torch.set_num_threads(threads)
        d.close()


def _train(cfg: TrainConfig, resume: bool, d: Dist, device: torch.device, reporter: Reporter,
           held: ExitStack) -> TrainResult:
    """Check, read the data, build (or restore) the networks, then train epoch after epoch."""
    out = Path(cfg.out)
    checkpoint = open_run(cfg, resume, d, device, held)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")
    data = read_data(cfg, d, device)
    nets = Nets(cfg, device, d)
    run = resume_state(checkpoint, nets, cfg, d) if checkpoint else RunState(loss_sums=torch.zeros(3, device=device))
    rows = read_metrics(out / "metrics.csv", run.epoch) if resume else []
    log = RunLog(out, rows, begin_run(cfg, resume, d, data, nets, run, held))
    ckpt = Checkpointer(out, nets, cfg.model, cfg.to_dict(), d, device, cfg.checkpoint_every,
                        (run.epoch, run.step) if checkpoint else None)
    steps = math.ceil(math.ceil(len(data.train) / d.world) / cfg.batch_size)
    stop, interrupted, stopped_at, images, train_seconds = StopFlag(), False, 0, 0.0, 0.0
    t_start = time.perf_counter()
    clock = Clock(run, d)
    scoring = Scoring(cfg, data, run, d)
    nets.g.train()
    nets.d.train()
    reporter.start(None if cfg.time else cfg.epochs, run.epoch, steps, cfg.batch_size * d.world, cfg.gan_weight > 0)
    try:
        with catch_stop(stop, d, console):
            while not finished(cfg, run):
                t0, step0 = time.perf_counter(), run.step
                if not cfg.time:
                    nets.set_lr(lr_factor(run.epoch, cfg.epochs))
                if not train_epoch(nets, data, run, cfg, d, stop, reporter, ckpt, clock):
                    ckpt.save(run, best_now=False)
                    interrupted, stopped_at = True, run.step
                    break
                if run.step == step0:  # --time ran out before this epoch's first step: the last one ends the run
                    ckpt.end_epoch(run, scoring.score_pending(nets, run, log, reporter, d, clock), leaving=True)
                    break
                epoch_images = len(data.train) * (run.step - step0) / steps
                row = close_epoch(nets, run, d)
                seconds = time.perf_counter() - t0
                images, train_seconds = images + epoch_images, train_seconds + seconds
                row |= {"seconds": seconds, "images_per_s": epoch_images / max(seconds, 1e-9)}
                best, early = scoring.after_epoch(nets, run, log, reporter, row, d, clock)
                stopping = d.agree(stop.set)  # during the evaluation
                ckpt.end_epoch(run, best, leaving=early or stopping or finished(cfg, run))
                if early:
                    if d.main:
                        console.print(f"early stop: no new best epoch for {plural(cfg.patience, 'epoch')} "
                                      f"(best: epoch {run.best_epoch})")
                    break
                if stopping:
                    interrupted = not finished(cfg, run)
                    break
    except KeyboardInterrupt:
        raise UserError(f"aborted; {out / 'last.safetensors'} holds the last saved state") from None
    finally:
        reporter.close()
    return TrainResult(out=out, epochs_done=run.epoch, best_epoch=run.best_epoch, best=log.test_scores(run.best_epoch),
                       gray=log.gray, seconds=time.perf_counter() - t_start,
                       images_per_s=images / max(train_seconds, 1e-9), main=d.main, interrupted=interrupted,
                       stopped_at=stopped_at, generator=nets.g, discriminator=nets.d)


def resume_state(checkpoint: State, nets: Nets, cfg: TrainConfig, d: Dist) -> RunState:
    """The run as its last.safetensors left it (checkpoint.load_training). A deleted
    best.safetensors is remade from the next epoch; the learning rate follows --epochs or --time."""
    out = Path(cfg.out)
    run = load_training(nets, checkpoint, d, nets.device, out / "last.safetensors")
    saved_by = checkpoint[1]["world_size"]
    if saved_by != d.world and d.main:
        console.print(f"[yellow]{out / 'last.safetensors'} was saved by {plural(saved_by, 'process', 'processes')}, "
                      f"this is {d.world}: the random streams start afresh and epoch {run.epoch + 1} "
                      "from its beginning[/yellow]", soft_wrap=True)
    if not (out / "best.safetensors").exists():  # deleted: the next epoch's model becomes the best
        run.best_score, run.best_shares, run.best_epoch = math.inf, None, 0
    return run


def finished(cfg: TrainConfig, run: RunState) -> bool:
    """Whether the run has had its epochs, or with --time its time."""
    return run.seconds >= cfg.time if cfg.time else run.epoch >= cfg.epochs


class Clock:
    """The run's training time (RunState.seconds): what earlier sessions spent plus this one's
    wall-clock time. Processes take the largest of their clocks, so they agree on the schedule."""

    def __init__(self, run: RunState, d: Dist) -> None:
        self.run, self.d = run, d
        self.base, self.t0 = run.seconds, time.perf_counter()

    def tick(self) -> float:
        """Update and return run.seconds (every process must call it at the same point)."""
        self.run.seconds = self.d.largest(self.base + time.perf_counter() - self.t0)
        return self.run.seconds


SYNC_STEPS = 25  # under torchrun, processes agree on a stop and on the clock every this many steps


def train_epoch(nets: Nets, data: DataSet, run: RunState, cfg: TrainConfig, d: Dist, stop: StopFlag,
                reporter: Reporter, ckpt: Checkpointer, clock: Clock) -> bool:
    """The steps of epoch `run.epoch` from step `run.step` on, their losses added to
    run.loss_sums, then summed over the processes; run.step: the steps done. With --time the
    learning rate follows the clock, and the epoch ends early when the time is spent. False
    when a stop was asked first. Losses or weights no longer finite end the run (check_finite)."""
    train = data.train
    order = epoch_order(len(train), cfg.seed, run.epoch, d, train.color.shape[-1], cfg.crop_min, data.groups, cfg.mix)
    batches = order.batches(cfg.batch_size)
    reporter.epoch_start(run.epoch, run.step)
    # The first step (1-based) after which the loss sums are not finite (they stay so), noted on
    # the device so that no step waits for a value; 0: none.
    bad_step = torch.zeros((), dtype=torch.long, device=nets.device)
    stopped, step = False, run.step
    for step in range(run.step, len(batches)):
        # Alone, a stop and the clock are seen every step; processes agree every SYNC_STEPS.
        if not d.on or step % SYNC_STEPS == 0:
            if d.agree(stop.set):
                stopped = True
                break
            if cfg.time:
                spent = clock.tick()
                if spent >= cfg.time:
                    break
                nets.set_lr(lr_factor_at(spent / cfg.time))
        run.loss_sums += nets.train_step(*get_batch(train, batches[step], cfg.model.size, nets.device,
                                                    nets.channels_last))
        bad_step = torch.where((bad_step == 0) & ~run.loss_sums.isfinite().all(), step + 1, bad_step)
        reporter.step(run.epoch, step + 1, run.loss_sums)
    else:
        step = len(batches)
    run.step = step
    d.sum(run.loss_sums)  # rank 0 carries every process's sums
    if not stopped:
        d.share_buffers(nets.g, nets.d)  # BatchNorm statistics: rank 0's
    check_finite(nets, run, bad_step, ckpt, cfg.lr)
    return not stopped


def check_finite(nets: Nets, run: RunState, bad_step: torch.Tensor, ckpt: Checkpointer, lr: float) -> None:
    """Stop (a UserError, exit 1) once the losses or the weights are not finite numbers any
    more, before such a model can be evaluated, saved or made the best."""
    tensors = [run.loss_sums, *(t for net in (nets.g, nets.d) for t in net.state_dict().values() if t.is_floating_point())]
    if bool(torch.stack([t.isfinite().all() for t in tensors]).all()):
        return
    step = int(bad_step)  # 0: the losses stayed finite, an update was not
    epoch = run.epoch + 1
    where, what = (f"epoch {epoch} at step {step}", "a loss") if step else (f"epoch {epoch}", "the weights")
    raise UserError(f"training diverged in {where} ({what} became NaN or infinite); {ckpt.holds()}: start a new run "
                    f"with a smaller --lr than {lr:g}")


def close_epoch(nets: Nets, run: RunState, d: Dist) -> dict[str, float]:
    """The finished epoch's number, learning rate and mean losses (over its run.step steps: fewer
    than a whole epoch's where --time ran out); the run and its loss sums move on to the next epoch."""
    d_loss, g_adv, g_l1 = (run.loss_sums / (max(run.step, 1) * d.world)).tolist()
    run.epoch, run.step = run.epoch + 1, 0
    run.loss_sums.zero_()
    return {"epoch": run.epoch, "lr": nets.current_lr, "d_loss": d_loss, "g_adv": g_adv, "g_l1": g_l1}


CALIBRATION_PHOTOS = 64  # training photos the chroma gain is calibrated on
EVAL_SHARE = 0.05  # with --time, the generator is scored after the first epoch that ends this share of it later


class Scoring:
    """When the generator is scored, and on what: after every epoch, or with --time after the
    first epoch that ends EVAL_SHARE of the time after the last scoring (and after the last
    epoch), so that small data sets do not spend their time on evaluations. The validation
    photos pick the best epoch and calibrate the chroma gain; without them (--val-photos 0, or
    too few training photos) the test split picks and CALIBRATION_PHOTOS whole training photos
    calibrate."""

    def __init__(self, cfg: TrainConfig, data: DataSet, run: RunState, d: Dist) -> None:
        self.cfg, self.test, self.val, self.last = cfg, data.test, data.val, run.seconds
        self.calibration = ((data.val or whole_photos(data.train, cfg.model.size, CALIBRATION_PHOTOS))
                            if cfg.chroma_gain and d.main else None)
        self.pending: dict | None = None  # the row of the last epoch, when it was not scored

    def due(self, seconds: float) -> bool:
        """Whether to score now, `seconds` into the run (all processes agree on it)."""
        cfg = self.cfg
        if not cfg.time or seconds >= cfg.time or seconds - self.last >= cfg.time * EVAL_SHARE:
            self.last = seconds
            return True
        return False

    def after_epoch(self, nets: Nets, run: RunState, log: RunLog, reporter: Reporter, row: dict, d: Dist,
                    clock: Clock, now: bool = False) -> tuple[bool, bool]:
        """The epoch just closed scored if due or `now` (`end_epoch`), else its row kept for
        later: whether it is the best, and whether --patience says to stop (all processes agree)."""
        if not (self.due(clock.tick()) or now):
            self.pending = row
            return False, False
        row["train_seconds"] = run.seconds
        best, early = end_epoch(nets, self, run, log, reporter, row, self.cfg.patience) if d.main else (False, False)
        self.pending = None
        best, early = d.agree(best), d.agree(early)
        clock.tick()
        return best, early

    def score_pending(self, nets: Nets, run: RunState, log: RunLog, reporter: Reporter, d: Dist,
                      clock: Clock) -> bool:
        """A --time run that ran out just as an epoch began ends with the last epoch: scored now
        if it was not yet. Whether it is the best."""
        if self.pending is None:
            return False
        return self.after_epoch(nets, run, log, reporter, self.pending, d, clock, now=True)[0]


def end_epoch(nets: Nets, scoring: Scoring, run: RunState, log: RunLog, reporter: Reporter, row: dict,
              patience: int) -> tuple[bool, bool]:
    """Rank 0, after an epoch: the chroma gain calibrated, the generator scored with it on the
    validation photos (their selection score picks the best, noted in `run`) and on the test
    split, the sample sheet, the epoch's row shown and recorded. Whether the epoch is the best,
    and whether --patience says to stop. Training goes on at gain 1."""
    test, enough = scoring.test, scoring.cfg.colorfulness
    if scoring.calibration is not None:
        margin = MARGIN_SE if scoring.val else 0.0  # held-out photos, or training photos it has learnt
        run.chroma_gain = calibrate_gain(nets.g, scoring.calibration, nets.space, nets.device, margin, enough)
    scores, test_shares = evaluate_photos(nets.g, test, nets.space, nets.device, enough)
    val, val_shares = evaluate_photos(nets.g, scoring.val, nets.space, nets.device, enough) if scoring.val else ({}, None)
    row = {**row, **{f"test_{k}": v for k, v in scores.items()}, "test_score": selection_score(scores, enough),
           **{f"val_{k}": val.get(k, math.nan) for k in ("ciede2000", "colorfulness")},
           "val_score": selection_score(val, enough) if val else math.nan, "chroma_gain": run.chroma_gain,
           **{f"gray_{k}": v for k, v in log.gray.items()}}
    score, shares = (row["val_score"], val_shares) if val else (row["test_score"], test_shares)
    pick = Pick(run.best_score, run.best_shares)
    best = pick.scored(score, shares, first=run.best_epoch == 0)  # the first scoring is the best so far, even at inf
    run.best_score, run.best_shares = pick.lowest, pick.shares
    if best:
        run.best_epoch = run.epoch
    log.save_sample(run.epoch, sample_sheet(nets.g, test, nets.space, nets.device))
    nets.g.chroma_gain = 1.0
    reporter.epoch_end(row, best)
    log.add(row)
    return best, bool(patience) and run.epoch - run.best_epoch >= patience
