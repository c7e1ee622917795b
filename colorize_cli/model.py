"""The networks and their configuration: the pix2pix U-Net generator, the PatchGAN
discriminator, their DCGAN init, BatchNorm folding and the inference-ready form.
(Colour encoding: `color`; checkpoints: `checkpoint`; devices: `device`.)

Conventions (the lecture notes behind the original project):
- Every convolution is followed by BatchNorm *before* its activation (Ioffe and Szegedy place
  BN on the pre-activation x = Wu + b, whose distribution is the "more Gaussian" one); the
  bias of such a convolution is dropped because BN's beta replaces it. No BN on the first
  encoder layer (it sees raw pixels) nor on the output layer (DCGAN practice).
- At inference BN uses its running statistics, which makes it an affine map per channel;
  `fold_batchnorm` merges it into the preceding convolution so it costs nothing.
- Init as in DCGAN/pix2pix: conv weights N(0, 0.02), BN weights N(1, 0.02), all biases 0.
"""

from __future__ import annotations

import copy
import functools
import itertools
import math
from dataclasses import asdict, dataclass, fields
from typing import get_args

import torch
import torch.nn as nn
import torch.nn.functional as F

from colorize_cli.choices import Space
from colorize_cli.errors import UserError
from colorize_cli.hints import GUESS, HINT_PLANES, IDW, OLD_PLANES, REACH


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the networks (stored with every checkpoint)."""

    size: int = 256  # training image size; the generator runs on any multiple of 2**depth
    width: int = 64  # channels of the first layer (the original: 64)
    space: Space = "lab"
    depth: int = 0  # U-Net levels; 0 = so that the bottleneck is 2x2 at `size` (7 at 256 px)
    dropout: float = 0.5  # in the innermost decoder blocks, training only
    dropout_blocks: int = 3
    d_layers: int = 4  # stride-2 layers in the PatchGAN: a 16x16 score map at 256 px
    # The generator also reads colour hints (`hints.planes`) and corrects their a*b* spread:
    # lab models only (an rgb generator never does); False in checkpoints from before hints.
    hints: bool = True
    # The hint guess the output corrects stops where no hint reaches (`hints.REACH`); False in
    # checkpoints from before it, whose guess is the lightness-aware mean of all hints everywhere.
    local_hints: bool = True

    def __post_init__(self) -> None:
        if self.space not in get_args(Space):
            raise UserError(f"colour space must be 'lab' or 'rgb', not {self.space!r}")
        if self.space != "lab":
            object.__setattr__(self, "hints", False)
        if self.width < 1 or self.d_layers < 1:
            raise UserError("width and d_layers must be positive")
        if self.depth == 0:
            if self.size < 4:
                raise UserError(f"image size {self.size} is too small (at least 4 px)")
            object.__setattr__(self, "depth", int(math.log2(self.size)) - 1)
        check_size(self.size, self.depth)
        if self.size < 2**self.d_layers:
            raise UserError(f"image size {self.size} is too small for a {self.d_layers}-layer PatchGAN "
                            f"(at least {2**self.d_layers} px)")

    @property
    def in_channels(self) -> int:
        return 1

    @property
    def hint_channels(self) -> int:
        if not self.hints:
            return 0
        return HINT_PLANES if self.local_hints else OLD_PLANES

    @property
    def out_channels(self) -> int:
        return 2 if self.space == "lab" else 3

    def widths(self, levels: int) -> list[int]:
        """Channels of the first `levels` levels of the U-Net's encoder and of the PatchGAN:
        width, 2 width, 4 width, then 8 width on every deeper level. The networks and the
        memory estimates (`canvas.activation_bytes`, `train.training_memory`) all count so."""
        return [self.width * min(2**i, 8) for i in range(levels)]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise UserError(f"model config has unknown keys: {sorted(unknown)}")
        return cls(**{"hints": False, "local_hints": False, **d})  # keys missing: from before hints, reach


def check_size(size: int, depth: int) -> None:
    """The U-Net halves the image `depth` times, so both sides must be multiples of 2**depth."""
    step = 2**depth
    if size < step or size % step:
        raise UserError(f"image size {size} must be a positive multiple of {step} for a {depth}-level U-Net")


# --- building blocks -------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _phase_matrix(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(9, 16) 0/1 matrix from the 3x3 taps (i, j) to the 2x2 taps (y, x) of each output parity
    (a, b) that they add into. Seen from the half-resolution grid, an even output row takes tap
    row 0 from input row i - 1 and rows 1 and 2 from row i; an odd one rows 0 and 1 from row i
    and row 2 from row i + 1 (columns alike)."""
    lands = ((0, 1, 1), (0, 0, 1))  # parity a: 3x3 row i -> 2x2 row lands[a][i]
    # Cached for the process, so never an inference tensor: one made under inference_mode (a
    # first forward pass at evaluation) would break every later backward pass.
    with torch.inference_mode(False):
        m = torch.zeros(3, 3, 2, 2, 2, 2)
        for i, j, a, b in itertools.product(range(3), range(3), range(2), range(2)):
            m[i, j, a, b, lands[a][i], lands[b][j]] = 1
        return m.reshape(9, 16).to(device, dtype)


def phase_kernels(weight: torch.Tensor, bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A 3x3 kernel (cout, cin, 3, 3) as the four 2x2 kernels, one per output parity (a, b) in
    the order 00, 01, 10, 11, stacked to (4 cout, cin, 2, 2); the bias repeated to match.
    One small matrix product, so a training step adds two kernels per layer, not a dozen."""
    cout, cin = weight.shape[:2]
    sums = weight.reshape(cout * cin, 9) @ _phase_matrix(weight.device, weight.dtype)
    kernels = sums.reshape(cout, cin, 2, 2, 2, 2).permute(2, 3, 0, 1, 4, 5).reshape(4 * cout, cin, 2, 2)
    return kernels, bias.repeat(4) if bias is not None else None


def phase_conv(x: torch.Tensor, kernels: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """conv3x3(pad 1)(nearest 2x upsample of x) from `phase_kernels`, without making the
    upsampled image: each output pixel of parity (a, b) sees only a 2x2 window of x, so the four
    parities are one 2x2 convolution with 4 x cout channels at x's resolution. That is 16 instead
    of 36 multiply-adds per (cin, cout, input pixel) and no 4x larger copy of x in memory; the
    result equals the textbook form up to float rounding. Output (N, cout, 2H, 2W), channels_last.
    """
    n, _, h, w = x.shape
    cout = kernels.shape[0] // 4
    o = F.conv2d(F.pad(x, (1, 1, 1, 1)), kernels, bias).permute(0, 2, 3, 1)  # (N, H+1, W+1, 4 cout)
    # Output pixel (2i + a, 2j + b) is o[i + a, j + b] in channel block 2a + b.
    rows = [torch.stack([o[:, a:a + h, b:b + w, (2 * a + b) * cout:(2 * a + b + 1) * cout] for b in (0, 1)], 3)
            for a in (0, 1)]
    return torch.stack(rows, 2).reshape(n, 2 * h, 2 * w, cout).permute(0, 3, 1, 2)


def upsample_then_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The textbook form: nearest 2x upsample, then a 3x3 convolution with padding 1."""
    return F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), weight, bias, padding=1)


# Below this many input pixels per image (H x W) the textbook form is the faster one: at the
# U-Net's 2x2 and 4x4 levels the phase form's extra border row and its 16/9 larger weights
# cost more than its fewer multiply-adds save (measured on CPU, batch 1 and 8: 4x4 inputs
# 6 ms vs 21 ms, 8x8 inputs 15 ms vs 13 ms).
PHASE_MIN_PIXELS = 64


class UpConv(nn.Conv2d):
    """A 3x3 convolution (padding 1) of the 2x nearest-neighbour upsample of its input, computed
    at the input's resolution (`phase_conv`) where that is faster. Its weights are a plain 3x3
    conv's, and gradients reach them through `phase_kernels`, so checkpoints and training are
    those of the textbook form."""

    def __init__(self, cin: int, cout: int, bias: bool) -> None:
        super().__init__(cin, cout, 3, 1, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] * x.shape[-1] < PHASE_MIN_PIXELS:
            return upsample_then_conv(x, self.weight, self.bias)
        return phase_conv(x, *phase_kernels(self.weight, self.bias))


class FrozenUpConv(nn.Module):
    """UpConv for inference: the phase kernels computed once (in channels_last, as oneDNN and
    cuDNN want them), not on every call (x1.11 for a batch of 8 on a CPU, bench/run.py)."""

    def __init__(self, conv: UpConv) -> None:
        super().__init__()
        weight, bias = conv.weight.detach(), None if conv.bias is None else conv.bias.detach()
        kernels, phase_bias = phase_kernels(weight, bias)
        self.register_buffer("weight", weight.contiguous(memory_format=torch.channels_last))
        self.register_buffer("bias", bias)
        self.register_buffer("kernels", kernels.contiguous(memory_format=torch.channels_last))
        self.register_buffer("phase_bias", phase_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] * x.shape[-1] < PHASE_MIN_PIXELS:
            return upsample_then_conv(x, self.weight, self.bias)
        return phase_conv(x, self.kernels, self.phase_bias)


class ConvBlock(nn.Module):
    """[2x upsample] -> conv -> [BatchNorm] -> activation -> [dropout]: one U-Net level."""

    def __init__(self, cin: int, cout: int, *, down: bool, norm: bool, act: nn.Module,
                 dropout: float = 0.0) -> None:
        super().__init__()
        # Encoder: 4x4 stride 2 (halves exactly). Decoder: 3x3 stride 1 after a nearest-neighbour
        # 2x upsample, both in one step (UpConv).
        self.conv = nn.Conv2d(cin, cout, 4, 2, 1, bias=not norm) if down else UpConv(cin, cout, bias=not norm)
        self.norm = nn.BatchNorm2d(cout) if norm else nn.Identity()
        self.act = act
        self.drop = nn.Dropout(dropout) if dropout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.act(self.norm(self.conv(x))))


MAX_GAIN = 4.0  # UNet.chroma_gain's ceiling: beyond it, no calibration but a damaged file


class UNet(nn.Module):
    """pix2pix generator: encoder of stride-2 convs, decoder of upsample+conv, skip connections.

    Channels per level: w, 2w, 4w, 8w, 8w, ... (the original 7 levels at 256 px, w = 64,
    bottleneck 2x2x512). Each decoder block's output is concatenated with the encoder
    features of the same resolution, so fine detail (edges, texture) bypasses the bottleneck.

    With `cfg.hints` the first layer also reads the hint planes (`hints.planes`), their two
    spreads times the hints' reach (`hints.REACH`), and the output is a correction added to
    the hints' lightness-aware inverse-distance a*b* (`hints.GUESS`) times that reach: near a
    hint the starting point is the hint's colour, not something the network must learn to carry
    through every level; far from every hint the input and the starting point are automatic
    mode's, so a hint stays where it was put unless the network carries it further. (Read
    unreached, the spreads tell every pixel the nearest hint's colour, and a network learns to
    repaint the photo with it: README, "The model".) None given is automatic mode, the same as
    all-zero planes.
    (`cfg.local_hints` False, generators from before the reach: the guess is the mean itself,
    everywhere.)

    `chroma_gain` scales the output (clamped to [-1, 1]) where no hint reaches: 1 while
    training; a trained model's calibrated gain comes with its checkpoint
    (`scoring.calibrate_gain`). An L1-trained network predicts the median of the colours a pixel
    could have, paler than any of them; the gain gives back the colourfulness of real photos.
    Where the user's hints reach, their colours are the ones wanted, so the gain fades to 1 with
    the reach (older generators: 1 on every photo with a hint).
    Not a weight: not in the state dict.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        chans = cfg.widths(cfg.depth)
        lrelu = lambda: nn.LeakyReLU(0.2, inplace=True)  # noqa: E731
        self.down = nn.ModuleList(
            ConvBlock(cin, cout, down=True, norm=i > 0, act=lrelu())
            for i, (cin, cout) in enumerate(zip([cfg.in_channels + cfg.hint_channels] + chans[:-1], chans))
        )
        ups = []
        cin = chans[-1]
        for j, i in enumerate(range(cfg.depth - 2, -1, -1)):  # back up to level 0
            drop = cfg.dropout if j < cfg.dropout_blocks else 0.0
            ups.append(ConvBlock(cin, chans[i], down=False, norm=True, act=nn.ReLU(inplace=True), dropout=drop))
            cin = 2 * chans[i]
        self.up = nn.ModuleList(ups)
        self.out = ConvBlock(cin, cfg.out_channels, down=False, norm=False, act=nn.Tanh())
        self.chroma_gain = 1.0

    def forward(self, x: torch.Tensor, hints: torch.Tensor | None = None) -> torch.Tensor:
        gain, cfg = self.chroma_gain, self.cfg
        guess = None
        if cfg.hints:
            if hints is None:
                hints = x.new_zeros(x.shape[0], cfg.hint_channels, *x.shape[2:])
            hints = hints[:, :cfg.hint_channels]  # a generator from before the reach reads the first seven
            if cfg.local_hints:  # both spreads only where the hints reach: elsewhere the input is automatic mode's
                reach = hints[:, REACH]
                hints = torch.cat([hints[:, :IDW.start], hints[:, IDW.start:GUESS.stop] * reach, reach], 1)
                guess = hints[:, GUESS]
                gain = gain if gain == 1 else 1 + (gain - 1) * (1 - reach)
            else:
                guess = hints[:, GUESS]
                if gain != 1:  # per photo: 1 where it has hints (mask plane)
                    gain = torch.where(hints[:, 2:3].amax((2, 3), keepdim=True) > 0, 1.0, gain)
            x = torch.cat([x, hints.to(x.dtype)], 1)
        elif hints is not None:
            raise UserError("this model was trained without colour hints; use a hint-aware checkpoint")
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        skips.pop()  # the bottleneck itself
        for block in self.up:
            x = torch.cat([block(x), skips.pop()], dim=1)
        out = self.out(x)
        if guess is not None:  # a correction of the hints' guess (0 without hints)
            out = (out + guess).clamp(-1, 1)
        return out if not torch.is_tensor(gain) and gain == 1 else (out * gain).clamp(-1, 1)


def receptive_field(d_layers: int) -> int:
    """Pixels each PatchGAN score sees: 4x4 stride-2 layers, then a 3x3 stride-1 layer.

    Going back from one output pixel, a k x k layer with stride s maps r to (r - 1) * s + k:
    3 -> 8 -> 18 -> 38 -> 78, so 78x78 px patches for the default 4 layers.
    """
    r = 3
    for _ in range(d_layers):
        r = (r - 1) * 2 + 4
    return r


class PatchGAN(nn.Module):
    """Markovian discriminator: scores every overlapping patch of (condition, colour) as real/fake.

    With d_layers stride-2 layers a 256 px input gives a (256 / 2**d_layers)^2 map (16x16 for
    the default 4, as in the original project); each score sees `receptive_field(d_layers)`
    pixels (78 px for 4 layers). Outputs raw logits; the loss decides how they are read.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        chans = cfg.widths(cfg.d_layers)
        cin = cfg.in_channels + cfg.out_channels
        layers: list[nn.Module] = []
        for i, cout in enumerate(chans):
            layers.append(ConvBlock(cin, cout, down=True, norm=i > 0, act=nn.LeakyReLU(0.2, inplace=True)))
            cin = cout
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(cin, 1, 3, 1, 1)

    def forward(self, cond: torch.Tensor, color: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(torch.cat([cond, color], dim=1)))


def init_weights(module: nn.Module) -> None:
    """DCGAN/pix2pix init: conv N(0, 0.02), BN weight N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.SyncBatchNorm)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def build(cfg: ModelConfig) -> tuple[UNet, PatchGAN]:
    g, d = UNet(cfg), PatchGAN(cfg)
    init_weights(g)
    init_weights(d)
    return g, d


@torch.no_grad()
def fold_batchnorm(net: nn.Module) -> nn.Module:
    """A copy of an eval-mode network with every conv->BN pair merged into the conv.

    BN at inference is y = gamma * (x - E[x]) / sqrt(Var + eps) + beta: per channel a scale
    gamma / sqrt(Var + eps) applied to the conv's weights, and a shift beta - scale * E[x]
    added to its bias. SyncBatchNorm (multi-GPU training) folds the same way.
    """
    net = copy.deepcopy(net).eval()
    for block in net.modules():
        if isinstance(block, ConvBlock) and isinstance(block.norm, (nn.BatchNorm2d, nn.SyncBatchNorm)):
            conv, bn = block.conv, block.norm
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
            fused = (UpConv(conv.in_channels, conv.out_channels, bias=True) if isinstance(conv, UpConv) else
                     nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding))
            fused = fused.to(conv.weight.device, conv.weight.dtype)
            fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
            fused.bias.copy_(bn.bias + (bias - bn.running_mean) * scale)
            block.conv, block.norm = fused, nn.Identity()
    return net


@torch.no_grad()
def freeze_phases(net: nn.Module) -> nn.Module:
    """`net` (changed in place) with every decoder UpConv replaced by a FrozenUpConv."""
    for block in net.modules():
        if isinstance(block, ConvBlock) and isinstance(block.conv, UpConv):
            block.conv = FrozenUpConv(block.conv)
    return net


def for_inference(net: nn.Module) -> nn.Module:
    """An eval-mode copy that runs fastest: BatchNorm folded into the convolutions
    (`fold_batchnorm`) and the decoder's phase kernels computed once (`freeze_phases`)."""
    return freeze_phases(fold_batchnorm(net))
