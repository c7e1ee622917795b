"""Run `colorize ARGS` inside the test process, the way every CLI test needs it."""

from __future__ import annotations

from pathlib import Path

import pytest

from colorize_cli.cli import main


def run_cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `colorize ARGS`."""
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err
