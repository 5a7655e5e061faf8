"""Tether: a cryptographic identity for every device, proven on every connection."""

__version__ = "0.1.0"
