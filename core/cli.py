"""The command line: `python -m core <command> ...`.

Each command lives in its own module under `core/commands/` exposing `register(subparsers)`,
which adds its sub-parser and sets `func(args) -> int` as the parser default. Errors a user can
hit are `DashboardError`s: printed to stderr one per line, no traceback, exit 2. A database
that refuses (read-only data directory, damaged file, lock held too long) is one such line too:
the Store turns SQLite's errors into StoreError / StoreUnavailable.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from core.errors import DashboardError, PayloadError

# module names under core.commands, in the order they appear in --help
COMMANDS = ("payload", "reference", "batch", "model", "export", "metrics", "listen")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m core", description="fal model comparison dashboard: command line")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO to stderr")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"core.commands.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s %(message)s", stream=sys.stderr)
    try:
        return int(args.func(args) or 0)
    except PayloadError as e:
        for line in e.messages:
            print(f"error: {line}", file=sys.stderr)
        return 2
    except DashboardError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
