"""Bad input, odd paths, unwritable folders and full disks never crash a command or cost the
user a file (issue 8).

The bad-input matrix: every command that reads images runs once over the corpus of
tests/badfiles.py (broken and odd files mixed with good photos, plus a symlink loop), and each
(command, file) pair is its own test: a file the command cannot use is named on exactly one
line with the reason, a file it can use is used, and the rest of the batch is processed.
Then the whole-command cases (a missing path, a symlink loop as the argument, a read-only
output folder, output inside the input folder, a name starting with a dash), checkpoints
that are pickles in disguise, and a disk that fills up while outputs are written.

The exit-code rule checked throughout (README, "Exit codes"):
  0  the command produced its output; every input it could not use is named on stderr
     ("skipped FILE: reason") and counted in its summary;
  1  it produced nothing, or had to stop: no usable input, a missing path, an unusable model,
     an output it cannot write (read-only folder, disk full); one "error: FILE: reason" line;
  2  a usage error (unknown option, bad value), before any work.
`colorize infer` deviates: it exits 1 when any photo was skipped (INFER_SKIP_EXIT).
"""

from __future__ import annotations

import contextlib
import csv
import errno
import functools
import hashlib
import io
import json
import os
import pickle
import pickletools
import re
import shutil
import subprocess
import threading
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
import torch
from badfiles import BROKEN, CASES, GOOD, ODD, good_names, make_corpus, photo, symlink_loop
from PIL import Image

from colorize_cli.cli import main
from colorize_cli.imageio import open_image
from colorize_cli.checkpoint import save_checkpoint
from colorize_cli.model import ModelConfig, build

CFG = ModelConfig(size=32, width=8)
COMMANDS = ("prep", "infer", "evaluate-folders", "evaluate-model", "train", "survey", "crawl")
LOOP = "symlink-loop"
LOOP_NAME = "loop.jpg"

# Odd but valid files that a command refuses by its own rule (a regex for the reason).
OWN_RULES: dict[str, dict[str, str]] = {
    "prep": {"16-bit-gray-png": r"grayscale", "1x1": r"too small", "10000x10": r"too small"},
    "train": {"16-bit-gray-png": r"grayscale", "1x1": r"too small", "10000x10": r"too small"},
    "infer": {"1x1": r"too small", "10000x10": r"too small"},
    "evaluate-folders": {"1x1": r"too small", "10000x10": r"too small"},
    "evaluate-model": {"1x1": r"too small", "10000x10": r"too small"},
    "survey": {"1x1": r"too small", "10000x10": r"too small"},
    "crawl": {"1x1": r"too-small", "10000x10": r"too-small", "16-bit-gray-png": r"grayscale"},
}
# A symlink loop cannot be read; crawl meets it as a URL the server cannot answer.
LOOP_REASON = {cmd: r"symbolic links" for cmd in COMMANDS} | {"crawl": r"download-failed.*HTTP 404"}
INFER_SKIP_EXIT = 1  # the documented deviation: infer exits 1 when any photo was skipped


def expected_reason(cmd: str, key: str) -> str | None:
    """None when `cmd` must use the file; else the regex its reason must match."""
    if key == LOOP:
        return LOOP_REASON[cmd]
    case = CASES[key]
    return case.reason if case.broken else OWN_RULES[cmd].get(key)


def usable(cmd: str) -> list[str]:
    """Corpus keys (and good photo names) that `cmd` uses."""
    return [k for k in ODD if k not in OWN_RULES[cmd]] + good_names()


# --- running the CLI -----------------------------------------------------------------------


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err

    def lines_naming(self, name: str) -> list[str]:
        return [line for line in self.text.splitlines() if name in line]

    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("error:")]


def cli(*args: str | Path, cwd: Path | None = None) -> Result:
    """`colorize ARGS` in this process (torch is imported once for the whole module)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            (contextlib.chdir(cwd) if cwd else contextlib.nullcontext()):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else int(e.code is not None)
    return Result(code, out.getvalue(), err.getvalue())


def assert_no_crash(r: Result) -> None:
    """No traceback, and no unexpected exception (printed with the --debug hint)."""
    assert "Traceback" not in r.text, r.text
    assert "run with --debug" not in r.text, r.text


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every regular file under a folder (links not followed)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def temp_leftovers(folder: Path) -> list[Path]:
    """atomic_path's temporary files (.NAME.XXXX.tmp) and anything else half-made."""
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


# --- the corpus and the runs ---------------------------------------------------------------


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("reliability")


@pytest.fixture(scope="module")
def corpus(work: Path) -> dict[str, Path]:
    paths = make_corpus(work / "corpus")
    paths[LOOP] = symlink_loop(work / "corpus", LOOP_NAME)
    return paths


@pytest.fixture(scope="module")
def corpus_before(corpus: dict[str, Path]) -> dict[str, str]:
    return snapshot(corpus["zero-byte"].parent)


@pytest.fixture(scope="module")
def checkpoint(work: Path) -> Path:
    """A tiny generator (32 px, width 8) as a .safetensors file, as `colorize train` writes them."""
    torch.manual_seed(0)
    g, _ = build(CFG)
    path = work / "tiny.safetensors"
    save_checkpoint(path, {"generator." + k: v for k, v in g.state_dict().items()}, CFG)
    return path


@dataclass
class Ran:
    """One command's run over the corpus, and where it wrote."""

    result: Result
    out: Path
    extra: Result | None = None  # survey: the run that has to visit every file


def _run_prep(work: Path, corpus: dict[str, Path], ckpt: Path) -> Ran:
    out = work / "prep-out"
    return Ran(cli("prep", corpus["zero-byte"].parent, out, "--size", "32", "--workers", "2"), out)


def _run_infer(work: Path, corpus: dict[str, Path], ckpt: Path) -> Ran:
    out = work / "infer-out"
    return Ran(cli("infer", corpus["zero-byte"].parent, out, "--model", ckpt, "--device", "cpu"), out)


def _run_evaluate_folders(work: Path, corpus: dict[str, Path], ckpt: Path) -> Ran:
    truth = work / "truth"
    truth.mkdir()
    for i, key in enumerate(corpus):
        photo(300 + i).save(truth / f"{Path(corpus[key].name).stem}.png")
    out = work / "evaluate-folders.csv"
    return Ran(cli("evaluate", corpus["zero-byte"].parent, "--truth", truth, "--csv", out), out)


def _run_evaluate_model(work: Path, corpus: dict[str, Path], ckpt: Path) -> Ran:
    out = work / "evaluate-model.csv"
    return Ran(cli("evaluate", corpus["zero-byte"].parent, "--model", ckpt, "--device", "cpu", "--csv", out), out)


def _run_train(work: Path, corpus: dict[str, Path], ckpt: Path) -> Ran:
    out = work / "train-run"
    return Ran(cli("train", corpus["zero-byte"].parent, "--out", out, "--size", "32", "--width", "8", "--epochs", "1",
                   "--batch-size", "8", "--device", "cpu", "--threads", "2"), out)


def _run_survey(work: Path, corpus: dict[str, Path], ckpt: Path) -> Ran:
    """--n = every usable pair: the study is built. A second run asks for one more, so it
    has to try every file before it gives up: that one names every unusable file."""
    n = len(usable("survey"))
    out = work / "study"
    built = cli("survey", corpus["zero-byte"].parent, "--out", out, "--model", ckpt, "--n", n)
    tried_all = cli("survey", corpus["zero-byte"].parent, "--out", work / "study-too-big", "--model", ckpt, "--n", n + 1)
    return Ran(built, out, tried_all)


class _QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass


@contextlib.contextmanager
def serve_folder(folder: Path) -> Iterator[str]:
    """The folder's files over HTTP on 127.0.0.1 (content types guessed from the names)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietFiles, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def _run_crawl(work: Path, corpus: dict[str, Path], ckpt: Path) -> Ran:
    with serve_folder(corpus["zero-byte"].parent) as base:
        urls = work / "urls.txt"
        urls.write_text("".join(f"{base}{quote(p.name)}\n" for p in corpus.values()), encoding="utf-8")
        r = cli("crawl", "beach", "--engine", "urls", "--urls", urls, "--out", work / "raw", "-n", "100",
                "--min-size", "16", "--threads", "2", "--timeout", "10")
    return Ran(r, work / "raw" / "beach")


RUNNERS: dict[str, Callable[[Path, dict[str, Path], Path], Ran]] = {
    "prep": _run_prep, "infer": _run_infer, "evaluate-folders": _run_evaluate_folders,
    "evaluate-model": _run_evaluate_model, "train": _run_train, "survey": _run_survey, "crawl": _run_crawl,
}


@pytest.fixture(scope="module")
def get(work, corpus, checkpoint, corpus_before) -> Callable[[str], Ran]:
    """Each command's run over the corpus, made on first use and shared by its tests."""
    runs: dict[str, Ran] = {}

    def run(cmd: str) -> Ran:
        if cmd not in runs:
            runs[cmd] = RUNNERS[cmd](work, corpus, checkpoint)
        return runs[cmd]

    return run


# --- the matrix ----------------------------------------------------------------------------


def _manifest(folder: Path) -> dict[str, dict[str, str]]:
    """crawl's manifest rows by the file name at the end of their URL."""
    with open(folder / "manifest.csv", newline="", encoding="utf-8") as f:
        return {row["url"].rsplit("/", 1)[-1]: row for row in csv.DictReader(f)}


def _csv_rows(path: Path, key: str) -> dict[str, dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return {row[key]: row for row in csv.DictReader(f)}


def check_used(cmd: str, path: Path, run: Ran) -> None:
    """The command used the file, and used it right (upright, full size)."""
    upright = open_image(path)
    if cmd == "prep":
        row = next(r for r in _csv_rows(run.out / "prep.csv", "source").values() if r["source"].endswith(path.name))
        assert row["status"] == "kept", row
        assert (int(row["width"]), int(row["height"])) == upright.size  # EXIF rotation applied
        pair = Image.open(run.out / row["output"])
        assert pair.size == (64, 32)
    elif cmd == "infer":
        out = run.out / f"{path.stem}.png"
        colorized = Image.open(out)
        assert colorized.size == upright.size
        assert np.array_equal(np.asarray(colorized.convert("L")), np.asarray(upright.convert("L")))
    elif cmd.startswith("evaluate"):
        assert path.stem in _csv_rows(run.out, "image")
    elif cmd == "train":
        assert not run.result.lines_naming(path.name)
    elif cmd == "survey":
        record = json.loads((run.out / "study.json").read_text(encoding="utf-8"))
        assert path.name in {t["image"] for t in record["trials"]}
    elif cmd == "crawl":
        row = _manifest(run.out)[quote(path.name)]
        assert row["status"] == "kept", row
        assert (int(row["width"]), int(row["height"])) == upright.size
        assert open_image(run.out / row["file"]).size == upright.size
    else:
        raise AssertionError(cmd)


def check_named(cmd: str, path: Path, reason: str, run: Ran) -> None:
    """Exactly one line names the file, with the reason it was not used."""
    if cmd == "crawl":  # crawl's one line per URL is its manifest row
        row = _manifest(run.out)[quote(path.name)]
        line = f"{row['status']}: {row['detail']}"
        assert row["file"] == "" and not any(run.out.glob(f"*{path.stem}*"))
    else:
        result = run.extra if cmd == "survey" else run.result
        lines = result.lines_naming(path.name)
        assert len(lines) == 1, f"{path.name}: {lines}"
        line = lines[0]
        assert line.startswith("skipped"), line
    assert re.search(reason, line, re.IGNORECASE), f"{line!r} does not give the reason /{reason}/"


MATRIX = [(cmd, key) for cmd in COMMANDS for key in (*CASES, LOOP)]


@pytest.mark.parametrize(("cmd", "key"), MATRIX, ids=[f"{c}-{k}" for c, k in MATRIX])
def test_bad_input_matrix(get, corpus, cmd: str, key: str) -> None:
    run = get(cmd)
    assert_no_crash(run.result)
    reason = expected_reason(cmd, key)
    if reason is None:
        check_used(cmd, corpus[key], run)
    else:
        check_named(cmd, corpus[key], reason, run)


@pytest.mark.parametrize("cmd", COMMANDS)
def test_the_rest_of_the_batch_is_processed_and_the_exit_code_follows_the_rule(get, corpus, corpus_before, cmd) -> None:
    run = get(cmd)
    assert_no_crash(run.result)
    assert run.result.code == (INFER_SKIP_EXIT if cmd == "infer" else 0), run.result.text
    for name in good_names():
        check_used(cmd, corpus[name], run)
    n = len(usable(cmd))
    if cmd == "prep":
        rows = _csv_rows(run.out / "prep.csv", "source")
        assert sum(r["status"] == "kept" for r in rows.values()) == n
        assert len(list((run.out / "train").iterdir())) + len(list((run.out / "test").iterdir())) == n
    elif cmd == "infer":
        assert len(list(run.out.iterdir())) == n
        assert f"colorized {n} of {len(corpus)} photos" in run.result.err
    elif cmd.startswith("evaluate"):
        assert len(_csv_rows(run.out, "image")) == n
    elif cmd == "train":
        m = re.search(r"(\d+) train, (\d+) test photos?", run.result.err)
        assert m and int(m[1]) + int(m[2]) == n, run.result.err
        assert (run.out / "best.safetensors").is_file()
    elif cmd == "survey":
        assert len(json.loads((run.out / "study.json").read_text(encoding="utf-8"))["trials"]) == n
        # The run that asked for more than there is: exit 1, one error line, no folder.
        assert run.extra.code == 1 and run.extra.error_lines() == [
            f"error: {corpus['zero-byte'].parent}: only {n} usable A|B pairs, the study needs {n + 1} "
            "(--n plus --practice plus --vigilance)"]
        assert not (run.out.parent / "study-too-big").exists()
    elif cmd == "crawl":
        rows = _manifest(run.out)
        assert sum(r["status"] == "kept" for r in rows.values()) == n
        assert len(rows) == len(corpus)
    # The inputs are never touched.
    assert snapshot(corpus["zero-byte"].parent) == corpus_before


def test_corpus_has_every_case_the_issue_lists() -> None:
    """The issue's list, so that a case dropped from badfiles.py is noticed."""
    assert set(BROKEN) == {"zero-byte", "truncated-jpeg", "truncated-png", "text-as-jpg", "html-as-jpg",
                           "bomb-dimensions"}
    assert {"1x1", "10000x10", "16-bit-rgb-png", "cmyk-jpeg", "palette-transparency", "animated-gif",
            "exif-orientation-6", "exif-orientation-8", "name-with-spaces", "name-unicode",
            "name-leading-dash"} <= set(ODD)
    assert GOOD >= 2


# --- whole-command cases -------------------------------------------------------------------


def _good_folder(folder: Path, n: int = 4) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        photo(400 + i).save(folder / f"photo-{i}.png")
    return folder


@pytest.fixture(scope="module")
def pairs_dir(work: Path) -> Path:
    """A small `prep` output (DATA/test holds 64x32 A|B pairs)."""
    data = work / "pairs"
    r = cli("prep", _good_folder(work / "pair-photos", 6), data, "--size", "32", "--test-fraction", "0.5")
    assert r.code == 0, r.text
    return data


def _command(cmd: str, src: Path, out: Path, ckpt: Path, pairs: Path) -> list[str | Path]:
    """`cmd` reading SRC (a photo folder, or for survey/evaluate-model a pair folder) into OUT."""
    return {
        "prep": ["prep", src, out, "--size", "32"],
        "infer": ["infer", src, out, "--model", ckpt, "--device", "cpu"],
        "evaluate-folders": ["evaluate", src, "--truth", src, "--csv", out],
        "evaluate-model": ["evaluate", src, "--model", ckpt, "--device", "cpu", "--csv", out],
        "train": ["train", src, "--out", out, "--size", "32", "--width", "8", "--epochs", "1", "--device", "cpu"],
        "survey": ["survey", src, "--out", out, "--model", ckpt, "--n", "2"],
        "crawl": ["crawl", "beach", "--engine", "urls", "--urls", src, "--out", out, "--min-size", "16"],
    }[cmd]


def _input_for(cmd: str, work: Path, pairs: Path) -> Path:
    if cmd in ("survey", "evaluate-model"):
        return pairs / "test"
    if cmd == "crawl":
        urls = work / "no-urls.txt"
        urls.write_text("http://127.0.0.1:9/nothing-listens-here.jpg\n")
        return urls
    return _good_folder(work / "good")


@pytest.mark.parametrize("cmd", COMMANDS)
def test_a_missing_input_is_one_error_line_and_exit_1(work, checkpoint, pairs_dir, cmd) -> None:
    missing = work / "no such folder"
    r = cli(*_command(cmd, missing, work / f"missing-{cmd}-out", checkpoint, pairs_dir))
    assert_no_crash(r)
    assert r.code == 1, r.text
    assert len(r.error_lines()) == 1 and str(missing) in r.error_lines()[0], r.err
    assert re.search(r"no such", r.error_lines()[0])
    assert not (work / f"missing-{cmd}-out").exists()


@pytest.mark.parametrize("cmd", COMMANDS)
def test_a_usage_error_exits_2_before_any_work(work, checkpoint, pairs_dir, cmd) -> None:
    out = work / f"usage-{cmd}-out"
    r = cli(*_command(cmd, _input_for(cmd, work, pairs_dir), out, checkpoint, pairs_dir), "--no-such-option")
    assert r.code == 2 and "No such option: --no-such-option" in r.err, r.text
    assert not out.exists()


@pytest.mark.parametrize("cmd", ["infer", "evaluate-model", "survey"])
def test_a_missing_model_is_one_error_line_and_exit_1(work, pairs_dir, cmd) -> None:
    missing = work / "no-model.safetensors"
    src = _input_for(cmd, work, pairs_dir)
    r = cli(*_command(cmd, src, work / f"nomodel-{cmd}-out", missing, pairs_dir))
    assert_no_crash(r)
    assert r.code == 1 and r.error_lines() == [f"error: {missing}: no such checkpoint file"], r.err
    assert not (work / f"nomodel-{cmd}-out").exists()


@pytest.mark.parametrize("cmd", [c for c in COMMANDS if c != "crawl"])
def test_a_symlink_loop_as_the_input_is_one_error_line_and_exit_1(work, checkpoint, pairs_dir, cmd) -> None:
    loop = symlink_loop(work, f"loop-{cmd}")
    r = cli(*_command(cmd, loop, work / f"loop-{cmd}-out", checkpoint, pairs_dir))
    assert_no_crash(r)
    assert r.code == 1, r.text
    assert len(r.error_lines()) == 1 and str(loop) in r.error_lines()[0], r.err


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder no one may write to, holding one file of the user's. As root (who may write
    anywhere) that takes a read-only bind mount; skipped when neither works."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    (folder / "user-notes.txt").write_text("the user's own file\n")
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "--bind", "-o", "ro", str(folder), str(folder)], capture_output=True).returncode == 0
    if mounted:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], capture_output=True)
    try:
        with contextlib.suppress(OSError):
            (folder / "probe").write_text("x")
            pytest.skip("cannot make a read-only folder here (no bind mount as root)")
        yield folder
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.parametrize("cmd", COMMANDS)
def test_a_read_only_output_folder_is_one_error_line_and_exit_1(work, checkpoint, pairs_dir, read_only_dir, cmd) -> None:
    before = snapshot(read_only_dir)
    out = read_only_dir / ("scores.csv" if cmd.startswith("evaluate") else "out")
    src = _input_for(cmd, work, pairs_dir)
    r = cli(*_command(cmd, src, out, checkpoint, pairs_dir))
    assert_no_crash(r)
    assert r.code == 1, r.text
    assert len(r.error_lines()) == 1, r.err
    line = r.error_lines()[0]
    assert str(read_only_dir) in line and re.search(r"read-only file system|permission denied", line, re.I), line
    assert snapshot(read_only_dir) == before


def test_prep_output_inside_its_input_is_never_read_back(work) -> None:
    src = _good_folder(work / "nest-prep")
    first = cli("prep", src, src / "data", "--size", "32")
    again = cli("prep", src, src / "data", "--size", "32")
    assert first.code == again.code == 0, first.text + again.text
    rows = _csv_rows(src / "data" / "prep.csv", "source")
    assert sorted(Path(s).name for s in rows) == [f"photo-{i}.png" for i in range(4)]
    assert "4 photos already prepared" in again.err


def test_infer_output_inside_its_input_is_never_colorized_again(work, checkpoint) -> None:
    src = _good_folder(work / "nest-infer")
    first = cli("infer", src, src / "out", "--model", checkpoint, "--recursive", "--device", "cpu")
    again = cli("infer", src, src / "out", "--model", checkpoint, "--recursive", "--device", "cpu", "--overwrite")
    assert first.code == again.code == 0, first.text + again.text
    assert "colorized 4 of 4 photos" in first.err and "colorized 4 of 4 photos" in again.err
    assert sorted(p.name for p in (src / "out").iterdir()) == [f"photo-{i}.png" for i in range(4)]


def test_evaluate_csv_inside_the_folder_it_scores(work) -> None:
    src = _good_folder(work / "nest-evaluate")
    runs = [cli("evaluate", src, "--truth", src, "--csv", src / "scores.csv", "--overwrite") for _ in range(2)]
    assert [r.code for r in runs] == [0, 0], runs[0].text
    assert len(_csv_rows(src / "scores.csv", "image")) == 4


def test_train_and_survey_outputs_inside_their_input(work, checkpoint, pairs_dir) -> None:
    src = _good_folder(work / "nest-train", 6)
    args = ["--size", "32", "--width", "8", "--device", "cpu", "--threads", "2"]
    first = cli("train", src, "--out", src / "run", "--epochs", "1", *args)
    resumed = cli("train", "--resume", src / "run", "--epochs", "2", "--device", "cpu", "--threads", "2")
    assert first.code == resumed.code == 0, first.text + resumed.text
    counts = [re.search(r"(\d+) train, (\d+) test photos?", r.err).groups() for r in (first, resumed)]
    assert counts[0] == counts[1]  # the run's samples/*.png did not join the data
    test = pairs_dir / "test"
    built = [cli("survey", test, "--out", test / f"study-{k}", "--model", checkpoint, "--n", "3") for k in (1, 2)]
    assert [r.code for r in built] == [0, 0], built[0].text + built[1].text
    record = json.loads((test / "study-2" / "study.json").read_text(encoding="utf-8"))
    assert {t["image"] for t in record["trials"]} == {p.name for p in test.glob("*.png")}  # no study image


def test_a_name_starting_with_a_dash_needs_double_dash(corpus, checkpoint, tmp_path) -> None:
    """`-rf.jpg` alone reads as an option (usage error, exit 2, nothing written); after `--`
    it is a file name."""
    folder = corpus["name-leading-dash"].parent
    as_option = cli("infer", "--model", checkpoint, "-rf.jpg", tmp_path / "a.png", cwd=folder)
    assert as_option.code == 2 and "No such option" in as_option.err
    as_name = cli("infer", "--model", checkpoint, "--device", "cpu", "--", "-rf.jpg", tmp_path / "a.png", cwd=folder)
    assert as_name.code == 0, as_name.text
    assert Image.open(tmp_path / "a.png").size == (64, 32)
    prep = cli("prep", "--size", "32", "--", "-rf.jpg", tmp_path / "data", cwd=folder)
    assert prep.code == 0 and len(list((tmp_path / "data").rglob("*.png"))) == 1, prep.text


# --- pickles in disguise -------------------------------------------------------------------


class _Payload:
    """Unpickling this runs a shell command that makes the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def evil_bytes(fmt: str, marker: Path) -> bytes:
    """A pickle (protocol 0, 2 or 4) or a torch.save-style zip whose loading runs os.system."""
    if fmt == "zip":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("archive/data.pkl", pickle.dumps(_Payload(marker), protocol=2))
            z.writestr("archive/version", "3\n")
        return buf.getvalue()
    return pickle.dumps(_Payload(marker), protocol=int(fmt.removeprefix("pickle")))


def test_the_payload_is_armed(tmp_path) -> None:
    """Each pickle really would call os.system (read with pickletools, never unpickled)."""
    for fmt in ("pickle0", "pickle2", "pickle4"):
        ops = [(op.name, arg) for op, arg, _ in pickletools.genops(evil_bytes(fmt, tmp_path / "m"))]
        names = {str(arg) for _, arg in ops if arg is not None}
        assert any("system" in n for n in names) and any(o == "REDUCE" for o, _ in ops), fmt


PICKLES = [(cmd, fmt, suffix) for cmd in ("infer", "evaluate", "train-resume", "infer-run-folder")
           for fmt in ("pickle0", "pickle2", "pickle4", "zip")
           for suffix in ((".safetensors",) if cmd in ("train-resume", "infer-run-folder") else (".safetensors", ".pt"))]


@pytest.mark.parametrize(("cmd", "fmt", "suffix"), PICKLES, ids=[f"{c}-{f}{s}" for c, f, s in PICKLES])
def test_a_pickle_checkpoint_is_refused_and_never_run(tmp_path, pairs_dir, cmd, fmt, suffix) -> None:
    marker = tmp_path / "pwned"
    data = evil_bytes(fmt, marker)
    src = _good_folder(tmp_path / "photos", 2)
    if cmd == "train-resume":
        from colorize_cli.train import TrainConfig, write_config

        run = tmp_path / "run"
        write_config(TrainConfig(data=str(src), out=str(run), model=CFG, epochs=2, device="cpu"))
        (run / "last.safetensors").write_bytes(data)
        target, r = run / "last.safetensors", cli("train", "--resume", run)
    elif cmd == "infer-run-folder":
        run = tmp_path / "run"
        run.mkdir()
        target = run / "best.safetensors"
        target.write_bytes(data)
        r = cli("infer", src, tmp_path / "out", "--model", run, "--device", "cpu")
    else:
        target = tmp_path / f"model{suffix}"
        target.write_bytes(data)
        r = (cli("infer", src, tmp_path / "out", "--model", target, "--device", "cpu") if cmd == "infer"
             else cli("evaluate", pairs_dir / "test", "--model", target, "--device", "cpu"))
    assert_no_crash(r)
    assert r.code == 1
    assert len(r.error_lines()) == 1, r.err
    line = r.error_lines()[0]
    assert str(target) in line and re.search(r"only safetensors|not a valid safetensors", line), line
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


# --- a full disk ---------------------------------------------------------------------------


class _FillingFile:
    """A file whose writes fail with ENOSPC once the disk's budget of bytes is spent."""

    def __init__(self, f, disk: "FullDisk") -> None:
        self._f, self._disk = f, disk

    def write(self, data):
        with self._disk.lock:
            room = self._disk.budget - self._disk.used
            if len(data) > room:
                self._f.write(data[:max(room, 0)])
                self._disk.used = self._disk.budget
                self._disk.failures += 1
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self._f.name)
            self._disk.used += len(data)
        return self._f.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._f.close()

    def __getattr__(self, name: str):
        return getattr(self._f, name)


class FullDisk:
    """Patches open() so that writes to atomic_path's temporary files (.NAME.XXXX.tmp) share
    a budget of `budget` bytes, then fail as a full disk does."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, budget: int) -> None:
        self.budget, self.used, self.failures = budget, 0, 0
        self.lock = threading.Lock()
        real_open = open

        def patched(file, mode="r", *args, **kwargs):
            f = real_open(file, mode, *args, **kwargs)
            name = os.path.basename(os.fspath(file)) if isinstance(file, (str, os.PathLike)) else ""
            if any(c in mode for c in "wax") and name.startswith(".") and name.endswith(".tmp"):
                return _FillingFile(f, self)
            return f

        import builtins

        monkeypatch.setattr(builtins, "open", patched)
        monkeypatch.setattr(io, "open", patched)


def _noise_photos(folder: Path, n: int, side: int = 48, seed: int = 7) -> Path:
    """Photos whose PNGs hardly compress, so outputs have predictable, sizeable byte counts."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(folder / f"noise-{i}.png")
    return folder


def assert_disk_full_stop(r: Result, where: Path) -> None:
    assert_no_crash(r)
    assert r.code == 1, r.text
    assert len(r.error_lines()) == 1, r.err
    line = r.error_lines()[0]
    assert str(where) in line and "cannot write (disk full: No space left on device)" in line, line


def test_disk_full_during_prep_keeps_the_old_data_set_and_leaves_no_partial_file(tmp_path, monkeypatch) -> None:
    src = _noise_photos(tmp_path / "photos", 3)
    dest = tmp_path / "data"
    assert cli("prep", src, dest, "--size", "32", "--workers", "1").code == 0
    before = snapshot(dest)
    _noise_photos(tmp_path / "more", 6, seed=8)
    for p in (tmp_path / "more").iterdir():
        shutil.move(p, src / f"more-{p.name}")
    disk = FullDisk(monkeypatch, budget=8000)  # two or so pairs of 64x32 noise, then full
    r = cli("prep", src, dest, "--size", "32", "--workers", "1")
    assert_disk_full_stop(r, dest)
    assert disk.failures >= 1
    assert temp_leftovers(dest) == []
    after = snapshot(dest)
    assert {k: after[k] for k in before} == before  # prep.csv and the old pairs untouched
    for name in set(after) - set(before):  # pairs staged for the next run: complete
        assert name.startswith(".prep-staging/") and Image.open(dest / name).size == (64, 32)
    monkeypatch.undo()
    done = cli("prep", src, dest, "--size", "32", "--workers", "1")  # space again: it goes on
    assert done.code == 0, done.text
    assert len(list((dest / "train").iterdir())) + len(list((dest / "test").iterdir())) == 9


def test_disk_full_during_infer_stops_with_complete_outputs_only(tmp_path, monkeypatch, checkpoint) -> None:
    src = _noise_photos(tmp_path / "photos", 5)
    out = tmp_path / "out"
    out.mkdir()
    (out / "user-notes.txt").write_text("keep me\n")
    disk = FullDisk(monkeypatch, budget=12000)  # each 48x48 output is about 5-7 KB
    r = cli("infer", src, out, "--model", checkpoint, "--device", "cpu", "--batch-size", "1")
    assert_disk_full_stop(r, out)
    assert disk.failures == 1  # it stopped at the first failed write
    assert temp_leftovers(out) == []
    assert (out / "user-notes.txt").read_text() == "keep me\n"
    written = sorted(out.glob("*.png"))
    assert 1 <= len(written) < 5
    for p in written:
        assert open_image(p).size == (48, 48)


def test_disk_full_writing_evaluate_csv_keeps_the_old_file(tmp_path, monkeypatch) -> None:
    src = _good_folder(tmp_path / "photos")
    old = tmp_path / "scores.csv"
    old.write_text("the user's earlier scores\n")
    disk = FullDisk(monkeypatch, budget=100)
    r = cli("evaluate", src, "--truth", src, "--csv", old, "--overwrite")
    assert_disk_full_stop(r, old)
    assert disk.failures == 1
    assert old.read_text() == "the user's earlier scores\n"
    assert temp_leftovers(tmp_path) == []


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB file system (tmpfs); skipped where mounting is not allowed."""
    mnt = tmp_path / "tiny-disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip() or 'not root'})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_a_real_full_disk_stops_infer_and_prep_cleanly(tmp_path, tiny_tmpfs, checkpoint) -> None:
    src = _noise_photos(tmp_path / "photos", 24, side=256)  # each output 96-190 KB: 1 MiB holds 5 to 10
    (tiny_tmpfs / "user-notes.txt").write_text("keep me\n")
    r = cli("infer", src, tiny_tmpfs / "out", "--model", checkpoint, "--device", "cpu", "--batch-size", "1")
    assert_disk_full_stop(r, tiny_tmpfs / "out")
    assert temp_leftovers(tiny_tmpfs) == []
    for p in (tiny_tmpfs / "out").iterdir():
        assert open_image(p).size == (256, 256)
    shutil.rmtree(tiny_tmpfs / "out")
    r = cli("prep", src, tiny_tmpfs / "data", "--size", "256", "--workers", "1")
    assert_disk_full_stop(r, tiny_tmpfs / "data")
    assert temp_leftovers(tiny_tmpfs) == []
    assert (tiny_tmpfs / "user-notes.txt").read_text() == "keep me\n"


def test_a_real_full_disk_stops_train_without_a_partial_checkpoint(tmp_path, tiny_tmpfs) -> None:
    """A width-16 network's checkpoint (weights, optimizer state) does not fit in 1 MiB."""
    src = _good_folder(tmp_path / "photos", 6)
    run = tiny_tmpfs / "run"
    r = cli("train", src, "--out", run, "--size", "32", "--width", "16", "--epochs", "1", "--device", "cpu",
            "--threads", "2")
    assert_disk_full_stop(r, run)
    assert temp_leftovers(tiny_tmpfs) == [] and not list(run.glob("*.safetensors"))
    json.loads((run / "config.json").read_text())
