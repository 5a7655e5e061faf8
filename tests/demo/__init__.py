"""Tests of ``tether demo``: the whole story, run for real."""
