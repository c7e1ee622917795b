"""The networks (model.py), the colour encoding (color.py) and the checkpoint format (checkpoint.py)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from skimage.color import lab2rgb, rgb2lab

from colorize_cli.checkpoint import load_checkpoint, load_generator, load_state, save_checkpoint
from colorize_cli.color import decode_output, encode_input, encode_target, lab_to_rgb, rgb_to_lab, to_uint8_exact
from colorize_cli.errors import UserError
from colorize_cli.model import (ModelConfig, _phase_matrix, PatchGAN, UNet, build, FrozenUpConv, UpConv, fold_batchnorm,
                                for_inference, init_weights, phase_conv, phase_kernels, receptive_field,
                                upsample_then_conv)


def _trained_stats(net: torch.nn.Module, *inputs: torch.Tensor) -> None:
    """A few train-mode passes so every BatchNorm has running statistics far from (0, 1)."""
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(*(3 * x + 1 for x in inputs))


# --- shapes and sizes --------------------------------------------------------------------


@pytest.mark.parametrize("space,channels", [("lab", 2), ("rgb", 3)])
@pytest.mark.parametrize("size,depth,patches", [(16, 3, 1), (32, 4, 2), (48, 4, 3), (64, 5, 4)])
def test_shapes(size: int, depth: int, patches: int, space: str, channels: int) -> None:
    cfg = ModelConfig(size=size, width=4, space=space)
    assert cfg.depth == depth  # bottleneck 2x2 (3x3 at 48 px: 48 is a multiple of 2**4)
    g, d = build(cfg)
    gen = torch.Generator().manual_seed(size)
    x = torch.rand(2, 1, size, size, generator=gen)
    y = g(x)
    assert y.shape == (2, channels, size, size)
    assert y.abs().max() <= 1  # tanh
    assert d(x, y).shape == (2, 1, patches, patches)  # size / 2**d_layers
    # The generator runs on any multiple of 2**depth, not only its training size.
    assert g.eval()(torch.rand(1, 1, 2 * size, 3 * size, generator=gen)).shape == (1, channels, 2 * size, 3 * size)


def test_original_layout_at_256() -> None:
    """The original project's numbers: 7 levels at 256 px, a 16x16 PatchGAN map of 78 px patches."""
    cfg = ModelConfig(size=256)
    assert cfg.depth == 7 and cfg.width == 64
    assert receptive_field(cfg.d_layers) == 78
    d = PatchGAN(ModelConfig(size=256, width=2))
    assert d(torch.zeros(1, 1, 256, 256), torch.zeros(1, 2, 256, 256)).shape == (1, 1, 16, 16)


@pytest.mark.parametrize("size,message", [
    (40, "image size 40 must be a positive multiple of 16 for a 4-level U-Net"),
    (100, "image size 100 must be a positive multiple of 32 for a 5-level U-Net"),
    (8, "image size 8 is too small for a 4-layer PatchGAN (at least 16 px)"),
    (2, "image size 2 is too small (at least 4 px)"),
])
def test_invalid_size_is_a_clear_error(size: int, message: str) -> None:
    with pytest.raises(UserError) as e:
        ModelConfig(size=size)
    assert str(e.value) == message


def test_bad_space_and_unknown_config_keys() -> None:
    with pytest.raises(UserError, match="colour space must be 'lab' or 'rgb', not 'hsv'"):
        ModelConfig(space="hsv")  # type: ignore[arg-type]
    with pytest.raises(UserError, match=r"unknown keys: \['colour'\]"):
        ModelConfig.from_dict({"size": 32, "colour": "lab"})


# --- BatchNorm folding and init ----------------------------------------------------------


# Folding reorders a few float64 roundings per layer; outputs are O(1) through ~10 layers, so
# equality holds to well under 1e-12 (float64 eps is 2.2e-16).
FOLD_TOL = 1e-12


def test_folded_network_equals_eval_mode() -> None:
    torch.manual_seed(0)
    g, d = (net.double() for net in build(ModelConfig(size=32, width=8)))
    x = torch.rand(4, 1, 32, 32, dtype=torch.float64)
    y = torch.rand(4, 2, 32, 32, dtype=torch.float64) * 2 - 1
    _trained_stats(g, x)
    _trained_stats(d, x, y)
    g.eval(), d.eval()
    gf, df = fold_batchnorm(g), fold_batchnorm(d)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in gf.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in g.modules())  # the original is untouched
    with torch.no_grad():
        assert (gf(x) - g(x)).abs().max() < FOLD_TOL
        assert (df(x, y) - d(x, y)).abs().max() < FOLD_TOL


@pytest.mark.parametrize("shape", [(2, 5, 3, 4), (1, 3, 1, 1), (3, 2, 6, 2)])
def test_phase_conv_is_upsample_then_conv3x3(shape: tuple[int, ...]) -> None:
    """The decoder's fast form equals nearest 2x upsample + 3x3 conv (pad 1), values and
    gradients, in float64 (to rounding), on odd, tiny and non-square inputs."""
    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, shape[1], 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    ours = phase_conv(x, *phase_kernels(w, b))
    textbook = torch.nn.functional.conv2d(torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest"), w, b, padding=1)
    assert ours.shape == (shape[0], 4, 2 * shape[2], 2 * shape[3])
    assert (ours - textbook).abs().max() < 1e-12
    g = torch.randn_like(ours)
    grads = torch.autograd.grad(ours, (x, w, b), g)
    expected = torch.autograd.grad(textbook, (x, w, b), g)
    for got, want in zip(grads, expected):
        assert (got - want).abs().max() < 1e-10
    assert phase_conv(x, *phase_kernels(w, None)).shape == ours.shape  # a conv without bias


@pytest.mark.parametrize("side", [2, 4, 8, 9])  # both sides of PHASE_MIN_PIXELS
def test_upconv_and_its_frozen_form_equal_the_textbook_form(side: int) -> None:
    torch.manual_seed(side)
    conv = UpConv(6, 5, bias=True).double()
    x = torch.randn(2, 6, side, side + 1, dtype=torch.float64)
    textbook = upsample_then_conv(x, conv.weight, conv.bias)
    with torch.no_grad():
        assert (conv(x) - textbook).abs().max() < 1e-12
        assert (FrozenUpConv(conv)(x) - textbook).abs().max() < 1e-12


def test_upconv_keeps_a_plain_3x3_checkpoint_layout() -> None:
    """Checkpoints hold the decoder's 3x3 weights under the names and shapes a textbook
    Upsample + Conv2d network has, so old and new files load either way."""
    g = UNet(ModelConfig(size=32, width=8))
    decoder = [k for k in g.state_dict() if k.startswith("up.") and k.endswith("conv.weight")]
    assert decoder and all(g.state_dict()[k].shape[-2:] == (3, 3) for k in decoder)
    assert isinstance(g.up[0].conv, UpConv)


def test_inference_copy_equals_eval_mode() -> None:
    """for_inference (BN folded, phase kernels precomputed) gives the eval-mode outputs."""
    torch.manual_seed(0)
    g = UNet(ModelConfig(size=32, width=8)).double()
    init_weights(g)
    x = torch.rand(3, 1, 32, 48, dtype=torch.float64)
    _trained_stats(g, x)
    fast = for_inference(g.eval())
    assert any(isinstance(m, FrozenUpConv) for m in fast.modules())
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, UpConv)) for m in fast.modules())
    assert isinstance(g.up[0].conv, UpConv)  # the original is untouched
    with torch.no_grad():
        assert (fast(x) - g(x)).abs().max() < FOLD_TOL
        assert (fast(x.contiguous(memory_format=torch.channels_last)) - g(x)).abs().max() < FOLD_TOL


def test_sync_batchnorm_folds_too() -> None:
    """A generator trained with --sync-bn has SyncBatchNorm layers; folding treats them alike."""
    torch.manual_seed(1)
    g = UNet(ModelConfig(size=16, width=4)).double()
    init_weights(g)
    _trained_stats(g, torch.rand(2, 1, 16, 16, dtype=torch.float64))
    sync = torch.nn.SyncBatchNorm.convert_sync_batchnorm(g).eval()
    folded = fold_batchnorm(sync)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    x = torch.rand(1, 1, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        assert (folded(x) - g.eval()(x)).abs().max() < FOLD_TOL


def test_init_statistics() -> None:
    torch.manual_seed(0)
    g, d = build(ModelConfig(size=32, width=32))
    convs = [m for net in (g, d) for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    bns = [m for net in (g, d) for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    w = torch.cat([m.weight.flatten() for m in convs])
    gamma = torch.cat([m.weight for m in bns])
    assert w.numel() > 100_000 and gamma.numel() > 500
    # Within 5 standard errors of N(mu, 0.02): sigma/sqrt(n) for the mean, sigma/sqrt(2n) for the std.
    for x, mu in ((w, 0.0), (gamma, 1.0)):
        n = x.numel()
        assert abs(x.mean() - mu) < 5 * 0.02 / n**0.5 and abs(x.std() - 0.02) < 5 * 0.02 / (2 * n) ** 0.5
    assert all(torch.all(m.bias == 0) for m in convs + bns if m.bias is not None)
    # Convolutions followed by BatchNorm have no bias (beta replaces it); the others do.
    assert g.down[0].conv.bias is not None and g.down[1].conv.bias is None


# --- colour encoding ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lab_matches_scikit_image_and_round_trips(dtype: torch.dtype, seed: int) -> None:
    rgb = torch.rand(2, 3, 16, 16, dtype=dtype, generator=torch.Generator().manual_seed(seed))
    rgb[0, :, 0, :] = torch.linspace(0, 1, 16, dtype=dtype)  # grays, down to black
    lab = rgb_to_lab(rgb)
    eps = torch.finfo(dtype).eps
    # scikit-image rounds the white point to 5 digits: a formula difference, not rounding.
    ref = rgb2lab(rgb.double().permute(0, 2, 3, 1).numpy(), channel_axis=-1)
    assert np.abs(lab.double().permute(0, 2, 3, 1).numpy() - ref).max() < 0.01
    # The way back amplifies each of the ~8 roundings on the way by at most the cube (3), the
    # matrix's condition number (4.3) and the sRGB curve's exponent (2.4): about 250 ulps.
    assert (lab_to_rgb(lab) - rgb).abs().max() <= 8 * 3 * 4.3 * 2.4 * eps
    back = lab2rgb(lab.double().permute(0, 2, 3, 1).numpy(), channel_axis=-1)
    assert np.abs(back - rgb.double().permute(0, 2, 3, 1).numpy()).max() < 1e-3
    # A neutral gray has no chroma: x/xn = y/yn = z/zn up to a few roundings, times 500 for a*.
    assert lab[0, 1:, 0].abs().max() <= 500 * 8 * eps


def test_encodings_stay_in_unit_range() -> None:
    corners = torch.tensor([[[[r]], [[g]], [[b]]] for r in (0.0, 1.0) for g in (0.0, 1.0) for b in (0.0, 1.0)])
    rgb = torch.cat([corners, torch.rand(500, 3, 1, 1, generator=torch.Generator().manual_seed(0))])
    for space in ("lab", "rgb"):
        assert encode_target(rgb, space).abs().max() <= 1
        x = encode_input(torch.linspace(0, 1, 256).reshape(1, 1, 16, 16), space)
        assert x.min() == pytest.approx(-1, abs=1e-6) and x.max() == pytest.approx(1, abs=1e-6)


@pytest.mark.parametrize("space", ["lab", "rgb"])
def test_luma_lock_is_exact(space: str) -> None:
    """Whatever the network says, the 8-bit output's Pillow "L" is the gray input, pixel for pixel."""
    gen = torch.Generator().manual_seed(3)
    gray_u8 = torch.randint(0, 256, (2, 1, 24, 24), generator=gen, dtype=torch.uint8)
    gray_u8[0, 0, 0, :3] = torch.tensor([0, 255, 1])
    out = torch.rand(2, 2 if space == "lab" else 3, 12, 12, generator=gen) * 2 - 1  # half size: upsampled
    rgb = decode_output(gray_u8.float() / 255, out, space)
    assert rgb.shape == (2, 3, 24, 24) and rgb.min() >= 0 and rgb.max() <= 1
    for i in range(2):
        img = to_uint8_exact(rgb[i].permute(1, 2, 0).numpy(), gray_u8[i, 0].numpy())
        assert np.array_equal(np.asarray(Image.fromarray(img).convert("L")), gray_u8[i, 0].numpy())


def test_real_colors_survive_decoding() -> None:
    """A perfect network (one that outputs the encoded truth) gives the photo back.

    rgb: to 8-bit rounding. lab: L* comes from the gray (BT.601 luma of gamma-encoded values),
    not from the photo's own L* (from linear light), so colours shift a little; for muted,
    photo-like colours by under 1% on average (0.2% measured on the shared beach photos).
    """
    gen = torch.Generator().manual_seed(0)
    rgb = (0.2 + 0.6 * torch.rand(1, 1, 32, 32, generator=gen) + 0.2 * (torch.rand(1, 3, 32, 32, generator=gen) - 0.5))
    u8 = (rgb * 255).round().to(torch.uint8)
    gray = torch.from_numpy(np.array(Image.fromarray(u8[0].permute(1, 2, 0).numpy()).convert("L")))[None, None]
    truth = u8.float() / 255
    rgb_back = decode_output(gray.float() / 255, encode_target(truth, "rgb"), "rgb")
    assert (rgb_back - truth).abs().max() < 2 / 255
    lab_back = decode_output(gray.float() / 255, encode_target(truth, "lab"), "lab")
    assert (lab_back - truth).abs().mean() < 0.01


# --- checkpoints -------------------------------------------------------------------------


def test_checkpoint_round_trip(tmp_path) -> None:
    cfg = ModelConfig(size=32, width=8, space="rgb")
    torch.manual_seed(0)
    g, d = build(cfg)
    _trained_stats(g, torch.rand(2, 1, 32, 32))
    tensors = {**{f"generator.{k}": v for k, v in g.state_dict().items()},
               **{f"discriminator.{k}": v for k, v in d.state_dict().items()},
               "rng.cpu.0": torch.get_rng_state()}
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, tensors, cfg, {"epoch": 3, "note": "x"})
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # no temp file left
    back, cfg2, extra = load_checkpoint(path)
    assert cfg2 == cfg and extra == {"epoch": 3, "note": "x"}
    assert back.keys() == tensors.keys() and all(torch.equal(back[k], tensors[k]) for k in tensors)
    g2, cfg3 = load_generator(path)
    assert cfg3 == cfg and not g2.training
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(g2(x), g.eval()(x))
    d2 = PatchGAN(cfg)
    load_state(d2, back, "discriminator", path)
    assert all(torch.equal(a, b) for a, b in zip(d2.state_dict().values(), d.state_dict().values()))


def test_checkpoint_for_another_network_is_a_clear_error(tmp_path) -> None:
    g, _ = build(ModelConfig(size=32, width=8))
    path = tmp_path / "w.safetensors"
    save_checkpoint(path, {f"generator.{k}": v for k, v in g.state_dict().items()}, ModelConfig(size=32, width=8))
    with pytest.raises(UserError, match=r"w.safetensors: checkpoint does not match the network its config "
                                        r"describes \(shape of down.0.conv.bias is \(8,\), expected \(16,\)\)"):
        load_state(UNet(ModelConfig(size=32, width=16)), load_checkpoint(path)[0], "generator", path)
    save_file({"x": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(UserError, match="plain.safetensors: safetensors file without a colorize model config"):
        load_checkpoint(tmp_path / "plain.safetensors")


class _Payload:
    """Unpickling this would create a file: proof of code execution."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_pickle_renamed_safetensors_is_refused_not_run(tmp_path, protocol: int) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "model.safetensors"
    path.write_bytes(pickle.dumps(_Payload(str(marker)), protocol=protocol))
    with pytest.raises(UserError) as e:
        load_checkpoint(path)
    assert str(e.value).startswith(f"{path}: ")
    assert "pickle" in str(e.value) or "not a valid safetensors checkpoint" in str(e.value)
    assert not marker.exists()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_checkpoint_with_non_finite_weights_is_refused(tmp_path, bad: float) -> None:
    """A diverged run's weights would colorize every photo gray: refused on loading, named."""
    cfg = ModelConfig(size=32, width=8)
    g, _ = build(cfg)
    tensors = {f"generator.{k}": v.clone() for k, v in g.state_dict().items()}
    tensors["generator.down.1.conv.weight"][0, 0, 0, 0] = bad
    path = tmp_path / "diverged.safetensors"
    save_checkpoint(path, tensors, cfg)
    with pytest.raises(UserError) as e:
        load_checkpoint(path)
    assert str(e.value) == f"{path}: checkpoint holds NaN or infinite weights (generator.down.1.conv.weight)"


def test_unknown_config_key_in_a_checkpoint_names_the_file(tmp_path) -> None:
    path = tmp_path / "odd.safetensors"
    save_file({"generator.x": torch.zeros(1)}, str(path), metadata={"config": '{"size": 32, "colour": "lab"}'})
    with pytest.raises(UserError) as e:
        load_checkpoint(path)
    assert str(e.value) == f"{path}: model config has unknown keys: ['colour']"


def test_training_works_after_a_first_forward_pass_under_inference_mode() -> None:
    """The cached phase matrix must not become an inference tensor when the first pass of a
    process happens under torch.inference_mode (a notebook's first look at an untrained net)."""
    _phase_matrix.cache_clear()
    torch.manual_seed(0)
    g, _ = build(ModelConfig(size=64, width=8))
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    g.eval()
    with torch.inference_mode():
        g(x)
    g.train()
    g(x).abs().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in g.parameters())


def test_torch_save_file_is_refused(tmp_path) -> None:
    path = tmp_path / "model.safetensors"
    torch.save({"generator.x": torch.zeros(2)}, path)  # a zip archive of pickles
    with pytest.raises(UserError, match="is a pickle/torch.save file; only safetensors checkpoints are loaded"):
        load_checkpoint(path)
