"""`colorize demo`: offline sample photos through the bundled model, written as images, a
contact sheet and an HTML page, with a metrics table; a user's files are never replaced."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clirun import run_cli
from colorize_cli.demo import MANIFEST, SAMPLES


def cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    return run_cli(capsys, *args)


def test_demo_writes_images_sheet_page_and_table(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "demo"
    code, stdout, err = cli(capsys, "demo", "--out", out, "--limit", "2", "--device", "cpu")
    assert code == 0, err
    names = [name for name, _ in SAMPLES[:2]]
    for name in names:
        original = Image.open(out / "images" / f"{name}-original.png")
        gray = Image.open(out / "images" / f"{name}-gray.png")
        colorized = Image.open(out / "images" / f"{name}-colorized.png")
        assert original.mode == "RGB" and gray.mode == "L" and colorized.mode == "RGB"
        assert colorized.size == gray.size == original.size
        assert np.array_equal(np.asarray(colorized.convert("L")), np.asarray(original.convert("L")))
        assert re.search(rf"{name}\W+model", stdout) and re.search(r"\W+gray\W", stdout)
    assert "mean" in stdout and "CIEDE2000" in stdout and "PSNR" in stdout
    sheet = Image.open(out / "contact-sheet.png")
    assert sheet.format == "PNG" and sheet.height > 2 * 180
    page = (out / "index.html").read_text()
    links = re.findall(r'src="([^"]+)"', page)
    assert len(links) == 6 and all(not link.startswith(("/", "http")) and (out / link).is_file() for link in links)
    assert not (out / "images" / f"{SAMPLES[2][0]}-gray.png").exists()  # --limit 2


def test_demo_replaces_its_own_files_but_never_a_users(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "demo"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert cli(capsys, "demo", "--out", out, "--limit", "1", "--device", "cpu")[0] == 0
    assert cli(capsys, "demo", "--out", out, "--limit", "1", "--device", "cpu")[0] == 0  # its own files: replaced
    assert (out / "notes.txt").read_text() == "mine"
    assert "index.html" in json.loads((out / MANIFEST).read_text())

    (out / "index.html").write_text("<p>my edits</p>")
    sheet = (out / "contact-sheet.png").read_bytes()
    code, _, err = cli(capsys, "demo", "--out", out, "--limit", "1", "--device", "cpu")
    assert code == 1
    assert "index.html exist(s) and were not written by `colorize demo`" in err and "nothing was written" in err
    assert (out / "index.html").read_text() == "<p>my edits</p>"
    assert (out / "contact-sheet.png").read_bytes() == sheet
