"""Colour maths between photos and network tensors: sRGB <-> CIELAB (D65), in torch so that
training on a GPU never leaves the device, and the encodings of the networks' inputs and outputs.

Colour spaces (both scaled so every network input and output lies in [-1, 1]):
- "lab" (default): input L*/50 - 1 (L* in [0, 100]); output a*/110, b*/110 through tanh
  (sRGB's a*, b* lie within about [-86, 98] and [-108, 95]). The photo's own luminance is
  kept; the network only supplies colour.
- "rgb" (the original project): input gray/127.5 - 1, output R, G, B likewise.
Either way `decode_output` finishes with `lock_luma`, so the 8-bit output's BT.601 luma
(Pillow's mode "L", see `to_uint8_exact`) equals the gray input exactly. `hue_flip` uses the
same maths to make the survey's obviously wrong photos.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from colorize_cli.choices import Space

AB_SCALE = 110.0

# Kept in float64 and inverted there: cast to the data's dtype only at use, so a float64
# round trip is exact to float64 rounding and a float32 one to float32's.
_RGB2XYZ = torch.tensor([[0.412453, 0.357580, 0.180423],
                         [0.212671, 0.715160, 0.072169],
                         [0.019334, 0.119193, 0.950227]], dtype=torch.float64)
_XYZ2RGB = torch.linalg.inv(_RGB2XYZ)
_WHITE = _RGB2XYZ.sum(1)  # D65 as the matrix's row sums, so a neutral gray has a* = b* = 0
_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601


def _to_linear(c: torch.Tensor) -> torch.Tensor:
    return torch.where(c > 0.04045, ((c + 0.055) / 1.055).clamp_min(0) ** 2.4, c / 12.92)


def _to_srgb(c: torch.Tensor) -> torch.Tensor:
    return torch.where(c > 0.0031308, 1.055 * c.clamp_min(1e-12) ** (1 / 2.4) - 0.055, 12.92 * c)


def _lab_f(t: torch.Tensor) -> torch.Tensor:
    """CIELAB's companding of XYZ relative to white (cube root, linear near black)."""
    return torch.where(t > 0.008856, t.clamp_min(1e-12) ** (1 / 3), 7.787 * t + 16 / 116)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) sRGB in [0, 1] -> L* in [0, 100], a*, b*.

    Same formulas and matrix as scikit-image's rgb2lab; the white point is the matrix's row
    sums (scikit-image rounds it to 0.95047, 1, 1.08883), so a neutral gray has a* = b* = 0
    exactly; the two differ by less than 0.01 in L*, a*, b*.
    """
    m, white = _RGB2XYZ.to(rgb), _WHITE.to(rgb)
    xyz = torch.einsum("ij,njhw->nihw", m, _to_linear(rgb)) / white.reshape(1, 3, 1, 1)
    fx, fy, fz = _lab_f(xyz).unbind(1)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """Inverse of rgb_to_lab; out-of-gamut colours come back outside [0, 1] (not clipped)."""
    L, a, b = lab.unbind(1)
    fy = (L + 16) / 116
    f = torch.stack([fy + a / 500, fy, fy - b / 200], dim=1)
    xyz = torch.where(f > 0.2068966, f**3, (f - 16 / 116) / 7.787) * _WHITE.to(lab).reshape(1, 3, 1, 1)
    return _to_srgb(torch.einsum("ij,njhw->nihw", _XYZ2RGB.to(lab), xyz))


def gray_to_lightness(gray: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) gray in [0, 1] -> L* of the neutral colour (g, g, g)."""
    return 116 * _lab_f(_to_linear(gray)) - 16  # Y of (g, g, g) is its linear value


def encode_input(gray: torch.Tensor, space: Space) -> torch.Tensor:
    """Network input in [-1, 1] from gray in [0, 1], shape (N, 1, H, W)."""
    return gray_to_lightness(gray) / 50 - 1 if space == "lab" else gray * 2 - 1


def encode_target(rgb: torch.Tensor, space: Space) -> torch.Tensor:
    """What the generator should output for a real colour photo (N, 3, H, W) in [0, 1]."""
    return rgb_to_lab(rgb)[:, 1:] / AB_SCALE if space == "lab" else rgb * 2 - 1


def decode_output(gray: torch.Tensor, out: torch.Tensor, space: Space) -> torch.Tensor:
    """Generator output (any resolution) + gray (N, 1, H, W) -> RGB in [0, 1], luma = gray.

    The predicted colour is resized to the gray image's size, so a network run at a small
    working size still yields a full-resolution photo: its detail comes from the gray image.
    """
    if out.shape[-2:] != gray.shape[-2:]:
        out = F.interpolate(out, size=gray.shape[-2:], mode="bilinear", align_corners=False)
    if space == "lab":
        rgb = lab_to_rgb(torch.cat([gray_to_lightness(gray), out * AB_SCALE], dim=1))
    else:
        rgb = (out + 1) / 2
    return lock_luma(rgb, gray)


def lock_luma(rgb: torch.Tensor, gray: torch.Tensor) -> torch.Tensor:
    """Give `rgb` exactly the BT.601 luma `gray`, keeping its colour where the gamut allows.

    Adding the same amount to R, G and B moves luma by that amount (the weights sum to 1);
    then, where a channel leaves [0, 1], the colour is pulled toward the neutral (g, g, g)
    just enough to fit, which leaves luma unchanged.
    """
    w = torch.tensor(_LUMA).to(rgb).reshape(1, 3, 1, 1)
    chroma = rgb - (rgb * w).sum(1, keepdim=True)  # the colour's offset from its own luma, then from gray
    # Largest t in [0, 1] with gray + t * chroma inside [0, 1] for every channel: the channel
    # furthest above gray meets 1 at (1 - gray) / max, the one furthest below meets 0 at gray / -min.
    up = chroma.amax(1, keepdim=True).clamp_min_(1e-12)
    down = chroma.amin(1, keepdim=True).neg_().clamp_min_(1e-12)
    t = torch.minimum((1 - gray) / up, gray / down).clamp_(0, 1)
    return chroma.mul_(t).add_(gray).clamp_(0, 1)


def to_uint8_exact(rgb: np.ndarray, gray: np.ndarray) -> np.ndarray:
    """Quantize (H, W, 3) float RGB in [0, 1] to uint8 whose Pillow "L" equals `gray` (uint8).

    Pillow computes L = (19595 R + 38470 G + 7471 B + 32768) >> 16; the three weights sum to
    65536, so adding d to all three channels moves L by exactly d. Pixels that still miss
    (a channel pinned at 0 or 255) fall back to the neutral (g, g, g), which is always exact.
    """
    out = np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.int32)
    g = gray.astype(np.int32)
    for _ in range(2):
        luma = (19595 * out[..., 0] + 38470 * out[..., 1] + 7471 * out[..., 2] + 32768) >> 16
        out = np.clip(out + (g - luma)[..., None], 0, 255)
    luma = (19595 * out[..., 0] + 38470 * out[..., 1] + 7471 * out[..., 2] + 32768) >> 16
    miss = luma != g
    out[miss] = g[miss][:, None]
    return out.astype(np.uint8)


def hue_flip(real: Image.Image) -> Image.Image:
    """The photo with every hue turned 180 degrees (a*, b* negated in CIELAB) and its luma kept
    exactly: blue sky turns orange, green turns magenta. No attentive viewer takes it for a
    real photo (the survey's vigilance trials)."""
    rgb = torch.from_numpy(np.asarray(real, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    gray_u8 = np.asarray(real.convert("L"))
    gray = torch.from_numpy(gray_u8.astype(np.float32) / 255.0)[None, None]
    lab = rgb_to_lab(rgb)
    flipped = lock_luma(lab_to_rgb(torch.cat([lab[:, :1], -lab[:, 1:]], dim=1)), gray)
    return Image.fromarray(to_uint8_exact(flipped[0].permute(1, 2, 0).numpy(), gray_u8))
