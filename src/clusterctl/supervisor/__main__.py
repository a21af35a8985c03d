"""``python -m clusterctl.supervisor CONFIG``: the background supervisor's entry point."""

import sys

from .entry import main

sys.exit(main())
