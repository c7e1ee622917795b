"""Colour hints: "this point is red", given by a user or simulated from the true photo.

A hint is a point of the upright photo (pixel or fractional coordinates) and a colour. The
generator reads hints as HINT_PLANES extra input planes at its working size (`planes`):
- the hint's a*b* over a small square patch around it (later hints win where patches overlap),
- a mask of those patches,
- the inverse-distance-weighted mean a*b* of all hints at every pixel (weights 1 / (1 + d^2),
  d in working pixels): the naive baseline that `colorize evaluate --hints` scores next to
  the network;
- the same mean with each weight also multiplied by how alike the pixel's lightness is to the
  hinted pixel's (a Gaussian of their L* difference, LIGHTNESS_SIGMA): a blue hint in the sky
  then reaches the far sky more than the dark rocks beside it;
- each pixel's reach: how surely some hint speaks for it, 1 - prod_k (1 - r_k), where r_k is
  a Gaussian of the distance to hint k (sigma REACH_SIDE x sqrt(H W) of the working copy):
  1 on a hint, 0 far from every hint and where there is none. Distance alone: times the
  lightness likeness, a hint on a highlight would reach no pixel beside it; where edges stop a
  colour is the network's to learn.
The network's output is a correction of the lightness-aware mean times the reach
(`model.UNet`): near a hint it starts from the hint's colour, far from all hints from no
colour, as in automatic mode. The plain means reach every pixel whatever the distance (with
one hint, the whole photo is its colour), so a guess built on them alone made one hint colour
the whole photo. Generators from before the reach plane (`ModelConfig.local_hints` False)
read the first OLD_PLANES planes and correct the mean itself.
All planes zero is automatic mode, so one checkpoint colorizes with hints and without.

Only the hint's chroma (CIELAB a*, b*) is used; the photo keeps its own lightness. Training
shows the network simulated users (`simulate`, Zhang et al. 2017): half the photos get no
hint, the others a geometric number of them (mean MEAN_HINTS), each the mean true colour of a
patch of 1, 3 or 5 px at a random place.

torch loads only in the functions that make planes, so the command line parses and checks
hints (`parse_hint`, `read_hints_file`, `match_photos`) before any work.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import ImageColor

from colorize_cli.errors import UserError, one_line

if TYPE_CHECKING:
    import torch

HINT_PLANES = 8  # a*, b* over the hint patches, their mask, the inverse-distance a*b*, the lightness-aware one, reach
OLD_PLANES = 7  # what a generator from before the reach plane reads
IDW = slice(3, 5)  # the plain inverse-distance a*b*: `colorize evaluate --hints`'s baseline
GUESS = slice(5, 7)  # the lightness-aware plane, which the network's output corrects (times REACH)
REACH = slice(7, 8)
LIGHTNESS_SIGMA = 10.0  # L* units: on 60 beach test photos with 20 hints, 28.09 dB against 26.44 without
REACH_SIDE = 0.08  # a hint's reach: sigma of its Gaussian, as a share of sqrt(H * W) of the working copy
# How far a hint may change the photo at all (`given_reach`, `Colorizer.predict`): twice the
# reach the network reads. Beyond it a photo is as without hints.
EFFECT_SIDE = 2 * REACH_SIDE
HINT_SIDE = 3  # working pixels on a side of a given hint's patch
TRAIN_SIDES = (1, 3, 5)  # a simulated hint's patch side, uniform among these
NO_HINT_SHARE = 0.5  # training photos given no hint at all (automatic mode)
MEAN_HINTS = 8  # mean hint count of the other photos (geometric)
MAX_HINTS = 32
CURVE = (0, 1, 2, 5, 10, 20)  # the hint counts `colorize evaluate --hints` reports


class HintError(UserError):
    """A hint that does not fit its photo: in a batch, that photo is skipped and the rest go on."""


@dataclass(frozen=True)
class Hint:
    """A colour at a point of the upright photo: pixel coordinates (x across, y down, from the
    top-left pixel), or with `fraction` shares of its width and height in [0, 1]."""

    x: float
    y: float
    rgb: tuple[int, int, int]
    fraction: bool = False

    def place(self, width: int, height: int) -> tuple[float, float]:
        """Pixel coordinates in a width x height photo; an error if outside it."""
        if self.fraction:
            x, y = self.x * (width - 1), self.y * (height - 1)
        else:
            x, y = self.x, self.y
        if not (0 <= x <= width - 1 and 0 <= y <= height - 1):
            raise HintError(f"hint {self.text()} lies outside the {width}x{height} photo")
        return x, y

    @property
    def hex(self) -> str:
        return "#{:02x}{:02x}{:02x}".format(*self.rgb)

    def text(self) -> str:
        """The hint in --hint's form, for messages: '120,80,#d9342b' or '0.5,1.0,#87ceeb'."""
        x, y = (np.format_float_positional(float(v), trim="0" if self.fraction else "-") for v in (self.x, self.y))
        return f"{x},{y},{self.hex}"

    def to_json(self) -> dict:
        """The object form of a --hints file; whole pixel numbers written as integers, for people to edit."""
        if self.fraction:
            return {"fx": self.x, "fy": self.y, "color": self.hex}
        x, y = (int(v) if float(v).is_integer() else v for v in (self.x, self.y))
        return {"x": x, "y": y, "color": self.hex}


def parse_color(text: str) -> tuple[int, int, int]:
    """#rgb, #rrggbb, rgb(...), hsl(...) or a CSS colour name (Pillow's ImageColor); an alpha
    part is ignored."""
    try:
        r, g, b = ImageColor.getrgb(text.strip())[:3]
    except ValueError:
        r = g = b = -1
    if not all(0 <= v <= 255 for v in (r, g, b)):  # also Pillow's rgb(300,0,0), which it passes through
        raise UserError(f"{text.strip()!r} is not a colour (give #rrggbb, rgb(R,G,B) with 0..255 "
                        "or a CSS name such as skyblue)")
    return r, g, b


def _coordinate(text: str, axis: str, hint: str) -> tuple[float, bool]:
    """A whole number of pixels, or a share in [0, 1] written with a decimal point (1.0: the far edge)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise UserError(f"hint {hint!r}: {axis} {text!r} is not a number")
    fraction = "." in text
    if fraction and 0 <= value <= 1 or not fraction and value >= 0 and value.is_integer():
        return value, fraction
    raise UserError(f"hint {hint!r}: {axis} {one_line(text)} is neither a whole number of pixels nor a share "
                    "in 0..1 (such as 0.5)")


def parse_hint(text: str) -> Hint:
    """'X,Y,COLOUR': '120,80,#d9342b' (pixels) or '0.5,0.1,skyblue' (shares of the width and height)."""
    parts = text.split(",", 2)
    if len(parts) != 3:
        raise UserError(f"hint {text!r}: expected X,Y,COLOUR such as 120,80,#d9342b or 0.5,0.1,skyblue")
    (x, fx), (y, fy) = _coordinate(parts[0].strip(), "x", text), _coordinate(parts[1].strip(), "y", text)
    if fx != fy:
        raise UserError(f"hint {text!r}: give both coordinates in pixels (whole numbers) or both as shares (such as 0.5)")
    try:
        rgb = parse_color(parts[2])
    except UserError as e:
        raise UserError(f"hint {text!r}: {e}") from None
    return Hint(x, y, rgb, fx)


def _from_json(item: object, where: str) -> Hint:
    """One hint of a --hints file: a --hint string, or an object as `Hint.to_json` writes it."""
    try:
        if isinstance(item, str):
            return parse_hint(item)
        if not isinstance(item, dict) or not isinstance(item.get("color"), str):
            raise UserError("each hint is 'X,Y,COLOUR' or {\"x\": X, \"y\": Y, \"color\": COLOUR}")
        fraction = "fx" in item or "fy" in item
        keys = ("fx", "fy") if fraction else ("x", "y")
        shown = json.dumps(item)  # one line: JSON escapes control characters
        if set(item) != {*keys, "color"} or not all(type(item[k]) in (int, float) for k in keys):
            raise UserError(f"a hint has numbers x and y (pixels) or fx and fy (shares), and a color; got {shown}")
        x, y = (_finite(item[k], k, shown) for k in keys)
        if min(x, y) < 0 or fraction and max(x, y) > 1:
            raise UserError(f"hint {shown}: {'shares must lie in 0..1' if fraction else 'pixels must not be negative'}")
        return Hint(x, y, parse_color(item["color"]), fraction)
    except UserError as e:
        raise UserError(f"{where}: {e}") from None


def _finite(value: int | float, key: str, shown: str) -> float:
    """A coordinate of a --hints file as a float. JSON reads 1e400 as infinity (and Python's json
    also takes NaN and Infinity), and an integer may be past float's range: errors all."""
    try:
        number = float(value)
    except OverflowError:  # an int of over 308 digits
        raise UserError(f"hint {shown}: {key} is too large") from None
    if not math.isfinite(number):
        raise UserError(f"hint {shown}: {key} is not a finite number")
    return number


def read_hints_file(path: str | os.PathLike) -> dict[str, list[Hint]]:
    """A --hints file: {"photo.jpg": [HINT, ...], ...}, each photo named as `match_photos` reads
    the names, each HINT 'X,Y,COLOUR' (as --hint takes it) or an object (`Hint.to_json`)."""
    shown = one_line(str(path))
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{shown}: no such hints file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{shown}: not a readable JSON hints file ({one_line(str(e))})") from None
    except ValueError:  # json's int() past Python's limit on the digits of an integer
        raise UserError(f"{shown}: not a readable JSON hints file (a number of more than "
                        f"{sys.get_int_max_str_digits()} digits)") from None
    except RecursionError:
        raise UserError(f"{shown}: not a readable JSON hints file (nested too deeply)") from None
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise UserError(f"{shown}: expected {{\"photo.jpg\": [HINT, ...], ...}}, each HINT 'X,Y,COLOUR' "
                        "or {\"x\": X, \"y\": Y, \"color\": COLOUR}")
    return {name: [_from_json(item, f"{shown}: {one_line(name)}") for item in items] for name, items in data.items()}


def hints_json(hints: dict[str, Sequence[Hint]]) -> str:
    """The --hints file format, for `read_hints_file`."""
    return json.dumps({name: [h.to_json() for h in hs] for name, hs in hints.items()}, indent=1) + "\n"


def match_photos(table: dict[str, list[Hint]],
                 photos: Sequence[tuple[Path, Path]]) -> tuple[list[list[Hint]], list[str]]:
    """The hints a --hints table gives each photo (its path, and its path relative to the input
    folder), and the table's keys that name none of them. A key is a photo's path (from the
    current folder, or absolute) or its path relative to the input folder; a key that is neither
    is a file name, for every photo of that name. A key naming several photos, or a photo named
    by several keys, is an error: which hints were meant is not known."""
    by_path = {os.path.abspath(path): i for i, (path, _) in enumerate(photos)}
    by_rel = {rel: i for i, (_, rel) in enumerate(photos)}
    by_name: defaultdict[str, list[int]] = defaultdict(list)
    for i, (path, _) in enumerate(photos):
        by_name[path.name].append(i)
    keys: list[list[str]] = [[] for _ in photos]
    unused = []
    for key in table:
        hits = {by_path.get(os.path.abspath(key)), by_rel.get(Path(key))} - {None} or set(by_name.get(key, ()))
        if len(hits) > 1:
            raise UserError(f"the hints file's {key!r} names {len(hits)} photos; name each by its path relative to IN")
        for i in hits:
            keys[i].append(key)
        if not hits:
            unused.append(key)
    for (path, _), names in zip(photos, keys):
        if len(names) > 1:
            raise UserError(f"the hints file names {path} {len(names)} times ({', '.join(map(repr, names))}); keep one")
    return [table[names[0]] if names else [] for names in keys], unused


def hint_ab(rgb: Sequence[tuple[int, int, int]]) -> torch.Tensor:
    """(K, 2) a*, b* in network units (a*/AB_SCALE) of 8-bit sRGB colours."""
    import torch

    from colorize_cli.color import AB_SCALE, rgb_to_lab

    if not rgb:
        return torch.zeros(0, 2)
    c = torch.tensor(rgb, dtype=torch.float64).reshape(-1, 3, 1, 1) / 255
    return (rgb_to_lab(c)[:, 1:, 0, 0] / AB_SCALE).float()


def spreads(xy: torch.Tensor, ab: torch.Tensor, valid: torch.Tensor, lightness: torch.Tensor) -> torch.Tensor:
    """(B, 5, H, W): the hints spread over the images, in one pass over the hints.
    Planes 0-1: at each pixel the mean a*b* of the valid hints, weighted 1 / (1 + d^2) by the
    squared distance d^2 in pixels to each (0 where an image has no hint); planes 2-3: the same
    with each weight also times a Gaussian of the pixel's L* difference from the hinted pixel's;
    plane 4: the reach, 1 - prod_k (1 - Gaussian(d, REACH_SIDE)): distance alone, since a hint
    on a highlight or a shadow would otherwise reach only pixels of its own lightness.
    `xy` (B, K, 2) are pixel coordinates (x, y), `ab` (B, K, 2), `valid` (B, K), `lightness`
    (B, 1, H, W) the network's L* input (L* / 50 - 1)."""
    import torch

    b, _, height, width = lightness.shape
    ys = torch.arange(height, device=xy.device, dtype=xy.dtype).reshape(1, height, 1)
    xs = torch.arange(width, device=xy.device, dtype=xy.dtype).reshape(1, 1, width)
    num = torch.zeros(b, 4, height, width, device=xy.device, dtype=xy.dtype)
    den = torch.zeros(b, 2, height, width, device=xy.device, dtype=xy.dtype)
    unreached = torch.ones(b, height, width, device=xy.device, dtype=xy.dtype)
    light = (lightness[:, 0].float() + 1) * 50
    at = xy.round().long()
    hinted = light.reshape(b, -1).gather(1, at[..., 1].clamp(0, height - 1) * width + at[..., 0].clamp(0, width - 1))
    for k in range(xy.shape[1]):  # one hint at a time: a few (B, H, W) temporaries, not (B, K, H, W)
        d2 = (xs - xy[:, k, 0, None, None]) ** 2 + (ys - xy[:, k, 1, None, None]) ** 2
        near = valid[:, k, None, None] / (1 + d2)
        like = torch.exp((light - hinted[:, k, None, None]) ** 2 / (-2 * LIGHTNESS_SIGMA**2))
        w = torch.stack([near, near * like], 1)  # (B, 2, H, W)
        den += w
        num += (w[:, :, None] * ab[:, k, None, :, None, None]).flatten(1, 2)
        unreached *= 1 - valid[:, k, None, None] * _reached(d2, height, width, REACH_SIDE)
    return torch.cat([num / den.repeat_interleave(2, 1).clamp_min(1e-30), (1 - unreached)[:, None]], 1)


def _reached(d2: torch.Tensor, height: int, width: int, side: float) -> torch.Tensor:
    """A hint's reach at squared distances `d2` (working pixels) in a height x width image: a
    Gaussian of sigma `side` x sqrt(height x width), 1 on the hint."""
    import torch

    return torch.exp(-d2 / (2 * side**2 * height * width))


def given_reach(hints: Sequence[tuple[float, float, tuple[int, int, int]]], height: int, width: int,
                side: float = EFFECT_SIDE) -> torch.Tensor:
    """(1, 1, H, W): 1 - prod_k (1 - reach of hint k), for hints already placed in working
    pixels, (x, y, rgb) each; 0 everywhere without hints."""
    import torch

    ys = torch.arange(height, dtype=torch.float32).reshape(height, 1)
    xs = torch.arange(width, dtype=torch.float32).reshape(1, width)
    unreached = torch.ones(height, width)
    for x, y, _ in hints:
        unreached *= 1 - _reached((xs - x) ** 2 + (ys - y) ** 2, height, width, side)
    return (1 - unreached)[None, None]


def planes(xy: torch.Tensor, ab: torch.Tensor, valid: torch.Tensor, side: torch.Tensor,
           lightness: torch.Tensor) -> torch.Tensor:
    """The generator's hint input (B, HINT_PLANES, H, W) for hints at pixel coordinates `xy`
    (B, K, 2) with colours `ab` (B, K, 2, network units), patch sides `side` (B, K, odd) and
    `valid` (B, K) marking the real ones (images may have fewer than K), on images of network
    input `lightness` (B, 1, H, W)."""
    import torch

    b, _, height, width = lightness.shape
    ys = torch.arange(height, device=xy.device).reshape(1, height)
    xs = torch.arange(width, device=xy.device).reshape(1, width)
    sparse = torch.zeros(b, 2, height, width, device=xy.device)
    mask = torch.zeros(b, 1, height, width, device=xy.device)
    centre, half = xy.round().long(), (side // 2)
    for k in range(xy.shape[1]):  # in order, so a later hint wins where patches overlap
        rows = (ys - centre[:, k, 1, None]).abs() <= half[:, k, None]
        cols = (xs - centre[:, k, 0, None]).abs() <= half[:, k, None]
        inside = (rows[:, :, None] & cols[:, None, :] & valid[:, k, None, None])[:, None]
        sparse = torch.where(inside, ab[:, k, :, None, None], sparse)
        mask = torch.where(inside, 1.0, mask)
    return torch.cat([sparse, mask, spreads(xy.float(), ab, valid.float(), lightness)], 1)


def given_planes(hints: Sequence[tuple[float, float, tuple[int, int, int]]], lightness: torch.Tensor) -> torch.Tensor:
    """(1, HINT_PLANES, H, W) for hints already placed in working pixels, (x, y, rgb) each, on
    one image of network input `lightness` (1, 1, H, W)."""
    import torch

    k = len(hints)
    xy = torch.tensor([[x, y] for x, y, _ in hints], dtype=torch.float32).reshape(1, k, 2).to(lightness.device)
    ab = hint_ab([rgb for _, _, rgb in hints]).reshape(1, k, 2).to(lightness.device)
    side = torch.full((1, k), HINT_SIDE, device=lightness.device)
    return planes(xy, ab, torch.ones(1, k, dtype=torch.bool, device=lightness.device), side, lightness)


def simulate(target: torch.Tensor, lightness: torch.Tensor) -> torch.Tensor:
    """Hint planes for a training batch, from its true a*b* `target` (B, 2, H, W, network units)
    and its network input `lightness` (B, 1, H, W):
    NO_HINT_SHARE of the photos get none, the others 1 + a geometric number (mean MEAN_HINTS,
    at most MAX_HINTS), each the mean true colour of a patch of a side in TRAIN_SIDES."""
    import torch
    import torch.nn.functional as F

    b, _, h, w = target.shape
    dev = target.device
    u = torch.rand(b, device=dev).clamp_min(1e-12)
    counts = (1 + torch.floor(torch.log(u) / math.log(1 - 1 / MEAN_HINTS))).clamp_max(MAX_HINTS).long()
    counts = torch.where(torch.rand(b, device=dev) < NO_HINT_SHARE, 0, counts)
    out = torch.zeros(b, HINT_PLANES, h, w, device=dev)
    hinted = counts.nonzero()[:, 0]  # only these photos' planes are made: the rest stay zero
    if len(hinted) == 0:
        return out
    counts, target, lightness, n = counts[hinted], target[hinted].float(), lightness[hinted], len(hinted)
    k = int(counts.max())
    valid = torch.arange(k, device=dev)[None] < counts[:, None]
    x, y = torch.randint(0, w, (n, k), device=dev), torch.randint(0, h, (n, k), device=dev)
    choice = torch.randint(0, len(TRAIN_SIDES), (n, k), device=dev)
    ab = torch.zeros(n, k, 2, device=dev)
    flat = (y * w + x)[:, None, :].expand(n, 2, k)
    for i, s in enumerate(TRAIN_SIDES):
        mean = F.avg_pool2d(target, s, 1, s // 2, count_include_pad=False).reshape(n, 2, h * w)
        ab = torch.where((choice == i)[..., None], mean.gather(2, flat).transpose(1, 2), ab)
    side = torch.tensor(TRAIN_SIDES, device=dev)[choice]
    out[hinted] = planes(torch.stack([x, y], -1).float(), ab, valid, side, lightness)
    return out


def truth_hints(rgb: np.ndarray, count: int, rng: np.random.Generator, side: int) -> list[Hint]:
    """`count` hints at uniform random pixels of a true photo (H, W, 3) uint8, each the mean
    colour of the side x side patch around it (clipped at the borders): what `colorize evaluate
    --hints` gives the network and the baseline."""
    height, width = rgb.shape[:2]
    hints = []
    for _ in range(count):
        x, y = int(rng.integers(width)), int(rng.integers(height))
        r = side // 2
        patch = rgb[max(0, y - r):y + r + 1, max(0, x - r):x + r + 1].reshape(-1, 3).mean(0)
        hints.append(Hint(x, y, tuple(int(v) for v in np.rint(patch))))
    return hints
