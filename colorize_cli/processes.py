"""The processes a training run is made of: torchrun's group (or this process alone), the CPU
threads each may use, what they exchange and agree on, and a stop asked for by a signal.

Under `torchrun --nproc-per-node=N` every process runs the same code; collective calls here
(agree, sum, share_buffers, gather) must be made by all of them at the same point. Alone, each
is a no-op or returns its argument, so the training loop reads the same either way.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist
import torch.nn as nn
from rich.console import Console

from colorize_cli.device import pick_device
from colorize_cli.files import usable_cpus


@dataclass(frozen=True)
class Dist:
    """This process's place among torchrun's processes (rank 0 of 1 when run alone)."""

    rank: int = 0
    world: int = 1
    local_world: int = 1
    backend: str = ""
    comm: str = "cpu"  # where exchanged tensors live: NCCL's on this process's GPU, gloo's on the CPU

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def on(self) -> bool:
        return self.world > 1

    def agree(self, flag: bool) -> bool:
        """True when any process says so."""
        return bool(self.largest(float(flag)))

    def largest(self, value: float) -> float:
        """The largest of the processes' values (float64), the same in every process."""
        if not self.on:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.comm)
        torch_dist.all_reduce(t, torch_dist.ReduceOp.MAX)
        return float(t.item())

    def sum(self, t: torch.Tensor) -> None:
        """`t` summed over the processes, in place in each."""
        if self.on:
            torch_dist.all_reduce(t)

    def share_buffers(self, *nets: nn.Module) -> None:
        """Rank 0's buffers (BatchNorm statistics) in every process: DDP averages gradients only."""
        if not self.on:
            return
        for net in nets:
            for b in net.buffers():
                torch_dist.broadcast(b, 0)

    def gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        """Every process's `t` by rank, on the CPU (alone: [t])."""
        if not self.on:
            return [t]
        comm = t.to(self.comm)
        parts = [torch.empty_like(comm) for _ in range(self.world)]
        torch_dist.all_gather(parts, comm)
        return [p.cpu() for p in parts]

    def barrier(self) -> None:
        if self.on:
            torch_dist.barrier()

    def close(self) -> None:
        if self.on:
            torch_dist.destroy_process_group()


def start_processes(device_name: str) -> tuple[Dist, torch.device]:
    """This process's place among torchrun's processes (their group joined when its environment
    variables say there is one) and the device it runs on."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_name, local_rank)
    if world <= 1:
        return Dist(), device
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend, init_method="env://")
    return Dist(torch_dist.get_rank(), torch_dist.get_world_size(), int(os.environ.get("LOCAL_WORLD_SIZE", world)),
                backend, str(device) if backend == "nccl" else "cpu"), device


def cpu_threads(threads: int, d: Dist) -> int:
    """`threads` when given (not 0), else this machine's CPUs shared among its processes."""
    if threads:
        return threads
    return max(1, usable_cpus() // d.local_world)


class StopFlag:
    """Set by Ctrl-C (SIGINT) or SIGTERM; the loop checks it between steps, saves and exits."""

    def __init__(self) -> None:
        self.set = False


@contextmanager
def catch_stop(flag: StopFlag, d: Dist, console: Console) -> Iterator[None]:
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
