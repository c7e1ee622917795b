"""Where bf16 runs: CPU flags read from /proc/cpuinfo (a fake file here), COLORIZE_NO_BF16, CUDA
always, MPS never; and the Colorizer under bf16 on a CPU with native bf16: the same photo within
bf16's precision, and the memory check counting 2 bytes a value."""

from __future__ import annotations

import math
import platform
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from colorize_cli import device, files
from colorize_cli.canvas import activation_bytes
from colorize_cli.colorizer import Colorizer
from colorize_cli.errors import UserError
from colorize_cli.model import ModelConfig, build, for_inference

CFG = ModelConfig(size=32, width=8)  # depth 4: 4 encoder, 3 decoder and 1 output conv
CPU, CUDA, MPS = torch.device("cpu"), torch.device("cuda"), torch.device("mps")
U = 2.0**-8  # bf16 keeps 8 significant bits: round to nearest errs by at most 2^-8, relative


def cpuinfo_text(flags: str, name: str = "Test CPU 9000") -> str:
    """Two processors as Linux lists them; "vmx flags" must not be read as the flags."""
    block = (f"processor\t: {{n}}\nvendor_id\t: GenuineIntel\nmodel name\t: {name}\n"
             f"flags\t\t: fpu sse sse2 avx2 avx512f {flags}\nvmx flags\t: ept vpid\n\n")
    return block.format(n=0) + block.format(n=1)


@pytest.fixture
def fake_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str | None], None]]:
    """Point device.CPUINFO at a file listing these extra flags (None: a missing file), with
    COLORIZE_NO_BF16 unset; the cached reading is dropped before and after."""
    monkeypatch.delenv(device.NO_BF16, raising=False)

    def use(flags: str | None) -> None:
        path = tmp_path / "cpuinfo"
        if flags is not None:
            path.write_text(cpuinfo_text(flags))
        monkeypatch.setattr(device, "CPUINFO", path)
        device._cpuinfo.cache_clear()

    yield use
    device._cpuinfo.cache_clear()


@pytest.mark.parametrize("flags", ["amx_bf16 amx_tile", "avx512_bf16", "amx_tile avx512_bf16 amx_bf16"])
def test_a_cpu_listing_a_bf16_flag_computes_in_bf16(fake_cpu: Callable[[str | None], None], flags: str) -> None:
    fake_cpu(flags)
    assert device.native_bf16(CPU)
    assert device.cpu_name() == "Test CPU 9000, bf16 (native)"
    with device.autocast_bf16(CPU):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


@pytest.mark.parametrize("flags", ["", "avx512bw avx512_vnni amx_tile amx_int8 bf16"])
def test_a_cpu_without_a_bf16_flag_stays_in_fp32(fake_cpu: Callable[[str | None], None], flags: str) -> None:
    """Near misses too: AMX without its bf16 unit, and ARM's name for the feature."""
    fake_cpu(flags)
    assert not device.native_bf16(CPU)
    assert device.cpu_name() == "Test CPU 9000, fp32"
    assert isinstance(device.autocast_bf16(CPU), nullcontext)
    with device.autocast_bf16(CPU):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_an_unreadable_cpuinfo_means_fp32_and_the_platforms_name(fake_cpu: Callable[[str | None], None],
                                                                 monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    fake_cpu(None)
    if kind == "directory":
        device.CPUINFO.mkdir()
    monkeypatch.setattr(platform, "processor", lambda: "")
    monkeypatch.setattr(platform, "machine", lambda: "riscv64")
    assert not device.native_bf16(CPU)
    assert device.cpu_name() == "riscv64, fp32"


@pytest.mark.parametrize("value, bf16", [("1", False), ("yes", False), ("0", True), ("", True)])
def test_colorize_no_bf16_turns_the_cpus_bf16_off(fake_cpu: Callable[[str | None], None],
                                                  monkeypatch: pytest.MonkeyPatch, value: str, bf16: bool) -> None:
    fake_cpu("amx_bf16")
    monkeypatch.setenv(device.NO_BF16, value)
    assert device.native_bf16(CPU) is bf16
    assert device.cpu_name().endswith("bf16 (native)" if bf16 else "fp32")


@pytest.mark.parametrize("flags", [None, "", "amx_bf16"])
def test_cuda_always_and_mps_never_compute_in_bf16(fake_cpu: Callable[[str | None], None], flags: str | None) -> None:
    """Whatever the CPU: every CUDA GPU has bf16 units; MPS is left in fp32."""
    fake_cpu(flags)
    assert device.native_bf16(CUDA)
    assert not device.native_bf16(MPS)
    assert isinstance(device.autocast_bf16(MPS), nullcontext)


def test_colorize_no_bf16_keeps_a_gpu_in_fp32_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(device.NO_BF16, "1")
    assert not device.native_bf16(CUDA)


def test_the_memory_check_counts_two_bytes_a_value_under_bf16(fake_cpu: Callable[[str | None], None],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """With free memory between the bf16 and the fp32 estimates, a bf16 CPU takes the job and
    the same CPU under COLORIZE_NO_BF16=1 refuses it (no network pass runs here)."""
    size, batch = 512, 8
    fp32 = activation_bytes(CFG, size, batch)
    assert activation_bytes(CFG, size, batch, element_bytes=2) == pytest.approx(fp32 / 2, abs=1)
    monkeypatch.setattr(files, "available_memory", lambda: 0.75 * fp32)
    net = for_inference(build(CFG)[0].eval())
    fake_cpu("amx_bf16")
    Colorizer(net, CFG, CPU, size, batch)
    monkeypatch.setenv(device.NO_BF16, "1")
    with pytest.raises(UserError, match="working size 512 px at batch size 8 needs about"):
        Colorizer(net, CFG, CPU, size, batch)


def he_scaled_net(seed: int) -> torch.nn.Module:
    """A seeded width-8 generator whose convs are He-scaled (std sqrt(2 / fan-in), biases
    N(0, 0.1)), so every layer keeps its input's magnitude and the output spans much of tanh's
    range. (The training init, std 0.02, shrinks each layer ~4x: its output is ~0.01 and
    would hide any rounding.) The first conv's fan-in counts the gray input alone: its hint
    planes are all zero in automatic mode, and counting them would shrink the output ~3x."""
    torch.manual_seed(seed)
    g, _ = build(CFG)
    first = g.down[0].conv
    with torch.no_grad():
        for m in g.modules():
            if isinstance(m, torch.nn.Conv2d):
                fan_in = m.weight[0, :CFG.in_channels].numel() if m is first else m.weight[0].numel()
                m.weight.normal_(0, math.sqrt(2 / fan_in))
                if m.bias is not None:
                    m.bias.normal_(0, 0.1)
    return for_inference(g.eval())


def gradient_photo(width: int, height: int, seed: int) -> Image.Image:
    """Smooth colour gradients plus seeded noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x / (width - 1), y / (height - 1), (x + y) / (width + height - 2)], -1)
    return Image.fromarray(np.clip(base * 200 + rng.integers(0, 56, (height, width, 3)), 0, 255).astype(np.uint8))


@pytest.mark.skipif(not device.cpu_bf16(), reason="this CPU has no native bf16 (or COLORIZE_NO_BF16 is set)")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bf16_on_this_cpu_colorizes_within_bf16s_precision(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    """The same network and photo with bf16 and with COLORIZE_NO_BF16=1.

    Bounds, with u = 2^-8 and L = 8 convs: each conv rounds its weights and its output to bf16
    (the encoded input once more), 2L + 1 = 17 roundings of relative error at most u, and a
    He-scaled layer carries a relative error on at gain about 1. The output is tanh(z), and
    |z| * tanh'(z) <= 0.45 for every z, so the chroma (in [-1, 1]) moves by:
    - at most 17 * 0.45 * u = 7.7 u anywhere (every rounding's worst case, adding up);
    - on average about sqrt(2/pi) * sqrt(17/3) * 0.45 u = 0.86 u (roundings err uniformly and
      independently, std u/sqrt(3) each, so they add in quadrature): bound u.
    Decoded, a* and b* are 110 x the chroma, and sRGB moves on average 1.5 levels per unit of
    a* or b* (its largest channel, over gray levels 0-255 and |a*|, |b*| <= 44; up to ~20
    near black, where a rare pixel can move 10 or more): 110 * 1.5 * 0.86 u = 0.55 level on
    average, bound 1 level. Measured over seeds 0-9: mean 0.26-0.43 u, max 1.4-2.8 u, 0.07-0.22 level.
    """
    colorizer = Colorizer(he_scaled_net(seed), CFG, CPU, size=32)
    item = colorizer.prepare(gradient_photo(48, 32, seed))
    monkeypatch.delenv(device.NO_BF16, raising=False)
    out_bf16 = colorizer.predict([item])
    rgb_bf16 = colorizer.finish(item, out_bf16[0])
    monkeypatch.setenv(device.NO_BF16, "1")
    out_fp32 = colorizer.predict([item])
    rgb_fp32 = colorizer.finish(item, out_fp32[0])

    assert out_fp32.abs().amax() > 0.5  # the network's output spans tanh's range, not ~0
    diff = (out_bf16 - out_fp32).abs()
    assert diff.amax() > 0  # bf16 did run
    assert diff.mean() < U
    assert diff.amax() < 17 * 0.45 * U
    pixels = np.abs(np.asarray(rgb_bf16, np.int16) - np.asarray(rgb_fp32, np.int16))
    assert pixels.mean() < 1.0
    gray = np.asarray(item.gray)
    assert np.array_equal(np.asarray(rgb_bf16.convert("L")), gray)  # luminance stays exact under bf16
    assert np.array_equal(np.asarray(rgb_fp32.convert("L")), gray)
