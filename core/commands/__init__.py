"""One module per `python -m core` command; each exposes `register(subparsers)`."""
