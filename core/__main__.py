"""`python -m core ...`: the command line (see core/cli.py)."""
from core.cli import leave, main

leave(main())
