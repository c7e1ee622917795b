"""The benchmark suite (never part of the tests): how fast colorize trains and colorizes on
this machine, and how close each path runs to the machine's own limit.

    ./setup.sh python bench/run.py            # every device here: the CPU, and CUDA when present
    ./setup.sh python bench/run.py --quick    # fewer sizes and repeats (a few minutes on a laptop)
    ./setup.sh python bench/run.py --device cpu --bf16-only   # just the CPU's bf16 on/off figures

What it measures, per device (each case in a fresh process, so peak memory is its own):
- the machine's matrix-multiply rate in the type the networks compute in (the "limit"): bf16
  on a GPU and on a CPU with native bf16 (`device.native_bf16`), else fp32;
- training images/s at 256 px for the default model (width 64): batch 1 as the original
  project trained, and a sweep of batch sizes for the fastest;
- inference images/s at 256 px (the network, batch 1 and 8) and per photo (the whole
  `Colorizer.colorize`: grayscale, resize, network, full-resolution decode) for a 256 px and a
  512x341 photo, for the default model and the bundled one;
- achieved GFLOP/s (torch.utils.flop_counter) as a fraction of the matrix-multiply rate;
- before/after for each fast path, the two forms measured in alternating rounds;
- on a CPU with native bf16, the bundled model as `colorize infer` runs it with bf16 and with
  COLORIZE_NO_BF16=1: 512x341 photos in full batches (photos/s), and one 12-megapixel photo
  through `Colorizer.colorize` (seconds);
- `colorize train` on ../shared/data/beach-photos through the real command line, so start-up
  and data decoding are in the figure, and (CUDA) the original project's whole run.

Every figure is the median of repeated rounds after warm-up; the CPU's name says whether it
computed in bf16 (`device.cpu_name`). Output: tables on the terminal and
bench/results/<device>.json (override with --out).
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from multiprocessing import get_context
from pathlib import Path
from unittest import mock

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from rich.console import Console
from rich.table import Table
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from colorize_cli.data import Pairs, load_data  # noqa: E402
from colorize_cli.canvas import DEFAULT_BATCH  # noqa: E402
from colorize_cli.device import NO_BF16, autocast_bf16, cpu_bf16, cpu_name, native_bf16  # noqa: E402
from colorize_cli.bundled import DEFAULT  # noqa: E402
from colorize_cli.colorizer import Colorizer  # noqa: E402
from colorize_cli.model import (ModelConfig, UNet, UpConv, fold_batchnorm, for_inference, freeze_phases,  # noqa: E402
                                init_weights, upsample_then_conv)
from colorize_cli.train import Nets, Order, TrainConfig, get_batch  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
BEACH, LANDSCAPE = SHARED / "beach-photos", SHARED / "landscape-photos"
DEFAULT_WIDTH = ModelConfig().width
console = Console(highlight=False, width=None if sys.stdout.isatty() else 150)


# --- measuring ---------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rounds(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Seconds of each of `repeats` calls of fn after `warmup` calls; the device is synchronised
    around each call, not inside it, so queued GPU work is part of the round that queued it."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return times


def alternate(a: Callable[[], object], b: Callable[[], object], device: torch.device, warmup: int,
              repeats: int) -> tuple[float, float]:
    """Median seconds of a and of b, timed in alternating rounds so drift hits both alike."""
    ta, tb = [], []
    rounds(a, device, warmup, 0), rounds(b, device, warmup, 0)
    for _ in range(repeats):
        ta += rounds(a, device, 0, 1)
        tb += rounds(b, device, 0, 1)
    return statistics.median(ta), statistics.median(tb)


def flops(fn: Callable[[], object]) -> int:
    """Floating-point operations of one call, as torch's flop counter sees them (convolutions
    and matrix products, forward and backward)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def peak_memory_mb(device: torch.device) -> float:
    """The most memory this process has held: GPU memory allocated on CUDA, else resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


def in_child(fn: Callable[..., dict], **kwargs: object) -> dict:
    """Run fn(**kwargs) in a fresh process: its own peak memory, threads and allocator."""
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(fn, **kwargs).result()


def setup_device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")
    return device


# --- the cases (each runs in its own process) -------------------------------------------


def matmul_rate(device_name: str, quick: bool) -> dict:
    """The machine's limit: the best median rate of square matrix products, in bf16 where the
    networks compute in it (`native_bf16`), else fp32."""
    device = setup_device(device_name)
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if native_bf16(device) else torch.float32
    sizes = [8192] if cuda else [2048] if quick else [1024, 2048, 4096]
    per_call = 10 if cuda else 1
    rates = {}
    for n in sizes:
        a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
        out = torch.empty(n, n, device=device, dtype=dtype)

        def mm() -> None:
            for _ in range(per_call):
                torch.mm(a, b, out=out)

        t = statistics.median(rounds(mm, device, 2, 5 if quick else 15))
        rates[n] = 2 * n**3 * per_call / t / 1e9
    best = max(rates, key=rates.get)
    return {"dtype": str(dtype).removeprefix("torch."), "gflops": rates[best], "size": best,
            "by_size": {str(k): round(v, 1) for k, v in rates.items()}, "threads": torch.get_num_threads()}


def _synthetic_pairs(n: int, size: int, device: torch.device) -> Pairs:
    """Random photos laid out as load_data lays them out (color: channels_last views)."""
    g = torch.Generator().manual_seed(0)
    color = torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=g).permute(0, 3, 1, 2)
    gray = (color.float() * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True).round()
    return Pairs(color, gray.to(torch.uint8).contiguous(), [f"{i}" for i in range(n)]).to(device)


def _nets(device: torch.device, width: int, size: int, compile_: bool = False) -> Nets:
    cfg = TrainConfig(data="", out="", model=ModelConfig(size=size, width=width), compile=compile_)
    return Nets(cfg, device)


def _whole(data: Pairs, idx: torch.Tensor) -> Order:
    """Photos `idx` whole (no crop), every other one flipped, as a batch for get_batch."""
    side = data.color.shape[-1]
    crop = torch.tensor([side, 0, 0]).repeat(len(idx), 1)
    return Order(idx, idx % 2 == 0, crop)


def _train_step_fn(nets: Nets, data: Pairs, batch: int, device: torch.device, steps: int) -> Callable[[], None]:
    """`steps` training steps on batches drawn as `colorize train` draws them (get_batch)."""
    n = len(data)
    state = {"i": 0}

    def run() -> None:
        for _ in range(steps):
            start = state["i"] % (n - batch + 1)
            idx = torch.arange(start, start + batch)
            nets.train_step(*get_batch(data, _whole(data, idx), data.color.shape[-1], device, nets.channels_last))
            state["i"] += batch

    return run


def train_speed(device_name: str, width: int, size: int, batch: int, quick: bool) -> dict:
    """Training images/s: D step + G step, as `colorize train` runs them, data resident."""
    device = setup_device(device_name)
    nets = _nets(device, width, size)
    data = _synthetic_pairs(max(2 * batch, 8), size, device)
    cuda = device.type == "cuda"
    work = flops(_train_step_fn(nets, data, batch, device, 1)) / batch
    # Enough steps per round that a round is a few images on a CPU, tens of ms on a GPU.
    steps = max(1, (32 if cuda else 8) // batch)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    times = rounds(_train_step_fn(nets, data, batch, device, steps), device, 1 if not cuda else 3,
                   3 if quick else 5)
    ips = batch * steps / statistics.median(times)
    return {"width": width, "size": size, "batch": batch, "images_per_s": ips, "gflop_per_image": work / 1e9,
            "gflops": ips * work / 1e9, "peak_mb": peak_memory_mb(device), "threads": torch.get_num_threads()}


def _colorizer(model: str, device: torch.device, size: int | None = None, batch: int = 8) -> Colorizer:
    """The model named `model`: "default" is the default architecture (width 64, 256 px),
    untrained, as speed does not depend on the weights; "bundled" is the model `colorize infer`
    uses without --model."""
    if model == "bundled":
        return Colorizer.load(DEFAULT.path, device.type, size, batch)
    cfg = ModelConfig(width=DEFAULT_WIDTH)
    torch.manual_seed(0)
    net = UNet(cfg)
    init_weights(net)
    return Colorizer(for_inference(net.eval()), cfg, device, size, batch, source=f"untrained width {cfg.width}")


def _photo(width: int, height: int) -> Image.Image:
    """A real landscape photo (never trained on) at this size, or a synthetic one without ../shared."""
    photos = sorted(LANDSCAPE.glob("*.jpg")) if LANDSCAPE.is_dir() else []
    if photos:
        with Image.open(photos[0]) as img:
            return img.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], -1)
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def infer_network(device_name: str, model: str, batch: int, quick: bool) -> dict:
    """The network alone at 256 px (Colorizer.predict: uint8 in, chroma out), images/s."""
    device = setup_device(device_name)
    colorizer = _colorizer(model, device, 256, batch)
    items = [colorizer.prepare(_photo(256, 256))] * batch
    work = flops(lambda: colorizer.predict(items)) / batch
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    calls = max(1, (32 if device.type == "cuda" else 8) // batch)
    times = rounds(lambda: [colorizer.predict(items) for _ in range(calls)], device, 2, 3 if quick else 7)
    ips = batch * calls / statistics.median(times)
    return {"model": model, "width": colorizer.cfg.width, "batch": batch, "size": 256, "images_per_s": ips,
            "gflop_per_image": work / 1e9, "gflops": ips * work / 1e9, "peak_mb": peak_memory_mb(device)}


def infer_photo(device_name: str, model: str, width: int, height: int, size: int | None, quick: bool) -> dict:
    """A whole photo through Colorizer.colorize (gray, resize, pad, network, chroma upscale,
    decode against the full-resolution gray, exact 8-bit), photos/s. File I/O excluded."""
    device = setup_device(device_name)
    colorizer = _colorizer(model, device, size, 1)
    photo = _photo(width, height)
    work = flops(lambda: colorizer.colorize(photo))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = rounds(lambda: colorizer.colorize(photo), device, 2, 3 if quick else 7)
    ips = 1 / statistics.median(times)
    return {"model": model, "width": colorizer.cfg.width, "photo": f"{width}x{height}", "working_size": colorizer.size,
            "images_per_s": ips, "gflop_per_image": work / 1e9, "gflops": ips * work / 1e9,
            "peak_mb": peak_memory_mb(device)}


# --- before/after: each fast path against the same code without it ------------------------


def _textbook_upconv(conv: nn.Conv2d) -> None:
    """Make one UpConv run as nearest upsample then a 3x3 conv at every size."""
    conv.forward = lambda x: upsample_then_conv(x, conv.weight, conv.bias)


def _bn_kept(raw: nn.Module) -> nn.Module:
    """for_inference without the BatchNorm folding."""
    return freeze_phases(copy.deepcopy(raw).eval()).to(memory_format=torch.channels_last)


def _phases_per_call(raw: nn.Module) -> nn.Module:
    """for_inference without precomputed phase kernels (recomputed on every call, as in training)."""
    return fold_batchnorm(raw).to(memory_format=torch.channels_last)


def _textbook_decoder(raw: nn.Module) -> nn.Module:
    """for_inference with the decoder as the textbook upsample then 3x3 conv at full resolution."""
    net = fold_batchnorm(raw)
    for m in net.modules():
        if isinstance(m, UpConv):
            _textbook_upconv(m)
    return net.to(memory_format=torch.channels_last)


def infer_ablations(device_name: str, quick: bool) -> list[dict]:
    """The default model's network at 256 px, batch 8: full fast path vs. without each part."""
    device = setup_device(device_name)
    cuda = device.type == "cuda"
    batch = 8
    torch.manual_seed(0)
    cfg = ModelConfig(width=DEFAULT_WIDTH)
    raw = UNet(cfg)
    init_weights(raw)
    raw = raw.eval().to(device)
    fast = for_inference(raw).to(memory_format=torch.channels_last)
    x = torch.rand(batch, 1, 256, 256, device=device)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    amp = lambda: autocast_bf16(device)  # noqa: E731

    def forward(net: nn.Module, inp: torch.Tensor, mode: Callable = torch.inference_mode, cast: Callable = amp
                ) -> Callable[[], object]:
        def run() -> object:
            with mode(), cast():
                return net(inp)
        return run

    best = forward(fast, x_cl)
    cases: list[tuple[str, Callable[[], object]]] = [
        (path, forward(without(raw), x_cl)) for path, without in (
            ("BatchNorm folded", _bn_kept), ("phase kernels computed once", _phases_per_call),
            ("half-resolution decoder convs", _textbook_decoder))]
    contiguous = copy.deepcopy(fast).to(memory_format=torch.contiguous_format)
    cases.append(("channels_last", forward(contiguous, x)))
    cases.append(("inference_mode (vs no_grad)", forward(fast, x_cl, torch.no_grad)))
    if native_bf16(device):
        cases.append(("bf16 autocast", forward(fast, x_cl, cast=nullcontext)))
    out = []
    for path, before in cases:
        t_before, t_after = alternate(before, best, device, 1, 3 if quick else 5)
        out.append(_ablation_row("infer 256 px, batch 8, width 64", path, batch, t_before, t_after))
    if not cuda:
        out.append(_threads_ablation("infer 256 px, batch 8, width 64", best, batch, device, quick))
    return out


def bf16_inference(device_name: str, quick: bool) -> list[dict]:
    """The bundled model as `colorize infer` runs it, with COLORIZE_NO_BF16=1 and with the bf16
    autocast of a CPU with native bf16, in alternating rounds: 512x341 photos in full batches,
    and one 12-megapixel photo (4240x2832) end to end through Colorizer.colorize. The variable
    is read on every network pass, so one Colorizer serves both."""
    device = setup_device(device_name)
    colorizer = _colorizer("bundled", device)

    def run(photos: list[Image.Image], bf16: bool) -> Callable[[], object]:
        def call() -> object:
            if bf16:
                os.environ.pop(NO_BF16, None)
            else:
                os.environ[NO_BF16] = "1"
            return colorizer.colorize_batch(photos)
        return call

    rows = []
    batch = [_photo(512, 341)] * DEFAULT_BATCH
    for what, photos, repeats in ((f"{DEFAULT_BATCH} photos 512x341, batch {DEFAULT_BATCH}", batch, 3 if quick else 7),
                                  ("one 12 MP photo 4240x2832", [_photo(4240, 2832)], 2 if quick else 5)):
        t_fp32, t_bf16 = alternate(run(photos, False), run(photos, True), device, 1, repeats)
        rows.append({"what": what, "model": "bundled", "photos": len(photos), "fp32_s": t_fp32, "bf16_s": t_bf16,
                     "speedup": t_fp32 / t_bf16})
    os.environ.pop(NO_BF16, None)
    return rows


def _ablation_row(what: str, path: str, images: int, t_before: float, t_after: float) -> dict:
    return {"what": what, "fast_path": path, "before_images_per_s": images / t_before,
            "after_images_per_s": images / t_after, "speedup": t_before / t_after}


def _threads_ablation(what: str, fn: Callable[[], object], images: int, device: torch.device, quick: bool) -> dict:
    threads = torch.get_num_threads()

    def one_thread() -> None:
        torch.set_num_threads(1)
        try:
            fn()
        finally:
            torch.set_num_threads(threads)

    t_before, t_after = alternate(one_thread, fn, device, 1, 3 if quick else 5)
    return _ablation_row(what, f"{threads} threads (vs 1)", images, t_before, t_after)


def train_ablations(device_name: str, width: int, batch: int, quick: bool) -> list[dict]:
    """Training steps at 256 px: the full fast path vs. without each part."""
    device = setup_device(device_name)
    cuda = device.type == "cuda"
    what = f"train 256 px, batch {batch}, width {width}"
    data = _synthetic_pairs(2 * batch, 256, device)
    steps = max(1, (32 if cuda else 8) // batch)
    reps = 3 if quick else 5
    fast = _nets(device, width, 256)
    best = _train_step_fn(fast, data, batch, device, steps)
    images = batch * steps
    cases: list[tuple[str, Callable[[], object]]] = []

    slow = _nets(device, width, 256)
    for m in slow.g.modules():
        if isinstance(m, UpConv):
            _textbook_upconv(m)
    cases.append(("half-resolution decoder convs", _train_step_fn(slow, data, batch, device, steps)))

    nchw = _nets(device, width, 256)
    nchw.g, nchw.d = nchw.g.to(memory_format=torch.contiguous_format), nchw.d.to(memory_format=torch.contiguous_format)
    nchw.g_train, nchw.d_train, nchw.d_plain = nchw.g, nchw.d, nchw.d
    nchw.channels_last = False
    cases.append(("channels_last", _train_step_fn(nchw, data, batch, device, steps)))

    if native_bf16(device):
        fp32_steps = _train_step_fn(_nets(device, width, 256), data, batch, device, steps)

        def fp32() -> None:
            with mock.patch("colorize_cli.train.autocast_bf16", lambda _device: nullcontext()):
                fp32_steps()

        cases.append(("bf16 autocast", fp32))
    if cuda:
        unfused = _nets(device, width, 256)
        unfused.opt_g = torch.optim.Adam(unfused.g.parameters(), lr=2e-4, betas=(0.5, 0.999), foreach=True)
        unfused.opt_d = torch.optim.Adam(unfused.d.parameters(), lr=2e-4, betas=(0.5, 0.999), foreach=True)
        cases.append(("fused Adam (vs foreach)", _train_step_fn(unfused, data, batch, device, steps)))
        host = data.to("cpu")
        cases.append(("data resident on the GPU", _train_step_fn(fast, host, batch, device, steps)))

        def synced() -> None:
            for _ in range(steps):
                idx = torch.arange(batch)
                losses = fast.train_step(*get_batch(data, _whole(data, idx), data.color.shape[-1], device, True))
                losses.tolist()  # a host read every step, as a per-step log line would do

        cases.append(("no host sync per step", synced))
        compiled = _nets(device, width, 256, compile_=True)
        compiled_fn = _train_step_fn(compiled, data, batch, device, steps)
        rounds(compiled_fn, device, 3, 0)  # compilation happens here, outside the timing
        t_plain, t_compiled = alternate(best, compiled_fn, device, 1, reps)
        compile_row = _ablation_row(what, "--compile (opt-in)", images, t_plain, t_compiled)
    out = []
    for path, before in cases:
        t_before, t_after = alternate(before, best, device, 1, reps)
        out.append(_ablation_row(what, path, images, t_before, t_after))
    if cuda:
        out.append(compile_row)
    else:
        out.append(_threads_ablation(what, best, images, device, quick))
    return out


def data_ablation(size: int, batch: int, quick: bool) -> dict | None:
    """Decoded once and kept in memory (what train does) vs. decoding each batch's files every
    step (what a file-per-step loader does), on a prep output of the beach photos."""
    from colorize_cli.data import _read_pair
    from colorize_cli.pairs import PrepConfig
    from colorize_cli.prep import run as run_prep

    if not BEACH.is_dir():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        photos = Path(tmp) / "photos"
        photos.mkdir()
        for p in sorted(BEACH.glob("*.jpg"))[:4 * batch]:
            (photos / p.name).symlink_to(p)
        run_prep(photos, Path(tmp) / "prep", PrepConfig(size=size), Console(quiet=True))
        files = sorted((Path(tmp) / "prep" / "train").glob("*.png"))[:batch]
        data = load_data(Path(tmp) / "prep", size)
        device = torch.device("cpu")

        def decode_each_step() -> None:
            pairs = [_read_pair(f, size) for f in files]
            color = torch.from_numpy(np.stack([c for c, _ in pairs])).permute(0, 3, 1, 2).float() / 255
            gray = torch.from_numpy(np.stack([g for _, g in pairs]))[:, None].float() / 255
            color.contiguous(memory_format=torch.channels_last), gray.contiguous(memory_format=torch.channels_last)

        idx = torch.arange(min(batch, len(data.train)))

        def in_memory() -> None:
            get_batch(data.train, _whole(data.train, idx), size, device, True)

        t_before, t_after = alternate(decode_each_step, in_memory, device, 1, 5 if quick else 9)
    row = _ablation_row(f"one batch of {batch} at {size} px (data only)", "data decoded once, in memory", len(files),
                        t_before, t_after)
    return row


def png_ablation(quick: bool) -> dict:
    """Writing a colorized 512x341 photo as `colorize infer` does (PNG, zlib level 1) against
    Pillow's default level 6."""
    import io

    from colorize_cli.infer import SAVE_PARAMS

    photo = _colorizer("bundled", torch.device("cpu")).colorize(_photo(512, 341))

    def encode(**params: int) -> Callable[[], None]:
        return lambda: photo.save(io.BytesIO(), "PNG", **params)

    t_before, t_after = alternate(encode(compress_level=6), encode(**SAVE_PARAMS["PNG"]), torch.device("cpu"), 1,
                                  5 if quick else 15)
    return _ablation_row("writing one 512x341 result (infer)", "PNG zlib level 1 (vs 6)", 1, t_before, t_after)


# --- the real command line ----------------------------------------------------------------


def run_cli(args: list[str]) -> tuple[int, float, float]:
    """(exit code, wall seconds, peak resident MB) of `colorize ARGS` in its own process."""
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "colorize_cli", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read() if proc.stderr else ""
    wall = time.perf_counter() - t
    if proc.returncode:
        console.print(f"[red]colorize {' '.join(args)} failed[/red]: {err.strip().splitlines()[-1:] or ''}")
    rss = usage.ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)
    return proc.returncode, wall, rss


def cli_train(device: str, width: int, epochs: int, batch: int, data: Path = BEACH, what: str = "") -> dict | None:
    """`colorize train DATA` end to end: wall time (start-up, decoding, evaluation, checkpoints
    included) and the steps-only rate from the run's metrics.csv."""
    if not data.is_dir():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        args = ["train", str(data), "--size", "256", "--width", str(width), "--epochs", str(epochs),
                "--batch-size", str(batch), "--device", device, "--out", str(out)]
        rc, wall, rss = run_cli(args)
        if rc:
            return {"what": what, "command": "colorize " + " ".join(args), "failed": rc}
        with open(out / "metrics.csv", newline="") as f:
            rows = list(csv.DictReader(f))
    n_train = float(rows[0]["images_per_s"]) * float(rows[0]["seconds"])
    steps_ips = statistics.median(float(r["images_per_s"]) for r in rows)
    return {"what": what, "command": "colorize " + _short(" ".join(args[:-1])) + " RUN",
            "epochs": len(rows), "train_photos": round(n_train), "wall_s": wall,
            "steps_images_per_s": steps_ips, "end_to_end_images_per_s": n_train * len(rows) / wall,
            "steps_s": sum(float(r["seconds"]) for r in rows), "peak_rss_mb": rss,
            "test_l1": float(rows[-1]["test_l1"]), "gray_l1": float(rows[-1]["gray_l1"])}


def cli_infer(device: str) -> dict | None:
    """`colorize infer` on the landscape photos (full resolution, ~512 px wide), bundled model:
    photos/s end to end, process start, decoding and PNG writing included."""
    if not LANDSCAPE.is_dir():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        args = ["infer", str(LANDSCAPE), str(Path(tmp) / "out"), "--device", device]
        rc, wall, rss = run_cli(args)
        n = len(list((Path(tmp) / "out").glob("*.png")))
    return {"what": f"{n} landscape photos, bundled model", "command": f"colorize infer {_short(LANDSCAPE)} OUT --device {device}",
            "failed": rc, "photos": n, "wall_s": wall, "photos_per_s": n / wall, "peak_rss_mb": rss}


def _short(text: str | Path) -> str:
    """Paths under the folder holding the repository and ../shared, written relative to the repository."""
    return str(text).replace(str(ROOT.parent), "..")


def seed_run(device: str, batch: int | None) -> dict | None:
    """The original project's whole run: 100 photos x 200 epochs at 256 px (125 beach photos
    split 4:1 by prep), the default model; `batch` None means the seed preset (batch 1)."""
    if not BEACH.is_dir():
        return None
    recipe = ["--preset", "seed"] if batch is None else ["--batch-size", str(batch), "--epochs", "200"]
    with tempfile.TemporaryDirectory() as tmp:
        photos = Path(tmp) / "photos"
        photos.mkdir()
        for p in sorted(BEACH.glob("*.jpg"))[:125]:
            (photos / p.name).symlink_to(p)
        if run_cli(["prep", str(photos), str(Path(tmp) / "prep"), "--size", "256"])[0]:
            return None
        rc, wall, rss = run_cli(["train", str(Path(tmp) / "prep"), *recipe, "--device", device,
                                 "--out", str(Path(tmp) / "run")])
    what = "seed preset (batch 1, rgb)" if batch is None else f"batch {batch}"
    return {"what": f"100 photos x 200 epochs, {what}", "wall_s": wall, "failed": rc, "peak_rss_mb": rss,
            "command": f"colorize train PREP {' '.join(recipe)} --device {device}"}


# --- the suite ------------------------------------------------------------------------------


def machine(device: str) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "cpu": cpu_name(),
            "cpus": os.cpu_count(), "threads": torch.get_num_threads()}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def suite(device: str, quick: bool, bf16_only: bool = False) -> dict:
    cuda = device == "cuda"
    res: dict = {"device": device, "machine": machine(device), "quick": quick,
                 "date": time.strftime("%Y-%m-%d %H:%M")}
    step = lambda what: console.print(f"[dim]{device}: {what}[/dim]")  # noqa: E731
    res["bf16"] = []
    if not cuda and cpu_bf16():  # COLORIZE_NO_BF16 leaves CUDA's bf16 on: nothing to compare there
        step("inference with bf16 and with COLORIZE_NO_BF16=1, bundled model")
        res["bf16"] = in_child(bf16_inference, device_name=device, quick=quick)
    if bf16_only:
        return res
    step("matrix-multiply rate")
    first = in_child(matmul_rate, device_name=device, quick=quick)

    res["train"] = []
    batches = ([1, 16, 64] if quick else [1, 8, 16, 32, 64, 128]) if cuda else ([1, 8] if quick else [1, 4, 8, 16])
    for b in batches:
        step(f"training, batch {b}")
        try:
            res["train"].append(in_child(train_speed, device_name=device, width=DEFAULT_WIDTH, size=256, batch=b,
                                         quick=quick))
        except torch.cuda.OutOfMemoryError:
            break
    res["infer"] = []
    for model in ("default", "bundled"):
        for b in (1, 8):
            step(f"inference, {model} model, network at 256 px, batch {b}")
            res["infer"].append({"case": "network", **in_child(infer_network, device_name=device, model=model,
                                                                 batch=b, quick=quick)})
        for w, h, size in ((256, 256, None), (512, 341, None), (512, 341, 512)):
            step(f"inference, {model} model, {w}x{h} photo")
            res["infer"].append({"case": "photo", **in_child(infer_photo, device_name=device, model=model, width=w,
                                                               height=h, size=size, quick=quick)})
    step("fast paths before/after: inference")
    res["ablations"] = in_child(infer_ablations, device_name=device, quick=quick)
    step("fast paths before/after: training")
    train_width = DEFAULT_WIDTH if cuda else 16  # a width-64 CPU step takes seconds: the laptop width instead
    res["ablations"] += in_child(train_ablations, device_name=device, width=train_width, batch=16 if cuda else 8,
                                 quick=quick)
    if not cuda:
        step("fast paths before/after: data in memory")
        row = in_child(data_ablation, size=256, batch=8, quick=quick)
        if row:
            res["ablations"].append(row)
        res["ablations"].append(in_child(png_ablation, quick=quick))

    res["cli"] = []
    step("colorize train on the beach photos (command line)")
    row = cli_train(device, DEFAULT_WIDTH if cuda else 16, 5 if cuda else (1 if quick else 2), 16,
                    what="600 beach photos (480 train)")
    if row:
        res["cli"].append(row)
    step("colorize infer on the landscape photos (command line)")
    res["cli_infer"] = cli_infer(device)
    best_train = max(res["train"], key=lambda r: r["images_per_s"])
    batch1 = next((r for r in res["train"] if r["batch"] == 1), None)
    res["seed_run"] = {"images": 100 * 200, "projected_s_batch_1": 20000 / batch1["images_per_s"] if batch1 else None,
                       "projected_s_fastest_batch": 20000 / best_train["images_per_s"],
                       "fastest_batch": best_train["batch"], "measured": []}
    # The limit: the better of two measurements, at the start and at the end, so a machine
    # busy at one moment does not flatter the fractions.
    step("matrix-multiply rate, again")
    second = in_child(matmul_rate, device_name=device, quick=quick)
    res["matmul"] = {**max(first, second, key=lambda m: m["gflops"]),
                     "measurements": [round(first["gflops"], 1), round(second["gflops"], 1)]}
    for row in res["train"] + res["infer"]:
        row["fraction_of_matmul"] = row["gflops"] / res["matmul"]["gflops"]
    if cuda and not quick:
        for b in (16, None):
            step(f"the original run through colorize train ({'seed preset' if b is None else f'batch {b}'})")
            row = seed_run(device, b)
            if row:
                res["seed_run"]["measured"].append(row)
    return res


# --- report ---------------------------------------------------------------------------------


def report_bf16(rows: list[dict]) -> None:
    """The bf16 on/off figures: photos/s for a batch, seconds for a single photo."""
    if not rows:
        console.print("bf16 on/off: not measured (a CPU with native bf16 and COLORIZE_NO_BF16 unset only)")
        return
    t = Table(title="bf16 autocast on this CPU: COLORIZE_NO_BF16=1 -> bf16 (medians of alternating rounds)",
              title_justify="left")
    for col in ("measured on", "fp32", "bf16", "speed-up"):
        t.add_column(col, justify="left" if col == "measured on" else "right")
    cell = lambda r, s: f"{r['photos'] / s:.2f} photos/s" if r["photos"] > 1 else f"{s:.2f} s"  # noqa: E731
    for r in rows:
        t.add_row(f"{r['what']}, {r['model']} model", cell(r, r["fp32_s"]), cell(r, r["bf16_s"]),
                  f"x{r['speedup']:.2f}")
    console.print(t)


def report(res: dict) -> None:
    name = res["machine"].get("gpu", res["machine"]["cpu"])
    line = f"\n[bold]{res['device']}[/bold]: {name}, torch {res['machine']['torch']}, " \
           f"{res['machine']['threads']} threads"
    if "matmul" not in res:  # --bf16-only
        console.print(line)
        report_bf16(res["bf16"])
        return
    m, limit = res["matmul"], res["matmul"]["gflops"]
    console.print(f"{line} · {m['dtype']} matrix multiply {limit:.0f} GFLOP/s "
                  f"(n={m['size']}, the better median of two measurements)")
    t = Table(title="speed (medians after warm-up)", title_justify="left")
    for col in ("what", "batch", "images/s", "GFLOP/image", "GFLOP/s", "of matmul", "peak MB"):
        t.add_column(col, justify="left" if col == "what" else "right")
    for r in res["train"]:
        t.add_row(f"train 256 px, width {r['width']}", str(r["batch"]), f"{r['images_per_s']:.2f}",
                  f"{r['gflop_per_image']:.1f}", f"{r['gflops']:.0f}", f"{r['fraction_of_matmul']:.0%}",
                  f"{r['peak_mb']:.0f}")
    for r in res["infer"]:
        what = (f"infer network 256 px, {r['model']} (w{r['width']})" if r["case"] == "network" else
                f"infer photo {r['photo']} at {r['working_size']} px, {r['model']} (w{r['width']})")
        t.add_row(what, str(r.get("batch", 1)), f"{r['images_per_s']:.2f}", f"{r['gflop_per_image']:.2f}",
                  f"{r['gflops']:.0f}", f"{r['fraction_of_matmul']:.0%}", f"{r['peak_mb']:.0f}")
    console.print(t)
    a = Table(title="fast paths: without -> with (medians of alternating rounds)", title_justify="left")
    for col in ("measured on", "fast path", "without, img/s", "with, img/s", "speed-up"):
        a.add_column(col, justify="left" if col in ("measured on", "fast path") else "right")
    for r in res["ablations"]:
        a.add_row(r["what"], r["fast_path"], f"{r['before_images_per_s']:.2f}", f"{r['after_images_per_s']:.2f}",
                  f"x{r['speedup']:.2f}")
    console.print(a)
    if res["device"] == "cpu":
        report_bf16(res["bf16"])
    for r in res["cli"]:
        if "failed" in r:
            console.print(f"{r['command']}: failed (exit {r['failed']})")
            continue
        console.print(f"{r['command']}\n  {r['epochs']} epochs of {r['train_photos']} photos in {r['wall_s']:.1f} s wall "
                      f"({r['steps_s']:.1f} s of training steps): {r['end_to_end_images_per_s']:.1f} img/s end to end, "
                      f"{r['steps_images_per_s']:.1f} img/s in the steps; peak {r['peak_rss_mb']:.0f} MB resident")
    r = res["cli_infer"]
    if r:
        console.print(f"{r['command']}\n  {r['photos']} photos in {r['wall_s']:.1f} s wall: {r['photos_per_s']:.1f} photos/s "
                      f"end to end; peak {r['peak_rss_mb']:.0f} MB resident" + (f" (exit {r['failed']})" if r["failed"] else ""))
    s = res["seed_run"]
    line = f"the original run (100 photos x 200 epochs = 20000 images): projected from the step rates " \
           f"{_hms(s['projected_s_fastest_batch'])} at batch {s['fastest_batch']}"
    if s["projected_s_batch_1"]:
        line += f", {_hms(s['projected_s_batch_1'])} at batch 1"
    console.print(line + " (steps only)")
    for r in s["measured"]:
        console.print(f"  measured, {r['what']}: {r['wall_s']:.1f} s wall" + (f" (failed: exit {r['failed']})" if r["failed"] else ""))


def _hms(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=("all", "cpu", "cuda"), default="all",
                    help="what to measure [default: the CPU, and CUDA when present]")
    ap.add_argument("--quick", action="store_true", help="fewer sizes and repeats")
    ap.add_argument("--bf16-only", action="store_true",
                    help="only the bundled model with bf16 and with COLORIZE_NO_BF16=1 (a CPU with native bf16)")
    ap.add_argument("--out", type=Path, help="JSON file [default: bench/results/<device>.json]")
    args = ap.parse_args()
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        if args.device == "cuda":
            console.print("[red]--device cuda: torch sees no CUDA GPU here[/red]")
            return 1
        devices.remove("cuda")
        console.print("no CUDA GPU here: measuring the CPU only (GPU figures pending)")
    if not BEACH.is_dir():
        console.print(f"{BEACH} not found: the command-line training run and the data case are skipped")
    for device in devices:
        res = suite(device, args.quick, args.bf16_only)
        name = f"{device}{'-bf16' if args.bf16_only else ''}{'-quick' if args.quick else ''}.json"
        out = args.out or ROOT / "bench" / "results" / name
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(res, indent=2) + "\n")
        tmp.replace(out)
        report(res)
        console.print(f"[green]wrote {out}[/green]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
