"""`python -m orchestrator.cli`: the xcon command line (the `xcon` script runs the same main)."""

from . import main

main()
