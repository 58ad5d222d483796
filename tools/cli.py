"""What every ``python -m tools.<cli>`` command shares: bad input ends it with one line per problem, not a traceback."""

from __future__ import annotations

import functools
import inspect
import sys
from typing import Callable, Dict, List, Optional, Sequence

__all__ = ["one_line_errors", "error_lines", "unknown_options", "fire_commands"]


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


def unknown_options(fn: Callable, args: Sequence[str]) -> List[str]:
    """The ``--options`` of ``args`` (a command's arguments, after its name) that ``fn`` does not take.

    Fire calls the function first and complains about an option it could not use only afterwards, so a misspelt
    option of a long command (``tools.study run``) would run it in full without that option: check beforehand.
    Accepts ``--name value``, ``--name=value``, ``--no<name>`` (fire's false), hyphens for underscores and
    ``--help``; stops at a bare ``--`` (fire's own flags follow). A function with ``**kwargs`` takes anything.
    """
    parameters = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return []
    unknown = []
    for arg in args:
        if arg == "--":
            break
        if not arg.startswith("--") or arg == "--help":
            continue
        name = arg[2:].split("=", 1)[0].replace("-", "_")
        if name not in parameters and not (name.startswith("no") and name[2:] in parameters):
            unknown.append(arg.split("=", 1)[0])
    return unknown


def fire_commands(commands: Dict[str, Callable], name: str, argv: Optional[Sequence[str]] = None) -> None:
    """``fire.Fire(commands, name=name)`` after refusing, with one line and exit status 2, an option the chosen
    command does not take (:func:`unknown_options`)."""
    import fire

    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in commands:
        unknown = unknown_options(inspect.unwrap(commands[args[0]]), args[1:])
        if unknown:
            known = ", ".join(f"--{p}" for p in inspect.signature(inspect.unwrap(commands[args[0]])).parameters)
            print(f"error: {name} {args[0]}: unknown option(s) {', '.join(unknown)} (it takes {known})",
                  file=sys.stderr)
            sys.exit(2)
    fire.Fire(commands, command=args, name=name)
