"""Numerical error between a colorized photo and the real one, and how colourful a photo is.

All functions take float RGB arrays in [0, 1] of shape (H, W, 3); PSNR, SSIM and CIEDE2000
come from scikit-image with the data range and channel axis stated explicitly. `batch_scores`
computes L1, PSNR and SSIM the same way for a whole batch of tensors on their own device, so
training can score its test split every epoch without a round trip through NumPy.

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
