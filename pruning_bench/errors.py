"""The one error type the CLI turns into a one-line message and exit code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class BenchError(Exception):
    """A problem with the user's input (bad name, bad file, bad value): one line, exit code 2."""


def unknown_choice(kind: str, value: str, known: Iterable[str]) -> BenchError:
    """Build the error for an unknown name, listing the valid ones and a did-you-mean."""
    known = sorted(known)
    close = difflib.get_close_matches(value, known, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return BenchError(f"unknown {kind} '{value}'.{hint} Known: {', '.join(known) or '(none)'}")
