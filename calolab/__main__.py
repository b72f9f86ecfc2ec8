"""``python -m calolab <command> [overrides]``: the same as the ``calolab`` console script."""

import sys

from calolab.cli import main

if __name__ == "__main__":
    sys.exit(main())
