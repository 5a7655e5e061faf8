"""The cloud side of Tether: registry, gateway and API (one process by default)."""
