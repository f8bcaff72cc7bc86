"""``python -m bildwerk.cli``."""

from bildwerk.cli import main

main()
