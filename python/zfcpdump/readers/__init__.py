"""Readers of dump formats; `open_dump` probes them in a fixed order."""
