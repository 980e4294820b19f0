"""``python -m engine`` is ``schedctl``."""

import sys

from engine.cli import main

sys.exit(main())
