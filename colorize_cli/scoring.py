"""How a training run scores its generator on the test split: on the 8-bit images a user would
get (luma locked to the gray, rounded as `colorize infer` rounds), so the test L1 that picks the
best epoch is the one `colorize evaluate` would report. The gray photo itself is scored the same
way: the bar a colorizer has to clear.
"""

from __future__ import annotations

import numpy as np
import torch

from colorize_cli import metrics
from colorize_cli.color import decode_output, encode_input, to_uint8_exact
from colorize_cli.data import Pairs
from colorize_cli.device import autocast_bf16
from colorize_cli.model import UNet

EVAL_BATCH = 16


@torch.no_grad()
def colorize_test(g: UNet, gray: torch.Tensor, space: str, amp: bool) -> list[np.ndarray]:
    """What a user's 8-bit files would hold for gray photos (N, 1, S, S) uint8: G in eval mode
    (its mode is put back after), (S, S, 3) uint8 each."""
    was_training = g.training
    g.eval()
    gray01 = gray.float() / 255
    with autocast_bf16(amp):
        out = g(encode_input(gray01, space))
    rgb = decode_output(gray01, out.float(), space).permute(0, 2, 3, 1).cpu().numpy()
    g.train(was_training)
    return [to_uint8_exact(r, y) for r, y in zip(rgb, gray[:, 0].cpu().numpy())]


def _scores(preds: torch.Tensor, truths: torch.Tensor) -> dict[str, float]:
    """Mean L1, PSNR, SSIM of uint8 (N, 3, H, W) images against the real ones: on a GPU in one
    batch there (metrics.batch_scores), on a CPU image by image with scikit-image, whose
    running-sum filters beat torch's pooling there (0.3 s against 1 s for 25 photos at 256 px)."""
    if preds.device.type != "cpu":
        return metrics.batch_scores(preds.double() / 255, truths.to(preds.device).double() / 255)
    pairs = zip(preds.permute(0, 2, 3, 1).numpy() / 255.0, truths.permute(0, 2, 3, 1).cpu().numpy() / 255.0)
    l1, psnr, ssim = (float(np.mean(c)) for c in zip(*((metrics.mae(p, t), metrics.psnr(p, t), metrics.ssim(p, t))
                                                         for p, t in pairs)))
    return {"l1": l1, "psnr": psnr, "ssim": ssim}


def evaluate(g: UNet, test: Pairs, space: str, device: torch.device, amp: bool) -> dict[str, float]:
    """Mean L1, PSNR, SSIM of the test split, on the 8-bit images a user would get."""
    preds: list[np.ndarray] = []
    for start in range(0, len(test), EVAL_BATCH):
        preds += colorize_test(g, test.gray[start : start + EVAL_BATCH].to(device), space, amp)
    made = torch.from_numpy(np.stack(preds)).permute(0, 3, 1, 2).to(device)
    return _scores(made, test.color)


def gray_baseline(test: Pairs) -> dict[str, float]:
    """The same scores for the gray photo itself."""
    return _scores(test.gray.expand(-1, 3, -1, -1), test.color)
