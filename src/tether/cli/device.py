"""The `tether device` commands (placeholder until the component lands)."""

from __future__ import annotations

import typer


def register(root: typer.Typer) -> None:
    """Add this group's commands to the root app."""
