"""Why page-class filtering cannot be done for a dump."""

from __future__ import annotations


class FilterUnavailable(Exception):
    """The dump lacks what the page walk needs; the capture goes on without it."""


class TranslationError(Exception):
    """A virtual address the crashed kernel's page tables do not map."""
