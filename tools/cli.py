"""What every ``python -m tools.<cli>`` command shares: bad input ends it with one line per problem, not a traceback."""

from __future__ import annotations

import functools
import sys
from typing import Callable, List

__all__ = ["one_line_errors", "error_lines"]


def error_lines(error: BaseException) -> List[str]:
    """The lines a user sees for ``error``: a dataset error's own problem lines (each names a file), an OS
    error as ``<file>: <reason>``, anything else as ``error: <message>``."""
    problems = getattr(error, "problems", None)
    if isinstance(problems, list) and problems:
        return [str(p) for p in problems]
    if isinstance(error, OSError):
        where = error.filename if error.filename is not None else "error"
        return [f"{where}: {error.strerror or error}"]
    message = str(error).strip() or type(error).__name__
    return [f"error: {line}" if i == 0 else f"  {line}" for i, line in enumerate(message.splitlines())]


def one_line_errors(fn: Callable) -> Callable:
    """Decorate a CLI command: a ``ValueError`` (argument and dataset errors), ``OSError`` (a missing or
    unreadable file) or ``KeyError`` (an unknown name) is printed as :func:`error_lines` on stderr and the
    command exits with status 1; every other exception keeps its traceback (a bug, not bad input)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ValueError, OSError, KeyError) as error:
            for line in error_lines(error):
                print(line, file=sys.stderr)
            sys.exit(1)

    return wrapper
