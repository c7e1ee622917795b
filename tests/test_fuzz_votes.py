"""`colorize evaluate votes.csv` on any text at all: it parses, or it says in one line what is
wrong and where; it never fails with a traceback (issue 8).

Hypothesis writes the files: arbitrary text and bytes, and CSV-shaped text built from the
cells, delimiters, quotes and line endings that real vote files (and broken ones) contain.
Everything goes through `votes.read_votes` and the statistics and report built on it, and a
sample through the command line.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, example, find, given, settings
from hypothesis import strategies as st
from rich.console import Console

from colorize_cli.cli import main
from colorize_cli.errors import UserError
from colorize_cli.votes import VoteSummary, read_votes, render

CELLS = st.one_of(
    st.sampled_from(["0", "1", "", " 1 ", "2", "-1", "yes", "0.5", "1e309", "nan", "inf", "-0", "１"]),
    st.sampled_from(["image", "rater", "choice", "real_side", "response_ms", "IMAGE", "Rater", "left", "right",
                     "LEFT", "up", "ann", "ben", "a", "b", "=cmd()", "[bold]x[/bold]", "1200", "-5", "12.5"]),
    st.text(max_size=6),
)
DELIMITERS = st.sampled_from([",", ";", "\t", ",", "|"])
ENDINGS = st.sampled_from(["\n", "\r\n", "\r", "\n\n"])


@st.composite
def csv_text(draw: st.DrawFn) -> str:
    """Rows of cells, sometimes quoted, mostly rectangular, with a header now and then."""
    delim, end = draw(DELIMITERS), draw(ENDINGS)
    width = draw(st.integers(1, 6))
    rows = []
    if draw(st.booleans()):
        rows.append(draw(st.permutations(["image", "rater", "choice", "real_side", "response_ms"]))[:width])
    for _ in range(draw(st.integers(0, 8))):
        n = width if draw(st.integers(0, 9)) else draw(st.integers(0, 8))  # ragged one time in ten
        rows.append([draw(CELLS) for _ in range(n)])

    def cell(c: str) -> str:
        quote = draw(st.sampled_from(["", "", "", '"', "'"]))
        return f"{quote}{c}{quote}"

    text = end.join(delim.join(cell(c) for c in row) for row in rows)
    return draw(st.sampled_from(["", "\ufeff"])) + text + draw(st.sampled_from(["", end]))


ANY_TEXT = st.one_of(csv_text(), st.text(max_size=200))


def _write(folder: str, data: str | bytes) -> Path:
    path = Path(folder) / "votes.csv"
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8", newline="")
    return path


def check(path: Path) -> str:
    """Parse and report; returns "ok" or "error". Any other exception fails the test."""
    try:
        v = read_votes(path)
    except UserError as e:
        msg = str(e)
        assert msg.startswith(str(path)), msg  # names the file
        assert "\n" not in msg and "\r" not in msg, msg  # one line
        return "error"
    # A parsed file is a consistent study.
    assert v.matrix.shape == (len(v.images), len(v.raters)) == v.blank.shape
    votes = v.matrix[~np.isnan(v.matrix)]
    assert votes.size and set(np.unique(votes)) <= {0.0, 1.0}
    assert len(set(v.images)) == len(v.images) and len(set(v.raters)) == len(v.raters)
    study = VoteSummary.of(v)
    assert 0.0 <= study.overall.rate <= 1.0 and 0.0 <= study.overall.p_value <= 1.0
    assert math.isnan(study.kappa) or study.kappa <= 1.0 + 1e-12
    json.dumps(study.to_json(5), allow_nan=False)
    render(study, 5, Console(file=io.StringIO(), width=100))
    return "ok"


@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(ANY_TEXT)
@example('"0\n";\n2')  # a rater name with a newline once split the error line
def test_any_text_parses_or_is_one_clear_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        check(_write(d, text))


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.binary(max_size=120))
def test_any_bytes_parse_or_are_one_clear_error(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        check(_write(d, data))


def test_the_fuzzer_reaches_both_outcomes() -> None:
    """The strategies make parseable studies as well as broken files (else the tests above
    would prove little): a search over csv_text finds an example of each."""

    def outcome(text: str) -> str:
        with tempfile.TemporaryDirectory() as d:
            return check(_write(d, text))

    search = settings(max_examples=3000, database=None, derandomize=True, deadline=None)
    for wanted in ("ok", "error"):
        find(csv_text(), lambda text, wanted=wanted: outcome(text) == wanted, settings=search)


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(ANY_TEXT)
@example("0\x1e0\r2")  # a control character inside the quoted cell once split the error line
def test_the_command_exits_0_or_1_with_one_error_line(text: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = _write(d, text)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(["evaluate", str(path), "--json"])
                code = 0
            except SystemExit as e:
                code = e.code
        assert "Traceback" not in err.getvalue() and "run with --debug" not in err.getvalue(), err.getvalue()
        if code == 0:
            assert json.loads(out.getvalue())["votes"] >= 1
        else:
            assert code == 1
            lines = err.getvalue().splitlines()
            assert len(lines) == 1 and lines[0].startswith(f"error: {path}"), lines
