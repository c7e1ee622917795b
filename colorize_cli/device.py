"""Where the networks run: the choices `--device` accepts (`Device`), picking one, the bf16
autocast of the GPU fast path, and the check that a job fits in a GPU's free memory (the GPU's
counterpart of `files.ensure_memory`).

torch is imported inside the functions, so the command line can offer the choices without
loading it.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import TYPE_CHECKING, Literal, get_args

from colorize_cli.errors import UserError

if TYPE_CHECKING:
    import torch

Device = Literal["auto", "cpu", "cuda", "mps"]
DEVICES: tuple[str, ...] = get_args(Device)


def autocast_bf16(enabled: bool) -> torch.autocast | nullcontext:
    """bf16 autocast on CUDA where `enabled` (the GPU fast path), else no change."""
    import torch

    return torch.autocast("cuda", torch.bfloat16) if enabled else nullcontext()


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
