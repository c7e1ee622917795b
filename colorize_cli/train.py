"""`colorize train`: the pix2pix conditional GAN training loop, on a CPU, one GPU or many.

One step (Isola et al. 2017, as the original project trained it):
1. G colors a batch of gray photos: fake = G(gray).
2. D learns to answer 1 on every patch of a real pair and 0 on every patch of a fake one:
   loss_D = 0.5 * (gan(D(gray, real), 1) + gan(D(gray, fake), 0)).
3. G learns to make D answer 1 and to stay near the truth:
   loss_G = gan(D(gray, fake), 1) + l1_weight * mean|fake - real|   (in the network's [-1, 1] units).
gan() is least squares, (logit - target)^2 ("lsgan", the original project's), or the logistic
loss on logits ("vanilla", the pix2pix paper's). The learning rate is constant for the first
half of the epochs, then falls linearly towards 0.

A run folder (RUN, `--out`) holds config.json (every setting), metrics.csv (one row per
epoch), samples/epoch_NNN.png (gray | generated | real for the same test photos every epoch),
curves.png, last.safetensors and best.safetensors (lowest test L1), written at most every 30 s
(--checkpoint-every) and always at the end or a stop. Both checkpoints carry
everything `--resume` needs to go on bit for bit: weights, optimizer and scheduler state, the
random generators, and where in which epoch the run stopped.

Many processes (`torchrun --nproc-per-node=N -m colorize_cli train DATA`): each takes its own
shard of every epoch's shuffled order (what DistributedSampler does), gradients are averaged
by DistributedDataParallel (NCCL on GPUs, gloo on CPUs), and only rank 0 writes files or logs.
--batch-size is per process, so the global batch is N times it.
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.distributed as torch_dist
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from colorize_cli import metrics
from colorize_cli.checkpoint import load_checkpoint, load_state, save_checkpoint
from colorize_cli.color import decode_output, encode_input, encode_target, to_uint8_exact
from colorize_cli.data import Pairs, load_data
from colorize_cli.device import Device, autocast_bf16, pick_device
from colorize_cli.errors import UserError
from colorize_cli.files import atomic_path, ensure_memory, exclusive_lock, usable_cpus, write_error
from colorize_cli.imageio import save_image
from colorize_cli.model import ModelConfig, PatchGAN, UNet, build
from colorize_cli.pairs import native_size

console = Console(stderr=True, highlight=False)

# The original project's recipe (its report): RGB in and out as its Keras model had, one photo
# per step, least-squares adversarial loss plus 100 x L1, 200 epochs. Options given with
# `--preset seed` win over these. The rest stays as for any run (Adam 2e-4, betas 0.5/0.999,
# the learning-rate decay); the report's text also names SGD at 0.01: add `--optimizer sgd`.
SEED_RECIPE = {"space": "rgb", "batch_size": 1, "gan_loss": "lsgan", "l1_weight": 100.0, "epochs": 200}
DEFAULT_LR = {"adam": 2e-4, "sgd": 0.01}  # sgd: the learning rate the original report gives for its SGD
# Settings a resumed run may change; any other option given with --resume must equal the run's.
RESUME_MAY_CHANGE = ("data", "epochs", "patience", "device", "threads", "compile", "checkpoint_every")
MODEL_OPTIONS = ("size", "width", "space")
SAMPLES = 6  # test photos in each samples/epoch_NNN.png
EVAL_BATCH = 16
LOCK = ".train.lock"  # in the run folder, held while a `colorize train` works there
RUN_OUTPUTS = ("best.safetensors", "curves.png", "metrics.csv", "samples")  # what starting a run over replaces
# zlib level of the pictures written every epoch: 1 saves 3x faster than Pillow's 6 for ~10% more bytes,
# which matters when a GPU epoch takes a second.
FAST_PNG = 1


@dataclass
class TrainConfig:
    """Everything a run needs; RUN/config.json is this, as JSON."""

    data: str
    out: str
    model: ModelConfig = field(default_factory=ModelConfig)
    epochs: int = 100
    batch_size: int = 16  # per process
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = 2e-4
    beta1: float = 0.5  # Adam's; pix2pix's 0.5 instead of 0.9 keeps the GAN game steadier
    beta2: float = 0.999
    gan_loss: Literal["lsgan", "vanilla"] = "lsgan"
    l1_weight: float = 100.0
    seed: int = 0
    patience: int = 0  # stop after this many epochs without a better test L1; 0: never
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
        return cls(**{**d, "model": ModelConfig.from_dict(d["model"])})


def check_config(cfg: TrainConfig) -> None:
    for name, value, low in (("epochs", cfg.epochs, 1), ("batch-size", cfg.batch_size, 1),
                             ("patience", cfg.patience, 0), ("threads", cfg.threads, 0)):
        if value < low:
            raise UserError(f"--{name} must be at least {low}, got {value}")
    if not cfg.checkpoint_every >= 0:
        raise UserError(f"--checkpoint-every must be 0 or more seconds, got {cfg.checkpoint_every}")
    if not cfg.lr > 0 or not cfg.l1_weight >= 0:
        raise UserError("--lr must be positive and --l1-weight not negative")
    if cfg.optimizer not in DEFAULT_LR or cfg.gan_loss not in ("lsgan", "vanilla"):
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
            raise UserError("give DATA (a prep output or a folder of photos), or --resume RUN")
        opts = {**(SEED_RECIPE if preset else {}), **given}
        model = ModelConfig(size=opts.pop("size", None) or native_size(data), width=opts.pop("width", 64),
                            space=opts.pop("space", "lab"))
        opts.setdefault("lr", DEFAULT_LR.get(opts.get("optimizer", "adam"), 2e-4))
        cfg = TrainConfig(data=os.path.abspath(data), out=str(out or _default_out()), model=model,
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
        raise UserError(f"{out}: cannot read ({e.strerror or e})") from None
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


def write_config(cfg: TrainConfig) -> None:
    with atomic_path(Path(cfg.out) / "config.json") as tmp:
        tmp.write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")


# --- processes and devices ---------------------------------------------------------------


@dataclass(frozen=True)
class Dist:
    """This process's place among torchrun's processes (rank 0 of 1 when run alone)."""

    rank: int = 0
    world: int = 1
    local_world: int = 1
    backend: str = ""

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def on(self) -> bool:
        return self.world > 1


def start_processes(cfg: TrainConfig) -> tuple[Dist, torch.device]:
    """Join torchrun's process group when its environment variables say there is one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(cfg.device, local_rank)
    if world <= 1:
        return Dist(), device
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend, init_method="env://")
    return Dist(torch_dist.get_rank(), torch_dist.get_world_size(),
                int(os.environ.get("LOCAL_WORLD_SIZE", world)), backend), device


def cpu_threads(cfg: TrainConfig, d: Dist) -> int:
    if cfg.threads:
        return cfg.threads
    return max(1, usable_cpus() // d.local_world)


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
      until their backward. 4 bytes a value; 2 under the bf16 autocast used on CUDA (`amp`).
    Not counted: the backward pass's passing buffers and the allocator's slack, so this is a
    floor of the peak (width 64, 256 px, batch 16 on a CPU: 1.94 GiB estimated, 2.07 GiB
    measured), and the decoded photos, which load_data keeps within half the free memory.
    """
    m, s = cfg.model, cfg.model.size
    params = _parameters(m)
    per_param = 4 * (2 + (2 if cfg.optimizer == "adam" else 0) + (1 if ddp else 0))
    widths = [m.width * min(2**i, 8) for i in range(max(m.depth, m.d_layers))]  # channels per level, as UNet/PatchGAN
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
    need = training_memory(cfg, amp=cuda, ddp=d.on)
    if cuda:
        free = torch.cuda.mem_get_info(device)[0]
        if need > free:
            raise UserError(f"{what} needs about {need / 2**30:.1f} GiB of GPU memory; "
                            f"{device} has {free / 2**30:.1f} GiB free")
        need = 4 * _parameters(m)  # the networks are built in RAM, then moved
    ensure_memory(need, what)


# --- one epoch's batches -----------------------------------------------------------------


def epoch_order(n: int, seed: int, epoch: int, d: Dist) -> tuple[torch.Tensor, torch.Tensor]:
    """This process's indices and horizontal flips for `epoch` (0-based).

    The shuffle and flips come from a generator seeded by (seed, epoch) alone, so they are
    the same in every process and after a resume. Like DistributedSampler, the order is
    padded with its own start to a multiple of the process count and dealt out round robin.
    """
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=g)
    flip = torch.rand(n, generator=g) < 0.5
    per = math.ceil(n / d.world)
    order = order.repeat(math.ceil(per * d.world / n))[: per * d.world][d.rank :: d.world]
    return order, flip[order]


def get_batch(data: Pairs, idx: torch.Tensor, flip: torch.Tensor, device: torch.device,
              channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(gray, color) in [0, 1] on `device`, flipped where `flip` says (a pure view op on device)."""
    color, gray = data.color[idx], data.gray[idx]
    if color.device != device:
        color, gray, flip = (t.to(device, non_blocking=True) for t in (color, gray, flip))
    f = flip.view(-1, 1, 1, 1)
    color = torch.where(f, color.flip(-1), color).float() / 255
    gray = torch.where(f, gray.flip(-1), gray).float() / 255
    if channels_last:
        color, gray = color.contiguous(memory_format=torch.channels_last), gray.contiguous(memory_format=torch.channels_last)
    return gray, color


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


class Nets:
    """The two networks, their optimizers and one training step, set up for a device.

    Fast paths (see the README's performance section for what each is worth):
    - channels_last memory on every device: oneDNN (CPU) and cuDNN (GPU) run NHWC convolutions
      fastest, and the batches are made NHWC once in `get_batch`.
    - CUDA: bf16 autocast (the losses in fp32), fused Adam (one kernel per step instead of
      several per parameter).
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
        self.channels_last = device.type in ("cpu", "cuda")
        memory = torch.channels_last if self.channels_last else torch.contiguous_format
        self.g, self.d = g.to(device, memory_format=memory), dnet.to(device, memory_format=memory)
        self.opt_g, self.opt_d = self._optimizer(cfg, self.g, cuda), self._optimizer(cfg, self.d, cuda)
        self.space, self.gan_loss, self.l1_weight = mcfg.space, cfg.gan_loss, cfg.l1_weight
        # Training forms: DDP averages gradients; torch.compile (opt-in) fuses kernels. The plain
        # D (`d_plain`) scores G's output in G's step, where D's own gradients are not wanted.
        self.g_train, self.d_train, self.d_plain = self.g, self.d, self.d
        if d.on:
            ids = [device.index] if cuda else None
            self.g_train = nn.parallel.DistributedDataParallel(self.g, ids)
            self.d_train = nn.parallel.DistributedDataParallel(self.d, ids)
        if cfg.compile:
            self.g_train, self.d_train, self.d_plain = (torch.compile(m) for m in (self.g_train, self.d_train, self.d))
        self.amp = cuda

    @staticmethod
    def _optimizer(cfg: TrainConfig, net: nn.Module, cuda: bool) -> torch.optim.Optimizer:
        if cfg.optimizer == "adam":
            return torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=cuda or None)
        return torch.optim.SGD(net.parameters(), lr=cfg.lr)

    def train_step(self, gray01: torch.Tensor, color01: torch.Tensor) -> torch.Tensor:
        """One D step then one G step on a batch; returns (d_loss, g_adv, g_l1) on the device."""
        x, y = encode_input(gray01, self.space), encode_target(color01, self.space)
        with autocast_bf16(self.amp):
            fake = self.g_train(x)
        # D: real pairs -> 1, fake pairs -> 0, on every patch.
        self.d.requires_grad_(True)
        with autocast_bf16(self.amp):
            real_logits, fake_logits = self.d_train(x, y), self.d_train(x, fake.detach())
        d_loss = 0.5 * (gan_loss(real_logits.float(), True, self.gan_loss) + gan_loss(fake_logits.float(), False, self.gan_loss))
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt_d.step()
        # G: make D answer 1, and stay near the truth.
        self.d.requires_grad_(False)
        with autocast_bf16(self.amp):
            fake_logits = self.d_plain(x, fake)
        adv = gan_loss(fake_logits.float(), True, self.gan_loss)
        l1 = (fake.float() - y).abs().mean()
        self.opt_g.zero_grad(set_to_none=True)
        (adv + self.l1_weight * l1).backward()
        self.opt_g.step()
        return torch.stack([d_loss, adv, l1]).detach()


# --- evaluation and the run's pictures ---------------------------------------------------


@torch.no_grad()
def colorize_batch(g: nn.Module, gray01: torch.Tensor, space: str, amp: bool) -> torch.Tensor:
    """Eval-mode forward pass, decoded as a user gets it (luma locked to the gray)."""
    with autocast_bf16(amp):
        out = g(encode_input(gray01, space))
    return decode_output(gray01, out.float(), space)


def _user_rgb(rgb01: torch.Tensor, gray: torch.Tensor) -> list[np.ndarray]:
    """What a user's 8-bit file holds: to_uint8_exact of each image, (H, W, 3) uint8."""
    rgb = rgb01.permute(0, 2, 3, 1).cpu().numpy()
    gray = gray[:, 0].cpu().numpy()
    return [to_uint8_exact(r, g) for r, g in zip(rgb, gray)]


def _scores(preds: torch.Tensor, truths: torch.Tensor) -> dict[str, float]:
    """Mean L1, PSNR, SSIM of uint8 (N, 3, H, W) images against the real ones: on a GPU in one
    batch there (metrics.batch_scores), on a CPU image by image with scikit-image, whose
    running-sum filters beat torch's pooling there (0.3 s against 1 s for 25 photos at 256 px)."""
    if preds.device.type != "cpu":
        return metrics.batch_scores(preds.double() / 255, truths.to(preds.device).double() / 255)
    pairs = zip(preds.permute(0, 2, 3, 1).numpy() / 255.0, truths.permute(0, 2, 3, 1).cpu().numpy() / 255.0)
    l1, psnr, ssim = (float(np.mean(c)) for c in zip(*((metrics.mae(p, t), metrics.psnr(p, t), metrics.ssim(p, t))
                                                         for p, t in pairs)))
    return {"l1": l1, "psnr": psnr, "ssim": ssim}


def evaluate(g: UNet, test: Pairs, space: str, device: torch.device, amp: bool) -> dict[str, float]:
    """Mean L1, PSNR, SSIM of the test split, on the 8-bit images a user would get."""
    was_training = g.training
    g.eval()
    preds: list[np.ndarray] = []
    for start in range(0, len(test), EVAL_BATCH):
        gray = test.gray[start : start + EVAL_BATCH].to(device)
        preds += _user_rgb(colorize_batch(g, gray.float() / 255, space, amp), gray)
    g.train(was_training)
    made = torch.from_numpy(np.stack(preds)).permute(0, 3, 1, 2).to(device)
    return _scores(made, test.color)


def gray_baseline(test: Pairs) -> dict[str, float]:
    """The same scores for the gray photo itself: the bar a colorizer has to clear."""
    return _scores(test.gray.expand(-1, 3, -1, -1), test.color)


def sample_sheet(g: UNet, test: Pairs, space: str, device: torch.device, amp: bool) -> Image.Image:
    """Rows of gray | generated | real for the first SAMPLES test photos."""
    n = min(SAMPLES, len(test))
    gray = test.gray[:n].to(device)
    was_training = g.training
    g.eval()
    made = _user_rgb(colorize_batch(g, gray.float() / 255, space, amp), gray)
    g.train(was_training)
    s = test.color.shape[-1]
    sheet = Image.new("RGB", (3 * s, n * s))
    for i in range(n):
        sheet.paste(Image.fromarray(test.gray[i, 0].cpu().numpy()).convert("RGB"), (0, i * s))
        sheet.paste(Image.fromarray(made[i]), (s, i * s))
        sheet.paste(Image.fromarray(test.color[i].permute(1, 2, 0).cpu().numpy()), (2 * s, i * s))
    return sheet


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


CURVES = [  # panel title, then (legend, metrics.csv column, colour) per line
    ("GAN losses", [("D", "d_loss", "#d62728"), ("G adversarial", "g_adv", "#1f77b4")]),
    ("train L1 (network units)", [("G L1", "g_l1", "#2ca02c")]),
    ("learning rate", [("lr", "lr", "#7f7f7f")]),
    ("test L1 (lower is better)", [("model", "test_l1", "#1f77b4"), ("gray", "gray_l1", "#999999")]),
    ("test PSNR, dB", [("model", "test_psnr", "#1f77b4"), ("gray", "gray_psnr", "#999999")]),
    ("test SSIM", [("model", "test_ssim", "#1f77b4"), ("gray", "gray_ssim", "#999999")]),
]


def plot_curves(rows: list[dict], path: Path) -> None:
    """The CURVES panels in a 3 x 2 grid, drawn with Pillow so that no plotting library is needed."""
    pw, ph = 380, 250
    img = Image.new("RGB", (3 * pw, 2 * ph), "white")
    draw = ImageDraw.Draw(img)
    for k, (title, series) in enumerate(CURVES):
        _panel(draw, ((k % 3) * pw, (k // 3) * ph, pw, ph), title, series, rows)
    save_image(img, path, compress_level=FAST_PNG)


def _panel(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], title: str,
           series: list[tuple[str, str, str]], rows: list[dict]) -> None:
    """One line chart: title and legend on top, value range on the left, epochs below."""
    x0, y0, w, h = box
    left, top, right, bottom = x0 + 58, y0 + 30, x0 + w - 15, y0 + h - 30
    font, small = _font(14), _font(11)
    draw.text((x0 + 48, y0 + 8), title, fill="black", font=font)
    draw.rectangle((left, top, right, bottom), outline="#444444")
    epochs = [int(r["epoch"]) for r in rows]
    lines = [[(e, float(r[key])) for e, r in zip(epochs, rows) if math.isfinite(float(r[key]))] for _, key, _ in series]
    values = [v for line in lines for _, v in line]
    if not values:
        return
    lo, hi = min(values), max(values)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5 * (abs(lo) or 1), hi + 0.5 * (abs(hi) or 1)
    e0, e1 = epochs[0], max(epochs[-1], epochs[0] + 1)

    def xs(e: float) -> float:
        return left + (e - e0) / (e1 - e0) * (right - left)

    def ys(v: float) -> float:
        return bottom - (v - lo) / (hi - lo) * (bottom - top)

    for v in (hi, (lo + hi) / 2, lo):
        draw.text((left - 4, ys(v)), f"{v:.3g}", fill="black", font=small, anchor="rm")
    for e, anchor in ((e0, "lt"), (e1, "rt")):
        draw.text((xs(e), bottom + 4), f"{e}", fill="black", font=small, anchor=anchor)
    draw.text(((left + right) / 2, bottom + 4), "epoch", fill="#444444", font=small, anchor="mt")
    legend_x = right
    for (label, _, color), line in reversed(list(zip(series, lines))):
        pts = [(xs(e), ys(v)) for e, v in line]
        if len(pts) > 1:
            draw.line(pts, fill=color, width=2)
        for x, y in pts if len(pts) < 40 else pts[-1:]:
            draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=color)
        draw.text((legend_x, y0 + 10), label, fill=color, font=small, anchor="ra")
        legend_x -= draw.textlength(label, font=small) + 14


# --- the run's files ---------------------------------------------------------------------

CSV_FIELDS = ("epoch", "lr", "d_loss", "g_adv", "g_l1", "test_l1", "test_psnr", "test_ssim",
              "gray_l1", "gray_psnr", "gray_ssim", "seconds", "images_per_s")


def read_metrics(path: Path, upto: int) -> list[dict]:
    """The rows of epochs 1..upto (a row written after the checkpoint it belongs to is dropped).
    Every column must be there and hold numbers: the rows are plotted and written back."""
    if not path.is_file():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in CSV_FIELDS if c not in (reader.fieldnames or ())]
            if missing:
                raise ValueError(f"no {missing[0]} column")
            rows = [row for row in reader if _check_row(row, reader.line_num) <= upto]
    except UnicodeDecodeError:
        reason = "not UTF-8 text"
    except (csv.Error, ValueError) as e:
        reason = str(e)
    else:
        return rows
    raise UserError(f"{path}: not a metrics table of colorize train ({reason}); delete it to go on without the "
                    "past epochs' rows")


def _check_row(row: dict, line: int) -> int:
    """A metrics row's epoch, once every value has been found to be a number (ValueError if not)."""
    for key in CSV_FIELDS:
        kind, parse = ("a whole number", int) if key == "epoch" else ("a number", float)
        try:
            parse(row[key])
        except (TypeError, ValueError):
            raise ValueError(f"line {line}: {key} {row[key]!r} is not {kind}") from None
    return int(row["epoch"])


def write_metrics(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, CSV_FIELDS)
        writer.writeheader()
        writer.writerows({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()} for row in rows)


def _optimizer_state(prefix: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer's state as named tensors plus a JSON part (no pickling)."""
    sd = opt.state_dict()
    tensors, other = {}, {}
    for i, state in sd["state"].items():
        for k, v in state.items():
            if torch.is_tensor(v):
                tensors[f"{prefix}.{i}.{k}"] = v
            else:
                other[f"{i}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "state": other}


def _load_optimizer(opt: torch.optim.Optimizer, prefix: str, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for key, v in [(k[len(prefix) + 1:], v) for k, v in tensors.items() if k.startswith(prefix + ".")] + \
            list(meta["state"].items()):
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _rng_states(d: Dist, device: torch.device) -> dict[str, torch.Tensor]:
    """Every process's torch generator states (CPU, and CUDA or MPS), as uint8 tensors."""
    local = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        local["cuda"] = torch.cuda.get_rng_state(device)
    elif device.type == "mps":
        local["mps"] = torch.mps.get_rng_state()
    if not d.on:
        return {f"rng.{k}.0": v for k, v in local.items()}
    out = {}
    for k, v in local.items():
        comm = v.to(device) if d.backend == "nccl" else v
        parts = [torch.empty_like(comm) for _ in range(d.world)]
        torch_dist.all_gather(parts, comm)
        out.update({f"rng.{k}.{r}": p.cpu() for r, p in enumerate(parts)})
    return out


def _restore_rng(tensors: dict[str, torch.Tensor], d: Dist, device: torch.device) -> None:
    """Put this process's generators back (the CUDA or MPS one where it was saved too)."""
    torch.set_rng_state(tensors[f"rng.cpu.{d.rank}"])
    if device.type == "cuda" and f"rng.cuda.{d.rank}" in tensors:
        torch.cuda.set_rng_state(tensors[f"rng.cuda.{d.rank}"], device)
    elif device.type == "mps" and f"rng.mps.{d.rank}" in tensors:
        torch.mps.set_rng_state(tensors[f"rng.mps.{d.rank}"])


# --- Ctrl-C ------------------------------------------------------------------------------


class StopFlag:
    """Set by Ctrl-C (SIGINT) or SIGTERM; the loop checks it between steps, saves and exits."""

    def __init__(self) -> None:
        self.set = False


@contextmanager
def catch_stop(flag: StopFlag, d: Dist) -> Iterator[None]:
    """A first Ctrl-C asks for a clean stop; alone, a second one aborts at once. Under torchrun
    every signal only asks (torchrun itself passes Ctrl-C on to the workers a second time)."""
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def ask(signum: int, frame: object) -> None:
        if not flag.set and d.main:
            console.print("[yellow]stopping after this step: saving a checkpoint to resume from "
                          "(Ctrl-C again to abort at once)[/yellow]")
        flag.set = True
        if not d.on:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    for s in previous:
        signal.signal(s, ask)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


# --- progress ----------------------------------------------------------------------------


class Reporter:
    """Epoch and step bars (a terminal only) with losses, images/s and ETA, and one line per
    epoch (always). Losses are read from the device only every `every` seconds."""

    def __init__(self, enabled: bool, every: float = 1.0) -> None:
        self.enabled, self.every = enabled, every
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console,
            disable=not (enabled and console.is_terminal),
        )
        self.last_read = 0.0

    def start(self, epochs: int, done: int, steps: int, images_per_step: int) -> None:
        self.steps, self.epochs, self.images_per_step = steps, epochs, images_per_step
        self.progress.start()
        self.epoch_bar = self.progress.add_task("epochs", total=epochs, completed=done, info="")
        self.step_bar = self.progress.add_task("steps", total=steps, info="")

    def epoch_start(self, epoch: int, step: int) -> None:
        self.t0, self.step0 = time.perf_counter(), step
        self.progress.update(self.step_bar, description=f"epoch {epoch + 1}", completed=step, info="")

    def step(self, epoch: int, step: int, sums: torch.Tensor, n: int) -> None:
        """After `step` steps of `epoch` (0-based); `sums` holds the loss totals over `n` steps."""
        self.progress.update(self.step_bar, completed=step)
        now = time.perf_counter()
        if not self.progress.disable and now - self.last_read > self.every:
            self.last_read = now
            d, adv, l1 = (sums / max(n, 1)).tolist()
            per_step = (now - self.t0) / max(step - self.step0, 1)
            rate = self.images_per_step / per_step
            left = (self.steps - step) * per_step
            self.progress.update(self.step_bar, info=f"D {d:.3f}  G {adv:.3f} + L1 {l1:.4f}  {rate:.1f} img/s  ETA {_hms(left)}")
            self.progress.update(self.epoch_bar, info=f"ETA {_hms(left + (self.epochs - epoch - 1) * self.steps * per_step)} "
                                                      "(training steps only)")

    def epoch_end(self, row: dict, best: bool) -> None:
        self.progress.update(self.epoch_bar, completed=int(row["epoch"]))
        if self.enabled:
            self.progress.console.print(
                f"epoch {row['epoch']}/{self.epochs}  D {row['d_loss']:.3f}  G {row['g_adv']:.3f} + L1 {row['g_l1']:.4f}  "
                f"| test L1 {row['test_l1']:.4f} PSNR {row['test_psnr']:.2f} SSIM {row['test_ssim']:.3f}  "
                f"(gray {row['gray_l1']:.4f} {row['gray_psnr']:.2f} {row['gray_ssim']:.3f})  "
                f"| {row['images_per_s']:.1f} img/s {row['seconds']:.1f} s" + ("  [green]best[/green]" if best else ""),
                soft_wrap=True)

    def close(self) -> None:
        self.progress.stop()


def _count(n: int, one: str, many: str | None = None) -> str:
    """'1 epoch', '2 epochs': the noun agreeing with its number."""
    return f"{n} {one if n == 1 else many or one + 's'}"


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


# --- the run -----------------------------------------------------------------------------


@dataclass
class TrainResult:
    out: Path
    main: bool  # rank 0, the process that reports
    epochs_done: int  # complete epochs
    interrupted: bool
    stopped_at: int  # step of the unfinished epoch where an interrupted run stopped
    best_epoch: int
    best: dict[str, float]  # test scores of the best epoch
    gray: dict[str, float]  # the gray baseline's
    seconds: float
    images_per_s: float  # training steps only (no evaluation, no checkpoints)
    generator: UNet  # the trained networks (train mode), as this process holds them
    discriminator: PatchGAN


def train(cfg: TrainConfig, resume: bool = False, reporter: Reporter | None = None) -> TrainResult:
    """Train (or, with `resume`, go on training) the run `cfg` describes; see the module docstring."""
    d, device = start_processes(cfg)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(cpu_threads(cfg, d))
        with ExitStack() as held:  # the run folder's lock, from when _train takes it
            result = _train(cfg, resume, d, device, reporter or Reporter(enabled=d.main), held)
        if d.on:
            torch_dist.barrier()  # rank 0 may still be writing; leave the process group together
        return result
    finally:
        torch.set_num_threads(threads)
        if d.on:
            torch_dist.destroy_process_group()


def _train(cfg: TrainConfig, resume: bool, d: Dist, device: torch.device, reporter: Reporter,
           held: ExitStack) -> TrainResult:
    out, mcfg = Path(cfg.out), cfg.model
    cuda = device.type == "cuda"
    if cfg.sync_bn and d.on and not cuda:
        raise UserError("--sync-bn needs CUDA GPUs (NCCL); gloo on CPUs cannot synchronise BatchNorm")
    if d.main:  # a new run's folder is locked once it exists, after the data are read
        if resume:
            held.enter_context(exclusive_lock(out, LOCK, "`colorize train`"))
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
        if extra["epoch"] >= cfg.epochs:
            raise UserError(f"{out} has finished its {_count(extra['epoch'], 'epoch')}; give --epochs N (more than "
                            f"{extra['epoch']}) to train on")
        checkpoint = (tensors, extra)
    check_memory(cfg, device, d)
    if checkpoint:
        check_best(out / "best.safetensors", mcfg)
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")

    with console.status(f"reading {cfg.data}") if d.main else nullcontext():
        data = load_data(cfg.data, mcfg.size)
    if d.main:
        for path, reason in data.skipped:
            console.print(f"[yellow]skipped[/yellow] {escape(path)}: {escape(reason)}", soft_wrap=True)
    on_device = not cuda or data.train.nbytes + data.test.nbytes < 0.5 * torch.cuda.mem_get_info(device)[0]
    if on_device:
        data = replace(data, train=data.train.to(device), test=data.test.to(device))

    nets = Nets(cfg, device, d)
    if checkpoint:
        load_state(nets.g, checkpoint[0], "generator", out / "last.safetensors")
        load_state(nets.d, checkpoint[0], "discriminator", out / "last.safetensors")
    g, dnet, opt_g, opt_d = nets.g, nets.d, nets.opt_g, nets.opt_d
    sched_g, sched_d = (torch.optim.lr_scheduler.LambdaLR(o, lambda e: lr_factor(e, cfg.epochs)) for o in (opt_g, opt_d))

    # Where to start, and the run's memory (best epoch, metrics so far).
    done, start_step, best_l1, best_epoch = 0, 0, math.inf, 0
    sums = torch.zeros(3, device=device)  # d_loss, g_adv, g_l1 summed over this epoch's steps
    if checkpoint:
        tensors, extra = checkpoint
        _load_optimizer(opt_g, "optimizer_g", tensors, extra["optimizer_g"])
        _load_optimizer(opt_d, "optimizer_d", tensors, extra["optimizer_d"])
        sched_g.load_state_dict(extra["scheduler_g"])
        sched_d.load_state_dict(extra["scheduler_d"])
        done, start_step = extra["epoch"], extra["step"]
        if extra["world_size"] != d.world:  # another process count shards the epoch differently
            start_step = 0
            if d.main:
                console.print(f"[yellow]{out / 'last.safetensors'} was saved by "
                              f"{_count(extra['world_size'], 'process', 'processes')}, "
                              f"this is {d.world}: the random streams start afresh and epoch {done + 1} "
                              "from its beginning[/yellow]", soft_wrap=True)
        best_l1 = extra["best_l1"] if extra["best_l1"] is not None else math.inf
        best_epoch = extra["best_epoch"]
        if not (out / "best.safetensors").exists():  # deleted: the next epoch's model becomes the best
            best_l1, best_epoch = math.inf, 0
        if start_step and d.main:
            sums = tensors["loss_sums"].to(device)
        # --epochs may have changed: the learning rate follows the new schedule from here.
        for opt, sched in ((opt_g, sched_g), (opt_d, sched_d)):
            for group, base in zip(opt.param_groups, sched.base_lrs):
                group["lr"] = base * lr_factor(done, cfg.epochs)
        if extra["world_size"] == d.world:
            _restore_rng(tensors, d, device)
    rows = read_metrics(out / "metrics.csv", done) if resume else []

    def snapshot(epochs_done: int, step: int, keep: bool = False) -> tuple[dict[str, torch.Tensor], dict] | None:
        """Everything --resume needs (rank 0's; None on the others, which still take part).
        `keep`: copies, for a best epoch whose file is written later."""
        rng = _rng_states(d, device)
        if not d.main:
            return None
        tg, meta_g = _optimizer_state("optimizer_g", opt_g)
        td, meta_d = _optimizer_state("optimizer_d", opt_d)
        tensors = {**{f"generator.{k}": v for k, v in g.state_dict().items()},
                   **{f"discriminator.{k}": v for k, v in dnet.state_dict().items()},
                   **tg, **td, **rng, "loss_sums": sums}
        if keep:
            tensors = {k: v.detach().clone() for k, v in tensors.items()}
        extra = {"epoch": epochs_done, "step": step, "optimizer_g": meta_g, "optimizer_d": meta_d,
                 "scheduler_g": sched_g.state_dict(), "scheduler_d": sched_d.state_dict(),
                 "best_l1": best_l1 if math.isfinite(best_l1) else None, "best_epoch": best_epoch,
                 "world_size": d.world, "train_config": cfg.to_dict()}
        return tensors, extra

    def save(epochs_done: int, step: int, best_now: bool) -> None:
        """last.safetensors, and best.safetensors when this state or a kept one is the best."""
        nonlocal best_kept, last_write, saved
        state = snapshot(epochs_done, step)
        if state is not None:
            save_checkpoint(out / "last.safetensors", state[0], mcfg, state[1])
            best_state = state if best_now else best_kept
            if best_state is not None:
                save_checkpoint(out / "best.safetensors", best_state[0], mcfg, best_state[1])
        best_kept, last_write, saved = None, time.perf_counter(), (epochs_done, step)

    def ensure_finite(epoch: int) -> None:
        """Stop (a UserError, exit 1) once the losses or the weights are not finite numbers any
        more, before such a model can be evaluated, saved or made the best."""
        tensors = [sums, *(t for net in (g, dnet) for t in net.state_dict().values() if t.is_floating_point())]
        if bool(torch.stack([t.isfinite().all() for t in tensors]).all()):
            return
        step = int(bad_step)  # 0: the losses stayed finite, an update was not
        where, what = (f"epoch {epoch + 1} at step {step}", "a loss") if step else (f"epoch {epoch + 1}", "the weights")
        kept = ("no checkpoint was saved" if saved is None else f"{out / 'last.safetensors'} holds the last finite "
                f"state (epoch {saved[0]}{f', step {saved[1]}' if saved[1] else ''})")
        raise UserError(f"training diverged in {where} ({what} became NaN or infinite); {kept}: start a new run "
                        f"with a smaller --lr than {cfg.lr:g}")

    def agree(flag: bool) -> bool:
        """True when any process says so (every process must call this at the same point)."""
        if not d.on:
            return flag
        t = torch.tensor([float(flag)], device=device if d.backend == "nccl" else "cpu")
        torch_dist.all_reduce(t, torch_dist.ReduceOp.MAX)
        return bool(t.item())

    if d.main:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise write_error(out, e) from None
        if not resume:
            held.enter_context(exclusive_lock(out, LOCK, "`colorize train`"))
            check_new_run_folder(out)  # again, under the lock: another run may have begun here meanwhile
        write_config(cfg)
        gray = gray_baseline(data.test)
        console.print(
            f"{escape(cfg.data)} ({data.source}): {len(data.train)} train, {_count(len(data.test), 'test photo')} at "
            f"{mcfg.size} px{'' if on_device else ' (kept in CPU memory)'}"
            f"{' (decoded into a temporary file: more than half the free memory)' if data.on_disk else ''} · "
            f"{mcfg.space} U-Net width {mcfg.width}, "
            f"{sum(p.numel() for p in g.parameters()) / 1e6:.2f} M parameters · {device}"
            f"{f' x {d.world} processes' if d.on else ''} · run folder {escape(str(out))}", soft_wrap=True)
        if resume:
            console.print(f"resuming after epoch {done}" + (f", step {start_step}" if start_step else ""))
    else:
        gray = {}

    stop = StopFlag()
    best_kept: tuple[dict[str, torch.Tensor], dict] | None = None  # a best epoch not yet in best.safetensors
    saved = (done, start_step) if checkpoint else None  # (epoch, step) last.safetensors holds
    last_write = time.perf_counter()
    steps = math.ceil(math.ceil(len(data.train) / d.world) / cfg.batch_size)
    interrupted, stopped_at, t_start, images, train_seconds = False, 0, time.perf_counter(), 0.0, 0.0
    g.train()
    dnet.train()
    reporter.start(cfg.epochs, done, steps, cfg.batch_size * d.world)
    try:
        with catch_stop(stop, d):
            epoch = done
            while epoch < cfg.epochs:
                order, flips = epoch_order(len(data.train), cfg.seed, epoch, d)
                order, flips = order.to(data.train.color.device), flips.to(data.train.color.device)
                batches = list(zip(order.split(cfg.batch_size), flips.split(cfg.batch_size)))
                reporter.epoch_start(epoch, start_step)
                t0 = time.perf_counter()
                # The first step (1-based) after which the loss sums are not finite (they stay so),
                # noted on the device so that no step waits for a value; 0: none.
                bad_step = torch.zeros((), dtype=torch.long, device=device)
                for step in range(start_step, steps):
                    # Alone, a stop is seen at once; processes agree on it every 25 steps.
                    if (stop.set if not d.on else step % 25 == 0 and agree(stop.set)):
                        interrupted = True
                        break
                    idx, flip = batches[step]
                    sums += nets.train_step(*get_batch(data.train, idx, flip, device, nets.channels_last))
                    bad_step = torch.where((bad_step == 0) & ~sums.isfinite().all(), step + 1, bad_step)
                    reporter.step(epoch, step + 1, sums, step + 1)
                if interrupted:
                    if d.on:
                        torch_dist.all_reduce(sums)  # rank 0 carries every process's partial sums
                    ensure_finite(epoch)
                    save(epoch, step, best_now=False)
                    stopped_at = step
                    break
                epoch_images = len(data.train) * (steps - start_step) / steps
                images += epoch_images
                if d.on:
                    torch_dist.all_reduce(sums)
                    for b in list(g.buffers()) + list(dnet.buffers()):  # BN statistics: rank 0's
                        torch_dist.broadcast(b, 0)
                ensure_finite(epoch)
                losses = (sums / (steps * d.world)).tolist()
                seconds = time.perf_counter() - t0
                train_seconds += seconds
                lr = opt_g.param_groups[0]["lr"]
                sched_g.step()
                sched_d.step()
                epoch, start_step = epoch + 1, 0
                sums.zero_()
                stop_early = False
                if d.main:
                    test = evaluate(g, data.test, mcfg.space, device, cuda)
                    best = test["l1"] < best_l1
                    if best:
                        best_l1, best_epoch = test["l1"], epoch
                    row = {"epoch": epoch, "lr": lr, "d_loss": losses[0], "g_adv": losses[1], "g_l1": losses[2],
                           **{f"test_{k}": v for k, v in test.items()}, **{f"gray_{k}": v for k, v in gray.items()},
                           "seconds": seconds, "images_per_s": epoch_images / max(seconds, 1e-9)}
                    rows.append(row)
                    save_image(sample_sheet(g, data.test, mcfg.space, device, cuda),
                               out / "samples" / f"epoch_{epoch:03d}.png", compress_level=FAST_PNG)
                    stop_early = bool(cfg.patience) and epoch - best_epoch >= cfg.patience
                    reporter.epoch_end(row, best)
                else:
                    best = False
                if d.main:  # the row first: a kill between the two leaves a row that resume drops
                    write_metrics(out / "metrics.csv", rows)
                    plot_curves(rows, out / "curves.png")
                early, stopping = agree(stop_early), agree(stop.set)  # the latter: a stop during the evaluation
                # Checkpoints at most every --checkpoint-every seconds (and when leaving): a fast GPU
                # epoch would otherwise spend longer writing hundreds of MB than training.
                best = agree(best)
                leaving = early or stopping or epoch >= cfg.epochs
                if agree(leaving or time.perf_counter() - last_write >= cfg.checkpoint_every):
                    save(epoch, 0, best_now=best)
                elif best:
                    best_kept = snapshot(epoch, 0, keep=True)
                if early:
                    if d.main:
                        console.print(f"early stop: no better test L1 for {_count(cfg.patience, 'epoch')} "
                                      f"(best: epoch {best_epoch})")
                    break
                if stopping:
                    interrupted = epoch < cfg.epochs
                    break
    except KeyboardInterrupt:
        raise UserError(f"aborted; {out / 'last.safetensors'} holds the last saved state") from None
    finally:
        reporter.close()
    seconds = time.perf_counter() - t_start
    best_row = next((r for r in rows if int(r["epoch"]) == best_epoch), None)
    return TrainResult(out, d.main, epoch, interrupted, stopped_at, best_epoch,
                       {k: float(best_row[f"test_{k}"]) for k in ("l1", "psnr", "ssim")} if best_row else {},
                       {k: float(v) for k, v in gray.items()}, seconds, images / max(train_seconds, 1e-9), g, dnet)


def summary_table(r: TrainResult) -> Table:
    """The run at a glance: time, speed, and the best epoch's test scores next to gray's."""
    table = Table(title=f"train → {escape(str(r.out))}", title_justify="left")
    table.add_column("")
    table.add_column("model", justify="right")
    table.add_column("gray", justify="right")
    table.add_row("epochs done", str(r.epochs_done), "")
    table.add_row("time this session", _hms(r.seconds), "")
    table.add_row("training speed (steps only)", f"{r.images_per_s:.1f} img/s", "")
    if r.best:
        table.add_section()
        table.add_row(f"test L1 (best: epoch {r.best_epoch})", f"{r.best['l1']:.4f}", f"{r.gray['l1']:.4f}")
        table.add_row("test PSNR, dB", f"{r.best['psnr']:.2f}", f"{r.gray['psnr']:.2f}")
        table.add_row("test SSIM", f"{r.best['ssim']:.4f}", f"{r.gray['ssim']:.4f}")
    return table


def _describe(m: ModelConfig) -> str:
    return f"{m.size} px {m.space} width-{m.width} depth-{m.depth}"
