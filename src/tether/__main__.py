"""``python -m tether`` runs the CLI."""

from tether.cli.app import main

# Guarded: a ``spawn`` child (the admin API process) imports this module as ``__mp_main__``.
if __name__ == "__main__":
    main()
