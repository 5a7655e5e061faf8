"""Alembic migrations of the registry, packaged so an installed Tether migrates itself."""
