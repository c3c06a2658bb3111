"""``python -m api`` is the ``corral`` command."""

import sys

from api.cli import main

sys.exit(main())
