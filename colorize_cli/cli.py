"""The `colorize` command line: option parsing only; each stage's work lives in its module."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from colorize_cli import __version__
from colorize_cli.errors import UserError

console = Console(stderr=True, highlight=False)

app = typer.Typer(
    name="colorize",
    help="Teach a computer to colorize grayscale photographs: crawl, prep, train, infer, evaluate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"colorize {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    """colorize: a pix2pix colorizer toolkit (see `colorize COMMAND --help`)."""


# --- commands: one function per subcommand, each delegating to its stage module ----------


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; failures become one red line and exit 1 (the traceback only with --debug)."""
    args = sys.argv[1:] if argv is None else argv
    try:
        app(args=args, prog_name="colorize")  # exits itself (usage errors: exit 2)
    except Exception as e:  # noqa: BLE001 - the one place every failure is reported
        if "--debug" in args:
            raise
        msg = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e} (run with --debug for the traceback)"
        console.print(f"[red]error:[/red] {escape(msg)}", soft_wrap=True)
        sys.exit(1)
