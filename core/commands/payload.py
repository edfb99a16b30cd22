"""`payload` and `validate`: see, and check, exactly what would be sent to a fal endpoint.

    python -m core payload ENDPOINT [--option NAME=VALUE]... [--param NAME=JSON]... [--image URL]... [--seed N]
    python -m core validate ENDPOINT FILE.json      (FILE may be - for stdin)

`payload` prints the body `core.catalog.registry.build_payload` makes (indent 2, nothing else on stdout), so it
can be piped into `validate` or diffed. Both exit 2 with one "error: ..." line per problem.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from core.errors import PayloadError


def register(subparsers: Any) -> None:
    build = subparsers.add_parser(
        "payload", help="print the exact JSON body that would be sent to an endpoint",
        description="Build the request body for ENDPOINT from prompt options, the team preset and "
                    "parameters, validate it, and print it (nothing is sent).")
    build.add_argument("endpoint", metavar="ENDPOINT", help="fal endpoint id, e.g. fal-ai/flux/schnell")
    build.add_argument("--option", action="append", default=[], type=_name_value, metavar="NAME=VALUE",
                       help="prompt option: subject, purpose, pose, style, lighting, angle, "
                            "aspect_ratio, extra (repeatable)")
    build.add_argument("--param", action="append", default=[], type=_name_value, metavar="NAME=JSON",
                       help="endpoint parameter overriding the team preset; the value is JSON, or "
                            "taken as a string when it is not valid JSON; null removes it (repeatable)")
    build.add_argument("--image", action="append", default=[], metavar="URL",
                       help="reference image: http(s) URL, data: URI or reference://<id> (repeatable)")
    build.add_argument("--seed", type=int, metavar="N", help="fixed seed (random when absent)")
    build.set_defaults(func=_payload, needs="read")

    check = subparsers.add_parser(
        "validate", help="check a JSON body against an endpoint's input schema",
        description="Validate FILE (a JSON request body; - for stdin) for ENDPOINT: exit 0 and print "
                    "'valid', or exit 2 with one line per problem on stderr.")
    check.add_argument("endpoint", metavar="ENDPOINT", help="fal endpoint id")
    check.add_argument("file", metavar="FILE", help="JSON file with the request body, or - for stdin")
    check.set_defaults(func=_validate, needs="read")


def _name_value(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip(), value


def _json_or_string(text: str) -> Any:
    # `--param output_format=png` should not need shell-quoted JSON quotes
    try:
        return json.loads(text)
    except ValueError:
        return text


def _payload(args: argparse.Namespace) -> int:
    from core.catalog import prompts
    from core.catalog import registry

    registry.get_endpoint(args.endpoint)  # unknown endpoint: say so before judging the options
    options = prompts.PromptOptions.from_mapping(dict(args.option))
    body = registry.build_payload(
        args.endpoint,
        prompt=prompts.build_prompt(options),
        image_size=prompts.image_size_for(options.aspect_ratio),
        image_urls=args.image,
        seed=args.seed,
        params={name: _json_or_string(value) for name, value in args.param},
    )
    print(json.dumps(body, indent=2, ensure_ascii=False))
    return 0


def _validate(args: argparse.Namespace) -> int:
    from core.catalog import registry

    registry.get_endpoint(args.endpoint)
    source = "stdin" if args.file == "-" else args.file
    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
    except OSError as e:
        raise PayloadError(args.endpoint, [f"cannot read {source}: {e.strerror or e}"]) from e
    except UnicodeDecodeError as e:
        raise PayloadError(args.endpoint, [f"{source} is not UTF-8 text: {e.reason}"]) from e
    try:
        body = json.loads(text)
    except json.JSONDecodeError as e:
        raise PayloadError(args.endpoint, [
            f"{source} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}"]) from e
    registry.validate_payload(args.endpoint, body)
    print("valid")
    return 0
