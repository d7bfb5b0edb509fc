"""The ``tideflow`` command: ``main`` parses the command line and runs one subcommand.

Each subcommand is a module ``tideflow.cli.<name>`` with two functions, ``add_parser(subparsers)``
(adds and returns its ``argparse`` parser) and ``run(args) -> int`` (does the work and returns the
exit code); adding one is that module plus its name in ``COMMANDS``. A subcommand reports a bad
command line with ``UsageError`` and a failure at run time with ``CommandError``; ``main`` turns
either (and any other exception) into one line on stderr, ``tideflow: error: ...``, and its exit
code (a traceback only with ``--debug``).
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from typing import Any, NoReturn

__all__ = [
    "COMMANDS",
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "CommandError",
    "UsageError",
    "main",
]

#: The subcommands, in the order ``tideflow --help`` lists them (each a module of this package).
COMMANDS = ("worker",)

#: Exit codes: success; a failure at run time; a bad command line (see ``EXIT_CODES``).
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

#: The exit codes, as ``tideflow --help`` and docs/cli.md explain them.
EXIT_CODES = """\
exit codes:
  0    success (a worker stopped by one SIGTERM or SIGINT drained cleanly)
  1    a failure at run time (the store cannot be opened or failed, a worker crashed)
  2    a usage error: bad arguments, or a MODULE:OBJECT that cannot be imported or is not an
       Engine, a Workflow or a list of Workflows
  130  stopped at once by a second signal that was SIGINT (128 + 2)
  143  stopped at once by a second signal that was SIGTERM (128 + 15)"""


class UsageError(Exception):
    """A bad command line (arguments, a target that cannot be imported or used): exit code 2."""


class CommandError(Exception):
    """A subcommand failed at run time (a store that cannot be opened, a crashed worker): exit
    code 1."""


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors raise ``UsageError`` (one line) instead of printing the
    usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    """The parser of the whole command line: global options and one subparser per command."""
    from tideflow import __version__

    parser = _Parser(
        prog="tideflow",
        description="tideflow: an embeddable durable workflow engine. Commands:",
        epilog=EXIT_CODES + "\n\nEach command has its own help: tideflow COMMAND --help.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tideflow {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an error, not just one line"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module: Any = importlib.import_module(f"tideflow.cli.{name}")
        sub = module.add_parser(subparsers)
        # also accepted after the command; SUPPRESS keeps a global --debug from being reset
        sub.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the ``tideflow`` command on ``argv`` (``sys.argv[1:]`` by default) and returns its
    exit code; errors are one line on stderr (``--debug`` adds the traceback)."""
    args_list = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in args_list
    try:
        args = build_parser().parse_args(args_list)
        debug = bool(getattr(args, "debug", debug))
        if args.command is None:
            raise UsageError(f"a command is needed: {', '.join(COMMANDS)} (see 'tideflow --help')")
        code: int = args._run(args)
        return code
    except SystemExit as e:  # --help and --version print, then exit 0
        return e.code if isinstance(e.code, int) else EXIT_OK
    except UsageError as e:
        return _fail(e, EXIT_USAGE, debug)
    except CommandError as e:
        return _fail(e, EXIT_FAILURE, debug)
    except KeyboardInterrupt as e:
        return _fail(e, 128 + 2, debug, "interrupted")
    except Exception as e:
        return _fail(e, EXIT_FAILURE, debug, f"{type(e).__name__}: {e}")


def _fail(e: BaseException, code: int, debug: bool, message: str | None = None) -> int:
    """Prints ``e`` as one line (after its traceback with ``--debug``) and returns ``code``."""
    if debug:
        import traceback

        traceback.print_exception(type(e), e, e.__traceback__)
    text = re.sub(r"\s*\n\s*", " ", str(e) if message is None else message).strip()
    if not debug and code == EXIT_FAILURE:
        text += " (--debug shows the traceback)"
    print(f"tideflow: error: {text}", file=sys.stderr, flush=True)
    return code
