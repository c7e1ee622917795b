"""Perceptual-study statistics: how often volunteers took a colorized photo for the real one.

Each vote is one trial of a two-alternative forced choice: a volunteer saw the colorized and
the real photo and said which one was real. A vote is 1 when they took the colorized photo for
the real one ("fooled") and 0 when they picked the real photo. A perfect colorizer cannot be
told from real photos, so its fooling rate is 50%: that is the ceiling, and the binomial test
asks whether the observed rate differs from it.

Two file formats, detected from the first line:
- wide (typed by hand): one row per image, one column per volunteer, cells 0/1 or blank; an
  optional first column names the images and an optional header row names the volunteers.
- long (written by `colorize survey serve`): a header with the columns image, rater, choice
  and optionally real_side (left/right) and response_ms; one vote per line.
Blank cells are missing votes: they are left out of every statistic and counted. Empty lines
are ignored.
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from colorize_cli import metrics
from colorize_cli.errors import UserError, one_line
from colorize_cli.files import path_text
from colorize_cli.terminal import plural

VOTE_MEANING = "1 = the colorized photo was taken for the real one, 0 = the real photo was picked, blank = no vote"
LONG_COLUMNS = ("image", "rater", "choice")
LONG_OPTIONAL = ("real_side", "response_ms")
SIDES = ("left", "right")


@dataclass(frozen=True)
class Votes:
    """A study as an image x rater matrix of 1, 0 and NaN (no vote), plus what the long format adds."""

    path: str  # as path_text: the report and its JSON hold a name that is not UTF-8 escaped
    format: str  # "wide" or "long"
    images: list[str]
    raters: list[str]
    matrix: np.ndarray  # (images, raters) float: 1 fooled, 0 not, NaN no vote
    blank: np.ndarray  # (images, raters) bool: the file has a blank vote cell here
    picked_left: np.ndarray | None = None  # long format with real_side: 1 where the left photo was chosen
    response_ms: np.ndarray | None = None  # long format with response_ms


# --- reading -----------------------------------------------------------------------------


def _rows(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, stripped cells) of every non-empty line; the delimiter is a comma unless
    the first line has none and has semicolons or tabs (spreadsheets in some locales)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, not a votes file") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    first = next((line for line in text.splitlines() if line.strip()), "")
    delim = ","
    if "," not in first:
        delim = ";" if ";" in first else "\t" if "\t" in first else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delim)
    rows = []
    start = 1
    try:
        for cells in reader:
            cells = [c.strip() for c in cells]
            if any(cells):
                rows.append((start, cells))
            start = reader.line_num + 1
    except csv.Error as e:
        raise UserError(f"{path}, line {reader.line_num}: not valid CSV ({e})") from None
    if not rows:
        raise UserError(f"{path}: empty file (no votes)")
    return rows


def _check_ragged(path: Path, rows: list[tuple[int, list[str]]]) -> None:
    line0, first = rows[0]
    for line, cells in rows[1:]:
        if len(cells) != len(first):
            raise UserError(f"{path}, line {line}: {len(cells)} cells, but line {line0} has {len(first)} (ragged rows)")


def _vote(path: Path, line: int, cell: str, where: str) -> float:
    if cell == "":
        return math.nan
    if cell in ("0", "1"):
        return float(cell)
    raise UserError(f"{path}, line {line}: {cell!r} {where} is not a vote ({VOTE_MEANING})")


def read_votes(path: str | os.PathLike) -> Votes:
    """Read a wide or long votes file; any malformed line is a UserError naming it."""
    path = Path(path)
    rows = _rows(path)
    _check_ragged(path, rows)
    head = [c.lower() for c in rows[0][1]]
    if "rater" in head or "choice" in head:
        return _read_long(path, rows)
    return _read_wide(path, rows)


def _read_wide(path: Path, rows: list[tuple[int, list[str]]]) -> Votes:
    """Detect the optional name column and header row from where non-vote text appears.

    The first column holds names if any data row (every row after the first, and the first
    one too when the rest of it is votes) has something other than 0, 1 or blank there, or if
    the header names it "image" or leaves it blank. The first row is a header if any of its
    vote cells is not 0, 1 or blank. Images named only "0" or "1" need a header row to be told
    from votes.
    """
    def is_vote(c: str) -> bool:
        return c in ("", "0", "1")

    first = rows[0][1]
    candidates = rows[1:] + ([rows[0]] if all(is_vote(c) for c in first[1:]) else [])
    named = len(first) > 1 and any(not is_vote(cells[0]) for _, cells in candidates)
    has_header = any(not is_vote(c) for c in first[int(named):])
    if has_header and len(first) > 1 and first[0].lower() in ("", "image"):
        named = True
    vote_cols = range(int(named), len(first))
    if has_header:
        raters = [first[j] or f"rater {j - int(named) + 1}" for j in vote_cols]
        seen: dict[str, int] = {}
        for j, r in zip(vote_cols, raters):
            if r in seen:
                raise UserError(f"{path}, line {rows[0][0]}: volunteer {r!r} heads two columns ({seen[r] + 1} and {j + 1}): duplicate (image, rater) pairs")
            seen[r] = j
    else:
        raters = [f"rater {i + 1}" for i in range(len(vote_cols))]
    data = rows[1:] if has_header else rows
    if not data:
        raise UserError(f"{path}: no votes (only a header line)")
    images: list[str] = []
    image_line: dict[str, int] = {}
    matrix = np.full((len(data), len(raters)), np.nan)
    for i, (line, cells) in enumerate(data):
        name = cells[0] if named else f"image {i + 1}"
        if not name:
            raise UserError(f"{path}, line {line}: the image name (first column) is empty")
        if name in image_line:
            raise UserError(f"{path}, line {line}: image {name!r} already has a row on line {image_line[name]}: duplicate (image, rater) pairs")
        image_line[name] = line
        images.append(name)
        for k, j in enumerate(vote_cols):
            matrix[i, k] = _vote(path, line, cells[j], f"in column {j + 1} ({one_line(raters[k])})")
    return _finish(Votes(path_text(path), "wide", images, raters, matrix, np.isnan(matrix)))


def _read_long(path: Path, rows: list[tuple[int, list[str]]]) -> Votes:
    head_line, head = rows[0][0], [c.lower() for c in rows[0][1]]
    missing = [c for c in LONG_COLUMNS if c not in head]
    if missing:
        raise UserError(f"{path}, line {head_line}: the header lacks the column(s) {', '.join(missing)} "
                        f"(long format: {','.join(LONG_COLUMNS + LONG_OPTIONAL)})")
    dup = sorted({c for c in head if c and head.count(c) > 1})
    if dup:
        raise UserError(f"{path}, line {head_line}: column {dup[0]!r} appears twice in the header")
    col = {c: head.index(c) for c in LONG_COLUMNS + LONG_OPTIONAL if c in head}
    if len(rows) == 1:
        raise UserError(f"{path}: no votes (only a header line)")
    images: dict[str, int] = {}
    raters: dict[str, int] = {}
    seen: dict[tuple[str, str], int] = {}
    votes: list[tuple[int, int, float, float, float]] = []  # image, rater, vote, picked_left, ms
    for line, cells in rows[1:]:
        image, rater = cells[col["image"]], cells[col["rater"]]
        if not image or not rater:
            raise UserError(f"{path}, line {line}: the {'image' if not image else 'rater'} cell is empty")
        if (image, rater) in seen:
            raise UserError(f"{path}, line {line}: rater {rater!r} already voted on image {image!r} on line "
                            f"{seen[image, rater]}: duplicate (image, rater) pairs")
        seen[image, rater] = line
        vote = _vote(path, line, cells[col["choice"]], "in the choice column")
        left = math.nan
        if "real_side" in col:
            side = cells[col["real_side"]].lower()
            if side not in SIDES + ("",):
                raise UserError(f"{path}, line {line}: real_side {cells[col['real_side']]!r} is not left, right or blank")
            if side and not math.isnan(vote):
                left = float((side == "left") == (vote == 0))  # the real photo was picked where it was
        ms = math.nan
        if "response_ms" in col and cells[col["response_ms"]]:
            raw = cells[col["response_ms"]]
            try:
                ms = float(raw)
            except ValueError:
                ms = math.nan
            if not 0 <= ms < math.inf:
                raise UserError(f"{path}, line {line}: response_ms {raw!r} is not a time in milliseconds")
        votes.append((images.setdefault(image, len(images)), raters.setdefault(rater, len(raters)), vote, left, ms))
    shape = (len(images), len(raters))
    matrix, picked, times = np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, np.nan)
    blank = np.zeros(shape, dtype=bool)
    for i, j, vote, left, ms in votes:
        matrix[i, j], picked[i, j], times[i, j] = vote, left, ms
        blank[i, j] = math.isnan(vote)
    return _finish(Votes(path_text(path), "long", list(images), list(raters), matrix, blank,
                         picked if "real_side" in col else None, times if "response_ms" in col else None))


def _finish(v: Votes) -> Votes:
    if np.isnan(v.matrix).all():
        raise UserError(f"{v.path}: no votes: every vote cell is blank")
    return v


# --- statistics --------------------------------------------------------------------------


@dataclass(frozen=True)
class Proportion:
    """k successes of n votes with 95% intervals and the exact two-sided binomial test against 50%."""

    k: int
    n: int
    rate: float
    wilson: tuple[float, float]
    exact: tuple[float, float]  # Clopper-Pearson
    p_value: float

    @classmethod
    def of(cls, k: int, n: int) -> Proportion:
        from scipy.stats import binomtest  # scipy loads only for a votes file, not with every command

        test = binomtest(k, n, p=0.5, alternative="two-sided")
        w, e = test.proportion_ci(0.95, method="wilson"), test.proportion_ci(0.95, method="exact")
        return cls(k, n, k / n, (float(w.low), float(w.high)), (float(e.low), float(e.high)), float(test.pvalue))

    def to_json(self) -> dict:
        return {"k": self.k, "n": self.n, "rate": self.rate, "ci95_wilson": list(self.wilson),
                "ci95_exact": list(self.exact), "p_value": self.p_value}


def fleiss_kappa(matrix: np.ndarray) -> tuple[float, int]:
    """Fleiss' kappa for 0/1 votes with NaN for missing ones: (kappa, images used).

    Uses the form for binary ratings with a varying number of raters per subject (Fleiss,
    Levin and Paik, Statistical Methods for Rates and Proportions, 3rd ed., ch. 18): for image
    i with m_i votes of which x_i are 1, over the N images with m_i >= 2 (one vote carries no
    agreement information),

        kappa = 1 - sum_i x_i (m_i - x_i) / m_i  /  ( N (m - 1) p q ),

    m = mean m_i, p = sum x_i / sum m_i, q = 1 - p. With every image rated by the same m
    volunteers this is exactly Fleiss' (1971) kappa, (P_bar - P_e) / (1 - P_e). 1 is perfect
    agreement, 0 what chance gives, below 0 less than chance. Undefined (NaN) when every vote
    is the same (p q = 0) or no image has two votes.
    """
    m = (~np.isnan(matrix)).sum(axis=1).astype(np.float64)
    x = np.nansum(matrix, axis=1)
    keep = m >= 2
    m, x = m[keep], x[keep]
    n_items = int(keep.sum())
    if n_items == 0:
        return math.nan, 0
    p = x.sum() / m.sum()
    if p * (1 - p) == 0:
        return math.nan, n_items
    disagreement = (x * (m - x) / m).sum()
    return float(1 - disagreement / (n_items * (m.mean() - 1) * p * (1 - p))), n_items


def kappa_label(kappa: float) -> str:
    """Landis and Koch's (1977) words for a kappa value."""
    if math.isnan(kappa):
        return "undefined"
    if kappa < 0:
        return "poor"
    for bound, word in ((0.2, "slight"), (0.4, "fair"), (0.6, "moderate"), (0.8, "substantial")):
        if kappa <= bound:
            return word
    return "almost perfect"


@dataclass(frozen=True)
class VoteSummary:
    """Every statistic the report shows, computed once from the votes."""

    votes: Votes
    overall: Proportion
    kappa: float
    kappa_items: int
    per_rater: list[dict]
    per_image: list[dict]
    side: Proportion | None  # share of votes that chose the left photo (long format, real_side)

    @classmethod
    def of(cls, v: Votes) -> VoteSummary:
        voted = ~np.isnan(v.matrix)
        k, n = int(np.nansum(v.matrix)), int(voted.sum())

        def rows(names: list[str], axis: int) -> list[dict]:
            ks, ns, bl = np.nansum(v.matrix, axis=axis), voted.sum(axis=axis), v.blank.sum(axis=axis)
            out = []
            for idx, name in enumerate(names):
                row = {"name": name, "fooled": int(ks[idx]), "votes": int(ns[idx]), "blank": int(bl[idx]),
                       "rate": float(ks[idx] / ns[idx]) if ns[idx] else math.nan}
                if v.response_ms is not None:
                    t = np.take(v.response_ms, idx, axis=1 - axis)
                    row["median_response_ms"] = float(np.median(t[~np.isnan(t)])) if (~np.isnan(t)).any() else math.nan
                if v.picked_left is not None and axis == 0:
                    left = v.picked_left[:, idx]
                    row["left_rate"] = float(np.nanmean(left)) if (~np.isnan(left)).any() else math.nan
                out.append(row)
            return out

        side = None
        if v.picked_left is not None and (~np.isnan(v.picked_left)).any():
            side = Proportion.of(int(np.nansum(v.picked_left)), int((~np.isnan(v.picked_left)).sum()))
        kappa, items = fleiss_kappa(v.matrix)
        return cls(v, Proportion.of(k, n), kappa, items, rows(v.raters, 0), rows(v.images, 1), side)

    def most_fooling(self, top: int) -> list[dict]:
        """The images that fooled the most volunteers: highest rate, then most votes, then file order."""
        fooled = [r for r in self.per_image if r["fooled"] > 0]
        return sorted(fooled, key=lambda r: (-r["rate"], -r["votes"]))[:top]

    def to_json(self, top: int) -> dict:
        v = self.votes
        out = {
            "file": v.path, "format": v.format, "images": len(v.images), "raters": len(v.raters),
            "votes": self.overall.n, "blank_votes": int(v.blank.sum()), "fooled": self.overall.k,
            "fooling_rate": self.overall.rate, "ci95_wilson": list(self.overall.wilson),
            "ci95_exact": list(self.overall.exact), "p_value": self.overall.p_value,
            "fleiss_kappa": self.kappa, "kappa_images": self.kappa_items,
            "per_rater": self.per_rater, "per_image": self.per_image,
            "most_fooling": [r["name"] for r in self.most_fooling(top)],
        }
        if v.response_ms is not None:
            t = v.response_ms[~np.isnan(v.response_ms)]
            out["median_response_ms"] = float(np.median(t)) if t.size else math.nan
        if self.side is not None:
            out["left_chosen"] = self.side.to_json()
        return metrics.json_safe(out)


# --- the report --------------------------------------------------------------------------


def _pct(x: float) -> str:
    return "-" if math.isnan(x) else f"{100 * x:.1f}%"


def _p(p: float) -> str:
    return f"{p:.3g}" if p >= 0.001 else f"{p:.1e}"


def verdict(pr: Proportion) -> str:
    """One sentence reading the binomial test."""
    if pr.p_value >= 0.05:
        return "not significantly different from 50% (chance) at the 5% level"
    if pr.rate < 0.5:
        return "below 50%: volunteers told colorized from real photos better than chance"
    return "above 50%: volunteers took colorized photos for real ones more often than real ones"


def _table(title: str, rows: list[dict], first: str, extra: list[tuple[str, str]]) -> Table:
    """Fooled / votes / rate per row; the blank column only when some vote is blank."""
    blanks = any(r["blank"] for r in rows)
    t = Table(title=title, title_justify="left")
    t.add_column(first)
    for head in ("fooled", "votes", "rate") + ("blank",) * blanks:
        t.add_column(head, justify="right")
    for _, head in extra:
        t.add_column(head, justify="right")
    for r in rows:
        cells = [escape(r["name"]), str(r["fooled"]), str(r["votes"]), _pct(r["rate"])] + [str(r["blank"])] * blanks
        for key, _ in extra:
            cells.append(_pct(r[key]) if key == "left_rate" else "-" if math.isnan(r[key]) else f"{r[key]:.0f}")
        t.add_row(*cells)
    return t


def render(summary: VoteSummary, top: int, out: Console) -> None:
    """The report: sentences (printed whole, never cut at the console's width) and two tables."""
    v, o = summary.votes, summary.overall
    kappa = "undefined" if math.isnan(summary.kappa) else f"{summary.kappa:.3f}"
    lines = [
        f"[bold]{escape(v.path)}[/bold] ({v.format} format): {plural(len(v.images), 'image')}, "
        f"{plural(len(v.raters), 'volunteer')}, {plural(o.n, 'vote')}, {int(v.blank.sum())} blank (excluded)",
        f"fooling rate: {o.k} of {o.n} votes = {_pct(o.rate)}  (50% = indistinguishable from real)",
        f"95% CI: {_pct(o.wilson[0])} to {_pct(o.wilson[1])} (Wilson), "
        f"{_pct(o.exact[0])} to {_pct(o.exact[1])} (Clopper-Pearson)",
        f"exact binomial test against 50%: p = {_p(o.p_value)} (two-sided), {verdict(o)}",
        f"agreement between volunteers: Fleiss' kappa = {kappa} ({kappa_label(summary.kappa)}; "
        f"{summary.kappa_items} images with 2 or more votes)",
    ]
    if (s := summary.side) is not None:
        lines.append(f"left photo chosen in {s.k} of {s.n} votes ({_pct(s.rate)}), p = {_p(s.p_value)} "
                     f"against 50% (a side preference would bias the study)")
    for line in lines:
        out.print(line, soft_wrap=True)
    extra = []
    if v.response_ms is not None:
        extra.append(("median_response_ms", "median ms"))
    rater_extra = extra + ([("left_rate", "left")] if v.picked_left is not None else [])
    out.print(_table("per volunteer", summary.per_rater, "volunteer", rater_extra), soft_wrap=True)
    out.print(_table("per image", summary.per_image, "image", extra), soft_wrap=True)
    best = summary.most_fooling(top)
    fooling = ", ".join(f"{escape(r['name'])} ({r['fooled']}/{r['votes']})" for r in best) or "no image fooled anyone"
    out.print(f"most fooling: {fooling}", soft_wrap=True)
