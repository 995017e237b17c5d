"""The one exception type a user can cause."""

from __future__ import annotations


class GagsError(Exception):
    """A mistake a user can fix: says what went wrong, where, and what to do.

    The CLI prints it without a traceback and exits with status 1.
    """
