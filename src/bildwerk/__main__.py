"""``python -m bildwerk``: the command line, as ``bildwerk``."""

from bildwerk.cli import main

main()
