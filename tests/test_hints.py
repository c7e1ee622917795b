"""Colour hints: parsing --hint and --hints files, the hint planes the generator reads, the
model's automatic mode and chroma gain, old checkpoints, a trained model following a hint,
hints placed on the working copy (EXIF rotation included), and `colorize infer --hint/--hints`."""

from __future__ import annotations

import json
from dataclasses import replace
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clirun import run_cli
from colorize_cli.checkpoint import load_generator, save_checkpoint
from colorize_cli.color import AB_SCALE, rgb_to_lab
from colorize_cli.colorizer import Colorizer, Prepared
from colorize_cli.device import autocast_bf16
from colorize_cli.errors import UserError
from colorize_cli.hints import (GUESS, HINT_PLANES, HINT_SIDE, IDW, LIGHTNESS_SIGMA, OLD_PLANES, REACH, REACH_SIDE, Hint,
                                given_planes, hint_ab, hints_json, match_photos, parse_color, parse_hint, planes,
                                read_hints_file, simulate)
from colorize_cli.imageio import open_image
from colorize_cli.model import ModelConfig, UNet, init_weights
from colorize_cli.train import Nets, TrainConfig

# Well inside sRGB's gamut at their own lightness: a small chroma error then stays small once
# decoded (a saturated blue such as (50, 90, 200) is clipped far from it).
RED, GREEN, BLUE = (217, 52, 43), (40, 160, 60), (90, 110, 180)
COLOUR_HELP = "(give #rrggbb, rgb(R,G,B) with 0..255 or a CSS name such as skyblue)"
NEITHER = "is neither a whole number of pixels nor a share in 0..1 (such as 0.5)"
OLD_MODEL = "was trained without colour hints; give a model trained with them (`colorize train` without --no-hints) or no hints"
# float32 division of a weighted sum by its weights: a few units in the last place
F32 = dict(rtol=4 * 2.0**-24, atol=0.0)
# the same with each weight also a float32 exp and a product: a few more
F32_EXP = dict(rtol=16 * 2.0**-24, atol=0.0)


def flat(rgb: tuple[int, int, int], width: int = 48, height: int = 32) -> Image.Image:
    return Image.new("RGB", (width, height), rgb)


def ab_of(img: Image.Image) -> np.ndarray:
    """(H, W, 2) CIELAB a*, b* of an RGB image."""
    rgb = torch.from_numpy(np.asarray(img, dtype=np.float64) / 255).permute(2, 0, 1)[None]
    return rgb_to_lab(rgb)[0, 1:].permute(1, 2, 0).numpy()


def gray_input(lightness: list[list[float]]) -> torch.Tensor:
    """The network's gray input (1, 1, H, W) of a photo of these L* values: L* / 50 - 1. The test
    values are multiples of 12.5, which float32 holds exactly both ways."""
    return torch.tensor(lightness, dtype=torch.float32)[None, None] / 50 - 1


def for_photo(table: dict[str, list[Hint]], path: str | Path) -> list[Hint]:
    """The hints a --hints table gives one photo, named by its path or its file name: how
    `colorize infer` reads the table for a one-photo IN (`infer.give_hints`)."""
    path = Path(path)
    return match_photos(table, [(path, Path(path.name))])[0][0]


def ab_distance(img: Image.Image, rgb: tuple[int, int, int], x: int, y: int, r: int = 2) -> float:
    """Mean a*b* distance of the (2r+1)^2 pixels around (x, y) to the colour `rgb`."""
    want = ab_of(Image.new("RGB", (1, 1), rgb))[0, 0]
    return float(np.linalg.norm(ab_of(img)[y - r:y + r + 1, x - r:x + r + 1] - want, axis=-1).mean())


# --- parsing --------------------------------------------------------------------------


@pytest.mark.parametrize("text, hint", [
    ("120,80,#d9342b", Hint(120.0, 80.0, RED)),
    (" 0.5 , 0.1 ,skyblue", Hint(0.5, 0.1, (135, 206, 235), fraction=True)),
    ("1.0,0.0,rgb(1,2,3)", Hint(1.0, 0.0, (1, 2, 3), fraction=True)),
    ("0,0,#abc", Hint(0.0, 0.0, (170, 187, 204))),
    ("7,3,hsl(0,100%,50%)", Hint(7.0, 3.0, (255, 0, 0))),
])
def test_parse_hint_reads_pixels_and_shares(text: str, hint: Hint) -> None:
    assert parse_hint(text) == hint


@pytest.mark.parametrize("text, message", [
    ("120,0.5,red", "hint '120,0.5,red': give both coordinates in pixels (whole numbers) or both as shares (such as 0.5)"),
    ("1.5,0.5,red", f"hint '1.5,0.5,red': x 1.5 {NEITHER}"),
    ("-3,4,red", f"hint '-3,4,red': x -3 {NEITHER}"),
    ("3,2.5e-1,red", f"hint '3,2.5e-1,red': give both coordinates in pixels (whole numbers) or both as shares (such as 0.5)"),
    ("3,1e-1,red", f"hint '3,1e-1,red': y 1e-1 {NEITHER}"),
    ("a,4,red", "hint 'a,4,red': x 'a' is not a number"),
    ("nan,4,red", "hint 'nan,4,red': x 'nan' is not a number"),
    ("120,80", "hint '120,80': expected X,Y,COLOUR such as 120,80,#d9342b or 0.5,0.1,skyblue"),
    ("120,80,notacolour", f"hint '120,80,notacolour': 'notacolour' is not a colour {COLOUR_HELP}"),
    ("1,2,rgb(300,0,0)", f"hint '1,2,rgb(300,0,0)': 'rgb(300,0,0)' is not a colour {COLOUR_HELP}"),
    ("1,2,re\nd", f"hint '1,2,re\\nd': 're\\nd' is not a colour {COLOUR_HELP}"),
])
def test_bad_hints_are_one_line_errors(text: str, message: str) -> None:
    with pytest.raises(UserError) as e:
        parse_hint(text)
    assert str(e.value) == message


def test_the_command_line_parses_hints_without_loading_torch() -> None:
    """`colorize` imports hints (infer, app) at start; torch takes seconds to load."""
    code = ("import sys; from colorize_cli import cli; from colorize_cli.hints import parse_hint; "
            "parse_hint('1,2,red'); print('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


@pytest.mark.parametrize("text, rgb", [("#abc", (170, 187, 204)), ("SkyBlue", (135, 206, 235)),
                                       ("#d9342b80", RED), ("rgb(0, 255, 7)", (0, 255, 7))])
def test_parse_color_takes_css_forms_and_ignores_alpha(text: str, rgb: tuple[int, int, int]) -> None:
    assert parse_color(text) == rgb


def test_hint_text_is_read_back_as_the_same_hint() -> None:
    for hint in (Hint(120, 80, RED), Hint(0.5, 1.0, BLUE, True), Hint(1e-5, 0.0, GREEN, True)):
        assert parse_hint(hint.text()) == hint
    assert Hint(0.5, 1.0, BLUE, True).text() == "0.5,1.0,#5a6eb4"


def test_hints_file_reads_strings_and_objects(tmp_path: Path) -> None:
    path = tmp_path / "hints.json"
    path.write_text(json.dumps({"a.jpg": ["120,80,#d9342b", {"fx": 0.5, "fy": 1, "color": "skyblue"}],
                                "sub/b.png": [{"x": 3, "y": 4.5, "color": "#5a6eb4"}], "c.jpg": []}))
    assert read_hints_file(path) == {"a.jpg": [Hint(120, 80, RED), Hint(0.5, 1.0, (135, 206, 235), True)],
                                     "sub/b.png": [Hint(3, 4.5, BLUE)], "c.jpg": []}


def test_hints_json_round_trips(tmp_path: Path) -> None:
    table = {"a.jpg": [Hint(120, 80, RED), Hint(12.5, 0, GREEN), Hint(1e-5, 1.0, BLUE, True)], "b c.png": []}
    path = tmp_path / "hints.json"
    path.write_text(hints_json(table))
    assert read_hints_file(path) == table
    assert json.loads(path.read_text())["a.jpg"][0] == {"x": 120, "y": 80, "color": "#d9342b"}  # integers stay integers


@pytest.mark.parametrize("content, message", [
    ("", "not a readable JSON hints file (Expecting value: line 1 column 1 (char 0))"),
    ("{", "not a readable JSON hints file (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))"),
    ("[1, 2]", 'expected {"photo.jpg": [HINT, ...], ...}, each HINT \'X,Y,COLOUR\' or {"x": X, "y": Y, "color": COLOUR}'),
    ('{"a.jpg": "1,2,red"}', 'expected {"photo.jpg": [HINT, ...], ...}, each HINT \'X,Y,COLOUR\' or {"x": X, "y": Y, "color": COLOUR}'),
    ('{"a.jpg": [3]}', 'a.jpg: each hint is \'X,Y,COLOUR\' or {"x": X, "y": Y, "color": COLOUR}'),
    ('{"a.jpg": ["1.5,2,red"]}', f"a.jpg: hint '1.5,2,red': x 1.5 {NEITHER}"),
    ('{"a.jpg": [{"x": 1, "y": 2, "color": "red", "z": 3}]}',
     'a.jpg: a hint has numbers x and y (pixels) or fx and fy (shares), and a color; got {"x": 1, "y": 2, "color": "red", "z": 3}'),
    ('{"a.jpg": [{"x": true, "y": 2, "color": "red"}]}',
     'a.jpg: a hint has numbers x and y (pixels) or fx and fy (shares), and a color; got {"x": true, "y": 2, "color": "red"}'),
    ('{"a.jpg": [{"fx": 1.5, "fy": 0, "color": "red"}]}', 'a.jpg: hint {"fx": 1.5, "fy": 0, "color": "red"}: shares must lie in 0..1'),
    ('{"a.jpg": [{"x": -1, "y": 0, "color": "red"}]}', 'a.jpg: hint {"x": -1, "y": 0, "color": "red"}: pixels must not be negative'),
    ('{"a.jpg": [{"x": 1, "y": 0, "color": "nope"}]}', f"a.jpg: 'nope' is not a colour {COLOUR_HELP}"),
    # numbers past float's range: json reads 1e400 as infinity, takes NaN and Infinity, and an
    # integer of 400 digits is an int that float() cannot hold (OverflowError)
    ('{"a.jpg": [{"x": 1e400, "y": 2, "color": "red"}]}', 'a.jpg: hint {"x": Infinity, "y": 2, "color": "red"}: x is not a finite number'),
    ('{"a.jpg": [{"fx": 0.5, "fy": -1e400, "color": "red"}]}',
     'a.jpg: hint {"fx": 0.5, "fy": -Infinity, "color": "red"}: fy is not a finite number'),
    ('{"a.jpg": [{"x": NaN, "y": 2, "color": "red"}]}', 'a.jpg: hint {"x": NaN, "y": 2, "color": "red"}: x is not a finite number'),
    ('{"a.jpg": [{"x": 1, "y": 1%s, "color": "red"}]}' % ("0" * 400),
     'a.jpg: hint {"x": 1, "y": 1%s, "color": "red"}: y is too large' % ("0" * 400)),
    # an integer past Python's limit on digits (ValueError inside json), and nesting past the stack
    ('{"a.jpg": [{"x": 1, "y": 1%s, "color": "red"}]}' % ("0" * 5000),
     f"not a readable JSON hints file (a number of more than {sys.get_int_max_str_digits()} digits)"),
    ('{"a.jpg": ' + "[" * 100_000, "not a readable JSON hints file (nested too deeply)"),
])
def test_bad_hints_files_are_one_line_errors_naming_the_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "hints.json"
    path.write_text(content)
    with pytest.raises(UserError) as e:
        read_hints_file(path)
    assert str(e.value) == f"{path}: {message}"
    with pytest.raises(UserError, match=re.escape(f"{tmp_path / 'none.json'}: no such hints file")):
        read_hints_file(tmp_path / "none.json")


def test_a_huge_integer_without_pythons_digit_limit_is_too_large(tmp_path: Path) -> None:
    """Where the limit is lifted (sys.set_int_max_str_digits(0)) json reads the integer, and
    float() refuses it."""
    path = tmp_path / "hints.json"
    big = "9" * 5000
    path.write_text('{"a.jpg": [{"x": %s, "y": 2, "color": "red"}]}' % big)
    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        with pytest.raises(UserError) as e:
            read_hints_file(path)
    finally:
        sys.set_int_max_str_digits(limit)
    assert str(e.value) == f'{path}: a.jpg: hint {{"x": {big}, "y": 2, "color": "red"}}: x is too large'


def test_photos_are_named_by_path_relative_path_or_file_name() -> None:
    a, b, c = Hint(1, 1, RED), Hint(2, 2, GREEN), Hint(3, 3, BLUE)
    photos = [(Path("in/a.jpg"), Path("a.jpg")), (Path("in/sub/b.jpg"), Path("sub/b.jpg")),
              (Path("in/sub/c.jpg"), Path("sub/c.jpg")), (Path("in/d.jpg"), Path("d.jpg"))]
    table = {"a.jpg": [a], "sub/b.jpg": [b], "in/sub/c.jpg": [c], "gone.jpg": [a], "sub/a.jpg": [b]}
    assert match_photos(table, photos) == ([[a], [b], [c], []], ["gone.jpg", "sub/a.jpg"])
    assert for_photo(table, "elsewhere/a.jpg") == [a] and for_photo(table, "in/sub/c.jpg") == [c]


def test_a_file_name_that_is_one_photos_relative_path_names_that_photo_alone() -> None:
    a, b = Hint(1, 1, RED), Hint(2, 2, GREEN)
    photos = [(Path("in/a.jpg"), Path("a.jpg")), (Path("in/sub/a.jpg"), Path("sub/a.jpg"))]
    assert match_photos({"a.jpg": [a], "sub/a.jpg": [b]}, photos) == ([[a], [b]], [])
    assert match_photos({"a.jpg": [a]}, photos) == ([[a], []], [])


def test_a_photo_named_twice_or_a_name_shared_by_photos_is_an_error() -> None:
    with pytest.raises(UserError) as e:
        match_photos({"a.jpg": [], "in/a.jpg": []}, [(Path("in/a.jpg"), Path("a.jpg"))])
    assert str(e.value) == "the hints file names in/a.jpg 2 times ('a.jpg', 'in/a.jpg'); keep one"
    with pytest.raises(UserError) as e:
        match_photos({"a.jpg": []}, [(Path("in/x/a.jpg"), Path("x/a.jpg")), (Path("in/y/a.jpg"), Path("y/a.jpg"))])
    assert str(e.value) == "the hints file's 'a.jpg' names 2 photos; name each by its path relative to IN"


# --- planes ----------------------------------------------------------------------------


def one(x: float, y: float, ab: tuple[float, float], side: int, height: int = 4, width: int = 5,
        lightness: torch.Tensor | None = None) -> torch.Tensor:
    """The planes (HINT_PLANES, H, W) of a single hint, on a mid-gray photo unless `lightness` is given."""
    gray = torch.zeros(1, 1, height, width) if lightness is None else lightness
    return planes(torch.tensor([[[x, y]]]), torch.tensor([[ab]]), torch.tensor([[True]]), torch.tensor([[side]]),
                  gray)[0]


def test_a_one_pixel_hint_marks_only_its_pixel_and_fills_both_spread_planes() -> None:
    torch.manual_seed(0)
    p = one(2, 1, (0.25, -0.5), side=1, lightness=torch.rand(1, 1, 4, 5) * 2 - 1)
    assert p.shape == (HINT_PLANES, 4, 5) == (8, 4, 5)
    expected = torch.zeros(3, 4, 5)
    expected[:, 1, 2] = torch.tensor([0.25, -0.5, 1.0])
    assert torch.equal(p[:3], expected)
    # one hint: its colour everywhere (w * ab / w), whatever the lightness does to w
    colour = torch.tensor([0.25, -0.5]).reshape(2, 1, 1).expand(2, 4, 5)
    torch.testing.assert_close(p[IDW], colour, **F32)
    torch.testing.assert_close(p[GUESS], colour, **F32_EXP)


def test_a_patch_covers_side_by_side_pixels_clipped_at_the_border() -> None:
    mask = one(2, 2, (0.1, 0.1), side=3, height=5)[2]
    assert torch.equal(mask.nonzero(), torch.tensor([[y, x] for y in (1, 2, 3) for x in (1, 2, 3)]))
    corner = one(0, 0, (0.1, 0.1), side=3)[2]
    assert torch.equal(corner.nonzero(), torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]]))


def test_a_later_hint_wins_where_patches_overlap() -> None:
    p = planes(torch.tensor([[[1.0, 1.0], [2.0, 1.0]]]), torch.tensor([[[0.5, 0.0], [0.0, 0.5]]]),
               torch.ones(1, 2, dtype=torch.bool), torch.tensor([[3, 3]]), torch.zeros(1, 1, 3, 4))[0]
    assert p[:2, :, 0].tolist() == [[0.5] * 3, [0.0] * 3]  # only the first covers column 0
    assert p[:2, :, 1:].tolist() == [[[0.0] * 3] * 3, [[0.5] * 3] * 3]  # the second over the rest
    assert torch.equal(p[2], torch.ones(3, 4))


def test_the_idw_plane_is_the_inverse_distance_weighted_mean() -> None:
    """Two hints in a 1x4 photo, at x = 0 (a* = 1) and x = 3 (b* = 1): weights 1 / (1 + d^2).
    An invalid third hint (padding of a batch whose photos have fewer hints) counts for nothing.
    The photo is one lightness, so the lightness-aware plane is the same."""
    p = planes(torch.tensor([[[0.0, 0.0], [3.0, 0.0], [1.0, 0.0]]]), torch.tensor([[[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]]]),
               torch.tensor([[True, True, False]]), torch.tensor([[1, 1, 1]]), gray_input([[50, 50, 50, 50]]))[0]
    w = {x: (1 / (1 + x**2), 1 / (1 + (3 - x) ** 2)) for x in range(4)}
    want = torch.tensor([[[w[x][0] / sum(w[x]) for x in range(4)]], [[w[x][1] / sum(w[x]) for x in range(4)]]],
                        dtype=torch.float64)
    torch.testing.assert_close(p[IDW], want.float(), **F32)
    assert torch.equal(p[GUESS], p[IDW])  # every Gaussian factor exp(0) = 1 exactly
    assert abs(want[0, 0, 1].item() - 5 / 7) < 1e-12 and abs(want[1, 0, 0].item() - 1 / 11) < 1e-12
    assert p[2].tolist() == [[1.0, 0.0, 0.0, 1.0]]


def test_the_guess_plane_weighs_each_hint_by_how_alike_the_lightness_is() -> None:
    """A 1x5 photo of L* 50, 50, 62.5, 75, 75 with a hint at each end: x = 0 (a* = 1, on L* 50)
    and x = 4 (b* = 1, on L* 75). Each weight 1 / (1 + d^2) is multiplied by
    exp(-dL^2 / (2 sigma^2)), dL the pixel's L* less the hinted pixel's: 1 where they are alike,
    G25 = exp(-25^2 / 200) = exp(-3.125) ~ 0.044 across the 25-level step (sigma 10)."""
    assert LIGHTNESS_SIGMA == 10
    p = planes(torch.tensor([[[0.0, 0.0], [4.0, 0.0]]]), torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]),
               torch.ones(1, 2, dtype=torch.bool), torch.tensor([[1, 1]]), gray_input([[50, 50, 62.5, 75, 75]]))[0]
    g25 = math.exp(-3.125)
    # x = 1, L* 50: the first hint's own lightness, so its plain weight 1 / (1 + 1); the second's
    # 1 / (1 + 9) times G25. Between them the plain mean gives a* 5/6, this one nearly all of it.
    w0, w1 = 1 / 2, g25 / 10
    a, b = p[GUESS, 0, 1].tolist()
    assert a == pytest.approx(w0 / (w0 + w1), rel=1e-6) and round(a, 4) == 0.9913
    assert b == pytest.approx(w1 / (w0 + w1), rel=1e-6)
    assert p[IDW.start, 0, 1].item() == pytest.approx(5 / 6, rel=1e-6)
    # x = 0, on the first hint: weights 1 and G25 / (1 + 16)
    assert p[GUESS.start, 0, 0].item() == pytest.approx(1 / (1 + g25 / 17), rel=1e-6)
    # x = 2, L* 62.5: 12.5 from both hints, the same factor on both weights, so the plain mean
    assert p[GUESS.start, 0, 2].item() == pytest.approx(p[IDW.start, 0, 2].item(), rel=1e-6) == pytest.approx(0.5)
    # x = 3, L* 75: the mirror image of x = 1
    torch.testing.assert_close(p[GUESS, 0, 3], p[GUESS, 0, 1].flip(0), **F32_EXP)
    # the full plane against float64, to float32 rounding
    light, hinted = torch.tensor([50, 50, 62.5, 75, 75], dtype=torch.float64), (50.0, 75.0)
    xs = torch.arange(5, dtype=torch.float64)
    w = torch.stack([torch.exp(-(light - hinted[k]) ** 2 / 200) / (1 + (xs - 4 * k) ** 2) for k in (0, 1)])
    torch.testing.assert_close(p[GUESS, 0], (w / w.sum(0)).float(), **F32_EXP)


def test_the_reach_is_one_on_a_hint_and_fades_with_distance_alone() -> None:
    """Reach = 1 - prod_k (1 - r_k), r_k = exp(-d^2 / (2 s^2)), s = REACH_SIDE x sqrt(H W)
    working pixels: on a 12x12 photo whose right half is 25 L* darker, hints at (2, 3) and
    (4, 3). The lightness does not enter (a hint on a highlight still reaches its object).
    Checked against float64."""
    light = torch.full((12, 12), 50.0, dtype=torch.float64)
    light[:, 6:] = 25.0
    p = planes(torch.tensor([[[2.0, 3.0], [4.0, 3.0]]]), torch.tensor([[[0.5, 0.0], [0.0, 0.5]]]),
               torch.ones(1, 2, dtype=torch.bool), torch.tensor([[1, 1]]), (light / 50 - 1).float()[None, None])[0]
    s2 = (REACH_SIDE * 12) ** 2
    ys, xs = torch.meshgrid(torch.arange(12.0, dtype=torch.float64), torch.arange(12.0, dtype=torch.float64),
                            indexing="ij")
    r = [torch.exp(-((xs - x) ** 2 + (ys - 3) ** 2) / (2 * s2)) for x in (2, 4)]
    torch.testing.assert_close(p[REACH.start], (1 - (1 - r[0]) * (1 - r[1])).float(), rtol=0, atol=1e-6)
    assert p[REACH.start, 3, 2].item() == 1.0 and p[REACH.start, 3, 4].item() == 1.0
    assert p[REACH.start, 3, 5] == p[REACH.start, 3, 1] > 0.5  # across the lightness step as far as before it
    assert p[REACH.start, 11, 11].item() < 1e-6  # far away: nothing
    assert given_planes([], torch.zeros(1, 1, 4, 4))[0, REACH].abs().max() == 0  # no hint reaches nothing


def test_no_hints_give_all_zero_planes() -> None:
    assert torch.equal(given_planes([], torch.rand(1, 1, 6, 7)), torch.zeros(1, HINT_PLANES, 6, 7))


def test_given_hints_carry_their_cielab_chroma_on_a_hint_side_patch() -> None:
    from skimage.color import rgb2lab

    p = given_planes([(3, 2, RED), (0, 0, (128, 128, 128))], torch.zeros(1, 1, 5, 6))[0]
    want = rgb2lab(np.array([[RED]], dtype=np.float64) / 255)[0, 0, 1:] / AB_SCALE
    # colour.rgb_to_lab and scikit-image differ by under 0.01 in a*, b* (their white points' rounding)
    assert np.abs(p[:2, 2, 3].numpy() - want).max() < 0.01 / AB_SCALE + 1e-6
    assert np.abs(p[:2, 0, 0].numpy()).max() < 1e-6  # gray has no chroma
    assert int(p[2].sum()) == HINT_SIDE**2 + 4  # the gray hint's patch clipped at the corner
    torch.testing.assert_close(hint_ab([RED])[0], p[:2, 2, 3])


def test_simulated_hints_take_the_true_colour_and_leave_about_half_the_photos_without() -> None:
    torch.manual_seed(0)
    colours = torch.rand(200, 2, 1, 1) - 0.5
    p = simulate(colours.expand(200, 2, 8, 8), torch.rand(200, 1, 8, 8) * 2 - 1)
    assert p.shape == (200, HINT_PLANES, 8, 8)
    hinted = p[:, 2].amax((1, 2)) > 0
    assert 60 < int(hinted.sum()) < 140  # NO_HINT_SHARE 0.5: binomial(200, 0.5), over 5 sd from either bound
    assert torch.equal(p[~hinted], torch.zeros_like(p[~hinted]))
    mask = p[hinted, 2:3] > 0
    truth = colours[hinted].expand(-1, 2, 8, 8)
    # a flat photo: every patch mean and every weighted mean is its colour, up to float rounding
    torch.testing.assert_close(torch.where(mask, p[hinted, :2], truth), truth, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(p[hinted][:, IDW], truth, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(p[hinted][:, GUESS], truth, rtol=1e-6, atol=1e-7)


# --- the model -------------------------------------------------------------------------


def random_unet(cfg: ModelConfig, seed: int = 0) -> UNet:
    """A seeded eval-mode generator with He-scaled convolutions (std sqrt(2 / fan-in)): every
    layer keeps its input's magnitude, so the output spans much of tanh's range and the gain's
    clamp shows (the training init's output is ~0.01)."""
    torch.manual_seed(seed)
    net = UNet(cfg)
    init_weights(net)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.normal_(0, math.sqrt(2 / m.weight[0].numel()))
    return net.eval()


def test_all_zero_hint_planes_are_automatic_mode() -> None:
    net = random_unet(ModelConfig(size=16, width=4))
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        for gain in (1.0, 1.7):
            net.chroma_gain = gain
            assert torch.equal(net(x, torch.zeros(2, HINT_PLANES, 16, 16)), net(x))


def at_gain(net: UNet, gain: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two random photos, a red hint at (5, 5) on the first: their input, their hint planes, and
    the network's output at gain 1 and at `gain` (left at it)."""
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    hints = torch.cat([given_planes([(5, 5, RED)], x[:1]), given_planes([], x[1:])])
    with torch.no_grad():
        raw = net(x, hints)
        net.chroma_gain = gain
        return x, hints, raw, net(x, hints)


def test_the_chroma_gain_fades_to_one_where_hints_reach() -> None:
    """The gain at each pixel is 1 + (gain - 1) x (1 - reach): the whole gain on a photo without
    hints and far from every hint, none on a hint (reach 1), where the user's colour is wanted."""
    _, hints, raw, out = at_gain(random_unet(ModelConfig(size=16, width=4)), 2.5)
    assert (raw[1].abs() * 2.5 > 1).any()  # the clamp at 1 is reached
    assert torch.equal(out[1], (raw[1] * 2.5).clamp(-1, 1))
    assert torch.equal(out[0], (raw[0] * (1 + 1.5 * (1 - hints[0, REACH]))).clamp(-1, 1))
    assert torch.equal(out[0, :, 5, 5], raw[0, :, 5, 5])  # on the hint: reach 1, gain 1
    far = hints[0, REACH.start] < 0.01
    assert far.sum() > 100 and torch.allclose(out[0][:, far], (raw[0][:, far] * 2.5).clamp(-1, 1), atol=0.02)


def test_a_generator_from_before_the_reach_keeps_its_gain_rule_and_reads_seven_planes() -> None:
    """Checkpoints without `local_hints` (the beach model): gain 1 on any photo with a hint,
    and the first OLD_PLANES planes read, the guess being the lightness-aware mean everywhere."""
    cfg = ModelConfig.from_dict({k: v for k, v in ModelConfig(size=16, width=4).to_dict().items() if k != "local_hints"})
    assert not cfg.local_hints and cfg.hint_channels == OLD_PLANES == 7
    net = random_unet(cfg)
    assert net.down[0].conv.in_channels == 1 + OLD_PLANES
    x, hints, raw, out = at_gain(net, 2.5)
    assert torch.equal(out[0], raw[0])
    assert torch.equal(out[1], (raw[1] * 2.5).clamp(-1, 1))
    with torch.no_grad():
        net.out.conv.weight.zero_()
        net.out.conv.bias.zero_()
        net.chroma_gain = 1.0
        assert torch.equal(net(x, hints)[0], hints[0, GUESS].clamp(-1, 1))  # the hint's colour everywhere


def test_the_output_is_a_correction_of_the_guess_plane_times_the_reach() -> None:
    """Given hints, the generator's last layer adds to their lightness-aware spread (GUESS) times
    their reach (REACH), the sum clamped to [-1, 1]: with that layer zeroed the output is that
    guess itself, clamped; with any weights it is the layer's output plus the guess. Without
    hints the layer's output is all there is."""
    net = random_unet(ModelConfig(size=16, width=4))
    torch.manual_seed(1)
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    hints = torch.cat([given_planes([(3, 4, RED), (12, 10, BLUE)], x[:1]), given_planes([(8, 8, GREEN)], x[1:])])
    hints[0, GUESS] *= 3  # past [-1, 1], so the clamp shows
    assert (hints[0, GUESS].abs() > 1).any() and (hints[0, GUESS].abs() < 1).any()
    last: list[torch.Tensor] = []
    net.out.register_forward_hook(lambda module, args, out: last.append(out))
    with torch.no_grad():
        out = net(x, hints)
        assert last[-1].abs().max() > 0.1  # the layer adds something
        guess = hints[:, GUESS] * hints[:, REACH]
        assert torch.equal(out, (last[-1] + guess).clamp(-1, 1))
        assert torch.equal(net(x), last[-1])  # no hints: the layer's own output
        net.out.conv.weight.zero_()
        net.out.conv.bias.zero_()
        assert torch.equal(net(x, hints), guess.clamp(-1, 1))
        assert torch.equal(net(x), torch.zeros(2, 2, 16, 16))


def test_far_from_every_hint_the_network_reads_what_it_reads_without_hints() -> None:
    """The first layer reads the spreads times the reach: where no hint reaches, every hint
    plane it reads is 0, as in automatic mode; the plain spreads would have told every pixel of
    the photo the hint's colour."""
    net = random_unet(ModelConfig(size=32, width=4))
    x = torch.linspace(-0.2, 0.2, 32).expand(1, 1, 32, 32)  # a gentle ramp: the reach is about distance here
    hints = given_planes([(4, 4, RED)], x)
    read: list[torch.Tensor] = []
    net.down[0].conv.register_forward_pre_hook(lambda module, args: read.append(args[0]))
    with torch.no_grad():
        net(x, hints)
    planes_read = read[0][0, 1:]
    reach = hints[0, REACH.start]
    torch.testing.assert_close(planes_read[IDW.start:GUESS.stop], hints[0, IDW.start:GUESS.stop] * reach)
    torch.testing.assert_close(planes_read[REACH], hints[0, REACH])
    far = reach < 1e-9
    assert far.sum() > 500 and planes_read[:, far].abs().max() == 0
    assert hints[0, IDW.start][far].abs().min() > 0.1  # what the plain spread says there: the red


def test_a_hint_changes_the_photo_only_where_it_reaches() -> None:
    """Colorizer.predict: the automatic output plus the hints' reach (EFFECT_SIDE) times what the
    hints changed. Where no hint reaches (reach 0 in float32) the output is the automatic one
    exactly; on the hint, the network's own output with the hint. A generator from before the
    reach (local_hints False) gets its hinted output everywhere."""
    from colorize_cli.hints import EFFECT_SIDE, given_reach

    cfg = ModelConfig(size=32, width=4)
    colorizer = Colorizer(random_unet(cfg), cfg, torch.device("cpu"), size=32)
    item = colorizer.prepare(flat(GREEN, 64, 64), [Hint(6.5, 6.5, RED)])  # working pixel (3, 3)
    auto = colorizer.predict([replace(item, hints=())])[0]
    out = colorizer.predict([item])[0]
    x_in = colorizer.network_input([item])
    with torch.no_grad(), autocast_bf16(x_in.device):  # as predict runs it
        hinted = colorizer.net(x_in, given_planes(item.hints, x_in).contiguous(memory_format=torch.channels_last))[0].float()
    reach = given_reach(item.hints, 32, 32)[0, 0]
    ys, xs = torch.meshgrid(torch.arange(32.0, dtype=torch.float64), torch.arange(32.0, dtype=torch.float64), indexing="ij")
    want = torch.exp(-((xs - 3) ** 2 + (ys - 3) ** 2) / (2 * (EFFECT_SIDE * 32) ** 2))  # one hint: its Gaussian alone
    torch.testing.assert_close(reach, want.float(), rtol=0, atol=1e-6)
    assert EFFECT_SIDE == 2 * REACH_SIDE and reach.max() == 1
    far = reach == 0
    assert far.sum() > 100 and torch.equal(out[:, far], auto[:, far])  # the far corner
    x, y = (round(v) for v in item.hints[0][:2])
    torch.testing.assert_close(out[:, y, x], hinted[:, y, x])
    torch.testing.assert_close(out, auto + reach * (hinted - auto))
    assert (out - auto).abs()[:, reach > 0.5].mean() > 0.01  # the hint did change its surroundings
    old = ModelConfig.from_dict({k: v for k, v in cfg.to_dict().items() if k != "local_hints"})
    before_reach = Colorizer(random_unet(old), old, torch.device("cpu"), size=32)
    item = before_reach.prepare(flat(GREEN, 64, 64), [Hint(6, 6, RED)])
    x_in = before_reach.network_input([item])
    with torch.no_grad(), autocast_bf16(x_in.device):
        want = before_reach.net(x_in, given_planes(item.hints, x_in).contiguous(memory_format=torch.channels_last))[0]
    torch.testing.assert_close(before_reach.predict([item])[0], want.float())


def test_an_rgb_model_never_reads_hints() -> None:
    """Its output is R, G, B, which an a*b* guess cannot be added to: hints=True is overruled."""
    for cfg in (ModelConfig(size=16, width=4, space="rgb"), ModelConfig(size=16, width=4, space="rgb", hints=True),
                ModelConfig.from_dict({**ModelConfig(size=16, width=4, space="rgb").to_dict(), "hints": True})):
        assert not cfg.hints and cfg.hint_channels == 0 and cfg.out_channels == 3
        net = random_unet(cfg)
        assert net.down[0].conv.in_channels == 1
        with torch.no_grad():
            assert net(torch.zeros(2, 1, 16, 16)).shape == (2, 3, 16, 16)
    colorizer = Colorizer(net, cfg, torch.device("cpu"), source="rgb.safetensors")
    img = flat(RED)
    assert np.array_equal(np.asarray(colorizer.colorize(img).convert("L")), np.asarray(img.convert("L")))
    with pytest.raises(UserError, match=f"^rgb.safetensors {re.escape(OLD_MODEL)}$"):
        colorizer.colorize(img, [Hint(1, 1, RED)])
    assert ModelConfig(size=16, width=4).hints  # lab: hint-aware by default


@pytest.fixture(scope="module")
def old_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint as written before hints: its config has no "hints" key, its generator one input."""
    from safetensors.torch import save_file

    cfg = ModelConfig(size=16, width=4, hints=False)
    net = random_unet(cfg)
    path = tmp_path_factory.mktemp("old") / "old.safetensors"
    config = {k: v for k, v in cfg.to_dict().items() if k != "hints"}
    save_file({"generator." + k: v.contiguous() for k, v in net.state_dict().items()}, str(path),
              metadata={"format": "colorize", "config": json.dumps(config)})
    return path


def test_an_old_checkpoint_loads_and_colorizes_but_refuses_hints(old_model: Path) -> None:
    net, cfg = load_generator(old_model)
    assert not cfg.hints and net.down[0].conv.in_channels == 1
    with pytest.raises(UserError, match="^this model was trained without colour hints; use a hint-aware checkpoint$"):
        net(torch.zeros(1, 1, 16, 16), torch.zeros(1, HINT_PLANES, 16, 16))
    colorizer = Colorizer.load(old_model)
    img = flat(RED)
    assert np.array_equal(np.asarray(colorizer.colorize(img).convert("L")), np.asarray(img.convert("L")))
    with pytest.raises(UserError) as e:
        colorizer.colorize(img, [Hint(1, 1, RED)])
    assert str(e.value) == f"{old_model} {OLD_MODEL}"


# --- a trained model follows its hints -------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny hint-aware generator trained (`train.Nets`, simulated hints, L1) on flat-colour
    photos: their colour is not in their gray, so only a hint can tell it. Saved as a checkpoint."""
    mcfg = ModelConfig(size=16, width=8, dropout=0.0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        nets = Nets(TrainConfig(data="", out="", model=mcfg, lr=2e-3, seed=0), torch.device("cpu"))
        gen = torch.Generator().manual_seed(0)
        luma = torch.tensor([0.299, 0.587, 0.114]).reshape(1, 3, 1, 1)
        for _ in range(400):
            rgb = torch.rand(16, 3, 1, 1, generator=gen).expand(16, 3, 16, 16)
            gray = (rgb * luma).sum(1, keepdim=True)
            nets.train_step(gray.contiguous(memory_format=torch.channels_last),
                            rgb.contiguous(memory_format=torch.channels_last))
    finally:
        torch.set_num_threads(threads)
    path = tmp_path_factory.mktemp("trained") / "hints.safetensors"
    save_checkpoint(path, {"generator." + k: v for k, v in nets.g.state_dict().items()}, mcfg)
    return path


def test_a_trained_model_colours_the_photo_near_a_hint_with_the_hints_colour(trained: Path) -> None:
    colorizer = Colorizer.load(trained, device="cpu")
    photos = [flat(RED), flat(GREEN), flat(BLUE), flat(RED)]
    centre = Hint(24, 16, RED)
    hints = [[centre], [Hint(24, 16, GREEN)], [Hint(24, 16, BLUE)], []]
    with_hints = colorizer.colorize_batch(photos, hints)  # one batch: hinted photos next to one without
    without = colorizer.colorize_batch(photos[:3])
    for img, hinted, auto in zip(photos, with_hints, without):
        truth = img.getpixel((0, 0))
        assert ab_distance(hinted, truth, 24, 16) < 0.5 * ab_distance(auto, truth, 24, 16)
    alone = colorizer.colorize(photos[3])
    assert np.abs(np.asarray(with_hints[3], dtype=int) - np.asarray(alone, dtype=int)).max() <= 1  # float rounding only


# --- placing hints on the working copy -------------------------------------------------


@pytest.fixture(scope="module")
def placer() -> Colorizer:
    """Working size 32: a 64 x 24 photo becomes a 32 x 12 copy padded to 32 x 16 (2 rows above),
    so photo pixel (x, y) lies in working pixel (x // 2, y // 2 + 2)."""
    cfg = ModelConfig(size=32, width=4)
    return Colorizer(random_unet(cfg), cfg, torch.device("cpu"), size=32)


def upright_with_a_spot() -> Image.Image:
    """64 x 24, dark, with a white 8 x 8 spot at x 6..13, y 2..9 (working pixels x 3..6, y 3..6)."""
    a = np.full((24, 64, 3), 20, np.uint8)
    a[2:10, 6:14] = 255
    return Image.fromarray(a)


def placed(item: Prepared, i: int = 0) -> tuple[int, int]:
    """The working pixel of the item's i-th hint."""
    x, y, _ = item.hints[i]
    return round(x), round(y)


@pytest.mark.parametrize("orientation, stored", [(None, lambda im: im),
                                                 (6, lambda im: im.transpose(Image.Transpose.ROTATE_90)),
                                                 (8, lambda im: im.transpose(Image.Transpose.ROTATE_270))])
def test_a_hint_lands_where_it_points_in_the_upright_photo(placer: Colorizer, tmp_path: Path, orientation, stored) -> None:
    path = tmp_path / "photo.jpg"
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation  # 6: shown turned 90 degrees clockwise; 8: anticlockwise
    stored(upright_with_a_spot()).save(path, exif=exif.tobytes(), quality=95)
    img = open_image(path)
    assert img.size == (64, 24) and min(img.getpixel((10, 6))) > 200  # upright again, the spot where drawn
    item = placer.prepare(img, [Hint(10, 6, RED)])
    assert placed(item) == (5, 5) and item.work[5, 5] > 200 and item.work[5, 9] < 50  # on the spot
    mask = given_planes(item.hints, placer.network_input([item]))[0, 2]
    assert mask[5, 5] == 1 and int(mask.sum()) == HINT_SIDE**2


def test_shares_0_and_1_are_the_photos_corners_not_the_padding(placer: Colorizer) -> None:
    item = placer.prepare(upright_with_a_spot(), [Hint(0.0, 0.0, RED, True), Hint(1.0, 1.0, RED, True),
                                                   Hint(63, 23, RED)])
    g = item.geometry
    assert (g.left, g.top, g.w, g.h) == (0, 2, 32, 12)
    assert placed(item, 0) == (0, 2) and placed(item, 1) == placed(item, 2) == (31, 13)
    with pytest.raises(UserError, match=r"^hint 64,0,#d9342b lies outside the 64x24 photo$"):
        placer.prepare(upright_with_a_spot(), [Hint(64, 0, RED)])


# --- the command -----------------------------------------------------------------------


def test_infer_follows_hints_given_on_the_command_line(capsys: pytest.CaptureFixture[str], trained: Path,
                                                       tmp_path: Path) -> None:
    src = tmp_path / "red.png"
    flat(RED).save(src)
    code, _, err = run_cli(capsys, "infer", src, tmp_path / "hinted.png", "--model", trained, "--device", "cpu",
                           "--hint", "24,16,#d9342b", "--hint", "0.9,0.1,#d9342b")
    assert code == 0, err
    code, _, err = run_cli(capsys, "infer", src, tmp_path / "auto.png", "--model", trained, "--device", "cpu")
    assert code == 0, err
    hinted, auto = Image.open(tmp_path / "hinted.png"), Image.open(tmp_path / "auto.png")
    assert np.array_equal(np.asarray(hinted.convert("L")), np.asarray(flat(RED).convert("L")))
    assert ab_distance(hinted, RED, 24, 16) < 0.5 * ab_distance(auto, RED, 24, 16)


@pytest.mark.parametrize("args, message", [
    (("--hint", "500,5,red"), "{src}: hint 500,5,#ff0000 lies outside the 48x32 photo"),
    (("--hint", "1.5,0.5,red"), f"hint '1.5,0.5,red': x 1.5 {NEITHER}"),
    (("--hint", "1,2,blurple"), f"hint '1,2,blurple': 'blurple' is not a colour {COLOUR_HELP}"),
])
def test_a_bad_hint_for_one_photo_is_a_one_line_error(capsys: pytest.CaptureFixture[str], trained: Path,
                                                      tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    src = tmp_path / "red.png"
    flat(RED).save(src)
    for out in (tmp_path / "out", tmp_path / "new" / "deeper" / "red-colour.png"):
        code, _, err = run_cli(capsys, "infer", src, out, "--model", trained, "--device", "cpu", *args)
        assert code == 1
        assert err.splitlines()[-1] == "error: " + message.format(src=src) and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["red.png"]  # no folder made, not even an empty one


@pytest.mark.parametrize("number, message", [
    ("1e400", 'hint {"x": Infinity, "y": 2, "color": "red"}: x is not a finite number'),
    ("1" + "0" * 400, 'hint {"x": 1%s, "y": 2, "color": "red"}: x is too large' % ("0" * 400)),
    ("1" + "0" * 5000, "not a readable JSON hints file (a number of more than {limit} digits)"),
])
def test_a_huge_number_in_a_hints_file_is_a_one_line_error(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                           number: str, message: str) -> None:
    """Refused when the file is read, before a model loads or a folder is made."""
    src, hints = tmp_path / "red.png", tmp_path / "hints.json"
    flat(RED).save(src)
    hints.write_text('{"red.png": [{"x": %s, "y": 2, "color": "red"}]}' % number)
    code, _, err = run_cli(capsys, "infer", src, tmp_path / "out", "--hints", hints, "--device", "cpu")
    assert code == 1 and "Traceback" not in err
    prefix = "" if "readable" in message else "red.png: "
    assert err.splitlines() == [f"error: {hints}: {prefix}" + message.replace("{limit}", str(sys.get_int_max_str_digits()))]
    assert not (tmp_path / "out").exists()


def test_hint_options_that_do_not_fit_the_input_or_model(capsys: pytest.CaptureFixture[str], trained: Path,
                                                         old_model: Path, tmp_path: Path) -> None:
    flat(RED).save(tmp_path / "a.png")
    hints = tmp_path / "hints.json"
    hints.write_text(hints_json({"a.png": [Hint(1, 1, RED)]}))
    code, _, err = run_cli(capsys, "infer", tmp_path, tmp_path / "out", "--model", trained, "--hint", "1,1,red")
    assert (code, err) == (1, "error: --hint is for one photo; use --hints FILE.json for a folder\n")
    code, _, err = run_cli(capsys, "infer", tmp_path / "b.png", tmp_path / "out", "--hint", "1,1,red")
    assert (code, err) == (1, f"error: {tmp_path / 'b.png'}: no such file or folder\n")
    code, _, err = run_cli(capsys, "infer", tmp_path / "a.png", tmp_path / "out", "--hint", "1,1,red", "--hints", hints)
    assert code == 2 and "--hint and --hints exclude each other" in err
    for args in (("--hint", "1,1,red"), ("--hints", hints)):
        code, _, err = run_cli(capsys, "infer", tmp_path / "a.png", tmp_path / "out", "--model", old_model,
                               "--device", "cpu", *args)
        assert code == 1 and err.splitlines()[-1] == f"error: {old_model} {OLD_MODEL}"
    assert not (tmp_path / "out").exists()


def test_a_hints_file_for_a_folder_skips_only_the_photo_its_hints_do_not_fit(
        capsys: pytest.CaptureFixture[str], trained: Path, tmp_path: Path) -> None:
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    for name in ("a.png", "b.png", "c.png", "sub/d.png"):
        flat(RED).save(src / name)
    hints = tmp_path / "hints.json"
    hints.write_text(hints_json({"a.png": [Hint(24, 16, RED)], str(src / "b.png"): [Hint(500, 5, RED)],
                                 "sub/d.png": [Hint(0.5, 0.5, RED, True)], "missing.png": [Hint(1, 1, RED)]}))
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "infer", src, out, "-r", "--hints", hints, "--model", trained, "--device", "cpu")
    assert code == 1
    lines = err.splitlines()
    assert f"warning: {hints} names photos that are not in {src}, their hints unused: missing.png." in lines
    assert f"skipped {src / 'b.png'}: hint 500,5,#d9342b lies outside the 48x32 photo" in lines
    assert "colorized 3 of 4 photos" in lines[-1]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == ["a.png", "c.png", "sub/d.png"]
    a, c, d = (Image.open(out / name) for name in ("a.png", "c.png", "sub/d.png"))
    assert ab_distance(a, RED, 24, 16) < 0.5 * ab_distance(c, RED, 24, 16)  # a and d hinted, c not
    assert ab_distance(d, RED, 24, 16) < 0.5 * ab_distance(c, RED, 24, 16)
