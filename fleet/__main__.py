"""``python -m fleet`` is ``botfleet``."""

from fleet.cli import main

main()
