"""What the commands show on the terminal: one progress bar layout, one wording for a skipped
input and for a warning, and the legend of every model-against-gray table, so every command
reads the same."""

from __future__ import annotations

import re

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

# Under every table that puts a model's scores next to the gray baseline's (evaluate, demo).
BASELINE_LEGEND = "gray: the gray photo itself as the prediction.  ↑/↓: higher/lower is better."


def progress_bar(console: Console, label: str, fields: str = "", *, elapsed: bool = False,
                 transient: bool = False) -> Progress:
    """`label [bar] done/total fields time`. `fields` is a TextColumn format (e.g. the task's
    counts); `elapsed` shows the time so far instead of the time left (for a total that may
    never be reached). A `transient` bar vanishes when done and is not shown at all when the
    console is not a terminal, so a log holds no stray bar lines."""
    columns = [TextColumn(label), BarColumn(), MofNCompleteColumn(), *([TextColumn(fields)] if fields else []),
               TimeElapsedColumn() if elapsed else TimeRemainingColumn()]
    return Progress(*columns, console=console, transient=transient, disable=transient and not console.is_terminal)


def skipped(console: Console, reason: str) -> None:
    """One input left out of a batch, and why (the batch goes on)."""
    console.print(f"[yellow]skipped[/yellow] {escape(reason)}", soft_wrap=True)


def warning(console: Console, message: str) -> None:
    console.print(f"[yellow]warning:[/yellow] {escape(message)}.", soft_wrap=True)


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """'1 image', '2 images' ('1 process', '2 processes' with `nouns` given)."""
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"


_UNITS = {"h": 3600, "m": 60, "s": 1}
_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s?)?")


def parse_duration(text: str) -> float:
    """'90s', '10m', '1h30m', '1.5h' or a plain number of seconds -> seconds (ValueError if not)."""
    m = _DURATION.fullmatch(text.strip().lower())
    if not text.strip() or m is None or not any(m.groups()):
        raise ValueError(f"{text!r} is not a duration (e.g. 90s, 10m, 1h30m)")
    return sum(float(v) * unit for v, unit in zip(m.groups(), _UNITS.values()) if v)


def format_duration(seconds: float) -> str:
    """600 -> '10m', 5400 -> '1h30m', 75 -> '1m15s': the form parse_duration reads back."""
    s = round(seconds)
    parts = [(s // 3600, "h"), (s // 60 % 60, "m"), (s % 60, "s")]
    return "".join(f"{v}{u}" for v, u in parts if v) or "0s"
