"""``python -m engine`` is ``schedctl``."""

import sys

from engine.surfaces.cli import main

sys.exit(main())
