"""`python -m colorize_cli` (also what `torchrun -m colorize_cli train ...` starts)."""

from colorize_cli.cli import main

main()
