"""`colorize evaluate votes.csv`: statistics checked against values worked out by hand."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from clirun import run_cli
from colorize_cli.votes import fleiss_kappa, kappa_label, read_votes

# The 4 x 3 study used throughout: 4 images, volunteers ann, ben, cat; 1 = fooled.
#        ann ben cat   fooled
#   a     1   1   0      2
#   b     1   0   0      1
#   c     0   0   0      0
#   d     1   0   0      1
WIDE = "image,ann,ben,cat\na,1,1,0\nb,1,0,0\nc,0,0,0\nd,1,0,0\n"

# k = 4 of n = 12, p^ = 1/3. Wilson, z = 1.959963984540054 (97.5% normal quantile):
#   centre = (p^ + z^2/2n) / (1 + z^2/n),  half = z / (1 + z^2/n) * sqrt(p^(1-p^)/n + z^2/4n^2)
#   -> 0.49339... / 1.32012... = 0.37375..., half 0.23563... -> [0.138120091, 0.609377911]
WILSON_4_12 = (0.13812009109121315, 0.6093779111272004)
# Exact two-sided binomial test at 0.5 (symmetric): 2 P(X <= 4) = 2 (1+12+66+220+495) / 4096.
P_4_12 = 2 * 794 / 4096
# Fleiss (1971), m = 3 raters: P_i = (x^2 + (3-x)^2 - 3) / 6 = 1/3, 1/3, 1, 1/3 -> P_bar = 1/2;
# p = 4/12, P_e = (1/3)^2 + (2/3)^2 = 5/9; kappa = (1/2 - 5/9) / (1 - 5/9) = -1/8.
KAPPA_4_12 = -0.125


def cli(args: list[str], capsys) -> tuple[int, str, str]:
    return run_cli(capsys, *args)


def study(tmp_path: Path, text: str, capsys, name: str = "votes.csv") -> dict:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    code, out, err = cli(["evaluate", str(path), "--json"], capsys)
    assert code == 0, err
    return json.loads(out)


def test_wide_table_hand_computed(tmp_path, capsys):
    r = study(tmp_path, WIDE, capsys)
    assert r["format"] == "wide"
    assert (r["images"], r["raters"], r["votes"], r["blank_votes"], r["fooled"]) == (4, 3, 12, 0, 4)
    assert r["fooling_rate"] == pytest.approx(1 / 3)
    assert r["ci95_wilson"] == pytest.approx(WILSON_4_12, abs=1e-12)
    assert r["p_value"] == pytest.approx(P_4_12, abs=1e-12)
    assert r["fleiss_kappa"] == pytest.approx(KAPPA_4_12, abs=1e-12)
    assert r["kappa_images"] == 4
    assert [(x["name"], x["fooled"], x["votes"]) for x in r["per_rater"]] == [("ann", 3, 4), ("ben", 1, 4), ("cat", 0, 4)]
    assert [(x["name"], x["fooled"], x["votes"]) for x in r["per_image"]] == [("a", 2, 3), ("b", 1, 3), ("c", 0, 3), ("d", 1, 3)]
    # Most volunteers fooled first; the tie b/d (1 of 3) in name order; c fooled nobody.
    assert r["most_fooling"] == ["a", "b", "d"]


def test_wide_table_text_report(tmp_path, capsys):
    path = tmp_path / "votes.csv"
    path.write_text(WIDE)
    code, out, _ = cli(["evaluate", str(path), "--top", "1"], capsys)
    assert code == 0
    assert "fooling rate: 4 of 12 votes = 33.3%" in out
    assert "95% CI: 13.8% to 60.9% (Wilson)" in out
    assert "p = 0.388 (two-sided), not significantly different from 50%" in out
    assert "Fleiss' kappa = -0.125 (poor; 4 images with 2 or more votes)" in out
    assert "most fooling: a (2/3)\n" in out
    assert "┃ blank ┃" not in out  # the column appears only when some vote is blank
    path.write_text(WIDE.replace("d,1,0,0", "d,1,,0"))
    code, out, _ = cli(["evaluate", str(path)], capsys)
    assert "11 votes, 1 blank (excluded)" in out
    assert "│ ben       │      1 │     3 │ 33.3% │     1 │" in out


@pytest.mark.parametrize("text", [
    "1,1,0\n1,0,0\n0,0,0\n1,0,0\n",                          # neither header nor names
    "ann,ben,cat\n1,1,0\n1,0,0\n0,0,0\n1,0,0\n",              # header only
    "a,1,1,0\nb,1,0,0\nc,0,0,0\nd,1,0,0\n",                  # names only
    ",ann,ben,cat\na,1,1,0\nb,1,0,0\nc,0,0,0\nd,1,0,0\n",    # pandas-style blank corner
    "image;ann;ben;cat\na;1;1;0\nb;1;0;0\nc;0;0;0\nd;1;0;0\n",  # semicolons (some locales)
    "\ufeffimage,ann,ben,cat\r\na,1,1,0\r\n\r\nb,1,0,0\r\nc,0,0,0\r\nd,1,0,0\r\n",  # BOM, CRLF, empty line
])
def test_wide_layouts_detected(tmp_path, capsys, text):
    r = study(tmp_path, text, capsys)
    assert (r["images"], r["raters"], r["votes"], r["fooled"]) == (4, 3, 12, 4)
    assert r["fleiss_kappa"] == pytest.approx(KAPPA_4_12, abs=1e-12)
    assert [x["fooled"] for x in r["per_image"]] == [2, 1, 0, 1]


def test_default_names_without_header_or_name_column(tmp_path, capsys):
    r = study(tmp_path, "1,1,0\n1,0,0\n0,0,0\n1,0,0\n", capsys)
    assert [x["name"] for x in r["per_rater"]] == ["rater 1", "rater 2", "rater 3"]
    assert [x["name"] for x in r["per_image"]] == ["image 1", "image 2", "image 3", "image 4"]


def test_numeric_image_names_are_names(tmp_path, capsys):
    r = study(tmp_path, "7,1,1\n8,0,1\n", capsys)
    assert [x["name"] for x in r["per_image"]] == ["7", "8"]
    assert (r["raters"], r["votes"], r["fooled"]) == (2, 4, 3)


def test_blank_cells_are_missing_votes(tmp_path, capsys):
    # ben has no vote on d: k = 4 of n = 11, one blank.
    r = study(tmp_path, WIDE.replace("d,1,0,0", "d,1,,0"), capsys)
    assert (r["votes"], r["blank_votes"], r["fooled"]) == (11, 1, 4)
    # Wilson with p^ = 4/11, n = 11 by the same formula as above.
    assert r["ci95_wilson"] == pytest.approx((0.15166471095367576, 0.6461988254921511), abs=1e-12)
    # 2 P(X <= 4), X ~ Bin(11, 1/2): 2 (1+11+55+165+330) / 2048.
    assert r["p_value"] == pytest.approx(1124 / 2048, abs=1e-12)
    # Varying raters per image (Fleiss, Levin & Paik): m = 3,3,3,2; x = 2,1,0,1;
    # sum x(m-x)/m = 2/3 + 2/3 + 0 + 1/2 = 11/6; N = 4, m_bar = 11/4, p = 4/11, q = 7/11;
    # kappa = 1 - (11/6) / (4 * 7/4 * 28/121) = 1 - 1331/1176 = -155/1176.
    assert r["fleiss_kappa"] == pytest.approx(-155 / 1176, abs=1e-12)
    ben = r["per_rater"][1]
    assert (ben["fooled"], ben["votes"], ben["blank"], ben["rate"]) == (1, 3, 1, pytest.approx(1 / 3))


def test_nobody_fooled_exact_interval(tmp_path, capsys):
    r = study(tmp_path, "0,0,0\n0,0,0\n0,0,0\n0,0,0\n", capsys)
    assert (r["fooled"], r["votes"], r["fooling_rate"]) == (0, 12, 0.0)
    # Clopper-Pearson for k = 0: [0, 1 - (alpha/2)^(1/n)].
    assert r["ci95_exact"] == pytest.approx((0.0, 1 - 0.025 ** (1 / 12)), abs=1e-12)
    assert r["p_value"] == pytest.approx(2 / 4096, abs=1e-15)
    assert r["fleiss_kappa"] is None  # every vote the same: chance agreement is 1
    assert r["most_fooling"] == []


def test_fleiss_kappa_edge_cases():
    assert fleiss_kappa(np.array([[1, 1, 1], [0, 0, 0.0]])) == (1.0, 2)
    # An image with a single vote carries no agreement information and is left out.
    k, n = fleiss_kappa(np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0], [1, 0, 0], [1, np.nan, np.nan]]))
    assert (k, n) == (pytest.approx(KAPPA_4_12, abs=1e-12), 4)
    k, n = fleiss_kappa(np.array([[1, np.nan], [0, np.nan]]))
    assert math.isnan(k) and n == 0
    assert [kappa_label(x) for x in (-0.1, 0.0, 0.2, 0.35, 0.5, 0.7, 0.81, math.nan)] == [
        "poor", "slight", "slight", "fair", "moderate", "substantial", "almost perfect", "undefined"]


def long_rows() -> list[tuple[str, str, int, str, int]]:
    """The 4 x 3 study as (image, rater, choice, real_side, response_ms) votes, rater by rater."""
    wide = {"a": (1, 1, 0), "b": (1, 0, 0), "c": (0, 0, 0), "d": (1, 0, 0)}
    sides = iter(["left", "right", "left", "left", "right", "right", "left", "right", "left", "right", "right", "left"])
    rows = []
    for rater_i, rater in enumerate(("ann", "ben", "cat")):
        for image in ("a", "b", "c", "d"):
            rows.append((image, rater, wide[image][rater_i], next(sides), 1000 * (rater_i + 1) + len(rows) + 1))
    return rows


def write_like_survey_server(path: Path) -> None:
    """Exactly what `colorize survey serve` appends, through its own writer."""
    from colorize_cli.survey import AnswerLog

    log = AnswerLog(path)
    for row in long_rows():
        log.append(row)


def test_long_format_equals_wide(tmp_path, capsys):
    wide = study(tmp_path, WIDE, capsys, "wide.csv")
    write_like_survey_server(tmp_path / "long.csv")
    code, out, err = cli(["evaluate", str(tmp_path / "long.csv"), "--json"], capsys)
    assert code == 0, err
    long = json.loads(out)
    assert long["format"] == "long"
    for key in ("images", "raters", "votes", "blank_votes", "fooled", "fooling_rate", "ci95_wilson",
                "ci95_exact", "p_value", "fleiss_kappa", "most_fooling"):
        assert long[key] == wide[key], key
    strip = lambda rows: [{k: r[k] for k in ("name", "fooled", "votes", "blank", "rate")} for r in rows]  # noqa: E731
    assert strip(long["per_rater"]) == strip(wide["per_rater"])
    assert strip(long["per_image"]) == strip(wide["per_image"])


def test_long_format_sides_and_times(tmp_path, capsys):
    text = "image,rater,choice,real_side,response_ms\n" + "".join(",".join(map(str, r)) + "\n" for r in long_rows()[::-1])
    r = study(tmp_path, text, capsys)
    # The left photo was chosen when (real on the left and real picked, choice 0) or (real on
    # the right and the colorized one picked, choice 1). ann: a 1/left no, b 1/right yes,
    # c 0/left yes, d 1/left no; ben: a 1/right yes, b 0/right no, c 0/left yes, d 0/right no;
    # cat: a 0/left yes, b 0/right no, c 0/right no, d 0/left yes -> 6 of 12.
    assert (r["left_chosen"]["k"], r["left_chosen"]["n"], r["left_chosen"]["p_value"]) == (6, 12, 1.0)
    assert [x["left_rate"] for x in r["per_rater"]] == [0.5, 0.5, 0.5]
    code, out, _ = cli(["evaluate", str(tmp_path / "votes.csv")], capsys)
    assert "left photo chosen in 6 of 12 votes (50.0%), p = 1" in out
    assert "median ms" in out
    # Times: ann 1001..1004, ben 2005..2008, cat 3009..3012.
    assert [x["name"] for x in r["per_rater"]] == ["cat", "ben", "ann"]  # order of first appearance
    assert [x["median_response_ms"] for x in r["per_rater"]] == [3010.5, 2006.5, 1002.5]
    assert r["median_response_ms"] == 2006.5


def test_long_format_minimal_columns_and_blank_choice(tmp_path, capsys):
    r = study(tmp_path, "rater,image,choice\nann,x,1\nben,x,\nann,y,0\n", capsys)
    assert (r["images"], r["raters"], r["votes"], r["blank_votes"], r["fooled"]) == (2, 2, 2, 1, 1)
    assert "left_chosen" not in r and "median_response_ms" not in r


@pytest.mark.parametrize("text, message", [
    ("", "votes.csv: empty file (no votes)"),
    ("\n \n", "votes.csv: empty file (no votes)"),
    ("image,ann,ben\n", "votes.csv: no votes (only a header line)"),
    ("image,ann,ben\na,1,0\nb,1,2\n", "votes.csv, line 3: '2' in column 3 (ben) is not a vote (1 = the colorized"),
    ("image,ann,ben\na,yes,0\n", "votes.csv, line 2: 'yes' in column 2 (ann) is not a vote"),
    ("image,ann,ben\na,1,0\nb,1\n", "votes.csv, line 3: 2 cells, but line 1 has 3 (ragged rows)"),
    ("image,ann,ben\na,1,0\nb,1,0,1\n", "votes.csv, line 3: 4 cells, but line 1 has 3 (ragged rows)"),
    ("image,ann,ben\na,1,0\n\nb,1,0\na,0,0\n", "votes.csv, line 5: image 'a' already has a row on line 2: duplicate (image, rater) pairs"),
    ("image,ann,ann\na,1,0\n", "votes.csv, line 1: volunteer 'ann' heads two columns (2 and 3): duplicate (image, rater) pairs"),
    ("image,ann\na,\nb,\n", "votes.csv: no votes: every vote cell is blank"),
    ("image,ann\n,1\n", "votes.csv, line 2: the image name (first column) is empty"),
    ("image,rater,choice\nx,ann,1\nx,ben,0\nx,ann,0\n", "votes.csv, line 4: rater 'ann' already voted on image 'x' on line 2: duplicate (image, rater) pairs"),
    ("image,rater,choice\nx,ann,real\n", "votes.csv, line 2: 'real' in the choice column is not a vote"),
    ("image,rater,choice\nx,ann\n", "votes.csv, line 2: 2 cells, but line 1 has 3 (ragged rows)"),
    ("image,rater\nx,ann\n", "votes.csv, line 1: the header lacks the column(s) choice"),
    ("image,rater,choice,real_side\nx,ann,1,top\n", "votes.csv, line 2: real_side 'top' is not left, right or blank"),
    ("image,rater,choice,response_ms\nx,ann,1,-5\n", "votes.csv, line 2: response_ms '-5' is not a time in milliseconds"),
    ("image,rater,choice\nx,,1\n", "votes.csv, line 2: the rater cell is empty"),
    ('image,ann\n"a,1\n', "votes.csv, line 2: 1 cells, but line 1 has 2 (ragged rows)"),
])
def test_malformed_files(tmp_path, capsys, text, message):
    path = tmp_path / "votes.csv"
    path.write_text(text, encoding="utf-8")
    code, out, err = cli(["evaluate", str(path)], capsys)
    assert code == 1
    assert out == ""
    assert message in " ".join(err.split()), err
    assert err.count("\n") == 1  # one line, no traceback


def test_not_a_text_file(tmp_path, capsys):
    path = tmp_path / "votes.csv"
    path.write_bytes(b"\xff\xd8\xff\xe0 a jpeg renamed")
    code, _, err = cli(["evaluate", str(path)], capsys)
    assert code == 1 and "votes.csv: not a UTF-8 text file" in err


def test_missing_file_and_image_options(tmp_path, capsys):
    code, _, err = cli(["evaluate", str(tmp_path / "nope.csv")], capsys)
    assert code == 1 and "nope.csv: no such file" in err
    path = tmp_path / "votes.csv"
    path.write_text(WIDE)
    code, _, err = cli(["evaluate", str(path), "--truth", str(tmp_path)], capsys)
    assert code == 1 and "--truth, --model and --csv apply to image folders, not to a votes file" in err


def test_read_votes_matrix(tmp_path):
    path = tmp_path / "v.csv"
    path.write_text(WIDE.replace("d,1,0,0", "d,1,,0"))
    v = read_votes(path)
    assert v.images == ["a", "b", "c", "d"] and v.raters == ["ann", "ben", "cat"]
    np.testing.assert_array_equal(v.matrix, [[1, 1, 0], [1, 0, 0], [0, 0, 0], [1, np.nan, 0]])
    assert v.blank.sum() == 1 and v.blank[3, 1]


# The original project's study (its report, Table 1): 24 test images, 5 volunteers, typed as
# a tab-separated table with numbered rows and columns and a blank corner cell.
ORIGINAL = "\t1\t2\t3\t4\t5\n" + "".join(f"{i}\t" + "\t".join(row) + "\n" for i, row in enumerate([
    "10001", "00000", "00101", "11001", "00000", "11101", "01000", "00001", "10010", "10101", "00000", "11001",
    "00101", "01000", "01000", "00000", "11110", "00000", "00111", "10000", "00001", "00010", "10100", "00011"], 1))


def test_original_study(tmp_path, capsys):
    r = study(tmp_path, ORIGINAL, capsys, "original.tsv")
    # Row sums: five images fooled nobody, 7 one volunteer, 6 two, 4 three, 2 four -> k = 39 of
    # n = 120 = 32.5% (the report wrote 31.2%; the table says 39/120).
    assert (r["images"], r["raters"], r["votes"], r["fooled"]) == (24, 5, 120, 39)
    assert r["fooling_rate"] == 0.325
    assert [x["fooled"] for x in r["per_rater"]] == [9, 7, 7, 5, 11]
    assert [x["name"] for x in r["per_rater"]] == ["1", "2", "3", "4", "5"]
    # Exact two-sided test, symmetric at 1/2: 2 * sum_{i<=39} C(120, i) / 2^120.
    assert r["p_value"] == pytest.approx(2 * sum(math.comb(120, i) for i in range(40)) / 2**120, rel=1e-9)
    # Fleiss: sum x(5-x) = 7*4 + 6*6 + 4*6 + 2*4 = 96; p q = 0.325 * 0.675;
    # kappa = 1 - 96 / (24 * 5 * 4 * p q) = 1 - 2880/3159 = 31/351.
    assert r["fleiss_kappa"] == pytest.approx(31 / 351, abs=1e-12)
    # Images 6 and 17 fooled 4 of 5; then the 3-of-5 ones in file order.
    assert r["most_fooling"] == ["6", "17", "4", "10", "12"]


def test_a_file_name_that_is_not_utf8_is_reported_escaped(tmp_path, capsys):
    path = tmp_path / os.fsdecode(b"votes\xff.csv")
    path.write_text(WIDE, encoding="utf-8")
    code, out, err = cli(["evaluate", str(path), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["file"] == f"{tmp_path}/votes\\xff.csv"
    code, out, err = cli(["evaluate", str(path)], capsys)
    assert code == 0 and out.startswith(f"{tmp_path}/votes\\xff.csv (wide format)")
