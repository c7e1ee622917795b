"""Where the networks run: the choices `--device` accepts (`Device`), picking one, the bf16
autocast of the fast path (every GPU, and CPUs that do bf16 natively), and the check that a job
fits in a GPU's free memory (the GPU's counterpart of `files.ensure_memory`).

torch is imported inside the functions, so the command line can offer the choices without
loading it.
"""

from __future__ import annotations

import functools
import os
import platform
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

from colorize_cli.errors import UserError

if TYPE_CHECKING:
    import torch

Device = Literal["auto", "cpu", "cuda", "mps"]
DEVICES: tuple[str, ...] = get_args(Device)


# CPU flags (Linux /proc/cpuinfo) of native bf16 arithmetic: Intel AMX tiles and AVX512-BF16
# (Sapphire Rapids and later, AMD Zen 4 and later). Elsewhere oneDNN emulates bf16, slower than fp32.
BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})
CPUINFO = Path("/proc/cpuinfo")
NO_BF16 = "COLORIZE_NO_BF16"  # set (to anything but "" or "0"): fp32 everywhere, e.g. to compare


@functools.lru_cache(maxsize=None)
def _cpuinfo() -> tuple[str, frozenset[str]]:
    """The CPU's model name and feature flags as Linux lists them ("", {} where unreadable)."""
    try:
        lines = CPUINFO.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    field = lambda key: next((ln.partition(":")[2] for ln in lines if ln.startswith(key)), "")  # noqa: E731
    return field("model name").strip(), frozenset(field("flags").split())


def _bf16_allowed() -> bool:
    return os.environ.get(NO_BF16, "") in ("", "0")


def cpu_bf16() -> bool:
    """Whether this CPU does bf16 arithmetic natively (BF16_FLAGS), unless NO_BF16 is set."""
    return _bf16_allowed() and bool(_cpuinfo()[1] & BF16_FLAGS)


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast speeds `device` up: every CUDA GPU, and CPUs with native bf16
    (on a 2-core AMX Xeon, width-32 training 2.6x faster); never MPS; nowhere under NO_BF16."""
    return (device.type == "cuda" and _bf16_allowed()) or (device.type == "cpu" and cpu_bf16())


def cpu_name() -> str:
    """The CPU's model name and whether it computes in bf16, for reports of speed."""
    name = _cpuinfo()[0] or platform.processor() or platform.machine()
    return f"{name}, {'bf16 (native)' if cpu_bf16() else 'fp32'}"


def autocast_bf16(device: torch.device) -> torch.autocast | nullcontext:
    """bf16 autocast where `device` gains from it (`native_bf16`), else no change. The chroma the
    generator predicts is far coarser than bf16's steps (3 significant digits)."""
    import torch

    return torch.autocast(device.type, torch.bfloat16) if native_bf16(device) else nullcontext()


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """`auto` picks CUDA, then Apple's MPS, then the CPU; an unavailable choice is an error.
    Under torchrun each process takes the GPU of its local rank."""
    import torch

    if name not in DEVICES:
        raise UserError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)}")
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        name = "cuda" if cuda else "mps" if mps else "cpu"
    if name == "cuda" and not cuda:
        raise UserError("--device cuda: torch sees no CUDA GPU here (use --device cpu or auto)")
    if name == "mps" and not mps:
        raise UserError("--device mps: Apple's MPS backend is not available here (use --device cpu or auto)")
    return torch.device(f"cuda:{local_rank % torch.cuda.device_count()}" if name == "cuda" else name)


def ensure_gpu_memory(needed: float, what: str, device: torch.device) -> None:
    """Refuse, before allocating, work whose estimated memory exceeds what the CUDA `device` has
    free: a clear message instead of the allocator's error."""
    import torch

    free = torch.cuda.mem_get_info(device)[0]
    if needed > free:
        raise UserError(f"{what} needs about {needed / 2**30:.1f} GiB of GPU memory; "
                        f"{device} has {free / 2**30:.1f} GiB free")
