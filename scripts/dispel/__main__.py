"""`python -m dispel`: the same as the `dispel` command."""
import sys

from .cli import main

sys.exit(main())
