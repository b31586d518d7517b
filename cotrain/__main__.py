"""`python -m cotrain` runs the CLI (also what `torchrun -m cotrain` uses)."""

from cotrain.cli.app import main

main()
