"""Numerical error between a colorized photo and the real one, and how colourful a photo is.

All functions take float RGB arrays in [0, 1] of shape (H, W, 3); PSNR, SSIM and CIEDE2000
come from scikit-image with the data range and channel axis stated explicitly. `batch_scores`
computes L1, PSNR and SSIM the same way for a whole batch of tensors on their own device, and
`batch_ciede2000` and `batch_colorfulness` the colour scores, so training can score (and pick
its best epoch on) its test split every epoch without a round trip through NumPy.

`imageio.is_grayscale` (so prep and crawl) uses `colorfulness`: torch and scikit-image are
imported inside the functions that need them, so those commands start without loading them.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch
    from PIL import Image


def colorfulness(rgb: np.ndarray) -> float:
    """Hasler and Suesstrunk (2003) colorfulness of an RGB array, on the 0-255 scale."""
    a = rgb.astype(np.float64)
    if a.max() <= 1.0 and rgb.dtype != np.uint8:
        a = a * 255.0
    rg = a[..., 0] - a[..., 1]
    yb = 0.5 * (a[..., 0] + a[..., 1]) - a[..., 2]
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def mae(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(np.abs(pred - truth).mean())


def mse(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(np.square(pred - truth).mean())


def psnr(pred: np.ndarray, truth: np.ndarray) -> float:
    """In dB; identical images give +inf."""
    from skimage.metrics import peak_signal_noise_ratio

    if np.array_equal(pred, truth):
        return float("inf")
    return float(peak_signal_noise_ratio(truth, pred, data_range=1.0))


def ssim(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean SSIM over the RGB channels, 7x7 window (smaller for tiny images, NaN below 3 px)."""
    from skimage.metrics import structural_similarity

    win = _ssim_window(*truth.shape[:2])
    if win < 3:
        return float("nan")
    return float(structural_similarity(truth, pred, data_range=1.0, channel_axis=2, win_size=win))


def _ssim_window(h: int, w: int) -> int:
    win = min(7, h, w)
    return win - (1 - win % 2)  # odd


def batch_scores(pred: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """Mean L1, PSNR and SSIM over a batch, (N, 3, H, W) in [0, 1], each image scored as
    `mae`, `psnr` and `ssim` score it (to float64 rounding; a test holds them together).

    SSIM is scikit-image's default form: a uniform window, sample covariances, K1 0.01, K2 0.03,
    and the mean over pixels whose window lies inside the image, which are exactly the outputs
    of an unpadded sliding mean, so no border rule is needed."""
    import torch
    import torch.nn.functional as F

    x, y = pred.double(), truth.double()
    diff = x - y
    l1 = diff.abs().flatten(1).mean(1)
    mse = diff.square().flatten(1).mean(1)
    psnr = torch.where(mse > 0, 10 * torch.log10(1 / mse), torch.full_like(mse, math.inf))
    win = _ssim_window(*x.shape[-2:])
    if win < 3:
        ssim_mean = float("nan")
    else:
        def mean(t: torch.Tensor) -> torch.Tensor:  # separable win x win sliding mean
            return F.avg_pool2d(F.avg_pool2d(t, (win, 1), stride=1), (1, win), stride=1)

        cov_norm = win * win / (win * win - 1)
        mx, my = mean(x), mean(y)
        vx = cov_norm * (mean(x * x) - mx * mx)
        vy = cov_norm * (mean(y * y) - my * my)
        vxy = cov_norm * (mean(x * y) - mx * my)
        c1, c2 = 0.01**2, 0.03**2
        s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
        ssim_mean = float(s.mean())  # every image and channel has the same number of pixels
    return {"l1": float(l1.mean()), "psnr": float(psnr.mean()), "ssim": ssim_mean}


def batch_colorfulness(rgb: torch.Tensor) -> torch.Tensor:
    """`colorfulness` of each image of a batch (N, 3, H, W) in [0, 1]: a (N,) tensor."""
    import torch

    r, g, b = (255 * rgb.double()).unbind(1)
    rg, yb = (r - g).flatten(1), (0.5 * (r + g) - b).flatten(1)
    spread = torch.hypot(rg.std(1, correction=0), yb.std(1, correction=0))
    return spread + 0.3 * torch.hypot(rg.mean(1), yb.mean(1))


def batch_ciede2000(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Mean CIEDE2000 of each image of a batch (N, 3, H, W) in [0, 1]: a (N,) tensor.

    Sharma, Wu and Dalal's (2005) statement of the formula, as `ciede2000` computes it through
    scikit-image; the CIELAB conversion is `color.rgb_to_lab`, whose white point differs from
    scikit-image's by less than 0.01 in L*, a*, b*, so the two agree to about 0.01."""
    import torch

    from colorize_cli.color import rgb_to_lab

    (l1, a1, b1), (l2, a2, b2) = (rgb_to_lab(t.double()).unbind(1) for t in (truth, pred))
    c7 = ((torch.hypot(a1, b1) + torch.hypot(a2, b2)) / 2) ** 7
    g = 0.5 * (1 - torch.sqrt(c7 / (c7 + 25.0**7)))
    a1, a2 = a1 * (1 + g), a2 * (1 + g)
    c1, c2 = torch.hypot(a1, b1), torch.hypot(a2, b2)
    h1, h2 = (torch.rad2deg(torch.atan2(b, a)) % 360 for a, b in ((a1, b1), (a2, b2)))
    chromatic = c1 * c2 != 0  # a hue only where both colours have one
    dh = h2 - h1
    dh = torch.where(dh > 180, dh - 360, torch.where(dh < -180, dh + 360, dh)) * chromatic
    d_big_h = 2 * torch.sqrt(c1 * c2) * torch.sin(torch.deg2rad(dh) / 2)
    hsum = h1 + h2
    h_mean = torch.where(~chromatic, hsum, torch.where((h1 - h2).abs() <= 180, hsum / 2,
                                                       torch.where(hsum < 360, hsum + 360, hsum - 360) / 2))
    l_mean, c_mean = (l1 + l2) / 2, (c1 + c2) / 2
    deg = torch.deg2rad
    t = (1 - 0.17 * torch.cos(deg(h_mean - 30)) + 0.24 * torch.cos(deg(2 * h_mean))
         + 0.32 * torch.cos(deg(3 * h_mean + 6)) - 0.20 * torch.cos(deg(4 * h_mean - 63)))
    s_l = 1 + 0.015 * (l_mean - 50) ** 2 / torch.sqrt(20 + (l_mean - 50) ** 2)
    s_c, s_h = 1 + 0.045 * c_mean, 1 + 0.015 * c_mean * t
    r_c = 2 * torch.sqrt(c_mean**7 / (c_mean**7 + 25.0**7))
    r_t = -torch.sin(deg(60 * torch.exp(-(((h_mean - 275) / 25) ** 2)))) * r_c
    dl, dc, dh_ = (l2 - l1) / s_l, (c2 - c1) / s_c, d_big_h / s_h
    return torch.sqrt((dl**2 + dc**2 + dh_**2 + r_t * dc * dh_).clamp_min(0)).flatten(1).mean(1)


def ciede2000(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean CIEDE2000 colour difference in CIELAB (D65); about 2.3 is a just-noticeable difference."""
    from skimage.color import deltaE_ciede2000, rgb2lab

    return float(deltaE_ciede2000(rgb2lab(truth), rgb2lab(pred)).mean())


def score(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Every metric for one image, plus both colorfulness values and their ratio."""
    cf_pred, cf_truth = colorfulness(pred), colorfulness(truth)
    return {
        "mae": mae(pred, truth),
        "mse": mse(pred, truth),
        "psnr": psnr(pred, truth),
        "ssim": ssim(pred, truth),
        "ciede2000": ciede2000(pred, truth),
        "colorfulness": cf_pred,
        "colorfulness_truth": cf_truth,
        "colorfulness_ratio": cf_pred / cf_truth if cf_truth > 0 else float("nan"),
    }


def as_rgb01(img: Image.Image) -> np.ndarray:
    """A PIL image as the float RGB array in [0, 1] that every score here takes."""
    return np.asarray(img.convert("RGB"), dtype=np.float64) / 255.0


def json_safe(obj):
    """`obj` with every non-finite float (PSNR of identical images, an undefined kappa) as None,
    so `--json` output is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [json_safe(v) for v in obj]
    return obj
