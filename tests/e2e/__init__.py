"""End-to-end dump-kernel harness (see harness.py)."""
