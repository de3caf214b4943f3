"""Thin entry points, run from the repository root as ``python -m scripts.<name>`` (the Makefile's targets)."""
