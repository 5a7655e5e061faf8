"""Tests of tether.cloud.registry."""
