"""`geep`: the command line. Bad input ends with one line on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import sys

from geep.errors import GeepError

# Subcommand modules under geep.cli, in the order `geep --help` lists them.
COMMANDS = ("train", "cascade", "build_table", "fit_means", "calibrate", "predict", "bench", "info", "serve")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other bad input
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="geep", description="Fast BERT-style text classifiers by early exiting (GEEP).")
    parser.add_argument("--version", action="version", version=f"geep {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        module_name = f"geep.cli.{name}"
        if importlib.util.find_spec(module_name) is not None:
            importlib.import_module(module_name).add_parser(subparsers)
    return parser


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("geep")
    except metadata.PackageNotFoundError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    """Runs one command; returns its exit status (2: bad input, one line on stderr; 130: interrupted).

    Ctrl-C is caught from the first import on: building the parser imports every subcommand (torch, transformers,
    datasets), which takes seconds, and an interrupt there exits 130 with one line, as one during a run does.
    """
    try:
        return _run(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _run(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_error()
    try:
        return int(args.func(args) or 0)
    except GeepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
