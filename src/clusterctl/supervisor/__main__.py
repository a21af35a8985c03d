"""``python -m clusterctl.supervisor CONFIG``: the background supervisor's entry point."""

import sys

from .loop import main

sys.exit(main())
