"""``python -m labkit``: the command line (``labkit.cli``)."""
import sys

from .cli import main

sys.exit(main())
