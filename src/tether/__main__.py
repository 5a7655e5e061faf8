"""``python -m tether`` runs the CLI."""

from tether.cli.app import main

main()
