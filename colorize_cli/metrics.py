"""Numerical error between a colorized photo and the real one.

All functions take float RGB arrays in [0, 1] of shape (H, W, 3); PSNR, SSIM and CIEDE2000
come from scikit-image with the data range and channel axis stated explicitly.
"""

from __future__ import annotations

import math

import numpy as np
from skimage.color import deltaE_ciede2000, rgb2lab
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from colorize_cli.imageio import colorfulness


def mae(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(np.abs(pred - truth).mean())


def mse(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(np.square(pred - truth).mean())


def psnr(pred: np.ndarray, truth: np.ndarray) -> float:
    """In dB; identical images give +inf."""
    if np.array_equal(pred, truth):
        return float("inf")
    return float(peak_signal_noise_ratio(truth, pred, data_range=1.0))


def ssim(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean SSIM over the RGB channels, 7x7 window (smaller for tiny images, NaN below 3 px)."""
    win = min(7, min(truth.shape[:2]))
    win -= 1 - win % 2  # odd
    if win < 3:
        return float("nan")
    return float(structural_similarity(truth, pred, data_range=1.0, channel_axis=2, win_size=win))


def ciede2000(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean CIEDE2000 colour difference in CIELAB (D65); about 2.3 is a just-noticeable difference."""
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
