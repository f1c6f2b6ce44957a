"""The ``wavefront`` command line: one parser, subcommands contributed by the subsystems.

Each subsystem that offers commands has a ``cli`` module with
``add_commands(subparsers)``; a subcommand's parser sets ``func(args) -> int``.
Bad input anywhere becomes one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import re
import sys
import warnings

from wavefront.errors import ConfigError

_COMMAND_MODULES = (
    "wavefront.sim.cli",
    "wavefront.sim.pilot_cli",
    "wavefront.datasets.cli",
    "wavefront.estimators.cli",
    "wavefront.imaging.cli",
    "wavefront.merge",
)


# argparse's words for a bad value of a number type of wavefront.utils: "argument --grad-clip: must be a
# finite number, got nan"; said as every other bad input is: "grad_clip=nan: must be a finite number".
_TYPE_ERROR = re.compile(r"^argument (?:-\w/)?--([\w-]+): (.*), got (\S+)$")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, as for every other bad input
        m = _TYPE_ERROR.match(message)
        if m:
            message = f"{m.group(1).replace('-', '_')}={m.group(3)}: {m.group(2)}"
        self.exit(2, f"wavefront: error: {' '.join(message.split())}\n")


def build_parser() -> argparse.ArgumentParser:
    """Returns the top-level parser with every available subcommand."""
    from wavefront import __version__

    parser = _Parser(prog="wavefront", description="Simulate waves, sense them and learn to estimate from them. "
                     "Run `wavefront COMMAND --help` for a command's options.")
    parser.add_argument("--version", action="version", version=f"wavefront {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.add_commands(sub)
    return parser


def _format_warning(message, category, filename, lineno, line=None):
    return f"wavefront: warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``wavefront`` console script; returns the exit code."""
    warnings.formatwarning = _format_warning
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or one line on stderr for bad arguments: its exit code
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    except ValueError as exc:  # a type's ValueError argparse did not turn into an error (defensive)
        print(f"wavefront: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from wavefront.utils import cap_threads_to_cpus

    cap_threads_to_cpus()  # a container's CPU quota, which torch's default thread count ignores
    if getattr(args, "threads", None) is not None:  # a command's --threads wins over the cap (each that computes has one)
        import torch

        torch.set_num_threads(args.threads)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"wavefront: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # A disk that fills during a write this command did not route through an atomic writer:
        # still one line; whatever was written atomically before stays whole.
        from wavefront.utils import os_reason

        where = f"save={exc.filename!r}: " if exc.filename else ""
        print(f"wavefront: error: {where}cannot be written: {os_reason(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # the commands that resume say so: what --out keeps, and that the same command continues from it
        kept, out = getattr(args, "kept_on_interrupt", None), getattr(args, "out", None)
        print("wavefront: interrupted" + (f"; {out} keeps {kept}: rerun the same command to continue"
                                          if kept and out else ""), file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
