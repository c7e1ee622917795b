"""What the commands show on the terminal: one progress bar layout, one wording for a skipped
input and for a warning, and the legend of every model-against-gray table, so every command
reads the same."""

from __future__ import annotations

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
