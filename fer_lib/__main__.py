"""``python -m fer_lib``: the command line (``fer_lib.cli.main``)."""

import sys

from fer_lib.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
