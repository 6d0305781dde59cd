"""Allow `python -m relaxforcing` (and `torchrun -m relaxforcing`)."""

from relaxforcing.cli import main

main()
