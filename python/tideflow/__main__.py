"""``python -m tideflow ...``: the ``tideflow`` command (see ``tideflow.cli``)."""

import sys

from tideflow.cli import main

if __name__ == "__main__":
    sys.exit(main())
