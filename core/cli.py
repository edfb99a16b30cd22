"""The command line: `python -m core <command> ...`.

Each command lives in its own module under `core/commands/` exposing `register(subparsers)`,
which adds its sub-parser and sets `func(args) -> int` as the parser default. Errors a user can
hit are `DashboardError`s: printed to stderr one per line, no traceback, exit 2. A database
that refuses (read-only data directory, damaged file, lock held too long) is one such line too:
the Store turns SQLite's errors into StoreError / StoreUnavailable.

Every command acts as a person (`--as EMAIL`, else DASHBOARD_USER) and each sub-parser says the
action it needs (`needs`, core.access.ACTIONS): with sign-in on (DASHBOARD_AUTH) a command is
refused, before it opens anything, unless a role names that person for that action, and what it
records as `created_by` / `by` is that person (a `--by` naming someone else is refused). With
sign-in off, `--by` or the person is recorded, as before.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from core.errors import DashboardError, PayloadError

# module names under core.commands, in the order they appear in --help
COMMANDS = ("payload", "reference", "batch", "model", "export", "metrics", "store", "listen")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m core", description="fal model comparison dashboard: command line")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO to stderr")
    parser.add_argument("--as", dest="as_person", default=None, metavar="EMAIL",
                        help="who runs this command (default DASHBOARD_USER); with sign-in on, "
                             "their role decides what it may do")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"core.commands.{name}").register(subparsers)
    return parser


_ENDS_AT_ONCE = [False]


def end_at_once() -> None:
    """Said by a command that has joined every thread it started and closed everything it opened
    (a batch run): `python -m core` then leaves without the interpreter's teardown, which frees
    ~600 modules one by one (0.1 s after the run's last result, for nothing the process still
    holds). Output is flushed and logging shut down first."""
    _ENDS_AT_ONCE[0] = True


def leave(code: int) -> None:
    """The end of `python -m core`: at once when the command said so (`end_at_once`), else the
    usual exit."""
    if not _ENDS_AT_ONCE[0]:
        raise SystemExit(code)
    import os

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):   # a closed pipe (`| head`): nothing more can be said
            pass
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s %(message)s", stream=sys.stderr)
    try:
        _act_as(args)
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


# the namespace fields a command records as the person who did it
_RECORDED_AS = ("created_by", "added_by", "by")


def _act_as(args: argparse.Namespace) -> None:
    """Who the command acts as, checked against what it needs (core.access), before it runs."""
    needs = getattr(args, "needs", None)
    if callable(needs):
        needs = needs(args)
    args.person = None
    if needs is None:
        return
    from core import access
    from core.config import load_settings
    from core.errors import AccessDenied

    settings = load_settings()
    person = access.command_person(settings, args.as_person)
    person.require(needs)
    args.person = person
    for field in _RECORDED_AS:
        if not hasattr(args, field):
            continue
        given = (getattr(args, field) or "").strip() or None
        if access.auth_on(settings):
            if given and given.lower() != person.name.lower():
                raise AccessDenied(f"sign-in is on: this command records the person it acts as ({person.name}); "
                                   f"--by cannot name someone else ({given}).")
            setattr(args, field, person.name)
        elif given is None:
            setattr(args, field, person.name)
