"""`python -m core model add|list|show|refresh|archive`: fal endpoints added from their documents.

`add FILE_OR_ID` reads fal's queue OpenAPI document of an endpoint from a file (works offline) or,
given an endpoint id, fetches it from fal (FAL_OPENAPI_URL), checks it, and stores it: from then
on plans name the endpoint in `models` like a built-in one. The price comes from fal's pricing
API when a key and the network exist, else from `--price USD --unit UNIT`; with neither it is
unknown (estimates say so, never $0). `show` prints the endpoint's fields in fal's order, how the
dashboard's one request maps onto them, and what the model lacks. `refresh` fetches the current
document and prints what changed; `--adopt` makes it the one batches are validated against. A
bad document, a duplicate add or an unknown id is one line on stderr and exit 2, nothing stored.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("model", help="add fal endpoints from their OpenAPI documents",
                                   description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="model_command", required=True, metavar="SUBCOMMAND")

    add = sub.add_parser("add", help="add an endpoint from its document file, or fetch it by id")
    add.add_argument("source", metavar="FILE_OR_ID")
    add.add_argument("--price", type=_price, default=None, metavar="USD",
                     help="what fal bills per unit, when its pricing API cannot be asked")
    add.add_argument("--unit", default=None, metavar="UNIT",
                     help="the unit of --price: image or megapixels (default: image)")
    add.add_argument("--label", default=None, help="what pages call it (default: the id without its owner)")
    add.add_argument("--by", dest="added_by", default=None, help="who adds it (recorded)")
    add.set_defaults(func=_add, needs="models")

    ls = sub.add_parser("list", help="every endpoint a plan may name: built-in and added")
    ls.add_argument("--all", action="store_true", help="include archived endpoints")
    ls.set_defaults(func=_list, needs="read")

    show = sub.add_parser("show", help="an endpoint's fields, the mapping and what it lacks")
    show.add_argument("endpoint_id", metavar="ID")
    show.set_defaults(func=_show, needs="read")

    refresh = sub.add_parser("refresh", help="fetch an added endpoint's current document and show what changed")
    refresh.add_argument("endpoint_id", metavar="ID")
    refresh.add_argument("--adopt", action="store_true", help="validate new batches against it from now on")
    refresh.set_defaults(func=_refresh, needs="models")

    archive = sub.add_parser("archive", help="offer an added endpoint for no new batch (old ones stay)")
    archive.add_argument("endpoint_id", metavar="ID")
    archive.set_defaults(func=_archive, needs="models")


def _price(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a price in USD, e.g. 0.04, not {text!r}") from None
    if not 0 < value < 1000:
        raise argparse.ArgumentTypeError("a price per unit is more than 0 and less than 1000 USD")
    return value


def _open() -> tuple[Any, Any]:
    from core.config import load_settings
    from core.store import open_store

    settings = load_settings()
    settings.ensure_dirs()
    return settings, open_store(settings)


def _add(args: argparse.Namespace) -> int:
    from core.models import service

    settings, store = _open()
    with store:
        path = Path(args.source).expanduser()
        if path.exists() or args.source.endswith(".json"):
            model = service.add_from_file(store, path, added_by=args.added_by, price_usd=args.price,
                                          unit=args.unit, label=args.label)
        else:
            model = service.add_from_fal(store, settings, args.source, added_by=args.added_by,
                                         price_usd=args.price, unit=args.unit, label=args.label)
        print(f"added {model.endpoint_id} ({model.label}, {model.category}); price "
              f"{service.price_words(model)}")
        for line in service.describe_lines(model):
            print(f"  {line}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from core.models import service

    _, store = _open()
    with store:
        for row in service.every_model(store, include_archived=args.all):
            print(json.dumps(row, ensure_ascii=False))
    return 0


def _show(args: argparse.Namespace) -> int:
    from core.models import service

    _, store = _open()
    with store:
        for line in service.show_lines(store, args.endpoint_id):
            print(line)
    return 0


def _refresh(args: argparse.Namespace) -> int:
    from core.models import service

    settings, store = _open()
    with store:
        changes = service.refresh(store, settings, args.endpoint_id, by=_who(args))
        if not changes:
            print(f"{args.endpoint_id}: the document fal serves now is the one in use; nothing to adopt.")
            return 0
        print(f"{args.endpoint_id}: fal's current document differs from the one in use:")
        for line in changes:
            print(f"  {line}")
        if args.adopt:
            service.adopt(store, args.endpoint_id, by=_who(args))
            print("adopted: new batches are validated against the current document.")
        else:
            print(f"run `python -m core model refresh {args.endpoint_id} --adopt` to use it.")
    return 0


def _archive(args: argparse.Namespace) -> int:
    from core.models import service

    _, store = _open()
    with store:
        model = service.archive(store, args.endpoint_id, by=_who(args))
        print(f"archived {model.endpoint_id}: new batches cannot name it; earlier batches keep it.")
    return 0


def _who(args: argparse.Namespace) -> str | None:
    """Who the command acts as (core.cli: --as / DASHBOARD_USER)."""
    return args.person.name if getattr(args, "person", None) else None
