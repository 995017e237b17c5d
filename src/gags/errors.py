"""The one exception type a user can cause."""

from __future__ import annotations

import re

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
MESSAGE_WORDS = 40
"""A library's message quoted in a GagsError keeps at most this many words (PyTorch's pickle refusal is a page)."""


class GagsError(Exception):
    """A mistake a user can fix: says what went wrong, where, and what to do.

    The CLI prints it without a traceback and exits with status 1.
    """


def one_line(text: str, max_words: int = MESSAGE_WORDS) -> str:
    """A library's message fit to quote in a one-line error: ANSI colour codes removed, white space folded, cut after
    ``max_words`` words (never in the middle of one)."""
    words = ANSI_ESCAPE.sub("", text).split()
    return " ".join(words[:max_words]) + (" ..." if len(words) > max_words else "")
