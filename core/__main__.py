"""``python -m core``: see :mod:`core.cli.main`."""

import sys

from .cli.main import main

sys.exit(main())
