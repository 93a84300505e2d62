"""The ``merchant-authd`` console script; the command line lives in :mod:`.cli`."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
