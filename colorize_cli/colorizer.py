"""The inference engine: a trained generator that colorizes photos at their own resolution.

The network only ever sees a small working copy of the photo: its long side scaled to the
working size (the model's training size unless asked otherwise), then mirrored out (reflect
padding) to the next multiple of 2**depth, because the U-Net halves the image `depth` times
(`canvas.Geometry`). Padding instead of stretching keeps every photo at its true aspect ratio,
which is what the network saw in training; reflection continues edges and textures so the
border colours are not pulled toward an artificial frame. The predicted chroma of the
unpadded region is then scaled up to the photo's full size and joined with the photo's own
full-resolution gray (`color.decode_output`, `color.to_uint8_exact`), so all the detail in
the result is the photo's own and its Pillow "L" equals the input's gray exactly.

Colour hints (`hints`) are placed on the working copy, pixel centre to pixel centre, and
given to the network as its hint planes; photos without hints run in automatic mode, and a
photo with hints is the automatic one wherever its hints do not reach (`predict`).

Photos whose working copies pad to the same shape run through the network together
(`canvas.batches`), so a folder of mixed sizes still runs in full batches. `colorize infer`,
evaluate, survey and demo all colorize through `Colorizer`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from colorize_cli.bundled import DEFAULT, bundled
from colorize_cli.canvas import DEFAULT_BATCH, Geometry, activation_bytes, batches
from colorize_cli.checkpoint import load_generator
from colorize_cli.color import decode_output, encode_input, to_uint8_exact
from colorize_cli.device import autocast_bf16, ensure_gpu_memory, native_bf16, pick_device
from colorize_cli.errors import UserError
from colorize_cli.files import ensure_memory
from colorize_cli.hints import Hint, given_planes, given_reach
from colorize_cli.imageio import check_dimensions, to_gray
from colorize_cli.model import ModelConfig, UNet, for_inference

RUN_CHECKPOINT = "best.safetensors"  # what `colorize train` keeps as a run's best generator
# The full-resolution decode works in horizontal strips of about this many pixels: the colour
# conversion's temporaries then stay a few MB each instead of several GB for an 8000 px photo.
STRIP_PIXELS = 1 << 18


def resolve_model(path: str | os.PathLike | None) -> Path:
    """None -> the default bundled model; a bundled model's name (`bundled.BUNDLED`) -> its file;
    a folder -> the run's best checkpoint; else the file. A name wins over a folder of that name
    in the current folder: give that one as ./NAME."""
    model = DEFAULT if path is None else bundled(str(path))
    if model is not None:
        if not model.path.is_file():
            raise UserError(f"the bundled {model.name} model {model.path} is missing; reinstall colorize-gan")
        return model.path
    path = Path(path)
    if path.is_dir():
        best = path / RUN_CHECKPOINT
        if not best.is_file():
            raise UserError(f"{path}: folder has no {RUN_CHECKPOINT}; give a `colorize train` run folder or a .safetensors file")
        return best
    return path  # load_checkpoint explains a missing or unreadable file


@dataclass
class Prepared:
    """One photo ready for the network: its full-size gray, its padded working copy and its
    colour hints placed on that copy."""

    gray: Image.Image  # mode "L", full size
    geometry: Geometry
    work: np.ndarray  # (ph, pw) uint8
    hints: tuple[tuple[float, float, tuple[int, int, int]], ...] = ()  # (x, y, rgb) in working pixels


class Colorizer:
    """A generator ready for inference (`model.for_inference`, channels_last) that colorizes photos of
    any size. Build it with `Colorizer.load`; `colorize` and `colorize_batch` take PIL images."""

    def __init__(self, net: UNet, cfg: ModelConfig, device: torch.device, size: int | None = None,
                 batch_size: int = DEFAULT_BATCH, source: str = "") -> None:
        self.cfg = cfg
        self.step = 2**cfg.depth
        self.size = cfg.size if size is None else size
        if self.size < self.step:
            raise UserError(f"working size {self.size} is below this model's minimum of {self.step} px "
                            f"(its U-Net halves the image {cfg.depth} times)")
        if batch_size < 1:
            raise UserError(f"batch size must be at least 1, not {batch_size}")
        self.batch_size = batch_size
        self._check_memory(device)
        self.device = device
        self.net = net.eval().to(device, memory_format=torch.channels_last)
        self.source = source

    def _check_memory(self, device: torch.device) -> None:
        """Refuse a working size and batch whose network pass cannot fit where it runs, before any
        photo is scaled up to it (instead of an allocator's error, or the OOM killer, later)."""
        what = f"working size {self.size} px at batch size {self.batch_size}"
        # 2 bytes a value under the bf16 autocast `predict` runs in (`native_bf16`), else 4.
        needed = activation_bytes(self.cfg, self.size, self.batch_size, element_bytes=2 if native_bf16(device) else 4)
        if device.type == "cuda":
            ensure_gpu_memory(needed, what, device)
        else:
            ensure_memory(needed, what)

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, device: str = "cpu", size: int | None = None,
             batch_size: int = DEFAULT_BATCH) -> "Colorizer":
        """From a checkpoint file, a `colorize train` run folder, a bundled model's name, or None
        for the default bundled model.

        Weights stored in float16 are cast to float32 on loading.
        """
        file = resolve_model(path)
        dev = pick_device(device)
        net, cfg = load_generator(file)
        return cls(for_inference(net), cfg, dev, size, batch_size, str(file))

    def require_hints(self) -> None:
        """Refuse hints for a model whose generator has no hint inputs (those from before hints,
        and `colorize train --no-hints`), naming it; `colorize infer` asks before reading a photo."""
        if not self.cfg.hints:
            raise UserError(f"{self.source or 'this model'} was trained without colour hints; give a model "
                            "trained with them (`colorize train` without --no-hints) or no hints")

    def prepare(self, img: Image.Image, hints: Sequence[Hint] = ()) -> Prepared:
        """Gray the photo, make its padded working copy and place its hints (coordinates in the
        upright photo, as `imageio.open_image` returns it) on that copy; too-small photos are
        refused (`imageio.check_dimensions`, which `open_image` has applied to every photo read
        from a file), and so are hints for a model without hint inputs (`require_hints`) and hints
        outside the photo (`hints.HintError`)."""
        gray = to_gray(img)
        width, height = gray.size
        check_dimensions("image", width, height)
        g = Geometry.fit(width, height, self.size, self.step)
        small = np.asarray(gray.resize((g.w, g.h), Image.Resampling.LANCZOS))
        pad = ((g.top, g.ph - g.h - g.top), (g.left, g.pw - g.w - g.left))
        return self.place(Prepared(gray, g, np.pad(small, pad, mode="reflect")), hints)

    def place(self, item: Prepared, hints: Sequence[Hint]) -> Prepared:
        """`item` with `hints` (upright photo coordinates) placed on its working copy in place of
        any it had: `colorize app` prepares a photo once and re-hints it at every change."""
        if hints:
            self.require_hints()
        width, height = item.gray.size
        g = item.geometry
        placed = []
        for hint in hints:  # pixel centres map to pixel centres of the scaled copy
            x, y = hint.place(width, height)
            placed.append(((x + 0.5) * g.w / width - 0.5 + g.left, (y + 0.5) * g.h / height - 0.5 + g.top, hint.rgb))
        return replace(item, hints=tuple(placed))

    def network_input(self, items: Sequence[Prepared]) -> torch.Tensor:
        """The network's gray input (N, 1, ph, pw), channels_last on the device, for prepared
        photos of one canvas shape."""
        x = torch.from_numpy(np.stack([item.work for item in items])).to(self.device).unsqueeze(1).float() / 255
        return encode_input(x, self.cfg.space).contiguous(memory_format=torch.channels_last)

    @torch.inference_mode()
    def predict(self, items: Sequence[Prepared]) -> torch.Tensor:
        """Network output (N, C, ph, pw) on the CPU for prepared photos of one canvas shape
        (computed in bf16 on a GPU and on CPUs with native bf16, `device.native_bf16`: the
        chroma it predicts is far coarser than bf16's steps).

        Hints change a photo only where they reach (`hints.given_reach`, EFFECT_SIDE): the output
        is the automatic one plus that reach times what the hints changed. A network trained on
        L1 learns that one hint's colour says something about the whole photo's palette, and
        passes it on through its bottleneck; a person who puts a hint means that place.
        Generators from before the reach (the beach model) run as they were trained."""
        x = self.network_input(items)
        planes = None
        if any(item.hints for item in items):
            planes = torch.cat([given_planes(item.hints, x[i:i + 1]) for i, item in enumerate(items)])
            planes = planes.contiguous(memory_format=torch.channels_last)
        with autocast_bf16(self.device):
            out = self.net(x, planes).float()
            if planes is None or not self.cfg.local_hints:
                return out.cpu()
            auto = self.net(x).float()
        reach = torch.cat([given_reach(item.hints, *x.shape[2:]) for item in items]).to(out.device)
        return (auto + reach * (out - auto)).cpu()

    @torch.inference_mode()
    def finish(self, item: Prepared, out: torch.Tensor) -> Image.Image:
        """Full-size RGB from one network output (C, ph, pw): crop the padding, scale the
        chroma to the photo's size, decode strip by strip against the full-resolution gray. A
        non-finite output (a damaged or diverged network) is refused: it would decode as gray."""
        if not torch.isfinite(out).all():
            raise UserError("the network's output is not finite (NaN or infinity); its checkpoint may be damaged")
        g = item.geometry
        width, height = item.gray.size
        chroma = out[None, :, g.top:g.top + g.h, g.left:g.left + g.w].to(self.device)
        shrink = height < g.h or width < g.w  # a photo smaller than its working copy: filter, not just sample
        chroma = F.interpolate(chroma, size=(height, width), mode="bilinear", align_corners=False, antialias=shrink)
        gray_u8 = np.asarray(item.gray)
        rgb = np.empty((height, width, 3), np.uint8)
        rows = max(1, STRIP_PIXELS // width)
        for y in range(0, height, rows):
            strip_gray = gray_u8[y:y + rows]
            g01 = torch.from_numpy(strip_gray.copy()).to(self.device)[None, None].float() / 255
            strip = decode_output(g01, chroma[:, :, y:y + rows], self.cfg.space)
            rgb[y:y + rows] = to_uint8_exact(strip[0].permute(1, 2, 0).cpu().numpy(), strip_gray)
        return Image.fromarray(rgb, "RGB")

    def colorize(self, img: Image.Image, hints: Sequence[Hint] = ()) -> Image.Image:
        """Colorize one photo (color photos are grayed first), following its colour `hints` if
        any (`hints.Hint`, in the upright photo's coordinates): RGB of the same size, whose
        Pillow "L" equals the input's exactly."""
        return self.colorize_batch([img], [hints])[0]

    def colorize_batch(self, imgs: Sequence[Image.Image],
                       hints: Sequence[Sequence[Hint]] | None = None) -> list[Image.Image]:
        """`colorize` for many photos (and their hints, one list per photo), run through the
        network in batches of equal canvas shape."""
        items = [self.prepare(img, hs) for img, hs in zip(imgs, hints or [()] * len(imgs), strict=True)]
        results: list[Image.Image | None] = [None] * len(items)
        for chunk in batches(range(len(items)), lambda i: items[i].geometry, self.batch_size):
            outs = self.predict([items[i] for i in chunk])
            for i, out in zip(chunk, outs):
                results[i] = self.finish(items[i], out)
        return [r for r in results if r is not None]
