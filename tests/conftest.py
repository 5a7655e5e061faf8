"""Shared fixtures. Everything a test needs (keys, CAs, tokens) is made in a temporary
directory by the test run itself; nothing secret is checked in."""
