"""The command line: `python -m core <command> ...`.

Each command lives in its own module under `core/commands/` exposing `register(subparsers)`,
which adds its sub-parser and sets `func(args) -> int` as the parser default. Errors a user can
hit are `DashboardError`s: printed to stderr one per line, no traceback, exit 2. A database
that refuses (read-only data directory, damaged file, lock held too long) is one such line too.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sqlite3
import sys

from core.errors import DashboardError, PayloadError

# module names under core.commands, in the order they appear in --help
COMMANDS = ("payload", "reference", "batch", "export", "metrics")


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
    except sqlite3.Error as e:
        print(f"error: {_database_refused(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _database_refused(e: sqlite3.Error) -> str:
    """One line for a database error that reached the command line, with what to do."""
    from core.config import load_settings

    text = str(e)
    where = load_settings().data_dir
    if "readonly" in text.replace(" ", "").lower():
        return (f"the data directory {where} is read-only: this command needs to write to it. "
                "Make it writable (read-only commands such as `batch status` and `export` still work).")
    if "locked" in text or "busy" in text:
        return (f"the database in {where} stayed locked by another process ({text}); "
                "try again when it is done.")
    if "full" in text:
        return f"the disk holding {where} is full ({text}); free some space and try again."
    return (f"the database in {where} refused the command ({text}); if it is damaged, move "
            "dashboard.db aside and restore it from a backup.")
