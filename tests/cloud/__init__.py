"""Tests of tether.cloud."""
