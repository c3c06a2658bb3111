"""``python -m corral`` is the ``corral`` command."""

import sys

from corral.api.cli import main

sys.exit(main())
