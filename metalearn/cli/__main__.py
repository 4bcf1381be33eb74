"""`python -m metalearn.cli`: the `metalearn` command."""

import sys

from metalearn.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
