"""How photos of any size meet the U-Net: each photo's working copy on a padded canvas
(`Geometry`), photos of one canvas shape batched together (`batches`), and the memory a batch
needs (`activation_bytes`).

Plain arithmetic, without torch: the inference engine (`colorizer`) builds on it, and the
command line reads the batch default from here without loading torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from colorize_cli.model import ModelConfig

DEFAULT_BATCH = 8  # photos per network pass
# `activation_bytes` counts the tensors alive at the network's peak; the peak resident memory
# measured on a CPU was 1.1 to 1.4 times that count (widths 8 to 64, canvases of 512 to 2048 px),
# the rest being oneDNN's workspaces and the allocator's slack. Under a CPU's bf16 autocast
# (2 bytes a value; bundled model) it was 1.2 from 2048 px up; below that about 60 MB of fixed
# bf16 workspaces reach 1.8 times the count, far from any limit the check could meet.
MEMORY_MARGIN = 1.5

T = TypeVar("T")


@dataclass(frozen=True)
class Geometry:
    """Where a photo sits in the network input: scaled to h x w at (top, left) of a ph x pw canvas."""

    h: int
    w: int
    top: int
    left: int
    ph: int
    pw: int

    @classmethod
    def fit(cls, width: int, height: int, size: int, step: int) -> Geometry:
        """Long side scaled to `size` (aspect kept), canvas rounded up to multiples of `step`."""
        scale = size / max(width, height)
        w, h = max(1, round(width * scale)), max(1, round(height * scale))
        pw, ph = -(-w // step) * step, -(-h // step) * step
        return cls(h, w, (ph - h) // 2, (pw - w) // 2, ph, pw)

    @property
    def canvas(self) -> tuple[int, int]:
        return self.ph, self.pw


def batches(items: Iterable[T], geometry: Callable[[T], Geometry], size: int) -> Iterator[list[T]]:
    """Items grouped by canvas shape, in batches of `size`: each batch as soon as it is full,
    then the partial ones in the order their shapes first came. Only one partial batch per
    shape is held, so a stream of photos read from disk stays small in memory."""
    partial: dict[tuple[int, int], list[T]] = {}
    for item in items:
        canvas = geometry(item).canvas
        batch = partial.setdefault(canvas, [])
        batch.append(item)
        if len(batch) == size:
            yield partial.pop(canvas)
    yield from partial.values()


def activation_bytes(cfg: ModelConfig, size: int, batch: int, element_bytes: int = 4) -> int:
    """Memory a network pass over `batch` working copies at working size `size` needs at its peak,
    for the largest canvas that size allows (size x size rounded up to the U-Net's step). Alive at
    the peak: the encoder's outputs still waiting for their skip connection, plus the busiest
    decoder step (its input, and its padded copy and phase outputs, or its output and the
    concatenation). Checked before a photo is scaled up, so a huge --size is refused clearly."""
    step = 2**cfg.depth
    side = -(-size // step) * step
    pixels = side * side
    chans = cfg.widths(cfg.depth)
    skips = [c * pixels // 4 ** (i + 1) for i, c in enumerate(chans)]
    peak = held = sum(skips)
    x = skips.pop()  # the bottleneck is the decoder's first input, not a skip
    held -= x
    for i in range(cfg.depth - 2, -1, -1):
        out = skips[i]  # each decoder step outputs its level's channels at its level's size
        peak = max(peak, held + max(2 * x + out, x + 3 * out))
        held -= skips[i]
        x = 2 * out  # joined with the skip
    out = cfg.out_channels * pixels
    peak = max(peak, 2 * x + out, x + 3 * out)
    return math.ceil((peak + pixels) * batch * element_bytes * MEMORY_MARGIN)  # + pixels: the encoded input
