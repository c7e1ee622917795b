"""How a training run scores its generator on the test split: on the 8-bit images a user would
get (luma locked to the gray, rounded as `colorize infer` rounds), so the scores are the ones
`colorize evaluate` would report. The gray photo itself is scored the same way: the bar a
colorizer has to clear.

Epochs are ranked by `selection_score`: mean CIEDE2000, raised in proportion where the photos
come out less colourful than the run's `--colorfulness` (COLORFUL_ENOUGH unless given) times
the truth. L1, PSNR or CIEDE2000 alone
reward a model that paints every uncertain pixel gray or brown (the gray photo itself beats
most colour guesses on them); the colourfulness term does not. The best epoch is the latest
one not clearly worse than the lowest-scoring one (`Pick`): the lowest of many scorings on a
few dozen photos is partly luck, and the latest epoch has had the most training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from colorize_cli import metrics
from colorize_cli.color import decode_output, encode_input, to_uint8_exact
from colorize_cli.data import Pairs
from colorize_cli.device import autocast_bf16
from colorize_cli.model import MAX_GAIN, UNet

EVAL_BATCH = 16
COLORFUL_ENOUGH = 0.8  # colourfulness ratio (the model's mean over the truth's) below which the score rises, by default
MARGIN_SE = 2.0  # standard errors above the target that a gain calibrated on held-out photos aims


@torch.no_grad()
def colorize_test(g: UNet, gray: torch.Tensor, space: str) -> list[np.ndarray]:
    """What a user's 8-bit files would hold for gray photos (N, 1, S, S) uint8: G in eval mode
    (its mode is put back after), (S, S, 3) uint8 each."""
    was_training = g.training
    g.eval()
    gray01 = gray.float() / 255
    with autocast_bf16(gray.device):
        out = g(encode_input(gray01, space))
    rgb = decode_output(gray01, out.float(), space).permute(0, 2, 3, 1).cpu().numpy()
    g.train(was_training)
    return [to_uint8_exact(r, y) for r, y in zip(rgb, gray[:, 0].cpu().numpy())]


def _scores(preds: torch.Tensor, truths: torch.Tensor) -> dict[str, float]:
    """Mean L1, PSNR, SSIM and CIEDE2000 of uint8 (N, 3, H, W) images against the real ones, and
    the colourfulness ratio (mean over the truth's mean)."""
    return _photo_scores(preds, truths)[0]


def _photo_scores(preds: torch.Tensor, truths: torch.Tensor) -> tuple[dict[str, float], torch.Tensor]:
    """`_scores`, and each photo's mean CIEDE2000 (float64, on the CPU). L1, PSNR, SSIM on a GPU in one batch
    there (metrics.batch_scores), on a CPU image by image with scikit-image, whose running-sum
    filters beat torch's pooling there (0.3 s against 1 s for 25 photos at 256 px)."""
    truths = truths.to(preds.device)
    if preds.device.type != "cpu":
        scores = metrics.batch_scores(preds.double() / 255, truths.double() / 255)
    else:
        pairs = zip(preds.permute(0, 2, 3, 1).numpy() / 255.0, truths.permute(0, 2, 3, 1).numpy() / 255.0)
        l1, psnr, ssim = (float(np.mean(c)) for c in zip(*((metrics.mae(p, t), metrics.psnr(p, t), metrics.ssim(p, t))
                                                             for p, t in pairs)))
        scores = {"l1": l1, "psnr": psnr, "ssim": ssim}
    ciede = torch.cat([metrics.batch_ciede2000(preds[i:i + EVAL_BATCH] / 255.0, truths[i:i + EVAL_BATCH] / 255.0)
                       for i in range(0, len(preds), EVAL_BATCH)])  # the CIEDE2000 temporaries stay a few MB per image
    scores["ciede2000"] = float(ciede.mean())
    scores["colorfulness"] = _colour_stats(preds, truths)[0]
    return scores, ciede.double().cpu()


def _colour_stats(made: torch.Tensor, real: torch.Tensor) -> tuple[float, float]:
    """Mean colourfulness of uint8 images (N, 3, H, W) `made` over that of `real` (NaN when the
    truths have no colour), and its standard error over the photos, which are a sample of the
    photos the model will meet (the delta method for a ratio of means; NaN for fewer than 2)."""
    def each(images: torch.Tensor) -> np.ndarray:
        return torch.cat([metrics.batch_colorfulness(images[i:i + EVAL_BATCH] / 255.0)
                          for i in range(0, len(images), EVAL_BATCH)]).double().cpu().numpy()

    m, t = each(made), each(real)
    if not t.mean() > 0:
        return math.nan, math.nan
    ratio = float(m.mean() / t.mean())
    se = float(np.std(m - ratio * t, ddof=1) / math.sqrt(len(m)) / t.mean()) if len(m) > 1 else math.nan
    return ratio, se


def _colorize_all(g: UNet, photos: Pairs, space: str, device: torch.device) -> torch.Tensor:
    """G's 8-bit output for every photo, (N, 3, S, S) uint8 on `device`, EVAL_BATCH at a time."""
    preds: list[np.ndarray] = []
    for start in range(0, len(photos), EVAL_BATCH):
        preds += colorize_test(g, photos.gray[start:start + EVAL_BATCH].to(device), space)
    return torch.from_numpy(np.stack(preds)).permute(0, 3, 1, 2).to(device)


def selection_score(scores: dict[str, float], enough: float = COLORFUL_ENOUGH) -> float:
    """Lower is better: mean CIEDE2000 / min(1, colourfulness ratio / `enough`). A model at
    `enough` of the truth's colourfulness or more is judged by its colour error alone; one at
    half of `enough` has its error counted twice; the gray photo's is infinite."""
    ratio = scores["colorfulness"]
    if not ratio > 0:  # gray, or a truth without colour (NaN): only the colour error is left
        return scores["ciede2000"] if math.isnan(ratio) else math.inf
    return scores["ciede2000"] / min(1.0, ratio / enough)


CLEARLY = 2.0  # standard errors by which an epoch must be worse than the lowest-scoring one to lose


@dataclass
class Pick:
    """Which epoch is the best, as the scorings come in: the latest whose selection score is
    not clearly worse than the lowest so far, i.e. its per-photo shares of the score (`scored`)
    exceed those of the lowest-scoring epoch by no more than CLEARLY standard errors of their
    differences, photo by photo. Compared with the lowest, not with the last pick, so a slow
    decline is caught. Without shares (a checkpoint from before them, other photos, a single
    photo) the lower score wins."""

    lowest: float = math.inf  # the lowest selection score so far
    shares: torch.Tensor | None = None  # its per-photo shares

    def scored(self, score: float, shares: torch.Tensor, first: bool) -> bool:
        """Note a scoring; whether its epoch is now the best (the first scoring always is)."""
        before, lowest = self.shares, self.lowest
        if first or score < lowest:
            self.lowest, self.shares = score, shares
        if first:
            return True
        if not math.isfinite(score):
            return False
        if not math.isfinite(lowest) or before is None or before.shape != shares.shape or len(shares) < 2:
            return score < lowest
        diff = shares - before
        return float(diff.mean()) <= CLEARLY * float(diff.std()) / math.sqrt(len(diff))


def colorfulness_stats(g: UNet, photos: Pairs, space: str, device: torch.device) -> tuple[float, float]:
    """Mean colourfulness of G's 8-bit output over the truth's, on `photos`, and its standard error."""
    return _colour_stats(_colorize_all(g, photos, space, device), photos.color.to(device))


def calibrate_gain(g: UNet, photos: Pairs, space: str, device: torch.device, margin: float = 0.0,
                   target: float = COLORFUL_ENOUGH) -> float:
    """The chroma gain (UNet.chroma_gain, at least 1) that brings G's output on `photos`
    (never the test split) to `target` times the truth's colourfulness: the least colour
    the selection score does not charge for, since every step beyond it costs error where a hue
    is wrong (on the beach photos, gain 1.4 instead of 1.2 cost 0.4 dB).

    `margin` (MARGIN_SE for held-out photos): aim that many standard errors of their ratio
    above it, so that new photos reach it too. A few dozen photos are a small sample of how
    colourful photos are: a beach model calibrated to 0.79 on 64 validation photos without a
    margin (standard error 0.051) came out at 0.72 on 120 test photos. Never aimed beyond the
    truth's own colourfulness. Training photos get none: the network has learnt their colours,
    so they already overstate its colour on new photos.

    Colourfulness grows about in proportion to the gain; gamut clipping makes it a little less,
    so one measured correction follows the first estimate. `g` is left at the gain found."""
    gain = 1.0
    for _ in range(2):
        g.chroma_gain = gain
        ratio, se = colorfulness_stats(g, photos, space, device)
        if not ratio > 0:  # gray output or gray truths: nothing to calibrate against
            break
        low = ratio - margin * se if margin and math.isfinite(se) else ratio  # what new photos may come to
        scale = min(target / low if low > 0 else math.inf, 1.0 / ratio)
        gain = min(max(gain * scale, 1.0), MAX_GAIN)
    g.chroma_gain = gain
    return gain


def evaluate_photos(g: UNet, photos: Pairs, space: str, device: torch.device,
                    enough: float = COLORFUL_ENOUGH) -> tuple[dict[str, float], torch.Tensor]:
    """`_scores` of `photos` (the test split, the validation photos) on the 8-bit images a user
    would get, and each photo's share of the selection score (their mean is it): its CIEDE2000
    counted up as selection_score counts up the mean."""
    scores, ciede = _photo_scores(_colorize_all(g, photos, space, device), photos.color)
    mean = scores["ciede2000"]
    return scores, ciede * (selection_score(scores, enough) / mean if mean > 0 else 1.0)


def gray_baseline(test: Pairs) -> dict[str, float]:
    """The same scores for the gray photo itself."""
    return _scores(test.gray.expand(-1, 3, -1, -1), test.color)
